//! The baseline: bare libp2p gossipsub on the same simulated network, to set
//! Fulcrum's offer propagation against. The same nodes (keys, bootstrap
//! peers, count) as a scenario's plan, the same link model
//! ([`Network::transport`]), the same gossipsub configuration and peer
//! scoring as a node ([`net::gossip_config`], [`net::gossip_scoring`]) and
//! the same discovery (Kademlia from the bootstrap peers, peers found dialed
//! up to the node's discovery target), publishing random payloads of the size of a real offer envelope.
//! What is left out is everything Fulcrum does with a message: no signature
//! check, no offer book, no log, no index, no offer-book sync.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use fulcrum_node::daemon::now_ms;
use fulcrum_node::net;
use fulcrum_protocol::Limits;
use fulcrum_protocol::keys::Identity;
use fulcrum_protocol::offer::Offer;
use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance, MessageAuthenticity};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, Swarm, connection_limits, identify, kad};
use rand::seq::SliceRandom;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::analysis::percentiles;
use crate::cluster::offer_terms;
use crate::link::{LinkModel, Network};
use crate::plan::{Action, Plan, Role};
use crate::report::{LinkSummary, Percentiles};
use crate::scenario::Scenario;
use crate::{FEDERATION, host};

/// How a baseline run is made.
#[derive(Debug, Clone, Default)]
pub struct BaselineOptions {
    /// Seed (the scenario's when None).
    pub seed: Option<u64>,
    /// Messages to publish, evenly over the scenario's timeline from random
    /// providers. None: the offer versions the scenario's plan publishes, at
    /// the plan's times, by the plan's providers.
    pub messages: Option<usize>,
}

/// Publication to arrival at every other node.
#[derive(Debug, Clone, Serialize)]
pub struct BaselinePropagation {
    /// Messages published.
    pub messages: usize,
    /// Messages gossipsub refused to publish (no peers, say).
    pub publish_failures: u64,
    /// (node, message) pairs that should arrive: every other node, per message.
    pub deliveries: usize,
    /// Pairs that arrived.
    pub reached: usize,
    /// `reached / deliveries`.
    pub reached_fraction: f64,
    /// Publication to arrival.
    pub latency: Option<Percentiles>,
}

/// Traffic per node, from [`Network::traffic`].
#[derive(Debug, Clone, Serialize)]
pub struct BaselineTraffic {
    /// Bytes in and out over the whole run (warm-up included, as in the
    /// simulator's report), mean.
    pub bytes_per_node_mean: f64,
    /// Bytes in and out over the whole run, most.
    pub bytes_per_node_max: f64,
    /// Transmissions in and out over the whole run, mean.
    pub transmissions_per_node_mean: f64,
    /// Bytes in and out from the first publication to the end, mean.
    pub timeline_bytes_per_node_mean: f64,
    /// Transmissions in and out from the first publication to the end, mean.
    pub timeline_transmissions_per_node_mean: f64,
    /// Gossip messages received (first copies), mean.
    pub gossip_messages_per_node_mean: f64,
    /// Connections opened in all.
    pub connections: u64,
}

/// Process figures.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineHost {
    /// CPU time of the process over the run, s.
    pub cpu_s: f64,
    /// Resident set before any node started, MiB.
    pub baseline_mib: f64,
    /// Peak resident set of the process (VmHWM), MiB.
    pub peak_mib: f64,
    /// CPUs of the machine.
    pub cpus: usize,
    /// One-minute load average at the start and at the end.
    pub load_average: (f64, f64),
}

/// The baseline's report (`baseline.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Nodes (those up from the start in the scenario).
    pub nodes: usize,
    /// Bootstrap peers each node dials.
    pub bootstrap_peers: u32,
    /// Link model.
    pub link: LinkSummary,
    /// Bytes of every message: the median encoded offer envelope of the plan.
    pub payload_bytes: usize,
    /// Smallest and largest offer envelope of the plan.
    pub envelope_bytes_range: (usize, usize),
    /// Messages came from the plan's publications (or were spread evenly).
    pub schedule: String,
    /// Time over which messages were published, s.
    pub publish_window_s: f64,
    /// Time for the mesh to form, s.
    pub warmup_s: f64,
    /// Connections between nodes when publishing started.
    pub connections_at_start: u64,
    /// Mean gossipsub mesh peers per node on the topic when publishing started.
    pub mesh_peers_mean: f64,
    /// Wall time of the run, s.
    pub wall_time_s: f64,
    /// Propagation.
    pub propagation: BaselinePropagation,
    /// Traffic.
    pub traffic: BaselineTraffic,
    /// CPU and memory.
    pub host: BaselineHost,
    /// How things were measured.
    pub methodology: Vec<String>,
}

/// Memory ports are process-wide: baseline runs take a range far from the
/// simulator's ones.
static NEXT_PORT: AtomicU64 = AtomicU64::new(1 << 40);

/// The behaviour of a baseline node: gossipsub, plus what a node uses to
/// find its peers (identify and Kademlia) and its connection limits, so that
/// the peer graph is the one the simulated nodes build.
#[derive(NetworkBehaviour)]
struct Bare {
    full: net::Guard,
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    gossipsub: gossipsub::Behaviour,
}

/// Orders to a baseline node.
enum Order {
    /// Publish message `index`.
    Publish { index: u32, data: Vec<u8> },
    /// Connected peers and mesh peers on the topic.
    Status(oneshot::Sender<(usize, usize)>),
}

/// What the nodes record as it happens.
struct Record {
    epoch: Instant,
    /// Simulated time runs this many times slower than the wall clock.
    dilation: u32,
    /// Per message, when it was published (µs from the epoch).
    published: Mutex<Vec<Option<u64>>>,
    /// Per node, messages received: (message, µs from the epoch).
    arrivals: Vec<Mutex<Vec<(u32, u64)>>>,
    publish_failures: AtomicU64,
}

impl Record {
    /// Simulated µs since the epoch.
    fn now_us(&self) -> u64 {
        (self.epoch.elapsed().as_micros() / u128::from(self.dilation)) as u64
    }
}

/// Runs the baseline of `scenario`.
pub fn run(scenario: &Scenario, options: &BaselineOptions) -> anyhow::Result<Baseline> {
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("fulcrum-sim-baseline")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let plan = Plan::generate(scenario, options.seed.unwrap_or(scenario.seed));
    let result = runtime.block_on(baseline(scenario, &plan, options));
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

/// Runs the baseline and writes `baseline.json` and `baseline.md` to `out`.
pub fn run_and_write(scenario: &Scenario, options: &BaselineOptions, out: &Path) -> anyhow::Result<Baseline> {
    let b = run(scenario, options)?;
    b.write(out)?;
    Ok(b)
}

/// What is published: (ms from the start of the timeline, publisher), in
/// time order.
pub fn schedule(plan: &Plan, messages: Option<usize>) -> Vec<(u64, usize)> {
    let initial: Vec<usize> = plan.initial_nodes().map(|n| n.index).collect();
    let is_initial = |n: usize| initial.contains(&n);
    let mut out = Vec::new();
    match messages {
        None => {
            for e in &plan.events {
                match &e.action {
                    Action::Publish { provider } if is_initial(*provider) => {
                        let offers = plan.nodes[*provider].offers.len();
                        out.extend(std::iter::repeat_n((e.at_ms, *provider), offers));
                    }
                    Action::Republish { provider, .. } if is_initial(*provider) => out.push((e.at_ms, *provider)),
                    _ => {}
                }
            }
        }
        Some(m) => {
            let providers: Vec<usize> =
                initial.iter().copied().filter(|n| plan.nodes[*n].role == Role::Provider).collect();
            let publishers = if providers.is_empty() { initial } else { providers };
            let mut rng = ChaCha8Rng::seed_from_u64(plan.seed ^ 0xba5e_11e0);
            for k in 0..m {
                let at = k as u64 * plan.duration_ms / m.max(1) as u64;
                if let Some(p) = publishers.choose(&mut rng) {
                    out.push((at, *p));
                }
            }
        }
    }
    out.sort_by_key(|(at, _)| *at);
    out
}

/// Encoded sizes of the offer envelopes of the plan's providers, built as a
/// node builds them when it publishes (seq 1, lifetime the node's offer TTL).
pub fn envelope_sizes(scenario: &Scenario, plan: &Plan) -> anyhow::Result<Vec<usize>> {
    let config = scenario.node.config(PathBuf::new(), String::new(), Vec::new(), 1);
    let ttl = config.ms(&config.offer_ttl);
    let limits = Limits::default();
    let now = now_ms();
    let mut sizes = Vec::new();
    for n in &plan.nodes {
        let Some(site) = &n.site else { continue };
        let identity = Identity::from_secret_bytes(&n.secret);
        for o in &n.offers {
            let mut w = offer_terms(site, o, o.price_micros);
            w.provider = identity.public().to_bytes().to_vec();
            w.federation = FEDERATION.into();
            w.seq = 1;
            w.issued_at_ms = now;
            w.expires_at_ms = now + ttl;
            let offer = Offer::from_wire(w, &limits).map_err(|e| anyhow::anyhow!("offer {}: {e}", o.offer_id))?;
            sizes.push(offer.sign(&identity).envelope().encode().len());
        }
    }
    sizes.sort_unstable();
    Ok(sizes)
}

async fn baseline(scenario: &Scenario, plan: &Plan, options: &BaselineOptions) -> anyhow::Result<Baseline> {
    let started = std::time::Instant::now();
    let (cpu_before, load_before, rss_before) = (host::cpu_s(), host::load_average(), host::rss_kib());
    let sizes = envelope_sizes(scenario, plan)?;
    let payload_bytes = sizes.get(sizes.len() / 2).copied().context("the scenario publishes no offers")?.max(8);
    let sends = schedule(plan, options.messages);
    let n = plan.initial_nodes().count();
    let dilation = scenario.time_dilation.max(1);
    let net = Network::new(plan.seed, LinkModel::from_spec(&scenario.link), n, dilation);
    let config = scenario.node.config(PathBuf::new(), String::new(), Vec::new(), dilation);
    let topic = net::offers_topic(FEDERATION);
    let record = Arc::new(Record {
        epoch: Instant::now(),
        dilation,
        published: Mutex::new(vec![None; sends.len()]),
        arrivals: (0..n).map(|_| Mutex::new(Vec::new())).collect(),
        publish_failures: AtomicU64::new(0),
    });

    // The nodes, each dialing its planned bootstrap peers, as the simulator starts them.
    let first_port = NEXT_PORT.fetch_add(n as u64 + 16, Ordering::Relaxed);
    let mut keys = Vec::with_capacity(n);
    let mut addrs = Vec::with_capacity(n);
    for node in plan.initial_nodes() {
        let key = net::keypair(&Identity::from_secret_bytes(&node.secret)).map_err(anyhow::Error::msg)?;
        let port = first_port + node.index as u64;
        net.register(node.index, port);
        let addr: Multiaddr = format!("/memory/{port}").parse()?;
        addrs.push((addr, key.public().to_peer_id()));
        keys.push(key);
    }
    let mut orders = Vec::with_capacity(n);
    let mut tasks = JoinSet::new();
    for (k, (node, key)) in plan.initial_nodes().zip(keys).enumerate() {
        let i = node.index;
        let transport = net.transport(i, &key)?;
        let bare = bare(&key, config.max_peers, &topic, dilation)?;
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(|_| transport)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .with_behaviour(|_| bare)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(scenario.wall(120_000)))
            .build();
        let listen = addrs.get(i).map(|(a, _)| a.clone()).context("nodes up from the start come first in a plan")?;
        swarm.listen_on(listen)?;
        for &j in &node.bootstrap {
            let Some((addr, peer)) = addrs.get(j) else { continue };
            let addr = addr.clone().with(libp2p::multiaddr::Protocol::P2p(*peer));
            swarm.behaviour_mut().kad.add_address(peer, addr.clone());
            if let Err(e) = swarm.dial(addr) {
                tracing::warn!(node = i, error = %e, "cannot dial bootstrap peer");
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        orders.push(tx);
        let target = fulcrum_node::daemon::discovery_target(config.max_peers);
        tasks.spawn(run_node(swarm, i, topic.clone(), rx, Arc::clone(&record), target, scenario.wall(10_000)));
        if k % 50 == 49 {
            tokio::task::yield_now().await;
        }
    }

    let warming = Instant::now();
    let (connections_at_start, mesh_peers_mean) = warm_up(&orders, scenario).await;
    let warmup_s = warming.elapsed().as_secs_f64() / f64::from(dilation);

    // The timeline.
    let traffic_at = |i: usize| {
        net.traffic(i).map_or([0; 2], |t| {
            let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
            [get(&t.bytes_in) + get(&t.bytes_out), get(&t.frames_in) + get(&t.frames_out)]
        })
    };
    let before: Vec<[u64; 2]> = (0..n).map(traffic_at).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed ^ 0x9a71_0ad5);
    let t0 = Instant::now();
    for (index, (at_ms, publisher)) in sends.iter().enumerate() {
        tokio::time::sleep_until(t0 + scenario.wall(*at_ms)).await;
        // Random bytes, the first four naming the message (ids stay content
        // addressed: the payloads differ).
        let mut data = vec![0u8; payload_bytes];
        rng.fill_bytes(&mut data);
        data[..4].copy_from_slice(&(index as u32).to_le_bytes());
        if let Some(tx) = orders.get(*publisher) {
            let _ = tx.send(Order::Publish { index: index as u32, data });
        }
    }
    let last = sends.last().map_or(0, |(at, _)| *at);
    let window_ms = plan.duration_ms.max(last);
    tokio::time::sleep_until(t0 + scenario.wall(window_ms + scenario.drain.0)).await;
    let end_us = record.now_us();
    let after: Vec<[u64; 2]> = (0..n).map(traffic_at).collect();
    let peak_kib = host::peak_kib();
    let cpu_s = host::cpu_s() - cpu_before;
    let load_after = host::load_average();
    drop(orders);
    let stopping = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), stopping).await.is_err() {
        tasks.abort_all();
    }

    // The figures.
    let published = record.published.lock().map(|p| p.clone()).unwrap_or_default();
    let mut samples = Vec::new();
    let mut received = Vec::with_capacity(n);
    let (mut deliveries, mut reached) = (0usize, 0usize);
    for i in 0..n {
        let mut arrivals = record.arrivals[i].lock().map(|a| a.clone()).unwrap_or_default();
        received.push(arrivals.len() as f64);
        arrivals.retain(|(_, at)| *at <= end_us);
        arrivals.sort_unstable();
        let mut seen = HashSet::new();
        for (msg, at) in arrivals {
            let Some(Some(sent)) = published.get(msg as usize) else { continue };
            if seen.insert(msg) {
                reached += 1;
                samples.push(at.saturating_sub(*sent) as f64 / 1000.0);
            }
        }
        deliveries += published.iter().zip(&sends).filter(|(p, (_, publisher))| p.is_some() && *publisher != i).count();
    }
    let k = n.max(1) as f64;
    let whole = &after;
    let timeline: Vec<[u64; 2]> = after.iter().zip(&before).map(|(a, b)| [a[0] - b[0], a[1] - b[1]]).collect();
    let mean = |v: &[[u64; 2]], f: usize| v.iter().map(|x| x[f] as f64).sum::<f64>() / k;
    let sent = published.iter().filter(|p| p.is_some()).count();
    let schedule = match options.messages {
        None => format!("the plan's {} offer versions, at the plan's times, by the plan's providers", sends.len()),
        Some(m) => format!("{m} messages evenly over the timeline, each from a random provider"),
    };
    Ok(Baseline {
        scenario: plan.scenario.clone(),
        seed: plan.seed,
        nodes: n,
        bootstrap_peers: scenario.nodes.bootstrap_peers,
        link: LinkSummary {
            latency_ms: scenario.link.latency.0,
            jitter_ms: scenario.link.jitter.0,
            distribution: format!("{:?}", scenario.link.distribution).to_lowercase(),
            loss: scenario.link.loss,
            bandwidth_mbps: scenario.link.bandwidth_mbps,
        },
        payload_bytes,
        envelope_bytes_range: (sizes.first().copied().unwrap_or(0), sizes.last().copied().unwrap_or(0)),
        schedule,
        publish_window_s: window_ms as f64 / 1000.0,
        warmup_s,
        connections_at_start,
        mesh_peers_mean,
        wall_time_s: started.elapsed().as_secs_f64(),
        propagation: BaselinePropagation {
            messages: sent,
            publish_failures: record.publish_failures.load(Ordering::Relaxed),
            deliveries,
            reached,
            reached_fraction: if deliveries == 0 { 1.0 } else { reached as f64 / deliveries as f64 },
            latency: percentiles(&mut samples),
        },
        traffic: BaselineTraffic {
            bytes_per_node_mean: mean(whole, 0),
            bytes_per_node_max: whole.iter().map(|x| x[0] as f64).fold(0.0, f64::max),
            transmissions_per_node_mean: mean(whole, 1),
            timeline_bytes_per_node_mean: mean(&timeline, 0),
            timeline_transmissions_per_node_mean: mean(&timeline, 1),
            gossip_messages_per_node_mean: received.iter().sum::<f64>() / k,
            connections: net.connections(),
        },
        host: BaselineHost {
            cpu_s,
            baseline_mib: rss_before as f64 / 1024.0,
            peak_mib: peak_kib as f64 / 1024.0,
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            load_average: (load_before, load_after),
        },
        methodology: methodology(),
    })
}

/// The behaviour of a baseline node: the node's gossipsub configuration and
/// scoring, its connection limits and discovery.
fn bare(
    key: &libp2p::identity::Keypair,
    max_peers: u32,
    topic: &gossipsub::IdentTopic,
    dilation: u32,
) -> anyhow::Result<Bare> {
    let peer_id = key.public().to_peer_id();
    // Anonymous, as in the node: the payload would carry its own signature.
    let config = net::gossip_config(dilation).map_err(anyhow::Error::msg)?;
    let mut gossipsub =
        gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, config).map_err(anyhow::Error::msg)?;
    let (params, thresholds) = net::gossip_scoring(&[topic.hash()], dilation);
    gossipsub.with_peer_score(params, thresholds).map_err(anyhow::Error::msg)?;
    gossipsub.subscribe(topic)?;
    Ok(Bare {
        full: net::Guard::new(max_peers),
        limits: net::limits(max_peers),
        identify: net::identification(key, dilation),
        kad: net::discovery(peer_id, dilation),
        gossipsub,
    })
}

/// The event loop of one baseline node, until its order channel closes.
async fn run_node(
    mut swarm: Swarm<Bare>,
    me: usize,
    topic: gossipsub::IdentTopic,
    mut orders: mpsc::UnboundedReceiver<Order>,
    record: Arc<Record>,
    target: usize,
    refresh: Duration,
) {
    // Discovery refreshes as the node's do: every 10 s while the routing
    // table is short, then Kademlia's own every five minutes.
    let mut kad_refresh = tokio::time::interval(refresh);
    loop {
        tokio::select! {
            order = orders.recv() => match order {
                None => break,
                Some(Order::Publish { index, data }) => {
                    let at = record.now_us();
                    if let Ok(mut p) = record.published.lock()
                        && let Some(slot) = p.get_mut(index as usize)
                    {
                        *slot = Some(at);
                    }
                    if let Err(e) = swarm.behaviour_mut().gossipsub.publish(topic.clone(), data) {
                        tracing::debug!(node = me, error = %e, "message not published");
                        record.publish_failures.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut p) = record.published.lock()
                            && let Some(slot) = p.get_mut(index as usize)
                        {
                            *slot = None;
                        }
                    }
                }
                Some(Order::Status(tx)) => {
                    let g = &swarm.behaviour().gossipsub;
                    let _ = tx.send((swarm.connected_peers().count(), g.mesh_peers(&topic.hash()).count()));
                }
            },
            event = swarm.select_next_some() => on_event(&mut swarm, me, event, &record, target),
            _ = kad_refresh.tick() => {
                let kad = &mut swarm.behaviour_mut().kad;
                let known: usize = kad.kbuckets().map(|b| b.num_entries()).sum();
                if known < 20 {
                    let me = *swarm.local_peer_id();
                    swarm.behaviour_mut().kad.get_closest_peers(me);
                }
            }
        }
    }
}

fn on_event(swarm: &mut Swarm<Bare>, me: usize, event: SwarmEvent<BareEvent>, record: &Record, target: usize) {
    match event {
        SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } if endpoint.is_dialer() => {
            swarm.behaviour_mut().kad.add_address(&peer_id, endpoint.get_remote_address().clone());
        }
        SwarmEvent::Behaviour(BareEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
            for addr in info.listen_addrs {
                swarm.behaviour_mut().kad.add_address(&peer_id, addr);
            }
        }
        // The node's rule: discovered peers are dialled up to its discovery target.
        SwarmEvent::Behaviour(BareEvent::Kad(kad::Event::RoutingUpdated { peer, .. }))
            if !swarm.is_connected(&peer) && swarm.connected_peers().count() < target =>
        {
            let _ = swarm.dial(peer);
        }
        SwarmEvent::Behaviour(BareEvent::Gossipsub(gossipsub::Event::Message {
            propagation_source,
            message_id,
            message,
        })) => {
            let at = record.now_us();
            // The node runs gossipsub with `validate_messages()`: nothing is
            // forwarded until the application reports a result. Bare gossipsub
            // does no validation work: every message is accepted at once.
            let _ = swarm.behaviour_mut().gossipsub.report_message_validation_result(
                &message_id,
                &propagation_source,
                MessageAcceptance::Accept,
            );
            if let Some(index) = message.data.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok())
                && let Some(arrivals) = record.arrivals.get(me)
                && let Ok(mut a) = arrivals.lock()
            {
                a.push((u32::from_le_bytes(index), at));
            }
        }
        _ => {}
    }
}

/// The simulator's warm-up: until every node has a peer and the number of
/// connections grew by under 1% in a second, three looks in a row, then
/// 2.1 s (three heartbeats) for meshes to form. Returns the connections and
/// the mean mesh peers then.
async fn warm_up(orders: &[mpsc::UnboundedSender<Order>], scenario: &Scenario) -> (u64, f64) {
    let start = Instant::now();
    let limit = start + scenario.wall(60_000 + 60 * orders.len() as u64);
    let (mut last, mut steady) = (0u64, 0);
    loop {
        let (lonely, links, _) = status(orders).await;
        steady = if lonely == 0 && links * 100 <= last * 101 { steady + 1 } else { 0 };
        last = links;
        if steady >= 3 || Instant::now() > limit {
            if lonely > 0 {
                tracing::warn!(lonely, "baseline nodes without a peer after the warm-up limit");
            }
            break;
        }
        tokio::time::sleep(scenario.wall(1_000)).await;
    }
    tokio::time::sleep(scenario.wall(2_100)).await;
    let (_, links, mesh) = status(orders).await;
    (links / 2, mesh as f64 / orders.len().max(1) as f64)
}

/// Nodes without a peer, connections counted at both ends, mesh peers in all.
async fn status(orders: &[mpsc::UnboundedSender<Order>]) -> (usize, u64, usize) {
    let asks = orders.iter().map(|tx| async move {
        let (reply, answer) = oneshot::channel();
        tx.send(Order::Status(reply)).ok()?;
        answer.await.ok()
    });
    let (mut lonely, mut links, mut mesh) = (0, 0u64, 0);
    for s in futures::future::join_all(asks).await {
        match s {
            Some((peers, m)) if peers > 0 => {
                links += peers as u64;
                mesh += m;
            }
            _ => lonely += 1,
        }
    }
    (lonely, links, mesh)
}

fn methodology() -> Vec<String> {
    vec![
        "Bare libp2p gossipsub on the simulator's network: the same nodes (keys, bootstrap peers, count) as the \
         scenario's plan, the same link model, the same gossipsub configuration and peer scoring as a node, and \
         the same discovery (identify and Kademlia from the bootstrap peers, peers found dialed up to a quarter \
         of max_peers, the same connection limits, refused before the handshake when full), so that the peer graph is built as the nodes build theirs."
            .into(),
        "Every message is random bytes of the size of an offer envelope of the plan (the median, encoded as a \
         node publishes it). The node runs gossipsub with validate_messages(); here every message is accepted \
         as soon as it arrives: no signature check, no offer book, no log, no index, no book sync."
            .into(),
        "The warm-up is the simulator's: until every node has a peer and the number of connections grew by less \
         than 1% in a second, three times in a row, then 2.1 s for meshes to form. The scenario's faults and late \
         joiners are not replayed: this is dissemination over the steady network."
            .into(),
        "Propagation runs from the moment the publisher hands the message to gossipsub to the moment each other \
         node's gossipsub delivers it, both taken in the nodes' event loops (wall-clock time of the process). \
         Measurement ends after the publication window and the scenario's drain."
            .into(),
        "Traffic is what crosses the simulated links (Noise and Yamux framing included), per node; CPU time and \
         peak resident set are the process's."
            .into(),
    ]
}

fn fmt_ms(p: &Option<Percentiles>) -> String {
    match p {
        Some(p) => format!("{:.1} / {:.1} / {:.1} (max {:.1}, n={})", p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms, p.count),
        None => "no samples".into(),
    }
}

fn kib(bytes: f64) -> String {
    if bytes >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", bytes / 1024.0 / 1024.0)
    } else {
        format!("{:.1} KiB", bytes / 1024.0)
    }
}

impl Baseline {
    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut o = String::new();
        let p = &self.propagation;
        let t = &self.traffic;
        let l = &self.link;
        let _ = writeln!(o, "# Baseline: bare gossipsub, {} (seed {})\n", self.scenario, self.seed);
        let _ = writeln!(o, "| | |\n|---|---|");
        let _ = writeln!(o, "| Nodes | {} ({} bootstrap peers each) |", self.nodes, self.bootstrap_peers);
        let _ = writeln!(
            o,
            "| Link | {} ms one-way, jitter {} ms ({}), loss {}, bandwidth {} |",
            l.latency_ms,
            l.jitter_ms,
            l.distribution,
            l.loss,
            if l.bandwidth_mbps == 0 { "unlimited".into() } else { format!("{} Mbit/s", l.bandwidth_mbps) }
        );
        let _ = writeln!(
            o,
            "| Payload | {} bytes (offer envelopes of the plan: {} to {} bytes) |",
            self.payload_bytes, self.envelope_bytes_range.0, self.envelope_bytes_range.1
        );
        let _ = writeln!(o, "| Messages | {} over {:.1} s: {} |", p.messages, self.publish_window_s, self.schedule);
        let _ = writeln!(
            o,
            "| Warm-up | {:.1} s; {} connections, {:.1} mesh peers per node at the start |",
            self.warmup_s, self.connections_at_start, self.mesh_peers_mean
        );
        let _ = writeln!(o, "| Wall time | {:.1} s |\n", self.wall_time_s);
        let _ = writeln!(o, "## Propagation\n\n| | |\n|---|---|");
        let _ = writeln!(o, "| Publication to arrival p50 / p95 / p99, ms | {} |", fmt_ms(&p.latency));
        let _ = writeln!(
            o,
            "| Reached | {:.2}% ({} of {} deliveries) |",
            p.reached_fraction * 100.0,
            p.reached,
            p.deliveries
        );
        let _ = writeln!(o, "| Publish failures | {} |\n", p.publish_failures);
        let _ = writeln!(o, "## Traffic per node\n\n| | whole run | publication window and drain |\n|---|---|---|");
        let _ = writeln!(
            o,
            "| Bytes in and out, mean | {} | {} |",
            kib(t.bytes_per_node_mean),
            kib(t.timeline_bytes_per_node_mean)
        );
        let _ = writeln!(o, "| Bytes in and out, most | {} | |", kib(t.bytes_per_node_max));
        let _ = writeln!(
            o,
            "| Transmissions in and out, mean | {:.0} | {:.0} |",
            t.transmissions_per_node_mean, t.timeline_transmissions_per_node_mean
        );
        let _ = writeln!(o, "| Gossip messages received, mean | {:.1} | |", t.gossip_messages_per_node_mean);
        let _ = writeln!(o, "| Connections opened in all | {} | |\n", t.connections);
        let h = &self.host;
        let _ = writeln!(o, "## Process\n\n| | |\n|---|---|");
        let _ = writeln!(o, "| CPU time | {:.2} s ({} CPUs) |", h.cpu_s, h.cpus);
        let _ =
            writeln!(o, "| Peak resident set | {:.0} MiB (before the nodes: {:.0} MiB) |", h.peak_mib, h.baseline_mib);
        let _ = writeln!(o, "| Load average, start and end | {:.2}, {:.2} |\n", h.load_average.0, h.load_average.1);
        let _ = writeln!(o, "## Methodology\n");
        for m in &self.methodology {
            let _ = writeln!(o, "- {m}");
        }
        o
    }

    /// One line for the terminal.
    pub fn summary(&self) -> String {
        let p = &self.propagation;
        let latency = match &p.latency {
            Some(l) => format!("p50 {:.0} ms  p95 {:.0} ms  p99 {:.0} ms", l.p50_ms, l.p95_ms, l.p99_ms),
            None => "no samples".into(),
        };
        format!(
            "bare gossipsub     {latency}, reached {:.2}% ({} messages of {} B, {} nodes); {} and {:.0} transmissions per node; CPU {:.1} s, peak {:.0} MiB",
            p.reached_fraction * 100.0,
            p.messages,
            self.payload_bytes,
            self.nodes,
            kib(self.traffic.bytes_per_node_mean),
            self.traffic.transmissions_per_node_mean,
            self.host.cpu_s,
            self.host.peak_mib
        )
    }

    /// Writes `baseline.json` and `baseline.md` to `out`.
    pub fn write(&self, out: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(out.join("baseline.json"), json + "\n").context("cannot write baseline.json")?;
        std::fs::write(out.join("baseline.md"), self.markdown()).context("cannot write baseline.md")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn quickstart() -> Scenario {
        Scenario::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/scenarios/quickstart.toml")).unwrap()
    }

    #[test]
    fn the_default_schedule_is_the_plans_offer_versions() {
        let s = quickstart();
        let plan = Plan::generate(&s, s.seed);
        let sends = schedule(&plan, None);
        let first = (s.nodes.providers * s.offers.per_provider) as usize;
        let republished = plan.events.iter().filter(|e| matches!(e.action, Action::Republish { .. })).count();
        assert_eq!(sends.len(), first + republished);
        assert!(sends.iter().all(|(_, p)| plan.nodes[*p].role == Role::Provider));
        assert!(sends.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    #[test]
    fn a_given_count_is_spread_over_the_timeline_from_providers() {
        let s = quickstart();
        let plan = Plan::generate(&s, 7);
        let sends = schedule(&plan, Some(20));
        assert_eq!(sends.len(), 20);
        assert_eq!(sends[1].0, plan.duration_ms / 20);
        assert!(sends.iter().all(|(at, p)| *at < plan.duration_ms && plan.nodes[*p].role == Role::Provider));
        assert_eq!(sends, schedule(&plan, Some(20)));
    }

    #[test]
    fn payloads_are_as_large_as_real_offer_envelopes() {
        let s = quickstart();
        let plan = Plan::generate(&s, s.seed);
        let sizes = envelope_sizes(&s, &plan).unwrap();
        assert_eq!(sizes.len(), (s.nodes.providers * s.offers.per_provider) as usize);
        // A signature (64 bytes) and a key (32) at least, well under the gossip limit.
        assert!(sizes.iter().all(|b| (100..net::MAX_GOSSIP_BYTES).contains(b)), "{sizes:?}");
    }
}
