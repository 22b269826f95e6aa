//! The stream hub: the only place streams live.
//!
//! A [`Hub`] is a cheap `Clone` handle. Streams are keyed by [`StreamKey`]; each has one
//! [`Publisher`] and any number of [`Reader`]s. The registry lock is held briefly and never
//! across `.await`; frames never pass through it. The hub names no protocol: outputs
//! subscribe, ingest publishes.

mod audio;
mod reader;
mod sink;
mod stream;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub use reader::{Reader, ViewerCount};
pub use sink::{Sink, SinkHandle};
pub use stream::{MediaInfo, Publisher, StreamStats, Tracks};

use crate::media::{AudioMode, Codec, StreamKey};
use stream::Stream;

/// Hub tuning, from the `[hub]` config section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubSettings {
    /// Bytes of live frames a reader may have queued; past it, it skips to the next key
    /// frame.
    pub reader_max_bytes: usize,
    /// How long a reader's oldest queued frame may wait; past it, it skips to the next key
    /// frame.
    pub reader_max_lag: Duration,
    /// Largest GOP cache per stream in bytes; past it new readers wait for the next key frame.
    pub gop_cache_max_bytes: usize,
}

impl Default for HubSettings {
    fn default() -> Self {
        HubSettings {
            reader_max_bytes: 8 * 1024 * 1024,
            reader_max_lag: Duration::from_secs(5),
            gop_cache_max_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Stream lifecycle events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubEvent {
    /// A publisher appeared for a key that had none.
    StreamUp(StreamKey),
    /// The last publisher of a key went away.
    StreamDown(StreamKey),
    /// A reader is waiting for a key that nobody publishes yet (demand for the stream).
    ReaderWaiting(StreamKey),
    /// What is known about a stream's media (codecs, picture size) first became known or
    /// changed.
    MediaChanged {
        /// The stream.
        key: StreamKey,
        /// What is known now.
        info: MediaInfo,
    },
    /// The number of readers of a key (live or waiting) changed.
    ReadersChanged {
        /// The stream.
        key: StreamKey,
        /// Readers now.
        readers: u64,
    },
}

/// Hub events kept for listeners that fall behind.
const EVENT_QUEUE: usize = 16 * 1024;

/// Handle to the hub.
#[derive(Clone, Debug)]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    streams: Mutex<HashMap<StreamKey, Arc<Stream>>>,
    /// What is known of each stream's tracks before it shows them (see
    /// [`MediaInfo::expected`]).
    known_tracks: Mutex<HashMap<StreamKey, KnownTracks>>,
    events_tx: broadcast::Sender<HubEvent>,
    settings: HubSettings,
    /// The counters of streams no longer in the registry.
    retired: Mutex<HubTotals>,
}

/// Counters summed over every stream since the hub started (for metrics: they never go
/// down, though streams end).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubTotals {
    /// Frames published.
    pub frames_in: u64,
    /// Frames readers skipped or ingest dropped.
    pub frames_dropped: u64,
    /// JT/T 1078 bytes received.
    pub bytes_in: u64,
    /// Bytes written to readers.
    pub bytes_out: u64,
    /// Times ingest lost alignment.
    pub resyncs: u64,
    /// Device audio frames AAC outputs could not take.
    pub audio_undecodable: u64,
    /// Viewers dropped by every output.
    pub viewers_dropped: u64,
    /// Viewers dropped, by the output's label.
    pub viewers_dropped_by_output: BTreeMap<&'static str, u64>,
}

impl HubTotals {
    fn add(&mut self, stream: &Stream) {
        let s = stream.stats();
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        self.frames_in += load(&s.frames_in);
        self.frames_dropped += load(&s.frames_dropped);
        self.bytes_in += load(&s.bytes_in);
        self.bytes_out += load(&s.bytes_out);
        self.resyncs += load(&s.resyncs);
        self.audio_undecodable += load(&s.audio_undecodable);
        self.viewers_dropped += load(&s.viewers_dropped);
        for output in s.outputs() {
            *self
                .viewers_dropped_by_output
                .entry(output.output)
                .or_default() += output.dropped;
        }
    }
}

/// Streams whose tracks are kept (about 100 bytes each); past it, an arbitrary one is
/// forgotten for each new one.
const KNOWN_TRACKS_KEPT: usize = 65_536;

/// What the hub knows of a stream's tracks before the stream shows them.
#[derive(Debug, Clone, Copy, Default)]
struct KnownTracks {
    /// What the pull request in force narrowed the stream to (video only, or audio only).
    requested: Option<Tracks>,
    /// What the stream carried when it last ended, in a session no request narrowed.
    past: Option<Tracks>,
}

/// A snapshot of one stream for the API.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StreamSnapshot {
    /// Canonical device id.
    pub device: String,
    /// Logical channel.
    pub channel: u8,
    /// `live` or `playback`.
    pub kind: crate::media::StreamKind,
    /// Video codec, once seen.
    pub video_codec: Option<Codec>,
    /// Audio codec the device sends, once seen.
    pub audio_codec: Option<Codec>,
    /// Audio codecs the stream's readers get now: the device's (outputs passing it
    /// through) and `aac` (outputs taking AAC, transcoded once for all of them).
    pub audio_codec_out: Vec<Codec>,
    /// Device audio frames that could not be decoded for AAC outputs (dropped; video goes
    /// on).
    pub audio_undecodable: u64,
    /// Picture width from the SPS.
    pub width: Option<u32>,
    /// Picture height from the SPS.
    pub height: Option<u32>,
    /// Video frames per second on the stream clock.
    pub fps: f64,
    /// Incoming bitrate in kbit/s since the stream started.
    pub bitrate_kbps: f64,
    /// Readers attached now.
    pub viewers: u64,
    /// Viewers by the label their output counts them as (outputs with none left out).
    /// An output that republishes (a push) may count its reader here though it is not
    /// among `viewers`.
    pub viewers_by_output: BTreeMap<&'static str, u64>,
    /// Frames published.
    pub frames_in: u64,
    /// Video frames published.
    pub video_frames: u64,
    /// Audio frames published.
    pub audio_frames: u64,
    /// JT/T 1078 bytes received from the device.
    pub bytes_in: u64,
    /// Bytes written to readers.
    pub bytes_out: u64,
    /// Frames readers skipped because they fell behind, plus frames ingest dropped.
    pub frames_dropped: u64,
    /// Viewers an output dropped because they fell too far behind (see
    /// docs/reliability.md, "HTTP viewers").
    pub viewers_dropped: u64,
    /// Of those, by the output that dropped them (outputs that dropped none left out).
    pub viewers_dropped_by_output: BTreeMap<&'static str, u64>,
    /// Times ingest lost alignment on the wire.
    pub resyncs: u64,
    /// Seconds since the stream came up.
    pub uptime_secs: f64,
}

impl StreamSnapshot {
    /// The viewers `output` counts now.
    pub fn viewers_of(&self, output: &str) -> u64 {
        self.viewers_by_output.get(output).copied().unwrap_or(0)
    }

    /// The viewers `output` dropped.
    pub fn viewers_dropped_of(&self, output: &str) -> u64 {
        self.viewers_dropped_by_output
            .get(output)
            .copied()
            .unwrap_or(0)
    }
}

impl Hub {
    /// An empty hub.
    pub fn new(settings: HubSettings) -> Hub {
        // a thousand devices and viewers arriving at once make several events each; a
        // listener that still falls behind resynchronises from `list` (no event is needed
        // for correctness, they only save work)
        let (events_tx, _) = broadcast::channel(EVENT_QUEUE);
        Hub {
            inner: Arc::new(Inner {
                streams: Mutex::new(HashMap::new()),
                known_tracks: Mutex::new(HashMap::new()),
                events_tx,
                settings,
                retired: Mutex::new(HubTotals::default()),
            }),
        }
    }

    /// Becomes the publisher of `key`. A previous publisher is replaced: its `on_replaced`
    /// token is cancelled and its sends fail; readers stay attached.
    pub fn publish(&self, key: StreamKey, on_replaced: CancellationToken) -> Publisher {
        let mut streams = self.registry();
        let stream = Arc::clone(
            streams
                .entry(key.clone())
                .or_insert_with(|| self.new_stream(&key)),
        );
        let (generation, was_publishing) = stream.take_over(on_replaced);
        drop(streams);
        if !was_publishing {
            // No receiver is a normal state (nobody listens for events yet).
            let _ = self.inner.events_tx.send(HubEvent::StreamUp(key));
        }
        Publisher::new(self.clone(), stream, generation)
    }

    /// A reader of `key` taking the device's audio as it came, starting at the latest key
    /// frame; `None` if nothing publishes it.
    pub fn subscribe(&self, key: &StreamKey) -> Option<Reader> {
        self.subscribe_as(key, AudioMode::Passthrough)
    }

    /// [`Hub::subscribe`], taking the stream's audio as `audio` says.
    pub fn subscribe_as(&self, key: &StreamKey, audio: AudioMode) -> Option<Reader> {
        let stream = self.registry().get(key).map(Arc::clone)?;
        if !stream.is_publishing() {
            return None;
        }
        stream.reader(audio)
    }

    /// Like [`Hub::subscribe`], but waits up to `timeout` for the stream to come up. A
    /// waiting reader is attached before the publisher arrives, so it gets every frame
    /// from the first one.
    pub async fn subscribe_or_wait(&self, key: &StreamKey, timeout: Duration) -> Option<Reader> {
        self.subscribe_or_wait_as(key, timeout, AudioMode::Passthrough)
            .await
    }

    /// [`Hub::subscribe_or_wait`], taking the stream's audio as `audio` says.
    pub async fn subscribe_or_wait_as(
        &self,
        key: &StreamKey,
        timeout: Duration,
        audio: AudioMode,
    ) -> Option<Reader> {
        let mut events = self.inner.events_tx.subscribe();
        let mut waiting = {
            let mut streams = self.registry();
            let stream = Arc::clone(
                streams
                    .entry(key.clone())
                    .or_insert_with(|| self.new_stream(key)),
            );
            let reader = stream.reader(audio)?;
            Waiting {
                hub: self,
                stream,
                reader: Some(reader),
            }
        };
        if waiting.stream.is_publishing() {
            return waiting.reader.take();
        }
        let _ = self
            .inner
            .events_tx
            .send(HubEvent::ReaderWaiting(key.clone()));
        let stream = Arc::clone(&waiting.stream);
        let up = async {
            loop {
                match events.recv().await {
                    Ok(HubEvent::StreamUp(up)) if &up == key => return true,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        if stream.is_publishing() {
                            return true;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return false,
                }
            }
        };
        if tokio::time::timeout(timeout, up).await == Ok(true) {
            return waiting.reader.take();
        }
        // `waiting` drops the reader and the stream entry it made; so does dropping this
        // future (a viewer that left while waiting)
        None
    }

    /// Stream up/down events.
    pub fn events(&self) -> broadcast::Receiver<HubEvent> {
        self.inner.events_tx.subscribe()
    }

    /// What the pull request in force for `key` narrowed it to (`None`: not narrowed, both
    /// tracks asked for). Readers attaching from now on expect those tracks; a narrowed
    /// session does not go on record as the device's tracks.
    pub fn expect_tracks(&self, key: &StreamKey, requested: Option<Tracks>) {
        self.update_known_tracks(key, |known| known.requested = requested);
    }

    /// What is known of `key`'s media, if it has a publisher.
    pub fn live_media(&self, key: &StreamKey) -> Option<MediaInfo> {
        let stream = self.registry().get(key).map(Arc::clone)?;
        stream.live_media()
    }

    /// True if `key` has a publisher.
    pub fn is_live(&self, key: &StreamKey) -> bool {
        self.registry().get(key).is_some_and(|s| s.is_publishing())
    }

    /// The snapshot of one live stream.
    pub fn snapshot(&self, key: &StreamKey) -> Option<StreamSnapshot> {
        let stream = self
            .registry()
            .get(key)
            .filter(|s| s.is_publishing())
            .map(Arc::clone)?;
        Some(stream.snapshot())
    }

    /// Snapshots of all live streams, sorted by key.
    pub fn list(&self) -> Vec<StreamSnapshot> {
        let mut streams: Vec<Arc<Stream>> = self
            .registry()
            .values()
            .filter(|s| s.is_publishing())
            .map(Arc::clone)
            .collect();
        streams.sort_by(|a, b| a.key().cmp(b.key()));
        streams.iter().map(|s| s.snapshot()).collect()
    }

    /// Counters summed over every stream since the hub started: the streams in the
    /// registry now and those that left it.
    pub fn totals(&self) -> HubTotals {
        // both under the registry lock (taken before the retired totals, as in `retire`), so
        // a stream leaving meanwhile is counted once
        let registry = self.registry();
        let streams: Vec<Arc<Stream>> = registry.values().map(Arc::clone).collect();
        let mut totals = self.retired().clone();
        drop(registry);
        for stream in &streams {
            totals.add(stream);
        }
        totals
    }

    /// Streams in the registry (live or waited for).
    pub fn stream_count(&self) -> usize {
        self.registry().len()
    }

    /// Adds the counters of a stream leaving the registry to the retired totals.
    fn retire(&self, stream: &Stream) {
        self.retired().add(stream);
    }

    fn retired(&self) -> MutexGuard<'_, HubTotals> {
        // additions only: consistent after a panic
        self.inner
            .retired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Reader counts of every stream that has readers, live or waiting (to resynchronise
    /// after missing events).
    pub fn reader_counts(&self) -> Vec<(StreamKey, u64)> {
        self.registry()
            .values()
            .map(|s| {
                (
                    s.key().clone(),
                    s.stats().viewers.load(std::sync::atomic::Ordering::Relaxed),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Removes `key` if `generation` still publishes it (called when a publisher drops).
    fn unpublish(&self, stream: &Arc<Stream>, generation: u64) {
        let mut streams = self.registry();
        if !stream.release(generation) {
            return;
        }
        if streams
            .get(stream.key())
            .is_some_and(|current| Arc::ptr_eq(current, stream))
        {
            streams.remove(stream.key());
            self.retire(stream);
        }
        drop(streams);
        if let Some(tracks) = stream.tracks_on_record() {
            // a session narrowed by its request says nothing of the device's other track
            self.update_known_tracks(stream.key(), |known| {
                if known.requested.is_none() {
                    known.past = Some(tracks);
                }
            });
        }
        let _ = self
            .inner
            .events_tx
            .send(HubEvent::StreamDown(stream.key().clone()));
    }

    /// Removes a stream nobody publishes or waits for (a viewer's wait timed out).
    fn discard_if_unused(&self, stream: &Arc<Stream>) {
        let mut streams = self.registry();
        if !stream.is_publishing()
            && !stream.has_readers()
            && streams
                .get(stream.key())
                .is_some_and(|current| Arc::ptr_eq(current, stream))
        {
            streams.remove(stream.key());
            self.retire(stream);
        }
    }

    /// A new stream entry for `key`, with the tracks it is expected to carry.
    fn new_stream(&self, key: &StreamKey) -> Arc<Stream> {
        let expected = self
            .known_tracks()
            .get(key)
            .and_then(|known| known.requested.or(known.past));
        Arc::new(Stream::new(
            key.clone(),
            self.inner.settings,
            self.inner.events_tx.clone(),
            expected,
        ))
    }

    /// Changes what is known of `key`'s tracks; an entry left knowing nothing is dropped
    /// (and makes no room: only a new entry kept evicts another).
    fn update_known_tracks(&self, key: &StreamKey, change: impl FnOnce(&mut KnownTracks)) {
        let mut all = self.known_tracks();
        let mut known = all.get(key).copied().unwrap_or_default();
        change(&mut known);
        if known.requested.is_none() && known.past.is_none() {
            all.remove(key);
            return;
        }
        if all.len() >= KNOWN_TRACKS_KEPT && !all.contains_key(key) {
            if let Some(any) = all.keys().next().cloned() {
                all.remove(&any);
            }
        }
        all.insert(key.clone(), known);
    }

    fn known_tracks(&self) -> MutexGuard<'_, HashMap<StreamKey, KnownTracks>> {
        // single inserts and removes: still consistent after a panic
        self.inner
            .known_tracks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn registry(&self) -> MutexGuard<'_, HashMap<StreamKey, Arc<Stream>>> {
        // A panic while holding this lock leaves the map consistent (single inserts and
        // removes), so a poisoned lock is still usable.
        self.inner
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A reader waiting for its stream to come up. Dropped without the reader taken out (the
/// wait timed out, or the waiter went away), it removes the stream entry the wait made, so
/// requests for streams that never come cannot grow the registry.
struct Waiting<'a> {
    hub: &'a Hub,
    stream: Arc<Stream>,
    reader: Option<Reader>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        drop(self.reader.take());
        self.hub.discard_if_unused(&self.stream);
    }
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new(HubSettings::default())
    }
}

#[cfg(test)]
mod tests;
