//! Push sinks: readers the publisher hands each frame to directly, in its own task.
//!
//! A [`Reader`](super::Reader) is pulled by its own task: every frame wakes that task,
//! which then writes. A sink skips the wake-up: the publisher calls [`Sink::push`] right
//! after the frame is published (under the stream lock, so frames reach every sink in
//! order), and the sink writes at once if its socket takes it. An output whose viewer
//! cannot keep up buffers in the sink (bounded) and lets its own task drain it; the
//! publisher never waits. This halves the task wake-ups per viewer per frame, which is most
//! of what a frame costs besides the socket calls themselves (docs/benchmarks.md).
//!
//! A sink comes from a reader ([`Reader::into_sink`](super::Reader::into_sink)), so the
//! GOP cache, the wait for a device and the viewer count work as for readers.

use std::sync::Arc;

use super::stream::{Stream, StreamStats};
use crate::media::Frame;

/// Takes the frames of one stream, in the publisher's task. Must not block: it may make
/// non-blocking socket calls and must bound whatever it buffers.
pub trait Sink: Send + 'static {
    /// Takes one frame. `false` when the sink is finished (its viewer left): the stream
    /// then drops it.
    fn push(&mut self, frame: &Frame, stats: &StreamStats) -> bool;
}

impl std::fmt::Debug for dyn Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sink")
    }
}

/// Keeps a sink attached to its stream; dropping it detaches the sink (and drops it).
/// The stream also drops its sinks when it ends, so a handle may outlive its sink.
#[derive(Debug)]
pub struct SinkHandle {
    stream: Arc<Stream>,
    id: u64,
}

impl SinkHandle {
    pub(crate) fn new(stream: Arc<Stream>, id: u64) -> SinkHandle {
        SinkHandle { stream, id }
    }

    /// The stream's counters (for bytes the output writes outside [`Sink::push`]).
    pub fn stats(&self) -> &StreamStats {
        self.stream.stats()
    }
}

impl Drop for SinkHandle {
    fn drop(&mut self) {
        self.stream.detach(self.id);
    }
}
