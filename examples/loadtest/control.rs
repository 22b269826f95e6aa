//! The `control` subcommand: rounds of SUBSCRIBEs for fresh devices, each with a fresh
//! `seqid` and `client_id`, flooded into the gateway's embedded broker; the gateway's RSS
//! after every round and once every lease has expired (issue 16, finding 3, at one
//! million requests; `tests/chaos_control.rs` is the short form in the test suite).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::gateway::GatewayProcess;
use crate::procstat;

/// What one run measured.
#[derive(Debug, Serialize)]
pub(crate) struct ControlRun {
    pub(crate) requests: usize,
    pub(crate) round: usize,
    pub(crate) start_rss_kb: u64,
    /// RSS after each round's replies had all arrived.
    pub(crate) rounds_rss_kb: Vec<u64>,
    /// RSS once every device had been sent its STOP and the allocator had returned what
    /// it would (the first sample within 20 MB of the start, else the one 10 s later).
    pub(crate) end_rss_kb: u64,
    pub(crate) replies: usize,
    pub(crate) pulls: usize,
    pub(crate) stops: usize,
    pub(crate) seconds: f64,
}

/// Messages the backend counted, and a wake-up for each.
#[derive(Default)]
struct Counts {
    replies: AtomicUsize,
    pulls: AtomicUsize,
    stops: AtomicUsize,
    /// The gateway's retained "online" status: its requests subscription is up.
    online: AtomicUsize,
    arrived: Notify,
}

impl Counts {
    /// Waits until `count` reaches `n`; fails when nothing arrives for 30 s.
    async fn wait(
        &self,
        what: &str,
        count: impl Fn(&Counts) -> usize,
        n: usize,
    ) -> anyhow::Result<()> {
        loop {
            let arrived = self.arrived.notified();
            let seen = count(self);
            if seen >= n {
                return Ok(());
            }
            if tokio::time::timeout(Duration::from_secs(30), arrived)
                .await
                .is_err()
            {
                bail!("{what}: {seen} of {n}, nothing more for 30 s");
            }
        }
    }
}

/// An MQTT client of the embedded broker; `filters` are subscribed at QoS 1.
async fn client(
    gateway: &GatewayProcess,
    id: &str,
    filters: &[&str],
    counts: Arc<Counts>,
) -> anyhow::Result<AsyncClient> {
    let mut options = MqttOptions::new(id, gateway.mqtt.ip().to_string(), gateway.mqtt.port());
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    let (ready, mut subscribed) = tokio::sync::mpsc::channel(filters.len() + 1);
    let subscriber = client.clone();
    let acks = filters.len().max(1);
    let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    for filter in &filters {
                        if subscriber
                            .subscribe(filter, QoS::AtLeastOnce)
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    if filters.is_empty() {
                        let _ = ready.try_send(());
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = ready.try_send(());
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let topic = publish.topic.as_str();
                    let count = if topic.starts_with("jt1078/client/") {
                        &counts.replies
                    } else if topic.ends_with("/REQPULL") {
                        &counts.pulls
                    } else if topic.ends_with("/STOP") {
                        &counts.stops
                    } else if topic.starts_with("jt1078/status/gateway/")
                        && publish.payload.windows(8).any(|w| w == b"\"online\"")
                    {
                        &counts.online
                    } else {
                        continue;
                    };
                    count.fetch_add(1, Ordering::Relaxed);
                    counts.arrived.notify_waiters();
                }
                Ok(_) => {}
                // the embedded broker may not listen yet: rumqttc reconnects on the next poll
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    // the last SUBACK (or the CONNACK of a client without filters)
    tokio::time::timeout(Duration::from_secs(15), async {
        for _ in 0..acks {
            subscribed.recv().await;
        }
    })
    .await
    .with_context(|| format!("{id}: not subscribed within 15 s"))?;
    Ok(client)
}

/// Floods `requests` SUBSCRIBEs in rounds of `round` (each round's replies awaited before
/// the next) and measures the gateway's RSS.
pub(crate) async fn run(bin: &Path, requests: usize, round: usize) -> anyhow::Result<ControlRun> {
    let gateway = GatewayProcess::start_with(
        bin,
        &[
            ("JTGW__CONTROL__LEASE", "2s"),
            ("JTGW__CONTROL__STOP_LINGER", "200ms"),
            ("JTGW__CONTROL__PULL_TIMEOUT", "120s"),
        ],
    )
    .await?;
    let counts = Arc::new(Counts::default());
    let backend = [
        "jt1078/client/#",
        "jt1078/device/#",
        "jt1078/status/gateway/#",
    ];
    let _backend = client(&gateway, "bench-backend", &backend, counts.clone()).await?;
    counts
        .wait(
            "the gateway online",
            |c| c.online.load(Ordering::Relaxed),
            1,
        )
        .await?;
    let flooder = client(&gateway, "bench-flooder", &[], counts.clone()).await?;
    let start_rss_kb = procstat::rss_bytes(gateway.pid)? / 1024;
    let started = Instant::now();
    let mut rounds_rss_kb = Vec::new();
    let mut sent = 0;
    while sent < requests {
        let this_round = round.min(requests - sent);
        for n in sent..sent + this_round {
            flooder
                .publish(
                    format!("jt1078/gateway/{}/SUBSCRIBE", 16_000_000_000u64 + n as u64),
                    QoS::AtMostOnce,
                    false,
                    format!(r#"{{"seqid":"m{n}","client_id":"c{n}"}}"#),
                )
                .await?;
        }
        sent += this_round;
        counts
            .wait("replies", |c| c.replies.load(Ordering::Relaxed), sent)
            .await?;
        let rss = procstat::rss_bytes(gateway.pid)? / 1024;
        eprintln!("{sent} requests answered: RSS {rss} KB");
        rounds_rss_kb.push(rss);
    }
    counts
        .wait("STOPs", |c| c.stops.load(Ordering::Relaxed), requests)
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(10);
    let end_rss_kb = loop {
        let rss = procstat::rss_bytes(gateway.pid)? / 1024;
        if rss < start_rss_kb + 20 * 1024 || Instant::now() > deadline {
            break rss;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let run = ControlRun {
        requests,
        round,
        start_rss_kb,
        rounds_rss_kb,
        end_rss_kb,
        replies: counts.replies.load(Ordering::Relaxed),
        pulls: counts.pulls.load(Ordering::Relaxed),
        stops: counts.stops.load(Ordering::Relaxed),
        seconds,
    };
    gateway.stop().await?;
    Ok(run)
}

/// The run as Markdown.
pub(crate) fn report(run: &ControlRun) -> String {
    let max = run.rounds_rss_kb.iter().max().copied().unwrap_or_default();
    let last = run.rounds_rss_kb.last().copied().unwrap_or_default();
    format!(
        "| requests | rounds of | seconds | replies | REQPULLs | STOPs | RSS start MB | \
         highest after a round MB | after the last round MB | after the leases MB |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n\
         | {} | {} | {:.0} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
        run.requests,
        run.round,
        run.seconds,
        run.replies,
        run.pulls,
        run.stops,
        run.start_rss_kb as f64 / 1024.0,
        max as f64 / 1024.0,
        last as f64 / 1024.0,
        run.end_rss_kb as f64 / 1024.0,
    )
}
