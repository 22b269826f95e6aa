//! SRS hooks into MQTT: the bodies a real SRS 6 sent (`tests/fixtures/srs-hooks/`)
//! replayed at the gateway, and what a subscriber on a real mosquitto sees: the requests
//! the bridge publishes, and the control plane's device commands they cause.

#![expect(
    clippy::unwrap_used,
    reason = "helpers of tests: a failure is a test failure"
)]

mod common;

use common::bridge::{hook, http_post};
use common::control::*;
use common::mqtt::{Mosquitto, Received, TestClient};
use common::*;

const SESSIONS: &str = "/api/v1/sessions";
const STREAMS: &str = "/api/v1/streams";

fn on(topic: &str, client: &str) -> impl Fn(&Received) -> bool {
    let (topic, client) = (topic.to_owned(), client.to_owned());
    move |r| r.topic == topic && r.json()["client_id"] == client.as_str()
}

/// A subscriber on the requests the bridge makes; waits until the bridge is connected.
async fn watcher(mosquitto: &Mosquitto, gateway: &Gateway) -> TestClient {
    let mut client = TestClient::connect(
        mosquitto.port,
        &[
            "jt1078/gateway/#",
            "jt1078/device/#",
            "jt1078/status/gateway/#",
        ],
    )
    .await;
    wait_online(&mut client).await;
    bridge_status_when(gateway, |s| s["mqtt"]["connected"] == true).await;
    client
}

/// `GET /api/bridge`, polled until `pred` holds (the bridge's tasks update it as they go).
async fn bridge_status_when(
    gateway: &Gateway,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, body) = http_get(gateway.addrs.http, "/api/bridge").await;
        let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if pred(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bridge status: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn on_play_asks_for_the_push_and_on_stop_leaves_once() {
    let mosquitto = Mosquitto::start().await;
    let gateway = gateway_with_broker(&mosquitto.url(), &[]).await;
    let mut watch = watcher(&mosquitto, &gateway).await;
    let http = gateway.addrs.http;

    let body = hook("on_play-httpflv", "live", "13800138000_1", "32v26z09");
    assert_eq!(
        http_post(http, SESSIONS, &body).await,
        (200, "0".to_owned())
    );
    let rtmp = watch
        .expect(
            "RTMP request",
            WAIT,
            on("jt1078/gateway/13800138000/RTMP", "srs-32v26z09"),
        )
        .await
        .json();
    assert_eq!(rtmp["channel"], 1);
    assert_eq!(rtmp["kind"], "live");
    assert_eq!(rtmp["url"], "rtmp://127.0.0.1:1935/live/13800138000_1");
    assert!(rtmp["seqid"].as_str().unwrap().starts_with("srs-32v26z09-"));

    // a WebRTC viewer of the seed's 14-digit name: SIM 064959409438, channel 3
    let body = hook("on_play-rtc", "live", "06495940943803", "2sv81122");
    assert_eq!(http_post(http, SESSIONS, &body).await.0, 200);
    let rtmp = watch
        .expect(
            "RTMP request",
            WAIT,
            on("jt1078/gateway/64959409438/RTMP", "srs-2sv81122"),
        )
        .await
        .json();
    assert_eq!(rtmp["channel"], 3);

    let stop = hook("on_stop-httpflv", "live", "13800138000_1", "32v26z09");
    assert_eq!(
        http_post(http, SESSIONS, &stop).await,
        (200, "0".to_owned())
    );
    let leave = watch
        .expect(
            "UNSUBSCRIBE",
            WAIT,
            on("jt1078/gateway/13800138000/UNSUBSCRIBE", "srs-32v26z09"),
        )
        .await
        .json();
    assert_eq!(leave["channel"], 1);
    assert_eq!(leave["kind"], "live");

    // SRS sends on_stop twice, and one for a client it never played: answered, no message
    assert_eq!(
        http_post(http, SESSIONS, &stop).await,
        (200, "0".to_owned())
    );
    let never = hook("on_stop-httpflv", "live", "13800138000_1", "nobody");
    assert_eq!(
        http_post(http, SESSIONS, &never).await,
        (200, "0".to_owned())
    );
    // hooks are handled in order: a marker after them proves they published nothing
    let marker = hook("on_stop-rtc", "live", "06495940943803", "2sv81122");
    assert_eq!(http_post(http, SESSIONS, &marker).await.0, 200);
    watch
        .expect(
            "marker",
            WAIT,
            on("jt1078/gateway/64959409438/UNSUBSCRIBE", "srs-2sv81122"),
        )
        .await;
    let unsubscribes = watch
        .seen
        .iter()
        .filter(|r| r.topic.ends_with("/UNSUBSCRIBE"))
        .count();
    assert_eq!(
        unsubscribes, 0,
        "no UNSUBSCRIBE for a duplicate or unknown on_stop"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn unknown_names_and_bad_tokens_are_refused() {
    let mosquitto = Mosquitto::start().await;
    let gateway =
        gateway_with_broker(&mosquitto.url(), &[("JTGW__BRIDGE__HOOK_TOKEN", "s3cret")]).await;
    let mut watch = watcher(&mosquitto, &gateway).await;
    let http = gateway.addrs.http;
    let play = hook("on_play-httpflv", "live", "13800138000_1", "c1");

    let (status, body) = http_post(http, SESSIONS, &play).await;
    assert_eq!(status, 403, "no token: {body}");
    assert!(body.contains("token"), "{body}");
    let (status, _) = http_post(http, "/api/v1/sessions?token=wrong", &play).await;
    assert_eq!(status, 403);
    for (app, stream) in [
        ("live", "test"),
        ("live", "13800138000"),
        ("vod", "13800138000_1"),
    ] {
        let body = hook("on_play-httpflv", app, stream, "c2");
        let (status, answer) = http_post(http, "/api/v1/sessions?token=s3cret", &body).await;
        assert_eq!(status, 404, "{app}/{stream}: {answer}");
        assert!(answer.contains(stream) || answer.contains(app), "{answer}");
    }
    let (status, _) = http_post(http, "/api/v1/sessions?token=s3cret", "{not json").await;
    assert_eq!(status, 400);
    // none of them published anything: the first allowed play is the first message
    let (status, body) = http_post(http, "/api/v1/sessions?token=s3cret", &play).await;
    assert_eq!((status, body.as_str()), (200, "0"));
    watch
        .expect(
            "RTMP request",
            WAIT,
            on("jt1078/gateway/13800138000/RTMP", "srs-c1"),
        )
        .await;
    assert!(
        !watch
            .seen
            .iter()
            .any(|r| r.topic.starts_with("jt1078/gateway/")),
        "refused hooks published nothing: {:?}",
        watch.seen.iter().map(|r| &r.topic).collect::<Vec<_>>()
    );
    let (_, status) = http_get(http, "/api/bridge").await;
    let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
    assert_eq!(status["hooks"]["refused"], 6, "{status}");
    assert_eq!(status["hooks"]["srs_clients"], 1, "{status}");
    gateway.stop().await;
}

#[tokio::test]
async fn publish_hooks_allow_device_streams_and_restart_a_lost_push() {
    let mosquitto = Mosquitto::start().await;
    let gateway = gateway_with_broker(&mosquitto.url(), &[]).await;
    let mut watch = watcher(&mosquitto, &gateway).await;
    let http = gateway.addrs.http;

    let ours = hook("on_publish-rtmp", "live", "13800138000_2", "p1");
    assert_eq!(http_post(http, STREAMS, &ours).await, (200, "0".to_owned()));
    let theirs = hook("on_publish-rtc", "live", "whiptest", "p2");
    assert_eq!(http_post(http, STREAMS, &theirs).await.0, 404);

    // a viewer of a playback, with its 0x9201 window in the play URL's query
    let mut play: serde_json::Value =
        serde_json::from_str(&hook("on_play-httpflv", "playback", "13800138000_2", "v1")).unwrap();
    play["param"] = "?start_time=261122080000&end_time=261122081000&speed=1".into();
    assert_eq!(http_post(http, SESSIONS, &play.to_string()).await.0, 200);
    let first = watch
        .expect(
            "RTMP request",
            WAIT,
            on("jt1078/gateway/13800138000/RTMP", "srs-v1"),
        )
        .await
        .json();
    assert_eq!(first["kind"], "playback");
    assert_eq!(first["start_time"], "261122080000");
    assert_eq!(first["speed"], 1);
    assert_eq!(first["url"], "rtmp://127.0.0.1:1935/playback/13800138000_2");

    // the push to SRS ends while the viewer still watches: the bridge asks again
    let gone = hook("on_unpublish-rtmp", "playback", "13800138000_2", "p1");
    assert_eq!(http_post(http, STREAMS, &gone).await, (200, "0".to_owned()));
    let again = watch
        .expect(
            "RTMP request again",
            WAIT,
            on("jt1078/gateway/13800138000/RTMP", "srs-v1"),
        )
        .await
        .json();
    assert_eq!(again["start_time"], "261122080000");
    assert_ne!(again["seqid"], first["seqid"]);

    // after the viewer left, an unpublish asks for nothing
    let stop = hook("on_stop-httpflv", "playback", "13800138000_2", "v1");
    assert_eq!(http_post(http, SESSIONS, &stop).await.0, 200);
    assert_eq!(http_post(http, STREAMS, &gone).await.0, 200);
    let marker = hook("on_play-httpflv", "live", "13800138000_9", "marker");
    assert_eq!(http_post(http, SESSIONS, &marker).await.0, 200);
    watch
        .expect(
            "marker",
            WAIT,
            on("jt1078/gateway/13800138000/RTMP", "srs-marker"),
        )
        .await;
    let requests: Vec<_> = watch
        .seen
        .iter()
        .filter(|r| r.topic == "jt1078/gateway/13800138000/RTMP")
        .collect();
    assert!(
        requests.is_empty(),
        "no push asked for nobody: {requests:?}"
    );
    gateway.stop().await;
}

/// Without a push URL, SRS clients are plain subscribers: many players make one REQPULL
/// and, after the last leaves and the linger, one STOP, seen on the device's topic.
#[tokio::test]
async fn many_players_make_one_reqpull_and_one_stop() {
    let mosquitto = Mosquitto::start().await;
    let gateway = gateway_with_broker(
        &mosquitto.url(),
        &[
            ("JTGW__BRIDGE__PUSH_URL", ""),
            ("JTGW__CONTROL__STOP_LINGER", "1s"),
        ],
    )
    .await;
    let mut watch = watcher(&mosquitto, &gateway).await;
    let device = start_device(&mosquitto.url(), "13800138000");
    watch
        .expect(
            "device heartbeat",
            WAIT,
            is("jt1078/gateway/13800138000/HEART"),
        )
        .await;
    let http = gateway.addrs.http;
    for client in ["a", "b", "c"] {
        let body = hook("on_play-httpflv", "live", "13800138000_1", client);
        assert_eq!(http_post(http, SESSIONS, &body).await.0, 200);
        let client_id = format!("srs-{client}");
        watch
            .expect(
                "SUBSCRIBE",
                WAIT,
                on("jt1078/gateway/13800138000/SUBSCRIBE", &client_id),
            )
            .await;
    }
    watch
        .expect("REQPULL", WAIT, is("jt1078/device/13800138000/REQPULL"))
        .await;
    gateway
        .wait_for_stream("the device's stream", |s| s.video_frames > 0)
        .await;
    // the seed's manual endpoint joins too
    let (status, body) = http_post(http, "/web_on_play", r#"{"device_id":"13800138000_1"}"#).await;
    assert_eq!((status, body.as_str()), (200, r#"{"code":0}"#));
    for client in ["a", "b", "c", "c"] {
        let body = hook("on_stop-httpflv", "live", "13800138000_1", client);
        assert_eq!(http_post(http, SESSIONS, &body).await.0, 200);
    }
    // web_on_play has no stop: it leaves by its lease; until then the stream stays wanted
    let mut after = watch.drain_for(std::time::Duration::from_secs(3)).await;
    assert!(
        !after
            .iter()
            .any(|r| r.topic == "jt1078/device/13800138000/STOP"),
        "no STOP while web_on_play's subscription holds"
    );
    let web = r#"{"seqid":"w","client_id":"srs-web-13800138000_1","channel":1}"#;
    watch
        .publish("jt1078/gateway/13800138000/UNSUBSCRIBE", web)
        .await;
    watch
        .expect("STOP", WAIT, is("jt1078/device/13800138000/STOP"))
        .await;
    after = watch.seen.clone();
    let count = |topic: &str| after.iter().filter(|r| r.topic == topic).count();
    assert_eq!(
        count("jt1078/device/13800138000/REQPULL"),
        0,
        "one REQPULL (taken above)"
    );
    assert_eq!(
        count("jt1078/gateway/13800138000/UNSUBSCRIBE"),
        4,
        "3 players + the backend"
    );
    device.cancel();
    gateway.stop().await;
}

#[tokio::test]
async fn plays_follow_fail_open_while_the_broker_is_away() {
    let nowhere = format!("mqtt://127.0.0.1:{}", free_port());
    let play = hook("on_play-httpflv", "live", "13800138000_1", "c1");
    let open = gateway_with_broker(&nowhere, &[]).await;
    let (status, body) = http_post(open.addrs.http, SESSIONS, &play).await;
    assert_eq!((status, body.as_str()), (200, "0"), "fail_open allows");
    // the request waits for the broker
    let status = bridge_status_when(&open, |s| s["mqtt"]["pending"] == 1).await;
    assert_eq!(status["mqtt"]["connected"], false, "{status}");
    open.stop().await;

    let closed = gateway_with_broker(&nowhere, &[("JTGW__BRIDGE__FAIL_OPEN", "false")]).await;
    let (status, body) = http_post(closed.addrs.http, SESSIONS, &play).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("fail_open"), "{body}");
    closed.stop().await;
}
