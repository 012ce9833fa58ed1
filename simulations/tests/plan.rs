//! Plans: the same scenario and seed give the same nodes, workload and
//! fault timeline; another seed gives another. Every shipped scenario is
//! valid, and bad scenario files are refused with the field named.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use fulcrum_sim::plan::{Action, Plan};
use fulcrum_sim::scenario::{Scenario, ScenarioError};

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/scenarios")
}

fn load(name: &str) -> Scenario {
    Scenario::load(&shipped().join(format!("{name}.toml"))).unwrap()
}

#[test]
fn same_seed_same_workload_and_fault_timeline() {
    for name in ["quickstart", "churn", "byzantine", "partition-heal"] {
        let s = load(name);
        let a = Plan::generate(&s, 42);
        let b = Plan::generate(&s, 42);
        assert_eq!(a, b, "{name}");
        // Keys included, which the plan file does not show.
        assert!(a.nodes.iter().zip(&b.nodes).all(|(x, y)| x.secret == y.secret));
        assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
        assert!(!a.events.is_empty(), "{name} has an empty timeline");

        let c = Plan::generate(&s, 43);
        assert_ne!(a.events, c.events, "{name}: another seed, another timeline");
        assert_ne!(a.nodes[0].node_key, c.nodes[0].node_key);
    }
}

#[test]
fn timelines_are_ordered_and_pick_nodes_that_are_up() {
    let s = load("churn");
    let plan = Plan::generate(&s, 7);
    assert!(plan.events.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    assert!(plan.events.iter().all(|e| e.at_ms < plan.duration_ms));
    let mut up: Vec<bool> = plan.nodes.iter().map(|n| n.joins_at_ms.is_none()).collect();
    let (mut kills, mut joins, mut places) = (0, 0, 0);
    for e in &plan.events {
        match &e.action {
            Action::Kill { nodes, .. } => {
                for n in nodes {
                    assert!(up[*n], "{n} killed while down at {}", e.at_ms);
                    up[*n] = false;
                }
                kills += 1;
            }
            Action::Restart { nodes, .. } => nodes.iter().for_each(|n| up[*n] = true),
            Action::Start { node } => {
                assert!(!up[*node]);
                assert!(plan.nodes[*node].joins_at_ms == Some(e.at_ms));
                assert!(plan.nodes[*node].bootstrap.iter().all(|b| up[*b]), "a joiner dials nodes that are up");
                up[*node] = true;
                joins += 1;
            }
            Action::Place(p) => {
                assert!(up[p.consumer], "placement by a consumer that is down");
                places += 1;
            }
            _ => {}
        }
    }
    assert!(kills > 0 && joins > 0 && places > 0, "{kills} {joins} {places}");
}

#[test]
fn adding_a_fault_leaves_the_nodes_and_offers_alone() {
    let s = load("quickstart");
    let mut with_fault = s.clone();
    with_fault.faults = load("churn").faults.into_iter().filter(|f| f.kind() == "kill").collect();
    assert!(!with_fault.faults.is_empty());
    let (a, b) = (Plan::generate(&s, 5), Plan::generate(&with_fault, 5));
    assert_eq!(a.nodes, b.nodes);
    let publish =
        |p: &Plan| p.events.iter().filter(|e| matches!(e.action, Action::Publish { .. })).cloned().collect::<Vec<_>>();
    assert_eq!(publish(&a), publish(&b));
}

#[test]
fn every_shipped_scenario_is_valid() {
    let found = fulcrum_sim::list(&shipped()).unwrap();
    let names: Vec<String> = found
        .iter()
        .map(|(p, s)| match s {
            Ok(s) => s.name.clone(),
            Err(e) => panic!("{}: {e}", p.display()),
        })
        .collect();
    for want in ["quickstart", "regional-100", "continental-1000", "partition-heal", "churn", "byzantine"] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
}

/// A valid scenario with one line replaced or added.
fn variant(replace: &str, with: &str) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(shipped().join("quickstart.toml")).unwrap();
    assert!(replace.is_empty() || text.contains(replace), "{replace}");
    let text = if replace.is_empty() { format!("{text}\n{with}\n") } else { text.replacen(replace, with, 1) };
    Scenario::parse(&text, Path::new("variant.toml"))
}

#[test]
fn dilation_stretches_every_duration_of_the_node_settings() {
    let s = variant("seed = 1", "seed = 1\ntime_dilation = 4").unwrap();
    assert_eq!(s.time_dilation, 4);
    assert_eq!(s.wall(1_500), std::time::Duration::from_millis(6_000));
    let plain = s.node.config("a".into(), String::new(), Vec::new(), 1);
    let slow = s.node.config("a".into(), String::new(), Vec::new(), 4);
    assert_eq!((plain.time_dilation, slow.time_dilation), (1, 4));
    // Set by the scenario and the daemon's defaults alike.
    for (name, a, b) in [
        ("hold_ttl", &plain.hold_ttl, &slow.hold_ttl),
        ("reply_timeout", &plain.reply_timeout, &slow.reply_timeout),
        ("place_deadline", &plain.place_deadline, &slow.place_deadline),
        ("checkpoint_interval", &plain.checkpoint_interval, &slow.checkpoint_interval),
        ("audit_interval", &plain.audit_interval, &slow.audit_interval),
        ("audit_grace", &plain.audit_grace, &slow.audit_grace),
        ("audit_recheck", &plain.audit_recheck, &slow.audit_recheck),
        ("evidence_republish", &plain.evidence_republish, &slow.evidence_republish),
        ("offer_ttl", &plain.offer_ttl, &slow.offer_ttl),
    ] {
        assert!(plain.ms(a) > 0, "{name}");
        assert_eq!(slow.ms(b), 4 * plain.ms(a), "{name}: {a} and {b}");
    }
    assert!(slow.validate().is_ok());
    // An offer lives at most a day, however slow time runs.
    let slowest = s.node.config("a".into(), String::new(), Vec::new(), 100);
    assert_eq!(slowest.ms(&slowest.offer_ttl), 24 * 3_600_000);
    assert!(slowest.validate().is_ok());
    // The plan is the same: only the clock it runs on changes.
    assert_eq!(Plan::generate(&s, 7), Plan::generate(&load("quickstart"), 7));
}

#[test]
fn bad_scenarios_are_refused_with_the_field_named() {
    let cases: &[(&str, &str, &str)] = &[
        ("providers = 3", "providers = 3\nnodez = 1", "unknown field `nodez`"),
        ("[link]", "[link]\nlatensy = \"1ms\"", "unknown field `latensy`"),
        ("providers = 3", "providers = 0", "nodes.providers"),
        ("duration = \"8s\"", "duration = \"0s\"", "duration"),
        ("duration = \"8s\"", "duration = \"eight\"", "duration"),
        ("distribution = \"normal\"", "distribution = \"pareto\"", "unknown variant `pareto`"),
        ("[link]", "[link]\nloss = 0.9", "link.loss"),
        ("country = \"DE\"", "country = \"Germany\"", "sites[0].country"),
        ("units = [10, 20]", "units = [20, 10]", "offers.units"),
        ("price = [\"0.20\", \"0.30\"]", "price = [\"0.30\", \"0.20\"]", "flavours[0].price"),
        ("countries = [[], [\"DE\"], [\"DE\", \"FR\"]]", "countries = [[\"XX1\"]]", "workload.countries[0]"),
        ("hold_ttl = \"10s\"", "hold_ttl = \"0s\"", "node"),
        ("seed = 1", "seed = 1\ntime_dilation = 0", "time_dilation"),
        ("seed = 1", "seed = 1\ntime_dilation = 101", "time_dilation"),
        ("", "[[faults]]\nkind = \"explode\"\nat = \"1s\"", "unknown variant `explode`"),
        (
            "",
            "[[faults]]\nkind = \"kill\"\nat = \"1s\"\ncount = 1\nrestrat_after = \"1s\"",
            "unknown field `restrat_after`",
        ),
        ("", "[[faults]]\nkind = \"kill\"\nat = \"9s\"\ncount = 1", "faults[0].at"),
        ("", "[[faults]]\nkind = \"kill\"\nat = \"1s\"\ncount = 5", "faults[0].count"),
        (
            "",
            "[[faults]]\nkind = \"partition\"\nat = \"1s\"\nheal_after = \"2s\"\ngroups = [0.5, 0.2]",
            "faults[0].groups",
        ),
        (
            "",
            "[[faults]]\nkind = \"churn\"\nat = \"2s\"\nuntil = \"1s\"\nleave_per_sec = 1.0\njoin_per_sec = 1.0",
            "faults[0].until",
        ),
        ("", "[[faults]]\nkind = \"link\"\nat = \"1s\"\nloss = 0.7", "faults[0].loss"),
        (
            "",
            "[[faults]]\nkind = \"flood-proposals\"\nat = \"1s\"\nduration = \"20s\"\nrate_per_sec = 10.0",
            "faults[0].duration",
        ),
    ];
    for (replace, with, field) in cases {
        let err = variant(replace, with).expect_err(with).to_string();
        assert!(err.contains(field), "{with:?}: {err:?} does not name {field}");
        assert!(err.contains("variant.toml"), "{err}");
    }
    // The unchanged file is fine.
    assert!(variant("", "").is_ok());
}
