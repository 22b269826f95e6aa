//! The standard `process_*` metrics of this process, read from `/proc/self`.
//!
//! Hand-written: `prometheus-client` has no process collector of its own, and the four
//! numbers come from three small files; the `procfs` crate would parse all of `/proc` for
//! them. On a system without `/proc` the family is left out (no error: the rest of
//! `/metrics` still answers).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second in `/proc/self/stat` (`USER_HZ`: 100 on every Linux ABI; the
/// kernel scales its own HZ to it for user space).
const USER_HZ: f64 = 100.0;

/// The process's numbers at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ProcessNumbers {
    /// User and system CPU time, in seconds.
    pub(crate) cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub(crate) resident_bytes: u64,
    /// Virtual memory, in bytes.
    pub(crate) virtual_bytes: u64,
    /// Threads.
    pub(crate) threads: u64,
    /// Start time, in seconds since the epoch.
    pub(crate) start_time_seconds: Option<f64>,
}

/// Reads `/proc/self/stat` (fields after the command's closing parenthesis, `proc(5)`).
pub(crate) fn parse_stat(stat: &str, boot_time: Option<u64>) -> Option<ProcessNumbers> {
    // the command may hold spaces and parentheses: the fields start after the last ')'
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // `fields[0]` is field 3 (state): field n is at n - 3
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let (utime, stime) = (field(14)?, field(15)?);
    let starttime = field(22)?;
    Some(ProcessNumbers {
        cpu_seconds: (utime + stime) as f64 / USER_HZ,
        threads: field(20)?,
        virtual_bytes: field(23)?,
        // field 24 is in pages: /proc/self/status gives bytes (see `resident_from_status`)
        resident_bytes: 0,
        start_time_seconds: boot_time.map(|boot| boot as f64 + starttime as f64 / USER_HZ),
    })
}

/// `VmRSS` of `/proc/self/status`, in bytes.
pub(crate) fn resident_from_status(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `btime` of `/proc/stat`: when the machine booted, in seconds since the epoch.
fn boot_time() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("btime "))?;
    line.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// Open file descriptors and their limit.
fn fds() -> (Option<u64>, Option<u64>) {
    let open = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|dir| dir.count() as u64);
    let max = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_ascii_whitespace().nth(3)?.parse().ok()
        });
    (open, max)
}

/// The `process_*` families.
#[derive(Debug)]
pub(super) struct ProcessCollector {
    boot_time: Option<u64>,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        ProcessCollector {
            boot_time: boot_time(),
        }
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(mut numbers) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|stat| parse_stat(&stat, self.boot_time))
        else {
            return Ok(());
        };
        numbers.resident_bytes = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| resident_from_status(&status))
            .unwrap_or(0);
        let mut counter = |name: &str, help: &str, value: f64| {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(metric)
        };
        counter(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            numbers.cpu_seconds,
        )?;
        let mut gauge = |name: &str, help: &str, value: f64| {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value).encode(metric)
        };
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            numbers.resident_bytes as f64,
        )?;
        gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            numbers.virtual_bytes as f64,
        )?;
        gauge(
            "process_threads",
            "Number of OS threads in the process",
            numbers.threads as f64,
        )?;
        if let Some(start) = numbers.start_time_seconds {
            gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                start,
            )?;
        }
        let (open, max) = fds();
        if let Some(open) = open {
            // the directory listing's own descriptor is counted too: one less
            gauge(
                "process_open_fds",
                "Number of open file descriptors",
                open.saturating_sub(1) as f64,
            )?;
        }
        if let Some(max) = max {
            gauge(
                "process_max_fds",
                "Maximum number of open file descriptors",
                max as f64,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command() {
        // a command with a space and a parenthesis, as a thread name may have
        let stat = "4242 (jt1078 (gw)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 50 0 0 20 0 7 0 12345 104857600 2560 18446744073709551615";
        let n = parse_stat(stat, Some(1_000_000)).unwrap();
        assert_eq!(n.cpu_seconds, 3.0);
        assert_eq!(n.threads, 7);
        assert_eq!(n.virtual_bytes, 104_857_600);
        assert_eq!(n.start_time_seconds, Some(1_000_123.45));
        assert_eq!(parse_stat("garbage", None), None);
    }

    #[test]
    fn resident_memory_is_vm_rss_in_bytes() {
        let status = "Name:\tjt1078\nVmRSS:\t   20480 kB\nThreads:\t7\n";
        assert_eq!(resident_from_status(status), Some(20 * 1024 * 1024));
        assert_eq!(resident_from_status("Name: x\n"), None);
    }
}
