//! The bridge: SRS HTTP hooks and the Redis `EXTERNAL_COMMAND` queue, turned into the
//! control plane's MQTT messages.
//!
//! A side of its own beside `control`, and a client of it like any backend: it has its own
//! MQTT connection (`publisher.rs`) and publishes requests on `{prefix}/gateway/…` and
//! device commands on `{prefix}/device/…`, so every message it makes is visible on the
//! broker and goes through the same control path as any MQTT request. It keeps no streams
//! (those live in the hub) and no demand (that lives in `control`): only which SRS client
//! plays what (`sessions.rs`), so duplicate and missing on_stop hooks do the right thing.
//!
//! - `srs_hooks.rs`: the HTTP hooks (checked and answered at once); `srs_clients.rs`: the
//!   task that works them (and asks SRS's API, `srs_api.rs`, about long viewers);
//! - `redis_queue.rs`: the `EXTERNAL_COMMAND` consumer and the optional mirror;
//! - `names.rs`, `entries.rs`, `sessions.rs`: sans-IO (stream names, queue entries, SRS
//!   clients).

mod entries;
mod names;
mod publisher;
mod redis_queue;
mod sessions;
mod srs_api;
mod srs_clients;
mod srs_hooks;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::routing::get;
use rumqttc::AsyncClient;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{BridgeSettings, MqttSettings};
use crate::control::mqtt;
use crate::control::topics::Topics;

/// Counters and states shown by `GET /api/bridge`. Written by the bridge's tasks, read by
/// the status route; plain atomics, no lock.
#[derive(Debug, Default)]
pub(crate) struct BridgeStatus {
    mqtt_connected: AtomicBool,
    mqtt_pending: AtomicUsize,
    mqtt_published: AtomicU64,
    hooks_allowed: AtomicU64,
    hooks_refused: AtomicU64,
    srs_clients: AtomicUsize,
    redis_enabled: AtomicBool,
    redis_connected: AtomicBool,
    redis_consumed: AtomicU64,
    redis_dead_lettered: AtomicU64,
    redis_mirrored: AtomicU64,
}

/// A running bridge: its HTTP routes.
#[derive(Debug, Clone)]
pub struct Bridge {
    hooks: srs_hooks::HookState,
    status: Arc<BridgeStatus>,
}

impl Bridge {
    /// The SRS hooks and `POST /web_on_play`, merged onto the HTTP listener (guarded by
    /// `bridge.hook_allow` and `bridge.hook_token`).
    pub fn routes(&self) -> Router {
        srs_hooks::routes(self.hooks.clone())
    }

    /// `GET /api/bridge` (guarded with the rest of `/api/*` by `app`).
    pub fn api_routes(&self) -> Router {
        let status = self.status.clone();
        Router::new().route(
            "/api/bridge",
            get(move || {
                let status = status.clone();
                async move { axum::Json(status.to_json()) }
            }),
        )
    }

    /// The bridge's counters, read when asked (for `/metrics`).
    pub fn counters(&self) -> BridgeCounters {
        BridgeCounters(Arc::clone(&self.status))
    }
}

/// A handle reading the bridge's counters.
#[derive(Debug, Clone, Default)]
pub struct BridgeCounters(Arc<BridgeStatus>);

/// The bridge's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeCounts {
    /// Requests published on MQTT.
    pub mqtt_published: u64,
    /// SRS hooks answered 0.
    pub hooks_allowed: u64,
    /// SRS hooks refused.
    pub hooks_refused: u64,
    /// SRS clients followed now.
    pub srs_clients: usize,
    /// Redis entries published.
    pub redis_consumed: u64,
    /// Redis entries moved to the dead-letter list.
    pub redis_dead_lettered: u64,
    /// Device messages mirrored to Redis.
    pub redis_mirrored: u64,
}

impl BridgeCounters {
    /// The counters now.
    pub fn now(&self) -> BridgeCounts {
        let s = &self.0;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BridgeCounts {
            mqtt_published: n(&s.mqtt_published),
            hooks_allowed: n(&s.hooks_allowed),
            hooks_refused: n(&s.hooks_refused),
            srs_clients: s.srs_clients.load(Ordering::Relaxed),
            redis_consumed: n(&s.redis_consumed),
            redis_dead_lettered: n(&s.redis_dead_lettered),
            redis_mirrored: n(&s.redis_mirrored),
        }
    }
}

/// Starts the bridge's MQTT connection, its hook task and (with `redis_url`) the Redis
/// consumer on `tasks`; all stop with `cancel`. `lease` is `control.lease`: an SRS client
/// whose on_stop never comes is forgotten after it, as the control plane forgets it.
pub fn spawn(
    settings: &BridgeSettings,
    mqtt_settings: &MqttSettings,
    lease: Duration,
    plays: crate::auth::PlayAccess,
    tasks: &TaskTracker,
    cancel: CancellationToken,
) -> anyhow::Result<Bridge> {
    let topics = Topics::new(&mqtt_settings.topic_prefix);
    let status = Arc::new(BridgeStatus::default());
    let client_id = format!("jt1078-gateway-{}-bridge", mqtt_settings.gateway_id);
    let mut options = mqtt::mqtt_options(&mqtt::broker_url(mqtt_settings), &client_id)?;
    options
        .set_keep_alive(mqtt_settings.keep_alive)
        .set_clean_session(true)
        .set_inflight(publisher::WINDOW)
        .set_max_packet_size(256 * 1024, 256 * 1024);
    if !mqtt_settings.username.is_empty() {
        options.set_credentials(
            mqtt_settings.username.clone(),
            mqtt_settings.password.expose().to_owned(),
        );
    }
    let connection = AsyncClient::new(options, 16);
    let mirror = (settings.redis_mirror && !settings.redis_url.is_empty()).then(|| {
        let (tx, rx) = mpsc::channel(1024);
        (
            (
                format!(
                    "{}/device/+/+",
                    mqtt_settings.topic_prefix.trim_end_matches('/')
                ),
                tx,
            ),
            rx,
        )
    });
    let (subscribe, mirror_rx) = mirror.unzip();
    let (publisher, connection) =
        publisher::start(connection, status.clone(), subscribe, cancel.clone());
    tasks.spawn(connection);
    let hooks = srs_hooks::start(
        settings,
        srs_hooks::HookContext {
            topics: topics.clone(),
            lease,
            publisher: publisher.clone(),
            status: status.clone(),
        },
        plays,
        tasks,
        cancel.clone(),
    )
    .context("bridge.stream_forms")?;
    if !settings.redis_url.is_empty() {
        status.redis_enabled.store(true, Ordering::Relaxed);
        let queue = redis_queue::Queue::new(settings, &mqtt_settings.gateway_id, topics)?;
        tasks.spawn(
            queue
                .clone()
                .consume(publisher, status.clone(), cancel.clone()),
        );
        if let Some(rx) = mirror_rx {
            tasks.spawn(queue.mirror(rx, status.clone(), cancel));
        }
    }
    Ok(Bridge { hooks, status })
}

impl BridgeStatus {
    fn to_json(&self) -> serde_json::Value {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "mqtt": {
                "connected": self.mqtt_connected.load(Ordering::Relaxed),
                "pending": self.mqtt_pending.load(Ordering::Relaxed),
                "published": n(&self.mqtt_published),
            },
            "hooks": {
                "allowed": n(&self.hooks_allowed),
                "refused": n(&self.hooks_refused),
                "srs_clients": self.srs_clients.load(Ordering::Relaxed),
            },
            "redis": {
                "enabled": self.redis_enabled.load(Ordering::Relaxed),
                "connected": self.redis_connected.load(Ordering::Relaxed),
                "consumed": n(&self.redis_consumed),
                "dead_lettered": n(&self.redis_dead_lettered),
                "mirrored": n(&self.redis_mirrored),
            },
        })
    }
}
