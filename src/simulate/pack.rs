//! Elementary streams → a `.jt1078` recording, with our own encoder: how the bundled sample
//! and the synthetic test streams (H.265, 20-digit SIM, HiSilicon audio) are made.

use bytes::{Bytes, BytesMut};

use crate::codec::h26x::{VideoCodec, access_units};
use crate::codec::jt1078::{DataType, Encoder, Frame, PayloadType, Sim, SimLayout};

/// What to pack.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// Device id digits.
    pub device: String,
    /// Logical channel.
    pub channel: u8,
    /// SIM field layout.
    pub layout: SimLayout,
    /// Video frames per second (timestamps and the interval fields).
    pub fps: u32,
    /// Audio frame size in bytes (G.711: 160 = 20 ms). Ignored for AAC (one ADTS frame each).
    pub audio_frame: usize,
    /// Duration of one audio frame in ms (`None`: one byte per sample at 8 kHz, as G.711).
    pub audio_frame_ms: Option<u64>,
    /// Put the 4-byte HiSilicon header in front of each audio frame.
    pub hisilicon: bool,
    /// First timestamp (ms).
    pub start_ms: u64,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            device: "13800138000".to_owned(),
            channel: 1,
            layout: SimLayout::Bcd6,
            fps: 25,
            audio_frame: 160,
            audio_frame_ms: None,
            hisilicon: false,
            start_ms: 1_700_000_000_000,
        }
    }
}

/// The audio frames of `samples` with their timestamps, as [`pack`] sends them.
pub fn audio_frames<'a>(
    payload_type: PayloadType,
    samples: &'a [u8],
    options: &PackOptions,
) -> Vec<(u64, &'a [u8])> {
    if payload_type == PayloadType::Aac {
        let mut frames = Vec::new();
        let mut at = 0;
        let mut ts = options.start_ms;
        while let Some((len, ms)) = samples.get(at..).and_then(adts_frame) {
            frames.push((ts, samples.get(at..at + len).unwrap_or_default()));
            at += len;
            ts += ms;
        }
        return frames;
    }
    let step = options.audio_frame.max(1);
    samples
        .chunks(step)
        .enumerate()
        .map(|(i, chunk)| {
            let ts = match options.audio_frame_ms {
                Some(ms) => options.start_ms + i as u64 * ms,
                None => options.start_ms + (i * step) as u64 / 8,
            };
            (ts, chunk)
        })
        .collect()
}

/// Length and duration (ms) of the ADTS frame at the start of `data`.
fn adts_frame(data: &[u8]) -> Option<(usize, u64)> {
    let &[0xff, b1, b2, b3, b4, b5, _] = data.first_chunk::<7>()? else {
        return None;
    };
    if b1 & 0xf0 != 0xf0 {
        return None;
    }
    const RATES: [u64; 13] = [
        96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
    ];
    let rate = *RATES.get(usize::from((b2 >> 2) & 0x0f))?;
    let len = (usize::from(b3 & 0x03) << 11) | (usize::from(b4) << 3) | usize::from(b5 >> 5);
    (len >= 7 && len <= data.len()).then_some((len, 1024 * 1000 / rate))
}

/// Encodes 16-bit little-endian PCM as IMA ADPCM frames the way devices send them (PT 26):
/// each frame a 4-byte state block (predictor LE, step index, 0) and `samples_per_frame / 2`
/// bytes, low nibble first unless `high_first`.
pub fn encode_adpcm_frames(pcm_le: &[u8], samples_per_frame: usize, high_first: bool) -> Vec<u8> {
    use crate::codec::audio::adpcm::NibbleOrder;
    use crate::codec::audio::{DeviceCodec, DeviceEncoder};
    let samples: Vec<i16> = pcm_le
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let order = if high_first {
        NibbleOrder::HighFirst
    } else {
        NibbleOrder::LowFirst
    };
    let mut encoder = DeviceEncoder::new(DeviceCodec::ImaAdpcm { order }, false);
    let mut out = Vec::new();
    for frame in samples.chunks_exact(samples_per_frame.max(2) & !1) {
        encoder.encode(frame, &mut out);
    }
    out
}

/// Packs an Annex-B video stream and an optional audio stream into JT/T 1078 bytes,
/// interleaved by time as a device sends them. The audio is cut into frames of
/// `options.audio_frame` bytes (AAC: into its ADTS frames). `None` if the device id does
/// not fit.
pub fn pack(
    codec: VideoCodec,
    video: &[u8],
    audio: Option<(PayloadType, &[u8])>,
    options: &PackOptions,
) -> Option<BytesMut> {
    let sim = Sim::from_digits(&options.device, options.layout)?;
    let fps = u64::from(options.fps.max(1));
    let frame_ms = 1000 / fps;
    let payload_type = match codec {
        VideoCodec::H264 => PayloadType::H264,
        VideoCodec::H265 => PayloadType::H265,
    };
    let mut frames: Vec<(u64, Frame)> = Vec::new();
    let mut last_key = 0;
    for (i, unit) in access_units(codec, video).into_iter().enumerate() {
        let ts = options.start_ms + i as u64 * 1000 / fps;
        let is_key = codec.is_key_frame(&unit);
        if is_key {
            last_key = ts;
        }
        frames.push((
            ts,
            Frame {
                payload_type,
                data_type: if is_key {
                    DataType::IFrame
                } else {
                    DataType::PFrame
                },
                sim,
                channel: options.channel,
                timestamp: Some(ts),
                last_iframe_interval: Some(u16::try_from(ts - last_key).unwrap_or(u16::MAX)),
                last_frame_interval: Some(u16::try_from(frame_ms).unwrap_or(u16::MAX)),
                data: Bytes::from(unit),
            },
        ));
    }
    if let Some((audio_type, samples)) = audio {
        for (ts, chunk) in audio_frames(audio_type, samples, options) {
            let data = if options.hisilicon {
                let mut framed = vec![0, 1, u8::try_from(chunk.len() / 2).unwrap_or(u8::MAX), 0];
                framed.extend_from_slice(chunk);
                Bytes::from(framed)
            } else {
                Bytes::copy_from_slice(chunk)
            };
            frames.push((
                ts,
                Frame {
                    payload_type: audio_type,
                    data_type: DataType::Audio,
                    sim,
                    channel: options.channel,
                    timestamp: Some(ts),
                    last_iframe_interval: None,
                    last_frame_interval: None,
                    data,
                },
            ));
        }
    }
    // stable: at equal times video (pushed first) goes before audio
    frames.sort_by_key(|(ts, _)| *ts);
    let mut encoder = Encoder::new();
    let mut out = BytesMut::new();
    for (_, frame) in &frames {
        encoder.encode(frame, &mut out);
    }
    Some(out)
}
