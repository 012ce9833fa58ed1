//! The sled database: indexes and derived state that make admin queries and
//! restarts cheap: contracts by id with role and state, the lifecycle events
//! of contracts (active, terminated, expired) by log index for the hook
//! runner, and the offer book received from peers (which is not in the log:
//! only own offers are). All of it is derived; the contract index and its
//! events are rebuilt from the log whenever they are missing or behind, so
//! sled's own flush is never a durability guarantee.

use std::path::Path;

use fulcrum_proto::v1 as wire;
use fulcrum_protocol::ids::{ContractId, PlacementId};
use fulcrum_protocol::keys::PublicKey;
use fulcrum_protocol::offer::OfferKey;
use fulcrum_protocol::placement::PlacementRecord;
use fulcrum_protocol::record::Record;
use prost::Message;
use serde::{Deserialize, Serialize};

/// Why the index failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// sled failed.
    #[error("index database: {0}")]
    Sled(#[from] sled::Error),
    /// A stored value does not decode.
    #[error("index value is corrupt: {0}")]
    Corrupt(String),
}

/// A contract as the index keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractEntry {
    /// Position of its record in the log.
    pub log_index: u64,
    /// True when this node is the provider.
    pub provider: bool,
    /// True once terminated early.
    pub terminated: bool,
    /// True once its expiry is recorded (it reached its end time).
    #[serde(default)]
    pub expired: bool,
    /// Log index of the record that ended it (termination or expiry).
    #[serde(default)]
    pub ended_at: Option<u64>,
    /// The contract's wire bytes (both signatures).
    pub contract: Vec<u8>,
}

/// What happened to a contract, as a record of the log says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// Its contract record: it is durable and binds both parties.
    Active,
    /// A termination record: one party ended it early.
    Terminated,
    /// An expiry record: it reached its end time.
    Expired,
}

impl Lifecycle {
    /// `active`, `terminated` or `expired`: the event's name for hooks, the
    /// admin event stream and the metrics.
    pub fn name(self) -> &'static str {
        match self {
            Lifecycle::Active => "active",
            Lifecycle::Terminated => "terminated",
            Lifecycle::Expired => "expired",
        }
    }
}

/// A lifecycle event of a contract: one per contract and kind, at the log
/// index of the record it comes from (its stable id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    /// Position of the record in the log.
    pub log_index: u64,
    /// What happened.
    pub kind: Lifecycle,
    /// The contract.
    pub contract_id: ContractId,
    /// When, Unix ms: the contract's creation for `active`, the signed
    /// Terminate's time for `terminated`, the recorded expiry for `expired`.
    pub at_ms: u64,
    /// Why it was terminated (`customer-request`, ...); only for `terminated`.
    pub reason: Option<String>,
}

/// A placement as the index keeps it: its latest record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementEntry {
    /// Position of that record in the log.
    pub log_index: u64,
    /// The record.
    pub record: PlacementRecord,
}

/// The index database.
#[derive(Debug, Clone)]
pub struct Index {
    db: sled::Db,
    contracts: sled::Tree,
    placements: sled::Tree,
    offers: sled::Tree,
    meta: sled::Tree,
    witnessed: sled::Tree,
    /// Lifecycle events by log index (big-endian), until the hook runner
    /// has handled them.
    events: sled::Tree,
    /// The keys this node had before its key in use (key rotation), which
    /// still name it in the contracts they made.
    previous_keys: std::sync::Arc<std::sync::RwLock<Vec<PublicKey>>>,
}

const APPLIED: &[u8] = b"applied";

/// `customer-request` for `TERMINATION_REASON_CUSTOMER_REQUEST` (the name
/// `fulcrumctl contracts terminate --reason` takes).
fn termination_reason_name(reason: i32) -> String {
    let name = wire::TerminationReason::try_from(reason).map_or("unspecified", |r| r.as_str_name());
    name.strip_prefix("TERMINATION_REASON_").unwrap_or(name).to_ascii_lowercase().replace('_', "-")
}

fn offer_key(key: &OfferKey) -> Vec<u8> {
    let mut k = key.provider.to_bytes().to_vec();
    k.extend_from_slice(key.offer_id.as_bytes());
    k
}

impl Index {
    /// Opens (or creates) the index with a bounded cache.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Index, IndexError> {
        let db = sled::Config::new().path(path).cache_capacity(cache_bytes).open()?;
        Ok(Index {
            contracts: db.open_tree("contracts")?,
            placements: db.open_tree("placements")?,
            offers: db.open_tree("offers")?,
            meta: db.open_tree("meta")?,
            witnessed: db.open_tree("witnessed")?,
            events: db.open_tree("contract_events")?,
            db,
            previous_keys: Default::default(),
        })
    }

    /// The keys this node rotated away from: a contract one of them made as
    /// provider is this node's as provider (set before catching up).
    pub fn set_previous_keys(&self, keys: &[PublicKey]) {
        let mut previous = self.previous_keys.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        *previous = keys.to_vec();
    }

    /// True when `key` is `me` or one of this node's previous keys.
    fn is_mine(&self, key: &PublicKey, me: &PublicKey) -> bool {
        key == me || self.previous_keys.read().unwrap_or_else(std::sync::PoisonError::into_inner).contains(key)
    }

    /// Number of log records already applied.
    pub fn applied(&self) -> Result<u64, IndexError> {
        Ok(match self.meta.get(APPLIED)? {
            Some(v) => u64::from_be_bytes(v.as_ref().try_into().map_err(|_| IndexError::Corrupt("applied".into()))?),
            None => 0,
        })
    }

    /// Brings the contract index up to date with the log: applies what is
    /// missing, or rebuilds from scratch when the index is ahead of the log
    /// (a log restored from elsewhere). Returns how many records were applied.
    pub fn catch_up(&self, records: &[Record], me: &PublicKey) -> Result<usize, IndexError> {
        let mut applied = self.applied()? as usize;
        if applied > records.len() {
            self.contracts.clear()?;
            self.placements.clear()?;
            self.events.clear()?;
            self.meta.insert(APPLIED, &0u64.to_be_bytes())?;
            applied = 0;
        }
        for (i, record) in records.iter().enumerate().skip(applied) {
            self.apply(i as u64, record, me)?;
        }
        Ok(records.len() - applied)
    }

    /// Applies one durable log record at `log_index`. Applying the same
    /// record again (a catch-up after a crash in the middle) changes nothing;
    /// a second contract, termination or expiry record of one contract makes
    /// no second event.
    pub fn apply(&self, log_index: u64, record: &Record, me: &PublicKey) -> Result<(), IndexError> {
        match record {
            Record::Contract { contract } => {
                let id = contract.id();
                let first = self.contract(&id)?.is_none_or(|entry| entry.log_index == log_index);
                if first {
                    let entry = ContractEntry {
                        log_index,
                        provider: self.is_mine(&contract.terms().provider, me),
                        terminated: false,
                        expired: false,
                        ended_at: None,
                        contract: contract.to_wire().encode_to_vec(),
                    };
                    self.put_contract(&id, &entry)?;
                    let at_ms = contract.terms().created_at_ms;
                    self.put_event(&LifecycleEvent {
                        log_index,
                        kind: Lifecycle::Active,
                        contract_id: id,
                        at_ms,
                        reason: None,
                    })?;
                }
            }
            Record::Termination { contract_id, envelope } => {
                let terminate = wire::Terminate::decode(envelope.body()).ok();
                let at_ms = terminate.as_ref().map_or(0, |t| t.at_ms);
                let reason = terminate.map(|t| termination_reason_name(t.reason));
                self.end_contract(log_index, contract_id, Lifecycle::Terminated, at_ms, reason)?;
            }
            Record::Expiry { contract_id, at_ms } => {
                self.end_contract(log_index, contract_id, Lifecycle::Expired, *at_ms, None)?;
            }
            Record::Offer { .. }
            | Record::Pending { .. }
            | Record::Abandoned { .. }
            | Record::Evidence { .. }
            | Record::Revocation { .. }
            | Record::Rotation { .. }
            | Record::Succession { .. } => {}
            Record::Placement { placement } => {
                let entry = PlacementEntry { log_index, record: placement.clone() };
                let value = serde_json::to_vec(&entry).map_err(|e| IndexError::Corrupt(e.to_string()))?;
                self.placements.insert(placement.id.0, value)?;
            }
        }
        // Only a contiguous run advances the mark: if an earlier record failed
        // to apply, start-up catches up from it instead of skipping it.
        if self.applied()? == log_index {
            self.meta.insert(APPLIED, &(log_index + 1).to_be_bytes())?;
        }
        Ok(())
    }

    /// Marks a contract terminated or expired by the record at `log_index`,
    /// unless an earlier record ended it, and keeps the event.
    fn end_contract(
        &self,
        log_index: u64,
        id: &ContractId,
        kind: Lifecycle,
        at_ms: u64,
        reason: Option<String>,
    ) -> Result<(), IndexError> {
        let Some(mut entry) = self.contract(id)? else { return Ok(()) };
        if entry.ended_at.is_some_and(|at| at != log_index) {
            return Ok(());
        }
        entry.ended_at = Some(log_index);
        match kind {
            Lifecycle::Terminated => entry.terminated = true,
            Lifecycle::Expired => entry.expired = true,
            Lifecycle::Active => {}
        }
        self.put_contract(id, &entry)?;
        self.put_event(&LifecycleEvent { log_index, kind, contract_id: *id, at_ms, reason })
    }

    fn put_contract(&self, id: &ContractId, entry: &ContractEntry) -> Result<(), IndexError> {
        let value = serde_json::to_vec(entry).map_err(|e| IndexError::Corrupt(e.to_string()))?;
        self.contracts.insert(id.0, value)?;
        Ok(())
    }

    fn put_event(&self, event: &LifecycleEvent) -> Result<(), IndexError> {
        let value = serde_json::to_vec(event).map_err(|e| IndexError::Corrupt(e.to_string()))?;
        self.events.insert(event.log_index.to_be_bytes(), value)?;
        Ok(())
    }

    /// Up to `max` lifecycle events at log index `from` or later, in log
    /// order, among the records applied in one contiguous run (so none
    /// before them can be missing).
    pub fn events_from(&self, from: u64, max: usize) -> Result<Vec<LifecycleEvent>, IndexError> {
        let applied = self.applied()?;
        if from >= applied {
            return Ok(Vec::new());
        }
        self.events
            .range(from.to_be_bytes()..applied.to_be_bytes())
            .values()
            .take(max)
            .map(|v| serde_json::from_slice(&v?).map_err(|e| IndexError::Corrupt(e.to_string())))
            .collect()
    }

    /// Lifecycle events kept at log index `from` or later, counted up to `cap`.
    pub fn events_pending(&self, from: u64, cap: usize) -> Result<usize, IndexError> {
        let mut n = 0;
        for key in self.events.range(from.to_be_bytes()..).keys().take(cap) {
            key?;
            n += 1;
        }
        Ok(n)
    }

    /// Forgets the lifecycle events before log index `below` (handled).
    pub fn prune_events(&self, below: u64) -> Result<(), IndexError> {
        for key in self.events.range(..below.to_be_bytes()).keys() {
            self.events.remove(key?)?;
        }
        Ok(())
    }

    /// One contract.
    pub fn contract(&self, id: &ContractId) -> Result<Option<ContractEntry>, IndexError> {
        self.contracts
            .get(id.0)?
            .map(|v| serde_json::from_slice(&v).map_err(|e| IndexError::Corrupt(e.to_string())))
            .transpose()
    }

    /// Contracts active at `now_ms` (durable, not terminated, not ended).
    pub fn active_contracts(&self, now_ms: u64) -> Result<usize, IndexError> {
        let mut n = 0;
        for (_, entry) in self.contracts()? {
            let ended = wire::SignedContract::decode(entry.contract.as_slice())
                .ok()
                .and_then(|c| wire::ContractBody::decode(c.body.as_slice()).ok())
                .is_none_or(|b| b.end_ms <= now_ms);
            if !entry.terminated && !entry.expired && !ended {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Every contract, in id order.
    pub fn contracts(&self) -> Result<Vec<(ContractId, ContractEntry)>, IndexError> {
        self.contracts
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let id = ContractId::from_slice(&k).ok_or_else(|| IndexError::Corrupt("contract key".into()))?;
                let entry = serde_json::from_slice(&v).map_err(|e| IndexError::Corrupt(e.to_string()))?;
                Ok((id, entry))
            })
            .collect()
    }

    /// One placement, as its latest record says.
    pub fn placement(&self, id: &PlacementId) -> Result<Option<PlacementEntry>, IndexError> {
        self.placements
            .get(id.0)?
            .map(|v| serde_json::from_slice(&v).map_err(|e| IndexError::Corrupt(e.to_string())))
            .transpose()
    }

    /// Every placement, in id order.
    pub fn placements(&self) -> Result<Vec<PlacementEntry>, IndexError> {
        self.placements
            .iter()
            .values()
            .map(|v| serde_json::from_slice(&v?).map_err(|e| IndexError::Corrupt(e.to_string())))
            .collect()
    }

    /// Remembers a received offer (its envelope bytes).
    pub fn put_offer(&self, key: &OfferKey, envelope: &[u8]) -> Result<(), IndexError> {
        self.offers.insert(offer_key(key), envelope)?;
        Ok(())
    }

    /// Forgets an offer.
    pub fn remove_offer(&self, key: &OfferKey) -> Result<(), IndexError> {
        self.offers.remove(offer_key(key))?;
        Ok(())
    }

    /// Forgets every offer of one provider (revoked, or a retired key);
    /// returns how many there were.
    pub fn remove_provider_offers(&self, provider: &PublicKey) -> Result<usize, IndexError> {
        let keys: Vec<sled::IVec> =
            self.offers.scan_prefix(provider.to_bytes()).keys().collect::<Result<_, sled::Error>>()?;
        for k in &keys {
            self.offers.remove(k)?;
        }
        Ok(keys.len())
    }

    /// Every remembered offer envelope.
    pub fn offers(&self) -> Result<Vec<Vec<u8>>, IndexError> {
        self.offers.iter().values().map(|v| Ok(v?.to_vec())).collect()
    }

    /// Every witnessed checkpoint note a data dir from before the
    /// `witnessed` file kept here (read once, to carry them over).
    pub fn witnessed(&self) -> Result<Vec<String>, IndexError> {
        self.witnessed.iter().values().map(|v| Ok(String::from_utf8_lossy(&v?).into_owned())).collect()
    }

    /// Asks sled to write its caches out (not a durability point).
    pub fn flush(&self) -> Result<(), IndexError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fulcrum_protocol::keys::Identity;
    use fulcrum_protocol::offer::Offer;

    fn offer_record(id: &Identity) -> Record {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/offers/de-general.toml"))
            .expect("example offer");
        let (mut w, _) = crate::offer_file::parse_offer_file(&text).expect("parses");
        w.provider = id.public().to_bytes().to_vec();
        w.federation = "dev".into();
        w.seq = 1;
        w.issued_at_ms = 1;
        w.expires_at_ms = 2;
        let offer = Offer::from_wire(w, &fulcrum_protocol::Limits::default()).expect("valid");
        Record::Offer { envelope: offer.sign(id).envelope().clone() }
    }

    /// A record that failed to apply is not skipped: the mark stops before it
    /// and start-up catches up from there.
    #[test]
    fn applied_mark_only_advances_over_a_contiguous_run() {
        let dir = tempfile::tempdir().expect("tmp");
        let index = Index::open(&dir.path().join("index"), 1 << 20).expect("open");
        let id = Identity::from_secret_bytes(&[3; 32]);
        let records = vec![offer_record(&id), offer_record(&id), offer_record(&id)];
        index.apply(0, &records[0], &id.public()).expect("apply");
        // Record 1 "failed"; record 2 applies.
        index.apply(2, &records[2], &id.public()).expect("apply");
        assert_eq!(index.applied().expect("applied"), 1);
        assert_eq!(index.catch_up(&records, &id.public()).expect("catch up"), 2);
        assert_eq!(index.applied().expect("applied"), 3);
        // An index ahead of the log (a log restored from elsewhere) is rebuilt.
        assert_eq!(index.catch_up(&records[..1], &id.public()).expect("rebuild"), 1);
        assert_eq!(index.applied().expect("applied"), 1);
    }

    fn contract(provider: &Identity, consumer: &Identity, n: u8) -> fulcrum_protocol::contract::SignedContract {
        use fulcrum_protocol::contract::{ContractTerms, SignedContract};
        use fulcrum_protocol::ids::{HoldId, NegotiationId};
        use fulcrum_protocol::offer::{Country, Flavour, Price, Resources, Site};
        let terms = ContractTerms {
            federation: "dev".into(),
            provider: provider.public(),
            consumer: consumer.public(),
            offer_id: "fra1-c8m32".into(),
            offer_seq: 1,
            hold_id: HoldId([n; 16]),
            negotiation_id: NegotiationId([n; 16]),
            site: Site { country: Country::parse("DE").expect("country"), region: "r".into(), datacenter: "d".into() },
            flavour: Flavour { name: "c8m32".into(), per_unit: Resources { vcpu: 8, ..Resources::default() } },
            units: 1,
            unit_price_per_hour: Price::eur(1_000_000),
            start_ms: 1_000,
            end_ms: 2_000,
            created_at_ms: 900 + u64::from(n),
        };
        let limits = fulcrum_protocol::Limits::default();
        SignedContract::sign_as_consumer(consumer, terms.encode(), &limits)
            .and_then(|c| c.countersign(provider))
            .expect("signed")
    }

    fn terminate(by: &Identity, contract_id: ContractId) -> Record {
        use fulcrum_protocol::ids::RequestId;
        use fulcrum_protocol::messages::{Message, Terminate, TerminationReason};
        let message = Message::Terminate(Terminate {
            request_id: RequestId([1; 16]),
            contract_id,
            reason: TerminationReason::ProviderMaintenance,
            at_ms: 1_500,
            sender: by.public(),
        });
        Record::Termination { contract_id, envelope: message.seal(by) }
    }

    /// One event per contract and kind, keyed by the log index of its
    /// record, whatever the log repeats; only the applied run is handed out,
    /// handled events are pruned, and a rebuild brings back what was not.
    #[test]
    fn contract_events_follow_the_log_once_each() {
        let dir = tempfile::tempdir().expect("tmp");
        let index = Index::open(&dir.path().join("index"), 1 << 20).expect("open");
        let (me, peer) = (Identity::from_secret_bytes(&[3; 32]), Identity::from_secret_bytes(&[4; 32]));
        let (a, b) = (contract(&me, &peer, 1), contract(&peer, &me, 2));
        let records = vec![
            Record::Contract { contract: a.clone() },
            Record::Contract { contract: b.clone() },
            terminate(&peer, a.id()),
            // Logged again, ended again: no second event.
            Record::Contract { contract: a.clone() },
            Record::Expiry { contract_id: a.id(), at_ms: 2_000 },
            Record::Expiry { contract_id: b.id(), at_ms: 2_100 },
            Record::Expiry { contract_id: b.id(), at_ms: 2_200 },
            // Of a contract this log does not hold: nothing.
            Record::Expiry { contract_id: ContractId([9; 32]), at_ms: 2_300 },
        ];
        let summary = |events: Vec<LifecycleEvent>| -> Vec<(u64, Lifecycle, ContractId, u64, Option<String>)> {
            events.into_iter().map(|e| (e.log_index, e.kind, e.contract_id, e.at_ms, e.reason)).collect()
        };
        let all = vec![
            (0, Lifecycle::Active, a.id(), 901, None),
            (1, Lifecycle::Active, b.id(), 902, None),
            (2, Lifecycle::Terminated, a.id(), 1_500, Some("provider-maintenance".to_owned())),
            (5, Lifecycle::Expired, b.id(), 2_100, None),
        ];
        // Only records applied in one run count: record 1 "failed" so far.
        index.apply(0, &records[0], &me.public()).expect("apply");
        index.apply(2, &records[2], &me.public()).expect("apply");
        assert_eq!(summary(index.events_from(0, 10).expect("events")), all[..1]);
        assert_eq!(index.catch_up(&records, &me.public()).expect("catch up"), 7);
        // Applying a record again changes nothing.
        index.apply(2, &records[2], &me.public()).expect("apply");
        assert_eq!(summary(index.events_from(0, 10).expect("events")), all);
        assert_eq!(summary(index.events_from(2, 1).expect("events")), all[2..3]);
        assert_eq!(index.events_pending(2, 10).expect("count"), 2);
        assert_eq!(index.events_pending(0, 3).expect("count"), 3);

        let a_entry = index.contract(&a.id()).expect("read").expect("indexed");
        assert_eq!(
            (a_entry.log_index, a_entry.terminated, a_entry.expired, a_entry.ended_at),
            (0, true, false, Some(2))
        );
        let b_entry = index.contract(&b.id()).expect("read").expect("indexed");
        assert_eq!(
            (b_entry.provider, b_entry.terminated, b_entry.expired, b_entry.ended_at),
            (false, false, true, Some(5))
        );

        index.prune_events(2).expect("prune");
        assert_eq!(summary(index.events_from(0, 10).expect("events")), all[2..]);
        // A rebuild (the log was replaced) brings every event back.
        index.meta.insert(APPLIED, &99u64.to_be_bytes()).expect("mark");
        assert_eq!(index.catch_up(&records, &me.public()).expect("rebuild"), 8);
        assert_eq!(summary(index.events_from(0, 10).expect("events")), all);
    }

    /// A placement is indexed as its latest record says, and a rebuild
    /// forgets placements the log no longer has.
    #[test]
    fn placements_keep_their_latest_record() {
        use fulcrum_protocol::placement::{PlacementRecord, PlacementState, PlacementTerms};
        let dir = tempfile::tempdir().expect("tmp");
        let index = Index::open(&dir.path().join("index"), 1 << 20).expect("open");
        let me = Identity::from_secret_bytes(&[3; 32]).public();
        let record = |state| Record::Placement {
            placement: PlacementRecord {
                id: PlacementId([9; 16]),
                state,
                terms: PlacementTerms {
                    units: 2,
                    spread: fulcrum_protocol::matching::Spread::Providers,
                    min_per_unit: Default::default(),
                    countries: Default::default(),
                    labels: Default::default(),
                    attested_labels: false,
                    min_sla_permille: 0,
                    max_unit_price: None,
                    start_ms: 1,
                    duration_ms: 2,
                },
                contracts: vec![ContractId([1; 32])],
                unresolved: Vec::new(),
                attempts: 1,
                reason: String::new(),
                started_at_ms: 1,
                at_ms: 2,
            },
        };
        let records = vec![record(PlacementState::Committing), record(PlacementState::Failed)];
        assert_eq!(index.catch_up(&records, &me).expect("catch up"), 2);
        let entry = index.placement(&PlacementId([9; 16])).expect("read").expect("indexed");
        assert_eq!((entry.log_index, entry.record.state), (1, PlacementState::Failed));
        assert_eq!(index.placements().expect("list").len(), 1);
        index.meta.insert(APPLIED, &5u64.to_be_bytes()).expect("mark");
        assert_eq!(index.catch_up(&[], &me).expect("rebuild"), 0);
        assert!(index.placements().expect("list").is_empty());
    }

    /// A revoked member's or a retired key's offers leave the index, and
    /// nobody else's do.
    #[test]
    fn a_providers_offers_are_removed_together() {
        let dir = tempfile::tempdir().expect("tmp");
        let index = Index::open(&dir.path().join("index"), 1 << 20).expect("open");
        let (a, b) = (Identity::from_secret_bytes(&[3; 32]).public(), Identity::from_secret_bytes(&[4; 32]).public());
        for (provider, id) in [(a, "x"), (a, "y"), (b, "x")] {
            let key = OfferKey { provider, offer_id: id.into() };
            index.put_offer(&key, id.as_bytes()).expect("put");
        }
        assert_eq!(index.remove_provider_offers(&a).expect("remove"), 2);
        assert_eq!(index.offers().expect("list"), vec![b"x".to_vec()]);
        assert_eq!(index.remove_provider_offers(&a).expect("again"), 0);
    }
}
