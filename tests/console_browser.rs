//! The operator console (`GET /console/`) in headless Chromium (issue 25): it lists the
//! streams two simulated devices push; its SUBSCRIBE button asks a cold MQTT-driven
//! device for its camera over the broker's WebSocket, and the page shows the reply, the
//! REQPULL and the stream (listed under 2 s after it went live), the gateway's and the
//! devices' retained status and heartbeats; a click plays a stream
//! over HTTP-FLV (mpegts.js: frames and audio decoded) and the toggle over WHEP (frames
//! decoded, audio received). The screenshot it takes goes to `target/console.png`; with
//! `JT1078_UPDATE_SCREENSHOT=1` also to `docs/img/console.png` (the README's).

#![expect(
    clippy::unwrap_used,
    reason = "helpers of tests: a failure is a test failure"
)]

mod common;

use std::time::Duration;

use common::browser::Browser;
use common::control::*;
use common::mqtt::TestClient;
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_lists_requests_and_plays_streams() {
    let url = embedded_url();
    let ws_port = free_port();
    let ws_listen = format!("127.0.0.1:{ws_port}");
    // recordings (the RECORD button) into a folder of the test's, cut every second or so
    let recordings = TempDir::new("console-records");
    let store = recordings.0.to_str().unwrap().to_owned();
    let gateway = gateway_on(
        &url,
        BrokerAt::Embedded,
        &[
            ("JTGW__MQTT__EMBEDDED_WS_LISTEN", ws_listen.as_str()),
            ("JTGW__RECORD__STORE", store.as_str()),
            ("JTGW__RECORD__SEGMENT", "1s"),
        ],
    )
    .await;
    let mut backend = TestClient::connect(port_of(&url), &["jt1078/gateway/+/HEART"]).await;
    let pushed = ["13900000011", "13900000012"];
    let pushing: Vec<_> = pushed
        .iter()
        .map(|device| push_on_its_own(gateway.addrs.live, device))
        .collect();
    for device in pushed {
        gateway
            .wait_for_stream("a pushed stream with audio and video", |s| {
                s.device == device && s.video_codec.is_some() && s.audio_codec.is_some()
            })
            .await;
    }
    // the cold device listens for its REQPULL once it heartbeats
    let cold = start_device(&url, "13800138000");
    backend
        .expect(
            "the cold device's heartbeat",
            WAIT,
            is("jt1078/gateway/13800138000/HEART"),
        )
        .await;
    let page = format!(
        "http://{}/console/?mqtt=ws://127.0.0.1:{ws_port}/mqtt",
        gateway.addrs.http
    );
    // into target/ (a test run leaves the tree clean); the README's copy in docs/img/ is
    // refreshed with JT1078_UPDATE_SCREENSHOT=1
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let screenshot = root.join("target/console.png");
    std::fs::create_dir_all(screenshot.parent().unwrap()).unwrap();
    let shot = screenshot.clone();
    let params = json!({ "pushed": pushed, "cold": "13800138000", "play": "13900000011" });
    let result = tokio::task::spawn_blocking(move || {
        Browser::shared()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .run_script(
                &page,
                "console_check.js",
                params,
                Some(&shot),
                Duration::from_secs(60),
            )
    })
    .await
    .unwrap();
    println!("{result:#}");
    assert_eq!(result["ok"], true, "{result:#}");
    assert!(result["rows"].as_u64().unwrap() >= 2, "{result:#}");
    assert!(
        result["pushed_listed_ms"].as_u64().unwrap() < 2000,
        "the live streams were listed {} ms after the page opened",
        result["pushed_listed_ms"]
    );
    let uptime = result["cold_first_listed_uptime_s"].as_f64().unwrap();
    assert!(
        uptime < 2.0,
        "the pulled stream was listed {uptime} s after it went live"
    );
    let log = result["log"].to_string();
    assert!(log.contains("/device/13800138000/REQPULL"), "{log}");
    assert!(log.contains("\\\"mode\\\":\\\"OK\\\""), "{log}");
    let devices = result["devices"].to_string();
    assert!(devices.contains("gateway gw1: online"), "{devices}");
    assert!(devices.contains("13900000011: live: 1/live"), "{devices}");
    assert!(devices.contains("13800138000: live: 1/live"), "{devices}");
    let flv = &result["flv"];
    assert!(flv["frames"].as_u64().unwrap() >= 20, "{flv}");
    assert!(flv["audio_bytes"].as_u64().unwrap() > 0, "{flv}");
    assert_eq!(flv["muted"], false, "{flv}");
    let recording = &result["recording"];
    assert!(recording["frames"].as_u64().unwrap() >= 10, "{recording}");
    assert!(
        result["record_playlist"]
            .as_str()
            .unwrap()
            .ends_with("13900000011_1.m3u8"),
        "{result}"
    );
    let whep = &result["whep"];
    assert!(whep["frames"].as_u64().unwrap() >= 20, "{whep}");
    assert!(whep["audio_packets"].as_u64().unwrap() > 0, "{whep}");
    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
    if std::env::var_os("JT1078_UPDATE_SCREENSHOT").is_some() {
        std::fs::write(root.join("docs/img/console.png"), &png).unwrap();
    }
    for device in pushing {
        device.cancel();
    }
    cold.cancel();
    gateway.stop().await;
}

/// Reads `/api/events` until an event lists `device`; that stream as the event had it.
async fn wait_listed(
    reader: &mut tokio::io::BufReader<tokio::net::TcpStream>,
    device: &str,
) -> serde_json::Value {
    use tokio::io::AsyncBufReadExt;
    let mut event = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
            .await
            .unwrap_or_else(|_| panic!("no event within 5 s (one comes a second at least)"))
            .unwrap();
        assert!(n > 0, "the event stream ended");
        let line = line.trim_end();
        if let Some(data) = line.strip_prefix("data:") {
            event.push_str(data.trim_start());
        } else if line.is_empty() && !event.is_empty() {
            let streams: serde_json::Value = serde_json::from_str(&event).unwrap();
            if let Some(s) = streams
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["device"] == device)
            {
                return s.clone();
            }
            event.clear();
        }
    }
}

#[tokio::test]
async fn the_event_stream_lists_a_stream_as_it_goes_live() {
    use tokio::io::AsyncWriteExt;
    let gateway = Gateway::start(&[]).await;
    let mut socket = tokio::net::TcpStream::connect(gateway.addrs.http)
        .await
        .unwrap();
    socket
        .write_all(b"GET /api/events HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut reader = tokio::io::BufReader::new(socket);
    // the device starts once the page (here: this reader) follows the events
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        use tokio::io::AsyncBufReadExt;
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        head.push_str(&line);
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    let device = push_on_its_own(gateway.addrs.live, "13900000021");
    let listed = wait_listed(&mut reader, "13900000021").await;
    // listed at once: the snapshot that first carries it was taken within 2 s of its start
    let uptime = listed["uptime_secs"].as_f64().unwrap();
    assert!(
        uptime < 2.0,
        "listed {uptime} s after it went live: {listed}"
    );
    assert_eq!(listed["viewers_by_output"], json!({}), "{listed}");
    device.cancel();
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_credential_the_console_logs_in_as_an_mqtt_viewer() {
    let tmp = TempDir::new("console-login");
    let file = tmp.path("gateway.toml");
    let hash = jt1078_gateway::cli::hash_password("wall-pw").unwrap();
    std::fs::write(
        &file,
        format!("[[mqtt.users]]\nname = \"wall\"\npassword_hash = {hash:?}\nrole = \"viewer\"\n"),
    )
    .unwrap();
    // an API token: the page's first requests are refused, so it asks for a login
    let gateway = Gateway::start_from(Some(&file), &[("JTGW__HTTP__API_TOKEN", "t0ken")]).await;
    let device = push_on_its_own(gateway.addrs.live, "13900000021");
    gateway
        .wait_for_stream("the pushed stream", |s| s.device == "13900000021")
        .await;
    let page = format!("http://{}/console/?mqtt=off", gateway.addrs.http);
    let params = json!({ "user": "wall", "password": "wall-pw", "device": "13900000021" });
    let result = tokio::task::spawn_blocking(move || {
        Browser::shared()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .run_script(
                &page,
                "console_login_check.js",
                params,
                None,
                Duration::from_secs(60),
            )
    })
    .await
    .unwrap();
    assert_eq!(result["ok"], true, "{result:#}");
    assert_eq!(
        result["rows_before"], 0,
        "nothing listed before the login: {result:#}"
    );
    assert_eq!(result["login_hidden"], true, "{result:#}");
    device.cancel();
    gateway.stop().await;
}
