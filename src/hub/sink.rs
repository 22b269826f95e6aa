//! Push sinks: readers the publisher hands each frame to directly, in its own task.
//!
//! A [`Reader`](super::Reader) is pulled by its own task: every frame wakes that task,
//! which then writes. A sink skips the wake-up: the publisher calls [`Sink::push`] for each
//! frame (under the stream lock, so frames reach every sink in order) and [`Sink::flush`]
//! after each read from its device, and the sink writes what that read brought at once, in
//! one socket call, if its socket takes it. An output whose viewer cannot keep up buffers in
//! the sink (bounded) and lets its own task drain it; the publisher never waits.
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
    /// then drops it. A sink may hold the frame until [`Sink::flush`].
    fn push(&mut self, frame: &Frame, stats: &StreamStats) -> bool;

    /// The publisher has no more frames for now (it flushes after each read from its
    /// device): write what is held. Frames that arrived together leave together, in one
    /// socket write. `false` as for [`Sink::push`].
    fn flush(&mut self, stats: &StreamStats) -> bool;
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
