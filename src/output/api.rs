//! `GET /api/streams`: the live streams and their counters, as JSON.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::hub::{Hub, StreamSnapshot};

/// The API routes.
pub fn routes(hub: Hub) -> Router {
    Router::new()
        .route("/api/streams", get(list_streams))
        .with_state(hub)
}

async fn list_streams(State(hub): State<Hub>) -> Json<Vec<StreamSnapshot>> {
    Json(hub.list())
}
