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

/// FLV sound formats the gateway writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoundFormat {
    /// 7: G.711 A-law (8 kHz mono).
    G711A = 7,
    /// 8: G.711 µ-law (8 kHz mono).
    G711U = 8,
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
pub fn write_video_config(out: &mut BytesMut, codec: VideoCodec, timestamp: u64, record: &[u8]) {
    let head = [0x10 | video_codec_id(codec), 0, 0, 0, 0];
    write_tag(out, TagType::Video, timestamp, &[&head, record]);
}

/// Appends a video frame tag: the Annex-B access unit converted to 4-byte length-prefixed
/// NAL units, without parameter sets and delimiters (they live in the sequence header).
pub fn write_video_frame(
    out: &mut BytesMut,
    codec: VideoCodec,
    timestamp: u64,
    is_key: bool,
    access_unit: &[u8],
) {
    let frame_type = if is_key { 0x10 } else { 0x20 };
    let nals: Vec<&[u8]> = nal_units(access_unit)
        .filter(|nal| {
            !matches!(
                codec.nal_kind(nal),
                NalKind::Vps | NalKind::Sps | NalKind::Pps | NalKind::Aud
            )
        })
        .collect();
    let size = 5 + nals.iter().map(|n| 4 + n.len()).sum::<usize>();
    let ts = (timestamp & 0xffff_ffff) as u32;
    out.reserve(11 + size + 4);
    out.put_u8(TagType::Video as u8);
    out.put_uint(size as u64 & 0x00ff_ffff, 3);
    out.put_uint(u64::from(ts & 0x00ff_ffff), 3);
    out.put_u8((ts >> 24) as u8);
    out.put_uint(0, 3);
    out.put_slice(&[frame_type | video_codec_id(codec), 1, 0, 0, 0]);
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
    video: Option<(VideoCodec, u32, u32)>,
    audio: Option<SoundFormat>,
) {
    let mut body = BytesMut::new();
    amf_string(&mut body, "onMetaData");
    let mut fields: Vec<(&str, f64)> = Vec::new();
    if let Some((codec, width, height)) = video {
        fields.push(("width", f64::from(width)));
        fields.push(("height", f64::from(height)));
        fields.push(("videocodecid", f64::from(video_codec_id(codec))));
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
        write_video_frame(&mut out, VideoCodec::H264, 40, true, &au);
        let body = &out[11..out.len() - 4];
        assert_eq!(body, &[0x17, 1, 0, 0, 0, 0, 0, 0, 4, 0x65, 7, 7, 7]);
    }

    #[test]
    fn header_flags() {
        assert_eq!(file_header(true, true)[4], 5);
        assert_eq!(file_header(false, true)[4], 1);
    }
}
