//! A reader of one stream: GOP backlog first, then live frames from a bounded queue.
//!
//! A reader that falls more than the queue length behind loses the oldest frames; it then
//! skips to the next key frame (counted in the stream's `frames_dropped`), so a slow viewer
//! never grows memory and never sees a broken GOP. The publisher never waits for it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::broadcast;

use super::sink::{Sink, SinkHandle};
use super::stream::{MediaInfo, Stream};
use crate::media::{AudioMode, Frame, StreamKey};

/// What the lag policy made of one receive.
enum Accepted {
    Frame(Frame),
    Skip,
    Ended,
}

/// Receives the frames of one stream.
#[derive(Debug)]
pub struct Reader {
    stream: Arc<Stream>,
    rx: broadcast::Receiver<Frame>,
    backlog: VecDeque<Frame>,
    info: MediaInfo,
    audio: AudioMode,
    waiting_for_key: bool,
    /// Whether dropping this reader counts a viewer out (not once a sink took its place).
    counted: bool,
    /// Whether this reader is counted as a WebRTC viewer.
    webrtc: bool,
}

impl Reader {
    pub(crate) fn new(
        stream: Arc<Stream>,
        rx: broadcast::Receiver<Frame>,
        backlog: Vec<Frame>,
        info: MediaInfo,
        audio: AudioMode,
    ) -> Reader {
        stream.reader_delta(true);
        Reader {
            waiting_for_key: backlog.is_empty(),
            stream,
            rx,
            backlog: backlog.into(),
            info,
            audio,
            counted: true,
            webrtc: false,
        }
    }

    /// Counts this reader among the stream's WebRTC viewers (`webrtc_viewers` in
    /// `/api/streams`) until it is dropped.
    pub fn count_as_webrtc(&mut self) {
        if !self.webrtc {
            self.webrtc = true;
            self.stream
                .stats()
                .webrtc_viewers
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a viewer among the stream's WS-FLV viewers (`wsflv_viewers` in
    /// `/api/streams`) while the returned guard lives (the output keeps it for the whole
    /// play, also once this reader became a sink).
    pub fn count_as_wsflv(&self) -> WsFlvCount {
        self.stream
            .stats()
            .wsflv_viewers
            .fetch_add(1, Ordering::Relaxed);
        WsFlvCount {
            stream: Arc::clone(&self.stream),
        }
    }

    /// Hands the rest of this stream to `sink`, which the publisher then feeds directly
    /// (see [`crate::hub::Sink`]). `None` if the stream ended meanwhile.
    pub fn into_sink(mut self, sink: Box<dyn Sink>) -> Option<SinkHandle> {
        let stream = Arc::clone(&self.stream);
        stream.attach(&mut self, sink)
    }

    /// This reader is not a viewer: it leaves the viewer count (and so the demand for the
    /// stream). For outputs that republish (RTMP push), whose own requesters control
    /// counts; a push must not make the device push again after its stream ended.
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

    /// The next frame; `None` once the stream has ended.
    pub async fn recv(&mut self) -> Option<Frame> {
        if let Some(frame) = self.backlog.pop_front() {
            return Some(frame);
        }
        loop {
            let result = self.rx.recv().await;
            match self.accept(result) {
                Accepted::Frame(frame) => return Some(frame),
                Accepted::Skip => {}
                Accepted::Ended => return None,
            }
        }
    }

    /// The next frame if one is already queued (never waits); `None` when the queue is
    /// empty or the stream has ended (the next [`Reader::recv`] tells which).
    pub fn try_recv(&mut self) -> Option<Frame> {
        if let Some(frame) = self.backlog.pop_front() {
            return Some(frame);
        }
        loop {
            let result = match self.rx.try_recv() {
                Ok(frame) => Ok(frame),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    Err(broadcast::error::RecvError::Lagged(n))
                }
                Err(_) => return None,
            };
            match self.accept(result) {
                Accepted::Frame(frame) => return Some(frame),
                Accepted::Skip => {}
                Accepted::Ended => return None,
            }
        }
    }

    /// Applies the lag policy to one receive result.
    fn accept(&mut self, result: Result<Frame, broadcast::error::RecvError>) -> Accepted {
        match result {
            Ok(frame) => {
                if self.waiting_for_key {
                    if !frame.starts_playback(self.stream.has_video()) {
                        return Accepted::Skip;
                    }
                    self.waiting_for_key = false;
                }
                Accepted::Frame(frame)
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                self.stream
                    .stats()
                    .frames_dropped
                    .fetch_add(missed, Ordering::Relaxed);
                self.waiting_for_key = true;
                Accepted::Skip
            }
            Err(broadcast::error::RecvError::Closed) => Accepted::Ended,
        }
    }

    /// Adds bytes this reader's output wrote, for the stream's counters.
    pub fn add_bytes_out(&self, n: u64) {
        self.stream
            .stats()
            .bytes_out
            .fetch_add(n, Ordering::Relaxed);
    }
}

/// One viewer in a stream's `wsflv_viewers`, counted out on drop.
#[derive(Debug)]
#[must_use = "the viewer is counted out when this is dropped"]
pub struct WsFlvCount {
    stream: Arc<Stream>,
}

impl Drop for WsFlvCount {
    fn drop(&mut self) {
        self.stream
            .stats()
            .wsflv_viewers
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if self.webrtc {
            self.stream
                .stats()
                .webrtc_viewers
                .fetch_sub(1, Ordering::Relaxed);
        }
        if self.counted {
            self.stream.reader_delta(false);
        }
    }
}
