//! Crash safety with real processes: 200 concurrent placements against a
//! provider with too little capacity for all of them, the provider killed
//! with SIGKILL at random points and restarted. Afterwards, read offline from
//! the log files: never more units under contract than the provider has;
//! every contract a consumer holds as countersigned is in the provider's log;
//! every placement reported as successful is in both logs; the logs re-open.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use fulcrum_e2e::{Daemon, fulcrumctl, offer_file, wait_for};
use fulcrum_node::store::log::read_log;
use fulcrum_protocol::ids::ContractId;
use fulcrum_protocol::record::Record;
use rand::{Rng, SeedableRng};

const CAPACITY: u32 = 40;

/// Active contracts (units by id) recorded in a log file, and whether it is torn.
fn contracts_in(dir: &Path) -> (HashMap<ContractId, u32>, bool) {
    let (records, torn) = read_log(&dir.join("agreements.log")).unwrap();
    let mut active = HashMap::new();
    for bytes in records {
        match Record::from_cbor(&bytes).expect("every durable record verifies") {
            Record::Contract { contract } => {
                active.insert(contract.id(), contract.terms().units);
            }
            Record::Termination { contract_id, .. } => {
                active.remove(&contract_id);
            }
            _ => {}
        }
    }
    (active, torn)
}

#[test]
fn provider_killed_mid_negotiation_never_oversells_or_loses_a_contract() {
    let tmp = tempfile::tempdir().unwrap();
    let seed: u64 = std::env::var("FULCRUM_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261122);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut provider = Daemon::start(tmp.path(), "provider", &[]);
    let boot = vec![provider.addr()];
    let consumers: Vec<Daemon> = (0..2).map(|i| Daemon::start(tmp.path(), &format!("consumer{i}"), &boot)).collect();
    let file = offer_file(tmp.path(), "fra1-c8m32", "DE", CAPACITY, "0.42");
    assert!(provider.ctl(&["offers", "publish", file.to_str().unwrap()]).status.success());
    for c in &consumers {
        let seen = wait_for(Duration::from_secs(20), || {
            let v = c.ctl_json(&["offers", "list"]).ok()?;
            (v.to_string().contains("fra1-c8m32")).then_some(())
        });
        assert!(seen.is_some(), "{} never saw the offer", c.name);
    }

    // 200 placements of 1 unit at once, 100 per consumer.
    let mut runs = Vec::new();
    for i in 0..200 {
        let c = &consumers[i % 2];
        let child = Command::new(fulcrumctl())
            .arg("--socket")
            .arg(c.socket())
            .args(["--json", "place", "--units", "1", "--vcpu", "8", "--memory-mib", "16384", "--duration", "48h"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        runs.push((i % 2, child));
    }
    // Kill the provider at random points while they run, and bring it back.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(rng.gen_range(150..1200)));
        provider.kill();
        std::thread::sleep(Duration::from_millis(rng.gen_range(50..400)));
        provider.spawn();
    }
    let mut reported: Vec<(usize, String)> = Vec::new();
    for (k, child) in runs {
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            for c in v["contracts"].as_array().cloned().unwrap_or_default() {
                reported.push((k, c["contract_id"].as_str().unwrap().to_owned()));
            }
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(err.lines().count(), 1, "a failed placement says one clear line: {err}");
        }
    }
    assert!(!reported.is_empty(), "no placement succeeded at all:\n{}", provider.log());

    // Let reconciliation finish: consumers ask Status for every pending commit.
    let settled = wait_for(Duration::from_secs(60), || {
        let (p, _) = contracts_in(&provider.dir);
        let all_known = consumers.iter().all(|c| contracts_in(&c.dir).0.keys().all(|id| p.contains_key(id)));
        let consumer_total: usize = consumers.iter().map(|c| contracts_in(&c.dir).0.len()).sum();
        (all_known && consumer_total == p.len()).then_some(())
    });

    // Check the invariants from the log files themselves.
    provider.kill();
    let (provider_contracts, _) = contracts_in(&provider.dir);
    let units: u32 = provider_contracts.values().sum();
    assert!(units <= CAPACITY, "oversold: {units} units under contract, capacity {CAPACITY}");
    let mut held_by_consumers = HashSet::new();
    for c in &consumers {
        for id in contracts_in(&c.dir).0.keys() {
            assert!(provider_contracts.contains_key(id), "{} holds {id} which the provider never logged", c.name);
            held_by_consumers.insert(*id);
        }
    }
    for (k, id) in &reported {
        let id = ContractId::from_hex(id).unwrap();
        assert!(provider_contracts.contains_key(&id), "reported contract {id} is not in the provider's log");
        assert!(
            contracts_in(&consumers[*k].dir).0.contains_key(&id),
            "reported contract {id} is not in its consumer's log"
        );
    }
    assert!(
        settled.is_some(),
        "both sides never agreed: provider {} consumers {}",
        provider_contracts.len(),
        held_by_consumers.len()
    );

    // The provider's log re-opens cleanly after all this.
    provider.spawn();
    let status = provider.ctl_json(&["status"]).unwrap();
    assert_eq!(status["contracts_active"].as_u64().unwrap() as usize, provider_contracts.len());
    let (_, torn) = contracts_in(&provider.dir);
    assert!(!torn, "a torn tail is cut at start-up");
}
