//! One device connection: read, decode, reassemble, translate, publish.
//!
//! The loop is thin; the translation from JT/T 1078 frames to hub frames (`ChannelIngest::translate`)
//! is the one place where wire types become `media` types.
//!
//! A connection may carry several logical channels. Each publishes on its own: when another
//! connection takes a channel over, only that channel stops (its later packets are ignored,
//! so it is never taken back); the connection closes once none of its channels is left.
//!
//! A channel announces its stream only with its first well-formed frame (`admission.rs`),
//! and only packets of a channel that delivered one keep the connection from its idle
//! timeout: garbage, a trickle of bytes or packets that never make a frame are closed
//! `ingest.idle_timeout` after the last useful packet (or after connecting).

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::{Span, debug, info, instrument, warn};

use super::admission::{Candidate, Verdict};
use super::device_socket::{DeviceSocket, READ_CHUNK};
use super::parameter_sets::{Learnt, ParameterSets};
use super::server::IngestStats;
use crate::codec::h26x::VideoCodec;
use crate::codec::jt1078::{
    self, ConnectionSequence, DataType, Decoder, DecoderStats, Reassembler, Sim,
};
use crate::hub::{Hub, Publisher};
use crate::media::{
    Channel, Codec, DeviceId, Frame, StreamKey, StreamKind, TimestampNormaliser, Track,
};

/// Per-connection limits from `[ingest]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub(crate) idle_timeout: Duration,
    pub(crate) max_body: usize,
    pub(crate) max_frame: usize,
    pub(crate) merge_read: Duration,
    /// `ingest.max_channel`: packets of channel 0 or above it are skipped.
    pub(crate) max_channel: u8,
}

pub(crate) struct Connection {
    socket: DeviceSocket,
    peer: SocketAddr,
    kind: StreamKind,
    limits: ConnectionLimits,
    hub: Hub,
    stats: Arc<IngestStats>,
}

/// One logical channel seen on this connection.
struct ChannelEntry {
    sim: Sim,
    channel: u8,
    state: ChannelState,
}

/// Where a channel is in its life on this connection.
enum ChannelState {
    /// Not announced: waits for a well-formed frame.
    Pending(Candidate),
    /// Publishes its stream.
    Publishing(ChannelIngest),
    /// Another connection took the stream over.
    Retired,
}

/// Most channels one connection may carry (a terminal has at most a few dozen cameras).
/// Past it the oldest channel not yet announced makes room: bytes that only look like
/// packets, each naming another SIM, cannot grow a connection's state.
const MAX_CHANNELS: usize = 32;

/// A channel that has carried audio and no video frame for this long is taken as audio
/// only: its audio frames start playback.
const AUDIO_ONLY_AFTER: Duration = Duration::from_secs(1);

/// State of one logical channel this connection publishes.
struct ChannelIngest {
    publisher: Publisher,
    /// Cancelled by the hub when another connection publishes this channel.
    replaced: CancellationToken,
    reassembler: Reassembler,
    normaliser: TimestampNormaliser,
    parameter_sets: ParameterSets,
    audio_codec: Option<Codec>,
    bytes_in: u64,
    reported_drops: u64,
    /// When the channel's first packet arrived.
    opened: Instant,
    /// A frame a viewer can start playing from was published (see
    /// [`ChannelIngest::starts_stream`]).
    started: bool,
}

impl Connection {
    pub(crate) fn new(
        socket: TcpStream,
        peer: SocketAddr,
        kind: StreamKind,
        limits: ConnectionLimits,
        hub: Hub,
        stats: Arc<IngestStats>,
    ) -> Connection {
        Connection {
            socket: DeviceSocket::new(socket, limits.merge_read),
            peer,
            kind,
            limits,
            hub,
            stats,
        }
    }

    #[instrument(name = "ingest_conn", skip_all, fields(peer = %self.peer, kind = %self.kind, device, channel))]
    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        let mut decoder = Decoder::new(self.limits.max_body);
        let mut counted = DecoderStats::default();
        self.stats.open(self.kind).fetch_add(1, Ordering::Relaxed);
        let mut sequence = ConnectionSequence::default();
        let mut channels: Vec<ChannelEntry> = Vec::new();
        // Wakes the loop when a channel is taken over while the device is quiet. Watches
        // one publishing channel at a time, so it is re-armed only when that one goes.
        let mut watched: Option<Pin<Box<WaitForCancellationFutureOwned>>> = None;
        debug!("device connected");
        // Pinned once: re-creating this future per read would register and unregister a
        // waker (a lock each) for every packet batch.
        let shutdown = cancel.cancelled();
        tokio::pin!(shutdown);
        // The idle timer is re-armed lazily: it fires at most once per `idle_timeout` and
        // only then checks whether anything useful arrived, instead of a timer reset per
        // read. Useful: a packet of a channel that delivered a well-formed frame.
        let mut last_useful = Instant::now();
        let idle = tokio::time::sleep(self.limits.idle_timeout);
        tokio::pin!(idle);
        let reason = loop {
            let buf = decoder.buffer_mut();
            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK);
            }
            let superseded = poll_fn(|cx| match watched.as_mut() {
                Some(replaced) => replaced.as_mut().poll(cx),
                None => Poll::Pending,
            });
            let read = tokio::select! {
                biased;
                r = self.socket.read_buf(buf) => r,
                () = &mut shutdown => break "shutdown",
                () = superseded => {
                    if retire_replaced(&mut channels) {
                        break "replaced by newer connections";
                    }
                    watched = watch(&channels);
                    continue;
                }
                () = &mut idle => {
                    let deadline = last_useful + self.limits.idle_timeout;
                    if Instant::now() >= deadline {
                        break if channels.iter().any(ChannelEntry::is_proven) {
                            "idle timeout"
                        } else {
                            "idle timeout: no well-formed frame"
                        };
                    }
                    idle.as_mut().reset(deadline);
                    continue;
                }
            };
            match read {
                Ok(0) => break "closed by device",
                Err(error) => {
                    debug!(%error, "read failed");
                    break "read error";
                }
                Ok(_) => {}
            }
            let now = Instant::now();
            let mut useful = false;
            while let Some(packet) = decoder.next_packet() {
                let (number, data_type) = (packet.sequence, packet.data_type);
                let at = match channels
                    .iter()
                    .position(|c| c.channel == packet.channel && c.sim == packet.sim)
                {
                    Some(at) => at,
                    None => match self.open_channel(&mut channels, &packet) {
                        Some(at) => at,
                        None => continue,
                    },
                };
                if let Some(entry) = channels.get_mut(at) {
                    useful |= entry.ingest_packet(packet, &sequence, now, &self.hub);
                }
                if sequence.observe(number, data_type) {
                    // a packet lost on a counter shared by the channels may be anyone's
                    for (i, entry) in channels.iter_mut().enumerate() {
                        if i != at {
                            entry.connection_gap();
                        }
                    }
                }
            }
            if useful {
                last_useful = now;
                if watched.is_none() {
                    watched = watch(&channels);
                }
            }
            let decoded = decoder.stats();
            self.stats.add_decoded(&counted, &decoded);
            counted = decoded;
            let resyncs = decoded.resyncs;
            for ch in channels.iter_mut().filter_map(ChannelEntry::publishing) {
                ch.report(resyncs);
            }
            // a channel taken over retires on its next frame (the publisher refuses it) or,
            // if it falls quiet, through `watched`: no per-read check of every token here
            if no_channel_left(&channels) {
                break "replaced by newer connections";
            }
            if self.socket.awaits_start() && channels.iter().any(ChannelEntry::has_started) {
                if let Err(error) = self.socket.started() {
                    debug!(%error, "switching to merged reads failed");
                    break "read error";
                }
            }
        };
        let stats = decoder.stats();
        self.stats.add_decoded(&counted, &stats);
        self.stats.open(self.kind).fetch_sub(1, Ordering::Relaxed);
        if stats.resyncs > 0 {
            warn!(
                resyncs = stats.resyncs,
                skipped_bytes = stats.skipped_bytes,
                oversized = stats.oversized,
                "garbage on the wire was skipped"
            );
        }
        // channels that delivered a well-formed frame: 0 for garbage
        let with_media = channels.iter().filter(|c| c.is_proven()).count();
        info!(
            reason,
            packets = stats.packets,
            with_media,
            "device disconnected"
        );
    }

    /// Starts following the channel `packet` names (announcing nothing yet); where it is
    /// in `channels`, or `None` when the connection carries [`MAX_CHANNELS`] that have all
    /// announced their streams, or the channel is no logical channel (0, or above
    /// `ingest.max_channel`; JT/T 1076 numbers them 1 to 37).
    fn open_channel(
        &self,
        channels: &mut Vec<ChannelEntry>,
        packet: &jt1078::Packet,
    ) -> Option<usize> {
        if packet.channel == 0 || packet.channel > self.limits.max_channel {
            return None;
        }
        if channels.len() >= MAX_CHANNELS {
            let oldest = channels.iter().position(|c| !c.is_proven())?;
            channels.remove(oldest);
        }
        let key = StreamKey::new(
            DeviceId::from_sim(&packet.sim),
            Channel(packet.channel),
            self.kind,
        );
        channels.push(ChannelEntry {
            sim: packet.sim,
            channel: packet.channel,
            state: ChannelState::Pending(Candidate::new(key, self.limits.max_frame)),
        });
        Some(channels.len() - 1)
    }
}

impl ChannelEntry {
    /// Reassembles, translates and publishes (a channel not announced yet only checks its
    /// frames, and announces its stream with the first well-formed one); a channel taken
    /// over elsewhere ignores the packet (publishing it would take the stream back).
    /// Returns whether the packet was useful: its channel delivered a well-formed frame.
    fn ingest_packet(
        &mut self,
        packet: jt1078::Packet,
        sequence: &ConnectionSequence,
        now: Instant,
        hub: &Hub,
    ) -> bool {
        let candidate = match &mut self.state {
            ChannelState::Publishing(ch) => {
                ch.bytes_in += packet.encoded_len() as u64;
                if let Some(frame) = ch.reassembler.push_on(packet, sequence) {
                    self.publish(frame, now);
                }
                return true;
            }
            ChannelState::Retired => return false,
            ChannelState::Pending(candidate) => candidate,
        };
        let Some(frame) = candidate.push(packet, sequence) else {
            return candidate.proven;
        };
        match candidate.judge(&frame, |key| hub.live_media(key)) {
            Verdict::Refused | Verdict::AwaitKeyFrame => candidate.proven,
            Verdict::Admitted => {
                let frames = candidate.admitted_frames(frame);
                self.announce(hub);
                for frame in frames {
                    self.publish(frame, now);
                }
                true
            }
        }
    }

    /// Translates and publishes one frame of a publishing channel.
    fn publish(&mut self, frame: jt1078::Frame, now: Instant) {
        let ChannelState::Publishing(ch) = &mut self.state else {
            return;
        };
        let Some(frame) = ch.translate(frame, now) else {
            return;
        };
        if !ch.started {
            ch.started = ch.starts_stream(&frame, now);
        }
        if ch.publisher.send(frame).is_err() {
            // only fails once another connection publishes the stream
            self.retire();
        }
    }

    /// A candidate delivered a well-formed frame: it becomes the stream's publisher.
    fn announce(&mut self, hub: &Hub) {
        let ChannelState::Pending(candidate) =
            std::mem::replace(&mut self.state, ChannelState::Retired)
        else {
            return;
        };
        let key = candidate.key.clone();
        let span = Span::current();
        span.record("device", tracing::field::display(&key.device));
        span.record("channel", self.channel);
        let replaced = CancellationToken::new();
        let publisher = hub.publish(key.clone(), replaced.clone());
        info!(stream = %key, layout = ?self.sim.layout(), "stream up");
        self.state = ChannelState::Publishing(ChannelIngest::new(publisher, replaced, candidate));
    }

    /// Stops publishing: drops the publisher (which no longer owns the stream).
    fn retire(&mut self) {
        info!(
            channel = self.channel,
            "channel taken over by a newer connection"
        );
        self.state = ChannelState::Retired;
    }

    /// Another channel's packet broke a counter this one may share.
    fn connection_gap(&mut self) {
        match &mut self.state {
            ChannelState::Publishing(ch) => ch.reassembler.connection_gap(),
            ChannelState::Pending(candidate) => candidate.reassembler.connection_gap(),
            ChannelState::Retired => {}
        }
    }

    fn publishing(&mut self) -> Option<&mut ChannelIngest> {
        match &mut self.state {
            ChannelState::Publishing(ch) => Some(ch),
            _ => None,
        }
    }

    fn is_retired(&self) -> bool {
        matches!(self.state, ChannelState::Retired)
    }

    /// It delivered a well-formed frame (whether it publishes now or not).
    fn is_proven(&self) -> bool {
        match &self.state {
            ChannelState::Pending(candidate) => candidate.proven,
            ChannelState::Publishing(_) | ChannelState::Retired => true,
        }
    }

    fn has_started(&self) -> bool {
        matches!(&self.state, ChannelState::Publishing(ch) if ch.started)
    }
}

impl ChannelIngest {
    /// The publishing state of a candidate that delivered a well-formed frame: what it
    /// learnt of the video goes to the hub, its timestamps continue the stream's.
    fn new(
        publisher: Publisher,
        replaced: CancellationToken,
        candidate: Candidate,
    ) -> ChannelIngest {
        let origin = publisher.last_pts();
        let Candidate {
            reassembler,
            parameter_sets,
            opened,
            bytes_in,
            ..
        } = candidate;
        if let Some(codec) = parameter_sets.codec() {
            publisher.set_video(Codec::from_video(codec), parameter_sets.resolution());
        }
        let s = reassembler.stats();
        ChannelIngest {
            publisher,
            replaced,
            // what broke before the stream was announced is no drop of the stream's
            reported_drops: s.broken_frames + s.oversized_frames + s.skipped_waiting_for_key,
            reassembler,
            normaliser: TimestampNormaliser::default().starting_at(origin),
            parameter_sets,
            audio_codec: None,
            bytes_in,
            opened,
            started: false,
        }
    }

    /// Whether a viewer can start playing from `frame` ([`Frame::starts_playback`]), the
    /// channel counting as video until it has carried no video for [`AUDIO_ONLY_AFTER`].
    fn starts_stream(&self, frame: &Frame, now: Instant) -> bool {
        let may_have_video = self.parameter_sets.codec().is_some()
            || now.saturating_duration_since(self.opened) < AUDIO_ONLY_AFTER;
        frame.starts_playback(may_have_video)
    }

    /// The translation point: a JT/T 1078 frame becomes a hub frame (or nothing, for
    /// transparent data, parameter-set-only frames and codecs the hub cannot carry).
    fn translate(&mut self, frame: jt1078::Frame, now: Instant) -> Option<Frame> {
        let codec = Codec::from(frame.payload_type);
        match frame.data_type {
            DataType::Transparent => None,
            DataType::Audio => {
                let data = strip_hisilicon_header(frame.data);
                if self.audio_codec != Some(codec) {
                    self.audio_codec = Some(codec);
                    self.publisher.set_audio(codec);
                }
                let hint = codec.audio_duration(data.len());
                let pts = self
                    .normaliser
                    .normalise(Track::Audio, frame.timestamp, hint, now);
                Some(Frame {
                    codec,
                    is_key: false,
                    pts,
                    data,
                })
            }
            DataType::IFrame | DataType::PFrame | DataType::BFrame => {
                let video = match codec {
                    Codec::H264 => VideoCodec::H264,
                    Codec::H265 => VideoCodec::H265,
                    _ => {
                        self.publisher.add_dropped(1);
                        return None;
                    }
                };
                let (unit, learnt) = self.parameter_sets.remember(video, &frame.data);
                if let Learnt::Video(codec, resolution) = learnt {
                    self.publisher
                        .set_video(Codec::from_video(codec), resolution);
                }
                let data = self.parameter_sets.complete(video, frame.data, unit)?;
                let is_key = video.is_key_frame(&data);
                let hint = frame
                    .last_frame_interval
                    .map(|ms| Duration::from_millis(u64::from(ms)));
                let pts = self
                    .normaliser
                    .normalise(Track::Video, frame.timestamp, hint, now);
                Some(Frame {
                    codec,
                    is_key,
                    pts,
                    data,
                })
            }
        }
    }

    /// After each read: lets the frames it brought go out together, and flushes counters
    /// to the hub.
    fn report(&mut self, resyncs: u64) {
        // the frames of this read leave together
        self.publisher.flush();
        self.publisher
            .add_bytes_in(std::mem::take(&mut self.bytes_in));
        self.publisher.set_resyncs(resyncs);
        let s = self.reassembler.stats();
        let drops = s.broken_frames + s.oversized_frames + s.skipped_waiting_for_key;
        if drops > self.reported_drops {
            self.publisher.add_dropped(drops - self.reported_drops);
            self.reported_drops = drops;
        }
    }
}

/// Stops the channels another connection took over. Returns whether the connection has
/// no channel left to serve (and had at least one).
fn retire_replaced(channels: &mut [ChannelEntry]) -> bool {
    for entry in channels.iter_mut() {
        if entry
            .publishing()
            .is_some_and(|ch| ch.replaced.is_cancelled())
        {
            entry.retire();
        }
    }
    no_channel_left(channels)
}

/// The connection had channels and every one of them was taken over.
fn no_channel_left(channels: &[ChannelEntry]) -> bool {
    !channels.is_empty() && channels.iter().all(ChannelEntry::is_retired)
}

/// A future that completes when the first publishing channel is taken over.
fn watch(channels: &[ChannelEntry]) -> Option<Pin<Box<WaitForCancellationFutureOwned>>> {
    channels.iter().find_map(|c| match &c.state {
        ChannelState::Publishing(ch) => Some(Box::pin(ch.replaced.clone().cancelled_owned())),
        _ => None,
    })
}

/// Drops the 4-byte HiSilicon audio frame header (`00 01 LL 00`, LL = 16-bit words that
/// follow) that many devices put in front of each audio frame.
pub(super) fn strip_hisilicon_header(data: Bytes) -> Bytes {
    let body = crate::codec::audio::without_hisilicon_header(&data).len();
    data.slice(data.len() - body..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hisilicon_header_is_stripped_only_when_it_matches() {
        let mut framed = vec![0, 1, 80, 0];
        framed.extend(std::iter::repeat_n(0xd5, 160));
        assert_eq!(strip_hisilicon_header(Bytes::from(framed)).len(), 160);
        let plain = Bytes::from(vec![0xd5; 160]);
        assert_eq!(strip_hisilicon_header(plain.clone()), plain);
        let wrong_len = Bytes::from(vec![0, 1, 10, 0, 1, 2]);
        assert_eq!(strip_hisilicon_header(wrong_len.clone()), wrong_len);
    }

    #[test]
    fn a_stream_starts_at_a_key_frame_or_after_a_second_of_audio_alone() {
        let hub = Hub::new(crate::hub::HubSettings::default());
        let key = StreamKey::new(
            DeviceId::parse("13800138000").unwrap(),
            Channel(1),
            StreamKind::Live,
        );
        let mut ch = ChannelIngest::new(
            hub.publish(key.clone(), CancellationToken::new()),
            CancellationToken::new(),
            Candidate::new(key, 1 << 20),
        );
        let frame = |codec, is_key| Frame {
            codec,
            is_key,
            pts: 0,
            data: Bytes::from_static(&[0xd5; 160]),
        };
        let audio = frame(Codec::G711A, false);
        let opened = ch.opened;
        assert!(
            !ch.starts_stream(&audio, opened),
            "audio may precede the video"
        );
        let later = opened + AUDIO_ONLY_AFTER;
        assert!(ch.starts_stream(&audio, later), "audio alone for a second");
        assert!(ch.starts_stream(&frame(Codec::H264, true), opened));
        // once a video frame was seen, only a key frame starts the stream
        ch.parameter_sets.remember(VideoCodec::H264, &Bytes::new());
        assert!(!ch.starts_stream(&audio, later + AUDIO_ONLY_AFTER));
        assert!(!ch.starts_stream(&frame(Codec::H264, false), later));
        assert!(ch.starts_stream(&frame(Codec::H264, true), later));
    }
}
