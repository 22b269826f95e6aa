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

use common::http::*;
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

/// How the viewer's play reaches the gateway.
#[derive(Clone, Copy, PartialEq)]
enum Play {
    /// A play on a connection of its own (HTTP/1.0): it becomes a direct viewer.
    Direct,
    /// A play on a kept-alive connection after another request: read from the hub's
    /// queue for its whole life.
    Routed,
}

/// A viewer asks for the stream before its device connects, the device sends the burst in
/// one write and leaves; the viewer reads the whole response, to the stream's end.
async fn burst_reaches_a_waiting_viewer(kind: StreamKind, play: Play) {
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
    let mut buf = Vec::new();
    let version = match play {
        Play::Direct => "1.0",
        Play::Routed => {
            let (status, head) = get_kept_alive(&mut viewer, &mut buf, "/api/streams").await;
            assert_eq!(status, 200);
            read_body(&mut viewer, &mut buf, content_length(&head)).await;
            "1.1"
        }
    };
    viewer
        .write_all(
            format!("GET /{path}/13800138000_1.flv HTTP/{version}\r\nHost: t\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    gateway.wait_for_waiting_reader(&mut events).await;
    // all of it in one write: the gateway reads it as fast as its socket gives it
    let device = tokio::spawn(async move { replay(port, &burst).await });
    let flv = tokio::time::timeout(Duration::from_secs(30), async {
        let (status, _) = read_head(&mut viewer, &mut buf).await;
        assert_eq!(status, 200, "a play");
        match play {
            Play::Direct => {
                viewer.read_to_end(&mut buf).await.unwrap();
                buf
            }
            Play::Routed => read_chunked(&mut viewer, &mut buf).await,
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the viewer's response ends with the stream"));
    device.await.unwrap();
    let got = video_frames(&flv_tags(&flv));
    assert_eq!(got, expected, "every frame of the burst reaches the viewer");
    gateway.stop().await;
}

#[tokio::test]
async fn a_burst_reaches_a_viewer_that_asked_before_the_device_connected() {
    burst_reaches_a_waiting_viewer(StreamKind::Live, Play::Direct).await;
}

#[tokio::test]
async fn a_playback_burst_reaches_a_viewer_that_asked_before_the_device_connected() {
    burst_reaches_a_waiting_viewer(StreamKind::Playback, Play::Direct).await;
}

#[tokio::test]
async fn a_burst_reaches_a_viewer_on_a_kept_alive_connection() {
    burst_reaches_a_waiting_viewer(StreamKind::Live, Play::Routed).await;
}

#[tokio::test]
async fn a_playback_burst_reaches_a_viewer_on_a_kept_alive_connection() {
    burst_reaches_a_waiting_viewer(StreamKind::Playback, Play::Routed).await;
}
