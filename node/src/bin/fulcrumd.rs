//! `fulcrumd`: the Fulcrum federation daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fulcrum_node::config::{self, DataDirLock, NodeConfig, Overrides};
use fulcrum_node::daemon::{Node, Parts, shutdown_signal};
use fulcrum_node::metrics::{self, Metrics};
use fulcrum_node::store::index::Index;
use fulcrum_node::store::log::AgreementLog;
use fulcrum_protocol::keys::Identity;
use fulcrum_protocol::record::Record;
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init { data_dir } => init(&data_dir),
        Command::Run { config, overrides } => run(config, *overrides),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
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
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let metrics_listener = match metrics_addr {
            Some(addr) => Some(metrics::bind(addr).await?),
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
        })?;
        let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin = tokio::spawn(fulcrum_node::admin::server::serve(socket, handles, async {
            let _ = admin_stopped.await;
        }));
        let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics_server = metrics_listener.map(|listener| {
            tokio::spawn(metrics::serve(listener, metrics, async {
                let _ = metrics_stopped.await;
            }))
        });
        let result = node.run(shutdown_signal()).await;
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
