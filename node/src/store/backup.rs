//! Backups of a node and their restore into a new data dir.
//!
//! A backup is one file: a short text header, then an audit export (the
//! format of `fulcrum_protocol::audit`) of the log up to a checkpoint the
//! node signed for the backup, with every checkpoint up to it. Everything a
//! node needs to start again is in it but the key, which is included only
//! when asked for; the index is derived and is rebuilt from the log.
//!
//! ```text
//! fulcrum-backup v1\n
//! node-key <64 hex: the key the node signs with now>\n
//! federation <name>\n
//! created-at-ms <u64>\n
//! secret-key <64 hex>|none\n
//! export-bytes <N>\n
//! export-sha256 <64 hex>\n
//! \n
//! <N bytes: the audit export>
//! ```
//!
//! An export's record frames are framed as the agreement log is, and its
//! checkpoint frames as the checkpoints file is: a restore verifies the
//! export as an auditor would, then copies the frames into a new log and a
//! new checkpoints file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use fulcrum_protocol::audit::{AuditReport, MAX_CHECKPOINT_BYTES, MAX_HEADER_BYTES, MAX_RECORD_BYTES, verify_export};
use fulcrum_protocol::keys::{Identity, PublicKey};
use sha2::{Digest, Sha256};

use crate::config::{self, NodeConfig};
use crate::daemon::{ExportSnapshot, now_ms};
use crate::store::export::write_export;

/// The first line of every backup of this version (without its line feed).
pub const FORMAT_LINE: &str = "fulcrum-backup v1";

/// Header line names after the first, in their order.
const FIELDS: [&str; 6] = ["node-key", "federation", "created-at-ms", "secret-key", "export-bytes", "export-sha256"];

/// What a backup's header says.
#[derive(Clone, PartialEq, Eq)]
pub struct BackupHeader {
    /// The key the node signed with when the backup was made.
    pub node_key: PublicKey,
    /// The node's federation.
    pub federation: String,
    /// When the backup was made, Unix ms.
    pub created_at_ms: u64,
    /// The node's secret key, when the backup includes it.
    pub secret_key: Option<[u8; 32]>,
    /// Length of the export that follows the header.
    pub export_bytes: u64,
    /// SHA-256 of the export.
    pub export_sha256: [u8; 32],
}

impl std::fmt::Debug for BackupHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupHeader")
            .field("node_key", &self.node_key)
            .field("federation", &self.federation)
            .field("created_at_ms", &self.created_at_ms)
            .field("secret_key", &self.secret_key.map(|_| "included"))
            .field("export_bytes", &self.export_bytes)
            .finish()
    }
}

impl BackupHeader {
    /// The header as written, empty line included.
    pub fn to_text(&self) -> String {
        let secret = self.secret_key.map_or_else(|| "none".to_owned(), hex::encode);
        format!(
            "{FORMAT_LINE}\nnode-key {}\nfederation {}\ncreated-at-ms {}\nsecret-key {secret}\nexport-bytes {}\n\
             export-sha256 {}\n\n",
            self.node_key,
            self.federation,
            self.created_at_ms,
            self.export_bytes,
            hex::encode(self.export_sha256)
        )
    }

    /// Reads the header, up to and including its empty line.
    pub fn read<R: BufRead>(reader: &mut R) -> Result<BackupHeader, String> {
        let mut text = String::new();
        let mut limited = reader.take(MAX_HEADER_BYTES as u64);
        let mut lines = Vec::new();
        loop {
            text.clear();
            let n = limited.read_line(&mut text).map_err(|e| format!("cannot read the backup header: {e}"))?;
            if n == 0 || !text.ends_with('\n') {
                return Err("the backup header ends early (is this a backup file?)".to_owned());
            }
            let line = text.trim_end_matches('\n').to_owned();
            if lines.is_empty() && line != FORMAT_LINE {
                return Err(if line.starts_with("fulcrum-backup ") {
                    format!("unsupported backup version {line:?} (this fulcrumd reads v1)")
                } else {
                    format!("not a Fulcrum backup: the first line is not {FORMAT_LINE:?}")
                });
            }
            if line.is_empty() {
                break;
            }
            lines.push(line);
        }
        let values: Vec<&str> = FIELDS
            .iter()
            .enumerate()
            .map(|(i, name)| {
                lines
                    .get(i + 1)
                    .and_then(|l| l.strip_prefix(name))
                    .and_then(|v| v.strip_prefix(' '))
                    .ok_or_else(|| format!("backup header line {name:?} is missing or out of place"))
            })
            .collect::<Result<_, _>>()?;
        if lines.len() != FIELDS.len() + 1 {
            return Err("the backup header has lines this version does not know".to_owned());
        }
        let number = |name: &str, v: &str| v.parse::<u64>().map_err(|_| format!("backup {name} {v:?} is not a number"));
        let bytes32 = |name: &str, v: &str| -> Result<[u8; 32], String> {
            hex::decode(v)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("backup {name} is not 64 hex digits"))
        };
        let [node_key, federation, created, secret, export_bytes, sha] = values.as_slice() else {
            return Err("the backup header is incomplete".to_owned());
        };
        Ok(BackupHeader {
            node_key: PublicKey::from_hex(node_key).map_err(|e| format!("backup node-key: {e}"))?,
            federation: (*federation).to_owned(),
            created_at_ms: number("created-at-ms", created)?,
            secret_key: if *secret == "none" { None } else { Some(bytes32("secret-key", secret)?) },
            export_bytes: number("export-bytes", export_bytes)?,
            export_sha256: bytes32("export-sha256", sha)?,
        })
    }
}

/// Writes a backup of `snapshot` (the log up to a checkpoint) to `out`.
/// `node_key` is the key the node signs with now; with `include_key` the
/// node's key file is read and its secret written into the backup.
pub fn write_backup<W: Write>(
    snapshot: &ExportSnapshot,
    node_key: PublicKey,
    include_key: bool,
    mut out: W,
) -> anyhow::Result<W> {
    let secret_key = if include_key {
        let identity = config::load_key(&snapshot.key_path)?;
        anyhow::ensure!(
            identity.public() == node_key,
            "the key file {} holds key {}, but the node signs with {node_key}",
            snapshot.key_path.display(),
            identity.public()
        );
        Some(identity.to_secret_bytes())
    } else {
        None
    };
    // The export is written whole before the header, which names its length
    // and hash (the log is read into memory for the export in any case).
    let export = write_export(snapshot, Vec::new())?;
    let header = BackupHeader {
        node_key,
        federation: snapshot.federation.clone(),
        created_at_ms: now_ms(),
        secret_key,
        export_bytes: export.len() as u64,
        export_sha256: Sha256::digest(&export).into(),
    };
    out.write_all(header.to_text().as_bytes())?;
    out.write_all(&export)?;
    out.flush()?;
    Ok(out)
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// A backup whose export was verified.
#[derive(Debug)]
pub struct VerifiedBackup {
    /// Its header.
    pub header: BackupHeader,
    /// The audit of its export.
    pub report: AuditReport,
    /// Where the export starts in the file.
    export_offset: u64,
}

/// Reads a backup and verifies its export as `fulcrumctl audit verify`
/// does, its length and hash, and that it is the log of the node the
/// header names. A report that fails is returned as it is, for the caller
/// to show; everything else wrong is an error.
pub fn verify_backup(path: &Path) -> anyhow::Result<VerifiedBackup> {
    let file = File::open(path).with_context(|| format!("cannot open backup {}", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let header = BackupHeader::read(&mut reader).map_err(anyhow::Error::msg)?;
    let export_offset = reader.stream_position()?;
    let (report, read, digest) = {
        let mut hashing = Hashing { inner: (&mut reader).take(header.export_bytes), hash: Sha256::new() };
        let report = verify_export(&mut hashing);
        // Whatever the verifier left unread still counts for the length and hash.
        io::copy(&mut hashing, &mut io::sink())?;
        let read = header.export_bytes - hashing.inner.limit();
        let digest: [u8; 32] = hashing.hash.finalize().into();
        (report, read, digest)
    };
    anyhow::ensure!(
        read == header.export_bytes && reader.fill_buf()?.is_empty(),
        "backup {} is truncated or has bytes after its export (the header announces {} export bytes)",
        path.display(),
        header.export_bytes
    );
    anyhow::ensure!(
        digest == header.export_sha256,
        "backup {} is damaged: its export does not match the SHA-256 in its header",
        path.display()
    );
    if report.is_ok() {
        anyhow::ensure!(
            report.federation.as_deref() == Some(header.federation.as_str()),
            "the backup's header and its export name different federations"
        );
        anyhow::ensure!(
            report.node_key_now.as_deref() == Some(header.node_key.to_string().as_str()),
            "the backup's header names key {}, but its log hands the node over to {}",
            header.node_key,
            report.node_key_now.as_deref().unwrap_or("?")
        );
    }
    Ok(VerifiedBackup { header, report, export_offset })
}

/// What a restore made.
#[derive(Debug)]
pub struct Restored {
    /// The new data dir.
    pub data_dir: PathBuf,
    /// The node's key.
    pub node_key: PublicKey,
    /// Records in the restored log.
    pub records: u64,
    /// Checkpoints restored.
    pub checkpoints: u64,
    /// Where the key came from: the backup or a key file.
    pub key_from: String,
}

/// Restores a verified backup into `data_dir`, which must not exist or be
/// empty: the agreement log, the checkpoints, the node key (from the backup,
/// or from `key_file` when given) and a starter `node.toml` naming the
/// federation. Everything is written and fsync'd in a directory beside
/// `data_dir`, which is then renamed into place: a restore that fails
/// leaves nothing behind.
pub fn restore(
    backup: &Path,
    verified: &VerifiedBackup,
    data_dir: &Path,
    key_file: Option<&Path>,
) -> anyhow::Result<Restored> {
    anyhow::ensure!(verified.report.is_ok(), "the backup does not verify; nothing was restored");
    let node_key = verified.header.node_key;
    let (identity, key_from) = match (key_file, verified.header.secret_key) {
        (Some(path), _) => (config::load_key(path)?, path.display().to_string()),
        (None, Some(secret)) => (Identity::from_secret_bytes(&secret), "the backup".to_owned()),
        (None, None) => anyhow::bail!(
            "the backup holds no key (it was made without --include-key): pass --key FILE with the node's key file"
        ),
    };
    anyhow::ensure!(
        identity.public() == node_key,
        "the key from {key_from} is {}, but the backed-up node signs with {node_key}",
        identity.public()
    );
    match fs::read_dir(data_dir) {
        Ok(mut entries) => anyhow::ensure!(
            entries.next().is_none(),
            "{} is not empty: restore into a new or empty directory, never over a node's data",
            data_dir.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", data_dir.display())),
    }
    let name = data_dir.file_name().context("the data dir needs a name")?.to_string_lossy().into_owned();
    let parent = match data_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let staging = parent.join(format!(".{name}.restoring-{}", std::process::id()));
    let result = fill(backup, verified, &staging, data_dir, &identity).and_then(|(records, checkpoints)| {
        // Renaming over an empty directory replaces it; over anything else it fails.
        fs::rename(&staging, data_dir)
            .with_context(|| format!("cannot move the restored data dir into place at {}", data_dir.display()))?;
        sync_dir(&parent)?;
        Ok((records, checkpoints))
    });
    match result {
        Ok((records, checkpoints)) => {
            Ok(Restored { data_dir: data_dir.to_path_buf(), node_key, records, checkpoints, key_from })
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// Writes the restored files into `dir`; returns the records and checkpoints written.
fn fill(
    backup: &Path,
    verified: &VerifiedBackup,
    dir: &Path,
    data_dir: &Path,
    identity: &Identity,
) -> anyhow::Result<(u64, u64)> {
    fs::create_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    let mut file = File::open(backup).with_context(|| format!("cannot open backup {}", backup.display()))?;
    file.seek(io::SeekFrom::Start(verified.export_offset))?;
    let mut reader = BufReader::with_capacity(1 << 20, file.take(verified.header.export_bytes));
    // Past the export's own header, to its record frames.
    let mut header = Vec::new();
    while !header.ends_with(b"\n\n") {
        anyhow::ensure!(header.len() < MAX_HEADER_BYTES, "the export header is too long");
        let mut byte = [0u8; 1];
        reader.read_exact(&mut byte).context("the export ends inside its header")?;
        header.push(byte[0]);
    }
    let records = verified.report.records;
    let checkpoints = verified.report.checkpoints;
    copy_frames(&mut reader, records, MAX_RECORD_BYTES, &dir.join("agreements.log"))?;
    copy_frames(&mut reader, checkpoints, MAX_CHECKPOINT_BYTES, &dir.join("checkpoints"))?;
    config::create_key(&dir.join("node.key"), identity)?;
    let config_text = config::commented_config(data_dir).replacen(
        "federation = \"dev\"",
        &format!("federation = \"{}\"", verified.header.federation),
        1,
    );
    // The federation name is checked by the export's verifier; the text
    // must still parse as this node's config.
    NodeConfig::parse(&config_text, Path::new("node.toml"))?.validate()?;
    write_synced(&dir.join("node.toml"), config_text.as_bytes(), 0o644)?;
    sync_dir(dir)?;
    Ok((records, checkpoints))
}

/// Copies `count` frames (length, CRC32C, payload) from `reader` to a new
/// file at `path`, checking each, and fsyncs it.
fn copy_frames<R: Read>(reader: &mut R, count: u64, max: usize, path: &Path) -> anyhow::Result<()> {
    let mut out = io::BufWriter::new(new_file(path, 0o600)?);
    let mut payload = Vec::new();
    for i in 0..count {
        let mut head = [0u8; 8];
        reader.read_exact(&mut head).with_context(|| format!("frame {i} for {} ends early", path.display()))?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        anyhow::ensure!(len > 0 && len <= max, "frame {i} for {} has length {len}", path.display());
        payload.resize(len, 0);
        reader.read_exact(&mut payload).with_context(|| format!("frame {i} for {} ends early", path.display()))?;
        anyhow::ensure!(crc32c::crc32c(&payload) == crc, "frame {i} for {} is damaged", path.display());
        out.write_all(&head)?;
        out.write_all(&payload)?;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all().with_context(|| format!("cannot fsync {}", path.display()))?;
    Ok(())
}

/// A new file (never an existing one) with `mode`.
fn new_file(path: &Path, mode: u32) -> anyhow::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

fn write_synced(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut file = new_file(path, mode)?;
    file.write_all(bytes)?;
    file.sync_all().with_context(|| format!("cannot fsync {}", path.display()))
}

/// Makes a directory's entries durable.
pub fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("cannot fsync the directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use fulcrum_protocol::checkpoint::sign_node_checkpoint;
    use fulcrum_protocol::envelope::{Envelope, Kind};
    use fulcrum_protocol::record::Record;

    use super::*;
    use crate::store::checkpoints::{CheckpointFile, read_checkpoints};
    use crate::store::log::{AgreementLog, read_log};

    /// A node's data dir with `n` offer records and a checkpoint of them;
    /// the snapshot a backup of it takes.
    fn node(dir: &Path, n: u8) -> (Identity, ExportSnapshot) {
        let id = Identity::from_secret_bytes(&[5; 32]);
        config::create_key(&dir.join("node.key"), &id).unwrap();
        let (log, _) = AgreementLog::open(&dir.join("agreements.log")).unwrap();
        let records = (0..n)
            .map(|i| Record::Offer { envelope: Envelope::seal(&id, Kind::Offer, vec![i]) }.to_cbor().unwrap())
            .collect();
        log.append_blocking(records).unwrap();
        let (mut file, _, _) = CheckpointFile::open(&dir.join("checkpoints")).unwrap();
        file.append(&sign_node_checkpoint(&id, "eu", log.len(), log.root()).unwrap().to_note()).unwrap();
        file.sync().unwrap();
        log.close();
        let snapshot = ExportSnapshot {
            node_key: id.public(),
            key_path: dir.join("node.key"),
            federation: "eu".into(),
            records: u64::from(n),
            checkpoints: 1,
            log_path: dir.join("agreements.log"),
            checkpoints_path: dir.join("checkpoints"),
        };
        (id, snapshot)
    }

    #[test]
    fn a_backup_restores_the_same_log_checkpoints_and_key() {
        let tmp = tempfile::tempdir().unwrap();
        let original = tmp.path().join("original");
        fs::create_dir(&original).unwrap();
        let (id, snapshot) = node(&original, 5);
        let path = tmp.path().join("node.backup");
        fs::write(&path, write_backup(&snapshot, id.public(), true, Vec::new()).unwrap()).unwrap();
        let verified = verify_backup(&path).unwrap();
        assert!(verified.report.is_ok(), "{}", verified.report);
        assert_eq!((verified.report.records, verified.report.checkpoints), (5, 1));

        let into = tmp.path().join("restored");
        let restored = restore(&path, &verified, &into, None).unwrap();
        assert_eq!((restored.node_key, restored.records, restored.key_from.as_str()), (id.public(), 5, "the backup"));
        assert_eq!(
            read_log(&into.join("agreements.log")).unwrap(),
            read_log(&original.join("agreements.log")).unwrap()
        );
        assert_eq!(
            read_checkpoints(&into.join("checkpoints")).unwrap(),
            read_checkpoints(&original.join("checkpoints")).unwrap()
        );
        assert_eq!(config::load_key(&into.join("node.key")).unwrap().public(), id.public());
        assert_eq!(fs::metadata(&into).unwrap().permissions().mode() & 0o777, 0o700);
        let config = NodeConfig::parse(&fs::read_to_string(into.join("node.toml")).unwrap(), Path::new("x")).unwrap();
        assert_eq!((config.federation.as_str(), config.data_dir.as_path()), ("eu", into.as_path()));
        // Never over anything.
        let err = restore(&path, &verified, &into, None).unwrap_err().to_string();
        assert!(err.contains("is not empty"), "{err}");
        // An empty directory is fine.
        let empty = tmp.path().join("empty");
        fs::create_dir(&empty).unwrap();
        restore(&path, &verified, &empty, None).unwrap();
        assert!(
            fs::read_dir(tmp.path()).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().contains("restoring"))
        );
    }

    #[test]
    fn a_truncated_or_altered_backup_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (id, snapshot) = node(tmp.path(), 3);
        let bytes = write_backup(&snapshot, id.public(), false, Vec::new()).unwrap();
        let path = tmp.path().join("b");
        for (what, damaged) in
            [("truncated", bytes[..bytes.len() - 1].to_vec()), ("extended", [bytes.as_slice(), b"x"].concat())]
        {
            fs::write(&path, damaged).unwrap();
            let err = verify_backup(&path).unwrap_err().to_string();
            assert!(err.contains("truncated or has bytes after"), "{what}: {err}");
        }
        let mut altered = bytes.clone();
        let last = altered.len() - 3;
        altered[last] ^= 1;
        fs::write(&path, &altered).unwrap();
        assert!(verify_backup(&path).unwrap_err().to_string().contains("SHA-256"));
        // Made without the key: restored only with the right key file.
        fs::write(&path, &bytes).unwrap();
        let verified = verify_backup(&path).unwrap();
        let err = restore(&path, &verified, &tmp.path().join("r1"), None).unwrap_err().to_string();
        assert!(err.contains("--key"), "{err}");
        let other = tmp.path().join("other.key");
        config::create_key(&other, &Identity::from_secret_bytes(&[6; 32])).unwrap();
        assert!(restore(&path, &verified, &tmp.path().join("r2"), Some(&other)).is_err());
        restore(&path, &verified, &tmp.path().join("r3"), Some(&tmp.path().join("node.key"))).unwrap();
        assert!(!tmp.path().join("r1").exists() && !tmp.path().join("r2").exists());
    }

    fn header(secret: Option<[u8; 32]>) -> BackupHeader {
        BackupHeader {
            node_key: Identity::from_secret_bytes(&[4; 32]).public(),
            federation: "eu".into(),
            created_at_ms: 1_800_000_000_000,
            secret_key: secret,
            export_bytes: 1234,
            export_sha256: [9; 32],
        }
    }

    #[test]
    fn headers_round_trip_and_bad_ones_are_named() {
        for secret in [None, Some([4; 32])] {
            let h = header(secret);
            let text = h.to_text();
            let mut reader = io::Cursor::new(format!("{text}rest").into_bytes());
            assert_eq!(BackupHeader::read(&mut reader).unwrap(), h);
            let mut rest = String::new();
            reader.read_to_string(&mut rest).unwrap();
            assert_eq!(rest, "rest", "the reader stops right after the header");
        }
        assert!(!format!("{:?}", header(Some([4; 32]))).contains("0404"), "the secret never shows in logs");
        let good = header(None).to_text();
        for (text, word) in [
            ("fulcrum-audit-export v1\n\n".to_owned(), "not a Fulcrum backup"),
            ("fulcrum-backup v2\n\n".to_owned(), "unsupported backup version"),
            (good.replace("export-bytes 1234", "export-bytes lots"), "not a number"),
            (good.replace("created-at-ms", "made-at-ms"), "created-at-ms"),
            (good.replace("secret-key none", "secret-key 12"), "64 hex digits"),
            (good.replace("\n\n", "\nextra 1\n\n"), "does not know"),
            (good[..good.len() - 1].to_owned(), "ends early"),
        ] {
            let err = BackupHeader::read(&mut io::Cursor::new(text.into_bytes())).unwrap_err();
            assert!(err.contains(word), "{word}: {err}");
        }
    }
}
