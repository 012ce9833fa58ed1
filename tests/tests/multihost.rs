//! Five hosts, each a network namespace with its own address on one bridge,
//! each running a real `fulcrumd` over real TCP. Three providers, two
//! consumers placing contracts in a steady stream; mid-negotiation one
//! provider's host is cut off (link down) and another provider is killed
//! with SIGKILL; offers change on both sides of the cut; then the link is
//! healed and the dead provider restarted. Afterwards every offer book is
//! the same, every contract is held by both of its parties in the same
//! state (none lost, none twice), no placement that is not complete left an
//! active contract, every log verifies and no node accuses another.
//!
//! Needs root (network namespaces); elsewhere it says so and passes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fulcrum_e2e::netns::Lan;
use fulcrum_e2e::{Daemon, fulcrumctl, offer_file, wait_for};
use serde_json::Value;

fn array(v: Value, key: &str) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        other => other.get(key).and_then(Value::as_array).cloned().unwrap_or_default(),
    }
}

/// The offer book: (offer id, seq) of every live offer.
fn book(d: &Daemon) -> Option<BTreeSet<(String, u64)>> {
    let offers = array(d.ctl_json(&["offers", "list"]).ok()?, "offers");
    Some(offers.iter().filter_map(|o| Some((o["offer_id"].as_str()?.to_owned(), o["seq"].as_u64()?))).collect())
}

/// (contract id, state, role, consumer key, provider key) of a contract.
type ContractRow = (String, String, String, String, String);

/// Every contract a node lists.
fn contracts(d: &Daemon) -> Option<Vec<ContractRow>> {
    let list = array(d.ctl_json(&["contracts", "list"]).ok()?, "contracts");
    Some(
        list.iter()
            .map(|c| {
                let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                (
                    s(&c["contract_id"]),
                    s(&c["state"]),
                    s(&c["role"]),
                    s(&c["terms"]["consumer"]),
                    s(&c["terms"]["provider"]),
                )
            })
            .collect(),
    )
}

/// How many peers each node is connected to.
fn nodes_peers(nodes: &[&Daemon]) -> Vec<u64> {
    nodes
        .iter()
        .map(|d| d.ctl_json(&["status"]).ok().and_then(|s| s["connected_peers"].as_u64()).unwrap_or(0))
        .collect()
}

fn spawn_place(d: &Daemon) -> Child {
    Command::new(fulcrumctl())
        .arg("--socket")
        .arg(d.socket())
        .args(["--json", "place", "--units", "1", "--vcpu", "4", "--memory-mib", "8192", "--duration", "2h"])
        .args(["--country", "FR,NL,DE"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Checks the contracts of all nodes against each other; the first
/// disagreement, if any.
fn disagreement(nodes: &[&Daemon]) -> Option<String> {
    let mut by_key = BTreeMap::new();
    let mut lists = Vec::new();
    for d in nodes {
        by_key.insert(d.node_key(), d.name.clone());
        lists.push((d.name.clone(), contracts(d).ok_or(())));
    }
    // id -> (node, role) -> state
    let mut seen: BTreeMap<String, BTreeMap<(String, String), String>> = BTreeMap::new();
    for (name, list) in &lists {
        let Ok(list) = list else { return Some(format!("{name} does not answer")) };
        let mut ids = BTreeSet::new();
        for (id, state, role, consumer, provider) in list {
            if !ids.insert(id.clone()) {
                return Some(format!("{name} lists contract {id} twice"));
            }
            let party = if role == "provider" { provider } else { consumer };
            if by_key.get(party) != Some(name) {
                return Some(format!("{name} lists contract {id} as {role} but is not that party"));
            }
            seen.entry(id.clone()).or_default().insert((name.clone(), role.clone()), state.clone());
        }
    }
    for (name, list) in &lists {
        for (id, state, role, consumer, provider) in list.as_ref().unwrap() {
            let (other_key, other_role) =
                if role == "provider" { (consumer, "consumer") } else { (provider, "provider") };
            let other = &by_key[other_key];
            let theirs = seen[id].get(&(other.clone(), other_role.to_owned()));
            let signed_by_both = matches!(state.as_str(), "active" | "terminated" | "ended");
            match theirs {
                Some(s) if s == state => {}
                Some(s) => return Some(format!("contract {id}: {state} on {name}, {s} on {other}")),
                // The consumer's own pending or abandoned contracts need not be the provider's.
                None if role == "consumer" && !signed_by_both => {}
                None => return Some(format!("contract {id}: {state} on {name} ({role}), missing on {other}")),
            }
        }
    }
    None
}

#[test]
fn five_hosts_cut_kill_heal_converge_without_losing_a_contract() {
    let lan = match Lan::new(5) {
        Ok(lan) => lan,
        Err(why) => {
            eprintln!(
                "SKIPPED five_hosts_cut_kill_heal_converge_without_losing_a_contract: network namespaces cannot be made here ({why}); run the tests as root"
            );
            return;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let env = [("FULCRUM_PLACE_DEADLINE", "3s"), ("FULCRUM_CHECKPOINT_INTERVAL", "1s")];
    let de = lan.host(0).start(root, "de", &[], &env);
    let fr = lan.host(1).start(root, "fr", &[de.addr()], &env);
    let boot = vec![de.addr(), fr.addr()];
    let mut nl = lan.host(2).start(root, "nl", &boot, &env);
    let x = lan.host(3).start(root, "x", &boot, &env);
    let y = lan.host(4).start(root, "y", &boot, &env);
    for d in [&de, &fr, &nl, &x, &y] {
        assert!(d.addr().starts_with("/ip4/10.250."), "{} is not on its own host: {}", d.name, d.addr());
    }

    // FR is the cheapest, so most placements go there first.
    for (d, offer, country, price) in
        [(&de, "de-1", "DE", "0.50"), (&fr, "fr-1", "FR", "0.30"), (&nl, "nl-1", "NL", "0.40")]
    {
        let file = offer_file(root, offer, country, 30, price);
        let out = d.ctl(&["offers", "publish", file.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let first: BTreeSet<(String, u64)> = [("de-1", 1), ("fr-1", 1), ("nl-1", 1)].map(|(o, s)| (o.to_owned(), s)).into();
    for d in [&de, &fr, &nl, &x, &y] {
        let ok = wait_for(Duration::from_secs(30), || (book(d)? == first).then_some(()));
        assert!(ok.is_some(), "{} has {:?}, not {first:?}:\n{}", d.name, book(d), d.log());
    }
    // Kademlia usually makes a full mesh of five; two peers each are enough
    // for gossip, and consumers dial providers when they negotiate.
    let _ = wait_for(Duration::from_secs(20), || {
        nodes_peers(&[&de, &fr, &nl, &x, &y]).iter().all(|n| *n >= 4).then_some(())
    });
    let peers = nodes_peers(&[&de, &fr, &nl, &x, &y]);
    assert!(peers.iter().all(|n| *n >= 2), "connected peers of de, fr, nl, x, y: {peers:?}");

    // Placements in a steady stream from both consumers; FR's host is cut
    // while they run, NL is killed, offers change on both sides of the cut.
    let start = Instant::now();
    let at = |ms: u64| {
        let t = Duration::from_millis(ms);
        if let Some(wait) = t.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    };
    let mut runs = Vec::new();
    for k in 0..24u64 {
        // A steady stream, then a burst of eight at once with FR's host cut
        // 20 ms after the last of them (holds granted, commits under way), then the stream
        // again, with NL killed as it resumes.
        match k {
            0..8 => at(k * 120),
            8 => at(1_000),
            16 => {
                at(1_500);
                nl.kill();
            }
            17.. => at(1_500 + (k - 16) * 120),
            _ => {}
        }
        runs.push(spawn_place(if k % 2 == 0 { &x } else { &y }));
        if k == 15 {
            std::thread::sleep(Duration::from_millis(20));
            lan.cut(1);
        }
    }
    // While FR is away: DE withdraws its offer, FR publishes a new one.
    assert!(de.ctl(&["offers", "withdraw", "de-1"]).status.success());
    let file = offer_file(root, "fr-2", "FR", 5, "0.35");
    assert!(fr.ctl(&["offers", "publish", file.to_str().unwrap()]).status.success());
    at(6_000);
    nl.spawn();
    lan.heal(1);

    let mut placed = Vec::new();
    let mut failed = 0;
    for child in runs {
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["placement_state"], "complete", "{v}");
            for c in array(v, "contracts") {
                placed.push(c["contract_id"].as_str().unwrap().to_owned());
            }
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(err.trim().lines().count(), 1, "a failed placement says one clear line: {err}");
            failed += 1;
        }
    }
    eprintln!("placements: {} complete, {failed} failed ({:.1} s)", placed.len(), start.elapsed().as_secs_f64());
    assert!(!placed.is_empty(), "no placement succeeded at all:\n{}", x.log());

    // Offer books converge: DE's withdrawal reached FR, FR's new offer reached everyone.
    let last: BTreeSet<(String, u64)> = [("fr-1", 1), ("fr-2", 1), ("nl-1", 1)].map(|(o, s)| (o.to_owned(), s)).into();
    let nodes = [&de, &fr, &nl, &x, &y];
    for d in nodes {
        let ok = wait_for(Duration::from_secs(60), || (book(d)? == last).then_some(()));
        assert!(ok.is_some(), "{} has {:?} after the heal, not {last:?}:\n{}", d.name, book(d), d.log());
    }

    eprintln!("offer books converged ({:.1} s)", start.elapsed().as_secs_f64());

    // Contracts: both parties agree on every one, none is listed twice.
    let agreed = wait_for(Duration::from_secs(90), || disagreement(&nodes).is_none().then_some(()));
    assert!(agreed.is_some(), "the parties never agreed: {:?}", disagreement(&nodes));
    eprintln!("contracts agree ({:.1} s)", start.elapsed().as_secs_f64());
    for d in [&x, &y] {
        let list = contracts(d).unwrap();
        let active: BTreeSet<&String> = list.iter().filter(|c| c.1 == "active").map(|c| &c.0).collect();
        // Every placement reported complete is active on both sides.
        for id in placed.iter().filter(|id| list.iter().any(|c| &c.0 == *id)) {
            assert!(active.contains(id), "{} reported contract {id} placed, but it is not active", d.name);
        }
        // No placement that is not complete keeps an active contract.
        let placements = array(d.ctl_json(&["placements", "list"]).unwrap(), "placements");
        for p in &placements {
            let state = p["state"].as_str().unwrap();
            assert_ne!(state, "committing", "{} has a placement still committing: {p}", d.name);
            let ids = array(p.clone(), "contracts");
            let ids: Vec<&str> = ids.iter().filter_map(|c| c["contract_id"].as_str()).collect();
            for id in ids {
                let is_active = active.contains(&id.to_owned());
                assert_eq!(is_active, state == "complete", "{}: contract {id} of a {state} placement", d.name);
            }
        }
    }
    for d in nodes {
        let mut states: BTreeMap<(String, String), usize> = BTreeMap::new();
        for (_, state, role, ..) in contracts(d).unwrap() {
            *states.entry((role, state)).or_default() += 1;
        }
        eprintln!("{}: contracts {states:?}", d.name);
    }
    let all_placed: usize = [&x, &y].iter().map(|d| contracts(d).unwrap().len()).sum();
    assert!(all_placed >= placed.len());
    for id in &placed {
        let holders = [&x, &y].iter().filter(|d| contracts(d).unwrap().iter().any(|c| &c.0 == id)).count();
        assert_eq!(holders, 1, "contract {id} is held by {holders} consumers");
    }

    // Every log verifies; nobody holds evidence against anybody.
    for d in nodes {
        let report = d.ctl_json(&["audit", "verify"]).unwrap_or_else(|e| panic!("{}: {e}\n{}", d.name, d.log()));
        assert!(report["first_failure"].is_null(), "{}: {report}", d.name);
        let evidence = array(d.ctl_json(&["audit", "evidence"]).unwrap(), "evidence");
        assert!(evidence.is_empty(), "{} holds evidence against an honest node: {evidence:?}", d.name);
    }
}
