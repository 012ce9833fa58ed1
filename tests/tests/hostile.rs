//! A misbehaving peer (an in-process libp2p node speaking Fulcrum's
//! protocols) sends forged, expired, replayed, oversized and garbage offers
//! and negotiation messages to a real daemon. They are rejected, not
//! forwarded to the other honest daemon, a flood is rate limited, the
//! attacker is eventually disconnected, and the honest nodes keep trading.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fulcrum_e2e::{Daemon, offer_file, wait_for};
use fulcrum_node::net::{self, MAX_NEGOTIATION_BYTES};
use fulcrum_proto::v1 as wire;
use fulcrum_protocol::Limits;
use fulcrum_protocol::envelope::{Envelope, Kind};
use fulcrum_protocol::ids::{NegotiationId, RequestId};
use fulcrum_protocol::keys::{Identity, PublicKey};
use fulcrum_protocol::messages::{Message, Propose, RejectCode};
use fulcrum_protocol::offer::Price;
use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, gossipsub, request_response};
use prost::Message as _;
use serde_json::Value;

fn offers(d: &Daemon) -> Vec<(String, u64)> {
    let v = d.ctl_json(&["offers", "list"]).unwrap_or(Value::Null);
    let arr = match v {
        Value::Array(a) => a,
        other => other.get("offers").and_then(Value::as_array).cloned().unwrap_or_default(),
    };
    let mut out: Vec<(String, u64)> =
        arr.iter().filter_map(|o| Some((o.get("offer_id")?.as_str()?.to_owned(), o.get("seq")?.as_u64()?))).collect();
    out.sort();
    out
}

fn offer_wire(provider: &PublicKey, offer_id: &str, seq: u64, issued: u64, expires: u64) -> wire::Offer {
    let mut o = fulcrum_node::offer_file::parse_offer_file(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/offers/de-general.toml")).unwrap(),
    )
    .unwrap()
    .0;
    o.provider = provider.to_bytes().to_vec();
    o.federation = "dev".into();
    o.offer_id = offer_id.into();
    o.seq = seq;
    o.issued_at_ms = issued;
    o.expires_at_ms = expires;
    o
}

fn now_ms() -> u64 {
    fulcrum_node::daemon::now_ms()
}

struct Attacker {
    identity: Identity,
    swarm: Swarm<net::Behaviour>,
    topic: gossipsub::IdentTopic,
}

impl Attacker {
    fn new() -> Attacker {
        let identity = Identity::from_secret_bytes(&[0x66; 32]);
        let key = net::keypair(&identity).unwrap();
        let topic = net::offers_topic("dev");
        let hash = topic.hash();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(libp2p::tcp::Config::default(), libp2p::noise::Config::new, libp2p::yamux::Config::default)
            .unwrap()
            .with_behaviour(|k| {
                let mut b = net::behaviour(k, 8, std::slice::from_ref(&hash), 1).unwrap();
                // The attacker's own gossipsub lets oversized messages out.
                let cfg = gossipsub::ConfigBuilder::default()
                    .validation_mode(gossipsub::ValidationMode::Anonymous)
                    .message_id_fn(|m: &gossipsub::Message| {
                        gossipsub::MessageId::from(m.data.iter().map(|b| format!("{b:02x}")).collect::<String>())
                    })
                    .max_transmit_size(1 << 20)
                    .heartbeat_interval(Duration::from_millis(300))
                    .build()
                    .unwrap();
                b.gossipsub = gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, cfg).unwrap();
                b
            })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        swarm.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
        Attacker { identity, swarm, topic }
    }

    /// Drives the swarm until `f` returns Some or the time is up.
    async fn pump<T>(
        &mut self,
        secs: u64,
        mut f: impl FnMut(&SwarmEvent<net::BehaviourEvent>) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let ev = tokio::time::timeout_at(deadline, self.swarm.select_next_some()).await.ok()?;
            if let Some(v) = f(&ev) {
                return Some(v);
            }
        }
    }

    fn publish(&mut self, data: Vec<u8>) {
        let _ = self.swarm.behaviour_mut().gossipsub.publish(self.topic.clone(), data);
    }

    /// Sends a negotiation request and returns the raw answer (None: no answer / stream failed).
    async fn request(&mut self, peer: PeerId, bytes: Vec<u8>) -> Option<Vec<u8>> {
        let id = self.swarm.behaviour_mut().negotiate.send_request(&peer, bytes);
        self.pump(15, |ev| match ev {
            SwarmEvent::Behaviour(net::BehaviourEvent::Negotiate(request_response::Event::Message {
                message: request_response::Message::Response { request_id, response },
                ..
            })) if *request_id == id => Some(Some(response.clone())),
            SwarmEvent::Behaviour(net::BehaviourEvent::Negotiate(request_response::Event::OutboundFailure {
                request_id,
                ..
            })) if *request_id == id => Some(None),
            _ => None,
        })
        .await
        .flatten()
    }
}

fn reject_code(answer: &[u8]) -> RejectCode {
    match Message::decode(answer, &Limits::default()).expect("answers are signed messages").1 {
        Message::Reject(r) => r.code,
        other => panic!("expected a Reject, got {other:?}"),
    }
}

#[test]
fn hostile_peer_is_rejected_not_forwarded_and_does_not_disturb_honest_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Daemon::start_with(
        tmp.path(),
        "honest-a",
        &[],
        &[("FULCRUM_PEER_RATE_PER_SEC", "5"), ("FULCRUM_PEER_BURST", "20")],
    );
    let b = Daemon::start(tmp.path(), "honest-b", &[a.addr()]);
    let file = offer_file(tmp.path(), "b-offer", "DE", 8, "0.50");
    assert!(b.ctl(&["offers", "publish", file.to_str().unwrap()]).status.success());
    assert!(wait_for(Duration::from_secs(20), || (offers(&a) == [("b-offer".into(), 1)]).then_some(())).is_some());
    let b_key = PublicKey::from_hex(b.ctl_json(&["status"]).unwrap()["node_key"].as_str().unwrap()).unwrap();
    let a_peer: PeerId = a.peer_id.parse().unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut att = Attacker::new();
        let addr: Multiaddr = a.addr().parse().unwrap();
        att.swarm.dial(addr).unwrap();
        // Wait until A has the attacker in its mesh for the offers topic.
        let subscribed = att
            .pump(20, |ev| match ev {
                SwarmEvent::Behaviour(net::BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed {
                    peer_id, ..
                })) if *peer_id == a_peer => Some(()),
                _ => None,
            })
            .await;
        assert!(subscribed.is_some(), "attacker never joined the topic");
        att.pump(3, |_| None::<()>).await; // a few heartbeats to graft

        let me = att.identity.public();
        let now = now_ms();
        // A valid offer of the attacker's own, seq 5: the control, it must spread.
        let valid =
            Envelope::seal_message(&att.identity, Kind::Offer, &offer_wire(&me, "att-1", 5, now, now + 600_000));
        att.publish(valid.encode());
        // Replayed older seq of it.
        let older =
            Envelope::seal_message(&att.identity, Kind::Offer, &offer_wire(&me, "att-1", 3, now, now + 600_000));
        // Forged: claims to be B's offer (higher seq), signed by the attacker.
        let forged =
            Envelope::seal_message(&att.identity, Kind::Offer, &offer_wire(&b_key, "b-offer", 9, now, now + 600_000));
        // Bad signature.
        let mut bad_sig =
            Envelope::seal_message(&att.identity, Kind::Offer, &offer_wire(&me, "att-2", 1, now, now + 600_000))
                .to_wire();
        bad_sig.signature[7] ^= 1;
        // Expired.
        let expired = Envelope::seal_message(
            &att.identity,
            Kind::Offer,
            &offer_wire(&me, "att-3", 1, now - 7_200_000, now - 3_600_000),
        );
        // Oversized and garbage.
        let oversized = vec![0x0a; 64 * 1024];
        let garbage = b"\xff\xfe not an envelope at all".to_vec();
        att.pump(2, |_| None::<()>).await;
        for msg in [older.encode(), forged.encode(), bad_sig.encode_to_vec(), expired.encode(), oversized, garbage] {
            att.publish(msg);
        }
        att.pump(3, |_| None::<()>).await;

        // Negotiation: garbage, misattributed, oversized, unknown offer.
        let garbage = att.request(a_peer, b"garbage".to_vec()).await.expect("garbage gets an answer");
        assert_eq!(reject_code(&garbage), RejectCode::Malformed);
        let propose = |signer: &Identity, consumer: PublicKey| {
            Message::Propose(Propose {
                request_id: RequestId([1; 16]),
                negotiation_id: NegotiationId([2; 16]),
                round: 0,
                consumer,
                provider: b_key,
                offer_id: "no-such-offer".into(),
                offer_seq: 1,
                units: 1,
                max_unit_price: Price::eur(1_000_000),
                start_ms: now,
                duration_ms: 3_600_000,
                expires_at_ms: now + 60_000,
            })
            .seal(signer)
            .encode()
        };
        let someone_else = Identity::from_secret_bytes(&[0x77; 32]);
        let misattributed = att.request(a_peer, propose(&someone_else, someone_else.public())).await.unwrap();
        assert_eq!(reject_code(&misattributed), RejectCode::Malformed);
        let not_for_a = att.request(a_peer, propose(&att.identity, me)).await.unwrap();
        assert_eq!(reject_code(&not_for_a), RejectCode::NotAParty);
        let too_big = att.request(a_peer, vec![0u8; MAX_NEGOTIATION_BYTES + 1]).await;
        assert!(too_big.is_none(), "an oversized request is cut off, not answered");

        // Flood: past the burst, answers are RateLimited rejections, never silence.
        let mut limited = 0;
        for _ in 0..60 {
            if let Some(ans) = att.request(a_peer, propose(&att.identity, me)).await
                && reject_code(&ans) == RejectCode::RateLimited
            {
                limited += 1;
            }
        }
        assert!(limited > 0, "a flood past the burst gets RateLimited answers");

        // Keep sending invalid gossip: the attacker is disconnected eventually.
        let mut closed = false;
        for i in 0..40u8 {
            att.publish(vec![0xee, i, 0x01, 0x02]);
            let _ = att.swarm.behaviour_mut().negotiate.send_request(&a_peer, vec![i; 3]);
            if att
                .pump(1, |ev| {
                    matches!(ev, SwarmEvent::ConnectionClosed { peer_id, .. } if *peer_id == a_peer).then_some(())
                })
                .await
                .is_some()
            {
                closed = true;
                break;
            }
        }
        assert!(closed, "a peer that keeps sending invalid messages is disconnected");
    });

    // Only the valid seq-5 offer of the attacker got in and was forwarded to B;
    // B's own offer was not overwritten by the forgery.
    let want = vec![("att-1".to_string(), 5), ("b-offer".to_string(), 1)];
    for d in [&a, &b] {
        let ok = wait_for(Duration::from_secs(10), || (offers(d) == want).then_some(()));
        assert!(ok.is_some(), "{} has {:?}", d.name, offers(d));
    }

    // The honest nodes still trade.
    let placed = a.ctl_json(&["place", "--units", "2", "--vcpu", "4", "--memory-mib", "8192", "--country", "DE"]);
    let placed = placed.unwrap_or_else(|e| panic!("honest placement failed after the attack: {e}"));
    assert_eq!(placed["contracts"].as_array().map(Vec::len), Some(1), "{placed}");
}
