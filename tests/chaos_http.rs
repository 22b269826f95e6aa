//! Chaos probes against the HTTP side, each with one good device and one good viewer
//! watched throughout (issue 16, findings 4 and 8; docs/reliability.md, "HTTP viewers"):
//! viewers that never read must not cost the gateway's memory nor the good viewer a frame,
//! and requests for devices that are not live must not start pulls without bound.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "helpers of a test: a failure is a test failure"
)]

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::mqtt::TestClient;
use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// Viewers that never read, as in the probe of issue 16.
const NON_READERS: usize = 500;

/// The gateway's resident memory must stay under this with them: issue 16's 150 MB for an
/// optimised build (it peaks at 132-135 MB; docs/reliability.md, "HTTP viewers"). The
/// unoptimised test build starts larger (45 MB with /metrics, the console and recordings
/// in the binary, 2026-12-07) and what the non-readers add is what is bounded there: it
/// grew by 127-143 MB in the runs of that day.
const RSS_LIMIT_KB: u64 = 150 * 1024;

/// A gateway binary run as a child process, so its resident memory is its own (with the
/// allocator it ships with); killed on drop.
struct ChildGateway {
    child: std::process::Child,
    http: SocketAddr,
    live: SocketAddr,
    mqtt_port: u16,
    log: std::path::PathBuf,
}

impl ChildGateway {
    async fn start(tmp: &TempDir, extra: &[(&str, &str)]) -> ChildGateway {
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let (http, live) = (addr(free_port()), addr(free_port()));
        let mqtt_port = free_port();
        let log = tmp.path("gateway.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_jt1078-gateway"));
        command
            .arg("serve")
            .env("JTGW__HTTP__LISTEN", http.to_string())
            .env("JTGW__INGEST__LIVE_LISTEN", live.to_string())
            .env(
                "JTGW__INGEST__PLAYBACK_LISTEN",
                addr(free_port()).to_string(),
            )
            .env("JTGW__MQTT__EMBEDDED_LISTEN", addr(mqtt_port).to_string())
            .env(
                "JTGW__MQTT__EMBEDDED_WS_LISTEN",
                addr(free_port()).to_string(),
            )
            .env("JTGW__LOG__LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        for (k, v) in extra {
            command.env(k, v);
        }
        let child = command.spawn().expect("the gateway binary starts");
        let gateway = ChildGateway {
            child,
            http,
            live,
            mqtt_port,
            log,
        };
        tokio::time::timeout(Duration::from_secs(30), async {
            while TcpStream::connect(http).await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the gateway listens");
        gateway
    }

    /// Resident memory in KiB, from `/proc/{pid}/status`.
    fn rss_kb(&self) -> u64 {
        rss_kb(self.child.id())
    }

    /// The one stream of `/api/streams`, if live.
    async fn stream(&self) -> Option<serde_json::Value> {
        let (status, body) = http_get(self.http, "/api/streams").await;
        assert_eq!(status, 200);
        let streams: serde_json::Value = serde_json::from_slice(&body).unwrap();
        streams.as_array().unwrap().first().cloned()
    }

    /// Polls `/api/streams` until `pred` holds for the stream (a status, not an event:
    /// the gateway runs in another process).
    async fn wait_for(&self, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
        tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                if self.stream().await.is_some_and(|s| pred(&s)) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    }
}

impl Drop for ChildGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmRSS in /proc/{pid}/status")
}

/// `seconds` of H.264 at about 1 Mbit/s (a noisy 640×360 picture, 10 fps, a key frame
/// every second), packed as device 13800138000 channel 1. Few frames a second keep the
/// gateway's work per viewer small in a debug build on a loaded machine; the bytes are
/// what the memory probe needs.
async fn one_megabit_h264(tmp: &TempDir, seconds: u32) -> Vec<u8> {
    let h264 = tmp.path("1m.h264");
    let seconds = seconds.to_string();
    run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=10",
            "-t",
            &seconds,
            "-vf",
            "noise=alls=20:allf=t",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-b:v",
            "1M",
            "-maxrate",
            "1M",
            "-bufsize",
            "1M",
            "-g",
            "10",
            "-bf",
            "0",
            "-f",
            "h264",
            h264.to_str().unwrap(),
        ],
    )
    .await;
    let video = std::fs::read(&h264).unwrap();
    let options = jt1078_gateway::simulate::pack::PackOptions {
        fps: 10,
        ..Default::default()
    };
    jt1078_gateway::simulate::pack::pack(
        jt1078_gateway::codec::h26x::VideoCodec::H264,
        &video,
        None,
        &options,
    )
    .unwrap()
    .to_vec()
}

/// A viewer that asks for `path` and never reads (a tiny receive window, as a stalled
/// player's).
async fn non_reader(http: SocketAddr, path: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(http).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    stream
}

fn video_frames(flv: &[u8]) -> usize {
    flv_tags(flv)
        .iter()
        .filter(|t| t.tag_type == 9 && t.body.get(1) == Some(&1))
        .count()
}

#[tokio::test]
async fn viewers_that_never_read_are_dropped_within_the_memory_budget() {
    let tmp = TempDir::new("chaos-non-readers");
    let bytes = one_megabit_h264(&tmp, 45).await;
    let expected = expected_video_frames(&raw_packets(&bytes, 6));
    let file = tmp.path("in.jt1078");
    std::fs::write(&file, &bytes).unwrap();
    let gateway = ChildGateway::start(&tmp, &[]).await;
    let rss_at_start = gateway.rss_kb();

    // the good viewer asks before the device is there: it is owed every frame
    let mut backend = TestClient::connect(gateway.mqtt_port, &["jt1078/device/#"]).await;
    let http = gateway.http;
    let good = tokio::spawn(async move { http_get(http, "/live/13800138000_1.flv").await });
    backend
        .expect("the waiting viewer's pull", Duration::from_secs(20), |r| {
            r.topic == "jt1078/device/13800138000/REQPULL"
        })
        .await;
    let device = replay_realtime(&file, gateway.live);
    gateway
        .wait_for("the stream", |s| s["video_frames"].as_u64() > Some(0))
        .await;

    // the probe: viewers that never read, while the gateway's memory is watched
    let pid = gateway.child.id();
    let peak = std::sync::Arc::new(AtomicU64::new(rss_at_start));
    let sampler = {
        let peak = std::sync::Arc::clone(&peak);
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kb(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut probes = Vec::new();
    for _ in 0..NON_READERS {
        probes.push(non_reader(http, "/live/13800138000_1.flv").await);
    }
    // a drop is counted when the publisher cuts the viewer; the viewer leaves the count
    // when its task has ended, a moment later: both are waited for
    gateway
        .wait_for("every non-reader dropped and gone", |s| {
            s["viewers_dropped"].as_u64() >= Some(NON_READERS as u64)
                && s["viewers"].as_u64() == Some(1)
        })
        .await;
    let stream = gateway.stream().await.expect("the stream is still live");
    assert_eq!(
        stream["viewers"], 1,
        "only the good viewer is left: {stream}"
    );

    // memory is given back soon after (the allocator returns freed pages within seconds)
    let given_back = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let rss = gateway.rss_kb();
            if rss < rss_at_start + 40 * 1024 {
                return rss;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    sampler.abort();
    let peak = peak.load(Ordering::Relaxed);
    drop(probes);
    device.await.unwrap().unwrap();
    let (status, flv) = tokio::time::timeout(Duration::from_secs(60), good)
        .await
        .expect("the good viewer's response ends with the stream")
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        video_frames(&flv),
        expected,
        "the good viewer got every frame"
    );
    let rss_after = given_back.unwrap_or_else(|_| {
        panic!(
            "memory not given back: {} KiB 15 s after the drops (start {rss_at_start} KiB)",
            gateway.rss_kb()
        )
    });
    let log = std::fs::read_to_string(&gateway.log).unwrap();
    let drops: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("flv viewer dropped"))
        .collect();
    assert!(drops.len() >= NON_READERS, "{} drop lines", drops.len());
    assert!(
        drops
            .iter()
            .all(|l| l.contains("INFO") && l.contains("reason")),
        "{:?}",
        drops.first()
    );
    println!(
        "rss: start {rss_at_start} KiB, peak {peak} KiB, after drops {rss_after} KiB; \
         {} drops; first: {}",
        drops.len(),
        drops[0]
    );
    let bounded = if cfg!(debug_assertions) {
        peak - rss_at_start
    } else {
        peak
    };
    assert!(
        bounded < RSS_LIMIT_KB,
        "peak RSS {peak} KiB (from {rss_at_start} KiB) with {NON_READERS} non-readers"
    );
}

/// Asks for `/live/{device}_1.flv` over HTTP/1.0 and keeps the connection open (a viewer
/// waiting for a device).
async fn waiting_viewer(http: SocketAddr, device: &str) -> TcpStream {
    let mut socket = TcpStream::connect(http).await.unwrap();
    socket
        .write_all(format!("GET /live/{device}_1.flv HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    socket
}

/// A refusal: its status and its one-line reason, answered at once.
async fn refused(http: SocketAddr, path: &str) -> (u16, String) {
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), http_get(http, path))
        .await
        .expect("a refusal is answered at once, without a wait");
    let body = String::from_utf8(body).unwrap();
    assert_eq!(body.lines().count(), 1, "one line: {body:?}");
    (status, body)
}

#[tokio::test]
async fn viewers_waiting_for_devices_are_capped_and_the_live_stream_is_still_served() {
    let gateway = Gateway::start(&[
        ("JTGW__HTTP__MAX_WAITING", "20"),
        ("JTGW__HTTP__COLD_PULLS_PER_MINUTE", "1000"),
        ("JTGW__HTTP__FLV_WAIT_TIMEOUT", "60s"),
    ])
    .await;
    let http = gateway.addrs.http;
    let (device, _) = gateway.device_holding_capture().await;
    let good = tokio::spawn(async move { http_get(http, "/live/156987000796_1.flv").await });

    // the probe: requests for distinct devices that are not live
    let mut events = gateway.hub.events();
    let mut waiting = Vec::new();
    for i in 0..20 {
        waiting.push(waiting_viewer(http, &format!("1390000{i:04}")).await);
        gateway.wait_for_waiting_reader(&mut events).await;
    }
    let (status, reason) = refused(http, "/live/13900009999_1.flv").await;
    assert_eq!(status, 503, "{reason}");
    assert!(reason.contains("http.max_waiting"), "{reason}");
    let stream = gateway
        .wait_for_stream("the good viewer", |s| s.viewers == 1)
        .await;
    assert_eq!(stream.device, "156987000796");

    // ids no terminal has, and ids too long to echo
    let (status, reason) = refused(http, "/live/000000000000_1.flv").await;
    assert_eq!(status, 400);
    assert!(reason.contains("all zeros"), "{reason}");
    let long = "7".repeat(5000);
    let (status, reason) = refused(http, &format!("/live/{long}_1.flv")).await;
    assert_eq!(status, 400);
    assert!(
        !reason.contains(&"7".repeat(65)),
        "echoed at most 64 characters: {reason}"
    );
    assert!(reason.contains(&"7".repeat(64)), "{reason}");

    // a waiting viewer that leaves frees its place
    drop(waiting.pop());
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut viewer = waiting_viewer(http, "13900008888").await;
            let mut first = [0u8; 12];
            let read = tokio::time::timeout(
                Duration::from_millis(500),
                tokio::io::AsyncReadExt::read(&mut viewer, &mut first),
            )
            .await;
            // no answer yet: it waits for its device
            if read.is_err() {
                return;
            }
        }
    })
    .await
    .expect("a place among the waiting viewers is free again");

    drop(device);
    let (status, flv) = tokio::time::timeout(Duration::from_secs(30), good)
        .await
        .expect("the good viewer's response ends")
        .unwrap();
    assert_eq!(status, 200);
    assert!(flv_tags(&flv).iter().any(|t| t.tag_type == 9), "video");
}

#[tokio::test]
async fn cold_pulls_from_one_client_address_are_capped_per_minute() {
    let gateway = Gateway::start(&[
        ("JTGW__HTTP__COLD_PULLS_PER_MINUTE", "5"),
        ("JTGW__HTTP__FLV_WAIT_TIMEOUT", "60s"),
    ])
    .await;
    let http = gateway.addrs.http;
    let mut events = gateway.hub.events();
    let mut waiting = Vec::new();
    for i in 0..5 {
        waiting.push(waiting_viewer(http, &format!("1390000{i:04}")).await);
        gateway.wait_for_waiting_reader(&mut events).await;
    }
    // the waits end, but the address used its pulls for this minute
    drop(waiting);
    let (status, reason) = refused(http, "/live/13900001234_1.flv").await;
    assert_eq!(status, 429, "{reason}");
    assert!(reason.contains("http.cold_pulls_per_minute"), "{reason}");
    // a live stream is not a cold pull
    let (device, _) = gateway.device_holding_capture().await;
    let mut viewer = waiting_viewer(http, "156987000796").await;
    let mut head = [0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut viewer, &mut head)
        .await
        .unwrap();
    assert_eq!(&head, b"HTTP/1.0 200");
    drop(device);
}
