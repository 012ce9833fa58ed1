//! Agreement log benchmarks: `cargo bench -p fulcrum-node --bench log`. The
//! figures depend on the disk's fsync latency far more than on the code, so
//! read them against (a), the raw floor measured on the same file system.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fs::OpenOptions;
use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fulcrum_node::store::log::AgreementLog;
use tempfile::TempDir;

/// About the size of a CBOR contract record with both signatures.
const RECORD_BYTES: usize = 600;

/// Concurrent appenders in the group-commit benchmark.
const APPENDERS: usize = 64;

fn scratch_dir() -> TempDir {
    tempfile::Builder::new().prefix("fulcrum-log-bench").tempdir_in(std::env::temp_dir()).unwrap()
}

/// (a) The floor: what one durable write of one frame costs with no log at all.
fn raw_write_and_fsync(c: &mut Criterion) {
    let dir = scratch_dir();
    let mut file = OpenOptions::new().create(true).append(true).open(dir.path().join("raw.log")).unwrap();
    let payload = vec![0xa5; RECORD_BYTES];
    let mut frame = Vec::with_capacity(8 + RECORD_BYTES);
    frame.extend_from_slice(&(RECORD_BYTES as u32).to_le_bytes());
    frame.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);

    let mut group = c.benchmark_group("log");
    group.throughput(Throughput::Elements(1));
    group.bench_function("(a) raw write_all + sync_data, one 600-byte frame", |b| {
        b.iter(|| {
            file.write_all(black_box(&frame)).unwrap();
            file.sync_data().unwrap();
        })
    });
    group.finish();
}

/// (b) One appender: every append waits for its own fsync.
fn append_blocking(c: &mut Criterion) {
    let dir = scratch_dir();
    let (log, _) = AgreementLog::open(&dir.path().join("agreements.log")).unwrap();
    let payload = vec![0xa5; RECORD_BYTES];

    let mut group = c.benchmark_group("log");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("(b) append_blocking, one 600-byte record", |b| {
        b.iter(|| log.append_blocking(vec![payload.clone()]).unwrap())
    });
    group.finish();
    log.close();
}

/// (c) Group commit: 64 tasks append one record at a time, each waiting for
/// its append to be durable before the next; one iteration is one record per
/// appender, so the throughput is in records per second.
fn group_commit(c: &mut Criterion) {
    let dir = scratch_dir();
    let (log, _) = AgreementLog::open(&dir.path().join("agreements.log")).unwrap();
    let payload = vec![0xa5; RECORD_BYTES];
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();

    let mut group = c.benchmark_group("log");
    group.throughput(Throughput::Elements(APPENDERS as u64));
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("(c) group commit, 64 concurrent appenders, 600-byte records", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                let tasks: Vec<_> = (0..APPENDERS)
                    .map(|_| {
                        let (log, payload) = (log.clone(), payload.clone());
                        tokio::spawn(async move {
                            for _ in 0..iters {
                                log.append(vec![payload.clone()]).await.unwrap();
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
                started.elapsed()
            })
        })
    });
    group.finish();
    let stats = log.stats();
    println!(
        "group commit: {} appends in {} fsyncs ({:.1} appends per fsync), last fsync {} us",
        stats.appends,
        stats.batches,
        stats.appends as f64 / stats.batches.max(1) as f64,
        stats.last_fsync_micros
    );
    log.close();
}

criterion_group!(benches, raw_write_and_fsync, append_blocking, group_commit);
criterion_main!(benches);
