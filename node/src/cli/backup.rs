//! `fulcrumctl backup`: a consistent backup of the running node, written
//! atomically and verified before the command reports success; and the one
//! way files streamed from the daemon are saved (a temporary file, fsync,
//! rename, fsync of the directory), shared with `audit export`.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::Args;
use fulcrum_proto::v1 as wire;
use serde::Serialize;

use super::{CliError, Output, answer};
use crate::admin::client::{self, AdminTarget};
use crate::store::backup::{sync_dir, verify_backup};

/// How much of the start of a saved stream is kept, to read its headers.
const HEAD_BYTES: usize = 8192;

/// `fulcrumctl backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where to write the backup (mode 0600; replaced atomically)
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Include the node's secret key: keep the backup as safe as the key file itself
    #[arg(long)]
    pub include_key: bool,
}

/// A file saved from a stream: its size and its first bytes.
#[derive(Debug)]
pub(super) struct Saved {
    pub bytes: u64,
    pub head: Vec<u8>,
}

impl Saved {
    /// The value of the first header line `name value` in the saved head.
    pub(super) fn field(&self, name: &str) -> Option<String> {
        String::from_utf8_lossy(&self.head)
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')).map(str::to_owned))
    }
}

/// Saves a stream of chunks to `path`: into `<path>.partial` (created with
/// `mode`), fsync'd, renamed over `path`, and the directory fsync'd, so
/// `path` is either the old file or the whole new one.
pub(super) async fn save_stream(
    stream: &mut tonic::Streaming<wire::ExportChunk>,
    path: &Path,
    mode: u32,
) -> Result<Saved, CliError> {
    let name = path.file_name().ok_or_else(|| CliError::BadInput(format!("{} is not a file name", path.display())))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".partial");
    let tmp = path.with_file_name(tmp_name);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| CliError::BadInput(format!("cannot create {}: {e}", tmp.display())))?;
    let mut saved = Saved { bytes: 0, head: Vec::new() };
    let written: Result<(), CliError> = async {
        while let Some(chunk) = stream.message().await? {
            if saved.head.len() < HEAD_BYTES {
                let take = chunk.data.len().min(HEAD_BYTES - saved.head.len());
                saved.head.extend_from_slice(&chunk.data[..take]);
            }
            file.write_all(&chunk.data).map_err(CliError::Output)?;
            saved.bytes += chunk.data.len() as u64;
        }
        file.sync_all().map_err(CliError::Output)?;
        std::fs::rename(&tmp, path).map_err(CliError::Output)?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        sync_dir(dir).map_err(|e| CliError::Failed(format!("{e:#}")))
    }
    .await;
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(saved)
}

/// What `fulcrumctl backup` made.
#[derive(Debug, Serialize)]
struct BackupView {
    path: String,
    bytes: u64,
    node_key: String,
    federation: String,
    records: u64,
    checkpoints: u64,
    contracts: u64,
    key_included: bool,
}

/// Takes a backup of the running node and verifies the file it wrote.
pub(super) async fn run(admin: &AdminTarget, out: &Output, args: BackupArgs) -> Result<(), CliError> {
    let request = wire::BackupRequest { include_key: args.include_key };
    let mut stream = answer(client::connect(admin).await?.backup(request)).await?;
    let saved = save_stream(&mut stream, &args.out, 0o600).await?;
    let path = args.out.clone();
    let verified = tokio::task::spawn_blocking(move || verify_backup(&path))
        .await
        .map_err(|e| CliError::Failed(format!("verification stopped: {e}")))?
        .map_err(|e| CliError::Failed(format!("the backup written to {} is not usable: {e:#}", args.out.display())))?;
    if let Some(failure) = &verified.report.first_failure {
        return Err(CliError::Failed(format!(
            "the backup written to {} does not verify: {failure}",
            args.out.display()
        )));
    }
    let view = BackupView {
        path: args.out.display().to_string(),
        bytes: saved.bytes,
        node_key: verified.header.node_key.to_string(),
        federation: verified.header.federation.clone(),
        records: verified.report.records,
        checkpoints: verified.report.checkpoints,
        contracts: verified.report.contracts,
        key_included: verified.header.secret_key.is_some(),
    };
    out.show(&view, |v| {
        let key = if v.key_included {
            "the node key included: keep it as safe as the key file"
        } else {
            "no key (restore with --key FILE)"
        };
        format!(
            "wrote {} ({} bytes), verified: {} records ({} contracts), {} checkpoints of node {}; {key}\n",
            v.path, v.bytes, v.records, v.contracts, v.checkpoints, v.node_key
        )
    })
}
