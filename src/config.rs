//! Settings: the embedded `config/default.toml`, overlaid by `--config FILE`, overlaid by
//! `JTGW__SECTION__KEY` environment variables. Parsed once into typed values; an unknown or
//! malformed key fails start-up with its name.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use config::{Config, Environment, File, FileFormat};
use serde::{Deserialize, Serialize};

pub use crate::auth::Secret;

/// The built-in defaults, compiled into the binary.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// All settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// JT/T 1078 TCP ingest.
    pub ingest: IngestSettings,
    /// HTTP server (HTTP-FLV, API).
    pub http: HttpSettings,
    /// Audio transcoding per output.
    pub audio: AudioSettings,
    /// Stream hub.
    pub hub: HubConfig,
    /// MQTT broker and connection.
    pub mqtt: MqttSettings,
    /// Control plane policy.
    pub control: ControlSettings,
    /// RTMP push to a media server (SRS, nginx-rtmp).
    pub rtmp: RtmpSettings,
    /// SRS hooks and the Redis queue.
    pub bridge: BridgeSettings,
    /// WebRTC to browsers (MQTT-signalled and WHEP).
    pub webrtc: WebRtcSettings,
    /// Recordings on object storage.
    pub record: RecordSettings,
    /// Threads.
    pub runtime: RuntimeSettings,
    /// Logging.
    pub log: LogSettings,
    /// Prometheus metrics (`GET /metrics`).
    pub metrics: MetricsSettings,
}

/// `[ingest]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    /// Live stream listener.
    pub live_listen: SocketAddr,
    /// Playback stream listener.
    pub playback_listen: SocketAddr,
    /// A device connection that sends no useful packet (one of a channel that delivered a
    /// well-formed frame) for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Connection cap.
    pub max_connections: NonZeroUsize,
    /// Packet body cap in bytes.
    pub max_body: NonZeroUsize,
    /// Reassembled frame cap in bytes.
    pub max_frame: NonZeroUsize,
    /// Merged read: a device connection reads at most once per this interval (0 = as data
    /// arrives).
    #[serde(with = "humantime_serde")]
    pub merge_read: Duration,
    /// Highest logical channel a stream may have (JT/T 1076 numbers them 1 to 37); a packet
    /// of channel 0 or above this never makes a stream.
    pub max_channel: u8,
}

/// `[http]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// HTTP listener.
    pub listen: SocketAddr,
    /// Wait for a stream that is not live yet.
    #[serde(with = "humantime_serde")]
    pub flv_wait_timeout: Duration,
    /// Merged write: frames reaching a viewer within this time go out in one write (0 =
    /// every frame at once, lowest latency).
    #[serde(with = "humantime_serde")]
    pub flv_merge_write: Duration,
    /// A client that sends no complete request head within this is dropped (a trickle of
    /// bytes does not extend it).
    #[serde(with = "humantime_serde")]
    pub head_timeout: Duration,
    /// Bytes all HTTP-FLV viewers together may have queued for their sockets; past it a
    /// viewer whose queue is older than half a second is dropped (docs/reliability.md).
    pub viewer_backlog_total: NonZeroUsize,
    /// A viewer whose oldest queued byte is older than this skips to the next key frame,
    /// and is dropped if it is still that far behind there.
    #[serde(with = "humantime_serde")]
    pub viewer_max_lag: Duration,
    /// Viewers that may wait at once for devices that are not live; past it 503.
    pub max_waiting: NonZeroUsize,
    /// Waits for a device that is not live (cold pulls) one client address may start per
    /// minute; past it 429.
    pub cold_pulls_per_minute: NonZeroU32,
    /// Secret that signs play URLs (`?expires=…&sig=…`); empty: plays need no signature.
    pub play_secret: Secret,
    /// How long the play URLs in MQTT replies stay valid.
    #[serde(with = "humantime_serde")]
    pub play_ttl: Duration,
    /// Bearer token `/api/*` needs; empty: `/api/*` answers loopback clients only.
    pub api_token: Secret,
    /// Proxies whose `Forwarded` / `X-Forwarded-For` name the client (CIDR networks). A
    /// list, or (from the environment) a comma-separated string.
    #[serde(deserialize_with = "comma_list")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// PEM certificate chain of the HTTPS listener; empty: plain HTTP.
    pub tls_cert: String,
    /// PEM private key of `tls_cert`.
    pub tls_key: String,
}

impl HttpSettings {
    /// Whether the listener serves HTTPS.
    pub fn is_tls(&self) -> bool {
        !self.tls_cert.is_empty() || !self.tls_key.is_empty()
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.is_tls() { "https" } else { "http" }
    }
}

/// `[audio]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AudioSettings {
    /// Decode and transcode device audio at all.
    pub enabled: bool,
    /// Audio for HTTP-FLV viewers.
    pub flv: crate::media::AudioMode,
    /// Audio for RTMP outputs.
    pub rtmp: crate::media::AudioMode,
}

impl AudioSettings {
    /// What HTTP-FLV viewers take (passthrough when transcoding is off).
    pub fn flv_mode(&self) -> crate::media::AudioMode {
        self.mode(self.flv)
    }

    /// What RTMP outputs take (passthrough when transcoding is off).
    pub fn rtmp_mode(&self) -> crate::media::AudioMode {
        self.mode(self.rtmp)
    }

    fn mode(&self, wanted: crate::media::AudioMode) -> crate::media::AudioMode {
        if self.enabled {
            wanted
        } else {
            crate::media::AudioMode::Passthrough
        }
    }
}

/// `[runtime]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSettings {
    /// Threads serving device and viewer connections, each with its own event loop
    /// (0 = one per CPU core).
    pub io_threads: usize,
}

impl RuntimeSettings {
    /// The number of I/O threads to start.
    pub fn io_threads(&self) -> usize {
        if self.io_threads > 0 {
            return self.io_threads;
        }
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    }
}

/// `[hub]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// Bytes of live frames a reader may have queued (its time bound is
    /// `http.viewer_max_lag`).
    pub reader_queue_bytes: NonZeroUsize,
    /// Retired (a count of frames): its presence fails start-up with a message naming
    /// `reader_queue_bytes`.
    #[serde(default, skip_serializing)]
    pub reader_queue: Option<serde::de::IgnoredAny>,
    /// GOP cache cap in bytes.
    pub gop_cache_max_bytes: NonZeroUsize,
}

/// `[mqtt]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttSettings {
    /// Run the embedded broker.
    pub embedded: bool,
    /// Embedded broker MQTT listener.
    pub embedded_listen: SocketAddr,
    /// Embedded broker WebSocket listener.
    pub embedded_ws_listen: SocketAddr,
    /// External broker URL.
    pub url: String,
    /// External broker user name.
    pub username: String,
    /// External broker password.
    pub password: Secret,
    /// Topic prefix.
    pub topic_prefix: String,
    /// Gateway id.
    pub gateway_id: String,
    /// Heartbeat period.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// MQTT keep-alive.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Embedded broker: who may connect without a user name.
    pub allow_anonymous: AllowAnonymous,
    /// Embedded broker: named users.
    pub users: Vec<MqttUser>,
    /// Embedded broker: key of the devices' HMAC passwords (empty = no device logins).
    pub device_secret: Secret,
    /// Embedded broker: MQTT over TLS listener (empty = none).
    #[serde(deserialize_with = "empty_is_none")]
    pub embedded_tls_listen: Option<SocketAddr>,
    /// Embedded broker: MQTT over secure WebSocket listener (empty = none).
    #[serde(deserialize_with = "empty_is_none")]
    pub embedded_wss_listen: Option<SocketAddr>,
    /// PEM certificate chain of the TLS listeners.
    pub tls_cert: String,
    /// PEM private key of the TLS listeners.
    pub tls_key: String,
}

/// `mqtt.allow_anonymous`: `"loopback"`, `true` or `false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowAnonymous {
    /// Only from 127.0.0.0/8 and ::1 (the default).
    Loopback,
    /// From anywhere (`true`).
    Always,
    /// Never (`false`).
    Never,
}

impl Serialize for AllowAnonymous {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            AllowAnonymous::Loopback => serializer.serialize_str("loopback"),
            AllowAnonymous::Always => serializer.serialize_bool(true),
            AllowAnonymous::Never => serializer.serialize_bool(false),
        }
    }
}

impl<'de> Deserialize<'de> for AllowAnonymous {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Bool(bool),
            Text(String),
        }
        match Form::deserialize(deserializer)? {
            Form::Bool(true) => Ok(AllowAnonymous::Always),
            Form::Bool(false) => Ok(AllowAnonymous::Never),
            Form::Text(text) => match text.trim().to_ascii_lowercase().as_str() {
                "loopback" => Ok(AllowAnonymous::Loopback),
                "true" => Ok(AllowAnonymous::Always),
                "false" => Ok(AllowAnonymous::Never),
                other => Err(serde::de::Error::custom(format!(
                    "{other:?}: expected \"loopback\", true or false"
                ))),
            },
        }
    }
}

/// One of `[[mqtt.users]]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttUser {
    /// User name.
    pub name: String,
    /// argon2id PHC string (`jt1078-gateway hash-password`).
    pub password_hash: Secret,
    /// What the user may do.
    pub role: crate::control::access::Role,
}

/// An address, or none when empty.
fn empty_is_none<'de, D>(deserializer: D) -> Result<Option<SocketAddr>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text = String::deserialize(deserializer)?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))
}

/// `[control]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ControlSettings {
    /// Host for REQPULL and play URLs.
    pub public_host: String,
    /// Linger before STOP.
    #[serde(with = "humantime_serde")]
    pub stop_linger: Duration,
    /// Subscription lease.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Wait for the device after a pull.
    #[serde(with = "humantime_serde")]
    pub pull_timeout: Duration,
    /// Pull attempts.
    pub pull_attempts: u32,
}

/// `[rtmp]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RtmpSettings {
    /// Push every live stream as soon as it comes up.
    pub auto_push: bool,
    /// Target template for live streams (`{device}`, `{channel}`, `{kind}`).
    pub live_url: String,
    /// Target template for playback streams.
    pub playback_url: String,
    /// Play URL templates for replies, by name (`{app}`, `{stream}` of the target, and
    /// `{device}`, `{channel}`, `{kind}`).
    pub play_urls: std::collections::BTreeMap<String, String>,
    /// Longest TCP connect, handshake, connect and publish.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// A write to the server that takes longer ends the connection (then retried).
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
    /// First wait before a retry; doubles per failure up to `retry_backoff_max`.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Longest wait between retries.
    #[serde(with = "humantime_serde")]
    pub retry_backoff_max: Duration,
    /// Failed attempts in a row before the push gives up.
    pub max_attempts: NonZeroUsize,
}

/// `[record]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecordSettings {
    /// Where recordings go: a folder path, `file://…` or `s3://bucket/prefix`.
    pub store: String,
    /// S3 endpoint URL (empty: AWS's).
    pub s3_endpoint: String,
    /// S3 region.
    pub s3_region: String,
    /// S3 access key id.
    pub s3_access_key: Secret,
    /// S3 secret key.
    pub s3_secret_key: Secret,
    /// Streams recorded while live.
    pub auto: RecordAuto,
    /// Segment length (cut at the first key frame on or after it).
    #[serde(with = "humantime_serde")]
    pub segment: Duration,
    /// Recordings older than this are deleted (zero: never).
    #[serde(with = "humantime_serde")]
    pub keep: Duration,
    /// How often the retention sweep runs.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// Where segments wait for the store (empty: beside the store).
    pub spool_dir: String,
    /// Bytes the spool may hold.
    pub spool_max_bytes: NonZeroU64,
}

/// `record.auto`: which live streams are recorded without a request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RecordAuto {
    /// None.
    #[default]
    Off,
    /// Every live stream.
    All,
    /// Streams of these devices (`13800138000`) or these channels (`13800138000_2`).
    Only(Vec<String>),
}

impl RecordAuto {
    /// Whether a live stream of `device` channel `channel` is recorded.
    pub fn matches(&self, device: &str, channel: u8) -> bool {
        match self {
            RecordAuto::Off => false,
            RecordAuto::All => true,
            RecordAuto::Only(names) => names
                .iter()
                .any(|name| name == device || *name == format!("{device}_{channel}")),
        }
    }
}

impl<'de> Deserialize<'de> for RecordAuto {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.trim() {
            "off" | "" => Ok(RecordAuto::Off),
            "all" => Ok(RecordAuto::All),
            list => {
                let mut names = Vec::new();
                for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    let (device, channel) = match name.split_once('_') {
                        Some((device, channel)) => (device, Some(channel)),
                        None => (name, None),
                    };
                    let device = crate::media::DeviceId::parse(device).map_err(|_| {
                        serde::de::Error::custom(format!(
                            "record.auto: {name:?} is not a device id or {{device}}_{{channel}} \
                             (or \"off\", \"all\")"
                        ))
                    })?;
                    let name = match channel {
                        Some(channel) => {
                            let channel: u8 = channel.parse().map_err(|_| {
                                serde::de::Error::custom(format!(
                                    "record.auto: {name:?} has no channel number after _"
                                ))
                            })?;
                            format!("{device}_{channel}")
                        }
                        None => device.to_string(),
                    };
                    names.push(name);
                }
                Ok(RecordAuto::Only(names))
            }
        }
    }
}

impl Serialize for RecordAuto {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            RecordAuto::Off => serializer.serialize_str("off"),
            RecordAuto::All => serializer.serialize_str("all"),
            RecordAuto::Only(names) => serializer.serialize_str(&names.join(",")),
        }
    }
}

/// `[webrtc]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebRtcSettings {
    /// Serve WebRTC (WHEP and the MQTT `WEBRTC` request).
    pub enabled: bool,
    /// The one UDP socket every peer's media goes through.
    pub udp_listen: SocketAddr,
    /// Addresses to announce as host candidates (NAT 1:1: the public address of this
    /// machine); empty: the addresses of the machine's interfaces. A list, or (from the
    /// environment) a comma-separated string.
    #[serde(deserialize_with = "comma_list")]
    pub public_ips: Vec<std::net::IpAddr>,
    /// STUN servers (`host:port`) that tell the gateway the address its UDP port has
    /// outside a NAT, announced to browsers besides `public_ips` or the interfaces' (as a
    /// host candidate: the gateway is ICE-lite); empty: none asked. A list, or (from the
    /// environment) a comma-separated string.
    #[serde(deserialize_with = "comma_list")]
    pub stun_servers: Vec<String>,
    /// TURN servers (UDP, long-term credentials) on which the gateway allocates a relayed
    /// address, announced to browsers as a relay candidate; empty: none. A list of
    /// `{ server, username, credential }` tables or `"username:credential@host:port"`
    /// strings, or (from the environment) such strings comma-separated.
    #[serde(deserialize_with = "comma_list_of_secrets")]
    pub turn_servers: Vec<TurnServer>,
    /// Use the TURN servers a WEBRTC request names in `iceserver` (the seed's field): a
    /// relay is allocated on each for that request's peer. Off: the list is ignored (a
    /// requester could otherwise make the gateway send to hosts of its choosing).
    pub request_ice_servers: bool,
    /// Which candidates browsers are given: `all` (the host addresses, and the relayed
    /// ones when `turn_servers` are set) or `relay` (only the relayed addresses).
    pub ice_transport_policy: IceTransportPolicy,
    /// Peers at once, over all streams.
    pub max_peers: NonZeroUsize,
    /// A peer that sends nothing (no consent check, no RTCP) for this long is gone.
    #[serde(with = "humantime_serde")]
    pub consent_timeout: Duration,
    /// How long a peer waits for its stream to come up (the device to connect).
    #[serde(with = "humantime_serde")]
    pub wait_timeout: Duration,
    /// Bearer token WHEP requests must carry (empty = none).
    pub whep_token: Secret,
    /// `Access-Control-Allow-Origin` for WHEP (browsers on another origin).
    pub cors_origin: String,
}

/// A TURN server of `webrtc.turn_servers`.
#[derive(Clone, Serialize, PartialEq, Eq)]
pub struct TurnServer {
    /// `host:port` (UDP).
    pub server: String,
    /// Long-term credential user name.
    pub username: String,
    /// Its password (shown as `<redacted>`).
    #[serde(serialize_with = "crate::auth::secret::serialize_redacted")]
    pub credential: String,
}

impl std::fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the password stays out of logs
        f.debug_struct("TurnServer")
            .field("server", &self.server)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl std::str::FromStr for TurnServer {
    type Err = String;

    /// `username:credential@host:port`: the user name ends at the first `:`, the host at
    /// the last `@` (a password may hold either).
    fn from_str(text: &str) -> Result<TurnServer, String> {
        let text = text.strip_prefix("turn:").unwrap_or(text);
        let (user, server) = text
            .rsplit_once('@')
            .ok_or("expected username:credential@host:port")?;
        let (username, credential) = user
            .split_once(':')
            .ok_or("expected username:credential before the @")?;
        TurnServer::new(server, username, credential)
    }
}

impl TurnServer {
    /// A server at `server`, which must be `host:port` (`[v6]:port` for an IPv6 address).
    pub fn new(server: &str, username: &str, credential: &str) -> Result<TurnServer, String> {
        if server
            .rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        {
            return Err(format!("{server:?} is not host:port"));
        }
        Ok(TurnServer {
            server: server.to_owned(),
            username: username.to_owned(),
            credential: credential.to_owned(),
        })
    }
}

impl<'de> Deserialize<'de> for TurnServer {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            server: String,
            username: String,
            credential: String,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Table(Table),
        }
        match Form::deserialize(deserializer)? {
            Form::Text(text) => text.parse().map_err(serde::de::Error::custom),
            Form::Table(t) => TurnServer::new(&t.server, &t.username, &t.credential)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// `webrtc.ice_transport_policy`, as in the W3C `RTCIceTransportPolicy`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IceTransportPolicy {
    /// Host addresses, and relayed ones when there are TURN servers.
    All,
    /// Only the relayed addresses (`webrtc.turn_servers`).
    Relay,
}

/// `[bridge]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BridgeSettings {
    /// Token SRS hook URLs must carry as `?token=` (empty = none).
    pub hook_token: Secret,
    /// Networks SRS hooks may come from.
    pub hook_allow: Vec<ipnet::IpNet>,
    /// Allow plays while the MQTT broker is unreachable.
    pub fail_open: bool,
    /// SRS app of live streams.
    pub live_app: String,
    /// SRS app of playback streams.
    pub playback_app: String,
    /// Stream name forms, tried in order.
    pub stream_forms: Vec<String>,
    /// Where the gateway pushes a played stream (`{srs}`, `{app}`, `{stream}`); empty =
    /// on_play subscribes without a push.
    pub push_url: String,
    /// SRS's HTTP API (`{srs}`), asked whether a client still plays; empty = leases only.
    pub srs_api: String,
    /// Prefix of the control-plane client id of an SRS client.
    pub client_prefix: String,
    /// Redis URL (empty = no queue).
    pub redis_url: String,
    /// The list of external commands.
    pub redis_key: String,
    /// Copy the gateway's own REQPULL/STOP into `redis_mirror_key`.
    pub redis_mirror: bool,
    /// The mirror list.
    pub redis_mirror_key: String,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// tracing filter.
    pub level: String,
}

/// `[metrics]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Series labelled by stream (device, channel, kind) as well as the fleet's totals.
    pub per_stream: bool,
    /// Most streams given series of their own with `per_stream` (the first by key).
    pub per_stream_max: usize,
}

/// A list, or one comma-separated string of its items (environment variables cannot hold
/// lists; a parsing environment would also turn strings such as passwords into numbers).
fn comma_list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + std::str::FromStr,
    T::Err: std::fmt::Display,
{
    comma_list_echoing(deserializer, true)
}

/// [`comma_list`] of items that hold a secret (TURN credentials): an item that does not
/// parse is named by its position, not echoed.
fn comma_list_of_secrets<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + std::str::FromStr,
    T::Err: std::fmt::Display,
{
    comma_list_echoing(deserializer, false)
}

fn comma_list_echoing<'de, D, T>(deserializer: D, echo: bool) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + std::str::FromStr,
    T::Err: std::fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form<T> {
        List(Vec<T>),
        Text(String),
    }
    match Form::<T>::deserialize(deserializer)? {
        Form::List(list) => Ok(list),
        Form::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .enumerate()
            .map(|(i, s)| {
                s.parse().map_err(|e| {
                    serde::de::Error::custom(if echo {
                        format!("{s:?}: {e}")
                    } else {
                        format!("item {}: {e}", i + 1)
                    })
                })
            })
            .collect(),
    }
}

impl Settings {
    /// Loads defaults, then `file`, then the process environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Settings> {
        Settings::load_from(file, None)
    }

    /// Loads defaults, then `file`, then `env` (a map of `JTGW__…` variables) or, when
    /// `None`, the process environment. Tests pass a map instead of setting variables.
    pub fn load_from(
        file: Option<&Path>,
        env: Option<HashMap<String, String>>,
    ) -> anyhow::Result<Settings> {
        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(File::from(path).format(FileFormat::Toml));
        }
        let environment = Environment::with_prefix("JTGW")
            .separator("__")
            .prefix_separator("__")
            .source(env);
        let config = builder
            .add_source(environment)
            .build()
            .with_context(|| match file {
                Some(path) => format!("reading configuration file {}", path.display()),
                None => "reading configuration".to_owned(),
            })?;
        let settings: Settings = config
            .try_deserialize()
            .context("invalid configuration (see docs/configuration.md)")?;
        if settings.hub.reader_queue.is_some() {
            anyhow::bail!(
                "hub.reader_queue (a count of frames) is retired: a reader is bounded by bytes, \
                 hub.reader_queue_bytes, and by time, http.viewer_max_lag; remove the key \
                 (see docs/configuration.md)"
            );
        }
        Ok(settings)
    }

    /// The hub's part.
    pub fn hub_settings(&self) -> crate::hub::HubSettings {
        crate::hub::HubSettings {
            reader_max_bytes: self.hub.reader_queue_bytes.get(),
            reader_max_lag: self.http.viewer_max_lag,
            gop_cache_max_bytes: self.hub.gop_cache_max_bytes.get(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_with_the_documented_ports() {
        let s = Settings::load_from(None, Some(HashMap::new())).unwrap();
        assert_eq!(s.ingest.live_listen.port(), 9501);
        assert_eq!(s.ingest.playback_listen.port(), 9502);
        assert_eq!(s.http.listen.port(), 9531);
        assert_eq!(s.http.flv_wait_timeout, Duration::from_secs(15));
    }

    #[test]
    fn environment_overrides_every_section() {
        let env = HashMap::from([
            (
                "JTGW__INGEST__LIVE_LISTEN".to_owned(),
                "127.0.0.1:19501".to_owned(),
            ),
            (
                "JTGW__HTTP__LISTEN".to_owned(),
                "127.0.0.1:19531".to_owned(),
            ),
            ("JTGW__INGEST__IDLE_TIMEOUT".to_owned(), "2m".to_owned()),
            (
                "JTGW__HUB__READER_QUEUE_BYTES".to_owned(),
                "1000000".to_owned(),
            ),
        ]);
        let s = Settings::load_from(None, Some(env)).unwrap();
        assert_eq!(s.ingest.live_listen, "127.0.0.1:19501".parse().unwrap());
        assert_eq!(s.http.listen, "127.0.0.1:19531".parse().unwrap());
        assert_eq!(s.ingest.idle_timeout, Duration::from_secs(120));
        assert_eq!(s.hub.reader_queue_bytes.get(), 1_000_000);
    }

    #[test]
    fn the_retired_reader_queue_fails_start_up_naming_its_replacement() {
        let env = HashMap::from([("JTGW__HUB__READER_QUEUE".to_owned(), "256".to_owned())]);
        let error = Settings::load_from(None, Some(env)).unwrap_err();
        let message = format!("{error:#}");
        assert!(message.contains("hub.reader_queue_bytes"), "{message}");
        assert!(message.contains("http.viewer_max_lag"), "{message}");
    }

    #[test]
    fn public_ips_come_from_the_environment_comma_separated() {
        let env = HashMap::from([(
            "JTGW__WEBRTC__PUBLIC_IPS".to_owned(),
            "203.0.113.7,198.51.100.2".to_owned(),
        )]);
        let s = Settings::load_from(None, Some(env)).unwrap();
        let expected: Vec<std::net::IpAddr> = vec![
            "203.0.113.7".parse().unwrap(),
            "198.51.100.2".parse().unwrap(),
        ];
        assert_eq!(s.webrtc.public_ips, expected);
        assert_eq!(s.webrtc.udp_listen.port(), 8000);
    }

    #[test]
    fn stun_servers_come_from_the_environment_comma_separated() {
        let env = HashMap::from([(
            "JTGW__WEBRTC__STUN_SERVERS".to_owned(),
            "stun.example.net:3478, 192.0.2.1:19302".to_owned(),
        )]);
        let s = Settings::load_from(None, Some(env)).unwrap();
        assert_eq!(
            s.webrtc.stun_servers,
            ["stun.example.net:3478", "192.0.2.1:19302"]
        );
        let s = Settings::load_from(None, Some(HashMap::new())).unwrap();
        assert!(s.webrtc.stun_servers.is_empty());
    }

    #[test]
    fn turn_servers_come_as_strings_or_tables() {
        let env = HashMap::from([
            (
                "JTGW__WEBRTC__TURN_SERVERS".to_owned(),
                "gw:p@ss:w0rd@turn.example.net:3478, turn:u2:x@192.0.2.9:3479".to_owned(),
            ),
            (
                "JTGW__WEBRTC__ICE_TRANSPORT_POLICY".to_owned(),
                "relay".to_owned(),
            ),
        ]);
        let s = Settings::load_from(None, Some(env)).unwrap();
        let servers: Vec<(&str, &str, &str)> = s
            .webrtc
            .turn_servers
            .iter()
            .map(|t| {
                (
                    t.server.as_str(),
                    t.username.as_str(),
                    t.credential.as_str(),
                )
            })
            .collect();
        assert_eq!(
            servers,
            [
                ("turn.example.net:3478", "gw", "p@ss:w0rd"),
                ("192.0.2.9:3479", "u2", "x")
            ]
        );
        assert_eq!(s.webrtc.ice_transport_policy, IceTransportPolicy::Relay);
        assert!(!format!("{:?}", s.webrtc.turn_servers).contains("w0rd"));

        let dir = std::env::temp_dir().join(format!("jtgw-turn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("turn.toml");
        std::fs::write(
            &file,
            "[webrtc]\nturn_servers = [{ server = \"turn.example.net:3478\", username = \"a:b\", credential = \"c,d\" }]\n",
        )
        .unwrap();
        let s = Settings::load_from(Some(&file), Some(HashMap::new())).unwrap();
        assert_eq!(s.webrtc.turn_servers.len(), 1);
        assert_eq!(s.webrtc.turn_servers[0].username, "a:b");
        assert_eq!(s.webrtc.turn_servers[0].credential, "c,d");
        assert_eq!(s.webrtc.ice_transport_policy, IceTransportPolicy::All);
        std::fs::remove_dir_all(&dir).unwrap();

        for bad in [
            "turn.example.net:3478",
            "gw@turn.example.net:3478",
            "gw:p@turn.example.net",
        ] {
            let env = HashMap::from([("JTGW__WEBRTC__TURN_SERVERS".to_owned(), bad.to_owned())]);
            let error = format!("{:#}", Settings::load_from(None, Some(env)).unwrap_err());
            assert!(error.contains("turn_servers"), "{bad}: {error}");
            assert!(
                !error.contains("gw:p@"),
                "no credential in the error: {error}"
            );
        }
    }

    #[test]
    fn bad_values_name_the_key() {
        let env = HashMap::from([("JTGW__INGEST__IDLE_TIMEOUT".to_owned(), "soon".to_owned())]);
        let err = format!("{:#}", Settings::load_from(None, Some(env)).unwrap_err());
        assert!(err.contains("idle_timeout"), "{err}");
        let env = HashMap::from([("JTGW__INGEST__NO_SUCH_KEY".to_owned(), "1".to_owned())]);
        let err = format!("{:#}", Settings::load_from(None, Some(env)).unwrap_err());
        assert!(err.contains("no_such_key"), "{err}");
    }

    /// A TOML file in the temp directory, removed on drop.
    struct TempToml(std::path::PathBuf);

    impl TempToml {
        fn new(name: &str, text: &str) -> TempToml {
            let path = std::env::temp_dir()
                .join(format!("jtgw-config-{}-{name}.toml", std::process::id()));
            std::fs::write(&path, text).unwrap();
            TempToml(path)
        }
    }

    impl Drop for TempToml {
        fn drop(&mut self) {
            // A leftover temp file is harmless.
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn config_file_overrides_a_default_and_keeps_the_rest() {
        let file = TempToml::new(
            "overlay",
            "[ingest]\nidle_timeout = \"45s\"\n\n[http]\nlisten = \"127.0.0.1:18080\"\n",
        );
        let s = Settings::load(Some(&file.0)).unwrap();
        assert_eq!(s.ingest.idle_timeout, Duration::from_secs(45));
        assert_eq!(s.http.listen, "127.0.0.1:18080".parse().unwrap());
        // keys the file does not name keep their defaults
        assert_eq!(s.ingest.live_listen.port(), 9501);
        assert_eq!(s.http.flv_wait_timeout, Duration::from_secs(15));
    }

    #[test]
    fn unknown_key_in_config_file_fails_with_its_name() {
        let file = TempToml::new("unknown", "[ingest]\nlive_lisen = \"0.0.0.0:1\"\n");
        let err = format!("{:#}", Settings::load(Some(&file.0)).unwrap_err());
        assert!(err.contains("live_lisen"), "{err}");
    }

    #[test]
    fn broker_secrets_never_print() {
        let env = HashMap::from([(
            "JTGW__MQTT__DEVICE_SECRET".to_owned(),
            "very-secret".to_owned(),
        )]);
        let mut settings = Settings::load_from(None, Some(env)).unwrap();
        settings.mqtt.users.push(MqttUser {
            name: "u".to_owned(),
            password_hash: Secret::new("$argon2id$v=19$hash".to_owned()),
            role: crate::control::access::Role::Admin,
        });
        let debug = format!("{settings:?}");
        let json = serde_json::to_string(&settings).unwrap();
        for text in [&debug, &json] {
            assert!(
                !text.contains("very-secret") && !text.contains("argon2id"),
                "{text}"
            );
            assert!(text.contains("<redacted>"));
        }
        assert_eq!(settings.mqtt.device_secret.expose(), "very-secret");
        assert_eq!(settings.mqtt.allow_anonymous, AllowAnonymous::Loopback);
    }

    #[test]
    fn allow_anonymous_takes_loopback_true_or_false() {
        for (text, expected) in [
            ("loopback", AllowAnonymous::Loopback),
            ("true", AllowAnonymous::Always),
            ("false", AllowAnonymous::Never),
        ] {
            let env = HashMap::from([("JTGW__MQTT__ALLOW_ANONYMOUS".to_owned(), text.to_owned())]);
            let settings = Settings::load_from(None, Some(env)).unwrap();
            assert_eq!(settings.mqtt.allow_anonymous, expected);
        }
        let env = HashMap::from([("JTGW__MQTT__ALLOW_ANONYMOUS".to_owned(), "yes".to_owned())]);
        let error = format!("{:#}", Settings::load_from(None, Some(env)).unwrap_err());
        assert!(error.contains("allow_anonymous"), "{error}");
    }

    #[test]
    fn record_auto_takes_off_all_or_names_and_s3_keys_print_redacted() {
        let load = |auto: &str| {
            let env = HashMap::from([
                ("JTGW__RECORD__AUTO".to_owned(), auto.to_owned()),
                (
                    "JTGW__RECORD__S3_SECRET_KEY".to_owned(),
                    "hunter2".to_owned(),
                ),
            ]);
            Settings::load_from(None, Some(env))
        };
        let s = load("all").unwrap();
        assert_eq!(s.record.auto, RecordAuto::All);
        assert_eq!(s.record.s3_secret_key.expose(), "hunter2");
        let printed = serde_json::to_string(&s).unwrap();
        assert!(!printed.contains("hunter2"), "{printed}");
        assert_eq!(load("off").unwrap().record.auto, RecordAuto::Off);
        let some = load("13800138000, 13900139000_2").unwrap().record.auto;
        assert!(some.matches("13800138000", 3));
        assert!(some.matches("13900139000", 2));
        assert!(!some.matches("13900139000", 1));
        let error = format!("{:#}", load("13900139000_x").unwrap_err());
        assert!(error.contains("record.auto"), "{error}");
    }

    #[test]
    fn every_default_key_is_documented() {
        let doc = include_str!("../docs/configuration.md");
        let defaults: HashMap<String, HashMap<String, config::Value>> = Config::builder()
            .add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();
        for (section, keys) in defaults {
            for key in keys.keys() {
                let name = format!("`{section}.{key}`");
                assert!(
                    doc.contains(&name),
                    "docs/configuration.md does not document {name}"
                );
            }
        }
    }
}
