//! The quickstart scenario, run in-process with real nodes: its report says
//! every node got every offer, contracts were made, every log verifies
//! offline, and nothing was oversold.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use fulcrum_sim::{RunOptions, Scenario};

#[test]
fn quickstart_reaches_every_node_makes_contracts_and_verifies_every_log() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/scenarios/quickstart.toml");
    let scenario = Scenario::load(&path).unwrap();
    let out = tempfile::tempdir().unwrap();
    let options = RunOptions { seed: None, progress: false, work_dir: None };
    let report = fulcrum_sim::simulate(&scenario, &options, out.path()).unwrap();

    let nodes = (scenario.nodes.providers + scenario.nodes.consumers) as usize;
    assert_eq!(report.nodes.max_up, nodes);

    // Every offer version reached every node.
    let p = &report.propagation;
    let offers = scenario.nodes.providers * scenario.offers.per_provider;
    assert!(p.versions >= offers as usize, "{p:?}");
    assert_eq!(p.deliveries, p.versions * (nodes - 1), "{p:?}");
    assert_eq!(p.reached, p.deliveries, "{p:?}");
    assert!(p.latency.as_ref().is_some_and(|l| l.count > 0 && l.p50_ms > 0.0), "{p:?}");

    // Contracts were made, and each is in its provider's log.
    assert!(report.negotiation.placed > 0, "{:?}", report.negotiation);
    assert!(report.contracts.from_placements > 0);
    assert!(report.contracts.in_provider_logs as u64 >= report.contracts.from_placements, "{:?}", report.contracts);
    assert_eq!(report.safety.contracts_missing_at_provider, 0);

    // Every node's log verifies offline; nothing oversold; no one accused.
    let s = &report.safety;
    assert_eq!((s.logs_verified, s.logs_failed), (nodes, 0), "{:?}", s.log_failures);
    assert!(s.unreadable_logs.is_empty() && s.node_failures.is_empty(), "{s:?}");
    assert_eq!(s.oversells, 0, "{:?}", s.oversell_details);
    assert_eq!(report.byzantine.false_accusations, 0);
    assert_eq!(report.byzantine.forged_offers_accepted, 0);

    // The report is on disk in both forms, with its charts and the plan.
    for file in [
        "report.json",
        "report.md",
        "plan.json",
        "propagation_cdf.svg",
        "negotiation_latency.svg",
        "contracts_per_second.svg",
        "memory.svg",
    ] {
        let text = std::fs::read_to_string(out.path().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(!text.is_empty(), "{file} is empty");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(json["safety"]["oversells"], 0);
    assert_eq!(json["scenario"], "quickstart");
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(md.contains("## Offer propagation") && md.contains("## Safety"));
}

/// The same scenario with time running three times slower than the wall
/// clock: links, timeline and node timers stretch together, so the run
/// succeeds as it does undilated and the report keeps simulated time (no
/// offer arrives faster than the link's one-way latency allows).
#[test]
fn a_dilated_quickstart_runs_and_reports_simulated_time() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/scenarios/quickstart.toml");
    let mut scenario = Scenario::load(&path).unwrap();
    scenario.time_dilation = 3;
    let out = tempfile::tempdir().unwrap();
    let options = RunOptions { seed: None, progress: false, work_dir: None };
    let report = fulcrum_sim::simulate(&scenario, &options, out.path()).unwrap();
    assert_eq!(report.time_dilation, 3);
    let p = &report.propagation;
    assert_eq!(p.reached, p.deliveries, "{p:?}");
    let latency = p.latency.as_ref().expect("propagation samples");
    // One-way latency is 20 ms (normal, 5 ms jitter): an offer crosses at
    // least one link. Undilated links read in simulated time would show a
    // third of that.
    assert!(latency.p50_ms >= 15.0, "{latency:?}");
    assert!(report.negotiation.placed > 0, "{:?}", report.negotiation);
    let s = &report.safety;
    assert_eq!((s.logs_failed, s.oversells), (0, 0), "{s:?}");
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(md.contains("Time ran 3 times slower than the wall clock"), "{md}");
}
