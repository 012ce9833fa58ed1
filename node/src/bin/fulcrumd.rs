//! `fulcrumd`: the Fulcrum federation daemon.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use fulcrum_node::admin::{self, token::AdminToken};
use fulcrum_node::cli::docs;
use fulcrum_node::config::{self, DataDirLock, NodeConfig, Overrides};
use fulcrum_node::daemon::{AdminCommand, Node, Parts, shutdown_signal};
use fulcrum_node::hooks::HookRunner;
use fulcrum_node::metrics::{self, Metrics};
use fulcrum_node::offer_file::load_offer_file;
use fulcrum_node::store::backup;
use fulcrum_node::store::checkpoints::CheckpointFile;
use fulcrum_node::store::index::Index;
use fulcrum_node::store::log::AgreementLog;
use fulcrum_proto::v1 as wire;
use fulcrum_protocol::checkpoint::sign_node_checkpoint;
use fulcrum_protocol::keys::Identity;
use fulcrum_protocol::record::Record;
use fulcrum_protocol::rotation::{KeyChain, KeyRotation, RotationBody, RotationError};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(name = "fulcrumd", version, about = "Fulcrum federation daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a data dir with a new node key (mode 0600) and a commented node.toml.
    Init {
        /// Data directory to create.
        #[arg(long, env = "FULCRUM_DATA_DIR", default_value = "fulcrum-data")]
        data_dir: PathBuf,
    },
    /// Run the daemon.
    Run {
        /// Config file (default: <data-dir>/node.toml when present).
        #[arg(long, env = "FULCRUM_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: Box<Overrides>,
    },
    /// Recreate a data dir from a backup written by 'fulcrumctl backup' (the dir must be new or empty)
    Restore {
        /// The backup file.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// The data dir to create; refused if it holds anything.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The node's key file, for a backup made without --include-key.
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
    /// Manage the node's key.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Print a shell completion script for fulcrumd.
    Completions(docs::CompletionsArgs),
    /// Print fulcrumd's man page, or write one page per command with --out.
    Man(docs::ManArgs),
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// Hand the node's identity over to a new key, on a stopped node. Both keys sign a rotation
    /// record in the log; the old key file is kept as node.key.old-<ms>; the node signs with the
    /// new key (and has a new peer id) from its next start, and peers follow it when it connects.
    /// Run it again to finish a rotation that was interrupted.
    Rotate {
        /// Config file (default: <data-dir>/node.toml when present).
        #[arg(long, env = "FULCRUM_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: Box<Overrides>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init { data_dir } => init(&data_dir),
        Command::Run { config, overrides } => run(config, *overrides),
        Command::Restore { from, data_dir, key } => restore(&from, &data_dir, key.as_deref()),
        Command::Key(KeyCommand::Rotate { config, overrides }) => rotate_key(config, &overrides),
        Command::Completions(a) => {
            docs::completions(Cli::command(), a.shell, &mut std::io::stdout()).or_else(quiet_pipe)
        }
        Command::Man(docs::ManArgs { out: None }) => {
            docs::man_page(Cli::command(), &mut std::io::stdout()).or_else(quiet_pipe)
        }
        Command::Man(docs::ManArgs { out: Some(dir) }) => docs::man_pages(Cli::command(), &dir)
            .map(|written| written.iter().for_each(|p| println!("{}", p.display())))
            .with_context(|| format!("cannot write man pages to {}", dir.display())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// A closed stdout (`fulcrumd man | head`) is not a failure.
fn quiet_pipe(e: std::io::Error) -> anyhow::Result<()> {
    if e.kind() == std::io::ErrorKind::BrokenPipe { Ok(()) } else { Err(e.into()) }
}

fn one_line(e: &anyhow::Error) -> String {
    let chain: Vec<String> = e.chain().map(ToString::to_string).collect();
    chain.join(": ").split_whitespace().collect::<Vec<_>>().join(" ")
}

fn init(data_dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    std::fs::set_permissions(data_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let key_path = data_dir.join("node.key");
    let identity = Identity::generate(&mut rand::rngs::OsRng);
    config::create_key(&key_path, &identity)?;
    let config_path = data_dir.join("node.toml");
    if !config_path.exists() {
        std::fs::write(&config_path, config::commented_config(data_dir))?;
    }
    let peer = fulcrum_node::net::keypair(&identity).map_err(anyhow::Error::msg)?.public().to_peer_id();
    println!("initialised {}", data_dir.display());
    println!("node key  {}", identity.public());
    println!("peer id   {peer}");
    println!("config    {}", config_path.display());
    Ok(())
}

/// `fulcrumd restore`: verifies the backup as an auditor would, then writes
/// a new data dir from it.
fn restore(from: &Path, data_dir: &Path, key: Option<&Path>) -> anyhow::Result<()> {
    let verified = backup::verify_backup(from)?;
    if let Some(failure) = &verified.report.first_failure {
        anyhow::bail!("the backup {} does not verify: {failure}; nothing was restored", from.display());
    }
    let restored = backup::restore(from, &verified, data_dir, key)?;
    println!("restored  {}", restored.data_dir.display());
    println!("node key  {} (from {})", restored.node_key, restored.key_from);
    println!("log       {} records, {} checkpoints, verified", restored.records, restored.checkpoints);
    println!("config    {} (a starter: bring back your node.toml)", restored.data_dir.join("node.toml").display());
    println!(
        "records the node logged after this backup are not in it; start the node with 'fulcrumd run --data-dir {}'",
        restored.data_dir.display()
    );
    Ok(())
}

/// `fulcrumd key rotate`: on a stopped node (the data dir lock says so),
/// signs a rotation with the old and a new key, logs it, signs a checkpoint
/// with the new key and installs the new key file. Each step is durable
/// before the next; run again after a crash, it finishes what was started.
fn rotate_key(config_path: Option<PathBuf>, overrides: &Overrides) -> anyhow::Result<()> {
    let config = NodeConfig::load(config_path.as_deref(), overrides)?;
    let _lock =
        DataDirLock::acquire(&config.data_dir).context("stop fulcrumd first: the key is rotated on a stopped node")?;
    let key_path = config.key_path();
    let next_path = key_path.with_file_name("node.key.next");
    let old = config::load_key(&key_path)?;
    let (log, recovered) = AgreementLog::open(&config.log_path())?;
    let mut rotations = Vec::new();
    for (i, bytes) in recovered.records.iter().enumerate() {
        let record = Record::from_cbor(bytes)
            .with_context(|| format!("agreement log record {i} does not verify; restore the log from a backup"))?;
        if let Record::Rotation { rotation } = record {
            rotations.push(rotation);
        }
    }
    let chain = match KeyChain::of_log(old.public(), &rotations) {
        Ok(chain) => chain,
        Err(RotationError::NotTheLogKey { log_key, .. }) => {
            // The rotation record is durable, the new key not installed yet.
            let next = config::load_key(&next_path).with_context(|| {
                format!("the log hands the node over to key {log_key}, but node.key is another key and there is no new key to install")
            })?;
            anyhow::ensure!(
                next.public() == log_key,
                "the log hands the node over to key {log_key}, but {} holds key {}",
                next_path.display(),
                next.public()
            );
            let at_ms = rotations.last().map_or(0, |r| r.body().at_ms);
            install_key(&key_path, &next_path, at_ms)?;
            println!("finished an interrupted rotation: the node's key is now {log_key}");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    // A new key left by a rotation that never reached the log was never used.
    if next_path.exists() {
        std::fs::remove_file(&next_path).with_context(|| format!("cannot remove {}", next_path.display()))?;
    }
    let new = Identity::generate(&mut rand::rngs::OsRng);
    config::create_key(&next_path, &new)?;
    backup::sync_dir(&config.data_dir)?;
    let at_ms = fulcrum_node::daemon::now_ms();
    let body = RotationBody {
        federation: config.federation.clone(),
        old_key: old.public(),
        new_key: new.public(),
        at_ms,
        seq: chain.rotations().len() as u64 + 1,
        log_size: log.len(),
        log_root: log.root(),
    };
    let rotation = KeyRotation::sign(&old, &new, body)?;
    log.append_blocking(vec![Record::Rotation { rotation }.to_cbor()?])?;
    // The new key's first checkpoint covers the rotation: the log verifies
    // to its end before the node even starts.
    let (mut checkpoints, _, _) = CheckpointFile::open(&config.checkpoints_path())
        .with_context(|| format!("cannot open {}", config.checkpoints_path().display()))?;
    let checkpoint = sign_node_checkpoint(&new, &config.federation, log.len(), log.root())?;
    checkpoints.append(&checkpoint.to_note())?;
    checkpoints.sync()?;
    log.close();
    install_key(&key_path, &next_path, at_ms)?;
    let peer = fulcrum_node::net::keypair(&new).map_err(anyhow::Error::msg)?.public().to_peer_id();
    println!("rotated the node key of {}", config.data_dir.display());
    println!("old key   {} (kept as node.key.old-{at_ms}, mode 0600: keep it offline, or destroy it)", old.public());
    println!("new key   {}", new.public());
    println!("peer id   {peer} (update bootstrap addresses that name the old one)");
    println!("the node signs with the new key from its next start; peers follow it when it connects");
    Ok(())
}

/// Keeps the key in use as `node.key.old-<at_ms>` (a hard link, so
/// `node.key` is never missing) and renames the new key over `node.key`.
fn install_key(key_path: &Path, next_path: &Path, at_ms: u64) -> anyhow::Result<()> {
    let kept = key_path.with_file_name(format!("node.key.old-{at_ms}"));
    if !kept.exists() {
        std::fs::hard_link(key_path, &kept)
            .with_context(|| format!("cannot keep the old key as {}", kept.display()))?;
    }
    std::fs::rename(next_path, key_path)
        .with_context(|| format!("cannot install the new key as {}", key_path.display()))?;
    let dir = key_path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    backup::sync_dir(dir)
}

fn run(config_path: Option<PathBuf>, overrides: Overrides) -> anyhow::Result<()> {
    let config = NodeConfig::load(config_path.as_deref(), &overrides)?;
    let filter = EnvFilter::try_new(&config.log_level).with_context(|| format!("log_level {:?}", config.log_level))?;
    if config.log_format == "json" {
        tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).init();
    } else {
        use std::io::IsTerminal;
        let ansi = std::io::stderr().is_terminal();
        tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    }
    let _lock = DataDirLock::acquire(&config.data_dir)?;
    let identity = config::load_key(&config.key_path())?;
    let (log, recovered) = AgreementLog::open(&config.log_path())?;
    if recovered.truncated_bytes > 0 {
        tracing::warn!(
            bytes = recovered.truncated_bytes,
            "cut a torn tail from the agreement log (crash during a write)"
        );
    }
    let mut records = Vec::with_capacity(recovered.records.len());
    for (i, bytes) in recovered.records.iter().enumerate() {
        let record = Record::from_cbor(bytes)
            .with_context(|| format!("agreement log record {i} does not verify; restore the log from a backup"))?;
        records.push(record);
    }
    tracing::info!(records = records.len(), root = %hex::encode(log.root()), "agreement log opened");
    let index = Index::open(&config.index_path(), 64 << 20)?;
    let socket = config.socket_path();
    let socket_path = socket.clone();
    let metrics_addr = config.metrics_socket_addr().context("metrics_listen")?;
    let admin_tcp = match (config.admin_tcp_addr().context("admin_tcp")?, &config.admin_token_file) {
        (Some(addr), Some(token_file)) => Some((addr, AdminToken::load(token_file)?)),
        _ => None,
    };
    let offers_dir = config.offers_dir.clone();
    let hooks = (config.hooks.clone(), config.hooks_cursor_path(), config.federation.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        // Taken before anything else: SIGHUP's default action would kill the
        // daemon (`systemctl reload` sends it), with or without an offers_dir.
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot install the SIGHUP handler")?;
        let metrics_listener = match metrics_addr {
            Some(addr) => Some(metrics::bind(addr).await?),
            None => None,
        };
        let admin_tcp = match admin_tcp {
            Some((addr, token)) => {
                let listener = admin::server::bind_tcp(addr).await?;
                if !addr.ip().is_loopback() {
                    tracing::warn!(%addr, "the admin API listens beyond loopback: its bearer token is not encrypted");
                }
                tracing::info!(%addr, "admin API on TCP (bearer token required)");
                Some((listener, token))
            }
            None => None,
        };
        let metrics = Metrics::new();
        let (node, handles) = Node::start(Parts {
            config,
            secret: identity.to_secret_bytes(),
            log,
            records,
            index,
            metrics: metrics.clone(),
            transport: fulcrum_node::net::Transport::TcpQuic,
            observer: None,
        })?;
        let offers = tokio::spawn(manage_offers_dir(offers_dir, handles.commands.clone(), hangup));
        // The hook runner tails the contract events of the durable log.
        let (hooks, cursor_path, federation) = hooks;
        let identity = (handles.me, federation);
        let wake = handles.events.subscribe();
        let runner = HookRunner::open(hooks, &cursor_path, handles.index.clone(), metrics.clone(), identity, wake)?;
        let (stop_hooks, hooks_stopped) = tokio::sync::watch::channel(false);
        let hooks = tokio::spawn(runner.run(hooks_stopped));
        let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let endpoints = admin::server::Endpoints { socket, tcp: admin_tcp };
        let admin = tokio::spawn(admin::server::serve(endpoints, handles, async {
            let _ = admin_stopped.await;
        }));
        let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics_server = metrics_listener.map(|listener| {
            tokio::spawn(metrics::serve(listener, metrics, async {
                let _ = metrics_stopped.await;
            }))
        });
        let result = node.run(shutdown_signal()).await;
        offers.abort();
        let _ = stop_hooks.send(true);
        let _ = hooks.await;
        let _ = stop_admin.send(());
        let _ = stop_metrics.send(());
        if let Some(server) = metrics_server {
            let _ = server.await;
        }
        // Graceful shutdown waits for every open admin connection, and a
        // `contracts watch` stream never ends by itself: give them a moment.
        let abort = admin.abort_handle();
        if tokio::time::timeout(std::time::Duration::from_secs(2), admin).await.is_err() {
            abort.abort();
        }
        let _ = std::fs::remove_file(&socket_path);
        result
    })
}

/// How long one request to the daemon's loop may take (a publish waits until
/// its record is durable).
const OFFERS_DIR_TIMEOUT: Duration = Duration::from_secs(30);

/// Publishes `offers_dir` once the node runs, and again on every SIGHUP.
async fn manage_offers_dir(
    dir: Option<PathBuf>,
    commands: tokio::sync::mpsc::Sender<AdminCommand>,
    mut hangup: tokio::signal::unix::Signal,
) {
    if let Some(dir) = &dir {
        publish_offers_dir(dir, &commands).await;
    }
    while hangup.recv().await.is_some() {
        match &dir {
            Some(dir) => {
                tracing::info!(dir = %dir.display(), "SIGHUP: publishing offers_dir again");
                publish_offers_dir(dir, &commands).await;
            }
            None => tracing::info!("SIGHUP: no offers_dir configured, nothing to reload"),
        }
    }
}

/// Publishes every `*.toml` offer file in `dir`, in name order, through the
/// daemon's admin command channel, logging one line per file. An offer whose
/// terms equal one of this node's live offers is left alone (publishing
/// always signs a new seq, which peers would gossip and re-sync for nothing).
/// A bad file is logged and skipped. Offers whose file is gone stay: only
/// `fulcrumctl offers withdraw` withdraws.
async fn publish_offers_dir(dir: &Path, commands: &tokio::sync::mpsc::Sender<AdminCommand>) {
    let files = match offer_files(dir) {
        Ok(files) => files,
        Err(e) => {
            tracing::error!(dir = %dir.display(), "cannot read offers_dir: {e}");
            return;
        }
    };
    let mine = wire::ListOffersRequest { mine: true, ..wire::ListOffersRequest::default() };
    let own: Vec<wire::Offer> = match ask(commands, |tx| AdminCommand::ListOffers(mine, tx)).await {
        Ok(list) => list.offers.into_iter().filter_map(|view| view.offer).collect(),
        Err(e) => {
            tracing::error!(dir = %dir.display(), "offers_dir not published: cannot list own offers: {e}");
            return;
        }
    };
    for path in files {
        let file = path.display();
        let (offer, ttl_ms) = match load_offer_file(&path) {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::error!(%file, "offer file not published: {e}");
                continue;
            }
        };
        if let Some(current) = own.iter().find(|o| same_terms(o, &offer)) {
            tracing::info!(%file, offer_id = %current.offer_id, seq = current.seq, "offer unchanged, not published again");
            continue;
        }
        let offer_id = offer.offer_id.clone();
        match ask(commands, |tx| AdminCommand::Publish(offer, ttl_ms.unwrap_or(0), tx)).await {
            Ok(view) => {
                let seq = view.offer.map_or(0, |o| o.seq);
                tracing::info!(%file, %offer_id, seq, "published offer from offers_dir");
            }
            Err(e) => tracing::error!(%file, %offer_id, "offer file not published: {e}"),
        }
    }
}

/// The `*.toml` files directly in `dir`, sorted by name.
fn offer_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Whether two offers have the same terms: everything but what the daemon
/// fills in when it signs (provider, federation, seq, lifetime).
fn same_terms(a: &wire::Offer, b: &wire::Offer) -> bool {
    let terms = |o: &wire::Offer| wire::Offer {
        provider: Vec::new(),
        federation: String::new(),
        seq: 0,
        issued_at_ms: 0,
        expires_at_ms: 0,
        ..o.clone()
    };
    terms(a) == terms(b)
}

/// Sends one command to the daemon's loop and waits for its answer.
async fn ask<T>(
    commands: &tokio::sync::mpsc::Sender<AdminCommand>,
    command: impl FnOnce(tokio::sync::oneshot::Sender<Result<T, String>>) -> AdminCommand,
) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    commands.send(command(tx)).await.map_err(|_| "the daemon is shutting down".to_owned())?;
    match tokio::time::timeout(OFFERS_DIR_TIMEOUT, rx).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => Err("the daemon dropped the request".to_owned()),
        Err(_) => Err(format!("no answer within {}s", OFFERS_DIR_TIMEOUT.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn same_terms_ignores_what_the_daemon_signs() {
        let (file, _) = fulcrum_node::offer_file::parse_offer_file(
            r#"offer_id = "a"
units = 2
[site]
country = "DE"
region = "r"
datacenter = "d"
[flavour]
name = "f"
vcpu = 2
memory_mib = 1024
storage_gib = 10
[price]
currency = "EUR"
per_unit_hour = "0.1"
[duration]
min = "1h"
max = "2h"
"#,
        )
        .unwrap();
        let signed = wire::Offer {
            provider: vec![7; 32],
            federation: "dev".into(),
            seq: 4,
            issued_at_ms: 1,
            expires_at_ms: 2,
            ..file.clone()
        };
        assert!(same_terms(&signed, &file));
        assert!(!same_terms(&wire::Offer { units_available: 3, ..signed }, &file));
    }

    #[test]
    fn only_toml_files_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.toml", "a.toml", "notes.txt"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub.toml")).unwrap();
        let names: Vec<_> =
            offer_files(dir.path()).unwrap().into_iter().map(|p| p.file_name().unwrap().to_owned()).collect();
        assert_eq!(names, ["a.toml", "b.toml"]);
    }
}
