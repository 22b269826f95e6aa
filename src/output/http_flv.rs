//! HTTP-FLV: `GET /live/{device}_{channel}.flv` and `GET /playback/{device}_{channel}.flv`.
//!
//! A request for a stream that is not live waits (`http.flv_wait_timeout`) for the device
//! to connect, then starts at the latest key frame; 404 after the wait. The response ends
//! cleanly when the device disconnects. [`FlvMuxer`] is the pure part: hub frames in, FLV
//! bytes out.
//!
//! Two ways in, same bytes out:
//! - **Direct** ([`FlvPlayer::play`]): a connection whose first request is a play is handed
//!   over raw by `output::http_serve`. Its viewer becomes a hub [`Sink`]: the device's task
//!   muxes the frames of each read and writes them to the viewer's socket at once, in one
//!   call (no wake-up of a viewer task per frame); only a viewer whose socket is full has
//!   its own task drain a bounded backlog. The response is close-delimited (no chunking).
//! - **Routed** ([`routes`]): a play that arrives on a kept-alive connection after another
//!   request goes through axum as a streamed body, read from a hub [`Reader`].

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::{Bytes, BytesMut};
use futures_util::stream;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

pub use super::flv_mux::FlvMuxer;
use crate::config::HttpSettings;
use crate::hub::{Hub, Reader, Sink, SinkHandle, StreamStats};
use crate::media::AudioMode;
use crate::media::{Channel, DeviceId, Frame, StreamKey, StreamKind};

/// Frames already queued for a viewer are written together, up to this many bytes.
const MAX_WRITE: usize = 256 * 1024;

/// Longest merged-write interval honoured.
const MAX_MERGE: Duration = Duration::from_secs(1);

/// Most bytes a direct viewer may have waiting for its socket; past it the viewer skips
/// to the next key frame (counted in the stream's `frames_dropped`). About 7 s of a
/// 2 Mbit/s stream: a player that stalls briefly catches up without a gap.
const MAX_BACKLOG: usize = 2 * 1024 * 1024;

#[derive(Clone, Debug)]
struct FlvState {
    hub: Hub,
    wait: Duration,
    merge_write: Duration,
    audio: AudioMode,
}

impl FlvState {
    fn new(hub: Hub, settings: &HttpSettings, audio: AudioMode) -> FlvState {
        FlvState {
            hub,
            audio,
            wait: settings.flv_wait_timeout,
            // a viewer sleeping longer could overrun its queue (`hub.reader_queue` frames)
            merge_write: settings.flv_merge_write.min(MAX_MERGE),
        }
    }
}

/// The HTTP-FLV routes, with the `[http]` settings; viewers take audio as `audio` says.
pub fn routes(hub: Hub, settings: &HttpSettings, audio: AudioMode) -> Router {
    Router::new()
        .route("/live/{file}", get(play_live))
        .route("/playback/{file}", get(play_playback))
        .with_state(FlvState::new(hub, settings, audio))
}

async fn play_live(state: State<FlvState>, file: Path<String>) -> Response {
    play(state, file, StreamKind::Live).await
}

async fn play_playback(state: State<FlvState>, file: Path<String>) -> Response {
    play(state, file, StreamKind::Playback).await
}

async fn play(
    State(state): State<FlvState>,
    Path(file): Path<String>,
    kind: StreamKind,
) -> Response {
    let key = match parse_stream_file(&file, kind) {
        Ok(key) => key,
        Err(message) => return (StatusCode::BAD_REQUEST, message).into_response(),
    };
    let Some(reader) = state
        .hub
        .subscribe_or_wait_as(&key, state.wait, state.audio)
        .await
    else {
        let message = not_live_message(&key, state.wait);
        return (StatusCode::NOT_FOUND, message).into_response();
    };
    info!(stream = %key, "flv viewer joined");
    let muxer = FlvMuxer::new(reader.info(), reader.audio_mode());
    let merge = state.merge_write;
    let body = stream::unfold((reader, muxer), move |(mut reader, mut muxer)| async move {
        let mut out = BytesMut::new();
        loop {
            let Some(frame) = reader.recv().await else {
                debug!(stream = %reader.key(), "flv viewer stream ended");
                muxer.finish_into(&mut out);
                if out.is_empty() {
                    return None;
                }
                reader.add_bytes_out(out.len() as u64);
                return Some((Ok(out.freeze()), (reader, muxer)));
            };
            muxer.push_into(&frame, &mut out);
            // merged write: let frames gather for `merge` without waking per frame, then
            // take them all in one write below
            if !merge.is_zero() {
                tokio::time::sleep(merge).await;
            }
            // whatever else is already queued goes out in the same write
            while out.len() < MAX_WRITE {
                match reader.try_recv() {
                    Some(frame) => muxer.push_into(&frame, &mut out),
                    None => break,
                }
            }
            if !out.is_empty() {
                reader.add_bytes_out(out.len() as u64);
                return Some((
                    Ok::<Bytes, std::convert::Infallible>(out.freeze()),
                    (reader, muxer),
                ));
            }
        }
    });
    (
        [
            (header::CONTENT_TYPE, "video/x-flv"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// Serves HTTP-FLV plays on connections handed over raw (see the module docs).
#[derive(Clone, Debug)]
pub struct FlvPlayer {
    state: FlvState,
}

/// A play request, recognised from its request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayRequest {
    kind: StreamKind,
    file: String,
    http10: bool,
}

impl PlayRequest {
    /// A play if `method` and `path` name one (`GET /live/…` or `GET /playback/…`, one
    /// path segment; the query is ignored).
    pub fn parse(method: &str, path: &str, http10: bool) -> Option<PlayRequest> {
        if method != "GET" {
            return None;
        }
        let path = path.split_once('?').map_or(path, |(path, _)| path);
        let (kind, file) = if let Some(file) = path.strip_prefix("/live/") {
            (StreamKind::Live, file)
        } else {
            (StreamKind::Playback, path.strip_prefix("/playback/")?)
        };
        if file.is_empty() || file.contains('/') {
            return None;
        }
        Some(PlayRequest {
            kind,
            file: file.to_owned(),
            http10,
        })
    }
}

impl FlvPlayer {
    /// A player with the `[http]` settings; viewers take audio as `audio` says.
    pub fn new(hub: Hub, settings: &HttpSettings, audio: AudioMode) -> FlvPlayer {
        FlvPlayer {
            state: FlvState::new(hub, settings, audio),
        }
    }

    /// Answers `request` on `socket` (whose request head was read) until the stream ends,
    /// the viewer leaves or `shutdown`.
    pub async fn play(
        &self,
        mut socket: TcpStream,
        request: PlayRequest,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let version = if request.http10 { "1.0" } else { "1.1" };
        let key = match parse_stream_file(&request.file, request.kind) {
            Ok(key) => key,
            Err(message) => return respond(&mut socket, version, 400, &message).await,
        };
        let wait = self
            .state
            .hub
            .subscribe_or_wait_as(&key, self.state.wait, self.state.audio);
        let reader = tokio::select! {
            reader = wait => reader,
            // a viewer that gives up waiting for the device stops counting as one
            () = client_left(&socket) => return Ok(()),
            () = shutdown.cancelled() => return Ok(()),
        };
        let Some(reader) = reader else {
            let message = not_live_message(&key, self.state.wait);
            return respond(&mut socket, version, 404, &message).await;
        };
        info!(stream = %key, "flv viewer joined");
        socket
            .write_all(
                format!(
                    "HTTP/{version} 200 OK\r\nContent-Type: video/x-flv\r\nCache-Control: no-cache\r\n\
                     Access-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .await?;
        serve_direct(socket, reader, self.state.merge_write, shutdown).await;
        debug!(stream = %key, "flv viewer left");
        Ok(())
    }
}

/// Returns once the client closed its side (or the connection failed). A player sends
/// nothing after its request, so whatever else arrives is read and ignored.
async fn client_left(socket: &TcpStream) {
    let mut scratch = [0u8; 512];
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        match socket.try_read(&mut scratch) {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// A short plain-text answer, then close.
async fn respond(
    socket: &mut TcpStream,
    version: &str,
    status: u16,
    message: &str,
) -> std::io::Result<()> {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let head = format!(
        "HTTP/{version} {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        message.len()
    );
    socket.write_all(head.as_bytes()).await?;
    socket.write_all(message.as_bytes()).await?;
    socket.shutdown().await
}

fn not_live_message(key: &StreamKey, wait: Duration) -> String {
    format!(
        "stream {key} is not live: the device did not connect within {}s\n",
        wait.as_secs()
    )
}

/// What the publisher's side and the viewer's task share.
#[derive(Debug)]
struct DirectShared {
    socket: TcpStream,
    backlog: std::sync::Mutex<Backlog>,
    /// Wakes the viewer's task: bytes to drain, the stream ended, or the viewer is gone.
    wake: Notify,
}

#[derive(Debug, Default)]
struct Backlog {
    /// Bytes the socket did not take yet; while any wait (or the task drains), new bytes
    /// queue behind them.
    bytes: BytesMut,
    /// The viewer's task is draining: the publisher must not write around it.
    draining: bool,
    /// The stream dropped the sink (it ended).
    ended: bool,
    /// The viewer is gone (closed, reset, or its task stopped).
    closed: bool,
}

impl DirectShared {
    fn backlog(&self) -> std::sync::MutexGuard<'_, Backlog> {
        // every critical section leaves the backlog consistent
        self.backlog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The publisher's end of a direct viewer: mux, then write now or queue.
struct DirectSink {
    shared: std::sync::Arc<DirectShared>,
    muxer: FlvMuxer,
    out: BytesMut,
    /// Skipping to a key frame after the backlog overflowed.
    skipping: bool,
    /// Always queue for the task (merged writes).
    merge: bool,
    /// Still taking the GOP cache while attaching: never skipped (the cache is bounded by
    /// `hub.gop_cache_max_bytes`, which may exceed the backlog limit).
    attaching: bool,
}

/// Frames muxed for a direct write are written at the latest once this many bytes wait
/// (a publisher flushes after every read anyway).
const MAX_UNFLUSHED: usize = 256 * 1024;

impl Sink for DirectSink {
    fn push(&mut self, frame: &Frame, stats: &StreamStats) -> bool {
        let mut backlog = self.shared.backlog();
        if backlog.closed {
            return false;
        }
        let queued = backlog.draining || !backlog.bytes.is_empty();
        if queued && !self.attaching && backlog.bytes.len() >= MAX_BACKLOG {
            self.skipping = true;
        }
        if self.skipping {
            let restarts = frame.starts_playback(self.muxer.has_video());
            if !restarts || backlog.bytes.len() >= MAX_BACKLOG {
                stats.add_dropped(1);
                return true;
            }
            self.skipping = false;
        }
        if queued || self.merge {
            let before = backlog.bytes.len();
            self.muxer.push_into(frame, &mut backlog.bytes);
            if !backlog.draining && backlog.bytes.len() > before {
                backlog.draining = true;
                self.shared.wake.notify_one();
            }
            return true;
        }
        // written at the publisher's flush, with whatever else this read brought
        self.muxer.push_into(frame, &mut self.out);
        drop(backlog);
        self.out.len() < MAX_UNFLUSHED || self.flush(stats)
    }

    fn flush(&mut self, stats: &StreamStats) -> bool {
        // the hub flushes once right after handing over the GOP cache
        self.attaching = false;
        if self.out.is_empty() {
            return true;
        }
        let mut backlog = self.shared.backlog();
        if backlog.closed {
            return false;
        }
        match self.shared.socket.try_write(&self.out) {
            Ok(n) => {
                stats.add_bytes_out(n as u64);
                if n == self.out.len() {
                    clear_out(&mut self.out);
                    return true;
                }
                backlog.bytes.extend_from_slice(&self.out[n..]);
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                backlog.bytes.extend_from_slice(&self.out);
            }
            Err(error) => {
                debug!(%error, "flv viewer write failed");
                backlog.closed = true;
                self.shared.wake.notify_one();
                return false;
            }
        }
        clear_out(&mut self.out);
        // the socket is full: the viewer's task writes the rest when it can
        backlog.draining = true;
        self.shared.wake.notify_one();
        true
    }
}

/// Empties a direct-write buffer; one that grew for a large batch (a GOP, a merged read of
/// a high-bitrate stream) is given back rather than kept per viewer.
fn clear_out(out: &mut BytesMut) {
    if out.capacity() > MAX_UNFLUSHED {
        *out = BytesMut::new();
    } else {
        out.clear();
    }
}

impl Drop for DirectSink {
    fn drop(&mut self) {
        let mut backlog = self.shared.backlog();
        // frames muxed but not flushed, or still held by the muxer, go out ahead of the end
        backlog.bytes.extend_from_slice(&self.out);
        self.muxer.finish_into(&mut backlog.bytes);
        backlog.ended = true;
        drop(backlog);
        self.shared.wake.notify_one();
    }
}

/// A direct viewer: its reader becomes a [`DirectSink`], and this task drains the backlog
/// when the socket is slow, notices the viewer leaving, and closes the response when the
/// stream ends.
async fn serve_direct(
    socket: TcpStream,
    reader: Reader,
    merge: Duration,
    shutdown: CancellationToken,
) {
    let shared = std::sync::Arc::new(DirectShared {
        socket,
        backlog: std::sync::Mutex::new(Backlog::default()),
        wake: Notify::new(),
    });
    let sink = DirectSink {
        shared: std::sync::Arc::clone(&shared),
        muxer: FlvMuxer::new(reader.info(), reader.audio_mode()),
        out: BytesMut::new(),
        skipping: false,
        merge: !merge.is_zero(),
        attaching: true,
    };
    // dropping the handle (when this task ends) detaches the sink. `None`: the stream ended
    // while the viewer attached; what the sink was handed still goes out (the sink is gone,
    // so the bytes are counted on no stream)
    let handle = reader.into_sink(Box::new(sink));
    let unattached = StreamStats::default();
    let stats = handle.as_ref().map_or(&unattached, SinkHandle::stats);
    loop {
        tokio::select! {
            () = shared.wake.notified() => {}
            () = client_left(&shared.socket) => break,
            () = shutdown.cancelled() => break,
        }
        let drained = async {
            if !merge.is_zero() {
                tokio::time::sleep(merge).await;
            }
            drain(&shared, stats).await
        };
        // a stop ends a drain too: it may wait on a viewer that stopped reading
        let result = tokio::select! {
            result = drained => result,
            () = shutdown.cancelled() => break,
        };
        if let Err(error) = result {
            debug!(%error, "flv viewer dropped");
            break;
        }
        let backlog = shared.backlog();
        if backlog.closed || (backlog.ended && backlog.bytes.is_empty()) {
            break;
        }
    }
    // `draining` may stay set: the publisher then only queues, never writes around a
    // chunk cut off mid-way, and sees `closed` on its next frame
    shared.backlog().closed = true;
}

/// A viewer whose socket takes nothing for this long is dropped (a player paused for good,
/// or a client that keeps its window shut): it would hold its backlog and, at shutdown,
/// the gateway.
const WRITE_STALL: Duration = Duration::from_secs(20);

/// Largest piece of the backlog taken out for one write, so the backlog limit plus this
/// bounds what a slow viewer holds.
const DRAIN_CHUNK: usize = 256 * 1024;

/// Writes the backlog until it is empty; then the publisher writes directly again.
async fn drain(shared: &DirectShared, stats: &StreamStats) -> std::io::Result<()> {
    loop {
        let chunk = {
            let mut backlog = shared.backlog();
            if backlog.bytes.is_empty() {
                backlog.draining = false;
                return Ok(());
            }
            let n = backlog.bytes.len().min(DRAIN_CHUNK);
            backlog.bytes.split_to(n).freeze()
        };
        let mut at = 0;
        while at < chunk.len() {
            tokio::time::timeout(WRITE_STALL, shared.socket.writable())
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            match shared.socket.try_write(&chunk[at..]) {
                Ok(n) => at += n,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error),
            }
        }
        stats.add_bytes_out(chunk.len() as u64);
    }
}

/// Parses `{device}_{channel}.flv`.
fn parse_stream_file(file: &str, kind: StreamKind) -> Result<StreamKey, String> {
    let usage = "expected /{live|playback}/{device}_{channel}.flv, e.g. /live/13800138000_1.flv";
    let stem = file
        .strip_suffix(".flv")
        .ok_or_else(|| format!("{file:?}: {usage}\n"))?;
    let (device, channel) = stem
        .rsplit_once('_')
        .ok_or_else(|| format!("{file:?}: {usage}\n"))?;
    let device = DeviceId::parse(device).map_err(|e| format!("{e}\n"))?;
    let channel: u8 = channel
        .parse()
        .map_err(|_| format!("invalid channel {channel:?}: expected 0 to 255\n"))?;
    Ok(StreamKey::new(device, Channel(channel), kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Codec;
    use tokio::io::AsyncReadExt;

    /// A viewer whose stream ends between its wait and its attaching still gets every frame
    /// it was handed (a device that sent a short recording and hung up at once).
    #[tokio::test]
    async fn a_viewer_attaching_as_its_stream_ends_gets_what_it_was_handed() {
        let merged = Duration::from_millis(100);
        // 1.2 s of audio, and 0.2 s: shorter than the muxer's wait for a video track
        for (merge, frames) in [
            (Duration::ZERO, 30),
            (merged, 30),
            (Duration::ZERO, 5),
            (merged, 5),
        ] {
            let hub = Hub::default();
            let key = parse_stream_file("13800138000_1.flv", StreamKind::Live).unwrap();
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
            serve_direct(socket, reader, merge, CancellationToken::new()).await;
            let mut flv = Vec::new();
            viewer.read_to_end(&mut flv).await.unwrap();
            assert_eq!(flv.get(..3), Some(&b"FLV"[..]), "merge {merge:?}");
            let audio_tags = (0..flv.len())
                .scan(13, |at, _| {
                    let head = flv.get(*at..*at + 11)?;
                    let size = u32::from_be_bytes([0, head[1], head[2], head[3]]) as usize;
                    *at += 15 + size;
                    Some(head[0])
                })
                .filter(|&t| t == 8)
                .count();
            assert_eq!(audio_tags as u64, frames, "merge {merge:?}");
        }
    }

    #[test]
    fn stream_file_names_parse_to_canonical_keys() {
        let key = parse_stream_file("013800138000_1.flv", StreamKind::Live).unwrap();
        assert_eq!(key.to_string(), "live/13800138000_1");
        assert!(parse_stream_file("13800138000_1.mp4", StreamKind::Live).is_err());
        assert!(
            parse_stream_file("abc_1.flv", StreamKind::Live)
                .unwrap_err()
                .contains("invalid device id")
        );
        assert!(
            parse_stream_file("13800138000_x.flv", StreamKind::Live)
                .unwrap_err()
                .contains("channel")
        );
    }
}
