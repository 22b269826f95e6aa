//! Object keys of recordings: the keys are the index. Pure.
//!
//! ```text
//! {device}/{channel}/{YYYY-MM-DD}/{start_unix_ms}-{duration_ms}-{init}.m4s   a segment
//! {device}/{channel}/init/{init}.mp4                                          its init segment
//! ```
//!
//! `{init}` is 16 hex digits of the SHA-256 of the init segment: one object per codec
//! configuration, named by its content, so a segment names its init and a listing of the
//! days of a time range finds every segment of it (no database). The date is the UTC day
//! of the segment's start.

use std::time::{Duration, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// Milliseconds in a day.
pub(crate) const DAY_MS: u64 = 86_400_000;

/// A segment as its key names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SegmentName {
    /// Start, Unix milliseconds.
    pub(crate) start_ms: u64,
    /// Duration in milliseconds.
    pub(crate) duration_ms: u64,
    /// The init segment's id.
    pub(crate) init: String,
}

impl SegmentName {
    /// End, Unix milliseconds.
    pub(crate) fn end_ms(&self) -> u64 {
        self.start_ms.saturating_add(self.duration_ms)
    }
}

/// The id of an init segment (16 hex digits of its SHA-256).
pub(crate) fn init_id(init: &[u8]) -> String {
    let digest = Sha256::digest(init);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// `{device}/{channel}`: the prefix of everything recorded of one stream.
pub(crate) fn stream_prefix(device: &str, channel: u8) -> String {
    format!("{device}/{channel}")
}

/// The key of the init segment `init` of a stream.
pub(crate) fn init_key(device: &str, channel: u8, init: &str) -> String {
    format!("{}/init/{init}.mp4", stream_prefix(device, channel))
}

/// The prefix of one UTC day of a stream (`{device}/{channel}/{YYYY-MM-DD}`).
pub(crate) fn day_prefix(device: &str, channel: u8, day_start_ms: u64) -> String {
    format!("{}/{}", stream_prefix(device, channel), date(day_start_ms))
}

/// The key of a segment.
pub(crate) fn segment_key(device: &str, channel: u8, segment: &SegmentName) -> String {
    format!(
        "{}/{}-{}-{}.m4s",
        day_prefix(device, channel, segment.start_ms),
        segment.start_ms,
        segment.duration_ms,
        segment.init
    )
}

/// The segment a key's last part names (`{start}-{duration}-{init}.m4s`), if it is one.
pub(crate) fn parse_segment(key: &str) -> Option<SegmentName> {
    let file = key.rsplit('/').next()?;
    let stem = file.strip_suffix(".m4s")?;
    let mut parts = stem.splitn(3, '-');
    let start_ms = parts.next()?.parse().ok()?;
    let duration_ms = parts.next()?.parse().ok()?;
    let init = parts.next()?;
    if init.len() != 16 || !init.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(SegmentName {
        start_ms,
        duration_ms,
        init: init.to_owned(),
    })
}

/// The UTC date of a Unix time in ms, `YYYY-MM-DD`.
pub(crate) fn date(unix_ms: u64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(unix_ms);
    let mut text = humantime::format_rfc3339_seconds(time).to_string();
    text.truncate(10);
    text
}

/// Unix ms as RFC 3339 with milliseconds (`2026-12-07T04:05:06.789Z`).
pub(crate) fn rfc3339(unix_ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(unix_ms)).to_string()
}

/// An RFC 3339 time (or Unix ms as digits) as Unix ms.
pub(crate) fn parse_time(text: &str) -> Option<u64> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    let time = humantime::parse_rfc3339_weak(text).ok()?;
    let since = time.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since.as_millis()).ok()
}

/// Recorded time ranges `(start_ms, end_ms)` of segments sorted by start: segments closer
/// than `gap_ms` to the range before them join it.
pub(crate) fn merge_ranges(segments: &[SegmentName], gap_ms: u64) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for segment in segments {
        match ranges.last_mut() {
            Some((_, end)) if segment.start_ms <= end.saturating_add(gap_ms) => {
                *end = (*end).max(segment.end_ms());
            }
            _ => ranges.push((segment.start_ms, segment.end_ms())),
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_key_names_its_day_and_parses_back() {
        let segment = SegmentName {
            start_ms: 1_796_616_306_789,
            duration_ms: 10_040,
            init: "0123456789abcdef".into(),
        };
        let key = segment_key("13800138000", 1, &segment);
        assert_eq!(
            key,
            "13800138000/1/2026-12-07/1796616306789-10040-0123456789abcdef.m4s"
        );
        assert_eq!(parse_segment(&key), Some(segment));
        assert_eq!(
            parse_segment("13800138000/1/init/0123456789abcdef.mp4"),
            None
        );
        assert_eq!(
            parse_segment("x/1/2026-12-07/1-2-nothex!!!!!!!!!!.m4s"),
            None
        );
    }

    #[test]
    fn times_parse_as_rfc3339_or_unix_ms() {
        assert_eq!(
            parse_time("2026-12-07T04:05:06.789Z"),
            Some(1_796_616_306_789)
        );
        assert_eq!(parse_time("1796616306789"), Some(1_796_616_306_789));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(rfc3339(1_796_616_306_789), "2026-12-07T04:05:06.789Z");
    }

    #[test]
    fn touching_segments_merge_and_gaps_split() {
        let seg = |start_ms, duration_ms| SegmentName {
            start_ms,
            duration_ms,
            init: String::new(),
        };
        let segments = [
            seg(0, 10_000),
            seg(10_000, 10_000),
            seg(20_500, 5_000),
            seg(40_000, 1_000),
        ];
        assert_eq!(
            merge_ranges(&segments, 1_000),
            vec![(0, 25_500), (40_000, 41_000)]
        );
    }
}
