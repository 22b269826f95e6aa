//! CPU time and resident memory of processes, read from `/proc` (Linux).

use anyhow::{Context, bail};

/// Clock ticks per second of `/proc/*/stat` times (`getconf CLK_TCK`; 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU seconds a process has used, in its own code and in the kernel on its behalf.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpuTimes {
    pub(crate) user: f64,
    pub(crate) system: f64,
}

impl CpuTimes {
    pub(crate) fn total(self) -> f64 {
        self.user + self.system
    }
}

/// User + system CPU seconds a process has used.
pub(crate) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    cpu_times(pid).map(CpuTimes::total)
}

/// User + system CPU seconds the calling thread has used.
pub(crate) fn thread_cpu_seconds() -> anyhow::Result<f64> {
    stat_times("/proc/thread-self/stat").map(CpuTimes::total)
}

/// User and system CPU seconds a process has used.
pub(crate) fn cpu_times(pid: u32) -> anyhow::Result<CpuTimes> {
    stat_times(&format!("/proc/{pid}/stat"))
}

/// User and system CPU seconds from a `/proc` `stat` file (a process's or a thread's).
fn stat_times(path: &str) -> anyhow::Result<CpuTimes> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    // fields after the command name (which may contain spaces) start at the last ')'
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name
    let (Some(utime), Some(stime)) = (fields.get(11), fields.get(12)) else {
        bail!("malformed {path}");
    };
    Ok(CpuTimes {
        user: utime.parse::<f64>()? / TICKS_PER_SEC,
        system: stime.parse::<f64>()? / TICKS_PER_SEC,
    })
}

/// Resident set size in bytes.
pub(crate) fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("no VmRSS")?
        .parse::<u64>()?;
    Ok(kb * 1024)
}

/// CPU seconds and RSS summed over several processes (those that have exited count 0).
pub(crate) fn total(pids: &[u32]) -> (f64, u64) {
    pids.iter().fold((0.0, 0), |(cpu, rss), &pid| {
        (
            cpu + cpu_seconds(pid).unwrap_or(0.0),
            rss + rss_bytes(pid).unwrap_or(0),
        )
    })
}
