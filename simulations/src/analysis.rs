//! Turns what a run measured into the report's figures: offer propagation
//! and its hop bound, late-joiner sync, convergence after a partition heals,
//! negotiation, contracts, the oversell check over every provider's log, log
//! verification, Byzantine detection, traffic and memory.

use std::collections::{BTreeMap, HashMap, HashSet};

use fulcrum_proto::v1 as wire;
use fulcrum_protocol::ids::ContractId;
use fulcrum_protocol::record::Record;
use prost::Message as _;

use crate::observe::{exact_arrival, first_arrival};
use crate::plan::Role;
use crate::report::*;
use crate::run::{NodeOutcome, Outcome, PlaceOutcome};
use crate::scenario::Scenario;

const US: f64 = 1_000_000.0;

/// The nearest-rank percentiles of `samples` (ms).
pub fn percentiles(samples: &mut [f64]) -> Option<Percentiles> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let rank = |p: f64| samples[((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
    Some(Percentiles {
        count: samples.len(),
        p50_ms: rank(0.50),
        p95_ms: rank(0.95),
        p99_ms: rank(0.99),
        max_ms: samples[samples.len() - 1],
        mean_ms: samples.iter().sum::<f64>() / samples.len() as f64,
    })
}

/// Fewest hops in which a message can reach `nodes` nodes when every node
/// forwards to `degree` mesh peers (the first to all of them, the others to
/// all but the one it came from): the depth of a full tree of that fan-out.
pub fn hop_bound(nodes: usize, degree: usize) -> u32 {
    if nodes <= 1 || degree == 0 {
        return 0;
    }
    let (mut reached, mut frontier, mut hops) = (1usize, 1usize, 0u32);
    while reached < nodes {
        let fanout = if hops == 0 { degree } else { degree.saturating_sub(1).max(1) };
        frontier = frontier.saturating_mul(fanout);
        reached = reached.saturating_add(frontier);
        hops += 1;
    }
    hops
}

fn up_throughout(n: &NodeOutcome, from: u64, to: u64) -> bool {
    n.up.iter().any(|(start, end)| *start <= from && end.is_none_or(|e| e >= to))
}

fn uptime_us(n: &NodeOutcome, horizon: u64) -> u64 {
    n.up.iter().map(|(s, e)| e.unwrap_or(horizon).min(horizon).saturating_sub(*s)).sum()
}

fn secs(o: &Outcome, at_us: u64) -> f64 {
    (at_us as f64 - o.t0_us as f64) / US
}

/// The report of an outcome, and the series its charts draw.
pub fn analyse(s: &Scenario, o: &Outcome) -> (Report, Charts) {
    let honest: Vec<usize> = (0..o.nodes.len()).collect();
    let mut charts = Charts::default();
    let (propagation, samples) = propagation(s, o, &honest);
    charts.propagation_ms = samples;
    let late_joiners = late_joiners(o);
    let convergence = convergence(o);
    let (negotiation, contracts) = negotiation(s, o, &mut charts);
    let safety = safety(o);
    let byzantine = byzantine(o);
    let traffic = traffic(o);
    let memory = Memory {
        baseline_mib: o.host.baseline_kib as f64 / 1024.0,
        peak_mib: o.host.peak_kib as f64 / 1024.0,
        per_node_mib: (o.host.peak_kib.saturating_sub(o.host.baseline_kib)) as f64 / 1024.0 / o.max_up.max(1) as f64,
        nodes: o.max_up,
        cpu_s: o.host.cpu_s,
        cpus: o.host.cpus,
        load_average: o.host.load,
    };
    let t0_s = o.t0_us as f64 / US;
    charts.memory_mib = o.host.samples.iter().map(|(t, m)| (t - t0_s, *m)).collect();
    charts.faults = o.faults.iter().map(|f| (secs(o, f.at_us), f.label.clone())).collect();
    charts.duration_s = o.plan.duration_ms as f64 / 1000.0;
    charts.hop_bound_ms = propagation.hop_bound.bound_ms;
    let faults = o.faults.iter().map(|f| FaultEntry { at_s: secs(o, f.at_us), what: f.label.clone() }).collect();
    let joined_later = o.plan.nodes.iter().filter(|n| n.joins_at_ms.is_some()).count();
    let mut report = Report {
        scenario: o.plan.scenario.clone(),
        description: s.description.clone(),
        seed: o.plan.seed,
        nodes: NodeCounts {
            providers: s.nodes.providers,
            consumers: s.nodes.consumers,
            joined_later,
            max_up: o.max_up,
            connections_at_start: o.mesh_connections,
            byzantine_peer: o.plan.attacker.is_some(),
        },
        duration_s: o.plan.duration_ms as f64 / 1000.0,
        wall_time_s: o.wall.as_secs_f64(),
        time_dilation: s.time_dilation.max(1),
        startup_s: o.startup_ms as f64 / 1000.0,
        warmup_s: o.warmup_ms as f64 / 1000.0,
        link: LinkSummary {
            latency_ms: s.link.latency.0,
            jitter_ms: s.link.jitter.0,
            distribution: format!("{:?}", s.link.distribution).to_lowercase(),
            loss: s.link.loss,
            bandwidth_mbps: s.link.bandwidth_mbps,
        },
        propagation,
        late_joiners,
        convergence,
        negotiation,
        contracts,
        safety,
        byzantine,
        traffic,
        memory,
        faults,
        targets: Vec::new(),
        methodology: methodology(s),
    };
    report.targets = targets(&report);
    (report, charts)
}

/// When a node's log was rewritten (it first went down for it), if it was.
fn rewritten_at(n: &NodeOutcome) -> Option<u64> {
    n.equivocated.then(|| n.up.first().and_then(|(_, end)| *end)).flatten()
}

/// True for an offer version its publisher signed after rewriting its log:
/// honest nodes refuse those that reuse a seq of the lost history.
fn from_rewritten_log(o: &Outcome, p: &crate::observe::Published) -> bool {
    o.nodes.get(p.node as usize).and_then(rewritten_at).is_some_and(|at| p.at_us >= at)
}

fn propagation(s: &Scenario, o: &Outcome, honest: &[usize]) -> (Propagation, Vec<f64>) {
    let horizon = o.end_us;
    let in_partition = |at: u64| o.partitions.iter().any(|(start, heal)| *start <= at && heal.is_none_or(|h| at < h));
    let (mut versions, mut expected, mut reached, mut excluded) = (0usize, 0usize, 0usize, 0usize);
    let mut samples = Vec::new();
    let mut sizes = Vec::new();
    for p in &o.publications {
        if in_partition(p.at_us) {
            excluded += 1;
            continue;
        }
        if from_rewritten_log(o, p) {
            continue;
        }
        versions += 1;
        let mut size = 1;
        for &n in honest {
            if n == p.node as usize || !up_throughout(&o.nodes[n], p.at_us, horizon) {
                continue;
            }
            size += 1;
            expected += 1;
            let arrivals = &o.arrivals[n];
            if first_arrival(arrivals, p.offer, p.seq).is_some() {
                reached += 1;
            }
            if let Some(at) = exact_arrival(arrivals, p.offer, p.seq) {
                samples.push(at.saturating_sub(p.at_us) as f64 / 1000.0);
            }
        }
        sizes.push(size);
    }
    let nodes = if sizes.is_empty() { o.max_up } else { sizes.iter().sum::<usize>() / sizes.len() };
    let degree = libp2p::gossipsub::Config::default().mesh_n();
    let hops = hop_bound(nodes, degree);
    let latency = s.link.latency.0 as f64;
    let bound_ms = f64::from(hops) * latency;
    let latency_stats = percentiles(&mut samples.clone());
    let p99_over_bound = latency_stats.as_ref().filter(|_| bound_ms > 0.0).map(|l| l.p99_ms / bound_ms);
    (
        Propagation {
            versions,
            deliveries: expected,
            reached,
            reached_fraction: if expected == 0 { 1.0 } else { reached as f64 / expected as f64 },
            latency: latency_stats,
            excluded_during_partition: excluded,
            hop_bound: HopBound {
                nodes,
                mesh_degree: degree,
                hops,
                link_latency_ms: latency,
                bound_ms,
                p99_over_bound,
            },
        },
        samples,
    )
}

/// The latest version of every offer published before `t`, by anyone but `not_by`.
fn book_at(o: &Outcome, t: u64, not_by: Option<usize>) -> HashMap<u32, u64> {
    let mut book = HashMap::new();
    for p in o.publications.iter().filter(|p| p.at_us < t && Some(p.node as usize) != not_by) {
        let seq = book.entry(p.offer).or_insert(p.seq);
        *seq = (*seq).max(p.seq);
    }
    book
}

fn late_joiners(o: &Outcome) -> LateJoiners {
    let mut joiners = Vec::new();
    let mut times = Vec::new();
    for (i, n) in o.nodes.iter().enumerate() {
        if !n.late_joiner {
            continue;
        }
        let Some(&(start, _)) = n.up.first() else { continue };
        let target = book_at(o, start, Some(i));
        let arrivals = &o.arrivals[i];
        let mut synced = 0;
        let mut last = 0u64;
        for (offer, seq) in &target {
            if let Some(at) = first_arrival(arrivals, *offer, *seq) {
                synced += 1;
                last = last.max(at.saturating_sub(start));
            }
        }
        let complete = synced == target.len();
        let sync_ms = complete.then_some(last as f64 / 1000.0);
        if let Some(ms) = sync_ms
            && !target.is_empty()
        {
            times.push(ms);
        }
        joiners.push(Joiner {
            name: n.name.clone(),
            role: format!("{:?}", n.role).to_lowercase(),
            joined_at_s: secs(o, start),
            offers_to_sync: target.len(),
            synced,
            sync_ms,
        });
    }
    let largest_book = joiners.iter().map(|j| j.offers_to_sync).max().unwrap_or(0);
    LateJoiners { sync: percentiles(&mut times), largest_book, joiners }
}

fn convergence(o: &Outcome) -> Vec<Convergence> {
    let mut out = Vec::new();
    for &(start, heal) in &o.partitions {
        let Some(heal) = heal else { continue };
        let target = book_at(o, heal, None);
        let published_during = o.publications.iter().filter(|p| p.at_us >= start && p.at_us < heal).count();
        let (mut pairs, mut converged, mut worst) = (0usize, 0usize, 0u64);
        let mut nodes = 0;
        for (i, n) in o.nodes.iter().enumerate() {
            if !up_throughout(n, heal, o.end_us) {
                continue;
            }
            nodes += 1;
            for (offer, seq) in &target {
                if o.offers.get(*offer as usize).is_some_and(|(provider, _)| *provider == i) {
                    continue;
                }
                pairs += 1;
                if let Some(at) = first_arrival(&o.arrivals[i], *offer, *seq) {
                    converged += 1;
                    worst = worst.max(at.saturating_sub(heal));
                }
            }
        }
        out.push(Convergence {
            partitioned_at_s: secs(o, start),
            healed_at_s: secs(o, heal),
            nodes,
            offers: target.len(),
            published_during_partition: published_during,
            converged_fraction: if pairs == 0 { 1.0 } else { converged as f64 / pairs as f64 },
            converged_ms: (converged == pairs).then_some(worst as f64 / 1000.0),
        });
    }
    out
}

/// Groups free-text reasons: every word with a digit in it (a number, an
/// id, an offer name) becomes `#`.
fn reason_key(text: &str) -> String {
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.chars().any(|c| c.is_ascii_digit()) {
            out.push('#');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    let mut out: String = out.chars().take(160).collect();
    if out.is_empty() {
        out.push_str("(no reason given)");
    }
    out
}

fn negotiation(s: &Scenario, o: &Outcome, charts: &mut Charts) -> (Negotiation, Contracts) {
    let (mut placed, mut not_placed, mut failed) = (0, 0, 0);
    let mut latencies = Vec::new();
    let mut latencies_all = Vec::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_second: BTreeMap<i64, u32> = BTreeMap::new();
    let mut contracts_placed = 0u64;
    for p in &o.placements {
        let ms = p.latency_us as f64 / 1000.0;
        let t = secs(o, p.at_us);
        match &p.outcome {
            PlaceOutcome::Placed { contracts, .. } => {
                placed += 1;
                latencies.push(ms);
                latencies_all.push(ms);
                contracts_placed += u64::from(*contracts);
                let done = secs(o, p.at_us + p.latency_us).floor() as i64;
                *per_second.entry(done).or_default() += contracts;
                charts.negotiation.push((t, ms, true));
            }
            PlaceOutcome::NotPlaced(why) => {
                not_placed += 1;
                latencies_all.push(ms);
                *reasons.entry(reason_key(why)).or_default() += 1;
                charts.negotiation.push((t, ms, false));
            }
            PlaceOutcome::Failed(why) => {
                failed += 1;
                *reasons.entry(reason_key(why)).or_default() += 1;
                charts.negotiation.push((t, ms, false));
            }
        }
    }
    let total = placed + not_placed + failed;
    let window_s = (o.plan.duration_ms.saturating_sub(s.workload.start.0)) as f64 / 1000.0;
    let seconds = (o.plan.duration_ms / 1000) as i64 + 1;
    charts.contracts_per_second =
        (0..seconds).map(|t| (t as f64, f64::from(*per_second.get(&t).unwrap_or(&0)))).collect();
    let in_logs: HashSet<ContractId> = o
        .nodes
        .iter()
        .filter(|n| n.role == Role::Provider)
        .filter_map(|n| n.records.as_ref().ok().map(|r| (n, r)))
        .flat_map(|(n, records)| {
            records.iter().filter_map(move |r| match r {
                Record::Contract { contract } if contract.terms().provider == n.key => Some(contract.id()),
                _ => None,
            })
        })
        .collect();
    (
        Negotiation {
            placements: total,
            placed,
            not_placed,
            failed,
            success_rate: if total == 0 { 0.0 } else { placed as f64 / total as f64 },
            latency: percentiles(&mut latencies),
            latency_all: percentiles(&mut latencies_all),
            reasons,
        },
        Contracts {
            in_provider_logs: in_logs.len(),
            from_placements: contracts_placed,
            window_s,
            per_second_mean: if window_s > 0.0 { contracts_placed as f64 / window_s } else { 0.0 },
            per_second_peak: per_second.values().copied().max().unwrap_or(0),
        },
    )
}

/// Oversells in one provider's log, in log order: when a contract was
/// recorded, the units of the offer's active contracts (not terminated, not
/// ended by then) must fit the units the provider offered.
pub fn oversells(name: &str, key: &fulcrum_protocol::keys::PublicKey, records: &[Record]) -> Vec<String> {
    let mut capacity: HashMap<String, u32> = HashMap::new();
    let mut active: HashMap<String, Vec<(ContractId, u32, u64)>> = HashMap::new();
    let mut terminated: HashSet<ContractId> = HashSet::new();
    let mut found = Vec::new();
    for (i, record) in records.iter().enumerate() {
        match record {
            Record::Offer { envelope } if envelope.signer() == *key => {
                if let Ok(offer) = wire::Offer::decode(envelope.body()) {
                    let c = capacity.entry(offer.offer_id).or_insert(0);
                    // A withdrawal stops new holds; holds granted before it may still commit.
                    *c = (*c).max(offer.units_available);
                }
            }
            Record::Contract { contract } if contract.terms().provider == *key => {
                let t = contract.terms();
                let list = active.entry(t.offer_id.clone()).or_default();
                list.retain(|(id, _, end)| !terminated.contains(id) && *end > t.created_at_ms);
                let in_use: u64 = list.iter().map(|(_, u, _)| u64::from(*u)).sum::<u64>() + u64::from(t.units);
                let cap = capacity.get(&t.offer_id).copied().unwrap_or(0);
                if in_use > u64::from(cap) {
                    found.push(format!(
                        "{name}: record {i}: offer {} has {in_use} units under contract, {cap} offered",
                        t.offer_id
                    ));
                }
                list.push((contract.id(), t.units, t.end_ms));
            }
            Record::Termination { contract_id, .. } => {
                terminated.insert(*contract_id);
            }
            _ => {}
        }
    }
    found
}

fn safety(o: &Outcome) -> Safety {
    let mut details = Vec::new();
    let mut provider_contracts: HashSet<ContractId> = HashSet::new();
    let mut unreadable = Vec::new();
    for n in &o.nodes {
        match &n.records {
            Ok(records) => {
                if n.role == Role::Provider {
                    details.extend(oversells(&n.name, &n.key, records));
                }
                for r in records {
                    if let Record::Contract { contract } = r
                        && contract.terms().provider == n.key
                    {
                        provider_contracts.insert(contract.id());
                    }
                }
            }
            Err(e) => unreadable.push(format!("{}: {e}", n.name)),
        }
    }
    // Every contract a consumer holds is in its provider's log (unless that
    // provider rewrote its log).
    let rewritten: HashSet<_> = o.nodes.iter().filter(|n| n.equivocated).map(|n| n.key).collect();
    let mut missing = 0;
    for n in &o.nodes {
        let Ok(records) = &n.records else { continue };
        for r in records {
            if let Record::Contract { contract } = r
                && contract.terms().consumer == n.key
                && !rewritten.contains(&contract.terms().provider)
                && !provider_contracts.contains(&contract.id())
            {
                missing += 1;
            }
        }
    }
    let (mut verified, mut failed, mut expected_failures) = (0, 0, 0);
    let mut failures = Vec::new();
    for n in o.nodes.iter().filter(|n| !n.up.is_empty()) {
        match &n.audit {
            Ok(report) if report.is_ok() => verified += 1,
            other => {
                let why = match other {
                    Ok(report) => report.first_failure.as_ref().map_or_else(String::new, ToString::to_string),
                    Err(e) => e.clone(),
                };
                if n.equivocated {
                    expected_failures += 1;
                    failures.push(format!("{} (rewrote its log, as injected): {why}", n.name));
                } else {
                    failed += 1;
                    failures.push(format!("{}: {why}", n.name));
                }
            }
        }
    }
    let node_failures = o.nodes.iter().filter_map(|n| n.failure.as_ref().map(|f| format!("{}: {f}", n.name))).collect();
    Safety {
        oversells: details.len(),
        oversell_details: details,
        contracts_missing_at_provider: missing,
        logs_verified: verified,
        logs_failed: failed,
        logs_failed_as_injected: expected_failures,
        log_failures: failures,
        unreadable_logs: unreadable,
        node_failures,
    }
}

fn byzantine(o: &Outcome) -> Byzantine {
    let published: HashSet<(u32, u64)> = o.publications.iter().map(|p| (p.offer, p.seq)).collect();
    let forged_in_books: u64 = o.arrivals.iter().flatten().filter(|a| !published.contains(&(a.offer, a.seq))).count()
        as u64
        + o.nodes.iter().map(|n| n.unknown_offers).sum::<u64>();
    let mut detections = Vec::new();
    let mut false_accusations = 0;
    let holders_alive = o.nodes.iter().filter(|n| n.evidence_against.is_some()).count();
    for (i, accused) in o.nodes.iter().enumerate() {
        let holders = o
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .filter(|(_, n)| n.evidence_against.as_ref().is_some_and(|e| e.contains(&accused.key)))
            .count();
        if accused.equivocated {
            detections.push(Detection { node: accused.name.clone(), holders, live_nodes: holders_alive });
        } else {
            false_accusations += holders;
        }
    }
    let in_window = |at: u64| o.floods.iter().any(|(s, e)| *s <= at && e.is_none_or(|e| at < e));
    let rate = |during: bool| {
        let picked: Vec<_> = o.placements.iter().filter(|p| in_window(p.at_us) == during).collect();
        let ok = picked.iter().filter(|p| matches!(p.outcome, PlaceOutcome::Placed { .. })).count();
        (!picked.is_empty()).then(|| ok as f64 / picked.len() as f64)
    };
    let flood = (!o.floods.is_empty()).then(|| {
        let a = o.attack.clone().unwrap_or_default();
        Flood { counts: a.flood, honest_success_during: rate(true), honest_success_outside: rate(false) }
    });
    let evidence: Vec<u64> = o.nodes.iter().filter_map(|n| n.audit.as_ref().ok()).map(|a| a.evidence).collect();
    // Offers signed after a rewrite, and how many other nodes took them in.
    let rewritten: Vec<_> = o.publications.iter().filter(|p| from_rewritten_log(o, p)).collect();
    let rewritten_accepted = rewritten
        .iter()
        .map(|p| {
            (0..o.nodes.len())
                .filter(|n| *n != p.node as usize)
                .filter(|n| crate::observe::exact_arrival(&o.arrivals[*n], p.offer, p.seq).is_some())
                .count()
        })
        .sum();
    Byzantine {
        evidence_records_per_node_mean: evidence.iter().sum::<u64>() as f64 / evidence.len().max(1) as f64,
        evidence_records_per_node_max: evidence.iter().copied().max().unwrap_or(0),
        offers_after_rewrite: rewritten.len(),
        offers_after_rewrite_accepted: rewritten_accepted,
        forged_offers_injected: o.attack.as_ref().map_or(0, |a| a.forged),
        forged_offers_accepted: forged_in_books,
        offers_rejected_at_validation: o.nodes.iter().map(|n| n.gossip[3]).sum(),
        equivocations_injected: detections.len(),
        equivocations_detected: detections.iter().filter(|d| d.holders > 0).count(),
        detections,
        false_accusations,
        flood,
    }
}

fn traffic(o: &Outcome) -> Traffic {
    let nodes: Vec<&NodeOutcome> = o.nodes.iter().filter(|n| !n.up.is_empty()).collect();
    let k = nodes.len().max(1) as f64;
    let bytes: Vec<f64> = nodes.iter().map(|n| (n.traffic[0] + n.traffic[1]) as f64).collect();
    let frames: Vec<f64> = nodes.iter().map(|n| (n.traffic[2] + n.traffic[3]) as f64).collect();
    let gossip: Vec<f64> = nodes.iter().map(|n| (n.gossip[0] + n.gossip[1] + n.gossip[2]) as f64).collect();
    let audit: f64 = nodes.iter().map(|n| n.gossip[4] as f64).sum();
    let verdict = |i: usize| nodes.iter().map(|n| n.gossip[i] as f64).sum::<f64>() / k;
    let rates: Vec<f64> = nodes
        .iter()
        .map(|n| {
            let up = uptime_us(n, o.end_us) as f64 / US;
            if up > 0.0 { (n.traffic[0] + n.traffic[1]) as f64 / up } else { 0.0 }
        })
        .collect();
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    Traffic {
        bytes_per_node_mean: bytes.iter().sum::<f64>() / k,
        bytes_per_node_max: max(&bytes),
        bytes_per_node_per_s_mean: rates.iter().sum::<f64>() / k,
        transmissions_per_node_mean: frames.iter().sum::<f64>() / k,
        gossip_messages_per_node_mean: gossip.iter().sum::<f64>() / k,
        gossip_messages_per_node_max: max(&gossip),
        audit_messages_per_node_mean: audit / k,
        gossip_verdicts_per_node_mean: [verdict(0), verdict(1), verdict(2)],
        connections: o.connections,
    }
}

fn targets(r: &Report) -> Vec<TargetCheck> {
    let mut t = Vec::new();
    let gib = r.memory.peak_mib / 1024.0;
    t.push(TargetCheck {
        name: "1,000 nodes run to completion within 12 GiB".into(),
        measured: format!("{} nodes, peak {gib:.2} GiB", r.nodes.max_up),
        met: (r.nodes.max_up >= 1000).then_some(gib <= 12.0),
    });
    let h = &r.propagation.hop_bound;
    t.push(TargetCheck {
        name: "offer propagation p99 within 2x the hop lower bound".into(),
        measured: match (&r.propagation.latency, h.p99_over_bound) {
            (Some(l), Some(x)) => format!(
                "p99 {:.0} ms, bound {} hops x {:.0} ms = {:.0} ms ({x:.2}x)",
                l.p99_ms, h.hops, h.link_latency_ms, h.bound_ms
            ),
            _ => "no samples".into(),
        },
        met: h.p99_over_bound.map(|x| x <= 2.0),
    });
    t.push(TargetCheck {
        name: "100% of nodes reached".into(),
        measured: format!("{:.4}% of {} deliveries", r.propagation.reached_fraction * 100.0, r.propagation.deliveries),
        met: (r.propagation.deliveries > 0).then_some(r.propagation.reached == r.propagation.deliveries),
    });
    let big: Vec<&Joiner> = r.late_joiners.joiners.iter().filter(|j| j.offers_to_sync >= 10_000).collect();
    t.push(TargetCheck {
        name: "a late joiner has 10,000 offers within 2 s".into(),
        measured: if big.is_empty() {
            format!("no late joiner with 10,000 offers to sync (largest book {})", r.late_joiners.largest_book)
        } else {
            big.iter()
                .map(|j| match j.sync_ms {
                    Some(ms) => format!("{}: {} offers in {ms:.0} ms", j.name, j.offers_to_sync),
                    None => format!("{}: {} of {} offers", j.name, j.synced, j.offers_to_sync),
                })
                .collect::<Vec<_>>()
                .join("; ")
        },
        met: (!big.is_empty()).then(|| big.iter().all(|j| j.sync_ms.is_some_and(|ms| ms <= 2000.0))),
    });
    t.push(TargetCheck {
        name: "offer books converge within 5 s after a partition heals".into(),
        measured: if r.convergence.is_empty() {
            "no partition".into()
        } else {
            r.convergence
                .iter()
                .map(|c| match c.converged_ms {
                    Some(ms) => format!("{ms:.0} ms"),
                    None => format!("not converged ({:.2}%)", c.converged_fraction * 100.0),
                })
                .collect::<Vec<_>>()
                .join(", ")
        },
        met: (!r.convergence.is_empty())
            .then(|| r.convergence.iter().all(|c| c.converged_ms.is_some_and(|ms| ms <= 5000.0))),
    });
    t.push(TargetCheck {
        name: "oversells: 0".into(),
        measured: r.safety.oversells.to_string(),
        met: Some(r.safety.oversells == 0),
    });
    let b = &r.byzantine;
    t.push(TargetCheck {
        name: "every injected equivocation detected".into(),
        measured: format!("{} of {}", b.equivocations_detected, b.equivocations_injected),
        met: (b.equivocations_injected > 0).then_some(b.equivocations_detected == b.equivocations_injected),
    });
    t.push(TargetCheck {
        name: "no forged offer accepted".into(),
        measured: format!("{} accepted of {} injected", b.forged_offers_accepted, b.forged_offers_injected),
        met: (b.forged_offers_injected > 0).then_some(b.forged_offers_accepted == 0),
    });
    t
}

fn methodology(s: &Scenario) -> Vec<String> {
    let mut m = vec![
        "Every node is the real fulcrum node (its event loop, gossipsub, negotiation, agreement log with fsync, \
         sled index on temporary storage), all in one process, connected by libp2p's in-memory transport with \
         Noise and Yamux on top, as over TCP. Nodes are driven through their admin command channel. Storage is \
         a temporary directory in memory (/dev/shm) unless --work-dir says otherwise: a thousand nodes fsyncing \
         to one shared disk would measure that disk, while each real node has its own."
            .into(),
        "Link model: each end of a connection holds what it receives until it is due. One-way latency is drawn \
         per transmission (one write of the sender) from the scenario's distribution; a dial costs one round trip. \
         Loss on a reliable stream is modelled as retransmission delay: each transmission is lost with the given \
         probability and then costs a retransmission timeout, doubling per further loss (at most 6). Delivery stays \
         in order (head-of-line blocking), and a bandwidth limit serialises transmissions."
            .into(),
        "Partitions hold delivery on links between groups and refuse new connections across them; connections \
         survive, as TCP connections do through a short outage, and what was sent is delivered when the \
         partition heals."
            .into(),
        "Before the timeline starts, the nodes are left to connect: until every node has a peer and the \
         number of connections grows by less than 1% in a second, three times in a row, then 2.1 s more \
         (three gossipsub heartbeats) for meshes to form."
            .into(),
        "Times are simulated time: the simulator process's wall-clock time divided by the scenario's time \
         dilation (1 unless it says otherwise). With a dilation of k, link latencies, the timeline, every \
         duration in the node settings and every fixed interval inside the nodes and their libp2p stacks (ticks, \
         gossipsub heartbeat and caches, Kademlia and request timeouts, rate limits) are stretched k times, so \
         each node has k times the CPU per simulated second. Contract durations (hours) are not stretched, and \
         an offer's lifetime at most to the protocol's limit of a day. Offer propagation runs from the moment the \
         publisher gossips a version (its log record durable) to the moment it enters each node's offer book, \
         both taken inside the nodes' event loops. A node counts as reached when it holds that version or a newer \
         one; latency samples are of the exact version. Nodes count only if up from the publication to the end; \
         versions published during a partition count towards convergence instead."
            .into(),
        "The hop lower bound is the depth of a full tree in which the publisher sends to D mesh peers and every \
         other node forwards to D-1 (D = gossipsub's mesh degree), times the median one-way latency. It ignores \
         processing, validation and heartbeat-driven gossip, so it cannot be met exactly."
            .into(),
        "Oversells are checked in every provider's log, in log order: when a contract is recorded, the units of \
         the offer's contracts still active (not terminated, not ended) must fit the units offered. Every node's \
         log is exported through the node and verified offline with the audit verifier, after the timeline, with \
         every link cut; nodes down at the end are started once more, alone, to export."
            .into(),
        "All nodes share the machine's CPUs (and whatever else runs on it), so every latency includes time \
         spent waiting for a CPU; the report gives the CPU time the run used and the host's load average."
            .into(),
        "Peak memory is the process's peak resident set (VmHWM) before the nodes stop; per node is the peak \
         above the resident set before any node started, divided by the most nodes up at once."
            .into(),
    ];
    if !s.faults.is_empty() {
        m.push(
            "Crashes drop a node's task mid-flight (no flush, as SIGKILL); clean stops finish in-flight commits. \
             Equivocation rewrites a stopped provider's log on disk (its last record dropped, three records \
             appended) and restarts it; detection counts nodes holding evidence against it at the end."
                .into(),
        );
    }
    m
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn hop_bound_is_the_depth_of_the_forwarding_tree() {
        assert_eq!(hop_bound(1, 6), 0);
        assert_eq!(hop_bound(7, 6), 1);
        assert_eq!(hop_bound(8, 6), 2);
        assert_eq!(hop_bound(37, 6), 2);
        assert_eq!(hop_bound(38, 6), 3);
        assert_eq!(hop_bound(1000, 6), 5);
        assert_eq!(hop_bound(100, 6), 3);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = percentiles(&mut v).unwrap();
        assert_eq!((p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms), (50.0, 95.0, 99.0, 100.0));
        assert!(percentiles(&mut []).is_none());
    }

    #[test]
    fn reasons_are_grouped_without_numbers() {
        assert_eq!(reason_key("only 3 units free at 0a1b"), "only # units free at #");
        assert_eq!(
            reason_key("placement d3f failed: tried: fra1/c8m32-0: no hold"),
            "placement # failed: tried: #/#-#: no hold"
        );
        assert_eq!(reason_key(""), "(no reason given)");
    }
}
