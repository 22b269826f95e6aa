//! The usual alternative, measured in the same run: one
//! `ffmpeg -f h264 -i pipe: -c copy -f flv` process per stream, fed the reassembled H.264
//! in real time (the way the seed's system and many deployments still do it).

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::device::Schedule;
use crate::procstat;

/// How long ffmpeg probes a raw H.264 input before it starts writing, plus a margin.
const PROBE_TIME: Duration = Duration::from_secs(8);

/// What the baseline used.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Baseline {
    pub(crate) streams: usize,
    pub(crate) window_secs: f64,
    /// All ffmpeg processes, percent of the whole machine.
    pub(crate) cpu_pct: f64,
    pub(crate) rss_mb: f64,
}

/// Runs `streams` ffmpeg processes for `warmup` + `window`.
pub(crate) async fn run(
    schedule: &Arc<Schedule>,
    streams: usize,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<Baseline> {
    let mut children = Vec::with_capacity(streams);
    let mut feeders = JoinSet::new();
    let begin = Instant::now();
    for i in 0..streams {
        let mut child = Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-f",
                "h264",
                "-i",
                "pipe:",
            ])
            .args(["-c", "copy", "-f", "flv", "-y", "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting ffmpeg (apt-get install ffmpeg)")?;
        let mut stdin = child.stdin.take().context("ffmpeg stdin")?;
        let schedule = Arc::clone(schedule);
        let start = begin + Duration::from_secs(1).mul_f64(i as f64 / streams as f64);
        feeders.spawn(async move {
            for round in 0u64.. {
                for (due, frame) in &schedule.video {
                    let at = start + Duration::from_millis(due + round * schedule.span_ms);
                    tokio::time::sleep_until(at).await;
                    if stdin.write_all(frame).await.is_err() {
                        return;
                    }
                }
            }
        });
        children.push(child);
    }
    let pids: Vec<u32> = children.iter().filter_map(|c| c.id()).collect();
    // ffmpeg reads about 5 s of a raw H.264 input before it writes anything (stream
    // probing): measure only after that, whatever the warm-up asked for
    tokio::time::sleep_until(begin + Duration::from_secs(1) + warmup.max(PROBE_TIME)).await;
    let (cpu0, _) = procstat::total(&pids);
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let (cpu1, rss) = procstat::total(&pids);
    feeders.abort_all();
    for mut child in children {
        child.kill().await?;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    Ok(Baseline {
        streams,
        window_secs: elapsed,
        cpu_pct: (cpu1 - cpu0) / elapsed / cores * 100.0,
        rss_mb: rss as f64 / (1024.0 * 1024.0),
    })
}
