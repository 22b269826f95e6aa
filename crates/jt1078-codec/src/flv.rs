//! FLV muxing: file header, tags, and the AVC/HEVC decoder configuration records.
//!
//! Written here because no maintained crate muxes FLV with H.265 as codec id 12 (the
//! convention SRS 6 and Chinese players use); the format is small (Adobe FLV spec v10.1,
//! annex E). Pure functions that append to a `BytesMut`.

use bytes::{BufMut, Bytes, BytesMut};

use super::h26x::{NalKind, SpsInfo, VideoCodec, nal_units};

/// FLV tag type for audio (8), video (9) and script data (18).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagType {
    /// Audio tag.
    Audio = 8,
    /// Video tag.
    Video = 9,
    /// Script data (onMetaData).
    Script = 18,
}

/// FLV video codec id: 7 AVC, 12 HEVC (SRS 6 / Chinese-player extension).
pub const fn video_codec_id(codec: VideoCodec) -> u8 {
    match codec {
        VideoCodec::H264 => 7,
        VideoCodec::H265 => 12,
    }
}

/// How H.265 is signalled in video tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HevcSignal {
    /// Codec id 12 in the classic header (SRS 6, flv.js forks, Chinese players): HTTP-FLV.
    #[default]
    CodecId12,
    /// Enhanced RTMP (veovera enhanced-rtmp v1): an extended header with FourCC `hvc1`,
    /// which SRS 6, ffmpeg 6+ and OBS understand: RTMP push.
    Enhanced,
}

/// Enhanced RTMP: the extended-header bit of the first video byte.
const EX_HEADER: u8 = 0x80;

/// Enhanced RTMP packet type: sequence start (decoder configuration record follows).
const PACKET_SEQUENCE_START: u8 = 0;

/// Enhanced RTMP packet type: coded frames with a composition time offset (SI24).
const PACKET_CODED_FRAMES: u8 = 1;

/// Enhanced RTMP FourCC for H.265.
const FOURCC_HEVC: [u8; 4] = *b"hvc1";

/// The onMetaData `videocodecid` for a codec as `signal` writes it (Enhanced RTMP puts the
/// FourCC there, as a number).
pub fn metadata_codec_id(codec: VideoCodec, signal: HevcSignal) -> f64 {
    match (codec, signal) {
        (VideoCodec::H265, HevcSignal::Enhanced) => f64::from(u32::from_be_bytes(FOURCC_HEVC)),
        _ => f64::from(video_codec_id(codec)),
    }
}

/// The first bytes of a video tag body: classic (frame type, codec id, AVC packet type,
/// composition time) or, for H.265 with [`HevcSignal::Enhanced`], the extended header with
/// its FourCC (and the composition time for coded frames).
fn video_head(codec: VideoCodec, signal: HevcSignal, frame_type: u8, config: bool) -> Vec<u8> {
    if codec == VideoCodec::H265 && signal == HevcSignal::Enhanced {
        let packet = if config {
            PACKET_SEQUENCE_START
        } else {
            PACKET_CODED_FRAMES
        };
        let mut head = vec![EX_HEADER | (frame_type << 4) | packet];
        head.extend_from_slice(&FOURCC_HEVC);
        if !config {
            head.extend_from_slice(&[0, 0, 0]);
        }
        return head;
    }
    vec![
        (frame_type << 4) | video_codec_id(codec),
        u8::from(!config),
        0,
        0,
        0,
    ]
}

/// FLV sound formats the gateway writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoundFormat {
    /// 7: G.711 A-law (8 kHz mono).
    G711A = 7,
    /// 8: G.711 µ-law (8 kHz mono).
    G711U = 8,
    /// 10: AAC (raw frames after an AudioSpecificConfig sequence header).
    Aac = 10,
}

/// AAC audio tag header byte: format 10, and the rate/size/type bits the FLV spec fixes
/// for AAC (44 kHz, 16-bit, stereo; players take the real values from the
/// AudioSpecificConfig).
const AAC_TAG_HEAD: u8 = 0xaf;

/// Appends an AAC sequence header tag (AACPacketType 0) carrying the AudioSpecificConfig.
pub fn write_aac_config(out: &mut BytesMut, timestamp: u64, audio_specific_config: &[u8]) {
    write_tag(
        out,
        TagType::Audio,
        timestamp,
        &[&[AAC_TAG_HEAD, 0], audio_specific_config],
    );
}

/// Appends an AAC frame tag (AACPacketType 1): one raw frame, no ADTS header.
pub fn write_aac_frame(out: &mut BytesMut, timestamp: u64, raw: &[u8]) {
    write_tag(out, TagType::Audio, timestamp, &[&[AAC_TAG_HEAD, 1], raw]);
}

/// The 9-byte FLV header followed by PreviousTagSize0.
pub fn file_header(has_audio: bool, has_video: bool) -> Bytes {
    let flags = (u8::from(has_audio) << 2) | u8::from(has_video);
    Bytes::copy_from_slice(&[b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0])
}

/// Appends one tag (11-byte header, body, PreviousTagSize). `timestamp` is in ms and
/// wraps after 2^32 ms as FLV does.
pub fn write_tag(out: &mut BytesMut, tag_type: TagType, timestamp: u64, body: &[&[u8]]) {
    let size: usize = body.iter().map(|b| b.len()).sum();
    let ts = (timestamp & 0xffff_ffff) as u32;
    out.reserve(11 + size + 4);
    out.put_u8(tag_type as u8);
    out.put_uint(size as u64 & 0x00ff_ffff, 3);
    out.put_uint(u64::from(ts & 0x00ff_ffff), 3);
    out.put_u8((ts >> 24) as u8);
    out.put_uint(0, 3); // stream id
    for part in body {
        out.put_slice(part);
    }
    out.put_u32((11 + size) as u32);
}

/// Appends a video sequence header tag (decoder configuration record).
pub fn write_video_config(
    out: &mut BytesMut,
    codec: VideoCodec,
    signal: HevcSignal,
    timestamp: u64,
    record: &[u8],
) {
    let head = video_head(codec, signal, 1, true);
    write_tag(out, TagType::Video, timestamp, &[&head, record]);
}

/// Appends a video frame tag: the Annex-B access unit converted to 4-byte length-prefixed
/// NAL units, without parameter sets and delimiters (they live in the sequence header).
pub fn write_video_frame(
    out: &mut BytesMut,
    (codec, signal): (VideoCodec, HevcSignal),
    timestamp: u64,
    is_key: bool,
    access_unit: &[u8],
) {
    let head = video_head(codec, signal, if is_key { 1 } else { 2 }, false);
    let nals: Vec<&[u8]> = nal_units(access_unit)
        .filter(|nal| {
            !matches!(
                codec.nal_kind(nal),
                NalKind::Vps | NalKind::Sps | NalKind::Pps | NalKind::Aud
            )
        })
        .collect();
    let size = head.len() + nals.iter().map(|n| 4 + n.len()).sum::<usize>();
    let ts = (timestamp & 0xffff_ffff) as u32;
    out.reserve(11 + size + 4);
    out.put_u8(TagType::Video as u8);
    out.put_uint(size as u64 & 0x00ff_ffff, 3);
    out.put_uint(u64::from(ts & 0x00ff_ffff), 3);
    out.put_u8((ts >> 24) as u8);
    out.put_uint(0, 3);
    out.put_slice(&head);
    for nal in nals {
        out.put_u32(nal.len() as u32);
        out.put_slice(nal);
    }
    out.put_u32((11 + size) as u32);
}

/// Appends an audio tag for G.711 (sound rate/size/type bits are ignored for these formats
/// by players; written as 5.5 kHz, 16-bit, mono as ffmpeg does).
pub fn write_audio_frame(out: &mut BytesMut, format: SoundFormat, timestamp: u64, data: &[u8]) {
    let head = [((format as u8) << 4) | 0x02];
    write_tag(out, TagType::Audio, timestamp, &[&head, data]);
}

/// AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3) from one SPS and one PPS.
pub fn avc_decoder_config(sps: &[u8], pps: &[u8], info: &SpsInfo) -> Bytes {
    let mut out = BytesMut::with_capacity(11 + sps.len() + pps.len());
    out.put_u8(1); // configurationVersion
    out.put_slice(&info.profile); // profile, compatibility, level
    out.put_u8(0xff); // reserved + lengthSizeMinusOne = 3
    out.put_u8(0xe1); // reserved + one SPS
    out.put_u16(sps.len() as u16);
    out.put_slice(sps);
    out.put_u8(1);
    out.put_u16(pps.len() as u16);
    out.put_slice(pps);
    out.freeze()
}

/// HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 §8.3.3) from VPS, SPS and PPS.
pub fn hevc_decoder_config(vps: &[u8], sps: &[u8], pps: &[u8], info: &SpsInfo) -> Option<Bytes> {
    let hevc = info.hevc.as_ref()?;
    let mut out = BytesMut::with_capacity(23 + 15 + vps.len() + sps.len() + pps.len());
    out.put_u8(1); // configurationVersion
    out.put_slice(&hevc.general_profile_tier_level);
    out.put_u16(0xf000); // reserved + min_spatial_segmentation_idc = 0
    out.put_u8(0xfc); // reserved + parallelismType = 0
    out.put_u8(0xfc | (hevc.chroma_format_idc & 0x03));
    out.put_u8(0xf8 | (hevc.bit_depth_luma_minus8 & 0x07));
    out.put_u8(0xf8 | (hevc.bit_depth_chroma_minus8 & 0x07));
    out.put_u16(0); // avgFrameRate unknown
    // constantFrameRate 0, numTemporalLayers, temporalIdNested, lengthSizeMinusOne = 3
    out.put_u8(
        (((hevc.max_sub_layers_minus1 + 1) & 0x07) << 3)
            | (u8::from(hevc.temporal_id_nesting) << 2)
            | 0x03,
    );
    out.put_u8(3); // numOfArrays
    for (nal_type, nal) in [(32u8, vps), (33, sps), (34, pps)] {
        out.put_u8(0x80 | nal_type); // array_completeness = 1
        out.put_u16(1);
        out.put_u16(nal.len() as u16);
        out.put_slice(nal);
    }
    Some(out.freeze())
}

/// Appends an onMetaData script tag (AMF0) at `ts` with the picture size and codec ids.
pub fn write_metadata(
    out: &mut BytesMut,
    ts: u64,
    video: Option<(VideoCodec, HevcSignal, u32, u32)>,
    audio: Option<SoundFormat>,
) {
    let mut body = BytesMut::new();
    amf_string(&mut body, "onMetaData");
    let mut fields: Vec<(&str, f64)> = Vec::new();
    if let Some((codec, signal, width, height)) = video {
        fields.push(("width", f64::from(width)));
        fields.push(("height", f64::from(height)));
        fields.push(("videocodecid", metadata_codec_id(codec, signal)));
    }
    if let Some(format) = audio {
        fields.push(("audiocodecid", f64::from(format as u8)));
        fields.push(("audiosamplerate", 8000.0));
        fields.push(("audiosamplesize", 16.0));
        fields.push(("stereo", 0.0));
    }
    body.put_u8(8); // ECMA array
    body.put_u32(fields.len() as u32);
    for (name, value) in fields {
        body.put_u16(name.len() as u16);
        body.put_slice(name.as_bytes());
        body.put_u8(0); // number
        body.put_f64(value);
    }
    body.put_slice(&[0, 0, 9]); // object end
    write_tag(out, TagType::Script, ts, &[&body]);
}

/// One tag of an FLV byte stream, as [`tags`] splits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    /// 8 audio, 9 video, 18 script data (others are passed on as they are).
    pub tag_type: u8,
    /// Milliseconds (32 bits, the extended byte included).
    pub timestamp: u32,
    /// The tag body.
    pub body: Bytes,
}

/// Splits FLV bytes that start at a tag boundary (or at the file header, which is skipped)
/// into tags; the body of each is a slice of `flv`, not a copy. A torn last tag ends the
/// iteration (the muxer only ever writes whole tags).
pub fn tags(flv: Bytes) -> impl Iterator<Item = Tag> {
    let mut at = if flv.starts_with(b"FLV") { 13 } else { 0 };
    std::iter::from_fn(move || {
        let head = flv.get(at..at + 11)?;
        let size = usize::from(*head.get(1)?) << 16
            | usize::from(*head.get(2)?) << 8
            | usize::from(*head.get(3)?);
        let timestamp =
            u32::from_be_bytes([*head.get(7)?, *head.get(4)?, *head.get(5)?, *head.get(6)?]);
        let tag_type = *head.first()?;
        let end = at + 11 + size;
        flv.get(end..end + 4)?;
        let body = flv.slice(at + 11..end);
        at = end + 4;
        Some(Tag {
            tag_type,
            timestamp,
            body,
        })
    })
}

/// The number fields of an onMetaData script tag body (as [`write_metadata`] writes it:
/// the name, then an ECMA array or object of numbers); other value types end the reading.
pub fn metadata_numbers(body: &[u8]) -> Vec<(String, f64)> {
    let mut fields = Vec::new();
    // AMF0 string "onMetaData": marker 2, u16 length 10, bytes
    if body.get(..13) != Some(&b"\x02\x00\x0aonMetaData"[..]) {
        return fields;
    }
    let mut at = match body.get(13) {
        Some(8) => 18, // ECMA array: marker, u32 count
        Some(3) => 14, // object
        _ => return fields,
    };
    while let Some(len) = body
        .get(at..at + 2)
        .and_then(|l| <[u8; 2]>::try_from(l).ok())
    {
        let len = usize::from(u16::from_be_bytes(len));
        let Some(name) = body.get(at + 2..at + 2 + len) else {
            break;
        };
        at += 2 + len;
        if body.get(at) != Some(&0) {
            break;
        }
        let Some(value) = body
            .get(at + 1..at + 9)
            .and_then(|v| <[u8; 8]>::try_from(v).ok())
        else {
            break;
        };
        fields.push((
            String::from_utf8_lossy(name).into_owned(),
            f64::from_be_bytes(value),
        ));
        at += 9;
    }
    fields
}

fn amf_string(out: &mut BytesMut, s: &str) {
    out.put_u8(2);
    out.put_u16(s.len() as u16);
    out.put_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_layout_and_previous_size() {
        let mut out = BytesMut::new();
        write_tag(
            &mut out,
            TagType::Audio,
            0x0102_0304,
            &[&[0x72], &[1, 2, 3]],
        );
        assert_eq!(&out[..11], &[8, 0, 0, 4, 0x02, 0x03, 0x04, 0x01, 0, 0, 0]);
        assert_eq!(&out[11..15], &[0x72, 1, 2, 3]);
        assert_eq!(&out[15..], &[0, 0, 0, 15]);
    }

    #[test]
    fn video_frame_is_length_prefixed_without_parameter_sets() {
        let au = [
            0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2, 0, 0, 1, 0x65, 7, 7, 7,
        ];
        let mut out = BytesMut::new();
        write_video_frame(
            &mut out,
            (VideoCodec::H264, HevcSignal::CodecId12),
            40,
            true,
            &au,
        );
        let body = &out[11..out.len() - 4];
        assert_eq!(body, &[0x17, 1, 0, 0, 0, 0, 0, 0, 4, 0x65, 7, 7, 7]);
    }

    #[test]
    fn enhanced_hevc_frames_carry_the_fourcc() {
        let au = [0, 0, 0, 1, 0x26, 1, 9, 9];
        let mut out = BytesMut::new();
        write_video_frame(
            &mut out,
            (VideoCodec::H265, HevcSignal::Enhanced),
            0,
            true,
            &au,
        );
        let body = &out[11..out.len() - 4];
        assert_eq!(&body[..8], &[0x91, b'h', b'v', b'c', b'1', 0, 0, 0]);
        assert_eq!(&body[8..], &[0, 0, 0, 4, 0x26, 1, 9, 9]);
        let mut out = BytesMut::new();
        write_video_config(&mut out, VideoCodec::H265, HevcSignal::Enhanced, 0, &[1, 2]);
        assert_eq!(
            &out[11..out.len() - 4],
            &[0x90, b'h', b'v', b'c', b'1', 1, 2]
        );
        let mut classic = BytesMut::new();
        write_video_frame(
            &mut classic,
            (VideoCodec::H265, HevcSignal::CodecId12),
            0,
            false,
            &au,
        );
        assert_eq!(&classic[11..16], &[0x2c, 1, 0, 0, 0]);
    }

    #[test]
    fn tags_split_a_muxed_stream_and_metadata_reads_back() {
        let mut out = BytesMut::from(&file_header(true, true)[..]);
        write_metadata(
            &mut out,
            0,
            Some((VideoCodec::H265, HevcSignal::Enhanced, 640, 360)),
            Some(SoundFormat::G711A),
        );
        write_audio_frame(&mut out, SoundFormat::G711A, 0x0100_0020, &[1, 2, 3]);
        let all: Vec<Tag> = tags(out.freeze()).collect();
        assert_eq!(all.len(), 2);
        assert_eq!((all[1].tag_type, all[1].timestamp), (8, 0x0100_0020));
        assert_eq!(&all[1].body[..], &[0x72, 1, 2, 3]);
        let fields = metadata_numbers(&all[0].body);
        assert!(fields.contains(&("width".to_owned(), 640.0)), "{fields:?}");
        assert!(fields.contains(&(
            "videocodecid".to_owned(),
            f64::from(u32::from_be_bytes(*b"hvc1"))
        )));
        // a torn tag is not returned
        let mut torn = BytesMut::new();
        write_audio_frame(&mut torn, SoundFormat::G711A, 0, &[1, 2, 3]);
        assert_eq!(tags(torn.freeze().slice(..10)).count(), 0);
    }

    #[test]
    fn header_flags() {
        assert_eq!(file_header(true, true)[4], 5);
        assert_eq!(file_header(false, true)[4], 1);
    }
}
