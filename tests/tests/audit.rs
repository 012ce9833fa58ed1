//! Verifiable logs with real daemons: exports verify offline and name the
//! first damaged record, a node that rewrites its log is caught by its peers
//! within seconds, even by a witness that crashed meanwhile, and a counterparty that drops a shared contract is caught
//! by the inclusion check.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use fulcrum_e2e::{Daemon, offer_file, wait_for};
use fulcrum_node::store::log::{AgreementLog, read_log};
use fulcrum_protocol::ids::ContractId;
use fulcrum_protocol::record::Record;
use serde_json::Value;

/// Checkpoints every second, audits every second, a short grace so that a
/// dropped contract counts as evidence within the test, proven contracts
/// checked again after two seconds and evidence published again every three.
const FAST: &[(&str, &str)] = &[
    ("FULCRUM_CHECKPOINT_INTERVAL", "1s"),
    ("FULCRUM_AUDIT_INTERVAL", "1s"),
    ("FULCRUM_AUDIT_GRACE", "3s"),
    ("FULCRUM_AUDIT_RECHECK", "2s"),
    ("FULCRUM_EVIDENCE_REPUBLISH", "3s"),
];

fn list(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

fn node_key(d: &Daemon) -> String {
    d.ctl_json(&["status"]).unwrap()["node_key"].as_str().unwrap().to_owned()
}

/// A provider with an offer and a consumer connected to it.
fn pair(root: &Path) -> (Daemon, Daemon) {
    let provider = Daemon::start_with(root, "provider", &[], FAST);
    let consumer = Daemon::start_with(root, "consumer", &[provider.addr()], FAST);
    let file = offer_file(root, "fra1-c8m32", "DE", 20, "0.42");
    assert!(provider.ctl(&["offers", "publish", file.to_str().unwrap()]).status.success());
    let seen = wait_for(Duration::from_secs(20), || {
        let v = consumer.ctl_json(&["offers", "list"]).ok()?;
        (!list(&v).is_empty()).then_some(())
    });
    assert!(seen.is_some(), "the consumer never saw the offer:\n{}", consumer.log());
    (provider, consumer)
}

/// Places one unit and returns the contract id.
fn place(consumer: &Daemon) -> String {
    let placed = consumer
        .ctl_json(&["place", "--units", "1", "--vcpu", "8", "--memory-mib", "16384", "--duration", "2h"])
        .unwrap_or_else(|e| panic!("place failed: {e}\n{}", consumer.log()));
    placed["contracts"][0]["contract_id"].as_str().unwrap().to_owned()
}

/// Rewrites a stopped node's log: keeps the records `keep` accepts, then
/// appends `extra` records, as an operator with disk access could.
fn rewrite_log(d: &Daemon, mut keep: impl FnMut(&Record) -> bool, extra: Vec<Record>) -> (usize, usize) {
    let path = d.dir.join("agreements.log");
    let (records, _) = read_log(&path).unwrap();
    let before = records.len();
    let mut kept: Vec<Vec<u8>> = records.into_iter().filter(|bytes| keep(&Record::from_cbor(bytes).unwrap())).collect();
    kept.extend(extra.iter().map(|r| r.to_cbor().unwrap()));
    let after = kept.len();
    let tmp = d.dir.join("agreements.log.new");
    let (log, _) = AgreementLog::open(&tmp).unwrap();
    log.append_blocking(kept).unwrap();
    log.close();
    drop(log);
    std::fs::rename(&tmp, &path).unwrap();
    // The index is derived; let the node rebuild it from the new log.
    std::fs::remove_dir_all(d.dir.join("index")).unwrap();
    (before, after)
}

fn evidence_against(d: &Daemon, key: &str) -> Vec<Value> {
    let v = d.ctl_json(&["audit", "evidence"]).unwrap_or(Value::Null);
    list(&v).into_iter().filter(|e| e["accused"].as_str() == Some(key)).collect()
}

#[test]
fn exports_verify_offline_and_damage_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (provider, consumer) = pair(tmp.path());
    let ids: Vec<String> = (0..3).map(|_| place(&consumer)).collect();

    // Live logs verify on both sides.
    for d in [&provider, &consumer] {
        let report = d.ctl_json(&["audit", "verify"]).unwrap_or_else(|e| panic!("{}: {e}\n{}", d.name, d.log()));
        assert_eq!(report["contracts"].as_u64(), Some(3), "{report}");
        assert!(report["first_failure"].is_null(), "{report}");
    }

    // An export verifies with no daemon involved.
    let export = tmp.path().join("provider.export");
    let out = provider.ctl(&["audit", "export", "--out", export.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let verify = |file: &Path| {
        std::process::Command::new(fulcrum_e2e::fulcrumctl())
            .args(["--json", "audit", "verify", "--export"])
            .arg(file)
            .output()
            .unwrap()
    };
    let good = verify(&export);
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stderr));
    let report: Value = serde_json::from_slice(&good.stdout).unwrap();
    assert_eq!(report["node_key"].as_str(), Some(node_key(&provider).as_str()));
    assert!(report["checkpoints"].as_u64().unwrap() >= 1, "{report}");

    // One byte changed in the last record: verification fails and says where.
    let mut bytes = std::fs::read(&export).unwrap();
    let records = report["records"].as_u64().unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    let damaged = tmp.path().join("damaged.export");
    std::fs::write(&damaged, &bytes).unwrap();
    let bad = verify(&damaged);
    assert_eq!(bad.status.code(), Some(1), "{}", String::from_utf8_lossy(&bad.stdout));
    let report: Value = serde_json::from_slice(&bad.stdout).unwrap();
    let failure = &report["first_failure"];
    assert!(!failure.is_null(), "{report}");
    assert!(
        failure["record"].as_u64().is_some_and(|r| r < records) || failure["checkpoint"].as_u64().is_some(),
        "{report}"
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("verification failed"));

    // The consumer's contracts are proven in the provider's log, on demand.
    for id in &ids {
        let proof = consumer.ctl_json(&["audit", "prove", id]).unwrap_or_else(|e| panic!("{e}\n{}", consumer.log()));
        assert_eq!(proof["outcome"].as_str(), Some("proven"), "{proof}");
    }
    // Honest nodes hold no evidence against each other.
    std::thread::sleep(Duration::from_secs(3));
    assert!(evidence_against(&consumer, &node_key(&provider)).is_empty());
    assert!(evidence_against(&provider, &node_key(&consumer)).is_empty());
}

#[test]
fn a_node_that_rewrites_its_log_is_caught_by_its_peers() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut provider, consumer) = pair(tmp.path());
    let witness = Daemon::start_with(tmp.path(), "witness", &[consumer.addr()], FAST);
    for _ in 0..2 {
        place(&consumer);
    }
    let key = node_key(&provider);
    let size = provider.ctl_json(&["status"]).unwrap()["log_size"].as_u64().unwrap();
    // Both peers have witnessed the provider's latest checkpoint.
    for d in [&consumer, &witness] {
        let witnessed = wait_for(Duration::from_secs(20), || {
            let peers = d.ctl_json(&["peers"]).ok()?;
            list(&peers)
                .iter()
                .any(|p| p["node_key"].as_str() == Some(&key) && p["log_size"].as_u64() == Some(size))
                .then_some(())
        });
        assert!(witnessed.is_some(), "{} never witnessed size {size}:\n{}", d.name, d.log());
    }

    // Stop the provider, drop its last record, append others, restart it.
    provider.kill();
    let keep = size as usize - 1;
    let mut index = 0usize;
    let forged: Vec<Record> = (0..3).map(|i| Record::Abandoned { contract_id: ContractId([i; 32]) }).collect();
    let (before, after) = rewrite_log(
        &provider,
        |_| {
            index += 1;
            index <= keep
        },
        forged,
    );
    assert_eq!((before, after), (size as usize, keep + 3));
    provider.bootstrap = vec![consumer.addr()];
    provider.spawn();

    for d in [&consumer, &witness] {
        let caught = wait_for(Duration::from_secs(30), || {
            let found = evidence_against(d, &key);
            (!found.is_empty()).then_some(found)
        });
        let found = caught.unwrap_or_else(|| panic!("{} holds no evidence:\n{}", d.name, d.log()));
        let kinds: Vec<&str> = found.iter().filter_map(|e| e["kind"].as_str()).collect();
        assert!(kinds.iter().any(|k| ["inconsistent-proof", "conflicting-checkpoints"].contains(k)), "{kinds:?}");
    }
    // `peers` shows it too.
    let peers = consumer.ctl_json(&["peers"]).unwrap();
    let flagged =
        list(&peers).iter().any(|p| p["node_key"].as_str() == Some(&key) && p["evidence"].as_u64() >= Some(1));
    assert!(flagged, "{peers}");
    // And the rewritten node's own export no longer verifies against the
    // checkpoints it signed before.
    let report = provider.ctl(&["audit", "verify"]);
    assert!(!report.status.success(), "{}", String::from_utf8_lossy(&report.stdout));

    // A member that joins afterwards, through a witness, learns the evidence
    // from the witnesses publishing it again: it never saw the old history
    // itself, so it could not have found it.
    let late = Daemon::start_with(tmp.path(), "late", &[witness.addr()], FAST);
    let learned = wait_for(Duration::from_secs(30), || (!evidence_against(&late, &key).is_empty()).then_some(()));
    assert!(learned.is_some(), "the late member never learned the evidence:\n{}", late.log());
}

#[test]
fn a_witness_remembers_what_it_witnessed_across_its_own_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut provider, mut consumer) = pair(tmp.path());
    for _ in 0..2 {
        place(&consumer);
    }
    let key = node_key(&provider);
    let size = provider.ctl_json(&["status"]).unwrap()["log_size"].as_u64().unwrap();
    let witnessed = wait_for(Duration::from_secs(20), || {
        let peers = consumer.ctl_json(&["peers"]).ok()?;
        list(&peers)
            .iter()
            .any(|p| p["node_key"].as_str() == Some(&key) && p["log_size"].as_u64() == Some(size))
            .then_some(())
    });
    assert!(witnessed.is_some(), "the consumer never witnessed size {size}:\n{}", consumer.log());
    // The witnessed file is fsync'd on the five-second tick; then the
    // witness crashes.
    std::thread::sleep(Duration::from_secs(6));
    consumer.kill();

    // While it is down, the provider rewrites its history and comes back
    // alone: nobody else witnessed it, so only the consumer's memory of the
    // old checkpoint can catch it.
    provider.kill();
    let keep = size as usize - 1;
    let mut index = 0usize;
    let forged: Vec<Record> = (0..3).map(|i| Record::Abandoned { contract_id: ContractId([i; 32]) }).collect();
    rewrite_log(
        &provider,
        |_| {
            index += 1;
            index <= keep
        },
        forged,
    );
    provider.bootstrap = Vec::new();
    provider.spawn();
    // The index is derived and may be deleted: what was witnessed is not in it.
    std::fs::remove_dir_all(consumer.dir.join("index")).unwrap();
    consumer.bootstrap = vec![provider.addr()];
    consumer.spawn();

    let caught = wait_for(Duration::from_secs(30), || {
        let found = evidence_against(&consumer, &key);
        (!found.is_empty()).then_some(found)
    });
    let found = caught.unwrap_or_else(|| panic!("the restarted witness holds no evidence:\n{}", consumer.log()));
    let kinds: Vec<&str> = found.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert!(kinds.iter().any(|k| ["inconsistent-proof", "conflicting-checkpoints"].contains(k)), "{kinds:?}");
}

#[test]
fn a_counterparty_that_drops_a_shared_contract_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut provider, consumer) = pair(tmp.path());
    let id = place(&consumer);
    let proof = consumer.ctl_json(&["audit", "prove", &id]).unwrap();
    assert_eq!(proof["outcome"].as_str(), Some("proven"), "{proof}");

    // The provider drops the contract from its log and comes back.
    provider.kill();
    let (before, after) = rewrite_log(
        &provider,
        |r| !matches!(r, Record::Contract { contract } if hex_id(&contract.id()) == id),
        Vec::new(),
    );
    assert_eq!(after + 1, before);
    provider.bootstrap = vec![consumer.addr()];
    provider.spawn();
    let key = node_key(&provider);

    // After the grace period the consumer's check turns into evidence.
    let outcome = wait_for(Duration::from_secs(30), || {
        let out = consumer.ctl(&["--json", "audit", "prove", &id]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["outcome"].as_str() == Some("evidence")).then_some(out)
    });
    let out = outcome.unwrap_or_else(|| panic!("never caught:\n{}", consumer.log()));
    assert_eq!(out.status.code(), Some(1));
    let found = evidence_against(&consumer, &key);
    assert!(found.iter().any(|e| e["kind"].as_str() == Some("missing-contract")), "{found:?}");
}

#[test]
fn a_counterparty_that_drops_a_contract_after_proving_it_is_caught_by_the_periodic_check() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut provider, consumer) = pair(tmp.path());
    let id = place(&consumer);
    // The consumer's own round proves the contract (no operator asks).
    let proven = wait_for(Duration::from_secs(30), || {
        (consumer.metric("fulcrum_inclusion_checks_total{outcome=\"proven\"}")? >= 1.0).then_some(())
    });
    assert!(proven.is_some(), "the periodic check never proved the contract:\n{}", consumer.log());

    // Then the provider drops it and comes back.
    provider.kill();
    let (before, after) = rewrite_log(
        &provider,
        |r| !matches!(r, Record::Contract { contract } if hex_id(&contract.id()) == id),
        Vec::new(),
    );
    assert_eq!(after + 1, before);
    provider.bootstrap = vec![consumer.addr()];
    provider.spawn();
    let key = node_key(&provider);

    // The proven contract comes round again and is found missing.
    let caught = wait_for(Duration::from_secs(40), || {
        let found = evidence_against(&consumer, &key);
        found.iter().any(|e| e["kind"].as_str() == Some("missing-contract")).then_some(())
    });
    assert!(caught.is_some(), "the periodic check never caught the dropped contract:\n{}", consumer.log());
    assert!(consumer.metric("fulcrum_inclusion_checks_total{outcome=\"evidence\"}") >= Some(1.0));
}

#[test]
fn a_checkpoint_is_signed_after_checkpoint_records_records_without_waiting_for_the_interval() {
    let tmp = tempfile::tempdir().unwrap();
    // Only the record count can trigger a checkpoint here.
    let env =
        &[("FULCRUM_CHECKPOINT_INTERVAL", "1h"), ("FULCRUM_CHECKPOINT_RECORDS", "3"), ("FULCRUM_AUDIT_INTERVAL", "1h")];
    let provider = Daemon::start_with(tmp.path(), "provider", &[], env);
    let consumer = Daemon::start_with(tmp.path(), "consumer", &[provider.addr()], env);
    let file = offer_file(tmp.path(), "fra1-c8m32", "DE", 20, "0.42");
    assert!(provider.ctl(&["offers", "publish", file.to_str().unwrap()]).status.success());
    let seen = wait_for(Duration::from_secs(20), || {
        (!list(&consumer.ctl_json(&["offers", "list"]).ok()?).is_empty()).then_some(())
    });
    assert!(seen.is_some(), "the consumer never saw the offer:\n{}", consumer.log());
    let sizes = || {
        let v = provider.ctl_json(&["status"]).unwrap();
        (v["log_size"].as_u64().unwrap(), v["checkpoint_size"].as_u64().unwrap_or(0))
    };
    let (_, first) = sizes();

    // One contract: fewer than three new records, so no new checkpoint.
    place(&consumer);
    std::thread::sleep(Duration::from_secs(2));
    let (log, checkpoint) = sizes();
    assert!(log > first, "the contract is in the provider's log");
    assert!(log < first + 3, "one contract made {} records; the test needs fewer than 3", log - first);
    assert_eq!(checkpoint, first, "signed before three records or an hour");

    // More: three records since the last checkpoint, signed at once.
    while sizes().0 < first + 3 {
        place(&consumer);
    }
    let signed = wait_for(Duration::from_secs(10), || {
        let (log, checkpoint) = sizes();
        (checkpoint >= first + 3).then_some((log, checkpoint))
    });
    let (log, checkpoint) = signed.unwrap_or_else(|| panic!("no checkpoint after three records: {:?}", sizes()));
    assert_eq!(checkpoint, log);
}

fn hex_id(id: &ContractId) -> String {
    id.0.iter().map(|b| format!("{b:02x}")).collect()
}
