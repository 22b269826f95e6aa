//! Packets → whole frames: subpackage reassembly and sequence-gap handling.
//!
//! Owns one partial-frame buffer per data type (audio packets arrive in the middle of a
//! fragmented I-frame) for one logical channel. A middle or last piece with no first is
//! dropped; a sequence gap drops the broken frames and video waits for the next I-frame, so
//! corrupt video is never emitted. Every drop is counted in [`ReassemblyStats`].
//!
//! What a sequence gap breaks is decided in `sequence.rs`.

use bytes::{BufMut, Bytes, BytesMut};

use super::header::{DataType, PayloadType, Sim, Subpackage};
use super::packet::Packet;
use super::sequence::{ChannelSequence, ConnectionSequence, Gap};

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
    sequence: ChannelSequence,
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
            sequence: ChannelSequence::new(),
            waiting_for_key: true,
            max_frame,
            stats: ReassemblyStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> ReassemblyStats {
        self.stats
    }

    /// Feeds one packet of a connection that carries only this channel; returns the frame
    /// it completes, if any.
    pub fn push(&mut self, packet: Packet) -> Option<Frame> {
        let connection = self.sequence.as_connection();
        self.push_on(packet, &connection)
    }

    /// Feeds one packet of a connection that may carry several channels. `connection` holds
    /// the numbers seen on the whole connection *before* this packet.
    pub fn push_on(&mut self, packet: Packet, connection: &ConnectionSequence) -> Option<Frame> {
        if let Some(gap) = self
            .sequence
            .check(packet.sequence, packet.data_type, connection)
        {
            self.stats.sequence_gaps += 1;
            self.break_frames(gap);
        }
        let frame = self.collect(packet)?;
        self.admit(frame)
    }

    /// Another channel's packet broke the connection-wide counter. If this channel shares
    /// that counter, the lost packet may have been one of ours: drop partial frames and wait
    /// for a key frame. Channels with counters of their own are unaffected.
    pub fn connection_gap(&mut self) {
        if self.sequence.shares_connection_counter() {
            self.stats.sequence_gaps += 1;
            self.break_frames(Gap::AllKinds);
        }
    }

    /// Drops the partial frames `gap` may have broken; if it may have broken video, video
    /// waits for the next I-frame.
    fn break_frames(&mut self, gap: Gap) {
        for (slot, kind) in self.slots.iter_mut().zip(DATA_TYPES) {
            if gap.breaks(kind) {
                if slot.first.is_some() {
                    self.stats.broken_frames += 1;
                }
                slot.clear();
            }
        }
        if gap.breaks(DataType::IFrame) {
            self.waiting_for_key = true;
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

/// Every data type, in [`DataType::index`] order (the order of `Reassembler::slots`).
const DATA_TYPES: [DataType; DataType::COUNT] = [
    DataType::IFrame,
    DataType::PFrame,
    DataType::BFrame,
    DataType::Audio,
    DataType::Transparent,
];

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jt1078::SimLayout;

    fn packet(channel: u8, data_type: DataType, subpackage: Subpackage, sequence: u16) -> Packet {
        let video = data_type.is_video();
        Packet {
            marker: matches!(subpackage, Subpackage::Atomic | Subpackage::Last),
            payload_type: if video {
                PayloadType::H264
            } else {
                PayloadType::G711A
            },
            sequence,
            sim: Sim::from_digits("13800138000", SimLayout::Bcd6).unwrap(),
            channel,
            data_type,
            subpackage,
            timestamp: Some(u64::from(sequence)),
            last_iframe_interval: video.then_some(40),
            last_frame_interval: video.then_some(40),
            body: Bytes::from(vec![channel; 10]),
        }
    }

    /// What the connection loop does: one reassembler per channel, one connection-wide
    /// record of sequence numbers, and a broken connection counter told to every channel.
    #[derive(Default)]
    struct Connection {
        sequence: ConnectionSequence,
        channels: Vec<(u8, Reassembler)>,
        frames: Vec<(u8, DataType)>,
    }

    impl Connection {
        fn feed(&mut self, packets: impl IntoIterator<Item = Packet>) {
            for p in packets {
                let (channel, seq, data_type) = (p.channel, p.sequence, p.data_type);
                if !self.channels.iter().any(|(c, _)| *c == channel) {
                    self.channels.push((channel, Reassembler::default()));
                }
                let (_, r) = self
                    .channels
                    .iter_mut()
                    .find(|(c, _)| *c == channel)
                    .unwrap();
                if let Some(frame) = r.push_on(p, &self.sequence) {
                    self.frames.push((frame.channel, frame.data_type));
                }
                if self.sequence.observe(seq, data_type) {
                    for (c, other) in &mut self.channels {
                        if *c != channel {
                            other.connection_gap();
                        }
                    }
                }
            }
        }

        fn stats(&self, channel: u8) -> ReassemblyStats {
            self.channels
                .iter()
                .find(|(c, _)| *c == channel)
                .unwrap()
                .1
                .stats()
        }

        fn frames_of(&self, channel: u8) -> Vec<DataType> {
            self.frames
                .iter()
                .filter(|(c, _)| *c == channel)
                .map(|(_, t)| *t)
                .collect()
        }
    }

    /// An I-frame in three pieces, an audio frame in its middle, then a P-frame, on
    /// `channel`; `number(i, is_video)` gives the i-th packet's sequence number.
    fn gop(channel: u8, mut number: impl FnMut(bool) -> u16) -> Vec<Packet> {
        use DataType::*;
        use Subpackage::*;
        vec![
            packet(channel, IFrame, First, number(true)),
            packet(channel, Audio, Atomic, number(false)),
            packet(channel, IFrame, Middle, number(true)),
            packet(channel, IFrame, Last, number(true)),
            packet(channel, PFrame, Atomic, number(true)),
            packet(channel, Audio, Atomic, number(false)),
        ]
    }

    /// Alternates the packets of two channels.
    fn interleave(a: Vec<Packet>, b: Vec<Packet>) -> Vec<Packet> {
        a.into_iter().zip(b).flat_map(|(x, y)| [x, y]).collect()
    }

    const GOP_FRAMES: [DataType; 4] = [
        DataType::Audio,
        DataType::IFrame,
        DataType::PFrame,
        DataType::Audio,
    ];

    fn assert_clean(conn: &Connection, channel: u8) {
        assert_eq!(conn.frames_of(channel), GOP_FRAMES, "channel {channel}");
        assert_eq!(conn.stats(channel).sequence_gaps, 0, "channel {channel}");
        assert_eq!(conn.stats(channel).broken_frames, 0, "channel {channel}");
    }

    #[test]
    fn counter_shared_by_the_channels_of_a_connection_is_not_a_gap() {
        let mut conn = Connection::default();
        let mut packets = interleave(gop(1, |_| 0), gop(2, |_| 0));
        // one counter across both channels, wrapping around on the way
        for (i, p) in packets.iter_mut().enumerate() {
            p.sequence = (u16::MAX - 4).wrapping_add(i as u16);
        }
        conn.feed(packets);
        assert_clean(&conn, 1);
        assert_clean(&conn, 2);
    }

    #[test]
    fn counter_per_channel_is_not_a_gap() {
        let mut conn = Connection::default();
        let (mut n1, mut n2) = (100u16, 7000u16);
        let a = gop(1, |_| {
            n1 += 1;
            n1
        });
        let b = gop(2, |_| {
            n2 += 1;
            n2
        });
        conn.feed(interleave(a, b));
        assert_clean(&conn, 1);
        assert_clean(&conn, 2);
    }

    #[test]
    fn counter_per_data_type_is_not_a_gap() {
        let mut conn = Connection::default();
        let mut counters = [[100u16, 5000], [300, 9000]];
        let mut next = |channel: usize, video: bool| {
            let n = &mut counters[channel][usize::from(!video)];
            *n = n.wrapping_add(1);
            *n
        };
        let a = gop(1, |video| next(0, video));
        let b = gop(2, |video| next(1, video));
        conn.feed(interleave(a, b));
        assert_clean(&conn, 1);
        assert_clean(&conn, 2);
    }

    #[test]
    fn counter_per_data_type_wrapping_around_is_not_a_gap() {
        let mut r = Reassembler::default();
        let (mut video, mut audio) = (u16::MAX - 2, 40u16);
        let packets = gop(1, |is_video| {
            let n = if is_video { &mut video } else { &mut audio };
            *n = n.wrapping_add(1);
            *n
        });
        let frames: Vec<_> = packets.into_iter().filter_map(|p| r.push(p)).collect();
        assert_eq!(frames.len(), GOP_FRAMES.len());
        assert_eq!(r.stats().sequence_gaps, 0);
    }

    #[test]
    fn audio_gap_with_a_counter_per_data_type_keeps_video() {
        use DataType::*;
        use Subpackage::*;
        let mut r = Reassembler::default();
        let mut frames = Vec::new();
        let packets = [
            packet(1, IFrame, Atomic, 100),
            packet(1, Audio, Atomic, 5000),
            packet(1, PFrame, First, 101),
            packet(1, Audio, Atomic, 5001),
            packet(1, PFrame, Middle, 102),
            // audio 5002..5004 lost
            packet(1, Audio, Atomic, 5005),
            packet(1, PFrame, Last, 103),
            packet(1, PFrame, Atomic, 104),
        ];
        for p in packets {
            frames.extend(r.push(p).map(|f| f.data_type));
        }
        assert_eq!(frames, [IFrame, Audio, Audio, Audio, PFrame, PFrame]);
        assert_eq!(r.stats().sequence_gaps, 1);
        assert_eq!(r.stats().broken_frames, 0);
        assert_eq!(r.stats().skipped_waiting_for_key, 0);
    }

    #[test]
    fn video_gap_with_a_counter_per_data_type_keeps_audio_and_waits_for_key() {
        use DataType::*;
        use Subpackage::*;
        let mut r = Reassembler::default();
        let mut frames = Vec::new();
        let packets = [
            packet(1, IFrame, Atomic, 100),
            packet(1, Audio, Atomic, 5000),
            packet(1, PFrame, Atomic, 101),
            packet(1, Audio, First, 5001),
            // video 102 lost
            packet(1, PFrame, Atomic, 103),
            packet(1, Audio, Last, 5002),
            packet(1, IFrame, Atomic, 104),
        ];
        for p in packets {
            frames.extend(r.push(p).map(|f| f.data_type));
        }
        assert_eq!(frames, [IFrame, Audio, PFrame, Audio, IFrame]);
        assert_eq!(r.stats().sequence_gaps, 1);
        assert_eq!(r.stats().skipped_waiting_for_key, 1);
    }

    #[test]
    fn gap_on_a_shared_counter_breaks_every_kind() {
        use DataType::*;
        use Subpackage::*;
        let mut r = Reassembler::default();
        let mut frames = Vec::new();
        let packets = [
            packet(1, IFrame, Atomic, 0),
            packet(1, Audio, Atomic, 1),
            packet(1, PFrame, First, 2),
            packet(1, Audio, Atomic, 3),
            // 4 lost: a video middle or an audio frame, nobody knows
            packet(1, Audio, Atomic, 5),
            packet(1, PFrame, Last, 6),
            packet(1, PFrame, Atomic, 7),
            packet(1, IFrame, Atomic, 8),
        ];
        for p in packets {
            frames.extend(r.push(p).map(|f| f.data_type));
        }
        assert_eq!(frames, [IFrame, Audio, Audio, Audio, IFrame]);
        assert_eq!(r.stats().sequence_gaps, 1);
        assert_eq!(r.stats().broken_frames, 1);
        assert_eq!(r.stats().orphan_pieces, 1);
    }

    #[test]
    fn lost_packet_on_a_connection_counter_breaks_the_other_channels_frame() {
        use DataType::*;
        use Subpackage::*;
        let mut conn = Connection::default();
        conn.feed([
            packet(1, IFrame, Atomic, 10),
            packet(2, IFrame, Atomic, 11),
            packet(1, PFrame, Atomic, 12),
            packet(2, PFrame, First, 13),
            packet(1, PFrame, Atomic, 14),
            // 15, channel 2's middle piece, lost: channel 2 sees nothing wrong itself
            packet(1, PFrame, Atomic, 16),
            packet(2, PFrame, Last, 17),
            packet(2, PFrame, Atomic, 18),
            packet(2, IFrame, Atomic, 19),
        ]);
        assert_eq!(conn.frames_of(2), [IFrame, IFrame]);
        assert_eq!(conn.stats(2).sequence_gaps, 1);
        assert_eq!(conn.stats(2).broken_frames, 1);
    }
}
