//! Key rotation with real daemons in a closed federation: `fulcrumd key
//! rotate` on a stopped provider (refused while it runs) hands its identity
//! to a new key; the provider comes back with a new peer id, still a member
//! on its old certificate; the consumer follows the identity (the old key's
//! offers are dropped, the new key's accepted) and makes a new contract with
//! it; the units of the old key's contracts stay committed; either side can
//! still terminate a contract the old key made (the new key speaks for it,
//! and the other side logs the rotation before that termination); both logs
//! verify, the provider's across the rotation, and the old contracts are
//! still listed on both sides.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use fulcrum_e2e::{Daemon, fulcrumctl, fulcrumd, offer_file, wait_for};
use fulcrum_node::charter::{render_certificate, render_charter};
use fulcrum_node::daemon::ExportSnapshot;
use fulcrum_node::store::checkpoints::read_checkpoints;
use fulcrum_node::store::export::write_export;
use fulcrum_node::store::log::read_log;
use fulcrum_protocol::Limits;
use fulcrum_protocol::audit::verify_export;
use fulcrum_protocol::keys::{Identity, PublicKey};
use fulcrum_protocol::membership::{CertificateBody, Charter, MemberCertificate};
use fulcrum_protocol::offer::Country;
use serde_json::Value;

const FEDERATION: &str = "closed-rotation";
const DAY_MS: u64 = 24 * 3_600_000;

fn authority(n: u8) -> Identity {
    Identity::from_secret_bytes(&[150 + n; 32])
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The charter (two authorities, both needed) and the environment every
/// daemon and `fulcrumd key rotate` run with.
fn federation(root: &Path) -> Vec<(String, String)> {
    let charter = Charter {
        name: FEDERATION.into(),
        authorities: vec![authority(1).public(), authority(2).public()],
        threshold: 2,
    };
    let path = root.join("federation.toml");
    std::fs::write(&path, render_charter(&charter, &[])).unwrap();
    vec![
        ("FULCRUM_FEDERATION".into(), FEDERATION.into()),
        ("FULCRUM_CHARTER".into(), path.to_str().unwrap().into()),
        ("FULCRUM_CHECKPOINT_INTERVAL".into(), "1s".into()),
        ("FULCRUM_METRICS_LISTEN".into(), String::new()),
    ]
}

/// A member certificate for the daemon's key as it is now.
fn certify(d: &mut Daemon) {
    let body = CertificateBody {
        federation: FEDERATION.into(),
        member: PublicKey::from_hex(&d.node_key()).unwrap(),
        organisation: format!("{} GmbH", d.name),
        country: Country::parse("DE").unwrap(),
        labels: BTreeSet::new(),
        not_before_ms: now_ms() - DAY_MS,
        not_after_ms: now_ms() + 365 * DAY_MS,
        serial: 1,
    };
    let bytes = body.encode();
    let signatures = (1..=2).map(|n| MemberCertificate::sign_request(&authority(n), &bytes)).collect();
    let cert = MemberCertificate::assemble(bytes, signatures, &Limits::default()).unwrap();
    let path = d.dir.join("member.cert");
    std::fs::write(&path, render_certificate(&cert)).unwrap();
    d.extra_env.push(("FULCRUM_CERTIFICATE".into(), path.to_str().unwrap().into()));
}

fn member(root: &Path, name: &str, bootstrap: &[String], env: &[(String, String)]) -> Daemon {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut d = Daemon::init(root, name, bootstrap, &env);
    certify(&mut d);
    d.spawn();
    d
}

fn rotate(d: &Daemon) -> Output {
    let mut cmd = Command::new(fulcrumd());
    cmd.args(["key", "rotate", "--data-dir"]).arg(&d.dir);
    for (k, v) in &d.extra_env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// (offer_id, provider key) of every offer the daemon lists.
fn offers(d: &Daemon) -> Vec<(String, String)> {
    let v = d.ctl_json(&["offers", "list"]).unwrap_or(Value::Null);
    let mut all: Vec<(String, String)> = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|o| (o["offer_id"].as_str().unwrap().to_owned(), o["provider"].as_str().unwrap().to_owned()))
        .collect();
    all.sort();
    all
}

fn place(d: &Daemon) -> Output {
    d.ctl(&["--json", "place", "--units", "1", "--vcpu", "8", "--memory-mib", "16384", "--duration", "2h"])
}

/// contract id -> (role, provider key) of every contract the daemon lists.
fn contracts(d: &Daemon) -> Vec<(String, String, String)> {
    let v = d.ctl_json(&["contracts", "list"]).unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    let mut all: Vec<(String, String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let id = c["contract_id"].as_str().unwrap().to_owned();
            (id, c["role"].as_str().unwrap().to_owned(), c["terms"]["provider"].as_str().unwrap().to_owned())
        })
        .collect();
    all.sort();
    all
}

fn verified(d: &Daemon) -> Value {
    let report = d.ctl_json(&["audit", "verify"]).unwrap_or_else(|e| panic!("{}: {e}\n{}", d.name, d.log()));
    assert!(report["first_failure"].is_null(), "{}: {report}", d.name);
    report
}

fn kept_old_keys(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("node.key.old-"))
        .collect()
}

#[test]
fn peers_follow_a_rotated_key_and_old_contracts_stay_verifiable() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let env = federation(root);
    let mut provider = member(root, "provider", &[], &env);
    let consumer = member(root, "consumer", &[provider.addr()], &env);
    let old_key = provider.node_key();
    // Three units: two sold before the rotation, one after, none more.
    let offer = offer_file(root, "fra1-c8m32", "DE", 3, "0.42");
    assert!(provider.ctl(&["offers", "publish", offer.to_str().unwrap()]).status.success());
    let seen = wait_for(Duration::from_secs(30), || {
        (offers(&consumer) == [("fra1-c8m32".into(), old_key.clone())]).then_some(())
    });
    assert!(seen.is_some(), "the consumer lists {:?}:\n{}", offers(&consumer), consumer.log());
    for _ in 0..2 {
        let out = place(&consumer);
        assert!(out.status.success(), "{}\n{}", stderr(&out), consumer.log());
    }
    let before = contracts(&consumer);
    assert_eq!(before.len(), 2);
    assert!(before.iter().all(|(_, _, key)| *key == old_key), "{before:?}");

    // Not while the node runs.
    let out = rotate(&provider);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("stop fulcrumd first"), "{}", stderr(&out));

    // Rotated on the stopped node: a new key and peer id, the old key kept privately.
    assert_eq!(provider.terminate(), Some(0));
    let out = rotate(&provider);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let new_key = provider.node_key();
    assert_ne!(new_key, old_key);
    assert!(stdout.contains(&new_key) && stdout.contains(&old_key), "{stdout}");
    let new_peer_id =
        stdout.lines().find_map(|l| l.strip_prefix("peer id")).and_then(|l| l.split_whitespace().next()).unwrap();
    assert_ne!(new_peer_id, provider.peer_id);
    let kept = kept_old_keys(&provider.dir);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::metadata(&kept[0]).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(fulcrum_node::config::load_key(&kept[0]).unwrap().public().to_string(), old_key);
    // The stopped node's files already verify across the rotation: the new
    // key signed a checkpoint covering the rotation record.
    let (records, _) = read_log(&provider.dir.join("agreements.log")).unwrap();
    let notes = read_checkpoints(&provider.dir.join("checkpoints")).unwrap();
    let snapshot = ExportSnapshot {
        node_key: PublicKey::from_hex(&old_key).unwrap(),
        key_path: provider.dir.join("node.key"),
        federation: FEDERATION.into(),
        records: records.len() as u64,
        checkpoints: notes.len() as u64,
        log_path: provider.dir.join("agreements.log"),
        checkpoints_path: provider.dir.join("checkpoints"),
    };
    let report = verify_export(write_export(&snapshot, Vec::new()).unwrap().as_slice());
    assert!(report.is_ok(), "{report}");
    assert_eq!((report.rotations, report.node_key_now.as_deref()), (1, Some(new_key.as_str())));

    // A rotation interrupted after its record was logged, before the new key
    // was installed: the node refuses to start with the old key, and the
    // command run again finishes it.
    let key_file = provider.dir.join("node.key");
    std::fs::copy(&key_file, provider.dir.join("node.key.next")).unwrap();
    std::fs::copy(&kept[0], &key_file).unwrap();
    let mut run = Command::new(fulcrumd());
    run.args(["run", "--data-dir"]).arg(&provider.dir).args(["--listen", "/ip4/127.0.0.1/tcp/0"]);
    for (k, v) in &provider.extra_env {
        run.env(k, v);
    }
    let out = run.output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("run 'fulcrumd key rotate' again"), "{}", stderr(&out));
    let out = rotate(&provider);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("finished an interrupted rotation"));
    assert_eq!(provider.node_key(), new_key);
    assert_eq!(kept_old_keys(&provider.dir).len(), 1);

    // Back with its new identity, on its old certificate: it dials the
    // consumer, which learns the rotation and follows it.
    provider.peer_id = new_peer_id.to_owned();
    provider.bootstrap = vec![consumer.addr()];
    provider.spawn();
    let status = provider.ctl_json(&["status"]).unwrap();
    assert_eq!(status["node_key"].as_str(), Some(new_key.as_str()));
    assert_eq!(status["membership"].as_str(), Some("member"), "{status}");
    assert!(provider.ctl(&["offers", "publish", offer.to_str().unwrap()]).status.success());
    let followed = wait_for(Duration::from_secs(30), || {
        (offers(&consumer) == [("fra1-c8m32".into(), new_key.clone())]).then_some(())
    });
    assert!(followed.is_some(), "the consumer lists {:?}:\n{}", offers(&consumer), consumer.log());

    // A new contract with the rotated provider, under its new key.
    let out = place(&consumer);
    assert!(out.status.success(), "{}\n{}\n{}", stderr(&out), consumer.log(), provider.log());
    let after = contracts(&consumer);
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(before.iter().all(|c| after.contains(c)), "the old contracts are still listed: {after:?}");
    assert!(after.iter().any(|(_, role, key)| role == "consumer" && *key == new_key), "{after:?}");
    // The provider lists all three as its own, and the old contracts' units
    // are still committed: the offer's three units are sold.
    let sold = contracts(&provider);
    assert_eq!(sold.len(), 3, "{sold:?}");
    assert!(sold.iter().all(|(_, role, _)| role == "provider"), "{sold:?}");
    let out = place(&consumer);
    assert!(!out.status.success(), "a fourth unit was sold: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(contracts(&provider).len(), 3);

    // Contracts of the old key end from either side: the rotated provider
    // terminates one, the consumer the other; each side records both.
    let state = |d: &Daemon, id: &str| {
        d.ctl_json(&["contracts", "show", id]).ok().and_then(|v| v["state"].as_str().map(str::to_owned))
    };
    let ended = |d: &Daemon, id: &str| {
        wait_for(Duration::from_secs(20), || (state(d, id).as_deref() == Some("terminated")).then_some(())).is_some()
    };
    let (first, second) = (&before[0].0, &before[1].0);
    let out = provider.ctl(&["contracts", "terminate", first, "--reason", "provider-maintenance"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(ended(&consumer, first), "the consumer took no termination from the new key:\n{}", consumer.log());
    let out = consumer.ctl(&["contracts", "terminate", second, "--reason", "customer-request"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(ended(&provider, second), "the rotated provider missed the termination:\n{}", provider.log());

    // Both logs verify: the provider's across the rotation.
    let report = verified(&provider);
    assert_eq!(report["rotations"].as_u64(), Some(1), "{report}");
    assert_eq!(report["node_key"].as_str(), Some(old_key.as_str()), "{report}");
    assert_eq!(report["node_key_now"].as_str(), Some(new_key.as_str()), "{report}");
    assert_eq!(report["contracts"].as_u64(), Some(3), "{report}");
    assert_eq!(report["terminations"].as_u64(), Some(2), "{report}");
    // The consumer's log holds the provider's rotation before the
    // termination its new key signed.
    let report = verified(&consumer);
    assert_eq!(report["contracts"].as_u64(), Some(3), "{report}");
    assert_eq!(report["terminations"].as_u64(), Some(2), "{report}");
    assert_eq!(report["successions"].as_u64(), Some(1), "{report}");
    // And offline, from an export.
    let file = root.join("provider.export");
    let out = provider.ctl(&["audit", "export", "--out", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = Command::new(fulcrumctl()).args(["--json", "audit", "verify", "--export"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    // A restart keeps the new identity and its membership.
    provider.terminate();
    provider.spawn();
    assert_eq!(provider.ctl_json(&["status"]).unwrap()["membership"].as_str(), Some("member"));
    assert_eq!(contracts(&provider).len(), 3);
    assert_eq!(state(&provider, first).as_deref(), Some("terminated"));
}
