//! A reader of one stream: GOP backlog first, then live frames from its own bounded queue.
//!
//! The publisher hands each frame to every reader's queue (under the stream lock, so they
//! see frames in order). A queue is bounded by bytes and time, never by a frame count
//! (`hub.reader_queue_bytes`, `http.viewer_max_lag`): a burst of frames that fits the bytes
//! reaches a reader that keeps up, whatever their number. A reader whose queue would
//! exceed the bytes, or whose oldest queued frame is older than the lag, loses its queue
//! and skips to the next key frame (counted in the stream's `frames_dropped`), so a slow
//! reader never grows memory past its bound and never sees a broken GOP. The publisher
//! never waits for it.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::HubSettings;
use super::sink::{Sink, SinkHandle};
use super::stream::{MediaInfo, Stream};
use crate::media::{AudioMode, Frame, StreamKey};

/// The live frames queued for one reader: filled by the publisher, emptied by the reader.
#[derive(Debug)]
pub(crate) struct ReaderQueue {
    state: Mutex<QueueState>,
    /// Wakes the reader: a frame was queued, or the stream ended.
    wake: Notify,
}

#[derive(Debug)]
struct QueueState {
    /// Frames and when they were queued, oldest first.
    frames: VecDeque<(Frame, Instant)>,
    /// Payload bytes in `frames`.
    bytes: usize,
    /// Skipping to the next frame a reader can start from.
    waiting_for_key: bool,
    /// The skip is for a queue that overran its bounds (skipped frames count as dropped).
    lagged: bool,
    /// The stream ended: nothing more is queued.
    ended: bool,
}

impl ReaderQueue {
    pub(crate) fn new(waiting_for_key: bool) -> ReaderQueue {
        ReaderQueue {
            state: Mutex::new(QueueState {
                frames: VecDeque::new(),
                bytes: 0,
                waiting_for_key,
                lagged: false,
                ended: false,
            }),
            wake: Notify::new(),
        }
    }

    /// Queues `frame`, received at `now`, under the lag policy; returns the frames it
    /// dropped (a queue over its bounds is emptied).
    pub(crate) fn push(
        &self,
        frame: &Frame,
        now: Instant,
        stream_has_video: bool,
        settings: &HubSettings,
    ) -> u64 {
        let mut state = self.lock();
        let mut dropped = 0;
        if let Some((_, oldest)) = state.frames.front() {
            let too_old = now.saturating_duration_since(*oldest) > settings.reader_max_lag;
            let too_large = state.bytes + frame.data.len() > settings.reader_max_bytes;
            if too_old || too_large {
                dropped = state.frames.len() as u64;
                state.frames.clear();
                state.bytes = 0;
                state.waiting_for_key = true;
                state.lagged = true;
            }
        }
        if state.waiting_for_key {
            if !frame.starts_playback(stream_has_video) {
                return dropped + u64::from(state.lagged);
            }
            state.waiting_for_key = false;
            state.lagged = false;
        }
        let was_empty = state.frames.is_empty();
        state.bytes += frame.data.len();
        state.frames.push_back((frame.clone(), now));
        drop(state);
        if was_empty {
            // the reader drains the queue before it waits: one wake per empty queue
            self.wake.notify_one();
        }
        dropped
    }

    /// Nothing more will be queued (the stream ended or the reader became a sink).
    pub(crate) fn end(&self) {
        self.lock().ended = true;
        self.wake.notify_one();
    }

    /// The oldest queued frame, or whether the queue has ended (`Err(true)`).
    fn pop(&self) -> Result<Frame, bool> {
        let mut state = self.lock();
        match state.frames.pop_front() {
            Some((frame, _)) => {
                state.bytes -= frame.data.len();
                Ok(frame)
            }
            None => Err(state.ended),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // every critical section leaves the queue consistent
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Receives the frames of one stream.
#[derive(Debug)]
pub struct Reader {
    stream: Arc<Stream>,
    /// This reader's place among the stream's readers.
    id: u64,
    queue: Arc<ReaderQueue>,
    backlog: VecDeque<Frame>,
    info: MediaInfo,
    audio: AudioMode,
    /// Whether dropping this reader counts a viewer out (not once a sink took its place).
    counted: bool,
    /// The output this reader is counted as, if it said (see [`Reader::counted_as`]).
    output: Option<ViewerCount>,
}

impl Reader {
    pub(crate) fn new(
        stream: Arc<Stream>,
        id: u64,
        queue: Arc<ReaderQueue>,
        backlog: Vec<Frame>,
        info: MediaInfo,
        audio: AudioMode,
    ) -> Reader {
        stream.reader_delta(true);
        Reader {
            stream,
            id,
            queue,
            backlog: backlog.into(),
            info,
            audio,
            counted: true,
            output: None,
        }
    }

    /// Counts a viewer of `output` (an opaque label the output chooses, such as
    /// `"flv"`; `viewers_by_output` in the stream's snapshot) while the returned guard
    /// lives. The output keeps it for the whole play, also once this reader became a sink.
    pub fn count_as(&self, output: &'static str) -> ViewerCount {
        self.stream
            .stats()
            .update_output(output, |c| c.viewers += 1);
        ViewerCount {
            stream: Arc::clone(&self.stream),
            output,
        }
    }

    /// This reader, counted as a viewer of `output` until it is dropped (as
    /// [`Reader::count_as`], the guard kept in the reader). A second call changes nothing.
    pub fn counted_as(mut self, output: &'static str) -> Reader {
        if self.output.is_none() {
            self.output = Some(self.count_as(output));
        }
        self
    }

    /// Hands the rest of this stream to `sink`, which the publisher then feeds directly
    /// (see [`crate::hub::Sink`]). `None` if the stream ended meanwhile.
    pub fn into_sink(mut self, sink: Box<dyn Sink>) -> Option<SinkHandle> {
        let stream = Arc::clone(&self.stream);
        stream.attach(&mut self, sink)
    }

    /// This reader is not a viewer: it leaves the viewer count (and so the demand for the
    /// stream). For outputs that republish (a push to another server), whose own
    /// requesters control counts; a push must not make the device push again after its
    /// stream ended.
    pub fn uncounted(mut self) -> Reader {
        if self.counted {
            self.counted = false;
            self.stream.reader_delta(false);
        }
        self
    }

    /// The viewer count now belongs to a sink.
    pub(crate) fn hand_over_count(&mut self) {
        self.counted = false;
    }

    /// The stream being read.
    pub fn key(&self) -> &StreamKey {
        self.stream.key()
    }

    /// The audio this reader takes.
    pub fn audio_mode(&self) -> AudioMode {
        self.audio
    }

    /// Media info as known when the reader attached.
    pub fn info(&self) -> &MediaInfo {
        &self.info
    }

    /// The next frame; `None` once the stream has ended. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Frame> {
        if let Some(frame) = self.backlog.pop_front() {
            return Some(frame);
        }
        loop {
            match self.queue.pop() {
                Ok(frame) => return Some(frame),
                Err(true) => return None,
                Err(false) => self.queue.wake.notified().await,
            }
        }
    }

    /// The next frame if one is already queued (never waits); `None` when the queue is
    /// empty or the stream has ended (the next [`Reader::recv`] tells which).
    pub fn try_recv(&mut self) -> Option<Frame> {
        if let Some(frame) = self.backlog.pop_front() {
            return Some(frame);
        }
        self.queue.pop().ok()
    }

    /// This reader's place among the stream's readers.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Adds bytes this reader's output wrote, for the stream's counters.
    pub fn add_bytes_out(&self, n: u64) {
        self.stream
            .stats()
            .bytes_out
            .fetch_add(n, Ordering::Relaxed);
    }
}

/// One viewer in a stream's count of an output's viewers, counted out on drop.
#[derive(Debug)]
#[must_use = "the viewer is counted out when this is dropped"]
pub struct ViewerCount {
    stream: Arc<Stream>,
    output: &'static str,
}

impl ViewerCount {
    /// Counts this viewer as dropped by its output (it fell too far behind): in the
    /// stream's `viewers_dropped` and in its output's.
    pub fn add_dropped(&self) {
        let stats = self.stream.stats();
        stats.add_viewer_dropped();
        stats.update_output(self.output, |c| c.dropped += 1);
    }

    /// The output's label.
    pub fn output(&self) -> &'static str {
        self.output
    }
}

impl Drop for ViewerCount {
    fn drop(&mut self) {
        self.stream
            .stats()
            .update_output(self.output, |c| c.viewers = c.viewers.saturating_sub(1));
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stream.remove_reader(self.id);
        if self.counted {
            self.stream.reader_delta(false);
        }
    }
}
