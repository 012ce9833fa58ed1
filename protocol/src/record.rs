//! Records of the agreement log. Each is stored as CBOR; the Merkle leaf of a
//! record is its CBOR bytes. Signed parts are kept as their exact signed bytes
//! and verified again whenever a record is read.

use serde::{Deserialize, Serialize};

use crate::contract::SignedContract;
use crate::envelope::Envelope;
use crate::ids::ContractId;
use crate::membership::Revocation;
use crate::placement::PlacementRecord;
use crate::rotation::KeyRotation;

/// One entry of the agreement log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// An offer this node published (its capacity is `units_available`).
    Offer {
        /// The signed offer.
        envelope: Envelope,
    },
    /// A contract signed by both parties.
    Contract {
        /// The contract.
        contract: SignedContract,
    },
    /// Consumer side: a contract it signed and is about to commit. Written
    /// before the Commit is sent, so that after a crash the consumer still
    /// knows to ask the provider for the outcome.
    Pending {
        /// The contract, signed by the consumer only.
        contract: SignedContract,
    },
    /// Consumer side: a pending contract the provider confirmed it will never
    /// countersign (the hold is gone).
    Abandoned {
        /// The contract.
        contract_id: ContractId,
    },
    /// A contract ended early by one party.
    Termination {
        /// The contract.
        contract_id: ContractId,
        /// The signed Terminate message.
        envelope: Envelope,
    },
    /// Evidence that a node rewrote or denied its history: an envelope of
    /// kind `evidence`, signed by the witness that found it (this node or
    /// the peer that gossiped it).
    Evidence {
        /// The signed evidence.
        envelope: Envelope,
    },
    /// A member revoked by k authorities of the federation's charter (checked
    /// against the charter before it is written, and again when read back).
    Revocation {
        /// The revocation, signed by the authorities.
        revocation: Revocation,
    },
    /// Consumer side: where a composite placement stands (the last record of
    /// a placement id is its state). Unsigned: it binds only this node.
    Placement {
        /// The placement.
        placement: PlacementRecord,
    },
    /// A contract that reached its end time without being terminated. Each
    /// party writes it once, on its own clock, when the end has passed (at
    /// start-up for a contract that ended while the node was down).
    /// Unsigned: the end time is in the contract both parties signed, and the
    /// node's checkpoints cover the record.
    Expiry {
        /// The contract, earlier in the log.
        contract_id: ContractId,
        /// When this node recorded the expiry, Unix ms (at or after the end).
        at_ms: u64,
    },
    /// This node handed its identity over to a new key: records before it
    /// are the old key's, records after it the new key's. Signed by both.
    Rotation {
        /// The rotation statement.
        rotation: KeyRotation,
    },
    /// Another party handed its identity over to a new key. Logged before
    /// the first record that its new key signed about a contract its old
    /// key made (a termination), so that the log alone shows who speaks for
    /// whom. Signed by both keys.
    Succession {
        /// The other party's rotation statement.
        rotation: KeyRotation,
    },
}

/// Why a record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Not CBOR, or a signature inside does not verify.
    #[error("record is not valid: {0}")]
    Decode(String),
    /// Could not encode (should not happen for valid records).
    #[error("record could not be encoded: {0}")]
    Encode(String),
}

impl Record {
    /// The CBOR bytes (also the Merkle leaf data).
    pub fn to_cbor(&self) -> Result<Vec<u8>, RecordError> {
        let mut out = Vec::new();
        ciborium::into_writer(self, &mut out).map_err(|e| RecordError::Encode(e.to_string()))?;
        Ok(out)
    }

    /// Parses CBOR bytes, verifying every signature inside.
    pub fn from_cbor(bytes: &[u8]) -> Result<Record, RecordError> {
        let record: Record = ciborium::from_reader(bytes).map_err(|e| RecordError::Decode(e.to_string()))?;
        if let Record::Contract { contract } = &record
            && !contract.is_countersigned()
        {
            return Err(RecordError::Decode("contract record lacks the provider signature".into()));
        }
        Ok(record)
    }
}
