//! FLV muxing for one viewer: hub frames in, FLV bytes out. Pure: no sockets, no tasks.

use bytes::{Bytes, BytesMut};

use crate::codec::audio::aac::{SAMPLES_PER_FRAME, split_adts};
use crate::codec::flv::{self, HevcSignal, SoundFormat};
use crate::codec::h26x::{NalKind, VideoCodec};
use crate::hub::{MediaInfo, Tracks};
use crate::media::{AudioMode, Codec, Frame};

/// Hub frames → FLV bytes for one viewer. Writes the file header first, metadata and a
/// sequence header before the first key frame, a sequence header whenever the parameter
/// sets change (and metadata again when the picture size does), and rebases
/// timestamps so the viewer's clock starts at 0.
///
/// The header's track flags must be right (flv.js/mpegts.js only play the tracks the
/// header announces, and wait forever for one announced but never sent). A viewer of a
/// live stream knows both tracks from the hub; a viewer that asked before the device
/// connected does not, so the muxer holds the first frames back until it has seen both
/// tracks, or [`TRACK_PROBE_MS`] of media passed without the missing one, or the first GOP
/// (key frame to key frame) carried no audio, or (at once) the stream is expected without
/// the missing one (see [`MediaInfo::expected`]).
///
/// An output without a file header to announce its tracks (RTMP) takes audio that appears
/// after the start ([`FlvMuxer::with_late_audio`]): from the first audio frame on, audio
/// goes out with it, an AAC sequence header first.
#[derive(Debug)]
pub struct FlvMuxer {
    mode: AudioMode,
    header_pending: bool,
    audio: Option<SoundFormat>,
    has_video: bool,
    held: Vec<Frame>,
    /// The tracks the stream is expected to carry (see [`MediaInfo::expected`]).
    expected: Option<Tracks>,
    sent_config: Option<Bytes>,
    /// The AudioSpecificConfig last sent (a new one goes out when the stream's changes).
    sent_audio_config: Option<[u8; 2]>,
    /// AAC mode: the device codec the AAC is made of (a change sends a new sequence header).
    source_audio: Option<Codec>,
    /// The picture size the last metadata announced.
    sent_size: Option<(u32, u32)>,
    base_pts: Option<u64>,
    /// How H.265 is written (HTTP-FLV: codec id 12; RTMP push: Enhanced RTMP).
    hevc: HevcSignal,
    /// Audio that appears after the start joins the stream (no header announced tracks).
    late_audio: bool,
}

/// How much media (ms) a new viewer's muxer waits for a track it has not seen yet.
pub const TRACK_PROBE_MS: u64 = 1000;

/// Most frames held back while probing (a bound whatever the timestamps say).
const MAX_HELD: usize = 128;

impl FlvMuxer {
    /// A muxer for a stream with this media info (as known when the viewer attached),
    /// for a reader that takes the stream's audio as `audio` says (the frames it is given
    /// must be that rendition: [`crate::hub::Hub::subscribe_or_wait_as`]).
    pub fn new(info: &MediaInfo, mode: AudioMode) -> FlvMuxer {
        let audio = info
            .audio
            .and_then(|codec| mode.codec_out(codec))
            .and_then(sound_format);
        FlvMuxer {
            mode,
            header_pending: true,
            audio,
            has_video: info.video.is_some(),
            held: Vec::new(),
            expected: info.expected,
            sent_config: None,
            sent_audio_config: None,
            source_audio: None,
            sent_size: None,
            base_pts: None,
            hevc: HevcSignal::CodecId12,
            late_audio: false,
        }
    }

    /// The same muxer taking audio that first appears after it started (the header it
    /// wrote announced none): for RTMP, whose servers learn the tracks from the tags (the
    /// 13-byte file header is not sent), so a device that starts audio later gets it from
    /// then on. An HTTP-FLV player (flv.js) plays only the tracks the header announced.
    pub fn with_late_audio(mut self) -> FlvMuxer {
        self.late_audio = true;
        self
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
        } else if let Some(format) = self.mode.codec_out(frame.codec).and_then(sound_format) {
            // in AAC mode a device frame of another codec says AAC will follow
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
        // a track not seen yet is waited for, unless the stream is expected without it, or
        // (audio) a whole GOP, key frame to key frame, came without it
        let video_known = self.has_video || self.expected.is_some_and(|t| !t.video);
        let gop_without_audio = frame.is_key
            && frame.codec.is_video()
            && self.held.iter().filter(|f| f.is_key).count() > 1;
        let audio_known =
            self.audio.is_some() || self.expected.is_some_and(|t| !t.audio) || gop_without_audio;
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
            // in AAC mode only the AAC goes out (the device's frames came as a hint); a
            // new device format restarts the AAC stream with a sequence header
            codec if self.mode == AudioMode::Aac && codec != Codec::Aac => {
                if self.late_audio && self.audio.is_none() {
                    // the AAC made of it follows
                    self.audio = self.mode.codec_out(codec).and_then(sound_format);
                }
                if self
                    .source_audio
                    .replace(codec)
                    .is_some_and(|was| was != codec)
                {
                    self.sent_audio_config = None;
                }
            }
            codec => {
                if self.late_audio && self.audio.is_none() {
                    self.audio = sound_format(codec);
                }
                // a track the header did not announce is left out
                match sound_format(codec).filter(|_| self.audio.is_some()) {
                    Some(SoundFormat::Aac) => self.push_aac(frame, ts, out),
                    Some(format) => flv::write_audio_frame(out, format, ts, &frame.data),
                    None => {}
                }
            }
        }
    }

    /// ADTS frames → a sequence header when the AudioSpecificConfig is new, then one tag
    /// per raw frame. A payload that is not ADTS is left out (the hub counts those).
    fn push_aac(&mut self, frame: &Frame, ts: u64, out: &mut BytesMut) {
        let Ok(raw_frames) = split_adts(&frame.data) else {
            return;
        };
        let mut ts = ts;
        for raw in raw_frames {
            let config = raw.config.audio_specific_config();
            if self.sent_audio_config != Some(config) {
                flv::write_aac_config(out, ts, &config);
                self.sent_audio_config = Some(config);
            }
            flv::write_aac_frame(out, ts, &raw.data);
            let rate = u64::from(raw.config.sample_rate().max(1));
            ts += u64::from(SAMPLES_PER_FRAME) * 1000 / rate;
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
                    // a new picture size (a device reconnected with other settings, or
                    // another connection took the stream over) is announced again: players
                    // size their canvas from the metadata
                    if self.sent_size != Some(size) {
                        let video = (codec, self.hevc, size.0, size.1);
                        flv::write_metadata(out, ts, Some(video), self.audio);
                        self.sent_size = Some(size);
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
        Codec::Aac => Some(SoundFormat::Aac),
        _ => None,
    }
}

/// The decoder configuration record and picture size from a key frame's parameter sets.
pub(crate) fn decoder_config(codec: VideoCodec, access_unit: &[u8]) -> Option<(Bytes, (u32, u32))> {
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
        let mut muxer = FlvMuxer::new(&info, AudioMode::Passthrough);
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
        let mut muxer = FlvMuxer::new(&MediaInfo::default(), AudioMode::Passthrough);
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
        let mut muxer = FlvMuxer::new(&MediaInfo::default(), AudioMode::Passthrough);
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
        FlvMuxer::new(
            &MediaInfo {
                expected: Some(Tracks { video, audio }),
                ..MediaInfo::default()
            },
            AudioMode::Passthrough,
        )
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
        let mut muxer = FlvMuxer::new(&MediaInfo::default(), AudioMode::Passthrough);
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

    /// An ADTS AAC frame of `rate` Hz as the hub carries it.
    fn aac(pts: u64, rate: u32) -> Frame {
        let config = crate::codec::audio::aac::AacConfig::lc(rate, 1).unwrap();
        let mut data = config.adts_header(4).to_vec();
        data.extend([1, 2, 3, 4]);
        Frame {
            codec: Codec::Aac,
            is_key: false,
            pts,
            data: Bytes::from(data),
        }
    }

    /// (AACPacketType, body after it) of the AAC tags in `out` (with or without the file
    /// header).
    fn aac_tags(out: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut found = Vec::new();
        let mut at = if out.starts_with(b"FLV") { 13 } else { 0 };
        while at + 11 <= out.len() {
            let size = u32::from_be_bytes([0, out[at + 1], out[at + 2], out[at + 3]]) as usize;
            let body = &out[at + 11..at + 11 + size];
            if out[at] == 8 && body[0] == 0xaf {
                found.push((body[1], body[2..].to_vec()));
            }
            at += 11 + size + 4;
        }
        found
    }

    #[test]
    fn aac_mode_writes_aac_only_with_a_sequence_header_per_format() {
        let mut muxer = muxer_expecting(false, true);
        muxer.mode = AudioMode::Aac;
        let mut out = BytesMut::new();
        // the device's G.711 says audio comes; only the AAC is written
        muxer.push_into(&audio(0), &mut out);
        assert_eq!(out[4], 0b100, "audio announced from the device's frame");
        for frame in [aac(0, 8000), audio(20), aac(128, 8000)] {
            muxer.push_into(&frame, &mut out);
        }
        let tags = aac_tags(&out);
        assert_eq!(tags.len(), 3, "sequence header, two frames; no G.711 tag");
        assert_eq!(
            tags[0],
            (0, vec![0x15, 0x88]),
            "AudioSpecificConfig 8 kHz mono"
        );
        assert_eq!(tags[1], (1, vec![1, 2, 3, 4]), "raw frame, ADTS stripped");
        // the device switches to G.726: same AAC config, but a new stream: header again
        let mut out = BytesMut::new();
        muxer.push_into(
            &Frame {
                codec: Codec::G726,
                ..audio(140)
            },
            &mut out,
        );
        muxer.push_into(&aac(256, 8000), &mut out);
        assert_eq!(aac_tags(&out)[0].0, 0);
        // a device's AAC changing rate: a new AudioSpecificConfig
        let mut out = BytesMut::new();
        muxer.push_into(&aac(384, 16000), &mut out);
        assert_eq!(aac_tags(&out)[0], (0, vec![0x14, 0x08]));
        // passthrough of a device's AAC writes it too
        let mut muxer = muxer_expecting(false, true);
        let mut out = BytesMut::new();
        muxer.push_into(&aac(0, 8000), &mut out);
        assert_eq!(aac_tags(&out).len(), 2);
    }

    /// A key frame of a `width`×`height` H.264 picture: x264 baseline parameter sets (made
    /// with `ffmpeg -f lavfi -i testsrc=size=WxH -frames:v 1 -pix_fmt yuv420p -c:v libx264
    /// -profile:v baseline`) and the start of its IDR slice.
    fn key_frame_sized(width: u32, pts: u64) -> Frame {
        let sps: &[u8] = match width {
            64 => &[
                0x67, 0x42, 0xc0, 0x0a, 0xd9, 0x04, 0x7b, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10,
                0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x22, 0x64, 0x80,
            ],
            _ => &[
                0x67, 0x42, 0xc0, 0x0a, 0xd9, 0x06, 0x26, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00, 0x04,
                0x00, 0x00, 0x03, 0x00, 0xc8, 0x3c, 0x48, 0x99, 0x20,
            ],
        };
        let mut au = vec![0, 0, 0, 1];
        au.extend_from_slice(sps);
        au.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xcb, 0x83, 0xcb, 0x20]);
        au.extend_from_slice(&[0, 0, 0, 1, 0x65, 0x88, 0x84, 0x0c, 0x7f]);
        Frame {
            codec: Codec::H264,
            is_key: true,
            pts,
            data: Bytes::from(au),
        }
    }

    /// The `width` an onMetaData tag's body names (AMF0: name, number marker, f64).
    fn metadata_width(flv: &[u8]) -> Option<f64> {
        let at = flv.windows(5).position(|w| w == b"width")? + 6;
        Some(f64::from_be_bytes(flv.get(at..at + 8)?.try_into().ok()?))
    }

    #[test]
    fn a_new_picture_size_gets_new_metadata_and_a_new_sequence_header() {
        let mut muxer = muxer_expecting(true, false);
        let first = muxer.push(&key_frame_sized(64, 0));
        let kinds: Vec<u8> = tags(&first).iter().map(|t| t.0).collect();
        assert_eq!(kinds, vec![18, 9, 9]);
        assert_eq!(metadata_width(&first), Some(64.0));
        // the same parameter sets again: only the frame
        let same = muxer.push(&key_frame_sized(64, 40));
        assert_eq!(tags(&[&[0u8; 13][..], &same].concat()).len(), 1);
        // another picture size: metadata, sequence header, frame, at the frame's time
        let resized = muxer.push(&key_frame_sized(96, 80));
        let got = tags(&[&[0u8; 13][..], &resized].concat());
        assert_eq!(got, vec![(18, 80), (9, 80), (9, 80)]);
        assert_eq!(metadata_width(&resized), Some(96.0));
    }

    #[test]
    fn audio_only_stream_starts_audio_only() {
        let mut muxer = FlvMuxer::new(&MediaInfo::default(), AudioMode::Passthrough);
        let mut out = BytesMut::new();
        let mut pts = 0;
        while out.is_empty() {
            muxer.push_into(&audio(pts), &mut out);
            pts += 20;
        }
        assert_eq!(out[4], 0b100, "header announces audio only");
        assert_eq!(tags(&out).len() as u64, pts / 20);
    }

    #[test]
    fn a_first_gop_without_audio_starts_at_the_second_key_frame() {
        let mut muxer = FlvMuxer::new(&MediaInfo::default(), AudioMode::Passthrough);
        assert!(muxer.push(&sample_key_frame(0)).is_empty());
        for pts in (40..=400).step_by(40) {
            assert!(muxer.push(&p_frame(pts)).is_empty(), "probing at {pts} ms");
        }
        // 440 ms of media, well within the probe time: the GOP is whole and had no audio
        let out = muxer.push(&sample_key_frame(440));
        assert_eq!(out[4], 0b001, "header announces video only");
        let videos = tags(&out).iter().filter(|t| t.0 == 9).count();
        assert_eq!(videos, 1 + 1 + 10 + 1, "config, key, every P frame, key");
    }

    #[test]
    fn late_audio_joins_an_rtmp_stream_with_a_sequence_header_first() {
        for late in [false, true] {
            let mut muxer = muxer_expecting(true, false);
            muxer.mode = AudioMode::Aac;
            if late {
                muxer = muxer.with_late_audio();
            }
            let started = muxer.push(&sample_key_frame(0));
            assert_eq!(started[4], 0b001, "started with video only");
            let mut out = BytesMut::new();
            // the device starts audio: its G.711, then the AAC made of it
            for frame in [audio(5000), aac(5000, 8000), p_frame(5020), aac(5128, 8000)] {
                muxer.push_into(&frame, &mut out);
            }
            let tags = aac_tags(&out);
            if late {
                assert_eq!(tags.len(), 3, "sequence header, two frames");
                assert_eq!(tags[0], (0, vec![0x15, 0x88]), "AudioSpecificConfig first");
            } else {
                assert!(
                    tags.is_empty(),
                    "HTTP-FLV: a track the header did not announce"
                );
            }
        }
    }
}
