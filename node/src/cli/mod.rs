//! `fulcrumctl`: the operator's thin client of the daemon's admin API. Owns the
//! command line, the checks made before the daemon is asked anything, and how
//! answers and failures are shown (tables, `--json`, one-line errors).

mod args;
mod audit;
mod backup;
pub mod docs;
mod federation;
mod placements;
mod render;
pub mod time;
pub mod view;

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use fulcrum_proto::v1 as wire;
use fulcrum_protocol::offer::Currency;
use serde::Serialize;

use self::args::{ContractRef, Start};
use self::view::{ContractView, EventView, OfferView, PeerView, PlaceView, StatusView};
use crate::admin::client::{self, Admin, AdminTarget, ClientError};
use crate::offer_file::{OfferFileError, load_offer_file};

/// Exit code for a bad command line or input file (checked before the daemon is asked).
pub const EXIT_USAGE: u8 = 2;
/// Exit code for anything that went wrong at or with the daemon.
pub const EXIT_FAILURE: u8 = 1;

const DEFAULT_DATA_DIR: &str = "./fulcrum-data";
const SOCKET_NAME: &str = "admin.sock";
const GLOBAL: &str = "Global options";

/// Every answer but a placement's comes from local state, at once.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A placement negotiates with peers, each exchange bounded by the daemon.
const PLACE_TIMEOUT: Duration = Duration::from_secs(600);

/// Operate a Fulcrum node through its admin socket.
#[derive(Debug, Parser)]
#[command(name = "fulcrumctl", version, propagate_version = true, max_term_width = 100)]
#[command(
    after_help = "Exit status: 0 on success, 1 when the daemon or the request failed, 2 for a bad command line or file."
)]
pub struct Cli {
    /// The daemon's admin socket [default: <data-dir>/admin.sock]
    #[arg(long, global = true, env = "FULCRUM_SOCKET", value_name = "PATH", help_heading = GLOBAL)]
    pub socket: Option<PathBuf>,
    /// The daemon's admin API elsewhere than its socket: tcp://HOST:PORT (its admin_tcp) or unix:PATH
    #[arg(long, global = true, env = "FULCRUM_ADMIN", value_name = "URL", help_heading = GLOBAL)]
    pub admin: Option<String>,
    /// File holding the admin token, for --admin tcp://... (mode 0600)
    #[arg(long, global = true, env = "FULCRUM_ADMIN_TOKEN_FILE", value_name = "FILE", help_heading = GLOBAL)]
    pub token_file: Option<PathBuf>,
    /// The daemon's data directory, where its admin socket is
    #[arg(
        long,
        global = true,
        env = "FULCRUM_DATA_DIR",
        value_name = "DIR",
        default_value = DEFAULT_DATA_DIR,
        help_heading = GLOBAL
    )]
    pub data_dir: PathBuf,
    /// Print machine-readable JSON (one document; one object per line for `contracts watch`)
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show this node: keys, federation, listen addresses, peers, offers, contracts, log
    Status,
    /// List connected peers
    Peers,
    /// Publish, withdraw and list capacity offers
    #[command(subcommand)]
    Offers(OffersCommand),
    /// Find offers that fit and negotiate contracts for them
    Place(PlaceArgs),
    /// List, show, terminate and watch contracts
    #[command(subcommand)]
    Contracts(ContractsCommand),
    /// List, show and terminate composite placements (all their contracts at once)
    #[command(subcommand)]
    Placements(placements::PlacementsCommand),
    /// Export and verify agreement logs, prove shared contracts, list evidence
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Write a consistent, verified backup of the node (restore it with 'fulcrumd restore')
    Backup(backup::BackupArgs),
    /// Charter and offline authority workflow: keys, member certificates, revocations (no daemon needed)
    #[command(subcommand)]
    Federation(federation::FederationCommand),
    /// Print a shell completion script for fulcrumctl (no daemon needed)
    Completions(docs::CompletionsArgs),
    /// Print fulcrumctl's man page, or write one page per command with --out (no daemon needed)
    Man(docs::ManArgs),
}

/// `fulcrumctl offers ...`.
#[derive(Debug, Subcommand)]
pub enum OffersCommand {
    /// Publish (or replace) the offer described by an offer file
    Publish {
        /// Offer file, e.g. configs/offers/de-general.toml
        #[arg(value_name = "FILE.toml")]
        file: PathBuf,
    },
    /// Withdraw one of this node's offers
    Withdraw {
        /// The offer_id from its offer file
        #[arg(value_name = "OFFER_ID")]
        offer_id: String,
    },
    /// List offers in the local offer book
    List(ListOffersArgs),
}

/// Constraints shared by `offers list` and `place`.
#[derive(Debug, Args)]
pub struct Filters {
    /// Only these countries (ISO codes, comma-separated or repeated)
    #[arg(long = "country", value_name = "DE,FR", value_delimiter = ',', value_parser = args::country)]
    pub countries: Vec<String>,
    /// Require this label (repeatable), e.g. iso:27001
    #[arg(long = "label", value_name = "L", value_parser = args::label)]
    pub labels: Vec<String>,
    /// Required labels must be attested by the provider's member certificate
    #[arg(long)]
    pub attested: bool,
    /// Highest price per unit-hour: an amount in EUR, e.g. 0.45, or an amount and its currency, e.g. "1.20 CHF"
    #[arg(long, value_name = "PRICE", value_parser = max_price)]
    pub max_unit_price: Option<wire::Price>,
}

/// `--max-unit-price 0.45` (EUR) or `--max-unit-price "1.20 CHF"`: an exact
/// amount, then an optional ISO 4217 code, as prices are shown.
fn max_price(s: &str) -> Result<wire::Price, String> {
    let mut words = s.split_whitespace();
    let micros = args::price_eur(words.next().unwrap_or_default())?;
    let currency = match (words.next(), words.next()) {
        (None, _) => Currency::EUR,
        (Some(code), None) => Currency::parse(&code.to_ascii_uppercase())
            .ok_or_else(|| format!("{code:?} is not a currency code: use an ISO 4217 code such as EUR or CHF"))?,
        (Some(_), Some(_)) => {
            return Err(format!("{s:?} is not a price: use an amount and a currency, e.g. \"1.20 CHF\""));
        }
    };
    Ok(wire::Price { currency: currency.as_str().to_owned(), micros })
}

/// `fulcrumctl offers list`.
#[derive(Debug, Args)]
pub struct ListOffersArgs {
    /// Only this node's own offers
    #[arg(long)]
    pub mine: bool,
    #[command(flatten)]
    pub filters: Filters,
    /// At least this many vCPUs per unit
    #[arg(long, value_name = "N")]
    pub min_vcpu: Option<u32>,
    /// At least this much memory per unit, in MiB
    #[arg(long, value_name = "N")]
    pub min_memory_mib: Option<u64>,
}

/// How replicas are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SpreadArg {
    /// Anywhere
    None,
    /// No two units with one provider
    Providers,
    /// No two units in one country
    Countries,
}

/// `fulcrumctl place`.
#[derive(Debug, Args)]
pub struct PlaceArgs {
    /// Units to place
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub units: u32,
    /// vCPUs per unit, at least
    #[arg(long, value_name = "N")]
    pub vcpu: u32,
    /// Memory per unit in MiB, at least
    #[arg(long, value_name = "N")]
    pub memory_mib: u64,
    /// Storage per unit in GiB, at least
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub storage_gib: u64,
    /// GPUs per unit, at least (repeatable), e.g. nvidia-l40s=2
    #[arg(long = "gpu", value_name = "MODEL=N", value_parser = args::gpu)]
    pub gpus: Vec<(String, u32)>,
    #[command(flatten)]
    pub filters: Filters,
    /// Contract length: 90s, 30m, 720h, 7d
    #[arg(long, value_name = "DURATION", default_value = "720h", value_parser = args::duration)]
    pub duration: u64,
    /// When the contracts start: RFC 3339 time or +DURATION from now [default: now]
    #[arg(long, value_name = "RFC3339|+10m", value_parser = args::start)]
    pub start: Option<Start>,
    /// How to spread the units
    #[arg(long, value_enum, default_value_t = SpreadArg::None)]
    pub spread: SpreadArg,
    /// Lowest acceptable availability SLA, in permille (999 = 99.9%)
    #[arg(long, value_name = "PERMILLE", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub min_sla: u32,
    /// Show the plan without negotiating
    #[arg(long)]
    pub dry_run: bool,
}

/// Why a contract is terminated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReasonArg {
    /// The customer asked for it
    CustomerRequest,
    /// The provider needs the capacity back for maintenance
    ProviderMaintenance,
    /// The other party broke the terms
    Breach,
    /// Part of a multi-contract placement failed
    PlacementIncomplete,
    /// The other party is no longer a federation member
    MemberRevoked,
}

impl ReasonArg {
    fn to_wire(self) -> wire::TerminationReason {
        match self {
            ReasonArg::CustomerRequest => wire::TerminationReason::CustomerRequest,
            ReasonArg::ProviderMaintenance => wire::TerminationReason::ProviderMaintenance,
            ReasonArg::Breach => wire::TerminationReason::Breach,
            ReasonArg::PlacementIncomplete => wire::TerminationReason::PlacementIncomplete,
            ReasonArg::MemberRevoked => wire::TerminationReason::MemberRevoked,
        }
    }
}

/// `fulcrumctl contracts ...`.
#[derive(Debug, Subcommand)]
pub enum ContractsCommand {
    /// List this node's contracts
    List {
        /// Only active contracts
        #[arg(long)]
        active: bool,
    },
    /// Show one contract: all terms, both signatures, state and role
    Show {
        /// Contract id (64 hex digits, or a unique prefix of 8 or more)
        #[arg(value_name = "ID", value_parser = args::contract_ref)]
        id: ContractRef,
    },
    /// Terminate a contract
    Terminate {
        /// Contract id (64 hex digits, or a unique prefix of 8 or more)
        #[arg(value_name = "ID", value_parser = args::contract_ref)]
        id: ContractRef,
        /// Why
        #[arg(long, value_enum, value_name = "CODE")]
        reason: ReasonArg,
    },
    /// Print contract events as they happen, until interrupted
    Watch,
}

/// A parsed command line with the admin endpoint resolved.
#[derive(Debug)]
pub struct Invocation {
    /// Where the daemon's admin API is.
    pub admin: AdminTarget,
    /// `--json`.
    pub json: bool,
    /// The command.
    pub command: Command,
}

/// Parses the command line. Precedence for the admin endpoint: `--admin`,
/// then `--socket`, then `--data-dir`, then `FULCRUM_ADMIN`, then
/// `FULCRUM_SOCKET`, then `FULCRUM_DATA_DIR`, then `./fulcrum-data`: a flag
/// typed now beats an environment set long ago.
pub fn parse_args<I, T>(args: I) -> Result<Invocation, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let mut command = Cli::command();
    let matches = command.try_get_matches_from_mut(args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    let from_command_line = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    let socket = |socket: Option<PathBuf>| match socket {
        Some(socket) if from_command_line("socket") => socket,
        _ if from_command_line("data_dir") => cli.data_dir.join(SOCKET_NAME),
        Some(socket) if !socket.as_os_str().is_empty() => socket,
        _ => cli.data_dir.join(SOCKET_NAME),
    };
    let admin_given = from_command_line("admin")
        || (cli.admin.as_ref().is_some_and(|a| !a.is_empty())
            && !from_command_line("socket")
            && !from_command_line("data_dir"));
    let admin = match cli.admin.as_deref() {
        Some(url) if admin_given => AdminTarget::parse(url, cli.token_file.clone())
            .map_err(|e| command.error(clap::error::ErrorKind::ValueValidation, format!("--admin: {e}")))?,
        _ => AdminTarget::Socket(socket(cli.socket.clone())),
    };
    Ok(Invocation { admin, json: cli.json, command: cli.command })
}

/// Condenses clap's multi-paragraph report into one line and points at the
/// `--help` of the (sub)command named in `args`.
pub fn usage_error_line<T: AsRef<std::ffi::OsStr>>(err: &clap::Error, args: &[T]) -> String {
    let text = err.render().to_string();
    let command = command_path(args);
    if err.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // clap rendered the whole help; name the commands instead.
        let commands: Vec<&str> = text
            .lines()
            .skip_while(|l| l.trim() != "Commands:")
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .filter_map(|l| l.split_whitespace().next())
            .filter(|c| *c != "help")
            .collect();
        return format!("'{command}' needs a command: {} (see '{command} --help')", commands.join(", "));
    }
    let body = text.strip_prefix("error: ").unwrap_or(&text);
    let first = body.split("\n\n").next().unwrap_or(body);
    let line = first.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
    format!("{line} (see '{command} --help')")
}

/// `fulcrumctl contracts show` for `fulcrumctl --json contracts show x`: the
/// subcommands named on the command line, for pointing at the right help.
fn command_path<T: AsRef<std::ffi::OsStr>>(args: &[T]) -> String {
    let mut command = Cli::command();
    let mut path = vec![command.get_name().to_owned()];
    for arg in args.iter().skip(1) {
        let Some(arg) = arg.as_ref().to_str() else { continue };
        let Some(sub) = command.find_subcommand(arg).cloned() else { continue };
        path.push(sub.get_name().to_owned());
        command = sub;
    }
    path.join(" ")
}

/// Why a command failed. Each displays as one line for `error: ...`.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The daemon could not be reached.
    #[error(transparent)]
    Connect(#[from] ClientError),
    /// The offer file is unreadable or wrong.
    #[error(transparent)]
    OfferFile(#[from] OfferFileError),
    /// A `fulcrumctl federation` command failed (its own exit code).
    #[error(transparent)]
    Federation(#[from] federation::FederationError),
    /// A file named on the command line cannot be used.
    #[error("{0}")]
    BadInput(String),
    /// The daemon refused or failed the request.
    #[error("{}", status_line(.0))]
    Daemon(#[from] tonic::Status),
    /// The request was answered but did not achieve what was asked.
    #[error("{0}")]
    Failed(String),
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(#[source] io::Error),
}

impl CliError {
    /// 2 for a bad command line or file, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::OfferFile(_) | CliError::BadInput(_) => EXIT_USAGE,
            CliError::Federation(e) => e.exit_code(),
            _ => EXIT_FAILURE,
        }
    }
}

fn status_line(status: &tonic::Status) -> String {
    let message = status.message().trim();
    // A status the client made from a transport failure carries its cause;
    // one the daemon sent does not.
    if let Some(cause) = std::error::Error::source(status) {
        let detail = if message.is_empty() { client::error_chain(cause) } else { message.to_owned() };
        return format!("lost the connection to the daemon: {detail} (did fulcrumd stop?)");
    }
    match status.code() {
        tonic::Code::Unimplemented => {
            format!("the daemon does not support this request ({message}); is fulcrumd older than fulcrumctl?")
        }
        _ if message.is_empty() => format!("the daemon answered: {}", status.code().description()),
        _ => message.to_owned(),
    }
}

/// Runs one command. Local input (files, values) is checked before the
/// daemon is contacted, so a bad file is reported even with no daemon.
pub async fn run(inv: Invocation) -> Result<(), CliError> {
    let Invocation { admin: socket, json, command } = inv;
    let out = Output { json };
    match command {
        Command::Status => {
            let status = answer(client::connect(&socket).await?.status(wire::StatusQuery {})).await?;
            let view = StatusView::from(status);
            out.show(&view, render::status)
        }
        Command::Peers => {
            let list = answer(client::connect(&socket).await?.peers(wire::PeersQuery {})).await?;
            let views: Vec<PeerView> = list.peers.into_iter().map(PeerView::from).collect();
            out.show(&views, |v| render::peers(v))
        }
        Command::Offers(OffersCommand::Publish { file }) => {
            let (offer, ttl_ms) = load_offer_file(&file)?;
            let request = wire::PublishOfferRequest { offer: Some(offer), ttl_ms: ttl_ms.unwrap_or(0) };
            let view = OfferView::from(answer(client::connect(&socket).await?.publish_offer(request)).await?);
            out.show(&view, |v| render::offer_line("published", v))
        }
        Command::Offers(OffersCommand::Withdraw { offer_id }) => {
            let request = wire::WithdrawOfferRequest { offer_id };
            let view = OfferView::from(answer(client::connect(&socket).await?.withdraw_offer(request)).await?);
            out.show(&view, |v| render::offer_line("withdrew", v))
        }
        Command::Offers(OffersCommand::List(a)) => {
            let request = wire::ListOffersRequest {
                mine: a.mine,
                countries: a.filters.countries,
                labels: a.filters.labels,
                min_vcpu: a.min_vcpu.unwrap_or(0),
                min_memory_mib: a.min_memory_mib.unwrap_or(0),
                max_unit_price: a.filters.max_unit_price,
                attested_labels: a.filters.attested,
            };
            let list = answer(client::connect(&socket).await?.list_offers(request)).await?;
            let views: Vec<OfferView> = list.offers.into_iter().map(OfferView::from).collect();
            out.show(&views, |v| render::offers(v))
        }
        Command::Place(a) => place(&socket, &out, a).await,
        Command::Contracts(ContractsCommand::List { active }) => {
            let request = wire::ListContractsRequest { active_only: active };
            let list = answer(client::connect(&socket).await?.list_contracts(request)).await?;
            let views: Vec<ContractView> = list.contracts.into_iter().map(ContractView::from).collect();
            out.show(&views, |v| render::contracts(v))
        }
        Command::Contracts(ContractsCommand::Show { id }) => {
            let mut c = client::connect(&socket).await?;
            let contract_id = resolve(&mut c, id).await?;
            let view = ContractView::from(answer(c.show_contract(wire::ContractQuery { contract_id })).await?);
            out.show(&view, render::contract)
        }
        Command::Contracts(ContractsCommand::Terminate { id, reason }) => {
            let mut c = client::connect(&socket).await?;
            let contract_id = resolve(&mut c, id).await?;
            let request = wire::TerminateContractRequest { contract_id, reason: reason.to_wire() as i32 };
            let view = ContractView::from(answer(c.terminate_contract(request)).await?);
            out.show(&view, |v| {
                let reason = reason.to_possible_value().map(|p| p.get_name().to_owned()).unwrap_or_default();
                format!("terminated contract {} ({reason}): now {}\n", v.contract_id, v.state)
            })
        }
        Command::Contracts(ContractsCommand::Watch) => watch(&socket, &out).await,
        Command::Placements(command) => placements::run(&socket, &out, command).await,
        Command::Audit(command) => audit::run(&socket, &out, command).await,
        Command::Backup(args) => backup::run(&socket, &out, args).await,
        Command::Federation(command) => federation::run(command, &socket, &out).await,
        Command::Completions(a) => docs::completions(Cli::command(), a.shell, &mut io::stdout()).or_else(broken_pipe),
        Command::Man(a) => man(a),
    }
}

/// `fulcrumctl man`: the top page on stdout, or every page into `--out`.
fn man(a: docs::ManArgs) -> Result<(), CliError> {
    let Some(dir) = a.out else {
        return docs::man_page(Cli::command(), &mut io::stdout()).or_else(broken_pipe);
    };
    let written = docs::man_pages(Cli::command(), &dir)
        .map_err(|e| CliError::Failed(format!("cannot write man pages to {}: {e}", dir.display())))?;
    let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    write_stdout(&format!("{}\n", names.join("\n"))).or_else(broken_pipe)
}

/// The reader (e.g. `head`) has what it wanted.
fn broken_pipe(e: io::Error) -> Result<(), CliError> {
    if e.kind() == io::ErrorKind::BrokenPipe { Ok(()) } else { Err(CliError::Output(e)) }
}

/// Awaits one request, bounded: a daemon that accepted the connection but
/// never answers must not hang a script forever.
async fn answer<T>(request: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>) -> Result<T, CliError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(response) => Ok(response?.into_inner()),
        Err(_) => Err(CliError::Failed(format!(
            "the daemon accepted the connection but did not answer within {}s; is fulcrumd stuck? (see its log)",
            REQUEST_TIMEOUT.as_secs()
        ))),
    }
}

async fn place(socket: &AdminTarget, out: &Output, a: PlaceArgs) -> Result<(), CliError> {
    let spread = match a.spread {
        SpreadArg::None => wire::Spread::None,
        SpreadArg::Providers => wire::Spread::Providers,
        SpreadArg::Countries => wire::Spread::Countries,
    };
    let request = wire::PlaceRequest {
        units: a.units,
        min_per_unit: Some(wire::Resources {
            vcpu: a.vcpu,
            memory_mib: a.memory_mib,
            storage_gib: a.storage_gib,
            gpus: a.gpus.into_iter().map(|(model, count)| wire::GpuCount { model, count }).collect(),
        }),
        countries: a.filters.countries,
        labels: a.filters.labels,
        attested_labels: a.filters.attested,
        max_unit_price: a.filters.max_unit_price,
        // 0 asks the provider to start now.
        start_ms: a.start.map_or(0, |s| s.resolve(time::now_ms())),
        duration_ms: a.duration,
        spread: spread as i32,
        min_sla_permille: a.min_sla,
        dry_run: a.dry_run,
    };
    let mut client = client::connect(socket).await?;
    // The daemon bounds each negotiation itself; this only catches a wedged daemon.
    let result = match tokio::time::timeout(PLACE_TIMEOUT, client.place(request)).await {
        Ok(result) => result?.into_inner(),
        Err(_) => {
            return Err(CliError::Failed(format!(
                "the daemon did not finish placing within {}s; contracts may still be made: check 'fulcrumctl contracts list'",
                PLACE_TIMEOUT.as_secs()
            )));
        }
    };
    let view = PlaceView::new(a.dry_run, result);
    // A dry run only reports, so it succeeds whenever the daemon answered.
    if view.contracts.is_empty() && !view.dry_run {
        // Scripts learn from the exit status that nothing was placed; --json
        // still gets the structured explanation on stdout.
        if out.json {
            out.show(&view, |_| String::new())?;
        }
        let why = one_line(&view.explanation);
        let why = if why.is_empty() { "no offer fits the request".to_owned() } else { why };
        return Err(CliError::Failed(format!("no contract was made: {why}")));
    }
    out.show(&view, render::place)
}

fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

/// Turns a unique prefix into the full id by asking for every contract.
async fn resolve(client: &mut Admin, id: ContractRef) -> Result<Vec<u8>, CliError> {
    let prefix = match id {
        ContractRef::Id(id) => return Ok(id),
        ContractRef::Prefix(prefix) => prefix,
    };
    let list = answer(client.list_contracts(wire::ListContractsRequest { active_only: false })).await?;
    let mut found = list.contracts.into_iter().map(|c| c.contract_id).filter(|id| hex::encode(id).starts_with(&prefix));
    match (found.next(), found.next()) {
        (Some(id), None) => Ok(id),
        (None, _) => {
            Err(CliError::Failed(format!("no contract id starts with {prefix}; see 'fulcrumctl contracts list'")))
        }
        (Some(_), Some(_)) => {
            Err(CliError::Failed(format!("{prefix} matches {} contracts; give more digits", 2 + found.count())))
        }
    }
}

async fn watch(socket: &AdminTarget, out: &Output) -> Result<(), CliError> {
    let mut stream = answer(client::connect(socket).await?.watch_contracts(wire::WatchContractsRequest {})).await?;
    while let Some(event) = stream.message().await? {
        let view = EventView::from(event);
        let line = if out.json { json_line(&view)? } else { render::event(&view) };
        match write_stdout(&line) {
            Ok(()) => {}
            // The reader (e.g. `head`) has what it wanted.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(CliError::Output(e)),
        }
    }
    Err(CliError::Failed("the daemon closed the event stream (is it shutting down?)".to_owned()))
}

/// Prints a view as JSON or through its human renderer.
#[derive(Debug)]
struct Output {
    json: bool,
}

impl Output {
    fn show<T: Serialize + ?Sized>(&self, view: &T, human: impl FnOnce(&T) -> String) -> Result<(), CliError> {
        let text = if self.json {
            let mut text = serde_json::to_string_pretty(view).map_err(|e| CliError::Output(e.into()))?;
            text.push('\n');
            text
        } else {
            human(view)
        };
        match write_stdout(&text) {
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(CliError::Output(e)),
            _ => Ok(()),
        }
    }
}

fn json_line<T: Serialize>(view: &T) -> Result<String, CliError> {
    let mut line = serde_json::to_string(view).map_err(|e| CliError::Output(e.into()))?;
    line.push('\n');
    Ok(line)
}

fn write_stdout(text: &str) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}
