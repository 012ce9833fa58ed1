//! What the nodes report while the simulation runs: when each offer version
//! was published and when it first entered each node's offer book, and the
//! gossip each node validated. Recorded through the node's observer hook, so
//! the times are taken inside the node's event loop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fulcrum_node::daemon::{Observed, Observer};
use fulcrum_protocol::keys::PublicKey;
use fulcrum_protocol::offer::OfferKey;
use tokio::time::Instant;

/// An offer version published by its provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Offer (index into the recorder's offers).
    pub offer: u32,
    /// Its seq.
    pub seq: u64,
    /// The publishing node.
    pub node: u32,
    /// When, µs from the epoch.
    pub at_us: u64,
}

/// An offer version entering a node's book.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Arrival {
    /// Offer.
    pub offer: u32,
    /// Its seq.
    pub seq: u64,
    /// When, µs from the epoch.
    pub at_us: u64,
}

/// What one node reported.
#[derive(Debug, Default)]
pub struct NodeRecord {
    /// Offer versions accepted, in order.
    pub arrivals: Mutex<Vec<Arrival>>,
    /// Offers accepted whose author or id is not in the plan (forgeries if
    /// the node ever accepted one).
    pub unknown_offers: AtomicU64,
    /// Gossip messages validated, by result.
    pub gossip_accepted: AtomicU64,
    /// Gossip messages rejected as invalid.
    pub gossip_rejected: AtomicU64,
    /// Gossip messages ignored (duplicates of content, stale, unknown authors).
    pub gossip_ignored: AtomicU64,
    /// Offer gossip rejected as invalid.
    pub offers_rejected: AtomicU64,
    /// Messages validated on the audit topic (checkpoints, evidence).
    pub audit_messages: AtomicU64,
}

/// Everything the nodes reported.
#[derive(Debug)]
pub struct Recorder {
    epoch: Instant,
    /// Simulated time runs this many times slower than the wall clock.
    dilation: u32,
    offers: HashMap<OfferKey, u32>,
    providers: HashMap<PublicKey, u32>,
    /// Every offer version published, in order.
    pub published: Mutex<Vec<Published>>,
    /// Per node.
    pub nodes: Vec<NodeRecord>,
    /// Offer versions accepted in all (for progress).
    pub deliveries: AtomicU64,
}

impl Recorder {
    /// A recorder for the planned offers (`offers[i]` is offer `i`) and nodes.
    /// Times are simulated time: wall-clock time divided by `dilation`.
    pub fn new(epoch: Instant, dilation: u32, offers: Vec<OfferKey>, nodes: &[PublicKey]) -> Arc<Recorder> {
        Arc::new(Recorder {
            epoch,
            dilation: dilation.max(1),
            offers: offers.into_iter().enumerate().map(|(i, k)| (k, i as u32)).collect(),
            providers: nodes.iter().enumerate().map(|(i, k)| (*k, i as u32)).collect(),
            published: Mutex::new(Vec::new()),
            nodes: (0..nodes.len()).map(|_| NodeRecord::default()).collect(),
            deliveries: AtomicU64::new(0),
        })
    }

    /// Simulated µs since the epoch.
    pub fn now_us(&self) -> u64 {
        self.at_us(Instant::now())
    }

    /// Simulated µs from the epoch to `t`.
    pub fn at_us(&self, t: Instant) -> u64 {
        (t.saturating_duration_since(self.epoch).as_micros() / u128::from(self.dilation)) as u64
    }

    /// `ms` of simulated time on the wall clock.
    pub fn wall(&self, ms: u64) -> std::time::Duration {
        std::time::Duration::from_millis(ms.saturating_mul(u64::from(self.dilation)))
    }

    /// The observer hook of node `node`.
    pub fn observer(self: &Arc<Self>, node: usize) -> Observer {
        let me = Arc::clone(self);
        Arc::new(move |what: Observed<'_>| me.observe(node, what))
    }

    fn observe(&self, node: usize, what: Observed<'_>) {
        let Some(record) = self.nodes.get(node) else { return };
        match what {
            Observed::OfferPublished { key, seq } => {
                let Some(&offer) = self.offers.get(key) else { return };
                let at_us = self.now_us();
                if let Ok(mut p) = self.published.lock() {
                    p.push(Published { offer, seq, node: node as u32, at_us });
                }
            }
            Observed::OfferAccepted { key, seq } => {
                let planned = self.providers.contains_key(&key.provider);
                match self.offers.get(key) {
                    Some(&offer) if planned => {
                        let at_us = self.now_us();
                        if let Ok(mut a) = record.arrivals.lock() {
                            a.push(Arrival { offer, seq, at_us });
                        }
                        self.deliveries.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        record.unknown_offers.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Observed::Gossip { topic, result } => {
                if topic == "audit" {
                    record.audit_messages.fetch_add(1, Ordering::Relaxed);
                }
                let counter = match result {
                    "accept" => &record.gossip_accepted,
                    "reject" => {
                        if topic == "offers" {
                            record.offers_rejected.fetch_add(1, Ordering::Relaxed);
                        }
                        &record.gossip_rejected
                    }
                    _ => &record.gossip_ignored,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The arrivals of a node, sorted by offer, then seq, then time.
    pub fn sorted_arrivals(&self, node: usize) -> Vec<Arrival> {
        let mut a = self.nodes.get(node).and_then(|r| r.arrivals.lock().ok().map(|a| a.clone())).unwrap_or_default();
        a.sort_unstable();
        a
    }

    /// Every publication so far.
    pub fn publications(&self) -> Vec<Published> {
        self.published.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

/// The first time `arrivals` (sorted) hold `offer` at `seq` or newer.
pub fn first_arrival(arrivals: &[Arrival], offer: u32, seq: u64) -> Option<u64> {
    let start = arrivals.partition_point(|a| (a.offer, a.seq) < (offer, seq));
    arrivals[start..].iter().take_while(|a| a.offer == offer).map(|a| a.at_us).min()
}

/// The time `arrivals` (sorted) hold exactly `offer` at `seq`.
pub fn exact_arrival(arrivals: &[Arrival], offer: u32, seq: u64) -> Option<u64> {
    let start = arrivals.partition_point(|a| (a.offer, a.seq) < (offer, seq));
    arrivals.get(start).filter(|a| a.offer == offer && a.seq == seq).map(|a| a.at_us)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_dilated_recorder_keeps_simulated_time() {
        let epoch = Instant::now();
        let r = Recorder::new(epoch, 5, Vec::new(), &[]);
        assert_eq!(r.at_us(epoch + Duration::from_millis(500)), 100_000);
        assert_eq!(r.wall(100), Duration::from_millis(500));
        let plain = Recorder::new(epoch, 1, Vec::new(), &[]);
        assert_eq!(plain.at_us(epoch + Duration::from_millis(500)), 500_000);
        assert_eq!(plain.wall(100), Duration::from_millis(100));
    }

    #[test]
    fn newer_versions_count_as_arrival_of_older_ones() {
        let mut a = vec![
            Arrival { offer: 1, seq: 1, at_us: 50 },
            Arrival { offer: 1, seq: 3, at_us: 40 },
            Arrival { offer: 2, seq: 1, at_us: 10 },
            Arrival { offer: 0, seq: 2, at_us: 5 },
        ];
        a.sort_unstable();
        assert_eq!(first_arrival(&a, 1, 1), Some(40));
        assert_eq!(first_arrival(&a, 1, 2), Some(40));
        assert_eq!(first_arrival(&a, 1, 4), None);
        assert_eq!(first_arrival(&a, 3, 1), None);
        assert_eq!(exact_arrival(&a, 1, 1), Some(50));
        assert_eq!(exact_arrival(&a, 1, 2), None);
        assert_eq!(exact_arrival(&a, 0, 2), Some(5));
    }
}
