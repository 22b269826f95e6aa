//! The seed's flagship flow end to end with a real SRS 6 whose hooks point at the gateway:
//! players open SRS's HTTP-FLV URL before anything streams; SRS's on_play reaches the
//! bridge, which asks the control plane (MQTT, real mosquitto) for the push; the simulated
//! MQTT device gets one REQPULL, the gateway pushes to SRS, the players decode the picture;
//! after the last leaves and the linger, one STOP.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "helpers of tests: a failure is a test failure"
)]

mod common;

use std::time::Duration;

use common::bridge::{hook, http_post};
use common::control::*;
use common::mqtt::{Mosquitto, Received, TestClient};
use common::srs::Srs;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

fn topic_is(topic: &'static str) -> impl Fn(&Received) -> bool {
    move |r| r.topic == topic
}

/// A gateway on `mosquitto` whose bridge pushes to SRS on `ports` and asks its API.
async fn gateway_for_srs(
    mosquitto: &Mosquitto,
    ports: [u16; 4],
    extra: &[(&str, &str)],
) -> Gateway {
    let push = format!("rtmp://{{srs}}:{}/{{app}}/{{stream}}", ports[0]);
    let api = format!("http://{{srs}}:{}", ports[2]);
    let mut env = vec![
        ("JTGW__BRIDGE__PUSH_URL", push.as_str()),
        ("JTGW__BRIDGE__SRS_API", api.as_str()),
    ];
    env.extend_from_slice(extra);
    gateway_with_broker(&mosquitto.url(), &env).await
}

/// An HTTP-FLV player that reads until the first video key frame (returning how long that
/// took) and then keeps the connection open until dropped.
async fn first_key_frame(url: &str) -> (Duration, TcpStream) {
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let started = Instant::now();
    let mut socket = TcpStream::connect(authority).await.unwrap();
    let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    let found = tokio::time::timeout(WAIT, async {
        loop {
            let mut chunk = [0u8; 16 * 1024];
            let n = socket.read(&mut chunk).await.unwrap();
            assert!(n > 0, "SRS closed the play before a key frame");
            bytes.extend_from_slice(&chunk[..n]);
            if has_key_frame(&bytes) {
                return started.elapsed();
            }
        }
    })
    .await
    .expect("a key frame from SRS");
    (found, socket)
}

/// Whether `bytes` (an HTTP-FLV response, perhaps chunked) holds an FLV video tag with a
/// key frame's H.264 NALUs: tag type 9, stream id 0, then 0x17 (key frame, AVC) and AVC
/// packet type 1 (not the sequence header). A scan, so chunk boundaries do not matter.
fn has_key_frame(bytes: &[u8]) -> bool {
    bytes
        .windows(13)
        .any(|w| w[0] == 9 && w[8..11] == [0, 0, 0] && w[11] == 0x17 && w[12] == 1)
}

#[tokio::test]
async fn srs_players_pull_the_device_once_and_the_last_one_stops_it() {
    let mosquitto = Mosquitto::start().await;
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let gateway = gateway_for_srs(
        &mosquitto,
        ports,
        &[
            ("JTGW__CONTROL__STOP_LINGER", "3s"),
            ("JTGW__CONTROL__LEASE", "6s"),
        ],
    )
    .await;
    let mut watch = TestClient::connect(
        mosquitto.port,
        &[
            "jt1078/device/#",
            "jt1078/gateway/#",
            "jt1078/status/gateway/#",
        ],
    )
    .await;
    wait_online(&mut watch).await;
    let device = start_device(&mosquitto.url(), "13800138000");
    watch
        .expect(
            "device heartbeat",
            WAIT,
            topic_is("jt1078/gateway/13800138000/HEART"),
        )
        .await;
    let srs = Srs::start_with_hooks(ports, gateway.addrs.http.port()).await;
    let url = srs.flv_url("live", "13800138000_1");

    // the first player asks before anything streams
    let (first_frame, player_a) = first_key_frame(&url).await;
    let first = watch
        .expect(
            "RTMP request",
            WAIT,
            topic_is("jt1078/gateway/13800138000/RTMP"),
        )
        .await
        .json();
    let pull = watch
        .expect(
            "REQPULL",
            WAIT,
            topic_is("jt1078/device/13800138000/REQPULL"),
        )
        .await
        .json();
    assert_eq!(pull["channel"], 1);
    eprintln!("SRS player request to first key frame: {first_frame:?}");

    // two more players join, decode the picture, and leave
    let (b, c) = tokio::join!(probe_frames(&url, 25), probe_frames(&url, 25));
    for frames in [&b, &c] {
        assert_eq!(frames.len(), 25, "{}", srs.log());
        assert!(frames.iter().all(|f| f["width"].as_u64().unwrap() > 0));
        assert_eq!(
            frames[0]["key_frame"], 1,
            "starts on a key frame (GOP cache)"
        );
    }
    // the first player stays past half the lease: the bridge asks SRS and renews it
    let renewed = watch
        .expect("renewal", WAIT, |r| {
            r.topic == "jt1078/gateway/13800138000/RTMP"
                && r.json()["client_id"] == first["client_id"]
                && r.json()["seqid"] != first["seqid"]
        })
        .await;
    drop(player_a);
    watch
        .expect("STOP", WAIT, topic_is("jt1078/device/13800138000/STOP"))
        .await;

    let seen = watch.seen.clone();
    let count = |topic: &str| seen.iter().filter(|r| r.topic == topic).count();
    assert_eq!(
        count("jt1078/device/13800138000/REQPULL"),
        0,
        "one REQPULL in all (taken above)"
    );
    let requests: std::collections::BTreeSet<String> = seen
        .iter()
        .chain([&renewed])
        .map(|r| (r.topic.clone(), r.json()))
        .chain([("jt1078/gateway/13800138000/RTMP".to_owned(), first.clone())])
        .filter(|(topic, _)| topic == "jt1078/gateway/13800138000/RTMP")
        .map(|(_, body)| body["client_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(requests.len(), 3, "three SRS players: {requests:?}");
    assert_eq!(
        count("jt1078/gateway/13800138000/UNSUBSCRIBE"),
        3,
        "each player left once"
    );
    device.cancel();
    gateway.stop().await;
}

/// An on_stop SRS never sent: at half the lease the bridge asks SRS's API, which does not
/// know the client, and the bridge sends its UNSUBSCRIBE.
#[tokio::test]
async fn a_lost_on_stop_is_found_through_the_srs_api() {
    let mosquitto = Mosquitto::start().await;
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let gateway = gateway_for_srs(&mosquitto, ports, &[("JTGW__CONTROL__LEASE", "4s")]).await;
    let mut watch = TestClient::connect(mosquitto.port, &["jt1078/gateway/#"]).await;
    let srs = Srs::start_with_hooks(ports, gateway.addrs.http.port()).await;
    // a play SRS never had (so it never sends its on_stop)
    let body = hook("on_play-httpflv", "live", "13800138000_1", "ghost");
    // (the bridge's MQTT connection may still be coming up: the request waits for it)
    let answer = http_post(gateway.addrs.http, "/api/v1/sessions", &body).await;
    assert_eq!(answer, (200, "0".to_owned()));
    watch
        .expect("RTMP", WAIT, |r| {
            r.topic == "jt1078/gateway/13800138000/RTMP" && r.json()["client_id"] == "srs-ghost"
        })
        .await;
    let leave = watch
        .expect("UNSUBSCRIBE after the API check", WAIT, |r| {
            r.topic == "jt1078/gateway/13800138000/UNSUBSCRIBE"
                && r.json()["client_id"] == "srs-ghost"
        })
        .await;
    assert_eq!(leave.json()["channel"], 1, "{}", srs.log());
    gateway.stop().await;
}

/// The same through SRS's `playback` app: the 0x9201 window rides in the play URL's query,
/// the device gets one PLAYBACK, the picture decodes, and the playback is ended after the
/// player leaves and the linger.
#[tokio::test]
async fn an_srs_playback_player_starts_the_device_playback() {
    let mosquitto = Mosquitto::start().await;
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let gateway = gateway_for_srs(&mosquitto, ports, &[("JTGW__CONTROL__STOP_LINGER", "2s")]).await;
    let mut watch = TestClient::connect(
        mosquitto.port,
        &[
            "jt1078/device/#",
            "jt1078/gateway/#",
            "jt1078/status/gateway/#",
        ],
    )
    .await;
    wait_online(&mut watch).await;
    let device = start_device(&mosquitto.url(), "13800138000");
    watch
        .expect(
            "device heartbeat",
            WAIT,
            topic_is("jt1078/gateway/13800138000/HEART"),
        )
        .await;
    let srs = Srs::start_with_hooks(ports, gateway.addrs.http.port()).await;
    let url = format!(
        "{}?start_time=261122080000&end_time=261122081000",
        srs.flv_url("playback", "13800138000_1")
    );
    let frames = probe_frames(&url, 25).await;
    assert_eq!(frames.len(), 25, "{}", srs.log());
    assert_eq!(frames[0]["key_frame"], 1);
    let playback = watch
        .expect(
            "PLAYBACK",
            WAIT,
            topic_is("jt1078/device/13800138000/PLAYBACK"),
        )
        .await
        .json();
    assert_eq!(playback["start_time"], "261122080000");
    assert_eq!(playback["end_time"], "261122081000");
    assert_eq!(playback["tcp_port"], gateway.addrs.playback.port());
    let ended = watch
        .expect("the playback ended", WAIT, |r| {
            r.topic == "jt1078/device/13800138000/PLAYBACK_CTRL" && r.json()["control"] == 2
                || r.topic == "jt1078/device/13800138000/STOP"
        })
        .await;
    assert!(
        !watch.seen.iter().any(|r| r.topic.ends_with("/REQPULL")),
        "a playback player never asks for live ({})",
        ended.topic
    );
    device.cancel();
    gateway.stop().await;
}

/// `http.play_secret` guards SRS too: its on_play hook carries the player's query
/// (`param`), which the bridge checks like the gateway's own plays. Unsigned, forged and
/// expired players are refused by SRS; a signed one is allowed and starts the pull.
#[tokio::test]
async fn srs_refuses_players_whose_url_is_not_signed() {
    const SECRET: &[u8] = b"srs-play-s3cret";
    let mosquitto = Mosquitto::start().await;
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let gateway = gateway_for_srs(
        &mosquitto,
        ports,
        &[("JTGW__HTTP__PLAY_SECRET", "srs-play-s3cret")],
    )
    .await;
    let mut watch = TestClient::connect(mosquitto.port, &["jt1078/gateway/#"]).await;
    let srs = Srs::start_with_hooks(ports, gateway.addrs.http.port()).await;
    let url = srs.flv_url("live", "13800138000_1");
    let signer = jt1078_gateway::auth::PlaySigner::new(SECRET);
    let now = jt1078_gateway::auth::unix_now();
    let bad = [
        url.clone(),
        jt1078_gateway::auth::PlaySigner::new(b"guess").sign_url(&url, now + 60),
        signer.sign_url(&url, now - 1),
        signer
            .sign_url(&srs.flv_url("live", "13800138000_2"), now + 60)
            .replace("_2.flv", "_1.flv"),
    ];
    for (i, player) in bad.iter().enumerate() {
        let answer = srs_play_answer(player).await;
        // SRS closes a refused player's connection without an answer
        assert!(
            !answer.windows(3).any(|w| w == b"FLV") && !has_key_frame(&answer),
            "player {i} refused: {:?}",
            String::from_utf8_lossy(&answer)
        );
        let status = bridge_status(&gateway).await;
        assert_eq!(status["hooks"]["refused"], i + 1, "{status}");
    }
    assert!(
        !watch.seen.iter().any(|r| r.topic.ends_with("/RTMP")),
        "no pull for a refused player"
    );
    // signed (over the .flv path, as sign-url and the gateway's replies do): allowed
    let player = tokio::spawn(srs_play_answer(signer.sign_url(&url, now + 60)));
    let request = watch
        .expect(
            "the bridge asks for the stream",
            WAIT,
            topic_is("jt1078/gateway/13800138000/RTMP"),
        )
        .await
        .json();
    assert_eq!(request["channel"], 1);
    assert_eq!(bridge_status(&gateway).await["hooks"]["allowed"], 1);
    player.abort();
    gateway.stop().await;
}

/// What SRS answers a player of `url` until it closes (or for `WAIT` at most: an allowed
/// player waits for a stream that never comes).
async fn srs_play_answer(url: impl AsRef<str>) -> Vec<u8> {
    let url = url.as_ref();
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let mut socket = TcpStream::connect(authority).await.unwrap();
    let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(WAIT, socket.read_to_end(&mut bytes)).await;
    bytes
}

/// `GET /api/bridge` of the gateway.
async fn bridge_status(gateway: &Gateway) -> serde_json::Value {
    let (status, body) = http_get(gateway.addrs.http, "/api/bridge").await;
    assert_eq!(status, 200);
    serde_json::from_slice(&body).unwrap()
}
