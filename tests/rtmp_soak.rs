//! 1,000 RTMP push start/stop cycles against a real SRS: afterwards the process has as many
//! tasks and open file descriptors as before and its RSS is back near where it started.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "helpers of tests: a failure is a test failure"
)]

mod common;

use std::time::Duration;

use common::srs::Srs;
use jt1078_gateway::hub::Hub;
use jt1078_gateway::media::{Channel, DeviceId, StreamKey, StreamKind};
use jt1078_gateway::output::rtmp_push::{PushEvent, PushSettings, PushState, RtmpPusher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const CYCLES: usize = 1000;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Waits for the next event of `key` matching `want`.
async fn wait_state(
    events: &mut mpsc::Receiver<PushEvent>,
    what: &str,
    want: impl Fn(&PushState) -> bool,
) {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let event = events.recv().await.expect("pusher alive");
            if want(&event.state) {
                return;
            }
            assert!(
                !matches!(event.state, PushState::Failed { .. }),
                "push failed: {event:?}"
            );
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

/// One cycle: start a push to a fresh stream name, wait until SRS accepted the publish,
/// stop it, wait until it ended.
async fn cycle(
    pusher: &RtmpPusher,
    events: &mut mpsc::Receiver<PushEvent>,
    key: &StreamKey,
    url: &str,
) {
    assert!(pusher.start(key, url).unwrap());
    wait_state(events, "publishing", |s| *s == PushState::Publishing).await;
    assert!(pusher.stop(key));
    wait_state(events, "stopped", |s| {
        matches!(s, PushState::Stopped { .. })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_push_start_stop_cycles_leave_nothing_behind() {
    let srs = Srs::start().await;
    let hub = Hub::default();
    let key = StreamKey::new(
        DeviceId::parse("13800138000").unwrap(),
        Channel(1),
        StreamKind::Live,
    );
    // a live stream (no frames needed: the push publishes, then waits for them)
    let _publisher = hub.publish(key.clone(), CancellationToken::new());
    let tasks = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let settings = PushSettings {
        connect_timeout: Duration::from_secs(5),
        stall_timeout: Duration::from_secs(10),
        retry_backoff: Duration::from_millis(50),
        retry_backoff_max: Duration::from_millis(200),
        max_attempts: 20,
        audio: jt1078_gateway::media::AudioMode::Aac,
    };
    let (pusher, mut events) =
        RtmpPusher::new(hub.clone(), settings, tasks.clone(), shutdown.clone());
    let metrics = tokio::runtime::Handle::current().metrics();
    // warm up (allocator pools, lazily made runtime state)
    for i in 0..20 {
        let url = srs.rtmp_url("live", &format!("warm{i}"));
        cycle(&pusher, &mut events, &key, &url).await;
    }
    let settle = |tasks: &TaskTracker| {
        let tasks = tasks.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(10), async {
                while !tasks.is_empty() {
                    tokio::task::yield_now().await;
                }
            })
            .await
            .expect("push tasks end");
        }
    };
    settle(&tasks).await;
    let (tasks_before, fds_before, rss_before) = (metrics.num_alive_tasks(), open_fds(), rss_kb());
    let started = tokio::time::Instant::now();
    for i in 0..CYCLES {
        let url = srs.rtmp_url("live", &format!("soak{i}"));
        cycle(&pusher, &mut events, &key, &url).await;
    }
    let elapsed = started.elapsed();
    settle(&tasks).await;
    // a task the tracker saw end is freed by the runtime a moment later
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while metrics.num_alive_tasks() > tasks_before {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let (tasks_after, fds_after, rss_after) = (metrics.num_alive_tasks(), open_fds(), rss_kb());
    println!(
        "{CYCLES} push cycles in {elapsed:?}: tasks {tasks_before} -> {tasks_after}, fds {fds_before} -> {fds_after}, RSS {rss_before} -> {rss_after} KB"
    );
    assert!(pusher.is_empty(), "no push left registered");
    assert_eq!(tasks_after, tasks_before, "tasks");
    assert!(fds_after <= fds_before, "fds {fds_before} -> {fds_after}");
    // RSS: allocator noise, not growth per cycle (a leak of a socket buffer or session per
    // cycle would be megabytes)
    assert!(
        rss_after <= rss_before + 4 * 1024,
        "RSS {rss_before} -> {rss_after} KB"
    );
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
}
