//! RTMP push end to end: a real SRS 6 (run from `config/srs.conf`) and Debian's
//! nginx-rtmp, the simulator as an MQTT-controlled device, a backend asking over MQTT, and
//! ffprobe pulling the stream back from the RTMP server (HTTP-FLV and RTMP) and decoding it.

#![expect(
    clippy::unwrap_used,
    reason = "helpers of tests: a failure is a test failure"
)]

mod common;

use std::time::Duration;

use common::control::*;
use common::mqtt::TestClient;
use common::srs::{NginxRtmp, Srs};
use common::*;

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
