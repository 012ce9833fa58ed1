//! The metrics endpoint of real daemons: health at once, readiness only with
//! a peer and a signed checkpoint, and counters that follow an offer and a
//! contract on both sides; a taken metrics address is a clear start-up error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fulcrum_e2e::{Daemon, metric_value, offer_file, wait_for};

/// Waits until `series` on `d` satisfies `ok`, and returns its value.
fn wait_metric(d: &Daemon, series: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let got = wait_for(Duration::from_secs(20), || d.metric(series).filter(|v| ok(*v)));
    got.unwrap_or_else(|| {
        let text = d.http_get("/metrics").map(|(_, t)| t).unwrap_or_default();
        panic!("{}: {series} never reached the expected value; scrape:\n{text}\nlog:\n{}", d.name, d.log())
    })
}

#[test]
fn readiness_and_metrics_follow_peers_offers_and_contracts() {
    let tmp = tempfile::tempdir().unwrap();
    let provider = Daemon::start(tmp.path(), "provider", &[]);

    // Alive at once, but not ready alone.
    let healthy = wait_for(Duration::from_secs(10), || {
        (provider.http_get("/healthz").ok()? == (200, "ok\n".into())).then_some(())
    });
    assert!(healthy.is_some(), "{:?}", provider.http_get("/healthz"));
    let (status, body) = provider.http_get("/readyz").unwrap();
    assert_eq!((status, body.as_str()), (503, "no connected peer\n"));
    assert_eq!(provider.http_get("/nothing-here").unwrap().0, 404);

    // Ready on both sides once a second node joins.
    let consumer = Daemon::start(tmp.path(), "consumer", &[provider.addr()]);
    for d in [&provider, &consumer] {
        let ready = wait_for(Duration::from_secs(20), || (d.http_get("/readyz").ok()?.0 == 200).then_some(()));
        assert!(ready.is_some(), "{} never ready: {:?}\n{}", d.name, d.http_get("/readyz"), d.log());
        assert!(d.metric("fulcrum_peers_connected").unwrap() >= 1.0);
    }

    // An offer and a contract.
    let file = offer_file(tmp.path(), "fra1-c8m32", "DE", 10, "0.42");
    assert!(provider.ctl(&["offers", "publish", file.to_str().unwrap()]).status.success());
    let seen = wait_for(Duration::from_secs(20), || {
        let v = consumer.ctl_json(&["offers", "list"]).ok()?;
        (!v.as_array()?.is_empty()).then_some(())
    });
    assert!(seen.is_some(), "the consumer never saw the offer:\n{}", consumer.log());
    let placed = consumer
        .ctl_json(&["place", "--units", "2", "--vcpu", "8", "--memory-mib", "16384", "--duration", "2h"])
        .unwrap_or_else(|e| panic!("place failed: {e}\n{}", consumer.log()));
    assert!(placed["contracts"][0]["contract_id"].is_string(), "{placed}");

    // Counted on both sides, each in its role.
    for (d, role) in [(&provider, "provider"), (&consumer, "consumer")] {
        wait_metric(d, &format!("fulcrum_contracts_total{{role=\"{role}\",event=\"active\"}}"), |v| v >= 1.0);
        wait_metric(d, "fulcrum_contracts_active", |v| v >= 1.0);
        wait_metric(d, "fulcrum_offers_known", |v| v >= 1.0);
        wait_metric(d, "fulcrum_log_records", |v| v >= 1.0);
        wait_metric(d, "fulcrum_log_fsync_seconds_count", |v| v >= 1.0);
        // Checkpoints (audit topic) or the offer (offers topic) arrived by gossip.
        let accepted = wait_for(Duration::from_secs(20), || {
            let (_, text) = d.http_get("/metrics").ok()?;
            let sum: f64 = ["offers", "audit"]
                .iter()
                .filter_map(|t| {
                    metric_value(&text, &format!("fulcrum_gossip_messages_total{{topic=\"{t}\",result=\"accept\"}}"))
                })
                .sum();
            (sum > 0.0).then_some(sum)
        });
        assert!(accepted.is_some(), "{}: no gossip accepted:\n{:?}", d.name, d.http_get("/metrics"));
        // libp2p's own metrics are in the same scrape.
        let (_, text) = d.http_get("/metrics").unwrap();
        assert!(text.contains("libp2p_swarm_connections_established_total{"), "{text}");
        assert!(text.ends_with("# EOF\n"));
        dashboard_queries_only_exported_series(&text);
    }
    assert!(wait_metric(&provider, "fulcrum_proposals_total{outcome=\"held\"}", |v| v >= 1.0) >= 1.0);
    wait_metric(&provider, "fulcrum_offers_own", |v| v == 1.0);
    wait_metric(&consumer, "fulcrum_offers_own", |v| v == 0.0);
}

#[test]
fn a_taken_metrics_address_is_a_clear_startup_error() {
    let tmp = tempfile::tempdir().unwrap();
    let first = Daemon::start(tmp.path(), "first", &[]);
    let dir = tmp.path().join("second");
    let init =
        std::process::Command::new(fulcrum_e2e::fulcrumd()).args(["init", "--data-dir"]).arg(&dir).output().unwrap();
    assert!(init.status.success());
    let taken = format!("127.0.0.1:{}", first.metrics_port);
    let out = std::process::Command::new(fulcrum_e2e::fulcrumd())
        .args(["run", "--data-dir"])
        .arg(&dir)
        .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
        .env("FULCRUM_METRICS_LISTEN", &taken)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: ") && last.contains(&taken) && last.contains("metrics_listen"), "{err}");
}

/// Every series the example Grafana dashboard queries is one a node exports,
/// so the dashboard cannot silently drift from the metric names.
fn dashboard_queries_only_exported_series(scrape: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/grafana/fulcrum-node.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "the dashboard has too few queries: {exprs:?}");
    let exported: std::collections::BTreeSet<&str> =
        scrape.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
    for expr in &exprs {
        for name in series_names(expr) {
            assert!(exported.contains(name.as_str()), "dashboard query `{expr}` uses {name}, which no node exports");
        }
    }
}

fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// Metric names in a PromQL expression: identifiers of ours or libp2p's.
fn series_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = ["fulcrum_", "libp2p_"].iter().filter_map(|p| rest.find(p)).min() {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}
