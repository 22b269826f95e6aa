//! 16-bit PCM at 8 kHz to the audio codecs a device plays: what the gateway sends on a
//! talkback connection (JT/T 1078 two-way talk and broadcast), frame by frame.
//!
//! G.711 and the IMA ADPCM step are `audio-codec-algorithms`'; G.726 is this crate's own
//! encoder ([`super::g726::G726Encoder`]: no maintained Rust crate encodes it). Each frame
//! is a payload as devices send it: IMA ADPCM with its 4-byte state block in front (the
//! state before the first sample, as [`super::adpcm`] reads it), and the HiSilicon header
//! (`00 01 LL 00`) when the device expects one.

use audio_codec_algorithms::{AdpcmImaState, encode_adpcm_ima, encode_alaw, encode_ulaw};

use super::PcmFormat;
use super::adpcm::NibbleOrder;
use super::g726::{BitOrder, G726Encoder, G726Rate};

/// The codec and framing a device's talk connection takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceCodec {
    /// G.711 A-law.
    G711A,
    /// G.711 µ-law.
    G711U,
    /// IMA ADPCM with its state block, two samples a byte in `order`.
    ImaAdpcm {
        /// Which nibble holds the earlier sample.
        order: NibbleOrder,
    },
    /// G.726 at `rate`, code words packed in `order`.
    G726 {
        /// Bits a sample.
        rate: G726Rate,
        /// How code words fill bytes.
        order: BitOrder,
    },
}

impl DeviceCodec {
    /// The decoded format the same bytes have on the way in.
    pub fn format(self) -> PcmFormat {
        match self {
            DeviceCodec::G711A => PcmFormat::G711A,
            DeviceCodec::G711U => PcmFormat::G711U,
            DeviceCodec::ImaAdpcm { .. } => PcmFormat::ImaAdpcm,
            DeviceCodec::G726 { .. } => PcmFormat::G726,
        }
    }
}

/// One talk stream's encoder: keeps the codec's state from frame to frame.
#[derive(Debug, Clone)]
pub struct DeviceEncoder {
    codec: DeviceCodec,
    hisilicon: bool,
    adpcm: AdpcmImaState,
    g726: Option<G726Encoder>,
}

impl DeviceEncoder {
    /// An encoder for `codec`; `hisilicon` puts the HiSilicon header in front of each
    /// frame.
    pub fn new(codec: DeviceCodec, hisilicon: bool) -> DeviceEncoder {
        let g726 = match codec {
            DeviceCodec::G726 { rate, order } => Some(G726Encoder::new(rate, order)),
            _ => None,
        };
        DeviceEncoder {
            codec,
            hisilicon,
            adpcm: AdpcmImaState::new(),
            g726,
        }
    }

    /// The codec.
    pub fn codec(&self) -> DeviceCodec {
        self.codec
    }

    /// Appends the payload of one frame of `pcm` (8 kHz mono; an even number of samples
    /// for IMA ADPCM, whose bytes hold two) to `out`.
    pub fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) {
        let header_at = out.len();
        if self.hisilicon {
            out.extend_from_slice(&[0, 1, 0, 0]);
        }
        let body_at = out.len();
        match self.codec {
            DeviceCodec::G711A => out.extend(pcm.iter().map(|s| encode_alaw(*s))),
            DeviceCodec::G711U => out.extend(pcm.iter().map(|s| encode_ulaw(*s))),
            DeviceCodec::ImaAdpcm { order } => {
                let [lo, hi] = self.adpcm.predictor.to_le_bytes();
                out.extend_from_slice(&[lo, hi, self.adpcm.step_index, 0]);
                for pair in pcm.chunks(2) {
                    let mut nibble = |at: usize| match pair.get(at) {
                        Some(sample) => encode_adpcm_ima(*sample, &mut self.adpcm),
                        None => 0,
                    };
                    let (first, second) = (nibble(0), nibble(1));
                    out.push(match order {
                        NibbleOrder::LowFirst => first | (second << 4),
                        NibbleOrder::HighFirst => (first << 4) | second,
                    });
                }
            }
            DeviceCodec::G726 { .. } => {
                if let Some(g726) = &mut self.g726 {
                    g726.encode(pcm, out);
                }
            }
        }
        if self.hisilicon {
            // LL: the 16-bit words that follow the header
            let words = (out.len() - body_at) / 2;
            if let Some(count) = out.get_mut(header_at + 2) {
                *count = u8::try_from(words).unwrap_or(u8::MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::PcmDecoder;

    fn tone(n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = i as f64 / 8000.0;
                (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16
            })
            .collect()
    }

    /// Signal-to-noise ratio (dB) of `decoded` against `reference`.
    fn snr(reference: &[i16], decoded: &[i16]) -> f64 {
        let signal: f64 = reference.iter().map(|s| f64::from(*s).powi(2)).sum();
        let noise: f64 = reference
            .iter()
            .zip(decoded)
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
            .sum();
        10.0 * (signal / noise.max(1e-9)).log10()
    }

    #[test]
    fn frames_decode_back_through_the_ingest_decoders() {
        let pcm = tone(8000);
        for (codec, bound) in [
            (DeviceCodec::G711A, 30.0),
            (DeviceCodec::G711U, 30.0),
            (
                DeviceCodec::ImaAdpcm {
                    order: NibbleOrder::LowFirst,
                },
                20.0,
            ),
            (
                DeviceCodec::G726 {
                    rate: G726Rate::Kbps32,
                    order: BitOrder::MsbFirst,
                },
                20.0,
            ),
        ] {
            let mut encoder = DeviceEncoder::new(codec, false);
            let mut decoder = match codec {
                DeviceCodec::G726 { order, .. } => {
                    PcmDecoder::G726(crate::audio::g726::G726Decoder::with_order(order))
                }
                _ => PcmDecoder::new(codec.format()),
            };
            let mut decoded = Vec::new();
            for frame in pcm.chunks(320) {
                let mut payload = Vec::new();
                encoder.encode(frame, &mut payload);
                decoder.decode(&payload, &mut decoded).unwrap();
            }
            assert_eq!(decoded.len(), pcm.len(), "{codec:?}");
            let snr = snr(&pcm, &decoded);
            assert!(snr >= bound, "{codec:?}: {snr:.1} dB");
        }
    }

    #[test]
    fn the_hisilicon_header_counts_the_words_that_follow() {
        let mut encoder = DeviceEncoder::new(DeviceCodec::G711A, true);
        let mut out = Vec::new();
        encoder.encode(&tone(320), &mut out);
        assert_eq!(out.len(), 324);
        assert_eq!(out[..4], [0, 1, 160, 0]);
    }
}
