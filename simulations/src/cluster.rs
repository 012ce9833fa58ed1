//! The simulated nodes: each one the real `Node` (its gossip, negotiation,
//! agreement log and index on temporary storage) on the simulated network,
//! driven through its admin command channel. Started, crashed, stopped and
//! restarted from its storage here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use fulcrum_node::daemon::{AdminCommand, ExportSnapshot, Handles, Node, Parts};
use fulcrum_node::metrics::Metrics;
use fulcrum_node::net::{self, Transport};
use fulcrum_node::store::export::write_export;
use fulcrum_node::store::index::Index;
use fulcrum_node::store::log::AgreementLog;
use fulcrum_proto::v1 as wire;
use fulcrum_protocol::audit::{AuditReport, verify_export};
use fulcrum_protocol::keys::Identity;
use fulcrum_protocol::record::Record;
use libp2p::PeerId;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::link::Network;
use crate::observe::Recorder;
use crate::plan::{NodePlan, OfferPlan, SitePlan};
use crate::scenario::NodeSettings;

/// How long a command to a node may take before it counts as unanswered.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A node that is up.
#[derive(Debug)]
struct Running {
    handles: Handles,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// One simulated node.
#[derive(Debug)]
pub struct SimNode {
    /// Its plan.
    pub plan: NodePlan,
    /// Its data dir.
    pub dir: PathBuf,
    /// Its memory port.
    pub port: u64,
    /// Its libp2p identity.
    pub peer_id: PeerId,
    running: Option<Running>,
    /// Intervals it was up, µs from the epoch (`None`: still up).
    pub up: Vec<(u64, Option<u64>)>,
    /// Its log was rewritten by an equivocation fault.
    pub equivocated: bool,
    /// Why it stopped by itself, if it did.
    pub failure: Option<String>,
}

impl SimNode {
    /// True while up.
    pub fn is_up(&self) -> bool {
        self.running.is_some()
    }

    /// Its admin command channel while up.
    pub fn handles(&self) -> Option<&Handles> {
        self.running.as_ref().map(|r| &r.handles)
    }

    /// True when it was up over all of `[from, to]` (µs).
    pub fn up_throughout(&self, from: u64, to: u64) -> bool {
        self.up.iter().any(|(start, end)| *start <= from && end.is_none_or(|e| e >= to))
    }

    /// The multiaddr peers dial.
    pub fn addr(&self) -> String {
        format!("/memory/{}/p2p/{}", self.port, self.peer_id)
    }
}

/// Every simulated node.
#[derive(Debug)]
pub struct Cluster {
    /// The nodes, as in the plan.
    pub nodes: Vec<SimNode>,
    net: std::sync::Arc<Network>,
    recorder: std::sync::Arc<Recorder>,
    settings: NodeSettings,
    dilation: u32,
}

impl Cluster {
    /// Prepares (does not start) the planned nodes under `root`.
    pub fn new(
        plan: &[NodePlan],
        root: &Path,
        first_port: u64,
        net: std::sync::Arc<Network>,
        recorder: std::sync::Arc<Recorder>,
        settings: NodeSettings,
        dilation: u32,
    ) -> anyhow::Result<Cluster> {
        let mut nodes = Vec::with_capacity(plan.len());
        for p in plan {
            let identity = Identity::from_secret_bytes(&p.secret);
            let peer_id = net::keypair(&identity).map_err(anyhow::Error::msg)?.public().to_peer_id();
            let port = first_port + p.index as u64;
            net.register(p.index, port);
            nodes.push(SimNode {
                plan: p.clone(),
                dir: root.join(&p.name),
                port,
                peer_id,
                running: None,
                up: Vec::new(),
                equivocated: false,
                failure: None,
            });
        }
        Ok(Cluster { nodes, net, recorder, settings, dilation })
    }

    /// Starts node `i` from its storage, dialing `bootstrap`.
    pub fn start(&mut self, i: usize, bootstrap: &[usize]) -> anyhow::Result<()> {
        let addrs = bootstrap.iter().filter_map(|j| self.nodes.get(*j)).map(SimNode::addr).collect();
        let node = &self.nodes[i];
        let config = self.settings.config(node.dir.clone(), format!("/memory/{}", node.port), addrs, self.dilation);
        std::fs::create_dir_all(&node.dir).with_context(|| format!("cannot create {}", node.dir.display()))?;
        let (log, recovered) = AgreementLog::open(&config.log_path())?;
        let records = recovered
            .records
            .iter()
            .map(|bytes| Record::from_cbor(bytes))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("{}: a log record does not verify", node.plan.name))?;
        let index = Index::open(&config.index_path(), self.settings.index_cache_kib * 1024)?;
        let identity = Identity::from_secret_bytes(&node.plan.secret);
        let key = net::keypair(&identity).map_err(anyhow::Error::msg)?;
        let transport = Transport::Custom(self.net.transport(i, &key)?);
        let (runner, handles) = Node::start(Parts {
            config,
            secret: node.plan.secret,
            log,
            records,
            index,
            metrics: Metrics::new(),
            transport,
            observer: Some(self.recorder.observer(i)),
        })?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(runner.run(async {
            let _ = stopped.await;
        }));
        let now = self.recorder.now_us();
        let node = &mut self.nodes[i];
        node.running = Some(Running { handles, stop, task });
        node.up.push((now, None));
        Ok(())
    }

    /// Crashes node `i`: its task is dropped mid-flight, as SIGKILL would.
    pub async fn kill(&mut self, i: usize) {
        let Some(running) = self.nodes[i].running.take() else { return };
        running.task.abort();
        let result = running.task.await;
        self.down(i, result.ok());
    }

    /// Stops node `i` cleanly: no new proposals, in-flight commits finished, flushed.
    pub async fn stop(&mut self, i: usize) {
        let Some(running) = self.nodes[i].running.take() else { return };
        let _ = running.stop.send(());
        drop(running.handles);
        let result = running.task.await;
        self.down(i, result.ok());
    }

    /// Stops nodes cleanly, all at once (each takes a moment to flush).
    pub async fn stop_all(&mut self, nodes: &[usize]) {
        let mut stopping = Vec::new();
        for &i in nodes {
            if let Some(running) = self.nodes[i].running.take() {
                let _ = running.stop.send(());
                stopping.push((i, running.task));
            }
        }
        let results =
            futures::future::join_all(stopping.into_iter().map(|(i, task)| async move { (i, task.await) })).await;
        for (i, result) in results {
            self.down(i, result.ok());
        }
    }

    fn down(&mut self, i: usize, result: Option<anyhow::Result<()>>) {
        let now = self.recorder.now_us();
        let node = &mut self.nodes[i];
        if let Some(last) = node.up.last_mut() {
            last.1 = Some(now);
        }
        if let Some(Err(e)) = result {
            node.failure = Some(format!("{e:#}"));
        }
    }

    /// Notes nodes whose event loop ended by itself (a failed log write).
    pub fn reap(&mut self) {
        let finished: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].running.as_ref().is_some_and(|r| r.task.is_finished()))
            .collect();
        for i in finished {
            if let Some(running) = self.nodes[i].running.take() {
                let result = futures::FutureExt::now_or_never(running.task).and_then(Result::ok);
                self.down(i, result);
            }
        }
    }

    /// Sends a command to node `i` and waits for its answer.
    pub async fn ask<T>(
        &self,
        i: usize,
        command: impl FnOnce(oneshot::Sender<T>) -> AdminCommand,
    ) -> Result<T, String> {
        let handles = self.nodes[i].handles().ok_or("node is down")?.clone();
        ask(&handles, command).await
    }

    /// Exports node `i`'s log while it runs and verifies the export offline.
    pub async fn export_and_verify(&self, i: usize, out: &Path) -> Result<AuditReport, String> {
        let snapshot = self.ask(i, AdminCommand::Export).await??;
        export_and_verify(snapshot, out.to_path_buf()).await
    }
}

/// Sends one command and waits for its answer.
pub async fn ask<T>(handles: &Handles, command: impl FnOnce(oneshot::Sender<T>) -> AdminCommand) -> Result<T, String> {
    ask_within(handles, COMMAND_TIMEOUT, command).await
}

/// Sends one command and waits for its answer up to `timeout` (wall clock).
pub async fn ask_within<T>(
    handles: &Handles,
    timeout: Duration,
    command: impl FnOnce(oneshot::Sender<T>) -> AdminCommand,
) -> Result<T, String> {
    let (tx, rx) = oneshot::channel();
    handles.commands.send(command(tx)).await.map_err(|_| "node is shutting down".to_owned())?;
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(_)) => Err("node dropped the request".into()),
        Err(_) => Err(format!("no answer within {}s", timeout.as_secs())),
    }
}

/// Writes the export of `snapshot` to `out` and verifies it as an auditor would.
pub async fn export_and_verify(snapshot: ExportSnapshot, out: PathBuf) -> Result<AuditReport, String> {
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::create(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
        write_export(&snapshot, std::io::BufWriter::new(file)).map_err(|e| format!("export failed: {e:#}"))?;
        let file = std::fs::File::open(&out).map_err(|e| format!("cannot read {}: {e}", out.display()))?;
        Ok(verify_export(std::io::BufReader::new(file)))
    })
    .await
    .map_err(|e| format!("export task failed: {e}"))?
}

/// The terms of a planned offer, as an operator's offer file gives them.
pub fn offer_terms(site: &SitePlan, o: &OfferPlan, price_micros: u64) -> wire::Offer {
    wire::Offer {
        offer_id: o.offer_id.clone(),
        site: Some(wire::Site {
            country: site.country.clone(),
            region: site.region.clone(),
            datacenter: site.datacenter.clone(),
        }),
        flavour: Some(wire::Flavour {
            name: o.flavour.clone(),
            per_unit: Some(wire::Resources {
                vcpu: o.vcpu,
                memory_mib: o.memory_mib,
                storage_gib: o.storage_gib,
                gpus: Vec::new(),
            }),
        }),
        units_available: o.units,
        unit_price_per_hour: Some(wire::Price { currency: "EUR".into(), micros: price_micros }),
        min_duration_ms: o.min_duration_ms,
        max_duration_ms: o.max_duration_ms,
        labels: o.labels.clone(),
        sla_permille: o.sla_permille,
        ..wire::Offer::default()
    }
}
