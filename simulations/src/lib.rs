//! `fulcrum-sim`, the network simulation harness: many real nodes in one
//! process under a scripted workload and faults, with a report.
//!
//! - [`scenario`]: scenario files (TOML), checked field by field.
//! - [`plan`]: a scenario expanded with a seed into nodes and a timeline;
//!   the same seed gives the same plan.
//! - [`link`]: the simulated network: libp2p's memory transport with
//!   latency, loss, bandwidth and partitions applied to what crosses links.
//! - [`cluster`]: the real `Node` of every simulated node, started, crashed,
//!   stopped and restarted from its storage.
//! - [`byzantine`]: forged offers, proposal floods and rewritten logs.
//! - [`observe`]: what the nodes report as it happens (offer arrivals).
//! - [`run`]: performs a plan and collects what every node holds.
//! - [`host`]: memory, CPU time and load of the machine running it all.
//! - [`analysis`], [`report`], [`svg`]: the figures, as JSON, Markdown and charts.
//! - [`baseline`]: bare gossipsub on the same network, to compare propagation with.

pub mod analysis;
pub mod baseline;
pub mod byzantine;
pub mod cluster;
pub mod host;
pub mod link;
pub mod observe;
pub mod plan;
pub mod report;
pub mod run;
pub mod scenario;
pub mod svg;

use std::path::{Path, PathBuf};

pub use plan::Plan;
pub use report::Report;
pub use run::RunOptions;
pub use scenario::Scenario;

/// The federation simulated nodes belong to (an open one).
pub const FEDERATION: &str = "sim";

/// Runs `scenario`, writes the report, charts and plan to `out`, and
/// returns the report.
pub fn simulate(scenario: &Scenario, options: &RunOptions, out: &Path) -> anyhow::Result<Report> {
    let outcome = run::run(scenario, options)?;
    let (report, charts) = analysis::analyse(scenario, &outcome);
    report.write(&charts, &outcome.plan, out)?;
    Ok(report)
}

/// The shipped scenarios: `configs/scenarios` under the current directory,
/// else in the source tree this was built from.
pub fn scenarios_dir() -> PathBuf {
    let here = PathBuf::from("configs/scenarios");
    if here.is_dir() { here } else { Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/scenarios") }
}

/// Every scenario file in `dir`, sorted by name, each read and checked.
pub fn list(dir: &Path) -> anyhow::Result<Vec<(PathBuf, Result<Scenario, scenario::ScenarioError>)>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    Ok(files
        .into_iter()
        .map(|p| {
            let s = Scenario::load(&p);
            (p, s)
        })
        .collect())
}

/// A scenario given as a path, or as the name of a shipped one.
pub fn resolve(arg: &str) -> PathBuf {
    let path = PathBuf::from(arg);
    if path.exists() || arg.contains('/') || arg.ends_with(".toml") {
        return path;
    }
    scenarios_dir().join(format!("{arg}.toml"))
}
