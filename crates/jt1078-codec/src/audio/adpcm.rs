//! IMA ADPCM as JT/T 1078 devices send it (PT 26): a 4-byte state block (predictor, int16
//! little-endian; step index, one byte; one reserved byte), then two 4-bit samples per byte.
//! The HiSilicon frame header (`00 01 LL 00`), when present, is removed before this.
//!
//! The state block is the decoder state *before* the first sample (DVI4 style): a frame of
//! `n` bytes carries `2 * (n - 4)` samples. (A WAV IMA block also outputs its predictor as
//! a sample; these devices do not, or 20 ms frames would carry 161 samples.) Which nibble
//! of a byte comes first varies between devices: the decoder picks the order per stream
//! (the one whose decoding of a frame ends in the state the next frame's block states:
//! both orders of a smooth signal sound alike, so their sound cannot tell) and keeps it;
//! until it can tell (silence), it decodes low nibble first. The per-sample step is
//! `audio-codec-algorithms`' IMA decoder.

use audio_codec_algorithms::{AdpcmImaState, decode_adpcm_ima};

use super::AudioError;

/// Bytes of the state block.
pub const STATE_LEN: usize = 4;

/// Highest valid step index (the IMA step table has 89 entries).
const MAX_STEP_INDEX: u8 = 88;

/// Which nibble of a byte holds the earlier sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NibbleOrder {
    /// Low nibble first (IMA/DVI, WAV).
    LowFirst,
    /// High nibble first.
    HighFirst,
}

/// A stream's IMA ADPCM decoder: the nibble order, once picked.
#[derive(Debug, Clone, Default)]
pub struct AdpcmDecoder {
    order: Option<NibbleOrder>,
    /// While the order is open: the state after the last frame, decoded either way.
    ends: Option<(AdpcmImaState, AdpcmImaState)>,
    evidence: Evidence,
}

/// How far each order's decoding of a frame ended from the next frame's state block,
/// summed over the frames seen. A device's encoder writes its own state after the previous
/// frame, so the right order ends exactly on it (decided after one frame). ffmpeg's WAV
/// blocks state the next input sample instead: both orders end thousands away, the right
/// one about a third closer over 16 frames (decided then).
#[derive(Debug, Clone, Default)]
struct Evidence {
    low_first: u64,
    high_first: u64,
    frames: u32,
}

/// Frames after which the closer order is taken whatever the margin.
const MAX_EVIDENCE_FRAMES: u32 = 16;

impl Evidence {
    fn add(&mut self, low_first: u64, high_first: u64) {
        if low_first == high_first {
            // silence: says nothing
            return;
        }
        self.low_first += low_first;
        self.high_first += high_first;
        self.frames += 1;
    }

    fn verdict(&self) -> Option<NibbleOrder> {
        let (low, high) = (self.low_first, self.high_first);
        let exact = self.frames >= 1 && (low == 0 || high == 0);
        let clear = self.frames >= 4 && (low * 2 < high || high * 2 < low);
        let enough = self.frames >= MAX_EVIDENCE_FRAMES && low != high;
        (exact || clear || enough).then_some(if high < low {
            NibbleOrder::HighFirst
        } else {
            NibbleOrder::LowFirst
        })
    }
}

impl AdpcmDecoder {
    /// A decoder that uses `order` from the start instead of picking one.
    pub fn with_order(order: NibbleOrder) -> AdpcmDecoder {
        AdpcmDecoder {
            order: Some(order),
            ends: None,
            evidence: Evidence::default(),
        }
    }

    /// The nibble order in use, once picked.
    pub fn order(&self) -> Option<NibbleOrder> {
        self.order
    }

    /// Appends the samples of one frame (state block + data) to `out`.
    pub fn decode(&mut self, frame: &[u8], out: &mut Vec<i16>) -> Result<(), AudioError> {
        let Some((&[lo, hi, index, _], data)) = frame.split_first_chunk::<STATE_LEN>() else {
            return Err(AudioError::TooShort {
                len: frame.len(),
                min: STATE_LEN,
            });
        };
        let predictor = i16::from_le_bytes([lo, hi]);
        if index > MAX_STEP_INDEX {
            return Err(AudioError::BadStepIndex { index });
        }
        let start = AdpcmImaState {
            predictor,
            step_index: index,
        };
        if let Some(order) = self.order {
            decode_nibbles(data, start, order, out);
            return Ok(());
        }
        // the state block is the encoder's state after the previous frame: the order that
        // decoded that frame to exactly this state is the stream's
        if let Some(ends) = self.ends.take() {
            let distance = |end: &AdpcmImaState| {
                u64::from((i32::from(end.predictor) - i32::from(start.predictor)).unsigned_abs())
                    + 64 * u64::from(end.step_index.abs_diff(start.step_index))
            };
            self.evidence.add(distance(&ends.0), distance(&ends.1));
            if let Some(order) = self.evidence.verdict() {
                self.order = Some(order);
                decode_nibbles(data, start, order, out);
                return Ok(());
            }
        }
        let low = decode_nibbles(data, start.clone(), NibbleOrder::LowFirst, out);
        let mut scratch = Vec::new();
        let high = decode_nibbles(data, start, NibbleOrder::HighFirst, &mut scratch);
        self.ends = Some((low, high));
        Ok(())
    }
}

/// Decodes `data` from `state`; returns the state after the last sample.
fn decode_nibbles(
    data: &[u8],
    mut state: AdpcmImaState,
    order: NibbleOrder,
    out: &mut Vec<i16>,
) -> AdpcmImaState {
    out.reserve(data.len() * 2);
    for byte in data {
        let (first, second) = match order {
            NibbleOrder::LowFirst => (byte & 0x0f, byte >> 4),
            NibbleOrder::HighFirst => (byte >> 4, byte & 0x0f),
        };
        out.push(decode_adpcm_ima(first, &mut state));
        out.push(decode_adpcm_ima(second, &mut state));
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use audio_codec_algorithms::encode_adpcm_ima;

    /// A 400 Hz tone as our own device would send it: state block, then nibbles in `order`.
    fn tone_frames(order: NibbleOrder) -> (Vec<Vec<u8>>, Vec<i16>) {
        let pcm: Vec<i16> = (0..1600)
            .map(|i| (8000.0 * (i as f64 * 400.0 * std::f64::consts::TAU / 8000.0).sin()) as i16)
            .collect();
        let mut state = AdpcmImaState::new();
        let mut frames = Vec::new();
        for chunk in pcm.chunks(320) {
            let mut frame = state.predictor.to_le_bytes().to_vec();
            frame.extend([state.step_index, 0]);
            for pair in chunk.chunks(2) {
                let a = encode_adpcm_ima(pair[0], &mut state);
                let b = encode_adpcm_ima(pair[1], &mut state);
                frame.push(match order {
                    NibbleOrder::LowFirst => a | (b << 4),
                    NibbleOrder::HighFirst => (a << 4) | b,
                });
            }
            frames.push(frame);
        }
        (frames, pcm)
    }

    #[test]
    fn either_nibble_order_is_recognised_and_kept() {
        for order in [NibbleOrder::LowFirst, NibbleOrder::HighFirst] {
            let (frames, pcm) = tone_frames(order);
            let mut decoder = AdpcmDecoder::default();
            let mut out = Vec::new();
            for frame in &frames {
                decoder.decode(frame, &mut out).unwrap();
            }
            assert_eq!(decoder.order(), Some(order));
            assert_eq!(
                out.len(),
                pcm.len(),
                "two samples a byte, state block excluded"
            );
            // past the first frame (decoded before the order is known)
            let max_error = out
                .iter()
                .zip(&pcm)
                .skip(320)
                .map(|(a, b)| (a - b).abs())
                .max();
            assert!(max_error.unwrap() < 1500, "{order:?}: {max_error:?}");
        }
    }

    #[test]
    fn short_frames_and_bad_state_are_errors() {
        let mut decoder = AdpcmDecoder::default();
        let mut out = Vec::new();
        assert!(decoder.decode(&[1, 2, 3], &mut out).is_err());
        assert!(decoder.decode(&[0, 0, 89, 0, 0x12], &mut out).is_err());
        assert!(out.is_empty());
        decoder.decode(&[0, 0, 88, 0], &mut out).unwrap();
        assert!(out.is_empty(), "a state block alone carries no sample");
    }
}
