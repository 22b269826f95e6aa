//! RTMP requests: who wants which stream pushed where, and the push states for the
//! retained stream status. Control decides; the pushes themselves run in
//! `output::rtmp_push`, started and stopped through the [`RtmpPusher`] handle.
//!
//! An RTMP request counts as a requester of the stream like SUBSCRIBE (the device is asked
//! to push if it is not live); the push starts when the stream is live and stops when its
//! last requester leaves (UNSUBSCRIBE with the same `client_id`, or the lease running out).
//! With `rtmp.auto_push`, every live stream is pushed whether requested or not.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use tokio::time::Instant;
use tracing::{info, warn};

use super::Control;
use crate::config::RtmpSettings;
use crate::control::command::Wanted as WantedStream;
use crate::control::demand::RequesterId;
use crate::control::messages::{ErrorCode, Reply, RequestError, RtmpReply};
use crate::media::{StreamKey, StreamKind};
use crate::output::rtmp_push::{PushEvent, PushState, RtmpPusher, RtmpTarget};

/// Most push states kept for the stream status (one per stream pushed or failed).
const MAX_STATES: usize = 100_000;

/// The RTMP side as control sees it.
#[derive(Debug)]
pub(crate) struct RtmpControl {
    pusher: RtmpPusher,
    settings: RtmpSettings,
    /// Requested pushes: target and requesters (with the seqid of their last request).
    wanted: HashMap<StreamKey, Wanted>,
    /// The last state of each push, for the retained stream status.
    states: HashMap<StreamKey, PushStatus>,
}

#[derive(Debug)]
struct Wanted {
    url: String,
    requesters: HashMap<RequesterId, String>,
}

/// A push in the retained stream status.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PushStatus {
    url: String,
    #[serde(flatten)]
    state: PushState,
}

impl RtmpControl {
    pub(crate) fn new(pusher: RtmpPusher, settings: RtmpSettings) -> RtmpControl {
        RtmpControl {
            pusher,
            settings,
            wanted: HashMap::new(),
            states: HashMap::new(),
        }
    }

    /// The push state of `key` for its retained status.
    pub(crate) fn status(&self, key: &StreamKey) -> Option<PushStatus> {
        self.states.get(key).cloned()
    }

    /// The configured target of `key`.
    fn template_url(&self, key: &StreamKey) -> String {
        let template = match key.kind {
            StreamKind::Live => &self.settings.live_url,
            StreamKind::Playback => &self.settings.playback_url,
        };
        fill(template, key, None)
    }

    /// The play URLs of a push of `key` to `target`, signed over `/{app}/{stream}` (the
    /// path the SRS bridge checks on on_play, whatever the URL's own path) when plays need
    /// a signature.
    fn play_urls(
        &self,
        key: &StreamKey,
        target: &RtmpTarget,
        plays: &crate::auth::PlayAccess,
    ) -> BTreeMap<String, String> {
        let stream_path = format!("/{}/{}", target.app, target.stream_name());
        self.settings
            .play_urls
            .iter()
            .map(|(name, template)| {
                let url = fill(template, key, Some(target));
                (name.clone(), plays.sign_as(&url, &stream_path))
            })
            .collect()
    }

    /// Starts pushing `key` to `url` (logged, not fatal, if it cannot).
    fn start(&self, key: &StreamKey, url: &str) {
        if let Err(error) = self.pusher.start(key, url) {
            warn!(stream = %key, url, %error, "rtmp push not started");
        }
    }
}

impl Control {
    /// `RTMP`: push the stream; the requester counts as one of the stream's.
    pub(super) fn rtmp_request(
        &mut self,
        wanted: WantedStream,
        url: Option<String>,
        requester: &RequesterId,
        seqid: &str,
    ) {
        let key = wanted.key.clone();
        let url = url.unwrap_or_else(|| self.rtmp.template_url(&key));
        let target = match RtmpTarget::parse(&url) {
            Ok(target) => target,
            Err(error) => {
                return self.reject(RequestError {
                    code: ErrorCode::InvalidField,
                    message: format!("url: {error}"),
                    seqid: Some(seqid.to_owned()),
                });
            }
        };
        let (state, actions) = self.want(wanted, requester, seqid);
        let wanted = self.rtmp.wanted.entry(key.clone()).or_insert(Wanted {
            url: url.clone(),
            requesters: HashMap::new(),
        });
        // the latest request says where
        wanted.url.clone_from(&url);
        wanted
            .requesters
            .insert(requester.clone(), seqid.to_owned());
        if self.hub.is_live(&key) {
            self.rtmp.start(&key, &url);
        }
        info!(stream = %key, requester = ?requester, url, state, "rtmp push requested");
        let rtmp = RtmpReply {
            play_urls: self.rtmp.play_urls(&key, &target, &self.ctx.plays),
            url,
            error: None,
        };
        let lease = Some(self.ctx.demand.lease.as_secs());
        self.reply_ok_with(seqid, &key, Some(state), lease, Some(rtmp));
        self.perform(actions);
    }

    /// A requester released `key` (UNSUBSCRIBE): its push stops if nobody else wants it.
    pub(super) fn rtmp_release(&mut self, key: &StreamKey, requester: &RequesterId) {
        if let Some(wanted) = self.rtmp.wanted.get_mut(key) {
            wanted.requesters.remove(requester);
        }
        self.rtmp_prune();
    }

    /// Drops requesters whose demand lease is gone (expired, or failed with the device)
    /// and stops pushes nobody wants any more.
    pub(super) fn rtmp_prune(&mut self) {
        let demand = &self.demand;
        let mut unwanted = Vec::new();
        for (key, wanted) in &mut self.rtmp.wanted {
            wanted
                .requesters
                .retain(|requester, _| demand.holds(key, requester));
            if wanted.requesters.is_empty() {
                unwanted.push(key.clone());
            }
        }
        for key in unwanted {
            self.rtmp.wanted.remove(&key);
            let auto = self.rtmp.settings.auto_push && self.hub.is_live(&key);
            if !auto && self.rtmp.pusher.stop(&key) {
                info!(stream = %key, "rtmp push no longer wanted");
            }
        }
    }

    /// A stream came up: pushed if requested, or always with `auto_push`.
    pub(super) fn rtmp_stream_up(&mut self, key: &StreamKey) {
        let url = match self.rtmp.wanted.get(key) {
            Some(wanted) => wanted.url.clone(),
            None if self.rtmp.settings.auto_push => self.rtmp.template_url(key),
            None => return,
        };
        self.rtmp.start(key, &url);
    }

    /// A push changed state: the retained status says so; a push that gave up is answered
    /// with ERROR to its requesters, who are released (the device stops if nobody else
    /// wants the stream).
    pub(super) fn handle_push_event(&mut self, event: PushEvent) {
        let PushEvent { key, url, state } = event;
        match &state {
            PushState::Stopped { .. } => {
                self.rtmp.states.remove(&key);
            }
            _ => {
                if self.rtmp.states.len() < MAX_STATES || self.rtmp.states.contains_key(&key) {
                    self.rtmp.states.insert(
                        key.clone(),
                        PushStatus {
                            url: url.clone(),
                            state: state.clone(),
                        },
                    );
                }
            }
        }
        let mut by_state = [0; 4];
        for status in self.rtmp.states.values() {
            let at = match status.state {
                PushState::Connecting { .. } => 0,
                PushState::Publishing => 1,
                PushState::Retrying { .. } => 2,
                PushState::Failed { .. } | PushState::Stopped { .. } => 3,
            };
            by_state[at] += 1;
        }
        self.ctx.metrics.set_rtmp_pushes(by_state);
        // a push that stopped for a newer one (another URL) changes nothing visible
        if matches!(state, PushState::Stopped { .. }) && self.rtmp.pusher.target(&key).is_some() {
            return;
        }
        self.publish_stream_status(&key, self.hub.is_live(&key));
        if let PushState::Failed {
            attempts,
            error,
            message,
        } = state
        {
            self.rtmp_failed(&key, &url, attempts, error, &message);
        }
    }

    fn rtmp_failed(
        &mut self,
        key: &StreamKey,
        url: &str,
        attempts: u32,
        error: crate::output::rtmp_push::PushErrorKind,
        message: &str,
    ) {
        let Some(wanted) = self.rtmp.wanted.remove(key) else {
            return;
        };
        let error_word = serde_json::to_value(error)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned));
        let now = Instant::now().into_std();
        for (requester, seqid) in wanted.requesters {
            let mut reply = Reply::error(
                &seqid,
                "ERROR",
                ErrorCode::RtmpUnavailable,
                format!("the push of {key} to {url} failed {attempts} times in a row: {message}"),
            );
            reply.device = Some(key.device.to_string());
            reply.channel = Some(key.channel.0);
            reply.kind = Some(key.kind);
            reply.rtmp = Some(RtmpReply {
                url: url.to_owned(),
                play_urls: BTreeMap::new(),
                error: error_word.clone(),
            });
            self.outbox
                .push_json(&self.topics.reply(&seqid, "ERROR"), &reply, false);
            self.demand.release(key, &requester, now);
        }
    }
}

/// Fills a URL template: `{device}`, `{channel}`, `{kind}`, and with a target `{app}` and
/// `{stream}` (its name without the query).
fn fill(template: &str, key: &StreamKey, target: Option<&RtmpTarget>) -> String {
    let mut url = template
        .replace("{device}", &key.device.to_string())
        .replace("{channel}", &key.channel.to_string())
        .replace("{kind}", key.kind.as_str());
    if let Some(target) = target {
        url = url
            .replace("{app}", &target.app)
            .replace("{stream}", target.stream_name());
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{Channel, DeviceId};

    #[test]
    fn templates_fill_from_the_stream_and_the_target() {
        let key = StreamKey::new(
            DeviceId::parse("013800138000").unwrap(),
            Channel(2),
            StreamKind::Playback,
        );
        let url = fill("rtmp://srs:1935/{kind}/{device}_{channel}", &key, None);
        assert_eq!(url, "rtmp://srs:1935/playback/13800138000_2");
        let target = RtmpTarget::parse("rtmp://srs/app1/s1?token=1").unwrap();
        assert_eq!(
            fill("http://srs:8080/{app}/{stream}.flv", &key, Some(&target)),
            "http://srs:8080/app1/s1.flv"
        );
    }
}
