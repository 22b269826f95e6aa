//! The MQTT edge: the gateway's client connections (rumqttc; the embedded broker is
//! `broker.rs`). A thin loop: poll the connection, hand inbound publishes to the
//! control task, re-subscribe and re-announce on every (re)connect.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS, Transport};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::outbox::MAX_OUTGOING_PACKET;
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

/// The broker the gateway's clients connect to: its embedded one, or `mqtt.url`.
pub fn broker_url(settings: &MqttSettings) -> String {
    if settings.embedded {
        format!("mqtt://127.0.0.1:{}", settings.embedded_listen.port())
    } else {
        settings.url.clone()
    }
}

/// Parses `mqtt://[user:password@]host:port` / `mqtts://…` into options for
/// `client_id` (the user name ends at the first `:`, the host starts after the last `@`).
pub fn mqtt_options(url: &str, client_id: &str) -> anyhow::Result<MqttOptions> {
    let (scheme, rest) = url.split_once("://").with_context(|| {
        format!("mqtt.url {url:?}: expected mqtt://host:port or mqtts://host:port")
    })?;
    let rest = rest.trim_end_matches('/');
    let (login, rest) = match rest.rsplit_once('@') {
        Some((login, host)) => {
            let (user, password) = login.split_once(':').unwrap_or((login, ""));
            (Some((user.to_owned(), password.to_owned())), host)
        }
        None => (None, rest),
    };
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
    if let Some((user, password)) = login {
        options.set_credentials(user, password);
    }
    Ok(options)
}

/// One MQTT connection of the gateway: its client handle and the event loop to drive.
pub type Link = (AsyncClient, EventLoop);

/// The gateway's two connections, both with a persistent session and QoS 1:
/// `commands` publishes everything the gateway sends (client id
/// `jt1078-gateway-{gateway_id}`, retained `offline` as last will); `requests` subscribes
/// to the request topics (client id `jt1078-gateway-{gateway_id}-requests`). Two, so that
/// reading requests can wait for the control task (back-pressure) while the commands
/// connection keeps draining what the control task publishes: on one connection, a reader
/// waiting for the control task would also stop the writes it waits for.
pub fn connect(
    settings: &MqttSettings,
    url: &str,
    topics: &Topics,
    offline_payload: Vec<u8>,
) -> anyhow::Result<(Link, Link)> {
    let client_id = format!("jt1078-gateway-{}", settings.gateway_id);
    let mut commands = options(settings, url, &client_id)?;
    commands.set_last_will(LastWill::new(
        topics.gateway_status(&settings.gateway_id),
        offline_payload,
        QoS::AtLeastOnce,
        true,
    ));
    let requests = options(settings, url, &format!("{client_id}-requests"))?;
    Ok((
        AsyncClient::new(commands, PUBLISH_QUEUE),
        AsyncClient::new(requests, 16),
    ))
}

fn options(settings: &MqttSettings, url: &str, client_id: &str) -> anyhow::Result<MqttOptions> {
    let mut options = mqtt_options(url, client_id)?;
    options
        .set_keep_alive(settings.keep_alive)
        .set_clean_session(false)
        .set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET);
    if !settings.username.is_empty() {
        options.set_credentials(
            settings.username.clone(),
            settings.password.expose().to_owned(),
        );
    }
    Ok(options)
}

/// Messages the control task may queue for the broker before it waits for room. A bound
/// of a few hundred bytes a message; while it is full the control task waits (and reads
/// no requests), nothing is dropped.
const PUBLISH_QUEUE: usize = 4096;

/// Largest packet the gateway accepts: a 256 KiB payload (`broker/mosquitto.conf`'s
/// `message_size_limit`) on the longest topic. A larger one would fail the connection, and
/// the broker would deliver it again after every reconnect.
const MAX_INCOMING_PACKET: usize = 256 * 1024 + 64 * 1024 + 16;

/// What a connection does besides keeping itself up.
pub enum Role {
    /// Publishes for the control task.
    Commands,
    /// Subscribes to `filter` and hands requests to the control task, waiting for it when
    /// it is busy.
    Requests {
        /// This connection's client (to subscribe on every connect).
        client: AsyncClient,
        /// The request topics.
        filter: String,
        /// To the control task.
        inbound_tx: mpsc::Sender<Inbound>,
        /// Bumped on every SUBACK of the request topics, so the control task
        /// (re-)announces its state and re-sends the commands in force only once the
        /// gateway can hear requests (both connections reconnect together: one broker).
        connected_tx: watch::Sender<u64>,
    },
}

/// Drives one connection until `cancel` (or a DISCONNECT the control task sent):
/// reconnects with a growing delay, re-subscribes on every connect.
pub async fn run_connection(mut eventloop: EventLoop, role: Role, cancel: CancellationToken) {
    let name = match role {
        Role::Commands => "commands",
        Role::Requests { .. } => "requests",
    };
    let mut backoff = Backoff::default();
    let mut connected_at: Option<tokio::time::Instant> = None;
    // quiet about the first refusals: the embedded broker may still be starting
    let mut ever_connected = false;
    loop {
        let event = tokio::select! {
            () = cancel.cancelled() => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if ever_connected {
                    info!(connection = name, "connected to the MQTT broker again");
                } else {
                    info!(connection = name, "connected to the MQTT broker");
                }
                ever_connected = true;
                connected_at = Some(tokio::time::Instant::now());
                match &role {
                    Role::Commands => {}
                    Role::Requests { client, filter, .. } => {
                        if let Err(error) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                            warn!(%error, "could not queue the subscription to the request topics");
                        }
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if let Role::Requests { inbound_tx, .. } = &role {
                    let inbound = Inbound {
                        topic: publish.topic.clone(),
                        payload: publish.payload.clone(),
                    };
                    // waits while the control task is busy: the broker's reader slows down
                    if inbound_tx.send(inbound).await.is_err() {
                        break;
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                if let Role::Requests { connected_tx, .. } = &role {
                    // the gateway can hear requests: (re)announce it
                    connected_tx.send_modify(|n| *n += 1);
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                debug!(connection = name, "disconnected from the MQTT broker");
                break;
            }
            Ok(other) => debug!(?other, "mqtt event"),
            Err(error) => {
                // a connection that stayed up a while starts the delays afresh
                if connected_at
                    .take()
                    .is_some_and(|at| at.elapsed() >= Backoff::STABLE)
                {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                match backoff.failures() {
                    1 if ever_connected => warn!(
                        connection = name,
                        %error,
                        "MQTT connection lost; reconnecting with growing delays (up to {:?}), \
                         said once",
                        Backoff::MAX
                    ),
                    QUIET_FAILURES if !ever_connected => warn!(
                        connection = name,
                        %error,
                        "cannot reach the MQTT broker; still trying with growing delays \
                         (up to {:?}), said once",
                        Backoff::MAX
                    ),
                    _ => debug!(connection = name, %error, ?delay, "MQTT reconnect failed"),
                }
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Failed first connects before a warning (about 7 s: the embedded broker may still be
/// starting).
const QUIET_FAILURES: u32 = 4;

/// Delays between reconnection attempts: 0.5 s doubling up to 30 s, so a broker that is
/// away (or a connection that keeps failing) is not hammered.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The first delay.
    pub(crate) const BASE: Duration = Duration::from_millis(500);
    /// The longest delay.
    pub(crate) const MAX: Duration = Duration::from_secs(30);
    /// A connection up this long counts as recovered.
    pub(crate) const STABLE: Duration = Duration::from_secs(10);

    /// The delay before the next attempt, counting a failure.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = Self::BASE
            .saturating_mul(1 << self.failures.min(6))
            .min(Self::MAX);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// Failures since the last reset.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// After a stable connection.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_may_carry_a_user_and_password() {
        let options = mqtt_options("mqtt://13800138000:ab:c@d@broker.example:1884", "c").unwrap();
        let login = options.credentials().unwrap();
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("13800138000", "ab:c@d")
        );
        assert_eq!(
            options.broker_address(),
            ("broker.example".to_owned(), 1884)
        );
        assert!(
            mqtt_options("mqtt://127.0.0.1:1883", "c")
                .unwrap()
                .credentials()
                .is_none()
        );
    }

    #[test]
    fn reconnect_delays_grow_to_a_cap_and_start_again_after_a_reset() {
        let mut backoff = Backoff::default();
        let delays: Vec<u64> = (0..9)
            .map(|_| backoff.next_delay().as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        backoff.reset();
        assert_eq!(backoff.next_delay(), Backoff::BASE);
    }
}
