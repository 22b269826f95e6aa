//! The gateway under test, as its own process (so its CPU and memory are its own), on free
//! loopback ports (WebRTC's UDP port too).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// A running gateway process; killed on drop.
pub(crate) struct GatewayProcess {
    child: Child,
    pub(crate) pid: u32,
    pub(crate) live: SocketAddr,
    pub(crate) http: SocketAddr,
    pub(crate) mqtt: SocketAddr,
}

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A loopback UDP port that was free a moment ago.
pub(crate) fn free_udp_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl GatewayProcess {
    /// Starts `bin serve` on its built-in defaults, every listener on a free loopback port,
    /// and waits until it answers HTTP.
    pub(crate) async fn start(bin: &Path) -> anyhow::Result<GatewayProcess> {
        GatewayProcess::start_with(bin, &[]).await
    }

    /// [`GatewayProcess::start`] with settings of its own (`JTGW__…` variables).
    pub(crate) async fn start_with(
        bin: &Path,
        settings: &[(&str, &str)],
    ) -> anyhow::Result<GatewayProcess> {
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let live = addr(free_port()?);
        let http = addr(free_port()?);
        let mqtt = addr(free_port()?);
        // not the default 0.0.0.0:8000, which another gateway on the machine may hold; on
        // a loopback address the gateway announces that address as its candidate
        let webrtc = addr(free_udp_port()?);
        let child = Command::new(bin)
            .arg("serve")
            .env("JTGW__INGEST__LIVE_LISTEN", live.to_string())
            .env(
                "JTGW__INGEST__PLAYBACK_LISTEN",
                addr(free_port()?).to_string(),
            )
            .env("JTGW__HTTP__LISTEN", http.to_string())
            .env("JTGW__MQTT__EMBEDDED_LISTEN", mqtt.to_string())
            .env(
                "JTGW__MQTT__EMBEDDED_WS_LISTEN",
                addr(free_port()?).to_string(),
            )
            .env("JTGW__WEBRTC__UDP_LISTEN", webrtc.to_string())
            // every simulated viewer comes from 127.0.0.1: the per-address limits on viewers
            // waiting for a device (docs/reliability.md) would refuse most of them (429)
            .env("JTGW__HTTP__COLD_PULLS_PER_MINUTE", "1000000")
            .env("JTGW__HTTP__MAX_WAITING", "1000000")
            .env("JTGW__LOG__LEVEL", "warn")
            .envs(settings.iter().copied())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (build it: cargo build --release)",
                    bin.display()
                )
            })?;
        let pid = child.id().context("gateway pid")?;
        let gateway = GatewayProcess {
            child,
            pid,
            live,
            http,
            mqtt,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        // HTTP only: a probe of the MQTT port would log a broken CONNECT; the MQTT client
        // retries until the embedded broker listens
        while TcpStream::connect(http).await.is_err() {
            if Instant::now() > deadline {
                bail!("gateway did not start listening within 15 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(gateway)
    }

    /// `GET /api/streams` as JSON.
    pub(crate) async fn streams(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        Ok(serde_json::from_value(
            self.get_json("/api/streams").await?,
        )?)
    }

    /// `GET {path}` as JSON.
    pub(crate) async fn get_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let mut socket = TcpStream::connect(self.http).await?;
        socket
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: bench\r\n\r\n").as_bytes())
            .await?;
        let mut response = Vec::new();
        socket.read_to_end(&mut response).await?;
        let body = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .and_then(|end| response.get(end + 4..))
            .context("no HTTP body")?;
        Ok(serde_json::from_slice(body)?)
    }

    /// Stops the process.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

/// Sum of one numeric field over the streams.
pub(crate) fn sum(streams: &[serde_json::Value], field: &str) -> u64 {
    streams
        .iter()
        .filter_map(|s| s.get(field).and_then(serde_json::Value::as_u64))
        .sum()
}
