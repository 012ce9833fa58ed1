//! Composite placement with real daemons, driven through fulcrumctl: one
//! request over several providers ends as one placement record grouping
//! its contracts; consumers racing for the last units never oversell and
//! leave nothing half-placed; a provider killed after granting a hold, with
//! another that never answers, costs the placement a detour, not a dangling
//! contract; a dry run only shows the plan.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fulcrum_e2e::{Daemon, fulcrumctl, offer_file, wait_for};
use serde_json::Value;

/// Every placement here asks for this much per unit (the offers have 8 vCPU).
const PLACE: [&str; 6] = ["--vcpu", "8", "--memory-mib", "16384", "--duration", "2h"];

fn array(v: Value, key: &str) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        other => other.get(key).and_then(Value::as_array).cloned().unwrap_or_default(),
    }
}

fn contracts(d: &Daemon) -> Vec<Value> {
    array(d.ctl_json(&["contracts", "list"]).unwrap_or(Value::Null), "contracts")
}

fn active_contracts(d: &Daemon) -> Vec<Value> {
    contracts(d).into_iter().filter(|c| c["state"] == "active").collect()
}

fn active_units(d: &Daemon) -> u64 {
    active_contracts(d).iter().map(|c| c["terms"]["units"].as_u64().unwrap()).sum()
}

fn placements(d: &Daemon) -> Vec<Value> {
    array(d.ctl_json(&["placements", "list"]).unwrap(), "placements")
}

fn publish(d: &Daemon, root: &Path, offer_id: &str, country: &str, units: u32, price: &str) {
    let file = offer_file(root, offer_id, country, units, price);
    let out = d.ctl(&["offers", "publish", file.to_str().unwrap()]);
    assert!(out.status.success(), "publish failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Waits until `d` knows `n` offers.
fn wait_for_offers(d: &Daemon, n: usize) {
    let seen = wait_for(Duration::from_secs(30), || {
        (array(d.ctl_json(&["offers", "list"]).ok()?, "offers").len() >= n).then_some(())
    });
    assert!(seen.is_some(), "{} never saw {n} offers:\n{}", d.name, d.log());
}

/// Waits until `d` is connected to `n` peers: a provider's offer can reach
/// a consumer by gossip before the consumer can dial the provider.
fn wait_for_peers(d: &Daemon, n: u64) {
    let connected = wait_for(Duration::from_secs(30), || {
        (d.ctl_json(&["status"]).ok()?["connected_peers"].as_u64()? >= n).then_some(())
    });
    assert!(connected.is_some(), "{} never connected to {n} peers:\n{}", d.name, d.log());
}

/// Waits until `d` is connected to each of `providers`. (Counting its peers
/// is not enough where other consumers are peers too.)
fn wait_for_providers(d: &Daemon, providers: &[&Daemon]) {
    let keys: Vec<String> = providers.iter().map(|p| p.node_key()).collect();
    let connected = wait_for(Duration::from_secs(30), || {
        let peers = array(d.ctl_json(&["peers"]).ok()?, "peers");
        keys.iter().all(|k| peers.iter().any(|p| p["node_key"].as_str() == Some(k.as_str()))).then_some(())
    });
    assert!(connected.is_some(), "{} never connected to every provider:\n{}", d.name, d.log());
}

/// `place` with the common arguments and `extra`, as a child process.
fn spawn_place(d: &Daemon, extra: &[&str]) -> Child {
    Command::new(fulcrumctl())
        .arg("--socket")
        .arg(d.socket())
        .args(["--json", "place"])
        .args(PLACE)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Sends a signal to a daemon's process.
fn signal(d: &Daemon, sig: &str) {
    let status = Command::new("kill").arg(format!("-{sig}")).arg(d.pid().to_string()).status().unwrap();
    assert!(status.success(), "kill -{sig} {}", d.pid());
}

#[test]
fn three_replicas_in_three_countries_are_one_placement_and_end_together() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let de = Daemon::start(root, "de", &[]);
    let boot = vec![de.addr()];
    let fr = Daemon::start(root, "fr", &boot);
    let nl = Daemon::start(root, "nl", &boot);
    let consumer = Daemon::start(root, "consumer", &boot);
    // DE has the two cheapest offers: without a spread both would be used.
    publish(&de, root, "fra1-c8m32", "DE", 2, "0.30");
    publish(&de, root, "ber1-c8m32", "DE", 2, "0.31");
    publish(&fr, root, "par1-c8m32", "FR", 2, "0.40");
    publish(&nl, root, "ams1-c8m32", "NL", 2, "0.45");
    wait_for_offers(&consumer, 4);
    wait_for_peers(&consumer, 3);
    let spread = ["--units", "3", "--spread", "countries", "--label", "iso:27001"];

    // A dry run shows the plan and makes nothing.
    let out = consumer.ctl(&[&["place"][..], &PLACE, &spread, &["--dry-run"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("plan (dry run: nothing was negotiated)\n"), "{text}");
    for offer in ["fra1-c8m32", "par1-c8m32", "ams1-c8m32"] {
        assert!(text.contains(offer), "{offer} not in the plan:\n{text}");
    }
    assert!(!text.contains("ber1-c8m32"), "two units in one country:\n{text}");
    let plan = consumer.ctl_json(&[&["place"][..], &PLACE, &spread, &["--dry-run"]].concat()).unwrap();
    assert_eq!(plan["plan"].as_array().map(Vec::len), Some(3), "{plan}");
    assert_eq!(plan["placement_id"], "");
    for d in [&de, &fr, &nl, &consumer] {
        assert!(contracts(d).is_empty(), "a dry run made a contract on {}", d.name);
    }
    assert!(placements(&consumer).is_empty());

    // The placement: three contracts, one per country, one record.
    let placed = consumer
        .ctl_json(&[&["place"][..], &PLACE, &spread].concat())
        .unwrap_or_else(|e| panic!("place failed: {e}\n{}", consumer.log()));
    assert_eq!(placed["placement_state"], "complete", "{placed}");
    let made = array(placed.clone(), "contracts");
    assert_eq!(made.len(), 3, "{placed}");
    let mut countries: Vec<&str> = made.iter().map(|c| c["terms"]["site"]["country"].as_str().unwrap()).collect();
    countries.sort_unstable();
    assert_eq!(countries, ["DE", "FR", "NL"]);
    let id = placed["placement_id"].as_str().unwrap().to_owned();
    let list = placements(&consumer);
    assert_eq!(list.len(), 1);
    assert_eq!((list[0]["placement_id"].as_str(), list[0]["state"].as_str()), (Some(id.as_str()), Some("complete")));
    assert_eq!(list[0]["spread"], "countries");
    let shown = consumer.ctl_json(&["placements", "show", &id[..10]]).unwrap();
    assert_eq!(shown["contracts"].as_array().map(Vec::len), Some(3));
    for d in [&de, &fr, &nl] {
        let theirs = wait_for(Duration::from_secs(5), || (active_contracts(d).len() == 1).then_some(()));
        assert!(theirs.is_some(), "{} holds {:?}", d.name, contracts(d));
    }
    assert_eq!(active_contracts(&consumer).len(), 3);

    // Terminating the placement terminates all three, on both sides.
    let out = consumer.ctl(&["placements", "terminate", &id, "--reason", "customer-request"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(active_contracts(&consumer).is_empty());
    for d in [&de, &fr, &nl] {
        let ended = wait_for(Duration::from_secs(10), || active_contracts(d).is_empty().then_some(()));
        assert!(ended.is_some(), "{} still holds {:?}", d.name, active_contracts(d));
    }
}

#[test]
fn consumers_racing_for_the_last_units_never_oversell_or_half_place() {
    const CAPACITY: [(u32, &str); 2] = [(3, "DE"), (2, "FR")];
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let a = Daemon::start(root, "provider-a", &[]);
    let boot = vec![a.addr()];
    let b = Daemon::start(root, "provider-b", &boot);
    let consumers: Vec<Daemon> = (0..3).map(|i| Daemon::start(root, &format!("consumer{i}"), &boot)).collect();
    publish(&a, root, "fra1-c8m32", CAPACITY[0].1, CAPACITY[0].0, "0.30");
    publish(&b, root, "par1-c8m32", CAPACITY[1].1, CAPACITY[1].0, "0.40");
    for c in &consumers {
        wait_for_offers(c, 2);
        // A consumer that still has to find and dial a provider would keep
        // its holds at the other one while it does.
        wait_for_providers(c, &[&a, &b]);
    }

    // Nine placements at once, each of one unit on each provider.
    let started = Instant::now();
    let runs: Vec<(usize, Child)> = (0..9)
        .map(|i| {
            (
                i % consumers.len(),
                spawn_place(&consumers[i % consumers.len()], &["--units", "2", "--spread", "providers"]),
            )
        })
        .collect();
    let mut complete = 0;
    for (_, child) in runs {
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["placement_state"], "complete", "{v}");
            assert_eq!(v["contracts"].as_array().map(Vec::len), Some(2), "{v}");
            complete += 1;
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(err.lines().count(), 1, "a failed placement says one clear line: {err}");
        }
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(40), "the placements took {elapsed:?}");
    // Provider b's two units allow two placements at most, and at least one
    // completes: every consumer is connected to both providers and sends a
    // placement's two proposals in one step, so the placements reach a and
    // b in nearly the same order, and the first to reach b is among the
    // first three (a's capacity) to reach a.
    assert!(complete <= 2, "{complete} placements completed with 2 units on provider b");
    assert!(complete >= 1, "all nine placements failed though both providers had room for two");

    // Each provider: never more than its capacity under contract.
    for (d, (capacity, _)) in [&a, &b].into_iter().zip(CAPACITY) {
        assert!(active_units(d) <= u64::from(capacity), "{} oversold: {:?}", d.name, active_contracts(d));
    }
    // Every placement is complete or has nothing left active, on any side;
    // every contract a provider keeps belongs to a complete placement.
    let mut kept = Vec::new();
    for c in &consumers {
        for p in placements(c) {
            let state = p["state"].as_str().unwrap().to_owned();
            for contract in p["contracts"].as_array().unwrap() {
                let active = contract["state"] == "active";
                assert_eq!(active, state == "complete", "{} placement {p}", c.name);
                if active {
                    kept.push(contract["contract_id"].as_str().unwrap().to_owned());
                }
            }
        }
    }
    assert_eq!(kept.len(), 2 * complete);
    let settled = wait_for(Duration::from_secs(10), || {
        let mut at_providers: Vec<String> = [&a, &b]
            .iter()
            .flat_map(|d| active_contracts(d))
            .map(|c| c["contract_id"].as_str().unwrap().to_owned())
            .collect();
        at_providers.sort();
        let mut expected = kept.clone();
        expected.sort();
        (at_providers == expected).then_some(())
    });
    assert!(settled.is_some(), "providers keep contracts of no complete placement: {:?}", active_contracts(&b));

    // No hold is left behind: every unit not under contract can be placed.
    for (d, (capacity, country)) in [&a, &b].into_iter().zip(CAPACITY) {
        let free = u64::from(capacity) - active_units(d);
        if free == 0 {
            continue;
        }
        // A hold expires after 5 s at the latest; a slow machine gets more.
        let units = free.to_string();
        let mut last = String::new();
        let placed = wait_for(Duration::from_secs(20), || {
            let args = [&["place"][..], &PLACE, &["--units", &units, "--country", country]].concat();
            consumers[0].ctl_json(&args).map_err(|e| last = e).ok()
        });
        assert!(placed.is_some(), "{free} free units of {} cannot be placed: {last}\n{}", d.name, d.log());
    }
}

#[test]
fn a_provider_killed_after_its_hold_costs_a_detour_not_a_dangling_contract() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let boot_node = Daemon::start(root, "consumer", &[]);
    let boot = vec![boot_node.addr()];
    let consumer = boot_node;
    // The plan prefers A and B; C and D are the next candidates.
    let mut a = Daemon::start(root, "a", &boot);
    let b = Daemon::start(root, "b", &boot);
    let c = Daemon::start(root, "c", &boot);
    let d = Daemon::start(root, "d", &boot);
    publish(&a, root, "a1", "DE", 1, "0.30");
    publish(&b, root, "b1", "FR", 1, "0.31");
    publish(&c, root, "c1", "NL", 1, "0.40");
    publish(&d, root, "d1", "BE", 1, "0.41");
    wait_for_offers(&consumer, 4);
    wait_for_peers(&consumer, 4);

    // B stops answering; A grants its hold, then is killed while the
    // placement still waits for B.
    signal(&b, "STOP");
    let started = Instant::now();
    let child = spawn_place(&consumer, &["--units", "2", "--spread", "providers"]);
    std::thread::sleep(Duration::from_millis(1_500));
    a.kill();
    let out = child.wait_with_output().unwrap();
    let elapsed = started.elapsed();
    signal(&b, "CONT");
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), consumer.log());
    let placed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(placed["placement_state"], "complete", "{placed}");
    let mut offers: Vec<&str> =
        placed["contracts"].as_array().unwrap().iter().map(|c| c["terms"]["offer_id"].as_str().unwrap()).collect();
    offers.sort_unstable();
    assert_eq!(offers, ["c1", "d1"], "{placed}");
    // Within the deadline (20 s), and well before it: A and B cost one slice each.
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    let shown = consumer.ctl_json(&["placements", "show", placed["placement_id"].as_str().unwrap()]).unwrap();
    assert!(shown["attempts"].as_u64().unwrap() >= 2, "{shown}");

    // Nothing dangles: A (back from the dead) and B (awake again) hold no
    // contract, and their units can be placed again.
    a.spawn();
    assert!(contracts(&a).is_empty(), "{:?}", contracts(&a));
    assert!(contracts(&b).is_empty(), "{:?}", contracts(&b));
    assert_eq!(contracts(&consumer).len(), 2);
    for country in ["DE", "FR"] {
        let mut last = String::new();
        let again = wait_for(Duration::from_secs(20), || {
            let args = [&["place"][..], &PLACE, &["--units", "1", "--country", country]].concat();
            consumer.ctl_json(&args).map_err(|e| last = e).ok()
        });
        assert!(again.is_some(), "the unit in {country} is not free again: {last}\n{}", consumer.log());
    }
}
