//! `GET /api/streams`: the live streams and their counters, as JSON.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::hub::{Hub, StreamSnapshot};
use crate::media::{Channel, DeviceId, StreamKey};
use crate::output::record::Recordings;

/// The API routes.
pub fn routes(hub: Hub, recordings: Recordings) -> Router {
    Router::new()
        .route("/api/streams", get(list_streams))
        .with_state((hub, recordings))
}

/// A stream in `/api/streams`: the hub's snapshot and whether it is being recorded.
#[derive(Debug, Serialize)]
struct ApiStream {
    #[serde(flatten)]
    snapshot: StreamSnapshot,
    /// Being recorded now (`record.auto` or an MQTT RECORD request).
    recording: bool,
}

async fn list_streams(State((hub, recordings)): State<(Hub, Recordings)>) -> Json<Vec<ApiStream>> {
    Json(
        hub.list()
            .into_iter()
            .map(|snapshot| {
                let recording = DeviceId::parse(&snapshot.device).is_ok_and(|device| {
                    let key = StreamKey::new(device, Channel(snapshot.channel), snapshot.kind);
                    recordings.is_recording(&key)
                });
                ApiStream {
                    snapshot,
                    recording,
                }
            })
            .collect(),
    )
}
