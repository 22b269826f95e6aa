//! WebRTC interop with a second independent stack: aiortc (Python, PyPI; its own ICE, DTLS,
//! SRTP, and libavcodec for H.264) plays what the gateway sends over WHEP and over MQTT
//! `WEBRTC`, beside the Chromium tests (`webrtc_browser.rs`) and str0m (`webrtc.rs`, the
//! gateway's own library as the peer). `tests/browser/aiortc_play.py` is the peer.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "integration tests: a panic is the failure report"
)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::control::*;
use common::*;
use serde_json::Value;

/// Runs the aiortc peer with `args`; its JSON line.
async fn aiortc(args: &[&str]) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("target/pyenv/bin/python");
    let run = tokio::process::Command::new(&python)
        .arg(root.join("tests/browser/aiortc_play.py"))
        .args(args)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the aiortc peer ends within 60 s")
        .unwrap_or_else(|e| {
            panic!(
                "{} could not start: {e} (scripts/test.sh installs aiortc in target/pyenv)",
                python.display()
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_else(|| {
        panic!(
            "the aiortc peer printed nothing: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// H.264 decoded by aiortc at `size`, at least 50 frames; G.711A negotiated as PCMA and
/// decoded at 8 kHz.
fn assert_played(result: &Value, size: (u64, u64)) {
    assert_eq!(result["ok"], true, "{result}");
    assert!(result["video_frames"].as_u64().unwrap() >= 50, "{result}");
    assert_eq!(
        (
            result["width"].as_u64().unwrap(),
            result["height"].as_u64().unwrap()
        ),
        size,
        "{result}"
    );
    assert_eq!(result["video_codec"], "video/H264", "{result}");
    assert_eq!(result["audio_codec"], "audio/PCMA", "{result}");
    assert!(result["audio_frames"].as_u64().unwrap() >= 10, "{result}");
    assert_eq!(result["audio_rate"], 8000, "{result}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_plays_a_whep_stream_and_an_mqtt_signalled_cold_one() {
    let url = embedded_url();
    let gateway = gateway_on(&url, BrokerAt::Embedded, &[]).await;

    // 1. WHEP, a live stream replayed from the H.264 + G.711A capture
    let capture = testdata("h264-g711a-156987000796-ch1.jt1078");
    let device = replay_looping(&capture, gateway.addrs.live, Some("156987000796"));
    gateway
        .wait_for_stream("the capture", |s| s.video_frames >= 30)
        .await;
    let size = {
        let bytes = std::fs::read(&capture).unwrap();
        let tmp = TempDir::new("aiortc-ref");
        let h264 = tmp.path("capture.h264");
        std::fs::write(&h264, raw_video(&raw_packets(&bytes, 6))).unwrap();
        let probe = probe_stream(&h264, "v", Some("h264")).await;
        (
            probe["width"].as_u64().unwrap(),
            probe["height"].as_u64().unwrap(),
        )
    };
    let whep = format!("http://{}/whep/live/156987000796_1", gateway.addrs.http);
    let result = aiortc(&["--whep", &whep]).await;
    eprintln!("aiortc over WHEP: {result}");
    assert_played(&result, size);
    assert_eq!(result["status"], 201, "{result}");
    assert_eq!(result["delete_status"], 200, "{result}");
    device.cancel();

    // 2. MQTT WEBRTC for a device that is not connected: REQPULL, then the picture
    let mqtt_device = start_device(&url, "13800138000");
    let broker = format!("127.0.0.1:{}", port_of(&url));
    let result = aiortc(&[
        "--mqtt",
        &broker,
        "--device",
        "13800138000",
        "--seqid",
        "aiortc-cold",
    ])
    .await;
    eprintln!("aiortc over MQTT: {result}");
    assert_eq!(result["reply"]["state"], "pulling", "{result}");
    assert_eq!(result["reply"]["seqid"], "aiortc-cold", "{result}");
    // the bundled sample: 640x360 (samples/make-sample.sh)
    assert_played(&result, (640, 360));
    mqtt_device.cancel();
    gateway.stop().await;
}
