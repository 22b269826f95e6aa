//! Byte stream → packets: layout detection, resynchronisation and length caps.
//!
//! Owns the receive buffer of one connection. Push bytes in (any split), pull packets out;
//! "need more bytes" is `None`. Garbage, torn packets and oversized length fields are
//! counted in [`DecoderStats`] and skipped; nothing here returns an error or panics.

use bytes::{Buf, Bytes, BytesMut};
use memchr::memmem;

use super::header::{FRAME_MARKER, STANDARD_MAX_BODY, SimLayout};
use super::packet::{Packet, ProbeOutcome, parse_packet, probe_header};

/// Default cap on a packet body: well above the standard's 950 bytes, since some devices
/// send more, but far below what a corrupt 16-bit length could make us wait for.
pub const DEFAULT_MAX_BODY: usize = 8 * STANDARD_MAX_BODY;

/// Counters of what the decoder consumed and skipped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DecoderStats {
    /// Packets decoded.
    pub packets: u64,
    /// Bytes that belonged to decoded packets.
    pub packet_bytes: u64,
    /// Bytes skipped while looking for a frame marker.
    pub skipped_bytes: u64,
    /// Times the decoder lost alignment and searched for the next marker.
    pub resyncs: u64,
    /// Headers whose body length exceeded the cap.
    pub oversized: u64,
}

/// Sans-IO JT/T 1078 packet decoder for one connection.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    layout: Option<SimLayout>,
    max_body: usize,
    stats: DecoderStats,
    /// True while skipping garbage, so one garbage run counts as one resync.
    in_garbage: bool,
}

enum Detection {
    Found(SimLayout),
    NeedMore,
    Invalid,
}

enum Chain {
    Valid(ChainFit),
    NeedMore,
    Invalid,
}

/// How well a layout explains the buffered bytes.
#[derive(Clone, Copy)]
struct ChainFit {
    /// Packets whose length lands on the next marker.
    packets: usize,
    /// The chain hit a header that does not parse in this layout.
    broken: bool,
    /// The first packet's channel byte is 0.
    channel_zero: bool,
}

impl ChainFit {
    /// Higher is more plausible: an unbroken chain, then a non-zero channel.
    fn score(self) -> (bool, bool) {
        (!self.broken, !self.channel_zero)
    }
}

impl Decoder {
    /// A decoder that rejects bodies longer than `max_body` bytes.
    pub fn new(max_body: usize) -> Self {
        Decoder {
            buf: BytesMut::with_capacity(16 * 1024),
            layout: None,
            max_body,
            stats: DecoderStats::default(),
            in_garbage: false,
        }
    }

    /// A decoder locked to a known layout (no detection).
    pub fn with_layout(max_body: usize, layout: SimLayout) -> Self {
        Decoder {
            layout: Some(layout),
            ..Decoder::new(max_body)
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The receive buffer, for reading from a socket straight into it.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// The SIM layout of this connection, once detected.
    pub fn layout(&self) -> Option<SimLayout> {
        self.layout
    }

    /// Counters so far.
    pub fn stats(&self) -> DecoderStats {
        self.stats
    }

    /// Bytes buffered but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete packet, or `None` until more bytes arrive.
    pub fn next_packet(&mut self) -> Option<Packet> {
        loop {
            if !self.align_on_marker() {
                return None;
            }
            let layout = match self.layout {
                Some(layout) => layout,
                None => match self.detect_layout() {
                    Detection::Found(layout) => {
                        self.layout = Some(layout);
                        layout
                    }
                    Detection::NeedMore => return None,
                    Detection::Invalid => {
                        self.skip(1);
                        continue;
                    }
                },
            };
            let probe = match probe_header(&self.buf, layout) {
                ProbeOutcome::NeedMore => return None,
                ProbeOutcome::Invalid => {
                    self.skip(1);
                    continue;
                }
                ProbeOutcome::Header(probe) => probe,
            };
            if probe.body_len > self.max_body {
                self.stats.oversized += 1;
                self.skip(1);
                continue;
            }
            let total = probe.header_len + probe.body_len;
            if self.buf.len() < total {
                return None;
            }
            if let Some(torn_at) = self.torn_packet_restart(total) {
                self.skip(torn_at);
                continue;
            }
            self.in_garbage = false;
            // The header is read in place; only the body becomes a view of the buffer (one
            // reference count per packet). `total` bytes are buffered (checked above).
            let head = self.buf.get(..probe.header_len).unwrap_or(&[]);
            let parsed = parse_packet(head, Bytes::new(), layout, probe);
            self.buf.advance(probe.header_len);
            let body = self.buf.split_to(probe.body_len).freeze();
            if let Some(mut packet) = parsed {
                packet.body = body;
                self.stats.packets += 1;
                self.stats.packet_bytes += total as u64;
                return Some(packet);
            }
            // probe_header accepted it, so parse_packet cannot fail short of a bug; the
            // bytes are gone either way, so count them as skipped and go on.
            self.stats.skipped_bytes += total as u64;
        }
    }

    /// Drops bytes until the buffer starts with a frame marker. False if none is buffered.
    fn align_on_marker(&mut self) -> bool {
        if starts_with_marker(&self.buf) {
            return true;
        }
        if self.buf.len() < FRAME_MARKER.len() && FRAME_MARKER.starts_with(&self.buf) {
            return false;
        }
        match memmem::find(&self.buf, &FRAME_MARKER) {
            Some(pos) => {
                self.skip(pos);
                true
            }
            None => {
                // Keep a tail that could be the start of a marker split across reads.
                let keep = (1..FRAME_MARKER.len())
                    .rev()
                    .find(|n| self.buf.ends_with(FRAME_MARKER.get(..*n).unwrap_or(&[])))
                    .unwrap_or(0);
                let drop = self.buf.len() - keep;
                self.skip(drop);
                false
            }
        }
    }

    /// If the bytes right after a packet of `total` bytes are visibly not a marker, the
    /// packet is probably torn (its length field swallowed the next packet's header): return
    /// where a marker inside it restarts decoding. `None` to accept the packet.
    fn torn_packet_restart(&self, total: usize) -> Option<usize> {
        let after = self.buf.get(total..)?;
        let n = after.len().min(FRAME_MARKER.len());
        if starts_with_marker(after) || after.get(..n) == FRAME_MARKER.get(..n) {
            return None;
        }
        let inside = self.buf.get(FRAME_MARKER.len()..total)?;
        memmem::find(inside, &FRAME_MARKER).map(|pos| pos + FRAME_MARKER.len())
    }

    /// Decides the SIM layout from the first packets: the one whose declared lengths chain
    /// from frame marker to frame marker. Both can fit an audio-only stream whose 20-digit
    /// SIM reads as a plausible 12-digit one; then the layout that does not put the channel
    /// at 0 (channels are 1-based) wins, and on a full tie the 2016 layout.
    fn detect_layout(&self) -> Detection {
        const ENOUGH: usize = 4;
        let short = self.check_layout(SimLayout::Bcd6);
        let long = self.check_layout(SimLayout::Bcd10);
        match (short, long) {
            (Chain::Invalid, Chain::Invalid) => Detection::Invalid,
            (Chain::Valid(_), Chain::Invalid) => Detection::Found(SimLayout::Bcd6),
            (Chain::Invalid, Chain::Valid(_)) => Detection::Found(SimLayout::Bcd10),
            (Chain::Valid(a), Chain::Valid(b)) => {
                if a.score() > b.score() {
                    Detection::Found(SimLayout::Bcd6)
                } else if b.score() > a.score() {
                    Detection::Found(SimLayout::Bcd10)
                } else if a.packets.min(b.packets) >= ENOUGH || a.broken {
                    Detection::Found(SimLayout::Bcd6)
                } else {
                    Detection::NeedMore
                }
            }
            (Chain::Valid(a), Chain::NeedMore) if a.packets >= ENOUGH || a.broken => {
                Detection::Found(SimLayout::Bcd6)
            }
            (Chain::NeedMore, Chain::Valid(b)) if b.packets >= ENOUGH || b.broken => {
                Detection::Found(SimLayout::Bcd10)
            }
            _ => Detection::NeedMore,
        }
    }

    /// Follows packet lengths through the buffer in `layout` (up to a few packets).
    fn check_layout(&self, layout: SimLayout) -> Chain {
        const MAX_CHAIN: usize = 8;
        let mut chain = ChainFit {
            packets: 0,
            broken: false,
            channel_zero: self.buf.get(layout.channel_offset()) == Some(&0),
        };
        let mut at = 0;
        while chain.packets < MAX_CHAIN {
            let rest = self.buf.get(at..).unwrap_or(&[]);
            let probe = match probe_header(rest, layout) {
                ProbeOutcome::Header(probe) if probe.body_len <= self.max_body => probe,
                ProbeOutcome::Header(_) | ProbeOutcome::Invalid => {
                    chain.broken = true;
                    break;
                }
                ProbeOutcome::NeedMore => break,
            };
            let end = at + probe.header_len + probe.body_len;
            match self.buf.get(end..end + FRAME_MARKER.len()) {
                Some(next) if next == FRAME_MARKER => {
                    chain.packets += 1;
                    at = end;
                }
                Some(_) => {
                    chain.broken = true;
                    break;
                }
                None => break,
            }
        }
        match chain {
            ChainFit {
                packets: 0,
                broken: true,
                ..
            } => Chain::Invalid,
            ChainFit { packets: 0, .. } => Chain::NeedMore,
            fit => Chain::Valid(fit),
        }
    }

    fn skip(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        if n == 0 {
            return;
        }
        if !self.in_garbage {
            self.stats.resyncs += 1;
            self.in_garbage = true;
        }
        self.stats.skipped_bytes += n as u64;
        self.buf.advance(n);
    }
}

/// `buf` starts with the frame marker: a 4-byte compare, not a call to `memcmp` (this runs
/// twice per packet).
fn starts_with_marker(buf: &[u8]) -> bool {
    buf.first_chunk::<4>() == Some(&FRAME_MARKER)
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_MAX_BODY)
    }
}
