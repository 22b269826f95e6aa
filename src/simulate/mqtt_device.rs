//! The simulator as an MQTT-controlled device: subscribes to `{prefix}/device/{id}/#`,
//! connects and replays on REQPULL / PLAYBACK, stops on STOP / PLAYBACK_CTRL end, and
//! sends heartbeats, the way a terminal behind an 808 platform does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::talk::TalkDevice;
use super::{Device, Pace};
use crate::codec::jt1078::{Packet as Jt1078Packet, Sim, SimLayout};
use crate::control::auth::device_password;
use crate::control::messages::DeviceCommand;
use crate::control::mqtt::{Backoff, mqtt_options};
use crate::control::topics::Topics;
use crate::media::{DeviceId, StreamKind};

/// Heartbeat period of a simulated device.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// What the MQTT-controlled simulator needs.
#[derive(Debug, Clone)]
pub struct MqttDeviceOptions {
    /// The recording.
    pub packets: Arc<Vec<Jt1078Packet>>,
    /// Broker URL (`mqtt://host:port`).
    pub url: String,
    /// Topic prefix.
    pub topic_prefix: String,
    /// The simulated device ids.
    pub devices: Vec<DeviceId>,
    /// Pacing of replays.
    pub pace: Pace,
    /// Loop replays until STOP.
    pub looping: bool,
    /// `mqtt.device_secret` of the broker: each device then logs in on a connection of its
    /// own, as itself, with the HMAC password of its id.
    pub device_secret: Option<String>,
    /// Answer a REQPULL for two-way talk (data type 2) or broadcast (4) as a device does:
    /// a talk connection (`simulate::talk`) instead of a push of the recording.
    pub talk: bool,
    /// With `talk`: where to write what the gateway said, decoded (a WAV file per talk;
    /// several talks at once get the device and channel in the name).
    pub talk_out: Option<std::path::PathBuf>,
}

/// Runs until `cancel`.
pub async fn run(options: MqttDeviceOptions, cancel: CancellationToken) -> anyhow::Result<()> {
    let Some(secret) = options.device_secret.clone() else {
        return run_devices(options, None, cancel).await;
    };
    let runs = options.devices.iter().map(|device| {
        let mut one = options.clone();
        one.devices = vec![device.clone()];
        let login = (
            device.as_str().to_owned(),
            device_password(secret.as_bytes(), device),
        );
        run_devices(one, Some(login), cancel.clone())
    });
    futures_util::future::try_join_all(runs).await.map(|_| ())
}

/// Devices on one connection (logging in as `login` when given).
async fn run_devices(
    options: MqttDeviceOptions,
    login: Option<(String, String)>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let topics = Topics::new(&options.topic_prefix);
    let layout = options.packets.first().context("empty recording")?.layout();
    let client_id = format!(
        "jt1078-sim-{}-{}",
        std::process::id(),
        options.devices.first().map(DeviceId::as_str).unwrap_or("0")
    );
    let mut mqtt = mqtt_options(&options.url, &client_id)?;
    mqtt.set_keep_alive(Duration::from_secs(30));
    if let Some((user, password)) = login {
        mqtt.set_credentials(user, password);
    }
    let (client, mut eventloop) = AsyncClient::new(mqtt, 1024);
    let tasks = TaskTracker::new();
    // One push per stream: live and playback of a channel run side by side, as on a device.
    let mut running: HashMap<(DeviceId, u8, StreamKind), CancellationToken> = HashMap::new();
    // Talks (two-way talk or broadcast) per channel, beside its streams.
    let mut talks: HashMap<(DeviceId, u8), CancellationToken> = HashMap::new();
    // Heartbeats from a task of their own: cancelling `eventloop.poll()` (as a timer in the
    // same select would) while it connects leaves a half-made connection that the broker
    // may register after the real one, taking its session and subscription away.
    tasks.spawn(heartbeats(
        client.clone(),
        topics.clone(),
        options.devices.clone(),
        cancel.clone(),
    ));
    let mut backoff = Backoff::default();
    loop {
        let event = tokio::select! {
            () = cancel.cancelled() => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                for device in &options.devices {
                    client
                        .try_subscribe(topics.device_filter(device.as_str()), QoS::AtLeastOnce)
                        .context("subscribing")?;
                    // after the subscription, so a listener knows the device is reachable
                    let body = format!(r#"{{"seqid":"hb-{device}","client_id":"{device}"}}"#);
                    client
                        .try_publish(
                            topics.request(device.as_str(), "HEART"),
                            QoS::AtLeastOnce,
                            false,
                            body,
                        )
                        .context("heartbeat")?;
                }
                info!(
                    devices = options.devices.len(),
                    "simulated devices waiting for commands"
                );
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let command: DeviceCommand = match serde_json::from_slice(&publish.payload) {
                    Ok(command) => command,
                    Err(error) => {
                        warn!(%error, topic = %publish.topic, "not a device command");
                        continue;
                    }
                };
                let kind = match &command {
                    DeviceCommand::ReqPull { .. } | DeviceCommand::Stop { .. } => StreamKind::Live,
                    DeviceCommand::Playback { .. } | DeviceCommand::PlaybackCtrl { .. } => {
                        StreamKind::Playback
                    }
                };
                match command {
                    DeviceCommand::ReqPull {
                        device,
                        server_host,
                        tcp_port,
                        channel,
                        data_type: data_type @ (2 | 4),
                        ..
                    } if options.talk => {
                        let Some((device, sim, server)) =
                            target(&device, layout, &server_host, tcp_port).await
                        else {
                            continue;
                        };
                        let slot = (device.clone(), channel);
                        if talks.get(&slot).is_some_and(|t| !t.is_cancelled()) {
                            continue; // already talking on this channel
                        }
                        let stop = cancel.child_token();
                        talks.insert(slot, stop.clone());
                        // one device: the file as named; several: each its own
                        let out = options.talk_out.as_ref().map(|path| {
                            if options.devices.len() == 1 {
                                return path.clone();
                            }
                            let stem = path.file_stem().unwrap_or_default().to_string_lossy();
                            path.with_file_name(format!("{stem}-{device}-{channel}.wav"))
                        });
                        let talk = TalkDevice {
                            sim,
                            channel,
                            packets: Arc::clone(&options.packets),
                            broadcast: data_type == 4,
                            out,
                        };
                        info!(%device, channel, data_type, %server, "talking on request");
                        tasks.spawn(async move {
                            if let Err(error) = talk.run(server, stop.clone()).await {
                                warn!("simulated talk: {error:#}");
                            }
                            stop.cancel();
                        });
                    }
                    DeviceCommand::Stop {
                        device,
                        channel,
                        command: 4,
                        ..
                    } => {
                        // close two-way talk
                        let Ok(device) = DeviceId::parse(&device) else {
                            continue;
                        };
                        if let Some(stop) = talks.remove(&(device.clone(), channel)) {
                            info!(%device, channel, "talk closed on request");
                            stop.cancel();
                        }
                    }
                    DeviceCommand::ReqPull {
                        device,
                        server_host,
                        tcp_port,
                        channel,
                        ..
                    }
                    | DeviceCommand::Playback {
                        device,
                        server_host,
                        tcp_port,
                        channel,
                        ..
                    } => {
                        let Some((device, sim, server)) =
                            target(&device, layout, &server_host, tcp_port).await
                        else {
                            continue;
                        };
                        let slot = (device.clone(), channel, kind);
                        if running.get(&slot).is_some_and(|t| !t.is_cancelled()) {
                            continue; // already pushing this stream
                        }
                        let stop = cancel.child_token();
                        running.insert(slot, stop.clone());
                        let device_task = Device {
                            sim,
                            channel: Some(channel),
                            packets: Arc::clone(&options.packets),
                            pace: options.pace,
                            looping: options.looping,
                        };
                        info!(%device, channel, %kind, %server, "pushing on request");
                        tasks.spawn(async move {
                            if let Err(error) = device_task.run(server, stop.clone()).await {
                                warn!("simulated device: {error:#}");
                            }
                            stop.cancel();
                        });
                    }
                    DeviceCommand::Stop {
                        device, channel, ..
                    }
                    | DeviceCommand::PlaybackCtrl {
                        device,
                        channel,
                        control: 2,
                        ..
                    } => {
                        let Ok(device) = DeviceId::parse(&device) else {
                            continue;
                        };
                        if let Some(stop) = running.remove(&(device.clone(), channel, kind)) {
                            info!(%device, channel, %kind, "stopping on request");
                            stop.cancel();
                        }
                    }
                    DeviceCommand::PlaybackCtrl { .. } => {}
                }
            }
            Ok(_) => {}
            Err(error) => {
                let delay = backoff.next_delay();
                if backoff.failures() == 1 {
                    warn!(
                        %error,
                        url = %options.url,
                        "MQTT broker not reachable; retrying with growing delays (up to {:?}) \
                         until it is, said once",
                        Backoff::MAX
                    );
                } else {
                    debug!(%error, ?delay, "MQTT reconnect failed");
                }
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    for stop in running.values().chain(talks.values()) {
        stop.cancel();
    }
    tasks.close();
    tasks.wait().await;
    Ok(())
}

/// The device, its SIM in the recording's layout and the server a command names; `None`
/// (logged when the server does not resolve) when any of them cannot be had.
async fn target(
    device: &str,
    layout: SimLayout,
    host: &str,
    port: u16,
) -> Option<(DeviceId, Sim, SocketAddr)> {
    let device = DeviceId::parse(device).ok()?;
    let sim = Sim::from_digits(device.as_str(), layout)?;
    match resolve(host, port).await {
        Ok(server) => Some((device, sim, server)),
        Err(error) => {
            warn!("{error:#}");
            None
        }
    }
}

/// A heartbeat per device every [`HEARTBEAT`] until `cancel`.
async fn heartbeats(
    client: AsyncClient,
    topics: Topics,
    devices: Vec<DeviceId>,
    cancel: CancellationToken,
) {
    // the first one goes out on connect, after the subscription
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = heartbeat.tick() => {}
        }
        for device in &devices {
            let body = format!(r#"{{"seqid":"hb-{device}","client_id":"{device}"}}"#);
            let topic = topics.request(device.as_str(), "HEART");
            if let Err(error) = client.try_publish(topic, QoS::AtMostOnce, false, body) {
                warn!(%error, "heartbeat not queued");
            }
        }
    }
}

async fn resolve(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("resolving {host}:{port}"))?
        .next()
        .with_context(|| format!("{host}:{port}: no address"))
}
