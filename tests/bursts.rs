//! A device that sends a backlog at once (a cellular stall ending): a viewer that asked
//! before the device connected, and reads, gets every frame of it, on the live port and on
//! the playback port. Viewers are bounded by bytes and time, never by a frame count
//! (issue 31); a viewer that does not read is still cut off (tests/chaos_http.rs).

#![expect(
    clippy::unwrap_used,
    reason = "helpers of tests: a failure is a test failure"
)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use jt1078_gateway::media::StreamKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Video frames of the burst: 37 s at 25 fps.
const BURST_FRAMES: usize = 925;

/// The first [`BURST_FRAMES`] video frames of the 352x288 capture, whole packets.
fn burst() -> Vec<u8> {
    let bytes = std::fs::read(testdata("h264-013800138000-ch1.jt1078")).unwrap();
    let packets = raw_packets(&bytes, 6);
    let mut frames = 0;
    let end = packets
        .iter()
        .find(|p| {
            if p.data_type <= 2 && (p.subpackage == 0 || p.subpackage == 2) {
                frames += 1;
            }
            frames == BURST_FRAMES
        })
        .unwrap()
        .end;
    bytes[..end].to_vec()
}

/// Video tags that carry a frame (not the sequence header).
fn video_frames(tags: &[FlvTag]) -> usize {
    tags.iter()
        .filter(|t| t.tag_type == 9 && t.body.get(1) == Some(&1))
        .count()
}

/// A viewer asks for the stream before its device connects, the device sends the burst in
/// one write and leaves; the viewer reads the whole (close-delimited) response.
async fn burst_reaches_a_waiting_viewer(kind: StreamKind) {
    let burst = burst();
    assert!(
        burst.len() < 1_000_000,
        "a burst under 1 MB: {}",
        burst.len()
    );
    let expected = expected_video_frames(&raw_packets(&burst, 6));
    assert_eq!(expected, BURST_FRAMES);
    // one I/O thread: the device and the viewer share it, as many do on a loaded gateway,
    // so the viewer runs only after the device task has published what its tick read
    let gateway = Gateway::start(&[("JTGW__RUNTIME__IO_THREADS", "1")]).await;
    let (port, path): (SocketAddr, _) = match kind {
        StreamKind::Live => (gateway.addrs.live, "live"),
        StreamKind::Playback => (gateway.addrs.playback, "playback"),
    };
    let mut events = gateway.hub.events();
    let mut viewer = TcpStream::connect(gateway.addrs.http).await.unwrap();
    viewer
        .write_all(format!("GET /{path}/13800138000_1.flv HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    gateway.wait_for_waiting_reader(&mut events).await;
    // all of it in one write: the gateway reads it as fast as its socket gives it
    let device = tokio::spawn(async move { replay(port, &burst).await });
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), viewer.read_to_end(&mut response))
        .await
        .expect("the viewer's response ends with the stream")
        .unwrap();
    device.await.unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    assert!(response.starts_with(b"HTTP/1.0 200"), "a play");
    let got = video_frames(&flv_tags(&response[split + 4..]));
    assert_eq!(got, expected, "every frame of the burst reaches the viewer");
    gateway.stop().await;
}

#[tokio::test]
async fn a_burst_reaches_a_viewer_that_asked_before_the_device_connected() {
    burst_reaches_a_waiting_viewer(StreamKind::Live).await;
}

#[tokio::test]
async fn a_playback_burst_reaches_a_viewer_that_asked_before_the_device_connected() {
    burst_reaches_a_waiting_viewer(StreamKind::Playback).await;
}
