//! Outputs: hub readers → pure muxers → sockets. Each output exposes `routes()` (HTTP) or
//! a task; `app` wires them. Outputs never import ingest.

pub mod api;
pub mod console;
pub mod http_flv;
pub mod record;
pub mod rtmp_push;
pub mod shared;
pub mod webrtc;

/// The label HTTP-FLV counts its viewers as in the hub (`viewers_by_output`).
pub const FLV_OUTPUT: &str = "flv";
/// The label WS-FLV counts its viewers as (`wsflv_viewers` in `/api/streams`).
pub const WS_FLV_OUTPUT: &str = "ws_flv";
/// The label a WebRTC peer counts as (`webrtc_viewers` in `/api/streams`).
pub const WEBRTC_OUTPUT: &str = "webrtc";
/// The label an RTMP push counts as (not a viewer: it is counted here only).
pub const RTMP_OUTPUT: &str = "rtmp";
