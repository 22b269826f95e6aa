//! Outputs: hub readers → pure muxers → sockets. Each output exposes `routes()` (HTTP) or
//! a task; `app` wires them. Outputs never import ingest.

pub mod api;
mod flv_direct;
pub mod flv_mux;
pub mod http_flv;
pub mod http_serve;
mod interleave;
pub mod record;
pub mod rtmp_push;
pub mod tls;
mod viewer_limits;
pub mod webrtc;
pub mod ws_flv;
