//! HTTP-FLV viewers as the gateway sees them: one that stops reading, one that asks on a
//! kept-alive connection, one that leaves. Each against a running gateway over TCP.

#![expect(
    clippy::unwrap_used,
    reason = "helpers of tests: a failure is a test failure"
)]

mod common;

use std::time::Duration;

use common::http::*;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The device's G.711 in FLV, as before AAC (these tests compare audio tags with the
/// device's payloads).
const PASSTHROUGH: (&str, &str) = ("JTGW__AUDIO__FLV", "passthrough");

/// Video tags that carry a frame (not the sequence header), with key-frame flag.
fn video_frames(tags: &[FlvTag]) -> Vec<(u32, bool)> {
    tags.iter()
        .filter(|t| t.tag_type == 9 && t.body.get(1) == Some(&1))
        .map(|t| (t.timestamp, t.body[0] >> 4 == 1))
        .collect()
}

#[tokio::test]
async fn a_viewer_that_stops_reading_skips_to_key_frames_and_the_other_viewer_gets_everything() {
    // 6 s of lossless H.264 of a noisy picture (~30 MB), replayed in real time: much more
    // than a stalled viewer may have queued (8 MB) plus what the sockets hold, while a
    // viewer that reads keeps up. The cap in time is set out of reach: here the cap in
    // bytes makes the viewer skip (a viewer too far behind in time is dropped instead;
    // tests/chaos_http.rs)
    let tmp = TempDir::new("stalled");
    let bytes = noisy_lossless_h264(&tmp, 6).await;
    let expected = expected_video_frames(&raw_packets(&bytes, 6));
    let gateway = Gateway::start(&[("JTGW__HTTP__VIEWER_MAX_LAG", "60s")]).await;
    let http = gateway.addrs.http;
    let mut events = gateway.hub.events();

    // the stalled viewer: a tiny receive window, and it reads nothing for a while
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(http).await.unwrap();
    stalled
        .write_all(b"GET /live/13800138000_1.flv HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    gateway.wait_for_waiting_reader(&mut events).await;
    let reader = tokio::spawn(async move { http_get(http, "/live/13800138000_1.flv").await });
    gateway.wait_for_waiting_reader(&mut events).await;

    let file = tmp.path("in.jt1078");
    std::fs::write(&file, &bytes).unwrap();
    let device = replay_realtime(&file, gateway.addrs.live);
    // the stalled viewer falls behind until the gateway skips frames for it, then reads
    // again while the device still sends
    gateway
        .wait_for_stream("frames skipped for the stalled viewer", |s| {
            s.frames_dropped > 0
        })
        .await;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stalled.read_to_end(&mut response))
        .await
        .expect("the stalled viewer's response ends")
        .unwrap();
    device.await.unwrap().unwrap();

    let (status, flv) = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the reading viewer finishes")
        .unwrap();
    assert_eq!(status, 200);
    let full = video_frames(&flv_tags(&flv));
    assert_eq!(full.len(), expected, "the reading viewer got every frame");

    let body_at = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let body = &response[body_at..];
    let got = video_frames(&flv_tags(body));
    assert!(
        got.len() < expected,
        "the stalled viewer skipped frames ({} of {expected})",
        got.len()
    );
    assert!(got[0].1, "starts at a key frame");
    let restarts: Vec<&[(u32, bool)]> = got.windows(2).filter(|w| w[1].0 > w[0].0 + 200).collect();
    assert!(!restarts.is_empty(), "a gap where frames were skipped");
    for pair in restarts {
        assert!(
            pair[1].1,
            "after a gap the viewer restarts at a key frame: {pair:?}"
        );
    }
    // what it got still decodes: every restart point is a key frame
    let out = tmp.path("stalled.flv");
    std::fs::write(&out, body).unwrap();
    let errors = decode_errors(&out, "0:v", None).await;
    assert!(errors.is_empty(), "{errors}");
}

#[tokio::test]
async fn a_play_after_another_request_on_a_kept_alive_connection_is_served() {
    // G.711 passed through: the device sends nothing after the GOP cache was played, and
    // AAC is made only while a viewer takes it (this one joins after the audio was sent)
    let gateway = Gateway::start(&[PASSTHROUGH]).await;
    let (device, _) = gateway.device_holding_capture().await;

    let mut client = TcpStream::connect(gateway.addrs.http).await.unwrap();
    let mut buf = Vec::new();
    let (status, head) = get_kept_alive(&mut client, &mut buf, "/api/streams").await;
    assert_eq!(status, 200);
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    while buf.len() < length {
        read_more(&mut client, &mut buf, "a response body").await;
    }
    let streams: serde_json::Value = serde_json::from_slice(&buf[..length]).unwrap();
    assert_eq!(streams[0]["device"], "156987000796");
    buf.drain(..length);

    let (status, head) = get_kept_alive(&mut client, &mut buf, "/live/156987000796_1.flv").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: video/x-flv"), "{head}");
    // the device leaves: the stream ends and so does the chunked body
    drop(device);
    let flv = tokio::time::timeout(Duration::from_secs(30), read_chunked(&mut client, &mut buf))
        .await
        .expect("the body ends when the stream does");
    let tags = flv_tags(&flv);
    let frames = video_frames(&tags);
    assert!(!frames.is_empty(), "the GOP cache was played");
    assert!(frames[0].1, "starting at a key frame");
    assert!(
        tags.iter().any(|t| t.tag_type == 8),
        "with the G.711A audio"
    );
}

#[tokio::test]
async fn a_viewer_that_leaves_is_counted_out_while_the_device_is_quiet() {
    let gateway = Gateway::start(&[]).await;
    let (device, _) = gateway.device_holding_capture().await;

    let mut viewer = TcpStream::connect(gateway.addrs.http).await.unwrap();
    viewer
        .write_all(b"GET /live/156987000796_1.flv HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 1024];
    let n = viewer.read(&mut first).await.unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.0 200"));
    gateway
        .wait_for_stream("one viewer", |s| s.viewers == 1)
        .await;
    // no frame arrives any more: the gateway notices the close on the socket itself
    drop(viewer);
    gateway
        .wait_for_stream("no viewer", |s| s.viewers == 0)
        .await;
    drop(device);
}

#[tokio::test]
async fn merged_reads_keep_up_with_a_device_sending_more_than_a_read_per_tick() {
    // ~20 MB sent as fast as loopback takes it, read on 50 ms ticks: at one 64 KB read per
    // tick this would take 15 s; draining the socket every tick takes a moment
    let tmp = TempDir::new("fast-merged");
    let bytes = noisy_lossless_h264(&tmp, 4).await;
    let expected = expected_video_frames(&raw_packets(&bytes, 6));
    let gateway = Gateway::start(&[("JTGW__INGEST__MERGE_READ", "50ms")]).await;
    let mut device = TcpStream::connect(gateway.addrs.live).await.unwrap();
    let ingested = async {
        device.write_all(&bytes).await.unwrap();
        gateway
            .wait_for_stream("every frame ingested", |s| {
                s.video_frames >= expected as u64
            })
            .await
    };
    let stream = tokio::time::timeout(Duration::from_secs(8), ingested)
        .await
        .expect("the gateway reads the whole stream within seconds");
    assert_eq!(stream.video_frames, expected as u64);
    assert_eq!(stream.bytes_in, bytes.len() as u64);
}

#[tokio::test]
async fn merged_reads_do_not_delay_a_cold_start() {
    // reads merged on 1 s ticks: a stream that has not started yet is still read as its
    // data arrives, so a waiting viewer gets the first key frame at once, not on the next
    // tick (which would be 0–1 s away: five starts in a row within 250 ms each would
    // almost never happen by chance)
    let gateway = Gateway::start(&[("JTGW__INGEST__MERGE_READ", "1s")]).await;
    let packets =
        jt1078_gateway::simulate::load_file(&testdata("h264-g711a-156987000796-ch1.jt1078"))
            .unwrap();
    let mut devices = Vec::new();
    for channel in 1..=5u8 {
        let mut rewriter = jt1078_gateway::simulate::Rewriter::new(packets[0].sim, Some(channel));
        let mut bytes = bytes::BytesMut::new();
        for packet in &packets {
            rewriter.rewrite(packet, 0).encode(&mut bytes);
        }
        let mut events = gateway.hub.events();
        let mut viewer =
            waiting_viewer(&gateway, &mut events, &format!("156987000796_{channel}")).await;
        let mut device = TcpStream::connect(gateway.addrs.live).await.unwrap();
        let sent = tokio::time::Instant::now();
        device.write_all(&bytes).await.unwrap();
        first_video_frame(&mut viewer).await;
        let waited = sent.elapsed();
        assert!(
            waited < Duration::from_millis(250),
            "channel {channel}: first video frame {waited:?} after the device sent it"
        );
        devices.push(device);
    }
}

#[tokio::test]
async fn a_video_only_stream_seen_before_starts_without_waiting_for_audio() {
    // a viewer that asks before the device connects cannot know whether audio will come,
    // so it waits up to a second of media for it; a stream that carried no audio last
    // time is not waited on
    let gateway = Gateway::start(&[]).await;
    let capture = testdata("h264-013800138000-ch1.jt1078");
    let mut events = gateway.hub.events();
    replay(gateway.addrs.live, &std::fs::read(&capture).unwrap()).await;
    tokio::time::timeout(Duration::from_secs(10), async {
        while !matches!(
            events.recv().await,
            Ok(jt1078_gateway::hub::HubEvent::StreamDown(_))
        ) {}
    })
    .await
    .expect("the first session ends");
    let mut viewer = waiting_viewer(&gateway, &mut events, "13800138000_1").await;
    // in real time, so a second of media takes a second
    let device = replay_realtime(&capture, gateway.addrs.live);
    starts_at_once_without_audio(&mut viewer).await;
    device.abort();
}

#[tokio::test]
async fn a_stream_requested_without_audio_starts_without_waiting_for_audio() {
    // the backend asks for video only (REQPULL data type 1): a viewer waiting for the
    // stream is not held for audio, even on the device's first cold start
    let (gateway, pull) = gateway_asked_for("13800138000", r#""audio":false"#).await;
    assert_eq!(pull["data_type"], 1, "video only");
    let mut events = gateway.hub.events();
    let mut viewer = waiting_viewer(&gateway, &mut events, "13800138000_1").await;
    // the device obeys: the video-only capture, in real time
    let device = replay_realtime(
        &testdata("h264-013800138000-ch1.jt1078"),
        gateway.addrs.live,
    );
    starts_at_once_without_audio(&mut viewer).await;
    device.abort();
}

#[tokio::test]
async fn an_audio_only_stream_is_played_as_audio_alone_once_a_second_passed_without_video() {
    // a viewer that asks before the device connects waits up to a second of media for
    // video; then it gets an audio-only header and every audio frame from the first
    let tmp = TempDir::new("audio-only");
    let (recording, payloads) = audio_only_recording(&tmp);
    let gateway = Gateway::start(&[PASSTHROUGH]).await;
    let mut events = gateway.hub.events();
    let mut viewer = waiting_viewer(&gateway, &mut events, "156987000796_1").await;
    let device = replay_realtime(&recording, gateway.addrs.live);
    let (flags, tags) = first_audio_tags(&mut viewer, 60).await;
    assert_eq!(flags, 0b100, "the header announces audio only");
    assert!(
        tags.iter().all(|t| t[0] >> 4 == 7),
        "G.711 A-law (FLV sound format 7)"
    );
    let played: Vec<u8> = tags.iter().flat_map(|t| t[1..].to_vec()).collect();
    assert_eq!(
        played,
        payloads[..60].concat(),
        "the device's audio, in order"
    );
    device.abort();
}

#[tokio::test]
async fn a_stream_requested_as_audio_alone_starts_without_waiting_for_video() {
    // the backend asks to listen (REQPULL data type 3): the waiting viewer gets the first
    // audio frame at once, not after a second of waiting for video
    let (gateway, pull) = gateway_asked_for("156987000796", r#""video":false"#).await;
    assert_eq!(pull["data_type"], 3, "listen");
    let tmp = TempDir::new("listen");
    let (recording, _) = audio_only_recording(&tmp);
    let mut events = gateway.hub.events();
    let mut viewer = waiting_viewer(&gateway, &mut events, "156987000796_1").await;
    let device = replay_realtime(&recording, gateway.addrs.live);
    let sent = tokio::time::Instant::now();
    let (flags, _) = first_audio_tags(&mut viewer, 1).await;
    let waited = sent.elapsed();
    assert_eq!(flags, 0b100, "the header announces audio only");
    assert!(
        waited < Duration::from_millis(500),
        "first audio frame after {waited:?}"
    );
    device.abort();
}

/// The audio packets of the H.264 + G.711A capture alone, as a recording in `tmp`; with
/// the payload of each (the device sends plain G.711 A-law, 160 bytes per 20 ms).
fn audio_only_recording(tmp: &TempDir) -> (std::path::PathBuf, Vec<Vec<u8>>) {
    let bytes = std::fs::read(testdata("h264-g711a-156987000796-ch1.jt1078")).unwrap();
    let audio: Vec<RawPacket> = raw_packets(&bytes, 6)
        .into_iter()
        .filter(|p| p.data_type == 3)
        .collect();
    assert!(audio.len() > 100, "{} audio packets", audio.len());
    let path = tmp.0.join("audio-only.jt1078");
    let recording: Vec<u8> = audio
        .iter()
        .flat_map(|p| bytes[p.start..p.end].to_vec())
        .collect();
    std::fs::write(&path, recording).unwrap();
    (path, audio.into_iter().map(|p| p.body).collect())
}

/// A gateway (with its embedded broker) that a backend has asked over MQTT for channel 1 of
/// `device`, with the extra request `fields`; and the REQPULL the device is sent.
async fn gateway_asked_for(device: &str, fields: &str) -> (Gateway, serde_json::Value) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let gateway = Gateway::start(&[("JTGW__MQTT__EMBEDDED_LISTEN", &listen), PASSTHROUGH]).await;
    let mut backend =
        common::mqtt::TestClient::connect(port, &["jt1078/device/#", "jt1078/status/gateway/#"])
            .await;
    common::control::wait_online(&mut backend).await;
    backend
        .publish(
            &format!("jt1078/gateway/{device}/SUBSCRIBE"),
            &format!(r#"{{"seqid":"r1","client_id":"backend","channel":1,{fields}}}"#),
        )
        .await;
    let topic = format!("jt1078/device/{device}/REQPULL");
    let pull = backend
        .expect("REQPULL", common::control::WAIT, |r| r.topic == topic)
        .await
        .json();
    (gateway, pull)
}

/// Reads a play response up to its `n`th audio tag: the FLV header's track flags and the
/// audio tag bodies.
async fn first_audio_tags(viewer: &mut TcpStream, n: usize) -> (u8, Vec<Vec<u8>>) {
    let mut buf = Vec::new();
    let (status, _) = read_head(viewer, &mut buf).await;
    assert_eq!(status, 200);
    loop {
        let mut tags = Vec::new();
        let mut i = 13;
        while let Some(head) = buf.get(i..i + 11) {
            let size = u32::from_be_bytes([0, head[1], head[2], head[3]]) as usize;
            let Some(body) = buf.get(i + 11..i + 11 + size) else {
                break;
            };
            if head[0] == 8 {
                tags.push(body.to_vec());
            }
            i += 15 + size;
        }
        if tags.len() >= n {
            tags.truncate(n);
            return (buf[4], tags);
        }
        read_more(viewer, &mut buf, "the FLV stream").await;
    }
}

/// A viewer of `/live/{stream}.flv` that asked before the device connected; returns once
/// the hub counts it as waiting.
async fn waiting_viewer(
    gateway: &Gateway,
    events: &mut tokio::sync::broadcast::Receiver<jt1078_gateway::hub::HubEvent>,
    stream: &str,
) -> TcpStream {
    let mut viewer = TcpStream::connect(gateway.addrs.http).await.unwrap();
    viewer
        .write_all(format!("GET /live/{stream}.flv HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    gateway.wait_for_waiting_reader(events).await;
    viewer
}

/// Reads the viewer's stream from now (its device has just started) to the first video
/// frame, which must come at once, not after the second a viewer may wait for audio, under a
/// header that announces video only.
async fn starts_at_once_without_audio(viewer: &mut TcpStream) {
    let sent = tokio::time::Instant::now();
    let flv = first_video_frame(viewer).await;
    let waited = sent.elapsed();
    assert_eq!(flv[4], 0b001, "the header announces video only");
    assert!(
        waited < Duration::from_millis(500),
        "first video frame after {waited:?}"
    );
}

/// Reads a play response up to its first complete video frame; returns the FLV so far.
async fn first_video_frame(viewer: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let (status, _) = read_head(viewer, &mut buf).await;
    assert_eq!(status, 200);
    while !has_video_frame(&buf) {
        read_more(viewer, &mut buf, "the FLV stream").await;
    }
    buf
}

/// Whether an FLV byte stream (from its header on) holds a complete video frame tag.
fn has_video_frame(flv: &[u8]) -> bool {
    let mut i = 13;
    while let Some(head) = flv.get(i..i + 11) {
        let size = u32::from_be_bytes([0, head[1], head[2], head[3]]) as usize;
        let Some(body) = flv.get(i + 11..i + 11 + size) else {
            return false;
        };
        if head[0] == 9 && body.get(1) == Some(&1) {
            return true;
        }
        i += 15 + size;
    }
    false
}

#[tokio::test]
async fn a_viewer_that_gives_up_waiting_for_the_device_is_counted_out() {
    let gateway = Gateway::start(&[("JTGW__HTTP__FLV_WAIT_TIMEOUT", "60s")]).await;
    let mut events = gateway.hub.events();
    let mut viewer = TcpStream::connect(gateway.addrs.http).await.unwrap();
    viewer
        .write_all(b"GET /live/13912345678_3.flv HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    gateway.wait_for_waiting_reader(&mut events).await;
    assert_eq!(gateway.hub.reader_counts().len(), 1, "one viewer waits");
    // it leaves long before the wait would end: the gateway stops counting it at once
    drop(viewer);
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(jt1078_gateway::hub::HubEvent::ReadersChanged { readers: 0, .. }) =
                events.recv().await
            {
                return;
            }
        }
    })
    .await
    .expect("the viewer is counted out when it leaves");
    assert!(gateway.hub.reader_counts().is_empty());
}

#[tokio::test]
async fn a_viewer_that_never_reads_does_not_hold_up_shutdown() {
    let tmp = TempDir::new("stuck");
    // ~20 MB: more than the viewer may queue (8 MB) plus what its socket holds
    let bytes = noisy_lossless_h264(&tmp, 4).await;
    let gateway = Gateway::start(&[]).await;
    // listening before the request, so its waiting reader cannot be missed
    let mut events = gateway.hub.events();
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stuck = socket.connect(gateway.addrs.http).await.unwrap();
    stuck
        .write_all(b"GET /live/13800138000_1.flv HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    gateway.wait_for_waiting_reader(&mut events).await;
    // the device stays connected; the viewer's socket fills and its task waits to write
    let mut device = TcpStream::connect(gateway.addrs.live).await.unwrap();
    device.write_all(&bytes).await.unwrap();
    gateway
        .wait_for_stream("frames skipped for the stuck viewer", |s| {
            s.frames_dropped > 0
        })
        .await;
    tokio::time::timeout(Duration::from_secs(5), gateway.stop())
        .await
        .expect("the gateway stops while a viewer is stuck");
    drop((stuck, device));
}
