//! The one translation point of the WebRTC side from hub frames to what a `str0m` writer
//! takes (the counterpart of `ingest::connection::to_frame`): which negotiated payload type
//! a frame goes in, its RTP time, and its payload.
//!
//! Video is passed through: an Annex-B access unit is handed to `str0m`, whose H.264
//! (RFC 6184) and H.265 (RFC 7798) packetisers split it. Audio: G.711 as it came when the
//! browser takes that law, else decoded (G.711 of the other law, G.726, IMA ADPCM, AAC)
//! and encoded as A-law (or µ-law). Pure: no `Rtc`, no clock, no socket; the peer writes
//! what this returns and drains its session.

use std::borrow::Cow;

use str0m::format::{Codec as RtpCodec, PayloadParams};
use str0m::media::{Frequency, MediaKind, MediaTime, Mid, Pt};

use crate::codec::audio::PcmDecoder;
use crate::codec::audio::aac_decode::AacToTelephony;
use crate::media::{Codec, Frame, Track};

/// What the peer sends, as negotiated (filled by [`Tracks::media_added`]).
#[derive(Debug, Default)]
pub(crate) struct Tracks {
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
}

/// One frame, ready for `Writer::write`.
#[derive(Debug)]
pub(crate) struct RtpWrite<'a> {
    pub(crate) mid: Mid,
    pub(crate) pt: Pt,
    pub(crate) time: MediaTime,
    pub(crate) payload: Cow<'a, [u8]>,
}

/// Why a frame is not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Skip {
    /// The browser took no track of this kind (or the peer was not asked for it).
    NoTrack,
    /// The stream's video codec is not one the browser accepted: the peer cannot go on.
    VideoCodecRefused,
    /// Audio nothing here decodes, or the browser took neither G.711 law.
    AudioNotSendable,
}

impl Tracks {
    /// A media section the session negotiated: kept if the peer sends that kind and has
    /// no track of it yet. `params` are its payload types.
    pub(crate) fn media_added(
        &mut self,
        mid: Mid,
        kind: MediaKind,
        params: &[&PayloadParams],
        want_video: bool,
        want_audio: bool,
    ) {
        let pt = |codec: RtpCodec, packetization: Option<u8>| {
            params
                .iter()
                .find(|p| {
                    p.spec().codec == codec
                        && packetization
                            .is_none_or(|m| p.spec().format.packetization_mode == Some(m))
                })
                .map(|p| p.pt())
        };
        match kind {
            MediaKind::Video if want_video && self.video.is_none() => {
                self.video = Some(VideoOut {
                    mid,
                    h264: pt(RtpCodec::H264, Some(1)).or_else(|| pt(RtpCodec::H264, None)),
                    h265: pt(RtpCodec::H265, None),
                });
            }
            MediaKind::Audio if want_audio && self.audio.is_none() => {
                self.audio = Some(AudioOut {
                    mid,
                    pcma: pt(RtpCodec::PCMA, None),
                    pcmu: pt(RtpCodec::PCMU, None),
                    decoder: None,
                    aac: None,
                    pcm: Vec::new(),
                });
            }
            _ => {}
        }
    }

    /// Whether `mid` is the video track (a keyframe request names it).
    pub(crate) fn is_video(&self, mid: Mid) -> bool {
        self.video.as_ref().is_some_and(|v| v.mid == mid)
    }

    /// `frame` as an RTP write at stream time `pts` ms (the frame's own, or moved later
    /// after a GOP was sent again).
    pub(crate) fn translate<'f>(
        &mut self,
        frame: &'f Frame,
        pts: u64,
    ) -> Result<RtpWrite<'f>, Skip> {
        match frame.track() {
            Track::Video => {
                let video = self.video.as_ref().ok_or(Skip::NoTrack)?;
                let pt = match frame.codec {
                    Codec::H264 => video.h264,
                    Codec::H265 => video.h265,
                    _ => None,
                }
                .ok_or(Skip::VideoCodecRefused)?;
                Ok(RtpWrite {
                    mid: video.mid,
                    pt,
                    time: MediaTime::new(pts * 90, Frequency::NINETY_KHZ),
                    payload: Cow::Borrowed(frame.data.as_ref()),
                })
            }
            Track::Audio => {
                let audio = self.audio.as_mut().ok_or(Skip::NoTrack)?;
                let (pt, payload) = audio.payload(frame).ok_or(Skip::AudioNotSendable)?;
                Ok(RtpWrite {
                    mid: audio.mid,
                    pt,
                    time: MediaTime::new(pts * 8, Frequency::EIGHT_KHZ),
                    payload,
                })
            }
        }
    }
}

impl AudioOut {
    /// The payload type and the bytes to send for a device audio frame: G.711 as it came
    /// when the browser takes that law, else decoded and encoded as A-law (or µ-law).
    fn payload<'f>(&mut self, frame: &'f Frame) -> Option<(Pt, Cow<'f, [u8]>)> {
        match (frame.codec, self.pcma, self.pcmu) {
            (Codec::G711A, Some(pt), _) | (Codec::G711U, _, Some(pt)) => {
                return Some((pt, Cow::Borrowed(frame.data.as_ref())));
            }
            (Codec::G711U, Some(pt), None) => {
                let bytes = frame
                    .data
                    .iter()
                    .map(|b| audio_codec_algorithms::convert_ulaw_to_alaw(*b))
                    .collect();
                return Some((pt, Cow::Owned(bytes)));
            }
            _ => {}
        }
        self.pcm.clear();
        if frame.codec == Codec::Aac {
            let aac = self.aac.get_or_insert_with(Box::default);
            aac.decode(&frame.data, &mut self.pcm).ok()?;
        } else {
            let format = frame.codec.pcm_format()?;
            if self.decoder.as_ref().map(PcmDecoder::format) != Some(format) {
                self.decoder = Some(PcmDecoder::new(format));
            }
            self.decoder
                .as_mut()?
                .decode(&frame.data, &mut self.pcm)
                .ok()?;
        }
        let (pt, encode): (Pt, fn(i16) -> u8) = match (self.pcma, self.pcmu) {
            (Some(pt), _) => (pt, audio_codec_algorithms::encode_alaw),
            (None, Some(pt)) => (pt, audio_codec_algorithms::encode_ulaw),
            (None, None) => return None,
        };
        Some((
            pt,
            Cow::Owned(self.pcm.iter().map(|s| encode(*s)).collect()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frame(codec: Codec, pts: u64, data: &[u8]) -> Frame {
        Frame {
            codec,
            is_key: false,
            pts,
            data: Bytes::copy_from_slice(data),
        }
    }

    fn tracks(pcma: Option<u8>, pcmu: Option<u8>) -> Tracks {
        Tracks {
            video: Some(VideoOut {
                mid: Mid::from("0"),
                h264: Some(Pt::from(102)),
                h265: None,
            }),
            audio: Some(AudioOut {
                mid: Mid::from("1"),
                pcma: pcma.map(Pt::from),
                pcmu: pcmu.map(Pt::from),
                decoder: None,
                aac: None,
                pcm: Vec::new(),
            }),
        }
    }

    #[test]
    fn video_is_passed_through_on_the_90_khz_clock() {
        let mut tracks = tracks(Some(8), Some(0));
        let h264 = frame(Codec::H264, 40, &[0, 0, 0, 1, 0x65, 1, 2, 3]);
        let write = tracks.translate(&h264, 1000).unwrap();
        assert_eq!(write.mid, Mid::from("0"));
        assert_eq!(*write.pt, 102);
        assert_eq!(write.time, MediaTime::new(90_000, Frequency::NINETY_KHZ));
        assert!(matches!(write.payload, Cow::Borrowed(_)), "not copied");
        assert_eq!(&write.payload[..], &h264.data[..]);
        let h265 = frame(Codec::H265, 40, &[0, 0, 0, 1, 0x26, 1]);
        assert_eq!(
            tracks.translate(&h265, 40).unwrap_err(),
            Skip::VideoCodecRefused
        );
    }

    #[test]
    fn g711_passes_through_or_changes_law_and_adpcm_is_decoded() {
        let alaw = frame(Codec::G711A, 0, &[0xd5; 160]);
        let mut both = tracks(Some(8), Some(0));
        let write = both.translate(&alaw, 20).unwrap();
        assert_eq!((write.mid, *write.pt), (Mid::from("1"), 8));
        assert_eq!(write.time, MediaTime::new(160, Frequency::EIGHT_KHZ));
        assert!(matches!(write.payload, Cow::Borrowed(_)));

        // the browser took A-law only: µ-law is converted byte for byte
        let ulaw = frame(Codec::G711U, 0, &[0xff; 160]);
        let mut alaw_only = tracks(Some(8), None);
        let write = alaw_only.translate(&ulaw, 0).unwrap();
        assert_eq!(*write.pt, 8);
        assert_eq!(write.payload.len(), 160);
        assert!(
            write.payload.iter().all(|b| *b == 0xd5),
            "µ-law silence is A-law silence"
        );

        // IMA ADPCM (a 4-byte block header, then 2 samples a byte): decoded, A-law out
        let mut adpcm = vec![0u8, 0, 0, 0];
        adpcm.extend_from_slice(&[0u8; 80]);
        let adpcm_frame = frame(Codec::Adpcm, 0, &adpcm);
        let write = alaw_only.translate(&adpcm_frame, 0).unwrap();
        assert_eq!(*write.pt, 8);
        assert!(write.payload.len() >= 160, "{}", write.payload.len());

        let mut none = tracks(None, None);
        assert_eq!(
            none.translate(&frame(Codec::Adpcm, 0, &adpcm), 0)
                .unwrap_err(),
            Skip::AudioNotSendable
        );
        let mut no_audio = Tracks::default();
        assert_eq!(no_audio.translate(&alaw, 0).unwrap_err(), Skip::NoTrack);
    }
}
