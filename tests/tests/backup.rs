//! Backup and restore with real daemons: `fulcrumctl backup` of a running
//! provider with contracts writes a file only its owner can read, which
//! `fulcrumctl audit verify --export` accepts and a damaged copy of which it
//! refuses; `fulcrumd restore` recreates a data dir from it (never over a
//! non-empty one, never without the key) that `fulcrumd run` starts from,
//! with the same key, the same contracts and a log that verifies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use fulcrum_e2e::{Daemon, fulcrumctl, fulcrumd, offer_file, wait_for};
use serde_json::Value;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok_json(out: &Output) -> Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn verify_file(file: &Path) -> Output {
    Command::new(fulcrumctl()).args(["--json", "audit", "verify", "--export"]).arg(file).output().unwrap()
}

fn restore(from: &Path, into: &Path, key: Option<&Path>) -> Output {
    let mut cmd = Command::new(fulcrumd());
    cmd.args(["restore", "--from"]).arg(from).arg("--data-dir").arg(into);
    if let Some(key) = key {
        cmd.arg("--key").arg(key);
    }
    cmd.output().unwrap()
}

fn contract_ids(d: &Daemon) -> Vec<String> {
    let list = d.ctl_json(&["contracts", "list"]).unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    let mut ids: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{} {}", c["contract_id"].as_str().unwrap(), c["role"].as_str().unwrap()))
        .collect();
    ids.sort();
    ids
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_backup_of_a_running_node_restores_into_a_node_with_the_same_contracts() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let fast = [("FULCRUM_CHECKPOINT_INTERVAL", "1s")];
    let mut provider = Daemon::start_with(root, "provider", &[], &fast);
    let consumer = Daemon::start_with(root, "consumer", &[provider.addr()], &fast);
    let offer = offer_file(root, "fra1-c8m32", "DE", 20, "0.42");
    assert!(provider.ctl(&["offers", "publish", offer.to_str().unwrap()]).status.success());
    let seen = wait_for(Duration::from_secs(20), || {
        let v = consumer.ctl_json(&["offers", "list"]).ok()?;
        (!v.as_array()?.is_empty()).then_some(())
    });
    assert!(seen.is_some(), "the consumer never saw the offer:\n{}", consumer.log());
    let mut placed = Vec::new();
    for _ in 0..3 {
        let v = consumer
            .ctl_json(&["place", "--units", "1", "--vcpu", "8", "--memory-mib", "16384", "--duration", "2h"])
            .unwrap_or_else(|e| panic!("place failed: {e}\n{}", consumer.log()));
        placed.push(v["contracts"][0]["contract_id"].as_str().unwrap().to_owned());
    }
    let out = consumer.ctl(&["contracts", "terminate", &placed[2], "--reason", "customer-request"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = contract_ids(&provider);
    assert_eq!(before.len(), 3, "{before:?}");
    let key = provider.node_key();

    // Backups of the running node: private files that verify offline.
    let plain = root.join("provider.backup");
    let with_key = root.join("provider-with-key.backup");
    let v = ok_json(&provider.ctl(&["--json", "backup", "--out", plain.to_str().unwrap()]));
    assert_eq!((v["key_included"].as_bool(), v["contracts"].as_u64()), (Some(false), Some(3)), "{v}");
    let v = ok_json(&provider.ctl(&["--json", "backup", "--out", with_key.to_str().unwrap(), "--include-key"]));
    assert_eq!(v["key_included"].as_bool(), Some(true), "{v}");
    assert_eq!(v["node_key"].as_str(), Some(key.as_str()));
    for file in [&plain, &with_key] {
        assert_eq!(mode(file), 0o600, "{}", file.display());
        let report = ok_json(&verify_file(file));
        assert!(report["first_failure"].is_null(), "{report}");
        assert_eq!((report["contracts"].as_u64(), report["terminations"].as_u64()), (Some(3), Some(1)), "{report}");
        assert_eq!(report["node_key"].as_str(), Some(key.as_str()));
    }
    let head = |file: &Path| String::from_utf8_lossy(&std::fs::read(file).unwrap()[..300]).into_owned();
    assert!(head(&plain).contains("\nsecret-key none\n"), "no key without --include-key");
    assert!(!head(&with_key).contains("\nsecret-key none\n"));
    assert!(!root.join("provider.backup.partial").exists());

    // A damaged copy is refused by the verifier and by restore.
    let mut bytes = std::fs::read(&with_key).unwrap();
    let at = bytes.len() - 40;
    bytes[at] ^= 0x01;
    let damaged = root.join("damaged.backup");
    std::fs::write(&damaged, &bytes).unwrap();
    let out = verify_file(&damaged);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    let out = restore(&damaged, &root.join("from-damaged"), None);
    assert!(!out.status.success());
    assert!(!root.join("from-damaged").exists(), "a failed restore leaves nothing behind");

    // Never over a node's data, never without the key.
    let out = restore(&with_key, &consumer.dir, None);
    assert!(!out.status.success() && stderr(&out).contains("is not empty"), "{}", stderr(&out));
    let out = restore(&plain, &root.join("keyless"), None);
    assert!(!out.status.success() && stderr(&out).contains("--key"), "{}", stderr(&out));
    let out = restore(&plain, &root.join("wrong-key"), Some(&consumer.dir.join("node.key")));
    assert!(!out.status.success() && stderr(&out).contains("signs with"), "{}", stderr(&out));
    assert!(!root.join("keyless").exists() && !root.join("wrong-key").exists());
    // The key from its own file works as well as from the backup.
    let out = restore(&plain, &root.join("with-key-file"), Some(&provider.dir.join("node.key")));
    assert!(out.status.success(), "{}", stderr(&out));

    // The restored node replaces the provider: same key, same contracts,
    // a log that verifies, its offer still its own.
    let restored_dir = root.join("restored");
    let out = restore(&with_key, &restored_dir, None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&restored_dir.join("node.key")), 0o600);
    assert_eq!(provider.terminate(), Some(0));
    // A daemon handle for the restored dir: the harness makes one by
    // `init`, which the restored dir must not go through.
    let mut restored = Daemon::init(root, "restored-handle", &[], &fast);
    restored.dir = restored_dir;
    restored.peer_id = provider.peer_id.clone();
    restored.spawn();
    assert_eq!(restored.node_key(), key);
    assert_eq!(restored.ctl_json(&["status"]).unwrap()["node_key"].as_str(), Some(key.as_str()));
    assert_eq!(contract_ids(&restored), before);
    let report = restored.ctl_json(&["audit", "verify"]).unwrap_or_else(|e| panic!("{e}\n{}", restored.log()));
    assert!(report["first_failure"].is_null(), "{report}");
    assert_eq!(report["contracts"].as_u64(), Some(3), "{report}");
    let mine = restored.ctl_json(&["offers", "list", "--mine"]).unwrap();
    assert_eq!(mine.as_array().map(Vec::len), Some(1), "{mine}");
}
