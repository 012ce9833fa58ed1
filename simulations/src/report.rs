//! The report of a run: its figures as JSON (`report.json`), as Markdown
//! (`report.md`) and as SVG charts, written to the output directory with
//! the plan the run performed (`plan.json`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use crate::plan::Plan;
use crate::svg::{Chart, Series, Style};

/// Nearest-rank percentiles, ms.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

/// Node counts.
#[derive(Debug, Clone, Serialize)]
pub struct NodeCounts {
    /// Providers at the start.
    pub providers: u32,
    /// Consumers at the start.
    pub consumers: u32,
    /// Nodes that joined later.
    pub joined_later: usize,
    /// Most nodes up at once.
    pub max_up: usize,
    /// Connections between nodes when the timeline started.
    pub connections_at_start: u64,
    /// A Byzantine peer took part.
    pub byzantine_peer: bool,
}

/// The scenario's link model.
#[derive(Debug, Clone, Serialize)]
pub struct LinkSummary {
    /// One-way latency (median), ms.
    pub latency_ms: u64,
    /// Spread, ms.
    pub jitter_ms: u64,
    /// Distribution.
    pub distribution: String,
    /// Loss.
    pub loss: f64,
    /// Bandwidth (0: unlimited).
    pub bandwidth_mbps: u32,
}

/// The fewest hops gossip needs, and what it costs at the link latency.
#[derive(Debug, Clone, Serialize)]
pub struct HopBound {
    /// Nodes to reach (mean over versions).
    pub nodes: usize,
    /// Gossipsub's mesh degree D.
    pub mesh_degree: usize,
    /// Hops.
    pub hops: u32,
    /// One-way latency per hop, ms.
    pub link_latency_ms: f64,
    /// Hops times latency, ms.
    pub bound_ms: f64,
    /// Measured p99 over the bound.
    pub p99_over_bound: Option<f64>,
}

/// Offer propagation.
#[derive(Debug, Clone, Serialize)]
pub struct Propagation {
    /// Offer versions measured.
    pub versions: usize,
    /// (node, version) pairs that should arrive.
    pub deliveries: usize,
    /// Pairs that arrived (that version or a newer one).
    pub reached: usize,
    /// `reached / deliveries`.
    pub reached_fraction: f64,
    /// Publication to arrival.
    pub latency: Option<Percentiles>,
    /// Versions published during a partition (measured as convergence).
    pub excluded_during_partition: usize,
    /// The hop lower bound.
    pub hop_bound: HopBound,
}

/// One late joiner.
#[derive(Debug, Clone, Serialize)]
pub struct Joiner {
    /// Node.
    pub name: String,
    /// Role.
    pub role: String,
    /// When it joined, s into the timeline.
    pub joined_at_s: f64,
    /// Offers in the federation's book when it joined.
    pub offers_to_sync: usize,
    /// Of those, how many it got.
    pub synced: usize,
    /// Time until it had all of them.
    pub sync_ms: Option<f64>,
}

/// Late joiners' sync.
#[derive(Debug, Clone, Serialize)]
pub struct LateJoiners {
    /// Each joiner.
    pub joiners: Vec<Joiner>,
    /// Sync times of those that got everything.
    pub sync: Option<Percentiles>,
    /// The largest book a joiner had to sync.
    pub largest_book: usize,
}

/// Convergence of offer books after a partition heals.
#[derive(Debug, Clone, Serialize)]
pub struct Convergence {
    /// When the partition began, s into the timeline.
    pub partitioned_at_s: f64,
    /// When it healed.
    pub healed_at_s: f64,
    /// Nodes up from the heal to the end.
    pub nodes: usize,
    /// Offers in the book at the heal.
    pub offers: usize,
    /// Versions published while partitioned.
    pub published_during_partition: usize,
    /// Share of (node, offer) pairs current by the end.
    pub converged_fraction: f64,
    /// Time from the heal until every node held every offer's current version.
    pub converged_ms: Option<f64>,
}

/// Placements.
#[derive(Debug, Clone, Serialize)]
pub struct Negotiation {
    /// Asked.
    pub placements: usize,
    /// Answered with contracts.
    pub placed: usize,
    /// Answered without (nothing fitted, providers refused, deadline).
    pub not_placed: usize,
    /// Not answered, or the consumer was down.
    pub failed: usize,
    /// `placed / placements`.
    pub success_rate: f64,
    /// Request to answer, placed ones.
    pub latency: Option<Percentiles>,
    /// Request to answer, all answered ones.
    pub latency_all: Option<Percentiles>,
    /// Why placements were not made, grouped.
    pub reasons: BTreeMap<String, usize>,
}

/// Contracts.
#[derive(Debug, Clone, Serialize)]
pub struct Contracts {
    /// Distinct contracts in providers' logs.
    pub in_provider_logs: usize,
    /// Contracts placements reported.
    pub from_placements: u64,
    /// Seconds of workload.
    pub window_s: f64,
    /// Contracts per second over the workload.
    pub per_second_mean: f64,
    /// Most contracts in one second.
    pub per_second_peak: u32,
}

/// Safety.
#[derive(Debug, Clone, Serialize)]
pub struct Safety {
    /// Oversells found in providers' logs (must be 0).
    pub oversells: usize,
    /// Each one.
    pub oversell_details: Vec<String>,
    /// Consumer contracts absent from their (honest) provider's log.
    pub contracts_missing_at_provider: usize,
    /// Node logs whose export verified.
    pub logs_verified: usize,
    /// Honest node logs whose export did not verify.
    pub logs_failed: usize,
    /// Rewritten logs that failed verification, as they must.
    pub logs_failed_as_injected: usize,
    /// Each failure.
    pub log_failures: Vec<String>,
    /// Logs that could not be read back.
    pub unreadable_logs: Vec<String>,
    /// Nodes whose event loop stopped by itself.
    pub node_failures: Vec<String>,
}

/// Detection of one equivocation.
#[derive(Debug, Clone, Serialize)]
pub struct Detection {
    /// The node that rewrote its log.
    pub node: String,
    /// Nodes holding evidence against it at the end.
    pub holders: usize,
    /// Nodes up at the end.
    pub live_nodes: usize,
}

/// What became of the proposals of a flood.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FloodCounts {
    /// Proposals sent.
    pub proposals: u64,
    /// Answered with a hold.
    pub held: u64,
    /// Refused as rate limited.
    pub rate_limited: u64,
    /// Refused otherwise.
    pub refused: u64,
    /// Not answered.
    pub unanswered: u64,
    /// Not sent for want of a connection (the peer was cut off).
    pub not_connected: u64,
    /// Refusals other than rate limiting, by reject code.
    pub refusals: BTreeMap<String, u64>,
}

/// A proposal flood.
#[derive(Debug, Clone, Serialize)]
pub struct Flood {
    /// Its proposals.
    #[serde(flatten)]
    pub counts: FloodCounts,
    /// Honest placements' success while flooding.
    pub honest_success_during: Option<f64>,
    /// And otherwise.
    pub honest_success_outside: Option<f64>,
}

/// Byzantine behaviour and its detection.
#[derive(Debug, Clone, Serialize)]
pub struct Byzantine {
    /// Forged offers gossiped.
    pub forged_offers_injected: u64,
    /// Forged offers that entered any book (must be 0).
    pub forged_offers_accepted: u64,
    /// Offer gossip rejected by validation, over all nodes.
    pub offers_rejected_at_validation: u64,
    /// Logs rewritten.
    pub equivocations_injected: usize,
    /// Of those, caught by at least one node.
    pub equivocations_detected: usize,
    /// Each.
    pub detections: Vec<Detection>,
    /// Evidence held against nodes that did nothing wrong (must be 0).
    pub false_accusations: usize,
    /// Evidence records in each node's log at the end, mean.
    pub evidence_records_per_node_mean: f64,
    /// And most.
    pub evidence_records_per_node_max: u64,
    /// Offer versions providers signed after rewriting their logs.
    pub offers_after_rewrite: usize,
    /// Times another node took one of those in (those that reuse a seq of
    /// the lost history are refused as equivocation).
    pub offers_after_rewrite_accepted: usize,
    /// The flood, if any.
    pub flood: Option<Flood>,
}

/// Traffic per node.
#[derive(Debug, Clone, Serialize)]
pub struct Traffic {
    /// Bytes in and out, mean.
    pub bytes_per_node_mean: f64,
    /// Bytes in and out, most.
    pub bytes_per_node_max: f64,
    /// Bytes in and out per second up, mean.
    pub bytes_per_node_per_s_mean: f64,
    /// Transmissions in and out, mean.
    pub transmissions_per_node_mean: f64,
    /// Gossip messages validated, mean.
    pub gossip_messages_per_node_mean: f64,
    /// Gossip messages validated, most.
    pub gossip_messages_per_node_max: f64,
    /// Of the gossip messages, those of the audit topic (checkpoints and
    /// evidence), mean.
    pub audit_messages_per_node_mean: f64,
    /// Of the gossip messages, how many were accepted, rejected (the
    /// sender loses peer score) and ignored, means per node.
    pub gossip_verdicts_per_node_mean: [f64; 3],
    /// Connections opened in all.
    pub connections: u64,
}

/// Memory.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// Before any node started, MiB.
    pub baseline_mib: f64,
    /// Peak, MiB.
    pub peak_mib: f64,
    /// Peak above the baseline per node, MiB.
    pub per_node_mib: f64,
    /// Most nodes up at once.
    pub nodes: usize,
    /// CPU time the run used, s.
    pub cpu_s: f64,
    /// CPUs of the machine.
    pub cpus: usize,
    /// The machine's one-minute load average at the start and the end (the
    /// nodes share the CPUs with whatever else runs).
    pub load_average: (f64, f64),
}

/// A fault as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct FaultEntry {
    /// s into the timeline.
    pub at_s: f64,
    /// What.
    pub what: String,
}

/// A target, and whether this run met it (None: not applicable here).
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    /// The target.
    pub name: String,
    /// What was measured.
    pub measured: String,
    /// Met.
    pub met: Option<bool>,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Its description.
    pub description: String,
    /// Seed.
    pub seed: u64,
    /// Nodes.
    pub nodes: NodeCounts,
    /// Timeline length, s.
    pub duration_s: f64,
    /// Wall time of the run, s.
    pub wall_time_s: f64,
    /// Simulated time ran this many times slower than the wall clock; every
    /// other time in the report is simulated time.
    pub time_dilation: u32,
    /// Time to start the nodes up from the start, s.
    pub startup_s: f64,
    /// Time for the mesh to form, s.
    pub warmup_s: f64,
    /// Link model.
    pub link: LinkSummary,
    /// Offer propagation.
    pub propagation: Propagation,
    /// Late joiners.
    pub late_joiners: LateJoiners,
    /// After each partition.
    pub convergence: Vec<Convergence>,
    /// Negotiation.
    pub negotiation: Negotiation,
    /// Contracts.
    pub contracts: Contracts,
    /// Safety.
    pub safety: Safety,
    /// Byzantine behaviour.
    pub byzantine: Byzantine,
    /// Traffic.
    pub traffic: Traffic,
    /// Memory.
    pub memory: Memory,
    /// Faults.
    pub faults: Vec<FaultEntry>,
    /// Targets.
    pub targets: Vec<TargetCheck>,
    /// How things were measured.
    pub methodology: Vec<String>,
}

/// Series for the charts.
#[derive(Debug, Clone, Default)]
pub struct Charts {
    /// Propagation samples, ms.
    pub propagation_ms: Vec<f64>,
    /// Placements: s, latency ms, placed.
    pub negotiation: Vec<(f64, f64, bool)>,
    /// Contracts per second.
    pub contracts_per_second: Vec<(f64, f64)>,
    /// Resident set, s and MiB.
    pub memory_mib: Vec<(f64, f64)>,
    /// Faults, s and label.
    pub faults: Vec<(f64, String)>,
    /// Timeline length, s.
    pub duration_s: f64,
    /// Hop bound, ms.
    pub hop_bound_ms: f64,
}

fn ms(p: &Option<Percentiles>) -> String {
    match p {
        Some(p) => format!("{:.1} / {:.1} / {:.1} (max {:.1}, n={})", p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms, p.count),
        None => "no samples".into(),
    }
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn mib(bytes: f64) -> String {
    if bytes >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", bytes / 1024.0 / 1024.0)
    } else {
        format!("{:.1} KiB", bytes / 1024.0)
    }
}

impl Report {
    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "# Simulation report: {}\n", self.scenario);
        if !self.description.is_empty() {
            let _ = writeln!(o, "{}\n", self.description);
        }
        let n = &self.nodes;
        let _ = writeln!(
            o,
            "Seed {}, {} providers and {} consumers at the start, {} joined later, at most {} up at once{}. \
             Nodes started in {:.1} s and made {} connections in {:.1} s more, then a timeline of {:.0} s; wall \
             time {:.1} s. \
             Links: {} ms one-way ({}, jitter {} ms), loss {}, bandwidth {}.\n",
            self.seed,
            n.providers,
            n.consumers,
            n.joined_later,
            n.max_up,
            if n.byzantine_peer { ", plus one Byzantine peer" } else { "" },
            self.startup_s,
            n.connections_at_start,
            self.warmup_s,
            self.duration_s,
            self.wall_time_s,
            self.link.latency_ms,
            self.link.distribution,
            self.link.jitter_ms,
            self.link.loss,
            if self.link.bandwidth_mbps == 0 {
                "unlimited".into()
            } else {
                format!("{} Mbit/s", self.link.bandwidth_mbps)
            },
        );
        if self.time_dilation > 1 {
            let _ = writeln!(
                o,
                "Time ran {} times slower than the wall clock, to give each node {} times the CPU per simulated \
                 second; every time in this report is simulated time (wall-clock time divided by {}), except the \
                 wall time and the CPU time of the process.\n",
                self.time_dilation, self.time_dilation, self.time_dilation
            );
        }
        let _ = writeln!(o, "## Targets\n\n| target | measured | met |\n|---|---|---|");
        for t in &self.targets {
            let met = match t.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "n/a",
            };
            let _ = writeln!(o, "| {} | {} | {met} |", t.name, t.measured);
        }

        let p = &self.propagation;
        let h = &p.hop_bound;
        let _ = writeln!(o, "\n## Offer propagation\n");
        let _ = writeln!(o, "| | |\n|---|---|");
        let _ = writeln!(o, "| offer versions | {} |", p.versions);
        let _ = writeln!(o, "| deliveries reached | {} of {} ({}) |", p.reached, p.deliveries, pct(p.reached_fraction));
        let _ = writeln!(o, "| latency p50 / p95 / p99, ms | {} |", ms(&p.latency));
        let _ = writeln!(
            o,
            "| hop lower bound | {} hops for {} nodes at mesh degree {}, x {:.0} ms = {:.0} ms |",
            h.hops, h.nodes, h.mesh_degree, h.link_latency_ms, h.bound_ms
        );
        if let Some(x) = h.p99_over_bound {
            let _ = writeln!(o, "| p99 / bound | {x:.2} |");
        }
        if p.excluded_during_partition > 0 {
            let _ = writeln!(o, "| published during a partition (see convergence) | {} |", p.excluded_during_partition);
        }
        let _ = writeln!(o, "\n![offer propagation CDF](propagation_cdf.svg)");

        let l = &self.late_joiners;
        if !l.joiners.is_empty() {
            let _ = writeln!(o, "\n## Late joiners\n\nSync time p50 / p95 / p99, ms: {}\n", ms(&l.sync));
            let _ = writeln!(
                o,
                "| node | role | joined at, s | offers to sync | synced | time to all, ms |\n|---|---|---|---|---|---|"
            );
            for j in l.joiners.iter().take(50) {
                let t = j.sync_ms.map_or_else(|| "not all".into(), |v| format!("{v:.0}"));
                let _ = writeln!(
                    o,
                    "| {} | {} | {:.1} | {} | {} | {t} |",
                    j.name, j.role, j.joined_at_s, j.offers_to_sync, j.synced
                );
            }
            if l.joiners.len() > 50 {
                let _ = writeln!(o, "\n({} more in report.json)", l.joiners.len() - 50);
            }
        }

        if !self.convergence.is_empty() {
            let _ = writeln!(
                o,
                "\n## Convergence after partitions\n\n| partitioned at, s | healed at, s | nodes | offers | published while partitioned | current by the end | converged after heal, ms |\n|---|---|---|---|---|---|---|"
            );
            for c in &self.convergence {
                let t = c.converged_ms.map_or_else(|| "not converged".into(), |v| format!("{v:.0}"));
                let _ = writeln!(
                    o,
                    "| {:.1} | {:.1} | {} | {} | {} | {} | {t} |",
                    c.partitioned_at_s,
                    c.healed_at_s,
                    c.nodes,
                    c.offers,
                    c.published_during_partition,
                    pct(c.converged_fraction)
                );
            }
        }

        let g = &self.negotiation;
        let c = &self.contracts;
        let _ = writeln!(o, "\n## Negotiation and contracts\n\n| | |\n|---|---|");
        let _ = writeln!(
            o,
            "| placements | {} asked, {} placed, {} not placed, {} failed ({} success) |",
            g.placements,
            g.placed,
            g.not_placed,
            g.failed,
            pct(g.success_rate)
        );
        let _ = writeln!(o, "| latency of placed, p50 / p95 / p99, ms | {} |", ms(&g.latency));
        let _ = writeln!(o, "| latency of all answered, ms | {} |", ms(&g.latency_all));
        let _ = writeln!(
            o,
            "| contracts | {} from placements, {} in providers' logs |",
            c.from_placements, c.in_provider_logs
        );
        let _ = writeln!(
            o,
            "| contracts per second | {:.2} mean over {:.0} s, {} peak |",
            c.per_second_mean, c.window_s, c.per_second_peak
        );
        if !g.reasons.is_empty() {
            let _ = writeln!(o, "\nWhy placements were not made (most frequent first):\n");
            let mut reasons: Vec<(&String, &usize)> = g.reasons.iter().collect();
            reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            for (why, count) in reasons.iter().take(15) {
                let _ = writeln!(o, "- {count} x {why}");
            }
            if reasons.len() > 15 {
                let _ = writeln!(o, "- ... {} more kinds in report.json", reasons.len() - 15);
            }
        }
        let _ = writeln!(
            o,
            "\n![negotiation latency](negotiation_latency.svg)\n\n![contracts per second](contracts_per_second.svg)"
        );

        let s = &self.safety;
        let b = &self.byzantine;
        let _ = writeln!(o, "\n## Safety\n\n| | |\n|---|---|");
        let _ = writeln!(o, "| oversells | {} |", s.oversells);
        let _ =
            writeln!(o, "| consumer contracts missing from the provider's log | {} |", s.contracts_missing_at_provider);
        let _ = writeln!(
            o,
            "| logs verified offline | {} ok, {} failed, {} rewritten logs failed as injected |",
            s.logs_verified, s.logs_failed, s.logs_failed_as_injected
        );
        let _ = writeln!(
            o,
            "| forged offers | {} injected, {} accepted anywhere, {} offer messages rejected at validation |",
            b.forged_offers_injected, b.forged_offers_accepted, b.offers_rejected_at_validation
        );
        let _ = writeln!(
            o,
            "| equivocations | {} injected, {} detected; {} false accusations |",
            b.equivocations_injected, b.equivocations_detected, b.false_accusations
        );
        if b.equivocations_injected > 0 || b.evidence_records_per_node_max > 0 {
            let _ = writeln!(
                o,
                "| evidence records per node log | {:.1} mean, {} most |",
                b.evidence_records_per_node_mean, b.evidence_records_per_node_max
            );
        }
        if b.offers_after_rewrite > 0 {
            let _ = writeln!(
                o,
                "| offers signed after a rewrite | {} versions, taken in {} times by other nodes |",
                b.offers_after_rewrite, b.offers_after_rewrite_accepted
            );
        }
        for d in &b.detections {
            let _ = writeln!(
                o,
                "| evidence against {} | held by {} of {} nodes up at the end |",
                d.node, d.holders, d.live_nodes
            );
        }
        if let Some(f) = &b.flood {
            let share = |x: Option<f64>| x.map_or_else(|| "n/a".into(), pct);
            let _ = writeln!(
                o,
                "| proposal flood | {} sent: {} held, {} rate limited, {} refused otherwise, {} unanswered; {} not sent (no connection) |",
                f.counts.proposals,
                f.counts.held,
                f.counts.rate_limited,
                f.counts.refused,
                f.counts.unanswered,
                f.counts.not_connected
            );
            for (code, n) in &f.counts.refusals {
                let _ = writeln!(o, "| flood: {code} | {n} |");
            }
            let _ = writeln!(
                o,
                "| honest placements during / outside the flood | {} / {} placed |",
                share(f.honest_success_during),
                share(f.honest_success_outside)
            );
        }
        for line in
            s.oversell_details.iter().chain(&s.log_failures).chain(&s.unreadable_logs).chain(&s.node_failures).take(40)
        {
            let _ = writeln!(o, "\n- {line}");
        }

        let t = &self.traffic;
        let m = &self.memory;
        let _ = writeln!(o, "\n## Traffic and memory\n\n| | |\n|---|---|");
        let _ = writeln!(
            o,
            "| bytes per node | {} mean, {} most, {}/s mean while up |",
            mib(t.bytes_per_node_mean),
            mib(t.bytes_per_node_max),
            mib(t.bytes_per_node_per_s_mean)
        );
        let _ = writeln!(
            o,
            "| messages per node | {:.0} gossip messages validated (most {:.0}; {:.0} of them checkpoints and evidence), {:.0} link transmissions |",
            t.gossip_messages_per_node_mean,
            t.gossip_messages_per_node_max,
            t.audit_messages_per_node_mean,
            t.transmissions_per_node_mean
        );
        let [accepted, rejected, ignored] = t.gossip_verdicts_per_node_mean;
        let _ = writeln!(
            o,
            "| gossip verdicts per node | {accepted:.1} accepted, {rejected:.1} rejected, {ignored:.1} ignored |"
        );
        let _ = writeln!(o, "| connections opened | {} |", t.connections);
        let _ = writeln!(
            o,
            "| memory | peak {:.0} MiB, {:.0} MiB before the nodes, {:.2} MiB per node ({} nodes) |",
            m.peak_mib, m.baseline_mib, m.per_node_mib, m.nodes
        );
        let _ = writeln!(
            o,
            "| CPU | {:.1} s used over {:.1} s of wall time on {} CPUs; load average {:.2} at the start, {:.2} at the end |",
            m.cpu_s, self.wall_time_s, m.cpus, m.load_average.0, m.load_average.1
        );
        let _ = writeln!(o, "\n![memory](memory.svg)");

        if !self.faults.is_empty() {
            let _ = writeln!(o, "\n## Faults\n\n| at, s | what |\n|---|---|");
            for f in &self.faults {
                let _ = writeln!(o, "| {:.2} | {} |", f.at_s, f.what);
            }
        }
        let _ = writeln!(o, "\n## Methodology\n");
        for m in &self.methodology {
            let _ = writeln!(o, "- {m}");
        }
        o
    }

    /// Writes `report.json`, `report.md`, the charts and `plan.json` to `dir`.
    pub fn write(&self, charts: &Charts, plan: &Plan, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
        };
        write("report.json", serde_json::to_string_pretty(self)? + "\n")?;
        write("report.md", self.markdown())?;
        write("plan.json", serde_json::to_string_pretty(plan)? + "\n")?;
        for (name, chart) in self.charts(charts) {
            write(name, chart.render())?;
        }
        Ok(())
    }

    fn charts(&self, c: &Charts) -> Vec<(&'static str, Chart)> {
        let timeline = Some((0.0, c.duration_s.max(1.0)));
        let mut cdf: Vec<(f64, f64)> = Vec::with_capacity(c.propagation_ms.len() + 1);
        let mut sorted = c.propagation_ms.clone();
        sorted.sort_by(f64::total_cmp);
        cdf.push((0.0, 0.0));
        let total = sorted.len().max(1) as f64;
        for (i, v) in sorted.iter().enumerate() {
            cdf.push((*v, (i + 1) as f64 / total));
        }
        let mut markers = Vec::new();
        if c.hop_bound_ms > 0.0 {
            markers.push((c.hop_bound_ms, "hop bound".into()));
            markers.push((2.0 * c.hop_bound_ms, "2x hop bound".into()));
        }
        let propagation = Chart {
            title: format!("Offer propagation: {}", self.scenario),
            x_label: "publication to arrival in the node's offer book, ms".into(),
            y_label: "fraction of deliveries".into(),
            series: vec![Series { name: "CDF".into(), points: cdf, style: Style::Step, color: "#2471a3" }],
            markers,
            y_range: Some((0.0, 1.0)),
            ..Chart::default()
        };
        let (ok, failed): (Vec<_>, Vec<_>) = c.negotiation.iter().partition(|(_, _, placed)| *placed);
        let negotiation = Chart {
            title: format!("Negotiation latency: {}", self.scenario),
            x_label: "time, s".into(),
            y_label: "placement request to answer, ms".into(),
            series: vec![
                Series {
                    name: "placed".into(),
                    points: ok.iter().map(|(t, l, _)| (*t, *l)).collect(),
                    style: Style::Dots,
                    color: "#1e8449",
                },
                Series {
                    name: "not placed / failed".into(),
                    points: failed.iter().map(|(t, l, _)| (*t, *l)).collect(),
                    style: Style::Dots,
                    color: "#c0392b",
                },
            ],
            markers: c.faults.clone(),
            x_range: timeline,
            ..Chart::default()
        };
        let contracts = Chart {
            title: format!("Contracts per second: {}", self.scenario),
            x_label: "time, s".into(),
            y_label: "contracts".into(),
            series: vec![Series {
                name: "contracts made".into(),
                points: c.contracts_per_second.clone(),
                style: Style::Step,
                color: "#7d3c98",
            }],
            markers: c.faults.clone(),
            x_range: timeline,
            ..Chart::default()
        };
        let memory = Chart {
            title: format!("Resident memory: {}", self.scenario),
            x_label: "time, s (0: start of the timeline)".into(),
            y_label: "MiB".into(),
            series: vec![Series {
                name: "resident set".into(),
                points: c.memory_mib.clone(),
                style: Style::Line,
                color: "#af601a",
            }],
            markers: c.faults.clone(),
            ..Chart::default()
        };
        vec![
            ("propagation_cdf.svg", propagation),
            ("negotiation_latency.svg", negotiation),
            ("contracts_per_second.svg", contracts),
            ("memory.svg", memory),
        ]
    }
}
