//! JT/T 1078 TCP ingest: the live and playback listeners and one task per device
//! connection. Uses `codec::jt1078` to decode and the hub to publish; knows no output.

mod admission;
mod connection;
mod device_socket;
mod parameter_sets;
mod server;

pub use server::{IngestServer, IngestStats};
