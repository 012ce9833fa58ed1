//! Scenario files: what a simulation runs. How many providers and consumers,
//! their sites, flavours and prices, the placement workload, the link model
//! and a timeline of faults, parsed from TOML (unknown keys refused) and
//! checked with errors that name the field.

use std::path::{Path, PathBuf};

use fulcrum_node::config::NodeConfig;
use fulcrum_node::offer_file::{format_duration_ms, format_micros, parse_duration_ms, parse_price_micros};
use fulcrum_protocol::limits::Limits;
use fulcrum_protocol::offer::Country;
use serde::{Deserialize, Serialize};

/// Why a scenario cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not TOML, or not this schema (an unknown key, a wrong type).
    #[error("scenario {path} is malformed: {message}")]
    Malformed {
        /// File.
        path: PathBuf,
        /// Parser message, with the line and column.
        message: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("scenario {path}: {field}: {message}")]
    Invalid {
        /// File.
        path: PathBuf,
        /// The field, e.g. `faults[2].groups`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// A duration written like `"250ms"`, `"30s"`, `"5m"` or `"1h30m"`, in ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Dur(pub u64);

impl TryFrom<String> for Dur {
    type Error = String;
    fn try_from(s: String) -> Result<Dur, String> {
        parse_duration_ms(&s).map(Dur).map_err(|e| e.to_string())
    }
}

impl From<Dur> for String {
    fn from(d: Dur) -> String {
        if d.0.is_multiple_of(1000) || d.0 > 60_000 { format_duration_ms(d.0) } else { format!("{}ms", d.0) }
    }
}

/// An amount of EUR written like `"0.42"`, in micro-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Eur(pub u64);

impl TryFrom<String> for Eur {
    type Error = String;
    fn try_from(s: String) -> Result<Eur, String> {
        parse_price_micros(&s).map(Eur).map_err(|e| e.to_string())
    }
}

impl From<Eur> for String {
    fn from(p: Eur) -> String {
        format_micros(p.0)
    }
}

/// A whole simulation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name (letters, digits, `-` and `_`).
    pub name: String,
    /// One or two sentences on what it shows.
    #[serde(default)]
    pub description: String,
    /// Seed of the workload and the faults (`--seed` overrides it).
    #[serde(default)]
    pub seed: u64,
    /// How long the timeline runs (workload and faults), after the mesh formed.
    pub duration: Dur,
    /// Time after the timeline for what is in flight to land before measuring.
    #[serde(default = "default_drain")]
    pub drain: Dur,
    /// Node counts.
    pub nodes: Nodes,
    /// Settings of every node (a subset of node.toml); unset: the daemon's defaults.
    #[serde(default)]
    pub node: NodeSettings,
    /// How links between nodes behave.
    #[serde(default)]
    pub link: LinkSpec,
    /// Sites providers are placed at (or `site_generator`).
    #[serde(default)]
    pub sites: Vec<SiteSpec>,
    /// Generates sites instead of listing them.
    #[serde(default)]
    pub site_generator: Option<SiteGenerator>,
    /// What providers sell.
    pub flavours: Vec<FlavourSpec>,
    /// How providers offer it.
    #[serde(default)]
    pub offers: OfferSpec,
    /// What consumers ask for.
    #[serde(default)]
    pub workload: WorkloadSpec,
    /// The fault timeline.
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
    /// How many times slower than the wall clock simulated time runs (1 to
    /// 100; `--dilation` overrides it). Every node shares this machine's
    /// CPUs; slowing time down by `k` gives each node `k` times the CPU per
    /// simulated second, as if it ran on a machine of its own. Links, the
    /// timeline, node settings and every interval inside the nodes are
    /// stretched by `k`; every figure of the report is in simulated time.
    #[serde(default = "default_dilation")]
    pub time_dilation: u32,
}

fn default_dilation() -> u32 {
    1
}

fn default_drain() -> Dur {
    Dur(3_000)
}

/// Node counts at the start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nodes {
    /// Nodes that publish offers.
    pub providers: u32,
    /// Nodes that only place workloads.
    pub consumers: u32,
    /// Peers each node dials when it starts (chosen at random among the
    /// nodes up then); Kademlia finds the rest.
    #[serde(default = "default_bootstrap")]
    pub bootstrap_peers: u32,
}

fn default_bootstrap() -> u32 {
    3
}

/// Settings applied to every node; unset fields keep the daemon's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// Most connected peers.
    pub max_peers: Option<u32>,
    /// Offer lifetime.
    pub offer_ttl: Option<Dur>,
    /// How long a provider keeps a hold.
    pub hold_ttl: Option<Dur>,
    /// How long a consumer waits for an answer.
    pub reply_timeout: Option<Dur>,
    /// How long a placement may take.
    pub place_deadline: Option<Dur>,
    /// Longest time between checkpoints.
    pub checkpoint_interval: Option<Dur>,
    /// Records after which a checkpoint is signed at once.
    pub checkpoint_records: Option<u64>,
    /// How often shared contracts are checked in the other party's log.
    pub audit_interval: Option<Dur>,
    /// Age after which a contract missing from the other party's log is evidence.
    pub audit_grace: Option<Dur>,
    /// Inbound requests per second per peer.
    pub peer_rate_per_sec: Option<u32>,
    /// Inbound request burst per peer.
    pub peer_burst: Option<u32>,
    /// Cache of each node's index database, in KiB.
    #[serde(default = "default_index_cache")]
    pub index_cache_kib: u64,
}

fn default_index_cache() -> u64 {
    512
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings {
            max_peers: None,
            offer_ttl: None,
            hold_ttl: None,
            reply_timeout: None,
            place_deadline: None,
            checkpoint_interval: None,
            checkpoint_records: None,
            audit_interval: None,
            audit_grace: None,
            peer_rate_per_sec: None,
            peer_burst: None,
            index_cache_kib: default_index_cache(),
        }
    }
}

impl NodeSettings {
    /// The node configuration of a simulated node whose time runs
    /// `dilation` times slower than the wall clock: every duration of the
    /// configuration (set here or the daemon's default) is stretched by it.
    pub fn config(&self, data_dir: PathBuf, listen: String, bootstrap: Vec<String>, dilation: u32) -> NodeConfig {
        let mut c = NodeConfig {
            data_dir,
            federation: "sim".into(),
            listen: vec![listen],
            bootstrap,
            metrics_listen: String::new(),
            ..NodeConfig::default()
        };
        let text = |d: Option<Dur>, into: &mut String| {
            if let Some(d) = d {
                *into = String::from(d);
            }
        };
        text(self.offer_ttl, &mut c.offer_ttl);
        text(self.hold_ttl, &mut c.hold_ttl);
        text(self.reply_timeout, &mut c.reply_timeout);
        text(self.place_deadline, &mut c.place_deadline);
        text(self.checkpoint_interval, &mut c.checkpoint_interval);
        text(self.audit_interval, &mut c.audit_interval);
        text(self.audit_grace, &mut c.audit_grace);
        if let Some(v) = self.max_peers {
            c.max_peers = v;
        }
        if let Some(v) = self.checkpoint_records {
            c.checkpoint_records = v;
        }
        if let Some(v) = self.peer_rate_per_sec {
            c.peer_rate_per_sec = v;
        }
        if let Some(v) = self.peer_burst {
            c.peer_burst = v;
        }
        c.time_dilation = dilation.max(1);
        let k = u64::from(c.time_dilation);
        for field in [
            &mut c.offer_ttl,
            &mut c.hold_ttl,
            &mut c.reply_timeout,
            &mut c.place_deadline,
            &mut c.checkpoint_interval,
            &mut c.audit_interval,
            &mut c.audit_grace,
            &mut c.audit_recheck,
            &mut c.evidence_republish,
        ] {
            if let Ok(ms) = parse_duration_ms(field) {
                *field = String::from(Dur(ms.saturating_mul(k)));
            }
        }
        // Offers live at most the protocol's longest offer lifetime.
        let longest = Limits::default().max_offer_ttl_ms;
        if c.ms(&c.offer_ttl) > longest {
            c.offer_ttl = String::from(Dur(longest));
        }
        c
    }
}

/// How one-way link latency is drawn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Always `latency`.
    #[default]
    Fixed,
    /// Uniform in `latency ± jitter`.
    Uniform,
    /// Normal with mean `latency` and standard deviation `jitter`, cut at 0.
    Normal,
    /// Log-normal with median `latency`; `jitter` sets the spread.
    Lognormal,
}

/// The link model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// One-way latency (the median).
    #[serde(default = "default_latency")]
    pub latency: Dur,
    /// Spread of the latency.
    #[serde(default)]
    pub jitter: Dur,
    /// How the latency is drawn.
    #[serde(default)]
    pub distribution: Distribution,
    /// Fraction of transmissions lost (and retransmitted), 0 to 0.5.
    #[serde(default)]
    pub loss: f64,
    /// Delay of the first retransmission; doubles on each further loss.
    #[serde(default = "default_rto")]
    pub retransmit_timeout: Dur,
    /// Link bandwidth in Mbit/s; 0 is unlimited.
    #[serde(default)]
    pub bandwidth_mbps: u32,
}

fn default_latency() -> Dur {
    Dur(50)
}

fn default_rto() -> Dur {
    Dur(200)
}

impl Default for LinkSpec {
    fn default() -> Self {
        LinkSpec {
            latency: default_latency(),
            jitter: Dur(0),
            distribution: Distribution::Fixed,
            loss: 0.0,
            retransmit_timeout: default_rto(),
            bandwidth_mbps: 0,
        }
    }
}

/// One site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSpec {
    /// ISO 3166-1 alpha-2 code.
    pub country: String,
    /// Region.
    pub region: String,
    /// Datacenter.
    pub datacenter: String,
    /// Relative share of providers placed here.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// Sites made from country codes: each country gets regions, each region datacenters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteGenerator {
    /// ISO 3166-1 alpha-2 codes.
    pub countries: Vec<String>,
    /// Regions in each country.
    #[serde(default = "one")]
    pub regions_per_country: u32,
    /// Datacenters in each region.
    #[serde(default = "one")]
    pub datacenters_per_region: u32,
}

/// A flavour providers sell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlavourSpec {
    /// Name.
    pub name: String,
    /// vCPUs per unit.
    pub vcpu: u32,
    /// Memory per unit.
    pub memory_mib: u64,
    /// Storage per unit.
    #[serde(default)]
    pub storage_gib: u64,
    /// Unit price per hour, drawn uniformly in `[min, max]`, EUR.
    pub price: (Eur, Eur),
    /// Labels of offers of this flavour.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Relative share of offers of this flavour.
    #[serde(default = "one")]
    pub weight: u32,
}

/// How providers offer their flavours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferSpec {
    /// Offers each provider publishes.
    #[serde(default = "one")]
    pub per_provider: u32,
    /// Units per offer, drawn uniformly in `[min, max]`.
    #[serde(default = "default_units")]
    pub units: (u32, u32),
    /// Shortest contract.
    #[serde(default = "default_min_duration")]
    pub min_duration: Dur,
    /// Longest contract.
    #[serde(default = "default_max_duration")]
    pub max_duration: Dur,
    /// Availability SLA, drawn uniformly in `[min, max]`.
    #[serde(default = "default_sla")]
    pub sla_permille: (u32, u32),
    /// Window from the start over which the first offers are published.
    #[serde(default)]
    pub publish_over: Dur,
    /// Offers re-published with a new price (a new seq), per second, in all.
    #[serde(default)]
    pub republish_per_sec: f64,
}

fn default_units() -> (u32, u32) {
    (8, 32)
}
fn default_min_duration() -> Dur {
    Dur(3_600_000)
}
fn default_max_duration() -> Dur {
    Dur(8_760 * 3_600_000)
}
fn default_sla() -> (u32, u32) {
    (990, 999)
}

impl Default for OfferSpec {
    fn default() -> Self {
        OfferSpec {
            per_provider: 1,
            units: default_units(),
            min_duration: default_min_duration(),
            max_duration: default_max_duration(),
            sla_permille: default_sla(),
            publish_over: Dur(0),
            republish_per_sec: 0.0,
        }
    }
}

/// How replicas of one placement are spread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Spread {
    /// Anywhere.
    #[default]
    None,
    /// No two replicas with one provider.
    Providers,
    /// No two replicas in one country.
    Countries,
}

/// A shape of what a placement asks for per unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShapeSpec {
    /// Least vCPUs per unit.
    pub vcpu: u32,
    /// Least memory per unit.
    pub memory_mib: u64,
    /// Relative share of placements of this shape.
    #[serde(default = "one")]
    pub weight: u32,
}

/// The placement workload: consumers place at Poisson arrival times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Placements per second over all consumers.
    #[serde(default)]
    pub placements_per_sec: f64,
    /// When the first placement may come, from the start of the timeline.
    #[serde(default)]
    pub start: Dur,
    /// Units per placement, drawn uniformly in `[min, max]`.
    #[serde(default = "default_place_units")]
    pub units: (u32, u32),
    /// What each unit needs.
    #[serde(default)]
    pub shapes: Vec<ShapeSpec>,
    /// Country constraints to choose from; `[]` is anywhere.
    #[serde(default = "default_countries")]
    pub countries: Vec<Vec<String>>,
    /// Highest unit price per hour accepted.
    #[serde(default)]
    pub max_unit_price: Option<Eur>,
    /// Contract duration.
    #[serde(default = "default_place_duration")]
    pub duration: Dur,
    /// Spreads to choose from.
    #[serde(default = "default_spreads")]
    pub spread: Vec<Spread>,
    /// The consumer terminates each contract after a time drawn in
    /// `[min, max]`; unset: contracts are kept.
    #[serde(default)]
    pub release_after: Option<(Dur, Dur)>,
}

fn default_place_units() -> (u32, u32) {
    (1, 1)
}
fn default_countries() -> Vec<Vec<String>> {
    vec![Vec::new()]
}
fn default_place_duration() -> Dur {
    Dur(2 * 3_600_000)
}
fn default_spreads() -> Vec<Spread> {
    vec![Spread::None]
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec {
            placements_per_sec: 0.0,
            start: Dur(0),
            units: default_place_units(),
            shapes: Vec::new(),
            countries: default_countries(),
            max_unit_price: None,
            duration: default_place_duration(),
            spread: default_spreads(),
            release_after: None,
        }
    }
}

/// Which nodes a fault picks from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleSpec {
    /// Providers or consumers.
    #[default]
    Any,
    /// Providers only.
    Provider,
    /// Consumers only.
    Consumer,
}

/// One entry of the fault timeline; `at` is from the start of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum FaultSpec {
    /// Kills `count` nodes (a crash; `graceful` stops them cleanly instead),
    /// and restarts them after `restart_after` if given.
    Kill {
        /// When.
        at: Dur,
        /// How many nodes.
        count: u32,
        /// Which kind.
        #[serde(default)]
        role: RoleSpec,
        /// Restart them this long after.
        #[serde(default)]
        restart_after: Option<Dur>,
        /// Stop cleanly instead of crashing.
        #[serde(default)]
        graceful: bool,
    },
    /// Splits every node into groups of the given fractions (links between
    /// groups carry nothing), then heals.
    Partition {
        /// When.
        at: Dur,
        /// How long until it heals.
        heal_after: Dur,
        /// Fractions of the nodes in each group (summing to 1).
        #[serde(default = "halves")]
        groups: Vec<f64>,
    },
    /// Nodes leave and new nodes join at Poisson times.
    Churn {
        /// From when.
        at: Dur,
        /// Until when.
        until: Dur,
        /// Departures per second.
        leave_per_sec: f64,
        /// Arrivals of new nodes per second.
        join_per_sec: f64,
        /// Fraction of departures that are crashes (the rest stop cleanly).
        #[serde(default)]
        crash_fraction: f64,
    },
    /// New nodes join, with empty storage: late joiners.
    LateJoin {
        /// When.
        at: Dur,
        /// How many.
        count: u32,
        /// Which kind.
        #[serde(default)]
        role: RoleSpec,
    },
    /// Changes the link model from `at` (back at `until`, if given).
    Link {
        /// When.
        at: Dur,
        /// When the links return to the scenario's model.
        #[serde(default)]
        until: Option<Dur>,
        /// New one-way latency.
        #[serde(default)]
        latency: Option<Dur>,
        /// New jitter.
        #[serde(default)]
        jitter: Option<Dur>,
        /// New loss.
        #[serde(default)]
        loss: Option<f64>,
    },
    /// A Byzantine peer gossips forged offers (bad signatures, offers in
    /// other providers' names, tampered bodies).
    ForgeOffers {
        /// When.
        at: Dur,
        /// How many forgeries.
        count: u32,
    },
    /// Providers rewrite their logs while stopped (drop the last record,
    /// append others) and come back.
    Equivocate {
        /// When.
        at: Dur,
        /// How many providers.
        #[serde(default = "one")]
        count: u32,
    },
    /// A Byzantine peer floods providers with proposals.
    FloodProposals {
        /// When.
        at: Dur,
        /// For how long.
        duration: Dur,
        /// Proposals per second to each target.
        rate_per_sec: f64,
        /// How many providers it targets.
        #[serde(default = "one")]
        targets: u32,
    },
}

fn halves() -> Vec<f64> {
    vec![0.5, 0.5]
}

impl FaultSpec {
    /// When it starts.
    pub fn at(&self) -> Dur {
        match self {
            FaultSpec::Kill { at, .. }
            | FaultSpec::Partition { at, .. }
            | FaultSpec::Churn { at, .. }
            | FaultSpec::LateJoin { at, .. }
            | FaultSpec::Link { at, .. }
            | FaultSpec::ForgeOffers { at, .. }
            | FaultSpec::Equivocate { at, .. }
            | FaultSpec::FloodProposals { at, .. } => *at,
        }
    }

    /// The `kind` as written in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            FaultSpec::Kill { .. } => "kill",
            FaultSpec::Partition { .. } => "partition",
            FaultSpec::Churn { .. } => "churn",
            FaultSpec::LateJoin { .. } => "late-join",
            FaultSpec::Link { .. } => "link",
            FaultSpec::ForgeOffers { .. } => "forge-offers",
            FaultSpec::Equivocate { .. } => "equivocate",
            FaultSpec::FloodProposals { .. } => "flood-proposals",
        }
    }
}

/// Most nodes a scenario may start in all (joins included).
pub const MAX_NODES: u64 = 20_000;
/// Largest time dilation a scenario may ask for.
pub const MAX_DILATION: u32 = 100;

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ScenarioError::Read { path: path.to_owned(), source })?;
        Scenario::parse(&text, path)
    }

    /// Parses and checks a scenario's text (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Malformed {
            path: path.to_owned(),
            message: e.to_string().split_whitespace().collect::<Vec<_>>().join(" "),
        })?;
        scenario.validate().map_err(|(field, message)| ScenarioError::Invalid {
            path: path.to_owned(),
            field,
            message,
        })?;
        Ok(scenario)
    }

    /// The sites providers are placed at, listed or generated.
    pub fn site_list(&self) -> Vec<SiteSpec> {
        match &self.site_generator {
            Some(g) => {
                let mut sites = Vec::new();
                for country in &g.countries {
                    let cc = country.to_ascii_lowercase();
                    for r in 1..=g.regions_per_country {
                        for d in 1..=g.datacenters_per_region {
                            sites.push(SiteSpec {
                                country: country.clone(),
                                region: format!("{cc}-{r}"),
                                datacenter: format!("{cc}{r}-dc{d}"),
                                weight: 1,
                            });
                        }
                    }
                }
                sites
            }
            None => self.sites.clone(),
        }
    }

    /// `ms` of simulated time on the wall clock: `time_dilation` times as long.
    pub fn wall(&self, ms: u64) -> std::time::Duration {
        std::time::Duration::from_millis(ms.saturating_mul(u64::from(self.time_dilation.max(1))))
    }

    /// Checks every value; the error names the field.
    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |field: &str, message: String| Err((field.to_owned(), message));
        if self.name.is_empty()
            || self.name.len() > 64
            || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return bad("name", "must be 1 to 64 letters, digits, '-' or '_'".into());
        }
        let duration = self.duration.0;
        if duration == 0 || duration > 24 * 3_600_000 {
            return bad("duration", "must be more than 0 and at most 24h".into());
        }
        if self.drain.0 > 600_000 {
            return bad("drain", "must be at most 10m".into());
        }
        if !(1..=MAX_DILATION).contains(&self.time_dilation) {
            return bad("time_dilation", format!("must be 1 to {MAX_DILATION}"));
        }
        let n = &self.nodes;
        if n.providers == 0 {
            return bad("nodes.providers", "must be at least 1: someone has to offer capacity".into());
        }
        if u64::from(n.providers) + u64::from(n.consumers) < 2 {
            return bad("nodes", "a federation needs at least 2 nodes".into());
        }
        if n.bootstrap_peers == 0 || n.bootstrap_peers > 64 {
            return bad("nodes.bootstrap_peers", "must be 1 to 64".into());
        }
        // The node settings are checked by the daemon's own validator.
        let config = self.node.config(PathBuf::from("sim"), "/memory/1".into(), Vec::new(), self.time_dilation);
        if let Err(e) = config.validate() {
            return bad("node", e.to_string());
        }
        if self.node.index_cache_kib < 64 {
            return bad("node.index_cache_kib", "must be at least 64".into());
        }
        self.validate_link(&self.link, "link")?;
        self.validate_sites()?;
        self.validate_flavours()?;
        self.validate_offers()?;
        self.validate_workload()?;
        let mut joining = 0u64;
        for (i, fault) in self.faults.iter().enumerate() {
            joining += self.validate_fault(i, fault)?;
        }
        if u64::from(n.providers) + u64::from(n.consumers) + joining > MAX_NODES {
            return bad("nodes", format!("more than {MAX_NODES} nodes in all, joins included"));
        }
        Ok(())
    }

    fn validate_link(&self, l: &LinkSpec, at: &str) -> Result<(), (String, String)> {
        let bad = |field: &str, message: String| Err((format!("{at}.{field}"), message));
        if l.latency.0 > 10_000 {
            return bad("latency", "must be at most 10s".into());
        }
        if l.distribution == Distribution::Uniform && l.jitter > l.latency {
            return bad("jitter", "must not exceed latency with a uniform distribution".into());
        }
        if l.distribution == Distribution::Lognormal && l.latency.0 == 0 {
            return bad("latency", "must be more than 0 with a lognormal distribution".into());
        }
        if !(0.0..=0.5).contains(&l.loss) {
            return bad("loss", format!("{} is not between 0 and 0.5", l.loss));
        }
        if l.retransmit_timeout.0 == 0 || l.retransmit_timeout.0 > 60_000 {
            return bad("retransmit_timeout", "must be more than 0 and at most 60s".into());
        }
        Ok(())
    }

    fn validate_sites(&self) -> Result<(), (String, String)> {
        let bad = |field: String, message: String| Err((field, message));
        match (&self.site_generator, self.sites.is_empty()) {
            (Some(_), false) => return bad("sites".into(), "give either sites or site_generator, not both".into()),
            (None, true) => return bad("sites".into(), "at least one site (or a site_generator) is needed".into()),
            _ => {}
        }
        if let Some(g) = &self.site_generator {
            if g.countries.is_empty() {
                return bad("site_generator.countries".into(), "at least one country is needed".into());
            }
            for (i, c) in g.countries.iter().enumerate() {
                if Country::parse(c).is_none() {
                    return bad(
                        format!("site_generator.countries[{i}]"),
                        format!("{c:?} is not a two-letter country code"),
                    );
                }
            }
            if !(1..=64).contains(&g.regions_per_country) || !(1..=64).contains(&g.datacenters_per_region) {
                return bad(
                    "site_generator".into(),
                    "regions_per_country and datacenters_per_region must be 1 to 64".into(),
                );
            }
        }
        for (i, s) in self.sites.iter().enumerate() {
            if Country::parse(&s.country).is_none() {
                return bad(format!("sites[{i}].country"), format!("{:?} is not a two-letter country code", s.country));
            }
            for (name, value) in [("region", &s.region), ("datacenter", &s.datacenter)] {
                if value.is_empty() || value.len() > 128 {
                    return bad(format!("sites[{i}].{name}"), "must be 1 to 128 characters".into());
                }
            }
            if s.weight == 0 {
                return bad(format!("sites[{i}].weight"), "must be at least 1".into());
            }
        }
        Ok(())
    }

    fn validate_flavours(&self) -> Result<(), (String, String)> {
        let bad = |field: String, message: String| Err((field, message));
        if self.flavours.is_empty() {
            return bad("flavours".into(), "at least one flavour is needed".into());
        }
        for (i, f) in self.flavours.iter().enumerate() {
            let at = |field: &str| format!("flavours[{i}].{field}");
            if f.name.is_empty() || f.name.len() > 64 {
                return bad(at("name"), "must be 1 to 64 characters".into());
            }
            if self.flavours[..i].iter().any(|g| g.name == f.name) {
                return bad(at("name"), format!("{:?} is named twice", f.name));
            }
            if f.vcpu == 0 || f.memory_mib == 0 {
                return bad(at("vcpu"), "vcpu and memory_mib must be more than 0".into());
            }
            if f.price.0.0 == 0 || f.price.0 > f.price.1 {
                return bad(at("price"), "must be [min, max] with 0 < min <= max".into());
            }
            if f.labels.len() > 32 || f.labels.iter().any(|l| l.is_empty() || l.len() > 128) {
                return bad(at("labels"), "at most 32 labels of 1 to 128 characters".into());
            }
            if f.weight == 0 {
                return bad(at("weight"), "must be at least 1".into());
            }
        }
        Ok(())
    }

    fn validate_offers(&self) -> Result<(), (String, String)> {
        let bad = |field: &str, message: String| Err((format!("offers.{field}"), message));
        let o = &self.offers;
        if o.per_provider == 0 || o.per_provider > 256 {
            return bad("per_provider", "must be 1 to 256 (the offer book's limit per provider)".into());
        }
        if o.units.0 == 0 || o.units.0 > o.units.1 || o.units.1 > 1_000_000 {
            return bad("units", "must be [min, max] with 1 <= min <= max <= 1000000".into());
        }
        if o.min_duration.0 == 0 || o.min_duration > o.max_duration {
            return bad("min_duration", "must be more than 0 and at most max_duration".into());
        }
        if o.sla_permille.0 > o.sla_permille.1 || o.sla_permille.1 > 1000 {
            return bad("sla_permille", "must be [min, max] with min <= max <= 1000".into());
        }
        if o.publish_over.0 > self.duration.0 {
            return bad("publish_over", "must be within the duration".into());
        }
        if !(0.0..=10_000.0).contains(&o.republish_per_sec) {
            return bad("republish_per_sec", format!("{} is not between 0 and 10000", o.republish_per_sec));
        }
        Ok(())
    }

    fn validate_workload(&self) -> Result<(), (String, String)> {
        let bad = |field: String, message: String| Err((format!("workload.{field}"), message));
        let w = &self.workload;
        if !(0.0..=10_000.0).contains(&w.placements_per_sec) {
            return bad("placements_per_sec".into(), format!("{} is not between 0 and 10000", w.placements_per_sec));
        }
        if w.placements_per_sec > 0.0 {
            if self.nodes.consumers == 0 {
                return bad("placements_per_sec".into(), "placements need consumers (nodes.consumers)".into());
            }
            if w.start >= self.duration {
                return bad("start".into(), "must be before the end of the duration".into());
            }
            if w.shapes.is_empty() {
                return bad("shapes".into(), "at least one shape is needed when placements_per_sec > 0".into());
            }
        }
        if w.units.0 == 0 || w.units.0 > w.units.1 || w.units.1 > 10_000 {
            return bad("units".into(), "must be [min, max] with 1 <= min <= max <= 10000".into());
        }
        for (i, s) in w.shapes.iter().enumerate() {
            if s.vcpu == 0 || s.memory_mib == 0 || s.weight == 0 {
                return bad(format!("shapes[{i}]"), "vcpu, memory_mib and weight must be more than 0".into());
            }
        }
        if w.countries.is_empty() {
            return bad("countries".into(), "at least one choice is needed ([] is anywhere)".into());
        }
        for (i, set) in w.countries.iter().enumerate() {
            for c in set {
                if Country::parse(c).is_none() {
                    return bad(format!("countries[{i}]"), format!("{c:?} is not a two-letter country code"));
                }
            }
        }
        if w.max_unit_price.is_some_and(|p| p.0 == 0) {
            return bad("max_unit_price".into(), "must be more than 0".into());
        }
        if w.duration.0 == 0 {
            return bad("duration".into(), "must be more than 0".into());
        }
        if w.spread.is_empty() {
            return bad("spread".into(), "at least one choice is needed".into());
        }
        if let Some((min, max)) = w.release_after
            && (min.0 == 0 || min > max)
        {
            return bad("release_after".into(), "must be [min, max] with 0 < min <= max".into());
        }
        Ok(())
    }

    /// Checks one fault; returns how many new nodes it may start.
    fn validate_fault(&self, i: usize, fault: &FaultSpec) -> Result<u64, (String, String)> {
        let field = |name: &str| format!("faults[{i}].{name}");
        let bad = |name: &str, message: String| Err((field(name), message));
        let at = fault.at();
        if at >= self.duration {
            return bad("at", format!("{} is not before the end of the duration", String::from(at)));
        }
        let nodes = u64::from(self.nodes.providers) + u64::from(self.nodes.consumers);
        match fault {
            FaultSpec::Kill { count, restart_after, .. } => {
                if *count == 0 || u64::from(*count) >= nodes {
                    return bad("count", format!("must be 1 to {} (fewer than the nodes)", nodes - 1));
                }
                if restart_after.is_some_and(|d| d.0 == 0) {
                    return bad("restart_after", "must be more than 0".into());
                }
                Ok(0)
            }
            FaultSpec::Partition { heal_after, groups, .. } => {
                if heal_after.0 == 0 {
                    return bad("heal_after", "must be more than 0".into());
                }
                let sum: f64 = groups.iter().sum();
                if groups.len() < 2 || groups.iter().any(|g| g.is_nan() || *g <= 0.0) || (sum - 1.0).abs() > 1e-6 {
                    return bad("groups", "at least two fractions, each more than 0, summing to 1".into());
                }
                Ok(0)
            }
            FaultSpec::Churn { until, leave_per_sec, join_per_sec, crash_fraction, .. } => {
                if *until <= at || *until > self.duration {
                    return bad("until", "must be after at and within the duration".into());
                }
                for (name, rate) in [("leave_per_sec", leave_per_sec), ("join_per_sec", join_per_sec)] {
                    if !(0.0..=1_000.0).contains(rate) {
                        return bad(name, format!("{rate} is not between 0 and 1000"));
                    }
                }
                if !(0.0..=1.0).contains(crash_fraction) {
                    return bad("crash_fraction", format!("{crash_fraction} is not between 0 and 1"));
                }
                // Poisson arrivals: allow a generous tail over the mean.
                let mean = join_per_sec * (until.0 - at.0) as f64 / 1000.0;
                Ok((mean * 2.0 + 20.0) as u64)
            }
            FaultSpec::LateJoin { count, .. } => {
                if *count == 0 || *count > 10_000 {
                    return bad("count", "must be 1 to 10000".into());
                }
                Ok(u64::from(*count))
            }
            FaultSpec::Link { until, latency, jitter, loss, .. } => {
                if until.is_some_and(|u| u <= at || u > self.duration) {
                    return bad("until", "must be after at and within the duration".into());
                }
                if latency.is_none() && jitter.is_none() && loss.is_none() {
                    return bad("latency", "set at least one of latency, jitter, loss".into());
                }
                let changed = self.link_with(*latency, *jitter, *loss);
                self.validate_link(&changed, &format!("faults[{i}]"))?;
                Ok(0)
            }
            FaultSpec::ForgeOffers { count, .. } => {
                if *count == 0 || *count > 100_000 {
                    return bad("count", "must be 1 to 100000".into());
                }
                Ok(0)
            }
            FaultSpec::Equivocate { count, .. } => {
                if *count == 0 || *count > self.nodes.providers {
                    return bad("count", format!("must be 1 to {} (the providers)", self.nodes.providers));
                }
                Ok(0)
            }
            FaultSpec::FloodProposals { duration, rate_per_sec, targets, .. } => {
                if duration.0 == 0 || at.0 + duration.0 > self.duration.0 {
                    return bad("duration", "must be more than 0 and end within the scenario's duration".into());
                }
                if !(*rate_per_sec > 0.0 && *rate_per_sec <= 100_000.0) {
                    return bad("rate_per_sec", format!("{rate_per_sec} is not more than 0 and at most 100000"));
                }
                if *targets == 0 || *targets > self.nodes.providers {
                    return bad("targets", format!("must be 1 to {} (the providers)", self.nodes.providers));
                }
                Ok(0)
            }
        }
    }

    /// The scenario's link model with some values changed.
    pub fn link_with(&self, latency: Option<Dur>, jitter: Option<Dur>, loss: Option<f64>) -> LinkSpec {
        LinkSpec {
            latency: latency.unwrap_or(self.link.latency),
            jitter: jitter.unwrap_or(self.link.jitter),
            loss: loss.unwrap_or(self.link.loss),
            ..self.link.clone()
        }
    }
}
