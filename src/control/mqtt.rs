//! The MQTT edge: the embedded broker (rumqttd, on its own thread) and the gateway's client
//! connection (rumqttc). A thin loop: poll the connection, hand inbound publishes to the
//! control task, re-subscribe and re-announce on every (re)connect.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS, Transport};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::topics::Topics;
use crate::config::MqttSettings;

/// An inbound publish on a request topic.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// Topic.
    pub topic: String,
    /// Body.
    pub payload: Bytes,
}

/// Wait between reconnection attempts after the broker went away.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// Starts the embedded broker on a thread of its own (`rumqttd`'s `start` blocks):
/// MQTT 3.1.1 on `embedded_listen`, MQTT over WebSocket on `embedded_ws_listen`.
pub fn start_embedded_broker(settings: &MqttSettings) -> anyhow::Result<()> {
    let server = |name: &str, listen: SocketAddr| rumqttd::ServerSettings {
        name: name.to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: rumqttd::ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: 256 * 1024,
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 10_010,
            max_outgoing_packet_count: 1000,
            max_segment_size: 1024 * 1024,
            max_segment_count: 10,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([(
            "v4".to_owned(),
            server("v4", settings.embedded_listen),
        )])),
        ws: Some(HashMap::from([(
            "ws".to_owned(),
            server("ws", settings.embedded_ws_listen),
        )])),
        ..rumqttd::Config::default()
    };
    // Fail early with the key's name if a port is taken (rumqttd would only log it).
    for (key, addr) in [
        ("mqtt.embedded_listen", settings.embedded_listen),
        ("mqtt.embedded_ws_listen", settings.embedded_ws_listen),
    ] {
        std::net::TcpListener::bind(addr).with_context(|| format!("binding {key} = {addr}"))?;
    }
    let mut broker = rumqttd::Broker::new(config);
    std::thread::Builder::new()
        .name("mqtt-broker".to_owned())
        .spawn(move || {
            if let Err(error) = broker.start() {
                tracing::error!(%error, "embedded MQTT broker stopped");
            }
        })
        .context("starting the embedded MQTT broker thread")?;
    info!(
        mqtt = %settings.embedded_listen,
        websocket = %settings.embedded_ws_listen,
        "embedded MQTT broker listening"
    );
    Ok(())
}

/// The broker the gateway's clients connect to: its embedded one, or `mqtt.url`.
pub fn broker_url(settings: &MqttSettings) -> String {
    if settings.embedded {
        format!("mqtt://127.0.0.1:{}", settings.embedded_listen.port())
    } else {
        settings.url.clone()
    }
}

/// Parses `mqtt://host:port` / `mqtts://host:port` into options for `client_id`.
pub fn mqtt_options(url: &str, client_id: &str) -> anyhow::Result<MqttOptions> {
    let (scheme, rest) = url.split_once("://").with_context(|| {
        format!("mqtt.url {url:?}: expected mqtt://host:port or mqtts://host:port")
    })?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse::<u16>()
                .with_context(|| format!("mqtt.url {url:?}: bad port"))?,
        ),
        None => (rest, if scheme == "mqtts" { 8883 } else { 1883 }),
    };
    let mut options = MqttOptions::new(client_id, host.trim_matches(['[', ']']), port);
    match scheme {
        "mqtt" | "tcp" => {}
        "mqtts" | "ssl" => {
            // One process-wide crypto provider; a second install attempt is harmless.
            let _ = rustls::crypto::ring::default_provider().install_default();
            options.set_transport(Transport::tls_with_default_config());
        }
        other => bail!("mqtt.url {url:?}: unsupported scheme {other:?} (use mqtt:// or mqtts://)"),
    }
    Ok(options)
}

/// The gateway's client: persistent session, QoS 1, retained `offline` as last will.
pub fn connect(
    settings: &MqttSettings,
    url: &str,
    topics: &Topics,
    offline_payload: Vec<u8>,
) -> anyhow::Result<(AsyncClient, EventLoop)> {
    let client_id = format!("jt1078-gateway-{}", settings.gateway_id);
    let mut options = mqtt_options(url, &client_id)?;
    options
        .set_keep_alive(settings.keep_alive)
        .set_clean_session(false)
        .set_request_channel_capacity(4096)
        .set_max_packet_size(256 * 1024, 256 * 1024)
        .set_last_will(LastWill::new(
            topics.gateway_status(&settings.gateway_id),
            offline_payload,
            QoS::AtLeastOnce,
            true,
        ));
    if !settings.username.is_empty() {
        options.set_credentials(settings.username.clone(), settings.password.clone());
    }
    Ok(AsyncClient::new(options, PUBLISH_QUEUE))
}

/// Messages the control task may queue for the broker. A burst of a thousand devices
/// connecting at once makes several messages each (REQPULL for waiting viewers, stream
/// status as codecs and picture size become known): measured 4096 overflowing at 1000
/// streams. Still a bound: a few hundred bytes a message.
const PUBLISH_QUEUE: usize = 32 * 1024;

/// Drives the connection until `cancel`: forwards publishes, re-subscribes on every
/// connect and bumps `connected_tx` so the control task re-announces its state.
pub async fn run_connection(
    mut eventloop: EventLoop,
    client: AsyncClient,
    filter: String,
    inbound_tx: mpsc::Sender<Inbound>,
    connected_tx: watch::Sender<u64>,
    cancel: CancellationToken,
) {
    // Quiet about the first refusals: the embedded broker may still be starting.
    let mut was_connected = false;
    let mut attempts = 0u32;
    loop {
        let event = tokio::select! {
            () = cancel.cancelled() => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                info!("connected to the MQTT broker");
                was_connected = true;
                attempts = 0;
                if let Err(error) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                    warn!(%error, "could not queue the subscription");
                }
                connected_tx.send_modify(|n| *n += 1);
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let inbound = Inbound {
                    topic: publish.topic.clone(),
                    payload: publish.payload.clone(),
                };
                if inbound_tx.send(inbound).await.is_err() {
                    break;
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                debug!("disconnected from the MQTT broker");
                break;
            }
            Ok(other) => debug!(?other, "mqtt event"),
            Err(error) => {
                attempts += 1;
                if was_connected {
                    warn!(%error, "MQTT connection lost; reconnecting");
                    was_connected = false;
                } else if attempts == 10 {
                    warn!(%error, "cannot reach the MQTT broker; still trying");
                }
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(RECONNECT_DELAY) => {}
                }
            }
        }
    }
}
