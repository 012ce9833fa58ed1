//! `fulcrumctl audit ...`: exports and offline verification of agreement
//! logs, inclusion proofs of shared contracts, and evidence held.

use std::io::{self, BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use clap::Subcommand;
use fulcrum_proto::v1 as wire;
use fulcrum_protocol::audit::{AuditReport, verify_export};
use serde::Serialize;

use super::args::{self, ContractRef};
use super::backup::save_stream;
use super::time::format_rfc3339;
use super::{CliError, Output, answer};
use crate::admin::client::{self, AdminTarget};
use crate::store::backup::{FORMAT_LINE as BACKUP_FORMAT_LINE, verify_backup};

/// `fulcrumctl audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check a log with no daemon and no key: framing, every signature, every
    /// checkpoint against the Merkle root, consistency between checkpoints
    /// [default: the running node's live log]
    Verify {
        /// An export file written by 'audit export' (or a backup written by 'fulcrumctl backup')
        #[arg(long, value_name = "FILE")]
        export: Option<PathBuf>,
    },
    /// Write the whole log, its checkpoints and the node key to one file
    Export {
        /// Where to write it
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Ask the other party of a contract to prove it is in its log
    Prove {
        /// Contract id (64 hex digits, or a unique prefix of 8 or more)
        #[arg(value_name = "CONTRACT_ID", value_parser = args::contract_ref)]
        id: ContractRef,
    },
    /// List evidence of rewritten or denied history held by this node
    Evidence,
}

/// One piece of evidence, for people and scripts.
#[derive(Debug, Clone, Serialize)]
pub struct EvidenceView {
    /// The node that misbehaved (hex key).
    pub accused: String,
    /// conflicting-checkpoints, inconsistent-proof or missing-contract.
    pub kind: String,
    /// What happened.
    pub description: String,
    /// When the witness found it, Unix ms.
    pub observed_at_ms: u64,
    /// The node that found it (hex key).
    pub witness: String,
    /// The sealed evidence, hex of its envelope's wire bytes.
    pub envelope: String,
}

/// The answer of `audit prove`.
#[derive(Debug, Clone, Serialize)]
pub struct ProveView {
    /// proven, not-yet or evidence.
    pub outcome: String,
    /// The other party (hex key).
    pub counterparty: String,
    /// Where the contract is in the other party's log.
    pub leaf_index: u64,
    /// The other party's checkpoint the proof is against.
    pub checkpoint: String,
    /// What it means.
    pub message: String,
}

/// Runs an audit command.
pub async fn run(socket: &AdminTarget, out: &Output, command: AuditCommand) -> Result<(), CliError> {
    match command {
        AuditCommand::Verify { export: Some(path) } => {
            let mut file = std::fs::File::open(&path)
                .map_err(|e| CliError::BadInput(format!("cannot open export {}: {e}", path.display())))?;
            // A backup holds an export: verified with its length and hash.
            let mut first = [0u8; BACKUP_FORMAT_LINE.len()];
            let is_backup = file.read_exact(&mut first).is_ok() && first == BACKUP_FORMAT_LINE.as_bytes();
            file.seek(io::SeekFrom::Start(0)).map_err(|e| CliError::BadInput(format!("{}: {e}", path.display())))?;
            let report = tokio::task::spawn_blocking(move || {
                if is_backup {
                    verify_backup(&path).map(|verified| verified.report).map_err(|e| format!("{e:#}"))
                } else {
                    Ok(verify_export(BufReader::with_capacity(1 << 20, file)))
                }
            })
            .await
            .map_err(|e| CliError::Failed(format!("verification stopped: {e}")))?
            .map_err(|e| CliError::Failed(format!("verification failed: {e}")))?;
            show_report(out, &report)
        }
        AuditCommand::Verify { export: None } => {
            let mut stream = answer(client::connect(socket).await?.audit_export(wire::ExportRequest {})).await?;
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
            let verifier = tokio::task::spawn_blocking(move || {
                verify_export(BufReader::with_capacity(1 << 20, ChunkReader { rx, chunk: Vec::new(), pos: 0 }))
            });
            let mut failure = None;
            loop {
                match stream.message().await {
                    Ok(Some(chunk)) => {
                        if tx.send(chunk.data).is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        failure = Some(status);
                        break;
                    }
                }
            }
            drop(tx);
            let report = verifier.await.map_err(|e| CliError::Failed(format!("verification stopped: {e}")))?;
            if let Some(status) = failure {
                return Err(CliError::Daemon(status));
            }
            show_report(out, &report)
        }
        AuditCommand::Export { out: path } => export(socket, out, &path).await,
        AuditCommand::Prove { id } => {
            let mut c = client::connect(socket).await?;
            let contract_id = super::resolve(&mut c, id).await?;
            let result = c.audit_prove(wire::ProveRequest { contract_id });
            // Asking goes over the network to the other party.
            let result = match tokio::time::timeout(std::time::Duration::from_secs(60), result).await {
                Ok(r) => r?.into_inner(),
                Err(_) => return Err(CliError::Failed("the daemon did not answer within 60s".into())),
            };
            let view = ProveView {
                outcome: result.outcome,
                counterparty: hex::encode(&result.counterparty),
                leaf_index: result.leaf_index,
                checkpoint: result.checkpoint,
                message: result.message,
            };
            out.show(&view, |v| format!("{}: {}\n", v.outcome, v.message))?;
            match view.outcome.as_str() {
                "proven" => Ok(()),
                "evidence" => Err(CliError::Failed(format!(
                    "the other party {} rewrote or denied its history; the evidence is kept, logged and gossiped",
                    view.counterparty
                ))),
                _ => Err(CliError::Failed("not proven yet; ask again later".into())),
            }
        }
        AuditCommand::Evidence => {
            let list = answer(client::connect(socket).await?.audit_evidence(wire::EvidenceQuery {})).await?;
            let views: Vec<EvidenceView> = list
                .evidence
                .into_iter()
                .map(|e| EvidenceView {
                    accused: hex::encode(&e.accused),
                    kind: e.kind,
                    description: e.description,
                    observed_at_ms: e.observed_at_ms,
                    witness: hex::encode(&e.witness),
                    envelope: e
                        .envelope
                        .map(|env| hex::encode(prost::Message::encode_to_vec(&env)))
                        .unwrap_or_default(),
                })
                .collect();
            out.show(&views, |v| render_evidence(v))
        }
    }
}

fn render_evidence(views: &[EvidenceView]) -> String {
    if views.is_empty() {
        return "no evidence: every log witnessed so far is consistent\n".to_owned();
    }
    let mut text = String::new();
    for v in views {
        text.push_str(&format!(
            "{}  {}  node {} {} (found by {})\n",
            format_rfc3339(v.observed_at_ms),
            v.kind,
            &v.accused[..16.min(v.accused.len())],
            v.description,
            &v.witness[..16.min(v.witness.len())],
        ));
    }
    text
}

fn show_report(out: &Output, report: &AuditReport) -> Result<(), CliError> {
    out.show(report, |r| format!("{r}\n"))?;
    match &report.first_failure {
        None => Ok(()),
        Some(f) => Err(CliError::Failed(format!("verification failed: {f}"))),
    }
}

async fn export(socket: &AdminTarget, out: &Output, path: &Path) -> Result<(), CliError> {
    let mut stream = answer(client::connect(socket).await?.audit_export(wire::ExportRequest {})).await?;
    let saved = save_stream(&mut stream, path, 0o644).await?;
    #[derive(Serialize)]
    struct Exported {
        path: String,
        bytes: u64,
        records: u64,
        checkpoints: u64,
    }
    let field = |name: &str| saved.field(name).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    let view = Exported {
        path: path.display().to_string(),
        bytes: saved.bytes,
        records: field("records"),
        checkpoints: field("checkpoints"),
    };
    out.show(&view, |v| {
        format!("wrote {} ({} bytes): {} records, {} checkpoints\n", v.path, v.bytes, v.records, v.checkpoints)
    })
}

/// Reads the chunks of a streamed export as one byte stream.
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
