//! The operator console: a page at `GET /` and `/console/` that lists the live streams
//! (updated by `GET /api/events`, Server-Sent Events), plays one (HTTP-FLV through
//! mpegts.js, or WebRTC through WHEP), and asks a device for its camera over MQTT
//! (WebSocket) as a backend does, and records it (MQTT `RECORD`), playing the recording
//! back through hls.js.
//!
//! Served from the binary: the page, its script and the three JavaScript libraries it uses
//! (vendored with their licences in `console/vendor/`) are embedded with `include_str!`,
//! so it works offline and needs no build step. The page and its files carry no data and
//! are served to anyone; the data comes from `/api/*`, guarded as the API is (the page
//! asks for the token when the API wants one).

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::Stream;
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::api;
use super::record::Recordings;
use crate::hub::{Hub, HubEvent};

/// A snapshot goes out at least this often.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);
/// And, when streams come and go, at most this often.
const SNAPSHOT_GAP: Duration = Duration::from_millis(200);

/// The console's files: path under `/console/`, content type, content.
const FILES: [(&str, &str, &str); 6] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("console/index.html"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("console/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("console/console.css"),
    ),
    (
        "vendor/mpegts.js",
        "text/javascript; charset=utf-8",
        include_str!("console/vendor/mpegts.js"),
    ),
    (
        "vendor/mqtt.min.js",
        "text/javascript; charset=utf-8",
        include_str!("console/vendor/mqtt.min.js"),
    ),
    (
        "vendor/hls.light.min.js",
        "text/javascript; charset=utf-8",
        include_str!("console/vendor/hls.light.min.js"),
    ),
];

/// The page and its files (not guarded: they carry no data).
pub fn routes() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/console", get(index))
        .route("/console/", get(index))
        .route("/console/{*file}", get(file))
}

/// `GET /api/events` (guarded with the rest of `/api/*` by `app`).
pub fn api_routes(hub: Hub, recordings: Recordings) -> Router {
    Router::new()
        .route("/api/events", get(events))
        .with_state((hub, recordings))
}

async fn index() -> Response {
    serve("index.html")
}

async fn file(Path(file): Path<String>) -> Response {
    serve(&file)
}

fn serve(name: &str) -> Response {
    match FILES.iter().find(|(path, _, _)| *path == name) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such console file\n").into_response(),
    }
}

/// `GET /api/events`: Server-Sent Events, each `event: streams` with the body of
/// `/api/streams`; one at once, then every second, and as soon as a stream comes or goes
/// (at most every 200 ms). The stream is polled by the connection's own task: nothing is
/// spawned, and it ends with the connection.
async fn events(
    State((hub, recordings)): State<(Hub, Recordings)>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events_rx = hub.events();
    let state = (hub, recordings, events_rx, None::<Instant>);
    let stream =
        futures_util::stream::unfold(state, |(hub, recordings, mut events_rx, last)| async move {
            if let Some(last) = last {
                if !next_snapshot_due(&mut events_rx, last).await {
                    return None;
                }
                tokio::time::sleep_until(last + SNAPSHOT_GAP).await;
            }
            let streams = api::streams(&hub, &recordings);
            let event = Event::default()
                .event("streams")
                .json_data(&streams)
                .unwrap_or_else(|error| Event::default().comment(format!("not encoded: {error}")));
            Some((
                Ok(event),
                (hub, recordings, events_rx, Some(Instant::now())),
            ))
        });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Waits until the next snapshot is due: a second after `last`, or a stream came or went.
/// False once the hub is gone.
async fn next_snapshot_due(events_rx: &mut broadcast::Receiver<HubEvent>, last: Instant) -> bool {
    let tick = tokio::time::sleep_until(last + SNAPSHOT_EVERY);
    tokio::pin!(tick);
    loop {
        tokio::select! {
            () = &mut tick => return true,
            event = events_rx.recv() => match event {
                Ok(HubEvent::StreamUp(_) | HubEvent::StreamDown(_))
                | Err(broadcast::error::RecvError::Lagged(_)) => return true,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Closed) => return false,
            },
        }
    }
}
