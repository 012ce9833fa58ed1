//! The plan: a scenario expanded with a seed into concrete nodes (keys,
//! sites, offers, bootstrap peers) and one timeline of actions (workload and
//! faults, with the nodes each one picks). The same scenario and seed always
//! give the same plan; a run performs it against real nodes.

use std::collections::BTreeMap;

use fulcrum_protocol::keys::Identity;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::scenario::{FaultSpec, LinkSpec, RoleSpec, Scenario, SiteSpec, Spread};

/// What a node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Publishes offers.
    Provider,
    /// Places workloads.
    Consumer,
}

/// A site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SitePlan {
    /// Country code.
    pub country: String,
    /// Region.
    pub region: String,
    /// Datacenter.
    pub datacenter: String,
}

/// One offer a provider publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OfferPlan {
    /// Offer id.
    pub offer_id: String,
    /// Flavour name.
    pub flavour: String,
    /// vCPUs per unit.
    pub vcpu: u32,
    /// Memory per unit.
    pub memory_mib: u64,
    /// Storage per unit.
    pub storage_gib: u64,
    /// Units offered.
    pub units: u32,
    /// Unit price per hour, EUR micros.
    pub price_micros: u64,
    /// Shortest contract.
    pub min_duration_ms: u64,
    /// Longest contract.
    pub max_duration_ms: u64,
    /// Labels.
    pub labels: Vec<String>,
    /// SLA.
    pub sla_permille: u32,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodePlan {
    /// Position in the plan (also its place in the network).
    pub index: usize,
    /// Short name for reports.
    pub name: String,
    /// What it does.
    pub role: Role,
    /// The node's secret key (not written to plan files).
    #[serde(skip)]
    pub secret: [u8; 32],
    /// The node's public key, hex.
    pub node_key: String,
    /// Where a provider is.
    pub site: Option<SitePlan>,
    /// What a provider offers.
    pub offers: Vec<OfferPlan>,
    /// Nodes it dials when it first starts.
    pub bootstrap: Vec<usize>,
    /// When a node that was not there from the start joins.
    pub joins_at_ms: Option<u64>,
}

/// The Byzantine peer, when the scenario has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttackerPlan {
    /// Its secret key.
    #[serde(skip)]
    pub secret: [u8; 32],
    /// Its public key, hex.
    pub node_key: String,
    /// Nodes it connects to.
    pub bootstrap: Vec<usize>,
}

/// One placement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlaceSpec {
    /// The consumer placing it.
    pub consumer: usize,
    /// Units.
    pub units: u32,
    /// Least vCPUs per unit.
    pub vcpu: u32,
    /// Least memory per unit.
    pub memory_mib: u64,
    /// Allowed countries (empty: any).
    pub countries: Vec<String>,
    /// Highest unit price, EUR micros.
    pub max_unit_price_micros: Option<u64>,
    /// Contract duration.
    pub duration_ms: u64,
    /// Spread of replicas.
    pub spread: Spread,
    /// Terminate each contract this long after it was made.
    pub release_after_ms: Option<u64>,
}

/// Something the run does at a time.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// A provider publishes all of its offers.
    Publish {
        /// The provider.
        provider: usize,
    },
    /// A provider publishes one offer again at a new price (a new seq).
    Republish {
        /// The provider.
        provider: usize,
        /// Index into its offers.
        offer: usize,
        /// The new price, EUR micros.
        price_micros: u64,
    },
    /// A consumer places a workload.
    Place(PlaceSpec),
    /// A node that was never up joins (a provider then publishes its offers).
    Start {
        /// The node.
        node: usize,
    },
    /// Nodes crash (or stop cleanly).
    Kill {
        /// The nodes.
        nodes: Vec<usize>,
        /// Stopped cleanly rather than crashed.
        graceful: bool,
    },
    /// Nodes that were killed start again from their storage.
    Restart {
        /// The nodes.
        nodes: Vec<usize>,
        /// Peers each dials.
        bootstrap: Vec<Vec<usize>>,
    },
    /// Links between groups carry nothing until healed.
    Partition {
        /// The groups (nodes joining later are in the first).
        groups: Vec<Vec<usize>>,
    },
    /// Every link carries again.
    Heal,
    /// The link model changes.
    Link {
        /// The new model.
        model: LinkSpec,
    },
    /// The Byzantine peer gossips forged offers.
    ForgeOffers {
        /// How many.
        count: u32,
        /// Providers it forges offers in the name of.
        victims: Vec<usize>,
    },
    /// A provider rewrites its log while stopped, then restarts.
    Equivocate {
        /// The provider.
        node: usize,
        /// Peers it dials when it comes back.
        bootstrap: Vec<usize>,
    },
    /// The Byzantine peer starts flooding providers with proposals.
    FloodStart {
        /// The providers.
        targets: Vec<usize>,
        /// Proposals per second to each.
        rate_per_sec: f64,
    },
    /// The flood stops.
    FloodStop,
}

impl Action {
    /// True for faults (shown on charts), false for workload.
    pub fn is_fault(&self) -> bool {
        !matches!(self, Action::Publish { .. } | Action::Republish { .. } | Action::Place(_))
    }
}

/// An action at a time from the start of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// When, ms from the start of the timeline.
    pub at_ms: u64,
    /// What.
    #[serde(flatten)]
    pub action: Action,
}

/// A scenario expanded with a seed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// Scenario name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// Length of the timeline.
    pub duration_ms: u64,
    /// Every node, those joining later included.
    pub nodes: Vec<NodePlan>,
    /// The Byzantine peer, if any.
    pub attacker: Option<AttackerPlan>,
    /// The timeline, in time order.
    pub events: Vec<Event>,
}

/// A random stream of its own per concern, so that (say) adding a fault
/// does not change the workload drawn with the same seed.
fn stream(seed: u64, label: &str) -> ChaCha20Rng {
    let digest =
        Sha256::new().chain_update(b"fulcrum-sim/").chain_update(label).chain_update(seed.to_le_bytes()).finalize();
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(&digest);
    ChaCha20Rng::from_seed(bytes)
}

/// Arrival times of a Poisson process of `rate` per second in `[from, until)` ms.
fn poisson(rng: &mut impl Rng, rate: f64, from: u64, until: u64) -> Vec<u64> {
    let mut out = Vec::new();
    if rate <= 0.0 {
        return out;
    }
    let mut t = from as f64;
    loop {
        let u: f64 = rng.r#gen::<f64>().max(f64::MIN_POSITIVE);
        t += -u.ln() / rate * 1000.0;
        if t >= until as f64 {
            return out;
        }
        out.push(t as u64);
    }
}

fn weighted<'a, T>(rng: &mut impl Rng, items: &'a [T], weight: impl Fn(&T) -> u32) -> &'a T {
    let total: u64 = items.iter().map(|i| u64::from(weight(i))).sum();
    let mut pick = rng.gen_range(0..total.max(1));
    for item in items {
        let w = u64::from(weight(item));
        if pick < w {
            return item;
        }
        pick -= w;
    }
    &items[items.len() - 1]
}

/// Liveness of every node over the timeline, as the plan is built.
#[derive(Default)]
struct Liveness {
    /// Per node, the intervals it is up: `[from, to)`, `to` None while up.
    up: Vec<Vec<(u64, Option<u64>)>>,
}

impl Liveness {
    fn add(&mut self, from: u64) {
        self.up.push(vec![(from, None)]);
    }
    fn is_up(&self, node: usize) -> bool {
        self.up[node].last().is_some_and(|(_, to)| to.is_none())
    }
    fn up_at(&self, node: usize, t: u64) -> bool {
        self.up[node].iter().any(|(from, to)| *from <= t && to.is_none_or(|to| t < to))
    }
    fn down(&mut self, node: usize, t: u64) {
        if let Some(last) = self.up[node].last_mut() {
            last.1 = Some(t);
        }
    }
    fn restart(&mut self, node: usize, t: u64) {
        self.up[node].push((t, None));
    }
    fn up_now(&self) -> Vec<usize> {
        (0..self.up.len()).filter(|n| self.is_up(*n)).collect()
    }
}

/// A fault waiting in the queue at its time.
enum Intent {
    Kill { count: u32, role: RoleSpec, restart_after: Option<u64>, graceful: bool },
    Restart { nodes: Vec<usize> },
    Partition { fractions: Vec<f64>, heal_after: u64 },
    Heal,
    Leave { crash: bool },
    Join { role: Option<Role> },
    Link { model: LinkSpec },
    Forge { count: u32 },
    Equivocate { count: u32 },
    FloodStart { targets: u32, rate: f64, duration: u64 },
    FloodStop,
}

struct Builder<'a> {
    s: &'a Scenario,
    sites: Vec<SiteSpec>,
    keys: ChaCha20Rng,
    layout: ChaCha20Rng,
    nodes: Vec<NodePlan>,
    live: Liveness,
}

impl Builder<'_> {
    fn role_matches(&self, node: usize, role: RoleSpec) -> bool {
        match role {
            RoleSpec::Any => true,
            RoleSpec::Provider => self.nodes[node].role == Role::Provider,
            RoleSpec::Consumer => self.nodes[node].role == Role::Consumer,
        }
    }

    /// Up to `n` distinct nodes among `candidates`.
    fn pick(rng: &mut impl Rng, candidates: &[usize], n: usize) -> Vec<usize> {
        let mut picked: Vec<usize> = candidates.choose_multiple(rng, n.min(candidates.len())).copied().collect();
        picked.sort_unstable();
        picked
    }

    fn bootstrap_among(&mut self, candidates: &[usize]) -> Vec<usize> {
        let n = self.s.nodes.bootstrap_peers as usize;
        Self::pick(&mut self.layout, candidates, n)
    }

    fn new_node(&mut self, role: Role, joins_at_ms: Option<u64>, bootstrap: Vec<usize>) -> usize {
        let index = self.nodes.len();
        let mut secret = [0u8; 32];
        self.keys.fill_bytes(&mut secret);
        let node_key = Identity::from_secret_bytes(&secret).public().to_string();
        let (site, offers) = match role {
            Role::Provider => {
                let site = weighted(&mut self.layout, &self.sites, |s| s.weight).clone();
                let offers = (0..self.s.offers.per_provider).map(|k| self.offer(k)).collect();
                let site = SitePlan { country: site.country, region: site.region, datacenter: site.datacenter };
                (Some(site), offers)
            }
            Role::Consumer => (None, Vec::new()),
        };
        let prefix = match role {
            Role::Provider => 'p',
            Role::Consumer => 'c',
        };
        self.nodes.push(NodePlan {
            index,
            name: format!("{prefix}{index:04}"),
            role,
            secret,
            node_key,
            site,
            offers,
            bootstrap,
            joins_at_ms,
        });
        index
    }

    fn offer(&mut self, k: u32) -> OfferPlan {
        let o = &self.s.offers;
        let f = weighted(&mut self.layout, &self.s.flavours, |f| f.weight).clone();
        OfferPlan {
            offer_id: format!("{}-{k}", f.name),
            flavour: f.name.clone(),
            vcpu: f.vcpu,
            memory_mib: f.memory_mib,
            storage_gib: f.storage_gib,
            units: self.layout.gen_range(o.units.0..=o.units.1),
            price_micros: price(&mut self.layout, f.price.0.0, f.price.1.0),
            min_duration_ms: o.min_duration.0,
            max_duration_ms: o.max_duration.0,
            labels: f.labels.clone(),
            sla_permille: self.layout.gen_range(o.sla_permille.0..=o.sla_permille.1),
        }
    }

    fn random_role(&mut self) -> Role {
        let n = &self.s.nodes;
        if self.layout.gen_range(0..n.providers + n.consumers) < n.providers { Role::Provider } else { Role::Consumer }
    }
}

/// A price in `[min, max]`, rounded to a tenth of a cent.
fn price(rng: &mut impl Rng, min: u64, max: u64) -> u64 {
    let p = rng.gen_range(min..=max);
    (p / 1000 * 1000).clamp(min, max)
}

impl Plan {
    /// Expands `scenario` with `seed`.
    pub fn generate(s: &Scenario, seed: u64) -> Plan {
        let mut b = Builder {
            s,
            sites: s.site_list(),
            keys: stream(seed, "keys"),
            layout: stream(seed, "layout"),
            nodes: Vec::new(),
            live: Liveness::default(),
        };
        let mut faults = stream(seed, "faults");
        let mut work = stream(seed, "workload");
        let mut events = Vec::new();

        // The nodes up from the start, each dialing some of those before it.
        let roles = std::iter::repeat_n(Role::Provider, s.nodes.providers as usize)
            .chain(std::iter::repeat_n(Role::Consumer, s.nodes.consumers as usize));
        for role in roles {
            let earlier: Vec<usize> = (0..b.nodes.len()).collect();
            let bootstrap = b.bootstrap_among(&earlier);
            b.new_node(role, None, bootstrap);
            b.live.add(0);
        }
        // First offers, spread over `publish_over`.
        let mut published_at = vec![u64::MAX; b.nodes.len()];
        for (p, slot) in published_at.iter_mut().enumerate().take(s.nodes.providers as usize) {
            let at = if s.offers.publish_over.0 == 0 { 0 } else { b.layout.gen_range(0..s.offers.publish_over.0) };
            *slot = at;
            events.push(Event { at_ms: at, action: Action::Publish { provider: p } });
        }

        // Faults, in time order, each picking among the nodes up at its time.
        let mut queue: BTreeMap<(u64, u64), Intent> = BTreeMap::new();
        let mut seq = 0u64;
        let mut push = |queue: &mut BTreeMap<(u64, u64), Intent>, at: u64, intent: Intent| {
            queue.insert((at, seq), intent);
            seq += 1;
        };
        let mut attacker = false;
        for fault in &s.faults {
            let at = fault.at().0;
            match fault {
                FaultSpec::Kill { count, role, restart_after, graceful, .. } => push(
                    &mut queue,
                    at,
                    Intent::Kill {
                        count: *count,
                        role: *role,
                        restart_after: restart_after.map(|d| d.0),
                        graceful: *graceful,
                    },
                ),
                FaultSpec::Partition { heal_after, groups, .. } => {
                    push(&mut queue, at, Intent::Partition { fractions: groups.clone(), heal_after: heal_after.0 })
                }
                FaultSpec::Churn { until, leave_per_sec, join_per_sec, crash_fraction, .. } => {
                    for t in poisson(&mut faults, *leave_per_sec, at, until.0) {
                        let crash = faults.gen_bool(*crash_fraction);
                        push(&mut queue, t, Intent::Leave { crash });
                    }
                    for t in poisson(&mut faults, *join_per_sec, at, until.0) {
                        push(&mut queue, t, Intent::Join { role: None });
                    }
                }
                FaultSpec::LateJoin { count, role, .. } => {
                    for _ in 0..*count {
                        let role = match role {
                            RoleSpec::Any => None,
                            RoleSpec::Provider => Some(Role::Provider),
                            RoleSpec::Consumer => Some(Role::Consumer),
                        };
                        push(&mut queue, at, Intent::Join { role });
                    }
                }
                FaultSpec::Link { until, latency, jitter, loss, .. } => {
                    push(&mut queue, at, Intent::Link { model: s.link_with(*latency, *jitter, *loss) });
                    if let Some(until) = until {
                        push(&mut queue, until.0, Intent::Link { model: s.link.clone() });
                    }
                }
                FaultSpec::ForgeOffers { count, .. } => {
                    attacker = true;
                    push(&mut queue, at, Intent::Forge { count: *count });
                }
                FaultSpec::Equivocate { count, .. } => push(&mut queue, at, Intent::Equivocate { count: *count }),
                FaultSpec::FloodProposals { duration, rate_per_sec, targets, .. } => {
                    attacker = true;
                    push(
                        &mut queue,
                        at,
                        Intent::FloodStart { targets: *targets, rate: *rate_per_sec, duration: duration.0 },
                    );
                }
            }
        }
        let mut equivocated: Vec<usize> = Vec::new();
        while let Some(((at, _), intent)) = queue.pop_first() {
            let up = b.live.up_now();
            match intent {
                Intent::Kill { count, role, restart_after, graceful } => {
                    // Equivocating nodes are left alone: they have their own fault.
                    let candidates: Vec<usize> =
                        up.iter().copied().filter(|n| b.role_matches(*n, role) && !equivocated.contains(n)).collect();
                    // Never all of them: the federation must stay.
                    let count = (count as usize).min(up.len().saturating_sub(2));
                    let nodes = Builder::pick(&mut faults, &candidates, count);
                    if nodes.is_empty() {
                        continue;
                    }
                    for n in &nodes {
                        b.live.down(*n, at);
                    }
                    if let Some(after) = restart_after {
                        push(&mut queue, at + after, Intent::Restart { nodes: nodes.clone() });
                    }
                    events.push(Event { at_ms: at, action: Action::Kill { nodes, graceful } });
                }
                Intent::Restart { nodes } => {
                    let mut bootstrap = Vec::new();
                    for n in &nodes {
                        let others: Vec<usize> = b.live.up_now().into_iter().filter(|m| m != n).collect();
                        bootstrap.push(b.bootstrap_among(&others));
                        b.live.restart(*n, at);
                    }
                    events.push(Event { at_ms: at, action: Action::Restart { nodes, bootstrap } });
                }
                Intent::Partition { fractions, heal_after } => {
                    let mut all: Vec<usize> = (0..b.nodes.len()).collect();
                    all.shuffle(&mut faults);
                    let mut groups = Vec::new();
                    let mut start = 0usize;
                    for (i, f) in fractions.iter().enumerate() {
                        let end = if i + 1 == fractions.len() {
                            all.len()
                        } else {
                            (start + (f * all.len() as f64).round() as usize).min(all.len())
                        };
                        let mut g = all[start..end].to_vec();
                        g.sort_unstable();
                        groups.push(g);
                        start = end;
                    }
                    push(&mut queue, at + heal_after, Intent::Heal);
                    events.push(Event { at_ms: at, action: Action::Partition { groups } });
                }
                Intent::Heal => events.push(Event { at_ms: at, action: Action::Heal }),
                Intent::Leave { crash } => {
                    let candidates: Vec<usize> = up.iter().copied().filter(|n| !equivocated.contains(n)).collect();
                    if up.len() <= 2 {
                        continue;
                    }
                    let nodes = Builder::pick(&mut faults, &candidates, 1);
                    for n in &nodes {
                        b.live.down(*n, at);
                    }
                    if !nodes.is_empty() {
                        events.push(Event { at_ms: at, action: Action::Kill { nodes, graceful: !crash } });
                    }
                }
                Intent::Join { role } => {
                    let role = role.unwrap_or_else(|| b.random_role());
                    let bootstrap = b.bootstrap_among(&up);
                    let node = b.new_node(role, Some(at), bootstrap);
                    b.live.add(at);
                    published_at.push(if role == Role::Provider { at } else { u64::MAX });
                    events.push(Event { at_ms: at, action: Action::Start { node } });
                }
                Intent::Link { model } => events.push(Event { at_ms: at, action: Action::Link { model } }),
                Intent::Forge { count } => {
                    let providers: Vec<usize> =
                        up.iter().copied().filter(|n| b.nodes[*n].role == Role::Provider).collect();
                    let victims = Builder::pick(&mut faults, &providers, 3);
                    events.push(Event { at_ms: at, action: Action::ForgeOffers { count, victims } });
                }
                Intent::Equivocate { count } => {
                    let providers: Vec<usize> = up
                        .iter()
                        .copied()
                        .filter(|n| b.nodes[*n].role == Role::Provider && !equivocated.contains(n))
                        .collect();
                    for node in Builder::pick(&mut faults, &providers, count as usize) {
                        equivocated.push(node);
                        let others: Vec<usize> = up.iter().copied().filter(|m| *m != node).collect();
                        let bootstrap = b.bootstrap_among(&others);
                        events.push(Event { at_ms: at, action: Action::Equivocate { node, bootstrap } });
                    }
                }
                Intent::FloodStart { targets, rate, duration } => {
                    let providers: Vec<usize> =
                        up.iter().copied().filter(|n| b.nodes[*n].role == Role::Provider).collect();
                    let targets = Builder::pick(&mut faults, &providers, targets as usize);
                    push(&mut queue, at + duration, Intent::FloodStop);
                    events.push(Event { at_ms: at, action: Action::FloodStart { targets, rate_per_sec: rate } });
                }
                Intent::FloodStop => events.push(Event { at_ms: at, action: Action::FloodStop }),
            }
        }

        // Offers re-published at new prices by providers up at the time.
        let providers: Vec<usize> = (0..b.nodes.len()).filter(|n| b.nodes[*n].role == Role::Provider).collect();
        for at in poisson(&mut work, s.offers.republish_per_sec, 0, s.duration.0) {
            let candidates: Vec<usize> =
                providers.iter().copied().filter(|p| published_at[*p] < at && b.live.up_at(*p, at)).collect();
            let Some(&provider) = candidates.choose(&mut work) else { continue };
            let offer = work.gen_range(0..b.nodes[provider].offers.len());
            let flavour = &b.nodes[provider].offers[offer].flavour;
            let range = s.flavours.iter().find(|f| &f.name == flavour).map_or((1, 1), |f| (f.price.0.0, f.price.1.0));
            let price_micros = price(&mut work, range.0, range.1);
            events.push(Event { at_ms: at, action: Action::Republish { provider, offer, price_micros } });
        }

        // Placements by consumers up at the time.
        let w = &s.workload;
        let consumers: Vec<usize> = (0..b.nodes.len()).filter(|n| b.nodes[*n].role == Role::Consumer).collect();
        for at in poisson(&mut work, w.placements_per_sec, w.start.0, s.duration.0) {
            let candidates: Vec<usize> = consumers.iter().copied().filter(|c| b.live.up_at(*c, at)).collect();
            let Some(&consumer) = candidates.choose(&mut work) else { continue };
            let shape = weighted(&mut work, &w.shapes, |s| s.weight).clone();
            let spec = PlaceSpec {
                consumer,
                units: work.gen_range(w.units.0..=w.units.1),
                vcpu: shape.vcpu,
                memory_mib: shape.memory_mib,
                countries: w.countries.choose(&mut work).cloned().unwrap_or_default(),
                max_unit_price_micros: w.max_unit_price.map(|p| p.0),
                duration_ms: w.duration.0,
                spread: w.spread.choose(&mut work).copied().unwrap_or_default(),
                release_after_ms: w.release_after.map(|(min, max)| work.gen_range(min.0..=max.0)),
            };
            events.push(Event { at_ms: at, action: Action::Place(spec) });
        }

        let attacker = attacker.then(|| {
            let mut secret = [0u8; 32];
            b.keys.fill_bytes(&mut secret);
            let initial: Vec<usize> = (0..(s.nodes.providers + s.nodes.consumers) as usize).collect();
            let bootstrap = Builder::pick(&mut b.layout, &initial, 4);
            AttackerPlan { secret, node_key: Identity::from_secret_bytes(&secret).public().to_string(), bootstrap }
        });
        // Stable: actions at the same time keep the order they were made in.
        events.sort_by_key(|e| e.at_ms);
        Plan { scenario: s.name.clone(), seed, duration_ms: s.duration.0, nodes: b.nodes, attacker, events }
    }

    /// Nodes up from the start.
    pub fn initial_nodes(&self) -> impl Iterator<Item = &NodePlan> {
        self.nodes.iter().filter(|n| n.joins_at_ms.is_none())
    }
}
