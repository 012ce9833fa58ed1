//! The offline audit of a node's agreement log: the export file format, a
//! streaming writer for it, and a streaming verifier that checks an export
//! with nothing but the public keys inside it.
//!
//! `fulcrumctl audit export` writes a node's log and the checkpoints it
//! signed into one file; `fulcrumctl audit verify --export FILE` runs
//! [`verify_export`] on it: every frame, every record, every signature, and
//! that the node's signed checkpoints commit to exactly these records in
//! exactly this order. No daemon, no private key and no network is needed.
//!
//! # Export format, version 1
//!
//! ```text
//! fulcrum-audit-export v1\n
//! node-key <64 lowercase hex>\n
//! federation <name>\n
//! origin <fulcrum/<federation>/<node key hex>>\n
//! records <N>\n
//! checkpoints <M>\n
//! \n
//! N record frames, then M checkpoint frames.
//! frame = u32 LE payload length | u32 LE CRC32C(payload) | payload
//! record payload = the CBOR record exactly as in the log (Merkle leaf hash = SHA-256(0x00 || payload), RFC 6962)
//! checkpoint payload = a C2SP tlog-checkpoint signed note (UTF-8), signed by the node key under the key name = origin
//! ```
//!
//! Precisely:
//!
//! - **Header.** UTF-8 text: the six lines above, in exactly this order,
//!   each a name, one space, a value and a line feed (`\n`, never `\r\n`),
//!   then one empty line. No other, missing or repeated lines; the whole
//!   header, empty line included, is at most 4096 bytes
//!   ([`MAX_HEADER_BYTES`]).
//!   - `node-key`: exactly 64 lowercase hex digits, a valid Ed25519 public
//!     key that is not of small order: the node whose log this is, by the
//!     key it started its log with (after a key rotation the node signs with
//!     a later key; see "Key rotations" below).
//!   - `federation`: 1 to 128 bytes of UTF-8 with no whitespace, no control
//!     character and no `+` (the origin is also a signed-note key name).
//!   - `origin`: exactly `fulcrum/<federation>/<node-key>`, the origin and
//!     key name of the node's checkpoints.
//!   - `records`, `checkpoints`: decimal u64 in canonical form (`0`, or
//!     digits with no leading zero, at most 18446744073709551615).
//!
//!   Every byte of the header is bound: the key and origin by the
//!   checkpoints' signatures, the counts by the frames that must follow.
//!   The header carries nothing informational that a change could slip
//!   through (when the export was written is the file's own business).
//! - **Frames.** Right after the header: exactly N record frames, then
//!   exactly M checkpoint frames, then the end of the file (any byte after
//!   the last frame is a failure). A frame is the payload length as a
//!   little-endian u32, the CRC32C (Castagnoli, as in iSCSI and the node's
//!   `agreements.log`) of the payload as a little-endian u32, then the
//!   payload. A record payload is 1 to 1,048,576 bytes
//!   ([`MAX_RECORD_BYTES`], the node's own limit), a checkpoint payload 1
//!   to 8192 bytes ([`MAX_CHECKPOINT_BYTES`]).
//! - **Records.** Record `i` (counting from 0) is the `i`-th record of the
//!   log, byte for byte as the log holds it: one CBOR data item (a
//!   [`crate::record::Record`]) with nothing after it. It is leaf `i` of the
//!   log's RFC 6962 Merkle tree, whose leaf hash is SHA-256(0x00 || payload).
//! - **Checkpoints.** Each is a C2SP `tlog-checkpoint` signed note, exactly
//!   as the node signed it (origin line, tree size, base64 root, blank
//!   line, signature lines), with an Ed25519 signature by `node-key` under
//!   the key name `origin`. They come in the order the node signed them, so
//!   their sizes never decrease; each size is at most N, and the root is the
//!   RFC 6962 root of the first `size` records of the export. A note may
//!   carry extension lines and other signatures (a witness's cosignature,
//!   say); only the node's is checked.
//!
//! # Key rotations
//!
//! A node that rotated its key ([`crate::rotation`]) holds a rotation record
//! in its log: a statement signed by the key in use up to it and by the key
//! that takes over. The node's key *at* a point of the log is `node-key` up
//! to and including its first rotation record, then the key that record hands
//! over to, and so on. Whatever the checks below ask of "the node" they ask
//! of the node's key at that record; a checkpoint of size `s` must be signed
//! by the node's key after record `s - 1` (so a checkpoint covering a
//! rotation record is the new key's), under that key's origin
//! `fulcrum/<federation>/<key>`. A rotation record must hand over from the
//! node's key at that point, be numbered one more than the rotation before
//! (1 for the first), be for the export's federation, and name the size and
//! root of the log just before it: the old key's last signature fixes the
//! history the new key continues.
//!
//! # What the verifier checks
//!
//! 1. The header, as above.
//! 2. Every record frame: its length bound, its CRC32C, and that its payload
//!    is one CBOR record of a known type that the node's own reader
//!    ([`crate::record::Record::from_cbor`]) would accept, with nothing
//!    after it.
//! 3. Every signature, and who made it. An offer record holds an envelope
//!    of kind `offer` signed by the node. A contract record holds both
//!    parties' valid signatures over the contract body, the node is one of
//!    the parties and the contract is for the export's federation. A pending
//!    record holds only the consumer's valid signature and the node is the
//!    consumer. A termination record holds a valid envelope of kind
//!    `terminate` whose body names the record's contract and is signed by
//!    its sender, who is the node or, when the contract appears earlier in
//!    the log, the contract's other party. An evidence record holds a valid
//!    envelope of kind `evidence`, by any signer. An abandoned record has no
//!    signature, nor has a placement record, but every contract a final
//!    placement record names (one that is not `committing`) is a contract
//!    record earlier in the log. An expiry record has no signature either:
//!    its contract is a contract record earlier in the log, it was recorded
//!    at or after the contract's end time, and no termination or expiry of
//!    that contract comes before it.
//!    A rotation record holds both keys' valid signatures and hands the
//!    node's key over as described above.
//! 4. Every checkpoint: it parses, its origin is this node's in this
//!    federation and the node's signature verifies; sizes never decrease;
//!    each size is at most N; its root is the root of the records' tree at
//!    its size; each is consistent (an RFC 6962 consistency proof built from
//!    the records, verified against both signed roots) with the previous
//!    good checkpoint; two of the same size have the same root.
//! 5. Coverage: every record is under some good checkpoint. Records after
//!    the last good checkpoint (all of them when there is none) are a
//!    failure. An export of 0 records and 0 checkpoints is valid.
//!
//! The report names the *earliest* failure: header failures first, then
//! by the first record index the failure concerns. A checkpoint whose root
//! does not match names the first record that can differ: the size of the
//! previous good checkpoint, since every record before it is fixed by a root
//! the node signed. A checkpoint that cannot be used at all (it does not
//! parse, its signature does not verify, its size goes back) names no
//! record but is ordered at that same index, the first record it would have
//! covered. At one index, a record's own failure comes before a
//! checkpoint's, and a checkpoint's before a coverage failure. Failures of
//! the file as a whole (bytes after the last frame) come last. Indices of
//! records and checkpoints count from 0.
//!
//! # How it runs
//!
//! Records are read in chunks of 16,384 (at most 64 MiB). Only their leaf
//! hashes stay (the tree keeps about 64 bytes a record), with the other
//! party and the end of each contract (about 100 bytes a contract):
//! verifying an export of a million records from a file peaks at about
//! 200 MiB. Each chunk is split over
//! [`std::thread::available_parallelism`] threads that decode
//! the records without verifying as they go (a private mirror of
//! [`crate::record::Record`] that keeps signed parts as bytes, with the same
//! limits and key checks) and verify the signatures with
//! [`crate::keys::verify_batch`] in batches of [`SIGNATURE_BATCH_SIZE`];
//! only a batch that fails is verified again one by one with
//! `verify_strict` to name the bad record.
//!
//! Batch verification and `verify_strict` agree on every signature made by
//! Ed25519 signing and on every attempt to forge one without the key.
//! Signatures whose `R` is not canonically encoded or is of small order
//! (which `verify_strict` refuses and the batch equation might not) skip
//! the batch and go to `verify_strict` directly. What remains different is
//! a signature that a key's own holder deliberately built with a
//! small-order component (in `R`, or in a public key of mixed order): the
//! batch equation may accept it where `verify_strict` refuses. It still
//! shows that the key holder signed the message, so no record can claim a
//! signature its signer did not make.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::ops::Range;

use fulcrum_proto::v1 as wire;
use prost::Message as _;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, node_origin, verify_node_checkpoint};
use crate::contract::{ContractTerms, contract_id};
use crate::envelope::{Envelope, Kind, signing_input};
use crate::ids::ContractId;
use crate::keys::{PublicKey, SIGNATURE_LEN, serde_bytes_vec, verify_batch};
use crate::limits::Limits;
use crate::merkle::{Hash, MerkleTree, leaf_hash, verify_consistency};
use crate::rotation::KeyRotation;

/// The first line of every export of this version (without its line feed).
pub const FORMAT_LINE: &str = "fulcrum-audit-export v1";

/// The longest header, in bytes, including the empty line that ends it.
pub const MAX_HEADER_BYTES: usize = 4096;

/// The largest record payload, in bytes: the node's own limit on a record.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// The largest checkpoint payload, in bytes: the limit on a checkpoint note.
pub const MAX_CHECKPOINT_BYTES: usize = checkpoint::MAX_NOTE_BYTES;

/// How many signatures the verifier checks in one batch.
pub const SIGNATURE_BATCH_SIZE: usize = 1024;

/// Longest federation name in an export header, in bytes.
const MAX_FEDERATION_LEN: usize = 128;

/// Most records read before their signatures are checked (more on
/// machines with so many threads that each would get less than two batches).
const CHUNK_RECORDS: usize = 16_384;

/// Fewest records or checkpoints worth a thread of their own: starting a
/// thread costs about as much as checking a few signatures.
const MIN_PER_THREAD: usize = 16;

/// Most checkpoints read before their signatures are checked.
const CHUNK_CHECKPOINTS: usize = 4096;

/// Most payload bytes read before their signatures are checked.
const CHUNK_BYTES: usize = 64 << 20;

/// Header line names after the first, in their order.
const HEADER_FIELDS: [&str; 5] = ["node-key", "federation", "origin", "records", "checkpoints"];

/// The header of an export: whose log it is and how much of it follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportHeader {
    /// The node whose log this is; its checkpoints are signed by this key.
    pub node_key: PublicKey,
    /// The node's federation.
    pub federation: String,
    /// How many record frames follow.
    pub records: u64,
    /// How many checkpoint frames follow the records.
    pub checkpoints: u64,
}

impl ExportHeader {
    /// The origin (and key name) of the node's checkpoints:
    /// `fulcrum/<federation>/<node key hex>`.
    pub fn origin(&self) -> String {
        node_origin(&self.federation, &self.node_key)
    }

    /// The header exactly as it is written, empty line included.
    pub fn to_text(&self) -> String {
        format!(
            "{FORMAT_LINE}\nnode-key {}\nfederation {}\norigin {}\nrecords {}\ncheckpoints {}\n\n",
            self.node_key,
            self.federation,
            self.origin(),
            self.records,
            self.checkpoints,
        )
    }

    /// Checks what the struct's types cannot: the federation name and the
    /// header's length.
    fn validate(&self) -> Result<(), String> {
        if !is_valid_federation(&self.federation) {
            return Err(format!(
                "federation {:?} is not 1 to {MAX_FEDERATION_LEN} bytes without whitespace, control characters or '+'",
                truncated(&self.federation)
            ));
        }
        let len = self.to_text().len();
        if len > MAX_HEADER_BYTES {
            return Err(format!("header of {len} bytes exceeds the limit of {MAX_HEADER_BYTES}"));
        }
        Ok(())
    }

    /// Parses the header bytes, empty line included.
    fn parse(bytes: &[u8]) -> Result<ExportHeader, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "header is not UTF-8".to_owned())?;
        let body = text.strip_suffix("\n\n").ok_or_else(|| "header does not end with an empty line".to_owned())?;
        let mut lines = body.split('\n');
        match lines.next() {
            Some(FORMAT_LINE) => {}
            Some(line) if line.starts_with("fulcrum-audit-export ") => {
                return Err(format!("unsupported export version {:?} (this verifier reads v1)", truncated(line)));
            }
            _ => return Err(format!("not a Fulcrum audit export: the first line is not {FORMAT_LINE:?}")),
        }
        let mut values: Vec<&str> = Vec::with_capacity(HEADER_FIELDS.len());
        for (position, expected) in HEADER_FIELDS.iter().enumerate() {
            let Some(line) = lines.next() else {
                return Err(format!("header line {:?} is missing", expected));
            };
            let (name, value) = line.split_once(' ').unwrap_or((line, ""));
            if name == *expected {
                values.push(value);
                continue;
            }
            return Err(match HEADER_FIELDS.iter().position(|field| *field == name) {
                Some(at) if at < position => format!("header line {name:?} appears twice"),
                Some(_) => format!("header line {expected:?} is missing (found {name:?} in its place)"),
                None => format!("unknown header line {:?} where {expected:?} belongs", truncated(line)),
            });
        }
        if let Some(line) = lines.next() {
            let name = line.split_once(' ').map_or(line, |(name, _)| name);
            return Err(if HEADER_FIELDS.contains(&name) {
                format!("header line {name:?} appears twice")
            } else {
                format!("unknown header line {:?} after \"checkpoints\"", truncated(line))
            });
        }
        let [key_hex, federation, origin, records, checkpoints] = values.as_slice() else {
            return Err("header is incomplete".to_owned());
        };
        if key_hex.len() != 64 || !key_hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(format!("node-key {:?} is not 64 lowercase hex digits", truncated(key_hex)));
        }
        let node_key = PublicKey::from_hex(key_hex)
            .map_err(|_| format!("node-key {key_hex} is not a valid Ed25519 public key"))?;
        if !is_valid_federation(federation) {
            return Err(format!(
                "federation {:?} is not 1 to {MAX_FEDERATION_LEN} bytes without whitespace, control characters or '+'",
                truncated(federation)
            ));
        }
        let header = ExportHeader {
            node_key,
            federation: (*federation).to_owned(),
            records: parse_count("records", records)?,
            checkpoints: parse_count("checkpoints", checkpoints)?,
        };
        let expected_origin = header.origin();
        if *origin != expected_origin {
            return Err(format!("origin {:?} is not {expected_origin:?}", truncated(origin)));
        }
        Ok(header)
    }
}

/// Federation names an export may carry (see the module docs).
fn is_valid_federation(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FEDERATION_LEN
        && name.chars().all(|c| !c.is_whitespace() && !c.is_control() && c != '+')
}

/// A canonical decimal u64: "0" or digits without a leading zero.
fn parse_count(name: &str, value: &str) -> Result<u64, String> {
    let canonical =
        !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) && (value == "0" || !value.starts_with('0'));
    if !canonical {
        return Err(format!("{name} {:?} is not a canonical decimal number", truncated(value)));
    }
    value.parse().map_err(|_| format!("{name} {:?} does not fit in 64 bits", truncated(value)))
}

/// At most 64 characters of untrusted text, for error messages.
fn truncated(s: &str) -> String {
    s.chars().take(64).collect()
}

/// One frame as it is written: length, CRC32C, payload.
fn write_frame<W: Write>(w: &mut W, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| invalid_input("frame payload does not fit in a u32 length"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(&crc32c::crc32c(payload).to_le_bytes())?;
    w.write_all(payload)
}

fn invalid_input(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message.into())
}

/// Writes an export as a stream: the header at once, then each record and
/// each checkpoint as it is handed over. It refuses anything that would
/// make the file fail verification structurally: more records or
/// checkpoints than the header announces, a record after a checkpoint, a
/// payload over its limit, and, at [`finish`](Self::finish), fewer than
/// announced. It does not check the records' contents.
///
/// Writes go straight to `W`; wrap a file in a [`std::io::BufWriter`].
pub struct ExportWriter<W: Write> {
    out: W,
    header: ExportHeader,
    records: u64,
    checkpoints: u64,
}

impl<W: Write> fmt::Debug for ExportWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportWriter")
            .field("header", &self.header)
            .field("records", &self.records)
            .field("checkpoints", &self.checkpoints)
            .finish_non_exhaustive()
    }
}

impl<W: Write> ExportWriter<W> {
    /// Checks the header and writes it.
    pub fn new(mut out: W, header: ExportHeader) -> io::Result<Self> {
        header.validate().map_err(invalid_input)?;
        out.write_all(header.to_text().as_bytes())?;
        Ok(Self { out, header, records: 0, checkpoints: 0 })
    }

    /// Writes the next record: its CBOR bytes exactly as in the log.
    pub fn record(&mut self, cbor: &[u8]) -> io::Result<()> {
        if self.checkpoints > 0 {
            return Err(invalid_input("a record cannot follow a checkpoint: write every record first"));
        }
        if self.records >= self.header.records {
            return Err(invalid_input(format!("the header announces {} records", self.header.records)));
        }
        if cbor.is_empty() || cbor.len() > MAX_RECORD_BYTES {
            return Err(invalid_input(format!("a record is 1 to {MAX_RECORD_BYTES} bytes, not {}", cbor.len())));
        }
        write_frame(&mut self.out, cbor)?;
        self.records += 1;
        Ok(())
    }

    /// Writes the next checkpoint: a signed note exactly as the node signed it.
    pub fn checkpoint(&mut self, note: &str) -> io::Result<()> {
        if self.checkpoints >= self.header.checkpoints {
            return Err(invalid_input(format!("the header announces {} checkpoints", self.header.checkpoints)));
        }
        if note.is_empty() || note.len() > MAX_CHECKPOINT_BYTES {
            return Err(invalid_input(format!(
                "a checkpoint is 1 to {MAX_CHECKPOINT_BYTES} bytes, not {}",
                note.len()
            )));
        }
        write_frame(&mut self.out, note.as_bytes())?;
        self.checkpoints += 1;
        Ok(())
    }

    /// Checks that everything the header announces was written, flushes and
    /// returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        if self.records != self.header.records || self.checkpoints != self.header.checkpoints {
            return Err(invalid_input(format!(
                "wrote {} records and {} checkpoints, the header announces {} and {}",
                self.records, self.checkpoints, self.header.records, self.header.checkpoints
            )));
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

/// The first thing found wrong with an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditFailure {
    /// The first record (from 0) the failure concerns, if it concerns records.
    pub record: Option<u64>,
    /// The checkpoint (from 0) the failure concerns, if one does.
    pub checkpoint: Option<u64>,
    /// What is wrong, in one line.
    pub reason: String,
}

impl fmt::Display for AuditFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.record, self.checkpoint) {
            (Some(r), Some(c)) => write!(f, "record {r} (checkpoint #{c}): {}", self.reason),
            (Some(r), None) => write!(f, "record {r}: {}", self.reason),
            (None, Some(c)) => write!(f, "checkpoint #{c}: {}", self.reason),
            (None, None) => write!(f, "the end of the file: {}", self.reason),
        }
    }
}

/// What an audit found: what the export holds and the first failure, if any.
/// Keys and hashes are lowercase hex, so the JSON form is plain text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// The node whose log this is (None if the header could not be read).
    pub node_key: Option<String>,
    /// Its federation (None if the header could not be read).
    pub federation: Option<String>,
    /// Record frames read.
    pub records: u64,
    /// Countersigned contract records among them.
    pub contracts: u64,
    /// Pending (consumer-signed) contract records.
    pub pending: u64,
    /// Abandoned records.
    pub abandoned: u64,
    /// Offer records.
    pub offers: u64,
    /// Termination records.
    pub terminations: u64,
    /// Expiry records (contracts that reached their end time).
    pub expiries: u64,
    /// Evidence records.
    pub evidence: u64,
    /// Revocation records (authority signatures checked; whether the
    /// authorities are the charter's is for the auditor to compare).
    pub revocations: u64,
    /// Placement records (unsigned; each contract a final one names must be
    /// earlier in the log).
    pub placements: u64,
    /// Key rotation records (both keys' signatures checked).
    pub rotations: u64,
    /// Succession records: other parties' key rotations (both keys'
    /// signatures checked).
    pub successions: u64,
    /// The node's key after the last record read: `node_key`, or the key
    /// the last rotation handed over to (None if the header could not be read).
    pub node_key_now: Option<String>,
    /// Record signatures that verified.
    pub signatures_verified: u64,
    /// Checkpoint frames read.
    pub checkpoints: u64,
    /// Size of the Merkle tree over the records read.
    pub tree_size: u64,
    /// Its root, hex; for a valid export, the last checkpoint's root.
    pub root: String,
    /// The earliest failure; None when the export is valid.
    pub first_failure: Option<AuditFailure>,
}

impl AuditReport {
    /// True when nothing failed.
    pub fn is_ok(&self) -> bool {
        self.first_failure.is_none()
    }
}

impl fmt::Display for AuditReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (Some(key), Some(federation)) = (&self.node_key, &self.federation) else {
            // The header could not be read: nothing else was looked at.
            let reason = self.first_failure.as_ref().map_or("no header", |failure| failure.reason.as_str());
            return write!(f, "FAILED: {reason}");
        };
        write!(f, "node {key} of {federation}: ")?;
        write!(
            f,
            "{} records ({} contracts, {} pending, {} abandoned, {} offers, {} terminations, {} expiries, \
             {} evidence, {} revocations, {} placements), {} signatures verified, {} checkpoints, tree size {}, \
             root {}: ",
            self.records,
            self.contracts,
            self.pending,
            self.abandoned,
            self.offers,
            self.terminations,
            self.expiries,
            self.evidence,
            self.revocations,
            self.placements,
            self.signatures_verified,
            self.checkpoints,
            self.tree_size,
            self.root
        )?;
        if self.rotations > 0 {
            let now = self.node_key_now.as_deref().unwrap_or("?");
            write!(f, "key rotated {} times, now {now}: ", self.rotations)?;
        }
        match &self.first_failure {
            None => f.write_str("OK"),
            Some(failure) => write!(f, "FAILED at {failure}"),
        }
    }
}

/// Verifies an export read from `reader` (see the module docs for what is
/// checked). Reads it once, front to back, buffering internally; the memory
/// used grows with the number of records (about 64 bytes each for the tree,
/// plus the other party of each contract), not with the file's size.
pub fn verify_export<R: Read>(reader: R) -> AuditReport {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    // Enough records that every thread gets a few full batches.
    let chunk_records = CHUNK_RECORDS.max(threads.saturating_mul(2 * SIGNATURE_BATCH_SIZE));
    let tuning = Tuning {
        threads,
        min_per_thread: MIN_PER_THREAD,
        chunk_records,
        chunk_checkpoints: CHUNK_CHECKPOINTS,
        batch: SIGNATURE_BATCH_SIZE,
    };
    Verifier::new(tuning).run(reader)
}

/// Knobs the tests turn to reach chunk and batch boundaries with few records.
#[derive(Debug, Clone, Copy)]
struct Tuning {
    threads: usize,
    /// Fewest items worth a thread of their own.
    min_per_thread: usize,
    chunk_records: usize,
    chunk_checkpoints: usize,
    batch: usize,
}

/// The ordering of failures: header first, then by the first record they
/// concern; at one record, the record's own failure before a checkpoint's,
/// and a checkpoint's before the coverage failure; then first found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Record,
    Checkpoint,
    Coverage,
}

#[derive(Debug)]
struct Verifier {
    tuning: Tuning,
    report: AuditReport,
    best: Option<(u64, Class)>,
    tree: MerkleTree,
    /// Each contract seen so far in the log.
    contracts: HashMap<ContractId, Known>,
    parties: Vec<PublicKey>,
    party_index: HashMap<PublicKey, u32>,
    /// The rotation records read so far: (index, the key it hands over to).
    handovers: Vec<(u64, PublicKey)>,
    /// Other parties' keys that took over from other keys, by the
    /// succession records read so far.
    successors: HashMap<PublicKey, PublicKey>,
}

/// The node's key at each point of the log: the header's key, then the key
/// each rotation record hands over to.
#[derive(Debug, Clone, Copy)]
struct NodeKeys<'a> {
    first: PublicKey,
    /// (index of the rotation record, the key it hands over to), in order.
    handovers: &'a [(u64, PublicKey)],
}

impl NodeKeys<'_> {
    /// The key in use after the last record read.
    fn now(&self) -> PublicKey {
        self.handovers.last().map_or(self.first, |(_, key)| *key)
    }

    /// The key that signs a checkpoint of `size` records: the key in use
    /// after record `size - 1`.
    fn at_size(&self, size: u64) -> PublicKey {
        self.handovers.iter().take_while(|(index, _)| *index < size).last().map_or(self.first, |(_, key)| *key)
    }
}

/// What the sequential checks keep of a contract seen in the log.
#[derive(Debug, Clone, Copy)]
struct Known {
    /// The other party, as an index into `parties`.
    party: u32,
    /// The contract's end, Unix ms.
    end_ms: u64,
    /// The record that terminated or expired it, if one has.
    ended_at: Option<u64>,
}

/// A record frame read into a chunk.
#[derive(Debug, Clone)]
struct Frame {
    payload: Range<usize>,
    crc_ok: bool,
}

/// What a worker learned about one record.
#[derive(Debug)]
struct Outcome {
    leaf: Hash,
    kind: Option<RecordType>,
    signatures_verified: u64,
    /// `result` is the failure of a signature.
    signature_failed: bool,
    result: Result<Summary, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecordType {
    Offer,
    Contract,
    Pending,
    Abandoned,
    Termination,
    Expiry,
    Evidence,
    Revocation,
    Placement,
    Rotation,
    Succession,
}

/// What the sequential checks need of a record that passed its own checks.
#[derive(Debug)]
enum Summary {
    Plain,
    Contract { id: ContractId, other: PublicKey, end_ms: u64 },
    Termination { contract_id: ContractId, signer: PublicKey },
    Expiry { contract_id: ContractId, at_ms: u64 },
    Placement { contracts: Vec<ContractId> },
    Rotation { old: PublicKey, new: PublicKey, seq: u64, log_size: u64, log_root: Hash },
    Succession { old: PublicKey, new: PublicKey },
}

/// Why reading frames stopped early.
enum Stop {
    /// End of file exactly at a frame boundary.
    End,
    /// Framing can no longer be trusted.
    Broken(String),
}

impl Verifier {
    fn new(tuning: Tuning) -> Self {
        Self {
            tuning: Tuning {
                threads: tuning.threads.max(1),
                min_per_thread: tuning.min_per_thread.max(1),
                chunk_records: tuning.chunk_records.max(1),
                chunk_checkpoints: tuning.chunk_checkpoints.max(1),
                batch: tuning.batch.max(1),
            },
            report: AuditReport {
                node_key: None,
                federation: None,
                records: 0,
                contracts: 0,
                pending: 0,
                abandoned: 0,
                offers: 0,
                terminations: 0,
                expiries: 0,
                evidence: 0,
                revocations: 0,
                placements: 0,
                rotations: 0,
                successions: 0,
                node_key_now: None,
                signatures_verified: 0,
                checkpoints: 0,
                tree_size: 0,
                root: hex::encode(crate::merkle::empty_root()),
                first_failure: None,
            },
            best: None,
            tree: MerkleTree::new(),
            contracts: HashMap::new(),
            parties: Vec::new(),
            party_index: HashMap::new(),
            handovers: Vec::new(),
            successors: HashMap::new(),
        }
    }

    /// Keeps a checkpoint's or the coverage failure about records
    /// `[position, until)` unless a record in that range failed on its own:
    /// that record (or the framing it broke) is the damage the checkpoints
    /// show, and stays the one named.
    fn fail_over(
        &mut self,
        position: u64,
        until: u64,
        class: Class,
        record: Option<u64>,
        checkpoint: Option<u64>,
        reason: String,
    ) {
        if matches!(self.best, Some((p, Class::Record)) if (position..until).contains(&p)) {
            return;
        }
        self.fail(position, class, record, checkpoint, reason);
    }

    /// Keeps `failure` if it comes before the one held.
    fn fail(&mut self, position: u64, class: Class, record: Option<u64>, checkpoint: Option<u64>, reason: String) {
        if self.best.is_none_or(|best| (position, class) < best) {
            self.best = Some((position, class));
            self.report.first_failure = Some(AuditFailure { record, checkpoint, reason });
        }
    }

    fn run<R: Read>(mut self, reader: R) -> AuditReport {
        let mut reader = BufReader::with_capacity(256 * 1024, reader);
        let header = match read_header(&mut reader) {
            Ok(header) => header,
            Err(reason) => {
                self.report.first_failure = Some(AuditFailure { record: None, checkpoint: None, reason });
                return self.report;
            }
        };
        self.report.node_key = Some(header.node_key.to_string());
        self.report.federation = Some(header.federation.clone());

        let complete = self.read_records(&mut reader, &header);
        self.report.node_key_now = Some(self.keys(&header).now().to_string());
        self.report.tree_size = self.tree.len();
        self.report.root = hex::encode(self.tree.root());
        if complete {
            self.read_checkpoints(&mut reader, &header);
        }
        self.report
    }

    /// Reads and checks the record frames; false if the file could not be
    /// read up to the checkpoints.
    fn read_records<R: Read>(&mut self, reader: &mut R, header: &ExportHeader) -> bool {
        let mut data = Vec::new();
        let mut frames = Vec::new();
        let mut index = 0u64;
        while index < header.records {
            data.clear();
            frames.clear();
            let first = index;
            let mut stop = None;
            while index < header.records && frames.len() < self.tuning.chunk_records && data.len() < CHUNK_BYTES {
                match read_frame(reader, MAX_RECORD_BYTES, &mut data) {
                    Ok(frame) => {
                        frames.push(frame);
                        index += 1;
                    }
                    Err(s) => {
                        stop = Some(s);
                        break;
                    }
                }
            }
            self.check_chunk(first, &frames, &data, header);
            if let Some(stop) = stop {
                let reason = match stop {
                    Stop::End => format!(
                        "the file ends before record frame {index}, but the header announces {} records",
                        header.records
                    ),
                    Stop::Broken(why) => why,
                };
                self.fail(index, Class::Record, Some(index), None, reason);
                return false;
            }
        }
        true
    }

    /// Checks one chunk of records (on worker threads), then feeds the
    /// results to the tree and the sequential checks in log order.
    fn check_chunk(&mut self, first: u64, frames: &[Frame], data: &[u8], header: &ExportHeader) {
        if frames.is_empty() {
            return;
        }
        let chunk_key = self.keys(header).now();
        let context = Context { node: chunk_key, federation: &header.federation, batch: self.tuning.batch };
        let outcomes = in_parallel(
            frames,
            &self.tuning,
            |part| check_records(part, data, &context),
            |frame| Outcome {
                leaf: leaf_hash(data.get(frame.payload.clone()).unwrap_or_default()),
                kind: None,
                signatures_verified: 0,
                signature_failed: false,
                result: Err("internal error: the verifier thread failed".to_owned()),
            },
        );
        for (offset, mut outcome) in outcomes.into_iter().enumerate() {
            let index = first + offset as u64;
            let node = self.keys(header).now();
            let payload = frames.get(offset).filter(|f| f.crc_ok).and_then(|f| data.get(f.payload.clone()));
            if node != chunk_key && !outcome.signature_failed {
                // A rotation earlier in this chunk handed the node's key
                // over: what names the node is checked again with the key
                // in use here (signatures do not depend on it).
                if let Some(Ok((raw, 0))) = payload.map(parse_record) {
                    outcome.result = check_alone(&raw, &Context { node, ..context });
                }
            }
            self.tree.push_leaf_hash(outcome.leaf);
            self.report.records += 1;
            self.report.signatures_verified += outcome.signatures_verified;
            match outcome.kind {
                Some(RecordType::Offer) => self.report.offers += 1,
                Some(RecordType::Contract) => self.report.contracts += 1,
                Some(RecordType::Pending) => self.report.pending += 1,
                Some(RecordType::Abandoned) => self.report.abandoned += 1,
                Some(RecordType::Termination) => self.report.terminations += 1,
                Some(RecordType::Expiry) => self.report.expiries += 1,
                Some(RecordType::Evidence) => self.report.evidence += 1,
                Some(RecordType::Revocation) => self.report.revocations += 1,
                Some(RecordType::Placement) => self.report.placements += 1,
                Some(RecordType::Rotation) => self.report.rotations += 1,
                Some(RecordType::Succession) => self.report.successions += 1,
                None => {}
            }
            match outcome.result {
                Ok(Summary::Plain) => {}
                Ok(Summary::Contract { id, other, end_ms }) => {
                    let party = self.party(other);
                    // A contract logged again keeps what is known of it.
                    self.contracts.entry(id).or_insert(Known { party, end_ms, ended_at: None });
                }
                Ok(Summary::Termination { contract_id, signer }) => {
                    if let Some(known) = self.contracts.get_mut(&contract_id) {
                        known.ended_at.get_or_insert(index);
                    }
                    if signer != node {
                        let other = self.contracts.get(&contract_id).and_then(|k| self.parties.get(k.party as usize));
                        let reason = match other {
                            Some(other) if self.speaks_for(other, &signer) => None,
                            Some(other) => Some(format!(
                                "termination of contract {contract_id} is signed by {signer}, \
                                 neither the node nor the contract's other party {other}"
                            )),
                            None => Some(format!(
                                "termination of contract {contract_id} is signed by {signer}, not by the node, \
                                 and the contract is not earlier in the log"
                            )),
                        };
                        if let Some(reason) = reason {
                            self.fail(index, Class::Record, Some(index), None, reason);
                        }
                    }
                }
                Ok(Summary::Expiry { contract_id, at_ms }) => {
                    let reason = match self.contracts.get_mut(&contract_id) {
                        None => Some(format!("expiry of contract {contract_id}, which is not earlier in the log")),
                        Some(known) if at_ms < known.end_ms => Some(format!(
                            "expiry of contract {contract_id} recorded at {at_ms}, before its end at {}",
                            known.end_ms
                        )),
                        Some(Known { ended_at: Some(at), .. }) => {
                            Some(format!("expiry of contract {contract_id}, which already ended at record {at}"))
                        }
                        Some(known) => {
                            known.ended_at = Some(index);
                            None
                        }
                    };
                    if let Some(reason) = reason {
                        self.fail(index, Class::Record, Some(index), None, reason);
                    }
                }
                Ok(Summary::Placement { contracts }) => {
                    if let Some(missing) = contracts.iter().find(|id| !self.contracts.contains_key(id)) {
                        let reason =
                            format!("placement record names contract {missing}, which is not earlier in the log");
                        self.fail(index, Class::Record, Some(index), None, reason);
                    }
                }
                Ok(Summary::Succession { old, new }) => {
                    if self.keys(header).now() == old || self.keys(header).first == old {
                        let reason = format!("succession of the node's own key {old}; that is a rotation record");
                        self.fail(index, Class::Record, Some(index), None, reason);
                    } else {
                        self.successors.insert(old, new);
                    }
                }
                Ok(Summary::Rotation { old, new, seq, log_size, log_root }) => {
                    let checked =
                        self.check_rotation(index, node, header.node_key, (old, new, seq, log_size, log_root));
                    // Handed over even when refused: the export fails here
                    // either way, and what follows is then judged as the
                    // node meant it, not reported as a later failure.
                    self.handovers.push((index, new));
                    if let Err(reason) = checked {
                        self.fail(index, Class::Record, Some(index), None, reason);
                    }
                }
                Err(reason) => {
                    if let Some(Ok((Raw::Rotation(r), _))) = payload.map(parse_record) {
                        self.handovers.push((index, r.body().new_key));
                    }
                    self.fail(index, Class::Record, Some(index), None, reason);
                }
            }
        }
    }

    /// True when `signer` is `named`, or a key that took over from it by the
    /// successions read so far.
    fn speaks_for(&self, named: &PublicKey, signer: &PublicKey) -> bool {
        let mut key = named;
        for _ in 0..=self.successors.len() {
            if key == signer {
                return true;
            }
            match self.successors.get(key) {
                Some(next) => key = next,
                None => return false,
            }
        }
        false
    }

    /// The node's keys along the records read so far.
    fn keys(&self, header: &ExportHeader) -> NodeKeys<'_> {
        NodeKeys { first: header.node_key, handovers: &self.handovers }
    }

    /// The checks of a rotation record at `index` that depend on the log:
    /// it hands over from the node's key here, it is the next rotation, and
    /// it names the log just before it.
    fn check_rotation(
        &self,
        index: u64,
        node: PublicKey,
        first: PublicKey,
        (old, new, seq, log_size, log_root): (PublicKey, PublicKey, u64, u64, Hash),
    ) -> Result<(), String> {
        if old != node {
            return Err(format!("rotation hands over from {old}, but the node's key at this point is {node}"));
        }
        let expected = self.handovers.len() as u64 + 1;
        if seq != expected {
            return Err(format!("rotation is numbered {seq}, but it is the node's rotation number {expected}"));
        }
        if log_size != index {
            return Err(format!("rotation names a log of {log_size} records, but it is record {index}"));
        }
        if self.tree.root_at(index).ok() != Some(log_root) {
            return Err(format!("rotation names a log root that is not the root of the {index} records before it"));
        }
        if new == first || self.handovers.iter().any(|(_, key)| *key == new) {
            return Err(format!("rotation hands over to {new}, a key the log used before"));
        }
        Ok(())
    }

    fn party(&mut self, key: PublicKey) -> u32 {
        if let Some(index) = self.party_index.get(&key) {
            return *index;
        }
        // More than 2^32 distinct parties cannot come from the records of
        // one export that fits in memory; saturate rather than wrap.
        let index = u32::try_from(self.parties.len()).unwrap_or(u32::MAX);
        self.parties.push(key);
        self.party_index.insert(key, index);
        index
    }

    /// Reads and checks the checkpoint frames, then the coverage.
    fn read_checkpoints<R: Read>(&mut self, reader: &mut R, header: &ExportHeader) {
        let records = self.tree.len();
        // The last checkpoint that passed every check: (index, size, root).
        let mut good: Option<(u64, u64, Hash)> = None;
        let mut data = Vec::new();
        let mut frames = Vec::new();
        let mut number = 0u64;
        while number < header.checkpoints {
            // Read a chunk, check the notes and their signatures in
            // parallel, then everything that depends on order here.
            data.clear();
            frames.clear();
            let mut stop = None;
            while number + (frames.len() as u64) < header.checkpoints && frames.len() < self.tuning.chunk_checkpoints {
                match read_frame(reader, MAX_CHECKPOINT_BYTES, &mut data) {
                    Ok(frame) => frames.push(frame),
                    Err(s) => {
                        stop = Some(s);
                        break;
                    }
                }
            }
            let keys = self.keys(header);
            let notes = in_parallel(
                &frames,
                &self.tuning,
                |part| part.iter().map(|frame| check_note(frame, &data, header, keys)).collect(),
                |_| Err("internal error: the verifier thread failed".to_owned()),
            );
            for note in notes {
                let k = number;
                number += 1;
                self.report.checkpoints += 1;
                let good_size = good.map_or(0, |(_, size, _)| size);
                let (size, root) = match note {
                    Ok(size_root) => size_root,
                    Err(reason) => {
                        self.fail(good_size, Class::Checkpoint, None, Some(k), reason);
                        continue;
                    }
                };
                if let Err((record, reason)) = self.check_checkpoint(k, size, root, good, records) {
                    self.fail_over(good_size, size.max(good_size + 1), Class::Checkpoint, record, Some(k), reason);
                    continue;
                }
                good = Some((k, size, root));
            }
            if let Some(stop) = stop {
                let good_size = good.map_or(0, |(_, size, _)| size);
                let reason = match stop {
                    Stop::End => format!(
                        "the file ends before checkpoint frame #{number}, but the header announces {} checkpoints",
                        header.checkpoints
                    ),
                    Stop::Broken(why) => why,
                };
                self.fail_over(good_size, u64::MAX, Class::Checkpoint, None, Some(number), reason);
                return;
            }
        }
        // Count what follows, up to a point: a stream that never ends is
        // not worth reading to its end.
        const TRAILING_COUNT_LIMIT: u64 = 1 << 30;
        let mut rest = [0u8; 4096];
        let mut trailing = 0u64;
        loop {
            match reader.read(&mut rest) {
                Ok(0) => break,
                Ok(_) if trailing >= TRAILING_COUNT_LIMIT => break,
                Ok(n) => trailing += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(u64::MAX, Class::Coverage, None, None, format!("read error after the last frame: {e}"));
                    break;
                }
            }
        }
        if trailing > 0 {
            let at_least = if trailing >= TRAILING_COUNT_LIMIT { "at least " } else { "" };
            let reason = format!(
                "{at_least}{trailing} bytes follow the last of the {} checkpoint frames the header announces",
                header.checkpoints
            );
            self.fail(u64::MAX, Class::Coverage, None, None, reason);
        }
        let covered = good.map_or(0, |(_, size, _)| size);
        if covered < records {
            let reason = format!("records [{covered}, {records}) are not covered by any checkpoint signed by the node");
            self.fail_over(covered, u64::MAX, Class::Coverage, Some(covered), None, reason);
        }
    }

    /// The checks of checkpoint #`k` (size and root as signed) that depend
    /// on the records and on the last good checkpoint; a failure names the
    /// first record it concerns, if it concerns records.
    fn check_checkpoint(
        &self,
        k: u64,
        size: u64,
        root: Hash,
        good: Option<(u64, u64, Hash)>,
        records: u64,
    ) -> Result<(), (Option<u64>, String)> {
        let good_size = good.map_or(0, |(_, size, _)| size);
        if let Some((previous, previous_size, previous_root)) = good {
            if size < previous_size {
                return Err((
                    None,
                    format!("size {size} is smaller than the size {previous_size} of checkpoint #{previous}"),
                ));
            }
            if size == previous_size && root != previous_root {
                return Err((
                    None,
                    format!(
                        "checkpoint #{k} and checkpoint #{previous} have the same size {size} and different roots: \
                         the node signed two histories"
                    ),
                ));
            }
        }
        if size > records {
            return Err((
                Some(good_size),
                format!(
                    "checkpoint #{k} has size {size} but the export has {records} records: \
                     records [{records}, {size}) are missing"
                ),
            ));
        }
        match self.tree.root_at(size) {
            Ok(actual) if actual == root => {}
            _ => {
                let reason = format!("records [{good_size}, {size}) do not match checkpoint #{k} (size {size})");
                return Err((Some(good_size), reason));
            }
        }
        if let Some((previous, previous_size, previous_root)) = good {
            let consistent =
                self.tree.consistency_proof(previous_size, size).map_err(|e| e.to_string()).and_then(|proof| {
                    verify_consistency(previous_size, size, &previous_root, &root, &proof).map_err(|e| e.to_string())
                });
            if let Err(e) = consistent {
                let reason = format!("checkpoint #{k} is not consistent with checkpoint #{previous}: {e}");
                return Err((Some(good_size), reason));
            }
        }
        Ok(())
    }
}

/// Reads the header up to and including its empty line.
fn read_header<R: BufRead>(reader: &mut R) -> Result<ExportHeader, String> {
    let mut bytes = Vec::with_capacity(512);
    let mut limited = reader.take(MAX_HEADER_BYTES as u64);
    loop {
        let before = bytes.len();
        let read = limited.read_until(b'\n', &mut bytes).map_err(|e| format!("read error in the header: {e}"))?;
        if before == 0 {
            // Say at once when this is not an export at all, rather than
            // read on through binary data looking for the end of a header.
            check_first_line(&bytes)?;
        }
        if read == 0 {
            return Err(if bytes.len() >= MAX_HEADER_BYTES {
                format!("header is longer than {MAX_HEADER_BYTES} bytes")
            } else {
                "the file ends inside the header".to_owned()
            });
        }
        if &bytes[before..] == b"\n" {
            break;
        }
    }
    ExportHeader::parse(&bytes)
}

/// Checks the first line (as read, with its line feed if it has one).
fn check_first_line(line: &[u8]) -> Result<(), String> {
    let format = FORMAT_LINE.as_bytes();
    match line.strip_suffix(b"\n") {
        Some(l) if l == format => Ok(()),
        None if line == format => Ok(()),
        None if line.is_empty() => Err("the file is empty".to_owned()),
        Some(l) if l.strip_suffix(b"\r") == Some(format) => {
            Err("header lines end in CR LF; the format uses LF only".to_owned())
        }
        _ if line.starts_with(b"fulcrum-audit-export ") => {
            let version = String::from_utf8_lossy(line);
            Err(format!("unsupported export version {:?} (this verifier reads v1)", truncated(version.trim_end())))
        }
        _ => Err(format!("not a Fulcrum audit export: the first line is not {FORMAT_LINE:?}")),
    }
}

/// Reads `buf.len()` bytes or up to the end of the file; returns how many.
fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads one frame, appending its payload to `data`.
fn read_frame<R: Read>(reader: &mut R, max: usize, data: &mut Vec<u8>) -> Result<Frame, Stop> {
    let mut head = [0u8; 8];
    let got = read_full(reader, &mut head).map_err(|e| Stop::Broken(format!("read error: {e}")))?;
    if got == 0 {
        return Err(Stop::End);
    }
    if got < head.len() {
        return Err(Stop::Broken(format!("the file ends inside the frame header ({got} of 8 bytes)")));
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len == 0 || len > max {
        return Err(Stop::Broken(format!("payload length {len} is not between 1 and {max}")));
    }
    let start = data.len();
    let read = reader.take(len as u64).read_to_end(data).map_err(|e| Stop::Broken(format!("read error: {e}")))?;
    if read < len {
        return Err(Stop::Broken(format!("the file ends inside the payload ({read} of {len} bytes)")));
    }
    let payload = start..start + len;
    let crc_ok = data.get(payload.clone()).is_some_and(|p| crc32c::crc32c(p) == crc);
    Ok(Frame { payload, crc_ok })
}

/// Runs `work` over `items` split into one run per thread, of at least
/// `tuning.min_per_thread` items (on this thread alone when that makes one
/// run), and returns the results in order. A run
/// whose thread panicked gets `failed` for each item; a run for which no
/// thread could be started is done here.
fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    tuning: &Tuning,
    work: impl Fn(&[T]) -> Vec<R> + Sync,
    failed: impl Fn(&T) -> R,
) -> Vec<R> {
    let per_thread = items.len().div_ceil(tuning.threads.max(1)).max(tuning.min_per_thread).max(1);
    if per_thread >= items.len() {
        return work(items);
    }
    std::thread::scope(|scope| {
        let work = &work;
        let spawned: Vec<_> = items
            .chunks(per_thread)
            .map(|part| {
                (part, std::thread::Builder::new().name("fulcrum-audit".into()).spawn_scoped(scope, move || work(part)))
            })
            .collect();
        let mut results = Vec::with_capacity(items.len());
        for (part, handle) in spawned {
            match handle {
                Ok(handle) => match handle.join() {
                    Ok(done) => results.extend(done),
                    // A panic is a bug: report the items as failed rather
                    // than pass them or bring the auditor down.
                    Err(_) => results.extend(part.iter().map(&failed)),
                },
                Err(_) => results.extend(work(part)),
            }
        }
        results
    })
}

/// The checks of one checkpoint frame that need nothing but the note: its
/// CRC, its form, its origin and the node's signature. Returns the signed
/// size and root.
fn check_note(frame: &Frame, data: &[u8], header: &ExportHeader, keys: NodeKeys<'_>) -> Result<(u64, Hash), String> {
    let bytes = data.get(frame.payload.clone()).unwrap_or_default();
    if !frame.crc_ok {
        return Err("CRC32C mismatch".to_owned());
    }
    let Ok(note) = std::str::from_utf8(bytes) else {
        let hint = if bytes.first().is_some_and(|b| (0xa0..=0xbf).contains(b)) {
            " (it looks like a CBOR record: does the header announce too few records?)"
        } else {
            ""
        };
        return Err(format!("not a UTF-8 note{hint}"));
    };
    match verify_node_checkpoint(note, &header.federation) {
        Ok((key, signed)) if key != keys.at_size(signed.checkpoint().size) => {
            if keys.handovers.is_empty() {
                Err(format!("signed by node {key}, not by the export's node"))
            } else {
                let size = signed.checkpoint().size;
                Err(format!("signed by {key}, not by {}, the node's key at size {size}", keys.at_size(size)))
            }
        }
        Ok((_, signed)) => Ok((signed.checkpoint().size, signed.checkpoint().root)),
        Err(e) => Err(format!("not a valid node checkpoint: {e}")),
    }
}

/// What the record checks need besides the records.
#[derive(Debug)]
struct Context<'a> {
    node: PublicKey,
    federation: &'a str,
    batch: usize,
}

/// A signature to check: `signature` by `key` over `messages[message]`.
#[derive(Debug)]
struct SigItem {
    record: usize,
    label: &'static str,
    message: usize,
    signature: [u8; SIGNATURE_LEN],
    key: PublicKey,
}

/// Checks a run of records on one thread: leaf hashes, decoding, the
/// checks each record allows alone, and all of their signatures.
fn check_records(frames: &[Frame], data: &[u8], context: &Context<'_>) -> Vec<Outcome> {
    let mut outcomes = Vec::with_capacity(frames.len());
    let mut messages: Vec<Vec<u8>> = Vec::with_capacity(frames.len());
    let mut items: Vec<SigItem> = Vec::with_capacity(frames.len() * 2);
    for (record, frame) in frames.iter().enumerate() {
        let payload = data.get(frame.payload.clone()).unwrap_or_default();
        let mut outcome = Outcome {
            leaf: leaf_hash(payload),
            kind: None,
            signatures_verified: 0,
            signature_failed: false,
            result: Ok(Summary::Plain),
        };
        if !frame.crc_ok {
            outcome.result = Err("CRC32C mismatch".to_owned());
            outcomes.push(outcome);
            continue;
        }
        match parse_record(payload) {
            Ok((raw, rest)) => {
                outcome.kind = Some(raw.record_type());
                outcome.result = if rest > 0 {
                    Err(format!("{rest} bytes follow the record's CBOR item"))
                } else {
                    check_alone(&raw, context)
                };
                raw.signatures(|label, kind, body, signature, key| {
                    messages.push(signing_input(kind, body));
                    items.push(SigItem { record, label, message: messages.len() - 1, signature, key });
                });
            }
            Err(reason) => outcome.result = Err(reason),
        }
        outcomes.push(outcome);
    }
    let verified = verify_items(&messages, &items, context.batch);
    // The first bad signature of a record is its failure, ahead of the
    // other checks: an unsigned claim is not worth judging.
    let mut signature_failure: Vec<Option<&'static str>> = vec![None; frames.len()];
    for (item, ok) in items.iter().zip(&verified) {
        if let Some(outcome) = outcomes.get_mut(item.record) {
            if *ok {
                outcome.signatures_verified += 1;
            } else if let Some(slot @ None) = signature_failure.get_mut(item.record) {
                *slot = Some(item.label);
            }
        }
    }
    for (outcome, failure) in outcomes.iter_mut().zip(signature_failure) {
        if let Some(label) = failure {
            outcome.result = Err(format!("{label} does not verify"));
            outcome.signature_failed = true;
        }
    }
    outcomes
}

/// Verifies signature items in batches; a failing batch is checked again
/// one by one with `verify_strict`, and so is every signature whose shape
/// `verify_strict` refuses but a batch might accept.
fn verify_items(messages: &[Vec<u8>], items: &[SigItem], batch: usize) -> Vec<bool> {
    let strict = |item: &SigItem| item.key.verify_raw(message_of(messages, item), &item.signature);
    let mut ok = vec![false; items.len()];
    let mut batched: Vec<usize> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if batchable(&item.signature) {
            batched.push(i);
        } else {
            ok[i] = strict(item);
        }
    }
    for group in batched.chunks(batch.max(1)) {
        let group_items: Vec<&SigItem> = group.iter().filter_map(|i| items.get(*i)).collect();
        let msgs: Vec<&[u8]> = group_items.iter().map(|item| message_of(messages, item)).collect();
        let sigs: Vec<[u8; SIGNATURE_LEN]> = group_items.iter().map(|item| item.signature).collect();
        let keys: Vec<PublicKey> = group_items.iter().map(|item| item.key).collect();
        let all = verify_batch(&msgs, &sigs, &keys);
        for (i, item) in group.iter().zip(group_items) {
            ok[*i] = all || strict(item);
        }
    }
    ok
}

fn message_of<'a>(messages: &'a [Vec<u8>], item: &SigItem) -> &'a [u8] {
    messages.get(item.message).map_or(&[], Vec::as_slice)
}

/// The y coordinates (little-endian, sign bit clear) of the eight points of
/// small order: 0, 1, p - 1 and the two of the order-8 points.
const SMALL_ORDER_Y: [[u8; 32]; 5] = [
    [0; 32],
    [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
    ],
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98, 0xf0, 0xd5, 0xdf,
        0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53, 0xfc, 0x05,
    ],
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67, 0x0f, 0x2a, 0x20,
        0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac, 0x03, 0x7a,
    ],
];

/// True when a batch may judge this signature: its `R` is a canonical
/// encoding (y < p = 2^255 - 19) of a point not of small order, which
/// `verify_strict` requires and the batch equation does not check.
fn batchable(signature: &[u8; SIGNATURE_LEN]) -> bool {
    let mut y = [0u8; 32];
    y.copy_from_slice(&signature[..32]);
    y[31] &= 0x7f;
    // y >= p exactly when bytes 1..31 are all 0xff, the top byte is 0x7f
    // and the low byte is at least 0xed.
    let non_canonical = y[0] >= 0xed && y[1..31].iter().all(|b| *b == 0xff) && y[31] == 0x7f;
    !non_canonical && !SMALL_ORDER_Y.contains(&y)
}

/// A private mirror of [`crate::record::Record`] that keeps the signed parts
/// as bytes, to check their signatures in batches. Same tag, same names,
/// same byte-string handling: it accepts exactly the CBOR shapes `Record`
/// accepts (the unit tests hold the two together).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum RawRecord {
    Offer {
        #[serde(deserialize_with = "serde_bytes_vec")]
        envelope: Vec<u8>,
    },
    Contract {
        #[serde(deserialize_with = "serde_bytes_vec")]
        contract: Vec<u8>,
    },
    Pending {
        #[serde(deserialize_with = "serde_bytes_vec")]
        contract: Vec<u8>,
    },
    Abandoned {
        // Decoded for the same strictness as `Record`; nothing checks it.
        #[serde(rename = "contract_id")]
        _contract_id: ContractId,
    },
    Termination {
        contract_id: ContractId,
        #[serde(deserialize_with = "serde_bytes_vec")]
        envelope: Vec<u8>,
    },
    Evidence {
        #[serde(deserialize_with = "serde_bytes_vec")]
        envelope: Vec<u8>,
    },
    Revocation {
        revocation: crate::membership::Revocation,
    },
    // Unsigned: decoded by the very type `Record` uses.
    Placement {
        placement: crate::placement::PlacementRecord,
    },
    Expiry {
        contract_id: ContractId,
        at_ms: u64,
    },
    Rotation {
        #[serde(deserialize_with = "serde_bytes_vec")]
        rotation: Vec<u8>,
    },
    Succession {
        #[serde(deserialize_with = "serde_bytes_vec")]
        rotation: Vec<u8>,
    },
}

/// An envelope decoded as [`crate::envelope::Envelope::decode`] does, but
/// with its signature not yet checked.
#[derive(Debug)]
struct RawEnvelope {
    kind: Kind,
    body: Vec<u8>,
    signer: PublicKey,
    signature: [u8; SIGNATURE_LEN],
}

/// A contract decoded as [`crate::contract::SignedContract`]'s reader does,
/// but with its signatures not yet checked.
#[derive(Debug)]
struct RawContract {
    body: Vec<u8>,
    terms: ContractTerms,
    consumer_signature: [u8; SIGNATURE_LEN],
    provider_signature: Option<[u8; SIGNATURE_LEN]>,
}

/// A record decoded without checking signatures.
#[derive(Debug)]
enum Raw {
    Offer(RawEnvelope),
    Contract(RawContract),
    Pending(RawContract),
    Abandoned,
    Termination(ContractId, RawEnvelope),
    Evidence(RawEnvelope),
    Revocation(crate::membership::Revocation),
    Placement(crate::placement::PlacementRecord),
    Expiry { contract_id: ContractId, at_ms: u64 },
    Rotation(KeyRotation),
    Succession(KeyRotation),
}

impl Raw {
    fn record_type(&self) -> RecordType {
        match self {
            Raw::Offer(_) => RecordType::Offer,
            Raw::Contract(_) => RecordType::Contract,
            Raw::Pending(_) => RecordType::Pending,
            Raw::Abandoned => RecordType::Abandoned,
            Raw::Termination(..) => RecordType::Termination,
            Raw::Evidence(_) => RecordType::Evidence,
            Raw::Revocation(_) => RecordType::Revocation,
            Raw::Placement(_) => RecordType::Placement,
            Raw::Expiry { .. } => RecordType::Expiry,
            Raw::Rotation(_) => RecordType::Rotation,
            Raw::Succession(_) => RecordType::Succession,
        }
    }

    /// Every signature the record carries, as `Record::from_cbor` checks
    /// them: (label, kind, body, signature, key).
    fn signatures(&self, mut each: impl FnMut(&'static str, Kind, &[u8], [u8; SIGNATURE_LEN], PublicKey)) {
        match self {
            Raw::Contract(c) | Raw::Pending(c) => {
                each("the consumer's signature", Kind::Contract, &c.body, c.consumer_signature, c.terms.consumer);
                if let Some(signature) = c.provider_signature {
                    each("the provider's signature", Kind::Contract, &c.body, signature, c.terms.provider);
                }
            }
            Raw::Offer(e) | Raw::Termination(_, e) | Raw::Evidence(e) => {
                each("the envelope's signature", e.kind, &e.body, e.signature, e.signer);
            }
            Raw::Abandoned | Raw::Placement(_) | Raw::Expiry { .. } => {}
            Raw::Revocation(r) => {
                for (authority, signature) in r.signatures() {
                    each("an authority's signature", Kind::Revocation, r.body_bytes(), *signature, *authority);
                }
            }
            Raw::Rotation(r) | Raw::Succession(r) => {
                for (label, key, signature) in r.signatures() {
                    each(label, Kind::KeyRotation, r.body_bytes(), signature, key);
                }
            }
        }
    }
}

/// Decodes a record as [`crate::record::Record::from_cbor`] does, except
/// for checking signatures; also returns how many bytes follow the CBOR
/// item (which `from_cbor` ignores and the audit refuses).
fn parse_record(cbor: &[u8]) -> Result<(Raw, usize), String> {
    let mut rest = cbor;
    let raw: RawRecord = ciborium::from_reader(&mut rest).map_err(|e| {
        let why = match e {
            ciborium::de::Error::Semantic(_, why) => why.replace("RawRecord", "record"),
            ciborium::de::Error::Syntax(at) => format!("CBOR syntax error at byte {at}"),
            ciborium::de::Error::Io(_) => "CBOR ends early".to_owned(),
            ciborium::de::Error::RecursionLimitExceeded => "CBOR nested too deeply".to_owned(),
        };
        format!("not a valid record: {why}")
    })?;
    let raw = match raw {
        RawRecord::Offer { envelope } => Raw::Offer(raw_envelope(&envelope)?),
        RawRecord::Contract { contract } => {
            let contract = raw_contract(&contract)?;
            if contract.provider_signature.is_none() {
                return Err("contract record lacks the provider signature".to_owned());
            }
            Raw::Contract(contract)
        }
        RawRecord::Pending { contract } => Raw::Pending(raw_contract(&contract)?),
        RawRecord::Abandoned { .. } => Raw::Abandoned,
        RawRecord::Termination { contract_id, envelope } => Raw::Termination(contract_id, raw_envelope(&envelope)?),
        RawRecord::Evidence { envelope } => Raw::Evidence(raw_envelope(&envelope)?),
        RawRecord::Revocation { revocation } => Raw::Revocation(revocation),
        RawRecord::Placement { placement } => Raw::Placement(placement),
        RawRecord::Expiry { contract_id, at_ms } => Raw::Expiry { contract_id, at_ms },
        RawRecord::Rotation { rotation } => {
            Raw::Rotation(KeyRotation::parse(&rotation).map_err(|e| format!("not a valid record: {e}"))?)
        }
        RawRecord::Succession { rotation } => {
            Raw::Succession(KeyRotation::parse(&rotation).map_err(|e| format!("not a valid record: {e}"))?)
        }
    };
    Ok((raw, rest.len()))
}

/// [`crate::envelope::Envelope::from_wire`] without the signature check.
fn raw_envelope(bytes: &[u8]) -> Result<RawEnvelope, String> {
    let w = wire::Envelope::decode(bytes).map_err(|e| format!("envelope is not valid protobuf: {e}"))?;
    let kind = Kind::parse(&w.kind).map_err(|e| e.to_string())?;
    if w.body.len() > kind.max_body_len() {
        return Err(format!("{kind} body of {} bytes exceeds the limit of {}", w.body.len(), kind.max_body_len()));
    }
    let signer = PublicKey::from_bytes(&w.signer).map_err(|e| format!("bad envelope signer: {e}"))?;
    let signature = <[u8; SIGNATURE_LEN]>::try_from(w.signature.as_slice())
        .map_err(|_| format!("envelope signature has {} bytes, expected 64", w.signature.len()))?;
    Ok(RawEnvelope { kind, body: w.body, signer, signature })
}

/// [`crate::contract::SignedContract::from_wire`] without the signature checks.
fn raw_contract(bytes: &[u8]) -> Result<RawContract, String> {
    let w = wire::SignedContract::decode(bytes).map_err(|e| format!("contract is not valid protobuf: {e}"))?;
    let terms = ContractTerms::decode(&w.body, &Limits::default()).map_err(|e| e.to_string())?;
    let consumer_signature = <[u8; SIGNATURE_LEN]>::try_from(w.consumer_signature.as_slice())
        .map_err(|_| "the consumer's signature does not verify (wrong length)".to_owned())?;
    let provider_signature = if w.provider_signature.is_empty() {
        None
    } else {
        Some(
            <[u8; SIGNATURE_LEN]>::try_from(w.provider_signature.as_slice())
                .map_err(|_| "the provider's signature does not verify (wrong length)".to_owned())?,
        )
    };
    Ok(RawContract { body: w.body, terms, consumer_signature, provider_signature })
}

/// The checks a record allows on its own (who signed, what kind), given
/// that its signatures verify.
fn check_alone(raw: &Raw, context: &Context<'_>) -> Result<Summary, String> {
    let node = &context.node;
    let expect_kind = |e: &RawEnvelope, record: &str, kind: Kind| {
        if e.kind == kind {
            Ok(())
        } else {
            Err(format!("{record} record holds an envelope of kind {}, not {kind}", e.kind))
        }
    };
    let federation = |c: &RawContract| {
        if c.terms.federation == context.federation {
            Ok(())
        } else {
            Err(format!(
                "contract is for federation {:?}, not {:?}",
                truncated(&c.terms.federation),
                context.federation
            ))
        }
    };
    match raw {
        Raw::Offer(e) => {
            expect_kind(e, "offer", Kind::Offer)?;
            if e.signer != *node {
                return Err(format!("offer is signed by {}, not by the node", e.signer));
            }
            Ok(Summary::Plain)
        }
        Raw::Contract(c) => {
            federation(c)?;
            let other = if c.terms.consumer == *node {
                c.terms.provider
            } else if c.terms.provider == *node {
                c.terms.consumer
            } else {
                return Err(format!(
                    "contract between consumer {} and provider {} does not involve the node",
                    c.terms.consumer, c.terms.provider
                ));
            };
            Ok(Summary::Contract { id: contract_id(&c.body), other, end_ms: c.terms.end_ms })
        }
        Raw::Pending(c) => {
            federation(c)?;
            if c.provider_signature.is_some() {
                return Err("pending record carries a provider signature".to_owned());
            }
            if c.terms.consumer != *node {
                return Err(format!("pending contract's consumer is {}, not the node", c.terms.consumer));
            }
            Ok(Summary::Plain)
        }
        Raw::Abandoned => Ok(Summary::Plain),
        Raw::Termination(contract_id, e) => {
            expect_kind(e, "termination", Kind::Terminate)?;
            let t = wire::Terminate::decode(e.body.as_slice())
                .map_err(|err| format!("terminate body is not valid protobuf: {err}"))?;
            if t.request_id.len() != 16 {
                return Err("terminate request_id is malformed".to_owned());
            }
            if t.contract_id != contract_id.0 {
                return Err(format!(
                    "Terminate message names contract {}, the record names {contract_id}",
                    hex::encode(&t.contract_id)
                ));
            }
            let sender = PublicKey::from_bytes(&t.sender).map_err(|_| "terminate sender is malformed".to_owned())?;
            if sender != e.signer {
                return Err(format!("Terminate message claims sender {sender} but is signed by {}", e.signer));
            }
            Ok(Summary::Termination { contract_id: *contract_id, signer: e.signer })
        }
        Raw::Evidence(e) => {
            expect_kind(e, "evidence", Kind::Evidence)?;
            // What the evidence shows must check out too: every part of it is
            // signed by the accused. The grace a federation gives before a
            // missing contract counts is its own policy, not checked here.
            let envelope = Envelope::from_wire(wire::Envelope {
                kind: e.kind.as_str().to_owned(),
                body: e.body.clone(),
                signer: e.signer.to_bytes().to_vec(),
                signature: e.signature.to_vec(),
            })
            .map_err(|err| format!("evidence envelope: {err}"))?;
            let limits = Limits { missing_contract_grace_ms: 0, ..Limits::default() };
            crate::witness::Evidence::open(&envelope, context.federation, &limits)
                .map_err(|err| format!("evidence does not check out: {err}"))?;
            Ok(Summary::Plain)
        }
        Raw::Revocation(r) => {
            if r.body().federation != context.federation {
                return Err(format!("revocation is for federation {:?}", truncated(&r.body().federation)));
            }
            if r.signatures().is_empty() {
                return Err("revocation carries no authority signature".to_owned());
            }
            Ok(Summary::Plain)
        }
        // A final record names contracts obtained, so they precede it; the
        // contracts of a `committing` record are not made yet.
        Raw::Placement(p) if p.state.is_final() => Ok(Summary::Placement { contracts: p.contracts.clone() }),
        Raw::Placement(_) => Ok(Summary::Plain),
        Raw::Expiry { contract_id, at_ms } => Ok(Summary::Expiry { contract_id: *contract_id, at_ms: *at_ms }),
        Raw::Succession(r) => {
            r.check_federation(context.federation).map_err(|e| e.to_string())?;
            Ok(Summary::Succession { old: r.body().old_key, new: r.body().new_key })
        }
        Raw::Rotation(r) => {
            r.check_federation(context.federation).map_err(|e| e.to_string())?;
            let b = r.body();
            Ok(Summary::Rotation {
                old: b.old_key,
                new: b.new_key,
                seq: b.seq,
                log_size: b.log_size,
                log_root: b.log_root,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::checkpoint::sign_node_checkpoint;
    use crate::contract::SignedContract;
    use crate::envelope::Envelope;
    use crate::ids::{HoldId, NegotiationId, RequestId};
    use crate::keys::Identity;
    use crate::messages::{Message, Terminate, TerminationReason};
    use crate::offer::{Country, Flavour, Price, Resources, Site};
    use crate::record::Record;

    const FED: &str = "test-fed";

    fn id(seed: u8) -> Identity {
        Identity::from_secret_bytes(&[seed; 32])
    }

    fn terms(provider: &Identity, consumer: &Identity, n: u64) -> ContractTerms {
        ContractTerms {
            federation: FED.into(),
            provider: provider.public(),
            consumer: consumer.public(),
            offer_id: "fra1-c8m32".into(),
            offer_seq: 1,
            hold_id: HoldId([n as u8; 16]),
            negotiation_id: NegotiationId([(n >> 8) as u8; 16]),
            site: Site { country: Country::parse("DE").unwrap(), region: "central".into(), datacenter: "dc1".into() },
            flavour: Flavour {
                name: "c8m32".into(),
                per_unit: Resources { vcpu: 8, memory_mib: 32_768, storage_gib: 200, gpus: BTreeMap::new() },
            },
            units: 1,
            unit_price_per_hour: Price::eur(1_000_000),
            start_ms: 1_000 + n,
            end_ms: 2_000_000 + n,
            created_at_ms: n,
        }
    }

    fn contract(provider: &Identity, consumer: &Identity, n: u64) -> SignedContract {
        let body = terms(provider, consumer, n).encode();
        SignedContract::sign_as_consumer(consumer, body, &Limits::default()).unwrap().countersign(provider).unwrap()
    }

    fn terminate(by: &Identity, contract_id: ContractId) -> Envelope {
        Message::Terminate(Terminate {
            request_id: RequestId([3; 16]),
            contract_id,
            reason: TerminationReason::CustomerRequest,
            at_ms: 5,
            sender: by.public(),
        })
        .seal(by)
    }

    /// Evidence that `accused` signed two roots for one size, found by `witness`.
    fn conflicting(witness: &Identity, accused: &Identity) -> Envelope {
        let first = sign_node_checkpoint(accused, FED, 5, [1; 32]).unwrap();
        let second = sign_node_checkpoint(accused, FED, 5, [2; 32]).unwrap();
        crate::witness::Evidence::Conflicting { first, second }.seal(witness, &accused.public(), 5)
    }

    /// One record of every type, all valid for node `id(1)`.
    fn records() -> Vec<Record> {
        let (node, peer) = (id(1), id(2));
        let c = contract(&node, &peer, 1);
        let pending =
            SignedContract::sign_as_consumer(&node, terms(&peer, &node, 2).encode(), &Limits::default()).unwrap();
        vec![
            Record::Offer { envelope: Envelope::seal(&node, Kind::Offer, vec![1, 2, 3]) },
            Record::Contract { contract: c.clone() },
            Record::Pending { contract: pending.clone() },
            Record::Abandoned { contract_id: pending.id() },
            Record::Termination { contract_id: c.id(), envelope: terminate(&peer, c.id()) },
            Record::Evidence { envelope: conflicting(&peer, &id(3)) },
            Record::Placement { placement: placement(c.id()) },
            Record::Expiry { contract_id: c.id(), at_ms: c.terms().end_ms },
            Record::Rotation { rotation: rotation(&node, &id(9), 1, 7, [3; 32]) },
            Record::Succession { rotation: rotation(&peer, &id(8), 1, 9, [4; 32]) },
        ]
    }

    /// A complete placement of one contract.
    fn placement(contract_id: ContractId) -> crate::placement::PlacementRecord {
        use crate::placement::{PlacementRecord, PlacementState, PlacementTerms};
        PlacementRecord {
            id: crate::ids::PlacementId([7; 16]),
            state: PlacementState::Complete,
            terms: PlacementTerms {
                units: 1,
                spread: crate::matching::Spread::Countries,
                min_per_unit: Resources::default(),
                countries: [Country::parse("DE").unwrap()].into(),
                labels: ["iso:27001".to_owned()].into(),
                attested_labels: false,
                min_sla_permille: 0,
                max_unit_price: Some(Price::eur(1_000_000)),
                start_ms: 1,
                duration_ms: 2,
            },
            contracts: vec![contract_id],
            unresolved: Vec::new(),
            attempts: 1,
            reason: String::new(),
            started_at_ms: 1,
            at_ms: 2,
        }
    }

    /// The raw path's verdict on a record: decodes and every signature verifies.
    fn raw_accepts(cbor: &[u8]) -> bool {
        let Ok((raw, _)) = parse_record(cbor) else {
            return false;
        };
        let mut messages = Vec::new();
        let mut items = Vec::new();
        raw.signatures(|label, kind, body, signature, key| {
            messages.push(signing_input(kind, body));
            items.push(SigItem { record: 0, label, message: messages.len() - 1, signature, key });
        });
        verify_items(&messages, &items, 4).into_iter().all(|ok| ok)
    }

    fn cbor(value: &ciborium::Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(value, &mut out).unwrap();
        out
    }

    fn map(entries: Vec<(&str, ciborium::Value)>) -> ciborium::Value {
        ciborium::Value::Map(entries.into_iter().map(|(k, v)| (ciborium::Value::Text(k.into()), v)).collect())
    }

    /// Crafted records at the edges of what `Record::from_cbor` accepts.
    fn edge_cases() -> Vec<(&'static str, Vec<u8>)> {
        use ciborium::Value as V;
        let (node, peer) = (id(1), id(2));
        let c = contract(&node, &peer, 7);
        let mut unsigned = c.to_wire();
        unsigned.provider_signature.clear();
        let mut short_sig = c.to_wire();
        short_sig.provider_signature.truncate(63);
        let mut long_sig = c.to_wire();
        long_sig.consumer_signature.push(0);
        let pending_both = c.to_wire();
        let env = Envelope::seal(&node, Kind::Offer, vec![1; 10]).to_wire();
        let mut weak_signer = env.clone();
        weak_signer.signer = vec![0; 32];
        let mut wrong_signer = env.clone();
        wrong_signer.signer = peer.public().to_bytes().to_vec();
        let mut unknown_kind = env.clone();
        unknown_kind.kind = "offers".into();
        let big = Envelope::seal(&node, Kind::Offer, vec![0; Kind::Offer.max_body_len() + 1]).to_wire();
        let at_limit = Envelope::seal(&node, Kind::Offer, vec![0; Kind::Offer.max_body_len()]).to_wire();
        let id_seq = V::Array(c.id().0.iter().map(|b| V::Integer((*b).into())).collect());
        let offer = |w: &wire::Envelope| {
            map(vec![("type", V::Text("offer".into())), ("envelope", V::Bytes(w.encode_to_vec()))])
        };
        let contract_rec = |t: &str, w: &wire::SignedContract| {
            map(vec![("type", V::Text(t.into())), ("contract", V::Bytes(w.encode_to_vec()))])
        };
        let valid_offer = offer(&env);
        let mut with_trailing = cbor(&valid_offer);
        with_trailing.push(0);
        vec![
            ("valid offer", cbor(&valid_offer)),
            ("trailing byte", with_trailing),
            ("contract without provider signature", cbor(&contract_rec("contract", &unsigned))),
            ("pending without provider signature", cbor(&contract_rec("pending", &unsigned))),
            ("pending with provider signature", cbor(&contract_rec("pending", &pending_both))),
            ("63-byte provider signature", cbor(&contract_rec("contract", &short_sig))),
            ("65-byte consumer signature", cbor(&contract_rec("contract", &long_sig))),
            ("weak signer", cbor(&offer(&weak_signer))),
            ("wrong signer", cbor(&offer(&wrong_signer))),
            ("unknown kind", cbor(&offer(&unknown_kind))),
            ("body over the kind's limit", cbor(&offer(&big))),
            ("body at the kind's limit", cbor(&offer(&at_limit))),
            (
                "envelope as an array of integers",
                cbor(&map(vec![
                    ("type", V::Text("offer".into())),
                    ("envelope", V::Array(env.encode_to_vec().iter().map(|b| V::Integer((*b).into())).collect())),
                ])),
            ),
            (
                "extra field",
                cbor(&map(vec![
                    ("type", V::Text("offer".into())),
                    ("envelope", V::Bytes(env.encode_to_vec())),
                    ("extra", V::Integer(1.into())),
                ])),
            ),
            (
                "type last",
                cbor(&map(vec![("envelope", V::Bytes(env.encode_to_vec())), ("type", V::Text("offer".into()))])),
            ),
            (
                "unknown type",
                cbor(&map(vec![("type", V::Text("offers".into())), ("envelope", V::Bytes(env.encode_to_vec()))])),
            ),
            ("missing field", cbor(&map(vec![("type", V::Text("offer".into()))]))),
            ("abandoned", cbor(&map(vec![("type", V::Text("abandoned".into())), ("contract_id", id_seq.clone())]))),
            (
                "abandoned with a byte-string id",
                cbor(&map(vec![("type", V::Text("abandoned".into())), ("contract_id", V::Bytes(c.id().to_vec()))])),
            ),
            (
                "abandoned with a short id",
                cbor(&map(vec![
                    ("type", V::Text("abandoned".into())),
                    ("contract_id", V::Array(vec![V::Integer(1.into()); 31])),
                ])),
            ),
            ("not a map", cbor(&V::Array(vec![V::Text("offer".into())]))),
            ("empty", Vec::new()),
        ]
    }

    /// The raw path and `Record::from_cbor` agree on every valid record, on
    /// every single-byte change of one, and on crafted edge cases.
    #[test]
    fn raw_decoding_agrees_with_record_from_cbor() {
        let mut corpus: Vec<(String, Vec<u8>)> = Vec::new();
        for record in records() {
            let bytes = record.to_cbor().unwrap();
            assert!(raw_accepts(&bytes), "{record:?}");
            for i in 0..bytes.len() {
                for flip in [0x01u8, 0x80] {
                    let mut b = bytes.clone();
                    b[i] ^= flip;
                    corpus.push((format!("{record:?} byte {i} ^ {flip:#x}"), b));
                }
            }
            corpus.push((format!("{record:?}"), bytes));
        }
        for (what, bytes) in edge_cases() {
            corpus.push((what.to_owned(), bytes));
        }
        let mut accepted = 0;
        for (what, bytes) in &corpus {
            let normal = Record::from_cbor(bytes).is_ok();
            assert_eq!(raw_accepts(bytes), normal, "{what}: from_cbor says {normal}");
            accepted += usize::from(normal);
        }
        // The corpus exercises both verdicts.
        assert!(accepted > 6 && accepted < corpus.len() / 2, "{accepted} of {}", corpus.len());
    }

    #[test]
    fn small_order_encodings_are_the_small_order_points() {
        for y in SMALL_ORDER_Y {
            for sign in [0u8, 0x80] {
                let mut bytes = y;
                bytes[31] |= sign;
                if let Ok(point) = ed25519_dalek::VerifyingKey::from_bytes(&bytes) {
                    assert!(point.is_weak(), "{}", hex::encode(bytes));
                }
                let mut signature = [0u8; 64];
                signature[..32].copy_from_slice(&bytes);
                assert!(!batchable(&signature));
            }
        }
        // Every non-canonical y (p..2^255) is refused; real R values pass.
        for low in 0xedu8..=0xff {
            let mut signature = [0xffu8; 64];
            signature[0] = low;
            signature[31] = 0x7f;
            assert!(!batchable(&signature), "{low:#x}");
        }
        let e = Envelope::seal(&id(1), Kind::Offer, vec![1]);
        assert!(batchable(e.signature()));
        let mut signature = [0u8; 64];
        signature[0] = 2;
        assert!(batchable(&signature));
    }

    /// A node's log: contracts with a few peers, offers and terminations.
    fn log(n: u64) -> Vec<Vec<u8>> {
        let node = id(1);
        let peers: Vec<Identity> = (2..5).map(id).collect();
        let mut records = Vec::new();
        let mut last = None;
        for i in 0..n {
            let peer = &peers[i as usize % peers.len()];
            let record = match i % 7 {
                0 => Record::Offer { envelope: Envelope::seal(&node, Kind::Offer, i.to_le_bytes().to_vec()) },
                3 if last.is_some() => {
                    let (c, by): (ContractId, &Identity) = last.take().unwrap();
                    Record::Termination { contract_id: c, envelope: terminate(by, c) }
                }
                _ => {
                    let c = if i % 2 == 0 { contract(&node, peer, i) } else { contract(peer, &node, i) };
                    last = Some((c.id(), if i % 3 == 0 { &node } else { peer }));
                    Record::Contract { contract: c }
                }
            };
            records.push(record.to_cbor().unwrap());
        }
        records
    }

    /// `records` as an export, checkpointed by the node every `every`
    /// records and at the end.
    fn export(records: &[Vec<u8>], every: u64) -> Vec<u8> {
        export_over(records, records, every)
    }

    /// `records` as an export, with the node's checkpoints of `signed`
    /// every `every` records and at its end.
    fn export_over(records: &[Vec<u8>], signed: &[Vec<u8>], every: u64) -> Vec<u8> {
        let node = id(1);
        let n = signed.len() as u64;
        let tree = MerkleTree::from_leaf_hashes(signed.iter().map(|r| leaf_hash(r)));
        let mut sizes: Vec<u64> = (1..=n).filter(|s| s % every == 0).collect();
        if sizes.last() != Some(&n) {
            sizes.push(n);
        }
        let header = ExportHeader {
            node_key: node.public(),
            federation: FED.into(),
            records: records.len() as u64,
            checkpoints: sizes.len() as u64,
        };
        let mut w = ExportWriter::new(Vec::new(), header).unwrap();
        for r in records {
            w.record(r).unwrap();
        }
        for size in sizes {
            w.checkpoint(&sign_node_checkpoint(&node, FED, size, tree.root_at(size).unwrap()).unwrap().to_note())
                .unwrap();
        }
        w.finish().unwrap()
    }

    /// A counterparty that rotated its key terminates a contract its old key
    /// made: the termination verifies once the log holds the succession
    /// before it, and not otherwise; a succession of the node's own key is
    /// refused (that is what a rotation record is for).
    #[test]
    fn a_termination_by_a_successor_needs_the_succession_before_it() {
        let (node, old, new) = (id(1), id(2), id(3));
        let c = contract(&node, &old, 1);
        let succession = Record::Succession { rotation: rotation(&old, &new, 1, 4, [5; 32]) };
        let termination = Record::Termination { contract_id: c.id(), envelope: terminate(&new, c.id()) };
        let cbor = |records: &[&Record]| records.iter().map(|r| r.to_cbor().unwrap()).collect::<Vec<_>>();
        let contract = Record::Contract { contract: c.clone() };
        let good = run(&export(&cbor(&[&contract, &succession, &termination]), 10), 2, 5, 4);
        assert!(good.is_ok(), "{good}");
        assert_eq!((good.successions, good.terminations), (1, 1));
        let bad = run(&export(&cbor(&[&contract, &termination, &succession]), 10), 2, 5, 4);
        let failure = bad.first_failure.expect("a termination by a stranger");
        assert_eq!(failure.record, Some(1), "{failure:?}");
        let own = Record::Succession { rotation: rotation(&node, &new, 1, 4, [5; 32]) };
        let bad = run(&export(&cbor(&[&contract, &own]), 10), 2, 5, 4);
        assert!(bad.first_failure.is_some_and(|f| f.reason.contains("rotation record")));
    }

    fn run(bytes: &[u8], threads: usize, chunk: usize, batch: usize) -> AuditReport {
        Verifier::new(Tuning { threads, min_per_thread: 1, chunk_records: chunk, chunk_checkpoints: chunk, batch })
            .run(bytes)
    }

    /// Chunk, thread and batch boundaries change nothing: the same report,
    /// and a bad signature anywhere is named exactly.
    #[test]
    fn chunking_threads_and_batches_do_not_change_the_verdict() {
        let records = log(60);
        let bytes = export(&records, 10);
        let tunings = [(1, 1000, 256), (2, 7, 3), (3, 13, 1), (2, 60, 5), (4, 2, 2)];
        let reference = run(&bytes, 1, 1000, 256);
        assert!(reference.is_ok(), "{reference}");
        assert_eq!((reference.records, reference.checkpoints, reference.tree_size), (60, 6, 60));
        assert_eq!(reference.offers + reference.contracts + reference.terminations, 60);
        assert_eq!(reference.signatures_verified, reference.offers + 2 * reference.contracts + reference.terminations);
        for (threads, chunk, batch) in tunings {
            assert_eq!(run(&bytes, threads, chunk, batch), reference);
        }
        // A checkpoint after every record, and one removed record: the same
        // verdict, naming the same record, whatever the tuning.
        let notes_every = export(&records, 1);
        let reference = run(&notes_every, 1, 1000, 256);
        assert!(reference.is_ok(), "{reference}");
        assert_eq!(reference.checkpoints, 60);
        for (threads, chunk, batch) in tunings {
            assert_eq!(run(&notes_every, threads, chunk, batch), reference);
        }
        let mut fewer = records.clone();
        fewer.remove(17);
        let spliced = export_over(&fewer, &records, 1);
        let reference = run(&spliced, 1, 1000, 256);
        assert_eq!(reference.first_failure.as_ref().unwrap().record, Some(17), "{reference}");
        for (threads, chunk, batch) in tunings {
            assert_eq!(run(&spliced, threads, chunk, batch), reference);
        }

        // A node that logged a record with a bad signature and checkpointed
        // it: every checkpoint matches, and the record is named exactly.
        // Every record ends with a signature (the envelope's, or the
        // provider's for a contract).
        for target in [0usize, 1, 3, 29, 59] {
            let mut spoiled = records.clone();
            let r = &mut spoiled[target];
            let at = r.len() - 64 + 40;
            r[at] ^= 1;
            let bytes = export(&spoiled, 10);
            for (threads, chunk, batch) in tunings {
                let report = run(&bytes, threads, chunk, batch);
                let failure = report.first_failure.clone().unwrap();
                assert_eq!((failure.record, failure.checkpoint), (Some(target as u64), None), "{report}");
                assert!(failure.reason.contains("does not verify"), "{report}");
            }
        }
    }

    #[test]
    fn trailing_bytes_inside_a_record_are_refused() {
        let mut record = log(1).remove(0);
        let (_, rest) = parse_record(&record).unwrap();
        assert_eq!(rest, 0);
        record.extend_from_slice(&[0, 0]);
        let (_, rest) = parse_record(&record).unwrap();
        assert_eq!(rest, 2);
        let report = run(&export(&[record], 1), 1, 10, 10);
        let failure = report.first_failure.unwrap();
        assert_eq!(failure.record, Some(0));
        assert!(failure.reason.contains("2 bytes follow"), "{}", failure.reason);
    }

    fn rotation(old: &Identity, new: &Identity, seq: u64, log_size: u64, log_root: Hash) -> KeyRotation {
        let body = crate::rotation::RotationBody {
            federation: FED.into(),
            old_key: old.public(),
            new_key: new.public(),
            at_ms: 1_000,
            seq,
            log_size,
            log_root,
        };
        KeyRotation::sign(old, new, body).unwrap()
    }

    /// `n` records of node `id(1)`, which hands over to `id(9)` with a
    /// rotation record at index `at` (made by `make_rotation` from the log
    /// before it): offers and contracts by the key in use.
    fn rotated_log(n: u64, at: u64, make_rotation: impl Fn(Hash) -> KeyRotation) -> Vec<Vec<u8>> {
        let (old, new, peer) = (id(1), id(9), id(2));
        let mut records: Vec<Vec<u8>> = Vec::new();
        for i in 0..n {
            let node = if i < at { &old } else { &new };
            let record = if i == at {
                let root = MerkleTree::from_leaf_hashes(records.iter().map(|r| leaf_hash(r))).root();
                Record::Rotation { rotation: make_rotation(root) }
            } else if i % 3 == 0 {
                Record::Offer { envelope: Envelope::seal(node, Kind::Offer, i.to_le_bytes().to_vec()) }
            } else if i % 2 == 0 {
                Record::Contract { contract: contract(node, &peer, i) }
            } else {
                Record::Contract { contract: contract(&peer, node, i) }
            };
            records.push(record.to_cbor().unwrap());
        }
        records
    }

    /// An export of `records`, checkpointed every `every` records and at the
    /// end, each checkpoint signed by `signer(size)`.
    fn export_signed_by(records: &[Vec<u8>], every: u64, signer: impl Fn(u64) -> Identity) -> Vec<u8> {
        let n = records.len() as u64;
        let tree = MerkleTree::from_leaf_hashes(records.iter().map(|r| leaf_hash(r)));
        let mut sizes: Vec<u64> = (1..=n).filter(|s| s % every == 0).collect();
        if sizes.last() != Some(&n) {
            sizes.push(n);
        }
        let header = ExportHeader {
            node_key: id(1).public(),
            federation: FED.into(),
            records: n,
            checkpoints: sizes.len() as u64,
        };
        let mut w = ExportWriter::new(Vec::new(), header).unwrap();
        for r in records {
            w.record(r).unwrap();
        }
        for size in sizes {
            let root = tree.root_at(size).unwrap();
            w.checkpoint(&sign_node_checkpoint(&signer(size), FED, size, root).unwrap().to_note()).unwrap();
        }
        w.finish().unwrap()
    }

    /// The key that signs a checkpoint of `size` records of a log that hands
    /// over from `id(1)` to `id(9)` at record `at`.
    fn key_at(at: u64) -> impl Fn(u64) -> Identity {
        move |size| if size > at { id(9) } else { id(1) }
    }

    #[test]
    fn a_log_verifies_across_a_key_rotation_record_by_record() {
        let at = 11;
        let good = |root| rotation(&id(1), &id(9), 1, at, root);
        let records = rotated_log(40, at, good);
        let bytes = export_signed_by(&records, 5, key_at(at));
        let reference = run(&bytes, 1, 1000, 256);
        assert!(reference.is_ok(), "{reference}");
        assert_eq!(reference.rotations, 1);
        assert_eq!(reference.node_key.as_deref(), Some(id(1).public().to_string().as_str()));
        assert_eq!(reference.node_key_now.as_deref(), Some(id(9).public().to_string().as_str()));
        assert!(reference.to_string().contains("key rotated 1 times"), "{reference}");
        // Both keys' signatures are counted; chunks that start before, at
        // and after the rotation agree.
        assert_eq!(reference.signatures_verified, reference.offers + 2 * reference.contracts + 2);
        for (threads, chunk, batch) in [(2, 7, 3), (3, 11, 1), (2, 12, 5), (4, 2, 2), (1, 1, 1)] {
            assert_eq!(run(&bytes, threads, chunk, batch), reference, "{threads} {chunk} {batch}");
        }

        // The old key keeps signing after it handed over: its checkpoint of
        // a size past the rotation is refused.
        let stale = export_signed_by(&records, 5, |_| id(1));
        let report = run(&stale, 2, 7, 3);
        let failure = report.first_failure.unwrap();
        assert!(failure.checkpoint.is_some() && failure.reason.contains("the node's key at size"), "{failure}");
        // A checkpoint by the new key of a size before the rotation is refused too.
        let early = export_signed_by(&records, 5, |_| id(9));
        assert!(run(&early, 1, 1000, 256).first_failure.unwrap().checkpoint.is_some());

        // An offer of the old key after the rotation.
        let mut late = records.clone();
        late[at as usize + 2] =
            Record::Offer { envelope: Envelope::seal(&id(1), Kind::Offer, vec![5]) }.to_cbor().unwrap();
        let report = run(&export_signed_by(&late, 5, key_at(at)), 2, 7, 3);
        let failure = report.first_failure.unwrap();
        assert_eq!(failure.record, Some(at + 2), "{failure}");
        assert!(failure.reason.contains("not by the node"), "{failure}");
    }

    #[test]
    fn a_rotation_must_hand_over_the_nodes_key_and_its_history() {
        const AT: u64 = 6;
        let at = AT;
        type Make = Box<dyn Fn(Hash) -> KeyRotation>;
        let cases: [(&str, Make); 4] = [
            ("from another key", Box::new(|root| rotation(&id(3), &id(9), 1, AT, root))),
            ("second rotation first", Box::new(|root| rotation(&id(1), &id(9), 2, AT, root))),
            ("another log size", Box::new(|root| rotation(&id(1), &id(9), 1, AT - 1, root))),
            ("another root", Box::new(|_| rotation(&id(1), &id(9), 1, AT, [0; 32]))),
        ];
        for (what, make) in cases {
            let records = rotated_log(12, at, make);
            let report = run(&export_signed_by(&records, 4, key_at(at)), 1, 1000, 256);
            let failure = report.first_failure.clone().unwrap_or_else(|| panic!("{what}: {report}"));
            assert_eq!(failure.record, Some(at), "{what}: {failure}");
        }
        // One signature spoiled: named as such.
        let mut records = rotated_log(12, at, |root| rotation(&id(1), &id(9), 1, at, root));
        let last = records[at as usize].len() - 10;
        records[at as usize][last] ^= 1;
        let report = run(&export_signed_by(&records, 4, key_at(at)), 1, 1000, 256);
        let failure = report.first_failure.unwrap();
        assert!(failure.reason.contains("new key's rotation signature does not verify"), "{failure}");
    }
}
