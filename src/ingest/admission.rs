//! Admission: when a channel seen on a connection may announce its stream, or take over a
//! stream another connection publishes.
//!
//! A channel is a [`Candidate`] until it delivers a frame that is well formed for its codec
//! (video: a key frame whose SPS parses, with its PPS, and VPS for H.265; audio:
//! [`AUDIO_CONFIRM_FRAMES`] frames in a row of one codec, each of a size that codec can
//! have ([`Codec::is_plausible_audio_frame`]) and each in a packet whose sequence number
//! follows the channel's previous one; those frames are held and published once the
//! stream is announced, so none is lost). Until then the
//! hub never hears of it: no stream, no status, no viewer sees anything. So bytes that only
//! look like packets (garbage dense with frame markers) announce nothing, and a connection
//! that claims a live device's SIM cannot cut it off with garbage. A stream that another
//! connection publishes with video is taken over only at a key frame (a reconnecting
//! device does that within one GOP); JT/T 1078 has no authentication, so a sender of
//! well-formed media can still take a stream (docs/architecture.md says what to do).
//!
//! Only the frames of channels not yet published pass through here: the per-frame path of
//! a published stream is untouched.

use bytes::Bytes;
use tokio::time::Instant;

use super::parameter_sets::ParameterSets;
use crate::codec::h26x::VideoCodec;
use crate::codec::jt1078::{self, ConnectionSequence, DataType, Reassembler};
use crate::hub::MediaInfo;
use crate::media::{Codec, StreamKey};

/// Audio frames in a row, of one codec and in packets whose sequence numbers follow, that
/// announce an audio-only stream: one plausible frame is easy for random bytes dense with
/// frame markers, a run of them on one SIM and channel in sequence is not.
pub(super) const AUDIO_CONFIRM_FRAMES: usize = 5;

/// Largest step between the sequence numbers of a channel's consecutive packets that
/// counts as "following": one counter may be shared by the connection's channels and its
/// video, so another channel's or the video's packets may come between.
const MAX_SEQUENCE_STEP: u16 = 1024;

/// A channel that has not announced its stream yet.
pub(super) struct Candidate {
    pub(super) key: StreamKey,
    pub(super) reassembler: Reassembler,
    pub(super) parameter_sets: ParameterSets,
    /// When its first packet arrived.
    pub(super) opened: Instant,
    /// It has delivered a well-formed frame (and waits for a key frame to take a live
    /// stream over).
    pub(super) proven: bool,
    /// Wire bytes of its packets: the stream's input once it is announced.
    pub(super) bytes_in: u64,
    /// Sequence number of its last packet.
    last_sequence: Option<u16>,
    /// The last packet's sequence number followed the one before.
    in_sequence: bool,
    /// Plausible audio frames in a row (of one codec, in sequence), held until there are
    /// [`AUDIO_CONFIRM_FRAMES`].
    held_audio: Vec<jt1078::Frame>,
}

/// What a candidate's frame means for its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Not well formed (or nothing to show): the hub hears nothing.
    Refused,
    /// Well formed, but another connection publishes the stream with video: wait for a
    /// key frame.
    AwaitKeyFrame,
    /// Announce the stream (or take it over) with this frame.
    Admitted,
}

impl Candidate {
    pub(super) fn new(key: StreamKey, max_frame: usize) -> Candidate {
        Candidate {
            key,
            reassembler: Reassembler::new(max_frame),
            parameter_sets: ParameterSets::default(),
            opened: Instant::now(),
            proven: false,
            bytes_in: 0,
            last_sequence: None,
            in_sequence: false,
            held_audio: Vec::new(),
        }
    }

    /// Feeds one packet; the frame it completes, if any.
    pub(super) fn push(
        &mut self,
        packet: jt1078::Packet,
        sequence: &ConnectionSequence,
    ) -> Option<jt1078::Frame> {
        self.bytes_in += packet.encoded_len() as u64;
        self.in_sequence = self.last_sequence.is_some_and(|last| {
            (1..=MAX_SEQUENCE_STEP).contains(&packet.sequence.wrapping_sub(last))
        });
        self.last_sequence = Some(packet.sequence);
        self.reassembler.push_on(packet, sequence)
    }

    /// The frames to publish when `frame` got the stream admitted: the held audio run
    /// (which ends with `frame`) for audio, else `frame`.
    pub(super) fn admitted_frames(&mut self, frame: jt1078::Frame) -> Vec<jt1078::Frame> {
        if frame.data_type == DataType::Audio && !self.held_audio.is_empty() {
            return std::mem::take(&mut self.held_audio);
        }
        vec![frame]
    }

    /// Judges a frame this candidate completed. `live` is what the hub knows of the stream
    /// when another connection publishes it.
    pub(super) fn judge(
        &mut self,
        frame: &jt1078::Frame,
        live: impl FnOnce(&StreamKey) -> Option<MediaInfo>,
    ) -> Verdict {
        let codec = Codec::from(frame.payload_type);
        let (well_formed, starts_video) = match frame.data_type {
            DataType::Transparent => (false, false),
            DataType::Audio => (self.confirms_audio(codec, frame), false),
            DataType::IFrame | DataType::PFrame | DataType::BFrame => {
                let starts = self.starts_decoding(codec, &frame.data);
                (starts, starts)
            }
        };
        if !well_formed {
            return Verdict::Refused;
        }
        self.proven = true;
        match live(&self.key) {
            Some(info) if info.video.is_some() && !starts_video => Verdict::AwaitKeyFrame,
            _ => Verdict::Admitted,
        }
    }

    /// Adds `frame` to the run of plausible audio (or starts the run again); whether the
    /// run is long enough to announce the stream.
    fn confirms_audio(&mut self, codec: Codec, frame: &jt1078::Frame) -> bool {
        let plausible = codec.is_plausible_audio_frame(&super::connection::strip_hisilicon_header(
            frame.data.clone(),
        ));
        let continues = self.in_sequence
            && self
                .held_audio
                .last()
                .is_some_and(|last| last.payload_type == frame.payload_type);
        if !continues {
            self.held_audio.clear();
        }
        if !plausible {
            return false;
        }
        if self.held_audio.len() >= AUDIO_CONFIRM_FRAMES {
            // a run already confirmed that waits (for a key frame to take over): keep the
            // latest frames only
            self.held_audio.remove(0);
        }
        self.held_audio.push(frame.clone());
        self.held_audio.len() >= AUDIO_CONFIRM_FRAMES
    }

    /// Remembers the parameter sets of a video frame; whether a decoder can start at it.
    fn starts_decoding(&mut self, codec: Codec, data: &Bytes) -> bool {
        let video = match codec {
            Codec::H264 => VideoCodec::H264,
            Codec::H265 => VideoCodec::H265,
            _ => return false,
        };
        let (unit, _) = self.parameter_sets.remember(video, data);
        self.parameter_sets.starts_decoding(video, unit, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::jt1078::{PayloadType, Sim, SimLayout};
    use crate::media::{Channel, DeviceId, StreamKind};

    fn candidate() -> Candidate {
        let key = StreamKey::new(
            DeviceId::parse("13800138000").unwrap(),
            Channel(1),
            StreamKind::Live,
        );
        Candidate::new(key, 1 << 20)
    }

    fn frame(data_type: DataType, payload_type: PayloadType, data: &[u8]) -> jt1078::Frame {
        jt1078::Frame {
            payload_type,
            data_type,
            sim: Sim::from_digits("13800138000", SimLayout::Bcd6).unwrap(),
            channel: 1,
            timestamp: Some(0),
            last_iframe_interval: None,
            last_frame_interval: None,
            data: Bytes::copy_from_slice(data),
        }
    }

    /// The SPS of a 64×48 H.264 picture (x264 baseline, made with `ffmpeg -f lavfi -i
    /// testsrc=size=64x48 -frames:v 1 -pix_fmt yuv420p -c:v libx264 -profile:v baseline`).
    const SPS_64X48: [u8; 23] = [
        0x67, 0x42, 0xc0, 0x0a, 0xd9, 0x04, 0x7b, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00,
        0x00, 0x03, 0x03, 0x20, 0xf1, 0x22, 0x64, 0x80,
    ];

    /// An access unit with `sps`, that picture's PPS and the start of its IDR slice.
    fn key_frame(sps: &[u8]) -> Vec<u8> {
        let mut au = vec![0, 0, 0, 1];
        au.extend_from_slice(sps);
        au.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xcb, 0x83, 0xcb, 0x20]);
        au.extend_from_slice(&[0, 0, 0, 1, 0x65, 0x88, 0x84, 0x0c, 0x7f]);
        au
    }

    /// Judges [`AUDIO_CONFIRM_FRAMES`] copies of `audio` as if their packets came in
    /// sequence; every verdict but the last must be `Refused`.
    fn judge_run(
        c: &mut Candidate,
        audio: &jt1078::Frame,
        live: impl Fn(&StreamKey) -> Option<MediaInfo>,
    ) -> Verdict {
        for i in 1..AUDIO_CONFIRM_FRAMES {
            c.in_sequence = i > 1;
            assert_eq!(c.judge(audio, &live), Verdict::Refused, "frame {i}");
        }
        c.in_sequence = true;
        c.judge(audio, &live)
    }

    #[test]
    fn audio_alone_needs_a_run_of_frames_in_sequence() {
        let audio = frame(DataType::Audio, PayloadType::G711A, &[0xd5; 160]);
        let mut c = candidate();
        assert_eq!(judge_run(&mut c, &audio, |_| None), Verdict::Admitted);
        assert_eq!(
            c.admitted_frames(audio.clone()).len(),
            AUDIO_CONFIRM_FRAMES,
            "none lost"
        );
        // a packet out of sequence starts the run again
        let mut c = candidate();
        for _ in 0..AUDIO_CONFIRM_FRAMES * 2 {
            c.in_sequence = false;
            assert_eq!(c.judge(&audio, |_| None), Verdict::Refused);
        }
        // so does a change of codec
        let mut c = candidate();
        let mulaw = frame(DataType::Audio, PayloadType::G711U, &[0xff; 160]);
        for i in 0..AUDIO_CONFIRM_FRAMES * 2 {
            c.in_sequence = true;
            let f = if i % 2 == 0 { &audio } else { &mulaw };
            assert_eq!(c.judge(f, |_| None), Verdict::Refused);
        }
        assert!(!c.proven);
    }

    #[test]
    fn sequence_numbers_follow_within_a_step() {
        let audio = frame(DataType::Audio, PayloadType::G711A, &[0xd5; 160]);
        let packet = |sequence: u16| jt1078::Packet {
            marker: true,
            payload_type: audio.payload_type,
            sequence,
            sim: audio.sim,
            channel: audio.channel,
            data_type: DataType::Audio,
            subpackage: jt1078::Subpackage::Atomic,
            timestamp: Some(0),
            last_iframe_interval: None,
            last_frame_interval: None,
            body: audio.data.clone(),
        };
        let shared = ConnectionSequence::default();
        let mut c = candidate();
        for (sequence, follows) in [
            (7, false),
            (8, true),
            (40, true),
            (39, false),
            (39, false),
            (2000, false),
            (2001, true),
            (u16::MAX, false),
            (3, true),
        ] {
            c.push(packet(sequence), &shared);
            assert_eq!(c.in_sequence, follows, "{sequence}");
        }
    }

    #[test]
    fn garbage_video_and_audio_are_refused() {
        let mut c = candidate();
        let none = |_: &StreamKey| None;
        let random = [0x5au8; 700];
        assert_eq!(
            c.judge(&frame(DataType::IFrame, PayloadType::H264, &random), none),
            Verdict::Refused
        );
        // an IDR slice without parameter sets, and a parameter set that does not parse
        let idr = [0, 0, 0, 1, 0x65, 0x88, 0x84];
        assert_eq!(
            c.judge(&frame(DataType::IFrame, PayloadType::H264, &idr), none),
            Verdict::Refused
        );
        let broken = key_frame(&[0x67, 0xff]);
        assert_eq!(
            c.judge(&frame(DataType::IFrame, PayloadType::H264, &broken), none),
            Verdict::Refused
        );
        for (pt, len) in [
            (PayloadType::G711A, 7),
            (PayloadType::G711A, 161),
            (PayloadType::Aac, 200),
        ] {
            let audio = frame(DataType::Audio, pt, &vec![0x11; len]);
            assert_eq!(c.judge(&audio, none), Verdict::Refused, "{pt:?} {len}");
        }
        let transparent = frame(DataType::Transparent, PayloadType::H264, &random);
        assert_eq!(c.judge(&transparent, none), Verdict::Refused);
        assert!(!c.proven);
    }

    #[test]
    fn a_key_frame_with_parameter_sets_or_sane_audio_is_admitted() {
        let mut c = candidate();
        let key = frame(DataType::IFrame, PayloadType::H264, &key_frame(&SPS_64X48));
        assert_eq!(c.judge(&key, |_| None), Verdict::Admitted);
        assert_eq!(c.parameter_sets.resolution(), Some((64, 48)));
        let mut c = candidate();
        let audio = frame(DataType::Audio, PayloadType::G711A, &[0xd5; 160]);
        assert_eq!(judge_run(&mut c, &audio, |_| None), Verdict::Admitted);
        assert!(c.proven);
    }

    #[test]
    fn a_live_stream_with_video_is_taken_over_only_at_a_key_frame() {
        let mut c = candidate();
        let live = |_: &StreamKey| {
            Some(MediaInfo {
                video: Some(Codec::H264),
                ..MediaInfo::default()
            })
        };
        let audio = frame(DataType::Audio, PayloadType::G711A, &[0xd5; 160]);
        assert_eq!(judge_run(&mut c, &audio, live), Verdict::AwaitKeyFrame);
        let p_frame = frame(DataType::PFrame, PayloadType::H264, &[0, 0, 1, 0x41, 0x9a]);
        assert_eq!(c.judge(&p_frame, live), Verdict::Refused);
        let key = frame(DataType::IFrame, PayloadType::H264, &key_frame(&SPS_64X48));
        assert_eq!(c.judge(&key, live), Verdict::Admitted);
        // an audio-only live stream is taken over by audio
        let mut c = candidate();
        let audio_only = |_: &StreamKey| {
            Some(MediaInfo {
                audio: Some(Codec::G711A),
                ..MediaInfo::default()
            })
        };
        assert_eq!(judge_run(&mut c, &audio, audio_only), Verdict::Admitted);
    }
}
