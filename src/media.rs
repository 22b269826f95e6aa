//! The types that cross the hub: device ids, stream keys, codecs, frames, and the
//! timestamp normaliser that turns device clocks into a monotonic stream clock.
//!
//! Protocol-neutral: no JT/T 1078 wire details beyond the mapping from its payload types,
//! no FLV. Sans-IO: time is an argument.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use serde::{Serialize, Serializer};
use tokio::time::Instant;

use crate::codec::jt1078::{PayloadType, Sim};

/// A device id in canonical form: the SIM's decimal digits without leading zeros
/// (`013800138000` → `13800138000`). Every URL, topic and log line uses this form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(String);

/// A device id that is not 1 to 20 decimal digits, or is all zeros (no terminal has it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid device id {input:?}: expected 1 to 20 decimal digits, not all zeros (the terminal's SIM number)"
)]
pub struct InvalidDeviceId {
    /// What was given, cut to its first [`InvalidDeviceId::ECHOED`] characters (it is
    /// echoed back to whoever sent it).
    pub input: String,
}

impl InvalidDeviceId {
    /// Most characters of the input kept.
    pub const ECHOED: usize = 64;

    fn new(input: &str) -> InvalidDeviceId {
        InvalidDeviceId { input: echo(input) }
    }
}

/// `input` as echoed back to whoever sent it: at most [`InvalidDeviceId::ECHOED`]
/// characters, then `…`.
pub(crate) fn echo(input: &str) -> String {
    match input.char_indices().nth(InvalidDeviceId::ECHOED) {
        Some((at, _)) => format!("{}…", input.get(..at).unwrap_or_default()),
        None => input.to_owned(),
    }
}

impl DeviceId {
    /// Parses any input form (zero-padded 12 or 20 digits, or bare) into the canonical id.
    pub fn parse(input: &str) -> Result<DeviceId, InvalidDeviceId> {
        let digits = input.trim();
        if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return Err(InvalidDeviceId::new(input));
        }
        let stripped = digits.trim_start_matches('0');
        if stripped.is_empty() {
            return Err(InvalidDeviceId::new(input));
        }
        Ok(DeviceId(stripped.to_owned()))
    }

    /// The canonical id of a packet's SIM.
    pub fn from_sim(sim: &Sim) -> DeviceId {
        let digits = sim.digits();
        let stripped = digits.trim_start_matches('0');
        DeviceId(if stripped.is_empty() {
            "0".to_owned()
        } else {
            stripped.to_owned()
        })
    }

    /// The canonical digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for DeviceId {
    type Err = InvalidDeviceId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeviceId::parse(s)
    }
}

impl Serialize for DeviceId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// A logical channel of a terminal (camera number, 1-based on real devices).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Channel(pub u8);

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Live video or history playback; decided by the port or request, never by the packet.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    /// Real-time stream (0x9101).
    Live,
    /// History playback (0x9201).
    Playback,
}

impl StreamKind {
    /// The lowercase name used in URLs and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            StreamKind::Live => "live",
            StreamKind::Playback => "playback",
        }
    }
}

impl fmt::Display for StreamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies a stream in the hub.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    /// The device.
    pub device: DeviceId,
    /// Its logical channel.
    pub channel: Channel,
    /// Live or playback.
    pub kind: StreamKind,
}

impl StreamKey {
    /// A key.
    pub fn new(device: DeviceId, channel: Channel, kind: StreamKind) -> Self {
        StreamKey {
            device,
            channel,
            kind,
        }
    }

    /// `{device}_{channel}`, the stream name in URLs.
    pub fn name(&self) -> String {
        format!("{}_{}", self.device, self.channel)
    }
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}_{}", self.kind, self.device, self.channel)
    }
}

/// Media codecs the gateway knows, mapped from JT/T 1078 payload types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// H.264 / AVC.
    H264,
    /// H.265 / HEVC.
    H265,
    /// G.711 A-law, 8 kHz mono.
    G711A,
    /// G.711 µ-law, 8 kHz mono.
    G711U,
    /// G.726.
    G726,
    /// AAC (ADTS).
    Aac,
    /// IMA ADPCM.
    Adpcm,
    /// MP3.
    Mp3,
    /// Any other payload type, by its number.
    #[serde(serialize_with = "serialize_other")]
    Other(u8),
}

impl Codec {
    /// The PCM decoder of a telephony codec devices send (G.711, G.726, IMA ADPCM), if it
    /// is one.
    pub const fn pcm_format(self) -> Option<crate::codec::audio::PcmFormat> {
        use crate::codec::audio::PcmFormat;
        match self {
            Codec::G711A => Some(PcmFormat::G711A),
            Codec::G711U => Some(PcmFormat::G711U),
            Codec::G726 => Some(PcmFormat::G726),
            Codec::Adpcm => Some(PcmFormat::ImaAdpcm),
            _ => None,
        }
    }

    /// True for video codecs.
    pub const fn is_video(self) -> bool {
        matches!(self, Codec::H264 | Codec::H265)
    }

    /// The hub codec of a video codec.
    pub const fn from_video(codec: crate::codec::h26x::VideoCodec) -> Codec {
        match codec {
            crate::codec::h26x::VideoCodec::H264 => Codec::H264,
            crate::codec::h26x::VideoCodec::H265 => Codec::H265,
        }
    }

    /// Duration of an audio frame of `len` bytes, where the codec makes it computable.
    pub fn audio_duration(self, len: usize) -> Option<Duration> {
        match self {
            // 8000 samples/s, one byte per sample
            Codec::G711A | Codec::G711U => Some(Duration::from_micros(len as u64 * 125)),
            _ => None,
        }
    }

    /// Whether `data` can be one frame of this audio codec: a size a device sends (10 ms
    /// to 1 s of sound) and, for the framed codecs, their sync word. What decides whether
    /// audio may announce a stream (ingest checks nothing else of audio); false for video
    /// and for payload types the gateway does not know.
    pub fn is_plausible_audio_frame(self, data: &[u8]) -> bool {
        let len = data.len();
        match self {
            // 8 bytes a millisecond; devices send whole milliseconds (20 ms = 160 bytes)
            Codec::G711A | Codec::G711U => (80..=8000).contains(&len) && len.is_multiple_of(8),
            // 2 to 5 bytes a millisecond (16 to 40 kbit/s, ITU-T G.726)
            Codec::G726 => (20..=5000).contains(&len),
            // IMA ADPCM, 4 bytes a millisecond, after a 4-byte state header
            Codec::Adpcm => (44..=4004).contains(&len),
            // ADTS: syncword 0xFFF, then a 13-bit frame length that fits (ISO/IEC 13818-7)
            Codec::Aac => match data {
                [0xff, b1, _, b3, b4, b5, _, ..] if b1 & 0xf0 == 0xf0 => {
                    let frame = (usize::from(b3 & 0x03) << 11)
                        | (usize::from(*b4) << 3)
                        | usize::from(b5 >> 5);
                    (7..=len).contains(&frame)
                }
                _ => false,
            },
            // MPEG audio frame sync: 11 set bits (ISO/IEC 11172-3)
            Codec::Mp3 => matches!(data, [0xff, b1, ..] if b1 & 0xe0 == 0xe0) && len >= 24,
            Codec::H264 | Codec::H265 | Codec::Other(_) => false,
        }
    }
}

impl From<PayloadType> for Codec {
    fn from(pt: PayloadType) -> Self {
        match pt {
            PayloadType::H264 => Codec::H264,
            PayloadType::H265 => Codec::H265,
            PayloadType::G711A => Codec::G711A,
            PayloadType::G711U => Codec::G711U,
            PayloadType::G726 => Codec::G726,
            PayloadType::Aac | PayloadType::AacLc | PayloadType::HeAac | PayloadType::Mp4Audio => {
                Codec::Aac
            }
            PayloadType::AdpcmA => Codec::Adpcm,
            PayloadType::Mp3 => Codec::Mp3,
            other => Codec::Other(other.to_wire()),
        }
    }
}

fn serialize_other<S: Serializer>(pt: &u8, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format!("pt{pt}"))
}

/// Which audio an output takes from a stream (`[audio]` in the config names it per output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioMode {
    /// AAC: a device's AAC as it came, any other audio the gateway decodes transcoded to
    /// AAC-LC once per stream (what browsers and SRS play). A reader in this mode gets the
    /// device's own audio frames too (they say audio is coming before the first AAC frame,
    /// which trails by the encoder's delay) and must play only the AAC ones.
    #[default]
    Aac,
    /// The device's audio as it came (G.711 in FLV for ffplay/VLC and server-side consumers).
    Passthrough,
}

impl AudioMode {
    /// What an output in this mode gets of a device sending `device` audio (`None`:
    /// nothing, the gateway cannot decode it).
    pub const fn codec_out(self, device: Codec) -> Option<Codec> {
        match (self, device) {
            (AudioMode::Passthrough, codec) => Some(codec),
            (
                AudioMode::Aac,
                Codec::Aac | Codec::G711A | Codec::G711U | Codec::G726 | Codec::Adpcm,
            ) => Some(Codec::Aac),
            (AudioMode::Aac, _) => None,
        }
    }
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Track {
    /// Video track.
    Video,
    /// Audio track.
    Audio,
}

/// A whole media frame on the hub. Cloning it clones a refcount, never the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Codec of the payload.
    pub codec: Codec,
    /// True for a video key frame (IDR/IRAP) that carries its parameter sets.
    pub is_key: bool,
    /// Presentation time in ms on the stream clock (monotonic per track, starting near 0).
    pub pts: u64,
    /// For video: Annex-B access unit. For audio: one codec frame.
    pub data: Bytes,
}

impl Frame {
    /// Audio or video.
    pub fn track(&self) -> Track {
        if self.codec.is_video() {
            Track::Video
        } else {
            Track::Audio
        }
    }

    /// Whether a viewer can start (or restart, after skipping frames) at this frame: a key
    /// frame, or any audio frame of a stream without video.
    pub fn starts_playback(&self, stream_has_video: bool) -> bool {
        self.is_key || (self.track() == Track::Audio && !stream_has_video)
    }
}

/// Device timestamps further apart than this are a jump (or a reset), not a gap.
pub const DEFAULT_JUMP_LIMIT: Duration = Duration::from_secs(5);

/// Turns device timestamps into a monotonic stream clock.
///
/// Devices send epoch ms, relative ms, separate audio and video clocks, or a constant. Each
/// track advances by the device's delta while that is sane; on a frozen clock, a jump or a
/// reset it advances by the best other estimate (the device's interval field or the audio
/// frame duration, else the last good step, else arrival time). A track that starts late
/// aligns to the other on the device clock if both clocks agree, else on arrival time.
#[derive(Debug, Clone)]
pub struct TimestampNormaliser {
    video: TrackClock,
    audio: TrackClock,
    jump_limit: u64,
    origin: u64,
}

#[derive(Debug, Clone, Default)]
struct TrackClock {
    last_device: Option<u64>,
    last_out: Option<u64>,
    last_arrival: Option<Instant>,
    last_step: u64,
}

impl TimestampNormaliser {
    /// A normaliser that treats device deltas above `jump_limit` as discontinuities.
    pub fn new(jump_limit: Duration) -> Self {
        TimestampNormaliser {
            video: TrackClock::default(),
            audio: TrackClock::default(),
            jump_limit: u64::try_from(jump_limit.as_millis()).unwrap_or(u64::MAX),
            origin: 0,
        }
    }

    /// Starts the stream clock at `origin` ms instead of 0 (a replacing publisher continues
    /// where the previous one stopped).
    pub fn starting_at(mut self, origin: u64) -> Self {
        self.origin = origin;
        self
    }

    /// The stream time (ms) of a frame. `device_ts` is the packet timestamp; `hint` the
    /// device's own idea of the frame's duration (interval field, audio frame length).
    pub fn normalise(
        &mut self,
        track: Track,
        device_ts: Option<u64>,
        hint: Option<Duration>,
        now: Instant,
    ) -> u64 {
        let jump_limit = self.jump_limit;
        let origin = self.origin;
        let (clock, other) = match track {
            Track::Video => (&mut self.video, &self.audio),
            Track::Audio => (&mut self.audio, &self.video),
        };
        let min_step = u64::from(track == Track::Video);
        let hint_ms = hint
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .filter(|ms| *ms > 0 && *ms <= jump_limit);
        let out = match (clock.last_out, clock.last_device, device_ts) {
            (None, _, _) => first_out(clock, other, device_ts, now, jump_limit, origin),
            (Some(last), Some(prev), Some(ts)) if ts > prev && ts - prev <= jump_limit => {
                clock.last_step = ts - prev;
                clock.last_device = Some(ts);
                last + (ts - prev)
            }
            (Some(last), Some(prev), Some(ts)) if ts < prev && prev - ts <= jump_limit / 5 => {
                // small step back (jitter, B-frames): hold, keep the high-water mark
                last + min_step
            }
            (Some(last), _, ts) => {
                let arrival = clock
                    .last_arrival
                    .map(|t| u64::try_from(now.duration_since(t).as_millis()).unwrap_or(0));
                let step = hint_ms
                    .or((clock.last_step > 0).then_some(clock.last_step))
                    .or(arrival)
                    .unwrap_or(0);
                clock.last_device = ts;
                last + step.max(min_step)
            }
        };
        clock.last_out = Some(out);
        clock.last_arrival = Some(now);
        out
    }
}

impl Default for TimestampNormaliser {
    fn default() -> Self {
        TimestampNormaliser::new(DEFAULT_JUMP_LIMIT)
    }
}

/// Stream time of a track's first frame: aligned with the other track when it runs.
fn first_out(
    clock: &mut TrackClock,
    other: &TrackClock,
    device_ts: Option<u64>,
    now: Instant,
    jump_limit: u64,
    origin: u64,
) -> u64 {
    clock.last_device = device_ts;
    let Some(other_out) = other.last_out else {
        return origin;
    };
    match (device_ts, other.last_device) {
        (Some(ts), Some(other_ts)) if ts.abs_diff(other_ts) <= jump_limit => {
            if ts >= other_ts {
                other_out + (ts - other_ts)
            } else {
                other_out.saturating_sub(other_ts - ts)
            }
        }
        _ => {
            let since = other.last_arrival.map_or(0, |t| {
                u64::try_from(now.duration_since(t).as_millis()).unwrap_or(0)
            });
            other_out + since
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_canonical() {
        for input in [
            "013800138000",
            "13800138000",
            "00000000013800138000",
            " 013800138000",
        ] {
            assert_eq!(DeviceId::parse(input).unwrap().as_str(), "13800138000");
        }
        assert!(DeviceId::parse("000000000000").is_err(), "all zeros");
        assert!(DeviceId::parse("0").is_err(), "all zeros");
        let long = DeviceId::parse(&"x".repeat(10_000)).unwrap_err();
        assert!(long.to_string().len() < 200, "{long}");
        assert!(DeviceId::parse("12a").is_err());
        assert!(DeviceId::parse("").is_err());
        assert!(DeviceId::parse("123456789012345678901").is_err());
        let sim = Sim::from_digits("13800138000", crate::codec::jt1078::SimLayout::Bcd10).unwrap();
        assert_eq!(DeviceId::from_sim(&sim).as_str(), "13800138000");
    }

    #[test]
    fn stream_key_formats_as_url_path() {
        let key = StreamKey::new(
            DeviceId::parse("013800138000").unwrap(),
            Channel(2),
            StreamKind::Playback,
        );
        assert_eq!(key.to_string(), "playback/13800138000_2");
        assert_eq!(key.name(), "13800138000_2");
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn epoch_clock_starts_at_zero_and_follows_deltas() {
        let t0 = Instant::now();
        let mut n = TimestampNormaliser::default();
        let epoch = 1_700_000_000_000;
        assert_eq!(n.normalise(Track::Video, Some(epoch), None, t0), 0);
        assert_eq!(n.normalise(Track::Video, Some(epoch + 40), None, t0), 40);
        assert_eq!(n.normalise(Track::Audio, Some(epoch + 60), None, t0), 60);
        assert_eq!(n.normalise(Track::Audio, Some(epoch + 80), None, t0), 80);
        assert_eq!(n.normalise(Track::Video, Some(epoch + 80), None, t0), 80);
    }

    #[test]
    fn frozen_clock_falls_back_to_interval_hint() {
        let t0 = Instant::now();
        let mut n = TimestampNormaliser::default();
        let outs: Vec<u64> = (0..4)
            .map(|_| n.normalise(Track::Video, Some(5), Some(ms(40)), t0))
            .collect();
        assert_eq!(outs, vec![0, 40, 80, 120]);
    }

    #[test]
    fn frozen_clock_without_hint_uses_arrival_time() {
        let t0 = Instant::now();
        let mut n = TimestampNormaliser::default();
        assert_eq!(n.normalise(Track::Audio, Some(7), None, t0), 0);
        assert_eq!(n.normalise(Track::Audio, Some(7), None, t0 + ms(20)), 20);
        assert_eq!(n.normalise(Track::Audio, Some(7), None, t0 + ms(45)), 45);
    }

    #[test]
    fn jumps_and_resets_stay_monotonic() {
        let t0 = Instant::now();
        let mut n = TimestampNormaliser::default();
        assert_eq!(n.normalise(Track::Video, Some(1000), None, t0), 0);
        assert_eq!(n.normalise(Track::Video, Some(1040), None, t0), 40);
        // reset to 0: advance by the last good step
        assert_eq!(n.normalise(Track::Video, Some(0), None, t0), 80);
        assert_eq!(n.normalise(Track::Video, Some(40), None, t0), 120);
        // jump forward by an hour
        assert_eq!(n.normalise(Track::Video, Some(3_600_040), None, t0), 160);
        assert_eq!(n.normalise(Track::Video, Some(3_600_080), None, t0), 200);
    }

    #[test]
    fn separate_audio_clock_aligns_on_arrival() {
        let t0 = Instant::now();
        let mut n = TimestampNormaliser::default();
        assert_eq!(
            n.normalise(Track::Video, Some(1_700_000_000_000), None, t0),
            0
        );
        assert_eq!(
            n.normalise(Track::Video, Some(1_700_000_000_040), None, t0 + ms(40)),
            40
        );
        // audio on a relative clock, arriving 10 ms after the last video frame
        assert_eq!(n.normalise(Track::Audio, Some(0), None, t0 + ms(50)), 50);
        assert_eq!(n.normalise(Track::Audio, Some(20), None, t0 + ms(70)), 70);
    }

    #[test]
    fn codec_maps_payload_types() {
        assert_eq!(Codec::from(PayloadType::H264), Codec::H264);
        assert_eq!(Codec::from(PayloadType::G711A), Codec::G711A);
        assert_eq!(Codec::from(PayloadType::AdpcmA), Codec::Adpcm);
        assert_eq!(Codec::from(PayloadType::Lpc), Codec::Other(14));
        assert_eq!(Codec::G711A.audio_duration(160), Some(ms(20)));
    }
}
