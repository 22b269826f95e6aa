//! RTMP push end to end: a real SRS 6 (run from `config/srs.conf`) and Debian's
//! nginx-rtmp, the simulator as an MQTT-controlled device, a backend asking over MQTT, and
//! ffprobe pulling the stream back from the RTMP server (HTTP-FLV and RTMP) and decoding it.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "helpers of tests: a failure is a test failure"
)]

mod common;

use common::control::*;
use common::mqtt::TestClient;
use common::srs::{NginxRtmp, Srs};
use common::*;
use std::time::Duration;

const DEVICE: &str = "13800138000";

/// Decoded video frames of `url` over `seconds`: (codec, frames as (key, width, height,
/// pts seconds)).
async fn pull_frames(url: &str, seconds: u32) -> (String, Vec<(bool, u64, u64, f64)>) {
    let interval = format!("%+{seconds}");
    let (stdout, _) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-rw_timeout",
            "15000000",
            "-select_streams",
            "v",
            "-read_intervals",
            &interval,
            "-show_entries",
            "stream=codec_name:frame=key_frame,width,height,pts_time",
            "-of",
            "json",
            url,
        ],
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let codec = v["streams"][0]["codec_name"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let frames = v["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["key_frame"] == 1,
                f["width"].as_u64().unwrap_or(0),
                f["height"].as_u64().unwrap_or(0),
                f["pts_time"]
                    .as_str()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(f64::NAN),
            )
        })
        .collect();
    (codec, frames)
}

/// The audio stream of `url` as ffprobe reads it: (codec, sample rate, channels).
async fn pull_audio(url: &str) -> (String, String, u64) {
    let (stdout, _) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-rw_timeout",
            "15000000",
            "-select_streams",
            "a",
            "-show_entries",
            "stream=codec_name,sample_rate,channels",
            "-of",
            "json",
            url,
        ],
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let stream = &v["streams"][0];
    (
        stream["codec_name"].as_str().unwrap_or("").to_owned(),
        stream["sample_rate"].as_str().unwrap_or("").to_owned(),
        stream["channels"].as_u64().unwrap_or(0),
    )
}

/// The sample is 640x360 H.264 at 25 fps: `seconds` of it pulled back from the server
/// decode at that size, start on a key frame, and run at the source's rate.
fn assert_sample_frames(what: &str, codec: &str, frames: &[(bool, u64, u64, f64)], seconds: f64) {
    assert_eq!(codec, "h264", "{what}: codec");
    assert!(frames.len() >= 25, "{what}: only {} frames", frames.len());
    assert!(frames[0].0, "{what}: starts on a key frame");
    assert!(
        frames.iter().all(|f| (f.1, f.2) == (640, 360)),
        "{what}: every frame decodes at 640x360"
    );
    // frame count within the window: the source's 25 fps over the span pulled (the GOP
    // cache may put up to a GOP, 2 s, on top of the live rate)
    let span = frames.last().unwrap().3 - frames[0].3;
    let rate = (frames.len() - 1) as f64 / span;
    assert!(
        (22.0..=28.0).contains(&rate),
        "{what}: {} frames over {span:.2} s is {rate:.1} fps, not the source's 25",
        frames.len()
    );
    assert!(
        frames.len() as f64 <= 25.0 * (seconds + 2.5),
        "{what}: {} frames in a {seconds} s window",
        frames.len()
    );
}

/// A gateway on its embedded broker pushing to `srs`, a backend, and an MQTT device.
async fn setup(
    srs_env: &[(String, String)],
) -> (
    Gateway,
    TestClient,
    tokio_util::sync::CancellationToken,
    String,
) {
    let url = embedded_url();
    let env: Vec<(&str, &str)> = srs_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let gateway = gateway_on(&url, BrokerAt::Embedded, &env).await;
    let mut backend = TestClient::connect(
        port_of(&url),
        &["jt1078/client/#", "jt1078/device/#", "jt1078/status/#"],
    )
    .await;
    wait_online(&mut backend).await;
    let device = start_device(&url, DEVICE);
    (gateway, backend, device, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_rtmp_request_pushes_to_srs_and_srs_serves_it() {
    let srs = Srs::start().await;
    let (gateway, mut backend, device, _) = setup(&srs.gateway_env()).await;
    backend
        .publish(
            "jt1078/gateway/013800138000/RTMP",
            r#"{"seqid":"r1","client_id":"backend-1","channel":1}"#,
        )
        .await;
    let ok = backend
        .expect("OK", WAIT, is("jt1078/client/r1/OK"))
        .await
        .json();
    assert_eq!(ok["device"], DEVICE);
    assert_eq!(ok["state"], "pulling", "not live yet: the device is asked");
    assert_eq!(ok["rtmp"]["url"], srs.rtmp_url("live", "13800138000_1"));
    let flv = srs.flv_url("live", "13800138000_1");
    assert_eq!(ok["rtmp"]["play_urls"]["flv"], flv.as_str());
    assert!(
        ok["rtmp"]["play_urls"]["whep"]
            .as_str()
            .unwrap()
            .ends_with("app=live&stream=13800138000_1")
    );
    backend
        .expect("REQPULL", WAIT, is("jt1078/device/13800138000/REQPULL"))
        .await;
    let status = backend
        .expect("publishing status", WAIT, |r| {
            r.topic == "jt1078/status/stream/13800138000/1"
                && r.json()["rtmp"]["state"] == "publishing"
        })
        .await
        .json();
    assert_eq!(status["rtmp"]["url"], srs.rtmp_url("live", "13800138000_1"));

    // pulled back from SRS over HTTP-FLV and over RTMP
    let (codec, frames) = pull_frames(&flv, 4).await;
    assert_sample_frames("SRS HTTP-FLV", &codec, &frames, 4.0);
    // the sample's G.711A tone reaches SRS as AAC (audio.rtmp = "aac"), which SRS remuxes
    assert_eq!(
        pull_audio(&flv).await,
        ("aac".to_owned(), "8000".to_owned(), 1),
        "audio through SRS"
    );
    let (codec, frames) = pull_frames(&srs.rtmp_url("live", "13800138000_1"), 4).await;
    assert_sample_frames("SRS RTMP", &codec, &frames, 4.0);

    // UNSUBSCRIBE with the same client_id stops the push
    backend
        .publish(
            "jt1078/gateway/13800138000/UNSUBSCRIBE",
            r#"{"seqid":"r2","client_id":"backend-1","channel":1}"#,
        )
        .await;
    backend.expect("OK", WAIT, is("jt1078/client/r2/OK")).await;
    backend
        .expect("push stopped", WAIT, |r| {
            r.topic == "jt1078/status/stream/13800138000/1" && r.json().get("rtmp").is_none()
        })
        .await;
    device.cancel();
    gateway.stop().await;
}

/// The gateway's own HTTP-FLV viewer of the device's stream, reading in a task: the bytes
/// it got so far.
struct FlvViewer {
    bytes: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    /// Signalled after every read.
    read: std::sync::Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl FlvViewer {
    async fn start(gateway: &Gateway) -> FlvViewer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut socket = tokio::net::TcpStream::connect(gateway.addrs.http)
            .await
            .unwrap();
        socket
            .write_all(b"GET /live/13800138000_1.flv HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let bytes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&bytes);
        let read = std::sync::Arc::new(tokio::sync::Notify::new());
        let signal = std::sync::Arc::clone(&read);
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = socket.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
                signal.notify_one();
            }
        });
        FlvViewer { bytes, read, task }
    }

    /// Timestamps of the video tags received so far.
    fn video_timestamps(&self) -> Vec<u32> {
        let bytes = self.bytes.lock().unwrap().clone();
        let Some(head) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
            return Vec::new();
        };
        let body = bytes::Bytes::from(bytes[head + 4..].to_vec());
        jt1078_gateway::codec::flv::tags(body)
            .filter(|t| t.tag_type == 9 && t.body.get(1) == Some(&1))
            .map(|t| t.timestamp)
            .collect()
    }
}

impl Drop for FlvViewer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_resumes_after_srs_restarts_and_other_viewers_never_notice() {
    let mut srs = Srs::start().await;
    let mut env = srs.gateway_env();
    for (key, value) in [
        ("JTGW__RTMP__RETRY_BACKOFF", "200ms"),
        ("JTGW__RTMP__RETRY_BACKOFF_MAX", "1s"),
        ("JTGW__RTMP__MAX_ATTEMPTS", "100"),
    ] {
        env.push((key.to_owned(), value.to_owned()));
    }
    let (gateway, mut backend, device, _) = setup(&env).await;
    backend
        .publish(
            "jt1078/gateway/13800138000/RTMP",
            r#"{"seqid":"k1","client_id":"backend-1"}"#,
        )
        .await;
    backend.expect("OK", WAIT, is("jt1078/client/k1/OK")).await;
    let publishing = |r: &common::mqtt::Received| {
        r.topic == "jt1078/status/stream/13800138000/1" && r.json()["rtmp"]["state"] == "publishing"
    };
    backend.expect("publishing", WAIT, publishing).await;
    let viewer = FlvViewer::start(&gateway).await;
    let flv = srs.flv_url("live", "13800138000_1");
    let (codec, frames) = pull_frames(&flv, 2).await;
    assert_sample_frames("before the restart", &codec, &frames, 2.0);

    srs.kill().await;
    let retrying = backend
        .expect("retrying", WAIT, |r| {
            r.topic == "jt1078/status/stream/13800138000/1"
                && r.json()["rtmp"]["state"] == "retrying"
        })
        .await
        .json();
    let error = retrying["rtmp"]["error"].as_str().unwrap().to_owned();
    assert!(
        ["closed", "unreachable", "stalled"].contains(&error.as_str()),
        "{retrying}"
    );
    let during_outage = viewer.video_timestamps().len();
    // the viewer keeps getting frames while the push cannot reach SRS
    let more = during_outage + 10;
    tokio::time::timeout(WAIT, async {
        while viewer.video_timestamps().len() < more {
            viewer.read.notified().await;
        }
    })
    .await
    .expect("the gateway's viewer goes on while SRS is down");

    srs.restart().await;
    backend.expect("publishing again", WAIT, publishing).await;
    let (codec, frames) = pull_frames(&flv, 2).await;
    assert_sample_frames("after the restart", &codec, &frames, 2.0);

    // the gateway's own viewer never noticed: video timestamps advance in steps of a frame
    // or two throughout (the simulator loops its 10 s sample with continuous timestamps)
    let stamps = viewer.video_timestamps();
    assert!(stamps.len() > more, "{} frames", stamps.len());
    for pair in stamps.windows(2) {
        let step = i64::from(pair[1]) - i64::from(pair[0]);
        assert!(
            (0..=120).contains(&step),
            "viewer's video jumped {step} ms between two frames"
        );
    }
    drop(viewer);
    device.cancel();
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_nginx_rtmp_by_url_override_plays_back() {
    let nginx = NginxRtmp::start().await;
    // the templates point nowhere: the request's url decides
    let (gateway, mut backend, device, _) = setup(&[]).await;
    let target = format!("rtmp://127.0.0.1:{}/live/truck7", nginx.rtmp);
    let body = format!(r#"{{"seqid":"n1","client_id":"b","url":"{target}"}}"#);
    backend
        .publish("jt1078/gateway/13800138000/RTMP", &body)
        .await;
    let ok = backend
        .expect("OK", WAIT, is("jt1078/client/n1/OK"))
        .await
        .json();
    assert_eq!(ok["rtmp"]["url"], target.as_str());
    assert_eq!(
        ok["rtmp"]["play_urls"]["flv"], "http://127.0.0.1:8080/live/truck7.flv",
        "play URLs follow the target's app and stream"
    );
    backend
        .expect("publishing", WAIT, |r| {
            r.topic == "jt1078/status/stream/13800138000/1"
                && r.json()["rtmp"]["state"] == "publishing"
        })
        .await;
    let (codec, frames) = pull_frames(&target, 4).await;
    assert_sample_frames("nginx-rtmp RTMP", &codec, &frames, 4.0);
    device.cancel();
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_nobody_takes_ends_in_an_error_reply_with_a_code() {
    let dead = format!("rtmp://127.0.0.1:{}/live/x", free_port());
    let env = [
        ("JTGW__RTMP__LIVE_URL".to_owned(), dead.clone()),
        ("JTGW__RTMP__RETRY_BACKOFF".to_owned(), "100ms".to_owned()),
        ("JTGW__RTMP__MAX_ATTEMPTS".to_owned(), "3".to_owned()),
    ];
    let (gateway, mut backend, device, _) = setup(&env).await;
    backend
        .publish(
            "jt1078/gateway/13800138000/RTMP",
            r#"{"seqid":"e1","client_id":"b"}"#,
        )
        .await;
    backend.expect("OK", WAIT, is("jt1078/client/e1/OK")).await;
    let retrying = backend
        .expect("retrying status", WAIT, |r| {
            r.topic == "jt1078/status/stream/13800138000/1"
                && r.json()["rtmp"]["state"] == "retrying"
        })
        .await
        .json();
    assert_eq!(retrying["rtmp"]["error"], "unreachable");
    let error = backend
        .expect("ERROR", WAIT, is("jt1078/client/e1/ERROR"))
        .await
        .json();
    assert_eq!(error["code"], "rtmp_unavailable");
    assert_eq!(error["rtmp"]["error"], "unreachable");
    assert_eq!(error["rtmp"]["url"], dead.as_str());
    let failed = backend
        .expect("failed status", WAIT, |r| {
            r.topic == "jt1078/status/stream/13800138000/1" && r.json()["rtmp"]["state"] == "failed"
        })
        .await
        .json();
    assert_eq!(failed["rtmp"]["attempts"], 3);
    // bad input is an ERROR with the request's seqid, never a push
    backend
        .publish(
            "jt1078/gateway/13800138000/RTMP",
            r#"{"seqid":"e2","url":"http://srs/live/x"}"#,
        )
        .await;
    let bad = backend
        .expect("ERROR", WAIT, is("jt1078/client/e2/ERROR"))
        .await
        .json();
    assert_eq!(bad["code"], "invalid_field");
    device.cancel();
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_push_publishes_every_live_stream_without_a_request() {
    let srs = Srs::start().await;
    let mut env = srs.gateway_env();
    env.push(("JTGW__RTMP__AUTO_PUSH".to_owned(), "true".to_owned()));
    let (gateway, mut backend, device, _) = setup(&env).await;
    // a device that pushes on its own: nobody asked over MQTT
    device.cancel();
    let pushing = push_on_its_own(gateway.addrs.live, "13800138000");
    backend
        .expect("publishing", WAIT, |r| {
            r.topic == "jt1078/status/stream/13800138000/1"
                && r.json()["rtmp"]["state"] == "publishing"
        })
        .await;
    let (codec, frames) = pull_frames(&srs.flv_url("live", "13800138000_1"), 3).await;
    assert_sample_frames("auto push", &codec, &frames, 3.0);
    // the device goes away: the push ends with its stream
    pushing.cancel();
    backend
        .expect("push ended", WAIT, |r| {
            r.topic == "jt1078/status/stream/13800138000/1"
                && r.json()["live"] == false
                && r.json().get("rtmp").is_none()
        })
        .await;
    // the push is not a viewer: nobody asked for the stream, so the device is not asked
    // to come back (stream down + a viewer left = REQPULL)
    let seen = backend.drain_for(Duration::from_secs(2)).await;
    assert!(
        !seen.iter().any(|r| r.topic.ends_with("/REQPULL")),
        "no REQPULL for a stream nobody requested"
    );
    gateway.stop().await;
}

/// The body of the first video tag of 2 s of an HTTP-FLV URL (read by curl, which undoes
/// SRS's chunked encoding).
async fn first_video_tag(url: &str) -> Vec<u8> {
    let out = tokio::process::Command::new("curl")
        .args(["-s", "--max-time", "2", url])
        .output()
        .await
        .expect("curl");
    let flv = bytes::Bytes::from(out.stdout);
    assert!(flv.starts_with(b"FLV"), "{url}: not FLV");
    jt1078_gateway::codec::flv::tags(flv)
        .find(|t| t.tag_type == 9)
        .expect("a video tag")
        .body
        .to_vec()
}

/// The ffmpeg of the `imageio-ffmpeg` PyPI package, in the venv scripts/test.sh makes
/// (Debian's ffmpeg 5.1 reads no HEVC in FLV; this one reads Enhanced RTMP).
fn modern_ffmpeg() -> String {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/python");
    let out = std::process::Command::new(&python)
        .args([
            "-c",
            "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())",
        ])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/test.sh makes the venv)", python.display()));
    assert!(
        out.status.success(),
        "imageio-ffmpeg is not installed in target/pyenv"
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h265_is_pushed_as_enhanced_rtmp_and_srs_serves_it() {
    let ffmpeg = modern_ffmpeg();
    let tmp = TempDir::new("h265-push");
    let hevc = tmp.path("video.hevc");
    run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=640x360:rate=25",
            "-t",
            "4",
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            "keyint=25:bframes=0:log-level=error",
            "-f",
            "hevc",
            hevc.to_str().unwrap(),
        ],
    )
    .await;
    let packed = jt1078_gateway::simulate::pack::pack(
        jt1078_gateway::codec::h26x::VideoCodec::H265,
        &std::fs::read(&hevc).unwrap(),
        None,
        &jt1078_gateway::simulate::pack::PackOptions::default(),
    )
    .unwrap();
    let recording = tmp.path("h265.jt1078");
    std::fs::write(&recording, &packed).unwrap();

    let srs = Srs::start().await;
    let mut env = srs.gateway_env();
    env.push(("JTGW__RTMP__AUTO_PUSH".to_owned(), "true".to_owned()));
    let (gateway, mut backend, device, _) = setup(&env).await;
    device.cancel();
    let options = jt1078_gateway::simulate::SimulateOptions {
        packets: std::sync::Arc::new(jt1078_gateway::simulate::load_file(&recording).unwrap()),
        server: gateway.addrs.live,
        device: None,
        channel: None,
        devices: 1,
        pace: jt1078_gateway::simulate::Pace::Realtime,
        looping: true,
    };
    let pushing = tokio_util::sync::CancellationToken::new();
    tokio::spawn(jt1078_gateway::simulate::run(options, pushing.clone()));
    backend
        .expect("publishing", WAIT, |r| {
            r.topic == "jt1078/status/stream/13800138000/1"
                && r.json()["rtmp"]["state"] == "publishing"
        })
        .await;
    // SRS serves what it got: Enhanced RTMP video tags, FourCC hvc1
    let first_video = first_video_tag(&srs.flv_url("live", "13800138000_1")).await;
    assert_eq!(first_video[0] & 0x80, 0x80, "extended header bit");
    assert_eq!(&first_video[1..5], b"hvc1");
    // 3 s pulled back from SRS over HTTP-FLV and RTMP, every frame decoded
    for url in [
        srs.flv_url("live", "13800138000_1"),
        srs.rtmp_url("live", "13800138000_1"),
    ] {
        let (_, log) = run(
            &ffmpeg,
            &[
                "-hide_banner",
                "-rw_timeout",
                "15000000",
                "-i",
                &url,
                "-t",
                "3",
                "-map",
                "0:v",
                "-vf",
                "showinfo",
                "-f",
                "null",
                "-",
            ],
        )
        .await;
        let stream = log
            .lines()
            .find(|l| l.contains("Video:"))
            .unwrap_or_else(|| panic!("{url}: no video stream\n{log}"));
        assert!(stream.contains("hevc"), "{url}: {stream}");
        assert!(stream.contains("640x360"), "{url}: {stream}");
        let frames = log.lines().filter(|l| l.contains("] n:")).count();
        assert!(
            (50..=25 * 6).contains(&frames),
            "{url}: {frames} frames decoded in a 3 s window\n{log}"
        );
        assert!(
            !log.lines().any(|l| l.contains("rror")),
            "{url}: decode errors\n{log}"
        );
    }
    pushing.cancel();
    gateway.stop().await;
}
