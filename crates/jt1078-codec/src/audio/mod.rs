//! Device audio: sans-IO decoders to 16-bit PCM, ADTS/AudioSpecificConfig handling, the AAC
//! encoder behind [`AacEncode`], and the [`Transcoder`] that ties them together.
//!
//! One file per codec: `g711.rs`, `adpcm.rs` (IMA, with the state block JT/T 1078 devices
//! send), `g726.rs` (written here: no maintained Rust crate decodes or encodes G.726),
//! `device_encoder.rs` (PCM to the codecs a device plays, for talkback), `aac.rs` (ADTS and
//! AudioSpecificConfig), `encoder.rs` (the trait and the fdk-aac implementation) and
//! `transcode.rs` (decoder + encoder + the stream clock of the encoded frames).
//!
//! Like the rest of `codec/`: no tokio, sockets, clocks or locks; time arrives as
//! milliseconds on the caller's clock. Garbage never panics; a payload that cannot be
//! decoded is an [`AudioError`] the caller counts.

pub mod aac;
pub mod aac_decode;
pub mod adpcm;
pub mod device_encoder;
pub mod encoder;
pub mod g711;
pub mod g726;
pub mod transcode;

pub use device_encoder::{DeviceCodec, DeviceEncoder};
pub use encoder::{AacEncode, EncodeError, FdkAacEncoder};
pub use transcode::{EncodedFrame, Transcoder};

/// Sample rate of every telephony codec devices send (G.711, G.726, IMA ADPCM).
pub const TELEPHONY_RATE: u32 = 8000;

/// `payload` without the 4-byte HiSilicon audio frame header (`00 01 LL 00`, LL = the
/// 16-bit words that follow) many devices put in front of each audio frame; unchanged when
/// it has none.
pub fn without_hisilicon_header(payload: &[u8]) -> &[u8] {
    match payload.split_first_chunk::<4>() {
        Some((&[0, 1, words, 0], rest)) if usize::from(words) * 2 == rest.len() => rest,
        _ => payload,
    }
}

/// The audio formats a device sends that decode to PCM here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PcmFormat {
    /// G.711 A-law, 8 kHz mono, one byte per sample.
    G711A,
    /// G.711 µ-law, 8 kHz mono, one byte per sample.
    G711U,
    /// G.726 ADPCM at 16, 24, 32 or 40 kbit/s (inferred from the frame length).
    G726,
    /// IMA ADPCM with the 4-byte state block in front of the samples.
    ImaAdpcm,
}

/// Why an audio payload was not decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudioError {
    /// Nothing to decode.
    #[error("empty audio payload")]
    Empty,
    /// Shorter than the format's header.
    #[error("audio payload of {len} bytes is shorter than its {min}-byte header")]
    TooShort {
        /// Payload length.
        len: usize,
        /// Least length the format needs.
        min: usize,
    },
    /// An IMA ADPCM state block whose step index is outside the table.
    #[error("IMA ADPCM step index {index} is past the table's 88")]
    BadStepIndex {
        /// The index the state block gave.
        index: u8,
    },
    /// Not an ADTS frame (no sync word, or a length field past the payload).
    #[error("not an ADTS frame: {reason}")]
    NotAdts {
        /// What was wrong.
        reason: &'static str,
    },
    /// An AAC profile or sample rate that FLV cannot carry.
    #[error("unsupported AAC stream: {reason}")]
    UnsupportedAac {
        /// What is unsupported.
        reason: &'static str,
    },
    /// A format nothing here decodes.
    #[error("no decoder for this audio format")]
    NoDecoder,
    /// The encoder failed.
    #[error("AAC encoder: {0}")]
    Encode(#[from] EncodeError),
    /// The AAC decoder failed.
    #[error("AAC decoder: {0}")]
    Decode(&'static str),
}

/// A decoder from one [`PcmFormat`] to 8 kHz mono PCM. Keeps the per-stream state (G.726
/// predictor, the bit or nibble order picked for the stream).
#[derive(Debug, Clone)]
pub enum PcmDecoder {
    /// G.711 A-law.
    G711A,
    /// G.711 µ-law.
    G711U,
    /// G.726.
    G726(g726::G726Decoder),
    /// IMA ADPCM.
    ImaAdpcm(adpcm::AdpcmDecoder),
}

impl PcmDecoder {
    /// A fresh decoder for `format`.
    pub fn new(format: PcmFormat) -> PcmDecoder {
        match format {
            PcmFormat::G711A => PcmDecoder::G711A,
            PcmFormat::G711U => PcmDecoder::G711U,
            PcmFormat::G726 => PcmDecoder::G726(g726::G726Decoder::default()),
            PcmFormat::ImaAdpcm => PcmDecoder::ImaAdpcm(adpcm::AdpcmDecoder::default()),
        }
    }

    /// The format decoded.
    pub fn format(&self) -> PcmFormat {
        match self {
            PcmDecoder::G711A => PcmFormat::G711A,
            PcmDecoder::G711U => PcmFormat::G711U,
            PcmDecoder::G726(_) => PcmFormat::G726,
            PcmDecoder::ImaAdpcm(_) => PcmFormat::ImaAdpcm,
        }
    }

    /// Sample rate of the PCM out.
    pub fn sample_rate(&self) -> u32 {
        TELEPHONY_RATE
    }

    /// Appends the samples of one payload (HiSilicon header already removed) to `out`.
    /// On error nothing is appended.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), AudioError> {
        if payload.is_empty() {
            return Err(AudioError::Empty);
        }
        match self {
            PcmDecoder::G711A => g711::decode_alaw(payload, out),
            PcmDecoder::G711U => g711::decode_ulaw(payload, out),
            PcmDecoder::G726(decoder) => decoder.decode(payload, out),
            PcmDecoder::ImaAdpcm(decoder) => decoder.decode(payload, out)?,
        }
        Ok(())
    }
}

/// Spectral flatness of `samples` (geometric over arithmetic mean of the power spectrum,
/// over windows of [`FLATNESS_WINDOW`] samples, summed): low for speech and tones, near 1
/// for noise. A stream decoded with the wrong bit order is noise-like: measured on ffmpeg's
/// G.726 at every rate, tones, a three-tone mix and pink noise, the right order is always
/// the flatter-spectrum one's opposite (0.001-0.95 against 0.08-5.7 summed over 10 windows),
/// where a roughness measure (mean step over mean level) picks the wrong one on tones.
pub(crate) fn spectral_flatness(samples: &[i16]) -> f64 {
    samples
        .chunks_exact(FLATNESS_WINDOW)
        .map(window_flatness)
        .sum()
}

/// Window of the flatness measure (20 ms at 8 kHz).
const FLATNESS_WINDOW: usize = 160;

fn window_flatness(window: &[i16]) -> f64 {
    let n = window.len();
    let step = std::f64::consts::TAU / n as f64;
    let (mut log_sum, mut sum) = (0.0, 0.0);
    let bins = n / 2 - 1;
    for k in 1..=bins {
        let (mut re, mut im) = (0.0, 0.0);
        for (i, x) in window.iter().enumerate() {
            let angle = step * ((k * i) % n) as f64;
            re += f64::from(*x) * angle.cos();
            im += f64::from(*x) * angle.sin();
        }
        let power = re * re + im * im + 1e-3;
        log_sum += power.ln();
        sum += power;
    }
    let bins = bins as f64;
    (log_sum / bins).exp() / (sum / bins)
}

/// Mean absolute level below which a frame says nothing about its packing order.
pub(crate) const ORDER_MIN_LEVEL: f64 = 64.0;

/// Mean absolute level of `samples`.
pub(crate) fn level(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.iter().map(|s| f64::from(*s).abs()).sum::<f64>() / samples.len() as f64
}
