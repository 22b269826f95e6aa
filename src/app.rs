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

use crate::config::Settings;
use crate::control::ControlContext;
use crate::hub::Hub;
use crate::ingest::IngestServer;
use crate::output::{api, http_flv, http_serve};

/// A gateway with its listeners bound, ready to run.
#[derive(Debug)]
pub struct App {
    settings: Settings,
    hub: Hub,
    live: TcpListener,
    playback: TcpListener,
    http: TcpListener,
}

/// The addresses the gateway actually listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundAddrs {
    /// Live JT/T 1078 ingest.
    pub live: SocketAddr,
    /// Playback JT/T 1078 ingest.
    pub playback: SocketAddr,
    /// HTTP (FLV, API).
    pub http: SocketAddr,
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
        let hub = Hub::new(settings.hub_settings());
        Ok(App {
            settings,
            hub,
            live,
            playback,
            http,
        })
    }

    /// Where the listeners are bound.
    pub fn local_addrs(&self) -> anyhow::Result<BoundAddrs> {
        Ok(BoundAddrs {
            live: self.live.local_addr()?,
            playback: self.playback.local_addr()?,
            http: self.http.local_addr()?,
        })
    }

    /// The hub (for embedding and tests).
    pub fn hub(&self) -> Hub {
        self.hub.clone()
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
        let control = ControlContext::new(
            &self.settings.mqtt,
            &self.settings.control,
            (addrs.live.port(), addrs.playback.port(), addrs.http.port()),
        );
        crate::control::spawn(control, self.hub.clone(), &tasks, shutdown.clone())?;
        let ingest = IngestServer::new(
            &self.settings.ingest,
            self.live,
            self.playback,
            self.hub.clone(),
        );
        let router = Router::new()
            .merge(http_flv::routes(self.hub.clone(), &self.settings.http))
            .merge(api::routes(self.hub.clone()));
        let player = http_flv::FlvPlayer::new(self.hub.clone(), &self.settings.http);
        let http = http_serve::serve(self.http, router, player, shutdown.clone());
        tokio::join!(http, ingest.run(shutdown.clone()));
        tasks.close();
        tasks.wait().await;
        info!("jt1078-gateway stopped");
        Ok(())
    }
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
