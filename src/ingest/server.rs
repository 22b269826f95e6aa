//! The live and playback listeners: accept, cap, spawn a connection task each.
//!
//! The stream kind comes from the port a device connected to (the packet cannot say).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::connection::{Connection, ConnectionLimits};
use crate::codec::jt1078::DecoderStats;
use crate::config::IngestSettings;
use crate::hub::Hub;
use crate::media::StreamKind;

/// Pause after a failed accept.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// Counters across all connections.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections refused because of the cap.
    pub refused: AtomicU64,
    /// Connections accepted on the live listener.
    pub accepted_live: AtomicU64,
    /// Connections open now on the live listener.
    pub open_live: AtomicU64,
    /// Connections open now on the playback listener.
    pub open_playback: AtomicU64,
    /// JT/T 1078 packets decoded.
    pub packets: AtomicU64,
    /// Bytes read from devices (packets and garbage).
    pub bytes: AtomicU64,
    /// Bytes skipped while looking for a packet marker.
    pub garbage_bytes: AtomicU64,
    /// Times a connection lost alignment on the wire.
    pub resyncs: AtomicU64,
}

impl IngestStats {
    /// Adds what a decoder counted since `before` (once per read, not per packet).
    pub(crate) fn add_decoded(&self, before: &DecoderStats, now: &DecoderStats) {
        let add = |counter: &AtomicU64, now: u64, before: u64| {
            if now > before {
                counter.fetch_add(now - before, Ordering::Relaxed);
            }
        };
        add(&self.packets, now.packets, before.packets);
        add(
            &self.bytes,
            now.packet_bytes + now.skipped_bytes,
            before.packet_bytes + before.skipped_bytes,
        );
        add(&self.garbage_bytes, now.skipped_bytes, before.skipped_bytes);
        add(&self.resyncs, now.resyncs, before.resyncs);
    }

    /// The open connections of `kind`'s listener.
    pub(crate) fn open(&self, kind: StreamKind) -> &AtomicU64 {
        match kind {
            StreamKind::Live => &self.open_live,
            StreamKind::Playback => &self.open_playback,
        }
    }
}

/// Accepts devices on the live and playback listeners. A cheap `Clone`: every I/O thread
/// runs one over its own copies of the listeners, sharing the connection cap.
#[derive(Debug, Clone)]
pub struct IngestServer {
    limits: ConnectionLimits,
    max_connections: usize,
    slots: Arc<Semaphore>,
    hub: Hub,
    stats: Arc<IngestStats>,
}

impl IngestServer {
    /// A server with the `[ingest]` limits.
    pub fn new(settings: &IngestSettings, hub: Hub) -> IngestServer {
        IngestServer {
            slots: Arc::new(Semaphore::new(settings.max_connections.get())),
            limits: ConnectionLimits {
                idle_timeout: settings.idle_timeout,
                max_body: settings.max_body.get(),
                max_frame: settings.max_frame.get(),
                max_channel: settings.max_channel,
                // longer would let a device's data pile up past what its socket holds; and a
                // connection read less often than its idle timeout would look idle
                merge_read: settings
                    .merge_read
                    .min(std::time::Duration::from_secs(1))
                    .min(settings.idle_timeout / 4),
            },
            max_connections: settings.max_connections.get(),
            hub,
            stats: Arc::new(IngestStats::default()),
        }
    }

    /// Shared counters.
    pub fn stats(&self) -> Arc<IngestStats> {
        Arc::clone(&self.stats)
    }

    /// Accepts on `live` and `playback` until `shutdown`; then waits for the connection
    /// tasks to finish.
    pub async fn run(self, live: TcpListener, playback: TcpListener, shutdown: CancellationToken) {
        let tasks = TaskTracker::new();
        loop {
            let (accepted, kind) = tokio::select! {
                () = shutdown.cancelled() => break,
                r = live.accept() => (r, StreamKind::Live),
                r = playback.accept() => (r, StreamKind::Playback),
            };
            let (socket, peer) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // EMFILE and friends: the listener itself is fine; keep accepting after
                    // a pause (retrying at once would spin and flood the log)
                    warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                warn!(%peer, max = self.max_connections, "connection cap reached; refusing device");
                continue;
            };
            self.stats.accepted.fetch_add(1, Ordering::Relaxed);
            if kind == StreamKind::Live {
                self.stats.accepted_live.fetch_add(1, Ordering::Relaxed);
            }
            if let Err(error) = socket.set_nodelay(true) {
                warn!(%peer, %error, "set_nodelay failed");
            }
            let connection = Connection::new(
                socket,
                peer,
                kind,
                self.limits,
                self.hub.clone(),
                Arc::clone(&self.stats),
            );
            let cancel = shutdown.child_token();
            tasks.spawn(async move {
                connection.run(cancel).await;
                drop(permit);
            });
        }
        tasks.close();
        tasks.wait().await;
        info!("ingest stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_counts_are_added_as_deltas() {
        let stats = IngestStats::default();
        let first = DecoderStats {
            packets: 10,
            packet_bytes: 9000,
            skipped_bytes: 7,
            resyncs: 1,
            oversized: 0,
        };
        stats.add_decoded(&DecoderStats::default(), &first);
        let second = DecoderStats {
            packets: 15,
            packet_bytes: 13_000,
            ..first
        };
        stats.add_decoded(&first, &second);
        // nothing new: nothing added
        stats.add_decoded(&second, &second);
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!(load(&stats.packets), 15);
        assert_eq!(load(&stats.bytes), 13_007);
        assert_eq!(load(&stats.garbage_bytes), 7);
        assert_eq!(load(&stats.resyncs), 1);
        stats
            .open(StreamKind::Playback)
            .fetch_add(1, Ordering::Relaxed);
        assert_eq!(load(&stats.open_playback), 1);
        assert_eq!(load(&stats.open_live), 0);
    }
}
