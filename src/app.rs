//! Composition root: binds the listeners, builds the hub, spawns each side, shuts down.
//!
//! Tests bind port 0 through the same path ([`App::bind`] with addresses in the settings)
//! and stop the gateway with a [`CancellationToken`].

use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::auth::{ApiGuard, PlayAccess, TrustedProxies};
use crate::config::Settings;
use crate::control::{ControlContext, RtmpSide};
use crate::hub::Hub;
use crate::ingest::IngestServer;
use crate::output::rtmp_push::{PushSettings, RtmpPusher};
use crate::output::shared::http_serve;
use crate::output::shared::tls::CertStore;
use crate::output::webrtc::WebRtc;
use crate::output::{api, http_flv};

/// A gateway with its listeners bound, ready to run.
#[derive(Debug)]
pub struct App {
    settings: Settings,
    hub: Hub,
    live: TcpListener,
    playback: TcpListener,
    http: TcpListener,
    /// `webrtc.udp_listen`, when WebRTC is enabled.
    webrtc: Option<std::net::UdpSocket>,
    /// The addresses the WebRTC side offers, published by its socket's loop.
    webrtc_addresses: tokio::sync::watch::Sender<crate::output::webrtc::Addresses>,
    /// `http.tls_cert` / `http.tls_key`, when the listener serves HTTPS.
    tls: Option<std::sync::Arc<CertStore>>,
    /// Bumped after each certificate reload (SIGHUP).
    tls_reloads: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
}

/// The addresses the gateway actually listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundAddrs {
    /// Live JT/T 1078 ingest.
    pub live: SocketAddr,
    /// Playback JT/T 1078 ingest.
    pub playback: SocketAddr,
    /// HTTP (FLV, API, WHEP).
    pub http: SocketAddr,
    /// WebRTC media (UDP), when enabled.
    pub webrtc: Option<SocketAddr>,
}

impl App {
    /// Binds every listener named in `settings`.
    pub async fn bind(settings: Settings) -> anyhow::Result<App> {
        let bind = |addr: SocketAddr, key: &'static str| async move {
            listen(addr).with_context(|| format!("binding {key} = {addr}"))
        };
        let live = bind(settings.ingest.live_listen, "ingest.live_listen").await?;
        let playback = bind(settings.ingest.playback_listen, "ingest.playback_listen").await?;
        let http = bind(settings.http.listen, "http.listen").await?;
        let webrtc = if settings.webrtc.enabled {
            let addr = settings.webrtc.udp_listen;
            Some(
                std::net::UdpSocket::bind(addr)
                    .with_context(|| format!("binding webrtc.udp_listen = {addr}"))?,
            )
        } else {
            None
        };
        let tls = if settings.http.is_tls() {
            let (cert, key) = (&settings.http.tls_cert, &settings.http.tls_key);
            if cert.is_empty() || key.is_empty() {
                anyhow::bail!("http.tls_cert and http.tls_key must be set together");
            }
            Some(CertStore::load(
                std::path::Path::new(cert),
                std::path::Path::new(key),
            )?)
        } else {
            None
        };
        let hub = Hub::new(settings.hub_settings());
        Ok(App {
            settings,
            hub,
            live,
            playback,
            http,
            webrtc,
            webrtc_addresses: tokio::sync::watch::Sender::default(),
            tls,
            tls_reloads: std::sync::Arc::default(),
        })
    }

    /// Changes after each reload of the HTTPS certificate (on SIGHUP), successful or not
    /// (for embedding and tests).
    pub fn tls_reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tls_reloads.subscribe()
    }

    /// Where the listeners are bound.
    pub fn local_addrs(&self) -> anyhow::Result<BoundAddrs> {
        Ok(BoundAddrs {
            live: self.live.local_addr()?,
            playback: self.playback.local_addr()?,
            http: self.http.local_addr()?,
            webrtc: self.webrtc.as_ref().map(|s| s.local_addr()).transpose()?,
        })
    }

    /// The hub (for embedding and tests).
    pub fn hub(&self) -> Hub {
        self.hub.clone()
    }

    /// The addresses the WebRTC side offers, changed by a STUN server's answer, a TURN
    /// allocation made, failed or given back (what offers read; embedders and tests wait
    /// on it instead of polling `/api/webrtc`).
    pub fn webrtc_addresses(
        &self,
    ) -> tokio::sync::watch::Receiver<crate::output::webrtc::Addresses> {
        self.webrtc_addresses.subscribe()
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addrs = self.local_addrs()?;
        info!(
            live = %addrs.live,
            playback = %addrs.playback,
            http = %addrs.http,
            "jt1078-gateway listening"
        );
        let tasks = TaskTracker::new();
        let plays = PlayAccess::new(&self.settings.http);
        // The gateway's own connections log in to its embedded broker with the credential
        // it made, unless mqtt.username names an admin user.
        let mut mqtt_settings = self.settings.mqtt.clone();
        if mqtt_settings.embedded {
            let broker = crate::control::broker::start(&mqtt_settings, &tasks, shutdown.clone())?;
            if mqtt_settings.username.is_empty() {
                mqtt_settings.username = broker.username;
                mqtt_settings.password = crate::config::Secret::new(broker.password);
            }
        }
        let control = ControlContext::new(
            &mqtt_settings,
            &self.settings.control,
            (addrs.live.port(), addrs.playback.port(), addrs.http.port()),
            self.settings.http.scheme(),
            plays.clone(),
        );
        let control_metrics = control.metrics.clone();
        let (pusher, events_rx) = RtmpPusher::new(
            self.hub.clone(),
            PushSettings::new(&self.settings.rtmp, self.settings.audio.rtmp_mode()),
            tasks.clone(),
            shutdown.clone(),
        );
        let rtmp = RtmpSide {
            pusher,
            events_rx,
            settings: self.settings.rtmp.clone(),
        };
        let webrtc = match self.webrtc {
            Some(socket) => Some(WebRtc::start(
                &self.settings.webrtc,
                socket,
                self.hub.clone(),
                &tasks,
                shutdown.clone(),
                self.webrtc_addresses,
            )?),
            None => None,
        };
        let webrtc_handle = webrtc.as_ref().map(|(webrtc, _)| webrtc.clone());
        let whep = webrtc.as_ref().map(|(webrtc, _)| {
            use crate::output::webrtc::whep;
            (
                whep::routes(webrtc.clone(), plays.clone()),
                whep::api_routes(webrtc.clone()),
            )
        });
        let tls = match &self.tls {
            Some(store) => {
                spawn_tls_reloader(store, &self.tls_reloads, &tasks, shutdown.clone())?;
                Some(store.acceptor()?)
            }
            None => None,
        };
        let recordings = crate::output::record::Recordings::start(
            &self.settings.record,
            self.hub.clone(),
            plays.clone(),
            &tasks,
            shutdown.clone(),
        )?;
        crate::control::spawn(
            control,
            self.hub.clone(),
            rtmp,
            webrtc,
            recordings.clone(),
            &tasks,
            shutdown.clone(),
        )?;
        let bridge = crate::bridge::spawn(
            &self.settings.bridge,
            &mqtt_settings,
            self.settings.control.lease,
            plays.clone(),
            &tasks,
            shutdown.clone(),
        )?;
        let player = http_flv::FlvPlayer::new(
            self.hub.clone(),
            &self.settings.http,
            self.settings.audio.flv_mode(),
        );
        let (whep, webrtc_api) = whep.unzip();
        let ingest = IngestServer::new(&self.settings.ingest, self.hub.clone());
        let metrics = crate::metrics::routes(
            crate::metrics::Sources {
                hub: self.hub.clone(),
                ingest: ingest.stats(),
                bridge: bridge.counters(),
                control: control_metrics,
                webrtc: webrtc_handle,
            },
            &self.settings.metrics,
        );
        // every /api/* route but the SRS hooks' (which have their own guard), and /metrics
        let api = Router::new()
            .merge(api::routes(self.hub.clone(), recordings.clone()))
            .merge(crate::output::console::api_routes(
                self.hub.clone(),
                recordings.clone(),
            ))
            .merge(metrics)
            .merge(bridge.api_routes())
            .merge(webrtc_api.unwrap_or_default())
            .merge(recordings.api_routes())
            .layer(axum::middleware::from_fn_with_state(
                ApiGuard::new(&self.settings.http, &self.settings.mqtt.users),
                crate::auth::guard_api,
            ));
        let sides = IoSides {
            ingest,
            router: Router::new()
                .merge(player.routes())
                .merge(crate::output::console::routes())
                .merge(api)
                .merge(bridge.routes())
                .merge(recordings.routes())
                .merge(whep.unwrap_or_default()),
            player,
            serve: http_serve::ServeOptions {
                head_timeout: self.settings.http.head_timeout,
                tls,
                trusted: TrustedProxies::new(&self.settings.http.trusted_proxies),
            },
        };
        let listeners = [
            self.live.into_std()?,
            self.playback.into_std()?,
            self.http.into_std()?,
        ];
        let threads = self.settings.runtime.io_threads();
        let mut finished = futures_util::stream::FuturesUnordered::new();
        // a failure while starting stops the threads already running (and control)
        let stop_on_failure = shutdown.clone().drop_guard();
        for i in 0..threads {
            let copies = [
                listeners[0].try_clone()?,
                listeners[1].try_clone()?,
                listeners[2].try_clone()?,
            ];
            let (sides, shutdown) = (sides.clone(), shutdown.clone());
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name(format!("io-{i}"))
                .spawn(move || {
                    // nobody waiting any more is a normal state during shutdown
                    let _ = done_tx.send(io_thread(copies, sides, shutdown));
                })
                .context("starting an I/O thread")?;
            finished.push(done_rx);
        }
        stop_on_failure.disarm();
        // the threads hold their own copies of the sockets
        drop(listeners);
        info!(threads, "serving connections");
        let mut result = Ok(());
        while let Some(done) = futures_util::StreamExt::next(&mut finished).await {
            let outcome = done.unwrap_or_else(|_| Err(anyhow::anyhow!("an I/O thread panicked")));
            if let Err(error) = outcome {
                // one thread failing stops the gateway; the first failure is reported
                shutdown.cancel();
                if result.is_ok() {
                    result = Err(error);
                }
            }
        }
        tasks.close();
        tasks.wait().await;
        info!("jt1078-gateway stopped");
        result
    }
}

/// What every I/O thread serves: devices (ingest) and HTTP (FLV plays, the router).
#[derive(Clone)]
struct IoSides {
    ingest: IngestServer,
    router: Router,
    player: http_flv::FlvPlayer,
    serve: http_serve::ServeOptions,
}

/// One I/O thread: a single-threaded event loop over its copies of the listeners (live,
/// playback, http) and the connections it accepts, until `shutdown`.
///
/// Why threads of their own instead of one work-stealing runtime: a frame's work (read,
/// publish, write to each viewer) is a few microseconds, and on a work-stealing runtime
/// each wake-up also wakes an idle worker to look for work, which costs more than the
/// frame (docs/benchmarks.md). The listeners are shared: a new connection goes to the
/// thread that accepts it first, usually the least busy one.
fn io_thread(
    listeners: [std::net::TcpListener; 3],
    sides: IoSides,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building an I/O thread's runtime")?;
    runtime.block_on(async move {
        let [live, playback, http] = listeners.map(TcpListener::from_std);
        let IoSides {
            ingest,
            router,
            player,
            serve,
        } = sides;
        tokio::join!(
            ingest.run(live?, playback?, shutdown.clone()),
            http_serve::serve(http?, router, player, serve, shutdown),
        );
        Ok(())
    })
}

/// Reads the HTTPS certificate again on each SIGHUP (a renewal replaced the files); a
/// failed reload keeps the certificate in use and says why. `reloads` is bumped after each.
fn spawn_tls_reloader(
    store: &std::sync::Arc<CertStore>,
    reloads: &std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
        let (store, reloads) = (std::sync::Arc::clone(store), std::sync::Arc::clone(reloads));
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    received = hangups.recv() => if received.is_none() { return },
                    () = shutdown.cancelled() => return,
                }
                match store.reload() {
                    Ok(()) => info!("HTTPS certificate reloaded"),
                    Err(error) => tracing::error!(
                        error = format!("{error:#}"),
                        "HTTPS certificate reload failed; the previous one is still served"
                    ),
                }
                reloads.send_modify(|n| *n += 1);
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (store, reloads, tasks, shutdown);
    Ok(())
}

/// Pending connections a listener queues before the gateway accepts them. After a restart
/// every device and viewer reconnects at once; tokio's default of 1024 overflows then (the
/// kernel caps it at `net.core.somaxconn`, 4096 on current Linux).
const LISTEN_BACKLOG: u32 = 4096;

/// A TCP listener on `addr` with [`LISTEN_BACKLOG`] and `SO_REUSEADDR` (a restarted gateway
/// binds again at once).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
