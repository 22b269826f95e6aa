//! H.264 / H.265 Annex-B: NAL unit splitting, parameter sets, key frames, picture size.
//!
//! Sans-IO, no allocation per NAL unit: NAL units are sub-slices of the access unit. SPS
//! syntax is parsed by the `scuffle-h264` / `scuffle-h265` crates; only the fixed-position
//! profile bytes the decoder configuration records need are read here.

use std::sync::LazyLock;

use memchr::memmem;
use scuffle_bytes_util::BitReader;

/// The Annex B start code searcher, built once: `memmem::find` builds one per call, which
/// showed in profiles (twice per NAL unit).
static START_CODE: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(&[0, 0, 1]));

/// Which of the two video codecs an access unit is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    /// H.264 / AVC (ITU-T H.264).
    H264,
    /// H.265 / HEVC (ITU-T H.265).
    H265,
}

/// What a NAL unit is, as far as muxing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NalKind {
    /// Video parameter set (H.265 type 32).
    Vps,
    /// Sequence parameter set (H.264 type 7, H.265 type 33).
    Sps,
    /// Picture parameter set (H.264 type 8, H.265 type 34).
    Pps,
    /// Access unit delimiter (H.264 type 9, H.265 type 35).
    Aud,
    /// Slice of a random access picture (H.264 IDR type 5, H.265 IRAP types 16..=23).
    KeySlice,
    /// Any other slice.
    Slice,
    /// SEI, filler, and everything else.
    Other,
}

/// Iterator over the NAL units of an Annex-B byte stream (start codes removed).
#[derive(Debug, Clone)]
pub struct NalUnits<'a> {
    rest: &'a [u8],
}

/// Splits an Annex-B access unit into NAL units. Data before the first start code (a device
/// that sends one bare NAL unit) is returned as a NAL unit too.
pub fn nal_units(data: &[u8]) -> NalUnits<'_> {
    NalUnits { rest: data }
}

impl<'a> Iterator for NalUnits<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let start = match START_CODE.find(self.rest) {
                Some(0) => 3,
                _ => 0,
            };
            let body = self.rest.get(start..).unwrap_or(&[]);
            let end = START_CODE.find(body).unwrap_or(body.len());
            let nal = body.get(..end).unwrap_or(&[]);
            self.rest = body.get(end..).unwrap_or(&[]);
            // trailing zero bytes belong to the next (4-byte) start code
            let trimmed_len = nal.len() - nal.iter().rev().take_while(|b| **b == 0).count();
            let nal = nal.get(..trimmed_len).unwrap_or(&[]);
            if !nal.is_empty() {
                return Some(nal);
            }
        }
    }
}

impl VideoCodec {
    /// Classifies a NAL unit by its header.
    pub fn nal_kind(self, nal: &[u8]) -> NalKind {
        let Some(&first) = nal.first() else {
            return NalKind::Other;
        };
        match self {
            VideoCodec::H264 => match first & 0x1f {
                7 => NalKind::Sps,
                8 => NalKind::Pps,
                9 => NalKind::Aud,
                5 => NalKind::KeySlice,
                1..=4 => NalKind::Slice,
                _ => NalKind::Other,
            },
            VideoCodec::H265 => match (first >> 1) & 0x3f {
                32 => NalKind::Vps,
                33 => NalKind::Sps,
                34 => NalKind::Pps,
                35 => NalKind::Aud,
                16..=23 => NalKind::KeySlice,
                0..=9 => NalKind::Slice,
                _ => NalKind::Other,
            },
        }
    }

    /// True if the access unit contains a random access slice.
    pub fn is_key_frame(self, access_unit: &[u8]) -> bool {
        nal_units(access_unit).any(|nal| self.nal_kind(nal) == NalKind::KeySlice)
    }

    /// True if the access unit contains any slice (not only parameter sets or SEI).
    pub fn has_slice(self, access_unit: &[u8]) -> bool {
        nal_units(access_unit)
            .any(|nal| matches!(self.nal_kind(nal), NalKind::KeySlice | NalKind::Slice))
    }

    /// The first NAL unit of the given kind.
    pub fn find(self, access_unit: &[u8], kind: NalKind) -> Option<&[u8]> {
        nal_units(access_unit).find(|nal| self.nal_kind(nal) == kind)
    }

    /// Parses an SPS NAL unit (with its header).
    pub fn parse_sps(self, sps: &[u8]) -> Option<SpsInfo> {
        match self {
            VideoCodec::H264 => {
                // scuffle-h264 0.2 reads an Exp-Golomb code of 64 or more leading zero bits
                // as 0 - 1 (a panic where overflow is checked); no valid SPS has 8 zero bytes
                // in a row
                let rbsp = rbsp_prefix(sps, sps.len());
                if rbsp.windows(8).any(|w| w.iter().all(|b| *b == 0)) {
                    return None;
                }
                let parsed = scuffle_h264::Sps::parse_with_emulation_prevention(sps).ok()?;
                let (width, height) = h264_picture_size(&parsed)?;
                Some(SpsInfo {
                    width,
                    height,
                    id: u32::from(parsed.seq_parameter_set_id),
                    frame_rate: parsed.frame_rate(),
                    profile: [*sps.get(1)?, *sps.get(2)?, *sps.get(3)?],
                    hevc: None,
                })
            }
            VideoCodec::H265 => parse_hevc_sps(sps),
        }
    }
}

impl VideoCodec {
    /// Whether a decoder can start at the key slice `key_slice` with these parameter sets:
    /// the SPS parses with a profile and level the standard defines, the PPS names that
    /// SPS, and the slice header starts a picture of the kind its NAL type says and names
    /// that PPS. Checks only the few fields that tie the three together, so noise that
    /// merely starts like an SPS, PPS and IDR slice is not taken for video.
    pub fn starts_decoding(self, sps: &[u8], pps: &[u8], key_slice: &[u8]) -> bool {
        let Some(info) = self.parse_sps(sps) else {
            return false;
        };
        let (profile, level) = (info.profile[0], info.profile[2]);
        let defined = match self {
            // ITU-T H.264 Annex A: profile_idc and level_idc values
            VideoCodec::H264 => {
                matches!(
                    profile,
                    44 | 66
                        | 77
                        | 83
                        | 86
                        | 88
                        | 100
                        | 110
                        | 118
                        | 122
                        | 128
                        | 134
                        | 135
                        | 138
                        | 139
                        | 144
                        | 244
                ) && matches!(
                    level,
                    9..=13 | 20..=22 | 30..=32 | 40..=42 | 50..=52 | 60..=62
                )
            }
            // ITU-T H.265 Annex A: general_profile_idc 1..=11, general_level_idc 30 × level
            VideoCodec::H265 => {
                (1..=11).contains(&(profile & 0x1f))
                    && matches!(
                        level,
                        30 | 60 | 63 | 90 | 93 | 120 | 123 | 150 | 153 | 156 | 180 | 183 | 186
                    )
            }
        };
        let Some((pps_id, pps_sps_id)) = self.pps_ids(pps) else {
            return false;
        };
        defined && pps_sps_id == info.id && self.key_slice_pps_id(key_slice) == Some(pps_id)
    }

    /// A PPS's pic_parameter_set_id and the seq_parameter_set_id it names (H.264 §7.3.2.2,
    /// H.265 §7.3.2.3.1).
    fn pps_ids(self, pps: &[u8]) -> Option<(u32, u32)> {
        let (header, max_pps, max_sps) = match self {
            VideoCodec::H264 => (1, 255, 31),
            VideoCodec::H265 => (2, 63, 15),
        };
        let rbsp = rbsp_prefix(pps.get(header..)?, 16);
        let mut bits = Bits(BitReader::new_from_slice(rbsp.as_slice()));
        let pps_id = u32::try_from(bits.ue()?).ok().filter(|id| *id <= max_pps)?;
        let sps_id = u32::try_from(bits.ue()?).ok().filter(|id| *id <= max_sps)?;
        Some((pps_id, sps_id))
    }

    /// The PPS a key slice that starts a picture names; `None` when its header does not
    /// start one (H.264 §7.3.3: first_mb_in_slice, an I or SI slice_type, the PPS id;
    /// H.265 §7.3.6.1: first_slice_segment_in_pic_flag set, no_output_of_prior_pics_flag,
    /// the PPS id).
    fn key_slice_pps_id(self, slice: &[u8]) -> Option<u32> {
        let header = match self {
            VideoCodec::H264 => 1,
            VideoCodec::H265 => 2,
        };
        let rbsp = rbsp_prefix(slice.get(header..)?, 16);
        let mut bits = Bits(BitReader::new_from_slice(rbsp.as_slice()));
        match self {
            VideoCodec::H264 => {
                bits.ue()?; // first_mb_in_slice
                // an IDR picture has only I (2, 7) or SI (4, 9) slices
                if !matches!(bits.ue()?, 2 | 4 | 7 | 9) {
                    return None;
                }
            }
            VideoCodec::H265 => {
                if bits.read(1)? != 1 {
                    return None;
                }
                bits.skip(1)?; // no_output_of_prior_pics_flag
            }
        }
        u32::try_from(bits.ue()?).ok()
    }
}

/// Splits an Annex-B elementary stream into access units (frames): parameter sets, SEI and
/// delimiters attach to the next picture; a slice that starts a new picture (first_mb_in_slice
/// = 0 in H.264, first_slice_segment_in_pic_flag in H.265) starts a new access unit.
pub fn access_units(codec: VideoCodec, stream: &[u8]) -> Vec<Vec<u8>> {
    let mut units = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    let mut has_slice = false;
    for nal in nal_units(stream) {
        let kind = codec.nal_kind(nal);
        let is_slice = matches!(kind, NalKind::KeySlice | NalKind::Slice);
        let header_len = match codec {
            VideoCodec::H264 => 1,
            VideoCodec::H265 => 2,
        };
        // both flags are the first bit after the NAL header (ue(v) 0 is a single 1 bit)
        let starts_picture = is_slice && nal.get(header_len).is_some_and(|b| b & 0x80 != 0);
        if has_slice && (starts_picture || !is_slice) {
            units.push(std::mem::take(&mut current));
            has_slice = false;
        }
        current.extend_from_slice(&[0, 0, 0, 1]);
        current.extend_from_slice(nal);
        has_slice |= is_slice;
    }
    if !current.is_empty() {
        units.push(current);
    }
    units
}

/// What the gateway needs from an SPS.
#[derive(Debug, Clone, PartialEq)]
pub struct SpsInfo {
    /// Picture width after cropping.
    pub width: u32,
    /// Picture height after cropping.
    pub height: u32,
    /// seq_parameter_set_id: the id a PPS names it by.
    pub id: u32,
    /// Frame rate from the VUI timing info, when present.
    pub frame_rate: Option<f64>,
    /// H.264: profile_idc, constraint flags, level_idc. H.265: the first two bytes of the
    /// general profile and the level.
    pub profile: [u8; 3],
    /// H.265 fields the HEVC decoder configuration record needs.
    pub hevc: Option<HevcSpsInfo>,
}

/// H.265 SPS fields for the HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 §8.3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HevcSpsInfo {
    /// general_profile_space .. general_level_idc, 12 bytes as coded.
    pub general_profile_tier_level: [u8; 12],
    /// chroma_format_idc.
    pub chroma_format_idc: u8,
    /// bit_depth_luma_minus8.
    pub bit_depth_luma_minus8: u8,
    /// bit_depth_chroma_minus8.
    pub bit_depth_chroma_minus8: u8,
    /// sps_max_sub_layers_minus1.
    pub max_sub_layers_minus1: u8,
    /// sps_temporal_id_nesting_flag.
    pub temporal_id_nesting: bool,
}

/// The cropped picture size of an H.264 SPS (ITU-T H.264 §7.4.2.1.1), every step checked:
/// `Sps::width`/`height` of scuffle-h264 0.2 subtract the crop unchecked, which panics (or,
/// in release builds, wraps) on a corrupt SPS whose crop exceeds the picture.
fn h264_picture_size(sps: &scuffle_h264::Sps) -> Option<(u32, u32)> {
    let field_pairs = if sps.mb_adaptive_frame_field_flag.is_none() {
        1
    } else {
        2
    };
    let width = sps
        .pic_width_in_mbs_minus1
        .checked_add(1)?
        .checked_mul(16)?;
    let height = sps
        .pic_height_in_map_units_minus1
        .checked_add(1)?
        .checked_mul(16 * field_pairs)?;
    let (crop_x, crop_y) = match &sps.frame_crop_info {
        Some(crop) => (
            crop.frame_crop_left_offset
                .checked_add(crop.frame_crop_right_offset)?
                .checked_mul(2)?,
            crop.frame_crop_top_offset
                .checked_add(crop.frame_crop_bottom_offset)?
                .checked_mul(2)?,
        ),
        None => (0, 0),
    };
    let (width, height) = (width.checked_sub(crop_x)?, height.checked_sub(crop_y)?);
    if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
        return None;
    }
    Some((u32::try_from(width).ok()?, u32::try_from(height).ok()?))
}

/// Largest picture dimension accepted from an SPS (H.265 level 6.2 allows 8192 × 4320; a
/// larger value is a corrupt SPS, not a camera).
const MAX_DIMENSION: u64 = 16_384;

/// Reads the H.265 SPS fields the gateway needs (ITU-T H.265 §7.3.2.2.1), up to the bit
/// depths. Written here rather than taken from a full SPS parser because those fields all
/// precede the scaling lists and VUI, and the full parser this project used
/// (scuffle-h265 0.2) panicked on corrupt scaling lists found by fuzzing: a device's bytes
/// must never panic the gateway.
fn parse_hevc_sps(sps: &[u8]) -> Option<SpsInfo> {
    let rbsp = rbsp_prefix(sps.get(2..)?, sps.len());
    let general_profile_tier_level: [u8; 12] = rbsp.get(1..13)?.try_into().ok()?;
    let mut bits = Bits(BitReader::new_from_slice(rbsp.as_slice()));
    bits.skip(4)?; // sps_video_parameter_set_id
    let max_sub_layers_minus1 = u8::try_from(bits.read(3)?).ok()?;
    let temporal_id_nesting = bits.read(1)? == 1;
    bits.skip(96)?; // general profile, tier, compatibility, constraint flags, level
    // profile_tier_level(1, sps_max_sub_layers_minus1), §7.3.3
    let mut present = Vec::with_capacity(usize::from(max_sub_layers_minus1));
    for _ in 0..max_sub_layers_minus1 {
        present.push((bits.read(1)? == 1, bits.read(1)? == 1));
    }
    if max_sub_layers_minus1 > 0 {
        bits.skip(2 * (8 - u32::from(max_sub_layers_minus1)))?; // reserved_zero_2bits
    }
    for (profile, level) in present {
        if profile {
            bits.skip(88)?;
        }
        if level {
            bits.skip(8)?;
        }
    }
    let id = u32::try_from(bits.ue()?).ok().filter(|id| *id <= 15)?; // sps_seq_parameter_set_id
    let chroma_format_idc = bits.ue()?;
    if chroma_format_idc > 3 {
        return None;
    }
    let separate_planes = chroma_format_idc == 3 && bits.read(1)? == 1;
    let (width, height) = (bits.ue()?, bits.ue()?);
    let (mut crop_x, mut crop_y) = (0, 0);
    if bits.read(1)? == 1 {
        // conformance window offsets are in chroma samples (Table 6-1: SubWidthC, SubHeightC)
        let sub_width = if matches!(chroma_format_idc, 1 | 2) && !separate_planes {
            2
        } else {
            1
        };
        let sub_height = if chroma_format_idc == 1 && !separate_planes {
            2
        } else {
            1
        };
        let (left, right, top, bottom) = (bits.ue()?, bits.ue()?, bits.ue()?, bits.ue()?);
        crop_x = sub_width * (left + right);
        crop_y = sub_height * (top + bottom);
    }
    let bit_depth_luma_minus8 = bits.ue()?;
    let bit_depth_chroma_minus8 = bits.ue()?;
    if bit_depth_luma_minus8 > 8 || bit_depth_chroma_minus8 > 8 {
        return None;
    }
    let (width, height) = (width.checked_sub(crop_x)?, height.checked_sub(crop_y)?);
    if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
        return None;
    }
    Some(SpsInfo {
        width: u32::try_from(width).ok()?,
        height: u32::try_from(height).ok()?,
        id,
        frame_rate: None,
        profile: [
            general_profile_tier_level[0],
            general_profile_tier_level[1],
            general_profile_tier_level[11],
        ],
        hevc: Some(HevcSpsInfo {
            general_profile_tier_level,
            chroma_format_idc: u8::try_from(chroma_format_idc).ok()?,
            bit_depth_luma_minus8: u8::try_from(bit_depth_luma_minus8).ok()?,
            bit_depth_chroma_minus8: u8::try_from(bit_depth_chroma_minus8).ok()?,
            max_sub_layers_minus1,
            temporal_id_nesting,
        }),
    })
}

/// A bit reader over an RBSP with the Exp-Golomb codes of H.26x (§9.2), every read
/// checked: running out of bits is `None`.
struct Bits<'a>(BitReader<std::io::Cursor<&'a [u8]>>);

impl Bits<'_> {
    fn read(&mut self, n: u8) -> Option<u64> {
        self.0.read_bits(n).ok()
    }

    fn skip(&mut self, mut n: u32) -> Option<()> {
        while n > 0 {
            let step = n.min(32);
            self.read(u8::try_from(step).ok()?)?;
            n -= step;
        }
        Some(())
    }

    /// ue(v); values past 32 bits are corrupt in every field read here.
    fn ue(&mut self) -> Option<u64> {
        let mut zeros = 0u8;
        while self.read(1)? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u64 << zeros) - 1 + self.read(zeros)?)
    }
}

/// The first `n` bytes of a NAL payload with emulation prevention bytes removed.
fn rbsp_prefix(payload: &[u8], n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    let mut zeros = 0;
    for &b in payload {
        if out.len() == n {
            break;
        }
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_three_and_four_byte_start_codes() {
        let au = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5,
        ];
        let nals: Vec<&[u8]> = nal_units(&au).collect();
        assert_eq!(
            nals,
            vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4, 5][..]]
        );
        assert!(VideoCodec::H264.is_key_frame(&au));
        assert_eq!(
            VideoCodec::H264.find(&au, NalKind::Pps),
            Some(&[0x68, 3][..])
        );
    }

    #[test]
    fn bare_nal_without_start_code_is_one_unit() {
        let nals: Vec<&[u8]> = nal_units(&[0x41, 9, 9]).collect();
        assert_eq!(nals, vec![&[0x41, 9, 9][..]]);
        assert_eq!(VideoCodec::H264.nal_kind(nals[0]), NalKind::Slice);
    }

    #[test]
    fn h265_nal_types() {
        assert_eq!(VideoCodec::H265.nal_kind(&[0x40, 1]), NalKind::Vps);
        assert_eq!(VideoCodec::H265.nal_kind(&[0x42, 1]), NalKind::Sps);
        assert_eq!(VideoCodec::H265.nal_kind(&[0x44, 1]), NalKind::Pps);
        assert_eq!(VideoCodec::H265.nal_kind(&[0x26, 1]), NalKind::KeySlice); // IDR_W_RADL
        assert_eq!(VideoCodec::H265.nal_kind(&[0x02, 1]), NalKind::Slice); // TRAIL_R
    }

    #[test]
    fn access_units_group_parameter_sets_with_their_picture() {
        let stream = [
            0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2, 0, 0, 1, 0x65, 0x88, // SPS PPS IDR
            0, 0, 1, 0x41, 0x9a, 0, 0, 1, 0x41, 0x9b, // two P pictures
            0, 0, 1, 0x41, 0x40, // second slice of the last picture (first_mb != 0)
        ];
        let units = access_units(VideoCodec::H264, &stream);
        assert_eq!(units.len(), 3);
        assert!(VideoCodec::H264.is_key_frame(&units[0]));
        assert_eq!(nal_units(&units[0]).count(), 3);
        assert_eq!(nal_units(&units[2]).count(), 2);
    }

    /// The SPS, PPS and the start of the IDR slice of a 64×48 H.264 picture (x264
    /// baseline: `ffmpeg -f lavfi -i testsrc=size=64x48 -frames:v 1 -pix_fmt yuv420p
    /// -c:v libx264 -profile:v baseline`).
    const SPS_64X48: [u8; 23] = [
        0x67, 0x42, 0xc0, 0x0a, 0xd9, 0x04, 0x7b, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00,
        0x00, 0x03, 0x03, 0x20, 0xf1, 0x22, 0x64, 0x80,
    ];
    const PPS_64X48: [u8; 5] = [0x68, 0xcb, 0x83, 0xcb, 0x20];
    const IDR_64X48: [u8; 5] = [0x65, 0x88, 0x84, 0x0c, 0x7f];

    #[test]
    fn a_key_slice_starts_decoding_only_with_parameter_sets_that_fit_it() {
        let h264 = VideoCodec::H264;
        assert!(h264.starts_decoding(&SPS_64X48, &PPS_64X48, &IDR_64X48));
        // a PPS naming SPS 1 (pps_id 0, sps_id 1: bits 1 010)
        assert!(!h264.starts_decoding(&SPS_64X48, &[0x68, 0xa8], &IDR_64X48));
        // a slice of type P (first_mb 0, slice_type 5: bits 1 00110 1)
        assert!(!h264.starts_decoding(&SPS_64X48, &PPS_64X48, &[0x65, 0x9a, 0x80]));
        // a slice naming PPS 1 (first_mb 0, slice_type 7, pps_id 1: bits 1 0001000 010)
        assert!(!h264.starts_decoding(&SPS_64X48, &PPS_64X48, &[0x65, 0x88, 0x40]));
        // a profile the standard does not define (67)
        let mut undefined = SPS_64X48;
        undefined[1] = 67;
        assert!(!h264.starts_decoding(&undefined, &PPS_64X48, &IDR_64X48));
    }

    #[test]
    fn removes_emulation_prevention() {
        assert_eq!(rbsp_prefix(&[1, 0, 0, 3, 1, 2], 5), vec![1, 0, 0, 1, 2]);
    }

    #[test]
    fn garbage_sps_is_none_not_panic() {
        assert!(VideoCodec::H264.parse_sps(&[0x67]).is_none());
        // a crop wider than the picture (16 pixels wide, 20 cropped): scuffle-h264's own
        // width() panics on it
        let over_cropped = [0x67, 0x42, 0xc0, 0x0a, 0xda, 0x7c, 0x5f, 0x40];
        assert!(VideoCodec::H264.parse_sps(&over_cropped).is_none());
        // an Exp-Golomb code of 64 leading zero bits (found by the chaos tests' noise)
        let mut zeros = vec![0x67, 0x42, 0xc0, 0x0a];
        zeros.extend([0; 9]);
        zeros.extend([0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0x80]);
        assert!(VideoCodec::H264.parse_sps(&zeros).is_none());
        assert!(VideoCodec::H265.parse_sps(&[0x42, 0x01, 0xff]).is_none());
    }

    /// SPS of a 100×58 picture from libx265 (4:2:0, coded as 104×64 with a conformance
    /// window; made with `ffmpeg -f lavfi -i testsrc=size=100x58 -pix_fmt yuv420p -c:v libx265`).
    const X265_SPS_100X58: [u8; 42] = [
        0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00,
        0x03, 0x00, 0x1e, 0xa0, 0x34, 0x81, 0x07, 0x72, 0x65, 0x95, 0x9a, 0xe4, 0xca, 0xf0, 0x16,
        0x80, 0x80, 0x00, 0x00, 0x03, 0x00, 0x80, 0x00, 0x00, 0x03, 0x02, 0x84,
    ];

    #[test]
    fn hevc_sps_gives_the_cropped_picture_size_and_format() {
        let info = VideoCodec::H265.parse_sps(&X265_SPS_100X58).unwrap();
        assert_eq!((info.width, info.height), (100, 58));
        let hevc = info.hevc.unwrap();
        assert_eq!(hevc.chroma_format_idc, 1);
        assert_eq!(
            (hevc.bit_depth_luma_minus8, hevc.bit_depth_chroma_minus8),
            (0, 0)
        );
        assert_eq!(hevc.general_profile_tier_level[0] & 0x1f, 1, "Main profile");
    }

    #[test]
    fn corrupt_hevc_sps_is_rejected_without_panicking() {
        // found by the h26x_parameter_sets fuzz target: a full SPS parser panicked on it
        let crash = [
            0x43, 0x01, 0x01, 0xd4, 0xde, 0x68, 0x68, 0x68, 0xd4, 0xff, 0x68, 0x68, 0x68, 0x68,
            0x68, 0x68, 0x68, 0x2a, 0x9d, 0xff, 0xff, 0xff, 0x2d, 0x68, 0x27, 0x6e, 0x00, 0xb9,
            0x3f, 0x25, 0x26, 0x1c, 0x68, 0x68, 0xd4, 0xff, 0x68, 0x68, 0x68, 0x68, 0xff, 0x68,
            0x68, 0x9d, 0xff, 0xff, 0x1c, 0x68, 0xff, 0x2d, 0x68,
        ];
        assert!(VideoCodec::H265.parse_sps(&crash).is_none());
        // a truncated SPS is either too short to read (None) or cut after the fields read
        for len in 0..X265_SPS_100X58.len() {
            if let Some(info) = VideoCodec::H265.parse_sps(&X265_SPS_100X58[..len]) {
                assert_eq!((info.width, info.height), (100, 58), "cut at {len}");
            }
        }
        assert!(VideoCodec::H265.parse_sps(&X265_SPS_100X58[..20]).is_none());
    }
}
