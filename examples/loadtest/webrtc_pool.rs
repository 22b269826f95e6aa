//! Every WebRTC viewer of a run, driven by one loop on one thread of its own (so the load
//! client's CPU can be read apart from the devices', from `/proc/thread-self`).
//!
//! The loop wakes on ticks: viewers still coming up are polled every [`FAST_TICK`] (their
//! offer → first frame time is measured to about that), viewers playing every
//! [`SLOW_TICK`], all in the same wake-up. No socket is registered with epoll.

use std::time::Duration;

use anyhow::Context;
use quinn_udp::RecvMeta;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::procstat;
use crate::webrtc_viewer::{BATCH, ViewerCounts, WebRtcViewer, clock};

/// How often a viewer that is coming up is polled.
const FAST_TICK: Duration = Duration::from_millis(1);

/// How often a playing viewer is polled: a player with a jitter buffer, not a latency probe.
const SLOW_TICK: Duration = Duration::from_millis(20);

/// What the pool saw at one moment.
#[derive(Debug, Clone)]
pub(crate) struct PoolSnapshot {
    /// Each viewer's counts, in the order they were added.
    pub(crate) viewers: Vec<ViewerCounts>,
    /// CPU seconds the pool's thread has used.
    pub(crate) cpu_seconds: f64,
}

/// The pool's handle.
pub(crate) struct Pool {
    add_tx: mpsc::Sender<WebRtcViewer>,
    snapshot_tx: mpsc::Sender<oneshot::Sender<PoolSnapshot>>,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Pool {
    /// Starts the pool's thread.
    pub(crate) fn start() -> anyhow::Result<Pool> {
        let (add_tx, add_rx) = mpsc::channel(64);
        let (snapshot_tx, snapshot_rx) = mpsc::channel(4);
        let stop = CancellationToken::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("webrtc-viewers".to_owned())
            .spawn(move || runtime.block_on(run(add_rx, snapshot_rx, stopped)))?;
        Ok(Pool {
            add_tx,
            snapshot_tx,
            stop,
            thread: Some(thread),
        })
    }

    /// Hands a connected viewer to the pool.
    pub(crate) async fn add(&self, viewer: WebRtcViewer) -> anyhow::Result<()> {
        self.add_tx
            .send(viewer)
            .await
            .ok()
            .context("the viewer pool has stopped")
    }

    /// Every viewer's counts now (each socket read first).
    pub(crate) async fn snapshot(&self) -> anyhow::Result<PoolSnapshot> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.snapshot_tx
            .send(reply_tx)
            .await
            .ok()
            .context("the viewer pool has stopped")?;
        reply_rx.await.context("the viewer pool has stopped")
    }

    /// Stops the loop and waits for its thread.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        self.stop.cancel();
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        match tokio::task::spawn_blocking(move || thread.join()).await? {
            Ok(result) => result,
            Err(_) => anyhow::bail!("the viewer pool panicked"),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // an early return (`?`) must not leave the thread running
        self.stop.cancel();
    }
}

async fn run(
    mut add_rx: mpsc::Receiver<WebRtcViewer>,
    mut snapshot_rx: mpsc::Receiver<oneshot::Sender<PoolSnapshot>>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut viewers: Vec<WebRtcViewer> = Vec::new();
    // GRO may hand several datagrams in one buffer (`RecvMeta::stride`): room for 64
    let mut buffers: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; 2048 * 64]).collect();
    let mut metas = vec![RecvMeta::default(); BATCH];
    let mut next_slow = clock();
    loop {
        let now = clock();
        let slow_due = now >= next_slow;
        if slow_due {
            next_slow = now + SLOW_TICK;
        }
        let mut any_starting = false;
        for viewer in &mut viewers {
            if slow_due || viewer.is_starting() {
                viewer.poll(now, &mut buffers, &mut metas);
            }
            any_starting |= viewer.is_starting();
        }
        let wake = if any_starting {
            (now + FAST_TICK).min(next_slow)
        } else {
            next_slow
        };
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep_until(wake.into()) => {}
            Some(viewer) = add_rx.recv() => viewers.push(viewer),
            Some(reply) = snapshot_rx.recv() => {
                let now = clock();
                for viewer in &mut viewers {
                    viewer.poll(now, &mut buffers, &mut metas);
                }
                let snapshot = PoolSnapshot {
                    viewers: viewers.iter().map(|v| v.counts).collect(),
                    cpu_seconds: procstat::thread_cpu_seconds()?,
                };
                // the asker gave up: nothing to do
                let _ = reply.send(snapshot);
            }
        }
    }
}
