//! The gateway's voice on a talk connection (JT/T 1078 two-way talk or broadcast): 8 kHz
//! PCM in, JT/T 1078 audio packets out in the device's codec, one frame every 20 or 40 ms
//! of audio, with the device's SIM and channel, sequence numbers that run on and
//! timestamps that advance by the frame's duration. Sans-IO: the caller brings the PCM as it
//! arrives and writes the bytes.

use bytes::BytesMut;

use super::encoder::Encoder;
use super::header::{DataType, PayloadType, Sim};
use super::reassembly::Frame;
use crate::audio::{DeviceCodec, DeviceEncoder, TELEPHONY_RATE};

/// How much audio one packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TalkFrame {
    /// 20 ms (160 samples).
    Ms20,
    /// 40 ms (320 samples), what most devices send.
    Ms40,
}

impl TalkFrame {
    /// Samples of one frame at 8 kHz.
    pub const fn samples(self) -> usize {
        match self {
            TalkFrame::Ms20 => 160,
            TalkFrame::Ms40 => 320,
        }
    }

    /// Its duration in milliseconds.
    pub const fn millis(self) -> u64 {
        self.samples() as u64 * 1000 / TELEPHONY_RATE as u64
    }
}

/// The payload type of a device codec.
pub fn payload_type(codec: DeviceCodec) -> PayloadType {
    match codec {
        DeviceCodec::G711A => PayloadType::G711A,
        DeviceCodec::G711U => PayloadType::G711U,
        DeviceCodec::ImaAdpcm { .. } => PayloadType::AdpcmA,
        DeviceCodec::G726 { .. } => PayloadType::G726,
    }
}

/// One talk's packetiser.
#[derive(Debug, Clone)]
pub struct TalkSender {
    sim: Sim,
    channel: u8,
    frame: TalkFrame,
    encoder: DeviceEncoder,
    packets: Encoder,
    /// Samples waiting for a whole frame.
    pending: Vec<i16>,
    /// Frames sent (the next one's timestamp is this times the frame's duration).
    frames: u64,
}

impl TalkSender {
    /// A sender to `sim`'s `channel` in `codec` (with the HiSilicon header when
    /// `hisilicon`), `frame` long packets.
    pub fn new(
        sim: Sim,
        channel: u8,
        codec: DeviceCodec,
        hisilicon: bool,
        frame: TalkFrame,
    ) -> TalkSender {
        TalkSender {
            sim,
            channel,
            frame,
            encoder: DeviceEncoder::new(codec, hisilicon),
            packets: Encoder::new(),
            pending: Vec::with_capacity(frame.samples()),
            frames: 0,
        }
    }

    /// Appends the packets of every whole frame `pcm` completes (8 kHz mono) to `out`; the
    /// rest waits for the next call. Returns the frames written.
    pub fn push(&mut self, pcm: &[i16], out: &mut BytesMut) -> usize {
        let mut written = 0;
        let mut rest = pcm;
        while !rest.is_empty() {
            let room = self.frame.samples() - self.pending.len();
            let (take, after) = rest.split_at(room.min(rest.len()));
            self.pending.extend_from_slice(take);
            rest = after;
            if self.pending.len() == self.frame.samples() {
                self.send_pending(out);
                written += 1;
            }
        }
        written
    }

    /// Sends what waits, padded with silence to a whole frame (the talk ends); false if
    /// nothing waited.
    pub fn flush(&mut self, out: &mut BytesMut) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        self.pending.resize(self.frame.samples(), 0);
        self.send_pending(out);
        true
    }

    /// Frames sent so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    fn send_pending(&mut self, out: &mut BytesMut) {
        let mut payload = Vec::new();
        self.encoder.encode(&self.pending, &mut payload);
        self.pending.clear();
        let frame = Frame {
            payload_type: payload_type(self.encoder.codec()),
            data_type: DataType::Audio,
            sim: self.sim,
            channel: self.channel,
            timestamp: Some(self.frames * self.frame.millis()),
            last_iframe_interval: None,
            last_frame_interval: None,
            data: payload.into(),
        };
        for packet in self.packets.packets(&frame) {
            packet.encode(out);
        }
        self.frames += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{PcmDecoder, PcmFormat};
    use crate::jt1078::{DEFAULT_MAX_BODY, Decoder, SimLayout};

    #[test]
    fn pcm_in_any_pieces_comes_out_as_whole_frames_with_running_numbers() {
        let sim = Sim::from_digits("13800138000", SimLayout::Bcd6).unwrap();
        let mut sender = TalkSender::new(sim, 2, DeviceCodec::G711A, false, TalkFrame::Ms40);
        let pcm: Vec<i16> = (0..1000).map(|i| ((i * 37) % 2000 - 1000) as i16).collect();
        let mut out = BytesMut::new();
        // pieces of odd sizes, as RTP packets of a browser arrive
        let mut frames = 0;
        for piece in pcm.chunks(77) {
            frames += sender.push(piece, &mut out);
        }
        assert_eq!(frames, 3, "1000 samples: three whole 320-sample frames");
        assert!(sender.flush(&mut out), "the last 40 samples, padded");
        assert!(!sender.flush(&mut out));
        let mut decoder = Decoder::new(DEFAULT_MAX_BODY);
        decoder.push(&out);
        let mut decoded = Vec::new();
        let mut pcm_decoder = PcmDecoder::new(PcmFormat::G711A);
        let mut last_sequence = None;
        for (i, packet) in std::iter::from_fn(|| decoder.next_packet()).enumerate() {
            assert_eq!((packet.sim, packet.channel), (sim, 2));
            assert_eq!(packet.data_type, DataType::Audio);
            assert_eq!(packet.payload_type, PayloadType::G711A);
            assert_eq!(packet.timestamp, Some(i as u64 * 40));
            if let Some(last) = last_sequence {
                assert_eq!(packet.sequence, u16::wrapping_add(last, 1));
            }
            last_sequence = Some(packet.sequence);
            pcm_decoder.decode(&packet.body, &mut decoded).unwrap();
        }
        assert_eq!(decoded.len(), 4 * 320);
        // G.711 keeps the signal within its step: the first 1000 samples come back
        for (a, b) in pcm.iter().zip(&decoded) {
            assert!((i32::from(*a) - i32::from(*b)).abs() <= 32, "{a} {b}");
        }
        assert!(
            decoded[1000..].iter().all(|s| s.abs() <= 8),
            "silence after"
        );
    }
}
