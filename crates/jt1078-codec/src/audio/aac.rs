//! AAC framing: ADTS headers (ISO/IEC 13818-7 §6.2, 14496-3 §1.A.2) and the
//! AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1) that FLV and RTMP carry instead.
//!
//! AAC crosses the hub as ADTS (what devices send, and what the encoder writes), so a frame
//! says its own profile, rate and channels; outputs strip the 7- or 9-byte header and send
//! the AudioSpecificConfig once, again whenever it changes.

use bytes::Bytes;

use super::AudioError;

/// Samples per AAC frame (AAC-LC, 1024-sample frames).
pub const SAMPLES_PER_FRAME: u32 = 1024;

/// Sampling frequencies by index (ISO/IEC 14496-3 Table 1.18).
const RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// What an ADTS header says about the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AacConfig {
    /// MPEG-4 audio object type (2 = AAC-LC).
    pub object_type: u8,
    /// Sampling frequency index.
    pub rate_index: u8,
    /// Channel configuration (1 = mono).
    pub channels: u8,
}

impl AacConfig {
    /// AAC-LC at `rate` Hz with `channels` channels; `None` for a rate AAC does not index.
    pub fn lc(rate: u32, channels: u8) -> Option<AacConfig> {
        let index = RATES.iter().position(|r| *r == rate)?;
        Some(AacConfig {
            object_type: 2,
            rate_index: u8::try_from(index).ok()?,
            channels,
        })
    }

    /// Sample rate in Hz.
    pub fn sample_rate(&self) -> u32 {
        RATES
            .get(usize::from(self.rate_index))
            .copied()
            .unwrap_or(0)
    }

    /// The 2-byte AudioSpecificConfig.
    pub fn audio_specific_config(&self) -> [u8; 2] {
        let bits: u16 = (u16::from(self.object_type & 0x1f) << 11)
            | (u16::from(self.rate_index & 0x0f) << 7)
            | (u16::from(self.channels & 0x0f) << 3);
        bits.to_be_bytes()
    }

    /// A 7-byte ADTS header (no CRC) for a raw frame of `raw_len` bytes.
    pub fn adts_header(&self, raw_len: usize) -> [u8; 7] {
        let len = (raw_len + 7) as u32 & 0x1fff;
        let profile = self.object_type.saturating_sub(1) & 0x03;
        [
            0xff,
            0xf1, // MPEG-4, layer 0, no CRC
            (profile << 6) | ((self.rate_index & 0x0f) << 2) | ((self.channels >> 2) & 0x01),
            ((self.channels & 0x03) << 6) | ((len >> 11) as u8 & 0x03),
            (len >> 3) as u8,
            (((len & 0x07) as u8) << 5) | 0x1f, // buffer fullness 0x7ff (VBR)
            0xfc,
        ]
    }
}

/// One raw AAC frame out of an ADTS stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// The stream's configuration, from this frame's header.
    pub config: AacConfig,
    /// The raw data block, header removed.
    pub data: Bytes,
}

/// Splits a payload of one or more ADTS frames into raw frames. Stops at the first frame
/// that is not ADTS; an error if there was none.
pub fn split_adts(payload: &Bytes) -> Result<Vec<RawFrame>, AudioError> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at < payload.len() {
        let rest = payload.get(at..).unwrap_or_default();
        match parse_header(rest) {
            Ok((config, header_len, frame_len)) => {
                frames.push(RawFrame {
                    config,
                    data: payload.slice(at + header_len..at + frame_len),
                });
                at += frame_len;
            }
            Err(error) if frames.is_empty() => return Err(error),
            Err(_) => break,
        }
    }
    if frames.is_empty() {
        return Err(AudioError::Empty);
    }
    Ok(frames)
}

/// (config, header length, frame length) of the ADTS frame at the start of `data`.
fn parse_header(data: &[u8]) -> Result<(AacConfig, usize, usize), AudioError> {
    let Some(&[b0, b1, b2, b3, b4, b5, _]) = data.first_chunk::<7>() else {
        return Err(AudioError::NotAdts {
            reason: "shorter than a header",
        });
    };
    if b0 != 0xff || b1 & 0xf6 != 0xf0 {
        return Err(AudioError::NotAdts {
            reason: "no sync word",
        });
    }
    let header_len = if b1 & 0x01 == 0 { 9 } else { 7 };
    let config = AacConfig {
        object_type: (b2 >> 6) + 1,
        rate_index: (b2 >> 2) & 0x0f,
        channels: ((b2 & 0x01) << 2) | (b3 >> 6),
    };
    if usize::from(config.rate_index) >= RATES.len() {
        return Err(AudioError::UnsupportedAac {
            reason: "sampling frequency index past the table",
        });
    }
    let frame_len = (usize::from(b3 & 0x03) << 11) | (usize::from(b4) << 3) | usize::from(b5 >> 5);
    if frame_len <= header_len || frame_len > data.len() {
        return Err(AudioError::NotAdts {
            reason: "frame length past the payload",
        });
    }
    Ok((config, header_len, frame_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adts_round_trip_and_config() {
        let config = AacConfig::lc(8000, 1).unwrap();
        assert_eq!(config.audio_specific_config(), [0x15, 0x88]);
        let mut payload = config.adts_header(3).to_vec();
        payload.extend([1, 2, 3]);
        payload.extend(config.adts_header(2));
        payload.extend([4, 5]);
        let frames = split_adts(&Bytes::from(payload)).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].config, config);
        assert_eq!(&frames[0].data[..], &[1, 2, 3]);
        assert_eq!(&frames[1].data[..], &[4, 5]);
        assert_eq!(config.sample_rate(), 8000);
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        assert!(split_adts(&Bytes::from_static(&[0xff, 0xf1, 0x50])).is_err());
        assert!(split_adts(&Bytes::from_static(&[1, 2, 3, 4, 5, 6, 7, 8])).is_err());
        let mut cut = AacConfig::lc(8000, 1).unwrap().adts_header(10).to_vec();
        cut.extend([0; 5]);
        assert!(split_adts(&Bytes::from(cut)).is_err());
    }
}
