//! Helpers of the control-plane tests: gateways on either broker, simulated devices
//! (MQTT-driven or pushing on their own), ffprobe of a live URL, topic matchers.

use std::sync::Arc;
use std::time::Duration;

use jt1078_gateway::media::DeviceId;
use jt1078_gateway::simulate::mqtt_device::{self, MqttDeviceOptions};
use jt1078_gateway::simulate::{self, Pace, SimulateOptions, load_file};
use tokio_util::sync::CancellationToken;

use super::mqtt::{Received, TestClient};
use super::{Gateway, free_port, run};

/// What a backend listens to: replies, commands to devices, the gateway's status.
pub(crate) const BACKEND_TOPICS: [&str; 3] = [
    "jt1078/client/#",
    "jt1078/device/#",
    "jt1078/status/gateway/#",
];

pub(crate) const WAIT: Duration = Duration::from_secs(20);

pub(crate) fn sample() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/sample-h264-g711a.jt1078")
}

/// A gateway using the external broker at `url`.
pub(crate) async fn gateway_with_broker(url: &str, extra: &[(&str, &str)]) -> Gateway {
    let mut env = vec![("JTGW__MQTT__EMBEDDED", "false"), ("JTGW__MQTT__URL", url)];
    env.extend_from_slice(extra);
    Gateway::start(&env).await
}

/// Which broker a scenario's `url` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BrokerAt {
    /// A mosquitto the test started.
    Mosquitto,
    /// The gateway's embedded broker, told to listen on the url's port.
    Embedded,
}

/// A url for an embedded broker on a free port.
pub(crate) fn embedded_url() -> String {
    format!("mqtt://127.0.0.1:{}", free_port())
}

pub(crate) fn port_of(url: &str) -> u16 {
    url.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// A gateway whose MQTT broker is at `url`: the external one, or its own embedded broker.
pub(crate) async fn gateway_on(url: &str, broker: BrokerAt, extra: &[(&str, &str)]) -> Gateway {
    match broker {
        BrokerAt::Mosquitto => gateway_with_broker(url, extra).await,
        BrokerAt::Embedded => {
            let listen = format!("127.0.0.1:{}", port_of(url));
            let mut env = vec![("JTGW__MQTT__EMBEDDED_LISTEN", listen.as_str())];
            env.extend_from_slice(extra);
            Gateway::start(&env).await
        }
    }
}

/// A device that pushes to `server` on its own, ignoring MQTT, until the token is
/// cancelled.
pub(crate) fn push_on_its_own(server: std::net::SocketAddr, device: &str) -> CancellationToken {
    replay_looping(&sample(), server, Some(device))
}

/// Replays `recording` into `server` in real time, looping (as `device` on channel 1, or
/// as the recording's own device), until the token is cancelled.
pub(crate) fn replay_looping(
    recording: &std::path::Path,
    server: std::net::SocketAddr,
    device: Option<&str>,
) -> CancellationToken {
    let options = SimulateOptions {
        packets: Arc::new(load_file(recording).unwrap()),
        server,
        device: device.map(|d| DeviceId::parse(d).unwrap()),
        channel: device.map(|_| 1),
        devices: 1,
        pace: Pace::Realtime,
        looping: true,
    };
    let cancel = CancellationToken::new();
    tokio::spawn(simulate::run(options, cancel.clone()));
    cancel
}

/// Simulated device(s) that obey the gateway over MQTT until the token is cancelled.
pub(crate) fn start_device(url: &str, device: &str) -> CancellationToken {
    let options = MqttDeviceOptions {
        packets: Arc::new(load_file(&sample()).unwrap()),
        url: url.to_owned(),
        topic_prefix: "jt1078".to_owned(),
        devices: vec![DeviceId::parse(device).unwrap()],
        pace: Pace::Realtime,
        looping: true,
        device_secret: None,
        talk: false,
        talk_out: None,
    };
    let cancel = CancellationToken::new();
    tokio::spawn(mqtt_device::run(options, cancel.clone()));
    cancel
}

/// The first `n` video frames ffprobe decodes from `url`.
pub(crate) async fn probe_frames(url: &str, n: usize) -> Vec<serde_json::Value> {
    let interval = format!("%+#{n}");
    let (stdout, _) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-select_streams",
            "v",
            "-read_intervals",
            &interval,
            "-show_entries",
            "frame=key_frame,width,height",
            "-of",
            "json",
            url,
        ],
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    v["frames"].as_array().unwrap().clone()
}

pub(crate) fn is(topic: &str) -> impl Fn(&Received) -> bool + '_ {
    move |r| r.topic == topic
}

/// Waits until the gateway's MQTT client is subscribed (its online status is retained).
pub(crate) async fn wait_online(client: &mut TestClient) {
    client
        .expect("gateway online", WAIT, |r| {
            r.topic == "jt1078/status/gateway/gw1" && r.json()["status"] == "online"
        })
        .await;
}
