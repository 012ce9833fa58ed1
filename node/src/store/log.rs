//! The agreement log: the append-only file of framed records that is the
//! node's source of truth and its commit point, the group-commit writer thread
//! that makes appends durable, and the Merkle tree over the durable records.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use fulcrum_protocol::merkle::{Hash, MerkleTree, leaf_hash};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

/// The largest payload one record may have.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// Frame header: `u32` LE payload length, then `u32` LE CRC32C of the payload.
const HEADER_BYTES: usize = 8;

/// Append requests that may wait for the writer. Bounded so that a writer
/// stuck on a slow disk pushes back on appenders instead of queueing without end.
const QUEUE_DEPTH: usize = 1024;

/// A batch stops taking queued requests once it holds this many bytes of
/// frames or this many requests, so that one fsync never covers an unbounded
/// amount of data and the first appender's latency stays bounded.
const MAX_BATCH_BYTES: usize = 4 << 20;
const MAX_BATCH_REQUESTS: usize = 1024;

/// The writer keeps its frame buffer between batches; one that grew past this
/// (a request of many large records) is given back rather than kept forever.
const RETAINED_BUFFER_BYTES: usize = 2 * MAX_BATCH_BYTES;

/// Buffer for reading the file at open and in [`read_log`].
const READ_BUFFER_BYTES: usize = 256 << 10;

/// How long `close` waits before retrying to queue its shutdown request when
/// the queue is full (the writer empties it within one fsync).
const SHUTDOWN_RETRY: Duration = Duration::from_millis(1);

/// Why the agreement log could not be opened, read or appended to.
#[derive(Debug, Error)]
pub enum LogError {
    /// The file system refused an operation on the log file or its directory.
    #[error("agreement log I/O error on {}: {source}", .path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What failed, with the operating system's reason.
        #[source]
        source: io::Error,
    },
    /// A frame that is followed by more data is damaged: committed records
    /// are corrupt, so the log is neither opened nor repaired.
    #[error(
        "agreement log {} is corrupt at byte {offset}: {reason}; this is damage to committed records, not a torn \
         tail, so the file was left untouched: restore the log from a peer or a backup",
        .path.display()
    )]
    Corrupt {
        /// The log file.
        path: PathBuf,
        /// Byte offset of the damaged frame's header.
        offset: u64,
        /// What is wrong with the frame.
        reason: String,
    },
    /// A record is larger than [`MAX_RECORD_BYTES`]; nothing was appended.
    #[error("a record of {len} bytes exceeds the agreement log's limit of {max} bytes; nothing was appended")]
    TooLarge {
        /// The record's size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A record is empty; nothing was appended. Frames of length 0 are never
    /// written, which keeps a zero-filled tail left by a crash distinguishable
    /// from records.
    #[error("an empty record cannot be appended to the agreement log; nothing was appended")]
    EmptyRecord,
    /// Another handle, in this process or another, has the log open.
    #[error(
        "agreement log {} is already open elsewhere (is another fulcrumd using this data directory?)",
        .path.display()
    )]
    Locked {
        /// The log file.
        path: PathBuf,
    },
    /// A write or fsync failed earlier; the log takes no more appends.
    #[error(
        "agreement log {} takes no more appends after {reason}; restart the daemon, which re-reads the log and \
         repairs its tail",
        .path.display()
    )]
    Halted {
        /// The log file.
        path: PathBuf,
        /// The failure that stopped it.
        reason: String,
    },
    /// The log was closed.
    #[error("the agreement log is closed")]
    Closed,
}

/// What [`AgreementLog::open`] found in the file.
pub struct Recovered {
    /// Every durable record, in log order.
    pub records: Vec<Vec<u8>>,
    /// Bytes of torn tail cut from the end of the file (0 after a clean stop).
    pub truncated_bytes: u64,
}

// The records of a large log would make a useless and enormous log line.
impl fmt::Debug for Recovered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recovered")
            .field("records", &self.records.len())
            .field("truncated_bytes", &self.truncated_bytes)
            .finish()
    }
}

/// Counters of an open log, for metrics and the admin API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Durable records in the log.
    pub records: u64,
    /// Durable bytes in the log file.
    pub bytes: u64,
    /// Append requests made durable since the log was opened.
    pub appends: u64,
    /// Write-and-fsync batches since the log was opened; `appends / batches`
    /// is the mean number of requests one fsync served.
    pub batches: u64,
    /// Duration of the latest `fsync` (`sync_data`), in microseconds.
    pub last_fsync_micros: u64,
}

/// The open agreement log. Cheap to clone; every clone appends to the same
/// file through the same writer thread.
#[derive(Clone)]
pub struct AgreementLog {
    inner: Arc<Inner>,
}

impl fmt::Debug for AgreementLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgreementLog").field("path", &self.inner.shared.path).field("len", &self.len()).finish()
    }
}

/// Owned by the handles: dropping the last one stops the writer.
struct Inner {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Command>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// State the writer thread and the handles both see.
struct Shared {
    path: PathBuf,
    durable: RwLock<Durable>,
    /// Set once `close` has begun: new appends are refused.
    closed: AtomicBool,
    /// Set once a write or fsync failed: why the log takes no more appends.
    halted: OnceLock<String>,
}

/// What is on disk, changed only by the writer and only after an fsync.
struct Durable {
    tree: MerkleTree,
    bytes: u64,
    appends: u64,
    batches: u64,
    last_fsync_micros: u64,
}

enum Command {
    Append(Request),
    /// Sent by `close`: finish what is queued, then stop.
    Shutdown,
}

struct Request {
    records: Vec<Vec<u8>>,
    reply: oneshot::Sender<Result<u64, LogError>>,
}

impl AgreementLog {
    /// Opens (creating if absent) the log at `path`, reads every frame,
    /// repairs a torn tail and starts the writer thread.
    ///
    /// A torn tail (the unfinished end of a write cut short by a crash) is
    /// cut, and the file and its directory are fsync'd before anything is
    /// returned. Damage anywhere else is [`LogError::Corrupt`] and the file is
    /// left as it is. The file is locked for as long as the log is open.
    pub fn open(path: &Path) -> Result<(AgreementLog, Recovered), LogError> {
        let (file, created) = open_or_create(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(LogError::Locked { path: path.to_path_buf() }),
            Err(TryLockError::Error(e)) => return Err(io_error(path, "cannot lock the log file")(e)),
        }
        let scan = scan(&file, path)?;
        let truncated_bytes = scan.file_len - scan.good_end;
        if truncated_bytes > 0 {
            file.set_len(scan.good_end).map_err(io_error(path, "cannot cut the torn tail"))?;
        }
        // Unconditionally: after a process crash (not a machine crash) the
        // frames written but not yet fsync'd are still in the page cache and
        // read back as good. They are about to be counted in `len` and `root`,
        // which may be signed into a checkpoint, so they must reach the disk
        // first; otherwise a later power loss would make the node appear to
        // rewrite its history.
        file.sync_all().map_err(io_error(path, "cannot fsync the log file"))?;
        if created || truncated_bytes > 0 {
            // A new file's directory entry, or the new length, must itself be
            // durable before anything is appended after it.
            sync_dir(path)?;
        }
        let log = Self::start(path.to_path_buf(), file, &scan.records, scan.good_end)?;
        Ok((log, Recovered { records: scan.records, truncated_bytes }))
    }

    /// Starts the writer thread over a file already checked to hold exactly
    /// `records`, `bytes` long.
    fn start<F: LogFile>(path: PathBuf, file: F, records: &[Vec<u8>], bytes: u64) -> Result<Self, LogError> {
        let tree = MerkleTree::from_leaf_hashes(records.iter().map(|r| leaf_hash(r)));
        let durable = Durable { tree, bytes, appends: 0, batches: 0, last_fsync_micros: 0 };
        let shared = Arc::new(Shared {
            path: path.clone(),
            durable: RwLock::new(durable),
            closed: AtomicBool::new(false),
            halted: OnceLock::new(),
        });
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let writer = Writer { file, rx, shared: Arc::clone(&shared), buf: Vec::new() };
        let handle = thread::Builder::new()
            .name("agreement-log".into())
            .spawn(move || writer.run())
            .map_err(io_error(&path, "cannot start the writer thread"))?;
        Ok(Self { inner: Arc::new(Inner { shared, tx, writer: Mutex::new(Some(handle)) }) })
    }

    /// Appends `records` and returns once they are durable (written and
    /// fsync'd), with the index of the first one. Records of concurrent calls
    /// share one fsync (group commit); each call's records are contiguous.
    ///
    /// On an I/O error the outcome is unknown, as after a crash: some of the
    /// records may be found in the log after a restart, so nothing may be
    /// acknowledged on the strength of the call. The records of one call are
    /// not atomic either: a crash can keep a prefix of them. Dropping the
    /// future does not cancel an append already queued.
    pub async fn append(&self, records: Vec<Vec<u8>>) -> Result<u64, LogError> {
        self.check(&records)?;
        if records.is_empty() {
            return Ok(self.len());
        }
        let (reply, answer) = oneshot::channel();
        self.inner.tx.send(Command::Append(Request { records, reply })).await.map_err(|_| self.stopped())?;
        answer.await.map_err(|_| self.stopped())?
    }

    /// [`append`](Self::append) for callers without an async runtime (tools
    /// and tests).
    ///
    /// # Panics
    ///
    /// If called from within an async runtime, where blocking is not allowed:
    /// use `append` there.
    pub fn append_blocking(&self, records: Vec<Vec<u8>>) -> Result<u64, LogError> {
        self.check(&records)?;
        if records.is_empty() {
            return Ok(self.len());
        }
        let (reply, answer) = oneshot::channel();
        self.inner.tx.blocking_send(Command::Append(Request { records, reply })).map_err(|_| self.stopped())?;
        answer.blocking_recv().map_err(|_| self.stopped())?
    }

    /// Refuses what the writer would refuse, before it is queued.
    fn check(&self, records: &[Vec<u8>]) -> Result<(), LogError> {
        let shared = &self.inner.shared;
        if let Some(reason) = shared.halted.get() {
            return Err(LogError::Halted { path: shared.path.clone(), reason: reason.clone() });
        }
        if shared.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        for record in records {
            if record.is_empty() {
                return Err(LogError::EmptyRecord);
            }
            if record.len() > MAX_RECORD_BYTES {
                return Err(LogError::TooLarge { len: record.len(), max: MAX_RECORD_BYTES });
            }
        }
        Ok(())
    }

    /// The error for a request the writer did not answer: it stopped, after a
    /// failure or because the log was closed.
    fn stopped(&self) -> LogError {
        let shared = &self.inner.shared;
        match shared.halted.get() {
            Some(reason) => LogError::Halted { path: shared.path.clone(), reason: reason.clone() },
            None => LogError::Closed,
        }
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.inner.shared.path
    }

    /// The number of durable records.
    pub fn len(&self) -> u64 {
        self.inner.shared.read().tree.len()
    }

    /// Whether the log holds no durable record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The Merkle root over the durable records.
    pub fn root(&self) -> Hash {
        self.inner.shared.read().tree.root()
    }

    /// Runs `f` on the Merkle tree of the durable records (for proofs and
    /// checkpoints). Appends wait to become visible while `f` runs, so keep it
    /// short, and never append from inside it: that would deadlock.
    pub fn with_tree<T>(&self, f: impl FnOnce(&MerkleTree) -> T) -> T {
        f(&self.inner.shared.read().tree)
    }

    /// The log's counters.
    pub fn stats(&self) -> LogStats {
        let durable = self.inner.shared.read();
        LogStats {
            records: durable.tree.len(),
            bytes: durable.bytes,
            appends: durable.appends,
            batches: durable.batches,
            last_fsync_micros: durable.last_fsync_micros,
        }
    }

    /// Stops the writer after it has made everything already submitted
    /// durable, and releases the file. Later appends, from any clone, fail
    /// with [`LogError::Closed`]. Blocks for up to one fsync; calling it again
    /// does nothing. Dropping the last clone closes the log too.
    pub fn close(&self) {
        self.inner.close();
    }
}

impl Inner {
    fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        // Held while joining, so that a concurrent `close` returns only once
        // the writer has finished too.
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(handle) = writer.take() else { return };
        // `try_send` rather than `blocking_send`, which would panic when the
        // last handle is dropped inside an async runtime.
        loop {
            match self.tx.try_send(Command::Shutdown) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => break,
                Err(mpsc::error::TrySendError::Full(_)) => thread::sleep(SHUTDOWN_RETRY),
            }
        }
        // A writer that panicked has nothing left to flush; its appenders were
        // already answered `Closed` when its queue was dropped.
        let _ = handle.join();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, Durable> {
        // Only the writer mutates `Durable`, and it does not panic while
        // holding the lock; a panic in a reader's `with_tree` closure leaves
        // the data intact, so poisoning carries no information here.
        self.durable.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Durable> {
        self.durable.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The file operations the writer needs; a trait so that tests can make them
/// fail.
trait LogFile: Send + 'static {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    fn sync_data(&mut self) -> io::Result<()>;
}

impl LogFile for File {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        Write::write_all(self, buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }
}

/// The writer thread: the only owner of the file.
struct Writer<F> {
    file: F,
    rx: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    /// Frames of the current batch, reused between batches.
    buf: Vec<u8>,
}

impl<F: LogFile> Writer<F> {
    fn run(mut self) {
        // Ends when every handle is gone, or once `close` has asked and the
        // queue is empty.
        while let Some(command) = self.rx.blocking_recv() {
            let first = match command {
                Command::Append(request) => request,
                Command::Shutdown => {
                    // Refuse new requests but still serve those queued.
                    self.rx.close();
                    continue;
                }
            };
            let mut bytes = frames_len(&first.records);
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH_REQUESTS && bytes < MAX_BATCH_BYTES {
                match self.rx.try_recv() {
                    Ok(Command::Append(request)) => {
                        bytes += frames_len(&request.records);
                        batch.push(request);
                    }
                    Ok(Command::Shutdown) => self.rx.close(),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
    }

    /// Writes the batch with one `write_all` and one fsync, then makes it
    /// visible and answers its requests in order.
    fn commit(&mut self, batch: Vec<Request>) {
        let path = &self.shared.path;
        if let Some(reason) = self.shared.halted.get() {
            for request in batch {
                let _ = request.reply.send(Err(LogError::Halted { path: path.clone(), reason: reason.clone() }));
            }
            return;
        }
        self.buf.clear();
        for request in &batch {
            for record in &request.records {
                encode_frame(&mut self.buf, record);
            }
        }
        let synced = match self.file.write_all(&self.buf) {
            Err(e) => Err(("write", e)),
            Ok(()) => {
                let started = Instant::now();
                self.file.sync_data().map(|()| started.elapsed()).map_err(|e| ("fsync", e))
            }
        };
        let fsync_time = match synced {
            Ok(elapsed) => elapsed,
            Err((op, e)) => {
                // Stop for good. After a failed fsync the kernel may already
                // have dropped the dirty pages and cleared the error, so a
                // retry could "succeed" without the data ever reaching the
                // disk; and after a failed write the file may end in a partial
                // frame that later frames would follow. What is durable is
                // unknown until a restart re-reads the file.
                let reason = format!("a failed {op}: {e}");
                let _ = self.shared.halted.set(reason.clone());
                for request in batch {
                    let source = io::Error::new(e.kind(), format!("{op} of the log file failed: {e}"));
                    let _ = request.reply.send(Err(LogError::Io { path: path.clone(), source }));
                }
                return;
            }
        };
        // Hash outside the lock so that readers wait only for the pushes.
        let leaves: Vec<Vec<Hash>> =
            batch.iter().map(|request| request.records.iter().map(|r| leaf_hash(r)).collect()).collect();
        let mut firsts = Vec::with_capacity(batch.len());
        {
            let mut durable = self.shared.write();
            for request_leaves in leaves {
                firsts.push(durable.tree.len());
                for leaf in request_leaves {
                    durable.tree.push_leaf_hash(leaf);
                }
            }
            durable.bytes += self.buf.len() as u64;
            durable.appends += batch.len() as u64;
            durable.batches += 1;
            durable.last_fsync_micros = u64::try_from(fsync_time.as_micros()).unwrap_or(u64::MAX);
        }
        for (request, first) in batch.into_iter().zip(firsts) {
            // The appender may have given up waiting; its records are durable
            // all the same.
            let _ = request.reply.send(Ok(first));
        }
        if self.buf.capacity() > RETAINED_BUFFER_BYTES {
            self.buf = Vec::new();
        }
    }
}

/// Bytes the frames of `records` take in the file.
fn frames_len(records: &[Vec<u8>]) -> usize {
    records.iter().map(|r| HEADER_BYTES + r.len()).sum()
}

/// Appends one frame to `buf`. The caller has checked that `payload` is not
/// empty and at most [`MAX_RECORD_BYTES`] long, so the length fits a `u32`.
fn encode_frame(buf: &mut Vec<u8>, payload: &[u8]) {
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Reads a log file without repairing it (an offline audit): the good
/// records, and whether the file ends in a torn tail after them.
///
/// It takes no lock, so it may read the log of a running daemon; a batch
/// being written at that moment shows as a torn tail.
pub fn read_log(path: &Path) -> Result<(Vec<Vec<u8>>, bool), LogError> {
    let file = File::open(path).map_err(io_error(path, "cannot open the log file"))?;
    let scan = scan(&file, path)?;
    let torn = scan.good_end < scan.file_len;
    Ok((scan.records, torn))
}

/// What reading a log file from its start found.
struct Scan {
    records: Vec<Vec<u8>>,
    /// End of the last good frame; everything after it is a torn tail.
    good_end: u64,
    file_len: u64,
}

/// Reads every frame, stopping at a torn tail and refusing corruption.
///
/// A torn tail is what a crash during a write can leave: an incomplete
/// header at the end of the file, a length that runs past it, or a damaged
/// frame with nothing but zero bytes after it (nothing at all, usually; zeros
/// when the file's new size reached the disk before its data did). A damaged
/// frame followed by any other byte cannot be the unfinished end of a write:
/// committed data is damaged, and cutting there would throw away records that
/// were acknowledged to peers.
fn scan(file: &File, path: &Path) -> Result<Scan, LogError> {
    let read_error = io_error(path, "cannot read the log file");
    let file_len = file.metadata().map_err(io_error(path, "cannot stat the log file"))?.len();
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, file);
    reader.seek(SeekFrom::Start(0)).map_err(&read_error)?;
    let mut records = Vec::new();
    let mut offset = 0u64;
    let torn = |records, good_end| Ok(Scan { records, good_end, file_len });
    let corrupt = |offset, reason| Err(LogError::Corrupt { path: path.to_path_buf(), offset, reason });
    loop {
        let remaining = file_len - offset;
        if remaining == 0 {
            return Ok(Scan { records, good_end: offset, file_len });
        }
        if remaining < HEADER_BYTES as u64 {
            return torn(records, offset);
        }
        let mut header = [0u8; HEADER_BYTES];
        reader.read_exact(&mut header).map_err(&read_error)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let stored_crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let body_start = offset + HEADER_BYTES as u64;
        let after_header = file_len - body_start;
        if len == 0 || len as usize > MAX_RECORD_BYTES {
            // No such header is ever written.
            if zeros_to_end(&mut reader, body_start, file_len, path)? {
                return torn(records, offset);
            }
            let what = if len == 0 { "an empty record, which is never written".to_string() } else {
                format!("{len} bytes, more than the {MAX_RECORD_BYTES} a record may have")
            };
            return corrupt(offset, format!("the frame header claims {what}, and {after_header} bytes follow it"));
        }
        if u64::from(len) > after_header {
            return torn(records, offset);
        }
        let mut payload = vec![0u8; len as usize];
        reader.read_exact(&mut payload).map_err(&read_error)?;
        let actual_crc = crc32c::crc32c(&payload);
        let end = body_start + u64::from(len);
        if actual_crc != stored_crc {
            if zeros_to_end(&mut reader, end, file_len, path)? {
                return torn(records, offset);
            }
            return corrupt(
                offset,
                format!(
                    "CRC32C mismatch in a frame of {len} bytes (stored {stored_crc:#010x}, computed \
                     {actual_crc:#010x}), and {} bytes follow it",
                    file_len - end
                ),
            );
        }
        records.push(payload);
        offset = end;
    }
}

/// Whether the bytes from `from` to `file_len` are all zero (true if there
/// are none). Leaves the reader anywhere.
fn zeros_to_end(reader: &mut BufReader<&File>, from: u64, file_len: u64, path: &Path) -> Result<bool, LogError> {
    let read_error = || io_error(path, "cannot read the log file");
    reader.seek(SeekFrom::Start(from)).map_err(read_error())?;
    let mut left = file_len - from;
    let mut chunk = vec![0u8; READ_BUFFER_BYTES];
    while left > 0 {
        let n = usize::try_from(left).map_or(chunk.len(), |left| left.min(chunk.len()));
        reader.read_exact(&mut chunk[..n]).map_err(read_error())?;
        if chunk[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        left -= n as u64;
    }
    Ok(true)
}

/// Opens the log file for reading and appending, creating it if absent; says
/// whether it was created.
fn open_or_create(path: &Path) -> Result<(File, bool), LogError> {
    // Append mode: every write lands at the end of the file, whatever the
    // read position of the scan.
    let mut options = OpenOptions::new();
    options.read(true).append(true);
    match options.clone().create_new(true).open(path) {
        Ok(file) => Ok((file, true)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let file = options.open(path).map_err(io_error(path, "cannot open the log file"))?;
            Ok((file, false))
        }
        Err(e) => Err(io_error(path, "cannot create the log file")(e)),
    }
}

/// Fsyncs the directory holding `path`, making its entry and length durable.
fn sync_dir(path: &Path) -> Result<(), LogError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir, "cannot fsync the directory"))
}

/// Maps an I/O error to [`LogError::Io`], saying what was being done.
fn io_error<'a>(path: &'a Path, doing: &'a str) -> impl Fn(io::Error) -> LogError + 'a {
    move |e| LogError::Io { path: path.to_path_buf(), source: io::Error::new(e.kind(), format!("{doing}: {e}")) }
}
