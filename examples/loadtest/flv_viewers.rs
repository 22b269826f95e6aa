//! HTTP-FLV and WS-FLV viewers side by side: what one viewer costs the gateway over each.
//! As `webrtc`: one simulated device replays the recording into a fresh gateway process;
//! the gateway's CPU and RSS are measured with no viewer, then with N viewers of the
//! stream, all HTTP-FLV (chunked, HTTP/1.1) or all WS-FLV (a WebSocket upgrade). Per
//! viewer = (with − without) / N. Viewers read whatever arrives and count the bytes; the
//! stream's `viewers_dropped` and `frames_dropped` must stay 0 (everyone kept up).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use jt1078_gateway::codec::jt1078::{Sim, SimLayout};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::device::{Device, DeviceCounters, Schedule};
use crate::gateway::GatewayProcess;
use crate::procstat;
use crate::webrtc::{DEVICE, load_average, wait_for_video};

/// How a viewer plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) enum Output {
    HttpFlv,
    WsFlv,
}

/// What one run with N viewers of one output measured. CPU: percent of ONE core.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FlvStep {
    pub(crate) output: Output,
    pub(crate) viewers: usize,
    pub(crate) window_secs: f64,
    pub(crate) load_before: f64,
    pub(crate) load_after: f64,
    pub(crate) baseline_cpu_pct: f64,
    pub(crate) baseline_rss_mb: f64,
    pub(crate) cpu_pct: f64,
    pub(crate) rss_mb: f64,
    pub(crate) cpu_per_viewer_pct: f64,
    pub(crate) rss_per_viewer_kb: f64,
    /// Bytes each viewer received in the window: least and most (Mbit/s).
    pub(crate) viewer_mbit_min: f64,
    pub(crate) viewer_mbit_max: f64,
    /// The stream's counters over the window.
    pub(crate) frames_dropped: u64,
    pub(crate) viewers_dropped: u64,
    /// `wsflv_viewers` at the end.
    pub(crate) api_wsflv_viewers: u64,
    pub(crate) viewers_failed: usize,
}

/// Runs the gateway with one device, alone, then with `viewers` viewers of `output`.
pub(crate) async fn step(
    bin: &Path,
    schedule: &Arc<Schedule>,
    layout: SimLayout,
    output: Output,
    viewers: usize,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<FlvStep> {
    let gateway = GatewayProcess::start(bin).await?;
    let stop = CancellationToken::new();
    let device = Device {
        schedule: Arc::clone(schedule),
        sim: Sim::from_digits(DEVICE, layout).context("sim")?,
        in_flight: Arc::new(Mutex::new(VecDeque::new())),
        counters: Arc::new(DeviceCounters::default()),
        window_start: Instant::now(),
    };
    let pusher = tokio::spawn(device.run(gateway.live, Instant::now(), stop.clone()));
    wait_for_video(&gateway).await?;
    tokio::time::sleep(warmup).await;

    let load_before = load_average();
    let cpu0 = procstat::cpu_seconds(gateway.pid)?;
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let baseline_cpu =
        (procstat::cpu_seconds(gateway.pid)? - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    let baseline_rss = procstat::rss_bytes(gateway.pid)?;

    let counters: Vec<Arc<AtomicU64>> = (0..viewers).map(|_| Arc::default()).collect();
    let mut tasks = JoinSet::new();
    let path = format!("/live/{DEVICE}_1.flv");
    for counter in &counters {
        tasks.spawn(watch(
            gateway.http,
            path.clone(),
            output,
            Arc::clone(counter),
            stop.clone(),
        ));
    }
    tokio::time::sleep(warmup).await;

    let api0 = counts(&gateway).await?;
    let bytes0: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let cpu0 = procstat::cpu_seconds(gateway.pid)?;
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let cpu1 = procstat::cpu_seconds(gateway.pid)?;
    let elapsed = t0.elapsed().as_secs_f64();
    let bytes1: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let api1 = counts(&gateway).await?;
    let rss = procstat::rss_bytes(gateway.pid)?;
    let load_after = load_average();

    stop.cancel();
    let mut failed = 0;
    while let Some(result) = tasks.join_next().await {
        if !matches!(result, Ok(Ok(()))) {
            failed += 1;
        }
    }
    pusher.await??;
    gateway.stop().await?;

    let mbit: Vec<f64> = bytes0
        .iter()
        .zip(&bytes1)
        .map(|(a, b)| (b - a) as f64 * 8.0 / elapsed / 1e6)
        .collect();
    let cpu_pct = (cpu1 - cpu0) / elapsed * 100.0;
    let n = viewers.max(1) as f64;
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    Ok(FlvStep {
        output,
        viewers,
        window_secs: elapsed,
        load_before,
        load_after,
        baseline_cpu_pct: baseline_cpu,
        baseline_rss_mb: mb(baseline_rss),
        cpu_pct,
        rss_mb: mb(rss),
        cpu_per_viewer_pct: (cpu_pct - baseline_cpu) / n,
        rss_per_viewer_kb: (rss as f64 - baseline_rss as f64) / 1024.0 / n,
        viewer_mbit_min: mbit.iter().copied().fold(f64::INFINITY, f64::min),
        viewer_mbit_max: mbit.iter().copied().fold(0.0, f64::max),
        frames_dropped: api1.0 - api0.0,
        viewers_dropped: api1.1 - api0.1,
        api_wsflv_viewers: api1.2,
        viewers_failed: failed,
    })
}

/// One viewer: the request (with an upgrade for WS-FLV), then reads until `stop`,
/// counting bytes (framing included; both framings add a few bytes per write).
async fn watch(
    http: SocketAddr,
    path: String,
    output: Output,
    bytes: Arc<AtomicU64>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut socket = TcpStream::connect(http).await?;
    let upgrade = match output {
        Output::HttpFlv => "",
        Output::WsFlv => {
            "Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        }
    };
    socket
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: bench\r\n{upgrade}\r\n").as_bytes())
        .await?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            n = socket.read(&mut buf) => n?,
            () = stop.cancelled() => return Ok(()),
        };
        anyhow::ensure!(n > 0, "the gateway closed the play");
        bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The stream's (frames_dropped, viewers_dropped, wsflv_viewers).
async fn counts(gateway: &GatewayProcess) -> anyhow::Result<(u64, u64, u64)> {
    let streams = gateway.streams().await?;
    let stream = streams
        .iter()
        .find(|s| s.get("device").and_then(|d| d.as_str()) == Some(DEVICE))
        .with_context(|| format!("stream {DEVICE} not in /api/streams"))?;
    let field = |name: &str| {
        stream
            .get(name)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    Ok((
        field("frames_dropped"),
        field("viewers_dropped"),
        field("wsflv_viewers"),
    ))
}

/// The report's table.
pub(crate) fn report(steps: &[FlvStep]) -> String {
    let mut out = String::from(
        "| output | viewers | gateway CPU, no viewer / with (% of one core) | per viewer CPU (% of one core) | RSS no viewer / with (MB) | per viewer RSS (KB) | per viewer Mbit/s min / max | frames / viewers dropped | `wsflv_viewers` | failed | load before / after |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for s in steps {
        out.push_str(&format!(
            "| {:?} | {} | {:.2} / {:.2} | {:.3} | {:.1} / {:.1} | {:.0} | {:.2} / {:.2} | {} / {} | {} | {} | {:.2} / {:.2} |\n",
            s.output,
            s.viewers,
            s.baseline_cpu_pct,
            s.cpu_pct,
            s.cpu_per_viewer_pct,
            s.baseline_rss_mb,
            s.rss_mb,
            s.rss_per_viewer_kb,
            s.viewer_mbit_min,
            s.viewer_mbit_max,
            s.frames_dropped,
            s.viewers_dropped,
            s.api_wsflv_viewers,
            s.viewers_failed,
            s.load_before,
            s.load_after,
        ));
    }
    out
}
