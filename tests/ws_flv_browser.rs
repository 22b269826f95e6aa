//! A wall of nine players in one Chromium page (issue 29): over `ws://` (WS-FLV) every
//! mpegts.js player presents video and decodes AAC audio; the same page over `http://`
//! (HTTP-FLV) runs into the browser's six connections per host, and some players present
//! nothing. Nine devices replay the bundled sample in real time, looping.

#![expect(
    clippy::unwrap_used,
    reason = "helpers of tests: a failure is a test failure"
)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const PLAYERS: u64 = 9;
const FIRST_DEVICE: u64 = 13_800_138_000;
/// How long the page plays before it reads its players.
const SECONDS: u64 = 10;

/// Each player's report: (presented frames, audio codec, audio bytes decoded).
fn players(result: &Value) -> Vec<Value> {
    assert!(result["error"].is_null(), "the page failed: {result}");
    result["players"]
        .as_array()
        .unwrap_or_else(|| panic!("no players in {result}"))
        .clone()
}

async fn wall(scheme: &str, http: std::net::SocketAddr) -> Vec<Value> {
    let urls: Vec<String> = (0..PLAYERS)
        .map(|i| format!("{scheme}://{http}/live/{}_1.flv", FIRST_DEVICE + i))
        .collect();
    wall_of(urls).await
}

async fn wall_of(urls: Vec<String>) -> Vec<Value> {
    let params = json!({ "urls": urls, "seconds": SECONDS });
    let result =
        common::browser::play("wall.html", params, Duration::from_secs(SECONDS + 30)).await;
    players(&result.raw)
}

/// Nine devices replaying the sample in real time, looping, until `stop`; returns once all
/// nine streams have video.
async fn nine_devices(
    gateway: &Gateway,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<anyhow::Result<jt1078_gateway::simulate::SimulateReport>> {
    let options = jt1078_gateway::simulate::SimulateOptions {
        packets: std::sync::Arc::new(
            jt1078_gateway::simulate::load_file(&testdata("h264-g711a-156987000796-ch1.jt1078"))
                .unwrap(),
        ),
        server: gateway.addrs.live,
        device: Some(jt1078_gateway::media::DeviceId::parse(&FIRST_DEVICE.to_string()).unwrap()),
        channel: Some(1),
        devices: PLAYERS as usize,
        pace: jt1078_gateway::simulate::Pace::Realtime,
        looping: true,
    };
    let devices = tokio::spawn(jt1078_gateway::simulate::run(options, stop.clone()));
    let live = |n: usize| {
        let hub = gateway.hub.clone();
        move |_: &jt1078_gateway::hub::StreamSnapshot| {
            hub.list().iter().filter(|s| s.video_frames > 0).count() >= n
        }
    };
    gateway
        .wait_for_stream("nine streams with video", live(PLAYERS as usize))
        .await;
    devices
}

/// Every player of a wall presented at least 150 frames and decoded AAC audio.
fn assert_all_play(players: &[Value], what: &str) {
    assert_eq!(players.len() as u64, PLAYERS);
    for (i, player) in players.iter().enumerate() {
        let presented = player["presented"].as_u64().unwrap_or(0);
        assert!(
            presented >= 150,
            "{what} player {i} presented {presented} frames in {SECONDS} s: {player}"
        );
        assert!(
            player["audio_codec"]
                .as_str()
                .is_some_and(|c| c.starts_with("mp4a.40")),
            "{what} player {i} has AAC audio: {player}"
        );
        assert!(
            player["audio_decoded_bytes"].as_u64().unwrap_or(0) > 0,
            "{what} player {i} decoded audio: {player}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nine_ws_flv_players_in_one_page_all_play_where_http_flv_stops_at_six() {
    let gateway = Gateway::start(&[]).await;
    let stop = CancellationToken::new();
    let devices = nine_devices(&gateway, &stop).await;

    let ws = wall("ws", gateway.addrs.http).await;
    assert_all_play(&ws, "ws://");

    let http = wall("http", gateway.addrs.http).await;
    let frames: Vec<u64> = http
        .iter()
        .map(|p| p["presented"].as_u64().unwrap_or(0))
        .collect();
    eprintln!(
        "over http:// each player presented {frames:?}; over ws:// {:?}",
        ws.iter()
            .map(|p| p["presented"].as_u64().unwrap_or(0))
            .collect::<Vec<_>>()
    );
    assert!(
        frames.iter().filter(|&&f| f >= 150).count() <= 6,
        "at most six HTTP/1.1 connections per host play: {frames:?}"
    );
    assert!(
        frames.contains(&0),
        "a player beyond the sixth connection presents nothing: {frames:?}"
    );

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), devices).await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_nine_http_flv_players_share_one_http2_connection_and_wss_plays_too() {
    let tmp = TempDir::new("wallh2");
    let (cert, key) = (tmp.path("cert.pem"), tmp.path("key.pem"));
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
    )
    .await;
    let gateway = Gateway::start(&[
        ("JTGW__HTTP__TLS_CERT", cert.to_str().unwrap()),
        ("JTGW__HTTP__TLS_KEY", key.to_str().unwrap()),
    ])
    .await;
    let stop = CancellationToken::new();
    let devices = nine_devices(&gateway, &stop).await;
    // the browser was told to accept the throwaway certificate (tests/browser/driver.py)
    let https = wall("https", gateway.addrs.http).await;
    assert_all_play(&https, "https:// (HTTP/2)");
    let wss = wall("wss", gateway.addrs.http).await;
    assert_all_play(&wss, "wss://");
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), devices).await;
    gateway.stop().await;
}
