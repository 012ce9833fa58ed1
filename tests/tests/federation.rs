//! Real daemons on loopback, driven through fulcrumctl: offers reach every
//! node, a late joiner pulls the whole book at once, and a placement ends up
//! as one contract in both logs with both signatures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fulcrum_e2e::{Daemon, offer_file, wait_for};
use serde_json::Value;

fn list(v: &Value, key: &str) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        other => other.get(key).and_then(Value::as_array).cloned().unwrap_or_default(),
    }
}

fn offer_ids(d: &Daemon) -> Vec<String> {
    let v = d.ctl_json(&["offers", "list"]).unwrap_or(Value::Null);
    let mut ids: Vec<String> =
        list(&v, "offers").iter().filter_map(|o| o.get("offer_id")?.as_str().map(str::to_owned)).collect();
    ids.sort();
    ids
}

fn contracts(d: &Daemon) -> Vec<Value> {
    list(&d.ctl_json(&["contracts", "list"]).unwrap_or(Value::Null), "contracts")
}

/// Starts `n` daemons, each bootstrapping from the first.
fn federation(root: &std::path::Path, n: usize) -> Vec<Daemon> {
    let first = Daemon::start(root, "node0", &[]);
    let boot = vec![first.addr()];
    let mut nodes = vec![first];
    for i in 1..n {
        nodes.push(Daemon::start(root, &format!("node{i}"), &boot));
    }
    nodes
}

#[test]
fn offers_reach_every_node_and_late_joiners_sync_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let nodes = federation(tmp.path(), 5);
    // Wait for the mesh to form before publishing.
    for d in &nodes {
        let ok = wait_for(Duration::from_secs(20), || {
            let s = d.ctl_json(&["status"]).ok()?;
            (s.get("connected_peers")?.as_u64()? >= 1).then_some(())
        });
        assert!(ok.is_some(), "{} never connected:\n{}", d.name, d.log());
    }
    let file = offer_file(tmp.path(), "fra1-c8m32", "DE", 10, "0.42");
    let out = nodes[2].ctl(&["offers", "publish", file.to_str().unwrap()]);
    assert!(out.status.success(), "publish failed: {}", String::from_utf8_lossy(&out.stderr));

    // 1. Published on one, listed on all others.
    for d in &nodes {
        let seen = wait_for(Duration::from_secs(20), || offer_ids(d).contains(&"fra1-c8m32".to_string()).then_some(()));
        assert!(seen.is_some(), "{} never saw the offer:\n{}", d.name, d.log());
    }
    let file2 = offer_file(tmp.path(), "par1-c8m32", "FR", 4, "0.40");
    assert!(nodes[4].ctl(&["offers", "publish", file2.to_str().unwrap()]).status.success());
    for d in &nodes {
        assert!(wait_for(Duration::from_secs(20), || (offer_ids(d).len() == 2).then_some(())).is_some());
    }

    // 2. A sixth daemon started later has the full book right after it connects.
    let late = Daemon::start(tmp.path(), "late", &[nodes[1].addr()]);
    let synced = wait_for(Duration::from_secs(10), || (offer_ids(&late).len() == 2).then_some(()));
    assert!(synced.is_some(), "late joiner has {:?}:\n{}", offer_ids(&late), late.log());

    // Withdrawal by the owner reaches everyone too.
    assert!(nodes[2].ctl(&["offers", "withdraw", "fra1-c8m32"]).status.success());
    for d in nodes.iter().chain(std::iter::once(&late)) {
        let gone = wait_for(Duration::from_secs(20), || (offer_ids(d) == ["par1-c8m32"]).then_some(()));
        assert!(gone.is_some(), "{} still lists {:?}", d.name, offer_ids(d));
    }
}

#[test]
fn a_placement_is_one_contract_in_both_logs_with_both_signatures() {
    let tmp = tempfile::tempdir().unwrap();
    let nodes = federation(tmp.path(), 3);
    let (provider, consumer) = (&nodes[1], &nodes[2]);
    let file = offer_file(tmp.path(), "ams1-c8m32", "NL", 6, "0.35");
    assert!(provider.ctl(&["offers", "publish", file.to_str().unwrap()]).status.success());
    assert!(wait_for(Duration::from_secs(20), || offer_ids(consumer).first().cloned()).is_some());

    let placed = consumer
        .ctl_json(&[
            "place",
            "--units",
            "4",
            "--vcpu",
            "8",
            "--memory-mib",
            "16384",
            "--country",
            "NL,DE",
            "--duration",
            "24h",
        ])
        .unwrap_or_else(|e| panic!("place failed: {e}\n{}", consumer.log()));
    let made = list(&placed, "contracts");
    assert_eq!(made.len(), 1, "{placed}");
    let id = made[0]["contract_id"].as_str().unwrap().to_owned();

    // Same contract, same signatures, on both sides; roles differ.
    let shown_c = consumer.ctl_json(&["contracts", "show", &id]).unwrap();
    let shown_p = wait_for(Duration::from_secs(5), || provider.ctl_json(&["contracts", "show", &id]).ok()).unwrap();
    for field in ["consumer_signature", "provider_signature", "body"] {
        assert!(shown_c[field].as_str().is_some_and(|s| !s.is_empty()), "{field} missing: {shown_c}");
        assert_eq!(shown_c[field], shown_p[field], "{field} differs between the two sides");
    }
    assert_eq!(shown_c["role"], "consumer");
    assert_eq!(shown_p["role"], "provider");
    assert_eq!(shown_c["state"], "active");
    assert_eq!(shown_c["terms"]["units"], 4);

    // A second placement for more than what is left is refused cleanly.
    let too_many = consumer.ctl(&["place", "--units", "3", "--vcpu", "8", "--memory-mib", "16384"]);
    assert!(!too_many.status.success());
    let err = String::from_utf8_lossy(&too_many.stderr);
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    assert_eq!(contracts(provider).len(), 1);

    // Terminate from the consumer: both sides record it.
    assert!(consumer.ctl(&["contracts", "terminate", &id, "--reason", "customer-request"]).status.success());
    let ended = wait_for(Duration::from_secs(10), || {
        let p = provider.ctl_json(&["contracts", "show", &id]).ok()?;
        (p["state"] == "terminated").then_some(())
    });
    assert!(ended.is_some(), "provider did not record the termination:\n{}", provider.log());

    // The contract survives a restart of both (rebuilt from the log).
    // The consumer's index is deleted while it is down: it is rebuilt from the log.
    let mut nodes = nodes;
    for d in nodes.iter_mut().skip(1) {
        assert_eq!(d.terminate(), Some(0), "SIGTERM exits 0");
        if d.name == "node2" {
            std::fs::remove_dir_all(d.dir.join("index")).unwrap();
        }
        d.spawn();
    }
    let again = nodes[2].ctl_json(&["contracts", "show", &id]).unwrap();
    assert_eq!(again["provider_signature"], shown_p["provider_signature"]);
    assert_eq!(again["state"], "terminated");
}

#[test]
fn operator_errors_are_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(tmp.path(), "solo", &[]);
    // A second daemon on the same data dir is refused.
    let out = std::process::Command::new(fulcrum_e2e::fulcrumd())
        .args(["run", "--data-dir"])
        .arg(&d.dir)
        .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another fulcrumd"), "{err}");
    d.kill();

    // A key readable by others is refused.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.dir.join("node.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out =
        std::process::Command::new(fulcrum_e2e::fulcrumd()).args(["run", "--data-dir"]).arg(&d.dir).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("readable by others") && err.lines().count() == 1, "{err}");
    std::fs::set_permissions(d.dir.join("node.key"), std::fs::Permissions::from_mode(0o600)).unwrap();

    // A malformed config is refused with its location.
    std::fs::write(d.dir.join("node.toml"), "federation = \n").unwrap();
    let out =
        std::process::Command::new(fulcrum_e2e::fulcrumd()).args(["run", "--data-dir"]).arg(&d.dir).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("malformed") && err.lines().count() == 1, "{err}");

    // The CLI with no daemon behind the socket.
    let out = d.ctl(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: daemon not running"));
}

/// SIGTERM exits 0 even while an operator is watching the event stream.
#[test]
fn sigterm_with_a_watcher_attached_exits_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(tmp.path(), "watched", &[]);
    let mut watch = std::process::Command::new(fulcrum_e2e::fulcrumctl())
        .arg("--socket")
        .arg(d.socket())
        .args(["contracts", "watch"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.terminate(), Some(0), "daemon did not exit cleanly:\n{}", d.log());
    assert!(!d.socket().exists(), "the admin socket is removed on exit");
    let _ = watch.kill();
    let _ = watch.wait();
}

/// The same over QUIC only: gossip, sync and a contract.
#[test]
fn quic_only_federation_trades() {
    let tmp = tempfile::tempdir().unwrap();
    let quic = [("QUIC", "1")];
    let a = Daemon::start_with(tmp.path(), "qa", &[], &quic);
    let b = Daemon::start_with(tmp.path(), "qb", &[a.addr()], &quic);
    let file = offer_file(tmp.path(), "quic-offer", "FI", 3, "0.30");
    assert!(a.ctl(&["offers", "publish", file.to_str().unwrap()]).status.success());
    assert!(
        wait_for(Duration::from_secs(20), || (offer_ids(&b) == ["quic-offer"]).then_some(())).is_some(),
        "{}",
        b.log()
    );
    let placed = b.ctl_json(&["place", "--units", "3", "--vcpu", "8", "--memory-mib", "1024"]).unwrap();
    assert_eq!(list(&placed, "contracts").len(), 1);
    assert_eq!(contracts(&a).len(), 1);
}
