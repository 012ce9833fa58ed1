//! The sled database: indexes and derived state that make admin queries and
//! restarts cheap: contracts by id with role and state, and the offer book
//! received from peers (which is not in the log: only own offers are). All of
//! it is derived; the contract index is rebuilt from the log whenever it is
//! missing or behind, so sled's own flush is never a durability guarantee.

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
    /// The contract's wire bytes (both signatures).
    pub contract: Vec<u8>,
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
}

const APPLIED: &[u8] = b"applied";

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
            db,
        })
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
            self.meta.insert(APPLIED, &0u64.to_be_bytes())?;
            applied = 0;
        }
        for (i, record) in records.iter().enumerate().skip(applied) {
            self.apply(i as u64, record, me)?;
        }
        Ok(records.len() - applied)
    }

    /// Applies one durable log record at `log_index`.
    pub fn apply(&self, log_index: u64, record: &Record, me: &PublicKey) -> Result<(), IndexError> {
        match record {
            Record::Contract { contract } => {
                let entry = ContractEntry {
                    log_index,
                    provider: contract.terms().provider == *me,
                    terminated: false,
                    contract: contract.to_wire().encode_to_vec(),
                };
                let value = serde_json::to_vec(&entry).map_err(|e| IndexError::Corrupt(e.to_string()))?;
                self.contracts.insert(contract.id().0, value)?;
            }
            Record::Termination { contract_id, .. } => {
                if let Some(mut entry) = self.contract(contract_id)? {
                    entry.terminated = true;
                    let value = serde_json::to_vec(&entry).map_err(|e| IndexError::Corrupt(e.to_string()))?;
                    self.contracts.insert(contract_id.0, value)?;
                }
            }
            Record::Offer { .. }
            | Record::Pending { .. }
            | Record::Abandoned { .. }
            | Record::Evidence { .. }
            | Record::Revocation { .. } => {}
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
            if !entry.terminated && !ended {
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

    /// Every remembered offer envelope.
    pub fn offers(&self) -> Result<Vec<Vec<u8>>, IndexError> {
        self.offers.iter().values().map(|v| Ok(v?.to_vec())).collect()
    }

    /// Keeps the latest checkpoint witnessed of another node.
    pub fn put_witnessed(&self, node: &PublicKey, note: &str) -> Result<(), IndexError> {
        self.witnessed.insert(node.to_bytes(), note.as_bytes())?;
        Ok(())
    }

    /// Every witnessed checkpoint note.
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
}
