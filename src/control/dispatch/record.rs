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

use tokio::time::Instant;
use tracing::info;

use super::Control;
use crate::control::command::{MAX_RECORD_DURATION, RecordAction};
use crate::control::demand::RequesterId;
use crate::control::messages::{ErrorCode, RecordReply, Reply, RequestError};
use crate::media::StreamKey;
use crate::output::record::Recordings;

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

impl Control {
    /// `RECORD`: start (a requester for `duration`) or stop.
    pub(super) fn record_request(
        &mut self,
        action: RecordAction,
        requester: &RequesterId,
        seqid: &str,
    ) {
        let now_ms = crate::output::record::unix_ms();
        match action {
            RecordAction::Start {
                wanted,
                duration,
                pre_roll,
            } => {
                let key = wanted.key.clone();
                let (state, actions) = self.want(wanted, requester, seqid);
                let until = Instant::now() + duration;
                self.demand.lease_until(&key, requester, until.into_std());
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
                self.reply_record(seqid, &key, state, "start", (from_ms, until_ms));
                self.perform(actions);
            }
            RecordAction::Stop(key) => {
                let had = self
                    .record
                    .wanted
                    .get_mut(&key)
                    .is_some_and(|r| r.remove(requester).is_some());
                if !had {
                    return self.reject(RequestError {
                        code: ErrorCode::NotSubscribed,
                        message: format!(
                            "{requester:?} records no {key}; start with the same client_id first"
                        ),
                        seqid: Some(seqid.to_owned()),
                    });
                }
                self.demand
                    .release(&key, requester, Instant::now().into_std());
                self.record_prune();
                info!(stream = %key, requester = ?requester, "record stopped");
                let from_ms = now_ms
                    .saturating_sub(u64::try_from(MAX_RECORD_DURATION.as_millis()).unwrap_or(0));
                self.reply_record(seqid, &key, "stopped", "stop", (from_ms, now_ms));
            }
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
        &mut self,
        seqid: &str,
        key: &StreamKey,
        state: &str,
        action: &str,
        (from_ms, to_ms): (u64, u64),
    ) {
        use crate::output::record::rfc3339;
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
        self.note_outcome("ok");
        let topic = self.topics.reply(seqid, "OK");
        self.outbox.push_json(&topic, &reply, false);
    }
}
