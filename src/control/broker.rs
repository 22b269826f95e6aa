//! The embedded MQTT broker (rumqttd, on threads of its own) and its guards: the CONNECT
//! hook (authentication with [`super::auth`], the brute-force brake, the refusal log), the
//! per-connection permissions ([`super::access`]) the router asks for every PUBLISH and
//! SUBSCRIBE, and the TLS listeners with a certificate read again on SIGHUP.
//!
//! The gateway's own connections log in with a credential made here at start-up (user
//! [`GATEWAY_USER`], 32 random bytes): admin rights, never written anywhere, valid for the
//! life of the process.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{Context, bail};
use argon2::password_hash::rand_core::{OsRng, RngCore};
use rumqttd::access::{ConnectHook, ConnectRequest, Permissions, Refusal, StreamHook};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::access::{Action, Identity, Policy, Principal, Role};
use super::auth::{Admission, Authenticator, GATEWAY_USER, RefusalLog, Refused, Throttle};
use crate::config::MqttSettings;

/// Counts of what the broker refused, for tests and status.
#[derive(Debug, Default)]
pub struct Refusals {
    /// CONNECTs refused.
    pub connects: AtomicU64,
    /// PUBLISHes dropped.
    pub publishes: AtomicU64,
    /// SUBSCRIBE filters refused.
    pub subscribes: AtomicU64,
}

/// The running embedded broker, as the rest of the gateway sees it.
#[derive(Clone)]
pub struct EmbeddedBroker {
    /// User name of the gateway's own connections.
    pub username: String,
    /// Their password (made at start-up).
    pub password: String,
    /// What it refused.
    pub refusals: Arc<Refusals>,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("refusals", &self.refusals)
            .finish()
    }
}

/// Starts the broker: MQTT on `embedded_listen`, WebSocket on `embedded_ws_listen`, and
/// with `tls_cert`/`tls_key` MQTT over TLS on `embedded_tls_listen` and secure WebSocket
/// on `embedded_wss_listen`. A SIGHUP reads the certificate again (for new connections)
/// until `cancel`.
pub fn start(
    settings: &MqttSettings,
    tasks: &TaskTracker,
    cancel: CancellationToken,
) -> anyhow::Result<EmbeddedBroker> {
    let mut secret = [0u8; 32];
    OsRng.fill_bytes(&mut secret);
    let password: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let authenticator = Authenticator::new(
        &settings.users,
        settings.device_secret.expose(),
        settings.allow_anonymous,
        password.clone(),
    )?;
    let refusals = Arc::new(Refusals::default());
    let guard = Arc::new(Guard {
        authenticator,
        policy: Policy::new(&settings.topic_prefix),
        throttle: Mutex::new(Throttle::default()),
        log: Mutex::new(RefusalLog::default()),
        refusals: Arc::clone(&refusals),
    });
    check_gateway_login(&guard.authenticator, settings)?;
    tasks.spawn(report_refusals(Arc::clone(&refusals), cancel.clone()));
    let tls = tls_listeners(settings, tasks, cancel)?;
    let connect_hook: ConnectHook = {
        let guard = Arc::clone(&guard);
        Arc::new(move |request: ConnectRequest| -> Verdict {
            let guard = Arc::clone(&guard);
            Box::pin(async move { guard.connect(request).await })
        })
    };
    let (config, listens) = broker_config(settings, connect_hook, tls);
    // Fail early with the key's name if a port is taken (rumqttd would only log it).
    for (key, addr) in &listens {
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
        tls = ?listens.iter().find(|(k, _)| k.ends_with("tls_listen")).map(|(_, a)| a),
        wss = ?listens.iter().find(|(k, _)| k.ends_with("wss_listen")).map(|(_, a)| a),
        anonymous = ?settings.allow_anonymous,
        users = settings.users.len(),
        devices = !settings.device_secret.expose().is_empty(),
        "embedded MQTT broker listening"
    );
    let broker = EmbeddedBroker {
        username: GATEWAY_USER.to_owned(),
        password,
        refusals,
    };
    Ok(broker)
}

/// rumqttd's configuration: the listeners (with the hooks) and the router's limits;
/// with the names of the keys of the listeners, for errors.
fn broker_config(
    settings: &MqttSettings,
    connect_hook: ConnectHook,
    tls: Option<StreamHook>,
) -> (rumqttd::Config, Vec<(&'static str, SocketAddr)>) {
    let server =
        |name: &str, listen: SocketAddr, stream_hook: Option<StreamHook>| rumqttd::ServerSettings {
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
                connect_hook: Some(Arc::clone(&connect_hook)),
                stream_hook,
            },
        };
    // plain listeners get a stream hook too, so that their WebSocket handshakes run in
    // the connection's task (vendor/rumqttd/JT1078-PATCHES.md, patch 5)
    let plain: StreamHook = Arc::new(|stream: tokio::net::TcpStream| -> Handshake {
        Box::pin(async move { Ok(Box::new(stream) as Box<dyn rumqttd::access::N>) })
    });
    let mut v4 = HashMap::from([(
        "v4".to_owned(),
        server("v4", settings.embedded_listen, Some(Arc::clone(&plain))),
    )]);
    let mut ws = HashMap::from([(
        "ws".to_owned(),
        server("ws", settings.embedded_ws_listen, Some(plain)),
    )]);
    let mut listens = vec![
        ("mqtt.embedded_listen", settings.embedded_listen),
        ("mqtt.embedded_ws_listen", settings.embedded_ws_listen),
    ];
    if let Some(hook) = tls {
        if let Some(listen) = settings.embedded_tls_listen {
            v4.insert(
                "tls".to_owned(),
                server("tls", listen, Some(Arc::clone(&hook))),
            );
            listens.push(("mqtt.embedded_tls_listen", listen));
        }
        if let Some(listen) = settings.embedded_wss_listen {
            ws.insert("wss".to_owned(), server("wss", listen, Some(hook)));
            listens.push(("mqtt.embedded_wss_listen", listen));
        }
    }
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 10_010,
            max_outgoing_packet_count: 1000,
            // What the broker keeps per subscription filter, and so how far a subscriber
            // may fall behind before it misses messages: 10 segments of 1 MiB. Smaller
            // (4 of 512 KiB) made a backend miss replies in a flood of 20,000 requests;
            // the price is that a filter keeps up to 10 MiB once a flood filled it
            // (docs/reliability.md, "Open").
            max_segment_size: 1024 * 1024,
            max_segment_count: 10,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(v4),
        ws: Some(ws),
        ..rumqttd::Config::default()
    };
    (config, listens)
}

/// `mqtt.username`, when set, is what the gateway's connections log in with: it must be
/// an admin (they publish device commands and replies). Checked before anything listens.
fn check_gateway_login(
    authenticator: &Authenticator,
    settings: &MqttSettings,
) -> anyhow::Result<()> {
    if settings.username.is_empty() {
        return Ok(());
    }
    // the gateway's connections use this user: it must be able to do their work
    // (checked before anything listens)
    let identity = authenticator
        .authenticate(
            std::net::Ipv4Addr::LOCALHOST.into(),
            "",
            Some(&settings.username),
            Some(settings.password.expose()),
        )
        .map_err(|refused| {
            anyhow::anyhow!(
                "mqtt.username {:?} cannot log in to the embedded broker ({}); leave it empty (the gateway then uses a credential of its own) or make it an admin of [[mqtt.users]] with mqtt.password",
                settings.username,
                refused.reason()
            )
        })?;
    if !matches!(
        identity.principal,
        Principal::User {
            role: Role::Admin,
            ..
        }
    ) {
        bail!(
            "mqtt.username {:?} is not an admin of [[mqtt.users]]: the gateway's connections publish device commands and replies",
            settings.username
        );
    }
    Ok(())
}

/// Logs, once a minute when they changed, how many logins, publishes and subscriptions
/// the broker refused (the per-address and per-connection lines say who).
async fn report_refusals(refusals: Arc<Refusals>, cancel: CancellationToken) {
    let mut last = [0u64; 3];
    let mut ticks = tokio::time::interval(std::time::Duration::from_secs(60));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let now = [
            refusals.connects.load(Ordering::Relaxed),
            refusals.publishes.load(Ordering::Relaxed),
            refusals.subscribes.load(Ordering::Relaxed),
        ];
        if now != last {
            info!(
                connects = now[0] - last[0],
                publishes = now[1] - last[1],
                subscribes = now[2] - last[2],
                total_connects = now[0],
                total_publishes = now[1],
                total_subscribes = now[2],
                "MQTT refusals in the last minute"
            );
            last = now;
        }
    }
}

/// What the CONNECT hook and the permissions share.
struct Guard {
    authenticator: Authenticator,
    policy: Policy,
    throttle: Mutex<Throttle>,
    log: Mutex<RefusalLog>,
    refusals: Arc<Refusals>,
}

impl Guard {
    async fn connect(
        self: Arc<Self>,
        request: ConnectRequest,
    ) -> Result<Arc<dyn Permissions>, Refusal> {
        let ip = request.peer.ip();
        let gateway = self
            .authenticator
            .is_gateway(request.username.as_deref(), request.password.as_deref());
        if !gateway {
            let admission = match self.throttle.lock() {
                Ok(mut throttle) => throttle.admit(
                    ip,
                    request.username.as_deref().unwrap_or_default(),
                    tokio::time::Instant::now(),
                ),
                Err(_) => Admission::Refuse,
            };
            match admission {
                Admission::Wait(wait) if wait.is_zero() => {}
                Admission::Wait(wait) => tokio::time::sleep(wait).await,
                Admission::Refuse => {
                    return Err(self.refuse(
                        &request,
                        Refused::NotAuthorized(
                            "too many failed logins of this user from this address",
                        ),
                    ));
                }
            }
        }
        let decided = {
            let guard = Arc::clone(&self);
            let request = request.clone();
            // argon2 takes tens of milliseconds: not on the listener's only thread
            tokio::task::spawn_blocking(move || {
                guard.authenticator.authenticate(
                    ip,
                    &request.client_id,
                    request.username.as_deref(),
                    request.password.as_deref(),
                )
            })
            .await
            .unwrap_or(Err(Refused::NotAuthorized("login check failed")))
        };
        match decided {
            Ok(identity) => {
                debug!(peer = %request.peer, listener = %request.listener, ?identity.principal, "MQTT login");
                Ok(Arc::new(Connection {
                    identity,
                    guard: Arc::clone(&self),
                    warned: AtomicBool::new(false),
                }))
            }
            Err(refused) => {
                if let Ok(mut throttle) = self.throttle.lock() {
                    throttle.failed(
                        ip,
                        request.username.as_deref().unwrap_or_default(),
                        tokio::time::Instant::now(),
                    );
                }
                Err(self.refuse(&request, refused))
            }
        }
    }

    fn refuse(&self, request: &ConnectRequest, refused: Refused) -> Refusal {
        self.refusals.connects.fetch_add(1, Ordering::Relaxed);
        let logged = match self.log.lock() {
            Ok(mut log) => log.record(request.peer.ip(), tokio::time::Instant::now()),
            Err(_) => None,
        };
        if let Some(unlogged) = logged {
            warn!(
                peer = %request.peer.ip(),
                listener = %request.listener,
                user = ?request.username.as_deref().map(crate::media::echo),
                reason = refused.reason(),
                refused_since_last_line = unlogged,
                "MQTT login refused (said once a minute per address)"
            );
        }
        match refused {
            Refused::BadCredentials(_) => Refusal::BadUserNameOrPassword,
            Refused::NotAuthorized(_) => Refusal::NotAuthorized,
        }
    }
}

/// One connection's rights.
struct Connection {
    identity: Identity,
    guard: Arc<Guard>,
    /// One warning per connection; later refusals are only counted.
    warned: AtomicBool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Connection {
    fn check(&self, action: Action, topic: &str) -> bool {
        if self.guard.policy.allows(&self.identity, action, topic) {
            return true;
        }
        let counter = match action {
            Action::Publish => &self.guard.refusals.publishes,
            Action::Subscribe => &self.guard.refusals.subscribes,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if !self.warned.swap(true, Ordering::Relaxed) {
            warn!(
                client_id = %crate::media::echo(&self.identity.client_id),
                principal = ?self.identity.principal,
                %action,
                topic = %crate::media::echo(topic),
                "MQTT {action} refused (said once per connection; further refusals are counted)"
            );
        }
        false
    }
}

impl Permissions for Connection {
    fn may_publish(&self, topic: &str) -> bool {
        self.check(Action::Publish, topic)
    }

    fn may_subscribe(&self, filter: &str) -> bool {
        self.check(Action::Subscribe, filter)
    }
}

/// The TLS stream hook, when a TLS listener is configured; a SIGHUP task reloads its
/// certificate.
fn tls_listeners(
    settings: &MqttSettings,
    tasks: &TaskTracker,
    cancel: CancellationToken,
) -> anyhow::Result<Option<StreamHook>> {
    if settings.embedded_tls_listen.is_none() && settings.embedded_wss_listen.is_none() {
        return Ok(None);
    }
    if settings.tls_cert.is_empty() || settings.tls_key.is_empty() {
        bail!(
            "mqtt.embedded_tls_listen / mqtt.embedded_wss_listen need mqtt.tls_cert and mqtt.tls_key (PEM files)"
        );
    }
    let (cert, key) = (settings.tls_cert.clone(), settings.tls_key.clone());
    let current = Arc::new(RwLock::new(server_config(&cert, &key)?));
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP (certificate reload)")?;
    tasks.spawn({
        let current = Arc::clone(&current);
        async move {
            loop {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    got = hangups.recv() => if got.is_none() { break },
                }
                match server_config(&cert, &key) {
                    Ok(config) => {
                        if let Ok(mut slot) = current.write() {
                            *slot = config;
                        }
                        info!(cert = %cert, "SIGHUP: MQTT TLS certificate read again");
                    }
                    Err(error) => warn!(
                        %error,
                        "SIGHUP: MQTT TLS certificate not read again; the previous one stays"
                    ),
                }
            }
        }
    });
    let hook: StreamHook = Arc::new(move |stream: tokio::net::TcpStream| -> Handshake {
        let config = current.read().map(|c| Arc::clone(&c)).ok();
        Box::pin(async move {
            let config = config.ok_or_else(|| std::io::Error::other("TLS configuration lost"))?;
            let stream = tokio_rustls::TlsAcceptor::from(config)
                .accept(stream)
                .await?;
            Ok(Box::new(stream) as Box<dyn rumqttd::access::N>)
        })
    });
    Ok(Some(hook))
}

/// What the CONNECT hook returns.
type Verdict = Pin<Box<dyn Future<Output = Result<Arc<dyn Permissions>, Refusal>> + Send>>;

/// What the stream hook returns.
type Handshake = Pin<Box<dyn Future<Output = std::io::Result<Box<dyn rumqttd::access::N>>> + Send>>;

/// A rustls server configuration from PEM files (ring provider).
fn server_config(cert: &str, key: &str) -> anyhow::Result<Arc<ServerConfig>> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("mqtt.tls_cert {cert}"))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("mqtt.tls_cert {cert}: not PEM certificates"))?;
    if chain.is_empty() {
        bail!("mqtt.tls_cert {cert}: no certificate in it");
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("mqtt.tls_key {key}: no PEM private key"))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("mqtt.tls_cert and mqtt.tls_key do not make a certificate and its key")?;
    Ok(Arc::new(config))
}
