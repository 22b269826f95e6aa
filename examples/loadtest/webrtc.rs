//! WebRTC viewers: what a viewer costs the gateway. One simulated device replays the
//! recording into a fresh gateway process; the gateway's CPU and RSS are measured over a
//! window with no viewer, then N `str0m` viewers play the stream over WHEP (one offer
//! after another) and the same is measured again. Per viewer = (with − without) / N.
//!
//! Each viewer counts the frames it depacketizes; over the window, every viewer should
//! get as many as the stream published (`/api/streams` deltas). The two counts are read
//! one after the other, so a frame on its way at either edge of the window may be counted
//! on one side only: a shortfall of one frame per track is the edge, not a loss.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use jt1078_gateway::codec::jt1078::{Sim, SimLayout};
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::device::{Device, DeviceCounters, Schedule};
use crate::first_frame::Spread;
use crate::gateway::GatewayProcess;
use crate::procstat;
use crate::webrtc_pool::{Pool, PoolSnapshot};
use crate::webrtc_viewer::{ViewerCounts, WebRtcOffer};

/// The device every viewer watches.
pub(crate) const DEVICE: &str = "13600000001";

/// How often the gateway's RSS is sampled in the viewers' window.
const RSS_SAMPLE: Duration = Duration::from_secs(5);

/// Frames per track a viewer may be short at the edges of the window (see the module doc).
const EDGE_FRAMES: u64 = 1;

/// What one run with N viewers measured. CPU figures are percent of ONE core.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WebRtcStep {
    pub(crate) viewers: usize,
    pub(crate) window_secs: f64,
    /// 1-minute load average (`/proc/loadavg`) when the baseline window opened and when
    /// the viewers' window closed.
    pub(crate) load_before: f64,
    pub(crate) load_after: f64,
    /// The gateway with the device and no viewer.
    pub(crate) baseline_cpu_pct: f64,
    pub(crate) baseline_rss_mb: f64,
    /// The gateway with the viewers.
    pub(crate) cpu_pct: f64,
    /// Of which in the kernel.
    pub(crate) kernel_cpu_pct: f64,
    /// RSS at the end of the viewers' window.
    pub(crate) rss_mb: f64,
    /// RSS every [`RSS_SAMPLE`] through the viewers' window, from its start (growth shows
    /// here).
    pub(crate) rss_samples_mb: Vec<f64>,
    pub(crate) cpu_per_viewer_pct: f64,
    pub(crate) rss_per_viewer_kb: f64,
    /// The viewers' loop (its own thread).
    pub(crate) client_cpu_pct: f64,
    /// The whole load runner (viewers, the device, HTTP).
    pub(crate) loadgen_cpu_pct: f64,
    /// Frames the stream published in the window.
    pub(crate) video_published: u64,
    pub(crate) audio_published: u64,
    /// Frames each viewer received in the window: least and median.
    pub(crate) video_min: u64,
    pub(crate) video_median: u64,
    pub(crate) audio_min: u64,
    pub(crate) audio_median: u64,
    /// Frames short beyond the edge allowance, all viewers.
    pub(crate) frames_lost: u64,
    /// Viewers short of frames beyond the edge allowance.
    pub(crate) viewers_behind: usize,
    /// Video frames received after a gap in RTP (packets lost), all viewers, in the window.
    pub(crate) video_gaps: u64,
    /// The stream's `frames_dropped` in the window (readers that fell behind).
    pub(crate) gateway_frames_dropped: u64,
    /// Per viewer: datagrams/s and Mbit/s received in the window.
    pub(crate) datagrams_per_viewer_s: f64,
    pub(crate) mbit_per_viewer_s: f64,
    /// `webrtc_viewers` of the stream in `/api/streams` during the window.
    pub(crate) api_webrtc_viewers: u64,
    /// Viewers whose offer failed, or whose session ended before the window closed.
    pub(crate) viewers_failed: usize,
    /// WHEP POST sent → 201 answer, ms.
    pub(crate) answer: Spread,
    /// POST sent → ICE and DTLS connected, ms.
    pub(crate) connected: Spread,
    /// POST sent → first video frame depacketized, ms.
    pub(crate) first_frame: Spread,
}

impl WebRtcStep {
    /// Every viewer got every frame.
    pub(crate) fn kept_up(&self) -> bool {
        self.viewers_failed == 0 && self.viewers_behind == 0 && self.video_published > 0
    }
}

/// The stream's counters at one moment.
#[derive(Debug, Clone, Copy)]
struct StreamCounts {
    video: u64,
    audio: u64,
    dropped: u64,
    webrtc_viewers: u64,
}

/// Runs the gateway with one device, first alone, then with `viewers` WebRTC viewers
/// (offers `offer_gap` apart).
pub(crate) async fn step(
    bin: &Path,
    schedule: &Arc<Schedule>,
    layout: SimLayout,
    viewers: usize,
    offer_gap: Duration,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<WebRtcStep> {
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

    // the device alone
    let load_before = load_average();
    let baseline_cpu = measure_cpu(gateway.pid, window).await?;
    let baseline_rss = procstat::rss_bytes(gateway.pid)?;

    // the viewers, one offer after another
    let pool = Pool::start()?;
    let path = format!("/whep/live/{DEVICE}_1");
    let mut failed = 0;
    for i in 0..viewers {
        let offer = WebRtcOffer::new()?;
        match offer.post(gateway.http, &path).await {
            Ok(viewer) => pool.add(viewer).await?,
            Err(error) => {
                eprintln!("viewer {i}: {error:#}");
                failed += 1;
            }
        }
        tokio::time::sleep(offer_gap).await;
    }
    tokio::time::sleep(warmup).await;

    let self_pid = std::process::id();
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    let (pool0, api0) = (pool.snapshot().await?, stream_counts(&gateway).await?);
    let (gw0, me0) = (
        procstat::cpu_times(gateway.pid)?,
        procstat::cpu_seconds(self_pid)?,
    );
    let t0 = Instant::now();
    let mut rss_samples = Vec::new();
    while t0.elapsed() < window {
        rss_samples.push(mb(procstat::rss_bytes(gateway.pid)?));
        tokio::time::sleep(RSS_SAMPLE.min(window.saturating_sub(t0.elapsed()))).await;
    }
    let (pool1, api1) = (pool.snapshot().await?, stream_counts(&gateway).await?);
    let (gw1, me1) = (
        procstat::cpu_times(gateway.pid)?,
        procstat::cpu_seconds(self_pid)?,
    );
    let elapsed = t0.elapsed().as_secs_f64();
    let rss = procstat::rss_bytes(gateway.pid)?;
    let load_after = load_average();

    pool.stop().await?;
    stop.cancel();
    pusher.await??;
    gateway.stop().await?;

    rss_samples.push(mb(rss));
    let pct = |seconds: f64| seconds / elapsed * 100.0;
    let cpu_pct = pct(gw1.total() - gw0.total());
    let published = (api1.video - api0.video, api1.audio - api0.audio);
    let window_counts = Window::of(&pool0, &pool1, published);
    let n = viewers.max(1) as f64;
    let times = |f: fn(&ViewerCounts) -> Option<f64>| {
        Spread::of(&pool1.viewers.iter().filter_map(f).collect::<Vec<_>>())
    };
    Ok(WebRtcStep {
        viewers,
        window_secs: elapsed,
        load_before,
        load_after,
        baseline_cpu_pct: baseline_cpu,
        baseline_rss_mb: mb(baseline_rss),
        cpu_pct,
        kernel_cpu_pct: pct(gw1.system - gw0.system),
        rss_mb: mb(rss),
        rss_samples_mb: rss_samples,
        cpu_per_viewer_pct: (cpu_pct - baseline_cpu) / n,
        rss_per_viewer_kb: (rss as f64 - baseline_rss as f64) / 1024.0 / n,
        client_cpu_pct: pct(pool1.cpu_seconds - pool0.cpu_seconds),
        loadgen_cpu_pct: pct(me1 - me0),
        video_published: published.0,
        audio_published: published.1,
        video_min: window_counts.video.first().copied().unwrap_or(0),
        video_median: median(&window_counts.video),
        audio_min: window_counts.audio.first().copied().unwrap_or(0),
        audio_median: median(&window_counts.audio),
        frames_lost: window_counts.lost,
        viewers_behind: window_counts.behind,
        video_gaps: window_counts.gaps,
        gateway_frames_dropped: api1.dropped - api0.dropped,
        datagrams_per_viewer_s: window_counts.datagrams as f64 / n / elapsed,
        mbit_per_viewer_s: window_counts.bytes as f64 * 8.0 / n / elapsed / 1e6,
        api_webrtc_viewers: api1.webrtc_viewers.min(api0.webrtc_viewers),
        viewers_failed: failed + pool1.viewers.iter().filter(|v| v.closed).count(),
        answer: times(|v| Some(v.answer_ms)),
        connected: times(|v| v.connected_ms),
        first_frame: times(|v| v.first_frame_ms),
    })
}

/// A process's CPU over a window, percent of one core.
async fn measure_cpu(pid: u32, window: Duration) -> anyhow::Result<f64> {
    let cpu0 = procstat::cpu_seconds(pid)?;
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let cpu1 = procstat::cpu_seconds(pid)?;
    Ok((cpu1 - cpu0) / t0.elapsed().as_secs_f64() * 100.0)
}

/// What the viewers received between two snapshots.
struct Window {
    /// Frames per viewer, sorted.
    video: Vec<u64>,
    audio: Vec<u64>,
    lost: u64,
    behind: usize,
    gaps: u64,
    datagrams: u64,
    bytes: u64,
}

impl Window {
    fn of(before: &PoolSnapshot, after: &PoolSnapshot, published: (u64, u64)) -> Window {
        let mut window = Window {
            video: Vec::new(),
            audio: Vec::new(),
            lost: 0,
            behind: 0,
            gaps: 0,
            datagrams: 0,
            bytes: 0,
        };
        for (a, b) in before.viewers.iter().zip(&after.viewers) {
            let (video, audio) = (
                b.video_frames - a.video_frames,
                b.audio_frames - a.audio_frames,
            );
            let short = published.0.saturating_sub(video + EDGE_FRAMES)
                + published.1.saturating_sub(audio + EDGE_FRAMES);
            window.lost += short;
            window.behind += usize::from(short > 0);
            window.gaps += b.video_gaps - a.video_gaps;
            window.datagrams += b.datagrams - a.datagrams;
            window.bytes += b.bytes - a.bytes;
            window.video.push(video);
            window.audio.push(audio);
        }
        window.video.sort_unstable();
        window.audio.sort_unstable();
        window
    }
}

fn median(sorted: &[u64]) -> u64 {
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}

async fn stream_counts(gateway: &GatewayProcess) -> anyhow::Result<StreamCounts> {
    let streams = gateway.streams().await?;
    let stream = streams
        .iter()
        .find(|s| s.get("device").and_then(|d| d.as_str()) == Some(DEVICE))
        .with_context(|| format!("stream {DEVICE} not in /api/streams"))?;
    let field = |name: &str| stream.get(name).and_then(serde_json::Value::as_u64);
    Ok(StreamCounts {
        video: field("video_frames").context("video_frames")?,
        audio: field("audio_frames").context("audio_frames")?,
        dropped: field("frames_dropped").context("frames_dropped")?,
        webrtc_viewers: field("webrtc_viewers").context("webrtc_viewers")?,
    })
}

/// Waits until the device's stream has published video: an HTTP-FLV request waits in the
/// gateway for the stream and for its first key frame (then leaves).
pub(crate) async fn wait_for_video(gateway: &GatewayProcess) -> anyhow::Result<()> {
    let path = format!("/live/{DEVICE}_1.flv");
    tokio::time::timeout(
        Duration::from_secs(10),
        crate::viewer::first_key_frame(gateway.http, &path),
    )
    .await
    .map_err(|_| anyhow::anyhow!("stream {DEVICE} published no video within 10 s"))??;
    Ok(())
}

/// The 1-minute load average.
pub(crate) fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}
