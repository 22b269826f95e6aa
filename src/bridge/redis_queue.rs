//! The Redis `EXTERNAL_COMMAND` consumer, and the optional mirror of the gateway's own
//! device commands into a list for 808 platforms that read only Redis.
//!
//! Nothing queued is lost: each entry moves atomically (`BLMOVE`) from `{key}` to this
//! gateway's processing list `{key}:processing:{gateway_id}`, is published, and is removed
//! (`LREM`) only after the broker acknowledged the publish. At start-up, and after every
//! reconnect, what the processing list still holds (a gateway that died between the move
//! and the acknowledgement) is published again first. An entry that is not valid goes to
//! `{key}:dead` with the reason. Redis or the broker away: retried with backoff; entries
//! wait in Redis meanwhile.
//!
//! Entries are taken one at a time: commands arrive at human pace, and one in flight keeps
//! the order of the list.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use rumqttc::Publish;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::BridgeStatus;
use super::entries::{self, EntryError};
use super::publisher::Publisher;
use crate::config::BridgeSettings;
use crate::control::topics::Topics;

/// How long one `BLMOVE` blocks (seconds) before it is asked again.
const BLOCK_SECS: f64 = 2.0;

/// First and longest wait between attempts to reach Redis.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(5));

/// Modes of the gateway's own device commands that the mirror copies.
const MIRRORED: [&str; 2] = ["REQPULL", "STOP"];

/// The queue's names and connection.
#[derive(Debug, Clone)]
pub(super) struct Queue {
    client: redis::Client,
    key: String,
    processing: String,
    dead: String,
    mirror_key: String,
    gateway_id: String,
    topics: Topics,
}

/// Why a round of consuming ended.
#[derive(Debug)]
enum Stop {
    Cancelled,
    Redis(redis::RedisError),
}

impl From<redis::RedisError> for Stop {
    fn from(error: redis::RedisError) -> Stop {
        Stop::Redis(error)
    }
}

impl Queue {
    /// Names from `[bridge]`; fails on a URL Redis cannot use.
    pub(super) fn new(
        settings: &BridgeSettings,
        gateway_id: &str,
        topics: Topics,
    ) -> anyhow::Result<Queue> {
        let client = redis::Client::open(settings.redis_url.as_str())
            .with_context(|| format!("bridge.redis_url {:?}", settings.redis_url))?;
        let key = settings.redis_key.clone();
        Ok(Queue {
            client,
            processing: format!("{key}:processing:{gateway_id}"),
            dead: format!("{key}:dead"),
            key,
            mirror_key: settings.redis_mirror_key.clone(),
            gateway_id: gateway_id.to_owned(),
            topics,
        })
    }

    /// Consumes the queue until `cancel`, reconnecting with backoff.
    pub(super) async fn consume(
        self,
        publisher: Publisher,
        status: Arc<BridgeStatus>,
        cancel: CancellationToken,
    ) {
        let mut failures = 0u32;
        loop {
            let round = async {
                let mut con = self.connect().await?;
                info!(key = %self.key, processing = %self.processing, "consuming the Redis queue");
                status.redis_connected.store(true, Ordering::Relaxed);
                failures = 0;
                self.redrive(&mut con, &publisher, &status, &cancel).await?;
                loop {
                    let entry: Option<String> = tokio::select! {
                        () = cancel.cancelled() => return Err(Stop::Cancelled),
                        moved = con.blmove(
                            &self.key,
                            &self.processing,
                            redis::Direction::Right,
                            redis::Direction::Left,
                            BLOCK_SECS,
                        ) => moved?,
                    };
                    if let Some(entry) = entry {
                        self.handle(&mut con, &entry, &publisher, &status, &cancel)
                            .await?;
                    }
                }
            };
            match round.await {
                Ok(()) | Err(Stop::Cancelled) => break,
                Err(Stop::Redis(error)) => {
                    status.redis_connected.store(false, Ordering::Relaxed);
                    failures = failures.saturating_add(1);
                    if failures == 1 || failures.is_multiple_of(20) {
                        warn!(%error, failures, "Redis queue unavailable; retrying");
                    }
                    if !backoff(failures, &cancel).await {
                        break;
                    }
                }
            }
        }
    }

    async fn connect(&self) -> Result<MultiplexedConnection, Stop> {
        // BLMOVE blocks for BLOCK_SECS: the answer may take that long
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(Duration::from_secs_f64(BLOCK_SECS + 5.0)))
            .set_connection_timeout(Some(Duration::from_secs(5)));
        Ok(self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }

    /// Publishes again what the processing list holds, oldest first.
    async fn redrive(
        &self,
        con: &mut MultiplexedConnection,
        publisher: &Publisher,
        status: &BridgeStatus,
        cancel: &CancellationToken,
    ) -> Result<(), Stop> {
        let left: Vec<String> = con.lrange(&self.processing, 0, -1).await?;
        if !left.is_empty() {
            info!(entries = left.len(), processing = %self.processing, "re-driving entries a previous run did not finish");
        }
        // entries enter on the left: the oldest is on the right
        for entry in left.iter().rev() {
            self.handle(con, entry, publisher, status, cancel).await?;
        }
        Ok(())
    }

    /// Publishes one entry (or dead-letters it) and takes it off the processing list.
    async fn handle(
        &self,
        con: &mut MultiplexedConnection,
        entry: &str,
        publisher: &Publisher,
        status: &BridgeStatus,
        cancel: &CancellationToken,
    ) -> Result<(), Stop> {
        match entries::route(&self.topics, entry) {
            Ok(routed) => {
                debug!(topic = %routed.topic, "Redis entry");
                tokio::select! {
                    () = cancel.cancelled() => return Err(Stop::Cancelled),
                    sent = publisher.send_acked(routed.topic, routed.payload) => {
                        if sent.is_err() {
                            return Err(Stop::Cancelled);
                        }
                    }
                }
                status.redis_consumed.fetch_add(1, Ordering::Relaxed);
            }
            Err(reason) => self.dead_letter(con, entry, &reason, status).await?,
        }
        let _: usize = con.lrem(&self.processing, 1, entry).await?;
        Ok(())
    }

    async fn dead_letter(
        &self,
        con: &mut MultiplexedConnection,
        entry: &str,
        reason: &EntryError,
        status: &BridgeStatus,
    ) -> Result<(), Stop> {
        warn!(%reason, dead = %self.dead, "invalid Redis entry moved to the dead-letter list");
        let record = entries::dead_letter(entry, reason, &self.gateway_id);
        let _: usize = con.lpush(&self.dead, record).await?;
        status.redis_dead_lettered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Copies the gateway's own REQPULL/STOP (seqid `{gateway_id}-…`) seen on the broker
    /// into the mirror list, until `cancel`.
    pub(super) async fn mirror(
        self,
        mut commands_rx: mpsc::Receiver<Publish>,
        status: Arc<BridgeStatus>,
        cancel: CancellationToken,
    ) {
        let own = format!("{}-", self.gateway_id);
        let mut con: Option<MultiplexedConnection> = None;
        loop {
            let publish = tokio::select! {
                () = cancel.cancelled() => break,
                publish = commands_rx.recv() => match publish {
                    Some(publish) => publish,
                    None => break,
                },
            };
            let mode = publish.topic.rsplit('/').next().unwrap_or_default();
            if !MIRRORED.contains(&mode) {
                continue;
            }
            let body: serde_json::Value =
                serde_json::from_slice(&publish.payload).unwrap_or_default();
            if !body["seqid"].as_str().is_some_and(|s| s.starts_with(&own)) {
                continue;
            }
            let mut failures = 0u32;
            // keep trying this one: later commands wait behind it in the bounded channel
            loop {
                let pushed = match con.as_mut() {
                    Some(c) => c
                        .lpush::<_, _, usize>(&self.mirror_key, publish.payload.as_ref())
                        .await
                        .map_err(Stop::Redis),
                    None => match self.connect().await {
                        Ok(c) => {
                            con = Some(c);
                            continue;
                        }
                        Err(error) => Err(error),
                    },
                };
                match pushed {
                    Ok(_) => {
                        status.redis_mirrored.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Err(error) => {
                        con = None;
                        failures = failures.saturating_add(1);
                        if failures == 1 {
                            warn!(?error, "Redis mirror unavailable; retrying");
                        }
                        if !backoff(failures, &cancel).await {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Waits before attempt `failures + 1`; false when cancelled meanwhile.
async fn backoff(failures: u32, cancel: &CancellationToken) -> bool {
    let wait = BACKOFF.0.saturating_mul(failures.min(25)).min(BACKOFF.1);
    tokio::select! {
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(wait) => true,
    }
}
