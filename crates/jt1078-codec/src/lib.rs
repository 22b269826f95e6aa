//! Sans-IO codecs of jt1078-gateway: bytes in, typed values out, and back.
//!
//! - [`jt1078`]: the JT/T 1078 wire format (both SIM layouts), resync and reassembly.
//! - [`h26x`]: Annex-B splitting, NAL kinds, key frames, parameter sets, picture size.
//! - [`audio`]: device audio (G.711, G.726, IMA ADPCM, AAC) and the AAC transcoder.
//! - [`flv`]: FLV header and tags, decoder configuration records.
//!
//! Nothing here may use tokio, `std::net`, clocks or locks (checked by `scripts/test.sh`).
//! Input never panics: indexing and unwrapping are denied here. A crate of its own so the
//! fuzz targets build against the codecs alone; the gateway re-exports it as
//! `jt1078_gateway::codec`.

#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

pub mod audio;
pub mod flv;
pub mod h26x;
pub mod jt1078;
