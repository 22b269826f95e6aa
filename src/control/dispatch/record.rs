//! RECORD requests: who wants which stream recorded until when. Control decides; the
//! recordings run in `output::record`, started and stopped through the [`Recordings`]
//! handle.
//!
//! A RECORD start counts as a requester of the stream like SUBSCRIBE, with a lease of the
//! request's `duration` (the device is pulled and kept until then, or until a stop with the
//! same `client_id`). The recording starts when the stream is live, at the GOP cache's key
//! frame (the lead-up before the request, up to one GOP: `pre_roll`), and stops when its
//! last requester left, unless `record.auto` records the stream anyway.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;
use tracing::info;

use super::Control;
use crate::control::demand::RequesterId;
use crate::control::messages::{ErrorCode, Mode, RecordReply, Reply, Request, RequestError};
use crate::media::{DeviceId, StreamKey};
use crate::output::record::Recordings;

/// Default and longest `duration` of a RECORD request.
const DEFAULT_DURATION: Duration = Duration::from_secs(600);
const MAX_DURATION: Duration = Duration::from_secs(86_400);
/// Longest `pre_roll` a reply's playback range reaches back.
const MAX_PRE_ROLL: Duration = Duration::from_secs(60);

/// The recordings as control sees them.
#[derive(Debug)]
pub(crate) struct RecordControl {
    recordings: Recordings,
    /// Requested recordings: requester → until when.
    wanted: HashMap<StreamKey, HashMap<RequesterId, Instant>>,
}

impl RecordControl {
    pub(crate) fn new(recordings: Recordings) -> RecordControl {
        RecordControl {
            recordings,
            wanted: HashMap::new(),
        }
    }

    /// Whether `key` is being recorded now (for the retained stream status).
    pub(crate) fn is_recording(&self, key: &StreamKey) -> bool {
        self.recordings.is_recording(key)
    }
}

fn duration_field(
    request: &Request,
    value: Option<&str>,
    name: &str,
    default: Duration,
    max: Duration,
) -> Result<Duration, RequestError> {
    let Some(text) = value else {
        return Ok(default);
    };
    let parsed = humantime::parse_duration(text).map_err(|e| RequestError {
        code: ErrorCode::InvalidField,
        message: format!("{name}: {text:?} is not a duration like \"10m\" ({e})"),
        seqid: request.seqid.clone(),
    })?;
    if parsed > max {
        return Err(RequestError {
            code: ErrorCode::InvalidField,
            message: format!("{name}: at most {}", humantime::format_duration(max)),
            seqid: request.seqid.clone(),
        });
    }
    Ok(parsed)
}

impl Control {
    /// `RECORD`: start (a requester for `duration`) or stop.
    pub(super) fn record_request(&mut self, device: &DeviceId, request: &Request) {
        let seqid = self.seqid_of(request);
        let key = request.stream_key(device, Mode::Record);
        let requester =
            RequesterId::Client(request.client_id.clone().unwrap_or_else(|| seqid.clone()));
        let duration = match duration_field(
            request,
            request.duration.as_deref(),
            "duration",
            DEFAULT_DURATION,
            MAX_DURATION,
        ) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => DEFAULT_DURATION,
            Err(error) => return self.reject(error),
        };
        let pre_roll = match duration_field(
            request,
            request.pre_roll.as_deref(),
            "pre_roll",
            Duration::ZERO,
            MAX_PRE_ROLL,
        ) {
            Ok(d) => d,
            Err(error) => return self.reject(error),
        };
        let now_ms = crate::output::record::unix_ms();
        match request.action.as_deref().unwrap_or("start") {
            "start" => {
                let (state, actions) = match self.want(&key, &requester, &seqid, request) {
                    Ok(wanted) => wanted,
                    Err(error) => return self.reject(error),
                };
                let until = Instant::now() + duration;
                self.demand.lease_until(&key, &requester, until.into_std());
                self.record
                    .wanted
                    .entry(key.clone())
                    .or_default()
                    .insert(requester.clone(), until);
                if self.hub.is_live(&key) && self.record.recordings.record(&key) {
                    self.publish_stream_status(&key, true);
                }
                info!(stream = %key, requester = ?requester, ?duration, state, "record requested");
                let from_ms =
                    now_ms.saturating_sub(u64::try_from(pre_roll.as_millis()).unwrap_or(0));
                let until_ms =
                    now_ms.saturating_add(u64::try_from(duration.as_millis()).unwrap_or(0));
                self.reply_record(&seqid, &key, state, "start", Some((from_ms, until_ms)));
                self.perform(actions);
            }
            "stop" => {
                let had = self
                    .record
                    .wanted
                    .get_mut(&key)
                    .is_some_and(|r| r.remove(&requester).is_some());
                if !had {
                    return self.reject(RequestError {
                        code: ErrorCode::NotSubscribed,
                        message: format!(
                            "{requester:?} records no {key}; start with the same client_id first"
                        ),
                        seqid: Some(seqid),
                    });
                }
                self.demand
                    .release(&key, &requester, Instant::now().into_std());
                self.record_prune();
                info!(stream = %key, requester = ?requester, "record stopped");
                let from_ms =
                    now_ms.saturating_sub(u64::try_from(MAX_DURATION.as_millis()).unwrap_or(0));
                self.reply_record(&seqid, &key, "stopped", "stop", Some((from_ms, now_ms)));
            }
            other => self.reject(RequestError {
                code: ErrorCode::InvalidField,
                message: format!("action: {other:?}; expected \"start\" or \"stop\""),
                seqid: Some(seqid),
            }),
        }
    }

    /// A stream came up: it is recorded if a RECORD request wants it.
    pub(super) fn record_stream_up(&mut self, key: &StreamKey) {
        if self.record.recordings.is_auto(key)
            || self.record.wanted.get(key).is_some_and(|r| !r.is_empty())
        {
            self.record.recordings.record(key);
        }
    }

    /// Drops requests whose duration ran out or whose lease the demand dropped; stops the
    /// recordings nobody wants any more (unless `record.auto` names them).
    pub(super) fn record_prune(&mut self) {
        let now = Instant::now();
        let demand = &self.demand;
        let mut stop = Vec::new();
        self.record.wanted.retain(|key, requesters| {
            requesters.retain(|requester, until| *until > now && demand.holds(key, requester));
            if requesters.is_empty() {
                stop.push(key.clone());
                false
            } else {
                true
            }
        });
        for key in stop {
            if self.record.recordings.stop(&key) {
                info!(stream = %key, "record: the last requester left");
                if self.hub.is_live(&key) {
                    self.publish_stream_status(&key, true);
                }
            }
        }
    }

    fn reply_record(
        &self,
        seqid: &str,
        key: &StreamKey,
        state: &str,
        action: &str,
        range_ms: Option<(u64, u64)>,
    ) {
        use crate::output::record::rfc3339;
        let (from_ms, to_ms) = range_ms.unwrap_or((0, 0));
        let query = format!("from={}&to={}", rfc3339(from_ms), rfc3339(to_ms));
        let base = format!(
            "{}://{}:{}",
            self.ctx.http_scheme, self.ctx.public_host, self.ctx.http_port
        );
        let name = key.name();
        let plays = &self.ctx.plays;
        let record = RecordReply {
            action: action.to_owned(),
            since: (action == "start").then(|| rfc3339(from_ms)),
            until: (action == "start").then(|| rfc3339(to_ms)),
            hls: plays.sign(&format!("{base}/record/{name}.m3u8?{query}")),
            mp4: plays.sign(&format!("{base}/record/{name}.mp4?{query}")),
            api: format!(
                "{base}/api/records?device={}&channel={}&{query}",
                key.device, key.channel.0
            ),
        };
        let reply = Reply {
            seqid: seqid.to_owned(),
            mode: "OK".to_owned(),
            device: Some(key.device.to_string()),
            channel: Some(key.channel.0),
            kind: Some(key.kind),
            state: Some(state.to_owned()),
            urls: Some(self.signed_urls(key)),
            lease_secs: None,
            rtmp: None,
            record: Some(record),
            code: None,
            message: None,
        };
        self.publish_json(&self.topics.reply(seqid, "OK"), &reply, false);
    }
}
