//! RTMP push: publishes a hub stream to an RTMP server (SRS, nginx-rtmp) so that the
//! server's players (HTTP-FLV, HLS, WebRTC) and edge clusters can serve it.
//!
//! A push is one more hub reader (not counted as a viewer: control counts who wants the
//! push, so a push never makes a device push again by itself): it connects and publishes first, then subscribes, so it
//! starts from the GOP cache and the server has a key frame at once. Its frames go through
//! the same [`FlvMuxer`] the HTTP-FLV viewers use (H.265 as Enhanced RTMP, FourCC `hvc1`),
//! and its tags become RTMP messages (`rtmp_push/connection.rs`). A push that cannot keep up loses
//! frames in its reader's bounded queue and restarts at the next key frame (counted in the
//! stream's `frames_dropped`); the publisher and other viewers never wait for it.
//!
//! [`RtmpPusher`] is the handle control (and later the SRS hook bridge) starts and stops
//! pushes through. Each push runs in its own task, tracked by the gateway's `TaskTracker`:
//! a refused, lost or stalled connection is retried with a doubling backoff, a bounded
//! number of times in a row; the push ends when its stream ends, when it is stopped, or
//! when it gives up. Every change of state is reported as a [`PushEvent`].
//!
//! Owns: the set of running pushes (by stream key, with their target and stop token). Must
//! not: keep stream state (that is the hub's) or decide who wants a push (control does).

mod connection;
mod interleave;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use self::interleave::Interleaver;
use super::shared::flv_mux::FlvMuxer;
use crate::codec::flv::HevcSignal;
use crate::config::RtmpSettings;
use crate::hub::Hub;
use crate::media::{AudioMode, Frame, StreamKey};
use connection::Connection;

/// Muxed bytes sent to the server in one write at most.
const MAX_WRITE: usize = 256 * 1024;

/// Events kept for control; past it, state changes are dropped (logged) and the next one
/// brings the status up to date.
const EVENT_QUEUE: usize = 4096;

/// How long a stopping push waits for its goodbye (deleteStream) to be written.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Push tuning, from `[rtmp]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushSettings {
    /// Longest connect + handshake + connect + publish.
    pub connect_timeout: Duration,
    /// A write the server takes nothing of for this long fails.
    pub stall_timeout: Duration,
    /// First retry wait; doubles per failure.
    pub retry_backoff: Duration,
    /// Longest retry wait.
    pub retry_backoff_max: Duration,
    /// Failures in a row before giving up.
    pub max_attempts: u32,
    /// The audio the push sends (`audio.rtmp`: AAC by default, what SRS remuxes).
    pub audio: AudioMode,
}

impl PushSettings {
    /// From the `[rtmp]` section.
    pub fn new(settings: &RtmpSettings, audio: AudioMode) -> PushSettings {
        PushSettings {
            connect_timeout: settings.connect_timeout,
            stall_timeout: settings.stall_timeout,
            retry_backoff: settings.retry_backoff,
            retry_backoff_max: settings.retry_backoff_max.max(settings.retry_backoff),
            max_attempts: u32::try_from(settings.max_attempts.get()).unwrap_or(u32::MAX),
            audio,
        }
    }

    /// The wait after the `failures`-th failure in a row.
    pub fn backoff(&self, failures: u32) -> Duration {
        let doubled = self
            .retry_backoff
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16));
        doubled.min(self.retry_backoff_max)
    }
}

/// Where a push goes: `rtmp://host[:port]/app[/…]/stream[?query]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtmpTarget {
    host: String,
    port: u16,
    /// The application (everything between the host and the last `/`).
    pub app: String,
    /// The stream name (the last path segment, with its query string).
    pub stream: String,
}

impl RtmpTarget {
    /// Parses a target URL.
    pub fn parse(url: &str) -> Result<RtmpTarget, PushError> {
        let bad = |why: &str| PushError::BadUrl(format!("{url:?}: {why}"));
        let rest = url
            .strip_prefix("rtmp://")
            .ok_or_else(|| bad("expected rtmp://host[:port]/app/stream"))?;
        let (authority, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("no application and stream name"))?;
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| bad("the port is not a number from 1 to 65535"))?,
            ),
            None => (authority, 1935),
        };
        let (app, stream) = path
            .rsplit_once('/')
            .ok_or_else(|| bad("expected /app/stream after the host"))?;
        if host.is_empty() || app.is_empty() || stream.is_empty() || port == 0 {
            return Err(bad("host, application and stream name must not be empty"));
        }
        Ok(RtmpTarget {
            host: host.to_owned(),
            port,
            app: app.to_owned(),
            stream: stream.to_owned(),
        })
    }

    /// The stream name without its query string.
    pub fn stream_name(&self) -> &str {
        self.stream
            .split_once('?')
            .map_or(self.stream.as_str(), |(name, _)| name)
    }

    fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn tc_url(&self) -> String {
        format!("rtmp://{}:{}/{}", self.host, self.port, self.app)
    }
}

/// Why a push attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The target URL cannot be used.
    #[error("bad RTMP URL {0}")]
    BadUrl(String),
    /// No TCP connection to the server.
    #[error("cannot reach the RTMP server {0}")]
    Unreachable(String),
    /// The server refused the connect or the publish.
    #[error("the RTMP server refused: {0}")]
    Refused(String),
    /// The server closed the connection.
    #[error("the RTMP server closed the connection")]
    Closed,
    /// The server took nothing for the stall timeout.
    #[error("the RTMP server took nothing for {0:?}")]
    Stalled(Duration),
    /// Connecting and publishing took longer than the connect timeout.
    #[error("no publish within {0:?}")]
    Timeout(Duration),
    /// The server sent something the session could not handle.
    #[error("RTMP protocol error: {0}")]
    Protocol(String),
    /// A socket error.
    #[error("socket error: {0}")]
    Io(std::io::Error),
}

/// What went wrong, as a stable word for programs (retained status, ERROR replies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PushErrorKind {
    /// [`PushError::BadUrl`].
    BadUrl,
    /// [`PushError::Unreachable`].
    Unreachable,
    /// [`PushError::Refused`].
    Refused,
    /// [`PushError::Closed`] or a socket error.
    Closed,
    /// [`PushError::Stalled`].
    Stalled,
    /// [`PushError::Timeout`].
    Timeout,
    /// [`PushError::Protocol`].
    Protocol,
}

impl PushError {
    /// The stable word for this error.
    pub fn kind(&self) -> PushErrorKind {
        match self {
            PushError::BadUrl(_) => PushErrorKind::BadUrl,
            PushError::Unreachable(_) => PushErrorKind::Unreachable,
            PushError::Refused(_) => PushErrorKind::Refused,
            PushError::Closed | PushError::Io(_) => PushErrorKind::Closed,
            PushError::Stalled(_) => PushErrorKind::Stalled,
            PushError::Timeout(_) => PushErrorKind::Timeout,
            PushError::Protocol(_) => PushErrorKind::Protocol,
        }
    }
}

/// Where a push stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PushState {
    /// Connecting and publishing (`attempt` counts failures in a row, from 1).
    Connecting {
        /// Which try this is.
        attempt: u32,
    },
    /// The server accepted the publish; frames flow.
    Publishing,
    /// The last attempt failed; the next one starts after `retry_in_ms`.
    Retrying {
        /// Failures in a row so far.
        attempt: u32,
        /// What went wrong.
        error: PushErrorKind,
        /// In words.
        message: String,
        /// Wait before the next attempt.
        retry_in_ms: u64,
    },
    /// Gave up after `attempts` failures in a row.
    Failed {
        /// Failures in a row.
        attempts: u32,
        /// What went wrong last.
        error: PushErrorKind,
        /// In words.
        message: String,
    },
    /// Ended: the stream ended, or the push was stopped.
    Stopped {
        /// `stream_ended` or `stopped`.
        reason: &'static str,
    },
}

/// A push changed state.
#[derive(Debug, Clone, PartialEq)]
pub struct PushEvent {
    /// The stream pushed.
    pub key: StreamKey,
    /// Where to.
    pub url: String,
    /// Its state now.
    pub state: PushState,
}

/// The handle pushes are started and stopped through (cheap to clone).
#[derive(Debug, Clone)]
pub struct RtmpPusher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    hub: Hub,
    settings: PushSettings,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    events_tx: mpsc::Sender<PushEvent>,
    jobs: Mutex<HashMap<StreamKey, Job>>,
    next_id: AtomicU64,
}

/// A running push.
#[derive(Debug)]
struct Job {
    id: u64,
    url: String,
    stop: CancellationToken,
}

impl RtmpPusher {
    /// A pusher whose pushes run on `tasks` and stop with `shutdown`; the receiver gets
    /// their state changes.
    pub fn new(
        hub: Hub,
        settings: PushSettings,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> (RtmpPusher, mpsc::Receiver<PushEvent>) {
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let pusher = RtmpPusher {
            inner: Arc::new(Inner {
                hub,
                settings,
                tasks,
                shutdown,
                events_tx,
                jobs: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
            }),
        };
        (pusher, events_rx)
    }

    /// Pushes `key` to `url` (a target URL, see [`RtmpTarget`]). A push of `key` already
    /// running to the same URL goes on (`false`); one to another URL is replaced.
    pub fn start(&self, key: &StreamKey, url: &str) -> Result<bool, PushError> {
        let target = RtmpTarget::parse(url)?;
        let mut jobs = self.inner.jobs();
        if let Some(job) = jobs.get(key) {
            if job.url == url {
                return Ok(false);
            }
            job.stop.cancel();
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let stop = self.inner.shutdown.child_token();
        jobs.insert(
            key.clone(),
            Job {
                id,
                url: url.to_owned(),
                stop: stop.clone(),
            },
        );
        drop(jobs);
        info!(stream = %key, url, "rtmp push starting");
        let push = Push {
            inner: Arc::clone(&self.inner),
            key: key.clone(),
            url: url.to_owned(),
            target,
            stop,
        };
        self.inner.tasks.spawn(async move {
            push.run().await;
            push.inner.remove(&push.key, id);
        });
        Ok(true)
    }

    /// Stops the push of `key`; `false` if none runs.
    pub fn stop(&self, key: &StreamKey) -> bool {
        let job = self.inner.jobs().remove(key);
        match job {
            Some(job) => {
                job.stop.cancel();
                info!(stream = %key, "rtmp push stopping");
                true
            }
            None => false,
        }
    }

    /// The target `key` is pushed to, if a push runs.
    pub fn target(&self, key: &StreamKey) -> Option<String> {
        self.inner.jobs().get(key).map(|job| job.url.clone())
    }

    /// Pushes running now.
    pub fn len(&self) -> usize {
        self.inner.jobs().len()
    }

    /// Whether no push runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn jobs(&self) -> MutexGuard<'_, HashMap<StreamKey, Job>> {
        // single inserts and removes: consistent after a panic
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets the job `id` of `key` (unless a newer one replaced it).
    fn remove(&self, key: &StreamKey, id: u64) {
        let mut jobs = self.jobs();
        if jobs.get(key).is_some_and(|job| job.id == id) {
            jobs.remove(key);
        }
    }
}

/// How one publishing connection ended without an error.
enum Ended {
    /// The stream ended.
    Stream,
    /// The push was stopped.
    Stopped,
}

/// One push's task.
struct Push {
    inner: Arc<Inner>,
    key: StreamKey,
    url: String,
    target: RtmpTarget,
    stop: CancellationToken,
}

impl Push {
    /// Attempts until the stream ends, the push is stopped, or too many fail in a row.
    async fn run(&self) {
        let settings = self.inner.settings;
        let mut failures = 0u32;
        loop {
            if !self.inner.hub.is_live(&self.key) {
                return self.report(PushState::Stopped {
                    reason: "stream_ended",
                });
            }
            self.report(PushState::Connecting {
                attempt: failures + 1,
            });
            let mut published = false;
            let error = match self.publish_once(&mut published).await {
                Ok(Ended::Stream) => {
                    return self.report(PushState::Stopped {
                        reason: "stream_ended",
                    });
                }
                Ok(Ended::Stopped) => return self.report(PushState::Stopped { reason: "stopped" }),
                Err(error) => error,
            };
            // a connection that published starts the count again
            failures = if published { 1 } else { failures + 1 };
            let kind = error.kind();
            if failures >= settings.max_attempts || kind == PushErrorKind::BadUrl {
                warn!(stream = %self.key, url = self.url, %error, failures, "rtmp push gave up");
                return self.report(PushState::Failed {
                    attempts: failures,
                    error: kind,
                    message: error.to_string(),
                });
            }
            let wait = settings.backoff(failures);
            info!(stream = %self.key, url = self.url, %error, ?wait, "rtmp push retrying");
            self.report(PushState::Retrying {
                attempt: failures,
                error: kind,
                message: error.to_string(),
                retry_in_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            });
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.stop.cancelled() => {
                    return self.report(PushState::Stopped { reason: "stopped" });
                }
            }
        }
    }

    /// One connection: publish, then send the stream from its GOP cache on.
    async fn publish_once(&self, published: &mut bool) -> Result<Ended, PushError> {
        let timeout = self.inner.settings.connect_timeout;
        let opened = tokio::select! {
            opened = tokio::time::timeout(timeout, Connection::open(&self.target)) => opened,
            () = self.stop.cancelled() => return Ok(Ended::Stopped),
        };
        let mut connection = opened.map_err(|_| PushError::Timeout(timeout))??;
        let ended = self.send_stream(&mut connection, published).await;
        if ended.is_ok() {
            connection.close(CLOSE_WAIT).await;
        }
        ended
    }

    /// Frames from the hub to the server until the stream ends or the push stops.
    async fn send_stream(
        &self,
        connection: &mut Connection,
        published: &mut bool,
    ) -> Result<Ended, PushError> {
        // subscribed after the publish, so the server starts at the latest key frame
        let audio = self.inner.settings.audio;
        // not a viewer: who wants the push is counted by control (the push is counted as
        // its output's only, for metrics)
        let Some(mut reader) = self
            .inner
            .hub
            .subscribe_as(&self.key, audio)
            .map(|r| r.uncounted().counted_as(super::RTMP_OUTPUT))
        else {
            return Ok(Ended::Stream);
        };
        *published = true;
        self.report(PushState::Publishing);
        info!(stream = %self.key, url = self.url, "rtmp push publishing");
        let stall = self.inner.settings.stall_timeout;
        // audio a device starts later joins the push (RTMP announces no tracks up front)
        let mut muxer = FlvMuxer::new(reader.info(), audio)
            .with_hevc(HevcSignal::Enhanced)
            .with_late_audio();
        let mut out = BytesMut::new();
        // SRS needs the tracks in timestamp order; the AAC rendition trails the video
        let mut interleaver = (audio == AudioMode::Aac).then(Interleaver::default);
        let mut ready = Vec::new();
        let mut push =
            |frame: Frame, muxer: &mut FlvMuxer, out: &mut BytesMut| match &mut interleaver {
                Some(interleaver) => {
                    interleaver.push(frame, &mut ready);
                    for frame in ready.drain(..) {
                        muxer.push_into(&frame, out);
                    }
                }
                None => muxer.push_into(&frame, out),
            };
        loop {
            tokio::select! {
                frame = reader.recv() => {
                    let Some(frame) = frame else {
                        if let Some(interleaver) = &mut interleaver {
                            let mut rest = Vec::new();
                            interleaver.finish(&mut rest);
                            for frame in rest {
                                muxer.push_into(&frame, &mut out);
                            }
                        }
                        muxer.finish_into(&mut out);
                        connection.send_flv(out.split().freeze(), stall).await?;
                        debug!(stream = %self.key, "rtmp push: stream ended");
                        return Ok(Ended::Stream);
                    };
                    push(frame, &mut muxer, &mut out);
                    // what else is queued goes in the same write
                    while out.len() < MAX_WRITE {
                        match reader.try_recv() {
                            Some(frame) => push(frame, &mut muxer, &mut out),
                            None => break,
                        }
                    }
                    let bytes = out.split().freeze();
                    let n = bytes.len() as u64;
                    connection.send_flv(bytes, stall).await?;
                    reader.add_bytes_out(n);
                }
                served = connection.serve_input() => served?,
                () = self.stop.cancelled() => return Ok(Ended::Stopped),
            }
        }
    }

    fn report(&self, state: PushState) {
        let event = PushEvent {
            key: self.key.clone(),
            url: self.url.clone(),
            state,
        };
        if let Err(error) = self.inner.events_tx.try_send(event) {
            // control is gone (shutdown) or far behind: the next event brings it up to date
            debug!(stream = %self.key, %error, "rtmp push event dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_into_app_and_stream() {
        let t = RtmpTarget::parse("rtmp://127.0.0.1:19350/live/13800138000_1").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 19350));
        assert_eq!(
            (t.app.as_str(), t.stream.as_str()),
            ("live", "13800138000_1")
        );
        assert_eq!(t.tc_url(), "rtmp://127.0.0.1:19350/live");
        let t = RtmpTarget::parse("rtmp://srs/a/b/s?token=x").unwrap();
        assert_eq!(
            (t.port, t.app.as_str(), t.stream_name()),
            (1935, "a/b", "s")
        );
        for bad in [
            "http://srs/live/s",
            "rtmp://srs",
            "rtmp://srs/live",
            "rtmp://srs:x/live/s",
            "rtmp://srs/live/",
            "rtmp://:1935/live/s",
        ] {
            let error = RtmpTarget::parse(bad).unwrap_err();
            assert_eq!(error.kind(), PushErrorKind::BadUrl, "{bad}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let settings = PushSettings {
            connect_timeout: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(10),
            retry_backoff: Duration::from_millis(500),
            retry_backoff_max: Duration::from_secs(4),
            max_attempts: 8,
            audio: AudioMode::Aac,
        };
        let waits: Vec<u64> = (1..=6)
            .map(|n| settings.backoff(n).as_millis() as u64)
            .collect();
        assert_eq!(waits, vec![500, 1000, 2000, 4000, 4000, 4000]);
        assert_eq!(settings.backoff(u32::MAX), Duration::from_secs(4));
    }
}
