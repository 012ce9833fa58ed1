//! Writes an audit export (the format is documented in
//! `fulcrum_protocol::audit`): the first records of the log and the
//! checkpoints this node signed of them, read from the files of a snapshot
//! the event loop took, so the export is consistent while the node runs on.

use std::io::Write;

use anyhow::Context as _;
use fulcrum_protocol::audit::{ExportHeader, ExportWriter};

use crate::daemon::ExportSnapshot;
use crate::store::checkpoints::read_checkpoints;
use crate::store::log::read_log;

/// Writes the export of `snapshot` to `out`.
pub fn write_export<W: Write>(snapshot: &ExportSnapshot, out: W) -> anyhow::Result<W> {
    let (records, _torn) = read_log(&snapshot.log_path).context("cannot read the agreement log")?;
    let n = usize::try_from(snapshot.records).context("log too large for this machine")?;
    anyhow::ensure!(
        records.len() >= n,
        "the log holds {} records, fewer than the {} its checkpoint covers",
        records.len(),
        snapshot.records
    );
    let notes = read_checkpoints(&snapshot.checkpoints_path).context("cannot read the checkpoints file")?;
    let k = usize::try_from(snapshot.checkpoints).context("too many checkpoints")?.min(notes.len());
    let header = ExportHeader {
        node_key: snapshot.node_key,
        federation: snapshot.federation.clone(),
        records: snapshot.records,
        checkpoints: k as u64,
    };
    let mut writer = ExportWriter::new(out, header)?;
    for record in &records[..n] {
        writer.record(record)?;
    }
    for note in &notes[..k] {
        writer.checkpoint(note)?;
    }
    let mut out = writer.finish()?;
    out.flush()?;
    Ok(out)
}
