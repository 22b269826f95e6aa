//! FLV muxing for one viewer: hub frames in, FLV bytes out. Pure: no sockets, no tasks.

use bytes::{Bytes, BytesMut};

use crate::codec::flv::{self, HevcSignal, SoundFormat};
use crate::codec::h26x::{NalKind, VideoCodec};
use crate::hub::{MediaInfo, Tracks};
use crate::media::{Codec, Frame};

/// Hub frames → FLV bytes for one viewer. Writes the file header first, a sequence header
/// before the first key frame and whenever the parameter sets change, and rebases
/// timestamps so the viewer's clock starts at 0.
///
/// The header's track flags must be right (flv.js/mpegts.js only play the tracks the
/// header announces, and wait forever for one announced but never sent). A viewer of a
/// live stream knows both tracks from the hub; a viewer that asked before the device
/// connected does not, so the muxer holds the first frames back until it has seen both
/// tracks, or [`TRACK_PROBE_MS`] of media passed without the missing one, or (at once) the
/// stream is expected without the missing one (see [`MediaInfo::expected`]).
#[derive(Debug)]
pub struct FlvMuxer {
    header_pending: bool,
    audio: Option<SoundFormat>,
    has_video: bool,
    held: Vec<Frame>,
    /// The tracks the stream is expected to carry (see [`MediaInfo::expected`]).
    expected: Option<Tracks>,
    sent_config: Option<Bytes>,
    base_pts: Option<u64>,
    /// How H.265 is written (HTTP-FLV: codec id 12; RTMP push: Enhanced RTMP).
    hevc: HevcSignal,
}

/// How much media (ms) a new viewer's muxer waits for a track it has not seen yet.
pub const TRACK_PROBE_MS: u64 = 1000;

/// Most frames held back while probing (a bound whatever the timestamps say).
const MAX_HELD: usize = 128;

impl FlvMuxer {
    /// A muxer for a stream with this media info (as known when the viewer attached).
    pub fn new(info: &MediaInfo) -> FlvMuxer {
        let audio = info.audio.and_then(sound_format);
        FlvMuxer {
            header_pending: true,
            audio,
            has_video: info.video.is_some(),
            held: Vec::new(),
            expected: info.expected,
            sent_config: None,
            base_pts: None,
            hevc: HevcSignal::CodecId12,
        }
    }

    /// The same muxer writing H.265 as `signal` says (RTMP push uses Enhanced RTMP).
    pub fn with_hevc(mut self, signal: HevcSignal) -> FlvMuxer {
        self.hevc = signal;
        self
    }

    /// Whether the stream has video (so a viewer that skipped frames restarts at a key
    /// frame; an audio-only stream restarts anywhere).
    pub fn has_video(&self) -> bool {
        self.has_video
    }

    /// The bytes to write for one frame (empty if the frame cannot be carried yet).
    pub fn push(&mut self, frame: &Frame) -> Bytes {
        let mut out = BytesMut::new();
        self.push_into(frame, &mut out);
        out.freeze()
    }

    /// Appends the bytes for one frame to `out` (nothing if it cannot be carried yet).
    pub fn push_into(&mut self, frame: &Frame, out: &mut BytesMut) {
        if self.header_pending {
            self.probe(frame, out);
            return;
        }
        self.write_frame(frame, out);
    }

    /// Learns the tracks from the first frames; writes the header and the held frames once
    /// both tracks are known or the probe time is over.
    fn probe(&mut self, frame: &Frame, out: &mut BytesMut) {
        if frame.codec.is_video() {
            self.has_video = true;
        } else if let Some(format) = sound_format(frame.codec) {
            self.audio.get_or_insert(format);
        }
        // nothing before the first key frame can be shown, except audio on its own
        if !frame.is_key && frame.codec.is_video() && !self.held.iter().any(|f| f.is_key) {
            return;
        }
        self.held.push(frame.clone());
        let span = match (self.held.first(), self.held.last()) {
            (Some(first), Some(last)) => last.pts.saturating_sub(first.pts),
            _ => 0,
        };
        // a track not seen yet is waited for, unless the stream is expected without it
        let video_known = self.has_video || self.expected.is_some_and(|t| !t.video);
        let audio_known = self.audio.is_some() || self.expected.is_some_and(|t| !t.audio);
        if !(video_known && audio_known) && span < TRACK_PROBE_MS && self.held.len() < MAX_HELD {
            return;
        }
        self.start(out);
    }

    /// The stream ended: frames still held back while probing go out, under a header for
    /// the tracks seen (a stream shorter than the probe is not lost).
    pub fn finish_into(&mut self, out: &mut BytesMut) {
        if self.header_pending && !self.held.is_empty() {
            self.start(out);
        }
    }

    /// Writes the header for the tracks known now and the frames held back.
    fn start(&mut self, out: &mut BytesMut) {
        self.header_pending = false;
        out.extend_from_slice(&flv::file_header(self.audio.is_some(), self.has_video));
        for frame in std::mem::take(&mut self.held) {
            self.write_frame(&frame, out);
        }
    }

    fn write_frame(&mut self, frame: &Frame, out: &mut BytesMut) {
        out.reserve(frame.data.len() + 64);
        let base = *self.base_pts.get_or_insert(frame.pts);
        let ts = frame.pts.saturating_sub(base);
        match frame.codec {
            Codec::H264 | Codec::H265 => self.push_video(frame, ts, out),
            codec => {
                // a track the header did not announce is left out
                if let Some(format) = sound_format(codec).filter(|_| self.audio.is_some()) {
                    flv::write_audio_frame(out, format, ts, &frame.data);
                }
            }
        }
    }

    fn push_video(&mut self, frame: &Frame, ts: u64, out: &mut BytesMut) {
        let codec = match frame.codec {
            Codec::H265 => VideoCodec::H265,
            _ => VideoCodec::H264,
        };
        if frame.is_key {
            if let Some((record, size)) = decoder_config(codec, &frame.data) {
                if self.sent_config.as_ref() != Some(&record) {
                    if self.sent_config.is_none() {
                        let video = (codec, self.hevc, size.0, size.1);
                        flv::write_metadata(out, Some(video), self.audio);
                    }
                    flv::write_video_config(out, codec, self.hevc, ts, &record);
                    self.sent_config = Some(record);
                }
            }
        }
        if self.sent_config.is_some() {
            let signal = (codec, self.hevc);
            flv::write_video_frame(out, signal, ts, frame.is_key, &frame.data);
        }
    }
}

/// The FLV sound format for an audio codec, where FLV has one the gateway writes.
fn sound_format(codec: Codec) -> Option<SoundFormat> {
    match codec {
        Codec::G711A => Some(SoundFormat::G711A),
        Codec::G711U => Some(SoundFormat::G711U),
        _ => None,
    }
}

/// The decoder configuration record and picture size from a key frame's parameter sets.
fn decoder_config(codec: VideoCodec, access_unit: &[u8]) -> Option<(Bytes, (u32, u32))> {
    let sps = codec.find(access_unit, NalKind::Sps)?;
    let pps = codec.find(access_unit, NalKind::Pps)?;
    let info = codec.parse_sps(sps)?;
    let record = match codec {
        VideoCodec::H264 => flv::avc_decoder_config(sps, pps, &info),
        VideoCodec::H265 => {
            let vps = codec.find(access_unit, NalKind::Vps)?;
            flv::hevc_decoder_config(vps, sps, pps, &info)?
        }
    };
    Some((record, (info.width, info.height)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first key frame of the bundled sample (a real SPS/PPS/IDR access unit).
    fn sample_key_frame(pts: u64) -> Frame {
        use crate::codec::jt1078::{DEFAULT_MAX_BODY, DataType, Decoder, Reassembler};
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/samples/sample-h264-g711a.jt1078"
        );
        let mut decoder = Decoder::new(DEFAULT_MAX_BODY);
        decoder.push(&std::fs::read(path).unwrap());
        let mut reassembler = Reassembler::default();
        while let Some(packet) = decoder.next_packet() {
            if let Some(frame) = reassembler.push(packet) {
                if frame.data_type == DataType::IFrame {
                    return Frame {
                        codec: Codec::H264,
                        is_key: true,
                        pts,
                        data: frame.data,
                    };
                }
            }
        }
        panic!("the sample has a key frame");
    }

    fn audio(pts: u64) -> Frame {
        Frame {
            codec: Codec::G711A,
            is_key: false,
            pts,
            data: Bytes::from(vec![0xd5; 160]),
        }
    }

    fn p_frame(pts: u64) -> Frame {
        Frame {
            codec: Codec::H264,
            is_key: false,
            pts,
            data: Bytes::from_static(&[0, 0, 1, 0x41, 1]),
        }
    }

    /// (tag type, timestamp) of every tag after the 13-byte file header.
    fn tags(flv: &[u8]) -> Vec<(u8, u32)> {
        let mut tags = Vec::new();
        let mut at = 13;
        while at + 11 <= flv.len() {
            let size = u32::from_be_bytes([0, flv[at + 1], flv[at + 2], flv[at + 3]]) as usize;
            let ts = u32::from_be_bytes([flv[at + 7], flv[at + 4], flv[at + 5], flv[at + 6]]);
            tags.push((flv[at], ts));
            at += 11 + size + 4;
        }
        tags
    }

    #[test]
    fn muxer_waits_for_a_key_frame_with_parameter_sets() {
        let info = MediaInfo {
            video: Some(Codec::H264),
            audio: Some(Codec::G711A),
            ..MediaInfo::default()
        };
        let mut muxer = FlvMuxer::new(&info);
        assert!(
            muxer.push(&p_frame(1000)).is_empty(),
            "nothing before a key frame"
        );
        let out = muxer.push(&audio(1020));
        assert_eq!(&out[..3], b"FLV");
        assert_eq!(out[4], 0b101, "header announces audio and video");
        assert_eq!(
            tags(&out),
            vec![(8, 0)],
            "timestamps rebased to the first frame"
        );
        assert_eq!(out[13 + 11] >> 4, 7, "G.711A is sound format 7");
        let out = muxer.push(&sample_key_frame(1040));
        let kinds: Vec<u8> = tags(&[&[0u8; 13][..], &out].concat())
            .iter()
            .map(|t| t.0)
            .collect();
        assert_eq!(
            kinds,
            vec![18, 9, 9],
            "metadata, sequence header, key frame"
        );
    }

    #[test]
    fn a_viewer_waiting_for_the_device_learns_both_tracks_before_the_header() {
        let mut muxer = FlvMuxer::new(&MediaInfo::default());
        assert!(
            muxer.push(&sample_key_frame(5000)).is_empty(),
            "held until audio shows"
        );
        let out = muxer.push(&audio(5010));
        assert_eq!(out[4], 0b101, "header announces audio and video");
        let got = tags(&out);
        assert_eq!(
            got.iter().map(|t| t.0).collect::<Vec<_>>(),
            vec![18, 9, 9, 8]
        );
        assert_eq!(got.last(), Some(&(8, 10)));
    }

    #[test]
    fn video_without_audio_starts_after_the_probe_time_with_video_only() {
        let mut muxer = FlvMuxer::new(&MediaInfo::default());
        assert!(muxer.push(&sample_key_frame(0)).is_empty());
        let mut pts = 0;
        while pts + 40 < TRACK_PROBE_MS {
            pts += 40;
            assert!(
                muxer.push(&p_frame(pts)).is_empty(),
                "still probing at {pts} ms"
            );
        }
        let out = muxer.push(&p_frame(pts + 40));
        assert_eq!(out[4], 0b001, "header announces video only");
        let videos = tags(&out).iter().filter(|t| t.0 == 9).count();
        assert_eq!(
            videos,
            1 + 1 + (pts / 40) as usize + 1,
            "config, key, every P frame"
        );
    }

    /// A viewer waiting for a stream expected to carry `tracks`.
    fn muxer_expecting(video: bool, audio: bool) -> FlvMuxer {
        FlvMuxer::new(&MediaInfo {
            expected: Some(Tracks { video, audio }),
            ..MediaInfo::default()
        })
    }

    #[test]
    fn a_stream_that_had_no_audio_last_time_starts_at_its_first_key_frame() {
        let mut muxer = muxer_expecting(true, false);
        assert!(
            muxer.push(&p_frame(0)).is_empty(),
            "nothing before a key frame"
        );
        let out = muxer.push(&sample_key_frame(40));
        assert_eq!(
            out[4], 0b001,
            "header announces video only, without probing"
        );
        assert_eq!(tags(&out).iter().filter(|t| t.0 == 9).count(), 2);
        // a stream that had audio last time is still waited on for it
        let mut muxer = muxer_expecting(true, true);
        assert!(muxer.push(&sample_key_frame(0)).is_empty());
        assert_eq!(muxer.push(&audio(10))[4], 0b101);
    }

    #[test]
    fn a_stream_that_had_no_video_last_time_starts_at_its_first_audio() {
        let out = muxer_expecting(false, true).push(&audio(0));
        assert_eq!(
            out[4], 0b100,
            "header announces audio only, without probing"
        );
        assert_eq!(tags(&out), vec![(8, 0)]);
    }

    #[test]
    fn a_stream_that_ends_while_probing_still_gets_its_frames_out() {
        let mut muxer = FlvMuxer::new(&MediaInfo::default());
        for pts in [0, 40, 80] {
            assert!(muxer.push(&audio(pts)).is_empty(), "held: video may come");
        }
        let mut out = BytesMut::new();
        muxer.finish_into(&mut out);
        assert_eq!(out[4], 0b100, "audio only, as seen");
        assert_eq!(tags(&out), vec![(8, 0), (8, 40), (8, 80)]);
        // nothing twice
        let mut again = BytesMut::new();
        muxer.finish_into(&mut again);
        assert!(again.is_empty());
    }

    #[test]
    fn audio_only_stream_starts_audio_only() {
        let mut muxer = FlvMuxer::new(&MediaInfo::default());
        let mut out = BytesMut::new();
        let mut pts = 0;
        while out.is_empty() {
            muxer.push_into(&audio(pts), &mut out);
            pts += 20;
        }
        assert_eq!(out[4], 0b100, "header announces audio only");
        assert_eq!(tags(&out).len() as u64, pts / 20);
    }
}
