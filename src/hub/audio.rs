//! A stream's audio for the outputs that take AAC: one transcoder per stream, shared by all
//! of them, running only while one is attached.
//!
//! The stream carries two renditions of its audio: the device's (for outputs in
//! [`AudioMode::Passthrough`]) and AAC (for [`AudioMode::Aac`]): a device's AAC as it came,
//! anything else decoded and encoded once here, on the publisher's thread. Video is the
//! same in both. Audio that cannot be decoded is counted (`audio_undecodable`), logged once
//! per stream and dropped from the AAC rendition; video never waits for it.
//!
//! Names codecs, never protocols: which output takes which rendition is the output's choice.

use bytes::Bytes;
use tracing::warn;

use super::stream::StreamStats;
use crate::codec::audio::aac::split_adts;
use crate::codec::audio::{
    AudioError, EncodedFrame, FdkAacEncoder, PcmFormat, TELEPHONY_RATE, Transcoder,
};
use crate::media::{AudioMode, Codec, Frame, StreamKey};

/// Bit rate of the AAC made from device audio: clear speech at 8 kHz mono.
pub(crate) const AAC_BIT_RATE: u32 = 24_000;

/// Which renditions a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Renditions {
    pub(crate) device: bool,
    pub(crate) aac: bool,
}

impl Renditions {
    pub(crate) const BOTH: Renditions = Renditions {
        device: true,
        aac: true,
    };
    pub(crate) const AAC: Renditions = Renditions {
        device: false,
        aac: true,
    };
    pub(crate) const DEVICE: Renditions = Renditions {
        device: true,
        aac: false,
    };

    /// Whether an output in `mode` takes the frame.
    pub(crate) fn includes(self, mode: AudioMode) -> bool {
        match mode {
            AudioMode::Aac => self.aac,
            AudioMode::Passthrough => self.device,
        }
    }
}

/// The AAC side of one stream's audio.
#[derive(Debug, Default)]
pub(crate) struct StreamAudio {
    transcoder: Option<Transcoder>,
    /// Undecodable audio was logged for this stream.
    warned: bool,
    encoded: Vec<EncodedFrame>,
}

/// The decoder for a device codec, if there is one.
pub(crate) fn pcm_format(codec: Codec) -> Option<PcmFormat> {
    match codec {
        Codec::G711A => Some(PcmFormat::G711A),
        Codec::G711U => Some(PcmFormat::G711U),
        Codec::G726 => Some(PcmFormat::G726),
        Codec::Adpcm => Some(PcmFormat::ImaAdpcm),
        _ => None,
    }
}

impl StreamAudio {
    /// Routes one device audio frame for outputs taking AAC: returns the renditions the
    /// frame itself goes to, and appends the AAC frames made of it to `derived`. With
    /// `wanted` false (no such output) nothing is decoded and the transcoder is dropped.
    pub(crate) fn route(
        &mut self,
        frame: &Frame,
        wanted: bool,
        key: &StreamKey,
        stats: &StreamStats,
        derived: &mut Vec<Frame>,
    ) -> Renditions {
        if !wanted {
            self.transcoder = None;
            return if frame.codec == Codec::Aac {
                Renditions::BOTH
            } else {
                Renditions::DEVICE
            };
        }
        if frame.codec == Codec::Aac {
            // never re-encoded; passed on if it frames as ADTS
            return match split_adts(&frame.data) {
                Ok(_) => Renditions::BOTH,
                Err(error) => {
                    self.undecodable(frame.codec, &error, key, stats);
                    Renditions::DEVICE
                }
            };
        }
        let Some(format) = pcm_format(frame.codec) else {
            self.undecodable(frame.codec, &AudioError::NoDecoder, key, stats);
            return Renditions::DEVICE;
        };
        if let Err(error) = self.transcode(format, frame, derived) {
            self.undecodable(frame.codec, &error, key, stats);
        }
        Renditions::DEVICE
    }

    /// The stream ends: the transcoder's last frames.
    pub(crate) fn finish(&mut self, derived: &mut Vec<Frame>) {
        let Some(mut transcoder) = self.transcoder.take() else {
            return;
        };
        self.encoded.clear();
        // a failure here loses at most the last frame's worth of audio: nothing to report
        let _ = transcoder.finish(&mut self.encoded);
        derived.extend(self.encoded.drain(..).map(aac_frame));
    }

    fn transcode(
        &mut self,
        format: PcmFormat,
        frame: &Frame,
        derived: &mut Vec<Frame>,
    ) -> Result<(), AudioError> {
        let transcoder = match &mut self.transcoder {
            Some(transcoder) => transcoder,
            slot @ None => {
                let encoder = FdkAacEncoder::new(TELEPHONY_RATE, AAC_BIT_RATE)?;
                slot.insert(Transcoder::new(Box::new(encoder)))
            }
        };
        self.encoded.clear();
        transcoder.push(format, frame.pts, &frame.data, &mut self.encoded)?;
        derived.extend(self.encoded.drain(..).map(aac_frame));
        Ok(())
    }

    fn undecodable(
        &mut self,
        codec: Codec,
        error: &AudioError,
        key: &StreamKey,
        stats: &StreamStats,
    ) {
        stats.add_audio_undecodable();
        if !self.warned {
            self.warned = true;
            warn!(stream = %key, ?codec, %error, "audio not decodable: dropped for AAC outputs (logged once per stream)");
        }
    }
}

fn aac_frame(encoded: EncodedFrame) -> Frame {
    Frame {
        codec: Codec::Aac,
        is_key: false,
        pts: encoded.pts,
        data: Bytes::clone(&encoded.data),
    }
}
