use std::collections::HashMap;

use tokio::io::AsyncReadExt;

use super::*;
use crate::hub::Hub;
use crate::media::{Channel, Codec, DeviceId, StreamKind};

fn limits(env: &[(&str, &str)]) -> ViewerLimits {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let settings = crate::config::Settings::load_from(None, Some(env)).unwrap();
    ViewerLimits::new(&settings.http)
}

/// Splits a chunked body into its chunks' payloads; the last must be the empty one.
fn dechunk(mut wire: &[u8]) -> Vec<Vec<u8>> {
    let mut chunks = Vec::new();
    loop {
        let line = wire
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("size line");
        let size = usize::from_str_radix(std::str::from_utf8(&wire[..line]).unwrap(), 16).unwrap();
        let body = &wire[line + 2..line + 2 + size];
        assert_eq!(
            &wire[line + 2 + size..line + 4 + size],
            b"\r\n",
            "chunk end"
        );
        chunks.push(body.to_vec());
        wire = &wire[line + 4 + size..];
        if size == 0 {
            assert!(wire.is_empty(), "nothing after the last chunk");
            return chunks;
        }
    }
}

/// Splits server WebSocket frames into binary payloads; the last frame must be a close
/// with code 1000.
fn deframe(mut wire: &[u8]) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    loop {
        let (opcode, len, at) = match wire[1] {
            126 => (
                wire[0] & 0xf,
                u16::from_be_bytes([wire[2], wire[3]]) as usize,
                4,
            ),
            127 => (
                wire[0] & 0xf,
                u64::from_be_bytes(wire[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (wire[0] & 0xf, n as usize, 2),
        };
        assert_eq!(wire[0] & 0x80, 0x80, "FIN");
        let payload = &wire[at..at + len];
        wire = &wire[at + len..];
        if opcode == 8 {
            assert_eq!(&payload[..2], &1000u16.to_be_bytes(), "normal closure");
            assert!(wire.is_empty(), "nothing after the close frame");
            return messages;
        }
        assert_eq!(opcode, 2, "binary");
        messages.push(payload.to_vec());
    }
}

fn audio_tags(flv: &[u8]) -> usize {
    (0..flv.len())
        .scan(13, |at, _| {
            let head = flv.get(*at..*at + 11)?;
            let size = u32::from_be_bytes([0, head[1], head[2], head[3]]) as usize;
            *at += 15 + size;
            Some(head[0])
        })
        .filter(|&t| t == 8)
        .count()
}

/// A viewer whose stream ends between its wait and its attaching still gets every frame
/// it was handed (a device that sent a short recording and hung up at once), and a
/// chunked response ends with the last chunk, leaving the connection for another request.
#[tokio::test]
async fn a_viewer_attaching_as_its_stream_ends_gets_what_it_was_handed() {
    let merged = Duration::from_millis(100);
    // 1.2 s of audio, and 0.2 s: shorter than the muxer's wait for a video track
    for framing in [Framing::Close, Framing::Chunked, Framing::WebSocket] {
        for (merge, frames) in [
            (Duration::ZERO, 30),
            (merged, 30),
            (Duration::ZERO, 5),
            (merged, 5),
        ] {
            let hub = Hub::default();
            let key = StreamKey::new(
                DeviceId::parse("13800138000").unwrap(),
                Channel(1),
                StreamKind::Live,
            );
            let publisher = hub.publish(key.clone(), CancellationToken::new());
            let reader = hub.subscribe(&key).unwrap();
            // G.711A, then the device is gone
            for i in 0..frames {
                publisher
                    .send(Frame {
                        codec: Codec::G711A,
                        is_key: false,
                        pts: i * 40,
                        data: Bytes::from(vec![0xd5; 320]),
                    })
                    .unwrap();
            }
            drop(publisher);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut viewer = TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let (socket, _) = listener.accept().await.unwrap();
            let mut pending = BytesMut::new();
            let (ended, socket) = serve_direct(
                socket,
                reader,
                crate::output::FLV_OUTPUT,
                framing,
                merge,
                limits(&[]),
                &mut pending,
                CancellationToken::new(),
            )
            .await;
            let what = format!("{framing:?}, merge {merge:?}, {frames} frames");
            let flv = match framing {
                Framing::Close => {
                    assert_eq!(ended, Ended::Cut, "{what}");
                    drop(socket);
                    let mut flv = Vec::new();
                    viewer.read_to_end(&mut flv).await.unwrap();
                    flv
                }
                Framing::Chunked => {
                    assert_eq!(ended, Ended::Complete, "{what}");
                    assert!(socket.is_some(), "the connection is kept: {what}");
                    drop(socket);
                    let mut wire = Vec::new();
                    viewer.read_to_end(&mut wire).await.unwrap();
                    dechunk(&wire).concat()
                }
                Framing::WebSocket => {
                    assert_eq!(ended, Ended::Complete, "{what}");
                    drop(socket);
                    let mut wire = Vec::new();
                    viewer.read_to_end(&mut wire).await.unwrap();
                    deframe(&wire).concat()
                }
            };
            assert_eq!(flv.get(..3), Some(&b"FLV"[..]), "{what}");
            assert_eq!(audio_tags(&flv) as u64, frames, "{what}");
        }
    }
}

#[test]
fn a_partial_framed_write_leaves_the_rest_framed() {
    // the size line is written whole, and two payload bytes: the rest stays for the task
    let parts: [&[u8]; 3] = [b"5\r\n", b"hello", b"\r\n"];
    assert_eq!(&unwritten(&parts, 5)[..], b"llo\r\n");
    assert_eq!(&unwritten(&parts, 1)[..], b"\r\nhello\r\n");
    assert!(unwritten(&parts, 10).is_empty());
    assert_eq!(chunk_head(256 * 1024), "40000\r\n");
}

#[test]
fn a_queue_is_as_old_as_its_oldest_byte_not_taken() {
    let limits = limits(&[("JTGW__HTTP__VIEWER_MAX_LAG", "5s")]);
    let mut backlog = Backlog::new(limits.hold());
    let t0 = Instant::now();
    assert_eq!(backlog.behind(t0, &limits), None, "nothing queued");
    backlog.bytes.extend_from_slice(&[0; 1000]);
    backlog.note_queued(1000, t0);
    backlog.bytes.extend_from_slice(&[0; 1000]);
    backlog.note_queued(1000, t0 + Duration::from_secs(3));
    assert_eq!(limits.backlog_used(), 2000);
    assert_eq!(
        backlog.lag(t0 + Duration::from_secs(4)),
        Duration::from_secs(4)
    );
    assert!(matches!(
        backlog.behind(t0 + Duration::from_secs(6), &limits),
        Some(Behind::Lag(_))
    ));
    // the first thousand bytes went out: the queue is as old as the second batch
    backlog.note_taken(1000);
    assert_eq!(
        backlog.lag(t0 + Duration::from_secs(6)),
        Duration::from_secs(3)
    );
    assert_eq!(backlog.behind(t0 + Duration::from_secs(6), &limits), None);
    backlog.hold.sub(1000);
    assert_eq!(limits.backlog_used(), 1000);
    drop(backlog);
    assert_eq!(
        limits.backlog_used(),
        0,
        "a viewer gone gives its share back"
    );
}

#[test]
fn past_the_budget_only_viewers_behind_go() {
    let limits = limits(&[("JTGW__HTTP__VIEWER_BACKLOG_TOTAL", "1000")]);
    let mut slow = Backlog::new(limits.hold());
    let mut good = Backlog::new(limits.hold());
    let t0 = Instant::now();
    slow.bytes.extend_from_slice(&[0; 1500]);
    slow.note_queued(1500, t0);
    good.bytes.extend_from_slice(&[0; 10]);
    good.note_queued(10, t0 + Duration::from_millis(1900));
    let now = t0 + Duration::from_secs(2);
    assert!(matches!(
        slow.over_budget(now, &limits),
        Some(Behind::Budget(1510, 1500, _))
    ));
    assert_eq!(good.over_budget(now, &limits), None);
    assert_eq!(slow.behind(now, &limits), None, "within its own limits");
}
