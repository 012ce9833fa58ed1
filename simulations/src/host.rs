//! What the host says about the simulator process (Linux `/proc`): resident
//! memory now (`VmRSS`) and at its peak (`VmHWM`), CPU time used, and the
//! load average, which says how much the nodes had to share the machine.
//! Elsewhere these read 0.

/// Memory and CPU over a run.
#[derive(Debug, Clone, Default)]
pub struct HostStats {
    /// Resident set before any node started, KiB.
    pub baseline_kib: u64,
    /// Peak resident set while the nodes ran, KiB.
    pub peak_kib: u64,
    /// Resident set over time: seconds from the start, MiB.
    pub samples: Vec<(f64, f64)>,
    /// CPU time of the process over the run, s (user and system).
    pub cpu_s: f64,
    /// One-minute load average of the host at the start and at the end.
    pub load: (f64, f64),
    /// CPUs available.
    pub cpus: usize,
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok()))
        .unwrap_or(0)
}

/// Resident set now, KiB.
pub fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// Peak resident set so far, KiB.
pub fn peak_kib() -> u64 {
    status_kib("VmHWM:")
}

/// CPU time used by this process so far, s (clock ticks of 1/100 s, as
/// Linux reports them to user space).
pub fn cpu_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the command name (which may hold spaces) start at the state.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the line, 11 and 12 after the state.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// The one-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split_whitespace().next()?.parse().ok()).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        if cfg!(target_os = "linux") {
            let (now, peak) = (rss_kib(), peak_kib());
            assert!(now > 0 && peak >= now, "{now} {peak}");
            let spin = std::time::Instant::now();
            let mut x = 0u64;
            while spin.elapsed().as_millis() < 50 {
                x = x.wrapping_add(std::hint::black_box(1));
            }
            assert!(x > 0 && cpu_s() > 0.0);
            assert!(load_average() >= 0.0);
        }
    }
}
