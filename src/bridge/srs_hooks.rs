//! SRS HTTP hooks → control requests.
//!
//! `POST /api/v1/sessions` (on_play, on_stop), `POST /api/v1/streams` (on_publish,
//! on_unpublish) with the bodies SRS 6 sends, and the seed's `POST /web_on_play
//! {"device_id": …}`. SRS blocks its client until the hook answers, so a handler only
//! checks (source address, token, stream name), hands the hook to the hook task over a
//! bounded channel and answers: HTTP 200 with body `0` allows, anything else refuses.
//! What follows is the task's (`srs_clients.rs`).
//!
//! With `http.play_secret` set, on_play also checks the player's signature: SRS passes the
//! query of the player's URL as `param`, which must sign `/{app}/{stream}.flv` (the
//! HTTP-FLV path, the same URL form the gateway checks) or `/{app}/{stream}` (the stream's
//! path whatever the protocol: SRS's WHEP URL names the stream in its query). One scheme
//! guards the gateway and SRS.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use ipnet::IpNet;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::BridgeStatus;
use super::names::{FormError, StreamNames};
use super::publisher::Publisher;
use super::srs_clients::{self, Hook, PlayedStream};
use crate::auth::PlayAccess;
use crate::config::BridgeSettings;
use crate::control::topics::Topics;
use crate::media::StreamKind;

/// Hooks waiting for the task.
const HOOK_QUEUE: usize = 4096;

/// Fields of the 0x9201 request a playback viewer may give in its play URL's query
/// (`…/playback/{stream}.flv?start_time=…`), passed on to the control plane.
const PLAYBACK_FIELDS: [&str; 7] = [
    "start_time",
    "end_time",
    "media_type",
    "stream_type",
    "storage_type",
    "playback_mode",
    "speed",
];

/// What the hook task needs.
#[derive(Debug, Clone)]
pub(super) struct HookContext {
    pub(super) topics: Topics,
    pub(super) lease: Duration,
    pub(super) publisher: Publisher,
    pub(super) status: Arc<BridgeStatus>,
}

/// The handlers' shared, read-only state.
#[derive(Debug, Clone)]
pub(super) struct HookState {
    names: Arc<StreamNames>,
    token: crate::config::Secret,
    plays: PlayAccess,
    allow: Arc<[IpNet]>,
    fail_open: bool,
    hooks_tx: mpsc::Sender<Hook>,
    status: Arc<BridgeStatus>,
}
/// An SRS hook body (SRS 6; fields it does not always send default to empty).
#[derive(Debug, Deserialize)]
struct SrsHook {
    action: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    app: Option<String>,
    stream: String,
    #[serde(default)]
    param: String,
}

/// The seed's manual play request.
#[derive(Debug, Deserialize)]
struct WebOnPlay {
    device_id: String,
}

/// Starts the hook task; returns the handlers' state.
pub(super) fn start(
    settings: &BridgeSettings,
    ctx: HookContext,
    plays: PlayAccess,
    tasks: &TaskTracker,
    cancel: CancellationToken,
) -> Result<HookState, FormError> {
    let names = StreamNames::new(
        &settings.live_app,
        &settings.playback_app,
        &settings.stream_forms,
    )?;
    let (hooks_tx, hooks_rx) = mpsc::channel(HOOK_QUEUE);
    let state = HookState {
        names: Arc::new(names),
        token: settings.hook_token.clone(),
        plays,
        allow: settings.hook_allow.clone().into(),
        fail_open: settings.fail_open,
        hooks_tx,
        status: ctx.status.clone(),
    };
    tasks.spawn(srs_clients::run(settings, ctx, hooks_rx, cancel));
    Ok(state)
}

/// The hook routes.
pub(super) fn routes(state: HookState) -> Router {
    Router::new()
        .route("/api/v1/sessions", post(sessions))
        .route("/api/v1/streams", post(streams))
        .route("/web_on_play", post(web_on_play))
        .with_state(state)
}

/// The answer that lets SRS go on.
fn allow() -> Response {
    (StatusCode::OK, "0").into_response()
}

/// An answer that makes SRS refuse the client (any status but 200/201 does).
fn refuse(state: &HookState, status: StatusCode, reason: &str) -> Response {
    state.status.hooks_refused.fetch_add(1, Ordering::Relaxed);
    (
        status,
        axum::Json(json!({"code": status.as_u16(), "message": reason})),
    )
        .into_response()
}

impl HookState {
    /// The source address and token check; the reason when refused.
    fn admit(
        &self,
        peer: Option<SocketAddr>,
        query: &HashMap<String, String>,
    ) -> Result<(), String> {
        let Some(peer) = peer else {
            return Err("no source address".to_owned());
        };
        let ip = match peer.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        if !self.allow.iter().any(|net| net.contains(&ip)) {
            return Err(format!("source {ip} is not in bridge.hook_allow"));
        }
        if !self.token.is_empty()
            && !query
                .get("token")
                .is_some_and(|given| self.token.matches(given.as_bytes()))
        {
            return Err("missing or wrong token (bridge.hook_token)".to_owned());
        }
        Ok(())
    }

    /// Hands `hook` to the task; whether the client may go on.
    fn hand_over(&self, hook: Hook) -> Result<(), &'static str> {
        let connected = self.status.mqtt_connected.load(Ordering::Relaxed);
        if !connected && !self.fail_open {
            return Err(
                "the control plane (MQTT broker) is unreachable and bridge.fail_open is false",
            );
        }
        match self.hooks_tx.try_send(hook) {
            Ok(()) => Ok(()),
            Err(_) if self.fail_open => {
                warn!("bridge hook queue full; hook dropped, client allowed (fail_open)");
                Ok(())
            }
            Err(_) => Err("the bridge's hook queue is full"),
        }
    }
}

/// A hook that passed the admission checks (source address, token), with its JSON body
/// and the caller's address. An extractor, so every hook route checks the same way; a
/// refusal is the response.
struct Checked<T> {
    body: T,
    caller: IpAddr,
}

impl<T: DeserializeOwned> FromRequest<HookState> for Checked<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &HookState) -> Result<Self, Response> {
        // `output::shared::http_serve` puts the peer's address on every request
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0);
        let query: HashMap<String, String> =
            serde_urlencoded::from_str(request.uri().query().unwrap_or_default())
                .unwrap_or_default();
        let path = request.uri().path().to_owned();
        let caller = match (state.admit(peer, &query), peer) {
            (Ok(()), Some(peer)) => peer.ip(),
            (Err(reason), _) => {
                warn!(%path, %reason, "hook refused");
                return Err(refuse(state, StatusCode::FORBIDDEN, &reason));
            }
            (Ok(()), None) => {
                return Err(refuse(state, StatusCode::FORBIDDEN, "no source address"));
            }
        };
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let body = serde_json::from_slice(&bytes).map_err(|error| {
            warn!(%path, %error, "hook refused: not the expected body");
            refuse(
                state,
                StatusCode::BAD_REQUEST,
                &format!("not the body {path} expects: {error}"),
            )
        })?;
        Ok(Checked { body, caller })
    }
}

async fn sessions(
    State(state): State<HookState>,
    Checked { body: hook, caller }: Checked<SrsHook>,
) -> Response {
    match hook.action.as_str() {
        "on_play" => {
            if let Err(denied) = hook.check_signature(&state) {
                warn!(client = %hook.client_id, stream = %crate::media::echo(&hook.stream), %denied, "on_play refused: play URL not signed");
                return refuse(&state, StatusCode::FORBIDDEN, &denied.to_string());
            }
            let key = match state.names.resolve(hook.app(&state), &hook.stream) {
                Ok(key) => key,
                Err(error) => {
                    warn!(client = %hook.client_id, %error, "on_play refused: unknown stream name");
                    return refuse(&state, StatusCode::NOT_FOUND, &error.to_string());
                }
            };
            let stream = PlayedStream {
                srs: caller,
                app: hook.app(&state).to_owned(),
                stream: hook.stream.clone(),
                fields: playback_fields(&hook.param),
            };
            let play = Hook::Play {
                client: hook.client_id.clone(),
                key,
                stream,
            };
            finish(&state, "on_play", state.hand_over(play))
        }
        "on_stop" => {
            // SRS ignores the answer; a client never seen (or a name that fits no form)
            // simply has nothing to stop
            let _ = state.hooks_tx.try_send(Hook::Stop {
                client: hook.client_id.clone(),
            });
            state.status.hooks_allowed.fetch_add(1, Ordering::Relaxed);
            allow()
        }
        other => refuse(
            &state,
            StatusCode::BAD_REQUEST,
            &format!("action {other:?} on /api/v1/sessions: expected on_play or on_stop"),
        ),
    }
}

async fn streams(
    State(state): State<HookState>,
    Checked { body: hook, .. }: Checked<SrsHook>,
) -> Response {
    let key = state.names.resolve(hook.app(&state), &hook.stream);
    match (hook.action.as_str(), key) {
        ("on_publish", Ok(key)) => {
            info!(stream = %key, client = %hook.client_id, "SRS publish of a device stream allowed");
            state.status.hooks_allowed.fetch_add(1, Ordering::Relaxed);
            allow()
        }
        ("on_publish", Err(error)) => {
            warn!(client = %hook.client_id, %error, "on_publish refused: not a device stream");
            refuse(&state, StatusCode::NOT_FOUND, &error.to_string())
        }
        ("on_unpublish", Ok(key)) => {
            let _ = state.hooks_tx.try_send(Hook::Unpublish { key });
            allow()
        }
        ("on_unpublish", Err(_)) => allow(),
        (other, _) => refuse(
            &state,
            StatusCode::BAD_REQUEST,
            &format!("action {other:?} on /api/v1/streams: expected on_publish or on_unpublish"),
        ),
    }
}

async fn web_on_play(
    State(state): State<HookState>,
    Checked {
        body: request,
        caller,
    }: Checked<WebOnPlay>,
) -> Response {
    let key = match state.names.key(StreamKind::Live, &request.device_id) {
        Ok(key) => key,
        Err(error) => {
            warn!(%error, "web_on_play refused: unknown stream name");
            return refuse(&state, StatusCode::NOT_FOUND, &error.to_string());
        }
    };
    let play = Hook::Play {
        client: format!("web-{}", request.device_id),
        key,
        stream: PlayedStream {
            srs: caller,
            app: "live".to_owned(),
            stream: request.device_id,
            fields: Map::new(),
        },
    };
    match state.hand_over(play) {
        Ok(()) => {
            state.status.hooks_allowed.fetch_add(1, Ordering::Relaxed);
            axum::Json(json!({"code": 0})).into_response()
        }
        Err(reason) => refuse(&state, StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

fn finish(state: &HookState, action: &str, outcome: Result<(), &'static str>) -> Response {
    match outcome {
        Ok(()) => {
            state.status.hooks_allowed.fetch_add(1, Ordering::Relaxed);
            allow()
        }
        Err(reason) => {
            warn!(action, reason, "SRS hook refused");
            refuse(state, StatusCode::SERVICE_UNAVAILABLE, reason)
        }
    }
}

impl SrsHook {
    /// Whether the player's query (`param`) signs this stream (always, when plays are
    /// open; see the module docs for the paths).
    fn check_signature(&self, state: &HookState) -> Result<(), crate::auth::PlayDenied> {
        if !state.plays.is_signed() {
            return Ok(());
        }
        let stream = format!("/{}/{}", self.app(state), self.stream);
        let flv = format!("{stream}.flv");
        let query = self.param.trim_start_matches('?');
        state.plays.check_any(&[&flv, &stream], Some(query))
    }

    /// The app; the seed's manual calls send none: the live app then.
    fn app<'a>(&'a self, state: &'a HookState) -> &'a str {
        self.app
            .as_deref()
            .unwrap_or_else(|| state.names.live_app())
    }
}

/// The playback fields of a hook's `param` (`?start_time=…&end_time=…`), numbers as
/// numbers.
fn playback_fields(param: &str) -> Map<String, Value> {
    let query = param.trim_start_matches('?');
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    pairs
        .into_iter()
        .filter(|(name, _)| PLAYBACK_FIELDS.contains(&name.as_str()))
        .map(|(name, value)| {
            let value = match value.parse::<u64>() {
                Ok(n) if name != "start_time" && name != "end_time" => Value::from(n),
                _ => Value::String(value),
            };
            (name, value)
        })
        .collect()
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_are_admitted_by_network_and_token() {
        let (hooks_tx, _hooks_rx) = mpsc::channel(1);
        let state = HookState {
            names: Arc::new(StreamNames::new("live", "playback", &[]).unwrap()),
            token: crate::config::Secret::new("s3cret"),
            plays: PlayAccess::default(),
            allow: vec!["10.0.0.0/8".parse().unwrap()].into(),
            fail_open: true,
            hooks_tx,
            status: Arc::default(),
        };
        let token = HashMap::from([("token".to_owned(), "s3cret".to_owned())]);
        let at = |ip: &str| Some(SocketAddr::new(ip.parse().unwrap(), 40000));
        assert_eq!(state.admit(at("10.1.2.3"), &token), Ok(()));
        assert_eq!(
            state.admit(at("::ffff:10.1.2.3"), &token),
            Ok(()),
            "v4-mapped"
        );
        let refused = state.admit(at("127.0.0.1"), &token).unwrap_err();
        assert!(
            refused.contains("127.0.0.1") && refused.contains("hook_allow"),
            "{refused}"
        );
        let refused = state.admit(at("10.1.2.3"), &HashMap::new()).unwrap_err();
        assert!(refused.contains("token"), "{refused}");
        assert!(state.admit(None, &token).is_err());
    }

    #[test]
    fn playback_fields_come_from_the_query() {
        let fields = playback_fields("?start_time=261122080000&end_time=0&speed=2&token=x&other=1");
        assert_eq!(fields["start_time"], "261122080000");
        assert_eq!(fields["end_time"], "0");
        assert_eq!(fields["speed"], 2);
        assert!(!fields.contains_key("token"));
        assert!(playback_fields("").is_empty());
    }
}
