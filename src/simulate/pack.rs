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
    /// Audio frame size in bytes (G.711: 160 = 20 ms).
    pub audio_frame: usize,
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
            hisilicon: false,
            start_ms: 1_700_000_000_000,
        }
    }
}

/// Packs an Annex-B video stream and an optional 8 kHz G.711 stream into JT/T 1078 bytes,
/// interleaved by time as a device sends them. `None` if the device id does not fit.
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
        let step = options.audio_frame.max(1);
        for (i, chunk) in samples.chunks(step).enumerate() {
            let ts = options.start_ms + (i * step) as u64 / 8;
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
