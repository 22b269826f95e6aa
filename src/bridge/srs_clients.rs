//! The task that owns the SRS clients: it takes the hooks `srs_hooks.rs` checked, keeps
//! who plays what (`sessions.rs`), asks SRS's API about viewers whose lease is half gone
//! (`srs_api.rs`), and publishes the requests that follow, per client:
//! - on_play: the RTMP request (`bridge.push_url` set: the gateway pushes the stream to SRS
//!   and the client is its requester) or SUBSCRIBE/PLAYBACK, client id
//!   `{client_prefix}{client_id}`; a renewed on_play, or SRS saying the client still
//!   plays, renews it;
//! - on_stop, or SRS no longer having the client: UNSUBSCRIBE with the same client id, once;
//! - on_unpublish while clients remain: the RTMP request again (the push restarts).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;

use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::sessions::{Sessions, Want};
use super::srs_api;
use super::srs_hooks::HookContext;
use crate::config::BridgeSettings;
use crate::media::{StreamKey, StreamKind};

/// Most SRS clients remembered at once.
const MAX_CLIENTS: usize = 100_000;

/// SRS API checks running at once.
const MAX_CHECKS: usize = 256;

/// A checked hook for the task.
#[derive(Debug)]
pub(super) enum Hook {
    Play {
        client: String,
        key: StreamKey,
        stream: PlayedStream,
    },
    Stop {
        client: String,
    },
    Unpublish {
        key: StreamKey,
    },
}

/// What the requests about a stream need besides its key.
#[derive(Debug, Clone)]
pub(super) struct PlayedStream {
    /// SRS's address (the hook's source), app and stream name: the push URL.
    pub(super) srs: IpAddr,
    pub(super) app: String,
    pub(super) stream: String,
    /// Playback fields from the play URL's query.
    pub(super) fields: Map<String, Value>,
}

/// The task that owns the SRS clients and publishes their requests.
struct HookTask {
    ctx: HookContext,
    sessions: Sessions,
    /// Per stream with clients: what its requests need (push URL, playback fields).
    streams: HashMap<StreamKey, PlayedStream>,
    push_url: String,
    srs_api: String,
    client_prefix: String,
    sequence: u64,
}

/// What SRS said about a client.
struct Check {
    client: String,
    key: StreamKey,
    plays: Result<bool, srs_api::ApiError>,
}

/// The task's body: takes hooks from `hooks_rx` until `cancel`.
pub(super) fn run(
    settings: &BridgeSettings,
    ctx: HookContext,
    hooks_rx: mpsc::Receiver<Hook>,
    cancel: CancellationToken,
) -> impl Future<Output = ()> + use<> {
    let task = HookTask {
        sessions: Sessions::new(ctx.lease, MAX_CLIENTS),
        streams: HashMap::new(),
        push_url: settings.push_url.clone(),
        srs_api: settings.srs_api.clone(),
        client_prefix: settings.client_prefix.clone(),
        sequence: 0,
        ctx,
    };
    task.run(hooks_rx, cancel)
}

impl HookTask {
    async fn run(mut self, mut hooks_rx: mpsc::Receiver<Hook>, cancel: CancellationToken) {
        let mut checks: JoinSet<Check> = JoinSet::new();
        loop {
            let wake = if self.srs_api.is_empty() {
                None
            } else {
                self.sessions.poll_timeout()
            };
            tokio::select! {
                () = cancel.cancelled() => break,
                hook = hooks_rx.recv() => match hook {
                    Some(hook) => self.handle(hook),
                    None => break,
                },
                () = sleep_until_opt(wake) => self.ask_srs(&mut checks),
                Some(done) = checks.join_next() => match done {
                    Ok(check) => self.checked(check),
                    Err(error) => warn!(%error, "an SRS API check failed to run"),
                },
            }
        }
    }

    /// Asks SRS about every client whose lease is half gone (at most [`MAX_CHECKS`] at
    /// once; the others' leases run).
    fn ask_srs(&mut self, checks: &mut JoinSet<Check>) {
        let now = Instant::now().into_std();
        for (client, key) in self.sessions.due(now) {
            let Some(stream) = self.streams.get(&key) else {
                continue;
            };
            if checks.len() >= MAX_CHECKS {
                warn!(%client, "too many SRS API checks at once; this client's lease runs");
                continue;
            }
            let api = fill(&self.srs_api, stream);
            checks.spawn(async move {
                let plays = srs_api::still_plays(&api, &client).await;
                Check { client, key, plays }
            });
        }
    }

    /// SRS's answer about a client: renew it, end it, or (no answer) let its lease run.
    fn checked(&mut self, check: Check) {
        let now = Instant::now().into_std();
        let mut wants = Vec::new();
        match check.plays {
            Ok(true) if self.sessions.holds(&check.client, &check.key) => {
                debug!(client = %check.client, "SRS client still plays; renewed");
                // only a client already in the table: this cannot hit the bound
                let _ = self
                    .sessions
                    .play(&check.client, check.key, now, &mut wants);
            }
            Ok(true) => {}
            Ok(false) => {
                if let Some(want) = self.sessions.stop(&check.client, now) {
                    info!(client = %check.client, "SRS no longer has this client (on_stop lost); it leaves");
                    wants.push(want);
                }
            }
            Err(error) => {
                warn!(client = %check.client, %error, "cannot ask SRS; the client's lease runs")
            }
        }
        self.send_all(wants);
    }

    fn handle(&mut self, hook: Hook) {
        let now = Instant::now().into_std();
        let mut wants = Vec::new();
        match hook {
            Hook::Play {
                client,
                key,
                stream,
            } => {
                self.streams.insert(key.clone(), stream);
                if let Err(error) = self.sessions.play(&client, key, now, &mut wants) {
                    warn!(%client, %error, "SRS client not counted");
                }
            }
            Hook::Stop { client } => match self.sessions.stop(&client, now) {
                Some(want) => wants.push(want),
                None => debug!(%client, "on_stop for no playing client (duplicate or expired)"),
            },
            Hook::Unpublish { key } => {
                if self.push_url.is_empty() {
                    debug!(stream = %key, "on_unpublish");
                } else if let Some(want) = self.sessions.unpublished(&key, now) {
                    info!(stream = %key, "SRS lost the push while clients remain; asking again");
                    wants.push(want);
                }
            }
        }
        self.send_all(wants);
    }

    fn send_all(&mut self, wants: Vec<Want>) {
        for want in wants {
            self.send(&want);
        }
        self.streams
            .retain(|key, _| self.sessions.clients_of(key) > 0);
        self.ctx
            .status
            .srs_clients
            .store(self.sessions.len(), Ordering::Relaxed);
    }

    /// Publishes the request for `want`.
    fn send(&mut self, want: &Want) {
        self.sequence += 1;
        let (client, key) = match want {
            Want::Play { client, key } | Want::Leave { client, key } => (client, key),
        };
        let client_id = format!("{}{}", self.client_prefix, topic_safe(client));
        let mut body = Map::new();
        body.insert(
            "seqid".to_owned(),
            Value::String(format!("{client_id}-{}", self.sequence)),
        );
        body.insert("client_id".to_owned(), Value::String(client_id));
        body.insert("channel".to_owned(), Value::from(key.channel.0));
        body.insert("kind".to_owned(), json!(key.kind));
        let mode = match want {
            Want::Leave { .. } => "UNSUBSCRIBE",
            Want::Play { .. } => {
                let stream = self.streams.get(key);
                if let Some(stream) = stream {
                    if key.kind == StreamKind::Playback {
                        body.extend(stream.fields.clone());
                    }
                    if !self.push_url.is_empty() {
                        body.insert(
                            "url".to_owned(),
                            Value::String(fill(&self.push_url, stream)),
                        );
                    }
                }
                match (self.push_url.is_empty(), key.kind) {
                    (false, _) => "RTMP",
                    (true, StreamKind::Live) => "SUBSCRIBE",
                    (true, StreamKind::Playback) => "PLAYBACK",
                }
            }
        };
        let topic = self.ctx.topics.request(key.device.as_str(), mode);
        debug!(%topic, "bridge request");
        let payload = Value::Object(body).to_string().into_bytes();
        if let Err(error) = self.ctx.publisher.send(topic, payload) {
            warn!(%error, stream = %key, mode, "bridge request dropped");
        }
    }
}

/// `template` with `{srs}`, `{app}`, `{stream}` filled in.
fn fill(template: &str, stream: &PlayedStream) -> String {
    let srs = match stream.srs {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("[{v6}]"),
        },
        IpAddr::V4(v4) => v4.to_string(),
    };
    template
        .replace("{srs}", &srs)
        .replace("{app}", &stream.app)
        .replace("{stream}", &stream.stream)
}

/// An SRS client id as a topic level and client id: letters, digits, `-`, `_`, `.`.
fn topic_safe(client: &str) -> String {
    client
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

async fn sleep_until_opt(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(Instant::from_std(deadline)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_urls_and_client_ids() {
        let stream = PlayedStream {
            srs: "::ffff:127.0.0.1".parse().unwrap(),
            app: "live".into(),
            stream: "13800138000_1".into(),
            fields: Map::new(),
        };
        assert_eq!(
            fill("rtmp://{srs}:1935/{app}/{stream}", &stream),
            "rtmp://127.0.0.1:1935/live/13800138000_1"
        );
        assert_eq!(topic_safe("a/b+#c"), "a_b__c");
    }
}
