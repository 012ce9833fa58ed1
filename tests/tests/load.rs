//! Load on one real provider: 300 peers (lightweight in-process libp2p
//! clients, each its own key and TCP connection, speaking the real
//! negotiation protocol with signed Proposes) connect and propose at once,
//! while two other peers flood it, one with proposals, one with garbage. Every proposal gets an
//! answer: a Hold or a signed rejection with a named code (never silence);
//! the flood is answered `RATE_LIMITED` past its burst, a peer flooding
//! garbage is refused and disconnected, every honest peer is
//! still served, and the provider's memory stays bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fulcrum_e2e::{Daemon, offer_file, wait_for};
use fulcrum_node::net::{self, BytesCodec, MAX_NEGOTIATION_BYTES, NEGOTIATE_PROTOCOL};
use fulcrum_protocol::Limits;
use fulcrum_protocol::ids::{NegotiationId, RequestId};
use fulcrum_protocol::keys::{Identity, PublicKey};
use fulcrum_protocol::messages::{Message, Propose, RejectCode};
use fulcrum_protocol::offer::Price;
use futures::StreamExt;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm};
use serde_json::Value;

const HONEST_PEERS: usize = 300;
const FLOOD_WAVE: usize = 50;
const MAX_FLOOD_WAVES: usize = 40;
const RATE_PER_SEC: u32 = 20;
const BURST: u32 = 40;

type Client = Swarm<request_response::Behaviour<BytesCodec>>;

/// A peer that speaks only the negotiation protocol.
fn client(seed: u64) -> (Identity, Client) {
    let mut secret = [0x5a; 32];
    secret[..8].copy_from_slice(&seed.to_le_bytes());
    let identity = Identity::from_secret_bytes(&secret);
    let swarm = libp2p::SwarmBuilder::with_existing_identity(net::keypair(&identity).unwrap())
        .with_tokio()
        .with_tcp(libp2p::tcp::Config::default(), libp2p::noise::Config::new, libp2p::yamux::Config::default)
        .unwrap()
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                BytesCodec::new(MAX_NEGOTIATION_BYTES, MAX_NEGOTIATION_BYTES),
                [(NEGOTIATE_PROTOCOL, ProtocolSupport::Outbound)],
                request_response::Config::default()
                    .with_request_timeout(Duration::from_secs(30))
                    .with_max_concurrent_streams(FLOOD_WAVE * 2),
            )
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    (identity, swarm)
}

/// The offer every proposal is for.
#[derive(Debug, Clone)]
struct Target {
    addr: Multiaddr,
    peer: PeerId,
    provider: PublicKey,
    offer_id: String,
    seq: u64,
}

fn propose(identity: &Identity, target: &Target, n: u64) -> Vec<u8> {
    let now = fulcrum_node::daemon::now_ms();
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_le_bytes());
    id[8..].copy_from_slice(&identity.public().to_bytes()[..8]);
    Message::Propose(Propose {
        request_id: RequestId(id),
        negotiation_id: NegotiationId(id),
        round: 0,
        consumer: identity.public(),
        provider: target.provider,
        offer_id: target.offer_id.clone(),
        offer_seq: target.seq,
        units: 1,
        max_unit_price: Price::eur(1_000_000),
        start_ms: now,
        duration_ms: 3_600_000,
        expires_at_ms: now + 60_000,
    })
    .seal(identity)
    .encode()
}

/// What became of one proposal: `held`, a reject code's name, or why no
/// answer came.
fn outcome(answer: Result<Vec<u8>, String>) -> String {
    match answer {
        Err(why) => format!("no answer ({why})"),
        Ok(bytes) => match Message::decode(&bytes, &Limits::default()) {
            Ok((_, Message::Hold(_))) => "held".into(),
            Ok((_, Message::Reject(r))) if r.code != RejectCode::Unspecified => {
                r.code.as_str_name().trim_start_matches("REJECT_CODE_").to_ascii_lowercase()
            }
            Ok((_, other)) => format!("unexpected answer {:?}", other.kind()),
            Err(e) => format!("unverifiable answer ({e})"),
        },
    }
}

/// Connects, sends `requests` at once, and waits for every answer.
async fn run(mut swarm: Client, target: &Target, requests: Vec<Vec<u8>>) -> (Client, Vec<String>) {
    if !swarm.is_connected(&target.peer) {
        swarm.dial(target.addr.clone()).unwrap();
        let connected = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == target.peer => return Ok(()),
                    SwarmEvent::OutgoingConnectionError { error, .. } => return Err(error.to_string()),
                    _ => {}
                }
            }
        })
        .await;
        match connected {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return (swarm, vec![format!("no answer (cannot connect: {why})"); requests.len()]),
            Err(_) => return (swarm, vec!["no answer (connect timed out)".to_owned(); requests.len()]),
        }
    }
    let mut pending: BTreeMap<request_response::OutboundRequestId, usize> = BTreeMap::new();
    for (i, bytes) in requests.into_iter().enumerate() {
        pending.insert(swarm.behaviour_mut().send_request(&target.peer, bytes), i);
    }
    let mut results = vec![String::new(); pending.len()];
    while !pending.is_empty() {
        let answer = match swarm.select_next_some().await {
            SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Response { request_id, response },
                ..
            }) => (request_id, Ok(response)),
            SwarmEvent::Behaviour(request_response::Event::OutboundFailure { request_id, error, .. }) => {
                (request_id, Err(error.to_string()))
            }
            _ => continue,
        };
        if let Some(i) = pending.remove(&answer.0) {
            results[i] = outcome(answer.1);
        }
    }
    (swarm, results)
}

/// Resident and peak resident memory of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn tally(outcomes: &[String]) -> BTreeMap<String, usize> {
    let mut t = BTreeMap::new();
    for o in outcomes {
        *t.entry(o.clone()).or_insert(0) += 1;
    }
    t
}

#[test]
fn hundreds_of_peers_and_a_flood_are_all_answered_with_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let rate = RATE_PER_SEC.to_string();
    let burst = BURST.to_string();
    let provider = Daemon::start_with(
        tmp.path(),
        "provider",
        &[],
        &[("FULCRUM_MAX_PEERS", "512"), ("FULCRUM_PEER_RATE_PER_SEC", &rate), ("FULCRUM_PEER_BURST", &burst)],
    );
    let file = offer_file(tmp.path(), "load-1", "DE", 100_000, "0.40");
    assert!(provider.ctl(&["offers", "publish", file.to_str().unwrap()]).status.success());
    let status = provider.ctl_json(&["status"]).unwrap();
    let target = Target {
        addr: provider.addr().parse().unwrap(),
        peer: provider.peer_id.parse().unwrap(),
        provider: PublicKey::from_hex(status["node_key"].as_str().unwrap()).unwrap(),
        offer_id: "load-1".into(),
        seq: 1,
    };
    let pid = provider.pid();
    std::thread::sleep(Duration::from_secs(1));
    let (rss_before, _) = memory_kib(pid);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let started = Instant::now();
    let (honest, flood, flood_waves, garbage, garbage_disconnected) = rt.block_on(async {
        let honest_done = Arc::new(AtomicBool::new(false));
        // The flood: waves of proposals, each sent at once, until the honest peers are done.
        let flooder = {
            let target = target.clone();
            let done = honest_done.clone();
            tokio::spawn(async move {
                let (identity, mut swarm) = client(u64::MAX);
                let mut outcomes = Vec::new();
                let mut waves = 0;
                while waves < MAX_FLOOD_WAVES && (waves < 2 || !done.load(Ordering::Relaxed)) {
                    let wave = (0..FLOOD_WAVE).map(|i| propose(&identity, &target, (waves * FLOOD_WAVE + i) as u64));
                    let (s, results) = run(swarm, &target, wave.collect()).await;
                    swarm = s;
                    outcomes.extend(results);
                    waves += 1;
                }
                (outcomes, waves)
            })
        };
        // A second flood, of garbage: each answered `MALFORMED` and costing
        // a strike, until the provider disconnects it.
        let garbage = {
            let target = target.clone();
            tokio::spawn(async move {
                let (_, mut swarm) = client(u64::MAX - 1);
                let mut outcomes = Vec::new();
                for wave in 0..MAX_FLOOD_WAVES {
                    let junk = (0..FLOOD_WAVE).map(|i| format!("not a signed message {wave}/{i}").into_bytes());
                    let (s, results) = run(swarm, &target, junk.collect()).await;
                    swarm = s;
                    outcomes.extend(results);
                    if !swarm.is_connected(&target.peer) {
                        return (outcomes, true);
                    }
                }
                (outcomes, false)
            })
        };
        // Let the floods start, then everyone else at once.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let peers: Vec<_> = (0..HONEST_PEERS as u64)
            .map(|i| {
                let target = target.clone();
                tokio::spawn(async move {
                    let (identity, swarm) = client(i);
                    let (_swarm, results) = run(swarm, &target, vec![propose(&identity, &target, 0)]).await;
                    results.into_iter().next().unwrap()
                })
            })
            .collect();
        let mut honest = Vec::new();
        for p in peers {
            honest.push(p.await.unwrap());
        }
        honest_done.store(true, Ordering::Relaxed);
        let (flood, waves) = flooder.await.unwrap();
        let (garbage, disconnected) = garbage.await.unwrap();
        (honest, flood, waves, garbage, disconnected)
    });
    let elapsed = started.elapsed();
    let (rss_after, rss_peak) = memory_kib(pid);
    drop(rt);

    let honest_tally = tally(&honest);
    let flood_tally = tally(&flood);
    let garbage_tally = tally(&garbage);
    eprintln!(
        "load: {HONEST_PEERS} honest peers {honest_tally:?}; flood of {} proposals in {flood_waves} waves \
         {flood_tally:?}; garbage flood of {} requests {garbage_tally:?}, disconnected: {garbage_disconnected}; \
         {:.1} s; provider RSS {rss_before} KiB before, {rss_after} KiB after, peak {rss_peak} KiB",
        flood.len(),
        garbage.len(),
        elapsed.as_secs_f64()
    );

    // Every proposal was answered: a hold or a signed rejection with a code.
    for (what, outcomes) in [("honest", &honest), ("flood", &flood)] {
        let unanswered: Vec<&String> = outcomes
            .iter()
            .filter(|o| o.starts_with("no answer") || o.starts_with("unexpected") || o.starts_with("unverifiable"))
            .collect();
        assert!(
            unanswered.is_empty(),
            "{what} proposals without a clear answer: {:?}",
            tally(&unanswered.into_iter().cloned().collect::<Vec<_>>())
        );
    }
    // Every honest peer was served while the flood went on.
    assert_eq!(honest_tally.get("held"), Some(&HONEST_PEERS), "honest peers: {honest_tally:?}");
    // The flood got its burst and then rate-limit answers.
    let limited = flood_tally.get("rate_limited").copied().unwrap_or(0);
    assert!(limited > 0, "the flood was never rate limited: {flood_tally:?}");
    let held = flood_tally.get("held").copied().unwrap_or(0);
    let allowed = BURST as f64 + RATE_PER_SEC as f64 * elapsed.as_secs_f64() + 1.0;
    assert!((held as f64) <= allowed, "the flood got {held} holds, more than its rate allows ({allowed:.0})");

    // Garbage is refused as such (`MALFORMED`, a strike each), and its
    // sender is cut off; what it sent at once with the request that made it
    // reach the strike limit goes with the connection.
    let refused = |o: &String| o == "malformed" || o.contains("Connection was closed");
    assert!(garbage.iter().all(refused), "garbage: {garbage_tally:?}");
    assert!(garbage_disconnected, "a peer sending only garbage was never disconnected: {garbage_tally:?}");

    // Memory stays bounded: a generous ceiling for 300 connections and a flood.
    let growth_mib = rss_peak.saturating_sub(rss_before) / 1024;
    assert!(growth_mib < 256, "provider memory grew by {growth_mib} MiB under load");

    // The provider's own count agrees, and it still answers its operator.
    let held_total = wait_for(Duration::from_secs(10), || {
        let v = provider.metric("fulcrum_proposals_total{outcome=\"held\"}")?;
        (v as usize >= HONEST_PEERS + held).then_some(v)
    });
    assert!(held_total.is_some(), "metrics do not count the holds");
    let limited_metric = provider.metric("fulcrum_proposals_total{outcome=\"rate_limited\"}").unwrap_or(0.0);
    assert!(limited_metric as usize >= limited, "metrics count {limited_metric} rate-limited, the flood saw {limited}");
    let status: Value = provider.ctl_json(&["status"]).unwrap();
    assert!(status["node_key"].is_string());
}
