//! Signed envelopes `{kind, body, signer, signature}`: the one form in which a
//! signed object travels and is stored. The signature covers
//! `"fulcrum/v1/" || kind || 0x00 || body`, so a signature made for one kind
//! can never be replayed as another. Bodies are never re-encoded before
//! verification: the bytes that were signed are the bytes that are kept.

use std::fmt;

use fulcrum_proto::v1 as wire;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::keys::{Identity, KeyError, PublicKey, SIGNATURE_LEN};

/// Prefix of every signing input.
pub const DOMAIN: &[u8] = b"fulcrum/v1/";

/// What an envelope carries. The string form is part of the signed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A capacity offer (also its withdrawal).
    Offer,
    /// Consumer asks for a hold.
    Propose,
    /// Provider grants a hold and sends the contract draft.
    Hold,
    /// Provider proposes other units or price.
    Counter,
    /// Either side refuses.
    Reject,
    /// Consumer commits to a hold with its signed contract.
    Commit,
    /// Provider returns the contract signed by both.
    Countersigned,
    /// Consumer frees a hold early.
    Release,
    /// Provider confirms a release.
    Released,
    /// Either side ends a contract.
    Terminate,
    /// Receiver confirms a termination.
    Terminated,
    /// Reconciliation question.
    StatusRequest,
    /// Reconciliation answer.
    StatusResponse,
    /// Contract body signature (both parties sign the same body with this kind).
    Contract,
    /// An authority's signature over a member certificate body.
    MemberCertificate,
    /// An authority's signature over a revocation body.
    Revocation,
    /// A node's signed consistency proof between two sizes of its log.
    ConsistencyProof,
    /// A node's signed inclusion proof (or denial) of one record of its log.
    InclusionProof,
    /// Evidence that a node rewrote or denied its history, signed by the witness.
    Evidence,
    /// A key rotation body, signed by both the old and the new key.
    KeyRotation,
}

impl Kind {
    /// Every kind, for tests and tables.
    pub const ALL: [Kind; 20] = [
        Kind::Offer,
        Kind::Propose,
        Kind::Hold,
        Kind::Counter,
        Kind::Reject,
        Kind::Commit,
        Kind::Countersigned,
        Kind::Release,
        Kind::Released,
        Kind::Terminate,
        Kind::Terminated,
        Kind::StatusRequest,
        Kind::StatusResponse,
        Kind::Contract,
        Kind::MemberCertificate,
        Kind::Revocation,
        Kind::ConsistencyProof,
        Kind::InclusionProof,
        Kind::Evidence,
        Kind::KeyRotation,
    ];

    /// The name that goes into the signed bytes.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Offer => "offer",
            Kind::Propose => "propose",
            Kind::Hold => "hold",
            Kind::Counter => "counter",
            Kind::Reject => "reject",
            Kind::Commit => "commit",
            Kind::Countersigned => "countersigned",
            Kind::Release => "release",
            Kind::Released => "released",
            Kind::Terminate => "terminate",
            Kind::Terminated => "terminated",
            Kind::StatusRequest => "status-request",
            Kind::StatusResponse => "status-response",
            Kind::Contract => "contract",
            Kind::MemberCertificate => "member-certificate",
            Kind::Revocation => "revocation",
            Kind::ConsistencyProof => "consistency-proof",
            Kind::InclusionProof => "inclusion-proof",
            Kind::Evidence => "evidence",
            Kind::KeyRotation => "key-rotation",
        }
    }

    /// Parses the name; unknown kinds are an error, never ignored.
    pub fn parse(s: &str) -> Result<Kind, EnvelopeError> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| EnvelopeError::UnknownKind(s.chars().take(64).collect()))
    }

    /// Largest body of this kind we accept, in bytes.
    pub fn max_body_len(self) -> usize {
        match self {
            Kind::Offer => 4 * 1024,
            Kind::Commit | Kind::Countersigned | Kind::StatusResponse => 8 * 1024,
            Kind::Hold | Kind::Contract | Kind::MemberCertificate | Kind::Revocation => 4 * 1024,
            // A path of up to 64 hashes and a checkpoint note.
            Kind::ConsistencyProof | Kind::InclusionProof => 12 * 1024,
            // Two notes and a signed proof, or a contract and a signed answer.
            Kind::Evidence => 40 * 1024,
            _ => 1024,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// More bytes than the limit for envelopes.
    #[error("envelope of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Actual size.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Not a protobuf envelope.
    #[error("envelope is not valid protobuf: {0}")]
    Decode(String),
    /// A kind we do not know.
    #[error("unknown envelope kind {0:?}")]
    UnknownKind(String),
    /// The kind is known but not the one expected here.
    #[error("expected an envelope of kind {expected}, got {got}")]
    WrongKind {
        /// What the caller wanted.
        expected: Kind,
        /// What arrived.
        got: Kind,
    },
    /// Body over the kind's limit.
    #[error("{kind} body of {len} bytes exceeds the limit of {max}")]
    BodyTooLarge {
        /// Kind of the envelope.
        kind: Kind,
        /// Actual size.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Bad signer key.
    #[error("bad signer: {0}")]
    Signer(#[from] KeyError),
    /// The signature does not verify for this signer, kind and body.
    #[error("signature does not verify")]
    BadSignature,
    /// The body is not the protobuf message the kind names.
    #[error("{kind} body is not valid protobuf: {reason}")]
    BodyDecode {
        /// Kind of the envelope.
        kind: Kind,
        /// Decoder message.
        reason: String,
    },
}

/// A verified envelope: constructing one (by sealing or decoding) checks the
/// signature, so holding an `Envelope` means holding a valid signature.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    kind: Kind,
    body: Vec<u8>,
    signer: PublicKey,
    signature: [u8; SIGNATURE_LEN],
}

/// The exact bytes an envelope's signature covers.
pub fn signing_input(kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + kind.as_str().len() + 1 + body.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(kind.as_str().as_bytes());
    m.push(0);
    m.extend_from_slice(body);
    m
}

impl Envelope {
    /// Signs `body` (already encoded) as `kind` with `identity`.
    pub fn seal(identity: &Identity, kind: Kind, body: Vec<u8>) -> Envelope {
        let signature = identity.sign_raw(&signing_input(kind, &body));
        Envelope { kind, body, signer: identity.public(), signature }
    }

    /// Encodes `message` and signs it as `kind`.
    pub fn seal_message<M: Message>(identity: &Identity, kind: Kind, message: &M) -> Envelope {
        Envelope::seal(identity, kind, message.encode_to_vec())
    }

    /// Decodes and verifies wire bytes, checking the size before decoding.
    pub fn decode(bytes: &[u8], max_len: usize) -> Result<Envelope, EnvelopeError> {
        if bytes.len() > max_len {
            return Err(EnvelopeError::TooLarge { len: bytes.len(), max: max_len });
        }
        let wire = wire::Envelope::decode(bytes).map_err(|e| EnvelopeError::Decode(e.to_string()))?;
        Envelope::from_wire(wire)
    }

    /// Verifies an already decoded wire envelope.
    pub fn from_wire(wire: wire::Envelope) -> Result<Envelope, EnvelopeError> {
        let kind = Kind::parse(&wire.kind)?;
        if wire.body.len() > kind.max_body_len() {
            return Err(EnvelopeError::BodyTooLarge { kind, len: wire.body.len(), max: kind.max_body_len() });
        }
        let signer = PublicKey::from_bytes(&wire.signer)?;
        let signature: [u8; SIGNATURE_LEN] = wire
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| EnvelopeError::Signer(KeyError::SignatureLength(wire.signature.len())))?;
        if !signer.verify_raw(&signing_input(kind, &wire.body), &signature) {
            return Err(EnvelopeError::BadSignature);
        }
        Ok(Envelope { kind, body: wire.body, signer, signature })
    }

    /// The wire form.
    pub fn to_wire(&self) -> wire::Envelope {
        wire::Envelope {
            kind: self.kind.as_str().to_owned(),
            body: self.body.clone(),
            signer: self.signer.to_bytes().to_vec(),
            signature: self.signature.to_vec(),
        }
    }

    /// The wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        self.to_wire().encode_to_vec()
    }

    /// Decodes the body as `M` after checking the kind.
    pub fn open<M: Message + Default>(&self, expected: Kind) -> Result<M, EnvelopeError> {
        if self.kind != expected {
            return Err(EnvelopeError::WrongKind { expected, got: self.kind });
        }
        M::decode(self.body.as_slice())
            .map_err(|e| EnvelopeError::BodyDecode { kind: self.kind, reason: e.to_string() })
    }

    /// What this envelope carries.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The exact signed body bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Who signed.
    pub fn signer(&self) -> PublicKey {
        self.signer
    }

    /// The signature bytes.
    pub fn signature(&self) -> &[u8; SIGNATURE_LEN] {
        &self.signature
    }
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("kind", &self.kind)
            .field("body_len", &self.body.len())
            .field("signer", &self.signer)
            .finish()
    }
}

// At rest an envelope is kept as its exact wire bytes, and verified again when read.
impl Serialize for Envelope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.encode())
    }
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = crate::keys::serde_bytes_vec(d)?;
        Envelope::decode(&bytes, usize::MAX).map_err(serde::de::Error::custom)
    }
}

/// A signature by one key over a body under a kind, detached from the body:
/// used where several parties sign the same bytes (contracts, certificates).
pub fn sign_detached(identity: &Identity, kind: Kind, body: &[u8]) -> [u8; SIGNATURE_LEN] {
    identity.sign_raw(&signing_input(kind, body))
}

/// Checks a detached signature with `verify_strict`.
pub fn verify_detached(signer: &PublicKey, kind: Kind, body: &[u8], signature: &[u8]) -> bool {
    signer.verify_raw(&signing_input(kind, body), signature)
}
