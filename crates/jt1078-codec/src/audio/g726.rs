//! G.726 ADPCM (ITU-T G.726, 16/24/32/40 kbit/s) to 16-bit PCM.
//!
//! Written here because no maintained Rust crate decodes G.726 (the `spandsp` crate binds a
//! C library that is not packaged everywhere, and the pure-Rust audio crates stop at G.711
//! and G.722). The algorithm follows the ITU-T recommendation in the integer form of its
//! reference implementation (Sun Microsystems' public-domain `g72x`), which is bit-exact
//! with the ITU test vectors at 24 and 32 kbit/s; the 16 kbit/s tables are those of
//! G.726 as ffmpeg uses them. At 40 kbit/s the zero-predictor coefficients leak by 2^-8
//! as at the other rates (ffmpeg's choice; the 1988 G.723 reference used 2^-9): measured
//! against ffmpeg's encoder, 2^-9 decodes at 3 dB SNR, 2^-8 at 42 dB.
//!
//! JT/T 1078 does not signal the rate: it is inferred from the frame length (for the
//! 320-sample frames devices send, 200/160/120/80 bytes = 40/32/24/16 kbit/s; 100/60/40 bytes
//! are 160-sample frames at 40/24/16). The bit packing differs between devices (codes
//! packed from the most or the least significant bit of each byte); the decoder runs both
//! over the first loud frames, keeps the one whose spectrum is less noise-like, and sticks
//! to it for the stream.

use super::{ORDER_MIN_LEVEL, level, spectral_flatness};

/// G.726 bit rates, by bits per sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum G726Rate {
    /// 16 kbit/s, 2 bits a sample.
    Kbps16,
    /// 24 kbit/s, 3 bits a sample.
    Kbps24,
    /// 32 kbit/s, 4 bits a sample.
    Kbps32,
    /// 40 kbit/s, 5 bits a sample.
    Kbps40,
}

impl G726Rate {
    /// Bits per code word.
    pub const fn bits(self) -> u32 {
        match self {
            G726Rate::Kbps16 => 2,
            G726Rate::Kbps24 => 3,
            G726Rate::Kbps32 => 4,
            G726Rate::Kbps40 => 5,
        }
    }

    /// The rate of a frame of `len` bytes (see the module docs).
    pub const fn from_frame_len(len: usize) -> G726Rate {
        match len {
            200 | 100 => G726Rate::Kbps40,
            120 | 60 => G726Rate::Kbps24,
            80 | 40 => G726Rate::Kbps16,
            _ => G726Rate::Kbps32,
        }
    }

    /// Tables of this rate.
    fn tables(self) -> &'static Tables {
        match self {
            G726Rate::Kbps16 => &TABLES_16,
            G726Rate::Kbps24 => &TABLES_24,
            G726Rate::Kbps32 => &TABLES_32,
            G726Rate::Kbps40 => &TABLES_40,
        }
    }
}

/// How code words are packed into bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitOrder {
    /// From the most significant bit (ITU-T I.366.2 / AAL2; ffmpeg `g726`).
    MsbFirst,
    /// From the least significant bit (RFC 3551; ffmpeg `g726le`).
    LsbFirst,
}

/// A stream's G.726 decoder.
#[derive(Debug, Clone, Default)]
pub struct G726Decoder {
    rate: Option<G726Rate>,
    order: Option<BitOrder>,
    /// While the order is unknown: the state as decoded MSB-first and LSB-first.
    msb: State,
    lsb: State,
    /// Spectral flatness summed over the loud frames while probing: MSB-first, LSB-first,
    /// frames.
    evidence: (f64, f64, u32),
}

impl G726Decoder {
    /// A decoder with a fixed bit order (no detection).
    pub fn with_order(order: BitOrder) -> G726Decoder {
        G726Decoder {
            order: Some(order),
            ..G726Decoder::default()
        }
    }

    /// The bit order in use, once picked.
    pub fn order(&self) -> Option<BitOrder> {
        self.order
    }

    /// The rate of the latest frame.
    pub fn rate(&self) -> Option<G726Rate> {
        self.rate
    }

    /// Appends the samples of one frame to `out`; the rate comes from its length.
    pub fn decode(&mut self, frame: &[u8], out: &mut Vec<i16>) {
        let rate = G726Rate::from_frame_len(frame.len());
        if self.rate != Some(rate) {
            // a new rate is a new stream: the predictor of the old one means nothing
            self.rate = Some(rate);
            self.msb = State::default();
            self.lsb = State::default();
        }
        match self.order {
            Some(BitOrder::MsbFirst) => self.msb.decode_frame(frame, rate, BitOrder::MsbFirst, out),
            Some(BitOrder::LsbFirst) => self.msb.decode_frame(frame, rate, BitOrder::LsbFirst, out),
            None => self.decode_probing(frame, rate, out),
        }
    }

    /// Decodes both ways and sums how noise-like each comes out (spectral flatness) over
    /// the loud frames; keeps the other order once it is clearly so, or after
    /// [`ORDER_FRAMES`] loud frames.
    fn decode_probing(&mut self, frame: &[u8], rate: G726Rate, out: &mut Vec<i16>) {
        let mut msb = Vec::new();
        self.msb
            .decode_frame(frame, rate, BitOrder::MsbFirst, &mut msb);
        let mut lsb = Vec::new();
        self.lsb
            .decode_frame(frame, rate, BitOrder::LsbFirst, &mut lsb);
        if level(&msb).max(level(&lsb)) >= ORDER_MIN_LEVEL {
            self.evidence.0 += spectral_flatness(&msb);
            self.evidence.1 += spectral_flatness(&lsb);
            self.evidence.2 += 1;
        }
        let (flat_msb, flat_lsb, frames) = self.evidence;
        let lsb_wins = flat_lsb < flat_msb;
        let clear = frames >= 3 && (flat_msb > 2.0 * flat_lsb || flat_lsb > 2.0 * flat_msb);
        if clear || frames >= ORDER_FRAMES {
            // the state kept is always `msb`'s slot
            if lsb_wins {
                self.msb = self.lsb.clone();
                self.order = Some(BitOrder::LsbFirst);
            } else {
                self.order = Some(BitOrder::MsbFirst);
            }
        }
        out.extend_from_slice(if lsb_wins { &lsb } else { &msb });
    }
}

/// A G.726 encoder for one stream (talkback: the gateway speaks to a device that plays
/// G.726): 16-bit PCM at 8 kHz to code words of `rate`, packed in `order`. The quantizer
/// is the reference's (the predictor and the state update are the decoder's own: encoder
/// and decoder track the same state, as the recommendation defines them).
#[derive(Debug, Clone)]
pub struct G726Encoder {
    rate: G726Rate,
    order: BitOrder,
    state: State,
}

impl G726Encoder {
    /// An encoder at `rate`, packing code words in `order`.
    pub fn new(rate: G726Rate, order: BitOrder) -> G726Encoder {
        G726Encoder {
            rate,
            order,
            state: State::default(),
        }
    }

    /// Appends the code words of `pcm` to `out`, packed; a frame's sample count times the
    /// rate's bits should be a whole number of bytes (the rest of a last byte is zero).
    pub fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) {
        let bits = self.rate.bits();
        let tables = self.rate.tables();
        let sign = 1usize << (bits - 1);
        let mut acc: u32 = 0;
        let mut held: u32 = 0;
        for sample in pcm {
            let code = self.state.encode_sample(*sample, tables, sign, bits);
            match self.order {
                BitOrder::MsbFirst => {
                    acc = (acc << bits) | code;
                    held += bits;
                    while held >= 8 {
                        held -= 8;
                        out.push((acc >> held) as u8);
                        acc &= (1u32 << held) - 1;
                    }
                }
                BitOrder::LsbFirst => {
                    acc |= code << held;
                    held += bits;
                    while held >= 8 {
                        out.push(acc as u8);
                        acc >>= 8;
                        held -= 8;
                    }
                }
            }
        }
        if held > 0 {
            out.push(match self.order {
                BitOrder::MsbFirst => (acc << (8 - held)) as u8,
                BitOrder::LsbFirst => acc as u8,
            });
        }
    }
}

/// Loud frames after which the smoother bit order is kept whatever the margin.
const ORDER_FRAMES: u32 = 25;

/// Quantizer tables of one rate (G.726 §4.2.4-4.2.6, in the reference code's scaling).
#[derive(Debug)]
struct Tables {
    /// Log magnitude of the reconstructed difference, by code word.
    dqln: &'static [i32],
    /// Scale factor multiplier W(I), scaled by 32.
    wi: &'static [i32],
    /// Speed control F(I), scaled by 512.
    fi: &'static [i32],
    /// Quantizer decision levels of the normalised log difference (the encoder's): a
    /// difference's magnitude code is how many of them it reaches.
    quant: &'static [i32],
}

static TABLES_16: Tables = Tables {
    dqln: &[116, 365, 365, 116],
    wi: &[-704, 14048, 14048, -704],
    fi: &[0, 0xE00, 0xE00, 0],
    quant: &[261],
};

static TABLES_24: Tables = Tables {
    dqln: &[-2048, 135, 273, 373, 373, 273, 135, -2048],
    wi: &[-128, 960, 4384, 18624, 18624, 4384, 960, -128],
    fi: &[0, 0x200, 0x400, 0xE00, 0xE00, 0x400, 0x200, 0],
    quant: &[8, 218, 331],
};

static TABLES_32: Tables = Tables {
    dqln: &[
        -2048, 4, 135, 213, 273, 323, 373, 425, 425, 373, 323, 273, 213, 135, 4, -2048,
    ],
    wi: &[
        -384, 576, 1312, 2048, 3584, 6336, 11360, 35904, 35904, 11360, 6336, 3584, 2048, 1312, 576,
        -384,
    ],
    fi: &[
        0, 0, 0, 0x200, 0x200, 0x200, 0x600, 0xE00, 0xE00, 0x600, 0x200, 0x200, 0x200, 0, 0, 0,
    ],
    quant: &[-124, 80, 178, 246, 300, 349, 400],
};

static TABLES_40: Tables = Tables {
    dqln: &[
        -2048, -66, 28, 104, 169, 224, 274, 318, 358, 395, 429, 459, 488, 514, 539, 566, 566, 539,
        514, 488, 459, 429, 395, 358, 318, 274, 224, 169, 104, 28, -66, -2048,
    ],
    wi: &[
        448, 448, 768, 1248, 1280, 1312, 1856, 3200, 4512, 5728, 7008, 8960, 11456, 14080, 16928,
        22272, 22272, 16928, 14080, 11456, 8960, 7008, 5728, 4512, 3200, 1856, 1312, 1280, 1248,
        768, 448, 448,
    ],
    fi: &[
        0, 0, 0, 0, 0, 0x200, 0x200, 0x200, 0x200, 0x200, 0x400, 0x600, 0x800, 0xA00, 0xC00, 0xC00,
        0xC00, 0xC00, 0xA00, 0x800, 0x600, 0x400, 0x200, 0x200, 0x200, 0x200, 0x200, 0, 0, 0, 0, 0,
    ],
    quant: &[
        -122, -16, 68, 139, 198, 250, 298, 339, 378, 413, 445, 475, 502, 528, 553,
    ],
};

/// The adaptive predictor and quantizer state (G.726 §4.2). Fields the reference keeps as
/// 16-bit `short`s are `i16` here and wrap as they do there.
#[derive(Debug, Clone)]
struct State {
    yl: i32,
    yu: i16,
    dms: i16,
    dml: i16,
    ap: i16,
    a: [i16; 2],
    b: [i16; 6],
    pk: [i16; 2],
    dq: [i16; 6],
    sr: [i16; 2],
    td: bool,
}

impl Default for State {
    fn default() -> Self {
        State {
            yl: 34816,
            yu: 544,
            dms: 0,
            dml: 0,
            ap: 0,
            a: [0; 2],
            b: [0; 6],
            pk: [0; 2],
            dq: [32; 6],
            sr: [32; 2],
            td: false,
        }
    }
}

impl State {
    fn decode_frame(&mut self, frame: &[u8], rate: G726Rate, order: BitOrder, out: &mut Vec<i16>) {
        let bits = rate.bits();
        let codes = frame.len() as u64 * 8 / u64::from(bits);
        out.reserve(usize::try_from(codes).unwrap_or(0));
        let tables = rate.tables();
        let sign = 1usize << (bits - 1);
        let mask = (1u32 << bits) - 1;
        let mut acc: u32 = 0;
        let mut held: u32 = 0;
        // one loop per order, so that the order is not tested per code word
        match order {
            BitOrder::MsbFirst => {
                for byte in frame {
                    acc = (acc << 8) | u32::from(*byte);
                    held += 8;
                    while held >= bits {
                        held -= bits;
                        let code = (acc >> held) & mask;
                        acc &= (1u32 << held) - 1;
                        out.push(self.decode_code(code as usize, tables, sign));
                    }
                }
            }
            BitOrder::LsbFirst => {
                for byte in frame {
                    acc |= u32::from(*byte) << held;
                    held += 8;
                    while held >= bits {
                        held -= bits;
                        let code = acc & mask;
                        acc >>= bits;
                        out.push(self.decode_code(code as usize, tables, sign));
                    }
                }
            }
        }
    }

    /// One code word to one sample (the reference `g7xx_decoder` for linear output);
    /// `sign` is the code word's sign bit.
    fn decode_code(&mut self, code: usize, tables: &Tables, sign: usize) -> i16 {
        let (sez, se) = self.estimate();
        let y = self.step_size();
        let sr = self.reconstruct_and_update(code, tables, sign, (sez, se), y);
        (sr << 2).clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
    }

    /// One sample to one code word of `bits` bits (the reference encoder for linear
    /// input): the difference from the estimate, quantized on the log scale, then the
    /// same reconstruction and update as the decoder's.
    fn encode_sample(&mut self, sample: i16, tables: &Tables, sign: usize, bits: u32) -> u32 {
        let sl = i32::from(sample) >> 2;
        let (sez, se) = self.estimate();
        let y = self.step_size();
        let d = sl - se;
        // LOG: the base-2 log of |d| (exponent and 7-bit mantissa), then SUBTB
        let magnitude = d.abs();
        let exp = quan(magnitude >> 1);
        let mant = ((magnitude << 7) >> exp) & 0x7F;
        let dln = (exp << 7) + mant - (y >> 2);
        // QUAN: how many decision levels it reaches; the sign as the one's complement
        let reached = tables
            .quant
            .iter()
            .take_while(|level| dln >= **level)
            .count() as u32;
        let all_ones = (1u32 << bits) - 1;
        let code = if d < 0 {
            all_ones - reached
        } else if reached == 0 && bits != 2 {
            // the 1988 recommendation: a positive zero is sent as the negative one (no
            // zero level at 16 kbit/s, where code 0 is the smallest positive step)
            all_ones
        } else {
            reached
        };
        self.reconstruct_and_update(code as usize, tables, sign, (sez, se), y);
        code
    }

    /// The zero-predictor part of the estimate and the whole signal estimate.
    fn estimate(&self) -> (i32, i32) {
        let sezi = self.predictor_zero();
        (sezi >> 1, (sezi + self.predictor_pole()) >> 1)
    }

    /// The reconstructed signal of `code` (decoder and encoder alike), with the state
    /// updated after it.
    fn reconstruct_and_update(
        &mut self,
        code: usize,
        tables: &Tables,
        sign: usize,
        (sez, se): (i32, i32),
        y: i32,
    ) -> i32 {
        let at = |table: &[i32]| table.get(code).copied().unwrap_or(0);
        let dq = reconstruct(code & sign != 0, at(tables.dqln), y);
        let sr = if dq < 0 { se - (dq & 0x3FFF) } else { se + dq };
        let dqsez = sr - se + sez;
        self.update(y, at(tables.wi), at(tables.fi), dq, sr, dqsez);
        sr
    }

    fn predictor_zero(&self) -> i32 {
        self.b
            .iter()
            .zip(&self.dq)
            .map(|(b, dq)| fmult(i32::from(*b) >> 2, i32::from(*dq)))
            .sum()
    }

    fn predictor_pole(&self) -> i32 {
        fmult(i32::from(self.a[1]) >> 2, i32::from(self.sr[1]))
            + fmult(i32::from(self.a[0]) >> 2, i32::from(self.sr[0]))
    }

    fn step_size(&self) -> i32 {
        let yu = i32::from(self.yu);
        if self.ap >= 256 {
            return yu;
        }
        let mut y = self.yl >> 6;
        let dif = yu - y;
        let al = i32::from(self.ap) >> 2;
        if dif > 0 {
            y += (dif * al) >> 6;
        } else if dif < 0 {
            y += (dif * al + 0x3F) >> 6;
        }
        y
    }

    /// The state update after a sample (G.726 §4.2.3-4.2.8, the reference `update`).
    fn update(&mut self, y: i32, wi: i32, fi: i32, dq: i32, sr: i32, dqsez: i32) {
        let pk0: i16 = i16::from(dqsez < 0);
        let mag = dq & 0x7FFF;
        // transition detector (TRANS)
        let ylint = self.yl >> 15;
        let ylfrac = (self.yl >> 10) & 0x1F;
        let thr1 = (32 + ylfrac) << ylint.clamp(0, 20);
        let thr2 = if ylint > 9 { 31 << 10 } else { thr1 };
        let dqthr = (thr2 + (thr2 >> 1)) >> 1;
        let tr = self.td && mag > dqthr;
        // quantizer scale factor adaptation
        let yu = (y + ((wi - y) >> 5)).clamp(544, 5120);
        self.yu = yu as i16;
        self.yl += yu + ((-self.yl) >> 6);
        let mut a2p: i32 = 0;
        if tr {
            self.a = [0; 2];
            self.b = [0; 6];
        } else {
            let pks1 = pk0 ^ self.pk[0];
            let a0 = i32::from(self.a[0]);
            a2p = i32::from(self.a[1]) - (i32::from(self.a[1]) >> 7);
            if dqsez != 0 {
                let fa1 = if pks1 != 0 { a0 } else { -a0 };
                if fa1 < -8191 {
                    a2p -= 0x100;
                } else if fa1 > 8191 {
                    a2p += 0xFF;
                } else {
                    a2p += fa1 >> 5;
                }
                if pk0 ^ self.pk[1] != 0 {
                    if a2p <= -12160 {
                        a2p = -12288;
                    } else if a2p >= 12416 {
                        a2p = 12288;
                    } else {
                        a2p -= 0x80;
                    }
                } else if a2p <= -12416 {
                    a2p = -12288;
                } else if a2p >= 12160 {
                    a2p = 12288;
                } else {
                    a2p += 0x80;
                }
            }
            self.a[1] = a2p as i16;
            let mut a0 = a0 - (a0 >> 8);
            if dqsez != 0 {
                a0 += if pks1 == 0 { 192 } else { -192 };
            }
            let a1ul = 15360 - a2p;
            a0 = a0.clamp(-a1ul, a1ul);
            self.a[0] = a0 as i16;
            for (b, dqn) in self.b.iter_mut().zip(&self.dq) {
                let mut v = i32::from(*b);
                v -= v >> 8;
                if mag != 0 {
                    v += if (dq ^ i32::from(*dqn)) >= 0 {
                        128
                    } else {
                        -128
                    };
                }
                *b = v as i16;
            }
        }
        // FLOAT A: dq to the 11-bit floating format, in front of the older ones (spelled
        // out: `rotate_right` on six values costs more than the rest of the update)
        let dq0 = if mag == 0 {
            if dq >= 0 { 0x20 } else { -992 }
        } else {
            let exp = quan(mag);
            let value = (exp << 6) + ((mag << 6) >> exp);
            (if dq >= 0 { value } else { value - 0x400 }) as i16
        };
        let [d0, d1, d2, d3, d4, _] = self.dq;
        self.dq = [dq0, d0, d1, d2, d3, d4];
        // FLOAT B: sr likewise
        self.sr[1] = self.sr[0];
        self.sr[0] = if sr == 0 {
            0x20
        } else if sr > 0 {
            let exp = quan(sr);
            ((exp << 6) + ((sr << 6) >> exp)) as i16
        } else if sr > -32768 {
            let mag = -sr;
            let exp = quan(mag);
            ((exp << 6) + ((mag << 6) >> exp) - 0x400) as i16
        } else {
            -992
        };
        self.pk = [pk0, self.pk[0]];
        // tone detector
        self.td = !tr && a2p < -11776;
        // adaptation speed control
        let dms = i32::from(self.dms);
        let dml = i32::from(self.dml);
        let dms = dms + ((fi - dms) >> 5);
        let dml = dml + (((fi << 2) - dml) >> 7);
        self.dms = dms as i16;
        self.dml = dml as i16;
        let (dms, dml) = (i32::from(self.dms), i32::from(self.dml));
        let ap = i32::from(self.ap);
        let ap = if tr {
            256
        } else if y < 1536 || self.td || ((dms << 2) - dml).abs() >= (dml >> 3) {
            ap + ((0x200 - ap) >> 4)
        } else {
            ap + ((-ap) >> 4)
        };
        self.ap = ap as i16;
    }
}

/// How many of the powers of two 1, 2, 4 … 0x4000 are at most `value` (the reference
/// `quan`, which walks that table: here from the bit length, as it is called ten times a
/// sample).
fn quan(value: i32) -> i32 {
    if value <= 0 {
        0
    } else {
        (u32::BITS - value.unsigned_abs().leading_zeros()).min(15) as i32
    }
}

/// Multiplies a predictor coefficient by a signal in the 11-bit floating format.
fn fmult(an: i32, srn: i32) -> i32 {
    let anmag = if an > 0 { an } else { (-an) & 0x1FFF };
    let anexp = quan(anmag) - 6;
    let anmant = if anmag == 0 {
        32
    } else if anexp >= 0 {
        anmag >> anexp
    } else {
        anmag << -anexp
    };
    let wanexp = anexp + ((srn >> 6) & 0xF) - 13;
    let wanmant = (anmant * (srn & 0o77) + 0x30) >> 4;
    let retval = if wanexp >= 0 {
        (wanmant << wanexp.min(16)) & 0x7FFF
    } else {
        wanmant >> (-wanexp).min(31)
    };
    if (an ^ srn) < 0 { -retval } else { retval }
}

/// The quantized difference signal from its log magnitude and the step size.
fn reconstruct(negative: bool, dqln: i32, y: i32) -> i32 {
    let dql = dqln + (y >> 2);
    if dql < 0 {
        return if negative { -0x8000 } else { 0 };
    }
    let dex = (dql >> 7) & 15;
    let dqt = 128 + (dql & 127);
    let dq = (dqt << 7) >> (14 - dex).max(0);
    if negative { dq - 0x8000 } else { dq }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_follows_the_frame_length() {
        assert_eq!(G726Rate::from_frame_len(200), G726Rate::Kbps40);
        assert_eq!(G726Rate::from_frame_len(160), G726Rate::Kbps32);
        assert_eq!(G726Rate::from_frame_len(120), G726Rate::Kbps24);
        assert_eq!(G726Rate::from_frame_len(80), G726Rate::Kbps16);
        let mut decoder = G726Decoder::default();
        for (len, samples) in [(200, 320), (160, 320), (120, 320), (80, 320), (60, 160)] {
            let mut out = Vec::new();
            decoder.decode(&vec![0x55; len], &mut out);
            assert_eq!(out.len(), samples, "{len} bytes");
        }
    }

    #[test]
    fn quan_counts_the_powers_of_two_up_to_the_value() {
        let table: Vec<i32> = (0..15).map(|n| 1 << n).collect();
        for value in (-70_000..70_000).chain([i32::MIN, i32::MAX]) {
            let walked = table.iter().take_while(|p| value >= **p).count() as i32;
            assert_eq!(quan(value), walked, "{value}");
        }
    }

    #[test]
    fn garbage_decodes_to_bounded_samples() {
        let mut decoder = G726Decoder::default();
        let mut out = Vec::new();
        for seed in 0u32..50 {
            let frame: Vec<u8> = (0..160u32)
                .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
                .collect();
            decoder.decode(&frame, &mut out);
        }
        assert_eq!(out.len(), 50 * 320);
    }
}
