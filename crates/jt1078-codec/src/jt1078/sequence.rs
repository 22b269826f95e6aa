//! Sequence-number continuity: tells a lost packet from a device's way of counting.
//!
//! Devices number packets differently: one counter per connection shared by all its
//! channels, one per channel, or one per kind of data (video, audio, transparent). Nothing
//! in a packet says which, so a packet is continuous if it follows *any* of those counters
//! ([`ConnectionSequence`] carries the connection-wide ones in), and [`ChannelSequence`]
//! learns the device's [`CounterScope`] from packets that tell the scopes apart, to decide
//! what a gap breaks: with a counter per kind, a gap breaks only frames of that kind.
//!
//! Owns numbers only; the reassembler decides what to drop.

use super::header::DataType;

/// Kinds of data a device may number separately: video (I, P and B share one), audio and
/// transparent data.
const COUNTERS: usize = 3;

/// Sequence numbers last seen on one connection, across all its channels. The connection
/// loop keeps one, hands it to [`Reassembler::push_on`] and then [`observe`]s the packet.
///
/// [`Reassembler::push_on`]: super::Reassembler::push_on
/// [`observe`]: ConnectionSequence::observe
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSequence {
    last: Option<u16>,
    last_by_counter: [Option<u16>; COUNTERS],
}

/// Sequence numbers of one channel, and what they say about the device's counters.
#[derive(Debug, Clone, Copy)]
pub(super) struct ChannelSequence {
    numbers: ConnectionSequence,
    scope: CounterScope,
}

/// What a sequence gap may have broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gap {
    /// Frames of every kind (the lost packet could be any of them).
    AllKinds,
    /// Only frames that share `DataType`'s counter.
    KindOf(DataType),
}

/// Which counter the device numbers packets with, as learnt from its packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CounterScope {
    /// Nothing unambiguous seen yet (or a single-channel connection with one counter).
    Unknown,
    /// One counter for the whole connection, shared by its channels.
    Connection,
    /// One counter per channel, shared by video and audio.
    Channel,
    /// One counter per kind of data (video, audio, transparent).
    DataType,
}

/// Which of the candidate counters a packet's number continues.
#[derive(Debug, Clone, Copy)]
struct Continuity {
    repeat: bool,
    connection: bool,
    connection_kind: bool,
    channel: bool,
    kind: bool,
}

impl ConnectionSequence {
    /// Records a packet's number. Returns whether it broke the connection-wide counter
    /// (neither the next number nor a repeat of the last); callers tell the other channels,
    /// see [`Reassembler::connection_gap`].
    ///
    /// [`Reassembler::connection_gap`]: super::Reassembler::connection_gap
    pub fn observe(&mut self, sequence: u16, data_type: DataType) -> bool {
        let broke = self
            .last
            .is_some_and(|last| sequence != last && sequence != last.wrapping_add(1));
        self.last = Some(sequence);
        if let Some(last) = self.last_by_counter.get_mut(counter_of(data_type)) {
            *last = Some(sequence);
        }
        broke
    }

    fn last_of_kind(&self, data_type: DataType) -> Option<u16> {
        self.last_by_counter
            .get(counter_of(data_type))
            .copied()
            .flatten()
    }
}

impl ChannelSequence {
    pub(super) fn new() -> Self {
        ChannelSequence {
            numbers: ConnectionSequence::default(),
            scope: CounterScope::Unknown,
        }
    }

    /// The channel's own numbers, as if the connection carried only this channel.
    pub(super) fn as_connection(&self) -> ConnectionSequence {
        self.numbers
    }

    /// Whether the device numbers this channel's packets with a counter shared by the
    /// whole connection (so a gap seen on another channel may have lost one of ours).
    pub(super) fn shares_connection_counter(&self) -> bool {
        self.scope == CounterScope::Connection
    }

    /// Records a packet; returns the gap before it, if any. `connection` holds the numbers
    /// seen on the whole connection before this packet. The first packet of a kind is
    /// never a gap: nothing can be compared with it.
    pub(super) fn check(
        &mut self,
        sequence: u16,
        data_type: DataType,
        connection: &ConnectionSequence,
    ) -> Option<Gap> {
        let gap = match self.continuity(sequence, data_type, connection) {
            Some(c) if c.is_gap() => Some(if self.scope == CounterScope::DataType {
                Gap::KindOf(data_type)
            } else {
                Gap::AllKinds
            }),
            Some(c) => {
                self.learn_scope(c);
                None
            }
            None => None,
        };
        self.numbers.observe(sequence, data_type);
        gap
    }

    fn continuity(
        &self,
        seq: u16,
        data_type: DataType,
        connection: &ConnectionSequence,
    ) -> Option<Continuity> {
        let own = self.numbers.last_of_kind(data_type)?;
        let follows = |last: Option<u16>| last.is_some_and(|last| seq == last.wrapping_add(1));
        Some(Continuity {
            // some devices never increment the number
            repeat: seq == own,
            connection: follows(connection.last),
            connection_kind: follows(connection.last_of_kind(data_type)),
            channel: follows(self.numbers.last),
            kind: follows(Some(own)),
        })
    }

    /// Updates the counter scope from a continuous packet that tells the scopes apart;
    /// ambiguous packets (all candidates agree, or a repeat) leave it as it is.
    fn learn_scope(&mut self, c: Continuity) {
        if c.repeat {
            return;
        }
        if (c.kind || c.connection_kind) && !c.channel && !c.connection {
            self.scope = CounterScope::DataType;
        } else if c.connection && !c.channel {
            self.scope = CounterScope::Connection;
        } else if c.channel && !c.connection {
            self.scope = CounterScope::Channel;
        }
    }
}

impl Continuity {
    fn is_gap(self) -> bool {
        !(self.repeat || self.connection || self.connection_kind || self.channel || self.kind)
    }
}

impl Gap {
    /// Whether a frame of `data_type` may be broken by this gap.
    pub(super) fn breaks(self, data_type: DataType) -> bool {
        match self {
            Gap::AllKinds => true,
            Gap::KindOf(kind) => counter_of(kind) == counter_of(data_type),
        }
    }
}

fn counter_of(data_type: DataType) -> usize {
    match data_type {
        DataType::IFrame | DataType::PFrame | DataType::BFrame => 0,
        DataType::Audio => 1,
        DataType::Transparent => 2,
    }
}
