//! `GET /metrics`: a real Prometheus scrapes the gateway under a simulated load and reads
//! back the streams and the cold-start histogram through its HTTP API; `promtool check
//! metrics` finds nothing to say about the text; viewers are counted by output; the guard
//! is the API's; 1,000 streams stay under 50 KB without per-stream series, and are capped
//! with them.

#![expect(
    clippy::unwrap_used,
    reason = "helpers of tests: a failure is a test failure"
)]

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::control::*;
use common::mqtt::TestClient;
use common::*;
use jt1078_gateway::config::MetricsSettings;
use jt1078_gateway::hub::Hub;
use jt1078_gateway::media::{Channel, Codec, DeviceId, Frame, StreamKey, StreamKind};
use jt1078_gateway::metrics::{ControlMetrics, Sources, render};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// A Prometheus server scraping `target`'s `/metrics` every second; killed on drop.
struct Prometheus {
    child: Option<Child>,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Prometheus {
    async fn start(target: SocketAddr) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let config = dir.path("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: jt1078-gateway\n    scrape_interval: 1s\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new(program("PROMETHEUS_BIN", "prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path("prometheus.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("prometheus (Debian package `prometheus`; scripts/test.sh installs it): {e}")
            });
        let prometheus = Prometheus {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: dir,
        };
        wait_listening(port, "prometheus").await;
        prometheus
    }

    /// The value of the instant query `query` (its first sample), if it has one.
    async fn query(&self, query: &str) -> Option<f64> {
        let path = format!(
            "/api/v1/query?{}",
            serde_urlencoded::to_string([("query", query)]).unwrap()
        );
        let (status, body) = http_get(self.addr, &path).await;
        if status != 200 {
            return None;
        }
        let answer: serde_json::Value = serde_json::from_slice(&body).ok()?;
        answer["data"]["result"][0]["value"][1]
            .as_str()?
            .parse()
            .ok()
    }

    /// Waits (up to 30 s: Prometheus scrapes every second) until `query` answers `want`.
    async fn wait_for(&self, query: &str, want: impl Fn(f64) -> bool) -> f64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut last = None;
        loop {
            if let Some(value) = self.query(query).await {
                if want(value) {
                    return value;
                }
                last = Some(value);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "prometheus never answered {query} as expected (last {last:?})"
            );
            // the next scrape is at most a second away
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// `GET /metrics` with an optional bearer token: status and body.
async fn metrics(addr: SocketAddr, token: Option<&str>) -> (u16, String) {
    get(addr, "/metrics", token).await
}

/// `GET path` (a response that ends) with an optional bearer token: status and body.
async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    socket
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n{auth}\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8(response).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// The value of the sample `series` (name and labels as written) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_reads_the_streams_and_the_cold_start_histogram_under_load() {
    let url = embedded_url();
    let gateway = gateway_on(&url, BrokerAt::Embedded, &[]).await;
    let mut backend = TestClient::connect(
        port_of(&url),
        &[
            "jt1078/client/#",
            "jt1078/device/#",
            "jt1078/status/gateway/#",
            "jt1078/gateway/+/HEART",
        ],
    )
    .await;
    wait_online(&mut backend).await;
    let prometheus = Prometheus::start(gateway.addrs.http).await;
    // two devices that push on their own
    let pushing = [
        push_on_its_own(gateway.addrs.live, "13900000001"),
        push_on_its_own(gateway.addrs.live, "13900000002"),
    ];
    // and a cold one that pushes when asked over MQTT: one REQPULL, one cold start
    let cold = start_device(&url, "13800138000");
    backend
        .expect(
            "the cold device's heartbeat",
            WAIT,
            is("jt1078/gateway/13800138000/HEART"),
        )
        .await;
    backend
        .publish(
            "jt1078/gateway/13800138000/SUBSCRIBE",
            r#"{"seqid":"m1","client_id":"metrics-test","channel":1}"#,
        )
        .await;
    backend
        .expect("REQPULL", WAIT, is("jt1078/device/13800138000/REQPULL"))
        .await;
    gateway
        .wait_for_stream("the pulled stream with its video", |s| {
            s.device == "13800138000" && s.video_codec.is_some()
        })
        .await;
    gateway
        .wait_for_stream("the second pushing device", |s| s.device == "13900000002")
        .await;
    prometheus
        .wait_for("sum(jt1078_streams)", |n| n == 3.0)
        .await;
    prometheus
        .wait_for(
            r#"sum(jt1078_streams{kind="live",video_codec="h264"})"#,
            |n| n == 3.0,
        )
        .await;
    prometheus
        .wait_for("jt1078_control_cold_start_seconds_count", |n| n == 1.0)
        .await;
    prometheus
        .wait_for(
            r#"jt1078_control_cold_start_seconds_bucket{le="+Inf"}"#,
            |n| n == 1.0,
        )
        .await;
    // from REQPULL to the first key frame: more than nothing, less than a pull timeout
    let seconds = prometheus
        .wait_for("jt1078_control_cold_start_seconds_sum", |s| s > 0.0)
        .await;
    assert!(seconds < 10.0, "cold start took {seconds} s");
    prometheus
        .wait_for(
            r#"jt1078_control_requests_total{mode="SUBSCRIBE",outcome="ok"}"#,
            |n| n == 1.0,
        )
        .await;
    prometheus
        .wait_for("jt1078_control_reqpulls_total", |n| n >= 1.0)
        .await;
    prometheus
        .wait_for(r#"jt1078_ingest_connections_total{kind="live"}"#, |n| {
            n >= 3.0
        })
        .await;
    prometheus
        .wait_for("jt1078_devices_online", |n| n == 3.0)
        .await;
    prometheus
        .wait_for("process_resident_memory_bytes", |n| n > 1e6)
        .await;
    for device in pushing {
        device.cancel();
    }
    cold.cancel();
    gateway.stop().await;
}

#[tokio::test]
async fn the_text_passes_promtool_and_counts_viewers_by_output() {
    let gateway = Gateway::start(&[("JTGW__METRICS__PER_STREAM", "true")]).await;
    let device = push_on_its_own(gateway.addrs.live, "13900000003");
    gateway
        .wait_for_stream("the stream", |s| s.device == "13900000003")
        .await;
    // an HTTP-FLV viewer that stays
    let mut viewer = TcpStream::connect(gateway.addrs.http).await.unwrap();
    viewer
        .write_all(b"GET /live/13900000003_1.flv HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 512];
    let n = viewer.read(&mut first).await.unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    gateway
        .wait_for_stream("the viewer counted as flv", |s| s.viewers_of("flv") == 1)
        .await;
    let (status, text) = metrics(gateway.addrs.http, None).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        sample(&text, r#"jt1078_viewers{output="flv"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "jt1078_readers"), Some(1.0), "{text}");
    assert_eq!(
        sample(
            &text,
            r#"jt1078_stream_viewers{device="13900000003",channel="1",kind="live",output="flv"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(&text, "process_cpu_seconds_total").is_some(),
        "{text}"
    );
    assert!(sample(&text, "process_open_fds").unwrap() > 3.0, "{text}");
    // every family has its help and type, names and values are well-formed
    let mut promtool = Command::new(program("PROMTOOL_BIN", "promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool (Debian package `prometheus`): {e}"));
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{text}"
    );
    drop(viewer);
    device.cancel();
    gateway.stop().await;
}

#[tokio::test]
async fn metrics_are_guarded_like_the_api() {
    let gateway = Gateway::start(&[("JTGW__HTTP__API_TOKEN", "s3cret")]).await;
    let (status, _) = metrics(gateway.addrs.http, None).await;
    assert_eq!(status, 401);
    let (status, _) = metrics(gateway.addrs.http, Some("wrong")).await;
    assert_eq!(status, 403);
    let (status, text) = metrics(gateway.addrs.http, Some("s3cret")).await;
    assert_eq!(status, 200);
    assert!(text.contains("# TYPE jt1078_streams gauge"), "{text}");
    // the console's live table too; its page is open (it carries no data)
    let (status, _) = get(gateway.addrs.http, "/api/events", None).await;
    assert_eq!(status, 401);
    let (status, page) = get(gateway.addrs.http, "/console/", None).await;
    assert_eq!(status, 200);
    assert!(page.contains("/console/console.js"), "{page}");
    let (status, _) = get(gateway.addrs.http, "/console/vendor/mpegts.js", None).await;
    assert_eq!(status, 200);
    gateway.stop().await;
}

/// A hub with `n` live H.264 streams (one key frame each) and their publishers.
fn hub_with_streams(n: u32) -> (Hub, Vec<jt1078_gateway::hub::Publisher>) {
    let hub = Hub::default();
    let publishers = (0..n)
        .map(|i| {
            let key = StreamKey::new(
                DeviceId::parse(&format!("139{i:08}")).unwrap(),
                Channel(1),
                StreamKind::Live,
            );
            let publisher = hub.publish(key, CancellationToken::new());
            publisher.set_video(Codec::H264, Some((640, 360)));
            publisher
                .send(Frame {
                    codec: Codec::H264,
                    is_key: true,
                    pts: 0,
                    data: bytes::Bytes::from_static(&[0, 0, 0, 1, 0x65]),
                })
                .unwrap();
            publisher
        })
        .collect();
    (hub, publishers)
}

fn sources(hub: &Hub) -> Sources {
    Sources {
        hub: hub.clone(),
        ingest: std::sync::Arc::default(),
        bridge: jt1078_gateway::bridge::BridgeCounters::default(),
        control: ControlMetrics::default(),
        webrtc: None,
    }
}

#[test]
fn a_thousand_streams_stay_under_50_kb_and_per_stream_series_are_capped() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let (hub, _publishers) = hub_with_streams(1000);
    let fleet = render(
        sources(&hub),
        &MetricsSettings {
            per_stream: false,
            per_stream_max: 1000,
        },
    )
    .unwrap();
    assert_eq!(
        sample(
            &fleet,
            r#"jt1078_streams{kind="live",video_codec="h264",audio_codec="none",audio_codec_out="none"}"#
        ),
        Some(1000.0),
        "{fleet}"
    );
    assert!(
        !fleet.contains("device="),
        "no series per stream by default"
    );
    assert!(
        fleet.len() < 50_000,
        "{} bytes at 1,000 streams",
        fleet.len()
    );
    let capped = render(
        sources(&hub),
        &MetricsSettings {
            per_stream: true,
            per_stream_max: 100,
        },
    )
    .unwrap();
    let series = capped
        .lines()
        .filter(|l| l.starts_with("jt1078_stream_frames_in_total{"))
        .count();
    assert_eq!(series, 100);
    assert_eq!(sample(&capped, "jt1078_per_stream_omitted"), Some(900.0));
    println!(
        "/metrics at 1,000 streams: {} bytes without per-stream series, {} with 100 of them",
        fleet.len(),
        capped.len()
    );
}

/// The metric names a PromQL expression reads (`jt1078_*` and `process_*`).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut word = String::new();
    for c in expr.chars().chain([' ']) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        if (word.starts_with("jt1078_") || word.starts_with("process_")) && c != '=' {
            names.push(std::mem::take(&mut word));
        }
        word.clear();
    }
    names
}

#[tokio::test]
async fn the_grafana_dashboard_names_only_metrics_the_gateway_exposes() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("deploy/grafana/jt1078-gateway.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(dashboard["uid"], "jt1078-gateway");
    let panels = dashboard["panels"].as_array().unwrap();
    let mut used = std::collections::BTreeSet::new();
    for panel in panels {
        assert_eq!(panel["datasource"]["uid"], "prometheus", "{panel}");
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr} reads no metric");
            used.extend(names);
        }
    }
    // what the issue asks the dashboard to show
    for wanted in [
        "jt1078_streams",
        "jt1078_viewers",
        "jt1078_ingest_received_bytes_total",
        "jt1078_frames_dropped_total",
        "jt1078_control_cold_start_seconds_bucket",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(
            used.contains(wanted),
            "the dashboard does not show {wanted}"
        );
    }
    // every name is a series of a family the gateway exposes (a histogram's by its suffixes)
    let gateway = Gateway::start(&[]).await;
    let (_, text) = metrics(gateway.addrs.http, None).await;
    let families: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    for name in &used {
        let exposed = families.iter().any(|(family, kind)| {
            name == family
                || (*kind == "histogram"
                    && ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|suffix| name.strip_suffix(suffix) == Some(family)))
        });
        assert!(
            exposed,
            "the dashboard reads {name}, which /metrics does not expose"
        );
    }
    gateway.stop().await;
}
