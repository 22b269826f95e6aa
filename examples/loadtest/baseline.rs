//! The usual alternative, measured in the same run: one
//! `ffmpeg -f h264 -i pipe: -c copy -f flv` process per stream, fed the reassembled H.264
//! in real time (the way the seed's system and many deployments still do it); and the
//! issue's anchor command, `ffmpeg -re -f h264 -i capture.h264 -c copy -f flv /dev/null`,
//! where ffmpeg paces itself.

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

/// How ffmpeg gets its input.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) enum Feed {
    /// The runner writes each frame to ffmpeg's stdin when it is due.
    Pipe,
    /// ffmpeg reads a file at its native rate (`-re`); the file repeats the recording for
    /// longer than the measurement (raw H.264 cannot be looped with `-stream_loop`).
    ReadRate,
}

impl Feed {
    /// The command line, for the report.
    pub(crate) fn command(self) -> &'static str {
        match self {
            Feed::Pipe => "ffmpeg -f h264 -i pipe: -c copy -f flv /dev/null",
            Feed::ReadRate => "ffmpeg -re -f h264 -i capture.h264 -c copy -f flv /dev/null",
        }
    }
}

/// What the baseline used.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Baseline {
    pub(crate) feed: Feed,
    pub(crate) streams: usize,
    pub(crate) window_secs: f64,
    /// All ffmpeg processes, percent of the whole machine.
    pub(crate) cpu_pct: f64,
    pub(crate) rss_mb: f64,
}

/// Runs `streams` ffmpeg processes fed by `feed` for `warmup` + `window`.
pub(crate) async fn run(
    schedule: &Arc<Schedule>,
    feed: Feed,
    streams: usize,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<Baseline> {
    let mut children = Vec::with_capacity(streams);
    let mut feeders = JoinSet::new();
    let begin = Instant::now();
    let capture = std::env::temp_dir().join(format!("loadtest-{}.h264", std::process::id()));
    if let Feed::ReadRate = feed {
        let needed = PROBE_TIME + warmup + window + Duration::from_secs(10);
        let rounds = needed.as_millis() as u64 / schedule.span_ms.max(1) + 1;
        let once: Vec<u8> = schedule
            .video
            .iter()
            .flat_map(|(_, f)| f.iter().copied())
            .collect();
        std::fs::write(&capture, once.repeat(rounds as usize))
            .with_context(|| format!("writing {}", capture.display()))?;
    }
    for i in 0..streams {
        let mut command = Command::new("ffmpeg");
        command.args(["-hide_banner", "-loglevel", "error"]);
        match feed {
            Feed::Pipe => command.args(["-f", "h264", "-i", "pipe:"]),
            Feed::ReadRate => command.args(["-re", "-f", "h264", "-i"]).arg(&capture),
        };
        let mut child = command
            .args(["-c", "copy", "-f", "flv", "-y", "/dev/null"])
            .stdin(match feed {
                Feed::Pipe => Stdio::piped(),
                Feed::ReadRate => Stdio::null(),
            })
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting ffmpeg (apt-get install ffmpeg)")?;
        if let Feed::Pipe = feed {
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
        }
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
    if let Feed::ReadRate = feed {
        // gone already is fine
        let _ = std::fs::remove_file(&capture);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    Ok(Baseline {
        feed,
        streams,
        window_secs: elapsed,
        cpu_pct: (cpu1 - cpu0) / elapsed / cores * 100.0,
        rss_mb: rss as f64 / (1024.0 * 1024.0),
    })
}
