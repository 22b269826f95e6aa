//! The runner's results as Markdown tables (for docs/benchmarks.md), JSON, and an SVG plot
//! of CPU and memory against the number of streams.
//!
//! The plot is written by hand: two line series on linear axes are a few dozen lines of
//! SVG, where a plotting crate would add a large dependency tree to every CI build.

use std::fmt::Write as _;

use serde::Serialize;

use crate::baseline::Baseline;
use crate::capacity::Step;
use crate::first_frame::{FirstFrame, Spread};
use crate::webrtc::WebRtcStep;

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub(crate) struct Results {
    pub(crate) date: String,
    pub(crate) machine: String,
    pub(crate) command: String,
    pub(crate) file: String,
    pub(crate) stream_mbit_s: f64,
    /// How the simulated devices wrote their packets.
    pub(crate) device_writes: crate::device::DeviceWrites,
    pub(crate) steps: Vec<Step>,
    pub(crate) first_frame: Option<FirstFrame>,
    pub(crate) baselines: Vec<Baseline>,
    /// WebRTC viewer runs (the `webrtc` subcommand).
    pub(crate) webrtc: Vec<WebRtcStep>,
}

impl Results {
    /// The largest step that kept up.
    pub(crate) fn capacity(&self) -> Option<&Step> {
        self.steps
            .iter()
            .filter(|s| s.kept_up())
            .max_by_key(|s| s.streams)
    }

    /// Markdown for docs/benchmarks.md.
    pub(crate) fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "Run on {} ({}), replaying `{}` (~{:.2} Mbit/s per stream, devices writing {}):\n\n```sh\n{}\n```\n",
            self.date,
            self.machine,
            self.file,
            self.stream_mbit_s,
            match self.device_writes {
                crate::device::DeviceWrites::Packet => "one send per packet",
                crate::device::DeviceWrites::Batch => "one send per due group of packets",
            },
            self.command
        );
        self.webrtc_markdown(&mut md);
        self.capacity_markdown(&mut md);

        if let Some(ff) = &self.first_frame {
            let _ = writeln!(
                md,
                "\n### First frame ({} runs each, ms)\n\n{}.\n\n| | p50 | p99 | max |\n|---|---:|---:|---:|",
                ff.runs,
                ff.player.describe()
            );
            let rows: [(&str, &Spread); 8] = [
                (
                    "live stream (GOP cache): request → first key frame",
                    &ff.live,
                ),
                (
                    "cold start, total: request → first key frame",
                    &ff.cold_total,
                ),
                (
                    "… request → REQPULL at the device (gateway + embedded broker)",
                    &ff.cold_request_to_reqpull,
                ),
                (
                    "… REQPULL → TCP connected (device)",
                    &ff.cold_device_connect,
                ),
                (
                    "… device's first write → viewer's first key frame (gateway)",
                    &ff.cold_first_packet_to_frame,
                ),
                ("cold start, gateway's own share", &ff.cold_gateway_share),
                (
                    "cold start of a device seen before, total",
                    &ff.seen_before_total,
                ),
                ("… gateway's own share", &ff.seen_before_gateway_share),
            ];
            for (name, s) in rows {
                let _ = writeln!(
                    md,
                    "| {name} | {:.2} | {:.2} | {:.2} |",
                    s.p50, s.p99, s.max
                );
            }
        }
        if let Some(first) = self.baselines.first() {
            let _ = writeln!(
                md,
                "\n### Baseline: one ffmpeg per stream, {} streams\n\n| | CPU (% of all cores) | RSS MB | gateway's CPU / memory, times less |\n|---|---:|---:|---|",
                first.streams
            );
            let ours = self.steps.iter().find(|s| s.streams == first.streams);
            for b in &self.baselines {
                let ratio = ours.map_or_else(String::new, |o| {
                    format!(
                        "{:.1}× / {:.1}×",
                        b.cpu_pct / o.gateway_cpu_pct.max(0.01),
                        b.rss_mb / o.gateway_rss_mb.max(0.01)
                    )
                });
                let _ = writeln!(
                    md,
                    "| {} × `{}` | {:.1} | {:.0} | {ratio} |",
                    b.streams,
                    b.feed.command(),
                    b.cpu_pct,
                    b.rss_mb
                );
            }
            if let Some(ours) = ours {
                let _ = writeln!(
                    md,
                    "| jt1078-gateway, same recording (all its tracks, JT/T 1078 over TCP in, one HTTP-FLV viewer each) | {:.1} | {:.0} | |",
                    ours.gateway_cpu_pct, ours.gateway_rss_mb,
                );
            }
        }
        md
    }

    /// The capacity table, when there were capacity steps.
    fn capacity_markdown(&self, md: &mut String) {
        if self.steps.is_empty() {
            return;
        }
        md.push_str("### Capacity and latency\n\n");
        md.push_str(
            "| streams | gateway CPU (% of all cores) | of which kernel | load generator CPU | gateway RSS MB | RSS per stream KB | frames sent | delivered | lost | gateway drops | in Mbit/s | out Mbit/s | latency p50 / p99 / max ms | kept up |\n",
        );
        md.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n");
        for s in &self.steps {
            let _ = writeln!(
                md,
                "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {} | {} | {} | {} | {:.1} | {:.1} | {:.2} / {:.2} / {:.2} | {} |",
                s.streams,
                s.gateway_cpu_pct,
                s.gateway_kernel_cpu_pct,
                s.loadgen_cpu_pct,
                s.gateway_rss_mb,
                s.rss_per_stream_kb,
                s.frames_sent,
                s.frames_delivered,
                s.frames_lost,
                s.gateway_frames_dropped,
                s.ingest_mbit_s,
                s.egress_mbit_s,
                s.latency_p50_ms,
                s.latency_p99_ms,
                s.latency_max_ms,
                if s.kept_up() { "yes" } else { "**no**" },
            );
        }
    }

    /// The WebRTC tables, when there were WebRTC runs.
    fn webrtc_markdown(&self, md: &mut String) {
        if self.webrtc.is_empty() {
            return;
        }
        md.push_str("### WebRTC viewers of one stream: cost (CPU in % of ONE core)\n\n");
        md.push_str(
            "| viewers | gateway CPU, device only | with viewers | of which kernel | **per viewer** | gateway RSS MB, device only | with viewers | **per viewer KB** | RSS through the window MB | viewers' loop CPU | whole load runner CPU | 1-min load before / after | kept up |\n",
        );
        md.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---|\n");
        for w in &self.webrtc {
            let _ = writeln!(
                md,
                "| {} | {:.2} | {:.2} | {:.2} | **{:.3}** | {:.1} | {:.1} | **{:.0}** | {} | {:.2} | {:.2} | {:.2} / {:.2} | {} |",
                w.viewers,
                w.baseline_cpu_pct,
                w.cpu_pct,
                w.kernel_cpu_pct,
                w.cpu_per_viewer_pct,
                w.baseline_rss_mb,
                w.rss_mb,
                w.rss_per_viewer_kb,
                w.rss_samples_mb
                    .iter()
                    .map(|mb| format!("{mb:.1}"))
                    .collect::<Vec<_>>()
                    .join(" → "),
                w.client_cpu_pct,
                w.loadgen_cpu_pct,
                w.load_before,
                w.load_after,
                if w.kept_up() { "yes" } else { "**no**" },
            );
        }
        md.push_str("\n### WebRTC viewers: frames and first frame\n\n");
        md.push_str(
            "| viewers | published video / audio | per viewer video min / median | audio min / median | frames lost | viewers behind | video frames after an RTP gap | gateway drops | per viewer datagrams/s, Mbit/s | `webrtc_viewers` | failed | POST → answer p50 / p99 ms | POST → connected p50 / p99 ms | POST → first video frame p50 / p99 / max ms |\n",
        );
        md.push_str("|---:|---|---|---|---:|---:|---:|---:|---|---:|---:|---|---|---|\n");
        for w in &self.webrtc {
            let _ = writeln!(
                md,
                "| {} | {} / {} | {} / {} | {} / {} | {} | {} | {} | {} | {:.0}, {:.2} | {} | {} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} / {:.2} |",
                w.viewers,
                w.video_published,
                w.audio_published,
                w.video_min,
                w.video_median,
                w.audio_min,
                w.audio_median,
                w.frames_lost,
                w.viewers_behind,
                w.video_gaps,
                w.gateway_frames_dropped,
                w.datagrams_per_viewer_s,
                w.mbit_per_viewer_s,
                w.api_webrtc_viewers,
                w.viewers_failed,
                w.answer.p50,
                w.answer.p99,
                w.connected.p50,
                w.connected.p99,
                w.first_frame.p50,
                w.first_frame.p99,
                w.first_frame.max,
            );
        }
        md.push('\n');
    }

    /// An SVG with two panels: CPU % and RSS MB against streams.
    pub(crate) fn svg(&self) -> String {
        let pts = |f: &dyn Fn(&Step) -> f64| -> Vec<(f64, f64)> {
            self.steps
                .iter()
                .map(|s| (s.streams as f64, f(s)))
                .collect()
        };
        let base = self.baselines.first();
        let mut svg = String::from(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"960\" height=\"400\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"960\" height=\"400\" fill=\"white\"/>\n",
        );
        panel(
            &mut svg,
            0.0,
            "gateway CPU, % of 2 cores",
            &pts(&|s| s.gateway_cpu_pct),
            base.map(|b| (b.streams as f64, b.cpu_pct)),
        );
        panel(
            &mut svg,
            480.0,
            "gateway RSS, MB",
            &pts(&|s| s.gateway_rss_mb),
            base.map(|b| (b.streams as f64, b.rss_mb)),
        );
        svg.push_str("</svg>\n");
        svg
    }
}

/// One chart at horizontal offset `x0`; `baseline` is drawn as a labelled red point.
fn panel(
    svg: &mut String,
    x0: f64,
    title: &str,
    points: &[(f64, f64)],
    baseline: Option<(f64, f64)>,
) {
    let (left, top, w, h) = (x0 + 60.0, 40.0, 380.0, 300.0);
    let max_x = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let max_y = points
        .iter()
        .map(|p| p.1)
        .chain(baseline.map(|b| b.1))
        .fold(1.0, f64::max)
        * 1.1;
    let sx = |x: f64| left + x / max_x * w;
    let sy = |y: f64| top + h - y / max_y * h;
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"24\" font-size=\"14\">{title}</text>",
        left
    );
    let _ = writeln!(
        svg,
        "<path d=\"M{left},{top} V{} H{}\" stroke=\"black\" fill=\"none\"/>",
        top + h,
        left + w
    );
    for i in 0..=4 {
        let (x, y) = (max_x * f64::from(i) / 4.0, max_y * f64::from(i) / 4.0);
        let _ = writeln!(
            svg,
            "<text x=\"{:.0}\" y=\"{}\" text-anchor=\"middle\">{x:.0}</text><text x=\"{}\" y=\"{:.0}\" text-anchor=\"end\">{y:.0}</text>",
            sx(x),
            top + h + 16.0,
            left - 6.0,
            sy(y) + 4.0
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">streams (one viewer each)</text>",
        left + w / 2.0,
        top + h + 34.0
    );
    let path: Vec<String> = points
        .iter()
        .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
        .collect();
    let _ = writeln!(
        svg,
        "<polyline points=\"{}\" stroke=\"#1f77b4\" stroke-width=\"2\" fill=\"none\"/>",
        path.join(" ")
    );
    for &(x, y) in points {
        let _ = writeln!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#1f77b4\"/>",
            sx(x),
            sy(y)
        );
    }
    if let Some((x, y)) = baseline {
        let _ = writeln!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"5\" fill=\"#d62728\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"#d62728\">ffmpeg per stream</text>",
            sx(x),
            sy(y),
            sx(x) + 8.0,
            sy(y) + 4.0
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" fill=\"#1f77b4\">jt1078-gateway</text>",
        left + w - 100.0,
        top + 14.0
    );
}
