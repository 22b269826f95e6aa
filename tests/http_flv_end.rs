//! How an HTTP-FLV response ends, and what the connection does next: a player sees the
//! end of a stream as the end (chunked body, last chunk), a kept-alive connection serves
//! another request, `HEAD` answers headers only, and an unknown path gets a reason.

mod common;

use std::time::Duration;

use common::http::*;
use common::*;
use tokio::net::TcpStream;

const CAPTURE: &str = "h264-g711a-156987000796-ch1.jt1078";
const PLAY: &str = "/live/156987000796_1.flv";

/// ffmpeg plays a recording from before the device connects until the device leaves: the
/// gateway ends the body with the last chunk, so ffmpeg ends as at the end of a file,
/// with nothing on stderr at warning level (the close-delimited body made it print
/// `Stream ends prematurely` and `Input/output error`), and with every video frame.
#[tokio::test]
async fn ffmpeg_plays_a_recording_to_its_end_without_an_error_line() {
    let gateway = Gateway::start(&[]).await;
    let tmp = TempDir::new("ffmpeg-end");
    let out = tmp.path("out.flv");
    let url = format!("http://{}{PLAY}", gateway.addrs.http);
    let mut events = gateway.hub.events();
    let ffmpeg = tokio::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "warning",
            "-i",
            &url,
        ])
        .args(["-c", "copy", "-f", "flv", "-y", out.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ffmpeg starts");
    gateway.wait_for_waiting_reader(&mut events).await;
    let device = replay_realtime(&testdata(CAPTURE), gateway.addrs.live);
    device.await.unwrap().unwrap();
    let result = tokio::time::timeout(Duration::from_secs(60), ffmpeg.wait_with_output())
        .await
        .expect("ffmpeg ends when the stream does")
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "ffmpeg failed: {stderr}");
    assert_eq!(stderr.trim(), "", "ffmpeg's stderr has no line at all");
    let bytes = std::fs::read(testdata(CAPTURE)).unwrap();
    let expected = expected_video_frames(&raw_packets(&bytes, 6));
    let video = probe_stream(&out, "v", None).await;
    assert_eq!(video["codec_name"], "h264");
    assert_eq!(video["nb_read_frames"], expected.to_string());
}

/// A play that is the first request on its connection: HTTP/1.1 gets a chunked body that
/// ends with the last chunk when the device leaves, then the same connection serves a
/// `HEAD` (now 404: the stream is gone), an unknown path (404 with a reason) and the API.
#[tokio::test]
async fn a_connection_whose_play_ended_serves_the_next_requests() {
    // the device's own audio: a viewer joining a stream that already ran gets the GOP
    // cache's audio only as it came (the AAC rendition starts with the next frames)
    let gateway = Gateway::start(&[("JTGW__AUDIO__FLV", "passthrough")]).await;
    let (device, _) = gateway.device_holding_capture().await;

    let mut client = TcpStream::connect(gateway.addrs.http).await.unwrap();
    let mut buf = Vec::new();
    send(
        &mut client,
        &format!("HEAD {PLAY} HTTP/1.1\r\nHost: t\r\n\r\n"),
    )
    .await;
    let (status, head) = read_head(&mut client, &mut buf).await;
    assert_eq!(status, 200, "HEAD of a live stream");
    assert!(head.contains("content-type: video/x-flv"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");

    let (status, head) = get_kept_alive(&mut client, &mut buf, PLAY).await;
    assert_eq!(status, 200);
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    drop(device);
    let flv = tokio::time::timeout(Duration::from_secs(30), read_chunked(&mut client, &mut buf))
        .await
        .expect("the body ends with the last chunk when the device leaves");
    let tags = flv_tags(&flv);
    assert!(tags.iter().any(|t| t.tag_type == 9), "video was played");
    assert!(tags.iter().any(|t| t.tag_type == 8), "with its audio");

    // the stream is gone: HEAD says so at once, without waiting for the device
    send(
        &mut client,
        &format!("HEAD {PLAY} HTTP/1.1\r\nHost: t\r\n\r\n"),
    )
    .await;
    let (status, head) =
        tokio::time::timeout(Duration::from_secs(5), read_head(&mut client, &mut buf))
            .await
            .expect("HEAD does not wait for the device");
    assert_eq!(status, 404, "{head}");
    assert!(buf.is_empty(), "HEAD has no body");

    let (status, head) = get_kept_alive(&mut client, &mut buf, "/nothing/here").await;
    assert_eq!(status, 404);
    let reason =
        String::from_utf8(read_body(&mut client, &mut buf, content_length(&head)).await).unwrap();
    assert!(
        reason.contains("no such path") && reason.ends_with('\n'),
        "{reason}"
    );
    assert_eq!(reason.lines().count(), 1, "{reason}");

    let (status, head) = get_kept_alive(&mut client, &mut buf, "/api/streams").await;
    assert_eq!(status, 200);
    let body = read_body(&mut client, &mut buf, content_length(&head)).await;
    let streams: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(streams.as_array().unwrap().is_empty(), "{streams}");
}

/// HTTP/1.0 keeps the close-delimited body: no chunking, and the connection closes at the
/// end of the stream.
#[tokio::test]
async fn an_http_1_0_play_is_close_delimited() {
    let gateway = Gateway::start(&[]).await;
    let (device, _) = gateway.device_holding_capture().await;
    let http = gateway.addrs.http;
    let viewer = tokio::spawn(async move { http_get(http, PLAY).await });
    gateway
        .wait_for_stream("one viewer", |s| s.viewers == 1)
        .await;
    drop(device);
    let (status, flv) = tokio::time::timeout(Duration::from_secs(30), viewer)
        .await
        .expect("the response ends")
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        flv.get(..3),
        Some(&b"FLV"[..]),
        "the body is bare FLV, not chunks"
    );
    assert!(flv_tags(&flv).iter().any(|t| t.tag_type == 9));
}
