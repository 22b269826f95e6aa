//! What outputs share: the FLV muxer (HTTP-FLV, WS-FLV and the RTMP push write FLV tags),
//! the HTTP listener every HTTP output is served by (with HTTP-FLV's direct path), and its
//! TLS.

pub mod flv_mux;
pub mod http_serve;
pub mod tls;
