//! The bodies of the fuzz targets for decoders in `fulcrum-node`: the
//! agreement log and checkpoints files as found at start-up, backups,
//! `node.toml` and the key file, offer files, federation files, and the
//! membership messages a daemon takes from peers. Each takes arbitrary bytes and must never panic
//! on them.
//!
//! The same functions replay the saved inputs in
//! `node/tests/fuzz_regressions.rs`.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use fulcrum_node::charter::{FederationFile, parse_any, render_certificate, render_charter, render_revocation};
use fulcrum_node::config::{NodeConfig, load_key};
use fulcrum_node::members::Members;
use fulcrum_node::offer_file::parse_offer_file;
use fulcrum_node::store::backup::{BackupHeader, verify_backup};
use fulcrum_node::store::checkpoints::{CheckpointFile, read_checkpoints};
use fulcrum_node::store::log::{AgreementLog, LogError, read_log};
use fulcrum_protocol::Limits;
use fulcrum_protocol::keys::Identity;
use fulcrum_protocol::offer::Offer;
use fulcrum_protocol::record::Record;

/// The federation of the fixtures.
pub const FEDERATION: &str = "dev";
/// "Now" for every check that reads a clock.
pub const NOW_MS: u64 = 1_790_000_000_000;

/// A fresh directory for one run, in memory where the machine has a tmpfs.
fn scratch() -> Option<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { tempfile::tempdir_in(shm).ok() } else { tempfile::tempdir().ok() }
}

/// Target `log`: the bytes as an `agreements.log` found at start-up (read
/// for an audit, then opened, which cuts a torn tail and nothing else), and
/// as a `checkpoints` file.
pub fn log(data: &[u8]) {
    let Some(dir) = scratch() else { return };
    let path = dir.path().join("agreements.log");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let read = read_log(&path);
    match AgreementLog::open(&path) {
        Ok((log, recovered)) => {
            let (records, torn) = match read {
                Ok(read) => read,
                Err(e) => panic!("a log that opens cannot be read for an audit: {e}"),
            };
            assert_eq!(recovered.records, records, "opening and reading find different records");
            assert_eq!(torn, recovered.truncated_bytes > 0, "opening and reading disagree about a torn tail");
            assert_eq!(log.len(), records.len() as u64);
            for record in &records {
                // What the daemon does with each record at start-up.
                let _ = Record::from_cbor(record);
            }
            // The repaired log takes appends, and reads back whole.
            let appended = log.append_blocking(vec![b"appended".to_vec()]);
            log.close();
            drop(log);
            assert_eq!(appended.ok(), Some(records.len() as u64), "an append to a repaired log failed");
            let (after, torn) = read_log(&path).expect("a repaired log reads");
            assert!(!torn, "a repaired log still has a torn tail");
            assert_eq!(after.len(), records.len() + 1);
            assert_eq!(after[..records.len()], records[..], "repairing the log changed its records");
        }
        Err(LogError::Corrupt { .. }) => {
            assert!(matches!(read, Err(LogError::Corrupt { .. })), "open refuses a log an audit reads: {read:?}");
            assert_eq!(std::fs::read(&path).ok().as_deref(), Some(data), "a corrupt log was modified");
        }
        Err(_) => {}
    }

    let path = dir.path().join("checkpoints");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let Ok(notes) = read_checkpoints(&path) else { return };
    let Ok((mut file, latest, count)) = CheckpointFile::open(&path) else { return };
    assert_eq!(count, notes.len() as u64);
    assert_eq!(latest.as_ref(), notes.last());
    if file.append("fulcrum/dev/x\n1\nAA==\n\n").and_then(|()| file.sync()).is_ok() {
        drop(file);
        let again = read_checkpoints(&path).expect("a repaired checkpoints file reads");
        assert_eq!(again.len(), notes.len() + 1, "an appended checkpoint is lost after a repair");
    }
}

/// Target `config`: the bytes as `node.toml`, and as a node key file.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(config) = NodeConfig::parse(text, Path::new("node.toml"))
        && config.validate().is_ok()
    {
        assert!(config.metrics_socket_addr().is_ok(), "a valid config has a usable metrics address");
        for value in [&config.offer_ttl, &config.hold_ttl, &config.reply_timeout, &config.checkpoint_interval] {
            assert!(config.ms(value) > 0, "a valid config has a zero duration: {value:?}");
        }
    }
    let Some(dir) = scratch() else { return };
    let path = dir.path().join("node.key");
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(data));
    if written.is_ok()
        && let Ok(identity) = load_key(&path)
    {
        let _ = identity.public();
    }
}

/// Target `offer_file`: the bytes as an offer file. One that passes the
/// file's checks must be an offer the protocol accepts once the daemon
/// fills in provider, federation, seq and lifetime, or `offers publish`
/// would take a file and then fail.
pub fn offer_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok((mut w, ttl)) = parse_offer_file(text) else { return };
    let limits = Limits::default();
    let provider = Identity::from_secret_bytes(&[1; 32]);
    w.provider = provider.public().to_bytes().to_vec();
    w.federation = FEDERATION.into();
    w.seq = 1;
    w.issued_at_ms = NOW_MS;
    w.expires_at_ms = NOW_MS.saturating_add(ttl.unwrap_or(3_600_000));
    let offer = Offer::from_wire(w, &limits);
    assert!(offer.is_ok(), "an offer file that checks out is refused by the protocol: {offer:?}");
}

/// Target `charter`: the bytes as any federation file (charter, certificate
/// request, signature, certificate, revocation request, revocation). What
/// reads must be written back by the CLI to a file that reads the same.
pub fn charter(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(file) = parse_any(text, "fuzz.toml") else { return };
    let rendered = match &file {
        FederationFile::Charter(c) => render_charter(c, &[]),
        FederationFile::CertificateRequest(r) => r.to_toml(),
        FederationFile::Signature(s) => s.to_toml(),
        FederationFile::Certificate(c) => render_certificate(c),
        FederationFile::RevocationRequest(r) => r.to_toml(),
        FederationFile::Revocation(r) => render_revocation(r),
    };
    let again = match parse_any(&rendered, "rendered.toml") {
        Ok(again) => again,
        Err(e) => panic!("a federation file written back does not read: {e}\n{rendered}"),
    };
    let same = match (&file, &again) {
        (FederationFile::Charter(a), FederationFile::Charter(b)) => a == b,
        (FederationFile::CertificateRequest(a), FederationFile::CertificateRequest(b)) => a == b,
        (FederationFile::Signature(a), FederationFile::Signature(b)) => a == b,
        (FederationFile::Certificate(a), FederationFile::Certificate(b)) => a == b,
        (FederationFile::RevocationRequest(a), FederationFile::RevocationRequest(b)) => a == b,
        (FederationFile::Revocation(a), FederationFile::Revocation(b)) => a == b,
        _ => false,
    };
    assert!(same, "a federation file written back reads differently: {file:?} then {again:?}");
}

/// The closed federation of the `membership` target: three authorities, two
/// of which must sign. Its charter is written once to a file.
pub fn membership_authorities() -> [Identity; 3] {
    [10, 11, 12].map(|b| Identity::from_secret_bytes(&[b; 32]))
}

fn membership_config() -> Option<&'static NodeConfig> {
    static CONFIG: OnceLock<Option<(tempfile::TempDir, NodeConfig)>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let dir = tempfile::tempdir().ok()?;
            let charter = fulcrum_protocol::membership::Charter {
                name: FEDERATION.into(),
                authorities: membership_authorities().iter().map(Identity::public).collect(),
                threshold: 2,
            };
            let path: PathBuf = dir.path().join("federation.toml");
            std::fs::write(&path, render_charter(&charter, &[])).ok()?;
            let config = NodeConfig { charter: Some(path), ..NodeConfig::default() };
            Some((dir, config))
        })
        .as_ref()
        .map(|(_, config)| config)
}

/// Target `membership`: the bytes as a peer's certificate exchange and as a
/// message of the membership topic, handled by a member of a closed
/// federation; whatever it learned it must pass on to the next peer.
pub fn membership(data: &[u8]) {
    let Some(config) = membership_config() else { return };
    let limits = Limits::default();
    let me = Identity::from_secret_bytes(&[4; 32]).public();
    let Ok(mut members) = Members::load(config, me, &limits, NOW_MS) else { return };
    let _ = members.on_exchange(data, NOW_MS);
    let _ = members.on_gossip(data, NOW_MS);
    let Ok(mut next) = Members::load(config, me, &limits, NOW_MS) else { return };
    let learned = next.on_exchange(&members.exchange(), NOW_MS);
    assert!(learned.is_ok(), "a node's own exchange does not decode: {learned:?}");
    // A node passes on every certificate it knows but one for its own key
    // (it sends its configured one instead, and has none here).
    let own = usize::from(members.check(&me, NOW_MS).is_ok());
    assert_eq!(next.known(), members.known() - own, "a peer learns less from an exchange than the sender knew");
}

/// Target `backup`: the bytes as a backup file handed to `fulcrumd restore`:
/// its header (which must read back as written) and its export, verified.
pub fn backup(data: &[u8]) {
    if let Ok(header) = BackupHeader::read(&mut &data[..]) {
        let text = header.to_text();
        let again = BackupHeader::read(&mut text.as_bytes()).expect("a backup header reads back as written");
        assert_eq!(header, again, "backup header round trip");
    }
    let Some(dir) = scratch() else { return };
    let path = dir.path().join("node.backup");
    if std::fs::write(&path, data).is_ok() {
        let _ = verify_backup(&path);
    }
}
