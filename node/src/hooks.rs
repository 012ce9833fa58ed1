//! Provisioning hooks: runs the `[hooks]` command of every contract event
//! (active, terminated, expired) with the contract as JSON on stdin, one
//! event at a time, in log order, retrying a failing hook with backoff until
//! it succeeds. It owns the durable cursor: the first event whose hook has
//! not succeeded.
//!
//! The runner tails the contract events the index derives from the durable
//! log (never the event loop's messages), so a slow or failing hook never
//! holds up negotiation, and nothing is lost when it falls behind or the
//! node stops: after a restart it resumes at its cursor. Delivery is at
//! least once: an event whose hook succeeded just before a crash, before the
//! cursor moved past it, runs again; `event_id` (the log index of the
//! event's record) is the same every time, so a hook can tell.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use fulcrum_protocol::keys::PublicKey;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, watch};
use tracing::{debug, error, info, warn};

use crate::cli::view::ContractView;
use crate::config::HooksConfig;
use crate::daemon::{ContractNotice, contract_view, now_ms};
use crate::metrics::Metrics;
use crate::store::index::{Index, IndexError, Lifecycle, LifecycleEvent};

/// Events read from the index at a time.
const BATCH: usize = 64;
/// How often the runner looks for events when nothing woke it (a missed
/// wake-up costs at most this much delay).
const POLL: Duration = Duration::from_secs(5);
/// Bytes of a hook's stdout and of its stderr kept for the logs.
const OUTPUT_TAIL: usize = 2048;
/// How long an in-flight hook may still finish once the daemon stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long the output of a finished hook is still read.
const DRAIN: Duration = Duration::from_secs(1);
/// How often the cursor is stored while it only moves past events that have
/// no hook (running none of them again costs nothing).
const SKIPPED_SAVE_EVERY: Duration = Duration::from_secs(5);
/// How often the backlog gauge is counted while events keep coming.
const BACKLOG_EVERY: Duration = Duration::from_secs(1);
/// Events counted for the backlog gauge, at most.
const BACKLOG_CAP: usize = 100_000;

/// Why the hook runner could not start.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The cursor file could not be read or written.
    #[error("hook cursor {}: {source}", .path.display())]
    Cursor {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// The cursor file holds something else than a log index.
    #[error(
        "hook cursor {} is malformed ({content:?}): write the log index of the first contract event whose hook \
         should run into it, or delete it to run hooks for every event still in the index",
        .path.display()
    )]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What it holds (cut short).
        content: String,
    },
    /// The index could not be read.
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// The durable cursor: the log index of the first contract event whose hook
/// has not succeeded. Stored as decimal text, replaced atomically (a new
/// file fsync'd, renamed over the old one, the directory fsync'd).
#[derive(Debug)]
pub struct HookCursor {
    path: PathBuf,
    next: u64,
}

impl HookCursor {
    /// Reads the cursor at `path`; a missing file is the start of the log.
    pub fn open(path: &Path) -> Result<HookCursor, HookError> {
        let cursor_error = |source| HookError::Cursor { path: path.to_owned(), source };
        // A replacement cut short by a crash: the cursor it would have
        // replaced is still in place.
        match fs::remove_file(temporary(path)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(cursor_error(e)),
        }
        let text = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HookCursor { path: path.to_owned(), next: 0 }),
            Err(e) => return Err(cursor_error(e)),
        };
        let malformed = || HookError::Malformed {
            path: path.to_owned(),
            content: String::from_utf8_lossy(&text[..text.len().min(40)]).into_owned(),
        };
        let digits = std::str::from_utf8(&text).ok().and_then(|t| t.strip_suffix('\n')).ok_or_else(malformed)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        let next = digits.parse().map_err(|_| malformed())?;
        Ok(HookCursor { path: path.to_owned(), next })
    }

    /// The log index of the first event not handled yet.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Moves the cursor to `next` and makes it durable. On an error the
    /// cursor still moves in memory: the file keeps an older position,
    /// which only means hooks run again after a restart.
    pub fn advance(&mut self, next: u64) -> io::Result<()> {
        self.next = next;
        self.store()
    }

    /// Moves the cursor in memory only; [`HookCursor::store`] makes it durable.
    pub fn set(&mut self, next: u64) {
        self.next = next;
    }

    /// Makes the cursor's position durable.
    pub fn store(&self) -> io::Result<()> {
        let tmp = temporary(&self.path);
        let mut file = File::create(&tmp)?;
        file.write_all(format!("{}\n", self.next).as_bytes())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, &self.path)?;
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// What a hook reads on stdin: the event, and the contract exactly as
/// `fulcrumctl --json contracts show` prints it (its state as of the run).
#[derive(Debug, Serialize)]
pub struct HookInput {
    /// `active`, `terminated` or `expired`.
    pub event: &'static str,
    /// The log index of the event's record: the same on every attempt and
    /// after restarts, so a hook can recognise an event it handled.
    pub event_id: u64,
    /// When the event happened, Unix ms (see [`LifecycleEvent::at_ms`]).
    pub at_ms: u64,
    /// Why the contract was terminated; only for `terminated`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// This node's side: `provider` or `consumer`.
    pub role: String,
    /// This node's key, hex.
    pub node_key: String,
    /// The federation.
    pub federation: String,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// The contract.
    pub contract: ContractView,
}

/// How one run of a hook went wrong.
#[derive(Debug)]
enum RunFailure {
    /// Its input could not be made.
    Input(String),
    /// It could not be started.
    Spawn(io::Error),
    /// It exited unsuccessfully (or was killed by a signal).
    Exit(ExitStatus),
    /// It ran past the timeout and was killed.
    Timeout(Duration),
    /// Waiting for it failed.
    Wait(io::Error),
}

impl RunFailure {
    fn outcome(&self) -> &'static str {
        match self {
            RunFailure::Timeout(_) => "timeout",
            _ => "failed",
        }
    }
}

impl std::fmt::Display for RunFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunFailure::Input(why) => write!(f, "no input for it: {why}"),
            RunFailure::Spawn(e) => write!(f, "cannot start it: {e}"),
            RunFailure::Exit(status) => write!(f, "it {status}"),
            RunFailure::Timeout(t) => write!(f, "it ran past its timeout of {} ms and was killed", t.as_millis()),
            RunFailure::Wait(e) => write!(f, "cannot wait for it: {e}"),
        }
    }
}

/// One run of a hook: how it ended and the end of what it printed.
#[derive(Debug)]
struct Run {
    result: Result<(), RunFailure>,
    stdout: String,
    stderr: String,
}

/// A hook's process group, killed whole when the run is over (a timeout,
/// the daemon stopping, or anything the hook left behind).
struct ProcessGroup(Option<nix::unistd::Pid>);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(group) = self.0.take() {
            // ESRCH: the group is already gone, which is the usual case.
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Runs `argv` once with `input` on stdin and `env` added to the daemon's
/// environment, in a process group of its own, killing the group at
/// `timeout` or when the returned future is dropped.
async fn run_once(argv: &[String], env: &[(&str, String)], input: Vec<u8>, timeout: Duration) -> Run {
    let failed = |failure| Run { result: Err(failure), stdout: String::new(), stderr: String::new() };
    let Some((program, args)) = argv.split_first() else {
        return Run { result: Ok(()), stdout: String::new(), stderr: String::new() };
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return failed(RunFailure::Spawn(e)),
    };
    let group = ProcessGroup(child.id().and_then(|id| i32::try_from(id).ok()).map(nix::unistd::Pid::from_raw));
    let stdin = child.stdin.take();
    let writer = tokio::spawn(async move {
        if let Some(mut stdin) = stdin {
            // A hook that exits without reading its input is its business.
            let _ = stdin.write_all(&input).await;
        }
    });
    let stdout = child.stdout.take().map(|out| tokio::spawn(tail(out)));
    let stderr = child.stderr.take().map(|err| tokio::spawn(tail(err)));
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    // Whatever it started goes with it; its pipes close, so the readers end.
    drop(group);
    let result = match waited {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(RunFailure::Exit(status)),
        Ok(Err(e)) => Err(RunFailure::Wait(e)),
        Err(_) => {
            let _ = tokio::time::timeout(DRAIN, child.wait()).await;
            Err(RunFailure::Timeout(timeout))
        }
    };
    writer.abort();
    Run { result, stdout: drained(stdout).await, stderr: drained(stderr).await }
}

/// The last [`OUTPUT_TAIL`] bytes a pipe delivers until it closes.
async fn tail(mut pipe: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * OUTPUT_TAIL {
            kept.drain(..kept.len() - OUTPUT_TAIL);
        }
    }
    let cut = kept.len().saturating_sub(OUTPUT_TAIL);
    kept.split_off(cut)
}

/// What a reader collected, as one line for the logs.
async fn drained(reader: Option<tokio::task::JoinHandle<Vec<u8>>>) -> String {
    let Some(mut reader) = reader else { return String::new() };
    let bytes = match tokio::time::timeout(DRAIN, &mut reader).await {
        Ok(Ok(bytes)) => bytes,
        _ => {
            reader.abort();
            Vec::new()
        }
    };
    String::from_utf8_lossy(&bytes).split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The hook runner: see the module docs.
#[derive(Debug)]
pub struct HookRunner {
    hooks: HooksConfig,
    index: Index,
    cursor: HookCursor,
    metrics: Metrics,
    node_key: PublicKey,
    federation: String,
    /// Contract events reported by the event loop; None once it is gone.
    wake: Option<broadcast::Receiver<ContractNotice>>,
    /// The cursor moved past events with no hook since it was last stored.
    unsaved: bool,
    saved_at: Instant,
    /// When the backlog was last counted, and whether a count is owed.
    counted_at: Option<Instant>,
    recount: bool,
}

/// Whether to go on after an event.
enum Next {
    Continue,
    Stop,
}

impl HookRunner {
    /// Opens the cursor and forgets the events before it. The index must be
    /// caught up with the log (as `Node::start` leaves it); `wake` reports
    /// the contract events of the event loop.
    pub fn open(
        hooks: HooksConfig,
        cursor_path: &Path,
        index: Index,
        metrics: Metrics,
        identity: (PublicKey, String),
        wake: broadcast::Receiver<ContractNotice>,
    ) -> Result<HookRunner, HookError> {
        let (node_key, federation) = identity;
        let mut cursor = HookCursor::open(cursor_path)?;
        let applied = index.applied()?;
        if cursor.next() > applied {
            // The log was replaced by a shorter one (restored from a backup):
            // what it holds was handled before.
            warn!(
                cursor = cursor.next(),
                log_records = applied,
                "the hook cursor is past the end of the agreement log; hooks resume at its end"
            );
            cursor.advance(applied).map_err(|source| HookError::Cursor { path: cursor_path.to_owned(), source })?;
        }
        index.prune_events(cursor.next())?;
        if hooks.any() {
            let pending = index.events_pending(cursor.next(), BACKLOG_CAP)?;
            info!(cursor = cursor.next(), pending, "hook runner started");
        }
        Ok(HookRunner {
            hooks,
            index,
            cursor,
            metrics,
            node_key,
            federation,
            wake: Some(wake),
            unsaved: false,
            saved_at: Instant::now(),
            counted_at: None,
            recount: false,
        })
    }

    /// Runs hooks until `stop` turns true: at once for the events waiting,
    /// then whenever the event loop reports a contract event (and every few
    /// seconds in case a wake-up was missed).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            if let Next::Stop = self.drain(&mut stop).await {
                self.save();
                return;
            }
            if self.unsaved && self.saved_at.elapsed() >= SKIPPED_SAVE_EVERY {
                self.save();
            }
            self.counted_at = None;
            self.refresh_backlog();
            // Idle until the log has a new contract event.
            tokio::select! {
                () = stopped(&mut stop) => {
                    self.save();
                    return;
                }
                woke = next_wake(&mut self.wake) => {
                    if woke.is_err() {
                        // The event loop is gone: only the poll is left.
                        self.wake = None;
                    }
                }
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Waits for `until` (a hook's run, or the pause before its next
    /// attempt), keeping the backlog gauge current as contract events are
    /// reported meanwhile; None once the runner is asked to stop.
    async fn wait<F: std::future::Future>(
        &mut self,
        mut until: std::pin::Pin<&mut F>,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<F::Output> {
        loop {
            // A count put off by the rate limit is made when it is allowed.
            let recount = self.counted_at.filter(|_| self.recount).map(|at| at + BACKLOG_EVERY);
            tokio::select! {
                out = &mut until => return Some(out),
                () = stopped(stop) => return None,
                woke = next_wake(&mut self.wake) => {
                    if woke.is_err() {
                        // The event loop is gone: only the poll is left.
                        self.wake = None;
                    }
                    self.refresh_backlog();
                }
                () = sleep_until(recount) => self.refresh_backlog(),
            }
        }
    }

    /// Handles every event waiting, in order.
    async fn drain(&mut self, stop: &mut watch::Receiver<bool>) -> Next {
        loop {
            let events = match self.index.events_from(self.cursor.next(), BATCH) {
                Ok(events) => events,
                Err(e) => {
                    error!(error = %e, "cannot read contract events from the index; hooks wait");
                    return Next::Continue;
                }
            };
            if events.is_empty() {
                return Next::Continue;
            }
            for event in events {
                if self.command(event.kind).is_empty() {
                    self.skip(event.log_index + 1);
                    continue;
                }
                self.refresh_backlog();
                if let Next::Stop = self.handle(&event, stop).await {
                    return Next::Stop;
                }
                self.done(event.log_index + 1);
            }
        }
    }

    /// Runs the hook of one event until it succeeds (nothing to run for an
    /// event without a hook), or until the runner is stopped.
    async fn handle(&mut self, event: &LifecycleEvent, stop: &mut watch::Receiver<bool>) -> Next {
        let argv = self.command(event.kind).to_vec();
        if argv.is_empty() {
            return Next::Continue;
        }
        let name = event.kind.name();
        let timeout = Duration::from_millis(self.hooks.timeout_ms());
        let mut failures: u32 = 0;
        loop {
            let attempt = failures + 1;
            let started = Instant::now();
            let (run, stopping) = match self.input(event, attempt) {
                Err(why) => {
                    let run = Run { result: Err(RunFailure::Input(why)), stdout: String::new(), stderr: String::new() };
                    (run, false)
                }
                Ok((input, role)) => {
                    let env = [
                        ("FULCRUM_EVENT", name.to_owned()),
                        ("FULCRUM_EVENT_ID", event.log_index.to_string()),
                        ("FULCRUM_CONTRACT_ID", event.contract_id.to_string()),
                        ("FULCRUM_ROLE", role),
                        ("FULCRUM_HOOK_ATTEMPT", attempt.to_string()),
                    ];
                    let running = run_once(&argv, &env, input, timeout);
                    tokio::pin!(running);
                    match self.wait(running.as_mut(), stop).await {
                        Some(run) => (run, false),
                        // Stopping: a hook about to finish may, and counts.
                        None => match tokio::time::timeout(SHUTDOWN_GRACE, running).await {
                            Ok(run) => (run, true),
                            Err(_) => {
                                warn!(
                                    event = name,
                                    event_id = event.log_index,
                                    "stopping: the hook was killed; it runs again at the next start"
                                );
                                return Next::Stop;
                            }
                        },
                    }
                }
            };
            let took = started.elapsed();
            match run.result {
                Ok(()) => {
                    self.metrics.hook_run(name, "ok", took);
                    self.metrics.gauges().hook_failures.set(0);
                    info!(
                        event = name,
                        event_id = event.log_index,
                        contract = %event.contract_id,
                        attempt,
                        took_ms = took.as_millis() as u64,
                        "hook succeeded"
                    );
                    if !run.stdout.is_empty() || !run.stderr.is_empty() {
                        debug!(event_id = event.log_index, stdout = %run.stdout, stderr = %run.stderr, "hook output");
                    }
                    // Stopping after a success: the cursor still moves past it.
                    return if stopping {
                        self.done(event.log_index + 1);
                        Next::Stop
                    } else {
                        Next::Continue
                    };
                }
                Err(failure) => {
                    failures = failures.saturating_add(1);
                    self.metrics.hook_run(name, failure.outcome(), took);
                    self.metrics.gauges().hook_failures.set(i64::from(failures));
                    let retry_ms = self.hooks.backoff_ms(failures);
                    warn!(
                        event = name,
                        event_id = event.log_index,
                        contract = %event.contract_id,
                        attempt,
                        retry_in_ms = retry_ms,
                        stderr = %run.stderr,
                        "hook failed: {failure}; later events wait for it"
                    );
                    if stopping {
                        return Next::Stop;
                    }
                    let pause = tokio::time::sleep(Duration::from_millis(retry_ms));
                    tokio::pin!(pause);
                    if self.wait(pause, stop).await.is_none() {
                        return Next::Stop;
                    }
                }
            }
        }
    }

    /// The JSON a hook reads and this node's role, or why there is none.
    fn input(&self, event: &LifecycleEvent, attempt: u32) -> Result<(Vec<u8>, String), String> {
        let id = event.contract_id;
        let entry = self
            .index
            .contract(&id)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("contract {id} is not in the index; a restart rebuilds it from the log"))?;
        let contract = ContractView::from(contract_view(id, &entry, now_ms())?);
        let input = HookInput {
            event: event.kind.name(),
            event_id: event.log_index,
            at_ms: event.at_ms,
            reason: event.reason.clone(),
            role: contract.role.clone(),
            node_key: self.node_key.to_string(),
            federation: self.federation.clone(),
            attempt,
            contract,
        };
        let mut json = serde_json::to_vec(&input).map_err(|e| e.to_string())?;
        json.push(b'\n');
        Ok((json, input.role))
    }

    /// Moves the cursor past a handled event.
    /// The command configured for an event of `kind` (empty: none).
    fn command(&self, kind: Lifecycle) -> &[String] {
        match kind {
            Lifecycle::Active => &self.hooks.on_active,
            Lifecycle::Terminated => &self.hooks.on_terminated,
            Lifecycle::Expired => &self.hooks.on_expired,
        }
    }

    /// Moves the cursor past a handled event, durably.
    fn done(&mut self, next: u64) {
        self.cursor.set(next);
        self.save();
        self.prune(next);
    }

    /// Moves the cursor past an event with no hook; it is stored now and
    /// then (see [`SKIPPED_SAVE_EVERY`]).
    fn skip(&mut self, next: u64) {
        self.cursor.set(next);
        self.unsaved = true;
        self.prune(next);
    }

    fn save(&mut self) {
        match self.cursor.store() {
            Ok(()) => {
                self.unsaved = false;
                self.saved_at = Instant::now();
            }
            Err(e) => error!(
                path = %self.cursor.path().display(),
                error = %e,
                "cannot store the hook cursor; after a restart, hooks since the last stored position run again"
            ),
        }
    }

    fn prune(&self, next: u64) {
        if let Err(e) = self.index.prune_events(next) {
            debug!(error = %e, "cannot prune handled contract events");
        }
    }

    /// Counts the events waiting (up to [`BACKLOG_CAP`]) for the gauge, at
    /// most every [`BACKLOG_EVERY`].
    fn refresh_backlog(&mut self) {
        if self.counted_at.is_some_and(|at| at.elapsed() < BACKLOG_EVERY) {
            self.recount = true;
            return;
        }
        self.counted_at = Some(Instant::now());
        self.recount = false;
        match self.index.events_pending(self.cursor.next(), BACKLOG_CAP) {
            Ok(n) => {
                self.metrics.gauges().hook_backlog.set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            Err(e) => debug!(error = %e, "cannot count pending contract events"),
        }
    }
}

/// Resolves at `at`; never without it.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Resolves once `stop` is true or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// The next wake-up: a contract event, or a note that some were missed (a
/// wake-up all the same). Never resolves without a channel.
async fn next_wake(wake: &mut Option<broadcast::Receiver<ContractNotice>>) -> Result<(), ()> {
    match wake {
        Some(rx) => match rx.recv().await {
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => Ok(()),
            Err(broadcast::error::RecvError::Closed) => Err(()),
        },
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_missing_cursor_is_the_start_and_a_stored_one_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hooks.cursor");
        let mut cursor = HookCursor::open(&path).unwrap();
        assert_eq!(cursor.next(), 0);
        assert!(!path.exists(), "opening writes nothing");
        cursor.advance(17).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "17\n");
        assert_eq!(HookCursor::open(&path).unwrap().next(), 17);
        cursor.advance(u64::MAX).unwrap();
        assert_eq!(HookCursor::open(&path).unwrap().next(), u64::MAX);
        // Nothing but the cursor is left in the directory.
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["hooks.cursor"]);
    }

    /// A crash in the middle of a replacement leaves the new file half
    /// written next to the old one: the old cursor counts, the debris goes.
    #[test]
    fn a_torn_replacement_keeps_the_previous_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hooks.cursor");
        HookCursor::open(&path).unwrap().advance(5).unwrap();
        fs::write(dir.path().join("hooks.cursor.tmp"), "9").unwrap();
        let mut cursor = HookCursor::open(&path).unwrap();
        assert_eq!(cursor.next(), 5);
        assert!(!dir.path().join("hooks.cursor.tmp").exists());
        cursor.advance(6).unwrap();
        assert_eq!(HookCursor::open(&path).unwrap().next(), 6);
    }

    #[test]
    fn a_malformed_cursor_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hooks.cursor");
        for text in ["", "\n", "12", "12\n\n", "-1\n", "+1\n", " 1\n", "0x10\n", "99999999999999999999\n", "1 2\n"] {
            fs::write(&path, text).unwrap();
            let message = HookCursor::open(&path).expect_err(text).to_string();
            assert!(message.contains("malformed") && message.contains("delete it"), "{text:?}: {message}");
        }
        // A cursor that cannot be stored is an error, and still moves.
        fs::write(&path, "3\n").unwrap();
        let mut cursor = HookCursor::open(&path).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o500)).unwrap();
        let stored = cursor.advance(4);
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        // (root may write anyway; then it simply succeeded.)
        if stored.is_err() {
            assert_eq!(fs::read_to_string(&path).unwrap(), "3\n");
        }
        assert_eq!(cursor.next(), 4);
    }

    fn script(dir: &Path, name: &str, body: &str) -> String {
        let path = dir.join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path.to_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn a_run_gets_its_input_and_environment_and_reports_how_it_ended() {
        let dir = tempfile::tempdir().unwrap();
        let seen = dir.path().join("seen");
        let echo =
            script(dir.path(), "echo", &format!("cat > {}; echo \"$FULCRUM_EVENT out\"; echo err >&2", seen.display()));
        let env = [("FULCRUM_EVENT", "active".to_owned())];
        let run = run_once(&[echo], &env, b"{\"x\":1}\n".to_vec(), Duration::from_secs(20)).await;
        assert!(run.result.is_ok(), "{:?}", run.result);
        assert_eq!(fs::read_to_string(&seen).unwrap(), "{\"x\":1}\n");
        assert_eq!((run.stdout.as_str(), run.stderr.as_str()), ("active out", "err"));

        let fail = script(dir.path(), "fail", "echo 'no quota left' >&2; exit 3");
        let run = run_once(&[fail], &[], Vec::new(), Duration::from_secs(20)).await;
        assert!(matches!(run.result, Err(RunFailure::Exit(s)) if s.code() == Some(3)), "{:?}", run.result);
        assert_eq!(run.stderr, "no quota left");

        let missing = dir.path().join("missing").to_str().unwrap().to_owned();
        let run = run_once(&[missing], &[], Vec::new(), Duration::from_secs(20)).await;
        assert!(matches!(run.result, Err(RunFailure::Spawn(_))), "{:?}", run.result);
    }

    /// A hook past its timeout is killed with everything it started, and
    /// the run ends although a grandchild held its output open.
    #[tokio::test]
    async fn a_timed_out_hook_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("grandchild.pid");
        let slow = script(dir.path(), "slow", &format!("sleep 300 &\necho $! > {}\nwait", pid_file.display()));
        let run = tokio::time::timeout(
            Duration::from_secs(60),
            run_once(&[slow], &[], Vec::new(), Duration::from_millis(500)),
        )
        .await
        .expect("the run ends with the kill, although a grandchild held its output open");
        assert!(matches!(run.result, Err(RunFailure::Timeout(_))), "{:?}", run.result);
        let pid = fs::read_to_string(&pid_file).unwrap().trim().to_owned();
        let gone = (0..100).any(|_| {
            let alive = fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| stat.split_whitespace().nth(2).is_none_or(|state| state != "Z"));
            if alive {
                std::thread::sleep(Duration::from_millis(50));
            }
            !alive
        });
        assert!(gone, "the hook's child {pid} outlived the timeout");
    }
}
