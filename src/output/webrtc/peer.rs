//! One WebRTC peer: a `str0m` session driven by its own task, fed by the shared socket
//! and by a hub reader of its stream.
//!
//! The peer is a viewer of its stream (its hub reader counts, so a stream that is not live
//! is pulled from the device as for an HTTP-FLV viewer). Media starts with the GOP cache's
//! key frame; the cached frames go out at [`CATCH_UP`] times real time, so the picture
//! appears at once without a whole GOP burst on the network; live frames then go out as
//! they arrive. A keyframe request (PLI/FIR) is answered with the cached GOP again, squeezed
//! into a few milliseconds of the timeline, so the decoder gets a key frame and everything
//! since. A peer that falls behind its stream never holds the device up: its hub reader
//! skips to the next key frame (counted in the stream's `frames_dropped`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::media::{MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Event, Input, Output, Rtc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::clock;
use super::endpoint::{Datagram, LocalCandidates, Paths};
use super::to_rtp::{RtpWrite, Skip, Tracks};
use super::udp::{SendBatch, UdpMux};
use crate::hub::{Hub, Reader};
use crate::media::{AudioMode, Frame, StreamKey, Track};

/// How much faster than real time the cached frames a peer starts with go out.
const CATCH_UP: u64 = 4;

/// Frames held for pacing before the peer stops reading its stream (the hub reader then
/// skips to the next key frame for it).
const MAX_PENDING: usize = 512;

/// Least time between two answers to keyframe requests.
const KEYFRAME_ANSWER_GAP: Duration = Duration::from_millis(500);

/// Why a peer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Closed by its owner (WHEP DELETE, gateway shutdown).
    Closed,
    /// The browser closed the connection (DTLS close, ICE gone).
    PeerLeft,
    /// Nothing heard from the browser for the consent timeout.
    ConsentExpired,
    /// The stream did not come up within the wait.
    StreamUnavailable,
    /// The stream ended.
    StreamEnded,
    /// The stream's video codec is not one the browser accepted.
    CodecMismatch,
    /// The WebRTC session failed.
    Failed,
}

impl Ended {
    /// The reason as a word for logs and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::Closed => "closed",
            Ended::PeerLeft => "peer_left",
            Ended::ConsentExpired => "consent_expired",
            Ended::StreamUnavailable => "stream_unavailable",
            Ended::StreamEnded => "stream_ended",
            Ended::CodecMismatch => "codec_mismatch",
            Ended::Failed => "failed",
        }
    }
}

/// Everything a peer task needs.
pub(crate) struct PeerSetup {
    pub(crate) id: u64,
    pub(crate) key: StreamKey,
    pub(crate) rtc: Rtc,
    pub(crate) want_video: bool,
    pub(crate) want_audio: bool,
    pub(crate) rx: mpsc::Receiver<Datagram>,
    pub(crate) mux: Arc<UdpMux>,
    pub(crate) candidates: LocalCandidates,
    /// The relayed addresses (TURN) announced as candidates.
    pub(crate) relayed: Vec<SocketAddr>,
    pub(crate) hub: Hub,
    pub(crate) wait: Duration,
    pub(crate) consent_timeout: Duration,
    pub(crate) cancel: CancellationToken,
}

/// A running peer.
struct Peer {
    id: u64,
    key: StreamKey,
    rtc: Rtc,
    mux: Arc<UdpMux>,
    /// Packets gathered for one `sendmsg`, sent before the peer waits again.
    batch: SendBatch,
    paths: Paths,
    relayed: Vec<SocketAddr>,
    hub: Hub,
    want_video: bool,
    want_audio: bool,
    tracks: Tracks,
    /// Its stream, once attached (kept until the session is forgotten: [`Finished`]).
    reader: Option<Reader>,
    last_heard: Instant,
    consent_timeout: Duration,
    connected: bool,
    /// Frames read from the stream, waiting for their send time.
    pending: VecDeque<Frame>,
    /// Media time origin: (when, stream pts) of the first frame sent.
    origin: Option<(Instant, u64)>,
    /// Added to every stream pts (grows when a GOP is sent again for a keyframe request).
    shift_ms: u64,
    /// Stream pts of the last video frame sent.
    last_video_pts: Option<u64>,
    last_keyframe_answer: Option<Instant>,
    /// A keyframe request came while `str0m`'s output was drained: answered after it.
    keyframe_requested: bool,
    /// Audio not sent to this peer was logged.
    audio_warned: bool,
    /// When `str0m` wants time next (its last `Output::Timeout`).
    rtc_due: Instant,
    ended: Option<Ended>,
}

/// A peer that ended.
pub(crate) struct Finished {
    /// Why.
    pub(crate) ended: Ended,
    /// Its hub reader, dropped with this: after its session is forgotten, so a viewer
    /// count of 0 means the session is gone.
    _reader: Option<Reader>,
}

/// Runs the peer until it ends.
pub(crate) async fn run(setup: PeerSetup) -> Finished {
    let PeerSetup {
        id,
        key,
        rtc,
        want_video,
        want_audio,
        mut rx,
        mux,
        candidates,
        relayed,
        hub,
        wait,
        consent_timeout,
        cancel,
    } = setup;
    let mut peer = Peer {
        id,
        key,
        rtc,
        mux: Arc::clone(&mux),
        batch: SendBatch::default(),
        paths: Paths::new(candidates, mux.local_addr()),
        relayed,
        hub: hub.clone(),
        want_video,
        want_audio,
        tracks: Tracks::default(),
        reader: None,
        last_heard: clock(),
        consent_timeout,
        connected: false,
        pending: VecDeque::new(),
        origin: None,
        shift_ms: 0,
        last_video_pts: None,
        last_keyframe_answer: None,
        keyframe_requested: false,
        audio_warned: false,
        rtc_due: clock(),
        ended: None,
    };
    let ended = peer.serve(&hub, wait, &mut rx, &cancel).await;
    mux.unregister(id).await;
    Finished {
        ended,
        _reader: peer.reader.take(),
    }
}

impl Peer {
    /// The run loop. `str0m`'s contract: every mutation of the session (a datagram, a
    /// timeout, each media write) is followed by draining its output to a `Timeout`
    /// ([`Peer::drain`]) before the next one.
    async fn serve(
        &mut self,
        hub: &Hub,
        wait: Duration,
        rx: &mut mpsc::Receiver<Datagram>,
        cancel: &CancellationToken,
    ) -> Ended {
        let key = self.key.clone();
        // the reader attaches (and so asks for the stream) while ICE and DTLS come up
        let mut subscribe = Box::pin(hub.subscribe_or_wait_as(&key, wait, AudioMode::Passthrough));
        // the session was built and took the offer: what it has to say first
        self.drain();
        // one timer for the peer's life, moved each pass (mostly later, which tokio does
        // without re-registering it) instead of a new one per frame and per datagram
        let sleep = tokio::time::sleep_until(self.rtc_due.into());
        tokio::pin!(sleep);
        loop {
            let now = clock();
            self.send_due(now);
            if let Some(ended) = self.ended {
                return self.finish(ended, rx).await;
            }
            let consent_due = self.last_heard + self.consent_timeout;
            if now >= consent_due {
                return self.finish(Ended::ConsentExpired, rx).await;
            }
            let next_frame_due = self.pending.front().map(|f| self.send_time(f, now));
            let wake = [Some(self.rtc_due), next_frame_due, Some(consent_due)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(consent_due);
            let reading =
                self.connected && self.reader.is_some() && self.pending.len() < MAX_PENDING;
            sleep.as_mut().reset(wake.into());
            tokio::select! {
                () = cancel.cancelled() => return self.finish(Ended::Closed, rx).await,
                datagram = rx.recv() => match datagram {
                    Some(datagram) => self.receive(&datagram),
                    None => return self.finish(Ended::Closed, rx).await,
                },
                () = &mut sleep => self.timeout(clock()),
                subscribed = &mut subscribe, if self.reader.is_none() => match subscribed {
                    Some(r) => self.reader = Some(r.counted_as(crate::output::WEBRTC_OUTPUT)),
                    None => return self.finish(Ended::StreamUnavailable, rx).await,
                },
                frame = recv_frame(&mut self.reader), if reading => match frame {
                    Some(frame) => {
                        self.pending.push_back(frame);
                        // take what else is queued now, so frames that came together go out
                        // in one pass
                        while self.pending.len() < MAX_PENDING {
                            let Some(frame) = self.reader.as_mut().and_then(Reader::try_recv)
                            else {
                                break;
                            };
                            self.pending.push_back(frame);
                        }
                    }
                    None => {
                        // what is still paced goes out before the end
                        self.flush_pending();
                        return self.finish(Ended::StreamEnded, rx).await;
                    }
                },
            }
        }
    }

    /// Drains `str0m`'s output to its `Timeout` (sending what it transmits, handling its
    /// events), then answers a keyframe request it reported, each write drained in turn.
    fn drain(&mut self) {
        self.drive();
        while std::mem::take(&mut self.keyframe_requested) && self.ended.is_none() {
            self.answer_keyframe_request();
        }
    }

    /// Handles `str0m`'s output until it wants time; keeps when in `rtc_due`.
    fn drive(&mut self) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    self.batch.flush(&self.mux);
                    self.rtc_due = at;
                    return;
                }
                Ok(Output::Transmit(transmit)) if self.relayed.contains(&transmit.source) => {
                    self.batch.flush(&self.mux);
                    self.mux.send_relayed(
                        transmit.source,
                        transmit.destination,
                        &transmit.contents,
                    );
                }
                Ok(Output::Transmit(transmit)) => {
                    let source = self.paths.source_for(transmit.source, transmit.destination);
                    self.batch
                        .push(&self.mux, source, transmit.destination, &transmit.contents);
                }
                Ok(Output::Event(event)) => self.event(event),
                Err(error) => {
                    debug!(peer = self.id, %error, "webrtc session failed");
                    self.ended.get_or_insert(Ended::Failed);
                    self.batch.flush(&self.mux);
                    self.rtc_due = clock();
                    return;
                }
            }
            if !self.rtc.is_alive() {
                self.ended.get_or_insert(Ended::PeerLeft);
                self.batch.flush(&self.mux);
                self.rtc_due = clock();
                return;
            }
        }
    }

    /// The session's timer is due.
    fn timeout(&mut self, now: Instant) {
        if let Err(error) = self.rtc.handle_input(Input::Timeout(now)) {
            debug!(peer = self.id, %error, "webrtc timeout handling failed");
            self.ended.get_or_insert(Ended::Failed);
            return;
        }
        self.drain();
    }

    fn receive(&mut self, datagram: &Datagram) {
        self.last_heard = datagram.at.max(self.last_heard);
        let destination = self.paths.arrived(datagram);
        let Ok(contents) = datagram.data.as_ref().try_into() else {
            return;
        };
        let input = Input::Receive(
            datagram.at,
            Receive {
                proto: Protocol::Udp,
                source: datagram.source,
                destination,
                contents,
            },
        );
        if let Err(error) = self.rtc.handle_input(input) {
            debug!(peer = self.id, %error, "webrtc input rejected");
        }
        self.drain();
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Connected => {
                debug!(peer = self.id, stream = %self.key, "webrtc peer connected");
                self.connected = true;
            }
            Event::IceConnectionStateChange(state) => {
                // a lost pair may come back: only the consent timeout ends a quiet peer
                debug!(peer = self.id, ?state, "webrtc ICE state");
            }
            Event::Closed => {
                self.ended.get_or_insert(Ended::PeerLeft);
            }
            Event::MediaAdded(added) => self.media_added(added.mid, added.kind),
            Event::KeyframeRequest(request) => {
                // answered once the output is drained: a write now would be a mutation
                // in the middle of the drain
                self.keyframe_requested |= self.tracks.is_video(request.mid);
            }
            _ => {}
        }
    }

    fn media_added(&mut self, mid: Mid, kind: MediaKind) {
        let Some(writer) = self.rtc.writer(mid) else {
            return;
        };
        let params: Vec<_> = writer.payload_params().collect();
        self.tracks
            .media_added(mid, kind, &params, self.want_video, self.want_audio);
    }

    /// When `frame` is to go out: at once once caught up with the stream, else on the
    /// catch-up clock from the first frame.
    fn send_time(&self, frame: &Frame, now: Instant) -> Instant {
        match self.origin {
            Some((at, pts)) => at + Duration::from_millis(frame.pts.saturating_sub(pts) / CATCH_UP),
            None => now,
        }
    }

    /// Sends the pending frames whose time has come.
    fn send_due(&mut self, now: Instant) {
        if !self.connected {
            return;
        }
        while let Some(frame) = self.pending.front() {
            if self.send_time(frame, now) > now || self.ended.is_some() {
                break;
            }
            if let Some(frame) = self.pending.pop_front() {
                self.send(&frame, frame.pts, now);
            }
        }
    }

    fn flush_pending(&mut self) {
        let now = clock();
        while let Some(frame) = self.pending.pop_front() {
            self.send(&frame, frame.pts, now);
        }
    }

    /// The wall clock instant of stream time `pts` (keeps audio and video in step in the
    /// RTCP sender reports).
    fn wallclock(&mut self, pts: u64, now: Instant) -> Instant {
        let (at, origin) = *self.origin.get_or_insert((now, pts));
        match pts.checked_sub(origin) {
            Some(ahead) => at + Duration::from_millis(ahead),
            None => at,
        }
    }

    /// Writes `frame` as if its stream time were `pts` (a GOP sent again goes out at times
    /// of its own), then drains the session.
    fn send(&mut self, frame: &Frame, pts: u64, now: Instant) {
        let write = match self.tracks.translate(frame, pts + self.shift_ms) {
            Ok(write) => write,
            Err(Skip::NoTrack) => return,
            Err(Skip::VideoCodecRefused) => {
                warn!(peer = self.id, stream = %self.key, codec = ?frame.codec, "the browser did not accept this video codec: closing");
                self.ended.get_or_insert(Ended::CodecMismatch);
                return;
            }
            Err(Skip::AudioNotSendable) => {
                if !self.audio_warned {
                    self.audio_warned = true;
                    info!(peer = self.id, stream = %self.key, codec = ?frame.codec, "device audio not sent to this WebRTC peer (no decoder, or no PCMA/PCMU offered)");
                }
                return;
            }
        };
        let wallclock = self.wallclock(pts, now);
        let RtpWrite {
            mid,
            pt,
            time,
            payload,
        } = write;
        if let Some(writer) = self.rtc.writer(mid) {
            if let Err(error) = writer.write(pt, wallclock, time, &payload[..]) {
                debug!(peer = self.id, %error, "frame not written");
            }
        }
        if frame.track() == Track::Video {
            self.last_video_pts = Some(pts);
        }
        self.drain();
    }

    /// A keyframe request: the GOP cache again (key frame and every video frame since, up
    /// to what was sent), a millisecond apart right after the last frame sent; the frames
    /// after it move later by as much.
    fn answer_keyframe_request(&mut self) {
        let now = clock();
        if self
            .last_keyframe_answer
            .is_some_and(|at| now.duration_since(at) < KEYFRAME_ANSWER_GAP)
        {
            return;
        }
        let Some(last) = self.last_video_pts else {
            return;
        };
        let Some(mut gop) = self
            .hub
            .subscribe_as(&self.key, AudioMode::Passthrough)
            .map(Reader::uncounted)
        else {
            return;
        };
        self.last_keyframe_answer = Some(now);
        let mut frames = Vec::new();
        while let Some(frame) = gop.try_recv() {
            if frame.pts > last {
                break;
            }
            if frame.track() == Track::Video {
                frames.push(frame);
            }
        }
        if !frames.first().is_some_and(|f| f.is_key) {
            return;
        }
        debug!(
            peer = self.id,
            frames = frames.len(),
            "keyframe request: GOP sent again"
        );
        let base = last + self.shift_ms;
        for (i, frame) in frames.iter().enumerate() {
            self.send(frame, base + 1 + i as u64 - self.shift_ms, now);
        }
        self.shift_ms += frames.len() as u64 + 1;
        self.last_video_pts = Some(last);
    }

    async fn finish(&mut self, ended: Ended, rx: &mut mpsc::Receiver<Datagram>) -> Ended {
        let ended = self.ended.unwrap_or(ended);
        if self.rtc.is_alive() {
            // DTLS close_notify and RTCP BYE, best effort
            if self.rtc.close().is_ok() {
                self.drive();
            }
        }
        rx.close();
        ended
    }
}

/// The next frame of `reader` (never ready without one).
async fn recv_frame(reader: &mut Option<Reader>) -> Option<Frame> {
    match reader {
        Some(reader) => reader.recv().await,
        None => std::future::pending().await,
    }
}
