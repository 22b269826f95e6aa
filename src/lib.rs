//! jt1078-gateway: a JT/T 1078 vehicle video gateway.
//!
//! Bytes enter at the edges, become typed values in pure codecs, and meet in one hub:
//!
//! ```text
//! device TCP → ingest → codec::jt1078 → media::Frame → hub → output::http_flv → viewer
//! ```
//!
//! - [`codec`]: sans-IO JT/T 1078, H.264/H.265, FLV and audio (G.711, G.726, IMA ADPCM, AAC)
//!   codecs.
//! - [`media`]: the types that cross the hub (ids, stream keys, frames, timestamps).
//! - [`hub`]: the only place streams live; one publisher, many bounded readers; the AAC
//!   made of a stream's audio, once, while a reader takes it.
//! - [`ingest`]: the JT/T 1078 TCP listeners (live and playback).
//! - [`output`]: HTTP-FLV and the stream API.
//! - [`control`]: the MQTT control plane (requests, demand, device commands, status).
//! - [`bridge`]: SRS HTTP hooks and the Redis `EXTERNAL_COMMAND` queue into MQTT.
//! - [`simulate`]: the device simulator and load generator.
//! - [`auth`]: signed play URLs, the API guard, trusted proxies and [`auth::Secret`].
//! - [`app`]: the composition root; [`config`] the settings tree.

pub mod app;
pub mod auth;
pub mod bridge;
pub mod cli;
pub mod cluster;
pub use jt1078_codec as codec;
pub mod config;
pub mod control;
pub mod hub;
pub mod ingest;
pub mod media;
pub mod metrics;
pub mod output;
pub mod simulate;
pub mod telemetry;
