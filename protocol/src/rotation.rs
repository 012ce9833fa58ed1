//! Key rotation: a node hands its identity from one key to the next with a
//! statement both keys sign. The old key names its successor and fixes the
//! history it hands over (the size and root of its agreement log just before
//! the statement); the new key accepts the identity. The statement is the
//! node's log record of the rotation, is gossiped with the certificates, and
//! lets peers follow the identity: the new key inherits the old key's
//! membership for what is left of its certificate, and the old key is retired.
//!
//! Everything the old key signed before stays verifiable as it is: offers,
//! contracts and checkpoints carry their own signatures. A log that crosses a
//! rotation is verified key by key: records and checkpoints up to the
//! statement by the old key, everything after it by the new one.

use std::fmt;

use fulcrum_proto::v1 as wire;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::envelope::{Kind, sign_detached, verify_detached};
use crate::keys::{Identity, PublicKey, SIGNATURE_LEN};
use crate::merkle::Hash;

/// Longest federation name in a rotation statement, in bytes.
const MAX_FEDERATION_LEN: usize = 128;

/// Why a rotation statement or a chain of them was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotationError {
    /// Not protobuf, a field of the wrong size, or over the size limit.
    #[error("key rotation is malformed: {0}")]
    Malformed(String),
    /// The old and the new key are the same.
    #[error("key rotation hands key {0} over to itself")]
    SameKey(PublicKey),
    /// The old key's signature does not verify.
    #[error("the old key's signature on the rotation from {0} does not verify")]
    BadOldSignature(PublicKey),
    /// The new key's signature does not verify.
    #[error("the new key's signature on the rotation to {0} does not verify")]
    BadNewSignature(PublicKey),
    /// Made for another federation.
    #[error("key rotation is for federation {got:?}, not {expected:?}")]
    WrongFederation {
        /// Ours.
        expected: String,
        /// Theirs.
        got: String,
    },
    /// A node's rotations do not follow one another.
    #[error("rotation {seq} of the log does not follow the one before: {why}")]
    BrokenChain {
        /// The rotation's sequence number as it claims it.
        seq: u64,
        /// What is wrong.
        why: String,
    },
    /// The key in use is not the one the log's last rotation handed over to.
    #[error("the agreement log hands this node's identity over to key {log_key}, but the key in use is {key}")]
    NotTheLogKey {
        /// The key the log's last rotation names.
        log_key: PublicKey,
        /// The key in use.
        key: PublicKey,
    },
}

/// What a rotation statement says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationBody {
    /// The federation.
    pub federation: String,
    /// The key that hands the identity over.
    pub old_key: PublicKey,
    /// The key that takes it.
    pub new_key: PublicKey,
    /// When, Unix ms.
    pub at_ms: u64,
    /// 1 for the node's first rotation, then one more for each.
    pub seq: u64,
    /// Records in the node's log just before the rotation record.
    pub log_size: u64,
    /// The log's Merkle root at that size.
    pub log_root: Hash,
}

impl RotationBody {
    /// The exact bytes both keys sign.
    pub fn encode(&self) -> Vec<u8> {
        wire::KeyRotationBody {
            federation: self.federation.clone(),
            old_key: self.old_key.to_bytes().to_vec(),
            new_key: self.new_key.to_bytes().to_vec(),
            at_ms: self.at_ms,
            seq: self.seq,
            log_size: self.log_size,
            log_root: self.log_root.to_vec(),
        }
        .encode_to_vec()
    }

    /// Parses body bytes, checking every field's form.
    pub fn decode(bytes: &[u8]) -> Result<RotationBody, RotationError> {
        let bad = |why: &str| RotationError::Malformed(why.to_owned());
        if bytes.len() > Kind::KeyRotation.max_body_len() {
            return Err(bad("body too large"));
        }
        let w = wire::KeyRotationBody::decode(bytes).map_err(|e| RotationError::Malformed(e.to_string()))?;
        let old_key =
            PublicKey::from_bytes(&w.old_key).map_err(|e| RotationError::Malformed(format!("old key: {e}")))?;
        let new_key =
            PublicKey::from_bytes(&w.new_key).map_err(|e| RotationError::Malformed(format!("new key: {e}")))?;
        if old_key == new_key {
            return Err(RotationError::SameKey(old_key));
        }
        if w.federation.is_empty()
            || w.federation.len() > MAX_FEDERATION_LEN
            || w.federation.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(bad("federation name"));
        }
        if w.seq == 0 {
            return Err(bad("seq is 0; a node's first rotation is 1"));
        }
        let log_root: Hash = w.log_root.as_slice().try_into().map_err(|_| bad("log root is not 32 bytes"))?;
        Ok(RotationBody {
            federation: w.federation,
            old_key,
            new_key,
            at_ms: w.at_ms,
            seq: w.seq,
            log_size: w.log_size,
            log_root,
        })
    }
}

/// A rotation statement signed by both keys. Constructing one by
/// [`KeyRotation::sign`] or [`KeyRotation::decode`] checks both signatures.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRotation {
    body_bytes: Vec<u8>,
    body: RotationBody,
    old_signature: [u8; SIGNATURE_LEN],
    new_signature: [u8; SIGNATURE_LEN],
}

impl fmt::Debug for KeyRotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRotation")
            .field("old_key", &self.body.old_key)
            .field("new_key", &self.body.new_key)
            .field("seq", &self.body.seq)
            .field("log_size", &self.body.log_size)
            .finish()
    }
}

impl KeyRotation {
    /// Both keys sign `body`, whose keys must be theirs.
    pub fn sign(old: &Identity, new: &Identity, body: RotationBody) -> Result<KeyRotation, RotationError> {
        if body.old_key != old.public() || body.new_key != new.public() {
            return Err(RotationError::Malformed("the body names other keys than the signers'".into()));
        }
        let body_bytes = body.encode();
        let body = RotationBody::decode(&body_bytes)?;
        let old_signature = sign_detached(old, Kind::KeyRotation, &body_bytes);
        let new_signature = sign_detached(new, Kind::KeyRotation, &body_bytes);
        Ok(KeyRotation { body_bytes, body, old_signature, new_signature })
    }

    /// Parses wire bytes and checks both signatures.
    pub fn decode(bytes: &[u8]) -> Result<KeyRotation, RotationError> {
        let rotation = KeyRotation::parse(bytes)?;
        rotation.verify()?;
        Ok(rotation)
    }

    /// Parses wire bytes without checking the signatures, for auditors
    /// that check many signatures at once.
    pub(crate) fn parse(bytes: &[u8]) -> Result<KeyRotation, RotationError> {
        // Body, two signatures and their framing.
        if bytes.len() > Kind::KeyRotation.max_body_len() + 2 * SIGNATURE_LEN + 16 {
            return Err(RotationError::Malformed("too large".into()));
        }
        let w = wire::KeyRotation::decode(bytes).map_err(|e| RotationError::Malformed(e.to_string()))?;
        let body = RotationBody::decode(&w.body)?;
        let signature = |s: &[u8], which: &str| {
            <[u8; SIGNATURE_LEN]>::try_from(s)
                .map_err(|_| RotationError::Malformed(format!("the {which} key's signature is not 64 bytes")))
        };
        Ok(KeyRotation {
            old_signature: signature(&w.old_signature, "old")?,
            new_signature: signature(&w.new_signature, "new")?,
            body_bytes: w.body,
            body,
        })
    }

    /// Checks both signatures (`verify_strict`).
    pub fn verify(&self) -> Result<(), RotationError> {
        let body = &self.body;
        if !verify_detached(&body.old_key, Kind::KeyRotation, &self.body_bytes, &self.old_signature) {
            return Err(RotationError::BadOldSignature(body.old_key));
        }
        if !verify_detached(&body.new_key, Kind::KeyRotation, &self.body_bytes, &self.new_signature) {
            return Err(RotationError::BadNewSignature(body.new_key));
        }
        Ok(())
    }

    /// Refuses a statement made for another federation.
    pub fn check_federation(&self, federation: &str) -> Result<(), RotationError> {
        if self.body.federation == federation {
            Ok(())
        } else {
            Err(RotationError::WrongFederation { expected: federation.to_owned(), got: self.body.federation.clone() })
        }
    }

    /// Wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        self.to_wire().encode_to_vec()
    }

    /// The wire form.
    pub fn to_wire(&self) -> wire::KeyRotation {
        wire::KeyRotation {
            body: self.body_bytes.clone(),
            old_signature: self.old_signature.to_vec(),
            new_signature: self.new_signature.to_vec(),
        }
    }

    /// Parses and checks a wire message.
    pub fn from_wire(w: &wire::KeyRotation) -> Result<KeyRotation, RotationError> {
        KeyRotation::decode(&w.encode_to_vec())
    }

    /// What it says.
    pub fn body(&self) -> &RotationBody {
        &self.body
    }

    /// The two signatures as (label, key, signature), old key first, over
    /// the body bytes under kind `key-rotation`.
    pub(crate) fn signatures(&self) -> [(&'static str, PublicKey, [u8; SIGNATURE_LEN]); 2] {
        [
            ("the old key's rotation signature", self.body.old_key, self.old_signature),
            ("the new key's rotation signature", self.body.new_key, self.new_signature),
        ]
    }

    /// The exact body bytes both keys signed.
    pub fn body_bytes(&self) -> &[u8] {
        &self.body_bytes
    }
}

// At rest a rotation is its wire bytes, and both signatures are checked
// again when it is read.
impl Serialize for KeyRotation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.encode())
    }
}

impl<'de> Deserialize<'de> for KeyRotation {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = crate::keys::serde_bytes_vec(d)?;
        KeyRotation::decode(&bytes).map_err(serde::de::Error::custom)
    }
}

/// The keys a node's log has been signed with, in order, from the rotation
/// records of its own log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChain {
    /// Never empty: the current key is the last.
    keys: Vec<PublicKey>,
    current: PublicKey,
    rotations: Vec<KeyRotation>,
}

impl KeyChain {
    /// The chain of a log whose rotation records are `rotations` (in log
    /// order), run with key `current`: each rotation must hand over from the
    /// key the one before handed to, counting 1, 2, 3, and the last must
    /// hand over to `current`. No rotation: `current` is the only key.
    pub fn of_log<'a>(
        current: PublicKey,
        rotations: impl IntoIterator<Item = &'a KeyRotation>,
    ) -> Result<KeyChain, RotationError> {
        let rotations: Vec<KeyRotation> = rotations.into_iter().cloned().collect();
        let Some(first) = rotations.first() else {
            return Ok(KeyChain { keys: vec![current], current, rotations });
        };
        let mut keys = vec![first.body.old_key];
        for (i, rotation) in rotations.iter().enumerate() {
            let body = &rotation.body;
            let broken = |why: String| RotationError::BrokenChain { seq: body.seq, why };
            if body.seq != i as u64 + 1 {
                return Err(broken(format!("it is rotation number {} of the log", i + 1)));
            }
            if let Some(before) = i.checked_sub(1).and_then(|j| rotations.get(j)) {
                if body.old_key != before.body.new_key {
                    return Err(broken(format!(
                        "it hands over from {}, but the rotation before handed over to {}",
                        body.old_key, before.body.new_key
                    )));
                }
                if body.log_size <= before.body.log_size {
                    return Err(broken("its log size is not after the rotation before".into()));
                }
            }
            if keys.contains(&body.new_key) {
                return Err(broken(format!("it hands over to {}, a key the log used before", body.new_key)));
            }
            keys.push(body.new_key);
        }
        let log_key = keys.last().copied().unwrap_or(current);
        if log_key != current {
            return Err(RotationError::NotTheLogKey { log_key, key: current });
        }
        Ok(KeyChain { keys, current, rotations })
    }

    /// The key the log started with.
    pub fn genesis(&self) -> PublicKey {
        self.keys.first().copied().unwrap_or(self.current)
    }

    /// The key in use now.
    pub fn current(&self) -> PublicKey {
        self.current
    }

    /// Every key of the chain, the first first.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// The keys before the current one.
    pub fn previous(&self) -> &[PublicKey] {
        &self.keys[..self.keys.len().saturating_sub(1)]
    }

    /// True when `key` is one of the chain's.
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.keys.contains(key)
    }

    /// The rotations, in order.
    pub fn rotations(&self) -> &[KeyRotation] {
        &self.rotations
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn id(n: u8) -> Identity {
        Identity::from_secret_bytes(&[n; 32])
    }

    fn body(old: &Identity, new: &Identity, seq: u64, log_size: u64) -> RotationBody {
        RotationBody {
            federation: "eu".into(),
            old_key: old.public(),
            new_key: new.public(),
            at_ms: 1_800_000_000_000,
            seq,
            log_size,
            log_root: [7; 32],
        }
    }

    fn rotation(old: u8, new: u8, seq: u64, log_size: u64) -> KeyRotation {
        KeyRotation::sign(&id(old), &id(new), body(&id(old), &id(new), seq, log_size)).unwrap()
    }

    #[test]
    fn a_statement_signed_by_both_keys_round_trips() {
        let r = rotation(1, 2, 1, 10);
        let decoded = KeyRotation::decode(&r.encode()).unwrap();
        assert_eq!(decoded, r);
        assert_eq!(decoded.body().old_key, id(1).public());
        assert_eq!(KeyRotation::from_wire(&r.to_wire()).unwrap(), r);
        r.check_federation("eu").unwrap();
        assert!(matches!(r.check_federation("us"), Err(RotationError::WrongFederation { .. })));
        // At rest (CBOR) it is its bytes, checked again when read.
        let mut cbor = Vec::new();
        ciborium::into_writer(&r, &mut cbor).unwrap();
        let back: KeyRotation = ciborium::from_reader(cbor.as_slice()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn one_missing_or_wrong_signature_is_refused() {
        let r = rotation(1, 2, 1, 10);
        let mut w = r.to_wire();
        w.old_signature[0] ^= 1;
        assert_eq!(KeyRotation::decode(&w.encode_to_vec()), Err(RotationError::BadOldSignature(id(1).public())));
        let mut w = r.to_wire();
        w.new_signature[10] ^= 1;
        assert_eq!(KeyRotation::decode(&w.encode_to_vec()), Err(RotationError::BadNewSignature(id(2).public())));
        // Swapped signatures, a changed body, a signature of another kind.
        let mut w = r.to_wire();
        std::mem::swap(&mut w.old_signature, &mut w.new_signature);
        assert!(KeyRotation::decode(&w.encode_to_vec()).is_err());
        let mut changed = body(&id(1), &id(2), 1, 11);
        changed.at_ms += 1;
        let w = wire::KeyRotation { body: changed.encode(), ..r.to_wire() };
        assert!(KeyRotation::decode(&w.encode_to_vec()).is_err());
        let as_offer = sign_detached(&id(1), Kind::Offer, &r.to_wire().body);
        let w = wire::KeyRotation { old_signature: as_offer.to_vec(), ..r.to_wire() };
        assert_eq!(KeyRotation::decode(&w.encode_to_vec()), Err(RotationError::BadOldSignature(id(1).public())));
        let w = wire::KeyRotation { new_signature: vec![0; 63], ..r.to_wire() };
        assert!(matches!(KeyRotation::decode(&w.encode_to_vec()), Err(RotationError::Malformed(_))));
        // Only the keys named in the body can sign it; no key hands over to itself.
        assert!(KeyRotation::sign(&id(1), &id(3), body(&id(1), &id(2), 1, 0)).is_err());
        assert_eq!(
            KeyRotation::sign(&id(1), &id(1), body(&id(1), &id(1), 1, 0)),
            Err(RotationError::SameKey(id(1).public()))
        );
        assert!(KeyRotation::sign(&id(1), &id(2), body(&id(1), &id(2), 0, 0)).is_err());
    }

    #[test]
    fn a_log_chain_must_follow_itself_to_the_key_in_use() {
        let none = KeyChain::of_log(id(1).public(), &[]).unwrap();
        assert_eq!((none.genesis(), none.current()), (id(1).public(), id(1).public()));
        assert!(none.previous().is_empty());

        let two = [rotation(1, 2, 1, 5), rotation(2, 3, 2, 9)];
        let chain = KeyChain::of_log(id(3).public(), &two).unwrap();
        assert_eq!(chain.keys(), [id(1).public(), id(2).public(), id(3).public()]);
        assert_eq!(chain.previous(), [id(1).public(), id(2).public()]);
        assert_eq!(chain.genesis(), id(1).public());
        assert!(chain.contains(&id(2).public()) && !chain.contains(&id(4).public()));

        // The key in use is not the one the log hands over to (an interrupted rotation).
        assert_eq!(
            KeyChain::of_log(id(2).public(), &two),
            Err(RotationError::NotTheLogKey { log_key: id(3).public(), key: id(2).public() })
        );
        for (what, broken) in [
            ("gap", vec![rotation(1, 2, 1, 5), rotation(4, 3, 2, 9)]),
            ("seq", vec![rotation(1, 2, 1, 5), rotation(2, 3, 3, 9)]),
            ("first seq", vec![rotation(1, 2, 2, 5)]),
            ("log size", vec![rotation(1, 2, 1, 5), rotation(2, 3, 2, 5)]),
            ("back to an old key", vec![rotation(1, 2, 1, 5), rotation(2, 1, 2, 9)]),
        ] {
            let current = broken.last().unwrap().body().new_key;
            let err = KeyChain::of_log(current, &broken).unwrap_err();
            assert!(matches!(err, RotationError::BrokenChain { .. }), "{what}: {err}");
        }
    }

    mod membership {
        use std::collections::BTreeSet;

        use super::*;
        use crate::Limits;
        use crate::membership::{
            CertificateBody, Charter, MemberCertificate, Membership, MembershipError, Revocation, RevocationBody,
        };
        use crate::offer::Country;

        const NOW: u64 = 1_800_000_000_000;

        fn authority() -> Identity {
            id(100)
        }

        /// A closed federation "eu" (one authority, threshold 1) where key 1 is a member until `NOW + 1000`.
        fn federation() -> Membership {
            let charter = Charter { name: "eu".into(), authorities: vec![authority().public()], threshold: 1 };
            let mut m = Membership::new(charter).unwrap();
            let body = CertificateBody {
                federation: "eu".into(),
                member: id(1).public(),
                organisation: "Example".into(),
                country: Country::parse("DE").unwrap(),
                labels: BTreeSet::from(["iso:27001".to_owned()]),
                not_before_ms: NOW - 1000,
                not_after_ms: NOW + 1000,
                serial: 1,
            };
            let bytes = body.encode();
            let signatures = vec![MemberCertificate::sign_request(&authority(), &bytes)];
            m.add_certificate(MemberCertificate::assemble(bytes, signatures, &Limits::default()).unwrap(), NOW)
                .unwrap();
            m
        }

        #[test]
        fn the_new_key_stands_on_the_old_keys_certificate_and_the_old_key_retires() {
            let mut m = federation();
            assert_eq!(m.check(&id(2).public(), NOW), Err(MembershipError::NoCertificate(id(2).public())));
            assert_eq!(m.add_rotation(rotation(1, 2, 1, 3), NOW), Ok(true));
            assert_eq!(m.add_rotation(rotation(1, 2, 1, 3), NOW), Ok(false), "the same rotation again");
            m.check(&id(2).public(), NOW).unwrap();
            assert_eq!(
                m.check(&id(1).public(), NOW),
                Err(MembershipError::Rotated { old: id(1).public(), new: id(2).public() })
            );
            assert_eq!(m.attested_labels(&id(2).public(), NOW), BTreeSet::from(["iso:27001".to_owned()]));
            assert!(m.attested_labels(&id(1).public(), NOW).is_empty());
            assert_eq!(m.successor(&id(1).public()), Some(id(2).public()));
            // For what is left of the certificate, no longer.
            assert!(matches!(m.check(&id(2).public(), NOW + 1000), Err(MembershipError::Expired { .. })));
            // Rotating on: the chain leads back to the certificate.
            m.add_rotation(rotation(2, 3, 2, 8), NOW).unwrap();
            m.check(&id(3).public(), NOW).unwrap();
            assert!(m.check(&id(2).public(), NOW).is_err());
            assert_eq!(m.rotations().count(), 2);

            // A key hands over once; a retired key takes nothing over; a
            // rotation admits nobody; another federation's is refused.
            assert!(matches!(m.add_rotation(rotation(1, 4, 1, 3), NOW), Err(MembershipError::Rotation(_))));
            assert!(matches!(m.add_rotation(rotation(5, 1, 1, 3), NOW), Err(MembershipError::Rotation(_))));
            assert!(matches!(m.add_rotation(rotation(5, 6, 1, 3), NOW), Err(MembershipError::NoCertificate(_))));
            let elsewhere = RotationBody { federation: "us".into(), ..body(&id(3), &id(7), 3, 9) };
            let elsewhere = KeyRotation::sign(&id(3), &id(7), elsewhere).unwrap();
            assert!(matches!(m.add_rotation(elsewhere, NOW), Err(MembershipError::Rotation(_))));
        }

        #[test]
        fn revoking_any_key_of_the_chain_revokes_the_key_in_use() {
            let mut m = federation();
            m.add_rotation(rotation(1, 2, 1, 3), NOW).unwrap();
            let body = RevocationBody {
                federation: "eu".into(),
                member: id(1).public(),
                revoked_at_ms: NOW,
                reason: "compromised".into(),
            };
            let bytes = body.encode();
            let signatures = vec![Revocation::sign_body(&authority(), &bytes)];
            m.revoke(Revocation::assemble(bytes, signatures).unwrap()).unwrap();
            assert_eq!(m.check(&id(2).public(), NOW), Err(MembershipError::Revoked(id(1).public())));
            assert!(m.attested_labels(&id(2).public(), NOW).is_empty());
        }

        #[test]
        fn in_an_open_federation_the_old_key_retires_too() {
            let charter = Charter { name: "eu".into(), authorities: Vec::new(), threshold: 0 };
            let mut m = Membership::new(charter).unwrap();
            m.add_rotation(rotation(1, 2, 1, 3), NOW).unwrap();
            m.check(&id(2).public(), NOW).unwrap();
            assert!(matches!(m.check(&id(1).public(), NOW), Err(MembershipError::Rotated { .. })));
        }
    }
}
