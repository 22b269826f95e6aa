//! Fragmented MP4 (CMAF) boxes for recordings: an init segment (`ftyp` + `moov`) per codec
//! configuration and one fragment (`moof` + `mdat`) per media segment. Pure: bytes in,
//! bytes out.
//!
//! The boxes are `mp4-atom`'s (a maintained ISO BMFF encoder); this file only fills them
//! in. Video is H.264 (`avc1`) or H.265 (`hvc1`) with its decoder configuration record as
//! the hub's FLV muxer builds it (`codec::flv`), audio AAC (`mp4a` with the
//! AudioSpecificConfig). Timescales: 90 kHz video, the sample rate for audio.

use bytes::Bytes;
use mp4_atom::{
    Atom, Audio, Avc1, Avcc, Dinf, Dref, Encode, Esds, Ftyp, Hdlr, Hvc1, Hvcc, Mdhd, Mdia, Mfhd,
    Minf, Moof, Moov, Mp4a, Mvex, Mvhd, Smhd, Stbl, Stco, Stsd, Tfdt, Tfhd, Tkhd, Traf, Trak, Trex,
    Trun, TrunEntry, Url, Visual, Vmhd, esds,
};

use crate::codec::audio::aac::AacConfig;
use crate::codec::h26x::{NalKind, VideoCodec, nal_units};

/// Video timescale (ticks per second).
pub(crate) const VIDEO_TIMESCALE: u32 = 90_000;

/// Track ids in every init segment this module writes.
const VIDEO_TRACK: u32 = 1;
const AUDIO_TRACK: u32 = 2;

/// `sample_depends_on = 2` (an I picture / independent audio frame).
const FLAGS_SYNC: u32 = 0x0200_0000;
/// `sample_depends_on = 1`, `sample_is_non_sync_sample`.
const FLAGS_NON_SYNC: u32 = 0x0101_0000;

/// Why a box could not be written.
#[derive(Debug, thiserror::Error)]
pub enum Fmp4Error {
    /// The decoder configuration record did not parse as `avcC`/`hvcC`.
    #[error("video decoder configuration record: {0}")]
    VideoConfig(mp4_atom::Error),
    /// Encoding a box failed (a field out of its range).
    #[error("encoding a box: {0}")]
    Encode(mp4_atom::Error),
    /// A fragment over 4 GiB (sizes and offsets are 32-bit).
    #[error("a fragment of {len} bytes is too large")]
    TooLarge {
        /// Bytes of media.
        len: usize,
    },
}

/// The video of an init segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VideoConfig {
    /// H.264 or H.265.
    pub(crate) codec: VideoCodec,
    /// AVC/HEVC decoder configuration record (ISO/IEC 14496-15).
    pub(crate) record: Bytes,
    /// Picture size.
    pub(crate) width: u32,
    /// Picture height.
    pub(crate) height: u32,
}

/// What one init segment describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InitConfig {
    /// The video track.
    pub(crate) video: VideoConfig,
    /// The audio track, when the recording has audio.
    pub(crate) audio: Option<AacConfig>,
}

/// One sample of a fragment.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    /// Duration in the track's timescale.
    pub(crate) duration: u32,
    /// A sync sample (video key frame; every audio frame).
    pub(crate) is_sync: bool,
    /// The sample as stored (length-prefixed NAL units for video, a raw AAC frame).
    pub(crate) data: Bytes,
}

/// One track's part of a fragment.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrackRun {
    /// Decode time of the first sample, in the track's timescale.
    pub(crate) base_decode_time: u64,
    /// The samples in decode order.
    pub(crate) samples: Vec<Sample>,
}

/// The init segment (`ftyp` + `moov`) for `config`.
pub(crate) fn init_segment(config: &InitConfig) -> Result<Vec<u8>, Fmp4Error> {
    let mut trak = vec![video_trak(&config.video)?];
    let mut trexs = vec![trex(VIDEO_TRACK)];
    if let Some(audio) = &config.audio {
        trak.push(audio_trak(audio));
        trexs.push(trex(AUDIO_TRACK));
    }
    let moov = Moov {
        mvhd: Mvhd {
            timescale: 1000,
            next_track_id: AUDIO_TRACK + 1,
            ..Mvhd::default()
        },
        mvex: Some(Mvex {
            mehd: None,
            trex: trexs,
        }),
        trak,
        ..Moov::default()
    };
    let ftyp = Ftyp {
        major_brand: b"iso6".into(),
        minor_version: 0,
        compatible_brands: vec![b"iso6".into(), b"cmfc".into(), b"mp41".into()],
    };
    let mut out = Vec::new();
    ftyp.encode(&mut out).map_err(Fmp4Error::Encode)?;
    moov.encode(&mut out).map_err(Fmp4Error::Encode)?;
    Ok(out)
}

fn trex(track_id: u32) -> Trex {
    Trex {
        track_id,
        default_sample_description_index: 1,
        default_sample_duration: 0,
        default_sample_size: 0,
        default_sample_flags: 0,
    }
}

fn video_trak(video: &VideoConfig) -> Result<Trak, Fmp4Error> {
    let visual = Visual {
        data_reference_index: 1,
        width: u16::try_from(video.width).unwrap_or(u16::MAX),
        height: u16::try_from(video.height).unwrap_or(u16::MAX),
        ..Visual::default()
    };
    let record: &mut &[u8] = &mut video.record.as_ref();
    let codec: mp4_atom::Codec = match video.codec {
        VideoCodec::H264 => Avc1 {
            visual,
            avcc: Avcc::decode_body(record).map_err(Fmp4Error::VideoConfig)?,
            ..Avc1::default()
        }
        .into(),
        VideoCodec::H265 => Hvc1 {
            visual,
            hvcc: Hvcc::decode_body(record).map_err(Fmp4Error::VideoConfig)?,
            ..Hvc1::default()
        }
        .into(),
    };
    Ok(Trak {
        tkhd: Tkhd {
            track_id: VIDEO_TRACK,
            enabled: true,
            in_movie: true,
            width: u16::try_from(video.width).unwrap_or(u16::MAX).into(),
            height: u16::try_from(video.height).unwrap_or(u16::MAX).into(),
            ..Tkhd::default()
        },
        mdia: Mdia {
            mdhd: Mdhd {
                timescale: VIDEO_TIMESCALE,
                language: "und".into(),
                ..Mdhd::default()
            },
            hdlr: Hdlr {
                handler: b"vide".into(),
                name: "jt1078-gateway video".into(),
            },
            minf: Minf {
                vmhd: Some(Vmhd::default()),
                dinf: data_information(),
                stbl: sample_table(codec),
                ..Minf::default()
            },
        },
        ..Trak::default()
    })
}

fn audio_trak(audio: &AacConfig) -> Trak {
    let rate = audio.sample_rate();
    let asc = audio.audio_specific_config();
    let codec: mp4_atom::Codec = Mp4a {
        audio: Audio {
            data_reference_index: 1,
            channel_count: u16::from(audio.channels.max(1)),
            sample_size: 16,
            sample_rate: u16::try_from(rate).unwrap_or(0).into(),
        },
        esds: Esds {
            es_desc: esds::EsDescriptor {
                es_id: 2,
                dec_config: esds::DecoderConfig {
                    // MPEG-4 audio (ISO/IEC 14496-1 Table 5), an audio stream (Table 6)
                    object_type_indication: 0x40,
                    stream_type: 5,
                    dec_specific: Some(esds::DecoderSpecific {
                        profile: audio.object_type,
                        freq_index: audio.rate_index,
                        chan_conf: audio.channels,
                        raw: asc.to_vec(),
                    }),
                    ..esds::DecoderConfig::default()
                },
                ..esds::EsDescriptor::default()
            },
        },
        btrt: None,
        taic: None,
    }
    .into();
    Trak {
        tkhd: Tkhd {
            track_id: AUDIO_TRACK,
            alternate_group: 1,
            enabled: true,
            in_movie: true,
            volume: 1.into(),
            ..Tkhd::default()
        },
        mdia: Mdia {
            mdhd: Mdhd {
                timescale: rate,
                language: "und".into(),
                ..Mdhd::default()
            },
            hdlr: Hdlr {
                handler: b"soun".into(),
                name: "jt1078-gateway audio".into(),
            },
            minf: Minf {
                smhd: Some(Smhd::default()),
                dinf: data_information(),
                stbl: sample_table(codec),
                ..Minf::default()
            },
        },
        ..Trak::default()
    }
}

fn data_information() -> Dinf {
    Dinf {
        dref: Dref {
            urls: vec![Url::default()],
        },
    }
}

/// An empty sample table (the samples are in the fragments) with one sample entry.
fn sample_table(codec: mp4_atom::Codec) -> Stbl {
    Stbl {
        stsd: Stsd {
            codecs: vec![codec],
        },
        stco: Some(Stco::default()),
        ..Stbl::default()
    }
}

/// One fragment (`moof` + `mdat`) with a run of video samples and, if any, a run of audio
/// samples; `sequence` is the fragment's number (`mfhd`).
pub(crate) fn fragment(
    sequence: u32,
    video: &TrackRun,
    audio: Option<&TrackRun>,
) -> Result<Vec<u8>, Fmp4Error> {
    let runs: Vec<(u32, &TrackRun)> = std::iter::once((VIDEO_TRACK, video))
        .chain(
            audio
                .filter(|a| !a.samples.is_empty())
                .map(|a| (AUDIO_TRACK, a)),
        )
        .collect();
    let media_len: usize = runs
        .iter()
        .flat_map(|(_, run)| run.samples.iter())
        .map(|s| s.data.len())
        .sum();
    let too_large = || Fmp4Error::TooLarge { len: media_len };
    if u32::try_from(media_len).is_err() {
        return Err(too_large());
    }
    // the data offsets are relative to the moof (default-base-is-moof): encode once to
    // learn its size (the offsets are always present, so the size does not change)
    let mut moof = moof(sequence, &runs, &[0; 2]);
    let mut sized = Vec::new();
    moof.encode(&mut sized).map_err(Fmp4Error::Encode)?;
    let moof_len = sized.len();
    let mdat_header = 8;
    let mut offsets = [0i32; 2];
    let mut at = moof_len + mdat_header;
    for (i, (_, run)) in runs.iter().enumerate() {
        if let Some(slot) = offsets.get_mut(i) {
            *slot = i32::try_from(at).map_err(|_| too_large())?;
        }
        at += run.samples.iter().map(|s| s.data.len()).sum::<usize>();
    }
    moof = self::moof(sequence, &runs, &offsets);
    let mut out = Vec::with_capacity(moof_len + mdat_header + media_len);
    moof.encode(&mut out).map_err(Fmp4Error::Encode)?;
    // the mdat written here, header then samples: `mp4_atom::Mdat` would take the media
    // as one more copy first
    let mdat_len = u32::try_from(mdat_header + media_len).map_err(|_| too_large())?;
    out.extend_from_slice(&mdat_len.to_be_bytes());
    out.extend_from_slice(b"mdat");
    for (_, run) in &runs {
        for sample in &run.samples {
            out.extend_from_slice(&sample.data);
        }
    }
    Ok(out)
}

fn moof(sequence: u32, runs: &[(u32, &TrackRun)], offsets: &[i32; 2]) -> Moof {
    let traf = runs
        .iter()
        .zip(offsets)
        .map(|((track_id, run), offset)| Traf {
            tfhd: Tfhd {
                track_id: *track_id,
                default_base_is_moof: true,
                ..Tfhd::default()
            },
            tfdt: Some(Tfdt {
                base_media_decode_time: run.base_decode_time,
            }),
            trun: vec![Trun {
                data_offset: Some(*offset),
                entries: run
                    .samples
                    .iter()
                    .map(|s| TrunEntry {
                        duration: Some(s.duration),
                        size: Some(u32::try_from(s.data.len()).unwrap_or(u32::MAX)),
                        flags: Some(if s.is_sync {
                            FLAGS_SYNC
                        } else {
                            FLAGS_NON_SYNC
                        }),
                        cts: None,
                    })
                    .collect(),
            }],
            ..Traf::default()
        })
        .collect();
    Moof {
        mfhd: Mfhd {
            sequence_number: sequence,
        },
        traf,
    }
}

/// An Annex-B access unit as an MP4 sample: each NAL unit with a 4-byte length, parameter
/// sets and delimiters left out (they are in the init segment).
pub(crate) fn length_prefixed(codec: VideoCodec, access_unit: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(access_unit.len() + 16);
    for nal in nal_units(access_unit) {
        if matches!(
            codec.nal_kind(nal),
            NalKind::Vps | NalKind::Sps | NalKind::Pps | NalKind::Aud
        ) {
            continue;
        }
        let len = u32::try_from(nal.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(nal);
    }
    Bytes::from(out)
}
