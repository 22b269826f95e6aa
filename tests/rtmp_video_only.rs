//! RTMP push of a video-only device (issue 31): asked for video only, its first frame
//! reaches SRS at once; asked for both tracks, once its first GOP ended without audio (not
//! after a second of waiting for audio that never comes); a device that starts audio later
//! gets AAC through the push from then on. A real SRS (`SRS_BIN`), the
//! gateway's embedded broker, a backend over MQTT, the device replayed in real time, and
//! ffprobe pulling the stream back from SRS.

#![expect(
    clippy::unwrap_used,
    reason = "helpers of tests: a failure is a test failure"
)]

mod common;

use std::time::Duration;

use common::control::*;
use common::mqtt::TestClient;
use common::srs::Srs;
use common::*;
use jt1078_gateway::codec::h26x::VideoCodec;
use jt1078_gateway::codec::jt1078::PayloadType;
use jt1078_gateway::simulate::pack::{PackOptions, pack};

const DEVICE: &str = "13800138000";

/// The 352x288 video-only capture.
const CAPTURE: &str = "h264-013800138000-ch1.jt1078";

/// A gateway pushing to `srs` on request, and a backend on its embedded broker.
async fn gateway_and_backend(srs: &Srs) -> (Gateway, TestClient) {
    let url = embedded_url();
    let srs_env = srs.gateway_env();
    let env: Vec<(&str, &str)> = srs_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let gateway = gateway_on(&url, BrokerAt::Embedded, &env).await;
    let mut backend = TestClient::connect(
        port_of(&url),
        &["jt1078/client/#", "jt1078/device/#", "jt1078/status/#"],
    )
    .await;
    wait_online(&mut backend).await;
    (gateway, backend)
}

/// Asks for an RTMP push of channel 1 with `fields`; returns the REQPULL the device gets.
async fn ask_for_push(backend: &mut TestClient, fields: &str) -> serde_json::Value {
    backend
        .publish(
            &format!("jt1078/gateway/{DEVICE}/RTMP"),
            &format!(r#"{{"seqid":"r1","client_id":"backend-1","channel":1{fields}}}"#),
        )
        .await;
    backend.expect("OK", WAIT, is("jt1078/client/r1/OK")).await;
    backend
        .expect("REQPULL", WAIT, is("jt1078/device/13800138000/REQPULL"))
        .await
        .json()
}

/// The first `frames` video frames of the capture, and the `frames` after them, as
/// Annex-B streams.
fn capture_video(frames: usize) -> (Vec<u8>, Vec<u8>) {
    let bytes = std::fs::read(testdata(CAPTURE)).unwrap();
    let (mut first, mut then) = (Vec::new(), Vec::new());
    let mut done = 0;
    for packet in raw_packets(&bytes, 6).iter().filter(|p| p.data_type <= 2) {
        if done < frames {
            first.extend_from_slice(&packet.body);
        } else if done < 2 * frames {
            then.extend_from_slice(&packet.body);
        }
        if packet.subpackage == 0 || packet.subpackage == 2 {
            done += 1;
        }
    }
    (first, then)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_only_device_asked_for_video_reaches_srs_within_500_ms() {
    let srs = Srs::start().await;
    let (gateway, mut backend) = gateway_and_backend(&srs).await;
    let pull = ask_for_push(&mut backend, r#","audio":false"#).await;
    assert_eq!(pull["data_type"], 1, "video only");
    // the device answers the REQPULL: it connects and sends in real time
    let answered = tokio::time::Instant::now();
    let device = replay_realtime(&testdata(CAPTURE), gateway.addrs.live);
    // the push is the stream's only reader: its bytes out are what it wrote to SRS, and
    // it writes nothing before its first frame (the header, metadata and sequence header
    // go with it)
    gateway
        .wait_for_stream("the push's first write", |s| s.bytes_out > 0)
        .await;
    let first = answered.elapsed();
    assert!(
        first < Duration::from_millis(500),
        "first frame to SRS {first:?} after the device answered"
    );
    let frames = probe_frames(&srs.flv_url("live", "13800138000_1"), 10).await;
    assert_eq!(frames.len(), 10, "SRS serves the push: {}", srs.log());
    assert!(
        frames
            .iter()
            .all(|f| (f["width"].as_u64(), f["height"].as_u64()) == (Some(352), Some(288))),
        "352x288 through SRS"
    );
    device.abort();
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_only_device_asked_for_both_tracks_reaches_srs_after_its_first_gop() {
    // a device never seen, asked for audio and video, sends video alone with a key frame
    // every 480 ms: the push waits for audio only until that first GOP ends (it waited a
    // second of media before)
    let tmp = TempDir::new("short-gop");
    let h264 = tmp.path("short-gop.h264");
    run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=352x288:rate=25",
            "-t",
            "4",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "12",
            "-bf",
            "0",
            "-f",
            "h264",
            h264.to_str().unwrap(),
        ],
    )
    .await;
    let packed = pack(
        VideoCodec::H264,
        &std::fs::read(&h264).unwrap(),
        None,
        &PackOptions::default(),
    )
    .unwrap();
    let path = tmp.path("short-gop.jt1078");
    std::fs::write(&path, &packed).unwrap();
    let srs = Srs::start().await;
    let (gateway, mut backend) = gateway_and_backend(&srs).await;
    let pull = ask_for_push(&mut backend, "").await;
    assert_eq!(pull["data_type"], 0, "audio and video");
    let answered = tokio::time::Instant::now();
    let device = replay_realtime(&path, gateway.addrs.live);
    gateway
        .wait_for_stream("the push's first write", |s| s.bytes_out > 0)
        .await;
    let first = answered.elapsed();
    assert!(
        first < Duration::from_millis(800),
        "first frame to SRS {first:?} after the device answered (its first GOP is 480 ms)"
    );
    let frames = probe_frames(&srs.flv_url("live", "13800138000_1"), 10).await;
    assert_eq!(frames.len(), 10, "SRS serves the push: {}", srs.log());
    device.abort();
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_adds_audio_after_5_s_gets_aac_through_the_push() {
    // 6 s of the capture's video alone, then 6 s more with a G.711A tone (the gateway
    // pushes AAC made of it, `audio.rtmp` = "aac")
    let tmp = TempDir::new("late-audio");
    let (first, then) = capture_video(150);
    let options = PackOptions::default();
    let mut recording = pack(VideoCodec::H264, &first, None, &options)
        .unwrap()
        .to_vec();
    let tone: Vec<u8> = (0..6 * 8000)
        .map(|i: u32| {
            if (i / 8).is_multiple_of(2) {
                0xa5
            } else {
                0x25
            }
        })
        .collect();
    let later = PackOptions {
        start_ms: options.start_ms + 150 * 40,
        ..PackOptions::default()
    };
    recording.extend_from_slice(
        &pack(
            VideoCodec::H264,
            &then,
            Some((PayloadType::G711A, &tone)),
            &later,
        )
        .unwrap(),
    );
    let path = tmp.path("late-audio.jt1078");
    std::fs::write(&path, &recording).unwrap();

    let srs = Srs::start().await;
    let (gateway, mut backend) = gateway_and_backend(&srs).await;
    let pull = ask_for_push(&mut backend, "").await;
    assert_eq!(pull["data_type"], 0, "audio and video");
    let device = replay_realtime(&path, gateway.addrs.live);
    gateway
        .wait_for_stream("the push's first write", |s| s.bytes_out > 0)
        .await;
    let flv = srs.flv_url("live", "13800138000_1");
    let frames = probe_frames(&flv, 10).await;
    assert_eq!(frames.len(), 10, "video through SRS before any audio");
    // the device starts audio after 6 s
    gateway
        .wait_for_stream("audio from the device", |s| s.audio_frames >= 25)
        .await;
    let (stdout, _) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-rw_timeout",
            "15000000",
            "-show_entries",
            "stream=codec_type,codec_name,sample_rate,channels",
            "-of",
            "json",
            &flv,
        ],
    )
    .await;
    let probed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let streams = probed["streams"].as_array().unwrap();
    let audio = streams
        .iter()
        .find(|s| s["codec_type"] == "audio")
        .unwrap_or_else(|| panic!("no audio through SRS: {probed}"));
    assert_eq!(audio["codec_name"], "aac");
    assert_eq!(audio["sample_rate"], "8000");
    assert_eq!(audio["channels"], 1);
    assert!(
        streams
            .iter()
            .any(|s| s["codec_type"] == "video" && s["codec_name"] == "h264"),
        "video goes on with it: {probed}"
    );
    device.abort();
    gateway.stop().await;
}
