//! Load runner: drives the real gateway (its own process, over loopback) with simulated
//! devices and HTTP-FLV viewers, and measures capacity, latency, first-frame time and the
//! ffmpeg-per-stream baseline. Writes Markdown, JSON and an SVG plot. The `webrtc`
//! subcommand measures WebRTC viewers of one stream instead (`webrtc.rs`).
//!
//! ```sh
//! cargo build --release --bin jt1078-gateway --example loadtest
//! target/release/examples/loadtest --steps 10,100,250,500,1000 --out docs/bench
//! target/release/examples/loadtest webrtc --viewers 10,100 --out docs/bench/webrtc
//! target/release/examples/loadtest control --requests 1000000 --out docs/bench/control
//! ```
//!
//! See docs/benchmarks.md for what each figure means.

#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line report"
)]

mod baseline;
mod capacity;
mod chunked;
mod control;
mod device;
mod first_frame;
mod flv_viewers;
mod gateway;
mod procstat;
mod report;
mod viewer;
mod webrtc;
mod webrtc_pool;
mod webrtc_viewer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use jt1078_gateway::simulate::load_file;

use crate::device::Schedule;
use crate::report::Results;

/// Measures the gateway under load.
#[derive(Debug, Parser)]
struct Args {
    /// What to measure (without a subcommand: capacity, first frame and the baseline).
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Recording every simulated device replays (looping, in real time). Default: the
    /// H.264 + G.711A device capture in tests/data.
    #[arg(long, global = true)]
    file: Option<PathBuf>,
    /// The gateway binary to run.
    #[arg(long, global = true, default_value = "target/release/jt1078-gateway")]
    gateway: PathBuf,
    /// Numbers of streams to step through (stops after the first step that falls behind).
    #[arg(long, value_delimiter = ',', default_value = "10,100,250,500,750,1000")]
    steps: Vec<usize>,
    /// Seconds of warm-up before each measurement window.
    #[arg(long, global = true, default_value_t = 5)]
    warmup: u64,
    /// Seconds of each measurement window.
    #[arg(long, global = true, default_value_t = 15)]
    window: u64,
    /// Requests per first-frame measurement (0 skips them); with `webrtc`, WHEP offers.
    #[arg(long, global = true, default_value_t = 20)]
    first_frame_runs: usize,
    /// Streams for the ffmpeg-per-stream baseline (0 skips it).
    #[arg(long, default_value_t = 100)]
    baseline_streams: usize,
    /// How simulated devices write: `packet` (one send per JT/T 1078 packet, Nagle off, as
    /// real terminals do; the headline mode) or `batch` (one send per due group).
    #[arg(long, global = true, value_enum, default_value = "packet")]
    device_writes: device::DeviceWrites,
    /// Keep stepping after a step falls behind.
    #[arg(long)]
    keep_going: bool,
    /// Directory for results.json, report.md and capacity.svg.
    #[arg(long, global = true, default_value = "target/loadtest")]
    out: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
enum Mode {
    /// HTTP-FLV and WS-FLV viewers: one device, its gateway's CPU and RSS without viewers
    /// and with N viewers of each output (per viewer = the difference / N); a fresh gateway
    /// process for each run. Writes flv_viewers.md and flv_viewers.json.
    FlvViewers {
        /// Numbers of viewers to measure.
        #[arg(long, value_delimiter = ',', default_value = "100")]
        viewers: Vec<usize>,
        /// Runs of each output per number, alternating (the machine's speed drifts).
        #[arg(long, default_value_t = 2)]
        runs: usize,
    },
    /// WebRTC viewers: one device, its gateway's CPU and RSS without viewers and with N
    /// `str0m` viewers over WHEP (per viewer = the difference / N), every viewer's frames,
    /// and offer → first frame times. A fresh gateway process for each N.
    Webrtc {
        /// Numbers of viewers to measure.
        #[arg(long, value_delimiter = ',', default_value = "10,100")]
        viewers: Vec<usize>,
        /// Milliseconds between one viewer's offer and the next (their start-ups should
        /// not queue behind each other, so each first-frame time is a viewer's own).
        #[arg(long, default_value_t = 50)]
        offer_gap_ms: u64,
    },
    /// Control plane: SUBSCRIBEs for fresh devices, each with a fresh seqid and client_id,
    /// in rounds (each round's replies awaited), through the embedded broker; the gateway's
    /// RSS after each round and once every lease has expired. Writes control.md and
    /// control.json.
    Control {
        /// Requests in all.
        #[arg(long, default_value_t = 1_000_000)]
        requests: usize,
        /// Requests per round.
        #[arg(long, default_value_t = 20_000)]
        round: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    let file = args
        .file
        .take()
        .unwrap_or_else(|| PathBuf::from("tests/data/h264-g711a-156987000796-ch1.jt1078"));
    let packets = load_file(&file)?;
    let layout = packets.first().context("empty recording")?.layout();
    // the gateway inherits the environment: with `JTGW__AUDIO__FLV=passthrough` viewers get
    // the device's audio and match it too; with the default (AAC) they match video only
    let track_audio = std::env::var("JTGW__AUDIO__FLV").is_ok_and(|v| v == "passthrough");
    if !track_audio {
        eprintln!("audio goes to viewers as AAC (the default): frames matched are video only");
    }
    let mut schedule = Schedule::new(packets, track_audio);
    schedule.writes = args.device_writes;
    let schedule = Arc::new(schedule);
    let stream_mbit_s = schedule.round_bytes as f64 * 8.0 / schedule.span_ms as f64 / 1000.0;
    eprintln!(
        "{}: {} frames per {:.1} s round, {stream_mbit_s:.2} Mbit/s",
        file.display(),
        schedule.frames_per_round(),
        schedule.span_ms as f64 / 1000.0
    );
    let (warmup, window) = (
        Duration::from_secs(args.warmup),
        Duration::from_secs(args.window),
    );
    let mut results = Results {
        date: command_output("date", &["-u", "+%Y-%m-%d"]),
        machine: machine(),
        // settings for the gateway pass through the environment: show them with the command
        command: std::env::vars()
            .filter(|(k, _)| k.starts_with("JTGW__"))
            .map(|(k, v)| format!("{k}={v}"))
            .chain(std::env::args())
            .collect::<Vec<_>>()
            .join(" "),
        file: file.display().to_string(),
        stream_mbit_s,
        device_writes: args.device_writes,
        steps: Vec::new(),
        first_frame: None,
        baselines: Vec::new(),
        webrtc: Vec::new(),
    };
    if let Some(Mode::Control { requests, round }) = &args.mode {
        let run = control::run(&args.gateway, *requests, *round).await?;
        let report = control::report(&run);
        print!("{report}");
        std::fs::create_dir_all(&args.out)?;
        std::fs::write(args.out.join("control.md"), report)?;
        std::fs::write(
            args.out.join("control.json"),
            serde_json::to_string_pretty(&run)?,
        )?;
        return Ok(());
    }
    if let Some(Mode::FlvViewers { viewers, runs }) = &args.mode {
        let mut steps = Vec::new();
        for &n in viewers {
            for run in 0..*runs {
                for output in [flv_viewers::Output::HttpFlv, flv_viewers::Output::WsFlv] {
                    eprintln!("{output:?}: {n} viewers, run {} …", run + 1);
                    let step = flv_viewers::step(
                        &args.gateway,
                        &schedule,
                        layout,
                        output,
                        n,
                        warmup,
                        window,
                    )
                    .await?;
                    eprintln!("{step:?}");
                    steps.push(step);
                }
            }
        }
        let report = flv_viewers::report(&steps);
        print!("{report}");
        std::fs::create_dir_all(&args.out)?;
        std::fs::write(args.out.join("flv_viewers.md"), report)?;
        std::fs::write(
            args.out.join("flv_viewers.json"),
            serde_json::to_string_pretty(&steps)?,
        )?;
        return Ok(());
    }
    if let Some(Mode::Webrtc {
        viewers,
        offer_gap_ms,
    }) = &args.mode
    {
        for &n in viewers {
            eprintln!(
                "webrtc: {n} viewers (1-minute load {:.2}) …",
                webrtc::load_average()
            );
            let step = webrtc::step(
                &args.gateway,
                &schedule,
                layout,
                n,
                Duration::from_millis(*offer_gap_ms),
                warmup,
                window,
            )
            .await?;
            eprintln!("{step:?}");
            results.webrtc.push(step);
        }
        if args.first_frame_runs > 0 {
            eprintln!("webrtc first frame …");
            results.first_frame = Some(
                first_frame::measure(
                    &args.gateway,
                    &schedule,
                    layout,
                    args.first_frame_runs,
                    first_frame::Player::WebRtc,
                )
                .await?,
            );
        }
        return write(&args.out, &results);
    }
    for &streams in &args.steps {
        eprintln!("capacity: {streams} streams …");
        let step =
            capacity::step(&args.gateway, &schedule, layout, streams, warmup, window).await?;
        eprintln!("{step:?}");
        let kept_up = step.kept_up();
        results.steps.push(step);
        if !kept_up && !args.keep_going {
            eprintln!("fell behind at {streams} streams; stopping the steps");
            break;
        }
    }
    if args.first_frame_runs > 0 {
        eprintln!("first frame …");
        results.first_frame = Some(
            first_frame::measure(
                &args.gateway,
                &schedule,
                layout,
                args.first_frame_runs,
                first_frame::Player::HttpFlv,
            )
            .await?,
        );
    }
    if args.baseline_streams > 0 {
        eprintln!("baseline: {} ffmpeg processes …", args.baseline_streams);
        for feed in [baseline::Feed::Pipe, baseline::Feed::ReadRate] {
            let measured =
                baseline::run(&schedule, feed, args.baseline_streams, warmup, window).await?;
            eprintln!("{measured:?}");
            results.baselines.push(measured);
        }
    }
    write(&args.out, &results)?;
    if let Some(cap) = results.capacity() {
        println!("capacity: {} streams kept up", cap.streams);
    }
    Ok(())
}

/// Writes report.md, results.json and (with capacity steps) capacity.svg to `out`.
fn write(out: &Path, results: &Results) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let markdown = results.markdown();
    std::fs::write(out.join("report.md"), &markdown)?;
    if !results.steps.is_empty() {
        std::fs::write(out.join("capacity.svg"), results.svg())?;
    }
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(results)?,
    )?;
    println!("{markdown}");
    Ok(())
}

/// "N cores, M GiB, CPU model".
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    format!("{cores} cores, {mem_gib:.0} GiB, {model}")
}

fn command_output(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
