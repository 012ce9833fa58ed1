//! A closed federation of real daemons, 2 of 3 authorities: members trade;
//! a node with no certificate, one signature, a forged signature or an
//! expired certificate gets no offer accepted, no hold (a member refuses its
//! proposal with NOT_A_MEMBER), and is disconnected; a certificate that
//! expires after admission ends the member's trading within seconds; a
//! revocation takes effect everywhere within seconds while the contracts
//! made before it stay and verify; a self-declared label never satisfies an
//! attested-label constraint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fulcrum_e2e::{Daemon, offer_file, wait_for};
use fulcrum_node::charter::{render_certificate, render_charter, render_revocation};
use fulcrum_protocol::Limits;
use fulcrum_protocol::keys::{Identity, PublicKey};
use fulcrum_protocol::membership::{CertificateBody, Charter, MemberCertificate, Revocation, RevocationBody};
use fulcrum_protocol::offer::Country;
use serde_json::Value;

const FEDERATION: &str = "closed-eu";
const DAY_MS: u64 = 24 * 3_600_000;

fn authority(n: u8) -> Identity {
    Identity::from_secret_bytes(&[100 + n; 32])
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Writes the charter: authorities 1, 2 and 3, any two admit or revoke.
fn charter(root: &Path) -> PathBuf {
    let charter = Charter {
        name: FEDERATION.into(),
        authorities: (1..=3).map(|n| authority(n).public()).collect(),
        threshold: 2,
    };
    let path = root.join("federation.toml");
    std::fs::write(&path, render_charter(&charter, &[])).unwrap();
    path
}

/// How a test certificate is made.
struct CertSpec<'a> {
    signers: &'a [u8],
    labels: &'a [&'a str],
    not_after_ms: u64,
    forge: bool,
}

impl<'a> CertSpec<'a> {
    /// Signed by authorities 1 and 3, valid for a year.
    fn valid(labels: &'a [&'a str]) -> CertSpec<'a> {
        CertSpec { signers: &[1, 3], labels, not_after_ms: now_ms() + 365 * DAY_MS, forge: false }
    }
}

fn certificate(d: &Daemon, spec: &CertSpec<'_>) -> PathBuf {
    let body = CertificateBody {
        federation: FEDERATION.into(),
        member: PublicKey::from_hex(&d.node_key()).unwrap(),
        organisation: format!("{} GmbH", d.name),
        country: Country::parse("DE").unwrap(),
        labels: spec.labels.iter().map(|l| (*l).to_owned()).collect::<BTreeSet<_>>(),
        not_before_ms: now_ms() - 400 * DAY_MS,
        not_after_ms: spec.not_after_ms,
        serial: 1,
    };
    let bytes = body.encode();
    let mut signatures: Vec<_> =
        spec.signers.iter().map(|n| MemberCertificate::sign_request(&authority(*n), &bytes)).collect();
    if spec.forge {
        signatures[1].1[0] ^= 0x01;
    }
    let cert = MemberCertificate::assemble(bytes, signatures, &Limits::default()).unwrap();
    let path = d.dir.join("member.cert");
    std::fs::write(&path, render_certificate(&cert)).unwrap();
    path
}

/// A daemon of the closed federation, with a certificate made by `spec`.
fn member(root: &Path, name: &str, bootstrap: &[String], spec: Option<&CertSpec<'_>>) -> Daemon {
    let charter = root.join("federation.toml");
    let env: Vec<(&str, &str)> = vec![
        ("FULCRUM_FEDERATION", FEDERATION),
        ("FULCRUM_CHARTER", charter.to_str().unwrap()),
        ("FULCRUM_REPLY_TIMEOUT", "1s"),
        ("FULCRUM_METRICS_LISTEN", ""),
    ];
    let mut d = Daemon::init(root, name, bootstrap, &env);
    if let Some(spec) = spec {
        let cert = certificate(&d, spec);
        d.extra_env.push(("FULCRUM_CERTIFICATE".into(), cert.to_str().unwrap().into()));
    }
    d.spawn();
    d
}

fn offers(d: &Daemon, args: &[&str]) -> Vec<String> {
    let mut all = vec!["offers", "list"];
    all.extend_from_slice(args);
    let v = d.ctl_json(&all).unwrap_or(Value::Null);
    let mut ids: Vec<String> = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|o| o["offer_id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

fn publish(d: &Daemon, root: &Path, offer_id: &str) {
    publish_at(d, root, offer_id, "0.40");
}

fn publish_at(d: &Daemon, root: &Path, offer_id: &str, price: &str) {
    let file = offer_file(root, offer_id, "DE", 10, price);
    let out = d.ctl(&["offers", "publish", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}: {}", d.name, String::from_utf8_lossy(&out.stderr));
}

fn place(d: &Daemon) -> std::process::Output {
    d.ctl(&["--json", "place", "--units", "1", "--vcpu", "8", "--memory-mib", "16384", "--duration", "2h"])
}

fn connected_peer_ids(d: &Daemon) -> Vec<String> {
    let v = d.ctl_json(&["peers"]).unwrap_or(Value::Null);
    v.as_array().cloned().unwrap_or_default().iter().filter_map(|p| p["peer_id"].as_str().map(str::to_owned)).collect()
}

#[test]
fn only_members_with_valid_certificates_trade() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    charter(root);
    let provider = member(root, "provider", &[], Some(&CertSpec::valid(&["iso:27001", "gaia-x:level-2"])));
    let boot = vec![provider.addr()];
    let consumer = member(root, "consumer", &boot, Some(&CertSpec::valid(&[])));
    // A member whose certificate attests nothing: its iso:27001 is its own word.
    let plain = member(root, "plain", &boot, Some(&CertSpec::valid(&[])));
    let year = now_ms() + 365 * DAY_MS;
    let outsiders = [
        member(root, "uncertified", &boot, None),
        member(
            root,
            "one-signature",
            &boot,
            Some(&CertSpec { signers: &[2], labels: &[], not_after_ms: year, forge: false }),
        ),
        member(
            root,
            "forged",
            &boot,
            Some(&CertSpec { signers: &[1, 2], labels: &[], not_after_ms: year, forge: true }),
        ),
        member(
            root,
            "expired",
            &boot,
            Some(&CertSpec { signers: &[1, 2], labels: &[], not_after_ms: now_ms() - DAY_MS, forge: false }),
        ),
    ];
    for o in &outsiders {
        let status = o.ctl_json(&["status"]).unwrap();
        assert_ne!(status["membership"].as_str(), Some("member"), "{}: {status}", o.name);
    }
    assert_eq!(consumer.ctl_json(&["status"]).unwrap()["membership"].as_str(), Some("member"));

    publish(&provider, root, "member-offer");
    publish(&plain, root, "plain-offer");
    for (i, o) in outsiders.iter().enumerate() {
        publish(o, root, &format!("outsider-{i}"));
    }

    // Members' offers reach the consumer, outsiders' never do.
    let both = vec!["member-offer".to_owned(), "plain-offer".to_owned()];
    let seen = wait_for(Duration::from_secs(30), || (offers(&consumer, &[]) == both).then_some(()));
    assert!(seen.is_some(), "consumer lists {:?}:\n{}", offers(&consumer, &[]), consumer.log());
    // Only the provider's label is attested.
    assert_eq!(offers(&consumer, &["--label", "iso:27001", "--attested"]), ["member-offer"]);
    assert_eq!(offers(&consumer, &["--label", "iso:27001"]), both);

    // A member trades.
    let placed = place(&consumer);
    assert!(placed.status.success(), "{}\n{}", String::from_utf8_lossy(&placed.stderr), consumer.log());

    // Outsiders get no hold: the provider refuses them (or has already cut them off).
    for o in &outsiders {
        let out = place(o);
        assert!(!out.status.success(), "{} got a contract", o.name);
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(offers(&consumer, &[]), both, "an outsider's offer got through");
    // The one contract made is with a member (both members offer at one price).
    let sold: usize = [&provider, &plain]
        .iter()
        .map(|d| d.ctl_json(&["contracts", "list"]).unwrap().as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(sold, 1);

    // And they are disconnected by the members.
    let gone = wait_for(Duration::from_secs(40), || {
        let peers = connected_peer_ids(&provider);
        outsiders.iter().all(|o| !peers.contains(&o.peer_id)).then_some(())
    });
    assert!(gone.is_some(), "provider still connected to outsiders: {:?}", connected_peer_ids(&provider));
    assert!(provider.log().contains("not a member of the federation"));

    // A newcomer without a certificate that proposes while still connected
    // is refused by the provider itself: a signed NOT_A_MEMBER, and a strike.
    let newcomer = member(root, "newcomer", &boot, None);
    let attested = ["--label", "iso:27001", "--attested"];
    let seen = wait_for(Duration::from_secs(8), || (offers(&newcomer, &attested) == ["member-offer"]).then_some(()));
    assert!(seen.is_some(), "newcomer lists {:?}:\n{}", offers(&newcomer, &attested), newcomer.log());
    let sold = sold_by(&provider);
    let mut args = vec!["--json", "place", "--units", "1", "--vcpu", "8", "--memory-mib", "16384", "--duration", "2h"];
    args.extend_from_slice(&attested);
    let out = newcomer.ctl(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "the newcomer got a contract: {stdout}");
    assert!(stdout.contains("not-a-member"), "the placement failed otherwise: {stdout}\n{}", newcomer.log());
    let refused = provider
        .log()
        .lines()
        .any(|l| l.contains("proposal from a non-member") && l.contains(newcomer.peer_id.as_str()));
    assert!(refused, "the provider did not refuse the newcomer's proposal:\n{}", provider.log());
    assert_eq!((sold_by(&provider), sold_by(&newcomer)), (sold, 0));
}

/// Contracts a node is a party to, either role.
fn sold_by(d: &Daemon) -> usize {
    d.ctl_json(&["contracts", "list"]).unwrap().as_array().map_or(0, Vec::len)
}

/// A member admitted with a certificate that ends ~35 s later: until then
/// it trades; when it ends, a member that places at once gets nothing (its
/// offer is dropped before planning), one that only watches drops the offer
/// from its book on its own timer within seconds, and both disconnect it;
/// the contract made before stays.
#[test]
fn a_certificate_that_expires_after_admission_ends_trading() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    charter(root);
    let not_after_ms = now_ms() + 35_000;
    let spec = CertSpec { signers: &[1, 2], labels: &[], not_after_ms, forge: false };
    let provider = member(root, "provider", &[], Some(&spec));
    let boot = vec![provider.addr()];
    let consumer = member(root, "consumer", &boot, Some(&CertSpec::valid(&[])));
    let watcher = member(root, "watcher", &boot, Some(&CertSpec::valid(&[])));
    assert_eq!(provider.ctl_json(&["status"]).unwrap()["membership"].as_str(), Some("member"));
    publish(&provider, root, "short-lived");

    // Admitted: its offer is taken and a contract is made on it.
    for d in [&consumer, &watcher] {
        let seen = wait_for(Duration::from_secs(20), || (offers(d, &[]) == ["short-lived"]).then_some(()));
        assert!(seen.is_some(), "{} lists {:?}:\n{}", d.name, offers(d, &[]), d.log());
    }
    let placed = place(&consumer);
    assert!(placed.status.success(), "{}\n{}", String::from_utf8_lossy(&placed.stderr), consumer.log());
    assert!(now_ms() < not_after_ms, "the contract was made after the certificate ended: the test ran too slowly");
    assert_eq!(offers(&watcher, &[]), ["short-lived"]);

    // It ends. Nothing more is placed on its offer, at once.
    std::thread::sleep(Duration::from_millis(not_after_ms.saturating_sub(now_ms()) + 200));
    let out = place(&consumer);
    assert!(!out.status.success(), "a contract with an expired member: {}", String::from_utf8_lossy(&out.stdout));
    assert!(offers(&consumer, &[]).is_empty(), "{}", consumer.log());
    // The watcher drops its offer within seconds, and both disconnect it.
    let dropped = wait_for(Duration::from_secs(15), || offers(&watcher, &[]).is_empty().then_some(()));
    assert!(dropped.is_some(), "watcher still lists {:?}:\n{}", offers(&watcher, &[]), watcher.log());
    let noticed = wait_for(Duration::from_secs(2), || watcher.log().contains("membership ended").then_some(()));
    assert!(noticed.is_some(), "{}", watcher.log());
    for d in [&consumer, &watcher] {
        let gone =
            wait_for(Duration::from_secs(20), || (!connected_peer_ids(d).contains(&provider.peer_id)).then_some(()));
        assert!(gone.is_some(), "{} still connected to the expired member:\n{}", d.name, d.log());
    }
    assert_eq!(provider.ctl_json(&["status"]).unwrap()["membership"].as_str(), Some("expired"));

    // The contract made before stays, on both sides.
    assert_eq!(sold_by(&consumer), 1, "{}", consumer.log());
    assert_eq!(sold_by(&provider), 1, "{}", provider.log());
}

#[test]
fn a_revocation_takes_effect_everywhere_and_old_contracts_stay() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    charter(root);
    let provider = member(root, "provider", &[], Some(&CertSpec::valid(&[])));
    let boot = vec![provider.addr()];
    let consumer = member(root, "consumer", &boot, Some(&CertSpec::valid(&[])));
    let witness = member(root, "witness", &[consumer.addr()], Some(&CertSpec::valid(&[])));
    publish(&provider, root, "to-be-revoked");
    publish_at(&witness, root, "witness-offer", "0.50");
    let both = ["to-be-revoked", "witness-offer"];
    let seen = wait_for(Duration::from_secs(30), || (offers(&consumer, &[]) == both).then_some(()));
    assert!(seen.is_some(), "{}", consumer.log());
    let seen = wait_for(Duration::from_secs(30), || offers(&provider, &[]).contains(&both[1].to_owned()).then_some(()));
    assert!(seen.is_some(), "{}", provider.log());
    let placed = consumer.ctl(&[
        "--json",
        "place",
        "--units",
        "1",
        "--vcpu",
        "8",
        "--memory-mib",
        "16384",
        "--duration",
        "2h",
        "--max-unit-price",
        "0.45",
    ]);
    assert!(placed.status.success(), "{}", String::from_utf8_lossy(&placed.stderr));

    // Two authorities revoke the provider; the witness hands it to the federation.
    let body = RevocationBody {
        federation: FEDERATION.into(),
        member: PublicKey::from_hex(&provider.node_key()).unwrap(),
        revoked_at_ms: now_ms(),
        reason: "left the federation".into(),
    };
    let bytes = body.encode();
    let signatures = vec![Revocation::sign_body(&authority(2), &bytes), Revocation::sign_body(&authority(3), &bytes)];
    let revocation = Revocation::assemble(bytes, signatures).unwrap();
    let file = root.join("revocation.toml");
    std::fs::write(&file, render_revocation(&revocation)).unwrap();
    let out = witness.ctl(&["federation", "revoke", "publish", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Within seconds the consumer drops the provider's offers and refuses new ones.
    let dropped = wait_for(Duration::from_secs(15), || (offers(&consumer, &[]) == ["witness-offer"]).then_some(()));
    assert!(dropped.is_some(), "consumer still lists {:?}:\n{}", offers(&consumer, &[]), consumer.log());
    publish(&provider, root, "after-revocation");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(offers(&consumer, &[]), ["witness-offer"]);
    // The revoked provider gets no hold from a member either.
    let out = place(&provider);
    assert!(!out.status.success(), "the revoked node got a contract: {}", String::from_utf8_lossy(&out.stdout));

    // The contract made before stays in the consumer's log and verifies.
    let contracts = consumer.ctl_json(&["contracts", "list"]).unwrap();
    assert_eq!(contracts.as_array().map(Vec::len), Some(1), "{contracts}");
    let report = consumer.ctl_json(&["audit", "verify"]).unwrap();
    assert!(report["first_failure"].is_null(), "{report}");
    assert!(report["revocations"].as_u64() >= Some(1), "{report}");

    // A restart keeps the revocation (it is in the log).
    let mut consumer = consumer;
    consumer.terminate();
    consumer.spawn();
    std::thread::sleep(Duration::from_secs(2));
    assert!(!offers(&consumer, &[]).contains(&"to-be-revoked".to_owned()));
    assert!(!offers(&consumer, &[]).contains(&"after-revocation".to_owned()));
}
