//! One stream: the publisher slot, the GOP cache, media info and counters.
//!
//! The per-stream lock guards the GOP cache and the readers' queues together, so a new
//! reader's snapshot and its live queue meet without a gap or a duplicate. It is held for
//! a push and a send, never across `.await`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::audio::{Renditions, StreamAudio};
use super::reader::{Reader, ReaderQueue};
use super::sink::{Sink, SinkHandle};
use super::{Hub, HubEvent, HubSettings, StreamSnapshot};
use crate::media::{AudioMode, Codec, Frame, StreamKey, Track};

/// What is known about a stream's media.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaInfo {
    /// Video codec, once a video frame was published.
    pub video: Option<Codec>,
    /// Audio codec, once an audio frame was published.
    pub audio: Option<Codec>,
    /// Picture width and height from the latest SPS.
    pub resolution: Option<(u32, u32)>,
    /// The tracks this stream is expected to carry (`None`: not known): what the pull
    /// request narrowed it to (video only, say), else what this device channel carried the
    /// last time it was published. A hint for an output that must announce its tracks
    /// before this session has shown them: a stream expected without audio is not waited on
    /// for audio.
    pub expected: Option<Tracks>,
}

/// Which tracks a stream carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracks {
    /// It carried video.
    pub video: bool,
    /// It carried audio.
    pub audio: bool,
}

/// Frames of one track a session must have carried before its tracks go on record: a
/// couple of seconds, well past the time any device takes to show its other track.
const FRAMES_TO_RECORD: u64 = 50;

/// Counters of one stream, updated without locks.
#[derive(Debug, Default)]
pub struct StreamStats {
    pub(crate) frames_in: AtomicU64,
    pub(crate) video_frames: AtomicU64,
    pub(crate) audio_frames: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) frames_dropped: AtomicU64,
    pub(crate) viewers_dropped: AtomicU64,
    pub(crate) resyncs: AtomicU64,
    pub(crate) viewers: AtomicU64,
    pub(crate) audio_undecodable: AtomicU64,
    pub(crate) first_video_pts: AtomicU64,
    pub(crate) last_video_pts: AtomicU64,
    /// Viewers and viewers dropped by the label each output gives its readers (see
    /// [`crate::hub::Reader::count_as`]). Changed when a viewer joins, leaves or is dropped,
    /// never per frame; bounded by the number of outputs (labels are `&'static str`).
    pub(crate) outputs: Mutex<Vec<OutputCount>>,
}

/// The viewers of one output on one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutputCount {
    /// The output's label.
    pub(crate) output: &'static str,
    /// Viewers counted as this output now.
    pub(crate) viewers: u64,
    /// Viewers of this output it dropped (they fell behind).
    pub(crate) dropped: u64,
}

impl StreamStats {
    /// Adds bytes an output wrote.
    pub fn add_bytes_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds frames an output skipped for a viewer that fell behind.
    pub fn add_dropped(&self, n: u64) {
        self.frames_dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts an audio frame that could not be decoded (or framed) for AAC outputs.
    pub(crate) fn add_audio_undecodable(&self) {
        self.audio_undecodable.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a viewer an output dropped (it fell too far behind). An output that
    /// labels its viewers counts drops with [`crate::hub::ViewerCount::add_dropped`],
    /// which also counts them here.
    pub fn add_viewer_dropped(&self) {
        self.viewers_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Changes the count of `output`'s viewers on this stream.
    pub(crate) fn update_output(
        &self,
        output: &'static str,
        change: impl FnOnce(&mut OutputCount),
    ) {
        // single field updates: consistent after a panic
        let mut outputs = self.outputs.lock().unwrap_or_else(PoisonError::into_inner);
        let at = match outputs.iter().position(|o| o.output == output) {
            Some(at) => at,
            None => {
                outputs.push(OutputCount {
                    output,
                    viewers: 0,
                    dropped: 0,
                });
                outputs.len() - 1
            }
        };
        if let Some(count) = outputs.get_mut(at) {
            change(count);
        }
    }

    /// The viewers of each output, by label.
    pub(crate) fn outputs(&self) -> Vec<OutputCount> {
        self.outputs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[derive(Debug)]
pub(crate) struct Stream {
    key: StreamKey,
    started: Instant,
    settings: HubSettings,
    has_video: AtomicBool,
    stats: StreamStats,
    events_tx: broadcast::Sender<HubEvent>,
    /// Orders viewer count changes with their events.
    reader_events: Mutex<()>,
    state: Mutex<StreamState>,
}

#[derive(Debug)]
struct StreamState {
    generation: u64,
    publishing: bool,
    on_replaced: CancellationToken,
    /// New readers and sinks may attach: the stream is up, or waited for (false once it
    /// ended).
    open: bool,
    /// The readers' queues of live frames.
    readers: Vec<ReaderSlot>,
    gop: GopCache,
    info: MediaInfo,
    last_pts: u64,
    sinks: Vec<SinkSlot>,
    /// The next reader or sink id.
    next_id: u64,
    audio: StreamAudio,
    /// The bounds of a reader's queue.
    settings: HubSettings,
}

/// An attached reader's queue and the audio it takes.
#[derive(Debug)]
struct ReaderSlot {
    id: u64,
    mode: AudioMode,
    queue: Arc<ReaderQueue>,
}

/// An attached sink and the audio it takes.
#[derive(Debug)]
struct SinkSlot {
    id: u64,
    mode: AudioMode,
    sink: Box<dyn Sink>,
}

impl StreamState {
    /// Whether some reader or sink takes AAC.
    fn wants_aac(&self) -> bool {
        self.takes(AudioMode::Aac)
    }

    /// Whether some reader or sink takes audio as `mode` says.
    fn takes(&self, mode: AudioMode) -> bool {
        self.readers.iter().any(|slot| slot.mode == mode)
            || self.sinks.iter().any(|slot| slot.mode == mode)
    }

    /// Hands `frame` to the readers and sinks of `renditions` (not the GOP cache); returns
    /// how many sinks finished (dropped here, to be counted out after the lock).
    fn deliver(
        &mut self,
        frame: &Frame,
        renditions: Renditions,
        has_video: bool,
        stats: &StreamStats,
    ) -> usize {
        if !self.readers.is_empty() {
            let now = Instant::now();
            let mut dropped = 0;
            for slot in self.readers.iter().filter(|r| renditions.includes(r.mode)) {
                dropped += slot.queue.push(frame, now, has_video, &self.settings);
            }
            if dropped > 0 {
                stats.add_dropped(dropped);
            }
        }
        let before = self.sinks.len();
        self.sinks
            .retain_mut(|slot| !renditions.includes(slot.mode) || slot.sink.push(frame, stats));
        before - self.sinks.len()
    }
}

/// Frames from the latest video key frame on, so a new reader starts at once.
#[derive(Debug, Default)]
struct GopCache {
    frames: Vec<(Frame, Renditions)>,
    bytes: usize,
    overflowed: bool,
}

/// The publishing side of a stream. Dropping it ends the stream (unless a newer publisher
/// replaced it), which ends every reader.
#[derive(Debug)]
pub struct Publisher {
    hub: Hub,
    stream: Arc<Stream>,
    generation: u64,
    /// Frames were sent since the last [`Publisher::flush`].
    unflushed: AtomicBool,
}

/// Why a frame was not published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// Another connection publishes this stream now.
    #[error("replaced by a newer publisher")]
    Replaced,
}

impl Stream {
    pub(crate) fn new(
        key: StreamKey,
        settings: HubSettings,
        events_tx: broadcast::Sender<HubEvent>,
        expected: Option<Tracks>,
    ) -> Stream {
        Stream {
            key,
            started: Instant::now(),
            settings,
            has_video: AtomicBool::new(false),
            stats: StreamStats::default(),
            events_tx,
            reader_events: Mutex::new(()),
            state: Mutex::new(StreamState {
                generation: 0,
                publishing: false,
                on_replaced: CancellationToken::new(),
                open: true,
                readers: Vec::new(),
                gop: GopCache::default(),
                info: MediaInfo {
                    expected,
                    ..MediaInfo::default()
                },
                last_pts: 0,
                sinks: Vec::new(),
                next_id: 0,
                audio: StreamAudio::default(),
                settings,
            }),
        }
    }

    pub(crate) fn key(&self) -> &StreamKey {
        &self.key
    }

    /// The tracks this session carried, once it ran long enough to tell.
    pub(crate) fn tracks_on_record(&self) -> Option<Tracks> {
        let video = self.stats.video_frames.load(Ordering::Relaxed);
        let audio = self.stats.audio_frames.load(Ordering::Relaxed);
        (video >= FRAMES_TO_RECORD || audio >= FRAMES_TO_RECORD).then_some(Tracks {
            video: video > 0,
            audio: audio > 0,
        })
    }

    pub(crate) fn stats(&self) -> &StreamStats {
        &self.stats
    }

    /// Counts a reader in or out and tells the event listeners.
    pub(crate) fn reader_delta(&self, joined: bool) {
        // counts change on viewer and device threads alike: count and announce as one step,
        // so the last event a listener gets carries the last count
        let _order = self
            .reader_events
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let readers = if joined {
            self.stats.viewers.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.stats
                .viewers
                .fetch_sub(1, Ordering::Relaxed)
                .saturating_sub(1)
        };
        // No listener is a normal state.
        let _ = self.events_tx.send(HubEvent::ReadersChanged {
            key: self.key.clone(),
            readers,
        });
    }

    /// Whether the stream runs a transcoder now (tests).
    #[cfg(test)]
    pub(crate) fn has_transcoder(&self) -> bool {
        self.lock().audio.is_transcoding()
    }

    pub(crate) fn has_video(&self) -> bool {
        self.has_video.load(Ordering::Relaxed)
    }

    /// Makes a new publisher generation current; cancels the previous one's token.
    /// Returns the generation and whether another publisher was active.
    pub(crate) fn take_over(&self, on_replaced: CancellationToken) -> (u64, bool) {
        let mut state = self.lock();
        let was_publishing = state.publishing;
        if was_publishing {
            state.on_replaced.cancel();
        }
        state.generation += 1;
        state.publishing = true;
        state.on_replaced = on_replaced;
        state.open = true;
        (state.generation, was_publishing)
    }

    /// The media info, if something publishes the stream.
    pub(crate) fn live_media(&self) -> Option<MediaInfo> {
        let state = self.lock();
        state.publishing.then(|| state.info.clone())
    }

    pub(crate) fn is_publishing(&self) -> bool {
        self.lock().publishing
    }

    pub(crate) fn has_readers(&self) -> bool {
        let state = self.lock();
        !state.sinks.is_empty() || !state.readers.is_empty()
    }

    /// Ends publishing if `generation` is current; true if it was (the stream is down).
    pub(crate) fn release(&self, generation: u64) -> bool {
        let mut state = self.lock();
        if state.generation != generation || !state.publishing {
            return false;
        }
        state.publishing = false;
        // the AAC still in the transcoder goes out before the end
        let mut tail = Vec::new();
        state.audio.finish(&mut tail);
        let mut ended = 0;
        let has_video = self.has_video();
        for frame in &tail {
            ended += state.deliver(frame, Renditions::AAC, has_video, &self.stats);
        }
        state.open = false;
        // a reader reads what its queue holds, then sees the end; it counts itself out
        for slot in std::mem::take(&mut state.readers) {
            slot.queue.end();
        }
        state.gop = GopCache::default();
        let sinks = std::mem::take(&mut state.sinks);
        drop(state);
        // dropping a sink tells its output that the stream ended
        let ended = ended + sinks.len();
        drop(sinks);
        self.count_out(ended);
        true
    }

    /// Turns `reader` into a sink: the frames queued for the reader (its GOP backlog
    /// first) go to the sink now, later ones as they are published. `None` if the stream
    /// ended or the sink refused the queued frames. The reader's place in the viewer count
    /// passes to the sink.
    pub(crate) fn attach(
        self: &Arc<Self>,
        reader: &mut Reader,
        mut sink: Box<dyn Sink>,
    ) -> Option<SinkHandle> {
        let mut state = self.lock();
        // frames are only sent under this lock, so nothing slips between the drain and
        // the registration
        while let Some(frame) = reader.try_recv() {
            if !sink.push(&frame, &self.stats) {
                return None;
            }
        }
        if !sink.flush(&self.stats) {
            return None;
        }
        if !state.open {
            return None;
        }
        // the sink takes the reader's place: nothing more goes to its queue
        state.readers.retain(|slot| slot.id != reader.id());
        let id = state.next_id;
        state.next_id += 1;
        state.sinks.push(SinkSlot {
            id,
            mode: reader.audio_mode(),
            sink,
        });
        drop(state);
        reader.hand_over_count();
        Some(SinkHandle::new(Arc::clone(self), id))
    }

    /// Tells every sink to write what it holds.
    fn flush(&self) {
        self.offer_sinks(self.lock(), |sink, stats| sink.flush(stats));
    }

    /// Calls `offer` on every sink under the stream lock (so they see frames in order),
    /// drops the ones that are finished and, after the lock, counts them out.
    fn offer_sinks(
        &self,
        mut state: MutexGuard<'_, StreamState>,
        mut offer: impl FnMut(&mut dyn Sink, &StreamStats) -> bool,
    ) {
        let before = state.sinks.len();
        if before == 0 {
            return;
        }
        state
            .sinks
            .retain_mut(|slot| offer(slot.sink.as_mut(), &self.stats));
        let finished = before - state.sinks.len();
        drop(state);
        self.count_out(finished);
    }

    /// `n` readers or sinks left.
    fn count_out(&self, n: usize) {
        for _ in 0..n {
            self.reader_delta(false);
        }
    }

    /// Drops the sink `id` if it is still attached.
    pub(crate) fn detach(&self, id: u64) {
        let mut state = self.lock();
        let Some(at) = state.sinks.iter().position(|slot| slot.id == id) else {
            return;
        };
        let sink = state.sinks.swap_remove(at);
        drop(state);
        drop(sink);
        self.count_out(1);
    }

    /// Drops the reader `id`'s queue if it is still attached.
    pub(crate) fn remove_reader(&self, id: u64) {
        self.lock().readers.retain(|slot| slot.id != id);
    }

    pub(crate) fn reader(self: &Arc<Self>, mode: AudioMode) -> Option<Reader> {
        let mut state = self.lock();
        if !state.open {
            return None;
        }
        let backlog: Vec<Frame> = state
            .gop
            .frames
            .iter()
            .filter(|(_, renditions)| renditions.includes(mode))
            .map(|(frame, _)| frame.clone())
            .collect();
        let queue = Arc::new(ReaderQueue::new(backlog.is_empty()));
        let id = state.next_id;
        state.next_id += 1;
        state.readers.push(ReaderSlot {
            id,
            mode,
            queue: Arc::clone(&queue),
        });
        let info = state.info.clone();
        drop(state);
        Some(Reader::new(
            Arc::clone(self),
            id,
            queue,
            backlog,
            info,
            mode,
        ))
    }

    fn send(&self, generation: u64, frame: Frame) -> Result<(), PublishError> {
        let mut state = self.lock();
        if state.generation != generation || !state.publishing {
            return Err(PublishError::Replaced);
        }
        state.last_pts = state.last_pts.max(frame.pts);
        let has_video = self.has_video();
        let max_bytes = self.settings.gop_cache_max_bytes;
        let mut derived = Vec::new();
        if frame.track() == Track::Audio {
            let wanted = state.wants_aac();
            let state = &mut *state;
            state
                .audio
                .route(&frame, wanted, &self.key, &self.stats, &mut derived);
        }
        state
            .gop
            .push(&frame, Renditions::BOTH, has_video, max_bytes);
        let mut finished = state.deliver(&frame, Renditions::BOTH, has_video, &self.stats);
        for aac in &derived {
            state.gop.push(aac, Renditions::AAC, has_video, max_bytes);
            finished += state.deliver(aac, Renditions::AAC, has_video, &self.stats);
        }
        drop(state);
        self.count_out(finished);
        Ok(())
    }

    pub(crate) fn snapshot(&self) -> StreamSnapshot {
        let state = self.lock();
        let info = state.info.clone();
        let takes = |mode: AudioMode| state.takes(mode);
        let mut audio_out = Vec::new();
        for mode in [AudioMode::Passthrough, AudioMode::Aac] {
            let out = info.audio.and_then(|codec| mode.codec_out(codec));
            if let Some(codec) = out.filter(|c| takes(mode) && !audio_out.contains(c)) {
                audio_out.push(codec);
            }
        }
        drop(state);
        let s = &self.stats;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let outputs = s.outputs();
        let uptime = self.started.elapsed().as_secs_f64();
        let video_frames = load(&s.video_frames);
        let span = load(&s.last_video_pts).saturating_sub(load(&s.first_video_pts));
        let fps = if span > 0 && video_frames > 1 {
            (video_frames - 1) as f64 * 1000.0 / span as f64
        } else {
            0.0
        };
        StreamSnapshot {
            device: self.key.device.to_string(),
            channel: self.key.channel.0,
            kind: self.key.kind,
            video_codec: info.video,
            audio_codec: info.audio,
            audio_codec_out: audio_out,
            audio_undecodable: load(&s.audio_undecodable),
            width: info.resolution.map(|r| r.0),
            height: info.resolution.map(|r| r.1),
            fps: (fps * 100.0).round() / 100.0,
            bitrate_kbps: if uptime > 0.0 {
                ((load(&s.bytes_in) as f64 * 8.0 / 1000.0 / uptime) * 10.0).round() / 10.0
            } else {
                0.0
            },
            viewers: load(&s.viewers),
            frames_in: load(&s.frames_in),
            video_frames,
            audio_frames: load(&s.audio_frames),
            bytes_in: load(&s.bytes_in),
            bytes_out: load(&s.bytes_out),
            frames_dropped: load(&s.frames_dropped),
            viewers_dropped: load(&s.viewers_dropped),
            viewers_by_output: outputs
                .iter()
                .filter(|o| o.viewers > 0)
                .map(|o| (o.output, o.viewers))
                .collect(),
            viewers_dropped_by_output: outputs
                .iter()
                .filter(|o| o.dropped > 0)
                .map(|o| (o.output, o.dropped))
                .collect(),
            resyncs: load(&s.resyncs),
            uptime_secs: (uptime * 10.0).round() / 10.0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, StreamState> {
        // Every critical section leaves the state consistent, so poison is harmless.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl GopCache {
    fn push(&mut self, frame: &Frame, renditions: Renditions, has_video: bool, max_bytes: usize) {
        if frame.is_key {
            self.frames.clear();
            self.bytes = 0;
            self.overflowed = false;
        } else if self.frames.is_empty() || self.overflowed || !has_video {
            // Nothing to start from yet (or audio-only: readers start anywhere).
            return;
        }
        if self.bytes + frame.data.len() > max_bytes {
            self.frames.clear();
            self.bytes = 0;
            self.overflowed = true;
            return;
        }
        self.bytes += frame.data.len();
        self.frames.push((frame.clone(), renditions));
    }
}

impl Publisher {
    pub(crate) fn new(hub: Hub, stream: Arc<Stream>, generation: u64) -> Publisher {
        Publisher {
            hub,
            stream,
            generation,
            unflushed: AtomicBool::new(false),
        }
    }

    /// The stream this publisher feeds.
    pub fn key(&self) -> &StreamKey {
        self.stream.key()
    }

    /// The highest timestamp published on this stream so far (a replacing publisher
    /// continues from it).
    pub fn last_pts(&self) -> u64 {
        self.stream.lock().last_pts
    }

    /// Publishes a frame to every reader and the GOP cache. Never waits for readers.
    pub fn send(&self, frame: Frame) -> Result<(), PublishError> {
        let stats = self.stream.stats();
        stats.frames_in.fetch_add(1, Ordering::Relaxed);
        match frame.track() {
            Track::Video => {
                if stats.video_frames.fetch_add(1, Ordering::Relaxed) == 0 {
                    stats.first_video_pts.store(frame.pts, Ordering::Relaxed);
                }
                stats.last_video_pts.store(frame.pts, Ordering::Relaxed);
            }
            Track::Audio => {
                stats.audio_frames.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.unflushed.store(true, Ordering::Relaxed);
        self.stream.send(self.generation, frame)
    }

    /// Records the video codec and picture size (from a new SPS). Listeners hear of it
    /// ([`HubEvent::MediaChanged`]) when this changes what is known.
    pub fn set_video(&self, codec: Codec, resolution: Option<(u32, u32)>) {
        self.stream.has_video.store(true, Ordering::Relaxed);
        self.update_info(|info| {
            info.video = Some(codec);
            if resolution.is_some() {
                info.resolution = resolution;
            }
        });
    }

    /// Records the audio codec (an event, as for [`Publisher::set_video`]).
    pub fn set_audio(&self, codec: Codec) {
        self.update_info(|info| info.audio = Some(codec));
    }

    /// Applies `change` to the media info; tells listeners if it changed anything.
    fn update_info(&self, change: impl FnOnce(&mut MediaInfo)) {
        let mut state = self.stream.lock();
        let before = state.info.clone();
        change(&mut state.info);
        if state.info == before {
            return;
        }
        let info = state.info.clone();
        drop(state);
        // No listener is a normal state.
        let _ = self.stream.events_tx.send(HubEvent::MediaChanged {
            key: self.stream.key.clone(),
            info,
        });
    }

    /// Ends a batch of frames (all that one read from the device brought): sinks write
    /// what they hold. Call after each read that published frames; cheap otherwise.
    pub fn flush(&self) {
        if self.unflushed.swap(false, Ordering::Relaxed) {
            self.stream.flush();
        }
    }

    /// Adds wire bytes received for this stream.
    pub fn add_bytes_in(&self, n: u64) {
        self.stream.stats().bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds frames ingest dropped (gaps, orphans, oversize).
    pub fn add_dropped(&self, n: u64) {
        self.stream
            .stats()
            .frames_dropped
            .fetch_add(n, Ordering::Relaxed);
    }

    /// Sets the connection's resync count.
    pub fn set_resyncs(&self, n: u64) {
        self.stream.stats().resyncs.store(n, Ordering::Relaxed);
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.hub.unpublish(&self.stream, self.generation);
    }
}
