//! Capacity and latency: N devices replaying in real time into a fresh gateway process, one
//! HTTP-FLV viewer each; CPU, memory, frames and latency measured over a window.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jt1078_gateway::codec::jt1078::{Sim, SimLayout};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::device::{Device, DeviceCounters, InFlight, Schedule};
use crate::gateway::{GatewayProcess, sum};
use crate::procstat;
use crate::viewer::{self, ViewerReport};

/// First device id of a run; devices count up from it.
pub(crate) const BASE_DEVICE: u64 = 13_900_000_000;

/// Every this many viewers, one is a latency probe (reads at once, records latency).
const PROBE_EVERY: usize = 10;

/// What one step measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Step {
    pub(crate) streams: usize,
    pub(crate) window_secs: f64,
    /// Gateway CPU, percent of the whole machine (all cores).
    pub(crate) gateway_cpu_pct: f64,
    /// The part of it spent in the kernel: socket calls (on loopback a write also runs the
    /// viewer's receive path, a read sends the device its ACK), polling, scheduling.
    pub(crate) gateway_kernel_cpu_pct: f64,
    /// Load generator (devices + viewers) CPU, percent of the whole machine.
    pub(crate) loadgen_cpu_pct: f64,
    pub(crate) gateway_rss_mb: f64,
    pub(crate) gateway_idle_rss_mb: f64,
    /// (RSS − idle RSS) / streams.
    pub(crate) rss_per_stream_kb: f64,
    pub(crate) frames_sent: u64,
    pub(crate) frames_delivered: u64,
    pub(crate) frames_lost: u64,
    /// Frames the gateway itself counted as dropped (slow readers).
    pub(crate) gateway_frames_dropped: u64,
    pub(crate) ingest_mbit_s: f64,
    pub(crate) egress_mbit_s: f64,
    pub(crate) latency_p50_ms: f64,
    pub(crate) latency_p99_ms: f64,
    pub(crate) latency_max_ms: f64,
    pub(crate) devices_failed: u64,
    pub(crate) viewers_failed: u64,
}

impl Step {
    /// Every frame arrived, in time.
    pub(crate) fn kept_up(&self) -> bool {
        self.frames_lost == 0
            && self.frames_sent > 0
            && self.frames_delivered == self.frames_sent
            && self.devices_failed == 0
            && self.viewers_failed == 0
            && self.latency_p99_ms < 1000.0
    }
}

/// Percentile (0..=100) of sorted microseconds, in milliseconds.
pub(crate) fn percentile_ms(sorted_us: &[u32], pct: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((pct / 100.0) * (sorted_us.len() - 1) as f64).round() as usize;
    f64::from(sorted_us[rank.min(sorted_us.len() - 1)]) / 1000.0
}

/// Runs one step with `streams` devices and viewers.
pub(crate) async fn step(
    bin: &Path,
    schedule: &Arc<Schedule>,
    layout: SimLayout,
    streams: usize,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<Step> {
    let gateway = GatewayProcess::start(bin).await?;
    let idle_rss = procstat::rss_bytes(gateway.pid)?;
    let stop = CancellationToken::new();
    let counters = Arc::new(DeviceCounters::default());
    let stagger = Duration::from_secs(1);
    let begin = Instant::now();
    let window_start = begin + stagger + warmup;
    let mut viewers = JoinSet::new();
    let mut devices = JoinSet::new();
    for i in 0..streams {
        let id = (BASE_DEVICE + i as u64).to_string();
        let in_flight: InFlight = Arc::new(Mutex::new(VecDeque::new()));
        viewers.spawn(viewer::watch(
            gateway.http,
            format!("/live/{id}_1.flv"),
            Arc::clone(&in_flight),
            window_start,
            i % PROBE_EVERY == 0,
        ));
        let device = Device {
            schedule: Arc::clone(schedule),
            sim: Sim::from_digits(&id, layout).ok_or_else(|| anyhow::anyhow!("sim {id}"))?,
            in_flight,
            counters: Arc::clone(&counters),
            window_start,
        };
        let start = begin + stagger.mul_f64(i as f64 / streams as f64);
        devices.spawn(device.run(gateway.live, start, stop.clone()));
    }
    tokio::time::sleep_until(window_start).await;
    let self_pid = std::process::id();
    let (gw_cpu0, me_cpu0) = (
        procstat::cpu_times(gateway.pid)?,
        procstat::cpu_seconds(self_pid)?,
    );
    let (bytes_in0, bytes_out0) = {
        let s = gateway.streams().await?;
        (sum(&s, "bytes_in"), sum(&s, "bytes_out"))
    };
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let (gw_cpu1, me_cpu1) = (
        procstat::cpu_times(gateway.pid)?,
        procstat::cpu_seconds(self_pid)?,
    );
    let rss = procstat::rss_bytes(gateway.pid)?;
    let api = gateway.streams().await?;
    stop.cancel();
    let mut devices_failed = counters.failed.load(Ordering::Relaxed);
    while let Some(result) = devices.join_next().await {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                eprintln!("device failed: {error:#}");
                devices_failed += 1;
            }
            Err(error) => {
                eprintln!("device task failed: {error}");
                devices_failed += 1;
            }
        }
    }
    let mut seen = ViewerReport::default();
    let mut viewers_failed = 0;
    let drain = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(result) = viewers.join_next().await {
            match result {
                Ok(Ok(r)) => {
                    seen.delivered_in_window += r.delivered_in_window;
                    seen.lost_in_window += r.lost_in_window;
                    seen.latencies_us.extend(r.latencies_us);
                }
                Ok(Err(error)) => {
                    eprintln!("viewer failed: {error:#}");
                    viewers_failed += 1;
                }
                Err(_) => viewers_failed += 1,
            }
        }
    })
    .await;
    if drain.is_err() {
        viewers_failed += viewers.len() as u64;
        viewers.abort_all();
    }
    gateway.stop().await?;
    seen.latencies_us.sort_unstable();
    let lat = &seen.latencies_us;
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    Ok(Step {
        streams,
        window_secs: elapsed,
        gateway_cpu_pct: (gw_cpu1.total() - gw_cpu0.total()) / elapsed / cores * 100.0,
        gateway_kernel_cpu_pct: (gw_cpu1.system - gw_cpu0.system) / elapsed / cores * 100.0,
        loadgen_cpu_pct: (me_cpu1 - me_cpu0) / elapsed / cores * 100.0,
        gateway_rss_mb: mb(rss),
        gateway_idle_rss_mb: mb(idle_rss),
        rss_per_stream_kb: rss.saturating_sub(idle_rss) as f64 / 1024.0 / streams as f64,
        frames_sent: counters.frames_in_window.load(Ordering::Relaxed),
        frames_delivered: seen.delivered_in_window,
        frames_lost: seen.lost_in_window,
        gateway_frames_dropped: sum(&api, "frames_dropped"),
        ingest_mbit_s: sum(&api, "bytes_in").saturating_sub(bytes_in0) as f64 * 8.0 / elapsed / 1e6,
        egress_mbit_s: sum(&api, "bytes_out").saturating_sub(bytes_out0) as f64 * 8.0
            / elapsed
            / 1e6,
        latency_p50_ms: percentile_ms(lat, 50.0),
        latency_p99_ms: percentile_ms(lat, 99.0),
        latency_max_ms: percentile_ms(lat, 100.0),
        devices_failed,
        viewers_failed,
    })
}
