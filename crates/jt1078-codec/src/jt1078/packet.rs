//! One JT/T 1078 stream packet: parsing a header at the front of a buffer and writing one.
//!
//! Pure functions over byte slices; `decoder.rs` decides where packets start.

use bytes::{BufMut, Bytes, BytesMut};

use super::header::{DataType, FRAME_MARKER, PayloadType, Sim, SimLayout, Subpackage, is_bcd};

/// A decoded stream packet. The body is a slice of the receive buffer (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The marker bit (M) of the RTP-style header: set on the last packet of a frame.
    pub marker: bool,
    /// Payload type (PT).
    pub payload_type: PayloadType,
    /// Packet sequence number.
    pub sequence: u16,
    /// SIM number as sent.
    pub sim: Sim,
    /// Logical channel.
    pub channel: u8,
    /// Data type (I/P/B/audio/transparent).
    pub data_type: DataType,
    /// Subpackage flag.
    pub subpackage: Subpackage,
    /// Device timestamp in milliseconds; absent for transparent data.
    pub timestamp: Option<u64>,
    /// Milliseconds since the previous I-frame (video only).
    pub last_iframe_interval: Option<u16>,
    /// Milliseconds since the previous frame (video only).
    pub last_frame_interval: Option<u16>,
    /// Payload.
    pub body: Bytes,
}

/// What the fixed part of a header at the front of a buffer says, before the body is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeaderProbe {
    pub(crate) data_type: DataType,
    pub(crate) header_len: usize,
    pub(crate) body_len: usize,
}

/// Why the bytes at a frame marker are not a plausible header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeOutcome {
    /// Not enough bytes yet to judge.
    NeedMore,
    /// Plausible header.
    Header(HeaderProbe),
    /// Not a header in this layout (bad marker, nibbles out of range, non-BCD SIM).
    Invalid,
}

/// Reads the fixed part of a header at `buf[0..]` in `layout` without consuming anything.
pub(crate) fn probe_header(buf: &[u8], layout: SimLayout) -> ProbeOutcome {
    let dt_offset = layout.data_type_offset();
    let Some(fixed) = buf.get(..=dt_offset) else {
        return if buf.len() >= 4 && buf.get(..4) != Some(&FRAME_MARKER[..]) {
            ProbeOutcome::Invalid
        } else {
            ProbeOutcome::NeedMore
        };
    };
    if fixed.first_chunk::<4>() != Some(&FRAME_MARKER) {
        return ProbeOutcome::Invalid;
    }
    let sim_ok = fixed
        .get(8..8 + layout.sim_len())
        .is_some_and(|sim| sim.iter().all(|b| is_bcd(*b)));
    let type_byte = fixed.get(dt_offset).copied().unwrap_or(0xff);
    let (Ok(data_type), Ok(_)) = (
        DataType::try_from(type_byte >> 4),
        Subpackage::try_from(type_byte & 0x0f),
    ) else {
        return ProbeOutcome::Invalid;
    };
    if !sim_ok {
        return ProbeOutcome::Invalid;
    }
    let header_len = layout.header_len(data_type);
    let len_at = layout.body_len_offset(data_type);
    match buf.get(len_at..len_at + 2) {
        Some(&[hi, lo]) => ProbeOutcome::Header(HeaderProbe {
            data_type,
            header_len,
            body_len: usize::from(u16::from_be_bytes([hi, lo])),
        }),
        _ => ProbeOutcome::NeedMore,
    }
}

/// Parses a complete packet whose header was probed; `raw` holds exactly header + body.
pub(crate) fn parse_packet(
    head: &[u8],
    body: Bytes,
    layout: SimLayout,
    probe: HeaderProbe,
) -> Option<Packet> {
    let sim_len = layout.sim_len();
    let after_sim = 8 + sim_len;
    let head = head.get(..probe.header_len)?;
    let mpt = *head.get(5)?;
    let sequence = u16::from_be_bytes([*head.get(6)?, *head.get(7)?]);
    let sim = Sim::from_bcd(head.get(8..after_sim)?)?;
    let channel = *head.get(after_sim)?;
    let subpackage = Subpackage::try_from(*head.get(after_sim + 1)? & 0x0f).ok()?;
    let ts_at = after_sim + 2;
    let (timestamp, last_iframe_interval, last_frame_interval) = if probe.data_type.has_timestamp()
    {
        let ts = u64::from_be_bytes(head.get(ts_at..ts_at + 8)?.try_into().ok()?);
        if probe.data_type.is_video() {
            let iv = ts_at + 8;
            (
                Some(ts),
                Some(u16::from_be_bytes([*head.get(iv)?, *head.get(iv + 1)?])),
                Some(u16::from_be_bytes([*head.get(iv + 2)?, *head.get(iv + 3)?])),
            )
        } else {
            (Some(ts), None, None)
        }
    } else {
        (None, None, None)
    };
    Some(Packet {
        marker: mpt & 0x80 != 0,
        payload_type: PayloadType::from(mpt & 0x7f),
        sequence,
        sim,
        channel,
        data_type: probe.data_type,
        subpackage,
        timestamp,
        last_iframe_interval,
        last_frame_interval,
        body,
    })
}

impl Packet {
    /// The layout this packet's SIM implies.
    pub fn layout(&self) -> SimLayout {
        self.sim.layout()
    }

    /// Length of the packet on the wire.
    pub fn encoded_len(&self) -> usize {
        self.layout().header_len(self.data_type) + self.body.len()
    }

    /// Appends the packet in wire format. The body length field is written as
    /// `min(len, u16::MAX)`; callers keep bodies within the standard's 950 bytes.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.encoded_len());
        out.put_slice(&FRAME_MARKER);
        out.put_u8(0x81); // V=2, P=0, X=0, CC=1, as devices send
        out.put_u8((u8::from(self.marker) << 7) | (self.payload_type.to_wire() & 0x7f));
        out.put_u16(self.sequence);
        out.put_slice(self.sim.bcd());
        out.put_u8(self.channel);
        out.put_u8((self.data_type.to_wire() << 4) | self.subpackage.to_wire());
        if self.data_type.has_timestamp() {
            out.put_u64(self.timestamp.unwrap_or(0));
        }
        if self.data_type.is_video() {
            out.put_u16(self.last_iframe_interval.unwrap_or(0));
            out.put_u16(self.last_frame_interval.unwrap_or(0));
        }
        out.put_u16(u16::try_from(self.body.len()).unwrap_or(u16::MAX));
        out.put_slice(&self.body);
    }
}
