//! The MQTT control plane end to end: a real mosquitto (and the embedded broker), the
//! simulator as an MQTT-controlled device, HTTP-FLV viewers, and a test client that
//! plays the backend. Broker restarts, the last will and WebSocket: `mqtt_resilience.rs`.

#![expect(
    clippy::unwrap_used,
    reason = "helpers of tests: a failure is a test failure"
)]

mod common;

use std::time::Duration;

use common::control::*;
use common::mqtt::{Mosquitto, TestClient};
use common::*;
use jt1078_gateway::media::{Channel, DeviceId, StreamKey, StreamKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    // re-published once the media is known, unless the first one knew it already (a
    // state is published once)
    // (audio included: a status may know the video before the first audio frame)
    let has_media = |s: &serde_json::Value| {
        s["video_codec"] == "h264" && s["width"] == 640 && s["audio_codec"] == "g711a"
    };
    let status = if has_media(&status) {
        status
    } else {
        backend
            .expect("status with codecs and resolution", WAIT, |r| {
                let s = r.json();
                r.topic == "jt1078/status/stream/13800138000/1"
                    && s["live"] == true
                    && s["video_codec"] == "h264"
                    && s["audio_codec"] == "g711a"
                    && s["width"] == 640
            })
            .await
            .json()
    };
    assert_eq!(status["audio_codec"], "g711a");
    assert_eq!(status["height"], 360);
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
async fn two_requesters_one_reqpull_and_stop_only_after_both_left_with_mosquitto() {
    let broker = Mosquitto::start().await;
    two_requesters(&broker.url(), BrokerAt::Mosquitto).await;
}

#[tokio::test]
async fn two_requesters_one_reqpull_and_stop_only_after_both_left_with_the_embedded_broker() {
    two_requesters(&embedded_url(), BrokerAt::Embedded).await;
}

async fn two_requesters(url: &str, broker: BrokerAt) {
    let _gateway = gateway_on(url, broker, &[("JTGW__CONTROL__STOP_LINGER", "600ms")]).await;
    let mut backend = TestClient::connect(port_of(url), &BACKEND_TOPICS).await;
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
async fn a_lease_that_is_not_renewed_expires_and_stops_the_device_with_mosquitto() {
    let broker = Mosquitto::start().await;
    lease_expiry(&broker.url(), BrokerAt::Mosquitto).await;
}

#[tokio::test]
async fn a_lease_that_is_not_renewed_expires_and_stops_the_device_with_the_embedded_broker() {
    lease_expiry(&embedded_url(), BrokerAt::Embedded).await;
}

async fn lease_expiry(url: &str, broker: BrokerAt) {
    let _gateway = gateway_on(
        url,
        broker,
        &[
            ("JTGW__CONTROL__LEASE", "1s"),
            ("JTGW__CONTROL__STOP_LINGER", "200ms"),
        ],
    )
    .await;
    let mut backend = TestClient::connect(port_of(url), &BACKEND_TOPICS).await;
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
async fn malformed_requests_are_answered_with_errors_and_the_gateway_keeps_working_with_mosquitto()
{
    let broker = Mosquitto::start().await;
    malformed_requests(&broker.url(), BrokerAt::Mosquitto).await;
}

#[tokio::test]
async fn malformed_requests_are_answered_with_errors_and_the_gateway_keeps_working_with_the_embedded_broker()
 {
    malformed_requests(&embedded_url(), BrokerAt::Embedded).await;
}

async fn malformed_requests(url: &str, broker: BrokerAt) {
    let _gateway = gateway_on(url, broker, &[]).await;
    let mut backend = TestClient::connect(
        port_of(url),
        &["jt1078/client/#", "jt1078/status/gateway/#"],
    )
    .await;
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
            r#"{"seqid":"e3","url":"http://srs/live/x"}"#,
            "e3/ERROR",
            "invalid_field",
            "rtmp://",
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
            "missing_field",
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
            "e8/ERROR",
            "bad_sdp",
            "bad SDP offer",
        ),
        (
            "jt1078/gateway/13800138000/SUBSCRIBE",
            r#"{"seqid":"e9","video":false,"audio":false}"#,
            "e9/ERROR",
            "invalid_field",
            "at least one",
        ),
        (
            "jt1078/gateway/13800138000/SUBSCRIBE",
            r#"{"seqid":"e10","stream_type":2}"#,
            "e10/ERROR",
            "invalid_field",
            "stream_type",
        ),
        // a seqid with '/' can still be answered, below the topic it names
        (
            "jt1078/gateway/13800138000/SUBSCRIBE",
            r#"{"seqid":"e11/x"}"#,
            "e11/x/ERROR",
            "invalid_field",
            "may not contain",
        ),
    ];
    // garbage without a seqid first: logged, nothing to answer, nothing breaks
    backend
        .publish("jt1078/gateway/13800138000/SUBSCRIBE", "{not json")
        .await;
    backend
        .publish("jt1078/gateway/13800138000/SUBSCRIBE", "[1,2,3]")
        .await;
    // a seqid that cannot name a reply topic: logged, not answered
    backend
        .publish(
            "jt1078/gateway/13800138000/SUBSCRIBE",
            r#"{"seqid":"e+","client_id":"x"}"#,
        )
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
async fn live_and_playback_of_one_channel_never_mix() {
    let url = embedded_url();
    let gateway = gateway_on(
        &url,
        BrokerAt::Embedded,
        &[("JTGW__CONTROL__STOP_LINGER", "200ms")],
    )
    .await;
    let mut backend = TestClient::connect(
        port_of(&url),
        &[
            "jt1078/device/#",
            "jt1078/status/#",
            "jt1078/gateway/+/HEART",
        ],
    )
    .await;
    wait_online(&mut backend).await;
    let device = start_device(&url, "13800138000");
    backend
        .expect(
            "device heartbeat",
            WAIT,
            is("jt1078/gateway/13800138000/HEART"),
        )
        .await;
    // a viewer of a playback nobody asked for only waits: no REQPULL aimed at it
    let mut events = gateway.hub.events();
    let mut viewer = tokio::net::TcpStream::connect(gateway.addrs.http)
        .await
        .unwrap();
    viewer
        .write_all(b"GET /playback/13800138000_1.flv HTTP/1.0\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    gateway.wait_for_waiting_reader(&mut events).await;
    backend
        .publish(
            "jt1078/gateway/13800138000/PLAYBACK",
            r#"{"seqid":"p1","client_id":"b","channel":1,"start_time":"2026-11-22 08:00:00"}"#,
        )
        .await;
    let first = backend
        .expect("the first command to the device", WAIT, |r| {
            r.topic.starts_with("jt1078/device/13800138000/")
        })
        .await;
    assert_eq!(
        first.topic, "jt1078/device/13800138000/PLAYBACK",
        "the waiting viewer must not have caused a REQPULL"
    );
    assert_eq!(first.json()["tcp_port"], gateway.addrs.playback.port());
    let mut head = [0u8; 12];
    tokio::time::timeout(WAIT, viewer.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&head[9..12], b"200", "{}", String::from_utf8_lossy(&head));
    let is_playback = |s: &jt1078_gateway::hub::StreamSnapshot| {
        s.device == "13800138000" && s.kind == StreamKind::Playback
    };
    gateway
        .wait_for_stream("playback", |s| is_playback(s) && s.video_frames > 0)
        .await;
    // live of the same channel while the playback runs
    backend
        .publish(
            "jt1078/gateway/13800138000/SUBSCRIBE",
            r#"{"seqid":"l1","client_id":"b","channel":1}"#,
        )
        .await;
    backend
        .expect("REQPULL", WAIT, is("jt1078/device/13800138000/REQPULL"))
        .await;
    gateway
        .wait_for_stream("live beside the playback", |s| {
            s.device == "13800138000" && s.kind == StreamKind::Live && s.video_frames > 0
        })
        .await;
    // stopping the live stream leaves the playback running
    backend
        .publish(
            "jt1078/gateway/13800138000/UNSUBSCRIBE",
            r#"{"seqid":"l2","client_id":"b","channel":1}"#,
        )
        .await;
    backend
        .expect("STOP", WAIT, is("jt1078/device/13800138000/STOP"))
        .await;
    backend
        .expect("live down", WAIT, |r| {
            r.topic == "jt1078/status/stream/13800138000/1" && r.json()["live"] == false
        })
        .await;
    let key = StreamKey::new(
        DeviceId::parse("13800138000").unwrap(),
        Channel(1),
        StreamKind::Playback,
    );
    assert!(gateway.hub.is_live(&key), "the playback survived the STOP");
    let before = gateway
        .wait_for_stream("playback", |s| is_playback(s))
        .await
        .video_frames;
    gateway
        .wait_for_stream("the playback still flowing", |s| {
            is_playback(s) && s.video_frames > before + 10
        })
        .await;
    device.cancel();
}

#[tokio::test]
async fn a_device_that_never_connects_is_stopped_along_with_the_error() {
    let broker = Mosquitto::start().await;
    let _gateway = gateway_with_broker(
        &broker.url(),
        &[
            ("JTGW__CONTROL__PULL_TIMEOUT", "300ms"),
            ("JTGW__CONTROL__PULL_ATTEMPTS", "1"),
        ],
    )
    .await;
    let mut backend = TestClient::connect(broker.port, &BACKEND_TOPICS).await;
    wait_online(&mut backend).await;
    backend
        .publish(
            "jt1078/gateway/13900000007/SUBSCRIBE",
            r#"{"seqid":"n1","client_id":"a"}"#,
        )
        .await;
    backend
        .expect("REQPULL", WAIT, is("jt1078/device/13900000007/REQPULL"))
        .await;
    let error = backend
        .expect("ERROR", WAIT, is("jt1078/client/n1/ERROR"))
        .await
        .json();
    assert_eq!(error["code"], "device_unavailable");
    // so a device that connects late does not stream for nobody
    let stop = backend
        .expect("STOP", WAIT, is("jt1078/device/13900000007/STOP"))
        .await
        .json();
    assert_eq!(stop["command"], 0);
}

#[tokio::test]
async fn reqpull_carries_the_requested_stream_type_and_data_type() {
    let url = embedded_url();
    let _gateway = gateway_on(&url, BrokerAt::Embedded, &[]).await;
    let mut backend = TestClient::connect(
        port_of(&url),
        &["jt1078/device/#", "jt1078/status/gateway/#"],
    )
    .await;
    wait_online(&mut backend).await;
    let cases = [
        (1, r#""video":true,"audio":false,"stream_type":1"#, 1, 1),
        (2, r#""video":false"#, 3, 0),
        (3, r#""audio":true"#, 0, 0),
    ];
    for (channel, fields, data_type, stream_type) in cases {
        backend
            .publish(
                "jt1078/gateway/13900000003/SUBSCRIBE",
                &format!(r#"{{"seqid":"t{channel}","channel":{channel},{fields}}}"#),
            )
            .await;
        let pull = backend
            .expect("REQPULL", WAIT, |r| {
                r.topic == "jt1078/device/13900000003/REQPULL" && r.json()["channel"] == channel
            })
            .await
            .json();
        assert_eq!(pull["data_type"], data_type, "{fields}");
        assert_eq!(pull["stream_type"], stream_type, "{fields}");
    }
}

#[tokio::test]
async fn a_requester_of_a_stream_pushed_on_its_own_is_not_stranded_when_it_drops() {
    let url = embedded_url();
    let gateway = gateway_on(&url, BrokerAt::Embedded, &[]).await;
    let mut backend = TestClient::connect(port_of(&url), &BACKEND_TOPICS).await;
    wait_online(&mut backend).await;
    let pusher = push_on_its_own(gateway.addrs.live, "13900000004");
    gateway
        .wait_for_stream("pushed on its own", |s| s.device == "13900000004")
        .await;
    backend
        .publish(
            "jt1078/gateway/13900000004/SUBSCRIBE",
            r#"{"seqid":"o1","client_id":"a"}"#,
        )
        .await;
    let ok = backend.expect("OK", WAIT, is("jt1078/client/o1/OK")).await;
    assert_eq!(ok.json()["state"], "live");
    let dropped = tokio::time::Instant::now();
    pusher.cancel();
    let pull = backend
        .expect("REQPULL", WAIT, is("jt1078/device/13900000004/REQPULL"))
        .await;
    assert!(
        pull.at >= dropped,
        "asked for only once the stream went down"
    );
}
