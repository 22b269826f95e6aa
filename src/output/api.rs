//! `GET /api/streams`: the live streams and their counters, as JSON.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::{WEBRTC_OUTPUT, WS_FLV_OUTPUT};
use crate::hub::{Hub, StreamSnapshot};
use crate::media::{Channel, DeviceId, StreamKey};
use crate::output::record::Recordings;

/// The API routes.
pub fn routes(hub: Hub, recordings: Recordings) -> Router {
    Router::new()
        .route("/api/streams", get(list_streams))
        .with_state((hub, recordings))
}

/// One stream in `/api/streams`: the hub's snapshot, the viewer counts of two outputs by
/// their own names (the documented fields, kept beside `viewers_by_output`), and whether it
/// is being recorded.
#[derive(Debug, Serialize)]
pub struct ApiStream {
    #[serde(flatten)]
    snapshot: StreamSnapshot,
    /// WebRTC peers among `viewers`.
    webrtc_viewers: u64,
    /// WS-FLV viewers (FLV over WebSocket) among `viewers`.
    wsflv_viewers: u64,
    /// Being recorded now (`record.auto` or an MQTT RECORD request).
    recording: bool,
}

/// Every stream as `/api/streams` (and the console's events) show it.
pub fn streams(hub: &Hub, recordings: &Recordings) -> Vec<ApiStream> {
    hub.list()
        .into_iter()
        .map(|snapshot| {
            let recording = DeviceId::parse(&snapshot.device).is_ok_and(|device| {
                let key = StreamKey::new(device, Channel(snapshot.channel), snapshot.kind);
                recordings.is_recording(&key)
            });
            ApiStream {
                webrtc_viewers: snapshot.viewers_of(WEBRTC_OUTPUT),
                wsflv_viewers: snapshot.viewers_of(WS_FLV_OUTPUT),
                snapshot,
                recording,
            }
        })
        .collect()
}

async fn list_streams(State((hub, recordings)): State<(Hub, Recordings)>) -> Json<Vec<ApiStream>> {
    Json(streams(&hub, &recordings))
}
