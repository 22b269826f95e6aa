//! Playback of recordings through the HTTP listener: the recorded ranges (`/api/records`),
//! an HLS VOD playlist (`/record/{device}_{channel}.m3u8`), one fragmented MP4 of a range
//! with `Range` support (`/record/{device}_{channel}.mp4`) and the stored objects
//! (`/record/o/{key}`). The `/record/` URLs are signed like play URLs when
//! `http.play_secret` is set; the playlist signs the URLs it lists.

use std::fmt::Write as _;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use serde::{Deserialize, Serialize};

use super::Recordings;
use super::keys::{self, DAY_MS, SegmentName};
use crate::media::DeviceId;

/// Segments closer than this join one recorded range.
const RANGE_GAP_MS: u64 = 1_000;
/// Longest time range one request may ask for (days listed).
const MAX_RANGE_MS: u64 = 31 * DAY_MS;
/// How far before a range the listing starts, at least (a range starting after a
/// segment's start still finds it); twice `record.segment` when that is longer.
const SEGMENT_SLACK_MS: u64 = 10 * 60 * 1000;
/// Without `from`, this much before `to`.
const DEFAULT_SPAN_MS: u64 = DAY_MS;

pub(super) fn routes(recordings: Recordings) -> Router {
    Router::new()
        .route("/record/o/{*key}", get(object))
        .route("/record/{file}", get(record_file))
        .with_state(recordings)
}

pub(super) fn api_routes(recordings: Recordings) -> Router {
    Router::new()
        .route("/api/records", get(list_records))
        .route("/api/records/status", get(status))
        .with_state(recordings)
}

/// `?device=&channel=&from=&to=`
#[derive(Debug, Deserialize)]
struct RangeQuery {
    device: Option<String>,
    channel: Option<u8>,
    from: Option<String>,
    to: Option<String>,
}

/// A stored segment found for a range.
#[derive(Debug, Clone)]
struct Found {
    name: SegmentName,
    key: ObjectPath,
    size: u64,
}

/// A request's stream and time range.
#[derive(Debug)]
struct Wanted {
    device: String,
    channel: u8,
    from_ms: u64,
    to_ms: u64,
}

/// A request refused, with its status and why.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.status, format!("{}\n", self.message)).into_response()
    }
}

fn bad_request(message: impl Into<String>) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        message: message.into(),
    }
}

fn parse_range(
    device: &str,
    channel: u8,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<Wanted, Refusal> {
    let device = DeviceId::parse(device)
        .map_err(|e| bad_request(format!("device: {e}")))?
        .to_string();
    let time = |text: Option<&str>, name: &str| -> Result<Option<u64>, Refusal> {
        text.map(|t| {
            keys::parse_time(t).ok_or_else(|| {
                bad_request(format!("{name}: {t:?} is not an RFC 3339 time or Unix ms"))
            })
        })
        .transpose()
    };
    let to_ms = time(to, "to")?.unwrap_or_else(super::unix_ms);
    let from_ms = time(from, "from")?.unwrap_or(to_ms.saturating_sub(DEFAULT_SPAN_MS));
    if from_ms >= to_ms {
        return Err(bad_request("from must be before to"));
    }
    if to_ms - from_ms > MAX_RANGE_MS {
        return Err(bad_request("a range may span 31 days at most"));
    }
    Ok(Wanted {
        device,
        channel,
        from_ms,
        to_ms,
    })
}

/// The segments of `wanted` in the store, by start time: one listing per UTC day.
async fn find(recordings: &Recordings, wanted: &Wanted) -> Result<Vec<Found>, Refusal> {
    let store = recordings.inner.store.as_ref();
    let segment_ms =
        u64::try_from(recordings.inner.settings.segment.as_millis()).unwrap_or(u64::MAX);
    let slack = SEGMENT_SLACK_MS.max(segment_ms.saturating_mul(2));
    let mut found = Vec::new();
    let first_day = wanted.from_ms.saturating_sub(slack) / DAY_MS;
    let last_day = wanted.to_ms / DAY_MS;
    for day in first_day..=last_day {
        let prefix = ObjectPath::from(keys::day_prefix(
            &wanted.device,
            wanted.channel,
            day * DAY_MS,
        ));
        let mut listing = store.list(Some(&prefix));
        while let Some(item) = listing.next().await {
            if let Err(object_store::Error::NotFound { .. }) = item {
                // a folder store's day that has no folder
                continue;
            }
            let meta = item.map_err(|error| {
                tracing::warn!(%error, "record: listing the store");
                Refusal {
                    status: StatusCode::BAD_GATEWAY,
                    message: format!("the store could not be listed: {error}"),
                }
            })?;
            let Some(name) = keys::parse_segment(meta.location.as_ref()) else {
                continue;
            };
            if name.end_ms() > wanted.from_ms && name.start_ms < wanted.to_ms {
                found.push(Found {
                    name,
                    key: meta.location,
                    size: meta.size,
                });
            }
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// One recorded range in `/api/records`.
#[derive(Debug, Serialize)]
struct RangeOut {
    from: String,
    to: String,
    from_ms: u64,
    to_ms: u64,
    duration_ms: u64,
    hls: String,
    mp4: String,
}

/// The `/api/records` answer.
#[derive(Debug, Serialize)]
struct RecordsOut {
    device: String,
    channel: u8,
    /// Since when the stream is being recorded (RFC 3339), if it is now.
    recording_since: Option<String>,
    segments: usize,
    ranges: Vec<RangeOut>,
}

async fn list_records(
    State(recordings): State<Recordings>,
    Query(query): Query<RangeQuery>,
) -> Response {
    let (Some(device), Some(channel)) = (query.device.as_deref(), query.channel) else {
        return bad_request("device and channel are required").into_response();
    };
    let wanted = match parse_range(device, channel, query.from.as_deref(), query.to.as_deref()) {
        Ok(wanted) => wanted,
        Err(refusal) => return refusal.into_response(),
    };
    let found = match find(&recordings, &wanted).await {
        Ok(found) => found,
        Err(refusal) => return refusal.into_response(),
    };
    let names: Vec<SegmentName> = found.iter().map(|f| f.name.clone()).collect();
    let plays = &recordings.inner.plays;
    let ranges = keys::merge_ranges(&names, RANGE_GAP_MS)
        .into_iter()
        .map(|(from_ms, to_ms)| {
            let query = format!(
                "from={}&to={}",
                keys::rfc3339(from_ms),
                keys::rfc3339(to_ms)
            );
            let name = format!("{}_{}", wanted.device, wanted.channel);
            RangeOut {
                from: keys::rfc3339(from_ms),
                to: keys::rfc3339(to_ms),
                from_ms,
                to_ms,
                duration_ms: to_ms - from_ms,
                hls: plays.sign(&format!("/record/{name}.m3u8?{query}")),
                mp4: plays.sign(&format!("/record/{name}.mp4?{query}")),
            }
        })
        .collect();
    let key = crate::media::StreamKey::new(
        DeviceId::parse(&wanted.device).unwrap_or_else(|_| unreachable_device()),
        crate::media::Channel(wanted.channel),
        crate::media::StreamKind::Live,
    );
    Json(RecordsOut {
        recording_since: recordings.recording_since(&key).map(keys::rfc3339),
        device: wanted.device,
        channel: wanted.channel,
        segments: names.len(),
        ranges,
    })
    .into_response()
}

/// The `/api/records/status` answer.
#[derive(Debug, Serialize)]
struct StatusOut<'a> {
    /// The streams being recorded now (`live/{device}_{channel}`).
    recording: Vec<String>,
    /// The uploader's counters.
    uploads: &'a super::UploadStats,
}

async fn status(State(recordings): State<Recordings>) -> Response {
    let mut recording: Vec<String> = recordings
        .active()
        .keys()
        .map(ToString::to_string)
        .collect();
    recording.sort();
    Json(StatusOut {
        recording,
        uploads: recordings.stats(),
    })
    .into_response()
}

/// `parse_range` parsed the device already.
fn unreachable_device() -> DeviceId {
    unreachable!("a device id parsed once parses again")
}

/// `{device}_{channel}.m3u8` or `.mp4`.
async fn record_file(
    State(recordings): State<Recordings>,
    Path(file): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<RangeQuery>,
) -> Response {
    if let Err(denied) = recordings.inner.plays.check(uri.path(), uri.query()) {
        return (StatusCode::FORBIDDEN, format!("{denied}\n")).into_response();
    }
    let (stem, mp4) = if let Some(stem) = file.strip_suffix(".m3u8") {
        (stem, false)
    } else if let Some(stem) = file.strip_suffix(".mp4") {
        (stem, true)
    } else {
        return (
            StatusCode::NOT_FOUND,
            "not a recording: use .m3u8 or .mp4\n",
        )
            .into_response();
    };
    let Some((device, channel)) = stem
        .rsplit_once('_')
        .and_then(|(d, c)| Some((d, c.parse::<u8>().ok()?)))
    else {
        return bad_request("the name must be {device}_{channel}").into_response();
    };
    let wanted = match parse_range(device, channel, query.from.as_deref(), query.to.as_deref()) {
        Ok(wanted) => wanted,
        Err(refusal) => return refusal.into_response(),
    };
    let found = match find(&recordings, &wanted).await {
        Ok(found) => found,
        Err(refusal) => return refusal.into_response(),
    };
    if found.is_empty() {
        return (StatusCode::NOT_FOUND, "nothing recorded in this range\n").into_response();
    }
    if mp4 {
        download(&recordings, &wanted, &found, &headers).await
    } else {
        playlist(&recordings, &wanted, &found)
    }
}

/// The HLS VOD playlist of `found`: a new `EXT-X-MAP` after a discontinuity, which a codec
/// change or a gap makes.
fn playlist(recordings: &Recordings, wanted: &Wanted, found: &[Found]) -> Response {
    let plays = &recordings.inner.plays;
    let object_url = |key: &str| plays.sign_as(&format!("o/{key}"), &format!("/record/o/{key}"));
    let target = found
        .iter()
        .map(|f| f.name.duration_ms.div_ceil(1000))
        .max()
        .unwrap_or(1);
    let mut out = String::with_capacity(128 + found.len() * 160);
    out.push_str(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n",
    );
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
    out.push_str("#EXT-X-MEDIA-SEQUENCE:0\n");
    let mut previous: Option<&SegmentName> = None;
    for f in found {
        let new_init = previous.is_none_or(|p| p.init != f.name.init);
        let gap = previous.is_some_and(|p| f.name.start_ms > p.end_ms() + RANGE_GAP_MS);
        if previous.is_some() && (new_init || gap) {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if new_init {
            let init = keys::init_key(&wanted.device, wanted.channel, &f.name.init);
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", object_url(&init));
        }
        if previous.is_none() || new_init || gap {
            let _ = writeln!(
                out,
                "#EXT-X-PROGRAM-DATE-TIME:{}",
                keys::rfc3339(f.name.start_ms)
            );
        }
        let _ = writeln!(out, "#EXTINF:{:.3},", f.name.duration_ms as f64 / 1000.0);
        let _ = writeln!(out, "{}", object_url(f.key.as_ref()));
        previous = Some(&f.name);
    }
    out.push_str("#EXT-X-ENDLIST\n");
    (
        [
            (header::CONTENT_TYPE, "application/vnd.apple.mpegurl"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        out,
    )
        .into_response()
}

/// One stored object (init or segment).
async fn object(
    State(recordings): State<Recordings>,
    Path(key): Path<String>,
    uri: Uri,
) -> Response {
    if let Err(denied) = recordings.inner.plays.check(uri.path(), uri.query()) {
        return (StatusCode::FORBIDDEN, format!("{denied}\n")).into_response();
    }
    let content_type = if key.ends_with(".m4s") {
        "video/iso.segment"
    } else if key.ends_with(".mp4") {
        "video/mp4"
    } else {
        return (StatusCode::NOT_FOUND, "not a recording object\n").into_response();
    };
    let Ok(path) = ObjectPath::parse(&key) else {
        return bad_request("bad object key").into_response();
    };
    match recordings.inner.store.get(&path).await {
        Ok(result) => {
            let len = result.meta.size;
            let body = Body::from_stream(result.into_stream());
            (
                [
                    (header::CONTENT_TYPE, content_type.to_owned()),
                    (header::CONTENT_LENGTH, len.to_string()),
                    (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*".to_owned()),
                    (header::CACHE_CONTROL, "max-age=86400, immutable".to_owned()),
                ],
                body,
            )
                .into_response()
        }
        Err(object_store::Error::NotFound { .. }) => {
            (StatusCode::NOT_FOUND, "no such object\n").into_response()
        }
        Err(error) => (
            StatusCode::BAD_GATEWAY,
            format!("the store failed: {error}\n"),
        )
            .into_response(),
    }
}

/// One fMP4 of the range: the first segment's init, then every segment of that
/// configuration (a later configuration's segments are left out: one file has one init).
/// `Content-Length` and a single `Range` (206) are supported.
async fn download(
    recordings: &Recordings,
    wanted: &Wanted,
    found: &[Found],
    headers: &HeaderMap,
) -> Response {
    let store = &recordings.inner.store;
    let Some(first) = found.first() else {
        return (StatusCode::NOT_FOUND, "nothing recorded in this range\n").into_response();
    };
    let init = ObjectPath::from(keys::init_key(
        &wanted.device,
        wanted.channel,
        &first.name.init,
    ));
    let init_size = match store.head(&init).await {
        Ok(meta) => meta.size,
        Err(error) => {
            return (
                StatusCode::BAD_GATEWAY,
                format!("the init segment: {error}\n"),
            )
                .into_response();
        }
    };
    let mut parts: Vec<(ObjectPath, u64)> = vec![(init, init_size)];
    parts.extend(
        found
            .iter()
            .filter(|f| f.name.init == first.name.init)
            .map(|f| (f.key.clone(), f.size)),
    );
    let total: u64 = parts.iter().map(|(_, size)| size).sum();
    let range = match headers
        .get(header::RANGE)
        .map(|v| parse_byte_range(v.as_bytes(), total))
    {
        None => None,
        Some(Some(range)) => Some(range),
        Some(None) => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{total}"))],
            )
                .into_response();
        }
    };
    let (start, end) = range.unwrap_or((0, total));
    // the parts' byte ranges that fall within [start, end)
    let mut pieces = Vec::new();
    let mut at = 0u64;
    for (key, size) in parts {
        let (part_start, part_end) = (at, at + size);
        at = part_end;
        let lo = start.max(part_start);
        let hi = end.min(part_end);
        if lo < hi {
            pieces.push((key, lo - part_start..hi - part_start));
        }
    }
    let store = std::sync::Arc::clone(store);
    let body = futures_util::stream::iter(pieces).then(move |(key, range)| {
        let store = std::sync::Arc::clone(&store);
        async move { store.get_range(&key, range).await }
    });
    let name = format!(
        "{}_{}_{}.mp4",
        wanted.device,
        wanted.channel,
        keys::rfc3339(first.name.start_ms).replace(':', "")
    );
    let mut response = Response::new(Body::from_stream(body));
    let h = response.headers_mut();
    let value = |text: String| {
        axum::http::HeaderValue::try_from(text).unwrap_or(axum::http::HeaderValue::from_static(""))
    };
    h.insert(header::CONTENT_TYPE, value("video/mp4".into()));
    h.insert(header::ACCEPT_RANGES, value("bytes".into()));
    h.insert(header::CONTENT_LENGTH, value((end - start).to_string()));
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value("*".into()));
    h.insert(
        header::CONTENT_DISPOSITION,
        value(format!("attachment; filename=\"{name}\"")),
    );
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        response.headers_mut().insert(
            header::CONTENT_RANGE,
            value(format!("bytes {start}-{}/{total}", end - 1)),
        );
    }
    response
}

/// A single `bytes=` range of a body of `total` bytes as `[start, end)`; `None` when it
/// cannot be satisfied (or names several ranges, which this server does not serve).
fn parse_byte_range(value: &[u8], total: u64) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let spec = text.strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (start, end) = if first.is_empty() {
        let suffix: u64 = last.parse().ok()?;
        (total.saturating_sub(suffix), total)
    } else {
        let start: u64 = first.parse().ok()?;
        let end = if last.is_empty() {
            total
        } else {
            last.parse::<u64>().ok()?.saturating_add(1).min(total)
        };
        (start, end)
    };
    (start < end).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::parse_byte_range;

    #[test]
    fn byte_ranges_parse_as_rfc_9110_says() {
        assert_eq!(parse_byte_range(b"bytes=0-99", 1000), Some((0, 100)));
        assert_eq!(parse_byte_range(b"bytes=500-", 1000), Some((500, 1000)));
        assert_eq!(parse_byte_range(b"bytes=-100", 1000), Some((900, 1000)));
        assert_eq!(parse_byte_range(b"bytes=900-5000", 1000), Some((900, 1000)));
        assert_eq!(parse_byte_range(b"bytes=1000-", 1000), None);
        assert_eq!(parse_byte_range(b"bytes=0-1,5-6", 1000), None);
        assert_eq!(parse_byte_range(b"items=0-1", 1000), None);
    }
}
