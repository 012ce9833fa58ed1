//! Federation membership: charter validation, k-of-n member certificates (what
//! counts as a signature, validity, tampering, wire form) and revocations, and
//! how `Membership` combines them, for a 2-of-3 charter and an open federation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::{FEDERATION, HOUR_MS, T0, identity};
use fulcrum_proto::v1 as wire;
use fulcrum_protocol::Limits;
use fulcrum_protocol::envelope::{Kind, sign_detached};
use fulcrum_protocol::keys::{Identity, PublicKey};
use fulcrum_protocol::membership::{
    AuthoritySignature, CertificateBody, Charter, MemberCertificate, Membership, MembershipError, Revocation,
    RevocationBody,
};
use fulcrum_protocol::offer::Country;
use prost::Message;

const NOW: u64 = T0;
const DAY_MS: u64 = 24 * HOUR_MS;
/// Seeds of the three authorities of the 2-of-3 charter.
const AUTHORITIES: [u8; 3] = [101, 102, 103];
const OUTSIDER: u8 = 150;
const MEMBER: u8 = 1;

fn authority(i: usize) -> Identity {
    identity(AUTHORITIES[i])
}

fn charter(threshold: usize) -> Charter {
    Charter {
        name: FEDERATION.into(),
        authorities: AUTHORITIES.iter().map(|s| identity(*s).public()).collect(),
        threshold,
    }
}

fn member() -> PublicKey {
    identity(MEMBER).public()
}

fn cert_labels() -> BTreeSet<String> {
    ["gaia-x:level-2", "iso:27001"].into_iter().map(String::from).collect()
}

/// A year-long certificate body for `member`, valid since yesterday.
fn body_for(member: PublicKey) -> CertificateBody {
    CertificateBody {
        federation: FEDERATION.into(),
        member,
        organisation: "Example Cloud GmbH".into(),
        country: Country::parse("DE").unwrap(),
        labels: cert_labels(),
        not_before_ms: NOW - DAY_MS,
        not_after_ms: NOW + 365 * DAY_MS,
        serial: 7,
    }
}

fn sign_cert(body_bytes: &[u8], signers: &[u8]) -> Vec<AuthoritySignature> {
    signers.iter().map(|s| MemberCertificate::sign_request(&identity(*s), body_bytes)).collect()
}

/// A certificate over `body` signed by the identities of seeds `signers`.
fn certificate(body: &CertificateBody, signers: &[u8]) -> MemberCertificate {
    let bytes = body.encode();
    let sigs = sign_cert(&bytes, signers);
    MemberCertificate::assemble(bytes, sigs, &Limits::default()).unwrap()
}

fn revocation_body(member: PublicKey) -> RevocationBody {
    RevocationBody { federation: FEDERATION.into(), member, revoked_at_ms: NOW, reason: "left the federation".into() }
}

fn revocation(body: &RevocationBody, signers: &[u8]) -> Revocation {
    let bytes = body.encode();
    let sigs = signers.iter().map(|s| Revocation::sign_body(&identity(*s), &bytes)).collect();
    Revocation::assemble(bytes, sigs).unwrap()
}

fn not_enough(valid: usize, threshold: usize) -> MembershipError {
    MembershipError::NotEnoughSignatures { valid, threshold }
}

fn is_malformed_certificate(r: &Result<MemberCertificate, MembershipError>) -> bool {
    matches!(r, Err(MembershipError::Malformed { what: "certificate", .. }))
}

// ---------------------------------------------------------------------------
// Charter
// ---------------------------------------------------------------------------

#[test]
fn charter_validation() {
    assert_eq!(charter(2).validate(), Ok(()));
    assert_eq!(charter(3).validate(), Ok(()), "threshold may equal the number of authorities");
    assert_eq!(Charter { name: FEDERATION.into(), authorities: vec![], threshold: 0 }.validate(), Ok(()));
    assert_eq!(Charter { name: "n".repeat(128), ..charter(2) }.validate(), Ok(()));

    let mut duplicate = charter(2);
    duplicate.authorities.push(authority(1).public());
    assert!(
        matches!(duplicate.validate(), Err(MembershipError::BadCharter(m)) if m.contains("twice")),
        "{:?}",
        duplicate.validate()
    );

    assert_eq!(charter(4).validate(), Err(MembershipError::BadCharter("threshold 4 exceeds the 3 authorities".into())));
    assert_eq!(
        Charter { name: FEDERATION.into(), authorities: vec![], threshold: 1 }.validate(),
        Err(MembershipError::BadCharter("threshold 1 exceeds the 0 authorities".into()))
    );

    for name in [String::new(), "eu sovereign".into(), "eu\tsovereign".into(), "eu\u{1}".into(), "n".repeat(129)] {
        let c = Charter { name: name.clone(), ..charter(2) };
        assert!(
            matches!(c.validate(), Err(MembershipError::BadCharter(m)) if m.contains("name")),
            "name {name:?}: {:?}",
            c.validate()
        );
        assert!(matches!(Membership::new(c), Err(MembershipError::BadCharter(_))), "name {name:?}");
    }
    assert!(matches!(Membership::new(duplicate), Err(MembershipError::BadCharter(_))));
    assert!(matches!(Membership::new(charter(4)), Err(MembershipError::BadCharter(_))));
}

// ---------------------------------------------------------------------------
// Certificates under a 2-of-3 charter
// ---------------------------------------------------------------------------

#[test]
fn certificate_signed_by_any_two_authorities_verifies() {
    let body = body_for(member());
    let [a, b, c] = AUTHORITIES;
    for signers in [[a, b].as_slice(), &[a, c], &[b, c], &[c, a], &[a, b, c]] {
        let cert = certificate(&body, signers);
        assert_eq!(cert.verify(&charter(2), NOW), Ok(()), "signed by {signers:?}");
        assert_eq!(cert.body(), &body);
        assert_eq!(cert.signatures().len(), signers.len());
    }
}

#[test]
fn certificate_needs_two_distinct_valid_authority_signatures() {
    let body = body_for(member());
    let bytes = body.encode();
    let [a, b, _] = AUTHORITIES;
    let with =
        |sigs: Vec<AuthoritySignature>| MemberCertificate::assemble(bytes.clone(), sigs, &Limits::default()).unwrap();

    assert_eq!(certificate(&body, &[]).verify(&charter(2), NOW), Err(not_enough(0, 2)));
    assert_eq!(certificate(&body, &[a]).verify(&charter(2), NOW), Err(not_enough(1, 2)));

    // The same authority twice counts once.
    assert_eq!(certificate(&body, &[a, a]).verify(&charter(2), NOW), Err(not_enough(1, 2)));
    assert_eq!(certificate(&body, &[a, a, a]).verify(&charter(2), NOW), Err(not_enough(1, 2)));
    assert_eq!(certificate(&body, &[a, a, b]).verify(&charter(2), NOW), Ok(()));

    // A key outside the charter does not count.
    assert_eq!(certificate(&body, &[a, OUTSIDER]).verify(&charter(2), NOW), Err(not_enough(1, 2)));
    assert_eq!(certificate(&body, &[MEMBER, OUTSIDER]).verify(&charter(2), NOW), Err(not_enough(0, 2)));

    // An outsider's signature presented under an authority's key does not count.
    let mut sigs = sign_cert(&bytes, &[a]);
    sigs.push((authority(1).public(), sign_cert(&bytes, &[OUTSIDER])[0].1));
    assert_eq!(with(sigs).verify(&charter(2), NOW), Err(not_enough(1, 2)));

    // A forged (bit-flipped) signature does not count, wherever the flip is.
    for i in [0, 31, 32, 63] {
        let mut sigs = sign_cert(&bytes, &[a, b]);
        sigs[1].1[i] ^= 0x01;
        assert_eq!(with(sigs).verify(&charter(2), NOW), Err(not_enough(1, 2)), "byte {i} flipped");
    }

    // A forged copy followed by the genuine one: the genuine one still counts.
    let mut sigs = sign_cert(&bytes, &[b]);
    sigs[0].1[5] ^= 0x80;
    sigs.extend(sign_cert(&bytes, &[b, a]));
    assert_eq!(with(sigs).verify(&charter(2), NOW), Ok(()));

    // A signature over the same bytes under another kind does not count.
    let mut sigs = sign_cert(&bytes, &[a]);
    sigs.push((authority(1).public(), sign_detached(&authority(1), Kind::Revocation, &bytes)));
    assert_eq!(with(sigs).verify(&charter(2), NOW), Err(not_enough(1, 2)));
}

#[test]
fn certificate_for_another_federation() {
    let body = CertificateBody { federation: "us-commercial".into(), ..body_for(member()) };
    let cert = certificate(&body, &AUTHORITIES);
    assert_eq!(
        cert.verify(&charter(2), NOW),
        Err(MembershipError::WrongFederation { expected: FEDERATION.into(), got: "us-commercial".into() })
    );
}

#[test]
fn certificate_validity_window() {
    let body = CertificateBody { not_before_ms: NOW + HOUR_MS, not_after_ms: NOW + 2 * HOUR_MS, ..body_for(member()) };
    let cert = certificate(&body, &AUTHORITIES[..2]);
    let c = charter(2);
    assert_eq!(cert.verify(&c, NOW), Err(MembershipError::NotYetValid { not_before_ms: NOW + HOUR_MS, now_ms: NOW }));
    assert_eq!(
        cert.verify(&c, NOW + HOUR_MS - 1),
        Err(MembershipError::NotYetValid { not_before_ms: NOW + HOUR_MS, now_ms: NOW + HOUR_MS - 1 })
    );
    assert_eq!(cert.verify(&c, NOW + HOUR_MS), Ok(()), "valid from not_before");
    assert_eq!(cert.verify(&c, NOW + 2 * HOUR_MS - 1), Ok(()));
    assert_eq!(
        cert.verify(&c, NOW + 2 * HOUR_MS),
        Err(MembershipError::Expired { not_after_ms: NOW + 2 * HOUR_MS, now_ms: NOW + 2 * HOUR_MS })
    );

    // A body whose validity ends before it starts is not even a certificate.
    let bytes = CertificateBody { not_after_ms: NOW, not_before_ms: NOW, ..body_for(member()) }.encode();
    let sigs = sign_cert(&bytes, &AUTHORITIES);
    assert!(is_malformed_certificate(&MemberCertificate::assemble(bytes, sigs, &Limits::default())));
}

#[test]
fn tampering_with_any_body_byte_breaks_the_certificate() {
    let limits = Limits::default();
    let body = body_for(member());
    let bytes = body.encode();
    let sigs = sign_cert(&bytes, &AUTHORITIES);
    let c = charter(2);
    let mut signature_failures = 0;
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x80] {
            let mut tampered = bytes.clone();
            tampered[i] ^= mask;
            // Through the wire, as a peer would send it.
            let encoded = wire::MemberCertificate {
                body: tampered.clone(),
                signatures: sigs
                    .iter()
                    .map(|(k, s)| wire::AuthoritySignature { authority: k.to_bytes().to_vec(), signature: s.to_vec() })
                    .collect(),
            }
            .encode_to_vec();
            match MemberCertificate::decode(&encoded, &limits) {
                Err(MembershipError::Malformed { what: "certificate", .. }) => {}
                Err(e) => panic!("byte {i} ^ {mask:#x}: unexpected decode error {e:?}"),
                Ok(cert) => match cert.verify(&c, NOW) {
                    Ok(()) => panic!("byte {i} ^ {mask:#x}: tampered certificate verifies"),
                    Err(MembershipError::WrongFederation { .. }) => {}
                    Err(MembershipError::NotEnoughSignatures { valid: 0, threshold: 2 }) => signature_failures += 1,
                    Err(e) => {
                        // Only the validity window may otherwise change, but the
                        // signatures are checked before it.
                        panic!("byte {i} ^ {mask:#x}: unexpected verify error {e:?}")
                    }
                },
            }
        }
    }
    assert!(signature_failures > bytes.len() / 2, "most flips decode and fail on signatures ({signature_failures})");
}

#[test]
fn certificate_wire_round_trip() {
    let limits = Limits::default();
    let body = body_for(member());
    assert_eq!(CertificateBody::decode(&body.encode(), &limits), Ok(body.clone()));

    let cert = certificate(&body, &AUTHORITIES[..2]);
    let decoded = MemberCertificate::decode(&cert.encode(), &limits).unwrap();
    assert_eq!(decoded, cert);
    assert_eq!(decoded.body(), &body);
    assert_eq!(decoded.signatures(), cert.signatures());
    assert_eq!(decoded.encode(), cert.encode());
    assert_eq!(decoded.verify(&charter(2), NOW), Ok(()));

    let rev = revocation(&revocation_body(member()), &AUTHORITIES[1..]);
    let decoded = Revocation::decode(&rev.encode(), &limits).unwrap();
    assert_eq!(decoded, rev);
    assert_eq!(decoded.body(), &revocation_body(member()));
    assert_eq!(decoded.verify(&charter(2)), Ok(()));
}

#[test]
fn malformed_certificates() {
    let limits = Limits::default();
    let body_bytes = body_for(member()).encode();
    let good_sigs = || {
        sign_cert(&body_bytes, &AUTHORITIES[..2])
            .into_iter()
            .map(|(k, s)| wire::AuthoritySignature { authority: k.to_bytes().to_vec(), signature: s.to_vec() })
            .collect::<Vec<_>>()
    };
    let encode = |body: Vec<u8>, signatures: Vec<wire::AuthoritySignature>| {
        wire::MemberCertificate { body, signatures }.encode_to_vec()
    };
    let malformed = |name: &str, bytes: &[u8], reason: Option<&str>| {
        let got = MemberCertificate::decode(bytes, &limits);
        match (&got, reason) {
            (Err(MembershipError::Malformed { what: "certificate", reason: r }), Some(want)) => {
                assert!(r.contains(want), "{name}: reason {r:?} lacks {want:?}")
            }
            (Err(MembershipError::Malformed { what: "certificate", .. }), None) => {}
            _ => panic!("{name}: expected Malformed, got {got:?}"),
        }
    };

    malformed("garbage", &[0xff; 16], None);
    malformed("not protobuf", b"hello, federation", None);

    let whole = encode(body_bytes.clone(), good_sigs());
    // Cut inside the last signature.
    malformed("truncated", &whole[..whole.len() - 1], None);
    malformed("truncated in the body", &whole[..body_bytes.len() / 2], None);

    malformed("oversized", &vec![0u8; limits.max_envelope_bytes + 1], Some("too large"));
    malformed("body over the kind's limit", &encode(vec![0u8; 4 * 1024 + 1], vec![]), Some("body too large"));

    let mut sigs = good_sigs();
    sigs[1].signature.pop();
    malformed("63-byte signature", &encode(body_bytes.clone(), sigs), Some("signature is not 64 bytes"));
    let mut sigs = good_sigs();
    sigs[0].signature.push(0);
    malformed("65-byte signature", &encode(body_bytes.clone(), sigs), Some("signature is not 64 bytes"));

    let mut sigs = good_sigs();
    sigs[0].authority.truncate(31);
    malformed("31-byte authority key", &encode(body_bytes.clone(), sigs), Some("31 bytes"));
    let mut sigs = good_sigs();
    let mut identity_point = [0u8; 32];
    identity_point[0] = 1;
    sigs[0].authority = identity_point.to_vec();
    malformed("small-order authority key", &encode(body_bytes.clone(), sigs), Some("not a valid Ed25519 key"));

    let mut bad_member = wire::MemberCertificateBody::decode(body_bytes.as_slice()).unwrap();
    bad_member.member = identity_point.to_vec();
    malformed("small-order member key", &encode(bad_member.encode_to_vec(), good_sigs()), None);

    let many: Vec<_> = (0..65).flat_map(|_| good_sigs().into_iter().take(1)).collect();
    malformed("65 signatures", &encode(body_bytes.clone(), many), Some("more than 64"));

    // Every prefix either fails to decode or, cut at a field boundary, lost
    // signatures and no longer verifies.
    for cut in 0..whole.len() {
        match MemberCertificate::decode(&whole[..cut], &limits) {
            Err(MembershipError::Malformed { what: "certificate", .. }) => {}
            Err(e) => panic!("prefix {cut}: {e:?}"),
            Ok(cert) => {
                assert!(cert.signatures().len() < 2, "prefix {cut}");
                assert_eq!(cert.verify(&charter(2), NOW), Err(not_enough(cert.signatures().len(), 2)), "prefix {cut}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Membership
// ---------------------------------------------------------------------------

#[test]
fn membership_admits_and_revokes_with_two_of_three() {
    let mut m = Membership::new(charter(2)).unwrap();
    let who = member();
    let [a, b, c] = AUTHORITIES;

    assert_eq!(m.check(&who, NOW), Err(MembershipError::NoCertificate(who)));
    assert_eq!(m.add_certificate(certificate(&body_for(who), &[a]), NOW), Err(not_enough(1, 2)));
    assert_eq!(m.check(&who, NOW), Err(MembershipError::NoCertificate(who)), "a refused certificate is not kept");

    assert_eq!(m.add_certificate(certificate(&body_for(who), &[a, b]), NOW), Ok(()));
    assert_eq!(m.check(&who, NOW), Ok(()));
    assert_eq!(m.attested_labels(&who, NOW), cert_labels());

    // One authority cannot revoke.
    assert_eq!(m.revoke(revocation(&revocation_body(who), &[c])), Err(not_enough(1, 2)));
    assert_eq!(m.revoke(revocation(&revocation_body(who), &[c, c])), Err(not_enough(1, 2)));
    // Certificate-kind signatures over a revocation body do not count.
    let rev_bytes = revocation_body(who).encode();
    let cross_kind = Revocation::assemble(rev_bytes.clone(), sign_cert(&rev_bytes, &[a, b])).unwrap();
    assert_eq!(m.revoke(cross_kind), Err(not_enough(0, 2)));
    // Nor does a revocation for another federation.
    let other = RevocationBody { federation: "us-commercial".into(), ..revocation_body(who) };
    assert_eq!(
        m.revoke(revocation(&other, &[a, b, c])),
        Err(MembershipError::WrongFederation { expected: FEDERATION.into(), got: "us-commercial".into() })
    );
    assert_eq!(m.check(&who, NOW), Ok(()), "refused revocations change nothing");

    assert_eq!(m.revoke(revocation(&revocation_body(who), &[b, c])), Ok(true));
    assert_eq!(m.check(&who, NOW), Err(MembershipError::Revoked(who)));
    assert_eq!(m.attested_labels(&who, NOW), BTreeSet::new());
    assert_eq!(m.revoke(revocation(&revocation_body(who), &[a, c])), Ok(false), "already revoked");

    // A revoked member cannot come back with a fresh certificate.
    let fresh = CertificateBody { serial: 8, not_after_ms: NOW + 700 * DAY_MS, ..body_for(who) };
    assert_eq!(m.add_certificate(certificate(&fresh, &[a, b, c]), NOW), Err(MembershipError::Revoked(who)));
    assert_eq!(m.check(&who, NOW), Err(MembershipError::Revoked(who)));

    // Others are unaffected.
    let other_member = identity(2).public();
    assert_eq!(m.add_certificate(certificate(&body_for(other_member), &[a, c]), NOW), Ok(()));
    assert_eq!(m.check(&other_member, NOW), Ok(()));
}

/// A revocation counts from its `revoked_at_ms`: dated in the future, the
/// member takes part until then; dated in the past, at once. Of two
/// revocations of one member, the one that takes effect first holds.
#[test]
fn a_revocation_takes_effect_at_its_time() {
    let mut m = Membership::new(charter(2)).unwrap();
    let who = member();
    let [a, b, c] = AUTHORITIES;
    m.add_certificate(certificate(&body_for(who), &[a, b]), NOW).unwrap();
    let at = |revoked_at_ms| revocation(&RevocationBody { revoked_at_ms, ..revocation_body(who) }, &[b, c]);

    assert_eq!(m.revoke(at(NOW + HOUR_MS)), Ok(true));
    assert!(m.is_revoked(&who));
    assert_eq!(m.revoked_at(&who), Some(NOW + HOUR_MS));
    for now in [NOW, NOW + HOUR_MS - 1] {
        assert_eq!(m.check(&who, now), Ok(()), "a member until its revocation takes effect");
        assert_eq!(m.attested_labels(&who, now), cert_labels());
    }
    assert_eq!(m.check(&who, NOW + HOUR_MS), Err(MembershipError::Revoked(who)));
    assert_eq!(m.attested_labels(&who, NOW + HOUR_MS), BTreeSet::new());
    // Until then a new certificate is taken; from then on, none.
    let renewed = CertificateBody { serial: 8, not_after_ms: NOW + 700 * DAY_MS, ..body_for(who) };
    assert_eq!(m.add_certificate(certificate(&renewed, &[a, c]), NOW + 1), Ok(()));
    assert_eq!(m.check(&who, NOW + HOUR_MS), Err(MembershipError::Revoked(who)), "a renewal does not undo it");
    assert_eq!(m.add_certificate(certificate(&renewed, &[a, c]), NOW + HOUR_MS), Err(MembershipError::Revoked(who)));
    // A pending revocation's member is not passed on as a member.
    assert_eq!(m.certificates().count(), 0);

    // A later revocation changes nothing; an earlier one takes over.
    assert_eq!(m.revoke(at(NOW + 2 * HOUR_MS)), Ok(false));
    assert_eq!(m.revoked_at(&who), Some(NOW + HOUR_MS));
    assert_eq!(m.revoke(at(NOW + HOUR_MS)), Ok(false), "the same one again");
    assert_eq!(m.revoke(at(NOW - DAY_MS)), Ok(true), "dated in the past: at once");
    assert_eq!(m.check(&who, NOW), Err(MembershipError::Revoked(who)));
    assert_eq!(m.revoked_at(&who), Some(NOW - DAY_MS));
}

/// When members' standings end, for a node to act on: certificates that
/// expire and revocations that take effect, each at its time.
#[test]
fn membership_lapses_in_time_order() {
    let mut m = Membership::new(charter(2)).unwrap();
    let [a, b, _] = AUTHORITIES;
    let [expiring, revoked, both] = [1, 2, 3].map(|n| identity(n).public());
    let ends = |member, not_after_ms| certificate(&CertificateBody { not_after_ms, ..body_for(member) }, &[a, b]);
    m.add_certificate(ends(expiring, NOW + 2 * HOUR_MS), NOW).unwrap();
    m.add_certificate(ends(revoked, NOW + 365 * DAY_MS), NOW).unwrap();
    // Revoked before its certificate ends: the end is no news.
    m.add_certificate(ends(both, NOW + 3 * HOUR_MS), NOW).unwrap();
    for (who, at) in [(revoked, NOW + HOUR_MS), (both, NOW + HOUR_MS)] {
        let body = RevocationBody { revoked_at_ms: at, ..revocation_body(who) };
        assert_eq!(m.revoke(revocation(&body, &[a, b])), Ok(true));
    }
    let mut together = vec![revoked, both];
    together.sort();

    assert_eq!(m.next_lapse_after(NOW), Some(NOW + HOUR_MS));
    assert_eq!(m.lapsed_between(NOW, NOW + HOUR_MS - 1), Vec::<PublicKey>::new());
    assert_eq!(m.lapsed_between(NOW, NOW + HOUR_MS), together);
    assert_eq!(m.next_lapse_after(NOW + HOUR_MS), Some(NOW + 2 * HOUR_MS));
    assert_eq!(m.lapsed_between(NOW + HOUR_MS, NOW + 2 * HOUR_MS), [expiring]);
    assert_eq!(m.next_lapse_after(NOW + 2 * HOUR_MS), Some(NOW + 3 * HOUR_MS));
    assert_eq!(m.lapsed_between(NOW + 2 * HOUR_MS, NOW + 3 * HOUR_MS), Vec::<PublicKey>::new());
    assert_eq!(m.lapsed_between(NOW, NOW + 400 * DAY_MS).len(), 3, "each member once");
    assert_eq!(m.next_lapse_after(NOW + 365 * DAY_MS), None);
}

#[test]
fn membership_add_certificate_checks_it() {
    let mut m = Membership::new(charter(2)).unwrap();
    let who = member();
    let [a, b, _] = AUTHORITIES;
    let wrong = CertificateBody { federation: "us-commercial".into(), ..body_for(who) };
    assert_eq!(
        m.add_certificate(certificate(&wrong, &[a, b]), NOW),
        Err(MembershipError::WrongFederation { expected: FEDERATION.into(), got: "us-commercial".into() })
    );
    let future = CertificateBody { not_before_ms: NOW + 1, ..body_for(who) };
    assert_eq!(
        m.add_certificate(certificate(&future, &[a, b]), NOW),
        Err(MembershipError::NotYetValid { not_before_ms: NOW + 1, now_ms: NOW })
    );
    let past = CertificateBody { not_before_ms: NOW - 2 * DAY_MS, not_after_ms: NOW - DAY_MS, ..body_for(who) };
    assert_eq!(
        m.add_certificate(certificate(&past, &[a, b]), NOW),
        Err(MembershipError::Expired { not_after_ms: NOW - DAY_MS, now_ms: NOW })
    );
    assert_eq!(m.check(&who, NOW), Err(MembershipError::NoCertificate(who)));
}

#[test]
fn membership_attested_labels() {
    let mut m = Membership::new(charter(2)).unwrap();
    let [a, b, c] = AUTHORITIES;
    let valid = identity(1).public();
    let expiring = identity(2).public();
    let revoked = identity(3).public();
    let unknown = identity(4).public();

    m.add_certificate(certificate(&body_for(valid), &[a, b]), NOW).unwrap();
    let short = CertificateBody { not_after_ms: NOW + HOUR_MS, ..body_for(expiring) };
    m.add_certificate(certificate(&short, &[b, c]), NOW).unwrap();
    m.add_certificate(certificate(&body_for(revoked), &[a, c]), NOW).unwrap();
    assert_eq!(m.attested_labels(&revoked, NOW), cert_labels());
    assert_eq!(m.revoke(revocation(&revocation_body(revoked), &[a, b])), Ok(true));

    assert_eq!(m.attested_labels(&valid, NOW), cert_labels());
    assert_eq!(m.attested_labels(&expiring, NOW), cert_labels());
    assert_eq!(m.attested_labels(&expiring, NOW + HOUR_MS), BTreeSet::new(), "expired at not_after");
    assert_eq!(
        m.check(&expiring, NOW + HOUR_MS),
        Err(MembershipError::Expired { not_after_ms: NOW + HOUR_MS, now_ms: NOW + HOUR_MS })
    );
    assert_eq!(m.attested_labels(&revoked, NOW), BTreeSet::new());
    assert_eq!(m.attested_labels(&unknown, NOW), BTreeSet::new());

    // A certificate without labels attests none.
    let plain = identity(5).public();
    let body = CertificateBody { labels: BTreeSet::new(), ..body_for(plain) };
    m.add_certificate(certificate(&body, &[a, b]), NOW).unwrap();
    assert_eq!(m.check(&plain, NOW), Ok(()));
    assert_eq!(m.attested_labels(&plain, NOW), BTreeSet::new());
}

#[test]
fn membership_keeps_the_longest_certificate() {
    let mut m = Membership::new(charter(2)).unwrap();
    let who = member();
    let [a, b, _] = AUTHORITIES;
    let long = CertificateBody { not_after_ms: NOW + 10 * DAY_MS, ..body_for(who) };
    let short =
        CertificateBody { not_after_ms: NOW + DAY_MS, labels: ["soc2".to_owned()].into(), serial: 8, ..body_for(who) };
    m.add_certificate(certificate(&long, &[a, b]), NOW).unwrap();
    assert_eq!(m.add_certificate(certificate(&short, &[a, b]), NOW), Ok(()));
    assert_eq!(m.attested_labels(&who, NOW), cert_labels(), "the shorter certificate did not replace the longer");
    assert_eq!(m.check(&who, NOW + 2 * DAY_MS), Ok(()));
}

#[test]
fn open_federation() {
    let [a, _, _] = AUTHORITIES;
    let open = Charter { name: FEDERATION.into(), authorities: vec![authority(0).public()], threshold: 0 };
    assert!(open.is_open());
    let mut m = Membership::new(open).unwrap();
    let anyone = identity(42).public();

    assert_eq!(m.check(&anyone, NOW), Ok(()), "no certificate needed");
    assert_eq!(m.attested_labels(&anyone, NOW), BTreeSet::new());

    // A "certificate" with no authority signature is refused and attests nothing.
    assert_eq!(m.add_certificate(certificate(&body_for(anyone), &[]), NOW), Err(not_enough(0, 1)));
    assert_eq!(m.add_certificate(certificate(&body_for(anyone), &[OUTSIDER, MEMBER]), NOW), Err(not_enough(0, 1)));
    assert_eq!(m.attested_labels(&anyone, NOW), BTreeSet::new());
    assert_eq!(m.check(&anyone, NOW), Ok(()));

    // A revocation still needs an authority's signature, and then holds.
    assert_eq!(m.revoke(revocation(&revocation_body(anyone), &[])), Err(not_enough(0, 1)));
    assert_eq!(m.revoke(revocation(&revocation_body(anyone), &[OUTSIDER])), Err(not_enough(0, 1)));
    assert_eq!(m.check(&anyone, NOW), Ok(()));
    assert_eq!(m.revoke(revocation(&revocation_body(anyone), &[a])), Ok(true));
    assert_eq!(m.check(&anyone, NOW), Err(MembershipError::Revoked(anyone)));
    assert_eq!(m.check(&identity(43).public(), NOW), Ok(()));

    // With no authorities at all, everyone is in and nothing is attested.
    let mut bare = Membership::new(Charter { name: FEDERATION.into(), authorities: vec![], threshold: 0 }).unwrap();
    assert_eq!(bare.check(&anyone, NOW), Ok(()));
    assert_eq!(bare.add_certificate(certificate(&body_for(anyone), &[a]), NOW), Err(not_enough(0, 1)));
    assert_eq!(bare.attested_labels(&anyone, NOW), BTreeSet::new());
}

/// In an open federation (threshold 0) anyone may take part, but a label is
/// attested only by a certificate that at least one charter authority signed.
#[test]
fn open_federation_attests_labels_only_with_an_authority_signature() {
    let open = Charter { name: FEDERATION.into(), authorities: vec![authority(0).public()], threshold: 0 };
    let mut m = Membership::new(open).unwrap();
    let who = member();
    assert_eq!(m.attested_labels(&who, NOW), BTreeSet::new(), "nothing attested before a certificate");
    assert_eq!(m.add_certificate(certificate(&body_for(who), &[AUTHORITIES[0]]), NOW), Ok(()));
    assert!(!m.attested_labels(&who, NOW).is_empty(), "an authority-signed certificate attests its labels");
}
