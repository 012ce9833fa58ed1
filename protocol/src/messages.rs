//! Negotiation messages as domain values, and their conversion to and from
//! signed envelopes. Every message is signed by its sender and carries a
//! request id; responses echo the id of the request they answer.

use fulcrum_proto::v1 as wire;
pub use fulcrum_proto::v1::{ContractState, RejectCode, TerminationReason};

use crate::contract::{ContractError, SignedContract};
use crate::envelope::{Envelope, EnvelopeError, Kind};
use crate::ids::{ContractId, HoldId, NegotiationId, RequestId};
use crate::keys::{Identity, PublicKey};
use crate::limits::Limits;
use crate::offer::{OfferError, Price, price_from_wire, price_to_wire};

/// Why a message was refused before any engine saw it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The envelope is bad.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The envelope's kind is not a negotiation message.
    #[error("{0} is not a negotiation message")]
    NotNegotiation(Kind),
    /// A field is missing or malformed.
    #[error("{kind} field {field} is missing or malformed")]
    Field {
        /// Message kind.
        kind: Kind,
        /// Field.
        field: &'static str,
    },
    /// A price is malformed.
    #[error(transparent)]
    Price(#[from] OfferError),
    /// A contract inside is bad.
    #[error(transparent)]
    Contract(#[from] ContractError),
    /// A party key inside does not match the envelope's signer.
    #[error("{kind} claims sender {claimed} but is signed by {signer}")]
    SenderMismatch {
        /// Message kind.
        kind: Kind,
        /// Who the body names.
        claimed: PublicKey,
        /// Who signed.
        signer: PublicKey,
    },
}

/// Consumer asks for a hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Propose {
    /// Request id.
    pub request_id: RequestId,
    /// Negotiation id (stable across rounds).
    pub negotiation_id: NegotiationId,
    /// Counter round, from 0.
    pub round: u32,
    /// The consumer (must be the signer).
    pub consumer: PublicKey,
    /// The provider addressed.
    pub provider: PublicKey,
    /// Which offer.
    pub offer_id: String,
    /// The seq of the offer the consumer saw.
    pub offer_seq: u64,
    /// Units wanted.
    pub units: u32,
    /// Highest unit price per hour the consumer accepts in this round.
    pub max_unit_price: Price,
    /// Wanted start, Unix ms.
    pub start_ms: u64,
    /// Wanted duration, ms.
    pub duration_ms: u64,
    /// The consumer will not commit after this time.
    pub expires_at_ms: u64,
}

/// Provider grants a hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// Echoed request id.
    pub request_id: RequestId,
    /// The hold.
    pub hold_id: HoldId,
    /// Price per unit-hour the draft carries.
    pub unit_price: Price,
    /// The hold ends at this time unless committed.
    pub hold_until_ms: u64,
    /// Exact ContractBody bytes to sign.
    pub draft: Vec<u8>,
}

/// Provider proposes other terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    /// Echoed request id.
    pub request_id: RequestId,
    /// Negotiation.
    pub negotiation_id: NegotiationId,
    /// Units the provider can do, if fewer.
    pub units: Option<u32>,
    /// Price the provider can do, if higher.
    pub unit_price: Option<Price>,
}

/// Refusal with a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Echoed request id.
    pub request_id: RequestId,
    /// Machine-readable reason.
    pub code: RejectCode,
    /// Human-readable reason.
    pub message: String,
}

/// Consumer commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Request id.
    pub request_id: RequestId,
    /// The hold being committed.
    pub hold_id: HoldId,
    /// The contract signed by the consumer.
    pub contract: SignedContract,
}

/// Provider returns the contract signed by both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Countersigned {
    /// Echoed request id.
    pub request_id: RequestId,
    /// The contract, both signatures.
    pub contract: SignedContract,
}

/// Frees a hold early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Request id.
    pub request_id: RequestId,
    /// The hold.
    pub hold_id: HoldId,
}

/// Confirms a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// Echoed request id.
    pub request_id: RequestId,
    /// The hold.
    pub hold_id: HoldId,
}

/// Ends a contract early; either party.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminate {
    /// Request id.
    pub request_id: RequestId,
    /// The contract.
    pub contract_id: ContractId,
    /// Why.
    pub reason: TerminationReason,
    /// When, Unix ms.
    pub at_ms: u64,
    /// Which party sends it (must be the signer).
    pub sender: PublicKey,
}

/// Confirms a termination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminated {
    /// Echoed request id.
    pub request_id: RequestId,
    /// The contract.
    pub contract_id: ContractId,
    /// When it ended, Unix ms.
    pub at_ms: u64,
}

/// What a status request asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusTarget {
    /// A contract by id.
    Contract(ContractId),
    /// A hold by id.
    Hold(HoldId),
}

/// Reconciliation question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRequest {
    /// Request id.
    pub request_id: RequestId,
    /// What.
    pub target: StatusTarget,
}

/// Reconciliation answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusResponse {
    /// Echoed request id.
    pub request_id: RequestId,
    /// State.
    pub state: ContractState,
    /// The contract, when there is one.
    pub contract: Option<SignedContract>,
    /// For a live hold, when it ends.
    pub hold_until_ms: u64,
}

/// Every negotiation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// See [`Propose`].
    Propose(Propose),
    /// See [`Hold`].
    Hold(Hold),
    /// See [`Counter`].
    Counter(Counter),
    /// See [`Reject`].
    Reject(Reject),
    /// See [`Commit`].
    Commit(Commit),
    /// See [`Countersigned`].
    Countersigned(Countersigned),
    /// See [`Release`].
    Release(Release),
    /// See [`Released`].
    Released(Released),
    /// See [`Terminate`].
    Terminate(Terminate),
    /// See [`Terminated`].
    Terminated(Terminated),
    /// See [`StatusRequest`].
    StatusRequest(StatusRequest),
    /// See [`StatusResponse`].
    StatusResponse(StatusResponse),
}

fn field<T>(kind: Kind, name: &'static str, v: Option<T>) -> Result<T, MessageError> {
    v.ok_or(MessageError::Field { kind, field: name })
}

fn key(kind: Kind, name: &'static str, b: &[u8]) -> Result<PublicKey, MessageError> {
    field(kind, name, PublicKey::from_bytes(b).ok())
}

fn rid(kind: Kind, b: &[u8]) -> Result<RequestId, MessageError> {
    field(kind, "request_id", RequestId::from_slice(b))
}

fn contract(
    kind: Kind,
    c: Option<wire::SignedContract>,
    limits: &Limits,
    both: bool,
) -> Result<SignedContract, MessageError> {
    Ok(SignedContract::from_wire(field(kind, "contract", c)?, limits, both)?)
}

impl Message {
    /// The envelope kind of this message.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Propose(_) => Kind::Propose,
            Message::Hold(_) => Kind::Hold,
            Message::Counter(_) => Kind::Counter,
            Message::Reject(_) => Kind::Reject,
            Message::Commit(_) => Kind::Commit,
            Message::Countersigned(_) => Kind::Countersigned,
            Message::Release(_) => Kind::Release,
            Message::Released(_) => Kind::Released,
            Message::Terminate(_) => Kind::Terminate,
            Message::Terminated(_) => Kind::Terminated,
            Message::StatusRequest(_) => Kind::StatusRequest,
            Message::StatusResponse(_) => Kind::StatusResponse,
        }
    }

    /// The request id this message carries (or answers).
    pub fn request_id(&self) -> RequestId {
        match self {
            Message::Propose(m) => m.request_id,
            Message::Hold(m) => m.request_id,
            Message::Counter(m) => m.request_id,
            Message::Reject(m) => m.request_id,
            Message::Commit(m) => m.request_id,
            Message::Countersigned(m) => m.request_id,
            Message::Release(m) => m.request_id,
            Message::Released(m) => m.request_id,
            Message::Terminate(m) => m.request_id,
            Message::Terminated(m) => m.request_id,
            Message::StatusRequest(m) => m.request_id,
            Message::StatusResponse(m) => m.request_id,
        }
    }

    /// Signs this message with the sender's identity.
    pub fn seal(&self, identity: &Identity) -> Envelope {
        use prost::Message as _;
        let kind = self.kind();
        let body = match self {
            Message::Propose(m) => wire::Propose {
                request_id: m.request_id.to_vec(),
                negotiation_id: m.negotiation_id.to_vec(),
                round: m.round,
                consumer: m.consumer.to_bytes().to_vec(),
                provider: m.provider.to_bytes().to_vec(),
                offer_id: m.offer_id.clone(),
                offer_seq: m.offer_seq,
                units: m.units,
                max_unit_price: Some(price_to_wire(&m.max_unit_price)),
                start_ms: m.start_ms,
                duration_ms: m.duration_ms,
                expires_at_ms: m.expires_at_ms,
            }
            .encode_to_vec(),
            Message::Hold(m) => wire::Hold {
                request_id: m.request_id.to_vec(),
                hold_id: m.hold_id.to_vec(),
                unit_price: Some(price_to_wire(&m.unit_price)),
                hold_until_ms: m.hold_until_ms,
                draft: m.draft.clone(),
            }
            .encode_to_vec(),
            Message::Counter(m) => wire::Counter {
                request_id: m.request_id.to_vec(),
                negotiation_id: m.negotiation_id.to_vec(),
                units: m.units.unwrap_or(0),
                unit_price: m.unit_price.as_ref().map(price_to_wire),
            }
            .encode_to_vec(),
            Message::Reject(m) => {
                wire::Reject { request_id: m.request_id.to_vec(), code: m.code as i32, message: m.message.clone() }
                    .encode_to_vec()
            }
            Message::Commit(m) => wire::Commit {
                request_id: m.request_id.to_vec(),
                hold_id: m.hold_id.to_vec(),
                contract: Some(m.contract.to_wire()),
            }
            .encode_to_vec(),
            Message::Countersigned(m) => {
                wire::Countersigned { request_id: m.request_id.to_vec(), contract: Some(m.contract.to_wire()) }
                    .encode_to_vec()
            }
            Message::Release(m) => {
                wire::Release { request_id: m.request_id.to_vec(), hold_id: m.hold_id.to_vec() }.encode_to_vec()
            }
            Message::Released(m) => {
                wire::Released { request_id: m.request_id.to_vec(), hold_id: m.hold_id.to_vec() }.encode_to_vec()
            }
            Message::Terminate(m) => wire::Terminate {
                request_id: m.request_id.to_vec(),
                contract_id: m.contract_id.to_vec(),
                reason: m.reason as i32,
                at_ms: m.at_ms,
                sender: m.sender.to_bytes().to_vec(),
            }
            .encode_to_vec(),
            Message::Terminated(m) => wire::Terminated {
                request_id: m.request_id.to_vec(),
                contract_id: m.contract_id.to_vec(),
                at_ms: m.at_ms,
            }
            .encode_to_vec(),
            Message::StatusRequest(m) => {
                let (contract_id, hold_id) = match m.target {
                    StatusTarget::Contract(c) => (c.to_vec(), Vec::new()),
                    StatusTarget::Hold(h) => (Vec::new(), h.to_vec()),
                };
                wire::StatusRequest { request_id: m.request_id.to_vec(), contract_id, hold_id }.encode_to_vec()
            }
            Message::StatusResponse(m) => wire::StatusResponse {
                request_id: m.request_id.to_vec(),
                state: m.state as i32,
                contract: m.contract.as_ref().map(SignedContract::to_wire),
                hold_until_ms: m.hold_until_ms,
            }
            .encode_to_vec(),
        };
        Envelope::seal(identity, kind, body)
    }

    /// Decodes a verified envelope into a message, checking every field and,
    /// where the body names its sender, that the signer is that sender.
    pub fn open(envelope: &Envelope, limits: &Limits) -> Result<Message, MessageError> {
        let kind = envelope.kind();
        let signer = envelope.signer();
        let msg = match kind {
            Kind::Propose => {
                let w: wire::Propose = envelope.open(kind)?;
                let consumer = key(kind, "consumer", &w.consumer)?;
                if consumer != signer {
                    return Err(MessageError::SenderMismatch { kind, claimed: consumer, signer });
                }
                if w.offer_id.is_empty() || w.offer_id.len() > limits.max_text_len {
                    return Err(MessageError::Field { kind, field: "offer_id" });
                }
                Message::Propose(Propose {
                    request_id: rid(kind, &w.request_id)?,
                    negotiation_id: field(kind, "negotiation_id", NegotiationId::from_slice(&w.negotiation_id))?,
                    round: w.round,
                    consumer,
                    provider: key(kind, "provider", &w.provider)?,
                    offer_id: w.offer_id,
                    offer_seq: w.offer_seq,
                    units: w.units,
                    max_unit_price: price_from_wire(field(kind, "max_unit_price", w.max_unit_price)?)?,
                    start_ms: w.start_ms,
                    duration_ms: w.duration_ms,
                    expires_at_ms: w.expires_at_ms,
                })
            }
            Kind::Hold => {
                let w: wire::Hold = envelope.open(kind)?;
                Message::Hold(Hold {
                    request_id: rid(kind, &w.request_id)?,
                    hold_id: field(kind, "hold_id", HoldId::from_slice(&w.hold_id))?,
                    unit_price: price_from_wire(field(kind, "unit_price", w.unit_price)?)?,
                    hold_until_ms: w.hold_until_ms,
                    draft: w.draft,
                })
            }
            Kind::Counter => {
                let w: wire::Counter = envelope.open(kind)?;
                Message::Counter(Counter {
                    request_id: rid(kind, &w.request_id)?,
                    negotiation_id: field(kind, "negotiation_id", NegotiationId::from_slice(&w.negotiation_id))?,
                    units: (w.units > 0).then_some(w.units),
                    unit_price: w.unit_price.map(price_from_wire).transpose()?,
                })
            }
            Kind::Reject => {
                let w: wire::Reject = envelope.open(kind)?;
                let mut message = w.message;
                message.truncate(message.floor_char_boundary(512));
                Message::Reject(Reject {
                    request_id: rid(kind, &w.request_id)?,
                    code: RejectCode::try_from(w.code).unwrap_or(RejectCode::Unspecified),
                    message,
                })
            }
            Kind::Commit => {
                let w: wire::Commit = envelope.open(kind)?;
                Message::Commit(Commit {
                    request_id: rid(kind, &w.request_id)?,
                    hold_id: field(kind, "hold_id", HoldId::from_slice(&w.hold_id))?,
                    contract: contract(kind, w.contract, limits, false)?,
                })
            }
            Kind::Countersigned => {
                let w: wire::Countersigned = envelope.open(kind)?;
                Message::Countersigned(Countersigned {
                    request_id: rid(kind, &w.request_id)?,
                    contract: contract(kind, w.contract, limits, true)?,
                })
            }
            Kind::Release => {
                let w: wire::Release = envelope.open(kind)?;
                Message::Release(Release {
                    request_id: rid(kind, &w.request_id)?,
                    hold_id: field(kind, "hold_id", HoldId::from_slice(&w.hold_id))?,
                })
            }
            Kind::Released => {
                let w: wire::Released = envelope.open(kind)?;
                Message::Released(Released {
                    request_id: rid(kind, &w.request_id)?,
                    hold_id: field(kind, "hold_id", HoldId::from_slice(&w.hold_id))?,
                })
            }
            Kind::Terminate => {
                let w: wire::Terminate = envelope.open(kind)?;
                let sender = key(kind, "sender", &w.sender)?;
                if sender != signer {
                    return Err(MessageError::SenderMismatch { kind, claimed: sender, signer });
                }
                Message::Terminate(Terminate {
                    request_id: rid(kind, &w.request_id)?,
                    contract_id: field(kind, "contract_id", ContractId::from_slice(&w.contract_id))?,
                    reason: TerminationReason::try_from(w.reason).unwrap_or(TerminationReason::Unspecified),
                    at_ms: w.at_ms,
                    sender,
                })
            }
            Kind::Terminated => {
                let w: wire::Terminated = envelope.open(kind)?;
                Message::Terminated(Terminated {
                    request_id: rid(kind, &w.request_id)?,
                    contract_id: field(kind, "contract_id", ContractId::from_slice(&w.contract_id))?,
                    at_ms: w.at_ms,
                })
            }
            Kind::StatusRequest => {
                let w: wire::StatusRequest = envelope.open(kind)?;
                let target = match (w.contract_id.is_empty(), w.hold_id.is_empty()) {
                    (false, true) => {
                        StatusTarget::Contract(field(kind, "contract_id", ContractId::from_slice(&w.contract_id))?)
                    }
                    (true, false) => StatusTarget::Hold(field(kind, "hold_id", HoldId::from_slice(&w.hold_id))?),
                    _ => return Err(MessageError::Field { kind, field: "contract_id|hold_id" }),
                };
                Message::StatusRequest(StatusRequest { request_id: rid(kind, &w.request_id)?, target })
            }
            Kind::StatusResponse => {
                let w: wire::StatusResponse = envelope.open(kind)?;
                Message::StatusResponse(StatusResponse {
                    request_id: rid(kind, &w.request_id)?,
                    state: field(kind, "state", ContractState::try_from(w.state).ok())?,
                    contract: w.contract.map(|c| SignedContract::from_wire(c, limits, true)).transpose()?,
                    hold_until_ms: w.hold_until_ms,
                })
            }
            Kind::Offer
            | Kind::Contract
            | Kind::MemberCertificate
            | Kind::Revocation
            | Kind::ConsistencyProof
            | Kind::InclusionProof
            | Kind::Evidence
            | Kind::KeyRotation => {
                return Err(MessageError::NotNegotiation(kind));
            }
        };
        Ok(msg)
    }

    /// Decodes wire bytes: size check, signature, then fields.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<(PublicKey, Message), MessageError> {
        let envelope = Envelope::decode(bytes, limits.max_envelope_bytes)?;
        let msg = Message::open(&envelope, limits)?;
        Ok((envelope.signer(), msg))
    }
}
