//! A direct HTTP-FLV viewer: its reader becomes a hub [`Sink`], so the device's task muxes
//! the frames of each read and writes them to the viewer's socket at once, in one call;
//! only a viewer whose socket is full has its own task drain a bounded backlog.
//!
//! The body is chunked for HTTP/1.1 (one chunk per write, its framing in the same vectored
//! write as the frames) and ends with the last chunk when the stream ends, so a player can
//! tell the end of a stream from a broken connection; HTTP/1.0 bodies are close-delimited.
//!
//! A viewer that falls behind (its oldest queued byte older than `http.viewer_max_lag`, or
//! 8 MiB queued) skips to the next key frame; if it is still that far behind in time there
//! it is dropped (still holding 8 MiB, it skips on to the next).
//! Once all viewers together hold more than `http.viewer_backlog_total`, a viewer with a
//! queue older than half a second or larger than 256 KiB is dropped at once, and a viewer that
//! joins starts at the next key frame instead of with the GOP cache. Drops are logged with
//! the reason and counted in the stream's `viewers_dropped`.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::limits::{BacklogHold, ViewerLimits};
use super::ws::{CLOSE_NORMAL, ClientFrames, FrameHead, close_frame};
use crate::hub::{Reader, Sink, SinkHandle, StreamStats, ViewerCount};
use crate::media::{Frame, StreamKey};
use crate::output::shared::flv_mux::FlvMuxer;

/// Most bytes one viewer may have queued for its socket; past it the viewer skips to the
/// next key frame, and goes on from the first one it reaches with less queued. 4 s of a
/// 16 Mbit/s stream: a fast stream's reader that stalls briefly catches up without a gap
/// (slower streams meet `http.viewer_max_lag` first; memory across viewers is bounded by
/// `http.viewer_backlog_total`).
const MAX_BACKLOG: usize = 8 * 1024 * 1024;

/// Once all viewers together are over their budget, a viewer whose queue is older than
/// this, or holds more than [`BUDGET_FLOOR`], is dropped: a viewer that keeps up never has
/// a queue this old. Every viewer that never reads holds this much of the stream before it
/// goes (500 such viewers of a 1 Mbit/s stream: 31 MB over the budget; at 1 s it was 62).
const BUDGET_GRACE: Duration = Duration::from_millis(500);

/// What a viewer may hold while all viewers are over their budget (a key frame or two).
const BUDGET_FLOOR: usize = 256 * 1024;

/// Queue marks closer than this share one (bounds the marks to `max_lag / MARK_STEP`).
const MARK_STEP: Duration = Duration::from_millis(100);

/// Frames muxed for a direct write are written at the latest once this many bytes wait
/// (a publisher flushes after every read anyway).
const MAX_UNFLUSHED: usize = 256 * 1024;

/// A direct-write buffer keeps at most this much capacity between writes (a frame or two
/// of a 1-2 Mbit/s stream; 500 viewers keep 8 MiB); a larger batch (a key frame, a GOP)
/// gets a buffer of its own, given back after.
const KEPT_OUT: usize = 16 * 1024;

/// A viewer whose socket takes nothing for this long is dropped (a player paused for good,
/// or a client that keeps its window shut): it would hold its backlog and, at shutdown,
/// the gateway.
const WRITE_STALL: Duration = Duration::from_secs(20);

/// Largest piece of the backlog taken out for one write (one chunk).
const DRAIN_CHUNK: usize = 256 * 1024;

/// The terminating zero-length chunk (RFC 9112 §7.1).
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// How a response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// HTTP/1.0: the body ends when the connection closes.
    Close,
    /// HTTP/1.1: `Transfer-Encoding: chunked`, ended by the last chunk.
    Chunked,
    /// WS-FLV: each write one binary WebSocket message, ended by a close frame
    /// (`output::http_flv::ws`).
    WebSocket,
}

/// How a direct play ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The stream ended and the whole body, with its end, was written: the connection may
    /// serve another request.
    Complete,
    /// The viewer left, was dropped, or the gateway stops: close the connection.
    Cut,
}

/// Why a viewer skipped ahead or was dropped.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Behind {
    /// Its oldest queued byte is this old.
    Lag(Duration),
    /// It has this many bytes queued.
    Queued(usize),
    /// All viewers together hold this many bytes, and this viewer this many, queued this
    /// long ago.
    Budget(usize, usize, Duration),
}

impl std::fmt::Display for Behind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Behind::Lag(lag) => write!(f, "{:.1}s behind (http.viewer_max_lag)", lag.as_secs_f64()),
            Behind::Queued(n) => write!(f, "{n} bytes queued (most {MAX_BACKLOG})"),
            Behind::Budget(total, held, lag) => write!(
                f,
                "{held} bytes queued, {:.1}s behind, while all viewers hold {total} bytes \
                 (http.viewer_backlog_total)",
                lag.as_secs_f64()
            ),
        }
    }
}

/// What the publisher's side and the viewer's task share.
#[derive(Debug)]
struct DirectShared {
    key: StreamKey,
    socket: TcpStream,
    framing: Framing,
    limits: ViewerLimits,
    backlog: Mutex<Backlog>,
    /// Wakes the viewer's task: bytes to drain, or the stream ended.
    wake: Notify,
    /// The viewer is to be dropped (it fell behind, or its socket failed).
    dropped: CancellationToken,
    /// The viewer in its output's count (and its drop, if it is dropped).
    count: ViewerCount,
}

#[derive(Debug)]
struct Backlog {
    /// Bytes already framed for the wire that a partial write left: they go out first.
    wire: BytesMut,
    /// FLV bytes not written yet; each drain frames what it takes as one chunk. While any
    /// bytes wait (or the task drains), new bytes queue behind them.
    bytes: BytesMut,
    /// The memory the queue takes (its buffers' capacity and a piece being written),
    /// counted against the budget of all viewers.
    hold: BacklogHold,
    /// Bytes taken out of the queue and being written.
    in_flight: usize,
    /// Bytes ever queued, and ever taken out for writing.
    queued: u64,
    taken: u64,
    /// When queued bytes arrived: (queued count after them, time), oldest first.
    marks: VecDeque<(u64, Instant)>,
    /// The viewer's task is draining: the publisher must not write around it.
    draining: bool,
    /// The stream dropped the sink (it ended).
    ended: bool,
    /// The viewer is gone (closed, reset, dropped, or its task stopped).
    closed: bool,
}

impl Backlog {
    fn is_empty(&self) -> bool {
        self.wire.is_empty() && self.bytes.is_empty()
    }

    fn new(hold: BacklogHold) -> Backlog {
        Backlog {
            wire: BytesMut::new(),
            bytes: BytesMut::new(),
            hold,
            in_flight: 0,
            queued: 0,
            taken: 0,
            marks: VecDeque::new(),
            draining: false,
            ended: false,
            closed: false,
        }
    }

    /// Records `n` bytes just queued at `now`.
    fn note_queued(&mut self, n: usize, now: Instant) {
        if n == 0 {
            return;
        }
        self.queued += n as u64;
        self.account();
        match self.marks.back_mut() {
            Some((end, at)) if now.duration_since(*at) < MARK_STEP => *end = self.queued,
            _ => self.marks.push_back((self.queued, now)),
        }
    }

    /// Bytes queued and not yet taken out for writing (the memory they take, counted
    /// against the budget, may be more: buffers keep their capacity).
    fn waiting(&self) -> usize {
        usize::try_from(self.queued - self.taken).unwrap_or(usize::MAX)
    }

    /// Counts the memory the queue takes now against the budget.
    fn account(&mut self) {
        let memory = self.bytes.capacity() + self.wire.capacity() + self.in_flight;
        self.hold.set(memory);
    }

    /// Records `n` bytes taken out for writing.
    fn note_taken(&mut self, n: usize) {
        self.taken += n as u64;
        while self
            .marks
            .front()
            .is_some_and(|(end, _)| *end <= self.taken)
        {
            self.marks.pop_front();
        }
    }

    /// How long the oldest byte not yet taken out has waited.
    fn lag(&self, now: Instant) -> Duration {
        self.marks
            .front()
            .map_or(Duration::ZERO, |(_, at)| now.duration_since(*at))
    }

    /// Whether (and why) this viewer is too far behind to be queued more.
    fn behind(&self, now: Instant, limits: &ViewerLimits) -> Option<Behind> {
        if self.is_empty() && !self.draining {
            return None;
        }
        let lag = self.lag(now);
        if lag > limits.max_lag {
            return Some(Behind::Lag(lag));
        }
        let held = self.waiting();
        if held >= MAX_BACKLOG {
            return Some(Behind::Queued(held));
        }
        None
    }

    /// Whether this viewer is to go because all viewers hold too much and it is one of
    /// those behind (not one that keeps up).
    fn over_budget(&self, now: Instant, limits: &ViewerLimits) -> Option<Behind> {
        if !limits.over_budget() {
            return None;
        }
        let (lag, held) = (self.lag(now), self.waiting());
        (lag > BUDGET_GRACE || held > BUDGET_FLOOR)
            .then(|| Behind::Budget(limits.backlog_used(), held, lag))
    }
}

impl DirectShared {
    fn backlog(&self) -> MutexGuard<'_, Backlog> {
        // every critical section leaves the backlog consistent
        self.backlog.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops the viewer: it fell behind.
    fn drop_viewer(&self, backlog: &mut Backlog, reason: Behind) {
        info!(stream = %self.key, %reason, "flv viewer dropped");
        self.count.add_dropped();
        backlog.closed = true;
        // given back here, on the thread that allocated it (a free from another thread
        // waits for this one to collect it)
        backlog.wire = BytesMut::new();
        backlog.bytes = BytesMut::new();
        backlog.account();
        self.dropped.cancel();
    }
}

/// The publisher's end of a direct viewer: mux, then write now or queue.
struct DirectSink {
    shared: Arc<DirectShared>,
    muxer: FlvMuxer,
    out: BytesMut,
    /// Skipping to a key frame after falling behind, and why.
    skipping: Option<Behind>,
    /// Always queue for the task (merged writes).
    merge: bool,
    /// Still taking the GOP cache while attaching: never skipped (the cache is bounded by
    /// `hub.gop_cache_max_bytes`, which may exceed the backlog limit).
    attaching: bool,
    /// Start at the next key frame that comes live, not with the GOP cache: the viewer
    /// joined while all viewers were over their budget.
    late_start: bool,
    /// Dropped after `shared` (fields drop in order): the viewer's task waits for it
    /// before it takes the socket back for another request.
    _gone_tx: tokio::sync::oneshot::Sender<()>,
}

impl Sink for DirectSink {
    fn push(&mut self, frame: &Frame, stats: &StreamStats) -> bool {
        let shared = Arc::clone(&self.shared);
        let mut backlog = shared.backlog();
        if backlog.closed {
            return false;
        }
        if self.late_start {
            if self.attaching || !frame.starts_playback(self.muxer.has_video()) {
                return true;
            }
            self.late_start = false;
        }
        let queued = backlog.draining || !backlog.is_empty();
        if queued && !self.attaching {
            let now = Instant::now();
            if let Some(reason) = backlog.over_budget(now, &shared.limits) {
                stats.add_dropped(1);
                shared.drop_viewer(&mut backlog, reason);
                return false;
            }
            if self.skipping.is_none() {
                self.skipping = backlog.behind(now, &shared.limits);
            }
        }
        if let Some(reason) = self.skipping {
            if !frame.starts_playback(self.muxer.has_video()) {
                stats.add_dropped(1);
                return true;
            }
            // a key frame: the viewer goes on from here if it caught up; still too far
            // behind in time, it goes; still holding too much, it skips on
            match backlog.behind(Instant::now(), &shared.limits) {
                None => self.skipping = None,
                Some(still @ Behind::Lag(_)) => {
                    debug!(first = %reason, "flv viewer still behind at a key frame");
                    stats.add_dropped(1);
                    shared.drop_viewer(&mut backlog, still);
                    return false;
                }
                Some(_) => {
                    stats.add_dropped(1);
                    return true;
                }
            }
        }
        if queued || self.merge {
            let before = backlog.bytes.len();
            self.muxer.push_into(frame, &mut backlog.bytes);
            let added = backlog.bytes.len() - before;
            backlog.note_queued(added, Instant::now());
            if !backlog.draining && added > 0 {
                backlog.draining = true;
                shared.wake.notify_one();
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
        let shared = &*self.shared;
        let mut backlog = shared.backlog();
        if backlog.closed {
            return false;
        }
        let rest = match try_write_framed(&shared.socket, shared.framing, &self.out) {
            Ok(rest) => rest,
            Err(error) => {
                debug!(%error, "flv viewer write failed");
                backlog.closed = true;
                shared.dropped.cancel();
                return false;
            }
        };
        stats.add_bytes_out((self.out.len() - rest.payload) as u64);
        clear_out(&mut self.out);
        if rest.wire.is_empty() {
            return true;
        }
        // the socket is full: the viewer's task writes the rest when it can
        let n = rest.wire.len();
        backlog.wire = rest.wire;
        backlog.note_queued(n, Instant::now());
        backlog.draining = true;
        shared.wake.notify_one();
        true
    }
}

impl Drop for DirectSink {
    fn drop(&mut self) {
        let mut backlog = self.shared.backlog();
        // frames muxed but not flushed, or still held by the muxer, go out ahead of the end
        let before = backlog.bytes.len();
        backlog.bytes.extend_from_slice(&self.out);
        self.muxer.finish_into(&mut backlog.bytes);
        let added = backlog.bytes.len() - before;
        backlog.note_queued(added, Instant::now());
        backlog.ended = true;
        drop(backlog);
        self.shared.wake.notify_one();
    }
}

/// Empties a direct-write buffer; one that grew for a large batch (a GOP, a merged read of
/// a high-bitrate stream) is given back rather than kept per viewer.
fn clear_out(out: &mut BytesMut) {
    if out.capacity() > KEPT_OUT {
        *out = BytesMut::new();
    } else {
        out.clear();
    }
}

/// What a non-blocking framed write left.
struct Unwritten {
    /// The rest, framed as it goes on the wire (empty when everything went).
    wire: BytesMut,
    /// Payload bytes among them.
    payload: usize,
}

/// Writes `body` as one chunk (or bare, for [`Framing::Close`]) in one vectored call, as
/// far as the socket takes it now.
fn try_write_framed(
    socket: &TcpStream,
    framing: Framing,
    body: &[u8],
) -> std::io::Result<Unwritten> {
    let head = chunk_head(body.len());
    let message = FrameHead::binary(body.len());
    let parts: [&[u8]; 3] = match framing {
        Framing::Chunked => [head.as_bytes(), body, b"\r\n"],
        Framing::Close => [&[], body, &[]],
        Framing::WebSocket => [message.as_bytes(), body, &[]],
    };
    let slices = parts.map(IoSlice::new);
    let written = match socket.try_write_vectored(&slices) {
        Ok(n) => n,
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(error) => return Err(error),
    };
    let payload_written = written.saturating_sub(parts[0].len()).min(body.len());
    Ok(Unwritten {
        wire: unwritten(&parts, written),
        payload: body.len() - payload_written,
    })
}

/// What is left of `parts` once their first `written` bytes went.
fn unwritten(parts: &[&[u8]], mut written: usize) -> BytesMut {
    let mut rest = BytesMut::new();
    for part in parts {
        if written >= part.len() {
            written -= part.len();
            continue;
        }
        rest.extend_from_slice(part.get(written..).unwrap_or_default());
        written = 0;
    }
    rest
}

/// A chunk's size line: hex digits and CRLF.
fn chunk_head(len: usize) -> String {
    format!("{len:x}\r\n")
}

/// A direct viewer: its reader becomes a [`DirectSink`], and this task drains the backlog
/// when the socket is slow, notices the viewer leaving (keeping what it sends for the next
/// request, up to `pending_max` bytes), and ends the response when the stream ends.
/// Returns the socket when the whole response was written. The viewer counts as a viewer
/// of `output` (its label in the hub) for the whole play.
#[expect(
    clippy::too_many_arguments,
    reason = "the play's parts, each from a different place"
)]
pub(crate) async fn serve_direct(
    socket: TcpStream,
    reader: Reader,
    output: &'static str,
    framing: Framing,
    merge: Duration,
    limits: ViewerLimits,
    pending: &mut BytesMut,
    shutdown: CancellationToken,
) -> (Ended, Option<TcpStream>) {
    let key = reader.key().clone();
    let count = reader.count_as(output);
    let shared = Arc::new(DirectShared {
        key,
        count,
        socket,
        framing,
        limits: limits.clone(),
        backlog: Mutex::new(Backlog::new(limits.hold())),
        wake: Notify::new(),
        dropped: CancellationToken::new(),
    });
    let (gone_tx, gone_rx) = tokio::sync::oneshot::channel();
    let sink = DirectSink {
        shared: Arc::clone(&shared),
        muxer: FlvMuxer::new(reader.info(), reader.audio_mode()),
        out: BytesMut::new(),
        skipping: None,
        merge: !merge.is_zero(),
        attaching: true,
        late_start: limits.over_budget(),
        _gone_tx: gone_tx,
    };
    // dropping the handle (when this task ends) detaches the sink. `None`: the stream ended
    // while the viewer attached; what the sink was handed still goes out (the sink is gone,
    // so the bytes are counted on no stream)
    let handle = reader.into_sink(Box::new(sink));
    let unattached = StreamStats::default();
    let stats = handle.as_ref().map_or(&unattached, SinkHandle::stats);
    let ended = drive(&shared, stats, merge, pending, &shutdown).await;
    // `draining` may stay set: the publisher then only queues, never writes around a
    // chunk cut off mid-way, and sees `closed` on its next frame
    shared.backlog().closed = true;
    drop(handle);
    if ended == Ended::Cut {
        return (Ended::Cut, None);
    }
    // the sink's last reference to the socket goes just before this resolves
    let _ = gone_rx.await;
    let socket = Arc::into_inner(shared).map(|DirectShared { socket, .. }| socket);
    (Ended::Complete, socket)
}

/// The viewer's loop: drain when woken, until the stream ended and all was written, the
/// viewer left or was dropped, or `shutdown`.
async fn drive(
    shared: &DirectShared,
    stats: &StreamStats,
    merge: Duration,
    pending: &mut BytesMut,
    shutdown: &CancellationToken,
) -> Ended {
    let mut client = ClientFrames::default();
    loop {
        tokio::select! {
            () = shared.wake.notified() => {}
            () = viewer_left(&shared.socket, shared.framing, &mut client, pending) => return Ended::Cut,
            () = shared.dropped.cancelled() => return Ended::Cut,
            () = shutdown.cancelled() => return Ended::Cut,
        }
        let drained = async {
            if !merge.is_zero() {
                tokio::time::sleep(merge).await;
            }
            drain(shared, stats).await
        };
        // a stop or a drop ends a drain too: it may wait on a viewer that stopped reading
        let result = tokio::select! {
            result = drained => result,
            () = shared.dropped.cancelled() => return Ended::Cut,
            () = shutdown.cancelled() => return Ended::Cut,
        };
        if let Err(error) = result {
            if error.kind() == std::io::ErrorKind::TimedOut {
                info!(stream = %shared.key, "flv viewer dropped: its socket took nothing for {}s", WRITE_STALL.as_secs());
                shared.count.add_dropped();
            } else {
                debug!(%error, "flv viewer write failed");
            }
            return Ended::Cut;
        }
        let (closed, done) = {
            let backlog = shared.backlog();
            (backlog.closed, backlog.ended && backlog.is_empty())
        };
        if closed || (done && shared.framing == Framing::Close) {
            return Ended::Cut;
        }
        if done {
            let end = match shared.framing {
                Framing::WebSocket => close_frame(CLOSE_NORMAL, "stream ended"),
                _ => LAST_CHUNK.to_vec(),
            };
            return match write_all(shared, &end).await {
                Ok(()) => Ended::Complete,
                Err(error) => {
                    debug!(%error, "flv viewer left before the last chunk");
                    Ended::Cut
                }
            };
        }
    }
}

/// Returns once the client closed its side (or the connection failed). What it sends
/// meanwhile (a next request on a kept-alive connection) is kept in `pending`, up to
/// 16 KiB; more is read and ignored.
pub(crate) async fn client_left(socket: &TcpStream, pending: &mut BytesMut) {
    let mut scratch = [0u8; 512];
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        match socket.try_read(&mut scratch) {
            Ok(0) => return,
            Ok(n) => {
                if pending.len() < PENDING_MAX {
                    pending.extend_from_slice(scratch.get(..n).unwrap_or_default());
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Returns once the viewer left: its client closed the connection, or (WS-FLV) sent a
/// close frame.
async fn viewer_left(
    socket: &TcpStream,
    framing: Framing,
    client: &mut ClientFrames,
    pending: &mut BytesMut,
) {
    if framing != Framing::WebSocket {
        return client_left(socket, pending).await;
    }
    let mut scratch = [0u8; 512];
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        match socket.try_read(&mut scratch) {
            Ok(0) => return,
            Ok(n) => {
                if client.push(scratch.get(..n).unwrap_or_default()) {
                    return;
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Most bytes of a next request kept while a response is written.
const PENDING_MAX: usize = 16 * 1024;

/// Writes `bytes` in full, waiting for the socket at most [`WRITE_STALL`] at a time.
async fn write_all(shared: &DirectShared, bytes: &[u8]) -> std::io::Result<()> {
    let mut at = 0;
    while at < bytes.len() {
        tokio::time::timeout(WRITE_STALL, shared.socket.writable())
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        match shared.socket.try_write(bytes.get(at..).unwrap_or_default()) {
            Ok(n) => at += n,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Writes the backlog until it is empty; then the publisher writes directly again.
async fn drain(shared: &DirectShared, stats: &StreamStats) -> std::io::Result<()> {
    loop {
        let (wire, payload) = {
            let mut backlog = shared.backlog();
            if backlog.is_empty() {
                backlog.draining = false;
                return Ok(());
            }
            if backlog.wire.is_empty() {
                let n = backlog.bytes.len().min(DRAIN_CHUNK);
                backlog.note_taken(n);
                // the whole queue when it fits one chunk (the usual case), so the piece in
                // flight owns its buffer and what queues next does not share it (a shared
                // buffer outlives the count of a piece that a stalled viewer never takes)
                let piece = if n == backlog.bytes.len() {
                    backlog.in_flight = backlog.bytes.capacity();
                    std::mem::take(&mut backlog.bytes)
                } else {
                    backlog.in_flight = n;
                    backlog.bytes.split_to(n)
                };
                backlog.account();
                (Bytes::new(), piece.freeze())
            } else {
                let wire = std::mem::take(&mut backlog.wire);
                backlog.note_taken(wire.len());
                backlog.in_flight = wire.len();
                backlog.account();
                (wire.freeze(), Bytes::new())
            }
        };
        let result = if payload.is_empty() {
            write_all(shared, &wire).await
        } else {
            write_chunk(shared, &payload).await
        };
        {
            let mut backlog = shared.backlog();
            backlog.in_flight = 0;
            backlog.account();
        }
        result?;
        stats.add_bytes_out(payload.len() as u64);
    }
}

/// Writes `payload` as one chunk: one vectored write, then whatever it left.
async fn write_chunk(shared: &DirectShared, payload: &[u8]) -> std::io::Result<()> {
    tokio::time::timeout(WRITE_STALL, shared.socket.writable())
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let rest = try_write_framed(&shared.socket, shared.framing, payload)?;
    write_all(shared, &rest.wire).await
}

#[cfg(test)]
mod tests;
