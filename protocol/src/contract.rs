//! Contracts: the terms both parties sign (one body, encoded once by the
//! provider and signed verbatim by both) and the pair of signatures over it.

use fulcrum_proto::v1 as wire;
use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::envelope::{Kind, sign_detached, verify_detached};
use crate::ids::{ContractId, HoldId, NegotiationId};
use crate::keys::{Identity, PublicKey, SIGNATURE_LEN};
use crate::limits::Limits;
use crate::offer::{
    Flavour, OfferError, Price, Site, flavour_from_wire, flavour_to_wire, price_from_wire, price_to_wire,
    site_from_wire, site_to_wire,
};

/// Why a contract was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    /// Body over the size limit.
    #[error("contract body of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Size.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Body is not a ContractBody.
    #[error("contract body is not valid protobuf: {0}")]
    Decode(String),
    /// A field of the body is invalid.
    #[error("contract body: {0}")]
    Field(#[from] OfferError),
    /// A party key or id is malformed.
    #[error("contract field {0} is malformed")]
    Malformed(&'static str),
    /// end is not after start.
    #[error("contract ends ({end_ms}) before it starts ({start_ms})")]
    BadPeriod {
        /// Start.
        start_ms: u64,
        /// End.
        end_ms: u64,
    },
    /// The consumer's signature is missing or wrong.
    #[error("consumer signature does not verify")]
    BadConsumerSignature,
    /// The provider's signature is missing.
    #[error("provider signature is missing")]
    MissingProviderSignature,
    /// The provider's signature is wrong.
    #[error("provider signature does not verify")]
    BadProviderSignature,
    /// Someone who is not the party tried to sign.
    #[error("{0} is not the party that signs here")]
    NotAParty(PublicKey),
}

/// The terms of a contract.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContractTerms {
    /// Federation.
    pub federation: String,
    /// Provider (countersigns).
    pub provider: PublicKey,
    /// Consumer (signs first).
    pub consumer: PublicKey,
    /// The offer it was made from.
    pub offer_id: String,
    /// The offer seq at the time.
    pub offer_seq: u64,
    /// The hold it commits.
    pub hold_id: HoldId,
    /// The negotiation it closes.
    pub negotiation_id: NegotiationId,
    /// Where.
    pub site: Site,
    /// What one unit is.
    pub flavour: Flavour,
    /// How many units.
    pub units: u32,
    /// Agreed unit price per hour.
    pub unit_price_per_hour: Price,
    /// Start, Unix ms.
    pub start_ms: u64,
    /// End, Unix ms.
    pub end_ms: u64,
    /// When the provider drafted it, Unix ms.
    pub created_at_ms: u64,
}

impl ContractTerms {
    /// The wire message.
    pub fn to_wire(&self) -> wire::ContractBody {
        wire::ContractBody {
            federation: self.federation.clone(),
            provider: self.provider.to_bytes().to_vec(),
            consumer: self.consumer.to_bytes().to_vec(),
            offer_id: self.offer_id.clone(),
            offer_seq: self.offer_seq,
            hold_id: self.hold_id.to_vec(),
            negotiation_id: self.negotiation_id.to_vec(),
            site: Some(site_to_wire(&self.site)),
            flavour: Some(flavour_to_wire(&self.flavour)),
            units: self.units,
            unit_price_per_hour: Some(price_to_wire(&self.unit_price_per_hour)),
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            created_at_ms: self.created_at_ms,
        }
    }

    /// The body bytes both parties sign.
    pub fn encode(&self) -> Vec<u8> {
        self.to_wire().encode_to_vec()
    }

    /// Decodes and checks body bytes.
    pub fn decode(body: &[u8], limits: &Limits) -> Result<ContractTerms, ContractError> {
        let max = Kind::Contract.max_body_len();
        if body.len() > max {
            return Err(ContractError::TooLarge { len: body.len(), max });
        }
        let w = wire::ContractBody::decode(body).map_err(|e| ContractError::Decode(e.to_string()))?;
        let provider = PublicKey::from_bytes(&w.provider).map_err(|_| ContractError::Malformed("provider"))?;
        let consumer = PublicKey::from_bytes(&w.consumer).map_err(|_| ContractError::Malformed("consumer"))?;
        let hold_id = HoldId::from_slice(&w.hold_id).ok_or(ContractError::Malformed("hold_id"))?;
        let negotiation_id =
            NegotiationId::from_slice(&w.negotiation_id).ok_or(ContractError::Malformed("negotiation_id"))?;
        if w.federation.is_empty() || w.federation.len() > limits.max_text_len {
            return Err(ContractError::Malformed("federation"));
        }
        if w.offer_id.is_empty() || w.offer_id.len() > limits.max_text_len {
            return Err(ContractError::Malformed("offer_id"));
        }
        if w.units == 0 || w.units > limits.max_units {
            return Err(ContractError::Malformed("units"));
        }
        if w.end_ms <= w.start_ms {
            return Err(ContractError::BadPeriod { start_ms: w.start_ms, end_ms: w.end_ms });
        }
        let site = site_from_wire(w.site.ok_or(ContractError::Malformed("site"))?, limits)?;
        let flavour = flavour_from_wire(w.flavour.ok_or(ContractError::Malformed("flavour"))?, limits)?;
        let unit_price_per_hour =
            price_from_wire(w.unit_price_per_hour.ok_or(ContractError::Malformed("unit_price_per_hour"))?)?;
        Ok(ContractTerms {
            federation: w.federation,
            provider,
            consumer,
            offer_id: w.offer_id,
            offer_seq: w.offer_seq,
            hold_id,
            negotiation_id,
            site,
            flavour,
            units: w.units,
            unit_price_per_hour,
            start_ms: w.start_ms,
            end_ms: w.end_ms,
            created_at_ms: w.created_at_ms,
        })
    }
}

/// The id of a contract body.
pub fn contract_id(body: &[u8]) -> ContractId {
    ContractId(Sha256::digest(body).into())
}

/// A contract: its body bytes, parsed terms, the consumer's signature and,
/// once countersigned, the provider's. Every constructor verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedContract {
    body: Vec<u8>,
    terms: ContractTerms,
    consumer_signature: [u8; SIGNATURE_LEN],
    provider_signature: Option<[u8; SIGNATURE_LEN]>,
}

impl SignedContract {
    /// The consumer signs a draft body it received in a Hold.
    pub fn sign_as_consumer(
        identity: &Identity,
        body: Vec<u8>,
        limits: &Limits,
    ) -> Result<SignedContract, ContractError> {
        let terms = ContractTerms::decode(&body, limits)?;
        if terms.consumer != identity.public() {
            return Err(ContractError::NotAParty(identity.public()));
        }
        let consumer_signature = sign_detached(identity, Kind::Contract, &body);
        Ok(SignedContract { body, terms, consumer_signature, provider_signature: None })
    }

    /// The provider countersigns.
    pub fn countersign(&self, identity: &Identity) -> Result<SignedContract, ContractError> {
        if self.terms.provider != identity.public() {
            return Err(ContractError::NotAParty(identity.public()));
        }
        let mut signed = self.clone();
        signed.provider_signature = Some(sign_detached(identity, Kind::Contract, &self.body));
        Ok(signed)
    }

    /// Parses and verifies a wire contract. With `require_both`, the
    /// provider's signature must be present too.
    pub fn from_wire(
        w: wire::SignedContract,
        limits: &Limits,
        require_both: bool,
    ) -> Result<SignedContract, ContractError> {
        let terms = ContractTerms::decode(&w.body, limits)?;
        if !verify_detached(&terms.consumer, Kind::Contract, &w.body, &w.consumer_signature) {
            return Err(ContractError::BadConsumerSignature);
        }
        let consumer_signature: [u8; SIGNATURE_LEN] =
            w.consumer_signature.as_slice().try_into().map_err(|_| ContractError::BadConsumerSignature)?;
        let provider_signature = if w.provider_signature.is_empty() {
            if require_both {
                return Err(ContractError::MissingProviderSignature);
            }
            None
        } else {
            if !verify_detached(&terms.provider, Kind::Contract, &w.body, &w.provider_signature) {
                return Err(ContractError::BadProviderSignature);
            }
            Some(w.provider_signature.as_slice().try_into().map_err(|_| ContractError::BadProviderSignature)?)
        };
        Ok(SignedContract { body: w.body, terms, consumer_signature, provider_signature })
    }

    /// The wire form.
    pub fn to_wire(&self) -> wire::SignedContract {
        wire::SignedContract {
            body: self.body.clone(),
            consumer_signature: self.consumer_signature.to_vec(),
            provider_signature: self.provider_signature.map(|s| s.to_vec()).unwrap_or_default(),
        }
    }

    /// SHA-256 of the body.
    pub fn id(&self) -> ContractId {
        contract_id(&self.body)
    }

    /// The terms.
    pub fn terms(&self) -> &ContractTerms {
        &self.terms
    }

    /// The exact body bytes both parties sign.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// True once the provider has countersigned.
    pub fn is_countersigned(&self) -> bool {
        self.provider_signature.is_some()
    }

    /// The consumer's signature.
    pub fn consumer_signature(&self) -> &[u8; SIGNATURE_LEN] {
        &self.consumer_signature
    }

    /// The provider's signature, once countersigned.
    pub fn provider_signature(&self) -> Option<&[u8; SIGNATURE_LEN]> {
        self.provider_signature.as_ref()
    }
}

// At rest a contract is its wire bytes, verified again when read (every
// signature present must verify; records that need both check for both).
impl Serialize for SignedContract {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.to_wire().encode_to_vec())
    }
}

impl<'de> Deserialize<'de> for SignedContract {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = crate::keys::serde_bytes_vec(d)?;
        let w = wire::SignedContract::decode(bytes.as_slice()).map_err(serde::de::Error::custom)?;
        SignedContract::from_wire(w, &Limits::default(), false).map_err(serde::de::Error::custom)
    }
}
