//! Device simulator and load generator: replays a recorded `.jt1078` file over TCP as one
//! or many devices, rewriting the SIM and channel, paced by the stream's own timestamps.
//!
//! The file is parsed once; every simulated device shares its packets and patches a copy
//! of each header into its own write buffer, so a thousand devices cost little.
//!
//! A looping device behaves like a terminal: when its connection fails (the gateway
//! restarted, say) it connects again after a backoff ([`RECONNECT_FIRST`], doubling up to
//! [`RECONNECT_MAX`]) and goes on from the start of the recording, its timestamps still
//! increasing.

pub mod mqtt_device;
pub mod pack;
pub mod talk;

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
    /// Start over at the end, with timestamps continuing; reconnect when the connection
    /// fails.
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
    let base = match &options.device {
        Some(device) => device.clone(),
        None => DeviceId::from_sim(&first.sim),
    };
    let tasks = TaskTracker::new();
    let (report_tx, mut report_rx) = tokio::sync::mpsc::channel(options.devices.max(1));
    for i in 0..options.devices {
        let digits = count_up(base.as_str(), i);
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

/// A looping device whose connection failed connects again after this.
pub const RECONNECT_FIRST: Duration = Duration::from_millis(500);

/// ... doubling per failed attempt up to this.
pub const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// How one connection of a device ended.
enum Session {
    /// The recording was sent (or the device was cancelled).
    Done,
    /// Connecting or writing failed; `connected` says whether it got as far as a connection.
    Failed {
        error: anyhow::Error,
        connected: bool,
    },
}

impl Device {
    async fn run(
        self,
        server: SocketAddr,
        cancel: CancellationToken,
    ) -> anyhow::Result<SimulateReport> {
        let mut report = SimulateReport::default();
        let mut rewriter = Rewriter::new(self.sim, self.channel);
        let mut round = 0u64;
        let mut delay = RECONNECT_FIRST;
        loop {
            let session = self
                .session(server, &cancel, &mut rewriter, &mut round, &mut report)
                .await;
            let (error, connected) = match session {
                Session::Done => return Ok(report),
                Session::Failed { error, connected } => (error, connected),
            };
            if !self.looping {
                return Err(error);
            }
            if connected {
                delay = RECONNECT_FIRST;
            }
            warn!(
                device = %DeviceId::from_sim(&self.sim),
                ?delay,
                "simulated device lost its connection: {error:#}; reconnecting"
            );
            tokio::select! {
                () = cancel.cancelled() => return Ok(report),
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(RECONNECT_MAX);
            // a new connection starts at the recording's start, on a new round so the
            // timestamps keep increasing
            round += 1;
        }
    }

    /// One connection: connects and replays (forever with `looping`) until done,
    /// cancelled or failed.
    async fn session(
        &self,
        server: SocketAddr,
        cancel: &CancellationToken,
        rewriter: &mut Rewriter,
        round: &mut u64,
        report: &mut SimulateReport,
    ) -> Session {
        let connect = async {
            let socket = TcpStream::connect(server)
                .await
                .with_context(|| format!("connecting to {server}"))?;
            socket.set_nodelay(true)?;
            anyhow::Ok(socket)
        };
        let mut socket = match connect.await {
            Ok(socket) => socket,
            Err(error) => {
                return Session::Failed {
                    error,
                    connected: false,
                };
            }
        };
        report.connected = 1;
        match self
            .replay(&mut socket, cancel, rewriter, round, report)
            .await
        {
            Ok(()) => Session::Done,
            Err(error) => Session::Failed {
                error: anyhow::Error::new(error).context(format!("writing to {server}")),
                connected: true,
            },
        }
    }

    /// Sends the recording on `socket`, paced from now on (forever with `looping`).
    async fn replay(
        &self,
        socket: &mut TcpStream,
        cancel: &CancellationToken,
        rewriter: &mut Rewriter,
        round: &mut u64,
        report: &mut SimulateReport,
    ) -> std::io::Result<()> {
        let mut clock = PaceClock::new(&self.packets);
        let mut out = BytesMut::with_capacity(BATCH);
        loop {
            for packet in self.packets.iter() {
                let packet = rewriter.rewrite(packet, clock.loop_shift(*round));
                let due = clock.due(&packet);
                if self.pace == Pace::Realtime && due > Instant::now() && !out.is_empty() {
                    report.bytes += out.len() as u64;
                    socket.write_all(&out).await?;
                    out.clear();
                }
                if self.pace == Pace::Realtime {
                    tokio::select! {
                        () = cancel.cancelled() => return Ok(()),
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
                        return Ok(());
                    }
                }
            }
            *round += 1;
            if !self.looping || cancel.is_cancelled() {
                break;
            }
        }
        report.bytes += out.len() as u64;
        socket.write_all(&out).await?;
        socket.shutdown().await
    }
}

/// What a device changes in each packet it replays: the SIM, the channel, timestamps
/// shifted per loop round, and the sequence number, which one counter numbers on from the
/// file's first, so a new loop round is no sequence gap. Also used by the load runner.
#[derive(Debug)]
pub struct Rewriter {
    sim: Sim,
    channel: Option<u8>,
    next_sequence: Option<u16>,
}

impl Rewriter {
    /// Rewrites to `sim` and, when given, `channel`.
    pub fn new(sim: Sim, channel: Option<u8>) -> Rewriter {
        Rewriter {
            sim,
            channel,
            next_sequence: None,
        }
    }

    /// The packet as this device sends it, its timestamp moved on by `timestamp_shift` ms.
    pub fn rewrite(&mut self, packet: &Packet, timestamp_shift: u64) -> Packet {
        let mut packet = packet.clone();
        packet.sim = self.sim;
        if let Some(channel) = self.channel {
            packet.channel = channel;
        }
        packet.timestamp = packet.timestamp.map(|ts| ts + timestamp_shift);
        let sequence = *self.next_sequence.get_or_insert(packet.sequence);
        packet.sequence = sequence;
        self.next_sequence = Some(sequence.wrapping_add(1));
        packet
    }
}

/// The decimal digits of `base + n`, for device ids of any length (20-digit SIMs exceed
/// `u64`). `base` is all ASCII digits.
fn count_up(base: &str, n: usize) -> String {
    let mut digits: Vec<u8> = base.bytes().map(|c| c.wrapping_sub(b'0')).collect();
    let mut carry = n;
    for digit in digits.iter_mut().rev() {
        if carry == 0 {
            break;
        }
        let sum = usize::from(*digit) + carry % 10;
        carry /= 10;
        // sum ≤ 9 + 9, so both parts fit
        *digit = (sum % 10) as u8;
        carry += sum / 10;
    }
    let mut prefix = Vec::new();
    while carry > 0 {
        prefix.push((carry % 10) as u8);
        carry /= 10;
    }
    prefix
        .into_iter()
        .rev()
        .chain(digits)
        .map(|d| char::from(b'0' + d))
        .collect()
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::codec::jt1078::{PayloadType, SimLayout, Subpackage};

    #[test]
    fn device_ids_count_up_on_their_digits() {
        assert_eq!(count_up("13800138000", 0), "13800138000");
        assert_eq!(count_up("13800138000", 12), "13800138012");
        assert_eq!(count_up("199", 1), "200");
        assert_eq!(count_up("999", 1), "1000");
        assert_eq!(count_up("5", 1234), "1239");
        // past u64::MAX (18446744073709551615): a 20-digit SIM
        assert_eq!(count_up("18446744073709551615", 1), "18446744073709551616");
        assert_eq!(count_up("99999999999999999998", 1), "99999999999999999999");
    }

    #[test]
    fn looping_replay_numbers_packets_on_across_rounds() {
        let sim = Sim::from_digits("13800138000", SimLayout::Bcd6).unwrap();
        let packet = |sequence: u16, data_type: DataType| Packet {
            marker: true,
            payload_type: PayloadType::H264,
            sequence,
            sim,
            channel: 1,
            data_type,
            subpackage: Subpackage::Atomic,
            timestamp: Some(u64::from(sequence) * 40),
            last_iframe_interval: Some(0),
            last_frame_interval: Some(40),
            body: Bytes::from_static(b"x"),
        };
        // a file numbered from 65534, with a counter per data type
        let file = [
            packet(65_534, DataType::IFrame),
            packet(7, DataType::Audio),
            packet(65_535, DataType::PFrame),
        ];
        let device = Device {
            sim: Sim::from_digits("98765432109876543210", SimLayout::Bcd10).unwrap(),
            channel: Some(3),
            packets: Arc::new(file.to_vec()),
            pace: Pace::Fast,
            looping: true,
        };
        let mut rewriter = Rewriter::new(device.sim, device.channel);
        let sent: Vec<Packet> = (0..2u64)
            .flat_map(|round| file.iter().map(move |p| (round, p)))
            .map(|(round, p)| rewriter.rewrite(p, round * 1000))
            .collect();
        let numbers: Vec<u16> = sent.iter().map(|p| p.sequence).collect();
        assert_eq!(numbers, [65_534, 65_535, 0, 1, 2, 3]);
        assert!(sent.iter().all(|p| p.sim == device.sim && p.channel == 3));
        assert_eq!(sent[3].timestamp, Some(65_534 * 40 + 1000));
    }
}
