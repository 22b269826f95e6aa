//! AAC (ADTS) to 8 kHz mono PCM, for outputs that take telephony audio (WebRTC's PCMA).
//! Decoding is fdk-aac's (the library the encoder uses); downmixing is the decoder's; the
//! rate change to 8 kHz is a box filter (the mean of the input samples each output sample
//! spans), enough for speech from a vehicle, where AAC devices send 8 or 16 kHz.

use bytes::Bytes;
use fdk_aac::dec::{Decoder, Transport};

use super::{AudioError, TELEPHONY_RATE};

/// Most samples one AAC frame decodes to (2048 per channel, up to 8 channels).
const MAX_FRAME_SAMPLES: usize = 2048 * 8;

/// Decodes ADTS frames to 8 kHz mono PCM; keeps the resampling phase across frames.
pub struct AacToTelephony {
    decoder: Decoder,
    pcm: Vec<i16>,
    /// Where the next output sample starts, in input samples from the current frame's
    /// start (carried across frames).
    phase: f64,
}

impl std::fmt::Debug for AacToTelephony {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AacToTelephony")
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl Default for AacToTelephony {
    fn default() -> Self {
        let mut decoder = Decoder::new(Transport::Adts);
        // one channel out: the decoder downmixes (an error leaves it as the stream has it,
        // and the first channel is taken below)
        let _ = decoder.set_max_output_channels(1);
        AacToTelephony {
            decoder,
            pcm: vec![0; MAX_FRAME_SAMPLES],
            phase: 0.0,
        }
    }
}

impl AacToTelephony {
    /// Appends the 8 kHz mono samples of a device payload (one or more ADTS frames) to
    /// `out`. A payload that is not ADTS is an error and appends nothing.
    pub fn decode(&mut self, adts: &Bytes, out: &mut Vec<i16>) -> Result<(), AudioError> {
        let frames = super::aac::split_adts(adts)?.len();
        let decode_error = |e: fdk_aac::dec::DecoderError| AudioError::Decode(e.message());
        self.decoder.fill(adts).map_err(decode_error)?;
        for _ in 0..frames {
            self.decoder
                .decode_frame(&mut self.pcm)
                .map_err(decode_error)?;
            self.resample(out)?;
        }
        Ok(())
    }

    /// The frame just decoded, as 8 kHz mono, appended to `out`.
    fn resample(&mut self, out: &mut Vec<i16>) -> Result<(), AudioError> {
        let info = self.decoder.stream_info();
        let channels = usize::try_from(info.numChannels).unwrap_or(1).max(1);
        let frame = usize::try_from(info.frameSize).unwrap_or(0);
        let rate = u32::try_from(info.sampleRate).unwrap_or(0);
        let Some(samples) = self
            .pcm
            .get(..frame * channels)
            .filter(|_| rate > 0 && frame > 0)
        else {
            return Err(AudioError::Decode("no samples"));
        };
        let mono = samples.iter().step_by(channels);
        if rate == TELEPHONY_RATE {
            out.extend(mono);
            return Ok(());
        }
        let mono: Vec<i16> = mono.copied().collect();
        let step = f64::from(rate) / f64::from(TELEPHONY_RATE);
        while self.phase < frame as f64 {
            let start = self.phase.floor() as usize;
            let end = ((self.phase + step).floor() as usize).clamp(start + 1, frame);
            let span = mono.get(start..end).unwrap_or_default();
            let sum: i64 = span.iter().map(|s| i64::from(*s)).sum();
            out.push((sum / span.len().max(1) as i64) as i16);
            self.phase += step;
        }
        self.phase -= frame as f64;
        Ok(())
    }
}
