//! From the wire to a player: recorded and synthetic JT/T 1078 streams go into a running
//! gateway over TCP and come out of HTTP-FLV; ffprobe/ffmpeg decode what we serve.

#![expect(
    clippy::unwrap_used,
    reason = "helpers of tests: a failure is a test failure"
)]

mod common;

use std::time::Duration;

use common::*;
use jt1078_gateway::codec::h26x::VideoCodec;
use jt1078_gateway::codec::jt1078::{PayloadType, SimLayout};
use jt1078_gateway::hub::StreamSnapshot;
use jt1078_gateway::simulate::pack::{PackOptions, pack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn every_recorded_stream_plays_completely_over_http_flv() {
    let files = all_testdata();
    assert!(files.len() >= 3, "testdata present");
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        let name = file.file_stem().unwrap().to_string_lossy().to_string();
        let sim = name.split('-').rev().nth(1).unwrap();
        let device = sim.trim_start_matches('0');
        let packets = raw_packets(&bytes, 6);
        let expected_frames = expected_video_frames(&packets);
        let tmp = TempDir::new("rec");
        let raw = tmp.path("raw.h264");
        std::fs::write(&raw, raw_video(&packets)).unwrap();
        let reference = probe_stream(&raw, "v", Some("h264")).await;

        let gateway = Gateway::start(&[]).await;
        let flv = replay_and_watch(&gateway, &bytes, &format!("{device}_1")).await;
        gateway.stop().await;
        let out = tmp.path("out.flv");
        std::fs::write(&out, &flv).unwrap();

        let video = probe_stream(&out, "v", None).await;
        assert_eq!(video["codec_name"], "h264", "{name}");
        assert_eq!(video["width"], reference["width"], "{name}");
        assert_eq!(video["height"], reference["height"], "{name}");
        let frames: usize = video["nb_read_frames"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            frames, expected_frames,
            "{name}: every completed video frame arrives"
        );
        let errors = decode_errors(&out, "0:v", None).await;
        assert!(errors.is_empty(), "{name}: decode errors: {errors}");
    }
}

#[tokio::test]
async fn g711a_audio_arrives_with_the_right_duration() {
    g711a_audio_arrives_whole(None).await;
}

#[tokio::test]
async fn merged_writes_lose_no_frame() {
    g711a_audio_arrives_whole(Some(("JTGW__HTTP__FLV_MERGE_WRITE", "100ms"))).await;
}

#[tokio::test]
async fn merged_reads_lose_no_frame() {
    g711a_audio_arrives_whole(Some(("JTGW__INGEST__MERGE_READ", "50ms"))).await;
}

/// Replays the G.711A capture with `setting` (merged reads or writes): every audio sample
/// and every video frame arrives.
async fn g711a_audio_arrives_whole(setting: Option<(&str, &str)>) {
    let merge = setting.map_or("none", |s| s.0);
    let bytes = std::fs::read(testdata("h264-g711a-156987000796-ch1.jt1078")).unwrap();
    let expected_samples: usize = raw_packets(&bytes, 6)
        .iter()
        .filter(|p| p.data_type == 3)
        .map(|p| p.body.len())
        .sum();
    let expected_frames = expected_video_frames(&raw_packets(&bytes, 6));
    // G.711 passed through, byte for byte as before AAC was the default
    let mut settings = vec![("JTGW__AUDIO__FLV", "passthrough")];
    settings.extend(setting);
    let gateway = Gateway::start(&settings).await;
    let flv = replay_and_watch(&gateway, &bytes, "156987000796_1").await;
    let tmp = TempDir::new("g711");
    let out = tmp.path("out.flv");
    std::fs::write(&out, &flv).unwrap();
    let video = probe_stream(&out, "v", None).await;
    let frames: usize = video["nb_read_frames"].as_str().unwrap().parse().unwrap();
    assert_eq!(frames, expected_frames, "merge {merge}: every video frame");
    let audio = probe_stream(&out, "a", None).await;
    assert_eq!(audio["codec_name"], "pcm_alaw");
    assert_eq!(audio["sample_rate"], "8000");
    let pcm = tmp.path("out.pcm");
    run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-i",
            out.to_str().unwrap(),
            "-map",
            "0:a",
            "-f",
            "s16le",
            pcm.to_str().unwrap(),
        ],
    )
    .await;
    let samples = std::fs::metadata(&pcm).unwrap().len() as usize / 2;
    assert_eq!(
        samples, expected_samples,
        "merge {merge}: decoded audio is {samples} samples, sent {expected_samples}"
    );
    // 8 kHz: the duration follows
    assert!((samples as f64 / 8000.0 - expected_samples as f64 / 8000.0).abs() < 0.001);
}

#[tokio::test]
async fn viewer_joining_mid_stream_starts_with_a_key_frame() {
    // the bundled sample: 10 s, key frame every 2 s, replayed in real time
    let sample =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/sample-h264-g711a.jt1078");
    let bytes = std::fs::read(&sample).unwrap();
    let total_frames = expected_video_frames(&raw_packets(&bytes, 6));
    let gateway = Gateway::start(&[]).await;
    let device = replay_realtime(&sample, gateway.addrs.live);
    // join after the second key frame (frame 50 at 2 s) has passed
    gateway
        .wait_for_stream("60 video frames", |s| s.video_frames >= 60)
        .await;
    let (status, flv) = http_get(gateway.addrs.http, "/live/13800138000_1.flv").await;
    assert_eq!(status, 200);
    device.await.unwrap().unwrap();
    let tmp = TempDir::new("mid");
    let out = tmp.path("out.flv");
    std::fs::write(&out, &flv).unwrap();
    let (stdout, _) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "frame=key_frame,pict_type",
            "-of",
            "csv=p=0",
            out.to_str().unwrap(),
        ],
    )
    .await;
    let frames: Vec<&str> = stdout.lines().collect();
    assert!(
        frames[0].starts_with("1,I"),
        "first frame is a key frame: {:?}",
        frames.first()
    );
    assert!(
        frames.len() < total_frames,
        "joined mid-stream ({} of {total_frames} frames)",
        frames.len()
    );
    assert!(
        frames.len() >= total_frames - 150,
        "started at the latest key frame, not later"
    );
    assert!(decode_errors(&out, "0:v", None).await.is_empty());
}

#[tokio::test]
async fn stream_that_never_comes_up_gets_404_after_the_wait() {
    let gateway = Gateway::start(&[("JTGW__HTTP__FLV_WAIT_TIMEOUT", "300ms")]).await;
    let (status, body) = http_get(gateway.addrs.http, "/live/013912345678_2.flv").await;
    assert_eq!(status, 404);
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("live/13912345678_2 is not live"), "{text}");
    let (status, body) = http_get(gateway.addrs.http, "/live/not-a-device_1.flv").await;
    assert_eq!(status, 400);
    assert!(
        String::from_utf8(body)
            .unwrap()
            .contains("invalid device id")
    );
}

#[tokio::test]
async fn api_lists_live_streams_with_codecs_resolution_and_counters() {
    let gateway = Gateway::start(&[]).await;
    // the device stays connected after sending, so the stream stays listed
    let (_device, bytes) = gateway.device_holding_capture().await;
    let (status, body) = http_get(gateway.addrs.http, "/api/streams").await;
    assert_eq!(status, 200);
    let streams: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let s = &streams[0];
    assert_eq!(s["device"], "156987000796");
    assert_eq!(s["channel"], 1);
    assert_eq!(s["kind"], "live");
    assert_eq!(s["video_codec"], "h264");
    assert_eq!(s["audio_codec"], "g711a");
    assert_eq!(s["width"], 720);
    assert_eq!(s["height"], 576);
    assert_eq!(s["bytes_in"], bytes.len() as u64);
    assert!(s["video_frames"].as_u64().unwrap() >= 100);
    assert!(s["audio_frames"].as_u64().unwrap() > 0);
    assert!(s["fps"].as_f64().unwrap() > 15.0, "{}", s["fps"]);
    assert_eq!(s["resyncs"], 0);
}

#[tokio::test]
async fn second_connection_for_the_same_channel_replaces_the_first() {
    let bytes = std::fs::read(testdata("h264-g711a-156987000796-ch1.jt1078")).unwrap();
    let half = raw_packets(&bytes, 6)[100].start;
    let gateway = Gateway::start(&[]).await;
    let mut first = TcpStream::connect(gateway.addrs.live).await.unwrap();
    first.write_all(&bytes[..half]).await.unwrap();
    gateway
        .wait_for_stream("first device", |s| s.frames_in > 0)
        .await;
    let mut second = TcpStream::connect(gateway.addrs.live).await.unwrap();
    second.write_all(&bytes[..half]).await.unwrap();
    // the gateway closes the first connection
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(10), first.read(&mut buf))
        .await
        .expect("first closed");
    assert!(matches!(closed, Ok(0) | Err(_)));
    let streams = gateway.hub.list();
    assert_eq!(streams.len(), 1, "still one stream");
    // the second keeps publishing
    let before = streams[0].frames_in;
    second.write_all(&bytes[half..]).await.unwrap();
    gateway
        .wait_for_stream("more frames", |s| s.frames_in > before)
        .await;
}

#[tokio::test]
async fn h265_with_20_digit_sim_hisilicon_audio_and_garbage_plays() {
    let tmp = TempDir::new("h265");
    let hevc = tmp.path("in.h265");
    let alaw = tmp.path("in.alaw");
    run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-t",
            "2",
            "-c:v",
            "libx265",
            "-x265-params",
            "keyint=25:bframes=0:log-level=error",
            "-f",
            "hevc",
            hevc.to_str().unwrap(),
        ],
    )
    .await;
    run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=500:sample_rate=8000",
            "-t",
            "2",
            "-ac",
            "1",
            "-f",
            "alaw",
            alaw.to_str().unwrap(),
        ],
    )
    .await;
    let video = std::fs::read(&hevc).unwrap();
    let audio = std::fs::read(&alaw).unwrap();
    let options = PackOptions {
        device: "13912345678".into(),
        channel: 2,
        layout: SimLayout::Bcd10,
        hisilicon: true,
        ..PackOptions::default()
    };
    let clean = pack(
        VideoCodec::H265,
        &video,
        Some((PayloadType::G711A, &audio)),
        &options,
    )
    .unwrap();
    // garbage between every tenth packet
    let packets = raw_packets(&clean, 10);
    let mut wire = Vec::new();
    for (i, p) in packets.iter().enumerate() {
        if i % 10 == 5 {
            wire.extend_from_slice(b"\x00\xffgarbage\x30\x31junk");
        }
        wire.extend_from_slice(&clean[p.start..p.end]);
    }
    let expected_frames = expected_video_frames(&packets);
    let reference = probe_stream(&hevc, "v", Some("hevc")).await;
    let reference_frames: usize = reference["nb_read_frames"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        expected_frames, reference_frames,
        "one access unit per frame"
    );

    let gateway = Gateway::start(&[("JTGW__AUDIO__FLV", "passthrough")]).await;
    let flv = replay_and_watch(&gateway, &wire, "13912345678_2").await;
    // FLV codec id 12 is not in this ffmpeg: unwrap the HEVC from our FLV and decode that
    let mut annexb = Vec::new();
    let (mut video_frames, mut audio_bytes) = (0, 0);
    for tag in flv_tags(&flv) {
        match tag.tag_type {
            9 => {
                assert_eq!(tag.body[0] & 0x0f, 12, "HEVC codec id");
                if tag.body[1] == 0 {
                    let record = &tag.body[5..];
                    let mut i = 23;
                    for _ in 0..record[22] {
                        let count = u16::from_be_bytes([record[i + 1], record[i + 2]]);
                        i += 3;
                        for _ in 0..count {
                            let len = u16::from_be_bytes([record[i], record[i + 1]]) as usize;
                            annexb.extend_from_slice(&[0, 0, 0, 1]);
                            annexb.extend_from_slice(&record[i + 2..i + 2 + len]);
                            i += 2 + len;
                        }
                    }
                } else {
                    video_frames += 1;
                    let mut i = 5;
                    while i < tag.body.len() {
                        let len =
                            u32::from_be_bytes(tag.body[i..i + 4].try_into().unwrap()) as usize;
                        annexb.extend_from_slice(&[0, 0, 0, 1]);
                        annexb.extend_from_slice(&tag.body[i + 4..i + 4 + len]);
                        i += 4 + len;
                    }
                }
            }
            8 => {
                assert_eq!(tag.body[0] >> 4, 7, "G.711 A-law sound format");
                audio_bytes += tag.body.len() - 1;
            }
            _ => {}
        }
    }
    assert_eq!(video_frames, expected_frames);
    assert_eq!(
        audio_bytes,
        audio.len(),
        "HiSilicon headers stripped, every sample delivered"
    );
    let out = tmp.path("out.h265");
    std::fs::write(&out, &annexb).unwrap();
    let decoded = probe_stream(&out, "v", Some("hevc")).await;
    assert_eq!(decoded["width"], 320);
    assert_eq!(decoded["height"], 240);
    assert_eq!(decoded["nb_read_frames"], reference["nb_read_frames"]);
    assert!(decode_errors(&out, "0:v", Some("hevc")).await.is_empty());
    let snapshot = &gateway.hub.list();
    assert!(snapshot.is_empty(), "stream down after the device left");
}

#[tokio::test]
async fn idle_devices_are_closed_and_the_connection_cap_holds() {
    let gateway = Gateway::start(&[
        ("JTGW__INGEST__IDLE_TIMEOUT", "300ms"),
        ("JTGW__INGEST__MAX_CONNECTIONS", "1"),
    ])
    .await;
    let mut first = TcpStream::connect(gateway.addrs.live).await.unwrap();
    first.write_all(b"01").await.unwrap();
    // over the cap: closed at once
    let mut second = TcpStream::connect(gateway.addrs.live).await.unwrap();
    let mut buf = [0u8; 8];
    let refused = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf))
        .await
        .expect("refused quickly");
    assert!(matches!(refused, Ok(0) | Err(_)));
    // the idle one is closed after the timeout
    let started = tokio::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), first.read(&mut buf))
        .await
        .expect("idle closed");
    assert!(matches!(closed, Ok(0) | Err(_)));
    assert!(started.elapsed() >= Duration::from_millis(200));
}

/// The recording's packets `range` rewritten to `channel`, numbered from `*next` on (the
/// 2016 layout: sequence at bytes 6..8, channel at byte 14).
fn renumbered(bytes: &[u8], packets: &[RawPacket], channels: &[u8], next: &mut u16) -> Vec<u8> {
    let mut out = Vec::new();
    for p in packets {
        for &channel in channels {
            let mut packet = bytes[p.start..p.end].to_vec();
            packet[6..8].copy_from_slice(&next.to_be_bytes());
            packet[14] = channel;
            *next = next.wrapping_add(1);
            out.extend(packet);
        }
    }
    out
}

#[tokio::test]
async fn replacing_one_channel_keeps_the_connections_other_channels() {
    let bytes = std::fs::read(testdata("h264-g711a-156987000796-ch1.jt1078")).unwrap();
    let packets = raw_packets(&bytes, 6);
    let (head, tail) = packets.split_at(packets.len() / 2);
    let channel = |n: u8| move |s: &StreamSnapshot| s.channel == n;
    let gateway = Gateway::start(&[]).await;

    // one connection carries channels 1 and 2, numbered by one counter for both
    let mut shared = 0;
    let mut first = TcpStream::connect(gateway.addrs.live).await.unwrap();
    let both_head = renumbered(&bytes, head, &[1, 2], &mut shared);
    first.write_all(&both_head).await.unwrap();
    for n in [1, 2] {
        gateway
            .wait_for_stream("both channels", |s| channel(n)(s) && s.video_frames > 0)
            .await;
    }

    // a second connection takes over channel 2 only
    let mut second = TcpStream::connect(gateway.addrs.live).await.unwrap();
    let before = gateway.wait_for_stream("channel 2", channel(2)).await;
    second
        .write_all(&renumbered(&bytes, head, &[2], &mut 0))
        .await
        .unwrap();
    gateway
        .wait_for_stream("channel 2 from the second", |s| {
            channel(2)(s) && s.frames_in > before.frames_in
        })
        .await;

    // the first connection still serves channel 1: every video frame of the file arrives
    let both_tail = renumbered(&bytes, tail, &[1, 2], &mut shared);
    first.write_all(&both_tail).await.unwrap();
    let expected = expected_video_frames(&packets) as u64;
    let ch1 = gateway
        .wait_for_stream("all of channel 1", |s| {
            channel(1)(s) && s.video_frames >= expected
        })
        .await;
    assert_eq!(ch1.video_frames, expected);
    assert_eq!(ch1.frames_dropped, 0, "a shared counter is not a gap");
    assert_eq!(ch1.resyncs, 0);

    // once a third connection takes channel 1 too, nothing is left: the first is closed
    let mut third = TcpStream::connect(gateway.addrs.live).await.unwrap();
    third
        .write_all(&renumbered(&bytes, head, &[1], &mut 0))
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(10), first.read(&mut buf))
        .await
        .expect("first closed once both channels are taken");
    assert!(matches!(closed, Ok(0) | Err(_)));
    let mut live: Vec<u8> = gateway.hub.list().iter().map(|s| s.channel).collect();
    live.sort_unstable();
    assert_eq!(
        live,
        [1, 2],
        "both streams stay up on the newer connections"
    );
    drop((second, third));
}
