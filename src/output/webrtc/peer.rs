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

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::format::Codec as RtpCodec;
use str0m::media::{Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Event, Input, Output, Rtc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::clock;
use super::udp::{Datagram, SendBatch, UdpMux};
use crate::codec::audio::aac_decode::AacToTelephony;
use crate::codec::audio::{PcmDecoder, PcmFormat};
use crate::hub::{Hub, Reader};
use crate::media::{AudioMode, Codec, Frame, StreamKey, Track};

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

/// Where the peer's ICE candidates are, to give `str0m` the candidate a datagram came to
/// and to send from the address the browser's packets arrived on.
#[derive(Debug, Clone)]
pub(crate) struct LocalCandidates {
    /// Announced addresses (host candidates).
    pub(crate) announced: Vec<SocketAddr>,
    /// Addresses of this machine among them (the rest are public addresses of a NAT).
    pub(crate) machine: Vec<IpAddr>,
}

impl LocalCandidates {
    /// The announced candidate a datagram sent to `local_ip` arrived through: the one with
    /// that address, else (NAT 1:1: sent to the public address, arrived at a private one)
    /// the first of its family.
    fn candidate_for(&self, local_ip: Option<IpAddr>) -> Option<SocketAddr> {
        let ip = local_ip?;
        self.announced
            .iter()
            .find(|c| c.ip() == ip)
            .or_else(|| self.announced.iter().find(|c| c.is_ipv4() == ip.is_ipv4()))
            .copied()
    }
}

/// What the peer sends, as negotiated.
#[derive(Debug, Default)]
struct Tracks {
    video: Option<VideoOut>,
    audio: Option<AudioOut>,
}

#[derive(Debug)]
struct VideoOut {
    mid: Mid,
    h264: Option<Pt>,
    h265: Option<Pt>,
}

#[derive(Debug)]
struct AudioOut {
    mid: Mid,
    pcma: Option<Pt>,
    pcmu: Option<Pt>,
    decoder: Option<PcmDecoder>,
    aac: Option<Box<AacToTelephony>>,
    pcm: Vec<i16>,
    warned: bool,
}

/// Everything a peer task needs.
pub(crate) struct PeerSetup {
    pub(crate) id: u64,
    pub(crate) key: StreamKey,
    pub(crate) rtc: Rtc,
    pub(crate) ufrag: String,
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
    candidates: LocalCandidates,
    relayed: Vec<SocketAddr>,
    hub: Hub,
    want_video: bool,
    want_audio: bool,
    tracks: Tracks,
    /// The local address each remote address's packets arrived on.
    arrived_on: HashMap<SocketAddr, IpAddr>,
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
    ended: Option<Ended>,
}

/// Runs the peer until it ends; returns why.
pub(crate) async fn run(setup: PeerSetup) -> Ended {
    let PeerSetup {
        id,
        key,
        rtc,
        ufrag,
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
        candidates,
        relayed,
        hub: hub.clone(),
        want_video,
        want_audio,
        tracks: Tracks::default(),
        arrived_on: HashMap::new(),
        last_heard: clock(),
        consent_timeout,
        connected: false,
        pending: VecDeque::new(),
        origin: None,
        shift_ms: 0,
        last_video_pts: None,
        last_keyframe_answer: None,
        ended: None,
    };
    let ended = peer.serve(&hub, wait, &mut rx, &cancel).await;
    mux.unregister(id, &ufrag);
    ended
}

impl Peer {
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
        let mut reader: Option<Reader> = None;
        loop {
            let now = clock();
            self.send_due(now);
            let rtc_due = self.drive();
            if let Some(ended) = self.ended {
                return self.finish(ended, rx).await;
            }
            let consent_due = self.last_heard + self.consent_timeout;
            if now >= consent_due {
                return self.finish(Ended::ConsentExpired, rx).await;
            }
            let next_frame_due = self.pending.front().map(|f| self.send_time(f, now));
            let wake = [Some(rtc_due), next_frame_due, Some(consent_due)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(consent_due);
            let reading = self.connected && reader.is_some() && self.pending.len() < MAX_PENDING;
            tokio::select! {
                () = cancel.cancelled() => return self.finish(Ended::Closed, rx).await,
                datagram = rx.recv() => match datagram {
                    Some(datagram) => self.receive(&datagram),
                    None => return self.finish(Ended::Closed, rx).await,
                },
                () = tokio::time::sleep_until(wake.into()) => {
                    if let Err(error) = self.rtc.handle_input(Input::Timeout(clock())) {
                        debug!(peer = self.id, %error, "webrtc timeout handling failed");
                        return self.finish(Ended::Failed, rx).await;
                    }
                }
                subscribed = &mut subscribe, if reader.is_none() => match subscribed {
                    Some(r) => reader = Some(r.counted_as(crate::output::WEBRTC_OUTPUT)),
                    None => return self.finish(Ended::StreamUnavailable, rx).await,
                },
                frame = recv_frame(&mut reader), if reading => match frame {
                    Some(frame) => {
                        self.pending.push_back(frame);
                        // take what else is queued now, so frames that came together go out
                        // in one pass
                        while self.pending.len() < MAX_PENDING {
                            let Some(frame) = reader.as_mut().and_then(Reader::try_recv) else {
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

    /// Handles `str0m`'s output until it wants time; returns when.
    fn drive(&mut self) -> Instant {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    self.batch.flush(&self.mux);
                    return at;
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
                    let source = self.source_for(transmit.source, transmit.destination);
                    self.batch
                        .push(&self.mux, source, transmit.destination, &transmit.contents);
                }
                Ok(Output::Event(event)) => self.event(event),
                Err(error) => {
                    debug!(peer = self.id, %error, "webrtc session failed");
                    self.ended.get_or_insert(Ended::Failed);
                    self.batch.flush(&self.mux);
                    return clock();
                }
            }
            if !self.rtc.is_alive() {
                self.ended.get_or_insert(Ended::PeerLeft);
                self.batch.flush(&self.mux);
                return clock();
            }
        }
    }

    /// The local address to send from to `destination`: the announced candidate if it is
    /// an address of this machine, else where that peer's packets arrived.
    fn source_for(&self, candidate: SocketAddr, destination: SocketAddr) -> Option<IpAddr> {
        if self.candidates.machine.contains(&candidate.ip()) {
            return Some(candidate.ip());
        }
        self.arrived_on.get(&destination).copied()
    }

    fn receive(&mut self, datagram: &Datagram) {
        self.last_heard = datagram.at.max(self.last_heard);
        let local_ip = datagram.local_ip;
        if let Some(ip) = local_ip {
            self.arrived_on.insert(datagram.source, ip);
        }
        let destination = datagram.relayed.unwrap_or_else(|| {
            self.candidates
                .candidate_for(local_ip)
                .unwrap_or_else(|| self.mux.local_addr())
        });
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
                let is_video = self
                    .tracks
                    .video
                    .as_ref()
                    .is_some_and(|v| v.mid == request.mid);
                if is_video {
                    self.answer_keyframe_request();
                }
            }
            _ => {}
        }
    }

    fn media_added(&mut self, mid: Mid, kind: MediaKind) {
        let Some(writer) = self.rtc.writer(mid) else {
            return;
        };
        let pt = |codec: RtpCodec, packetization: Option<u8>| {
            writer
                .payload_params()
                .find(|p| {
                    p.spec().codec == codec
                        && packetization
                            .is_none_or(|m| p.spec().format.packetization_mode == Some(m))
                })
                .map(|p| p.pt())
        };
        match kind {
            MediaKind::Video if self.want_video && self.tracks.video.is_none() => {
                self.tracks.video = Some(VideoOut {
                    mid,
                    h264: pt(RtpCodec::H264, Some(1)).or_else(|| pt(RtpCodec::H264, None)),
                    h265: pt(RtpCodec::H265, None),
                });
            }
            MediaKind::Audio if self.want_audio && self.tracks.audio.is_none() => {
                self.tracks.audio = Some(AudioOut {
                    mid,
                    pcma: pt(RtpCodec::PCMA, None),
                    pcmu: pt(RtpCodec::PCMU, None),
                    decoder: None,
                    aac: None,
                    pcm: Vec::new(),
                    warned: false,
                });
            }
            _ => {}
        }
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
            if self.send_time(frame, now) > now {
                break;
            }
            if let Some(frame) = self.pending.pop_front() {
                self.send(&frame, now);
            }
        }
    }

    fn flush_pending(&mut self) {
        let now = clock();
        while let Some(frame) = self.pending.pop_front() {
            self.send(&frame, now);
        }
        self.drive();
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

    fn send(&mut self, frame: &Frame, now: Instant) {
        match frame.track() {
            Track::Video => self.send_video(frame, now),
            Track::Audio => self.send_audio(frame, now),
        }
    }

    fn send_video(&mut self, frame: &Frame, now: Instant) {
        let Some(video) = &self.tracks.video else {
            return;
        };
        let pt = match frame.codec {
            Codec::H264 => video.h264,
            Codec::H265 => video.h265,
            _ => None,
        };
        let Some(pt) = pt else {
            warn!(peer = self.id, stream = %self.key, codec = ?frame.codec, "the browser did not accept this video codec: closing");
            self.ended.get_or_insert(Ended::CodecMismatch);
            return;
        };
        let mid = video.mid;
        let pts = frame.pts + self.shift_ms;
        let wallclock = self.wallclock(frame.pts, now);
        let time = MediaTime::new(pts * 90, Frequency::NINETY_KHZ);
        if let Some(writer) = self.rtc.writer(mid) {
            if let Err(error) = writer.write(pt, wallclock, time, frame.data.as_ref()) {
                debug!(peer = self.id, %error, "video frame not written");
            }
        }
        self.last_video_pts = Some(frame.pts);
    }

    fn send_audio(&mut self, frame: &Frame, now: Instant) {
        let Some(audio) = &mut self.tracks.audio else {
            return;
        };
        let Some((pt, payload)) = audio.payload(frame) else {
            if !audio.warned {
                audio.warned = true;
                info!(peer = self.id, stream = %self.key, codec = ?frame.codec, "device audio not sent to this WebRTC peer (no decoder, or no PCMA/PCMU offered)");
            }
            return;
        };
        let mid = audio.mid;
        let pts = frame.pts + self.shift_ms;
        let wallclock = self.wallclock(frame.pts, now);
        let time = MediaTime::new(pts * 8, Frequency::EIGHT_KHZ);
        if let Some(writer) = self.rtc.writer(mid) {
            if let Err(error) = writer.write(pt, wallclock, time, payload) {
                debug!(peer = self.id, %error, "audio frame not written");
            }
        }
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
            let mut copy = frame.clone();
            copy.pts = base + 1 + i as u64 - self.shift_ms;
            self.send_video(&copy, now);
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

impl AudioOut {
    /// The payload type and the bytes to send for a device audio frame: G.711 as it came
    /// when the browser takes that law, else decoded and encoded as A-law (or µ-law).
    fn payload(&mut self, frame: &Frame) -> Option<(Pt, Vec<u8>)> {
        match (frame.codec, self.pcma, self.pcmu) {
            (Codec::G711A, Some(pt), _) | (Codec::G711U, _, Some(pt)) => {
                return Some((pt, frame.data.to_vec()));
            }
            (Codec::G711U, Some(pt), None) => {
                let bytes = frame
                    .data
                    .iter()
                    .map(|b| audio_codec_algorithms::convert_ulaw_to_alaw(*b))
                    .collect();
                return Some((pt, bytes));
            }
            _ => {}
        }
        self.pcm.clear();
        if frame.codec == Codec::Aac {
            let aac = self.aac.get_or_insert_with(Box::default);
            aac.decode(&frame.data, &mut self.pcm).ok()?;
        } else {
            let format = match frame.codec {
                Codec::G711A => PcmFormat::G711A,
                Codec::G711U => PcmFormat::G711U,
                Codec::G726 => PcmFormat::G726,
                Codec::Adpcm => PcmFormat::ImaAdpcm,
                _ => return None,
            };
            if self.decoder.as_ref().map(PcmDecoder::format) != Some(format) {
                self.decoder = Some(PcmDecoder::new(format));
            }
            self.decoder
                .as_mut()?
                .decode(&frame.data, &mut self.pcm)
                .ok()?;
        }
        match (self.pcma, self.pcmu) {
            (Some(pt), _) => Some((
                pt,
                self.pcm
                    .iter()
                    .map(|s| audio_codec_algorithms::encode_alaw(*s))
                    .collect(),
            )),
            (None, Some(pt)) => Some((
                pt,
                self.pcm
                    .iter()
                    .map(|s| audio_codec_algorithms::encode_ulaw(*s))
                    .collect(),
            )),
            (None, None) => None,
        }
    }
}

/// The next frame of `reader` (never ready without one).
async fn recv_frame(reader: &mut Option<Reader>) -> Option<Frame> {
    match reader {
        Some(reader) => reader.recv().await,
        None => std::future::pending().await,
    }
}
