//! WebRTC with an in-process peer (`str0m`): WHEP and MQTT signalling, the media a peer
//! gets, and the error paths (bad SDP, no H.264, too many peers, a device that never
//! connects, a peer that vanishes). What a real browser plays: `webrtc_browser.rs`.

#![expect(
    clippy::unwrap_used,
    reason = "helpers of tests: a failure is a test failure"
)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::control::*;
use common::mqtt::TestClient;
use common::webrtc::{
    Coturn, Offers, TURN_PASSWORD, TURN_USER, TestPeer, webrtc_api, webrtc_api_when,
};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant as TokioInstant;

/// An HTTP/1.0 request with a body: status, head and body.
async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String, String) {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: test\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn whep_post(addr: SocketAddr, path: &str, sdp: &str) -> (u16, String, String) {
    http_request(addr, "POST", path, "Content-Type: application/sdp\r\n", sdp).await
}

/// `/api/streams` entry of the stream named `device`.
async fn stream_json(addr: SocketAddr, device: &str) -> Option<serde_json::Value> {
    let (_, body) = http_get(addr, "/api/streams").await;
    let list: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    list.into_iter().find(|s| s["device"] == device)
}

/// Waits (on the hub's events) until the stream of `device` has `n` WebRTC viewers, then
/// checks that `/api/streams` says so too.
async fn wait_webrtc_viewers(gateway: &Gateway, device: &str, n: u64) {
    gateway
        .wait_for_stream(&format!("{n} webrtc viewers"), |s| {
            s.device == device && s.viewers_of("webrtc") == n
        })
        .await;
    let api = stream_json(gateway.addrs.http, device).await.unwrap();
    assert_eq!(api["webrtc_viewers"], n, "{api}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whep_peer_gets_the_stream_from_a_key_frame_with_its_parameter_sets_and_pcma() {
    let gateway = Gateway::start(&[]).await;
    let device = push_on_its_own(gateway.addrs.live, "13800138000");
    gateway
        .wait_for_stream("the sample", |s| s.video_frames >= 30)
        .await;
    let (mut peer, offer) = TestPeer::new(Offers::H264).await;
    let (status, head, answer) =
        whep_post(gateway.addrs.http, "/whep/live/13800138000_1", &offer).await;
    assert_eq!(status, 201, "{head}\n{answer}");
    assert_eq!(header(&head, "content-type"), Some("application/sdp"));
    let location = header(&head, "location").unwrap().to_owned();
    assert!(location.starts_with("/whep/session/"), "{location}");
    assert_eq!(
        header(&head, "access-control-expose-headers"),
        Some("Location")
    );
    assert!(
        answer.contains("a=candidate:"),
        "answer carries candidates:\n{answer}"
    );
    assert!(answer.contains("a=ice-lite"), "{answer}");
    peer.accept(&answer);
    let played = peer
        .play_until(Duration::from_secs(20), |p| {
            p.video_frames >= 50 && p.audio_frames >= 50
        })
        .await;
    assert!(played, "video and audio frames: {:?}", peer.played);
    let p = &peer.played;
    assert_eq!(p.video_codec, Some(str0m::format::Codec::H264));
    assert_eq!(
        p.audio_codec,
        Some(str0m::format::Codec::PCMA),
        "G.711A passed through"
    );
    // the first frame is the cached key frame, parameter sets in front
    for nal in [7, 8, 5] {
        assert!(
            p.first_frame_nals.contains(&nal),
            "NAL {nal} in {:?}",
            p.first_frame_nals
        );
    }
    // 20 ms of A-law is 160 bytes
    assert_eq!(p.audio_bytes / p.audio_frames, 160);
    wait_webrtc_viewers(&gateway, "13800138000", 1).await;
    let (status, _, _) = http_request(gateway.addrs.http, "DELETE", &location, "", "").await;
    assert_eq!(status, 200);
    wait_webrtc_viewers(&gateway, "13800138000", 0).await;
    let (status, _, _) = http_request(gateway.addrs.http, "DELETE", &location, "", "").await;
    assert_eq!(status, 404, "a session ends once");
    device.cancel();
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_answers_cors_preflights_and_checks_its_token_and_limits() {
    let gateway = Gateway::start(&[
        ("JTGW__WEBRTC__WHEP_TOKEN", "s3cret"),
        ("JTGW__WEBRTC__MAX_PEERS", "1"),
    ])
    .await;
    let http = gateway.addrs.http;
    let (status, head, _) = http_request(
        http,
        "OPTIONS",
        "/whep/live/13800138000_1",
        "Origin: http://player.example\r\nAccess-Control-Request-Method: POST\r\n",
        "",
    )
    .await;
    assert_eq!(status, 204, "{head}");
    assert_eq!(header(&head, "access-control-allow-origin"), Some("*"));
    assert!(
        header(&head, "access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    assert!(
        header(&head, "access-control-allow-headers")
            .unwrap()
            .contains("Authorization")
    );
    let (_, offer) = TestPeer::new(Offers::H264).await;
    let (status, head, body) = whep_post(http, "/whep/live/13800138000_1", &offer).await;
    assert_eq!(status, 401, "no token: {body}");
    assert_eq!(header(&head, "www-authenticate"), Some("Bearer"));
    let with_token = "Content-Type: application/sdp\r\nAuthorization: Bearer s3cret\r\n";
    let (status, _, body) = http_request(
        http,
        "POST",
        "/whep/live/13800138000_1",
        with_token,
        "v=0 garbage",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.starts_with("bad SDP offer"), "{body}");
    let (status, _, body) =
        http_request(http, "POST", "/whep/live/nodevice_1", with_token, &offer).await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) =
        http_request(http, "POST", "/whep/vod/13800138000_1", with_token, &offer).await;
    assert_eq!(status, 404, "{body}");
    // one peer (it waits for a device that is not there), then the limit
    let (status, _, body) =
        http_request(http, "POST", "/whep/live/13800138000_1", with_token, &offer).await;
    assert_eq!(status, 201, "{body}");
    let (_, offer2) = TestPeer::new(Offers::H264).await;
    let (status, _, body) = http_request(
        http,
        "POST",
        "/whep/live/13800138000_2",
        with_token,
        &offer2,
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("too many WebRTC peers"), "{body}");
    gateway.stop().await;
}

/// A gateway on its embedded broker with `extra` settings, and a backend subscribed to
/// replies, device commands and status, once the gateway is online.
async fn gateway_and_backend(extra: &[(&str, &str)]) -> (String, Gateway, TestClient) {
    let url = embedded_url();
    let gateway = gateway_on(&url, BrokerAt::Embedded, extra).await;
    let mut backend = TestClient::connect(
        port_of(&url),
        &["jt1078/client/#", "jt1078/device/#", "jt1078/status/#"],
    )
    .await;
    wait_online(&mut backend).await;
    (url, gateway, backend)
}

/// Publishes a WEBRTC request and returns the reply (topic and JSON).
async fn webrtc_request(
    backend: &mut TestClient,
    device: &str,
    seqid: &str,
    offer: &str,
) -> (String, serde_json::Value) {
    webrtc_request_with(backend, device, seqid, offer, serde_json::json!({})).await
}

/// [`webrtc_request`] with more fields in the body.
async fn webrtc_request_with(
    backend: &mut TestClient,
    device: &str,
    seqid: &str,
    offer: &str,
    more: serde_json::Value,
) -> (String, serde_json::Value) {
    let mut body = serde_json::json!({
        "seqid": seqid,
        "channel": 1,
        "offer": {"type": "offer", "sdp": offer},
    });
    for (key, value) in more.as_object().unwrap() {
        body[key] = value.clone();
    }
    backend
        .publish(
            &format!("jt1078/gateway/{device}/WEBRTC"),
            &body.to_string(),
        )
        .await;
    let prefix = format!("jt1078/client/{seqid}/");
    let reply = backend
        .expect("a reply", WAIT, |r| r.topic.starts_with(&prefix))
        .await;
    (reply.topic.clone(), reply.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_signalling_answers_refuses_and_reports_a_device_that_never_connects() {
    let (_, gateway, mut backend) = gateway_and_backend(&[
        ("JTGW__CONTROL__PULL_TIMEOUT", "1s"),
        ("JTGW__CONTROL__PULL_ATTEMPTS", "1"),
    ])
    .await;

    let (topic, reply) = webrtc_request(&mut backend, "13800138000", "bad", "hello").await;
    assert_eq!(topic, "jt1078/client/bad/ERROR", "{reply}");
    assert_eq!(reply["code"], "bad_sdp");

    let body = r#"{"seqid":"nooffer","channel":1}"#;
    backend
        .publish("jt1078/gateway/13800138000/WEBRTC", body)
        .await;
    let reply = backend
        .expect("missing offer", WAIT, is("jt1078/client/nooffer/ERROR"))
        .await
        .json();
    assert_eq!(reply["code"], "missing_field");

    let (_, vp8) = TestPeer::new(Offers::Vp8Only).await;
    let (topic, reply) = webrtc_request(&mut backend, "13800138000", "vp8", &vp8).await;
    assert_eq!(topic, "jt1078/client/vp8/REFUSE", "{reply}");
    assert_eq!(reply["code"], "no_common_codec");
    assert!(
        reply["message"].as_str().unwrap().contains("VP8"),
        "{reply}"
    );
    // a refused offer does not make the device push
    let pulls = backend.drain_for(Duration::from_millis(300)).await;
    assert!(
        !pulls.iter().any(|r| r.topic.ends_with("/REQPULL")),
        "no REQPULL for refused offers"
    );

    let (mut peer, offer) = TestPeer::new(Offers::H264).await;
    let (topic, reply) = webrtc_request(&mut backend, "13800138000", "cold", &offer).await;
    assert_eq!(topic, "jt1078/client/cold/ANSWER", "{reply}");
    assert_eq!(reply["type"], "answer");
    assert_eq!(reply["state"], "pulling");
    assert_eq!(reply["device"], "13800138000");
    backend
        .expect("REQPULL", WAIT, is("jt1078/device/13800138000/REQPULL"))
        .await;
    peer.accept(reply["sdp"].as_str().unwrap());
    let connected = peer.play_until(WAIT, |p| p.connected).await;
    assert!(connected, "ICE and DTLS up while the device is awaited");
    let error = backend
        .expect("device_unavailable", WAIT, is("jt1078/client/cold/ERROR"))
        .await
        .json();
    assert_eq!(error["code"], "device_unavailable", "{error}");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_vanishes_stalls_nobody_and_is_released_after_the_consent_timeout() {
    let (url, gateway, mut backend) = gateway_and_backend(&[
        ("JTGW__WEBRTC__CONSENT_TIMEOUT", "3s"),
        ("JTGW__CONTROL__STOP_LINGER", "0s"),
    ])
    .await;
    let device = start_device(&url, "13800138000");
    let mut peers = Vec::new();
    for seqid in ["gone", "stays"] {
        let (mut peer, offer) = TestPeer::new(Offers::H264).await;
        let (topic, reply) = webrtc_request(&mut backend, "13800138000", seqid, &offer).await;
        assert_eq!(topic, format!("jt1078/client/{seqid}/ANSWER"), "{reply}");
        peer.accept(reply["sdp"].as_str().unwrap());
        let played = peer.play_until(WAIT, |p| p.video_frames >= 25).await;
        assert!(played, "the pulled stream plays: {:?}", peer.played);
        peers.push(peer);
    }
    let mut stays = peers.pop().unwrap();
    let gone = peers.pop().unwrap();
    // one browser vanishes (no goodbye, no more consent checks, nothing read): the other
    // keeps the full rate meanwhile (25 fps for 4 s, past the consent timeout)
    // the stream's own count of frames in, the oracle for what the other peer should get
    let frames_in = || {
        gateway
            .hub
            .list()
            .iter()
            .find(|s| s.device == "13800138000")
            .map_or(0, |s| s.video_frames)
    };
    let vanished = TokioInstant::now();
    drop(gone);
    let (before, in_before) = (stays.played.video_frames, frames_in());
    stays.play_until(Duration::from_secs(4), |_| false).await;
    let (frames, sent) = (stays.played.video_frames - before, frames_in() - in_before);
    // every frame the stream had meanwhile, but those still in flight at either end
    assert!(
        sent >= 25 && frames + 6 >= sent,
        "{frames} frames of the stream's {sent} in 4 s beside a dead peer"
    );
    wait_webrtc_viewers(&gateway, "13800138000", 1).await;
    // the last one vanishes too: its stream is released after the consent timeout
    let vanished_last = TokioInstant::now();
    drop(stays);
    backend
        .expect(
            "STOP once the peers are gone",
            WAIT,
            is("jt1078/device/13800138000/STOP"),
        )
        .await;
    let after = vanished_last.elapsed();
    assert!(
        after >= Duration::from_millis(2500),
        "released only after the 3 s consent timeout, not at once ({after:?}, first peer \
         gone {:?} ago)",
        vanished.elapsed()
    );
    device.cancel();
    gateway.stop().await;
}

/// Power of `hz` in `samples` (8 kHz), by the Goertzel recurrence.
fn power_at(samples: &[f64], hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / 8000.0;
    let (mut s1, mut s2) = (0.0, 0.0);
    for x in samples {
        let s0 = x + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2
}

/// A recording of 4 s of test pattern (`codec`: h264 or h265) with a 1 kHz tone at
/// `rate` Hz, encoded by ffmpeg with `audio_args`, packed with `pack_args`, as device
/// 13912345678.
async fn tone_recording(
    tmp: &TempDir,
    codec: &str,
    audio_args: &[&str],
    pack_args: &[&str],
) -> std::path::PathBuf {
    let video = tmp.path(&format!("v.{codec}"));
    let audio = tmp.path("tone.audio");
    let encoder = if codec == "h265" {
        "libx265"
    } else {
        "libx264"
    };
    let format = if codec == "h265" { "hevc" } else { "h264" };
    let mut video_args = vec![
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=25",
        "-t",
        "4",
        "-c:v",
        encoder,
    ];
    if codec == "h265" {
        video_args.extend(["-x265-params", "keyint=25:bframes=0:log-level=error"]);
    } else {
        video_args.extend(["-g", "25", "-bf", "0"]);
    }
    video_args.extend(["-f", format, video.to_str().unwrap()]);
    let mut tone_args = vec![
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=1000:sample_rate=8000:duration=4",
        "-af",
        "volume=0.5",
    ];
    tone_args.extend(audio_args);
    tone_args.push(audio.to_str().unwrap());
    for args in [video_args, tone_args] {
        let mut all = vec!["-v", "error", "-y"];
        all.extend(args);
        run("ffmpeg", &all).await;
    }
    let recording = tmp.path("tone.jt1078");
    let mut args = vec![
        "pack",
        "--video",
        video.to_str().unwrap(),
        "--codec",
        codec,
        "--audio",
        audio.to_str().unwrap(),
        "--device",
        "13912345678",
        "--out",
        recording.to_str().unwrap(),
    ];
    args.extend(pack_args);
    run(env!("CARGO_BIN_EXE_jt1078-gateway"), &args).await;
    recording
}

/// The A-law the peer got is a 1 kHz tone: 20 dB over any other frequency checked (the
/// device's codec, then A-law, leave harmonics about 25 dB down; audio_aac.rs bounds ADPCM
/// at -15 dB THD+N).
fn assert_tone_in_alaw(payload: &[u8]) {
    assert!(
        payload.len() >= 16_000,
        "2 s of audio: {} bytes",
        payload.len()
    );
    // skip the first half second (a decoder's start)
    let pcm: Vec<f64> = payload[4000..16_000]
        .iter()
        .map(|b| f64::from(audio_codec_algorithms::decode_alaw(*b)))
        .collect();
    let tone_power = power_at(&pcm, 1000.0);
    for other in [250.0, 500.0, 1500.0, 2000.0, 3000.0] {
        let ratio = tone_power / power_at(&pcm, other).max(1.0);
        assert!(ratio > 100.0, "1 kHz over {other} Hz: {ratio:.0}x");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h265_goes_to_a_peer_that_offers_it_and_adpcm_arrives_as_a_law() {
    let tmp = TempDir::new("webrtc-h265");
    let recording = tone_recording(
        &tmp,
        "h265",
        &["-f", "s16le"],
        &["--audio-codec", "adpcm", "--hisilicon"],
    )
    .await;
    let gateway = Gateway::start(&[]).await;
    let device = replay_looping(&recording, gateway.addrs.live, None);
    gateway
        .wait_for_stream("the H.265 stream", |s| s.video_frames >= 10)
        .await;
    let path = "/whep/live/13912345678_1";

    // a peer without H.265 is told which codec it lacks
    let (_, h264_only) = TestPeer::new(Offers::H264).await;
    let (status, _, body) = whep_post(gateway.addrs.http, path, &h264_only).await;
    assert_eq!(status, 406, "{body}");
    assert!(
        body.contains("H.265"),
        "the refusal names the codec: {body}"
    );

    let (mut peer, offer) = TestPeer::new(Offers::H265).await;
    let (status, _, answer) = whep_post(gateway.addrs.http, path, &offer).await;
    assert_eq!(status, 201, "{answer}");
    peer.accept(&answer);
    let played = peer
        .play_until(Duration::from_secs(20), |p| {
            p.video_frames >= 50 && p.audio_payload.len() >= 16_000
        })
        .await;
    assert!(played, "{:?}", peer.played.video_frames);
    let p = &peer.played;
    assert_eq!(p.video_codec, Some(str0m::format::Codec::H265));
    // VPS, SPS, PPS in front of the IRAP picture
    for nal in [32, 33, 34] {
        assert!(
            p.first_frame_nals.contains(&nal),
            "NAL {nal} in {:?}",
            p.first_frame_nals
        );
    }
    assert!(
        p.first_frame_nals.iter().any(|n| (16..=21).contains(n)),
        "an IRAP picture: {:?}",
        p.first_frame_nals
    );
    // the ADPCM tone, decoded and sent as A-law
    assert_eq!(p.audio_codec, Some(str0m::format::Codec::PCMA));
    assert_tone_in_alaw(&p.audio_payload);
    device.cancel();
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aac_from_a_device_at_16_khz_arrives_as_8_khz_a_law() {
    let tmp = TempDir::new("webrtc-aac");
    let recording = tone_recording(
        &tmp,
        "h264",
        &[
            "-ar", "16000", "-ac", "1", "-c:a", "aac", "-b:a", "32k", "-f", "adts",
        ],
        &["--audio-codec", "aac"],
    )
    .await;
    let gateway = Gateway::start(&[]).await;
    let device = replay_looping(&recording, gateway.addrs.live, None);
    gateway
        .wait_for_stream("the stream", |s| s.video_frames >= 10)
        .await;
    let (mut peer, offer) = TestPeer::new(Offers::H264).await;
    let (status, _, answer) =
        whep_post(gateway.addrs.http, "/whep/live/13912345678_1", &offer).await;
    assert_eq!(status, 201, "{answer}");
    peer.accept(&answer);
    let played = peer
        .play_until(Duration::from_secs(20), |p| p.audio_payload.len() >= 16_000)
        .await;
    assert!(played, "audio: {} bytes", peer.played.audio_payload.len());
    assert_eq!(peer.played.audio_codec, Some(str0m::format::Codec::PCMA));
    // 8 kHz A-law: one byte a sample, as many as the stream's clock says
    assert_tone_in_alaw(&peer.played.audio_payload);
    device.cancel();
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pli_is_answered_with_the_cached_key_frame_and_peers_close_when_the_stream_ends() {
    let gateway = Gateway::start(&[]).await;
    let device = push_on_its_own(gateway.addrs.live, "13800138000");
    gateway
        .wait_for_stream("the sample", |s| s.video_frames >= 10)
        .await;
    let (mut peer, offer) = TestPeer::new(Offers::H264).await;
    let (status, _, answer) =
        whep_post(gateway.addrs.http, "/whep/live/13800138000_1", &offer).await;
    assert_eq!(status, 201, "{answer}");
    peer.accept(&answer);
    // the sample has a key frame every 50 frames: ask 10 frames after one, when the next
    // is 40 frames (1.6 s) away
    let past_a_key = peer
        .play_until(Duration::from_secs(20), |p| {
            p.key_frames >= 2 && p.frames_since_key == 10
        })
        .await;
    assert!(past_a_key, "{:?}", peer.played.key_frames);
    let (keys, frames_at_pli) = (peer.played.key_frames, peer.played.video_frames);
    peer.request_keyframe();
    let answered = peer
        .play_until(Duration::from_secs(20), |p| p.key_frames > keys)
        .await;
    assert!(answered, "a key frame after the PLI");
    // the stream's own next key frame is 40 frames away: one sooner is the PLI's answer
    let waited = peer.played.video_frames - frames_at_pli;
    assert!(
        waited < 30,
        "the key frame came {waited} frames after the PLI, not before the stream's own \
         (40 frames away)"
    );
    // the device leaves: the gateway ends the session (DTLS close), the peer sees it
    device.cancel();
    let closed = peer.play_until(Duration::from_secs(20), |p| p.closed).await;
    assert!(closed, "the session closes when the stream ends");
    gateway.stop().await;
}

/// The gateway's share of a cold start: a peer is connected and waiting when its device
/// connects; from the stream coming up in the hub (the device's first whole frame) to the
/// peer's first video frame. Printed for docs/benchmarks.md §7 (a debug build here: an
/// upper bound); the assertion is only that the waiting peer plays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_peer_plays_as_soon_as_its_device_connects() {
    let gateway = Gateway::start(&[]).await;
    let (mut peer, offer) = TestPeer::new(Offers::H264).await;
    let mut events = gateway.hub.events();
    let (status, _, answer) =
        whep_post(gateway.addrs.http, "/whep/live/13800138000_1", &offer).await;
    assert_eq!(status, 201, "{answer}");
    peer.accept(&answer);
    let connected = peer.play_until(WAIT, |p| p.connected).await;
    assert!(connected, "ICE and DTLS up before the device comes");
    let device = push_on_its_own(gateway.addrs.live, "13800138000");
    let up = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(jt1078_gateway::hub::HubEvent::StreamUp(_)) = events.recv().await {
                return TokioInstant::now();
            }
        }
    })
    .await
    .unwrap();
    let played = peer.play_until(WAIT, |p| p.video_frames >= 1).await;
    assert!(played, "the waiting peer plays");
    let first = TokioInstant::from_std(peer.played.first_frame_at.unwrap());
    eprintln!(
        "cold start, gateway's share: {:.1} ms from the stream up to the peer's first frame",
        first.duration_since(up).as_secs_f64() * 1000.0
    );
    assert!(
        peer.played.first_frame_nals.contains(&5),
        "it starts at a key frame"
    );
    device.cancel();
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_address_a_stun_server_sees_is_announced_to_browsers() {
    let stun = Coturn::stun();
    let servers = stun.addr.to_string();
    // bound to the wildcard, the host candidates are the machine's other addresses; the
    // STUN server on loopback sees the port at 127.0.0.1, an address not announced
    let gateway = Gateway::start(&[
        ("JTGW__WEBRTC__UDP_LISTEN", "0.0.0.0:0"),
        ("JTGW__WEBRTC__STUN_SERVERS", servers.as_str()),
    ])
    .await;
    let http = gateway.addrs.http;
    // the gateway asks every 500 ms until coturn (starting meanwhile) answers
    let api = webrtc_api_when(&gateway, "an address from the STUN server", |api| {
        api["reflexive"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let udp: SocketAddr = api["udp"].as_str().unwrap().parse().unwrap();
    let mapped = format!("127.0.0.1:{}", udp.port());
    assert_eq!(api["reflexive"], serde_json::json!([mapped]), "{api}");
    let hosts: Vec<SocketAddr> = api["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        !hosts.is_empty() && hosts.iter().all(|h| !h.ip().is_loopback()),
        "this test needs an interface besides loopback: {api}"
    );
    let (_, offer) = TestPeer::new(Offers::H264).await;
    let (status, _, answer) = whep_post(http, "/whep/live/13800138000_1", &offer).await;
    assert_eq!(status, 201, "{answer}");
    // every interface address and the one outside (ICE-lite: all as host candidates)
    let candidates: Vec<&str> = answer
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .collect();
    assert_eq!(candidates.len(), hosts.len() + 1, "{answer}");
    let outside = format!("127.0.0.1 {} typ host", udp.port());
    assert!(
        candidates.iter().any(|c| c.contains(&outside)),
        "no candidate {outside}:\n{answer}"
    );
    for host in &hosts {
        let line = format!("{} {} typ host", host.ip(), host.port());
        assert!(candidates.iter().any(|c| c.contains(&line)), "{answer}");
    }
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_plays_through_the_turn_relay_when_only_the_relay_is_offered() {
    let turn = Coturn::turn();
    let setting = turn.turn_setting();
    let gateway = Gateway::start(&[
        ("JTGW__WEBRTC__TURN_SERVERS", setting.as_str()),
        ("JTGW__WEBRTC__ICE_TRANSPORT_POLICY", "relay"),
    ])
    .await;
    let http = gateway.addrs.http;
    // offered at once, before coturn answered (it may not even listen yet): the answer
    // waits for the allocation instead of being refused
    let (mut peer, offer) = TestPeer::new(Offers::H264).await;
    let (status, _, answer) = whep_post(http, "/whep/live/13800138000_1", &offer).await;
    assert_eq!(status, 201, "{answer}");
    let api = webrtc_api(http).await;
    let relayed: Vec<SocketAddr> = api["relayed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().parse().unwrap())
        .collect();
    let udp: SocketAddr = api["udp"].as_str().unwrap().parse().unwrap();
    assert_eq!(relayed.len(), 1, "{api}");
    let relay = relayed[0];
    assert!(
        relay.ip().is_loopback() && relay.port() != turn.addr.port() && relay.port() != udp.port(),
        "a port coturn relays on: {api}"
    );
    // the device connects after the offer: the peer waits for it
    let device = push_on_its_own(gateway.addrs.live, "13800138000");
    // the relayed address only, and full ICE (a lite peer has host candidates only)
    let candidates: Vec<&str> = answer
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .collect();
    let line = format!("{} {} typ relay", relay.ip(), relay.port());
    assert!(
        candidates.len() == 1 && candidates[0].contains(&line),
        "one candidate, {line}:\n{answer}"
    );
    assert!(!answer.contains("a=ice-lite"), "{answer}");
    peer.accept(&answer);
    let played = peer
        .play_until(Duration::from_secs(20), |p| {
            p.video_frames >= 50 && p.audio_frames >= 50
        })
        .await;
    assert!(
        played,
        "video and audio through the relay: {:?}",
        peer.played
    );
    assert!(
        peer.played.first_frame_nals.contains(&5),
        "it starts at a key frame"
    );
    // the peer knew no other address: every packet went through coturn, and the
    // gateway counted them
    let api = webrtc_api(http).await;
    let socket = &api["socket"];
    assert!(
        socket["relayed_sent"].as_u64().unwrap() >= 100
            && socket["relayed_received"].as_u64().unwrap() >= 2,
        "{api}"
    );
    device.cancel();
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_without_an_allocation_is_refused_with_the_reason() {
    // a TURN server that refuses the credentials: no relayed address, ever
    let turn = Coturn::turn();
    let setting = format!("gw:wrong-password@{}", turn.addr);
    let (_url, gateway, mut backend) = gateway_and_backend(&[
        ("JTGW__WEBRTC__TURN_SERVERS", setting.as_str()),
        ("JTGW__WEBRTC__ICE_TRANSPORT_POLICY", "relay"),
    ])
    .await;
    // the second 401 (to the request with credentials) is the refusal: said at once
    let api = webrtc_api_when(&gateway, "the refusal in the API", |api| {
        api["relays"][0]["error"].is_string()
    })
    .await;
    let relay = &api["relays"][0];
    assert_eq!(relay["server"], turn.addr.to_string(), "{api}");
    assert_eq!(relay["relayed"], serde_json::Value::Null, "{api}");
    assert!(
        relay["error"]
            .as_str()
            .unwrap()
            .contains("credentials refused"),
        "{api}"
    );
    let (_, offer) = TestPeer::new(Offers::H264).await;
    let (status, _, body) = whep_post(gateway.addrs.http, "/whep/live/13800138000_1", &offer).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("webrtc.turn_servers") && body.contains("relay"),
        "{body}"
    );
    // over MQTT: an ERROR with the request's seqid and the code; the request's own TURN
    // server is not used (webrtc.request_ice_servers is off by default)
    let own = serde_json::json!({"iceserver": [{
        "urls": format!("turn:{}", turn.addr), "username": TURN_USER, "credential": TURN_PASSWORD,
    }]});
    let (topic, reply) =
        webrtc_request_with(&mut backend, "13800138000", "no-relay-1", &offer, own).await;
    assert_eq!(topic, "jt1078/client/no-relay-1/ERROR", "{reply}");
    assert_eq!(reply["seqid"], "no-relay-1", "{reply}");
    assert_eq!(reply["code"], "relay_unavailable", "{reply}");
    // a refused offer does not make the device push
    let pulls = backend.drain_for(Duration::from_millis(300)).await;
    assert!(
        !pulls.iter().any(|r| r.topic.ends_with("/REQPULL")),
        "no REQPULL for a refused offer"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requests_own_turn_server_relays_its_peer_when_the_gateway_allows_it() {
    let turn = Coturn::turn();
    let (_url, gateway, mut backend) = gateway_and_backend(&[
        ("JTGW__WEBRTC__REQUEST_ICE_SERVERS", "true"),
        ("JTGW__WEBRTC__ICE_TRANSPORT_POLICY", "relay"),
    ])
    .await;
    let http = gateway.addrs.http;
    let device = push_on_its_own(gateway.addrs.live, "13800138000");
    gateway
        .wait_for_stream("the sample", |s| s.video_frames >= 30)
        .await;
    let (mut peer, offer) = TestPeer::new(Offers::H264).await;
    // as a page writes RTCIceServer: the STUN URL and the TCP variant are left out
    let own = serde_json::json!({"iceserver": [{
        "urls": [
            "stun:127.0.0.1:3478",
            format!("turn:{}?transport=udp", turn.addr),
            format!("turn:{}?transport=tcp", turn.addr),
        ],
        "username": TURN_USER,
        "credential": TURN_PASSWORD,
    }]});
    let (topic, reply) =
        webrtc_request_with(&mut backend, "13800138000", "own-turn-1", &offer, own).await;
    assert_eq!(topic, "jt1078/client/own-turn-1/ANSWER", "{reply}");
    let sdp = reply["sdp"].as_str().unwrap();
    let candidates: Vec<&str> = sdp
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .collect();
    assert!(
        candidates.len() == 1 && candidates[0].contains(" typ relay"),
        "only the request's relay:\n{sdp}"
    );
    // the API shows it as the request's, leased by one peer
    let api = webrtc_api(http).await;
    let relay = &api["relays"][0];
    assert_eq!(relay["server"], turn.addr.to_string(), "{api}");
    assert_eq!(relay["requested"], true, "{api}");
    assert_eq!(relay["leases"], 1, "{api}");
    let relayed: SocketAddr = relay["relayed"].as_str().unwrap().parse().unwrap();
    let line = format!("{} {} typ relay", relayed.ip(), relayed.port());
    assert!(candidates[0].contains(&line), "{line}:\n{sdp}");
    assert_eq!(
        api["relayed"],
        serde_json::json!([]),
        "not offered to others: {api}"
    );

    peer.accept(sdp);
    let played = peer
        .play_until(Duration::from_secs(20), |p| p.video_frames >= 30)
        .await;
    assert!(
        played,
        "video through the request's relay: {:?}",
        peer.played
    );

    // the peer ends: its lease is given back
    let session = reply["session"].as_str().unwrap();
    let (status, _, _) =
        http_request(http, "DELETE", &format!("/whep/session/{session}"), "", "").await;
    assert_eq!(status, 200);
    webrtc_api_when(&gateway, "the lease given back", |api| {
        api["relays"][0]["leases"] == 0
    })
    .await;
    device.cancel();
    gateway.stop().await;
}
