//! Byzantine behaviour. A hostile peer speaking Fulcrum's protocols on the
//! simulated network gossips forged offers and floods providers with
//! proposals; a provider's log is rewritten on disk while it is stopped
//! (equivocation), as an operator with disk access could.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use fulcrum_node::daemon::now_ms;
use fulcrum_node::net::{self, BehaviourEvent, Transport};
use fulcrum_node::store::log::{AgreementLog, read_log};
use fulcrum_proto::v1 as wire;
use fulcrum_protocol::Limits;
use fulcrum_protocol::envelope::{Envelope, Kind};
use fulcrum_protocol::ids::{ContractId, NegotiationId, RequestId};
use fulcrum_protocol::keys::{Identity, PublicKey};
use fulcrum_protocol::messages::{Message, Propose, RejectCode};
use fulcrum_protocol::offer::Price;
use fulcrum_protocol::record::Record;
use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::request_response::{self, Message as RrMessage};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm};
use prost::Message as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;

use crate::link::Network;

/// What the hostile peer did and what it got back.
#[derive(Debug, Default)]
pub struct AttackStats {
    /// Forged offers gossiped.
    pub forged: AtomicU64,
    /// Proposals sent in floods.
    pub proposals: AtomicU64,
    /// Answered with a hold (capacity tied up until the hold expires).
    pub held: AtomicU64,
    /// Refused as rate limited.
    pub rate_limited: AtomicU64,
    /// Refused otherwise (no capacity, too many holds, stale offer...).
    pub refused: AtomicU64,
    /// Refusals by reject code, and failures by cause.
    pub refusals: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Not answered (stream refused or failed, connection closed, timeout).
    pub unanswered: AtomicU64,
    /// Not sent: no connection to the target at the time.
    pub not_connected: AtomicU64,
}

/// A provider the hostile peer targets.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its key.
    pub key: PublicKey,
    /// Its libp2p identity.
    pub peer: PeerId,
    /// Where it listens.
    pub addr: Multiaddr,
    /// Its offer ids.
    pub offers: Vec<String>,
}

/// Orders to the hostile peer.
#[derive(Debug)]
pub enum Order {
    /// Gossip `count` forged offers, some in these providers' names.
    Forge {
        /// How many.
        count: u32,
        /// Providers to impersonate.
        victims: Vec<Target>,
    },
    /// Flood these providers with proposals.
    FloodStart {
        /// The providers.
        targets: Vec<Target>,
        /// Proposals per second to each.
        rate_per_sec: f64,
    },
    /// Stop flooding.
    FloodStop,
}

/// The hostile peer: a libp2p node with Fulcrum's behaviour and its own key.
pub struct Attacker {
    identity: Identity,
    swarm: Swarm<net::Behaviour>,
    topic: gossipsub::IdentTopic,
    stats: Arc<AttackStats>,
    /// Latest offer envelope gossiped by each provider, to tamper with.
    seen: HashMap<PublicKey, (wire::Envelope, u64)>,
    rng: StdRng,
    flood: Option<(Vec<Target>, f64)>,
    credit: f64,
    last_tick: tokio::time::Instant,
    last_dial: HashMap<PeerId, tokio::time::Instant>,
    counter: u64,
    /// Simulated time runs this many times slower than the wall clock.
    dilation: u32,
}

impl std::fmt::Debug for Attacker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Attacker({})", self.identity.public().short())
    }
}

impl Attacker {
    /// The hostile peer as node `index` of `net`, listening on `port`.
    pub fn new(
        secret: [u8; 32],
        index: usize,
        port: u64,
        network: &Arc<Network>,
        federation: &str,
        stats: Arc<AttackStats>,
        seed: u64,
    ) -> anyhow::Result<Attacker> {
        let dilation = network.dilation();
        let identity = Identity::from_secret_bytes(&secret);
        let key = net::keypair(&identity).map_err(anyhow::Error::msg)?;
        let topic = net::offers_topic(federation);
        let transport = Transport::Custom(network.transport(index, &key)?);
        let mut swarm = net::swarm(key, transport, 64, &[topic.hash()], dilation)?;
        swarm.behaviour_mut().gossipsub.subscribe(&topic)?;
        network.register(index, port);
        swarm.listen_on(format!("/memory/{port}").parse()?)?;
        Ok(Attacker {
            identity,
            swarm,
            topic,
            stats,
            seen: HashMap::new(),
            rng: StdRng::seed_from_u64(seed),
            flood: None,
            credit: 0.0,
            last_tick: tokio::time::Instant::now(),
            last_dial: HashMap::new(),
            counter: 0,
            dilation,
        })
    }

    /// Runs until the order channel closes, dialing `peers` first.
    pub async fn run(mut self, peers: Vec<Multiaddr>, mut orders: mpsc::Receiver<Order>) {
        for addr in peers {
            let _ = self.swarm.dial(addr);
        }
        let mut tick = tokio::time::interval(Duration::from_millis(10) * self.dilation);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                order = orders.recv() => match order {
                    Some(order) => self.on_order(order),
                    None => break,
                },
                _ = tick.tick(), if self.flood.is_some() => self.flood_tick(),
                event = self.swarm.select_next_some() => self.on_event(event),
            }
        }
    }

    fn on_order(&mut self, order: Order) {
        match order {
            Order::Forge { count, victims } => {
                for victim in &victims {
                    let _ = self.swarm.dial(victim.addr.clone());
                }
                for i in 0..count {
                    let data = self.forgery(i, &victims);
                    // Published to the mesh; a publish error (no peers yet) still counts as sent.
                    let _ = self.swarm.behaviour_mut().gossipsub.publish(self.topic.clone(), data);
                    self.stats.forged.fetch_add(1, Ordering::Relaxed);
                }
            }
            Order::FloodStart { targets, rate_per_sec } => {
                for t in &targets {
                    let _ = self.swarm.dial(t.addr.clone());
                }
                self.flood = Some((targets, rate_per_sec));
                self.last_tick = tokio::time::Instant::now();
                self.credit = 0.0;
            }
            Order::FloodStop => self.flood = None,
        }
    }

    /// Forgery `i`: in turn an offer in a victim's name signed by this peer,
    /// a victim's real offer with its body changed under the signature, and
    /// an offer of this peer's own with a broken signature.
    fn forgery(&mut self, i: u32, victims: &[Target]) -> Vec<u8> {
        self.counter += 1;
        let now = now_ms();
        let me = self.identity.public();
        let victim = (!victims.is_empty()).then(|| &victims[i as usize % victims.len()]);
        match (i % 3, victim) {
            (1, Some(v)) if self.seen.contains_key(&v.key) => {
                let (mut envelope, _) = self.seen[&v.key].clone();
                if let Ok(mut offer) = wire::Offer::decode(envelope.body.as_slice()) {
                    offer.units_available = offer.units_available.saturating_mul(10).max(1000);
                    offer.unit_price_per_hour = Some(wire::Price { currency: "EUR".into(), micros: 1 });
                    offer.seq += 1_000_000 + self.counter;
                    envelope.body = offer.encode_to_vec();
                }
                envelope.encode_to_vec()
            }
            (2, _) | (_, None) => {
                let offer = forged_offer(&me, &format!("forged-{}", self.counter), self.counter, now);
                let mut envelope = Envelope::seal_message(&self.identity, Kind::Offer, &offer).to_wire();
                if let Some(b) = envelope.signature.get_mut(self.counter as usize % 64) {
                    *b ^= 0x01;
                }
                envelope.encode_to_vec()
            }
            (_, Some(v)) => {
                let id = v.offers.first().cloned().unwrap_or_else(|| "offer".into());
                let offer = forged_offer(&v.key, &id, 1_000_000 + self.counter, now);
                Envelope::seal_message(&self.identity, Kind::Offer, &offer).encode()
            }
        }
    }

    fn flood_tick(&mut self) {
        let Some((targets, rate)) = self.flood.clone() else { return };
        // Paced by the clock, not by ticks, which a busy loop may skip.
        let now_instant = tokio::time::Instant::now();
        let simulated_s = now_instant.duration_since(self.last_tick).as_secs_f64() / f64::from(self.dilation);
        self.credit += rate * simulated_s;
        self.last_tick = now_instant;
        let n = self.credit.floor();
        self.credit -= n;
        let now = now_ms();
        for _ in 0..n as u64 {
            for t in &targets {
                if !self.swarm.is_connected(&t.peer) {
                    // Back, again and again, but one dial at a time.
                    let backoff = Duration::from_millis(500) * self.dilation;
                    let due = self.last_dial.get(&t.peer).is_none_or(|at| at.elapsed() > backoff);
                    if due {
                        self.last_dial.insert(t.peer, now_instant);
                        let _ = self.swarm.dial(t.addr.clone());
                    }
                    self.stats.not_connected.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let offer_id = t.offers.first().cloned().unwrap_or_default();
                let offer_seq = self.seen.get(&t.key).map_or(1, |(_, seq)| *seq);
                let propose = Message::Propose(Propose {
                    request_id: RequestId::random(&mut self.rng),
                    negotiation_id: NegotiationId::random(&mut self.rng),
                    round: 0,
                    consumer: self.identity.public(),
                    provider: t.key,
                    offer_id,
                    offer_seq,
                    units: 1,
                    max_unit_price: Price::eur(1_000_000_000),
                    start_ms: now,
                    duration_ms: 3_600_000,
                    expires_at_ms: now + 60_000,
                });
                let bytes = propose.seal(&self.identity).encode();
                self.swarm.behaviour_mut().negotiate.send_request(&t.peer, bytes);
                self.stats.proposals.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                // Remember honest offers to tamper with; forward nothing.
                if let Ok(envelope) = wire::Envelope::decode(message.data.as_slice())
                    && let Ok(offer) = wire::Offer::decode(envelope.body.as_slice())
                    && let Ok(key) = PublicKey::from_bytes(&offer.provider)
                {
                    self.seen.insert(key, (envelope, offer.seq));
                }
                let _ = self.swarm.behaviour_mut().gossipsub.report_message_validation_result(
                    &message_id,
                    &propagation_source,
                    MessageAcceptance::Ignore,
                );
            }
            SwarmEvent::Behaviour(BehaviourEvent::Negotiate(e)) => match e {
                request_response::Event::Message { message: RrMessage::Response { response, .. }, .. } => {
                    let counter = match Message::decode(&response, &Limits::default()) {
                        Ok((_, Message::Hold(_))) => &self.stats.held,
                        Ok((_, Message::Reject(r))) if r.code == RejectCode::RateLimited => &self.stats.rate_limited,
                        other => {
                            let code = match other {
                                Ok((_, Message::Reject(r))) => r.code.as_str_name().to_ascii_lowercase(),
                                Ok((_, m)) => format!("answered {}", m.kind().as_str()),
                                Err(e) => format!("malformed answer: {e}"),
                            };
                            if let Ok(mut r) = self.stats.refusals.lock() {
                                *r.entry(code).or_default() += 1;
                            }
                            &self.stats.refused
                        }
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                request_response::Event::OutboundFailure { error, .. } => {
                    self.stats.unanswered.fetch_add(1, Ordering::Relaxed);
                    let why = match error {
                        request_response::OutboundFailure::Timeout => "no answer: timeout".to_owned(),
                        request_response::OutboundFailure::ConnectionClosed => "no answer: connection closed".into(),
                        request_response::OutboundFailure::DialFailure => "no answer: dial failure".into(),
                        other => format!("no answer: {other}"),
                    };
                    if let Ok(mut r) = self.stats.refusals.lock() {
                        *r.entry(why).or_default() += 1;
                    }
                }
                _ => {}
            },
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, error = ?error, "hostile peer: dial failed");
            }
            SwarmEvent::ConnectionClosed { peer_id, cause, .. } => {
                tracing::debug!(%peer_id, ?cause, "hostile peer: connection closed");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message {
                message: RrMessage::Request { channel, .. },
                ..
            })) => {
                // An empty book: it has nothing honest to share.
                let page = wire::OfferSyncResponse::default().encode_to_vec();
                let _ = self.swarm.behaviour_mut().sync.send_response(channel, page);
            }
            _ => {}
        }
    }
}

fn forged_offer(provider: &PublicKey, offer_id: &str, seq: u64, now: u64) -> wire::Offer {
    wire::Offer {
        provider: provider.to_bytes().to_vec(),
        federation: crate::FEDERATION.into(),
        offer_id: offer_id.into(),
        seq,
        issued_at_ms: now,
        expires_at_ms: now + 3_600_000,
        site: Some(wire::Site { country: "DE".into(), region: "de-1".into(), datacenter: "de1-dc1".into() }),
        flavour: Some(wire::Flavour {
            name: "forged".into(),
            per_unit: Some(wire::Resources { vcpu: 64, memory_mib: 262_144, storage_gib: 0, gpus: Vec::new() }),
        }),
        units_available: 10_000,
        unit_price_per_hour: Some(wire::Price { currency: "EUR".into(), micros: 1 }),
        min_duration_ms: 3_600_000,
        max_duration_ms: 8_760 * 3_600_000,
        labels: Vec::new(),
        sla_permille: 999,
    }
}

/// Rewrites a stopped node's log: drops its last record and appends
/// `forged` records of its own making, then drops the index (derived; the
/// node rebuilds it from the log). Returns the log sizes before and after.
pub fn rewrite_log(log_path: &Path, index_path: &Path, forged: usize, seed: u64) -> anyhow::Result<(usize, usize)> {
    let (records, _) = read_log(log_path).with_context(|| format!("cannot read {}", log_path.display()))?;
    let before = records.len();
    let mut kept: Vec<Vec<u8>> = records.into_iter().take(before.saturating_sub(1)).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..forged {
        let record = Record::Abandoned { contract_id: ContractId(rng.r#gen()) };
        kept.push(record.to_cbor()?);
    }
    let after = kept.len();
    let tmp = log_path.with_extension("rewritten");
    let _ = std::fs::remove_file(&tmp);
    let (log, _) = AgreementLog::open(&tmp)?;
    log.append_blocking(kept)?;
    log.close();
    drop(log);
    std::fs::rename(&tmp, log_path)?;
    if index_path.exists() {
        std::fs::remove_dir_all(index_path)?;
    }
    Ok((before, after))
}
