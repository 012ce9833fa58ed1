//! Federation membership as the daemon enforces it: the charter, this
//! node's own certificate, the certificates and revocations learned from
//! peers, and the checks every offer, proposal and checkpoint goes through.
//!
//! Certificates travel two ways: each node gossips its own on the
//! membership topic, and two nodes that connect exchange every certificate
//! and revocation they know, so a new node can check the authors of what its
//! first peer forwards. Revocations are gossiped, exchanged, and kept in the
//! agreement log, so they survive restarts.
//!
//! Key rotations travel like certificates: a node that rotated its key
//! gossips its rotation statements and hands them to every peer it
//! connects to; its own are in its log. A peer that learns one lets the new
//! key stand on the old key's certificate and retires the old key (the
//! daemon drops its offers).
//!
//! A member's standing can also end with time: its certificate expires, or
//! a revocation dated in the future takes effect. The daemon asks
//! [`Members::take_lapsed`] on its timer, which only looks at the
//! certificates when the next such time has come.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fulcrum_proto::v1 as wire;
use fulcrum_protocol::Limits;
use fulcrum_protocol::keys::PublicKey;
use fulcrum_protocol::membership::{Charter, MemberCertificate, Membership, MembershipError, Revocation};
use fulcrum_protocol::record::Record;
use fulcrum_protocol::rotation::{KeyChain, KeyRotation};
use libp2p::PeerId;
use libp2p::gossipsub::IdentTopic;
use prost::Message as _;
use tracing::{error, info, warn};

use crate::charter::{load_certificate, load_charter};
use crate::config::NodeConfig;

/// Warn about this node's own certificate this long before it expires.
pub const EXPIRY_WARNING_MS: u64 = 30 * 24 * 3_600_000;
/// How often that warning is repeated.
const WARNING_EVERY: Duration = Duration::from_secs(3_600);
/// Longest chain of key rotations followed to a member's key in use.
const MAX_ROTATION_CHAIN: usize = 16;
/// Most certificates sent in one exchange.
const MAX_EXCHANGED: usize = 20_000;
/// Certificates with bad signatures after which a peer's exchange is not
/// read further: an honest peer sends only certificates that verified for it.
const MAX_FORGED_IN_EXCHANGE: usize = 16;

/// The gossip topic of a federation's certificates and revocations.
pub fn membership_topic(federation: &str) -> IdentTopic {
    IdentTopic::new(format!("fulcrum/{federation}/membership/1"))
}

/// What a gossiped membership message brought.
#[derive(Debug)]
pub enum Gossiped {
    /// Something new; a revocation to apply, log and act on. (A new key
    /// rotation's retired key waits in [`Members::take_retired`].)
    New(Option<Revocation>),
    /// Already known.
    Known,
    /// Not valid: wrong federation, too few or forged authority signatures,
    /// expired, or not decodable.
    Invalid(String),
}

/// The daemon's membership state.
#[derive(Debug)]
pub struct Members {
    membership: Membership,
    own: Option<MemberCertificate>,
    me: PublicKey,
    /// This node's keys, from the rotation records of its log.
    chain: KeyChain,
    /// Keys retired by rotations learned since the daemon last asked.
    retired: Vec<PublicKey>,
    limits: Limits,
    /// The membership gossip topic.
    pub topic: IdentTopic,
    /// Whether the own certificate reached the mesh at least once.
    pub own_published: bool,
    /// Connected peers whose certificates were exchanged with this node.
    pub exchanged: HashSet<PeerId>,
    last_warning: Option<Instant>,
    /// The next time a certificate known expires or a revocation known
    /// takes effect (None: none will), after `lapses_seen_ms`.
    next_lapse_ms: Option<u64>,
    /// Until when [`Members::take_lapsed`] reported lapses.
    lapses_seen_ms: u64,
}

impl Members {
    /// Loads the charter (none: an open federation named after the config)
    /// and the node's own certificate. A missing, invalid or expired own
    /// certificate is reported loudly but does not stop the node: it can
    /// still serve its admin API and its log, while peers refuse to trade
    /// with it.
    pub fn load(config: &NodeConfig, me: PublicKey, limits: &Limits, now_ms: u64) -> anyhow::Result<Members> {
        Members::load_with_log(config, me, limits, &[], now_ms)
    }

    /// [`Members::load`] that also follows the node's key rotations in
    /// `records` (its log): the certificate may be for any key the node had,
    /// and `me` must be the key the last rotation handed over to.
    pub fn load_with_log(
        config: &NodeConfig,
        me: PublicKey,
        limits: &Limits,
        records: &[Record],
        now_ms: u64,
    ) -> anyhow::Result<Members> {
        let rotations = records.iter().filter_map(|r| match r {
            Record::Rotation { rotation } => Some(rotation),
            _ => None,
        });
        let chain = KeyChain::of_log(me, rotations).map_err(|e| {
            anyhow::anyhow!("{e}; if a key rotation was interrupted, run 'fulcrumd key rotate' again to finish it")
        })?;
        let charter = match &config.charter {
            Some(path) => {
                let charter = load_charter(path).map_err(|e| anyhow::anyhow!("{e}"))?;
                anyhow::ensure!(
                    charter.name == config.federation,
                    "the charter {} is for federation {:?}, but this node is configured for {:?}",
                    path.display(),
                    charter.name,
                    config.federation
                );
                charter
            }
            None => Charter { name: config.federation.clone(), authorities: Vec::new(), threshold: 0 },
        };
        let mut membership = Membership::new(charter).context("invalid charter")?;
        let own = match &config.certificate {
            Some(path) => {
                let cert = load_certificate(path).map_err(|e| anyhow::anyhow!("{e}"))?;
                anyhow::ensure!(
                    chain.contains(&cert.body().member),
                    "the certificate {} is for the key {}, not for this node's key {me}{}",
                    path.display(),
                    cert.body().member,
                    if chain.previous().is_empty() { "" } else { " or a key it rotated from" }
                );
                Some(cert)
            }
            None => None,
        };
        if let Some(cert) = &own
            && let Err(e) = membership.add_certificate(cert.clone(), now_ms)
        {
            error!(error = %e, "this node's member certificate is not valid; peers refuse its offers and proposals");
        }
        for rotation in chain.rotations() {
            if let Err(e) = membership.add_rotation(rotation.clone(), now_ms) {
                error!(error = %e, "this node's own key rotation is not accepted; peers refuse its new key");
            }
        }
        if !membership.charter().is_open() && own.is_none() {
            error!(
                "the federation {:?} is closed and no member certificate is configured (`certificate` in \
                 node.toml); peers refuse this node's offers and proposals",
                config.federation
            );
        }
        let next_lapse_ms = membership.next_lapse_after(now_ms);
        let members = Members {
            membership,
            own,
            me,
            chain,
            retired: Vec::new(),
            limits: limits.clone(),
            topic: membership_topic(&config.federation),
            own_published: false,
            exchanged: HashSet::new(),
            last_warning: None,
            next_lapse_ms,
            lapses_seen_ms: now_ms,
        };
        info!(
            federation = %config.federation,
            closed = !members.is_open(),
            authorities = members.membership.charter().authorities.len(),
            threshold = members.membership.charter().threshold,
            standing = %members.standing(now_ms).0,
            "membership loaded"
        );
        Ok(members)
    }

    /// True for an open federation (threshold 0).
    pub fn is_open(&self) -> bool {
        self.membership.charter().is_open()
    }

    /// Whether `member` may take part now.
    pub fn check(&self, member: &PublicKey, now_ms: u64) -> Result<(), MembershipError> {
        self.membership.check(member, now_ms)
    }

    /// Labels the authorities vouch for on `member`.
    pub fn attested(&self, member: &PublicKey, now_ms: u64) -> BTreeSet<String> {
        self.membership.attested_labels(member, now_ms)
    }

    /// Certificates known (own included when valid).
    pub fn known(&self) -> usize {
        self.membership.certificates().count()
    }

    /// The key this node's log started with (its export's `node-key`).
    pub fn log_key(&self) -> PublicKey {
        self.chain.genesis()
    }

    /// The keys this node had before the one in use, oldest first.
    pub fn previous_keys(&self) -> &[PublicKey] {
        self.chain.previous()
    }

    /// True when `key` is this node's, now or before a key rotation.
    pub fn is_own(&self, key: &PublicKey) -> bool {
        self.chain.contains(key)
    }

    /// The key in use of the member that once had `key`: `key` itself unless
    /// rotations handed it over (followed to the end of their chain).
    pub fn current_key(&self, key: &PublicKey) -> PublicKey {
        let mut current = *key;
        for _ in 0..MAX_ROTATION_CHAIN {
            match self.membership.successor(&current) {
                Some(next) => current = next,
                None => break,
            }
        }
        current
    }

    /// The rotation that retired `key`, if one is known.
    pub fn rotation_of(&self, key: &PublicKey) -> Option<&KeyRotation> {
        self.membership.rotation_of(key)
    }

    /// Keys retired by rotations learned since the last call, for the
    /// daemon to drop their offers.
    pub fn take_retired(&mut self) -> Vec<PublicKey> {
        std::mem::take(&mut self.retired)
    }

    /// Members whose standing ended since the last call, up to `now_ms`:
    /// their certificate expired or their revocation took effect. Each is
    /// reported once, as the key of its certificate or revocation (a key
    /// that took over from it by rotation is [`Members::current_key`]).
    /// Cheap until the next such time comes: one comparison.
    pub fn take_lapsed(&mut self, now_ms: u64) -> Vec<PublicKey> {
        if self.next_lapse_ms.is_none_or(|at| now_ms < at) {
            return Vec::new();
        }
        let lapsed = self.membership.lapsed_between(self.lapses_seen_ms, now_ms);
        self.lapses_seen_ms = now_ms;
        self.next_lapse_ms = self.membership.next_lapse_after(now_ms);
        lapsed
    }

    /// Notes a time at which a member's standing ends, learned after the
    /// last look of [`Members::take_lapsed`].
    fn lapses_at(&mut self, at_ms: u64) {
        if at_ms > self.lapses_seen_ms {
            self.next_lapse_ms = Some(self.next_lapse_ms.map_or(at_ms, |next| next.min(at_ms)));
        }
    }

    /// This node's standing, for `status`: a word and the certificate's end.
    pub fn standing(&self, now_ms: u64) -> (String, u64) {
        let not_after = self.own.as_ref().map_or(0, |c| c.body().not_after_ms);
        let revoked = matches!(self.membership.check(&self.me, now_ms), Err(MembershipError::Revoked(_)));
        let word = if revoked {
            "revoked".to_owned()
        } else if let Some(cert) = &self.own {
            match cert.verify(self.membership.charter(), now_ms) {
                Ok(()) => "member".to_owned(),
                Err(MembershipError::Expired { .. }) => "expired".to_owned(),
                Err(e) => format!("invalid certificate: {e}"),
            }
        } else if self.is_open() {
            "open".to_owned()
        } else {
            "no certificate".to_owned()
        };
        (word, not_after)
    }

    /// A warning line when the own certificate expires soon or has, at most
    /// once an hour.
    pub fn expiry_warning(&mut self, now_ms: u64) -> Option<String> {
        let not_after = self.own.as_ref()?.body().not_after_ms;
        if now_ms + EXPIRY_WARNING_MS < not_after {
            return None;
        }
        if self.last_warning.is_some_and(|at| at.elapsed() < WARNING_EVERY) {
            return None;
        }
        self.last_warning = Some(Instant::now());
        Some(if now_ms >= not_after {
            "this node's member certificate has expired: peers refuse its offers and proposals; ask the \
             federation's authorities for a new one (fulcrumctl federation member request)"
                .to_owned()
        } else {
            format!(
                "this node's member certificate expires in {} days; ask the federation's authorities for a new one",
                (not_after - now_ms) / (24 * 3_600_000)
            )
        })
    }

    /// The own certificate as a gossip message.
    pub fn own_gossip(&self) -> Option<Vec<u8>> {
        let cert = wire::MemberCertificate::decode(self.own.as_ref()?.encode().as_slice()).ok()?;
        Some(wire::MembershipGossip { item: Some(wire::membership_gossip::Item::Certificate(cert)) }.encode_to_vec())
    }

    /// This node's own key rotations as gossip messages, oldest first.
    pub fn own_rotations_gossip(&self) -> Vec<Vec<u8>> {
        self.chain.rotations().iter().map(rotation_gossip).collect()
    }

    /// A revocation as a gossip message.
    pub fn revocation_gossip(revocation: &Revocation) -> Option<Vec<u8>> {
        let r = wire::Revocation::decode(revocation.encode().as_slice()).ok()?;
        Some(wire::MembershipGossip { item: Some(wire::membership_gossip::Item::Revocation(r)) }.encode_to_vec())
    }

    /// Everything this node knows, for a peer that just connected.
    pub fn exchange(&self) -> Vec<u8> {
        let own = self.own.iter();
        let certificates = own
            .chain(self.membership.certificates().filter(|c| Some(*c) != self.own.as_ref()))
            .take(MAX_EXCHANGED)
            .filter_map(|c| wire::MemberCertificate::decode(c.encode().as_slice()).ok())
            .collect();
        let revocations = self
            .membership
            .revocations()
            .filter_map(|r| wire::Revocation::decode(r.encode().as_slice()).ok())
            .collect();
        // Oldest first, so that a peer can follow a chain in one pass.
        let mut rotations: Vec<&KeyRotation> = self.membership.rotations().take(MAX_EXCHANGED).collect();
        rotations.sort_by_key(|r| r.body().seq);
        let rotations = rotations.into_iter().map(KeyRotation::to_wire).collect();
        wire::MembershipExchange { certificates, revocations, rotations }.encode_to_vec()
    }

    /// Learns a key rotation; true when it is new (its old key is then
    /// waiting in [`Members::take_retired`]).
    fn learn_rotation(&mut self, rotation: KeyRotation, now_ms: u64) -> Result<bool, MembershipError> {
        let old = rotation.body().old_key;
        let new = self.membership.add_rotation(rotation, now_ms)?;
        if new {
            info!(%old, new = %self.membership.successor(&old).map(|k| k.to_string()).unwrap_or_default(),
                "member rotated its key; the old key is retired");
            self.retired.push(old);
        }
        Ok(new)
    }

    /// A revocation that is valid under the charter and not applied yet:
    /// none of its member is known, or the one known takes effect later.
    fn fresh(&self, revocation: &Revocation) -> Result<bool, MembershipError> {
        let body = revocation.body();
        if self.membership.revoked_at(&body.member).is_some_and(|known| known <= body.revoked_at_ms) {
            return Ok(false);
        }
        revocation.verify(self.membership.charter())?;
        Ok(true)
    }

    /// Learns the certificates of a peer's exchange; returns the valid
    /// revocations it holds that are new here, for the caller to apply.
    pub fn on_exchange(&mut self, bytes: &[u8], now_ms: u64) -> Result<Vec<Revocation>, String> {
        let exchange = wire::MembershipExchange::decode(bytes).map_err(|e| format!("malformed exchange: {e}"))?;
        let mut new = Vec::new();
        for r in exchange.revocations {
            if let Ok(revocation) = Revocation::decode(&r.encode_to_vec(), &self.limits)
                && let Ok(true) = self.fresh(&revocation)
            {
                new.push(revocation);
            }
        }
        // Each member once, and signature checks bounded: past a few forged
        // certificates the rest is not read, and the peer is refused.
        let (mut members, mut forged) = (HashSet::new(), 0);
        for c in exchange.certificates.into_iter().take(MAX_EXCHANGED) {
            let Ok(cert) = MemberCertificate::decode(&c.encode_to_vec(), &self.limits) else { continue };
            if !members.insert(cert.body().member) {
                continue;
            }
            let ends = cert.body().not_after_ms;
            // Invalid ones (a peer's own, say) are simply not learned;
            // the peer is then refused like any non-member.
            match self.membership.add_certificate(cert, now_ms) {
                Ok(()) => self.lapses_at(ends),
                Err(MembershipError::NotEnoughSignatures { .. }) => {
                    forged += 1;
                    if forged >= MAX_FORGED_IN_EXCHANGE {
                        return Err(format!("{forged} certificates with bad signatures in one exchange"));
                    }
                }
                Err(_) => {}
            }
        }
        // After the certificates: a rotation stands on its old key's.
        for r in exchange.rotations.iter().take(MAX_EXCHANGED) {
            if let Ok(rotation) = KeyRotation::from_wire(r) {
                let _ = self.learn_rotation(rotation, now_ms);
            }
        }
        Ok(new)
    }

    /// A message from the membership topic. A new revocation is returned
    /// for the caller to apply with [`Members::add_revocation`].
    pub fn on_gossip(&mut self, bytes: &[u8], now_ms: u64) -> Gossiped {
        use wire::membership_gossip::Item;
        let Some(item) = wire::MembershipGossip::decode(bytes).ok().and_then(|g| g.item) else {
            return Gossiped::Invalid("malformed membership message".into());
        };
        match item {
            Item::Certificate(c) => match MemberCertificate::decode(&c.encode_to_vec(), &self.limits) {
                Ok(cert) => {
                    let (member, ends) = (cert.body().member, cert.body().not_after_ms);
                    let before = self.membership.check(&member, now_ms).is_ok();
                    match self.membership.add_certificate(cert, now_ms) {
                        Ok(()) => {
                            self.lapses_at(ends);
                            if before { Gossiped::Known } else { Gossiped::New(None) }
                        }
                        Err(MembershipError::Revoked(_)) => Gossiped::Known,
                        Err(e) => Gossiped::Invalid(e.to_string()),
                    }
                }
                Err(e) => Gossiped::Invalid(e.to_string()),
            },
            Item::Revocation(r) => match Revocation::decode(&r.encode_to_vec(), &self.limits) {
                Ok(revocation) => match self.fresh(&revocation) {
                    Ok(true) => Gossiped::New(Some(revocation)),
                    Ok(false) => Gossiped::Known,
                    Err(e) => Gossiped::Invalid(e.to_string()),
                },
                Err(e) => Gossiped::Invalid(e.to_string()),
            },
            Item::Rotation(r) => match KeyRotation::from_wire(&r) {
                Ok(rotation) => match self.learn_rotation(rotation, now_ms) {
                    Ok(true) => Gossiped::New(None),
                    Ok(false) => Gossiped::Known,
                    // The old key's certificate may simply not be known
                    // yet: not forwarded, not held against the sender.
                    Err(MembershipError::NoCertificate(_)) => Gossiped::Known,
                    Err(e) => Gossiped::Invalid(e.to_string()),
                },
                Err(e) => Gossiped::Invalid(e.to_string()),
            },
        }
    }

    /// Verifies and applies a revocation; true when it is new (see
    /// [`Membership::revoke`]). One dated in the future takes effect then:
    /// [`Members::take_lapsed`] reports its member at that time.
    pub fn add_revocation(&mut self, revocation: Revocation) -> Result<bool, MembershipError> {
        let (member, at_ms) = (revocation.body().member, revocation.body().revoked_at_ms);
        let new = self.membership.revoke(revocation)?;
        if new {
            self.lapses_at(at_ms);
            if member == self.me {
                error!(revoked_at_ms = at_ms, "this node's membership was revoked by the federation's authorities");
            } else {
                warn!(%member, revoked_at_ms = at_ms, "member revoked by the federation's authorities");
            }
        }
        Ok(new)
    }
}

/// A key rotation as a gossip message.
fn rotation_gossip(rotation: &KeyRotation) -> Vec<u8> {
    wire::MembershipGossip { item: Some(wire::membership_gossip::Item::Rotation(rotation.to_wire())) }.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charter::{render_certificate, render_charter};
    use fulcrum_protocol::keys::Identity;
    use fulcrum_protocol::membership::CertificateBody;
    use fulcrum_protocol::offer::Country;

    const NOW: u64 = 1_800_000_000_000;
    const DAY: u64 = 24 * 3_600_000;

    fn authority(n: u8) -> Identity {
        Identity::from_secret_bytes(&[n; 32])
    }

    /// A closed 2-of-2 federation, and a config for node `me` with a
    /// certificate valid until `not_after` (none when `None`).
    fn setup(dir: &std::path::Path, me: &Identity, not_after: Option<u64>) -> NodeConfig {
        let charter = Charter {
            name: "eu".into(),
            authorities: vec![authority(1).public(), authority(2).public()],
            threshold: 2,
        };
        let charter_path = dir.join("federation.toml");
        std::fs::write(&charter_path, render_charter(&charter, &[])).unwrap();
        let mut config = NodeConfig { federation: "eu".into(), charter: Some(charter_path), ..NodeConfig::default() };
        if let Some(not_after_ms) = not_after {
            let body = CertificateBody {
                federation: "eu".into(),
                member: me.public(),
                organisation: "Example".into(),
                country: Country::parse("DE").unwrap(),
                labels: BTreeSet::new(),
                not_before_ms: NOW - 300 * DAY,
                not_after_ms,
                serial: 7,
            };
            let bytes = body.encode();
            let sigs = (1..=2).map(|n| MemberCertificate::sign_request(&authority(n), &bytes)).collect();
            let cert = MemberCertificate::assemble(bytes, sigs, &Limits::default()).unwrap();
            let cert_path = dir.join("member.cert");
            std::fs::write(&cert_path, render_certificate(&cert)).unwrap();
            config.certificate = Some(cert_path);
        }
        config
    }

    #[test]
    fn the_own_certificate_is_warned_about_before_and_after_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let me = Identity::from_secret_bytes(&[9; 32]);
        let config = setup(dir.path(), &me, Some(NOW + 10 * DAY));
        let mut members = Members::load(&config, me.public(), &Limits::default(), NOW).unwrap();
        assert_eq!(members.standing(NOW), ("member".to_owned(), NOW + 10 * DAY));
        let warning = members.expiry_warning(NOW).unwrap();
        assert!(warning.contains("expires in 10 days"), "{warning}");
        // Not repeated within the hour.
        assert_eq!(members.expiry_warning(NOW + 1_000), None);

        // Far from expiry: silent.
        let config = setup(dir.path(), &me, Some(NOW + 90 * DAY));
        let mut members = Members::load(&config, me.public(), &Limits::default(), NOW).unwrap();
        assert_eq!(members.expiry_warning(NOW), None);

        // Expired: the standing and the warning say so.
        let config = setup(dir.path(), &me, Some(NOW - DAY));
        let mut members = Members::load(&config, me.public(), &Limits::default(), NOW).unwrap();
        assert_eq!(members.standing(NOW).0, "expired");
        assert!(members.expiry_warning(NOW).unwrap().contains("has expired"));
        assert!(members.check(&me.public(), NOW).is_err());
    }

    #[test]
    fn a_closed_federation_without_a_certificate_or_with_someone_elses_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let me = Identity::from_secret_bytes(&[9; 32]);
        let config = setup(dir.path(), &me, None);
        let members = Members::load(&config, me.public(), &Limits::default(), NOW).unwrap();
        assert_eq!(members.standing(NOW).0, "no certificate");
        assert!(!members.is_open());

        let config = setup(dir.path(), &me, Some(NOW + 90 * DAY));
        let other = Identity::from_secret_bytes(&[8; 32]);
        let err = Members::load(&config, other.public(), &Limits::default(), NOW).unwrap_err().to_string();
        assert!(err.contains("not for this node's key"), "{err}");

        let wrong_name = NodeConfig { federation: "elsewhere".into(), ..config };
        let err = Members::load(&wrong_name, me.public(), &Limits::default(), NOW).unwrap_err().to_string();
        assert!(err.contains("is for federation \"eu\""), "{err}");
    }

    #[test]
    fn without_a_charter_the_federation_is_open() {
        let me = Identity::from_secret_bytes(&[9; 32]);
        let members = Members::load(&NodeConfig::default(), me.public(), &Limits::default(), NOW).unwrap();
        assert!(members.is_open());
        assert_eq!(members.standing(NOW).0, "open");
        assert!(members.check(&Identity::from_secret_bytes(&[3; 32]).public(), NOW).is_ok());
    }

    /// A certificate of the 2-of-2 federation for `who`, valid until `not_after`.
    fn certificate(who: &Identity, not_after_ms: u64) -> wire::MemberCertificate {
        let body = CertificateBody {
            federation: "eu".into(),
            member: who.public(),
            organisation: "Other".into(),
            country: Country::parse("FR").unwrap(),
            labels: BTreeSet::new(),
            not_before_ms: NOW - 300 * DAY,
            not_after_ms,
            serial: 1,
        };
        let bytes = body.encode();
        let sigs = (1..=2).map(|n| MemberCertificate::sign_request(&authority(n), &bytes)).collect();
        let cert = MemberCertificate::assemble(bytes, sigs, &Limits::default()).unwrap();
        wire::MemberCertificate::decode(cert.encode().as_slice()).unwrap()
    }

    fn certificate_gossip(who: &Identity, not_after_ms: u64) -> Vec<u8> {
        let item = wire::membership_gossip::Item::Certificate(certificate(who, not_after_ms));
        wire::MembershipGossip { item: Some(item) }.encode_to_vec()
    }

    fn revocation(who: &Identity, revoked_at_ms: u64) -> Revocation {
        let body = fulcrum_protocol::membership::RevocationBody {
            federation: "eu".into(),
            member: who.public(),
            revoked_at_ms,
            reason: "left".into(),
        };
        let bytes = body.encode();
        let sigs = (1..=2).map(|n| Revocation::sign_body(&authority(n), &bytes)).collect();
        Revocation::assemble(bytes, sigs).unwrap()
    }

    #[test]
    fn certificates_that_expire_and_revocations_dated_later_are_reported_once_when_their_time_comes() {
        const MINUTE: u64 = 60_000;
        let dir = tempfile::tempdir().unwrap();
        let me = Identity::from_secret_bytes(&[9; 32]);
        let config = setup(dir.path(), &me, Some(NOW + DAY));
        let mut members = Members::load(&config, me.public(), &Limits::default(), NOW).unwrap();
        let [short, renewed, later, revoked] = [20, 21, 22, 23].map(|n| Identity::from_secret_bytes(&[n; 32]));
        // `short` ends in 10 minutes; `renewed` would in 5, but a longer one follows.
        assert!(matches!(members.on_gossip(&certificate_gossip(&short, NOW + 10 * MINUTE), NOW), Gossiped::New(None)));
        assert!(matches!(members.on_gossip(&certificate_gossip(&renewed, NOW + 5 * MINUTE), NOW), Gossiped::New(None)));
        // Learned by exchange: `later` ends in 20 minutes.
        let exchange = wire::MembershipExchange {
            certificates: vec![certificate(&later, NOW + 20 * MINUTE)],
            ..Default::default()
        };
        assert!(members.on_exchange(&exchange.encode_to_vec(), NOW).unwrap().is_empty());
        // `revoked` is a member until its revocation takes effect, in 15
        // minutes; its certificate, which ends after that, adds nothing.
        members.on_gossip(&certificate_gossip(&revoked, NOW + 2 * DAY), NOW);
        assert_eq!(members.add_revocation(revocation(&revoked, NOW + 15 * MINUTE)), Ok(true));
        members.check(&revoked.public(), NOW).unwrap();
        // The renewal arrives before the first certificate ends.
        let gossip = certificate_gossip(&renewed, NOW + 30 * DAY);
        assert!(matches!(members.on_gossip(&gossip, NOW + MINUTE), Gossiped::Known));

        assert!(members.take_lapsed(NOW + MINUTE).is_empty());
        assert!(members.take_lapsed(NOW + 10 * MINUTE - 1).is_empty(), "a renewed certificate's old end is no lapse");
        // Each once, at its time, or at the first look after it.
        assert_eq!(members.take_lapsed(NOW + 10 * MINUTE), [short.public()]);
        assert!(members.take_lapsed(NOW + 10 * MINUTE + 1).is_empty());
        assert!(members.check(&short.public(), NOW + 10 * MINUTE).is_err());
        assert_eq!(members.take_lapsed(NOW + 16 * MINUTE), [revoked.public()]);
        assert!(matches!(members.check(&revoked.public(), NOW + 16 * MINUTE), Err(MembershipError::Revoked(_))));
        assert_eq!(members.take_lapsed(NOW + 25 * MINUTE), [later.public()]);
        members.check(&renewed.public(), NOW + 25 * MINUTE).unwrap();
        // This node's own (the daemon leaves its own offers alone), then the renewed one; then nothing is due.
        assert_eq!(members.take_lapsed(NOW + DAY), [me.public()]);
        assert_eq!(members.take_lapsed(NOW + 30 * DAY), [renewed.public()]);
        assert_eq!(members.next_lapse_ms, None);
        assert!(members.take_lapsed(NOW + 365 * DAY).is_empty());

        // A certificate learned after a look is watched too.
        let late = Identity::from_secret_bytes(&[24; 32]);
        let now = NOW + 366 * DAY;
        assert!(matches!(members.on_gossip(&certificate_gossip(&late, now + MINUTE), now), Gossiped::New(None)));
        assert!(members.take_lapsed(now + MINUTE - 1).is_empty());
        assert_eq!(members.take_lapsed(now + MINUTE), [late.public()]);
    }

    fn rotation_record(old: &Identity, new: &Identity) -> Record {
        let body = fulcrum_protocol::rotation::RotationBody {
            federation: "eu".into(),
            old_key: old.public(),
            new_key: new.public(),
            at_ms: NOW,
            seq: 1,
            log_size: 0,
            log_root: fulcrum_protocol::merkle::empty_root(),
        };
        Record::Rotation { rotation: KeyRotation::sign(old, new, body).unwrap() }
    }

    #[test]
    fn a_rotated_node_keeps_its_certificate_and_peers_follow_it() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (Identity::from_secret_bytes(&[9; 32]), Identity::from_secret_bytes(&[10; 32]));
        let config = setup(dir.path(), &old, Some(NOW + 90 * DAY));
        let log = [rotation_record(&old, &new)];
        let rotated = Members::load_with_log(&config, new.public(), &Limits::default(), &log, NOW).unwrap();
        assert_eq!(rotated.standing(NOW).0, "member");
        rotated.check(&new.public(), NOW).unwrap();
        assert!(matches!(rotated.check(&old.public(), NOW), Err(MembershipError::Rotated { .. })));
        assert_eq!((rotated.log_key(), rotated.previous_keys()), (old.public(), &[old.public()][..]));
        assert_eq!(rotated.own_rotations_gossip().len(), 1);

        // The key in use must be the one the log hands over to.
        let err = Members::load_with_log(&config, old.public(), &Limits::default(), &log, NOW).unwrap_err();
        assert!(err.to_string().contains("fulcrumd key rotate"), "{err}");

        // A peer learns the rotation when they exchange: the new key is a
        // member, the old one retired and handed to the daemon once.
        let peer = Identity::from_secret_bytes(&[11; 32]);
        let peer_dir = tempfile::tempdir().unwrap();
        let mut other =
            Members::load(&setup(peer_dir.path(), &peer, Some(NOW + DAY)), peer.public(), &Limits::default(), NOW)
                .unwrap();
        assert!(matches!(other.check(&new.public(), NOW), Err(MembershipError::NoCertificate(_))));
        other.on_exchange(&rotated.exchange(), NOW).unwrap();
        other.check(&new.public(), NOW).unwrap();
        assert!(other.check(&old.public(), NOW).is_err());
        assert_eq!(other.take_retired(), [old.public()]);
        assert!(other.take_retired().is_empty());
        // Gossip of a rotation already known changes nothing.
        for bytes in rotated.own_rotations_gossip() {
            assert!(matches!(other.on_gossip(&bytes, NOW), Gossiped::Known));
        }
        assert!(other.take_retired().is_empty());

        // By gossip alone, once the old key's certificate is known.
        let mut third =
            Members::load(&setup(peer_dir.path(), &peer, Some(NOW + DAY)), peer.public(), &Limits::default(), NOW)
                .unwrap();
        let bytes = rotated.own_rotations_gossip().remove(0);
        assert!(matches!(third.on_gossip(&bytes, NOW), Gossiped::Known), "the old key's certificate is unknown yet");
        assert!(matches!(third.on_gossip(&rotated.own_gossip().unwrap(), NOW), Gossiped::New(None)));
        assert!(matches!(third.on_gossip(&bytes, NOW), Gossiped::New(None)));
        third.check(&new.public(), NOW).unwrap();
        assert_eq!(third.take_retired(), [old.public()]);
    }
}
