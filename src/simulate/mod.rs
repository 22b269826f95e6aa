//! Device simulator and load generator: replays a recorded `.jt1078` file over TCP as one
//! or many devices, rewriting the SIM and channel, paced by the stream's own timestamps.
//!
//! The file is parsed once; every simulated device shares its packets and patches a copy
//! of each header into its own write buffer, so a thousand devices cost little.

pub mod mqtt_device;
pub mod pack;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::codec::jt1078::{DEFAULT_MAX_BODY, DataType, Decoder, Packet, Sim};
use crate::media::DeviceId;

/// How fast to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pace {
    /// Send each packet when its timestamp says (as a device would).
    Realtime,
    /// Send as fast as the socket takes it.
    Fast,
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    /// The recorded stream.
    pub packets: Arc<Vec<Packet>>,
    /// Gateway ingest address.
    pub server: SocketAddr,
    /// First device id (others count up from it); `None` keeps the file's.
    pub device: Option<DeviceId>,
    /// Channel to rewrite to; `None` keeps the file's.
    pub channel: Option<u8>,
    /// Number of devices.
    pub devices: usize,
    /// Pacing.
    pub pace: Pace,
    /// Start over at the end, with timestamps continuing.
    pub looping: bool,
}

/// What a run sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SimulateReport {
    /// Devices that connected.
    pub connected: usize,
    /// Packets written, all devices.
    pub packets: u64,
    /// Bytes written, all devices.
    pub bytes: u64,
}

/// Reads and parses a recorded stream.
pub fn load_file(path: &Path) -> anyhow::Result<Vec<Packet>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut decoder = Decoder::new(DEFAULT_MAX_BODY);
    decoder.push(&bytes);
    let mut packets = Vec::new();
    while let Some(packet) = decoder.next_packet() {
        packets.push(packet);
    }
    if packets.is_empty() {
        bail!("{}: no JT/T 1078 packets found", path.display());
    }
    Ok(packets)
}

/// Replays until done (or forever with `looping`) or until `cancel`.
pub async fn run(
    options: SimulateOptions,
    cancel: CancellationToken,
) -> anyhow::Result<SimulateReport> {
    let first = options.packets.first().context("empty recording")?;
    let layout = first.layout();
    let base: u64 = match &options.device {
        Some(device) => device.as_str().parse().context("device id")?,
        None => DeviceId::from_sim(&first.sim)
            .as_str()
            .parse()
            .context("device id")?,
    };
    let tasks = TaskTracker::new();
    let (report_tx, mut report_rx) = tokio::sync::mpsc::channel(options.devices.max(1));
    for i in 0..options.devices {
        let digits = (base + i as u64).to_string();
        let sim = Sim::from_digits(&digits, layout)
            .with_context(|| format!("device id {digits} does not fit the file's SIM field"))?;
        let device = Device {
            sim,
            channel: options.channel,
            packets: Arc::clone(&options.packets),
            pace: options.pace,
            looping: options.looping,
        };
        let server = options.server;
        let cancel = cancel.clone();
        let report_tx = report_tx.clone();
        tasks.spawn(async move {
            let result = device.run(server, cancel).await;
            // The receiver outlives every task (it is drained below).
            let _ = report_tx.send(result).await;
        });
    }
    drop(report_tx);
    tasks.close();
    let mut report = SimulateReport::default();
    while let Some(result) = report_rx.recv().await {
        match result {
            Ok(r) => {
                report.connected += 1;
                report.packets += r.packets;
                report.bytes += r.bytes;
            }
            Err(error) => warn!("simulated device failed: {error:#}"),
        }
    }
    tasks.wait().await;
    info!(
        devices = report.connected,
        packets = report.packets,
        bytes = report.bytes,
        "simulation finished"
    );
    Ok(report)
}

pub(crate) struct Device {
    pub(crate) sim: Sim,
    pub(crate) channel: Option<u8>,
    pub(crate) packets: Arc<Vec<Packet>>,
    pub(crate) pace: Pace,
    pub(crate) looping: bool,
}

/// Largest write the fast pace batches.
const BATCH: usize = 64 * 1024;

impl Device {
    async fn run(
        self,
        server: SocketAddr,
        cancel: CancellationToken,
    ) -> anyhow::Result<SimulateReport> {
        let mut socket = TcpStream::connect(server)
            .await
            .with_context(|| format!("connecting to {server}"))?;
        socket.set_nodelay(true)?;
        let mut report = SimulateReport {
            connected: 1,
            ..SimulateReport::default()
        };
        let mut clock = PaceClock::new(&self.packets);
        let mut out = BytesMut::with_capacity(BATCH);
        let mut round = 0u64;
        loop {
            for packet in self.packets.iter() {
                let mut packet = packet.clone();
                packet.sim = self.sim;
                if let Some(channel) = self.channel {
                    packet.channel = channel;
                }
                packet.timestamp = packet.timestamp.map(|ts| ts + clock.loop_shift(round));
                let due = clock.due(&packet);
                if self.pace == Pace::Realtime && due > Instant::now() && !out.is_empty() {
                    report.bytes += out.len() as u64;
                    socket.write_all(&out).await?;
                    out.clear();
                }
                if self.pace == Pace::Realtime {
                    tokio::select! {
                        () = cancel.cancelled() => return Ok(report),
                        () = tokio::time::sleep_until(due) => {}
                    }
                }
                packet.encode(&mut out);
                report.packets += 1;
                if out.len() >= BATCH {
                    report.bytes += out.len() as u64;
                    socket.write_all(&out).await?;
                    out.clear();
                    if cancel.is_cancelled() {
                        return Ok(report);
                    }
                }
            }
            round += 1;
            if !self.looping || cancel.is_cancelled() {
                break;
            }
        }
        report.bytes += out.len() as u64;
        socket.write_all(&out).await?;
        socket.shutdown().await?;
        Ok(report)
    }
}

/// Maps packet timestamps to send times. Audio and video may run on separate clocks, so
/// each has its own origin; jumps (or a frozen clock) never make the replay wait long.
struct PaceClock {
    start: Instant,
    origin: [Option<i64>; 2],
    last_due: Instant,
    span: u64,
}

impl PaceClock {
    fn new(packets: &[Packet]) -> PaceClock {
        let video: Vec<u64> = packets
            .iter()
            .filter(|p| p.data_type.is_video())
            .filter_map(|p| p.timestamp)
            .collect();
        let span = match (video.iter().min(), video.iter().max()) {
            (Some(lo), Some(hi)) => hi - lo + 40,
            _ => 1000,
        };
        let now = Instant::now();
        PaceClock {
            start: now,
            origin: [None, None],
            last_due: now,
            span,
        }
    }

    /// How much to add to timestamps in loop round `round` so they keep increasing.
    fn loop_shift(&self, round: u64) -> u64 {
        self.span * round
    }

    fn due(&mut self, packet: &Packet) -> Instant {
        const JUMP_MS: i64 = 5000;
        let class = usize::from(packet.data_type == DataType::Audio);
        let Some(ts) = packet.timestamp else {
            return self.last_due;
        };
        let ts = i64::try_from(ts).unwrap_or(i64::MAX);
        let elapsed = i64::try_from((self.last_due - self.start).as_millis()).unwrap_or(i64::MAX);
        let origin = self.origin[class].get_or_insert(ts - elapsed);
        let mut offset = ts - *origin;
        if (offset - elapsed).abs() > JUMP_MS {
            // the device clock jumped or reset: continue from the current replay time
            *origin = ts - elapsed;
            offset = elapsed;
        }
        let due =
            self.start + Duration::from_millis(u64::try_from(offset.max(elapsed)).unwrap_or(0));
        self.last_due = due;
        due
    }
}
