//! Runs a plan: starts the nodes, waits for the mesh, performs the timeline
//! (publications, placements, faults) at its times, lets what is in flight
//! land, then collects what every node holds: status, evidence, a verified
//! export of its log and the log itself.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use fulcrum_node::daemon::AdminCommand;
use fulcrum_node::store::log::read_log;
use fulcrum_proto::v1 as wire;
use fulcrum_protocol::audit::AuditReport;
use fulcrum_protocol::ids::ContractId;
use fulcrum_protocol::keys::{Identity, PublicKey};
use fulcrum_protocol::messages::TerminationReason;
use fulcrum_protocol::offer::OfferKey;
use fulcrum_protocol::record::Record;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::byzantine::{AttackStats, Attacker, Order, Target, rewrite_log};
use crate::cluster::{COMMAND_TIMEOUT, Cluster, ask, ask_within, offer_terms};
use crate::link::{LinkModel, Network};
use crate::observe::{Arrival, Published, Recorder};
use crate::plan::{Action, PlaceSpec, Plan, Role};
use crate::scenario::{Scenario, Spread};
use crate::{FEDERATION, host};

/// How a run is made.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Seed (the scenario's when None).
    pub seed: Option<u64>,
    /// Show a progress bar on the terminal.
    pub progress: bool,
    /// Where the nodes' storage goes. None: a temporary directory, removed
    /// afterwards, in memory (`/dev/shm`) where there is one: a thousand nodes
    /// fsyncing to one shared disk would measure that disk, not the
    /// federation (each real node has a disk of its own).
    pub work_dir: Option<PathBuf>,
}

/// A fault as it happened.
#[derive(Debug, Clone)]
pub struct FaultMark {
    /// When, µs from the epoch.
    pub at_us: u64,
    /// What, in a few words.
    pub label: String,
}

/// How a placement ended.
#[derive(Debug, Clone)]
pub enum PlaceOutcome {
    /// Contracts made.
    Placed {
        /// Contracts.
        contracts: u32,
        /// Units in them.
        units: u32,
    },
    /// The daemon answered that it could not place it, and why.
    NotPlaced(String),
    /// No answer, or the consumer went away.
    Failed(String),
}

/// One placement.
#[derive(Debug, Clone)]
pub struct Placement {
    /// When it was asked, µs from the epoch.
    pub at_us: u64,
    /// How long until the answer, µs.
    pub latency_us: u64,
    /// The consumer.
    pub consumer: usize,
    /// The outcome.
    pub outcome: PlaceOutcome,
}

/// What one node held at the end.
#[derive(Debug)]
pub struct NodeOutcome {
    /// Plan name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Key.
    pub key: PublicKey,
    /// Up intervals, µs from the epoch.
    pub up: Vec<(u64, Option<u64>)>,
    /// Joined after the start with empty storage.
    pub late_joiner: bool,
    /// Its log was rewritten.
    pub equivocated: bool,
    /// Why its event loop stopped by itself, if it did.
    pub failure: Option<String>,
    /// The offline verification of its export.
    pub audit: Result<AuditReport, String>,
    /// Its log.
    pub records: Result<Vec<Record>, String>,
    /// Whom the evidence it holds accuses (None: it was down at the end).
    pub evidence_against: Option<Vec<PublicKey>>,
    /// Peers connected at the end (None: down).
    pub peers_at_end: Option<u32>,
    /// Bytes received and sent, transmissions received and sent.
    pub traffic: [u64; 4],
    /// Gossip messages accepted, rejected, ignored; offers rejected; audit
    /// topic messages (checkpoints and evidence).
    pub gossip: [u64; 5],
    /// Offers accepted that are not in the plan.
    pub unknown_offers: u64,
}

/// Everything a run measured, for the report.
#[derive(Debug)]
pub struct Outcome {
    /// The plan that ran.
    pub plan: Plan,
    /// Start of the timeline, µs from the epoch.
    pub t0_us: u64,
    /// End of the timeline and the drain: where measurement stops.
    pub end_us: u64,
    /// Time to start the nodes up from the start.
    pub startup_ms: u64,
    /// Time for the mesh to form before the timeline.
    pub warmup_ms: u64,
    /// Connections between nodes when the timeline started.
    pub mesh_connections: u64,
    /// Wall time of the whole run.
    pub wall: Duration,
    /// Per planned node.
    pub nodes: Vec<NodeOutcome>,
    /// Offer versions published.
    pub publications: Vec<Published>,
    /// Per node, offer versions accepted (sorted by offer, seq, time).
    pub arrivals: Vec<Vec<Arrival>>,
    /// Offers of the plan: `offers[i]` is offer `i`; (provider node, offer index).
    pub offers: Vec<(usize, usize)>,
    /// Placements.
    pub placements: Vec<Placement>,
    /// Faults as they happened.
    pub faults: Vec<FaultMark>,
    /// Partitions: start and heal, µs.
    pub partitions: Vec<(u64, Option<u64>)>,
    /// Floods: start and end, µs.
    pub floods: Vec<(u64, Option<u64>)>,
    /// What the Byzantine peer did.
    pub attack: Option<AttackSnapshot>,
    /// Memory, CPU and load.
    pub host: host::HostStats,
    /// Most nodes up at once.
    pub max_up: usize,
    /// Connections opened.
    pub connections: u64,
}

/// The Byzantine peer's counters at the end.
#[derive(Debug, Clone, Default)]
pub struct AttackSnapshot {
    /// Forged offers gossiped.
    pub forged: u64,
    /// What became of the proposals of floods.
    pub flood: crate::report::FloodCounts,
}

/// Live counters for the progress bar.
#[derive(Debug, Default)]
struct Live {
    up: AtomicUsize,
    placed: AtomicU64,
    not_placed: AtomicU64,
    contracts: AtomicU64,
    faults: AtomicU64,
    /// Placements asked and not answered yet.
    in_flight: AtomicUsize,
}

/// Memory ports are process-wide: each run takes a range of its own.
static NEXT_PORT: AtomicU64 = AtomicU64::new(1 << 24);

/// Requests from tasks back to the driver.
enum Request {
    Release { consumer: usize, contracts: Vec<ContractId> },
}

/// Runs `scenario` and returns what was measured.
pub fn run(scenario: &Scenario, options: &RunOptions) -> anyhow::Result<Outcome> {
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("fulcrum-sim")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let plan = Plan::generate(scenario, options.seed.unwrap_or(scenario.seed));
    let result = runtime.block_on(Simulation::run(scenario, plan, options));
    // Node storage threads end with their nodes; nothing else to wait for.
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

struct Simulation<'a> {
    scenario: &'a Scenario,
    plan: Plan,
    net: Arc<Network>,
    recorder: Arc<Recorder>,
    cluster: Cluster,
    offers: Vec<(usize, usize)>,
    placements: Arc<Mutex<Vec<Placement>>>,
    faults: Vec<FaultMark>,
    partitions: Vec<(u64, Option<u64>)>,
    floods: Vec<(u64, Option<u64>)>,
    live: Arc<Live>,
    tasks: JoinSet<()>,
    requests: mpsc::UnboundedSender<Request>,
    attacker: Option<(mpsc::Sender<Order>, Arc<AttackStats>)>,
    max_up: usize,
    work: PathBuf,
}

impl Simulation<'_> {
    async fn run(scenario: &Scenario, plan: Plan, options: &RunOptions) -> anyhow::Result<Outcome> {
        let started = std::time::Instant::now();
        let baseline_kib = host::rss_kib();
        let (cpu_before, load_before) = (host::cpu_s(), host::load_average());
        let (temp, work) = match &options.work_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
                (None, dir.clone())
            }
            None => {
                let shm = Path::new("/dev/shm");
                let mut builder = tempfile::Builder::new();
                builder.prefix("fulcrum-sim.");
                let in_memory = if shm.is_dir() { builder.tempdir_in(shm).ok() } else { None };
                let t = match in_memory {
                    Some(t) => t,
                    None => builder.tempdir().context("cannot make a temp dir")?,
                };
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let epoch = Instant::now();
        let total = plan.nodes.len() + 1;
        let k = scenario.time_dilation.max(1);
        let net = Network::new(plan.seed, LinkModel::from_spec(&scenario.link), total, k);
        let mut offers = Vec::new();
        let mut offer_keys = Vec::new();
        let keys: Vec<PublicKey> = plan.nodes.iter().map(|n| Identity::from_secret_bytes(&n.secret).public()).collect();
        for n in &plan.nodes {
            for (k, o) in n.offers.iter().enumerate() {
                offers.push((n.index, k));
                offer_keys.push(OfferKey { provider: keys[n.index], offer_id: o.offer_id.clone() });
            }
        }
        let recorder = Recorder::new(epoch, k, offer_keys, &keys);
        let first_port = NEXT_PORT.fetch_add(total as u64 + 16, Ordering::Relaxed);
        let cluster = Cluster::new(
            &plan.nodes,
            &work,
            first_port,
            Arc::clone(&net),
            Arc::clone(&recorder),
            scenario.node.clone(),
            k,
        )?;
        let (requests, mut requests_rx) = mpsc::unbounded_channel();
        let mut sim = Simulation {
            scenario,
            plan,
            net,
            recorder,
            cluster,
            offers,
            placements: Arc::new(Mutex::new(Vec::new())),
            faults: Vec::new(),
            partitions: Vec::new(),
            floods: Vec::new(),
            live: Arc::new(Live::default()),
            tasks: JoinSet::new(),
            requests,
            attacker: None,
            max_up: 0,
            work,
        };

        let bar = sim.progress_bar(options.progress);
        let samples = Arc::new(Mutex::new(Vec::new()));
        let sampler = tokio::spawn(sample_memory(Arc::clone(&sim.recorder), Arc::clone(&samples)));

        phase(&bar, "starting nodes");
        let starting = Instant::now();
        let initial: Vec<(usize, Vec<usize>)> =
            sim.plan.initial_nodes().map(|n| (n.index, n.bootstrap.clone())).collect();
        for (k, (i, bootstrap)) in initial.iter().enumerate() {
            sim.cluster.start(*i, bootstrap).with_context(|| format!("cannot start node {i}"))?;
            if k % 50 == 49 {
                bar.set_message(format!("started {} of {} nodes", k + 1, initial.len()));
                // Let the nodes started so far take their first steps.
                tokio::task::yield_now().await;
            }
        }
        sim.count_up();
        let startup_ms = starting.elapsed().as_millis() as u64;
        phase(&bar, "waiting for the mesh");
        let (warmup_ms, mesh_connections) = sim.warm_up().await;
        sim.start_attacker(first_port + total as u64 - 1)?;

        // The timeline.
        let t0 = Instant::now();
        let t0_us = sim.recorder.at_us(t0);
        tracing::info!(startup_ms, warmup_ms, "timeline starts");
        let ticker = tokio::spawn(tick_progress(
            bar.clone(),
            t0_us,
            sim.plan.duration_ms,
            Arc::clone(&sim.live),
            Arc::clone(&sim.recorder),
        ));
        let events = std::mem::take(&mut sim.plan.events);
        let mut next = 0;
        let end = t0 + scenario.wall(sim.plan.duration_ms);
        loop {
            let due = events.get(next).map_or(end, |e| t0 + scenario.wall(e.at_ms));
            tokio::select! {
                () = tokio::time::sleep_until(due) => {
                    let Some(event) = events.get(next) else { break };
                    next += 1;
                    sim.cluster.reap();
                    if let Err(e) = sim.perform(&event.action).await {
                        tracing::error!(at_ms = event.at_ms, error = %format!("{e:#}"), "action failed");
                    }
                    sim.count_up();
                }
                Some(request) = requests_rx.recv() => sim.on_request(request),
            }
        }
        sim.plan.events = events;
        // Let what is in flight land: placements up to their deadline, gossip.
        phase(&bar, "draining");
        let drain = Instant::now() + scenario.wall(sim.scenario.drain.0);
        let deadline = Instant::now() + scenario.wall(sim.place_deadline_ms() + 10_000);
        let mut check = tokio::time::interval(Duration::from_millis(100));
        while Instant::now() < drain.max(deadline) {
            if sim.live.in_flight.load(Ordering::Relaxed) == 0 && Instant::now() >= drain {
                break;
            }
            tokio::select! {
                _ = check.tick() => {}
                Some(_) = sim.tasks.join_next(), if !sim.tasks.is_empty() => {}
                Some(request) = requests_rx.recv() => sim.on_request(request),
            }
        }
        sim.tasks.abort_all();
        ticker.abort();
        let end_us = sim.recorder.now_us();
        sim.cluster.reap();

        phase(&bar, "collecting logs");
        let mut outcome = sim.collect(t0_us, end_us, warmup_ms, &bar).await?;
        sampler.abort();
        outcome.host.baseline_kib = baseline_kib;
        outcome.host.samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
        outcome.host.cpu_s = host::cpu_s() - cpu_before;
        outcome.host.load = (load_before, host::load_average());
        outcome.host.cpus = std::thread::available_parallelism().map_or(1, usize::from);
        outcome.wall = started.elapsed();
        outcome.startup_ms = startup_ms;
        outcome.mesh_connections = mesh_connections;
        bar.finish_and_clear();
        drop(temp);
        Ok(outcome)
    }

    fn place_deadline_ms(&self) -> u64 {
        self.scenario.node.place_deadline.map_or(20_000, |d| d.0)
    }

    fn count_up(&mut self) {
        let up = self.cluster.nodes.iter().filter(|n| n.is_up()).count();
        self.max_up = self.max_up.max(up);
        self.live.up.store(up, Ordering::Relaxed);
    }

    fn progress_bar(&self, show: bool) -> ProgressBar {
        if !show {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(self.plan.duration_ms);
        let style = ProgressStyle::with_template("{prefix} [{bar:30}] {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(self.plan.scenario.clone());
        bar.enable_steady_tick(Duration::from_millis(250));
        bar
    }

    /// Waits until every node has a peer and the number of connections has
    /// stopped growing (Kademlia finds peers gradually, and every new
    /// connection pulls the peer's offer book), then for a few gossip
    /// heartbeats so that meshes form before anything is published.
    async fn warm_up(&self) -> (u64, u64) {
        let start = Instant::now();
        let up: Vec<usize> = (0..self.cluster.nodes.len()).filter(|i| self.cluster.nodes[*i].is_up()).collect();
        let limit = start + self.scenario.wall(60_000 + 60 * up.len() as u64);
        let mut last = 0u64;
        let mut steady = 0;
        loop {
            let (mut lonely, mut links) = (0, 0u64);
            for chunk in up.chunks(64) {
                let asks = chunk.iter().map(|i| self.cluster.ask(*i, AdminCommand::Status));
                for status in futures::future::join_all(asks).await {
                    match status {
                        Ok(s) if s.connected_peers > 0 => links += u64::from(s.connected_peers),
                        _ => lonely += 1,
                    }
                }
            }
            // Steady: three looks in a row, a second apart, with under 1% more connections.
            steady = if lonely == 0 && links * 100 <= last * 101 { steady + 1 } else { 0 };
            last = links;
            if steady >= 3 || Instant::now() > limit {
                if lonely > 0 {
                    tracing::warn!(lonely, "nodes without a peer after the warm-up limit");
                }
                tracing::info!(connections = links / 2, "mesh formed");
                break;
            }
            tokio::time::sleep(self.scenario.wall(1_000)).await;
        }
        tokio::time::sleep(self.scenario.wall(2_100)).await;
        (self.recorder.now_us().saturating_sub(self.recorder.at_us(start)) / 1000, last / 2)
    }

    fn start_attacker(&mut self, port: u64) -> anyhow::Result<()> {
        let Some(plan) = &self.plan.attacker else { return Ok(()) };
        let index = self.plan.nodes.len();
        let stats = Arc::new(AttackStats::default());
        let attacker =
            Attacker::new(plan.secret, index, port, &self.net, FEDERATION, Arc::clone(&stats), self.plan.seed)?;
        let peers = plan
            .bootstrap
            .iter()
            .filter_map(|i| self.cluster.nodes.get(*i))
            .filter_map(|n| n.addr().parse().ok())
            .collect();
        let (orders, rx) = mpsc::channel(64);
        tokio::spawn(attacker.run(peers, rx));
        self.attacker = Some((orders, stats));
        Ok(())
    }

    fn mark(&mut self, label: String) {
        self.live.faults.fetch_add(1, Ordering::Relaxed);
        self.faults.push(FaultMark { at_us: self.recorder.now_us(), label });
    }

    fn target(&self, i: usize) -> Option<Target> {
        let n = self.cluster.nodes.get(i)?;
        Some(Target {
            key: Identity::from_secret_bytes(&n.plan.secret).public(),
            peer: n.peer_id,
            addr: n.addr().parse().ok()?,
            offers: n.plan.offers.iter().map(|o| o.offer_id.clone()).collect(),
        })
    }

    async fn perform(&mut self, action: &Action) -> anyhow::Result<()> {
        match action {
            Action::Publish { provider } => self.publish_all(*provider),
            Action::Republish { provider, offer, price_micros } => {
                let node = &self.cluster.nodes[*provider];
                if let (Some(h), Some(site), Some(o)) = (node.handles(), &node.plan.site, node.plan.offers.get(*offer))
                {
                    let (h, terms) = (h.clone(), offer_terms(site, o, *price_micros));
                    self.tasks.spawn(async move {
                        if let Err(e) =
                            ask(&h, |tx| AdminCommand::Publish(terms, 0, tx)).await.and_then(|r| r.map(drop))
                        {
                            tracing::warn!(error = %e, "re-publishing an offer failed");
                        }
                    });
                }
            }
            Action::Place(spec) => self.place(spec),
            Action::Start { node } => {
                let bootstrap = self.plan.nodes[*node].bootstrap.clone();
                self.cluster.start(*node, &bootstrap)?;
                self.mark(format!("{} joins", self.plan.nodes[*node].name));
                if self.plan.nodes[*node].role == Role::Provider {
                    self.publish_all(*node);
                }
            }
            Action::Kill { nodes, graceful } => {
                for n in nodes {
                    if *graceful {
                        self.cluster.stop(*n).await;
                    } else {
                        self.cluster.kill(*n).await;
                    }
                }
                let verb = if *graceful { "stop" } else { "crash" };
                self.mark(format!("{} {verb}", names(&self.plan, nodes)));
            }
            Action::Restart { nodes, bootstrap } => {
                for (n, b) in nodes.iter().zip(bootstrap) {
                    self.start_when_released(*n, b).await?;
                }
                self.mark(format!("{} restart", names(&self.plan, nodes)));
            }
            Action::Partition { groups } => {
                self.net.partition(groups);
                self.partitions.push((self.recorder.now_us(), None));
                let sizes: Vec<String> = groups.iter().map(|g| g.len().to_string()).collect();
                self.mark(format!("partition {}", sizes.join("/")));
            }
            Action::Heal => {
                self.net.heal();
                let now = self.recorder.now_us();
                if let Some(p) = self.partitions.iter_mut().rev().find(|p| p.1.is_none()) {
                    p.1 = Some(now);
                }
                self.mark("heal".into());
            }
            Action::Link { model } => {
                self.net.set_model(LinkModel::from_spec(model));
                self.mark(format!(
                    "link {} ±{} loss {}",
                    String::from(model.latency),
                    String::from(model.jitter),
                    model.loss
                ));
            }
            Action::ForgeOffers { count, victims } => {
                let victims = victims.iter().filter_map(|v| self.target(*v)).collect();
                if let Some((orders, _)) = &self.attacker {
                    let _ = orders.send(Order::Forge { count: *count, victims }).await;
                }
                self.mark(format!("{count} forged offers"));
            }
            Action::Equivocate { node, bootstrap } => {
                self.cluster.kill(*node).await;
                let n = &self.cluster.nodes[*node];
                let config = self.scenario.node.config(n.dir.clone(), String::new(), Vec::new(), 1);
                let (log, index, seed) = (config.log_path(), config.index_path(), self.plan.seed ^ *node as u64);
                let (before, after) = tokio::task::spawn_blocking(move || rewrite_log(&log, &index, 3, seed)).await??;
                self.cluster.nodes[*node].equivocated = true;
                self.start_when_released(*node, bootstrap).await?;
                let name = self.plan.nodes[*node].name.clone();
                self.mark(format!("{name} rewrites its log ({before} -> {after} records)"));
            }
            Action::FloodStart { targets, rate_per_sec } => {
                let t: Vec<Target> = targets.iter().filter_map(|v| self.target(*v)).collect();
                if let Some((orders, _)) = &self.attacker {
                    let _ = orders.send(Order::FloodStart { targets: t, rate_per_sec: *rate_per_sec }).await;
                }
                self.floods.push((self.recorder.now_us(), None));
                self.mark(format!("flood {} at {rate_per_sec}/s", names(&self.plan, targets)));
            }
            Action::FloodStop => {
                if let Some((orders, _)) = &self.attacker {
                    let _ = orders.send(Order::FloodStop).await;
                }
                let now = self.recorder.now_us();
                if let Some(f) = self.floods.iter_mut().rev().find(|f| f.1.is_none()) {
                    f.1 = Some(now);
                }
                self.mark("flood ends".into());
            }
        }
        Ok(())
    }

    /// Starts a node again; its storage may still be held for a moment by
    /// the instance that just went down.
    async fn start_when_released(&mut self, node: usize, bootstrap: &[usize]) -> anyhow::Result<()> {
        let mut tries = 0;
        loop {
            match self.cluster.start(node, bootstrap) {
                Ok(()) => return Ok(()),
                Err(e) if tries < 50 => {
                    tracing::debug!(node, error = %e, "storage not released yet");
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.context(format!("cannot restart {}", self.plan.nodes[node].name))),
            }
        }
    }

    fn publish_all(&mut self, provider: usize) {
        let node = &self.cluster.nodes[provider];
        let (Some(h), Some(site)) = (node.handles(), &node.plan.site) else { return };
        let h = h.clone();
        let terms: Vec<wire::Offer> = node.plan.offers.iter().map(|o| offer_terms(site, o, o.price_micros)).collect();
        self.tasks.spawn(async move {
            for t in terms {
                if let Err(e) = ask(&h, |tx| AdminCommand::Publish(t, 0, tx)).await.and_then(|r| r.map(drop)) {
                    tracing::warn!(error = %e, "publishing an offer failed");
                }
            }
        });
    }

    fn place(&mut self, spec: &PlaceSpec) {
        let at_us = self.recorder.now_us();
        let Some(h) = self.cluster.nodes[spec.consumer].handles().cloned() else {
            let failed = Placement {
                at_us,
                latency_us: 0,
                consumer: spec.consumer,
                outcome: PlaceOutcome::Failed("consumer down".into()),
            };
            if let Ok(mut p) = self.placements.lock() {
                p.push(failed);
            }
            return;
        };
        let request = wire::PlaceRequest {
            units: spec.units,
            min_per_unit: Some(wire::Resources { vcpu: spec.vcpu, memory_mib: spec.memory_mib, ..Default::default() }),
            countries: spec.countries.clone(),
            max_unit_price: spec.max_unit_price_micros.map(|micros| wire::Price { currency: "EUR".into(), micros }),
            duration_ms: spec.duration_ms,
            spread: match spec.spread {
                Spread::None => wire::Spread::None,
                Spread::Providers => wire::Spread::Providers,
                Spread::Countries => wire::Spread::Countries,
            } as i32,
            ..Default::default()
        };
        let (consumer, release) = (spec.consumer, spec.release_after_ms);
        let wall = {
            let recorder = Arc::clone(&self.recorder);
            move |ms: u64| recorder.wall(ms)
        };
        // A placement answers by its deadline; the command timeout is only
        // there for a node that hangs.
        let within = COMMAND_TIMEOUT.max(self.recorder.wall(self.place_deadline_ms() + 60_000));
        let (placements, live, recorder, requests) =
            (Arc::clone(&self.placements), Arc::clone(&self.live), Arc::clone(&self.recorder), self.requests.clone());
        self.live.in_flight.fetch_add(1, Ordering::Relaxed);
        self.tasks.spawn(async move {
            let sent = recorder.now_us();
            let answer = ask_within(&h, within, |tx| AdminCommand::Place(request, tx)).await;
            let latency_us = recorder.now_us().saturating_sub(sent);
            let (outcome, ids) = match answer {
                Ok(Ok(result)) if !result.contracts.is_empty() => {
                    let units = result.contracts.iter().filter_map(|c| c.body.as_ref()).map(|b| b.units).sum();
                    let ids: Vec<ContractId> = result
                        .contracts
                        .iter()
                        .filter_map(|c| <[u8; 32]>::try_from(c.contract_id.as_slice()).ok().map(ContractId))
                        .collect();
                    (PlaceOutcome::Placed { contracts: result.contracts.len() as u32, units }, ids)
                }
                Ok(Ok(result)) => (PlaceOutcome::NotPlaced(result.explanation), Vec::new()),
                Ok(Err(e)) => (PlaceOutcome::NotPlaced(e), Vec::new()),
                Err(e) => (PlaceOutcome::Failed(e), Vec::new()),
            };
            match &outcome {
                PlaceOutcome::Placed { contracts, .. } => {
                    live.placed.fetch_add(1, Ordering::Relaxed);
                    live.contracts.fetch_add(u64::from(*contracts), Ordering::Relaxed);
                }
                _ => {
                    live.not_placed.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Ok(mut p) = placements.lock() {
                p.push(Placement { at_us: sent, latency_us, consumer, outcome });
            }
            live.in_flight.fetch_sub(1, Ordering::Relaxed);
            if let Some(after) = release
                && !ids.is_empty()
            {
                tokio::time::sleep(wall(after)).await;
                let _ = requests.send(Request::Release { consumer, contracts: ids });
            }
        });
    }

    fn on_request(&mut self, request: Request) {
        match request {
            Request::Release { consumer, contracts } => {
                let Some(h) = self.cluster.nodes[consumer].handles().cloned() else { return };
                self.tasks.spawn(async move {
                    for id in contracts {
                        let reason = TerminationReason::CustomerRequest;
                        if let Err(e) = ask(&h, |tx| AdminCommand::Terminate(id, reason, tx)).await.and_then(|r| r) {
                            tracing::debug!(error = %e, "terminating a contract failed");
                        }
                    }
                });
            }
        }
    }

    /// Status, evidence and a verified export of every node; then every
    /// node is stopped and its log read.
    async fn collect(&mut self, t0_us: u64, end_us: u64, warmup_ms: u64, bar: &ProgressBar) -> anyhow::Result<Outcome> {
        let n = self.cluster.nodes.len();
        let mut audits: Vec<Option<Result<AuditReport, String>>> = (0..n).map(|_| None).collect();
        let mut evidence: Vec<Option<Vec<PublicKey>>> = vec![None; n];
        let mut peers: Vec<Option<u32>> = vec![None; n];
        let exports = self.work.join("exports");
        std::fs::create_dir_all(&exports)?;
        // The measurement is over: the checkpoints each export signs are not
        // gossiped to a thousand nodes that would all verify them.
        self.net.isolate();
        let up: Vec<usize> = (0..n).filter(|i| self.cluster.nodes[*i].is_up()).collect();
        for chunk in up.chunks(32) {
            let asks = chunk.iter().map(|i| {
                let cluster = &self.cluster;
                let out = exports.join(format!("{}.export", cluster.nodes[*i].plan.name));
                async move {
                    let status = cluster.ask(*i, AdminCommand::Status).await.ok();
                    let evidence = cluster.ask(*i, AdminCommand::Evidence).await.ok().map(|list| {
                        list.evidence.iter().filter_map(|e| PublicKey::from_bytes(&e.accused).ok()).collect()
                    });
                    let audit = cluster.export_and_verify(*i, &out).await;
                    (*i, status.map(|s| s.connected_peers), evidence, audit)
                }
            });
            for (i, status, ev, audit) in futures::future::join_all(asks).await {
                peers[i] = status;
                evidence[i] = ev;
                audits[i] = Some(audit);
            }
            bar.set_message(format!("verified {} of {} logs", audits.iter().flatten().count(), n));
        }
        let peak_before_stop = host::peak_kib();
        let attack = self.attacker.take().map(|(orders, stats)| {
            drop(orders);
            let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
            AttackSnapshot {
                forged: get(&stats.forged),
                flood: crate::report::FloodCounts {
                    proposals: get(&stats.proposals),
                    held: get(&stats.held),
                    rate_limited: get(&stats.rate_limited),
                    refused: get(&stats.refused),
                    unanswered: get(&stats.unanswered),
                    not_connected: get(&stats.not_connected),
                    refusals: stats.refusals.lock().map(|r| r.clone()).unwrap_or_default(),
                },
            }
        });
        phase(bar, "stopping nodes");
        self.cluster.stop_all(&up).await;
        // Nodes down at the end come up once more, alone, to export their logs.
        for (i, slot) in audits.iter_mut().enumerate() {
            if slot.is_some() || self.cluster.nodes[i].up.is_empty() {
                continue;
            }
            let out = exports.join(format!("{}.export", self.cluster.nodes[i].plan.name));
            let audit = match self.start_when_released(i, &[]).await {
                Ok(()) => {
                    let a = self.cluster.export_and_verify(i, &out).await;
                    self.cluster.stop(i).await;
                    // That extra time up is not part of the run.
                    if let Some(last) = self.cluster.nodes[i].up.pop()
                        && let Some(prev) = self.cluster.nodes[i].up.last_mut()
                        && prev.1.is_none()
                    {
                        prev.1 = Some(last.0);
                    }
                    a
                }
                Err(e) => Err(format!("{e:#}")),
            };
            *slot = Some(audit);
        }
        phase(bar, "reading logs");
        let mut nodes = Vec::with_capacity(n);
        let mut arrivals = Vec::with_capacity(n);
        for (i, node) in self.cluster.nodes.iter().enumerate() {
            let config = self.scenario.node.config(node.dir.clone(), String::new(), Vec::new(), 1);
            let records = if node.up.is_empty() { Ok(Vec::new()) } else { read_records(&config.log_path()) };
            let r = &self.recorder.nodes[i];
            let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
            let traffic = self
                .net
                .traffic(i)
                .map_or([0; 4], |t| [get(&t.bytes_in), get(&t.bytes_out), get(&t.frames_in), get(&t.frames_out)]);
            nodes.push(NodeOutcome {
                name: node.plan.name.clone(),
                role: node.plan.role,
                key: Identity::from_secret_bytes(&node.plan.secret).public(),
                up: node.up.clone(),
                late_joiner: node.plan.joins_at_ms.is_some(),
                equivocated: node.equivocated,
                failure: node.failure.clone(),
                audit: audits[i].take().unwrap_or_else(|| Err("never started".into())),
                records,
                evidence_against: evidence[i].take(),
                peers_at_end: peers[i],
                traffic,
                gossip: [
                    get(&r.gossip_accepted),
                    get(&r.gossip_rejected),
                    get(&r.gossip_ignored),
                    get(&r.offers_rejected),
                    get(&r.audit_messages),
                ],
                unknown_offers: get(&r.unknown_offers),
            });
            // What arrived after the end of the measurement (while the logs
            // were collected) does not count.
            let mut a = self.recorder.sorted_arrivals(i);
            a.retain(|x| x.at_us <= end_us);
            arrivals.push(a);
        }
        let placements = self.placements.lock().map(|p| p.clone()).unwrap_or_default();
        Ok(Outcome {
            plan: self.plan.clone(),
            t0_us,
            end_us,
            startup_ms: 0,
            mesh_connections: 0,
            warmup_ms,
            wall: Duration::ZERO,
            nodes,
            publications: self.recorder.publications().into_iter().filter(|p| p.at_us <= end_us).collect(),
            arrivals,
            offers: self.offers.clone(),
            placements,
            faults: std::mem::take(&mut self.faults),
            partitions: self.partitions.clone(),
            floods: self.floods.clone(),
            attack,
            host: host::HostStats { peak_kib: peak_before_stop, ..host::HostStats::default() },
            max_up: self.max_up,
            connections: self.net.connections(),
        })
    }
}

/// Shows what the run is doing, on the bar and in the log.
fn phase(bar: &ProgressBar, what: &str) {
    tracing::info!("{what}");
    bar.set_message(what.to_owned());
}

fn names(plan: &Plan, nodes: &[usize]) -> String {
    let names: Vec<&str> = nodes.iter().filter_map(|n| plan.nodes.get(*n)).map(|n| n.name.as_str()).collect();
    match names.len() {
        0..=3 => names.join(", "),
        k => format!("{}, ... ({k} nodes)", names[..2].join(", ")),
    }
}

fn read_records(path: &Path) -> Result<Vec<Record>, String> {
    let (frames, _) = read_log(path).map_err(|e| e.to_string())?;
    frames.iter().enumerate().map(|(i, f)| Record::from_cbor(f).map_err(|e| format!("record {i}: {e}"))).collect()
}

async fn tick_progress(bar: ProgressBar, t0_us: u64, duration_ms: u64, live: Arc<Live>, recorder: Arc<Recorder>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut next_line = 0u64;
    loop {
        tick.tick().await;
        let elapsed = recorder.now_us().saturating_sub(t0_us) / 1000;
        bar.set_position(elapsed.min(duration_ms));
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let message = format!(
            "t={:.1}s nodes up {} | offers delivered {} | placed {} failed {} | contracts {} | faults {}",
            elapsed as f64 / 1000.0,
            live.up.load(Ordering::Relaxed),
            get(&recorder.deliveries),
            get(&live.placed),
            get(&live.not_placed),
            get(&live.contracts),
            get(&live.faults),
        );
        // Every ten seconds in the log too, for runs without a terminal.
        if elapsed >= next_line {
            tracing::info!("{message}");
            next_line = elapsed - elapsed % 10_000 + 10_000;
        }
        bar.set_message(message);
    }
}

async fn sample_memory(recorder: Arc<Recorder>, samples: Arc<Mutex<Vec<(f64, f64)>>>) {
    let mut tick = tokio::time::interval(recorder.wall(1_000));
    loop {
        tick.tick().await;
        let t = recorder.now_us() as f64 / 1e6;
        if let Ok(mut s) = samples.lock() {
            s.push((t, host::rss_kib() as f64 / 1024.0));
        }
    }
}
