//! The baseline (bare gossipsub on the simulator's network) on the
//! quickstart scenario: every message reaches every other node, no faster
//! than the link allows, and the report is written.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use fulcrum_sim::Scenario;
use fulcrum_sim::baseline::{self, BaselineOptions};

#[test]
fn quickstart_baseline_reaches_every_node_at_link_speed() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/scenarios/quickstart.toml");
    let scenario = Scenario::load(&path).unwrap();
    let out = tempfile::tempdir().unwrap();
    let options = BaselineOptions { seed: None, messages: Some(20) };
    let b = baseline::run_and_write(&scenario, &options, out.path()).unwrap();

    let nodes = (scenario.nodes.providers + scenario.nodes.consumers) as usize;
    assert_eq!(b.nodes, nodes);
    let p = &b.propagation;
    assert_eq!((p.messages, p.publish_failures), (20, 0), "{p:?}");
    assert_eq!(p.deliveries, 20 * (nodes - 1), "{p:?}");
    assert_eq!(p.reached, p.deliveries, "{p:?}");
    assert_eq!(p.reached_fraction, 1.0);
    // Every arrival crossed at least one link: the slowest of them cannot
    // beat the one-way latency.
    let l = p.latency.as_ref().unwrap();
    assert_eq!(l.count, p.deliveries);
    assert!(l.p99_ms >= scenario.link.latency.0 as f64, "{l:?}");
    assert!(b.payload_bytes > 100 && b.traffic.bytes_per_node_mean > 0.0 && b.host.cpu_s > 0.0, "{b:?}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("baseline.json")).unwrap()).unwrap();
    assert_eq!(json["scenario"], "quickstart");
    assert_eq!(json["propagation"]["reached_fraction"], 1.0);
    let md = std::fs::read_to_string(out.path().join("baseline.md")).unwrap();
    assert!(md.contains("## Propagation") && md.contains("## Traffic per node"));
}
