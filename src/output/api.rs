//! `GET /api/streams`: the live streams and their counters, as JSON.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::{WEBRTC_OUTPUT, WS_FLV_OUTPUT};
use crate::hub::{Hub, StreamSnapshot};

/// The API routes.
pub fn routes(hub: Hub) -> Router {
    Router::new()
        .route("/api/streams", get(list_streams))
        .with_state(hub)
}

/// One stream in `/api/streams`: the hub's snapshot, plus the viewer counts of two outputs
/// by their own names (the documented fields, kept beside `viewers_by_output`).
#[derive(Debug, Serialize)]
pub struct ApiStream {
    #[serde(flatten)]
    snapshot: StreamSnapshot,
    /// WebRTC peers among `viewers`.
    webrtc_viewers: u64,
    /// WS-FLV viewers (FLV over WebSocket) among `viewers`.
    wsflv_viewers: u64,
}

impl From<StreamSnapshot> for ApiStream {
    fn from(snapshot: StreamSnapshot) -> ApiStream {
        ApiStream {
            webrtc_viewers: snapshot.viewers_of(WEBRTC_OUTPUT),
            wsflv_viewers: snapshot.viewers_of(WS_FLV_OUTPUT),
            snapshot,
        }
    }
}

async fn list_streams(State(hub): State<Hub>) -> Json<Vec<ApiStream>> {
    Json(hub.list().into_iter().map(ApiStream::from).collect())
}
