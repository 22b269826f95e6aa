//! The MQTT control plane end to end: a real mosquitto (and the embedded broker), the
//! simulator as an MQTT-controlled device, HTTP-FLV viewers, and a test client that
//! plays the backend.

#![expect(
    clippy::unwrap_used,
    reason = "helpers of tests: a failure is a test failure"
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::mqtt::{Mosquitto, Received, TestClient};
use common::*;
use jt1078_gateway::media::DeviceId;
use jt1078_gateway::simulate::mqtt_device::{self, MqttDeviceOptions};
use jt1078_gateway::simulate::{Pace, load_file};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

fn sample() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/sample-h264-g711a.jt1078")
}

/// A gateway using the external broker at `url`.
async fn gateway_with_broker(url: &str, extra: &[(&str, &str)]) -> Gateway {
    let mut env = vec![("JTGW__MQTT__EMBEDDED", "false"), ("JTGW__MQTT__URL", url)];
    env.extend_from_slice(extra);
    Gateway::start(&env).await
}

/// Simulated device(s) that obey the gateway over MQTT until the token is cancelled.
fn start_device(url: &str, device: &str) -> CancellationToken {
    let options = MqttDeviceOptions {
        packets: Arc::new(load_file(&sample()).unwrap()),
        url: url.to_owned(),
        topic_prefix: "jt1078".to_owned(),
        devices: vec![DeviceId::parse(device).unwrap()],
        pace: Pace::Realtime,
        looping: true,
    };
    let cancel = CancellationToken::new();
    tokio::spawn(mqtt_device::run(options, cancel.clone()));
    cancel
}

/// The first `n` video frames ffprobe decodes from `url`.
async fn probe_frames(url: &str, n: usize) -> Vec<serde_json::Value> {
    let interval = format!("%+#{n}");
    let (stdout, _) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-select_streams",
            "v",
            "-read_intervals",
            &interval,
            "-show_entries",
            "frame=key_frame,width,height",
            "-of",
            "json",
            url,
        ],
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    v["frames"].as_array().unwrap().clone()
}

fn is(topic: &str) -> impl Fn(&Received) -> bool + '_ {
    move |r| r.topic == topic
}

/// Waits until the gateway's MQTT client is subscribed (its online status is retained).
async fn wait_online(client: &mut TestClient) {
    client
        .expect("gateway online", WAIT, |r| {
            r.topic == "jt1078/status/gateway/gw1" && r.json()["status"] == "online"
        })
        .await;
}

/// SUBSCRIBE → REQPULL → device connects → play → UNSUBSCRIBE → STOP after the linger.
async fn full_cycle(port: u16, gateway: &Gateway, url: &str) {
    let mut backend = TestClient::connect(
        port,
        &[
            "jt1078/client/#",
            "jt1078/device/#",
            "jt1078/status/#",
            "jt1078/gateway/+/HEART",
        ],
    )
    .await;
    wait_online(&mut backend).await;
    let device = start_device(url, "13800138000");
    // the device heartbeats once it listens to its control topic
    backend
        .expect(
            "device heartbeat",
            WAIT,
            is("jt1078/gateway/13800138000/HEART"),
        )
        .await;
    backend
        .publish(
            "jt1078/gateway/013800138000/SUBSCRIBE",
            r#"{"seqid":"s1","client_id":"backend-1","channel":1}"#,
        )
        .await;
    let ok = backend
        .expect("OK", WAIT, is("jt1078/client/s1/OK"))
        .await
        .json();
    assert_eq!(ok["device"], "13800138000", "canonical id in replies");
    assert_eq!(ok["state"], "pulling");
    let flv = ok["urls"]["flv"].as_str().unwrap().to_owned();
    assert!(flv.ends_with("/live/13800138000_1.flv"), "{flv}");
    let pull = backend
        .expect("REQPULL", WAIT, is("jt1078/device/13800138000/REQPULL"))
        .await
        .json();
    assert_eq!(pull["tcp_port"], gateway.addrs.live.port());
    assert_eq!(pull["channel"], 1);
    let status = backend
        .expect("live status", WAIT, |r| {
            r.topic == "jt1078/status/stream/13800138000/1" && r.json()["live"] == true
        })
        .await
        .json();
    assert_eq!(status["urls"]["flv"], flv.as_str());
    // play what the reply pointed at (port from the gateway, path from the reply)
    let path = flv
        .split_once(&format!(":{}", gateway.addrs.http.port()))
        .unwrap()
        .1
        .to_owned();
    let url_here = format!("http://{}{path}", gateway.addrs.http);
    let frames = probe_frames(&url_here, 10).await;
    assert_eq!(frames.len(), 10);
    assert!(
        frames
            .iter()
            .all(|f| f["width"] == 640 && f["height"] == 360),
        "{frames:?}"
    );
    backend
        .publish(
            "jt1078/gateway/13800138000/UNSUBSCRIBE",
            r#"{"seqid":"s2","client_id":"backend-1","channel":1}"#,
        )
        .await;
    let left = backend
        .expect("OK to UNSUBSCRIBE", WAIT, is("jt1078/client/s2/OK"))
        .await;
    let stop = backend
        .expect("STOP", WAIT, is("jt1078/device/13800138000/STOP"))
        .await;
    assert!(
        stop.at - left.at >= Duration::from_millis(400),
        "STOP waits for the linger"
    );
    backend
        .expect("down status", WAIT, |r| {
            r.topic == "jt1078/status/stream/13800138000/1" && r.json()["live"] == false
        })
        .await;
    device.cancel();
}

#[tokio::test]
async fn full_cycle_with_mosquitto() {
    let broker = Mosquitto::start().await;
    let gateway =
        gateway_with_broker(&broker.url(), &[("JTGW__CONTROL__STOP_LINGER", "500ms")]).await;
    full_cycle(broker.port, &gateway, &broker.url()).await;
}

#[tokio::test]
async fn full_cycle_with_the_embedded_broker() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let gateway = Gateway::start(&[
        ("JTGW__MQTT__EMBEDDED_LISTEN", &listen),
        ("JTGW__CONTROL__STOP_LINGER", "500ms"),
    ])
    .await;
    full_cycle(port, &gateway, &format!("mqtt://127.0.0.1:{port}")).await;
}

#[tokio::test]
async fn two_requesters_one_reqpull_and_stop_only_after_both_left() {
    let broker = Mosquitto::start().await;
    let _gateway =
        gateway_with_broker(&broker.url(), &[("JTGW__CONTROL__STOP_LINGER", "600ms")]).await;
    let mut backend = TestClient::connect(
        broker.port,
        &[
            "jt1078/client/#",
            "jt1078/device/#",
            "jt1078/status/gateway/#",
        ],
    )
    .await;
    wait_online(&mut backend).await;
    let topic = "jt1078/gateway/13900000001/SUBSCRIBE";
    backend
        .publish(topic, r#"{"seqid":"a1","client_id":"a","channel":2}"#)
        .await;
    backend
        .publish(topic, r#"{"seqid":"b1","client_id":"b","channel":2}"#)
        .await;
    backend
        .publish(topic, r#"{"seqid":"a2","client_id":"a","channel":2}"#)
        .await;
    backend
        .expect("OK a2", WAIT, is("jt1078/client/a2/OK"))
        .await;
    backend
        .publish(
            "jt1078/gateway/13900000001/UNSUBSCRIBE",
            r#"{"seqid":"a3","client_id":"a","channel":2}"#,
        )
        .await;
    backend
        .expect("OK a3", WAIT, is("jt1078/client/a3/OK"))
        .await;
    backend
        .publish(
            "jt1078/gateway/13900000001/UNSUBSCRIBE",
            r#"{"seqid":"b2","client_id":"b","channel":2}"#,
        )
        .await;
    let b_left = backend
        .expect("OK b2", WAIT, is("jt1078/client/b2/OK"))
        .await;
    let stop = backend
        .expect("STOP", WAIT, is("jt1078/device/13900000001/STOP"))
        .await;
    assert!(
        stop.at - b_left.at >= Duration::from_millis(500),
        "STOP after the last requester + linger"
    );
    assert_eq!(stop.json()["channel"], 2);
    let seen = backend.drain_for(Duration::from_millis(300)).await;
    let pulls = seen
        .iter()
        .filter(|r| r.topic == "jt1078/device/13900000001/REQPULL")
        .count();
    assert_eq!(pulls, 1, "one REQPULL for two requesters");
    assert!(!seen.iter().any(|r| r.topic.ends_with("/STOP")), "one STOP");
}

#[tokio::test]
async fn a_lease_that_is_not_renewed_expires_and_stops_the_device() {
    let broker = Mosquitto::start().await;
    let _gateway = gateway_with_broker(
        &broker.url(),
        &[
            ("JTGW__CONTROL__LEASE", "1s"),
            ("JTGW__CONTROL__STOP_LINGER", "200ms"),
        ],
    )
    .await;
    let mut backend = TestClient::connect(
        broker.port,
        &[
            "jt1078/client/#",
            "jt1078/device/#",
            "jt1078/status/gateway/#",
        ],
    )
    .await;
    wait_online(&mut backend).await;
    backend
        .publish(
            "jt1078/gateway/13900000002/SUBSCRIBE",
            r#"{"seqid":"l1","client_id":"crashed"}"#,
        )
        .await;
    let ok = backend.expect("OK", WAIT, is("jt1078/client/l1/OK")).await;
    assert_eq!(ok.json()["lease_secs"], 1);
    let stop = backend
        .expect("STOP", WAIT, is("jt1078/device/13900000002/STOP"))
        .await;
    assert!(
        stop.at - ok.at >= Duration::from_millis(1100),
        "lease (1 s) plus linger (200 ms)"
    );
}

#[tokio::test]
async fn malformed_requests_are_answered_with_errors_and_the_gateway_keeps_working() {
    let broker = Mosquitto::start().await;
    let _gateway = gateway_with_broker(&broker.url(), &[]).await;
    let mut backend =
        TestClient::connect(broker.port, &["jt1078/client/#", "jt1078/status/gateway/#"]).await;
    wait_online(&mut backend).await;
    let cases = [
        (
            "jt1078/gateway/13800138000/SUBSCRIBE",
            r#"{"seqid":"e1","channel":"one"}"#,
            "e1/ERROR",
            "invalid_field",
            "channel",
        ),
        (
            "jt1078/gateway/13800138000/FLY",
            r#"{"seqid":"e2"}"#,
            "e2/ERROR",
            "unknown_mode",
            "SUBSCRIBE",
        ),
        (
            "jt1078/gateway/13800138000/RTMP",
            r#"{"seqid":"e3"}"#,
            "e3/REFUSE",
            "not_supported",
            "HTTP-FLV",
        ),
        (
            "jt1078/gateway/not-a-sim/SUBSCRIBE",
            r#"{"seqid":"e4"}"#,
            "e4/ERROR",
            "invalid_device",
            "digits",
        ),
        (
            "jt1078/gateway/13800138000/UNSUBSCRIBE",
            r#"{"seqid":"e5","client_id":"nobody"}"#,
            "e5/ERROR",
            "not_subscribed",
            "subscribe",
        ),
        (
            "jt1078/gateway/13800138000/PLAYBACK",
            r#"{"seqid":"e6","channel":1}"#,
            "e6/ERROR",
            "invalid_field",
            "start_time",
        ),
        (
            "jt1078/gateway/13800138000/PLAYBACK_CTRL",
            r#"{"seqid":"e7","control":5}"#,
            "e7/ERROR",
            "missing_field",
            "seek_time",
        ),
        (
            "jt1078/gateway/13800138000/WEBRTC",
            r#"{"seqid":"e8","offer":{"type":"offer","sdp":"v=0"}}"#,
            "e8/REFUSE",
            "not_supported",
            "WebRTC",
        ),
    ];
    // garbage without a seqid first: logged, nothing to answer, nothing breaks
    backend
        .publish("jt1078/gateway/13800138000/SUBSCRIBE", "{not json")
        .await;
    backend
        .publish("jt1078/gateway/13800138000/SUBSCRIBE", "[1,2,3]")
        .await;
    for (topic, body, reply, code, hint) in cases {
        backend.publish(topic, body).await;
        let got = backend
            .expect(reply, WAIT, |r| r.topic == format!("jt1078/client/{reply}"))
            .await
            .json();
        assert_eq!(got["code"], code, "{topic} {body}");
        let message = got["message"].as_str().unwrap();
        assert!(
            message.contains(hint),
            "{reply}: {message:?} should mention {hint}"
        );
    }
    backend
        .publish(
            "jt1078/gateway/13800138000/SUBSCRIBE",
            r#"{"seqid":"fine","client_id":"x"}"#,
        )
        .await;
    backend
        .expect("still answering", WAIT, is("jt1078/client/fine/OK"))
        .await;
}

#[tokio::test]
async fn a_viewer_asking_for_a_stream_that_is_not_live_makes_the_device_push() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let gateway = Gateway::start(&[
        ("JTGW__MQTT__EMBEDDED_LISTEN", &listen),
        ("JTGW__CONTROL__STOP_LINGER", "300ms"),
    ])
    .await;
    let mut backend = TestClient::connect(
        port,
        &[
            "jt1078/device/#",
            "jt1078/status/gateway/#",
            "jt1078/gateway/+/HEART",
        ],
    )
    .await;
    wait_online(&mut backend).await;
    let device = start_device(&format!("mqtt://127.0.0.1:{port}"), "13800138000");
    backend
        .expect(
            "device heartbeat",
            WAIT,
            is("jt1078/gateway/13800138000/HEART"),
        )
        .await;
    let url = format!("http://{}/live/013800138000_1.flv", gateway.addrs.http);
    let frames = probe_frames(&url, 5).await;
    assert_eq!(frames.len(), 5);
    assert_eq!(frames[0]["key_frame"], 1, "starts on a key frame");
    backend
        .expect(
            "REQPULL from the viewer",
            WAIT,
            is("jt1078/device/13800138000/REQPULL"),
        )
        .await;
    // ffprobe left: the viewer's demand ends, the device is stopped after the linger
    backend
        .expect(
            "STOP after the viewer left",
            WAIT,
            is("jt1078/device/13800138000/STOP"),
        )
        .await;
    device.cancel();
}

#[tokio::test]
async fn a_broker_restart_loses_neither_the_stream_nor_the_subscription() {
    let mut broker = Mosquitto::start().await;
    let gateway =
        gateway_with_broker(&broker.url(), &[("JTGW__CONTROL__STOP_LINGER", "300ms")]).await;
    let mut backend = TestClient::connect(
        broker.port,
        &[
            "jt1078/client/#",
            "jt1078/device/#",
            "jt1078/status/gateway/#",
            "jt1078/gateway/+/HEART",
        ],
    )
    .await;
    wait_online(&mut backend).await;
    let device = start_device(&broker.url(), "13800138000");
    backend
        .expect(
            "device heartbeat",
            WAIT,
            is("jt1078/gateway/13800138000/HEART"),
        )
        .await;
    backend
        .publish(
            "jt1078/gateway/13800138000/SUBSCRIBE",
            r#"{"seqid":"r1","client_id":"fleet"}"#,
        )
        .await;
    backend.expect("OK", WAIT, is("jt1078/client/r1/OK")).await;
    let before = gateway
        .wait_for_stream("stream live", |s| s.video_frames > 10)
        .await;
    broker.restart().await;
    // the stream keeps flowing through the outage
    gateway
        .wait_for_stream("frames after the restart", |s| {
            s.video_frames > before.video_frames + 25
        })
        .await;
    // clients reconnect; the gateway re-subscribes and re-announces
    let mut backend = TestClient::connect(
        broker.port,
        &[
            "jt1078/client/#",
            "jt1078/device/#",
            "jt1078/status/gateway/#",
        ],
    )
    .await;
    wait_online(&mut backend).await;
    backend
        .publish(
            "jt1078/gateway/13800138000/UNSUBSCRIBE",
            r#"{"seqid":"r2","client_id":"fleet"}"#,
        )
        .await;
    backend
        .expect("the subscription survived", WAIT, is("jt1078/client/r2/OK"))
        .await;
    backend
        .expect("STOP", WAIT, is("jt1078/device/13800138000/STOP"))
        .await;
    device.cancel();
}

#[tokio::test]
async fn the_last_will_says_offline_when_the_gateway_is_killed() {
    let broker = Mosquitto::start().await;
    let mut backend = TestClient::connect(broker.port, &["jt1078/status/gateway/#"]).await;
    let bin = env!("CARGO_BIN_EXE_jt1078-gateway");
    let mut child = std::process::Command::new(bin)
        .arg("serve")
        .env("JTGW__MQTT__EMBEDDED", "false")
        .env("JTGW__MQTT__URL", broker.url())
        .env("JTGW__MQTT__GATEWAY_ID", "killed")
        .env("JTGW__INGEST__LIVE_LISTEN", "127.0.0.1:0")
        .env("JTGW__INGEST__PLAYBACK_LISTEN", "127.0.0.1:0")
        .env("JTGW__HTTP__LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    backend
        .expect("online", WAIT, |r| {
            r.topic == "jt1078/status/gateway/killed" && r.json()["status"] == "online"
        })
        .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let will = backend
        .expect("offline (last will)", WAIT, |r| {
            r.topic == "jt1078/status/gateway/killed" && r.json()["status"] == "offline"
        })
        .await;
    assert_eq!(will.json()["gateway_id"], "killed");
}
