//! The control plane when things break or come from elsewhere: the broker restarts under a
//! running stream, the gateway is killed (last will), commands in force are re-sent after a
//! reconnect, and MQTT over WebSocket on the embedded broker and on mosquitto with the
//! repository's config.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "helpers of tests: a failure is a test failure"
)]

mod common;

use common::control::*;
use common::mqtt::{Mosquitto, TestClient};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    let mut backend = TestClient::connect(broker.port, &BACKEND_TOPICS).await;
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

#[tokio::test]
async fn commands_in_force_are_sent_again_after_a_broker_restart() {
    let mut broker = Mosquitto::start().await;
    let gateway = gateway_with_broker(
        &broker.url(),
        &[
            ("JTGW__CONTROL__PULL_TIMEOUT", "60s"),
            ("JTGW__CONTROL__STOP_LINGER", "200ms"),
        ],
    )
    .await;
    // a persistent session: what the gateway sends while this client reconnects is kept
    let mut backend = TestClient::connect_persistent(broker.port, &BACKEND_TOPICS).await;
    wait_online(&mut backend).await;
    // A is asked for and does not answer
    backend
        .publish(
            "jt1078/gateway/13900000005/SUBSCRIBE",
            r#"{"seqid":"a1","client_id":"x"}"#,
        )
        .await;
    let first_pull = backend
        .expect("REQPULL A", WAIT, is("jt1078/device/13900000005/REQPULL"))
        .await
        .json();
    // B is asked for, pushes, and ignores the STOP
    backend
        .publish(
            "jt1078/gateway/13900000006/SUBSCRIBE",
            r#"{"seqid":"b1","client_id":"x"}"#,
        )
        .await;
    backend
        .expect("REQPULL B", WAIT, is("jt1078/device/13900000006/REQPULL"))
        .await;
    let pusher = push_on_its_own(gateway.addrs.live, "13900000006");
    gateway
        .wait_for_stream("B live", |s| s.device == "13900000006")
        .await;
    backend
        .publish(
            "jt1078/gateway/13900000006/UNSUBSCRIBE",
            r#"{"seqid":"b2","client_id":"x"}"#,
        )
        .await;
    let first_stop = backend
        .expect("STOP B", WAIT, is("jt1078/device/13900000006/STOP"))
        .await
        .json();
    broker.restart_gracefully().await;
    let pull = backend
        .expect(
            "REQPULL A again",
            WAIT,
            is("jt1078/device/13900000005/REQPULL"),
        )
        .await
        .json();
    assert_ne!(
        pull["seqid"], first_pull["seqid"],
        "sent again, not redelivered"
    );
    let stop = backend
        .expect("STOP B again", WAIT, is("jt1078/device/13900000006/STOP"))
        .await
        .json();
    assert_ne!(
        stop["seqid"], first_stop["seqid"],
        "sent again, not redelivered"
    );
    pusher.cancel();
}

/// An MQTT over WebSocket handshake, then CONNECT → CONNACK in binary frames.
async fn mqtt_over_websocket_connects(addr: std::net::SocketAddr) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut socket = loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(socket) => break socket,
            Err(error) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "websocket listener {addr}: {error}"
                );
                tokio::task::yield_now().await;
            }
        }
    };
    socket
        .write_all(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Protocol: mqtt\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tokio::time::timeout(WAIT, socket.read_exact(&mut byte))
            .await
            .expect("handshake reply")
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("sec-websocket-protocol: mqtt\r\n"), "{head}");
    // RFC 6455 §1.3: the accept value for this key
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"),
        "{head}"
    );
    // MQTT 3.1.1 CONNECT, client id "ws", clean session, keep-alive 60 s; masked (client)
    let connect = [
        0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 2, b'w', b's',
    ];
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![0x82, 0x80 | connect.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(connect.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    socket.write_all(&frame).await.unwrap();
    let mut reply = [0u8; 6];
    tokio::time::timeout(WAIT, socket.read_exact(&mut reply))
        .await
        .expect("CONNACK")
        .unwrap();
    assert_eq!(
        reply,
        [0x82, 4, 0x20, 2, 0, 0],
        "binary frame with CONNACK, accepted"
    );
}

#[tokio::test]
async fn the_embedded_broker_speaks_mqtt_over_websocket() {
    let url = embedded_url();
    let ws = format!("127.0.0.1:{}", free_port());
    let _gateway = gateway_on(
        &url,
        BrokerAt::Embedded,
        &[("JTGW__MQTT__EMBEDDED_WS_LISTEN", &ws)],
    )
    .await;
    let mut backend = TestClient::connect(port_of(&url), &["jt1078/status/gateway/#"]).await;
    wait_online(&mut backend).await;
    mqtt_over_websocket_connects(ws.parse().unwrap()).await;
}

#[tokio::test]
async fn mosquitto_with_the_repository_config_speaks_mqtt_over_websocket() {
    let broker = Mosquitto::start().await;
    mqtt_over_websocket_connects(([127, 0, 0, 1], broker.ws_port).into()).await;
}
