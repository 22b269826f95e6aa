//! Sans-IO codecs: bytes in, typed values out, and back.
//!
//! Nothing under `codec/` may use tokio, `std::net`, clocks or locks (checked by `.ci/run`).
//! Input never panics: indexing and unwrapping are denied here.

#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

pub mod audio;
pub mod flv;
pub mod h26x;
pub mod jt1078;
