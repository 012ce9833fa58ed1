//! `fulcrum-sim`: runs a scenario of many real Fulcrum nodes in one process
//! and writes a report (JSON, Markdown, SVG charts).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fulcrum_sim::{RunOptions, Scenario};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(name = "fulcrum-sim", version, about = "Runs many real Fulcrum nodes under a scripted workload and faults")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a scenario and write its report.
    Run {
        /// Scenario file, or the name of one in configs/scenarios.
        scenario: String,
        /// Seed of the workload and faults (default: the scenario's).
        #[arg(long)]
        seed: Option<u64>,
        /// Where the report goes (default: sim-reports/<scenario>-<seed>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where the nodes' storage goes (default: a temporary directory, removed afterwards).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Node log filter, written to <out>/nodes.log.
        #[arg(long, default_value = "warn,fulcrum_sim=info,yamux=error")]
        log_level: String,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// Run simulated time this many times slower than the wall clock
        /// (default: the scenario's `time_dilation`).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
        dilation: Option<u32>,
    },
    /// Run bare libp2p gossipsub on the scenario's network (same nodes, links,
    /// gossipsub configuration and payload size) and write baseline.json and
    /// baseline.md, to compare offer propagation with.
    Baseline {
        /// Scenario file, or the name of one in configs/scenarios.
        scenario: String,
        /// Seed of the network and the nodes (default: the scenario's).
        #[arg(long)]
        seed: Option<u64>,
        /// Where the report goes (default: sim-reports/<scenario>-<seed>-baseline).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Messages to publish, evenly over the timeline from random providers
        /// (default: the offer versions the scenario's plan publishes, at its times).
        #[arg(long)]
        messages: Option<usize>,
        /// Run simulated time this many times slower than the wall clock
        /// (default: the scenario's `time_dilation`).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
        dilation: Option<u32>,
    },
    /// List the shipped scenarios.
    List {
        /// Directory of scenario files.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(ToString::to_string).collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::List { dir } => {
            let dir = dir.unwrap_or_else(fulcrum_sim::scenarios_dir);
            for (path, scenario) in fulcrum_sim::list(&dir)? {
                match scenario {
                    Ok(s) => println!(
                        "{:<18} {:>5} nodes {:>6}  {}",
                        s.name,
                        s.nodes.providers + s.nodes.consumers,
                        String::from(s.duration),
                        s.description
                    ),
                    Err(e) => println!("{:<18} invalid: {e}", path.display()),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Baseline { scenario, seed, out, messages, dilation } => {
            let path = fulcrum_sim::resolve(&scenario);
            let mut scenario = Scenario::load(&path)?;
            scenario.time_dilation = dilation.unwrap_or(scenario.time_dilation);
            let seed_used = seed.unwrap_or(scenario.seed);
            let out =
                out.unwrap_or_else(|| PathBuf::from(format!("sim-reports/{}-{seed_used}-baseline", scenario.name)));
            eprintln!(
                "running bare gossipsub on {} ({} nodes) with seed {seed_used}",
                scenario.name,
                scenario.nodes.providers + scenario.nodes.consumers
            );
            let options = fulcrum_sim::baseline::BaselineOptions { seed, messages };
            let baseline = fulcrum_sim::baseline::run_and_write(&scenario, &options, &out)?;
            println!("{}", baseline.summary());
            eprintln!("report: {}", out.join("baseline.md").display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { scenario, seed, out, work_dir, log_level, quiet, dilation } => {
            let path = fulcrum_sim::resolve(&scenario);
            let mut scenario = Scenario::load(&path)?;
            scenario.time_dilation = dilation.unwrap_or(scenario.time_dilation);
            let seed_used = seed.unwrap_or(scenario.seed);
            let out = out.unwrap_or_else(|| PathBuf::from(format!("sim-reports/{}-{seed_used}", scenario.name)));
            std::fs::create_dir_all(&out)?;
            let filter =
                EnvFilter::try_new(&log_level).map_err(|e| anyhow::anyhow!("--log-level {log_level:?}: {e}"))?;
            let log = std::fs::File::create(out.join("nodes.log"))?;
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(log))
                .init();
            use std::io::IsTerminal;
            let options = RunOptions { seed, progress: !quiet && std::io::stderr().is_terminal(), work_dir };
            let slowed = match scenario.time_dilation {
                1 => String::new(),
                k => format!(", time {k}x slower than the wall clock"),
            };
            eprintln!(
                "running {} ({} nodes, {}{slowed}) with seed {seed_used}",
                scenario.name,
                scenario.nodes.providers + scenario.nodes.consumers,
                String::from(scenario.duration)
            );
            let report = fulcrum_sim::simulate(&scenario, &options, &out)?;
            print_summary(&report);
            println!("report: {}", out.join("report.md").display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_summary(r: &fulcrum_sim::Report) {
    let p = &r.propagation;
    if let Some(l) = &p.latency {
        println!(
            "offer propagation  p50 {:.0} ms  p95 {:.0} ms  p99 {:.0} ms  (hop bound {:.0} ms), reached {:.2}%",
            l.p50_ms,
            l.p95_ms,
            l.p99_ms,
            p.hop_bound.bound_ms,
            p.reached_fraction * 100.0
        );
    }
    if let Some(s) = &r.late_joiners.sync {
        println!(
            "late joiners       sync p50 {:.0} ms  max {:.0} ms (largest book {})",
            s.p50_ms, s.max_ms, r.late_joiners.largest_book
        );
    }
    for c in &r.convergence {
        match c.converged_ms {
            Some(ms) => println!("after heal         converged in {ms:.0} ms"),
            None => println!("after heal         not converged ({:.2}%)", c.converged_fraction * 100.0),
        }
    }
    let n = &r.negotiation;
    println!(
        "placements         {} asked, {} placed ({:.1}%), {} contracts, {:.2}/s",
        n.placements,
        n.placed,
        n.success_rate * 100.0,
        r.contracts.from_placements,
        r.contracts.per_second_mean
    );
    println!(
        "safety             oversells {}, logs verified {} ok / {} failed, equivocations detected {}/{}, forged accepted {}",
        r.safety.oversells,
        r.safety.logs_verified,
        r.safety.logs_failed,
        r.byzantine.equivocations_detected,
        r.byzantine.equivocations_injected,
        r.byzantine.forged_offers_accepted
    );
    println!(
        "memory             peak {:.0} MiB, {:.2} MiB per node; wall time {:.1} s",
        r.memory.peak_mib, r.memory.per_node_mib, r.wall_time_s
    );
}
