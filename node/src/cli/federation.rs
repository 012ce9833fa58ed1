//! `fulcrumctl federation ...`: the charter and the offline authority
//! workflow. Every command here works on files alone and never contacts the
//! daemon: authorities keep their keys on machines that run no service, and
//! a request, its signatures and the result travel as files (formats in
//! [`crate::charter`]).
//!
//! ```text
//! federation authority-key --out a1.key                       (each authority, once)
//! federation init --name N --authority HEX... --threshold K --out federation.toml
//! federation member request --key node.key --organisation O --country DE ... --out request.toml
//! federation member sign --charter federation.toml --authority-key a1.key request.toml --out sig-a1.toml
//! federation member assemble --charter federation.toml request.toml sig-*.toml --out member.cert
//! federation revoke request|sign|assemble ...                 (the same flow for revocations)
//! federation show FILE | verify --charter federation.toml FILE...
//! ```

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use fulcrum_protocol::Limits;
use fulcrum_protocol::keys::{Identity, PublicKey};
use fulcrum_protocol::membership::{
    AuthoritySignature, CertificateBody, Charter, MemberCertificate, MembershipError, Revocation, RevocationBody,
};
use fulcrum_protocol::offer::Country;
use rand::Rng as _;
use serde::Serialize;

use super::time::{now_ms, parse_rfc3339_ms};
use super::{CliError, EXIT_FAILURE, EXIT_USAGE, Output, args};
use crate::admin::client::AdminTarget;
use crate::charter::{
    CertificateRequest, CharterError, FederationFile, RevocationRequest, SignatureFile, Signed, load_any,
    load_certificate, load_certificate_request, load_charter, load_revocation_request, load_signature,
    render_certificate, render_charter, render_revocation, revocation_signers, timestamp,
};
use crate::config::{KeyFileError, create_key, load_key};

/// Longest revocation reason, in bytes.
const MAX_REASON_BYTES: usize = 256;
/// Serials drawn at random stay below 2^53, exact in JSON and in TOML.
const MAX_RANDOM_SERIAL: u64 = (1 << 53) - 1;

/// `fulcrumctl federation ...`.
#[derive(Debug, Subcommand)]
pub enum FederationCommand {
    /// Create an authority's signing key file (mode 0600) and print its public key
    AuthorityKey {
        /// Key file to create (never overwritten)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Write a charter: federation name, authorities' public keys, threshold k
    Init(InitArgs),
    /// Member certificates: the member requests, k authorities sign, anyone assembles
    #[command(subcommand)]
    Member(MemberCommand),
    /// Revocations: anyone drafts, k authorities sign, anyone assembles
    #[command(subcommand)]
    Revoke(RevokeCommand),
    /// Show what a charter, request, signature, certificate, revocation or key file says
    Show {
        /// The file
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Check member certificates and revocations against a charter (exit 1 if one is not valid)
    Verify(VerifyArgs),
}

/// `federation member ...`.
#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Make a certificate request for a member node (run by the member)
    Request(MemberRequestArgs),
    /// Sign a certificate request as one authority, offline, with its key file
    Sign(SignArgs),
    /// Combine the signatures of k authorities into a member certificate
    Assemble(AssembleArgs),
}

/// `federation revoke ...`.
#[derive(Debug, Subcommand)]
pub enum RevokeCommand {
    /// Draft a revocation of a member for the authorities to sign
    Request(RevokeRequestArgs),
    /// Sign a revocation request as one authority, offline, with its key file
    Sign(SignArgs),
    /// Combine the signatures of k authorities into a revocation
    Assemble(AssembleArgs),
    /// Hand an assembled revocation to the running node, which checks it
    /// against the charter, applies it, logs it and gossips it
    Publish {
        /// The revocation file written by 'revoke assemble'
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// Where a command writes its result.
#[derive(Debug, Args)]
pub struct OutArgs {
    /// File to write
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace FILE if it exists
    #[arg(long)]
    pub force: bool,
}

/// `federation init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Federation name (1 to 128 printable characters, no spaces); the same as in every node.toml
    #[arg(long, value_name = "NAME", value_parser = federation_name)]
    pub name: String,
    /// An admission authority: its public key (64 hex digits) or its key file (repeatable)
    #[arg(long = "authority", value_name = "HEX|KEYFILE", value_parser = key_source)]
    pub authorities: Vec<KeySource>,
    /// Signatures of distinct authorities needed to admit or revoke (0: open federation, for development)
    #[arg(long, value_name = "K")]
    pub threshold: usize,
    #[command(flatten)]
    pub out: OutArgs,
}

/// The federation a request is for: by name or from its charter.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct FederationArgs {
    /// Federation name
    #[arg(long, value_name = "NAME", value_parser = federation_name)]
    pub federation: Option<String>,
    /// Take the federation name from this charter
    #[arg(long, value_name = "FILE")]
    pub charter: Option<PathBuf>,
}

impl FederationArgs {
    fn name(&self) -> Result<String, FederationError> {
        match (&self.federation, &self.charter) {
            (Some(name), _) => Ok(name.clone()),
            (None, Some(path)) => Ok(load_charter(path)?.name),
            (None, None) => Err(FederationError::Input("give --federation NAME or --charter FILE".into())),
        }
    }
}

/// How long a certificate is valid.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ValidityArgs {
    /// Valid this long from --not-before, e.g. 365d, 720h
    #[arg(long, value_name = "DURATION", value_parser = args::duration)]
    pub valid_for: Option<u64>,
    /// Valid until this time (RFC 3339), e.g. 2026-12-31T23:59:59Z
    #[arg(long, value_name = "RFC3339", value_parser = rfc3339)]
    pub not_after: Option<u64>,
}

/// `federation member request`.
#[derive(Debug, Args)]
pub struct MemberRequestArgs {
    /// The member's node key: its public key (64 hex digits, as 'fulcrumd init' prints it) or its key file
    #[arg(long, value_name = "HEX|KEYFILE", value_parser = key_source)]
    pub key: KeySource,
    /// Organisation that runs the node, as the authorities will check it
    #[arg(long, value_name = "ORG", value_parser = organisation)]
    pub organisation: String,
    /// Country of the organisation (ISO 3166-1 alpha-2)
    #[arg(long, value_name = "CC", value_parser = args::country)]
    pub country: String,
    /// A label for the authorities to vouch for (repeatable), e.g. gaia-x:level-2
    #[arg(long = "label", value_name = "L", value_parser = args::label)]
    pub labels: Vec<String>,
    #[command(flatten)]
    pub validity: ValidityArgs,
    /// Start of validity (RFC 3339) [default: now]
    #[arg(long, value_name = "RFC3339", value_parser = rfc3339)]
    pub not_before: Option<u64>,
    /// Serial number [default: random]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(..=i64::MAX as u64))]
    pub serial: Option<u64>,
    #[command(flatten)]
    pub federation: FederationArgs,
    #[command(flatten)]
    pub out: OutArgs,
}

/// `federation revoke request`.
#[derive(Debug, Args)]
pub struct RevokeRequestArgs {
    /// The member to revoke: its public key (64 hex digits), its certificate file, or its key file
    #[arg(long, value_name = "HEX|FILE", value_parser = key_source)]
    pub member: KeySource,
    /// Why, for the record, e.g. "left the federation"
    #[arg(long, value_name = "TEXT", value_parser = reason)]
    pub reason: String,
    /// When the revocation takes effect (RFC 3339): from then on nodes drop the member's offers, refuse its
    /// proposals and disconnect it; contracts it made before stay. A time in the past takes effect as soon
    /// as a node learns the revocation [default: now]
    #[arg(long, value_name = "RFC3339", value_parser = rfc3339)]
    pub revoked_at: Option<u64>,
    #[command(flatten)]
    pub federation: FederationArgs,
    #[command(flatten)]
    pub out: OutArgs,
}

/// `federation member sign` and `federation revoke sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The federation's charter
    #[arg(long, value_name = "FILE")]
    pub charter: PathBuf,
    /// This authority's key file (mode 0600)
    #[arg(long, value_name = "KEYFILE")]
    pub authority_key: PathBuf,
    /// The request to sign
    #[arg(value_name = "REQUEST")]
    pub request: PathBuf,
    #[command(flatten)]
    pub out: OutArgs,
}

/// `federation member assemble` and `federation revoke assemble`.
#[derive(Debug, Args)]
pub struct AssembleArgs {
    /// The federation's charter
    #[arg(long, value_name = "FILE")]
    pub charter: PathBuf,
    /// The request the authorities signed
    #[arg(value_name = "REQUEST")]
    pub request: PathBuf,
    /// The authorities' signature files
    #[arg(value_name = "SIGNATURE", required = true)]
    pub signatures: Vec<PathBuf>,
    #[command(flatten)]
    pub out: OutArgs,
}

/// `federation verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The federation's charter
    #[arg(long, value_name = "FILE")]
    pub charter: PathBuf,
    /// Member certificates and revocations
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Check certificates' validity at this time (RFC 3339) [default: now]
    #[arg(long, value_name = "RFC3339", value_parser = rfc3339)]
    pub at: Option<u64>,
}

/// A key named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// 64 hex digits.
    Hex(PublicKey),
    /// A key file (or, for `revoke request --member`, a certificate file).
    File(PathBuf),
}

/// Why a federation command failed. Displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// A bad argument, or input files that cannot give what was asked.
    #[error("{0}")]
    Input(String),
    /// A charter or workflow file was refused.
    #[error(transparent)]
    File(#[from] CharterError),
    /// The inputs were fine, but the check or the write failed.
    #[error("{0}")]
    Failed(String),
}

impl FederationError {
    /// 2 for bad input, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            FederationError::Failed(_) => EXIT_FAILURE,
            FederationError::Input(_) | FederationError::File(_) => EXIT_USAGE,
        }
    }
}

// ---------------------------------------------------------------------------
// Value parsers (a bad value is a usage error named after its flag)
// ---------------------------------------------------------------------------

fn federation_name(s: &str) -> Result<String, String> {
    match (Charter { name: s.to_owned(), authorities: Vec::new(), threshold: 0 }).validate() {
        Ok(()) => Ok(s.to_owned()),
        Err(MembershipError::BadCharter(reason)) => Err(reason),
        Err(e) => Err(e.to_string()),
    }
}

fn key_source(s: &str) -> Result<KeySource, String> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return PublicKey::from_hex(s)
            .map(KeySource::Hex)
            .map_err(|e| format!("{s} is not a usable Ed25519 public key ({e})"));
    }
    if s.is_empty() {
        return Err("give a public key (64 hex digits) or the path of a file".into());
    }
    Ok(KeySource::File(PathBuf::from(s)))
}

fn organisation(s: &str) -> Result<String, String> {
    let max = Limits::default().max_text_len * 2;
    if s.trim().is_empty() {
        return Err("the organisation cannot be empty".into());
    }
    if s.trim() != s || s.chars().any(char::is_control) {
        return Err(format!("{s:?} has leading or trailing spaces or control characters"));
    }
    if s.len() > max {
        return Err(format!("{} bytes, at most {max}", s.len()));
    }
    Ok(s.to_owned())
}

fn reason(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("give a reason, e.g. \"left the federation\"".into());
    }
    if s.chars().any(char::is_control) {
        return Err("the reason must be one line without control characters".into());
    }
    if s.len() > MAX_REASON_BYTES {
        return Err(format!("{} bytes, at most {MAX_REASON_BYTES}", s.len()));
    }
    Ok(s.trim().to_owned())
}

fn rfc3339(s: &str) -> Result<u64, String> {
    parse_rfc3339_ms(s).ok_or_else(|| format!("{s:?} is not an RFC 3339 time such as 2026-12-31T23:59:59Z"))
}

// ---------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------

/// `revoke publish`: the one federation command that talks to the daemon.
async fn publish_revocation(socket: &AdminTarget, out: &Output, file: &Path) -> Result<(), CliError> {
    use prost::Message as _;
    let revocation = crate::charter::load_revocation(file).map_err(|e| CliError::BadInput(e.to_string()))?;
    let wire_revocation = fulcrum_proto::v1::Revocation::decode(revocation.encode().as_slice())
        .map_err(|e| CliError::BadInput(format!("{}: {e}", file.display())))?;
    let request = fulcrum_proto::v1::PublishRevocationRequest { revocation: Some(wire_revocation) };
    let result = super::answer(crate::admin::client::connect(socket).await?.publish_revocation(request)).await?;
    #[derive(Serialize)]
    struct Published {
        member: String,
        new: bool,
    }
    let view = Published { member: hex::encode(&result.member), new: result.new };
    out.show(&view, |v| {
        if v.new {
            format!("revoked member {}: applied, logged and gossiped to the federation\n", v.member)
        } else {
            format!("member {} was already revoked on this node\n", v.member)
        }
    })
}

/// Runs one federation command. Only `revoke publish` contacts the daemon.
pub(super) async fn run(command: FederationCommand, socket: &AdminTarget, out: &Output) -> Result<(), CliError> {
    let report = match command {
        FederationCommand::Revoke(RevokeCommand::Publish { file }) => {
            return publish_revocation(socket, out, &file).await;
        }
        FederationCommand::AuthorityKey { out: path } => authority_key(&path)?,
        FederationCommand::Init(a) => init(&a)?,
        FederationCommand::Member(MemberCommand::Request(a)) => member_request(&a)?,
        FederationCommand::Member(MemberCommand::Sign(a)) => sign(&a, Signed::Certificate)?,
        FederationCommand::Member(MemberCommand::Assemble(a)) => assemble(&a, Signed::Certificate)?,
        FederationCommand::Revoke(RevokeCommand::Request(a)) => revoke_request(&a)?,
        FederationCommand::Revoke(RevokeCommand::Sign(a)) => sign(&a, Signed::Revocation)?,
        FederationCommand::Revoke(RevokeCommand::Assemble(a)) => assemble(&a, Signed::Revocation)?,
        FederationCommand::Show { file } => {
            let view = show(&file)?;
            let human = render_view(&view);
            return out.show(&view, |_| human);
        }
        FederationCommand::Verify(a) => {
            let (views, human) = verify(&a)?;
            return out.show(&views, |_| human);
        }
    };
    let Report { wrote, human } = report;
    out.show(&wrote, |_| human)
}

/// What a command that writes a file reports: `wrote` for `--json`, `human` otherwise.
struct Report {
    wrote: Wrote,
    human: String,
}

/// `--json` of the commands that write a file.
#[derive(Debug, Serialize)]
struct Wrote {
    /// The file written.
    wrote: String,
    /// What it says.
    file: FileView,
    /// Anything worth knowing (ignored duplicates).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    notes: Vec<String>,
}

fn authority_key(path: &Path) -> Result<Report, FederationError> {
    let identity = Identity::generate(&mut rand::rngs::OsRng);
    create_key(path, &identity).map_err(|e| match e {
        KeyFileError::Exists(p) => FederationError::Input(format!(
            "{} already exists; refusing to overwrite a key (choose another --out)",
            p.display()
        )),
        other => FederationError::Failed(other.to_string()),
    })?;
    let public_key = identity.public().to_string();
    let human = format!(
        "created authority key {file} (mode 0600; keep it offline)\npublic key  {public_key}\n\
         Give the public key to whoever writes the charter:\n  \
         fulcrumctl federation init --name NAME --authority {public_key} ... --threshold K --out federation.toml\n",
        file = path.display()
    );
    let file = FileView::KeyFile { file: path.display().to_string(), public_key };
    Ok(Report { wrote: Wrote { wrote: path.display().to_string(), file, notes: Vec::new() }, human })
}

fn init(a: &InitArgs) -> Result<Report, FederationError> {
    let mut keys: Vec<PublicKey> = Vec::new();
    let mut notes = Vec::new();
    for (i, source) in a.authorities.iter().enumerate() {
        let (key, note) = resolve_key(source, "authority")?;
        if let Some(j) = keys.iter().position(|k| *k == key) {
            return Err(FederationError::Input(format!(
                "--authority number {} is the same key as number {} ({key}); list each authority once",
                i + 1,
                j + 1
            )));
        }
        keys.push(key);
        notes.push(note);
    }
    if a.threshold > keys.len() {
        return Err(FederationError::Input(format!(
            "--threshold {} is more than the {} authorities given; k must be at most the number of --authority keys (0 makes an open federation)",
            a.threshold,
            keys.len()
        )));
    }
    let charter = Charter { name: a.name.clone(), authorities: keys, threshold: a.threshold };
    charter.validate().map_err(|e| FederationError::Input(e.to_string()))?;
    write_file(&a.out, &render_charter(&charter, &notes))?;
    let what = if charter.is_open() {
        "an open federation (threshold 0): any node may take part; for development only".to_owned()
    } else {
        format!("{} of {} authorities sign each admission and revocation", charter.threshold, charter.authorities.len())
    };
    let view = charter_view(&charter);
    let human = format!(
        "wrote {}: charter of federation {:?}, {what}\n{}",
        a.out.out.display(),
        charter.name,
        render_view(&view)
    );
    Ok(Report { wrote: Wrote { wrote: a.out.out.display().to_string(), file: view, notes: Vec::new() }, human })
}

fn member_request(a: &MemberRequestArgs) -> Result<Report, FederationError> {
    let (member, _) = resolve_key(&a.key, "member")?;
    let federation = a.federation.name()?;
    let now = now_ms();
    let not_before = a.not_before.unwrap_or(now - now % 1000);
    let not_after = match (a.validity.valid_for, a.validity.not_after) {
        (Some(span), _) => {
            not_before.checked_add(span).ok_or_else(|| FederationError::Input("--valid-for is too long".into()))?
        }
        (None, Some(at)) => at,
        (None, None) => return Err(FederationError::Input("give --valid-for DURATION or --not-after RFC3339".into())),
    };
    if not_after <= not_before {
        return Err(FederationError::Input(format!(
            "--not-after {} is not after the start of validity {}",
            timestamp(not_after),
            timestamp(not_before)
        )));
    }
    if not_after <= now {
        return Err(FederationError::Input(format!(
            "the certificate would have expired already ({}); give a later --not-after",
            timestamp(not_after)
        )));
    }
    let limits = Limits::default();
    let labels: BTreeSet<String> = a.labels.iter().cloned().collect();
    if labels.len() > limits.max_labels {
        return Err(FederationError::Input(format!("{} labels, at most {}", labels.len(), limits.max_labels)));
    }
    if let Some(long) = labels.iter().find(|l| l.len() > limits.max_text_len) {
        return Err(FederationError::Input(format!(
            "--label {long}: {} bytes, at most {}",
            long.len(),
            limits.max_text_len
        )));
    }
    let country = Country::parse(&a.country)
        .ok_or_else(|| FederationError::Input(format!("--country {}: not an ISO 3166-1 code", a.country)))?;
    let body = CertificateBody {
        federation,
        member,
        organisation: a.organisation.clone(),
        country,
        labels,
        not_before_ms: not_before,
        not_after_ms: not_after,
        serial: a.serial.unwrap_or_else(|| rand::thread_rng().gen_range(1..=MAX_RANDOM_SERIAL)),
    };
    let request = CertificateRequest::new(&body)
        .map_err(|e| FederationError::Input(format!("the protocol would refuse this request: {e}")))?;
    write_file(&a.out, &request.to_toml())?;
    let view = request_view(&Request::Certificate(request));
    let out = a.out.out.display();
    let human = format!(
        "wrote {out}: member certificate request\n{}\
         Send it to the federation's authorities; each checks it and signs with\n  \
         fulcrumctl federation member sign --charter federation.toml --authority-key KEY {out} --out sig-NAME.toml\n",
        render_view(&view)
    );
    Ok(Report { wrote: Wrote { wrote: out.to_string(), file: view, notes: Vec::new() }, human })
}

fn revoke_request(a: &RevokeRequestArgs) -> Result<Report, FederationError> {
    let federation = a.federation.name()?;
    let member = match &a.member {
        KeySource::Hex(key) => *key,
        KeySource::File(path) => member_from_file(path, &federation)?,
    };
    let now = now_ms();
    let body = RevocationBody {
        federation,
        member,
        revoked_at_ms: a.revoked_at.unwrap_or(now - now % 1000),
        reason: a.reason.clone(),
    };
    let request = RevocationRequest::new(&body)
        .map_err(|e| FederationError::Input(format!("the protocol would refuse this revocation: {e}")))?;
    write_file(&a.out, &request.to_toml())?;
    let view = request_view(&Request::Revocation(request));
    let out = a.out.out.display();
    let human = format!(
        "wrote {out}: revocation request\n{}\
         Send it to the federation's authorities; each checks it and signs with\n  \
         fulcrumctl federation revoke sign --charter federation.toml --authority-key KEY {out} --out revoke-sig-NAME.toml\n",
        render_view(&view)
    );
    Ok(Report { wrote: Wrote { wrote: out.to_string(), file: view, notes: Vec::new() }, human })
}

/// A certificate file names its member; a key file is the member's own key.
fn member_from_file(path: &Path, federation: &str) -> Result<PublicKey, FederationError> {
    if looks_like_key_file(path) {
        return resolve_key(&KeySource::File(path.to_owned()), "member").map(|(k, _)| k);
    }
    if !path.exists() {
        return Err(missing_key(path, "member"));
    }
    let cert = load_certificate(path)?;
    if cert.body().federation != federation {
        return Err(FederationError::Input(format!(
            "{} is a certificate of federation {:?}, not {federation:?}",
            path.display(),
            cert.body().federation
        )));
    }
    Ok(cert.body().member)
}

/// A request of either kind.
enum Request {
    Certificate(CertificateRequest),
    Revocation(RevocationRequest),
}

impl Request {
    fn load(path: &Path, signed: Signed) -> Result<Request, FederationError> {
        Ok(match signed {
            Signed::Certificate => Request::Certificate(load_certificate_request(path)?),
            Signed::Revocation => Request::Revocation(load_revocation_request(path)?),
        })
    }

    fn signed(&self) -> Signed {
        match self {
            Request::Certificate(_) => Signed::Certificate,
            Request::Revocation(_) => Signed::Revocation,
        }
    }

    fn body_bytes(&self) -> &[u8] {
        match self {
            Request::Certificate(r) => r.body_bytes(),
            Request::Revocation(r) => r.body_bytes(),
        }
    }

    fn digest(&self) -> [u8; 32] {
        match self {
            Request::Certificate(r) => r.digest(),
            Request::Revocation(r) => r.digest(),
        }
    }

    fn federation(&self) -> &str {
        match self {
            Request::Certificate(r) => &r.body().federation,
            Request::Revocation(r) => &r.body().federation,
        }
    }

    fn member(&self) -> PublicKey {
        match self {
            Request::Certificate(r) => r.body().member,
            Request::Revocation(r) => r.body().member,
        }
    }

    fn what(&self) -> &'static str {
        match self {
            Request::Certificate(_) => "member certificate request",
            Request::Revocation(_) => "revocation request",
        }
    }
}

/// Loads the charter and a request for it, refusing a request for another federation.
fn charter_and_request(
    charter_path: &Path,
    request_path: &Path,
    signed: Signed,
) -> Result<(Charter, Request), FederationError> {
    let charter = load_charter(charter_path)?;
    let request = Request::load(request_path, signed)?;
    if request.federation() != charter.name {
        return Err(FederationError::Input(format!(
            "{} is a {} for federation {:?}, but {} is the charter of {:?}",
            request_path.display(),
            request.what(),
            request.federation(),
            charter_path.display(),
            charter.name
        )));
    }
    Ok((charter, request))
}

fn sign(a: &SignArgs, signed: Signed) -> Result<Report, FederationError> {
    let (charter, request) = charter_and_request(&a.charter, &a.request, signed)?;
    let identity = load_key(&a.authority_key).map_err(|e| signing_key_error(&a.authority_key, e))?;
    let me = identity.public();
    let Some(index) = charter.authorities.iter().position(|k| *k == me) else {
        return Err(FederationError::Input(format!(
            "{} is not an authority key of federation {:?}: its public key {me} is not among the {} authorities in {}",
            a.authority_key.display(),
            charter.name,
            charter.authorities.len(),
            a.charter.display()
        )));
    };
    if let Request::Certificate(r) = &request {
        let not_after = r.body().not_after_ms;
        if now_ms() >= not_after {
            return Err(FederationError::Input(format!(
                "{} expired at {}; ask the member for a new request",
                a.request.display(),
                timestamp(not_after)
            )));
        }
    }
    let (authority, signature) = match signed {
        Signed::Certificate => MemberCertificate::sign_request(&identity, request.body_bytes()),
        Signed::Revocation => Revocation::sign_body(&identity, request.body_bytes()),
    };
    let sig = SignatureFile {
        signed,
        federation: request.federation().to_owned(),
        member: request.member(),
        request_sha256: request.digest(),
        authority,
        signature,
    };
    write_file(&a.out, &sig.to_toml())?;
    let out = a.out.out.display();
    let human = format!(
        "signed {}, a {} for federation {:?}:\n{}as authority {} of {} ({me}); {} needed in all\nwrote {out}\n",
        a.request.display(),
        request.what(),
        charter.name,
        indent(&render_view(&request_view(&request))),
        index + 1,
        charter.authorities.len(),
        count_signatures(charter.threshold.max(1)),
    );
    Ok(Report { wrote: Wrote { wrote: out.to_string(), file: signature_view(&sig), notes: Vec::new() }, human })
}

fn assemble(a: &AssembleArgs, signed: Signed) -> Result<Report, FederationError> {
    let (charter, request) = charter_and_request(&a.charter, &a.request, signed)?;
    if charter.authorities.is_empty() {
        return Err(FederationError::Input(format!(
            "federation {:?} ({}) has no authorities: it is open (threshold 0) and needs no certificates or revocations",
            charter.name,
            a.charter.display()
        )));
    }
    let (signatures, notes) = collect_signatures(&charter, a, &request)?;
    let needed = charter.threshold.max(1);
    if signatures.len() < needed {
        let have = signatures.len();
        return Err(FederationError::Input(format!(
            "only {have} valid authority signature{} for {}; federation {:?} has threshold {needed} (of {} authorities): get {} more from other authorities",
            if have == 1 { "" } else { "s" },
            a.request.display(),
            charter.name,
            charter.authorities.len(),
            count_signatures(needed - have)
        )));
    }
    let count = signatures.len();
    let bytes = request.body_bytes().to_vec();
    let (text, view) = match &request {
        Request::Certificate(r) => {
            let cert = MemberCertificate::assemble(bytes, signatures, &Limits::default())
                .map_err(|e| FederationError::Failed(format!("cannot assemble the certificate: {e}")))?;
            let body = cert.body();
            if now_ms() >= body.not_after_ms {
                return Err(FederationError::Input(format!(
                    "{} expired at {}; ask the member for a new request",
                    a.request.display(),
                    timestamp(body.not_after_ms)
                )));
            }
            // Checked at the start of validity, so a certificate for later assembles too.
            cert.verify(&charter, body.not_before_ms).map_err(|e| {
                FederationError::Failed(format!("the assembled certificate does not verify: {}", membership_reason(&e)))
            })?;
            debug_assert_eq!(r.body(), cert.body());
            (render_certificate(&cert), certificate_view(&cert))
        }
        Request::Revocation(_) => {
            let revocation = Revocation::assemble(bytes, signatures)
                .map_err(|e| FederationError::Failed(format!("cannot assemble the revocation: {e}")))?;
            revocation.verify(&charter).map_err(|e| {
                FederationError::Failed(format!("the assembled revocation does not verify: {}", membership_reason(&e)))
            })?;
            (render_revocation(&revocation), revocation_view(&revocation))
        }
    };
    write_file(&a.out, &text)?;
    let out = a.out.out.display();
    let mut human = format!(
        "wrote {out}: {} signed by {count} of the {} authorities of federation {:?} (threshold {needed})\n{}",
        match signed {
            Signed::Certificate => "member certificate",
            Signed::Revocation => "revocation",
        },
        charter.authorities.len(),
        charter.name,
        render_view(&view)
    );
    for note in &notes {
        let _ = writeln!(human, "note: {note}");
    }
    Ok(Report { wrote: Wrote { wrote: out.to_string(), file: view, notes }, human })
}

/// Every signature file must be a valid signature by a charter authority over
/// this very request; a second one by the same authority counts once.
/// Returns the signatures in charter order, and notes on duplicates.
fn collect_signatures(
    charter: &Charter,
    a: &AssembleArgs,
    request: &Request,
) -> Result<(Vec<AuthoritySignature>, Vec<String>), FederationError> {
    let request_name = a.request.display();
    let mut found: Vec<(usize, AuthoritySignature, &Path)> = Vec::new();
    let mut notes = Vec::new();
    for path in &a.signatures {
        let sig = load_signature(path, request.signed())?;
        let file = path.display();
        if sig.request_sha256 != request.digest() {
            return Err(FederationError::Input(format!(
                "{file} signs another request (sha256 {}) than {request_name} (sha256 {}); every signature must be over the same request file",
                hex::encode(sig.request_sha256),
                hex::encode(request.digest())
            )));
        }
        if sig.federation != request.federation() || sig.member != request.member() {
            return Err(FederationError::Input(format!(
                "{file} names federation {:?} and member {}, but its request is for {:?} and {}; the file was edited",
                sig.federation,
                sig.member,
                request.federation(),
                request.member()
            )));
        }
        let Some(index) = charter.authorities.iter().position(|k| *k == sig.authority) else {
            return Err(FederationError::Input(format!(
                "{file} is signed by {}, which is not an authority of federation {:?} ({} lists {})",
                sig.authority,
                charter.name,
                a.charter.display(),
                charter.authorities.len()
            )));
        };
        if !sig.verifies(request.body_bytes()) {
            return Err(FederationError::Input(format!(
                "{file}: the signature of authority {} does not verify over {request_name}; the file was altered or damaged (ask that authority to sign again)",
                sig.authority
            )));
        }
        if let Some((_, _, first)) = found.iter().find(|(i, ..)| *i == index) {
            notes.push(format!(
                "{file} is a second signature by authority {} (also {}); counted once",
                sig.authority,
                first.display()
            ));
            continue;
        }
        found.push((index, (sig.authority, sig.signature), path));
    }
    found.sort_by_key(|(i, ..)| *i);
    Ok((found.into_iter().map(|(_, s, _)| s).collect(), notes))
}

fn show(path: &Path) -> Result<FileView, FederationError> {
    if looks_like_key_file(path) {
        let (key, _) = resolve_key(&KeySource::File(path.to_owned()), "key")?;
        return Ok(FileView::KeyFile { file: path.display().to_string(), public_key: key.to_string() });
    }
    Ok(match load_any(path)? {
        FederationFile::Charter(c) => charter_view(&c),
        FederationFile::CertificateRequest(r) => request_view(&Request::Certificate(r)),
        FederationFile::RevocationRequest(r) => request_view(&Request::Revocation(r)),
        FederationFile::Signature(s) => signature_view(&s),
        FederationFile::Certificate(c) => certificate_view(&c),
        FederationFile::Revocation(r) => revocation_view(&r),
    })
}

/// One line per file checked, for `--json`.
#[derive(Debug, Serialize)]
struct Verified {
    file: String,
    valid: bool,
    #[serde(flatten)]
    view: FileView,
}

fn verify(a: &VerifyArgs) -> Result<(Vec<Verified>, String), FederationError> {
    let charter = load_charter(&a.charter)?;
    let at = a.at.unwrap_or_else(now_ms);
    let mut views = Vec::new();
    let mut human = String::new();
    // Certificates and revocations checked together: a revoked member's
    // certificate is not valid, whatever its signatures.
    let mut certified: Vec<(String, PublicKey)> = Vec::new();
    let mut revoked: Vec<(String, PublicKey)> = Vec::new();
    for path in &a.files {
        let file = path.display().to_string();
        let not_valid = |what: &str, e: &MembershipError| {
            FederationError::Failed(format!(
                "{file}: not a valid {what} of federation {:?}: {}",
                charter.name,
                membership_reason(e)
            ))
        };
        let view = match load_any(path)? {
            FederationFile::Certificate(cert) => {
                cert.verify(&charter, at).map_err(|e| not_valid("member certificate", &e))?;
                let b = cert.body();
                let _ = writeln!(
                    human,
                    "{file}: valid member certificate for {} ({}, {}), until {}",
                    b.member,
                    b.organisation,
                    b.country,
                    timestamp(b.not_after_ms)
                );
                certified.push((file.clone(), b.member));
                certificate_view(&cert)
            }
            FederationFile::Revocation(revocation) => {
                revocation.verify(&charter).map_err(|e| not_valid("revocation", &e))?;
                let b = revocation.body();
                let _ = writeln!(human, "{file}: valid revocation of {} from {}", b.member, timestamp(b.revoked_at_ms));
                revoked.push((file.clone(), b.member));
                revocation_view(&revocation)
            }
            _ => {
                return Err(FederationError::Input(format!(
                    "{file} is neither a member certificate nor a revocation; see 'fulcrumctl federation show {file}'"
                )));
            }
        };
        views.push(Verified { file, valid: true, view });
    }
    for (cert_file, member) in &certified {
        if let Some((revocation_file, _)) = revoked.iter().find(|(_, m)| m == member) {
            return Err(FederationError::Failed(format!(
                "{cert_file}: member {member} is revoked by {revocation_file}; its certificate is no longer valid"
            )));
        }
    }
    Ok((views, human))
}

fn count_signatures(n: usize) -> String {
    if n == 1 { "1 signature".to_owned() } else { format!("{n} signatures") }
}

/// Membership errors with times people can read.
fn membership_reason(e: &MembershipError) -> String {
    match e {
        MembershipError::NotYetValid { not_before_ms, .. } => format!("valid only from {}", timestamp(*not_before_ms)),
        MembershipError::Expired { not_after_ms, .. } => format!("expired at {}", timestamp(*not_after_ms)),
        MembershipError::NotEnoughSignatures { valid, threshold } => {
            format!("{valid} valid signatures of the charter's authorities, {threshold} needed")
        }
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Keys and files
// ---------------------------------------------------------------------------

/// A public key, and the key file it came from (for the charter's comments).
fn resolve_key(source: &KeySource, role: &str) -> Result<(PublicKey, String), FederationError> {
    match source {
        KeySource::Hex(key) => Ok((*key, String::new())),
        KeySource::File(path) => load_key(path)
            .map(|identity| (identity.public(), path.display().to_string()))
            .map_err(|e| key_file_error(path, e, role)),
    }
}

fn missing_key(path: &Path, role: &str) -> FederationError {
    let s = path.display().to_string();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return FederationError::Input(format!(
            "{s} has {} hex digits; a public key has 64 (or give the path of the {role}'s key file)",
            s.len()
        ));
    }
    FederationError::Input(format!(
        "no file {s}; give the {role}'s public key (64 hex digits) or the path of its key file"
    ))
}

/// The key an authority signs with must be its key file.
fn signing_key_error(path: &Path, e: KeyFileError) -> FederationError {
    match e {
        KeyFileError::Missing(_) => FederationError::Input(format!(
            "no key file {}; give this authority's key file (made by 'fulcrumctl federation authority-key')",
            path.display()
        )),
        KeyFileError::Malformed(_) => FederationError::Input(format!(
            "{} is not a key file (64 hex digits of a secret key, made by 'fulcrumctl federation authority-key')",
            path.display()
        )),
        other => FederationError::Input(other.to_string()),
    }
}

fn key_file_error(path: &Path, e: KeyFileError, role: &str) -> FederationError {
    match e {
        KeyFileError::Missing(_) => missing_key(path, role),
        KeyFileError::Malformed(_) => FederationError::Input(format!(
            "{} is not a key file (64 hex digits of a secret key); give the {role}'s public key (64 hex digits) or its key file",
            path.display()
        )),
        other => FederationError::Input(other.to_string()),
    }
}

/// Key files are one line of 64 hex digits; the other files are TOML.
fn looks_like_key_file(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else { return false };
    if !meta.is_file() || meta.len() > 256 {
        return false;
    }
    std::fs::read_to_string(path).is_ok_and(|t| {
        let t = t.trim();
        t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// Writes `text` to `--out`: a new file, or with `--force` a replacement
/// swapped in whole (never a half-written file in its place).
fn write_file(out: &OutArgs, text: &str) -> Result<(), FederationError> {
    let path = &out.out;
    let failed = |e: std::io::Error| FederationError::Failed(format!("cannot write {}: {e}", path.display()));
    if !out.force {
        let mut file = match OpenOptions::new().write(true).create_new(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(FederationError::Input(format!(
                    "{} already exists; choose another --out, or add --force to replace it",
                    path.display()
                )));
            }
            Err(e) => return Err(failed(e)),
        };
        if let Err(e) = file.write_all(text.as_bytes()).and_then(|()| file.sync_all()) {
            let _ = std::fs::remove_file(path);
            return Err(failed(e));
        }
        return Ok(());
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(failed(e));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Views
// ---------------------------------------------------------------------------

/// What a federation file says, for `show` and `--json`.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum FileView {
    KeyFile {
        file: String,
        public_key: String,
    },
    Charter {
        name: String,
        threshold: usize,
        authorities: Vec<String>,
        open: bool,
    },
    MemberCertificateRequest {
        #[serde(flatten)]
        certificate: CertificateView,
        request_sha256: String,
    },
    MemberCertificateSignature(SignatureView),
    MemberCertificate {
        #[serde(flatten)]
        certificate: CertificateView,
        signed_by: Vec<String>,
    },
    RevocationRequest {
        #[serde(flatten)]
        revocation: RevocationView,
        request_sha256: String,
    },
    RevocationSignature(SignatureView),
    Revocation {
        #[serde(flatten)]
        revocation: RevocationView,
        signed_by: Vec<String>,
    },
}

#[derive(Debug, Serialize)]
struct CertificateView {
    federation: String,
    member: String,
    organisation: String,
    country: String,
    labels: Vec<String>,
    not_before: String,
    not_after: String,
    serial: u64,
}

impl From<&CertificateBody> for CertificateView {
    fn from(b: &CertificateBody) -> Self {
        CertificateView {
            federation: b.federation.clone(),
            member: b.member.to_string(),
            organisation: b.organisation.clone(),
            country: b.country.as_str().to_owned(),
            labels: b.labels.iter().cloned().collect(),
            not_before: timestamp(b.not_before_ms),
            not_after: timestamp(b.not_after_ms),
            serial: b.serial,
        }
    }
}

#[derive(Debug, Serialize)]
struct RevocationView {
    federation: String,
    member: String,
    revoked_at: String,
    reason: String,
}

impl From<&RevocationBody> for RevocationView {
    fn from(b: &RevocationBody) -> Self {
        RevocationView {
            federation: b.federation.clone(),
            member: b.member.to_string(),
            revoked_at: timestamp(b.revoked_at_ms),
            reason: b.reason.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
struct SignatureView {
    federation: String,
    member: String,
    request_sha256: String,
    authority: String,
    signature: String,
}

fn charter_view(c: &Charter) -> FileView {
    FileView::Charter {
        name: c.name.clone(),
        threshold: c.threshold,
        authorities: c.authorities.iter().map(ToString::to_string).collect(),
        open: c.is_open(),
    }
}

fn request_view(r: &Request) -> FileView {
    let request_sha256 = hex::encode(r.digest());
    match r {
        Request::Certificate(r) => FileView::MemberCertificateRequest { certificate: r.body().into(), request_sha256 },
        Request::Revocation(r) => FileView::RevocationRequest { revocation: r.body().into(), request_sha256 },
    }
}

fn signature_view(s: &SignatureFile) -> FileView {
    let view = SignatureView {
        federation: s.federation.clone(),
        member: s.member.to_string(),
        request_sha256: hex::encode(s.request_sha256),
        authority: s.authority.to_string(),
        signature: hex::encode(s.signature),
    };
    match s.signed {
        Signed::Certificate => FileView::MemberCertificateSignature(view),
        Signed::Revocation => FileView::RevocationSignature(view),
    }
}

fn certificate_view(c: &MemberCertificate) -> FileView {
    FileView::MemberCertificate {
        certificate: c.body().into(),
        signed_by: c.signatures().iter().map(|(k, _)| k.to_string()).collect(),
    }
}

fn revocation_view(r: &Revocation) -> FileView {
    FileView::Revocation {
        revocation: r.body().into(),
        signed_by: revocation_signers(r).iter().map(ToString::to_string).collect(),
    }
}

/// Human layout of a view: a title line, then aligned `key  value` lines.
fn render_view(view: &FileView) -> String {
    let cert_pairs = |c: &CertificateView| -> Vec<(&'static str, String)> {
        vec![
            ("federation", c.federation.clone()),
            ("member", c.member.clone()),
            ("organisation", c.organisation.clone()),
            ("country", c.country.clone()),
            ("labels", if c.labels.is_empty() { "-".to_owned() } else { c.labels.join(", ") }),
            ("valid from", c.not_before.clone()),
            ("valid until", c.not_after.clone()),
            ("serial", c.serial.to_string()),
        ]
    };
    let revocation_pairs = |r: &RevocationView| -> Vec<(&'static str, String)> {
        vec![
            ("federation", r.federation.clone()),
            ("member", r.member.clone()),
            ("revoked at", r.revoked_at.clone()),
            ("reason", r.reason.clone()),
        ]
    };
    let signature_pairs = |s: &SignatureView| -> Vec<(&'static str, String)> {
        vec![
            ("federation", s.federation.clone()),
            ("member", s.member.clone()),
            ("request sha256", s.request_sha256.clone()),
            ("authority", s.authority.clone()),
        ]
    };
    let list = |keys: &[String]| if keys.is_empty() { "-".to_owned() } else { keys.join("\n") };
    let (title, mut pairs) = match view {
        FileView::KeyFile { file, public_key } => {
            ("key file", vec![("file", file.clone()), ("public key", public_key.clone())])
        }
        FileView::Charter { name, threshold, authorities, open } => {
            let k = if *open {
                "0 (open federation: any node may take part; for development)".to_owned()
            } else {
                format!("{threshold} of {} authorities", authorities.len())
            };
            ("federation charter", vec![("name", name.clone()), ("threshold", k), ("authorities", list(authorities))])
        }
        FileView::MemberCertificateRequest { certificate, request_sha256 } => {
            let mut pairs = cert_pairs(certificate);
            pairs.push(("request sha256", request_sha256.clone()));
            ("member certificate request", pairs)
        }
        FileView::MemberCertificate { certificate, signed_by } => {
            let mut pairs = cert_pairs(certificate);
            pairs.push(("signed by", list(signed_by)));
            ("member certificate", pairs)
        }
        FileView::RevocationRequest { revocation, request_sha256 } => {
            let mut pairs = revocation_pairs(revocation);
            pairs.push(("request sha256", request_sha256.clone()));
            ("revocation request", pairs)
        }
        FileView::Revocation { revocation, signed_by } => {
            let mut pairs = revocation_pairs(revocation);
            pairs.push(("signed by", list(signed_by)));
            ("revocation", pairs)
        }
        FileView::MemberCertificateSignature(s) => {
            ("authority signature on a member certificate request", signature_pairs(s))
        }
        FileView::RevocationSignature(s) => ("authority signature on a revocation request", signature_pairs(s)),
    };
    pairs.insert(0, ("kind", title.to_owned()));
    key_values(&pairs)
}

/// `key  value` lines with values aligned; a value with several lines
/// continues under itself.
fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        for (i, line) in v.lines().enumerate() {
            let key = if i == 0 { *k } else { "" };
            let _ = writeln!(out, "{key:width$}  {line}");
        }
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_sources() {
        let key = Identity::from_secret_bytes(&[7; 32]).public();
        assert_eq!(key_source(&key.to_string()), Ok(KeySource::Hex(key)));
        assert_eq!(key_source("a1.key"), Ok(KeySource::File("a1.key".into())));
        assert!(key_source(&"0".repeat(64)).is_err(), "a small-order point is no key");
        assert!(key_source("").is_err());
    }

    #[test]
    fn names_and_texts() {
        assert!(federation_name("eu-sovereign").is_ok());
        assert!(federation_name("eu sovereign").is_err());
        assert!(organisation("Example Cloud GmbH").is_ok());
        assert!(organisation(" x").is_err());
        assert!(organisation("").is_err());
        assert_eq!(reason(" left "), Ok("left".into()));
        assert!(reason("a\nb").is_err());
        assert!(reason(&"x".repeat(MAX_REASON_BYTES + 1)).is_err());
    }
}
