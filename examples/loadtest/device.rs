//! Simulated devices for the load runner: a recording turned into a send schedule once, then
//! replayed by many cheap tasks that note when each frame left, so viewers can match it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::BytesMut;
use jt1078_gateway::codec::jt1078::{DataType, Packet, Sim, Subpackage};
use jt1078_gateway::simulate::Rewriter;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Packets that leave together (same due time), and the frames they complete.
#[derive(Debug)]
pub(crate) struct Group {
    /// Milliseconds after the start of a round.
    pub(crate) due_ms: u64,
    /// First and one-past-last packet index.
    pub(crate) packets: (usize, usize),
    /// Tail keys of the frames whose last packet is in this group.
    pub(crate) frames: Vec<u64>,
}

/// A recording as a send schedule.
#[derive(Debug)]
pub(crate) struct Schedule {
    pub(crate) packets: Vec<Packet>,
    pub(crate) groups: Vec<Group>,
    /// Length of one round; the next round's timestamps are shifted by it.
    pub(crate) span_ms: u64,
    /// Whole video frames (Annex-B) with their due times, for the ffmpeg baseline.
    pub(crate) video: Vec<(u64, bytes::Bytes)>,
    /// Bytes of one round on the wire.
    pub(crate) round_bytes: u64,
    /// How each device writes its packets.
    pub(crate) writes: DeviceWrites,
}

/// How a simulated device writes its packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum DeviceWrites {
    /// One send per JT/T 1078 packet, Nagle off: what real terminals do (a 950-byte
    /// payload stream arrives as many small segments).
    Packet,
    /// One send for all packets due at the same time (a frame or more at once).
    Batch,
}

/// The last 8 bytes of a frame as a number: survives every remux the gateway does (FLV
/// tags end with the frame's own last bytes), and differs between neighbouring frames.
/// Trailing zero bytes are left out: NAL unit splitting drops them (trailing_zero_8bits).
pub(crate) fn tail_key(data: &[u8]) -> u64 {
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let data = &data[..end];
    let mut key = [0u8; 8];
    let n = data.len().min(8);
    key[8 - n..].copy_from_slice(&data[data.len() - n..]);
    u64::from_be_bytes(key)
}

impl Schedule {
    /// Builds the schedule: audio and video each start their own clock at 0 (devices often
    /// run them apart), and sending order never goes backwards. Viewers match audio frames
    /// only with `track_audio` (the gateway passes the device's audio through; with AAC,
    /// the default, the FLV audio is the gateway's own encoding and only video is matched).
    pub(crate) fn new(packets: Vec<Packet>, track_audio: bool) -> Schedule {
        let mut origin: [Option<u64>; 2] = [None, None];
        let mut groups: Vec<Group> = Vec::new();
        let mut frame_data: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
        let mut video = Vec::new();
        let mut last_due = 0;
        let mut round_bytes = 0;
        for (i, packet) in packets.iter().enumerate() {
            round_bytes += packet.encoded_len() as u64;
            let class = usize::from(packet.data_type == DataType::Audio);
            let due = match packet.timestamp {
                Some(ts) => ts.saturating_sub(*origin[class].get_or_insert(ts)),
                None => last_due,
            }
            .max(last_due);
            last_due = due;
            match groups.last_mut() {
                Some(g) if g.due_ms == due => g.packets.1 = i + 1,
                _ => groups.push(Group {
                    due_ms: due,
                    packets: (i, i + 1),
                    frames: Vec::new(),
                }),
            }
            if packet.data_type == DataType::Transparent {
                continue;
            }
            if matches!(packet.subpackage, Subpackage::Atomic | Subpackage::First) {
                frame_data[class].clear();
            }
            frame_data[class].extend_from_slice(&packet.body);
            if matches!(packet.subpackage, Subpackage::Atomic | Subpackage::Last) {
                let data = std::mem::take(&mut frame_data[class]);
                if let Some(g) = groups.last_mut().filter(|_| class == 0 || track_audio) {
                    g.frames.push(tail_key(&data));
                }
                if class == 0 {
                    video.push((due, bytes::Bytes::from(data)));
                }
            }
        }
        // one frame interval after the last frame, so a loop does not repeat a timestamp
        let span_ms = last_due + 40;
        Schedule {
            packets,
            groups,
            span_ms,
            video,
            round_bytes,
            writes: DeviceWrites::Packet,
        }
    }

    /// Frames per round.
    pub(crate) fn frames_per_round(&self) -> usize {
        self.groups.iter().map(|g| g.frames.len()).sum()
    }
}

/// Frames sent and not yet seen by the viewer, oldest first: (tail key, sent at).
pub(crate) type InFlight = Arc<Mutex<VecDeque<(u64, Instant)>>>;

/// Counters shared by all devices of a run.
#[derive(Debug, Default)]
pub(crate) struct DeviceCounters {
    /// Frames sent since the measurement window opened.
    pub(crate) frames_in_window: AtomicU64,
    /// Bytes written, all time.
    pub(crate) bytes: AtomicU64,
    /// Devices whose connection failed.
    pub(crate) failed: AtomicU64,
}

/// One simulated device.
pub(crate) struct Device {
    pub(crate) schedule: Arc<Schedule>,
    pub(crate) sim: Sim,
    pub(crate) in_flight: InFlight,
    pub(crate) counters: Arc<DeviceCounters>,
    /// Frames sent at or after this instant count in the window.
    pub(crate) window_start: Instant,
}

impl Device {
    /// Connects and replays in real time, looping, until `stop`. `start` is when round 0
    /// begins (staggered between devices so they do not all send in the same millisecond).
    pub(crate) async fn run(
        self,
        server: SocketAddr,
        start: Instant,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut socket = TcpStream::connect(server)
            .await
            .with_context(|| format!("connecting to {server}"))?;
        socket.set_nodelay(true)?;
        self.replay(&mut socket, start, stop).await
    }

    /// Replays on an open connection (the cold-start probe connects by itself).
    pub(crate) async fn replay(
        &self,
        socket: &mut TcpStream,
        start: Instant,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let schedule = &self.schedule;
        // the simulator's own rewriting: SIM, timestamps and one continuous sequence counter
        // across rounds (a real device's numbers do not restart every 4 s)
        let mut rewriter = Rewriter::new(self.sim, None);
        let mut out = BytesMut::with_capacity(16 * 1024);
        // where each packet ends in `out` (for one send per packet)
        let mut ends = Vec::new();
        let (mut round, mut index) = (0u64, 0usize);
        let due_of = |round: u64, index: usize| {
            let ms = schedule.groups[index].due_ms + round * schedule.span_ms;
            start + Duration::from_millis(ms)
        };
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep_until(due_of(round, index)) => {}
            }
            let now = Instant::now();
            let mut keys = Vec::new();
            while due_of(round, index) <= now {
                let group = &schedule.groups[index];
                let shift = round * schedule.span_ms;
                for packet in &schedule.packets[group.packets.0..group.packets.1] {
                    rewriter.rewrite(packet, shift).encode(&mut out);
                    ends.push(out.len());
                }
                keys.extend_from_slice(&group.frames);
                index += 1;
                if index == schedule.groups.len() {
                    index = 0;
                    round += 1;
                }
            }
            // noted before the write, so a fast viewer never sees a frame before its entry
            let sent = Instant::now();
            if !keys.is_empty() {
                let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
                in_flight.extend(keys.iter().map(|&k| (k, sent)));
            }
            if sent >= self.window_start {
                self.counters
                    .frames_in_window
                    .fetch_add(keys.len() as u64, Ordering::Relaxed);
            }
            self.counters
                .bytes
                .fetch_add(out.len() as u64, Ordering::Relaxed);
            match schedule.writes {
                DeviceWrites::Batch => socket.write_all(&out).await?,
                DeviceWrites::Packet => {
                    let mut from = 0;
                    for &end in &ends {
                        socket.write_all(&out[from..end]).await?;
                        from = end;
                    }
                }
            }
            out.clear();
            ends.clear();
        }
        socket.shutdown().await?;
        Ok(())
    }
}
