//! Outputs: hub readers → pure muxers → sockets. Each output exposes `routes()` (HTTP) or
//! a task; `app` wires them. Outputs never import ingest.

pub mod api;
pub mod http_flv;
pub mod rtmp_push;
pub mod shared;
pub mod webrtc;
