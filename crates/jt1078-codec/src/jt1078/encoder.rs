//! Frames → packets: the device side of the codec, for the simulator and tests.
//!
//! Splits a frame into pieces of at most `max_body` bytes with the right subpackage flags
//! and a running sequence number, and writes them in wire format.

use bytes::BytesMut;

use super::header::{STANDARD_MAX_BODY, Subpackage};
use super::packet::Packet;
use super::reassembly::Frame;

/// Packetises frames for one connection.
#[derive(Debug, Clone)]
pub struct Encoder {
    sequence: u16,
    max_body: usize,
}

impl Encoder {
    /// Splits bodies at the standard's 950 bytes.
    pub fn new() -> Self {
        Encoder::with_max_body(STANDARD_MAX_BODY)
    }

    /// Splits bodies at `max_body` bytes (at least 1).
    pub fn with_max_body(max_body: usize) -> Self {
        Encoder {
            sequence: 0,
            max_body: max_body.max(1),
        }
    }

    /// The packets of one frame, in order.
    pub fn packets(&mut self, frame: &Frame) -> Vec<Packet> {
        let pieces: Vec<_> = if frame.data.is_empty() {
            vec![frame.data.clone()]
        } else {
            (0..frame.data.len())
                .step_by(self.max_body)
                .map(|at| {
                    frame
                        .data
                        .slice(at..(at + self.max_body).min(frame.data.len()))
                })
                .collect()
        };
        let count = pieces.len();
        pieces
            .into_iter()
            .enumerate()
            .map(|(i, body)| {
                let subpackage = match (i, count) {
                    (_, 1) => Subpackage::Atomic,
                    (0, _) => Subpackage::First,
                    (i, n) if i + 1 == n => Subpackage::Last,
                    _ => Subpackage::Middle,
                };
                let sequence = self.sequence;
                self.sequence = self.sequence.wrapping_add(1);
                Packet {
                    marker: i + 1 == count,
                    payload_type: frame.payload_type,
                    sequence,
                    sim: frame.sim,
                    channel: frame.channel,
                    data_type: frame.data_type,
                    subpackage,
                    timestamp: frame.timestamp,
                    last_iframe_interval: frame.last_iframe_interval,
                    last_frame_interval: frame.last_frame_interval,
                    body,
                }
            })
            .collect()
    }

    /// Appends the wire bytes of one frame.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) {
        for packet in self.packets(frame) {
            packet.encode(out);
        }
    }
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder::new()
    }
}
