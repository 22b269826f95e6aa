//! JT/T 1078 stream packet header: wire enums and the two SIM layouts.
//!
//! Owns the byte-level description of the header (JT/T 1078-2016 §5.5.3, table 19) and of
//! its 20-digit-SIM variant (JT/T 808-2019 / T/GDRTA 002-2020). It knows nothing about
//! buffering or reassembly; see `decoder.rs` for that.

/// The frame marker that starts every packet: `30 31 63 64` ("01cd").
pub const FRAME_MARKER: [u8; 4] = *b"01cd";

/// Payload size limit of the standard (JT/T 1078-2016 §5.5.3: "no more than 950 bytes").
pub const STANDARD_MAX_BODY: usize = 950;

/// Which SIM field the packets of a connection carry. Nothing in a packet says which one it
/// is, so the decoder detects it per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimLayout {
    /// JT/T 1078-2016: 6-byte BCD SIM (12 digits).
    Bcd6,
    /// JT/T 808-2019 / Guangdong: 10-byte BCD SIM (20 digits); every later offset shifts by 4.
    Bcd10,
}

impl SimLayout {
    /// Length of the SIM field in bytes.
    pub const fn sim_len(self) -> usize {
        match self {
            SimLayout::Bcd6 => 6,
            SimLayout::Bcd10 => 10,
        }
    }

    /// Offset of the logical channel byte.
    pub const fn channel_offset(self) -> usize {
        8 + self.sim_len()
    }

    /// Offset of the data type / subpackage byte.
    pub const fn data_type_offset(self) -> usize {
        self.channel_offset() + 1
    }

    /// Offset of the 2-byte body length for a given data type.
    pub const fn body_len_offset(self, data_type: DataType) -> usize {
        self.header_len(data_type) - 2
    }

    /// Full header length (marker to body) for a given data type: 30/26/18 bytes for
    /// video/audio/transparent in the 2016 layout, 4 more with a 10-byte SIM.
    pub const fn header_len(self, data_type: DataType) -> usize {
        let base = match data_type {
            DataType::IFrame | DataType::PFrame | DataType::BFrame => 30,
            DataType::Audio => 26,
            DataType::Transparent => 18,
        };
        base + self.sim_len() - 6
    }
}

/// Data type, the high nibble of the data type / subpackage byte (table 19).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// Video I-frame.
    IFrame,
    /// Video P-frame.
    PFrame,
    /// Video B-frame.
    BFrame,
    /// Audio frame.
    Audio,
    /// Transparent (pass-through) data; its header has no timestamp or intervals.
    Transparent,
}

impl DataType {
    /// Number of data types, for per-type tables.
    pub const COUNT: usize = 5;

    /// Index into per-type tables.
    pub const fn index(self) -> usize {
        match self {
            DataType::IFrame => 0,
            DataType::PFrame => 1,
            DataType::BFrame => 2,
            DataType::Audio => 3,
            DataType::Transparent => 4,
        }
    }

    /// Wire value (high nibble).
    pub const fn to_wire(self) -> u8 {
        self.index() as u8
    }

    /// True for I, P and B frames.
    pub const fn is_video(self) -> bool {
        matches!(self, DataType::IFrame | DataType::PFrame | DataType::BFrame)
    }

    /// True if the header has the timestamp field (everything but transparent data).
    pub const fn has_timestamp(self) -> bool {
        !matches!(self, DataType::Transparent)
    }
}

impl TryFrom<u8> for DataType {
    type Error = u8;

    fn try_from(nibble: u8) -> Result<Self, u8> {
        match nibble {
            0 => Ok(DataType::IFrame),
            1 => Ok(DataType::PFrame),
            2 => Ok(DataType::BFrame),
            3 => Ok(DataType::Audio),
            4 => Ok(DataType::Transparent),
            other => Err(other),
        }
    }
}

/// Subpackage flag, the low nibble of the data type / subpackage byte (table 19).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subpackage {
    /// The packet carries a whole frame.
    Atomic,
    /// First piece of a frame.
    First,
    /// Last piece of a frame.
    Last,
    /// A piece between first and last.
    Middle,
}

impl Subpackage {
    /// Wire value (low nibble).
    pub const fn to_wire(self) -> u8 {
        match self {
            Subpackage::Atomic => 0,
            Subpackage::First => 1,
            Subpackage::Last => 2,
            Subpackage::Middle => 3,
        }
    }
}

impl TryFrom<u8> for Subpackage {
    type Error = u8;

    fn try_from(nibble: u8) -> Result<Self, u8> {
        match nibble {
            0 => Ok(Subpackage::Atomic),
            1 => Ok(Subpackage::First),
            2 => Ok(Subpackage::Last),
            3 => Ok(Subpackage::Middle),
            other => Err(other),
        }
    }
}

/// Payload type (PT), JT/T 1078-2016 table 12. Unknown values are kept, not rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadType {
    /// 1
    G721,
    /// 2
    G722,
    /// 3
    G723,
    /// 4
    G728,
    /// 5
    G729,
    /// 6: ITU-T G.711 A-law.
    G711A,
    /// 7: ITU-T G.711 µ-law.
    G711U,
    /// 8
    G726,
    /// 9
    G729A,
    /// 10
    Dvi4_3,
    /// 11
    Dvi4_4,
    /// 12
    Dvi4_8k,
    /// 13
    Dvi4_16k,
    /// 14
    Lpc,
    /// 15
    S16BeStereo,
    /// 16
    S16BeMono,
    /// 17
    MpegAudio,
    /// 18
    Lpcm,
    /// 19
    Aac,
    /// 20
    Wma9Std,
    /// 21
    HeAac,
    /// 22
    PcmVoice,
    /// 23
    PcmAudio,
    /// 24
    AacLc,
    /// 25
    Mp3,
    /// 26: IMA ADPCM.
    AdpcmA,
    /// 27
    Mp4Audio,
    /// 28
    Amr,
    /// 91: transparent data.
    Transparent,
    /// 98
    H264,
    /// 99
    H265,
    /// 100
    Avs,
    /// 101
    Svac,
    /// Any value the table does not list.
    Unknown(u8),
}

/// Table 12 as (wire value, enum) pairs; the single source for both conversions.
const PAYLOAD_TYPES: [(u8, PayloadType); 33] = [
    (1, PayloadType::G721),
    (2, PayloadType::G722),
    (3, PayloadType::G723),
    (4, PayloadType::G728),
    (5, PayloadType::G729),
    (6, PayloadType::G711A),
    (7, PayloadType::G711U),
    (8, PayloadType::G726),
    (9, PayloadType::G729A),
    (10, PayloadType::Dvi4_3),
    (11, PayloadType::Dvi4_4),
    (12, PayloadType::Dvi4_8k),
    (13, PayloadType::Dvi4_16k),
    (14, PayloadType::Lpc),
    (15, PayloadType::S16BeStereo),
    (16, PayloadType::S16BeMono),
    (17, PayloadType::MpegAudio),
    (18, PayloadType::Lpcm),
    (19, PayloadType::Aac),
    (20, PayloadType::Wma9Std),
    (21, PayloadType::HeAac),
    (22, PayloadType::PcmVoice),
    (23, PayloadType::PcmAudio),
    (24, PayloadType::AacLc),
    (25, PayloadType::Mp3),
    (26, PayloadType::AdpcmA),
    (27, PayloadType::Mp4Audio),
    (28, PayloadType::Amr),
    (91, PayloadType::Transparent),
    (98, PayloadType::H264),
    (99, PayloadType::H265),
    (100, PayloadType::Avs),
    (101, PayloadType::Svac),
];

impl PayloadType {
    /// Wire value (7 bits).
    pub fn to_wire(self) -> u8 {
        match self {
            PayloadType::Unknown(v) => v,
            known => PAYLOAD_TYPES
                .iter()
                .find(|(_, pt)| *pt == known)
                .map_or(0, |(v, _)| *v),
        }
    }

    /// True for the video payload types.
    pub fn is_video(self) -> bool {
        matches!(
            self,
            PayloadType::H264 | PayloadType::H265 | PayloadType::Avs | PayloadType::Svac
        )
    }
}

/// `PAYLOAD_TYPES` indexed by wire value, built at compile time: the per-packet lookup is
/// one load instead of a search.
#[expect(
    clippy::indexing_slicing,
    reason = "const evaluation: an index out of range fails the build, never a packet"
)]
const PAYLOAD_TYPE_BY_WIRE: [Option<PayloadType>; 128] = {
    let mut table = [None; 128];
    let mut i = 0;
    while i < PAYLOAD_TYPES.len() {
        let (wire, pt) = PAYLOAD_TYPES[i];
        table[(wire & 0x7f) as usize] = Some(pt);
        i += 1;
    }
    table
};

impl From<u8> for PayloadType {
    fn from(value: u8) -> Self {
        PAYLOAD_TYPE_BY_WIRE
            .get(usize::from(value))
            .copied()
            .flatten()
            .unwrap_or(PayloadType::Unknown(value))
    }
}

/// A SIM number as its BCD bytes (6 or 10), kept raw so the per-packet path never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sim {
    bytes: [u8; 10],
    len: u8,
}

impl Sim {
    /// The header layout this SIM's length implies.
    pub fn layout(&self) -> SimLayout {
        if self.len == 10 {
            SimLayout::Bcd10
        } else {
            SimLayout::Bcd6
        }
    }

    /// Takes the raw BCD bytes of a SIM field; `None` unless 6 or 10 bytes of valid BCD.
    pub fn from_bcd(bcd: &[u8]) -> Option<Sim> {
        if !(bcd.len() == 6 || bcd.len() == 10) || !bcd.iter().all(|b| is_bcd(*b)) {
            return None;
        }
        let mut bytes = [0u8; 10];
        bytes.get_mut(..bcd.len())?.copy_from_slice(bcd);
        Some(Sim {
            bytes,
            len: bcd.len() as u8,
        })
    }

    /// Encodes a decimal digit string into a SIM of the given layout, left-padding with
    /// zeros. `None` if it is not all digits or too long.
    pub fn from_digits(digits: &str, layout: SimLayout) -> Option<Sim> {
        let width = layout.sim_len() * 2;
        if digits.len() > width || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let padded: Vec<u8> = std::iter::repeat_n(b'0', width - digits.len())
            .chain(digits.bytes())
            .map(|c| c - b'0')
            .collect();
        let bcd: Vec<u8> = padded
            .chunks_exact(2)
            .map(|pair| match pair {
                [hi, lo] => (hi << 4) | lo,
                _ => 0,
            })
            .collect();
        Sim::from_bcd(&bcd)
    }

    /// The raw BCD bytes.
    pub fn bcd(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// All digits, including leading zeros (12 or 20 characters).
    pub fn digits(&self) -> String {
        self.bcd()
            .iter()
            .flat_map(|b| [b >> 4, b & 0x0f])
            .map(|d| char::from(b'0' + d))
            .collect()
    }
}

/// True if both nibbles of `b` are decimal digits.
pub(crate) const fn is_bcd(b: u8) -> bool {
    (b >> 4) <= 9 && (b & 0x0f) <= 9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_type_round_trips_every_value() {
        for v in 0..=127u8 {
            assert_eq!(PayloadType::from(v).to_wire(), v);
        }
        assert_eq!(PayloadType::from(98), PayloadType::H264);
        assert_eq!(PayloadType::from(26), PayloadType::AdpcmA);
        assert_eq!(PayloadType::from(92), PayloadType::Unknown(92));
        for (wire, pt) in PAYLOAD_TYPES {
            assert_eq!(PayloadType::from(wire), pt, "wire value {wire}");
        }
    }

    #[test]
    fn header_lengths_match_the_standard() {
        assert_eq!(SimLayout::Bcd6.header_len(DataType::IFrame), 30);
        assert_eq!(SimLayout::Bcd6.header_len(DataType::Audio), 26);
        assert_eq!(SimLayout::Bcd6.header_len(DataType::Transparent), 18);
        assert_eq!(SimLayout::Bcd10.header_len(DataType::PFrame), 34);
        assert_eq!(SimLayout::Bcd10.header_len(DataType::Audio), 30);
        assert_eq!(SimLayout::Bcd10.header_len(DataType::Transparent), 22);
        assert_eq!(SimLayout::Bcd6.body_len_offset(DataType::BFrame), 28);
        assert_eq!(SimLayout::Bcd10.data_type_offset(), 19);
    }

    #[test]
    fn sim_digits_round_trip() {
        let sim = Sim::from_digits("13800138000", SimLayout::Bcd6).unwrap();
        assert_eq!(sim.bcd(), &[0x01, 0x38, 0x00, 0x13, 0x80, 0x00]);
        assert_eq!(sim.digits(), "013800138000");
        let long = Sim::from_digits("13800138000", SimLayout::Bcd10).unwrap();
        assert_eq!(long.digits(), "00000000013800138000");
        assert!(Sim::from_digits("1234567890123", SimLayout::Bcd6).is_none());
        assert!(Sim::from_bcd(&[0x1a, 0, 0, 0, 0, 0]).is_none());
    }
}
