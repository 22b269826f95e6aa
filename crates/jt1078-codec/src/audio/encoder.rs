//! The AAC-LC encoder, behind [`AacEncode`] so it can be swapped.
//!
//! [`FdkAacEncoder`] wraps the Fraunhofer FDK AAC library (`fdk-aac` crate, C source bundled
//! and built by `cargo`). It was chosen over the pure-Rust `rusty_aac` because that one
//! buffers the whole input until `finish` (no streaming: a live stream would have to be
//! cut into segments, each with its own priming and flush), see docs/architecture.md.

use bytes::Bytes;
use fdk_aac::enc::{AudioObjectType, BitRate, ChannelMode, Encoder, EncoderParams, Transport};

use super::aac::AacConfig;

/// Why the encoder failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoder library refused the settings or the input.
    #[error("{0}")]
    Library(String),
    /// A sample rate AAC cannot index.
    #[error("AAC has no sampling frequency index for {rate} Hz")]
    UnsupportedRate {
        /// The rate asked for.
        rate: u32,
    },
}

/// Mono 16-bit PCM in, raw AAC frames (no ADTS) out. Implementations keep the samples of an
/// incomplete frame for the next call.
pub trait AacEncode: Send {
    /// The stream the frames belong to (for the AudioSpecificConfig / ADTS header).
    fn config(&self) -> AacConfig;

    /// Samples of delay the encoder adds before the first input sample comes out.
    fn delay(&self) -> u32;

    /// Takes `pcm`, appends every frame completed to `out`.
    fn encode(&mut self, pcm: &[i16], out: &mut Vec<Bytes>) -> Result<(), EncodeError>;
}

/// AAC-LC, mono, constant bit rate, through libfdk-aac.
pub struct FdkAacEncoder {
    encoder: Encoder,
    config: AacConfig,
    delay: u32,
    buf: Vec<u8>,
}

impl std::fmt::Debug for FdkAacEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FdkAacEncoder")
            .field("config", &self.config)
            .field("delay", &self.delay)
            .finish_non_exhaustive()
    }
}

/// Largest raw AAC-LC frame of one channel (6144 bits, ISO/IEC 14496-3 §4.5.3.2).
const MAX_FRAME: usize = 768;

impl FdkAacEncoder {
    /// An encoder for mono PCM at `sample_rate` Hz and `bit_rate` bit/s.
    pub fn new(sample_rate: u32, bit_rate: u32) -> Result<FdkAacEncoder, EncodeError> {
        let config = AacConfig::lc(sample_rate, 1)
            .ok_or(EncodeError::UnsupportedRate { rate: sample_rate })?;
        let encoder = Encoder::new(EncoderParams {
            bit_rate: BitRate::Cbr(bit_rate),
            sample_rate,
            transport: Transport::Raw,
            channels: ChannelMode::Mono,
            audio_object_type: AudioObjectType::Mpeg4LowComplexity,
        })
        .map_err(|e| EncodeError::Library(e.to_string()))?;
        let info = encoder
            .info()
            .map_err(|e| EncodeError::Library(e.to_string()))?;
        Ok(FdkAacEncoder {
            encoder,
            config,
            delay: info.nDelay,
            buf: vec![0; MAX_FRAME.max(info.maxOutBufBytes as usize)],
        })
    }
}

impl AacEncode for FdkAacEncoder {
    fn config(&self) -> AacConfig {
        self.config
    }

    fn delay(&self) -> u32 {
        self.delay
    }

    fn encode(&mut self, pcm: &[i16], out: &mut Vec<Bytes>) -> Result<(), EncodeError> {
        let mut rest = pcm;
        // each call takes what fits in the encoder's input buffer and returns at most one
        // frame: go on until the input is taken and no frame is left to come out
        loop {
            let info = self
                .encoder
                .encode(rest, &mut self.buf)
                .map_err(|e| EncodeError::Library(e.to_string()))?;
            if let Some(frame) = self.buf.get(..info.output_size).filter(|f| !f.is_empty()) {
                out.push(Bytes::copy_from_slice(frame));
            }
            rest = rest.get(info.input_consumed..).unwrap_or_default();
            if info.output_size == 0 && (rest.is_empty() || info.input_consumed == 0) {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_frame_per_1024_samples_after_the_delay() {
        let mut encoder = FdkAacEncoder::new(8000, 24_000).unwrap();
        assert_eq!(encoder.config().audio_specific_config(), [0x15, 0x88]);
        let mut out = Vec::new();
        let tone: Vec<i16> = (0..8000 * 4)
            .map(|i| (6000.0 * (i as f64 * 1000.0 * std::f64::consts::TAU / 8000.0).sin()) as i16)
            .collect();
        for chunk in tone.chunks(160) {
            encoder.encode(chunk, &mut out).unwrap();
        }
        // a frame out for each 1024 samples in; the first `delay` samples out are priming
        // (fdk-aac's figure for AAC-LC opened without SBR: a frame and a look-ahead)
        assert!(
            (1024..=2048).contains(&encoder.delay()),
            "{}",
            encoder.delay()
        );
        let expected = tone.len() as u32 / 1024;
        assert!(
            out.len() as u32 >= expected - 1 && out.len() as u32 <= expected + 1,
            "{} frames for {} samples, delay {}",
            out.len(),
            tone.len(),
            encoder.delay()
        );
        let bytes: usize = out.iter().map(Bytes::len).sum();
        let kbps = bytes as f64 * 8.0 / 4.0 / 1000.0;
        assert!((16.0..=32.0).contains(&kbps), "{kbps} kbit/s");
    }
}
