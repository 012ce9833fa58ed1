//! A peer's certificate exchange is read with bounded work: every member
//! once, and no further than a few forged certificates. (One exchange of
//! 13 MB, 2,000 certificates each carrying 64 well-formed wrong signatures,
//! used to cost the daemon's event loop 128,000 signature checks, some five
//! seconds.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use fulcrum_node::charter::render_charter;
use fulcrum_node::config::NodeConfig;
use fulcrum_node::members::Members;
use fulcrum_proto::v1 as wire;
use fulcrum_protocol::Limits;
use fulcrum_protocol::envelope::{Kind, sign_detached};
use fulcrum_protocol::keys::{Identity, PublicKey};
use fulcrum_protocol::membership::{CertificateBody, Charter};
use fulcrum_protocol::offer::Country;
use prost::Message as _;

const NOW: u64 = 1_790_000_000_000;

fn authorities() -> Vec<Identity> {
    (10..13).map(|b| Identity::from_secret_bytes(&[b; 32])).collect()
}

/// A member of a closed federation, 2 of the 3 authorities.
fn member(dir: &std::path::Path) -> Members {
    let charter =
        Charter { name: "dev".into(), authorities: authorities().iter().map(Identity::public).collect(), threshold: 2 };
    let path = dir.join("federation.toml");
    std::fs::write(&path, render_charter(&charter, &[])).unwrap();
    let config = NodeConfig { charter: Some(path), ..NodeConfig::default() };
    Members::load(&config, Identity::from_secret_bytes(&[4; 32]).public(), &Limits::default(), NOW).unwrap()
}

fn body(n: u32) -> (PublicKey, Vec<u8>) {
    let mut secret = [9u8; 32];
    secret[..4].copy_from_slice(&n.to_le_bytes());
    let member = Identity::from_secret_bytes(&secret).public();
    let body = CertificateBody {
        federation: "dev".into(),
        member,
        organisation: "Example Cloud".into(),
        country: Country::parse("DE").unwrap(),
        labels: Default::default(),
        not_before_ms: NOW - 1,
        not_after_ms: NOW + 3_600_000,
        serial: u64::from(n),
    };
    (member, body.encode())
}

fn signature(authority: &Identity, signature: [u8; 64]) -> wire::AuthoritySignature {
    wire::AuthoritySignature { authority: authority.public().to_bytes().to_vec(), signature: signature.to_vec() }
}

/// A certificate signed by the first two authorities.
fn valid(n: u32) -> (PublicKey, wire::MemberCertificate) {
    let (member, body) = body(n);
    let signatures =
        authorities()[..2].iter().map(|a| signature(a, sign_detached(a, Kind::MemberCertificate, &body))).collect();
    (member, wire::MemberCertificate { body, signatures })
}

/// A certificate carrying one authority's well-formed signature of other
/// bytes, `copies` times.
fn forged(n: u32, copies: usize) -> wire::MemberCertificate {
    let (_, body) = body(n);
    let a = &authorities()[0];
    let wrong = sign_detached(a, Kind::MemberCertificate, b"other bytes");
    wire::MemberCertificate { body, signatures: vec![signature(a, wrong); copies] }
}

fn exchange(certificates: Vec<wire::MemberCertificate>) -> Vec<u8> {
    wire::MembershipExchange { certificates, ..Default::default() }.encode_to_vec()
}

#[test]
fn an_exchange_of_forged_certificates_is_cut_short_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut members = member(dir.path());
    let (late, cert) = valid(1_000);
    let mut certificates: Vec<_> = (0..2_000).map(|n| forged(n, 64)).collect();
    certificates.push(cert);
    let refused = members.on_exchange(&exchange(certificates), NOW);
    assert!(refused.is_err(), "{refused:?}");
    // Reading stopped at the forgeries: the valid certificate after them was never reached.
    assert!(members.check(&late, NOW).is_err());
    assert_eq!(members.known(), 0);
}

#[test]
fn a_few_bad_certificates_among_good_ones_do_not_cost_the_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut members = member(dir.path());
    let good: Vec<_> = (0..3).map(valid).collect();
    let mut certificates: Vec<_> = (100..115).map(|n| forged(n, 64)).collect();
    certificates.extend(good.iter().map(|(_, c)| c.clone()));
    assert!(members.on_exchange(&exchange(certificates), NOW).is_ok());
    for (member, _) in &good {
        assert!(members.check(member, NOW).is_ok());
    }
    assert_eq!(members.known(), 3);
}
