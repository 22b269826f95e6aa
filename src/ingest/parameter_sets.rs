//! The latest VPS/SPS/PPS of one channel's video: they make every key frame self-contained
//! and tell whether the channel has sent anything a decoder can start from.
//!
//! Owns byte views of the parameter sets (no copies) and the picture size parsed from the
//! SPS. Knows nothing of the hub: the caller reports codec and size changes.

use bytes::{BufMut, Bytes, BytesMut};
use tracing::debug;

use crate::codec::h26x::{NalKind, VideoCodec, nal_units};

/// The latest parameter sets of a video stream, so every key frame carries them.
#[derive(Default)]
pub(super) struct ParameterSets {
    codec: Option<VideoCodec>,
    vps: Option<Bytes>,
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    parsed_sps: Option<Bytes>,
    /// Picture width and height from the SPS, once it parsed.
    resolution: Option<(u32, u32)>,
}

/// Which parameter sets and slices one access unit carries.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct AccessUnit {
    has_vps: bool,
    has_sps: bool,
    has_pps: bool,
    has_key: bool,
}

/// What [`ParameterSets::remember`] learnt that the stream's listeners should hear of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Learnt {
    /// Nothing new.
    Nothing,
    /// The codec changed (all sets were forgotten) or a new SPS was parsed: the video
    /// codec and the picture size (when the SPS parsed) are these now.
    Video(VideoCodec, Option<(u32, u32)>),
}

impl ParameterSets {
    /// The video codec seen, if any.
    pub(super) fn codec(&self) -> Option<VideoCodec> {
        self.codec
    }

    /// The picture size from the latest SPS that parsed.
    pub(super) fn resolution(&self) -> Option<(u32, u32)> {
        self.resolution
    }

    /// Remembers the parameter sets in `data`, an access unit of `codec`.
    pub(super) fn remember(&mut self, codec: VideoCodec, data: &Bytes) -> (AccessUnit, Learnt) {
        let mut learnt = Learnt::Nothing;
        if self.codec != Some(codec) {
            *self = ParameterSets {
                codec: Some(codec),
                ..ParameterSets::default()
            };
            learnt = Learnt::Video(codec, None);
        }
        let mut unit = AccessUnit::default();
        for nal in nal_units(data) {
            let slot = match codec.nal_kind(nal) {
                NalKind::Vps => {
                    unit.has_vps = true;
                    &mut self.vps
                }
                NalKind::Sps => {
                    unit.has_sps = true;
                    &mut self.sps
                }
                NalKind::Pps => {
                    unit.has_pps = true;
                    &mut self.pps
                }
                NalKind::KeySlice => {
                    unit.has_key = true;
                    continue;
                }
                _ => continue,
            };
            if slot.as_deref() != Some(nal) {
                *slot = Some(data.slice_ref(nal));
            }
        }
        if self.parse_new_sps(codec) {
            learnt = Learnt::Video(codec, self.resolution);
        }
        (unit, learnt)
    }

    /// Whether a decoder can start at `data`, an access unit [`ParameterSets::remember`]
    /// saw: it has a key slice, and the sets known now (from it or from earlier frames)
    /// are complete and fit it ([`VideoCodec::starts_decoding`]).
    pub(super) fn starts_decoding(&self, codec: VideoCodec, unit: AccessUnit, data: &[u8]) -> bool {
        let (Some(sps), Some(pps)) = (&self.sps, &self.pps) else {
            return false;
        };
        unit.has_key
            && self.codec == Some(codec)
            && self.resolution.is_some()
            && (codec == VideoCodec::H264 || self.vps.is_some())
            && codec
                .find(data, NalKind::KeySlice)
                .is_some_and(|slice| codec.starts_decoding(sps, pps, slice))
    }

    /// Makes a key frame self-contained: puts the sets it lacks in front of it. Returns
    /// `None` for an access unit with no slice (some devices send SPS/PPS as frames of
    /// their own).
    pub(super) fn complete(
        &self,
        codec: VideoCodec,
        data: Bytes,
        unit: AccessUnit,
    ) -> Option<Bytes> {
        if !codec.has_slice(&data) {
            return None;
        }
        let needs_vps = codec == VideoCodec::H265 && !unit.has_vps;
        if !unit.has_key || (unit.has_sps && unit.has_pps && !needs_vps) {
            return Some(data);
        }
        let mut out = BytesMut::with_capacity(data.len() + 256);
        let missing = [
            (needs_vps, &self.vps),
            (!unit.has_sps, &self.sps),
            (!unit.has_pps, &self.pps),
        ];
        for (is_missing, set) in missing {
            if let (true, Some(set)) = (is_missing, set) {
                out.put_slice(&[0, 0, 0, 1]);
                out.put_slice(set);
            }
        }
        out.put_slice(&data);
        Some(out.freeze())
    }

    /// Parses the SPS if it changed; true if it did.
    fn parse_new_sps(&mut self, codec: VideoCodec) -> bool {
        let Some(sps) = &self.sps else { return false };
        if self.parsed_sps.as_ref() == Some(sps) {
            return false;
        }
        self.parsed_sps = Some(sps.clone());
        self.resolution = codec.parse_sps(sps).map(|info| (info.width, info.height));
        if self.resolution.is_none() {
            debug!("SPS does not parse; resolution unknown");
        }
        true
    }
}
