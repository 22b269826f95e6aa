//! An HTTP-FLV viewer for the load runner: reads the gateway's FLV over HTTP/1.1 (a chunked
//! body, decoded by `chunked`, ended by the last chunk), splits it into tags and matches
//! each media tag to the frame the device sent, for latency and loss.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::chunked::Dechunker;
use crate::device::{InFlight, tail_key};

/// FLV tag types.
const TAG_AUDIO: u8 = 8;
const TAG_VIDEO: u8 = 9;

/// How often a viewer that is not a latency probe reads.
const LAZY_READ: std::time::Duration = std::time::Duration::from_millis(100);

/// What one viewer saw.
#[derive(Debug, Default)]
pub(crate) struct ViewerReport {
    /// Media tags received that matched a sent frame sent inside the window.
    pub(crate) delivered_in_window: u64,
    /// Frames sent inside the window that never arrived (skipped over, or still missing at
    /// the end).
    pub(crate) lost_in_window: u64,
    /// Latency of every frame sent inside the window, microseconds.
    pub(crate) latencies_us: Vec<u32>,
    /// Media tags that matched no sent frame.
    pub(crate) unmatched: u64,
    /// Bytes of FLV received.
    pub(crate) bytes: u64,
    /// The body ended with the last chunk (the stream ended), not a closed connection.
    pub(crate) clean_end: bool,
}

/// A parsed FLV tag.
struct Tag {
    kind: u8,
    body: bytes::Bytes,
}

/// Sends the request and returns the socket positioned at the FLV body.
pub(crate) async fn open(http: SocketAddr, path: &str) -> anyhow::Result<(TcpStream, BytesMut)> {
    let mut socket = TcpStream::connect(http).await.context("connect http")?;
    socket
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").as_bytes())
        .await?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
                bail!("{path}: {}", head.lines().next().unwrap_or_default());
            }
            buf.advance(end + 4);
            return Ok((socket, buf));
        }
        if socket.read_buf(&mut buf).await? == 0 {
            bail!("{path}: connection closed before the response header");
        }
    }
}

/// Reads FLV tags until the stream ends, matching each to `in_flight`. A latency probe
/// reads as soon as bytes arrive and records latencies; other viewers read every
/// `LAZY_READ` (as a player with a buffer does), which keeps the load generator cheap and
/// still checks that every frame arrives.
pub(crate) async fn watch(
    http: SocketAddr,
    path: String,
    in_flight: InFlight,
    window_start: Instant,
    probe: bool,
) -> anyhow::Result<ViewerReport> {
    let (socket, mut buf) = open(http, &path).await?;
    let mut socket = if probe {
        Socket::Polled(socket)
    } else {
        // read from a timer, not registered with epoll: on loopback each wake-up of a
        // registered reader is charged to the gateway's send (a remote player costs the
        // gateway nothing of the kind)
        Socket::Timed(socket.into_std()?)
    };
    let mut report = ViewerReport::default();
    let mut header_done = false;
    // `buf` holds the first raw bytes after the head; the FLV body is decoded out of them
    let mut raw = std::mem::take(&mut buf);
    let mut dechunker = Dechunker::default();
    loop {
        report.clean_end = dechunker.decode(&mut raw, &mut buf)?;
        while let Some(tag) = next_tag(&mut buf, &mut header_done)? {
            // AAC is the gateway's own encoding: nothing of it to match to what was sent
            if !is_media(&tag) || is_aac(&tag) {
                continue;
            }
            let now = Instant::now();
            let key = tail_key(&tag.body);
            let mut queue = in_flight.lock().unwrap_or_else(|e| e.into_inner());
            let Some(pos) = queue.iter().position(|(k, _)| *k == key) else {
                report.unmatched += 1;
                continue;
            };
            for (_, sent) in queue.drain(..pos) {
                report.lost_in_window += u64::from(sent >= window_start);
            }
            if let Some((_, sent)) = queue.pop_front() {
                if sent >= window_start {
                    report.delivered_in_window += 1;
                    if !probe {
                        continue;
                    }
                    let us = now.saturating_duration_since(sent).as_micros();
                    report
                        .latencies_us
                        .push(u32::try_from(us).unwrap_or(u32::MAX));
                }
            }
        }
        if report.clean_end {
            break;
        }
        let n = socket.read(&mut raw).await?;
        if n == 0 {
            break;
        }
        report.bytes += n as u64;
    }
    let queue = in_flight.lock().unwrap_or_else(|e| e.into_inner());
    report.lost_in_window += queue.iter().filter(|(_, t)| *t >= window_start).count() as u64;
    Ok(report)
}

/// A viewer's socket: read when ready (latency probes) or every [`LAZY_READ`].
enum Socket {
    Polled(TcpStream),
    Timed(std::net::TcpStream),
}

impl Socket {
    /// Appends what arrived to `buf`; 0 at the end of the stream.
    async fn read(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        let socket = match self {
            Socket::Polled(socket) => return socket.read_buf(buf).await,
            Socket::Timed(socket) => socket,
        };
        loop {
            tokio::time::sleep(LAZY_READ).await;
            let mut total = 0;
            loop {
                let mut chunk = [0u8; 64 * 1024];
                match std::io::Read::read(socket, &mut chunk) {
                    Ok(0) if total == 0 => return Ok(0),
                    Ok(0) => return Ok(total),
                    Ok(n) => {
                        buf.extend_from_slice(&chunk[..n]);
                        total += n;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            if total > 0 {
                return Ok(total);
            }
        }
    }
}

/// Time from sending the request to the first key frame tag (after its sequence header).
pub(crate) async fn first_key_frame(http: SocketAddr, path: &str) -> anyhow::Result<f64> {
    let asked = Instant::now();
    let (mut socket, mut raw) = open(http, path).await?;
    let mut header_done = false;
    let (mut buf, mut dechunker) = (BytesMut::new(), Dechunker::default());
    loop {
        let ended = dechunker.decode(&mut raw, &mut buf)?;
        while let Some(tag) = next_tag(&mut buf, &mut header_done)? {
            if tag.kind == TAG_VIDEO && is_media(&tag) && tag.body[0] >> 4 == 1 {
                return Ok(asked.elapsed().as_secs_f64() * 1000.0);
            }
        }
        if ended || socket.read_buf(&mut raw).await? == 0 {
            bail!("{path}: stream ended before a key frame");
        }
    }
}

/// An AAC audio tag (sound format 10).
fn is_aac(tag: &Tag) -> bool {
    tag.kind == TAG_AUDIO && tag.body.first().is_some_and(|b| b >> 4 == 10)
}

/// A media tag, as opposed to script data and decoder configuration.
fn is_media(tag: &Tag) -> bool {
    match tag.kind {
        // AVC/HEVC packet type 1 = NAL units (0 = sequence header, 2 = end of sequence)
        TAG_VIDEO => tag.body.get(1) == Some(&1),
        TAG_AUDIO => tag.body.len() > 1,
        _ => false,
    }
}

/// Takes the next whole tag off `buf` (the 9-byte file header and the 4-byte previous tag
/// sizes are skipped).
fn next_tag(buf: &mut BytesMut, header_done: &mut bool) -> anyhow::Result<Option<Tag>> {
    if !*header_done {
        if buf.len() < 13 {
            return Ok(None);
        }
        if &buf[..3] != b"FLV" {
            bail!("not FLV: {:02x?}", &buf[..3]);
        }
        buf.advance(13);
        *header_done = true;
    }
    if buf.len() < 11 {
        return Ok(None);
    }
    let size = usize::from(buf[1]) << 16 | usize::from(buf[2]) << 8 | usize::from(buf[3]);
    if buf.len() < 11 + size + 4 {
        return Ok(None);
    }
    let kind = buf[0] & 0x1f;
    buf.advance(11);
    let body = buf.split_to(size).freeze();
    buf.advance(4);
    Ok(Some(Tag { kind, body }))
}
