//! The agreement log: the append-only file of framed records that is the
//! node's source of truth and its commit point, the group-commit writer thread
//! that makes appends durable, and the Merkle tree over the durable records.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
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
    /// A frame followed by more data is damaged: committed records may be
    /// lost, so the log is neither opened nor repaired.
    #[error(
        "agreement log {} is corrupt at byte {offset}: {reason}; a damaged frame with data after it is not a torn \
         tail, and records after it may have been acknowledged to peers, so the file was left untouched: restore \
         the log from a peer or a backup",
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

/// Told the duration of every batch's `fsync` by the writer thread (for a
/// latency histogram); it must return quickly.
pub type FsyncObserver = Arc<dyn Fn(Duration) + Send + Sync>;

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
    /// Told the duration of every batch's fsync, once set.
    fsync_observer: OnceLock<FsyncObserver>,
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
            fsync_observer: OnceLock::new(),
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

    /// Tells `observer` the duration of every batch's fsync from now on. Only
    /// the first observer set is kept; returns false if one was set already.
    pub fn observe_fsyncs(&self, observer: FsyncObserver) -> bool {
        self.inner.shared.fsync_observer.set(observer).is_ok()
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
            Ok(elapsed) => {
                if let Some(observe) = self.shared.fsync_observer.get() {
                    observe(elapsed);
                }
                elapsed
            }
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
/// frame followed by any other byte is taken as damage to committed data:
/// cutting there could throw away records acknowledged to peers. (A power
/// loss can also leave a hole inside the last, unacknowledged batch; refusing
/// to open is then the safe mistake.)
fn scan(file: &File, path: &Path) -> Result<Scan, LogError> {
    let read_error = io_error(path, "cannot read the log file");
    let file_len = file.metadata().map_err(io_error(path, "cannot stat the log file"))?.len();
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, file);
    reader.seek(SeekFrom::Start(0)).map_err(read_error)?;
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
        reader.read_exact(&mut header).map_err(read_error)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let stored_crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let body_start = offset + HEADER_BYTES as u64;
        let after_header = file_len - body_start;
        if len == 0 || len as usize > MAX_RECORD_BYTES {
            // No such header is ever written.
            if zeros_to_end(&mut reader, body_start, file_len, path)? {
                return torn(records, offset);
            }
            let what = if len == 0 {
                "an empty record, which is never written".to_string()
            } else {
                format!("{len} bytes, more than the {MAX_RECORD_BYTES} a record may have")
            };
            return corrupt(offset, format!("the frame header claims {what}, and {after_header} bytes follow it"));
        }
        if u64::from(len) > after_header {
            // Also what a damaged length field in one of the last frames
            // looks like; nothing in the file tells the two apart.
            return torn(records, offset);
        }
        let mut payload = vec![0u8; len as usize];
        reader.read_exact(&mut payload).map_err(read_error)?;
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
    let read_error = io_error(path, "cannot read the log file");
    reader.seek(SeekFrom::Start(from)).map_err(read_error)?;
    let mut left = file_len - from;
    let mut chunk = vec![0u8; READ_BUFFER_BYTES];
    while left > 0 {
        let n = usize::try_from(left).map_or(chunk.len(), |left| left.min(chunk.len()));
        reader.read_exact(&mut chunk[..n]).map_err(read_error)?;
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
fn io_error<'a>(path: &'a Path, doing: &'a str) -> impl Fn(io::Error) -> LogError + Copy + 'a {
    move |e| LogError::Io { path: path.to_path_buf(), source: io::Error::new(e.kind(), format!("{doing}: {e}")) }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::fs;

    use proptest::prelude::*;
    use tempfile::TempDir;

    use super::*;

    /// A distinct, non-empty payload of `len` bytes for record number `n`.
    fn record(n: usize, len: usize) -> Vec<u8> {
        format!("record {n};").bytes().cycle().take(len).collect()
    }

    fn tree_of(records: &[Vec<u8>]) -> MerkleTree {
        let mut tree = MerkleTree::new();
        for r in records {
            tree.push(r);
        }
        tree
    }

    /// Byte offset of every frame's header, and the end of the last one.
    fn frame_starts(records: &[Vec<u8>]) -> (Vec<u64>, u64) {
        let mut starts = Vec::new();
        let mut at = 0u64;
        for r in records {
            starts.push(at);
            at += (HEADER_BYTES + r.len()) as u64;
        }
        (starts, at)
    }

    /// A log file holding `records`, written by the log itself.
    fn log_with(records: &[Vec<u8>]) -> (TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agreements.log");
        let (log, recovered) = AgreementLog::open(&path).unwrap();
        assert!(recovered.records.is_empty());
        assert_eq!(log.append_blocking(records.to_vec()).unwrap(), 0);
        log.close();
        (dir, path)
    }

    /// Opens, checks the log equals `expected` and its state matches, closes.
    fn assert_reopens_as(path: &Path, expected: &[Vec<u8>], truncated: u64) {
        let (log, recovered) = AgreementLog::open(path).unwrap();
        assert_eq!(recovered.records, expected);
        assert_eq!(recovered.truncated_bytes, truncated);
        assert_eq!(log.len(), expected.len() as u64);
        assert_eq!(log.root(), tree_of(expected).root());
        assert_eq!(fs::metadata(path).unwrap().len(), frame_starts(expected).1);
        log.close();
    }

    #[test]
    fn append_then_reopen_returns_the_same_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agreements.log");
        let (log, recovered) = AgreementLog::open(&path).unwrap();
        assert!(recovered.records.is_empty() && recovered.truncated_bytes == 0);
        assert!(log.is_empty());
        assert_eq!(log.root(), MerkleTree::new().root());

        let mut all = Vec::new();
        for (call, sizes) in [vec![1], vec![600, 5, 70], vec![MAX_RECORD_BYTES], vec![33, 34]].into_iter().enumerate() {
            let batch: Vec<_> = sizes.iter().enumerate().map(|(i, &len)| record(call * 10 + i, len)).collect();
            assert_eq!(log.append_blocking(batch.clone()).unwrap(), all.len() as u64);
            all.extend(batch);
            assert_eq!(log.len(), all.len() as u64);
            assert_eq!(log.root(), tree_of(&all).root());
        }
        assert_eq!(log.append_blocking(Vec::new()).unwrap(), all.len() as u64, "nothing to append");
        let stats = log.stats();
        assert_eq!(stats.records, all.len() as u64);
        assert_eq!(stats.bytes, frame_starts(&all).1);
        assert_eq!(stats.appends, 4);
        assert_eq!(stats.batches, 4);
        log.with_tree(|tree| assert_eq!(tree.leaf(2), Some(leaf_hash(&all[2]))));
        log.close();

        assert_reopens_as(&path, &all, 0);
        assert_eq!(read_log(&path).unwrap(), (all, false));
    }

    #[test]
    fn the_fsync_observer_hears_every_batch() {
        use std::sync::atomic::AtomicU64;
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = AgreementLog::open(&dir.path().join("agreements.log")).unwrap();
        let heard = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&heard);
        assert!(log.observe_fsyncs(Arc::new(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        })));
        assert!(!log.observe_fsyncs(Arc::new(|_| {})), "only the first observer is kept");
        for i in 0..3 {
            log.append_blocking(vec![record(i, 10)]).unwrap();
        }
        log.close();
        assert_eq!(heard.load(Ordering::Relaxed), log.stats().batches);
        assert_eq!(heard.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_torn_tail_of_every_length_is_cut_and_the_log_goes_on() {
        let records = vec![record(0, 300), record(1, 50), record(2, 60)];
        let (_dir, path) = log_with(&records);
        let full = fs::read(&path).unwrap();
        let (starts, end) = frame_starts(&records);
        let last_start = starts[2];
        let next = record(9, 20);
        for cut in last_start..=end {
            fs::write(&path, &full[..cut as usize]).unwrap();
            let keep = if cut == end { 3 } else { 2 };
            let truncated = if cut == end { 0 } else { cut - last_start };

            let (good, torn) = read_log(&path).unwrap();
            assert_eq!((good.as_slice(), torn), (&records[..keep], truncated > 0), "cut at {cut}");
            assert_eq!(fs::metadata(&path).unwrap().len(), cut, "read_log changed the file");

            let (log, recovered) = AgreementLog::open(&path).unwrap();
            assert_eq!(recovered.records, &records[..keep], "cut at {cut}");
            assert_eq!(recovered.truncated_bytes, truncated, "cut at {cut}");
            assert_eq!(fs::metadata(&path).unwrap().len(), frame_starts(&records[..keep]).1, "cut at {cut}");
            assert_eq!(log.len(), keep as u64);
            assert_eq!(log.root(), tree_of(&records[..keep]).root());
            assert_eq!(log.append_blocking(vec![next.clone()]).unwrap(), keep as u64);
            log.close();

            let mut expected = records[..keep].to_vec();
            expected.push(next.clone());
            assert_reopens_as(&path, &expected, 0);
        }
    }

    /// Damage at each place of a log of four frames: a bad frame followed by
    /// nothing but zeros is a torn tail and is cut; followed by anything else
    /// it is corruption, refused without touching the file.
    #[test]
    fn damage_is_a_torn_tail_only_at_the_end() {
        let records: Vec<_> = (0..4).map(|i| record(i, 40 + i)).collect();
        let (starts, end) = frame_starts(&records);
        let payload = |i: usize| starts[i] + HEADER_BYTES as u64;
        let len_field = |len: u32| len.to_le_bytes().to_vec();
        enum Expect {
            Torn { keep: usize, truncated: u64 },
            Corrupt { offset: u64 },
        }
        let cases: Vec<(&str, u64, Vec<u8>, usize, Expect)> = vec![
            // (what, offset, bytes written there, zero bytes appended, expected)
            (
                "changed byte in the last payload",
                payload(3) + 5,
                vec![b'X'],
                0,
                Expect::Torn { keep: 3, truncated: end - starts[3] },
            ),
            (
                "changed byte in the last CRC",
                starts[3] + 4,
                vec![0xff],
                0,
                Expect::Torn { keep: 3, truncated: end - starts[3] },
            ),
            ("changed byte in a middle payload", payload(1) + 5, vec![b'X'], 0, Expect::Corrupt { offset: starts[1] }),
            ("changed byte in the first payload", payload(0), vec![b'X'], 0, Expect::Corrupt { offset: 0 }),
            ("changed byte in a middle CRC", starts[2] + 4, vec![0xff], 0, Expect::Corrupt { offset: starts[2] }),
            (
                "absurd length in the middle",
                starts[1],
                len_field(MAX_RECORD_BYTES as u32 + 1),
                0,
                Expect::Corrupt { offset: starts[1] },
            ),
            ("zero length in the middle", starts[1], len_field(0), 0, Expect::Corrupt { offset: starts[1] }),
            ("zeroed middle frame", starts[1], vec![0; 8 + 41], 0, Expect::Corrupt { offset: starts[1] }),
            ("zero-filled tail", end, Vec::new(), 5000, Expect::Torn { keep: 4, truncated: 5000 }),
            ("zero-filled tail of 3 bytes", end, Vec::new(), 3, Expect::Torn { keep: 4, truncated: 3 }),
            (
                "last payload half zeroed, zeros after",
                payload(3) + 20,
                vec![0; 23],
                4096,
                Expect::Torn { keep: 3, truncated: end - starts[3] + 4096 },
            ),
            (
                "a header after the last frame whose length runs past the end",
                end,
                [len_field(100), vec![7; 4 + 10]].concat(),
                0,
                Expect::Torn { keep: 4, truncated: 18 },
            ),
            // No crash leaves a header we never write followed by data.
            ("garbage after the last frame", end, vec![7; 8 + 10], 0, Expect::Corrupt { offset: end }),
        ];
        for (what, at, bytes, zeros, expect) in cases {
            let (_dir, path) = log_with(&records);
            let mut damaged = fs::read(&path).unwrap();
            damaged.resize(damaged.len() + zeros, 0);
            let at = at as usize;
            if damaged.len() < at + bytes.len() {
                damaged.resize(at + bytes.len(), 0);
            }
            damaged[at..at + bytes.len()].copy_from_slice(&bytes);
            fs::write(&path, &damaged).unwrap();
            match expect {
                Expect::Torn { keep, truncated } => {
                    let (good, torn) = read_log(&path).unwrap();
                    assert_eq!((good.as_slice(), torn), (&records[..keep], true), "{what}");
                    assert_eq!(fs::read(&path).unwrap(), damaged, "{what}: read_log changed the file");
                    assert_reopens_as(&path, &records[..keep], truncated);
                }
                Expect::Corrupt { offset } => {
                    for result in [AgreementLog::open(&path).map(|_| ()), read_log(&path).map(|_| ())] {
                        match result {
                            Err(LogError::Corrupt { offset: got, path: p, .. }) => {
                                assert_eq!((got, p.as_path()), (offset, path.as_path()), "{what}");
                            }
                            other => panic!("{what}: expected Corrupt, got {other:?}"),
                        }
                    }
                    assert_eq!(fs::read(&path).unwrap(), damaged, "{what}: the file was modified");
                }
            }
        }
    }

    #[test]
    fn corrupt_error_tells_the_operator_what_to_do() {
        let records: Vec<_> = (0..3).map(|i| record(i, 30)).collect();
        let (_dir, path) = log_with(&records);
        let mut bytes = fs::read(&path).unwrap();
        bytes[HEADER_BYTES + 3] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let message = AgreementLog::open(&path).unwrap_err().to_string();
        assert!(message.contains(path.to_str().unwrap()), "{message}");
        assert!(message.contains("at byte 0") && message.contains("restore the log from a peer or a backup"));
    }

    #[test]
    fn oversized_and_empty_records_are_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agreements.log");
        let (log, _) = AgreementLog::open(&path).unwrap();
        log.append_blocking(vec![record(0, 10)]).unwrap();
        let before = fs::read(&path).unwrap();
        let too_large = vec![record(1, 10), vec![1; MAX_RECORD_BYTES + 1]];
        match log.append_blocking(too_large) {
            Err(LogError::TooLarge { len, max }) => assert_eq!((len, max), (MAX_RECORD_BYTES + 1, MAX_RECORD_BYTES)),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(matches!(log.append_blocking(vec![record(2, 10), Vec::new()]), Err(LogError::EmptyRecord)));
        assert_eq!((log.len(), log.stats().appends), (1, 1));
        assert_eq!(fs::read(&path).unwrap(), before);
        log.close();
        assert_reopens_as(&path, &[record(0, 10)], 0);
    }

    #[test]
    fn a_second_open_is_refused_and_close_is_final() {
        fn clone_send_sync<T: Clone + Send + Sync>() {}
        clone_send_sync::<AgreementLog>();

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agreements.log");
        let (log, _) = AgreementLog::open(&path).unwrap();
        assert!(matches!(AgreementLog::open(&path), Err(LogError::Locked { .. })));
        let other = log.clone();
        other.append_blocking(vec![record(0, 10)]).unwrap();
        log.close();
        log.close();
        assert!(matches!(other.append_blocking(vec![record(1, 10)]), Err(LogError::Closed)));
        assert_eq!(other.len(), 1, "a closed log still answers reads");
        drop((log, other));
        // Dropping the last handle also releases the file.
        let (log, recovered) = AgreementLog::open(&path).unwrap();
        assert_eq!(recovered.records.len(), 1);
        drop(log);
        assert!(AgreementLog::open(&path).is_ok());
    }

    #[test]
    fn open_reports_an_unusable_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("agreements.log");
        match AgreementLog::open(&missing) {
            Err(e @ LogError::Io { .. }) => assert!(e.to_string().contains("no-such-dir"), "{e}"),
            other => panic!("expected Io, got {other:?}"),
        }
        assert!(matches!(read_log(&missing), Err(LogError::Io { .. })));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_share_fsyncs_and_each_lands_once() {
        const N: usize = 1000;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agreements.log");
        let (log, _) = AgreementLog::open(&path).unwrap();
        let tasks: Vec<_> = (0..N)
            .map(|n| {
                let log = log.clone();
                tokio::spawn(async move { (n, log.append(vec![record(n, 100)]).await) })
            })
            .collect();
        let mut at = vec![usize::MAX; N];
        for task in tasks {
            let (n, index) = task.await.unwrap();
            at[index.unwrap() as usize] = n;
        }
        assert_eq!(at.iter().copied().collect::<HashSet<_>>().len(), N, "every index was given exactly once");
        let stats = log.stats();
        assert_eq!((stats.records, stats.appends), (N as u64, N as u64));
        assert!(stats.batches < N as u64, "{N} appends took {} fsyncs: no group commit", stats.batches);
        tokio::task::spawn_blocking(move || log.close()).await.unwrap();

        let expected: Vec<_> = at.iter().map(|&n| record(n, 100)).collect();
        assert_reopens_as(&path, &expected, 0);
    }

    /// A file whose fsync fails from the `fail_at`-th call on.
    struct FailingFile {
        syncs: usize,
        fail_at: usize,
        delay: Duration,
    }

    impl LogFile for FailingFile {
        fn write_all(&mut self, _: &[u8]) -> io::Result<()> {
            Ok(())
        }

        fn sync_data(&mut self) -> io::Result<()> {
            self.syncs += 1;
            thread::sleep(self.delay);
            if self.syncs >= self.fail_at { Err(io::Error::from_raw_os_error(5)) } else { Ok(()) }
        }
    }

    #[test]
    fn a_failed_fsync_fails_its_whole_batch_and_halts_the_log() {
        let file = FailingFile { syncs: 0, fail_at: 2, delay: Duration::from_millis(30) };
        let log = AgreementLog::start(PathBuf::from("/fake/agreements.log"), file, &[], 0).unwrap();
        assert_eq!(log.append_blocking(vec![record(0, 10)]).unwrap(), 0);

        // Several appenders in flight while the failing fsync runs: none may
        // be told its record is durable.
        let results: Vec<_> = thread::scope(|s| {
            let handles: Vec<_> = (1..9)
                .map(|n| {
                    s.spawn({
                        let log = &log;
                        move || log.append_blocking(vec![record(n, 10)])
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for result in &results {
            assert!(matches!(result, Err(LogError::Io { .. } | LogError::Halted { .. })), "{result:?}");
        }
        assert!(results.iter().any(|r| matches!(r, Err(LogError::Io { .. }))));
        assert_eq!(log.len(), 1, "nothing from the failed batch is counted");
        assert_eq!(log.root(), tree_of(&[record(0, 10)]).root());
        match log.append_blocking(vec![record(20, 10)]) {
            Err(e @ LogError::Halted { .. }) => assert!(e.to_string().contains("restart"), "{e}"),
            other => panic!("expected Halted, got {other:?}"),
        }
        log.close();
    }

    #[derive(Debug, Clone)]
    enum Step {
        Append(Vec<usize>),
        /// Close, then damage the last frame: cut the file `at` thousandths
        /// of the way into it, or (`flip`) change a byte of its payload.
        Crash {
            at: u64,
            flip: bool,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => proptest::collection::vec(1usize..300, 1..4).prop_map(Step::Append),
            1 => (0u64..1000, any::<bool>()).prop_map(|(at, flip)| Step::Crash { at, flip }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// The log keeps exactly the records whose append returned, minus
        /// the one whose frame a crash tore, and never anything else.
        #[test]
        fn crashes_lose_only_the_torn_frame(steps in proptest::collection::vec(step(), 1..10)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("agreements.log");
            let (mut log, _) = AgreementLog::open(&path).unwrap();
            let mut durable: Vec<Vec<u8>> = Vec::new();
            let mut next = 0;
            for step in steps {
                match step {
                    Step::Append(sizes) => {
                        let batch: Vec<_> = sizes.iter().map(|&len| { next += 1; record(next, len) }).collect();
                        prop_assert_eq!(log.append_blocking(batch.clone()).unwrap(), durable.len() as u64);
                        durable.extend(batch);
                    }
                    Step::Crash { at, flip } => {
                        log.close();
                        let mut truncated = 0;
                        if let Some(last) = durable.pop() {
                            let start = frame_starts(&durable).1;
                            let frame_len = (HEADER_BYTES + last.len()) as u64;
                            let mut bytes = fs::read(&path).unwrap();
                            if flip {
                                bytes[(start + HEADER_BYTES as u64) as usize + at as usize % last.len()] ^= 0x20;
                                truncated = frame_len;
                            } else {
                                let cut = start + at * frame_len / 1000;
                                bytes.truncate(cut as usize);
                                truncated = cut - start;
                            }
                            fs::write(&path, &bytes).unwrap();
                        }
                        let (reopened, recovered) = AgreementLog::open(&path).unwrap();
                        prop_assert_eq!(&recovered.records, &durable);
                        prop_assert_eq!(recovered.truncated_bytes, truncated);
                        prop_assert_eq!(reopened.root(), tree_of(&durable).root());
                        log = reopened;
                    }
                }
            }
            log.close();
            let (_, recovered) = AgreementLog::open(&path).unwrap();
            prop_assert_eq!(recovered.records, durable);
        }
    }
}
