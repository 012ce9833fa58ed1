//! Federation membership: a charter names the admission authorities and the
//! threshold k; a member certificate is valid when k distinct authorities of
//! the charter signed it and it is within its validity; a revocation signed
//! by k authorities ends it from its `revoked_at_ms` on (at once when that is
//! past). A threshold of 0 is an open federation.
//!
//! A member that rotates its key ([`crate::rotation`]) keeps its membership:
//! the new key stands on the certificate of the key it took over from, for
//! what is left of that certificate's validity, and falls with any
//! revocation of it; the old key is retired and takes part no more.

use std::collections::{BTreeSet, HashMap, HashSet};

use fulcrum_proto::v1 as wire;
use prost::Message;

use crate::envelope::{Kind, sign_detached, verify_detached};
use crate::keys::{Identity, PublicKey, SIGNATURE_LEN};
use crate::limits::Limits;
use crate::offer::Country;
use crate::rotation::KeyRotation;

/// Most key rotations a node remembers (about two per member of a large
/// federation); more are refused.
pub const MAX_ROTATIONS: usize = 40_000;

/// Longest chain of rotations followed from a key back to its certificate.
const MAX_CHAIN: usize = 64;

/// Why a charter, certificate or revocation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// The charter is inconsistent.
    #[error("charter is invalid: {0}")]
    BadCharter(String),
    /// Not protobuf, or over the size limit.
    #[error("{what} is malformed: {reason}")]
    Malformed {
        /// Certificate or revocation.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// Issued for another federation.
    #[error("issued for federation {got:?}, expected {expected:?}")]
    WrongFederation {
        /// Ours.
        expected: String,
        /// Theirs.
        got: String,
    },
    /// Fewer than k valid signatures from distinct charter authorities.
    #[error("{valid} valid authority signatures, {threshold} required")]
    NotEnoughSignatures {
        /// Valid distinct signatures found.
        valid: usize,
        /// Threshold.
        threshold: usize,
    },
    /// Not yet valid.
    #[error("certificate is valid from {not_before_ms}, now is {now_ms}")]
    NotYetValid {
        /// Start of validity.
        not_before_ms: u64,
        /// Now.
        now_ms: u64,
    },
    /// Expired.
    #[error("certificate expired at {not_after_ms}, now is {now_ms}")]
    Expired {
        /// End of validity.
        not_after_ms: u64,
        /// Now.
        now_ms: u64,
    },
    /// The member was revoked.
    #[error("member {0} is revoked")]
    Revoked(PublicKey),
    /// No certificate is known for this member.
    #[error("no certificate is known for {0}")]
    NoCertificate(PublicKey),
    /// The key was handed over to a new one and takes part no more.
    #[error("key {old} was rotated to {new} and is retired")]
    Rotated {
        /// The retired key.
        old: PublicKey,
        /// The key that took over.
        new: PublicKey,
    },
    /// A key rotation that cannot be accepted.
    #[error("key rotation refused: {0}")]
    Rotation(String),
}

/// The charter of a federation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charter {
    /// Federation name.
    pub name: String,
    /// Public keys of the admission authorities.
    pub authorities: Vec<PublicKey>,
    /// Signatures needed to admit or revoke; 0 is an open federation.
    pub threshold: usize,
}

impl Charter {
    /// Checks the charter is coherent.
    pub fn validate(&self) -> Result<(), MembershipError> {
        if self.name.is_empty()
            || self.name.len() > 128
            || self.name.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(MembershipError::BadCharter(
                "name must be 1 to 128 printable characters without spaces".into(),
            ));
        }
        let distinct: HashSet<&PublicKey> = self.authorities.iter().collect();
        if distinct.len() != self.authorities.len() {
            return Err(MembershipError::BadCharter("an authority key is listed twice".into()));
        }
        if self.threshold > self.authorities.len() {
            return Err(MembershipError::BadCharter(format!(
                "threshold {} exceeds the {} authorities",
                self.threshold,
                self.authorities.len()
            )));
        }
        Ok(())
    }

    /// True for an open (development) federation.
    pub fn is_open(&self) -> bool {
        self.threshold == 0
    }

    /// Counts valid signatures over `body` from distinct authorities of this charter.
    fn count_valid(&self, kind: Kind, body: &[u8], signatures: &[(PublicKey, [u8; SIGNATURE_LEN])]) -> usize {
        let mut seen = HashSet::new();
        signatures
            .iter()
            .filter(|(who, sig)| {
                self.authorities.contains(who)
                    && !seen.contains(who)
                    && verify_detached(who, kind, body, sig)
                    && seen.insert(*who)
            })
            .count()
    }
}

/// What a member certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateBody {
    /// Federation.
    pub federation: String,
    /// The member's node key.
    pub member: PublicKey,
    /// Organisation name.
    pub organisation: String,
    /// Country of the organisation.
    pub country: Country,
    /// Labels the authorities vouch for.
    pub labels: BTreeSet<String>,
    /// Start of validity, Unix ms.
    pub not_before_ms: u64,
    /// End of validity, Unix ms.
    pub not_after_ms: u64,
    /// Serial chosen by the requester.
    pub serial: u64,
}

impl CertificateBody {
    /// The exact bytes the authorities sign (a certificate request).
    pub fn encode(&self) -> Vec<u8> {
        wire::MemberCertificateBody {
            federation: self.federation.clone(),
            member: self.member.to_bytes().to_vec(),
            organisation: self.organisation.clone(),
            country: self.country.as_str().to_owned(),
            labels: self.labels.iter().cloned().collect(),
            not_before_ms: self.not_before_ms,
            not_after_ms: self.not_after_ms,
            serial: self.serial,
        }
        .encode_to_vec()
    }

    /// Parses body bytes.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<CertificateBody, MembershipError> {
        let bad = |reason: &str| MembershipError::Malformed { what: "certificate", reason: reason.to_owned() };
        if bytes.len() > Kind::MemberCertificate.max_body_len() {
            return Err(bad("body too large"));
        }
        let w = wire::MemberCertificateBody::decode(bytes).map_err(|e| bad(&e.to_string()))?;
        let member = PublicKey::from_bytes(&w.member).map_err(|e| bad(&e.to_string()))?;
        let country = Country::parse(&w.country).ok_or_else(|| bad("country is not ISO 3166-1 alpha-2"))?;
        if w.labels.len() > limits.max_labels || w.labels.iter().any(|l| l.is_empty() || l.len() > limits.max_text_len)
        {
            return Err(bad("labels"));
        }
        if w.organisation.len() > limits.max_text_len * 2 || w.federation.len() > limits.max_text_len {
            return Err(bad("text field too long"));
        }
        if w.not_after_ms <= w.not_before_ms {
            return Err(bad("validity ends before it starts"));
        }
        Ok(CertificateBody {
            federation: w.federation,
            member,
            organisation: w.organisation,
            country,
            labels: w.labels.into_iter().collect(),
            not_before_ms: w.not_before_ms,
            not_after_ms: w.not_after_ms,
            serial: w.serial,
        })
    }
}

/// One authority's signature over a body.
pub type AuthoritySignature = (PublicKey, [u8; SIGNATURE_LEN]);

fn signatures_from_wire(
    sigs: Vec<wire::AuthoritySignature>,
    what: &'static str,
) -> Result<Vec<AuthoritySignature>, MembershipError> {
    if sigs.len() > 64 {
        return Err(MembershipError::Malformed { what, reason: "more than 64 signatures".into() });
    }
    sigs.into_iter()
        .map(|s| {
            let key = PublicKey::from_bytes(&s.authority)
                .map_err(|e| MembershipError::Malformed { what, reason: e.to_string() })?;
            let sig: [u8; SIGNATURE_LEN] = s
                .signature
                .as_slice()
                .try_into()
                .map_err(|_| MembershipError::Malformed { what, reason: "signature is not 64 bytes".into() })?;
            Ok((key, sig))
        })
        .collect()
}

fn signatures_to_wire(sigs: &[AuthoritySignature]) -> Vec<wire::AuthoritySignature> {
    sigs.iter()
        .map(|(k, s)| wire::AuthoritySignature { authority: k.to_bytes().to_vec(), signature: s.to_vec() })
        .collect()
}

/// A member certificate: body bytes and authority signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberCertificate {
    body_bytes: Vec<u8>,
    body: CertificateBody,
    signatures: Vec<AuthoritySignature>,
}

impl MemberCertificate {
    /// One authority signs a request (offline).
    pub fn sign_request(authority: &Identity, body_bytes: &[u8]) -> AuthoritySignature {
        (authority.public(), sign_detached(authority, Kind::MemberCertificate, body_bytes))
    }

    /// Combines signatures into a certificate (checked later by [`MemberCertificate::verify`]).
    pub fn assemble(
        body_bytes: Vec<u8>,
        signatures: Vec<AuthoritySignature>,
        limits: &Limits,
    ) -> Result<MemberCertificate, MembershipError> {
        let body = CertificateBody::decode(&body_bytes, limits)?;
        Ok(MemberCertificate { body_bytes, body, signatures })
    }

    /// Parses wire bytes.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<MemberCertificate, MembershipError> {
        if bytes.len() > limits.max_envelope_bytes {
            return Err(MembershipError::Malformed { what: "certificate", reason: "too large".into() });
        }
        let w = wire::MemberCertificate::decode(bytes)
            .map_err(|e| MembershipError::Malformed { what: "certificate", reason: e.to_string() })?;
        let signatures = signatures_from_wire(w.signatures, "certificate")?;
        MemberCertificate::assemble(w.body, signatures, limits)
    }

    /// Wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        wire::MemberCertificate { body: self.body_bytes.clone(), signatures: signatures_to_wire(&self.signatures) }
            .encode_to_vec()
    }

    /// Checks federation, k distinct valid authority signatures and validity at `now_ms`.
    pub fn verify(&self, charter: &Charter, now_ms: u64) -> Result<(), MembershipError> {
        if self.body.federation != charter.name {
            return Err(MembershipError::WrongFederation {
                expected: charter.name.clone(),
                got: self.body.federation.clone(),
            });
        }
        let valid = charter.count_valid(Kind::MemberCertificate, &self.body_bytes, &self.signatures);
        if valid < charter.threshold.max(1) {
            return Err(MembershipError::NotEnoughSignatures { valid, threshold: charter.threshold.max(1) });
        }
        if now_ms < self.body.not_before_ms {
            return Err(MembershipError::NotYetValid { not_before_ms: self.body.not_before_ms, now_ms });
        }
        if now_ms >= self.body.not_after_ms {
            return Err(MembershipError::Expired { not_after_ms: self.body.not_after_ms, now_ms });
        }
        Ok(())
    }

    /// What it says.
    pub fn body(&self) -> &CertificateBody {
        &self.body
    }

    /// The signatures it carries.
    pub fn signatures(&self) -> &[AuthoritySignature] {
        &self.signatures
    }
}

/// What a revocation says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationBody {
    /// Federation.
    pub federation: String,
    /// The revoked member.
    pub member: PublicKey,
    /// When it takes effect, Unix ms: from then on the member is refused;
    /// what it did before stays valid. A time already past when the
    /// revocation arrives means at once.
    pub revoked_at_ms: u64,
    /// Why.
    pub reason: String,
}

impl RevocationBody {
    /// The exact bytes the authorities sign.
    pub fn encode(&self) -> Vec<u8> {
        wire::RevocationBody {
            federation: self.federation.clone(),
            member: self.member.to_bytes().to_vec(),
            revoked_at_ms: self.revoked_at_ms,
            reason: self.reason.clone(),
        }
        .encode_to_vec()
    }
}

/// A revocation signed by authorities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    body_bytes: Vec<u8>,
    body: RevocationBody,
    signatures: Vec<AuthoritySignature>,
}

impl Revocation {
    /// One authority signs a revocation body (offline).
    pub fn sign_body(authority: &Identity, body_bytes: &[u8]) -> AuthoritySignature {
        (authority.public(), sign_detached(authority, Kind::Revocation, body_bytes))
    }

    /// Combines body and signatures.
    pub fn assemble(body_bytes: Vec<u8>, signatures: Vec<AuthoritySignature>) -> Result<Revocation, MembershipError> {
        let bad = |reason: String| MembershipError::Malformed { what: "revocation", reason };
        if body_bytes.len() > Kind::Revocation.max_body_len() {
            return Err(bad("body too large".into()));
        }
        let w = wire::RevocationBody::decode(body_bytes.as_slice()).map_err(|e| bad(e.to_string()))?;
        let member = PublicKey::from_bytes(&w.member).map_err(|e| bad(e.to_string()))?;
        let body =
            RevocationBody { federation: w.federation, member, revoked_at_ms: w.revoked_at_ms, reason: w.reason };
        Ok(Revocation { body_bytes, body, signatures })
    }

    /// Parses wire bytes.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Revocation, MembershipError> {
        if bytes.len() > limits.max_envelope_bytes {
            return Err(MembershipError::Malformed { what: "revocation", reason: "too large".into() });
        }
        let w = wire::Revocation::decode(bytes)
            .map_err(|e| MembershipError::Malformed { what: "revocation", reason: e.to_string() })?;
        Revocation::assemble(w.body, signatures_from_wire(w.signatures, "revocation")?)
    }

    /// Wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        wire::Revocation { body: self.body_bytes.clone(), signatures: signatures_to_wire(&self.signatures) }
            .encode_to_vec()
    }

    /// Checks federation and k distinct valid authority signatures.
    pub fn verify(&self, charter: &Charter) -> Result<(), MembershipError> {
        if self.body.federation != charter.name {
            return Err(MembershipError::WrongFederation {
                expected: charter.name.clone(),
                got: self.body.federation.clone(),
            });
        }
        let valid = charter.count_valid(Kind::Revocation, &self.body_bytes, &self.signatures);
        if valid < charter.threshold.max(1) {
            return Err(MembershipError::NotEnoughSignatures { valid, threshold: charter.threshold.max(1) });
        }
        Ok(())
    }

    /// What it says.
    pub fn body(&self) -> &RevocationBody {
        &self.body
    }

    /// The exact bytes the authorities signed.
    pub fn body_bytes(&self) -> &[u8] {
        &self.body_bytes
    }

    /// The signatures it carries.
    pub fn signatures(&self) -> &[AuthoritySignature] {
        &self.signatures
    }
}

// At rest a revocation is its wire bytes; its signatures are checked against
// the charter by whoever reads it (`Membership::revoke`).
impl serde::Serialize for Revocation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.encode())
    }
}

impl<'de> serde::Deserialize<'de> for Revocation {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = crate::keys::serde_bytes_vec(d)?;
        Revocation::decode(&bytes, &Limits::default()).map_err(serde::de::Error::custom)
    }
}

/// A node's view of who is in the federation.
#[derive(Debug, Clone)]
pub struct Membership {
    charter: Charter,
    certificates: HashMap<PublicKey, MemberCertificate>,
    revoked: HashMap<PublicKey, Revocation>,
    /// Key rotations by the key they retired.
    rotated: HashMap<PublicKey, KeyRotation>,
    /// The key each rotated-to key took over from.
    took_over: HashMap<PublicKey, PublicKey>,
}

impl Membership {
    /// Starts from a validated charter.
    pub fn new(charter: Charter) -> Result<Membership, MembershipError> {
        charter.validate()?;
        Ok(Membership {
            charter,
            certificates: HashMap::new(),
            revoked: HashMap::new(),
            rotated: HashMap::new(),
            took_over: HashMap::new(),
        })
    }

    /// The charter.
    pub fn charter(&self) -> &Charter {
        &self.charter
    }

    /// Learns a member's certificate after verifying it. A member whose
    /// revocation is in effect is refused; one whose revocation takes effect
    /// later is a member until then.
    pub fn add_certificate(&mut self, cert: MemberCertificate, now_ms: u64) -> Result<(), MembershipError> {
        cert.verify(&self.charter, now_ms)?;
        let member = cert.body.member;
        if self.revoked_by(&member, now_ms).is_some() {
            return Err(MembershipError::Revoked(member));
        }
        // Keep the certificate that lasts longest.
        let keep_old =
            self.certificates.get(&member).is_some_and(|old| old.body.not_after_ms >= cert.body.not_after_ms);
        if !keep_old {
            self.certificates.insert(member, cert);
        }
        Ok(())
    }

    /// Applies a verified revocation. Returns true when it is new: the first
    /// of its member, or one that takes effect earlier than the one known
    /// (which it replaces; a later one changes nothing). It takes effect at
    /// its `revoked_at_ms` (see [`Membership::check`]); until then the
    /// member's certificate still counts.
    pub fn revoke(&mut self, revocation: Revocation) -> Result<bool, MembershipError> {
        revocation.verify(&self.charter)?;
        let member = revocation.body.member;
        if self.revoked_at(&member).is_some_and(|known| known <= revocation.body.revoked_at_ms) {
            return Ok(false);
        }
        self.revoked.insert(member, revocation);
        Ok(true)
    }

    /// When the revocation known of `member` takes (or took) effect.
    pub fn revoked_at(&self, member: &PublicKey) -> Option<u64> {
        self.revoked.get(member).map(|r| r.body.revoked_at_ms)
    }

    /// The revocation of `member` in effect at `now_ms`, if any.
    fn revoked_by(&self, member: &PublicKey, now_ms: u64) -> Option<&Revocation> {
        self.revoked.get(member).filter(|r| r.body.revoked_at_ms <= now_ms)
    }

    /// Whether `member` may take part at `now_ms`: in an open federation
    /// anyone not revoked; otherwise a certificate, verified when it was
    /// added, valid at `now_ms` and not revoked. A revocation counts from
    /// its `revoked_at_ms` on.
    ///
    /// A key another took over from is refused; a key that took over from
    /// another stands on the certificate of the first key of its chain, and
    /// is refused when any key of the chain is revoked.
    pub fn check(&self, member: &PublicKey, now_ms: u64) -> Result<(), MembershipError> {
        if self.revoked_by(member, now_ms).is_some() {
            return Err(MembershipError::Revoked(*member));
        }
        if let Some(rotation) = self.rotated.get(member) {
            return Err(MembershipError::Rotated { old: *member, new: rotation.body().new_key });
        }
        let member = &self.certified_key(member, now_ms)?;
        if self.charter.is_open() {
            return Ok(());
        }
        let body = &self.certificates.get(member).ok_or(MembershipError::NoCertificate(*member))?.body;
        if now_ms < body.not_before_ms {
            return Err(MembershipError::NotYetValid { not_before_ms: body.not_before_ms, now_ms });
        }
        if now_ms >= body.not_after_ms {
            return Err(MembershipError::Expired { not_after_ms: body.not_after_ms, now_ms });
        }
        Ok(())
    }

    /// The key whose certificate `member` stands on: itself, or the first
    /// key of the chain of rotations it took over through. Any key on the
    /// way revoked at `now_ms` is an error.
    fn certified_key(&self, member: &PublicKey, now_ms: u64) -> Result<PublicKey, MembershipError> {
        let mut key = *member;
        for _ in 0..MAX_CHAIN {
            if self.revoked_by(&key, now_ms).is_some() {
                return Err(MembershipError::Revoked(key));
            }
            match self.took_over.get(&key) {
                Some(before) => key = *before,
                None => return Ok(key),
            }
        }
        Err(MembershipError::Rotation(format!("{member} is more than {MAX_CHAIN} rotations from its certificate")))
    }

    /// Learns a key rotation (its signatures were checked when it was
    /// decoded). In a closed federation the old key must be a member now:
    /// a rotation cannot admit anyone. A key hands over once: a second,
    /// different rotation of it is refused. Returns true when it is new.
    pub fn add_rotation(&mut self, rotation: KeyRotation, now_ms: u64) -> Result<bool, MembershipError> {
        let body = rotation.body();
        let (old, new) = (body.old_key, body.new_key);
        rotation.check_federation(&self.charter.name).map_err(|e| MembershipError::Rotation(e.to_string()))?;
        if let Some(known) = self.rotated.get(&old) {
            if known.body().new_key == new {
                return Ok(false);
            }
            return Err(MembershipError::Rotation(format!(
                "{old} was already rotated to {}, not {new}",
                known.body().new_key
            )));
        }
        if let Some(before) = self.took_over.get(&new) {
            return Err(MembershipError::Rotation(format!("{new} already took over from {before}")));
        }
        if self.rotated.contains_key(&new) {
            return Err(MembershipError::Rotation(format!("{new} is a retired key")));
        }
        if self.rotated.len() >= MAX_ROTATIONS {
            return Err(MembershipError::Rotation("too many key rotations known".into()));
        }
        self.check(&old, now_ms)?;
        self.took_over.insert(new, old);
        self.rotated.insert(old, rotation);
        Ok(true)
    }

    /// Every key rotation known.
    pub fn rotations(&self) -> impl Iterator<Item = &KeyRotation> {
        self.rotated.values()
    }

    /// The key that took over from `key`, if one did (directly).
    pub fn successor(&self, key: &PublicKey) -> Option<PublicKey> {
        self.rotated.get(key).map(|r| r.body().new_key)
    }

    /// The rotation that retired `key`, if one did.
    pub fn rotation_of(&self, key: &PublicKey) -> Option<&KeyRotation> {
        self.rotated.get(key)
    }

    /// True once a revocation of `member` is known, whether or not it is in
    /// effect yet.
    pub fn is_revoked(&self, member: &PublicKey) -> bool {
        self.revoked.contains_key(member)
    }

    /// Every certificate known (each verified when added) of a member with
    /// no revocation known. (The certificate of a member whose revocation
    /// takes effect later still counts for [`Membership::check`] until then.)
    pub fn certificates(&self) -> impl Iterator<Item = &MemberCertificate> {
        self.certificates.values().filter(|c| !self.revoked.contains_key(&c.body.member))
    }

    /// The members whose standing ended at a time in (`after_ms`,
    /// `until_ms`]: their certificate expired, or their revocation took
    /// effect, then. (The keys that took over from them by rotation stand
    /// on the same certificate and fall with them.)
    pub fn lapsed_between(&self, after_ms: u64, until_ms: u64) -> Vec<PublicKey> {
        let within = |at: u64| after_ms < at && at <= until_ms;
        // A certificate that ends after its member's revocation took effect changes nothing.
        let expired = self
            .certificates
            .values()
            .filter(|c| within(c.body.not_after_ms) && self.revoked_by(&c.body.member, c.body.not_after_ms).is_none())
            .map(|c| c.body.member);
        let revoked = self.revoked.values().filter(|r| within(r.body.revoked_at_ms)).map(|r| r.body.member);
        let mut lapsed: Vec<PublicKey> = expired.chain(revoked).collect();
        lapsed.sort_unstable();
        lapsed.dedup();
        lapsed
    }

    /// The first time after `after_ms` at which a certificate known expires
    /// or a revocation known takes effect; None when there is none.
    pub fn next_lapse_after(&self, after_ms: u64) -> Option<u64> {
        let ends = self.certificates.values().map(|c| c.body.not_after_ms);
        let revocations = self.revoked.values().map(|r| r.body.revoked_at_ms);
        ends.chain(revocations).filter(|at| *at > after_ms).min()
    }

    /// Every revocation known.
    pub fn revocations(&self) -> impl Iterator<Item = &Revocation> {
        self.revoked.values()
    }

    /// Labels the authorities vouch for on this member: those of a valid,
    /// unrevoked certificate. Even in an open federation (threshold 0) a
    /// certificate needs at least one charter authority's signature to attest
    /// anything, so with no authorities nothing is ever attested.
    pub fn attested_labels(&self, member: &PublicKey, now_ms: u64) -> BTreeSet<String> {
        if self.rotated.contains_key(member) {
            return BTreeSet::new();
        }
        let Ok(member) = &self.certified_key(member, now_ms) else {
            return BTreeSet::new();
        };
        match self.certificates.get(member) {
            Some(c)
                if self.revoked_by(member, now_ms).is_none()
                    && (c.body.not_before_ms..c.body.not_after_ms).contains(&now_ms) =>
            {
                c.body.labels.clone()
            }
            _ => BTreeSet::new(),
        }
    }
}
