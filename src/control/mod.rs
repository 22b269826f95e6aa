//! The control plane: JSON over MQTT on topics keyed by device id.
//!
//! `mqtt.rs` is the I/O edge (client loop), `broker.rs` the embedded broker with its guards
//! (`auth.rs` who may connect, `access.rs` who may publish and subscribe what, both pure),
//! `messages.rs` and `topics.rs`
//! the wire types, `command.rs` a request read as a typed command (`params.rs` its JT/T 1078
//! values), `demand.rs` the sans-IO policy (who wants what, when to pull and stop),
//! `dispatch.rs` the one task that owns the state and performs the actions. Control drives
//! the rest of the gateway only through the hub handle `app` passes in.

pub mod access;
pub mod auth;
pub mod broker;
mod command;
pub mod demand;
mod dispatch;
pub mod messages;
pub mod mqtt;
pub mod outbox;
mod params;
pub mod topics;

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ControlSettings, MqttSettings, RtmpSettings};
use crate::hub::Hub;
use crate::output::record::Recordings;
use crate::output::rtmp_push::{PushEvent, RtmpPusher};
use crate::output::webrtc::{PeerEvent, WebRtc};
use demand::DemandSettings;
use dispatch::{Control, GatewayStatus};
use topics::Topics;

/// What the control task needs to know about the gateway.
#[derive(Debug, Clone)]
pub struct ControlContext {
    /// `[mqtt]`.
    pub mqtt: MqttSettings,
    /// Demand tuning from `[control]`.
    pub demand: DemandSettings,
    /// Host devices connect to and play URLs use.
    pub public_host: String,
    /// Live ingest port.
    pub live_port: u16,
    /// Playback ingest port.
    pub playback_port: u16,
    /// HTTP port.
    pub http_port: u16,
    /// `http` or `https` (with `http.tls_cert`).
    pub http_scheme: &'static str,
    /// Signs the play URLs of OK replies (`http.play_secret`, `http.play_ttl`).
    pub plays: crate::auth::PlayAccess,
    /// Control's metrics (requests, REQPULLs, STOPs, cold starts, pushes).
    pub metrics: crate::metrics::ControlMetrics,
}

impl ControlContext {
    /// From the settings, the bound ports, the HTTP scheme and the play-URL policy.
    pub fn new(
        mqtt: &MqttSettings,
        control: &ControlSettings,
        ports: (u16, u16, u16),
        http_scheme: &'static str,
        plays: crate::auth::PlayAccess,
    ) -> Self {
        ControlContext {
            mqtt: mqtt.clone(),
            demand: DemandSettings {
                stop_linger: control.stop_linger,
                lease: control.lease,
                pull_timeout: control.pull_timeout,
                pull_attempts: control.pull_attempts.max(1),
            },
            public_host: control.public_host.clone(),
            live_port: ports.0,
            playback_port: ports.1,
            http_port: ports.2,
            http_scheme,
            plays,
            metrics: crate::metrics::ControlMetrics::default(),
        }
    }
}

/// The RTMP push side, as control drives it: the pusher handle, its state changes and the
/// `[rtmp]` settings (targets, play URLs, `auto_push`).
#[derive(Debug)]
pub struct RtmpSide {
    /// Starts and stops pushes.
    pub pusher: RtmpPusher,
    /// The pushes' state changes.
    pub events_rx: mpsc::Receiver<PushEvent>,
    /// `[rtmp]`.
    pub settings: RtmpSettings,
}

/// Starts the MQTT connection and the control task on `tasks`; both stop with `cancel`.
pub fn spawn(
    ctx: ControlContext,
    hub: Hub,
    rtmp: RtmpSide,
    webrtc: Option<(WebRtc, mpsc::Receiver<PeerEvent>)>,
    recordings: Recordings,
    tasks: &TaskTracker,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let topics = Topics::new(&ctx.mqtt.topic_prefix);
    let url = mqtt::broker_url(&ctx.mqtt);
    let offline = serde_json::to_vec(&GatewayStatus {
        gateway_id: &ctx.mqtt.gateway_id,
        status: "offline",
    })?;
    let ((client, commands), (requests_client, requests)) =
        mqtt::connect(&ctx.mqtt, &url, &topics, offline)?;
    // bounded: while it is full the requests connection reads no more from the broker
    let (inbound_tx, inbound_rx) = mpsc::channel(1024);
    let (connected_tx, connected_rx) = watch::channel(0);
    // The connections outlive the control task long enough to send its last words.
    let connection_stop = CancellationToken::new();
    let connection_done = CancellationToken::new();
    tasks.spawn({
        let (stop, done) = (connection_stop.clone(), connection_done.clone());
        async move {
            let role = mqtt::Role::Commands;
            mqtt::run_connection(commands, role, stop).await;
            done.cancel();
        }
    });
    tasks.spawn({
        let role = mqtt::Role::Requests {
            client: requests_client.clone(),
            filter: topics.requests_filter(),
            inbound_tx,
            connected_tx,
        };
        mqtt::run_connection(requests, role, connection_stop.clone())
    });
    let RtmpSide {
        pusher,
        events_rx: push_events_rx,
        settings: rtmp_settings,
    } = rtmp;
    let rtmp = dispatch::RtmpControl::new(pusher, rtmp_settings);
    let (webrtc, peer_events_rx) = match webrtc {
        Some((webrtc, events)) => (Some(webrtc), events),
        // never sends: the sender is dropped at once
        None => (None, mpsc::channel(1).1),
    };
    let record = dispatch::RecordControl::new(recordings);
    let control = Control::new(
        ctx,
        hub,
        client.clone(),
        rtmp,
        webrtc,
        record,
        tasks.clone(),
    );
    tasks.spawn(async move {
        control
            .run(
                inbound_rx,
                connected_rx,
                push_events_rx,
                peer_events_rx,
                cancel,
            )
            .await;
        // Clean DISCONNECTs (after the retained "offline"), so the broker drops the will.
        for (client, which) in [(client, "commands"), (requests_client, "requests")] {
            if let Err(error) = client.try_disconnect() {
                tracing::debug!(%error, connection = which, "could not queue DISCONNECT");
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), connection_done.cancelled()).await;
        connection_stop.cancel();
    });
    Ok(())
}
