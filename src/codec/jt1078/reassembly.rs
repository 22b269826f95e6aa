//! Packets → whole frames: subpackage reassembly and sequence-gap handling.
//!
//! Owns one partial-frame buffer per data type (audio packets arrive in the middle of a
//! fragmented I-frame) for one logical channel. A middle or last piece with no first is
//! dropped; a sequence gap drops the broken frames and video waits for the next I-frame, so
//! corrupt video is never emitted. Every drop is counted in [`ReassemblyStats`].

use bytes::{BufMut, Bytes, BytesMut};

use super::header::{DataType, PayloadType, Sim, Subpackage};
use super::packet::Packet;

/// Default cap on a reassembled frame (a 4K I-frame fits; a stream of middles does not grow
/// memory past it).
pub const DEFAULT_MAX_FRAME: usize = 4 * 1024 * 1024;

/// A whole frame as the device sent it. `data` is its own allocation (never a view into a
/// receive buffer), so holding frames does not pin socket buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Payload type of the first piece.
    pub payload_type: PayloadType,
    /// Data type.
    pub data_type: DataType,
    /// SIM of the sending device.
    pub sim: Sim,
    /// Logical channel.
    pub channel: u8,
    /// Device timestamp (ms) of the first piece; `None` for transparent data.
    pub timestamp: Option<u64>,
    /// Milliseconds since the previous I-frame, as the device says (video only).
    pub last_iframe_interval: Option<u16>,
    /// Milliseconds since the previous frame, as the device says (video only).
    pub last_frame_interval: Option<u16>,
    /// The frame payload (for video: Annex-B).
    pub data: Bytes,
}

/// Counters of frames emitted and dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyStats {
    /// Frames emitted.
    pub frames: u64,
    /// Middle or last pieces that arrived with no first piece.
    pub orphan_pieces: u64,
    /// Partial frames abandoned (new first before last, or a sequence gap).
    pub broken_frames: u64,
    /// Sequence-number gaps seen.
    pub sequence_gaps: u64,
    /// Frames that grew past the size cap.
    pub oversized_frames: u64,
    /// Video frames skipped while waiting for an I-frame.
    pub skipped_waiting_for_key: u64,
}

#[derive(Debug, Default)]
struct Slot {
    first: Option<Packet>,
    pieces: Vec<Bytes>,
    len: usize,
}

/// Sans-IO reassembler for one logical channel of one connection.
#[derive(Debug)]
pub struct Reassembler {
    slots: [Slot; DataType::COUNT],
    last_sequence: Option<u16>,
    last_sequence_by_type: [Option<u16>; DataType::COUNT],
    waiting_for_key: bool,
    max_frame: usize,
    stats: ReassemblyStats,
}

impl Reassembler {
    /// A reassembler that drops frames larger than `max_frame` bytes. Video starts by
    /// waiting for an I-frame.
    pub fn new(max_frame: usize) -> Self {
        Reassembler {
            slots: Default::default(),
            last_sequence: None,
            last_sequence_by_type: [None; DataType::COUNT],
            waiting_for_key: true,
            max_frame,
            stats: ReassemblyStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> ReassemblyStats {
        self.stats
    }

    /// Feeds one packet; returns the frame it completes, if any.
    pub fn push(&mut self, packet: Packet) -> Option<Frame> {
        if self.is_sequence_gap(&packet) {
            self.stats.sequence_gaps += 1;
            self.abandon_all();
            self.waiting_for_key = true;
        }
        self.last_sequence = Some(packet.sequence);
        if let Some(last) = self.last_sequence_by_type.get_mut(packet.data_type.index()) {
            *last = Some(packet.sequence);
        }
        let frame = self.collect(packet)?;
        self.admit(frame)
    }

    /// A gap is a sequence number that continues neither the connection's counter (devices
    /// that share one counter between audio and video) nor this data type's (devices with a
    /// counter per type). A repeated number is tolerated: some devices never increment it.
    fn is_sequence_gap(&self, packet: &Packet) -> bool {
        let seq = packet.sequence;
        let same_type = self
            .last_sequence_by_type
            .get(packet.data_type.index())
            .copied()
            .flatten();
        match (self.last_sequence, same_type) {
            (None, _) | (_, None) => false,
            (Some(any), Some(own)) => {
                seq != any.wrapping_add(1) && seq != own.wrapping_add(1) && seq != own
            }
        }
    }

    fn abandon_all(&mut self) {
        for slot in &mut self.slots {
            if slot.first.is_some() {
                self.stats.broken_frames += 1;
            }
            slot.clear();
        }
    }

    /// Adds the packet to its data type's slot; returns a whole frame when one completes.
    fn collect(&mut self, packet: Packet) -> Option<Frame> {
        let max_frame = self.max_frame;
        let slot = self.slots.get_mut(packet.data_type.index())?;
        match packet.subpackage {
            Subpackage::Atomic | Subpackage::First => {
                if slot.first.is_some() {
                    self.stats.broken_frames += 1;
                    slot.clear();
                }
                if packet.subpackage == Subpackage::Atomic {
                    let data = Bytes::copy_from_slice(&packet.body);
                    return Some(frame_from(&packet, data));
                }
                slot.len = packet.body.len();
                slot.pieces.push(packet.body.clone());
                slot.first = Some(packet);
                None
            }
            Subpackage::Middle | Subpackage::Last => {
                if slot.first.is_none() {
                    self.stats.orphan_pieces += 1;
                    return None;
                }
                slot.len += packet.body.len();
                if slot.len > max_frame {
                    self.stats.oversized_frames += 1;
                    slot.clear();
                    return None;
                }
                slot.pieces.push(packet.body);
                if packet.subpackage == Subpackage::Middle {
                    return None;
                }
                let mut data = BytesMut::with_capacity(slot.len);
                for piece in slot.pieces.drain(..) {
                    data.put_slice(&piece);
                }
                let first = slot.first.take()?;
                slot.clear();
                Some(frame_from(&first, data.freeze()))
            }
        }
    }

    /// Applies the wait-for-I-frame rule to a completed frame.
    fn admit(&mut self, frame: Frame) -> Option<Frame> {
        if frame.data_type.is_video() {
            if frame.data_type == DataType::IFrame {
                self.waiting_for_key = false;
            } else if self.waiting_for_key {
                self.stats.skipped_waiting_for_key += 1;
                return None;
            }
        }
        self.stats.frames += 1;
        Some(frame)
    }
}

impl Default for Reassembler {
    fn default() -> Self {
        Reassembler::new(DEFAULT_MAX_FRAME)
    }
}

impl Slot {
    fn clear(&mut self) {
        self.first = None;
        self.pieces.clear();
        self.len = 0;
    }
}

fn frame_from(packet: &Packet, data: Bytes) -> Frame {
    Frame {
        payload_type: packet.payload_type,
        data_type: packet.data_type,
        sim: packet.sim,
        channel: packet.channel,
        timestamp: packet.timestamp,
        last_iframe_interval: packet.last_iframe_interval,
        last_frame_interval: packet.last_frame_interval,
        data,
    }
}
