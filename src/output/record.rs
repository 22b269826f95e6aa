//! Recordings on object storage: live streams cut into fragmented MP4 segments, stored in a
//! folder or an S3 bucket, found by time and played back over HTTP.
//!
//! ```text
//! hub reader (AAC) ──► recorder (sans-IO: frames → fMP4 objects) ──► bounded queue
//!   ──► uploader task: spool folder ──► object_store (local folder / S3), retried
//! HTTP: /api/records, /record/{device}_{channel}.m3u8 | .mp4, /record/o/{key} ◄── store
//! ```
//!
//! A recording is a hub reader that does not count as a viewer (recording never pulls a
//! device, nor keeps one pulled); it owns nothing of the stream. Owns: which streams are
//! being recorded, the recording tasks, the uploader. Must not: block ingest or viewers
//! (an upload waits in the spool, a slow recorder is a slow reader the hub skips ahead).

mod fmp4;
mod keys;
mod playback;
mod recorder;
mod retention;
mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use object_store::ObjectStore;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use recorder::{FinishedSegment, RecordedObject, Recorder};
pub use store::UploadStats;

use crate::auth::PlayAccess;
use crate::config::RecordSettings;
use crate::hub::{Hub, HubEvent, Reader};
use crate::media::{AudioMode, StreamKey, StreamKind};
use store::Upload;

/// Objects waiting between the recorders and the uploader (which only spools them to a
/// local folder, so the queue is short-lived).
const UPLOAD_QUEUE: usize = 64;

/// The recording side (cheap to clone).
#[derive(Clone, Debug)]
pub struct Recordings {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    hub: Hub,
    settings: RecordSettings,
    store: Arc<dyn ObjectStore>,
    uploads_tx: mpsc::Sender<Upload>,
    stats: Arc<UploadStats>,
    plays: PlayAccess,
    /// The streams being recorded now.
    active: Mutex<HashMap<StreamKey, Active>>,
    tasks: TaskTracker,
    /// The recordings' tasks (also on `tasks`): the uploader waits for them at a stop.
    recording_tasks: TaskTracker,
    shutdown: CancellationToken,
}

#[derive(Debug)]
struct Active {
    /// Unix ms the recording started.
    since_ms: u64,
    /// Ends this recording.
    stop: CancellationToken,
}

impl Recordings {
    /// Opens the store, starts the uploader and (with `record.auto`) records the matching
    /// live streams from now on.
    pub fn start(
        settings: &RecordSettings,
        hub: Hub,
        plays: PlayAccess,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Recordings> {
        let target = store::open(settings)?;
        let store = Arc::clone(&target.store);
        let (uploads_tx, uploads_rx) = mpsc::channel(UPLOAD_QUEUE);
        let stats = Arc::new(UploadStats::default());
        let recording_tasks = TaskTracker::new();
        tasks.spawn(store::run_uploader(
            target,
            settings.spool_max_bytes.get(),
            uploads_rx,
            Arc::clone(&stats),
            recording_tasks.clone(),
            shutdown.clone(),
        ));
        let recordings = Recordings {
            inner: Arc::new(Inner {
                hub,
                settings: settings.clone(),
                store,
                uploads_tx,
                stats,
                plays,
                active: Mutex::new(HashMap::new()),
                tasks: tasks.clone(),
                recording_tasks,
                shutdown,
            }),
        };
        if !settings.keep.is_zero() {
            tasks.spawn(retention::run(
                Arc::clone(&recordings.inner.store),
                settings.keep,
                settings.sweep_interval,
                recordings.inner.shutdown.clone(),
            ));
        }
        if settings.auto != crate::config::RecordAuto::Off {
            let auto = recordings.clone();
            tasks.spawn(async move { auto.run_auto().await });
        }
        Ok(recordings)
    }

    /// Whether `key` is being recorded now.
    pub fn is_recording(&self, key: &StreamKey) -> bool {
        self.active().contains_key(key)
    }

    /// Since when (Unix ms) `key` is being recorded, if it is.
    pub fn recording_since(&self, key: &StreamKey) -> Option<u64> {
        self.active().get(key).map(|active| active.since_ms)
    }

    /// The uploader's counters.
    pub fn stats(&self) -> &UploadStats {
        &self.inner.stats
    }

    /// Starts recording the live stream `key` (from the GOP cache's key frame); false if
    /// it is not live or already recorded.
    pub fn record(&self, key: &StreamKey) -> bool {
        let mut active = self.active();
        if active.contains_key(key) {
            return false;
        }
        let Some(reader) = self.inner.hub.subscribe_as(key, AudioMode::Aac) else {
            return false;
        };
        // the one place recording meets the viewer count: a recording is not a viewer
        let reader = reader.uncounted();
        let stop = self.inner.shutdown.child_token();
        active.insert(
            key.clone(),
            Active {
                since_ms: unix_ms(),
                stop: stop.clone(),
            },
        );
        drop(active);
        info!(stream = %key, "record: recording");
        let this = self.clone();
        let recording = self
            .inner
            .recording_tasks
            .track_future(async move { this.run_recording(reader, stop).await });
        self.inner.tasks.spawn(recording);
        true
    }

    /// Stops recording `key` (its last segment is stored) unless `record.auto` names it;
    /// true if a recording was stopped.
    pub fn stop(&self, key: &StreamKey) -> bool {
        if self.is_auto(key) {
            return false;
        }
        match self.active().get(key) {
            Some(active) => {
                active.stop.cancel();
                true
            }
            None => false,
        }
    }

    /// The playback routes (`/record/…`), signed like play URLs.
    pub fn routes(&self) -> Router {
        playback::routes(self.clone())
    }

    /// The API route (`/api/records`), behind the API guard.
    pub fn api_routes(&self) -> Router {
        playback::api_routes(self.clone())
    }

    /// Records the live streams `record.auto` names as they come up.
    async fn run_auto(self) {
        let mut events = self.inner.hub.events();
        self.record_matching_live();
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                () = self.inner.shutdown.cancelled() => return,
            };
            match event {
                Ok(HubEvent::StreamUp(key)) => {
                    if self.is_auto(&key) {
                        self.record(&key);
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => self.record_matching_live(),
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    fn record_matching_live(&self) {
        for stream in self.inner.hub.list() {
            let Ok(device) = crate::media::DeviceId::parse(&stream.device) else {
                continue;
            };
            let key = StreamKey::new(device, crate::media::Channel(stream.channel), stream.kind);
            if self.is_auto(&key) {
                self.record(&key);
            }
        }
    }

    /// Whether `record.auto` names `key` (a live stream).
    pub fn is_auto(&self, key: &StreamKey) -> bool {
        key.kind == StreamKind::Live
            && self
                .inner
                .settings
                .auto
                .matches(key.device.as_str(), key.channel.0)
    }

    /// One recording: the reader's frames through a recorder until the stream ends or
    /// the gateway stops; each finished segment (and its init) to the uploader.
    async fn run_recording(self, mut reader: Reader, stop: CancellationToken) {
        let key = reader.key().clone();
        let mut recorder = Recorder::new(
            key.device.as_str(),
            key.channel.0,
            self.inner.settings.segment,
        );
        loop {
            let frame = tokio::select! {
                frame = reader.recv() => frame,
                () = stop.cancelled() => None,
            };
            let Some(frame) = frame else { break };
            match recorder.push(&frame, unix_ms()) {
                Ok(Some(segment)) => self.upload(segment).await,
                Ok(None) => {}
                Err(error) => {
                    warn!(stream = %key, %error, "record: a segment could not be written")
                }
            }
        }
        drop(reader);
        // at once: a device that reconnects right away is recorded anew while this
        // session's last segment is still on its way
        let finishing = &self.inner.stats.finishing;
        finishing.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.active().remove(&key);
        match recorder.finish() {
            Ok(Some(segment)) => self.upload(segment).await,
            Ok(None) => {}
            Err(error) => {
                warn!(stream = %key, %error, "record: the last segment could not be written")
            }
        }
        finishing.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        info!(stream = %key, skipped = recorder.skipped(), "record: recording ended");
    }

    async fn upload(&self, segment: FinishedSegment) {
        for object in segment.init.into_iter().chain([segment.segment]) {
            let upload = Upload {
                key: object.key,
                data: object.data,
            };
            // the uploader only spools; waiting here slows this reader, never ingest
            let queued = &self.inner.stats.queued;
            queued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if self.inner.uploads_tx.send(upload).await.is_err() {
                queued.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                warn!("record: the uploader has stopped; a segment is lost");
            }
        }
    }

    fn active(&self) -> MutexGuard<'_, HashMap<StreamKey, Active>> {
        // single inserts and removes: consistent after a panic
        self.inner
            .active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;

/// Unix ms as RFC 3339 with milliseconds.
pub(crate) fn rfc3339(unix_ms: u64) -> String {
    keys::rfc3339(unix_ms)
}

/// Unix time in ms (0 if the clock is before 1970).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
