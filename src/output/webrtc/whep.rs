//! WHEP (WebRTC-HTTP Egress Protocol): `POST /whep/{kind}/{device}_{channel}` with an SDP
//! offer answers `201 Created` with the SDP answer and a `Location` to `DELETE` when done.
//! CORS preflights are answered so a player on another origin can use it; with
//! `webrtc.whep_token` set, requests must carry `Authorization: Bearer {token}`.
//! Trickle ICE (`PATCH`) is not needed: the answer carries every candidate of the gateway
//! (ICE-lite), and the browser's own are learnt from its checks; `PATCH` answers 405.
//! With `http.play_secret` set, the `POST` URL must be signed (`auth::PlayAccess`, path
//! `/whep/{kind}/{device}_{channel}`): 403 with the reason otherwise.

use axum::Extension;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};

use super::{Offer, Refusal, WebRtc};
use crate::auth::PlayAccess;
use crate::media::StreamKind;
use crate::output::http_flv::parse_stream_name;

/// Largest SDP offer read (browsers send 3 to 10 KB).
const MAX_OFFER: usize = 64 * 1024;

/// The WHEP routes; `plays` says whether a `POST` needs a signed URL.
pub fn routes(webrtc: WebRtc, plays: PlayAccess) -> Router {
    Router::new()
        .route(
            "/whep/{kind}/{stream}",
            post(create).options(preflight).patch(no_trickle),
        )
        .route(
            "/whep/session/{id}",
            delete(remove).options(preflight).patch(no_trickle),
        )
        .layer(Extension(plays))
        .with_state(webrtc)
}

/// `GET /api/webrtc`: the sessions running (guarded with the rest of `/api/*` by `app`).
pub fn api_routes(webrtc: WebRtc) -> Router {
    Router::new()
        .route("/api/webrtc", axum::routing::get(sessions))
        .with_state(webrtc)
}

async fn sessions(State(webrtc): State<WebRtc>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "udp": webrtc.local_addr().to_string(),
        "candidates": webrtc.candidates().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "reflexive": webrtc.reflexive().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "relayed": webrtc.relayed().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "relays": webrtc.relays(),
        "socket": webrtc.socket_counters(),
        "sessions": webrtc.list(),
    }))
}

/// CORS headers every WHEP response carries.
fn cors(webrtc: &WebRtc, mut response: Response) -> Response {
    let headers = response.headers_mut();
    if let Ok(origin) = HeaderValue::from_str(webrtc.cors_origin()) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location"),
    );
    response
}

fn text(webrtc: &WebRtc, status: StatusCode, message: String) -> Response {
    cors(webrtc, (status, message).into_response())
}

async fn preflight(State(webrtc): State<WebRtc>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, DELETE, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    headers.insert("accept-post", HeaderValue::from_static("application/sdp"));
    cors(&webrtc, response)
}

async fn no_trickle(State(webrtc): State<WebRtc>) -> Response {
    text(
        &webrtc,
        StatusCode::METHOD_NOT_ALLOWED,
        "trickle ICE is not needed: the answer carries every candidate of the gateway\n".to_owned(),
    )
}

/// Whether the request carries the configured bearer token (or none is configured).
fn authorised(webrtc: &WebRtc, headers: &HeaderMap) -> bool {
    let token = webrtc.whep_token();
    if token.is_empty() {
        return true;
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|given| token.matches(given.trim_ascii()))
}

async fn create(
    State(webrtc): State<WebRtc>,
    Extension(plays): Extension<PlayAccess>,
    uri: Uri,
    Path((kind, stream)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(denied) = plays.check(uri.path(), uri.query()) {
        return text(&webrtc, StatusCode::FORBIDDEN, format!("{denied}\n"));
    }
    if !authorised(&webrtc, &headers) {
        let mut response = text(
            &webrtc,
            StatusCode::UNAUTHORIZED,
            "WHEP needs Authorization: Bearer <webrtc.whep_token>\n".to_owned(),
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let usage =
        "expected POST /whep/{live|playback}/{device}_{channel}, e.g. /whep/live/13800138000_1";
    let kind = match kind.as_str() {
        "live" => StreamKind::Live,
        "playback" => StreamKind::Playback,
        other => {
            let other = crate::media::echo(other);
            return text(
                &webrtc,
                StatusCode::NOT_FOUND,
                format!("unknown stream kind {other:?}: {usage}\n"),
            );
        }
    };
    let key = match parse_stream_name(&stream, kind, usage) {
        Ok(key) => key,
        Err(message) => return text(&webrtc, StatusCode::BAD_REQUEST, message),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/sdp") {
        return text(
            &webrtc,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "the offer must be sent as Content-Type: application/sdp (got {:?})\n",
                crate::media::echo(content_type)
            ),
        );
    }
    if body.len() > MAX_OFFER {
        return text(
            &webrtc,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("an SDP offer of {} bytes is over {MAX_OFFER}\n", body.len()),
        );
    }
    let Ok(sdp) = String::from_utf8(body.to_vec()) else {
        return text(
            &webrtc,
            StatusCode::BAD_REQUEST,
            "bad SDP offer: not UTF-8\n".to_owned(),
        );
    };
    // only relays to offer and they are being allocated (the first moments after start):
    // the answer waits for them rather than being refused
    webrtc.wait_for_starting_relays().await;
    let offer = Offer {
        relays: Default::default(),
        key,
        sdp,
        video: true,
        audio: true,
        requester: None,
    };
    match webrtc.offer(offer) {
        Ok(answer) => {
            let location = format!("/whep/session/{}", answer.session);
            let mut response = (StatusCode::CREATED, answer.sdp).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/sdp"),
            );
            if let Ok(location) = HeaderValue::from_str(&location) {
                headers.insert(header::LOCATION, location);
            }
            cors(&webrtc, response)
        }
        Err(refusal) => {
            let status = match refusal {
                Refusal::BadSdp(_) => StatusCode::BAD_REQUEST,
                Refusal::NoCommonCodec(_) => StatusCode::NOT_ACCEPTABLE,
                Refusal::TooManyPeers(_) | Refusal::Disabled | Refusal::RelayUnavailable => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            };
            text(&webrtc, status, format!("{refusal}\n"))
        }
    }
}

async fn remove(State(webrtc): State<WebRtc>, Path(id): Path<String>) -> Response {
    if webrtc.close(&id) {
        text(&webrtc, StatusCode::OK, "session ended\n".to_owned())
    } else {
        text(
            &webrtc,
            StatusCode::NOT_FOUND,
            format!("no WHEP session {:?}\n", crate::media::echo(&id)),
        )
    }
}
