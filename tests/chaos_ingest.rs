//! Chaos at the device side (issue 16's ingest findings): what hostile or broken clients
//! send to the ingest and HTTP ports, each probe run beside one good device replaying a
//! recorded capture and one good HTTP-FLV viewer, whose frames are counted.
//!
//! - garbage dense with frame markers, and packets whose headers parse but whose payloads
//!   are noise, announce no stream (hub, `/api/streams`, retained MQTT status);
//! - trickles of bytes and packets that never make a frame are closed after the idle
//!   timeout; so are HTTP clients that trickle a request head;
//! - a connection claiming a live device's SIM takes nothing with garbage, and a real
//!   reconnect (here with another picture size) takes over at its first key frame;
//! - `simulate --loop` reconnects after the gateway restarts.
//!
//! Timeouts are short through config (idle 2 s), so each probe ends in seconds.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "helpers of tests: a failure is a test failure"
)]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::control::{BrokerAt, embedded_url, gateway_on, port_of};
use common::mqtt::TestClient;
use common::*;
use jt1078_gateway::codec::jt1078::{
    DataType, FRAME_MARKER, Packet, PayloadType, Sim, SimLayout, Subpackage,
};
use jt1078_gateway::hub::HubEvent;
use jt1078_gateway::media::DeviceId;
use jt1078_gateway::simulate::{self, Pace, SimulateOptions, SimulateReport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The good device's capture: H.264 720×576 + G.711A, 102 video frames.
const CAPTURE: &str = "h264-g711a-156987000796-ch1.jt1078";
/// Its SIM.
const GOOD_DEVICE: &str = "156987000796";
/// The idle timeout the probes run with.
const IDLE: (&str, &str) = ("JTGW__INGEST__IDLE_TIMEOUT", "2s");
/// [`IDLE`] as a duration.
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// Generous bound for anything the gateway must do within the 2 s idle timeout.
const CLOSE_WITHIN: Duration = Duration::from_secs(20);

/// xorshift64*: garbage reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// 1 to `max` random bytes.
    fn some_bytes(&mut self, max: u64) -> Vec<u8> {
        let n = 1 + self.below(max) as usize;
        self.bytes(n)
    }
}

/// `len` random bytes with the frame marker `30 31 63 64` every 0 to 63 bytes (the
/// issue's probe: 1 MiB of this per connection).
fn marker_dense_garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        out.extend_from_slice(&FRAME_MARKER);
        let gap = rng.below(64) as usize;
        out.extend(rng.bytes(gap));
    }
    out
}

/// `count` packets whose headers parse (BCD SIM, valid types, lengths that chain) and
/// whose payloads are noise: video pieces (some starting like SPS, PPS or IDR NAL units),
/// audio of sizes no codec has, transparent data. `sim` fixes the SIM and channel (a
/// takeover attempt); otherwise each packet claims a random device.
fn noise_packets(seed: u64, count: usize, sim: Option<(&str, u8)>) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut out = BytesMut::new();
    for sequence in 0..count {
        let (sim, channel) = match sim {
            Some((digits, channel)) => {
                (Sim::from_digits(digits, SimLayout::Bcd6).unwrap(), channel)
            }
            None => {
                let digits = format!("{:012}", rng.below(1_000_000_000_000));
                (
                    Sim::from_digits(&digits, SimLayout::Bcd6).unwrap(),
                    1 + rng.below(4) as u8,
                )
            }
        };
        let (data_type, payload_type, body) = match rng.below(10) {
            0..=6 => {
                let data_type =
                    [DataType::IFrame, DataType::PFrame, DataType::BFrame][rng.below(3) as usize];
                let mut body = Vec::new();
                if rng.below(2) == 0 {
                    // looks like the start of an SPS, PPS or IDR slice
                    body.extend_from_slice(&[
                        0,
                        0,
                        0,
                        1,
                        [0x67, 0x68, 0x65][rng.below(3) as usize],
                    ]);
                }
                body.extend(rng.some_bytes(900));
                let pt = [PayloadType::H264, PayloadType::H265][rng.below(2) as usize];
                (data_type, pt, body)
            }
            7 | 8 => {
                // G.711 of no whole millisecond, or too short for 10 ms
                let len = match rng.below(2) {
                    0 => 1 + rng.below(79) as usize,
                    _ => 8 * (10 + rng.below(100) as usize) + 1 + rng.below(7) as usize,
                };
                (DataType::Audio, PayloadType::G711A, rng.bytes(len))
            }
            _ => (
                DataType::Transparent,
                PayloadType::H264,
                rng.some_bytes(200),
            ),
        };
        let subpackage = match data_type {
            DataType::Audio | DataType::Transparent => Subpackage::Atomic,
            _ => [
                Subpackage::Atomic,
                Subpackage::First,
                Subpackage::Middle,
                Subpackage::Last,
            ][rng.below(4) as usize],
        };
        let video = data_type.is_video();
        Packet {
            marker: subpackage == Subpackage::Atomic || subpackage == Subpackage::Last,
            payload_type,
            sequence: sequence as u16,
            sim,
            channel,
            data_type,
            subpackage,
            timestamp: (data_type != DataType::Transparent).then_some(sequence as u64 * 40),
            last_iframe_interval: video.then_some(0),
            last_frame_interval: video.then_some(40),
            body: Bytes::from(body),
        }
        .encode(&mut out);
    }
    out.to_vec()
}

/// The good device: the capture replayed in real time, looping, until `stop`.
fn good_device(live: SocketAddr, stop: &CancellationToken) -> JoinHandle<SimulateReport> {
    let options = SimulateOptions {
        packets: Arc::new(simulate::load_file(&testdata(CAPTURE)).unwrap()),
        server: live,
        device: None,
        channel: None,
        devices: 1,
        pace: Pace::Realtime,
        looping: true,
    };
    let stop = stop.clone();
    tokio::spawn(async move { simulate::run(options, stop).await.unwrap() })
}

/// Video frames the good device completed in its first `packets` packets (the capture
/// over and over).
fn frames_sent(packets: u64) -> usize {
    let capture = std::fs::read(testdata(CAPTURE)).unwrap();
    let raw = raw_packets(&capture, 6);
    let per_round = expected_video_frames(&raw);
    let rounds = packets as usize / raw.len();
    let rest = packets as usize % raw.len();
    rounds * per_round + expected_video_frames(&raw[..rest])
}

/// The good device, looping over the capture in real time, and the good viewer, which
/// asked for its stream before it connected: what every probe runs beside.
struct GoodPair {
    viewer: JoinHandle<(u16, Vec<u8>)>,
    device: JoinHandle<SimulateReport>,
    stop: CancellationToken,
}

impl GoodPair {
    /// Starts both; returns once the stream is up.
    async fn start(gateway: &Gateway) -> GoodPair {
        let viewer = good_viewer(gateway, &format!("{GOOD_DEVICE}_1")).await;
        let stop = CancellationToken::new();
        let device = good_device(gateway.addrs.live, &stop);
        gateway
            .wait_for_stream("the good stream", |s| s.video_frames > 0)
            .await;
        GoodPair {
            viewer,
            device,
            stop,
        }
    }

    /// Stops the device: it never lost its connection, and the viewer got every video
    /// frame it sent.
    async fn finish(self) {
        self.stop.cancel();
        let report = self.device.await.unwrap();
        assert_eq!(report.connected, 1);
        let (status, flv) = tokio::time::timeout(Duration::from_secs(30), self.viewer)
            .await
            .expect("the viewer's stream ends with the device")
            .unwrap();
        assert_eq!(status, 200);
        assert_eq!(video_frames(&flv), frames_sent(report.packets));
    }
}

/// The good viewer: asks for `stream` before its device connects; the FLV once the stream
/// ends.
async fn good_viewer(gateway: &Gateway, stream: &str) -> JoinHandle<(u16, Vec<u8>)> {
    let http = gateway.addrs.http;
    let path = format!("/live/{stream}.flv");
    let mut events = gateway.hub.events();
    let viewer = tokio::spawn(async move { http_get(http, &path).await });
    gateway.wait_for_waiting_reader(&mut events).await;
    viewer
}

/// Video frames (not sequence headers) in an FLV body.
fn video_frames(flv: &[u8]) -> usize {
    flv_tags(flv)
        .iter()
        .filter(|t| t.tag_type == 9 && t.body.get(1) == Some(&1))
        .count()
}

/// Waits until the gateway closes `socket` (a read ends), writing one byte of `trickle`
/// every `period` meanwhile (nothing when it is empty). The time it stayed open, or `None`
/// if it was still open after [`CLOSE_WITHIN`].
async fn closed_by_gateway(
    mut socket: TcpStream,
    trickle: Vec<u8>,
    period: Duration,
) -> Option<Duration> {
    let opened = Instant::now();
    let mut next = trickle.into_iter().cycle();
    let mut buf = [0u8; 64];
    let wait = async {
        loop {
            tokio::select! {
                read = socket.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                () = tokio::time::sleep(period) => {
                    if let Some(byte) = next.next() {
                        if socket.write_all(&[byte]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    };
    tokio::time::timeout(CLOSE_WITHIN, wait).await.ok()?;
    Some(opened.elapsed())
}

/// Connects to `addr`, writes `bytes` (a close by the gateway midway is fine) and waits
/// for the gateway to close the connection.
async fn probe(addr: SocketAddr, bytes: Vec<u8>) -> Option<Duration> {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let opened = Instant::now();
    // the gateway may close it before everything is written: that is an answer too
    let _ = socket.write_all(&bytes).await;
    let stayed = closed_by_gateway(socket, Vec::new(), Duration::from_secs(1)).await?;
    Some(opened.elapsed().max(stayed))
}

/// Streams that came up, from hub events received so far.
fn streams_up(events: &mut tokio::sync::broadcast::Receiver<HubEvent>) -> BTreeSet<String> {
    let mut up = BTreeSet::new();
    while let Ok(event) = events.try_recv() {
        if let HubEvent::StreamUp(key) = event {
            up.insert(key.to_string());
        }
    }
    up
}

// a thread of its own for the good device: the 2 s idle timeout must not see it stall
// while the test does other work
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_announces_no_stream_and_the_good_stream_keeps_every_frame() {
    // four connections with 1 MiB of marker-dense random bytes, two with 3,000 packets
    // of noise each claiming a random device; made before the good device starts (the
    // test's thread also runs the good device, which must not stall for seconds)
    let garbage: Vec<Vec<u8>> = (1..=4)
        .map(|seed| marker_dense_garbage(seed, 1 << 20))
        .chain((5..=6).map(|seed| noise_packets(seed, 3000, None)))
        .collect();
    let url = embedded_url();
    let gateway = gateway_on(&url, BrokerAt::Embedded, &[IDLE]).await;
    let mut events = gateway.hub.events();
    let good = GoodPair::start(&gateway).await;
    let live = gateway.addrs.live;
    let probes: Vec<_> = garbage
        .into_iter()
        .map(|bytes| tokio::spawn(probe(live, bytes)))
        .collect();
    for probe in probes {
        let stayed = probe.await.unwrap();
        assert!(stayed.is_some(), "a garbage connection is closed");
        eprintln!("garbage connection closed after {stayed:?}");
    }

    // nothing but the good stream in the hub, the API and the broker
    let live_streams: Vec<String> = gateway
        .hub
        .list()
        .iter()
        .map(|s| s.device.clone())
        .collect();
    assert_eq!(live_streams, [GOOD_DEVICE]);
    let (status, body) = http_get(gateway.addrs.http, "/api/streams").await;
    assert_eq!(status, 200);
    let api: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let api = api.as_array().expect("a list of streams");
    assert_eq!(api.len(), 1, "{api:?}");
    assert_eq!(api[0]["device"], GOOD_DEVICE);
    let mut subscriber = TestClient::connect(port_of(&url), &["jt1078/status/stream/#"]).await;
    let good_topic = format!("jt1078/status/stream/{GOOD_DEVICE}/1");
    subscriber
        .expect("the good stream's status", Duration::from_secs(10), |r| {
            r.topic == good_topic
        })
        .await;
    let retained: BTreeSet<String> = subscriber
        .drain_for(Duration::from_secs(2))
        .await
        .into_iter()
        .map(|r| r.topic)
        .collect();
    assert!(
        retained.iter().all(|t| *t == good_topic),
        "retained status of phantom streams: {retained:?}"
    );
    assert_eq!(
        streams_up(&mut events),
        BTreeSet::from([format!("live/{GOOD_DEVICE}_1")]),
        "only the good stream came up"
    );

    good.finish().await;
}

// a thread of its own for the good device: the 2 s idle timeout must not see it stall
// while the test does other work
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickles_and_packets_that_never_make_a_frame_are_closed_after_the_idle_timeout() {
    let gateway = Gateway::start(&[IDLE]).await;
    let good = GoodPair::start(&gateway).await;
    let live = gateway.addrs.live;
    let period = Duration::from_millis(300);

    // a byte of marker-dense garbage every 300 ms
    let bytes = TcpStream::connect(live).await.unwrap();
    let byte_trickle = tokio::spawn(closed_by_gateway(
        bytes,
        marker_dense_garbage(7, 4096),
        period,
    ));
    // a well-formed packet (a piece of the capture's first frame), a byte every 300 ms
    let capture = std::fs::read(testdata(CAPTURE)).unwrap();
    let first = &raw_packets(&capture, 6)[0];
    let packet = TcpStream::connect(live).await.unwrap();
    let packet_trickle = tokio::spawn(closed_by_gateway(
        packet,
        capture[first.start..first.end].to_vec(),
        period,
    ));
    // complete, valid packets of noise for the good device's SIM on channel 2, ten every
    // 100 ms: packets, but never a frame a decoder can start from
    let mut noise = TcpStream::connect(live).await.unwrap();
    let noisy = tokio::spawn(async move {
        let opened = Instant::now();
        let mut seed = 100;
        while opened.elapsed() < CLOSE_WITHIN {
            seed += 1;
            if noise
                .write_all(&noise_packets(seed, 10, Some((GOOD_DEVICE, 2))))
                .await
                .is_err()
            {
                return Some(opened.elapsed());
            }
            let mut buf = [0u8; 16];
            let read = tokio::time::timeout(Duration::from_millis(100), noise.read(&mut buf));
            if let Ok(Ok(0) | Err(_)) = read.await {
                return Some(opened.elapsed());
            }
        }
        None
    });
    for (what, task) in [
        ("a byte trickle", byte_trickle),
        ("a packet trickled byte by byte", packet_trickle),
        ("a flood of packets that never make a frame", noisy),
    ] {
        let stayed = task.await.unwrap();
        let stayed = stayed.unwrap_or_else(|| panic!("{what} is closed after the idle timeout"));
        // both sides: not at once (that would be another cause), and not never (the
        // margin: the timer's granularity)
        assert!(
            stayed >= IDLE_TIMEOUT - Duration::from_millis(250),
            "{what} closed after {stayed:?}, before the {IDLE_TIMEOUT:?} idle timeout"
        );
        eprintln!("{what}: closed after {stayed:?}");
    }

    // the good device, sending all along, was not closed: its stream is still live and
    // the viewer got every frame it sent
    let before = gateway.hub.list()[0].video_frames;
    gateway
        .wait_for_stream("the good stream going on", |s| s.video_frames > before)
        .await;
    assert_eq!(gateway.hub.list().len(), 1, "no stream but the good one");
    good.finish().await;
}

/// (width, height) of every onMetaData tag, in order.
fn metadata_sizes(flv: &[u8]) -> Vec<(f64, f64)> {
    let number = |body: &[u8], name: &[u8]| {
        let at = body.windows(name.len()).position(|w| w == name).unwrap() + name.len() + 1;
        f64::from_be_bytes(body[at..at + 8].try_into().unwrap())
    };
    flv_tags(flv)
        .iter()
        .filter(|t| t.tag_type == 18)
        .map(|t| (number(&t.body, b"width"), number(&t.body, b"height")))
        .collect()
}

#[tokio::test]
async fn a_takeover_needs_a_well_formed_frame_and_a_new_picture_size_is_announced() {
    let gateway = Gateway::start(&[]).await;
    let viewer = good_viewer(&gateway, &format!("{GOOD_DEVICE}_1")).await;
    let (mut device, capture) = gateway.device_holding_capture().await;
    let per_capture = expected_video_frames(&raw_packets(&capture, 6));

    // a connection claiming the device's SIM and channel sends noise, then leaves
    let mut attacker = TcpStream::connect(gateway.addrs.live).await.unwrap();
    attacker
        .write_all(&noise_packets(42, 2000, Some((GOOD_DEVICE, 1))))
        .await
        .unwrap();
    attacker.shutdown().await.unwrap();
    let mut buf = [0u8; 16];
    let gone = tokio::time::timeout(CLOSE_WITHIN, attacker.read(&mut buf))
        .await
        .expect("the gateway reads the attacker to its end");
    assert!(matches!(gone, Ok(0) | Err(_)));

    // the device still publishes: the capture again reaches the viewer
    device.write_all(&capture).await.unwrap();
    gateway
        .wait_for_stream("the device's second capture", |s| {
            s.video_frames >= 2 * per_capture as u64
        })
        .await;

    // the device reconnects (with another picture size): it takes over at its first frame,
    // and the old connection is closed
    let other = testdata("h264-012345678999-ch1.jt1078");
    let other_frames = expected_video_frames(&raw_packets(&std::fs::read(&other).unwrap(), 6));
    let options = SimulateOptions {
        packets: Arc::new(simulate::load_file(&other).unwrap()),
        server: gateway.addrs.live,
        device: Some(DeviceId::parse(GOOD_DEVICE).unwrap()),
        channel: Some(1),
        devices: 1,
        pace: Pace::Fast,
        looping: false,
    };
    let reconnect = simulate::run(options, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(reconnect.connected, 1);
    let closed = tokio::time::timeout(CLOSE_WITHIN, device.read(&mut buf))
        .await
        .expect("the old connection is closed once the new one took over");
    assert!(matches!(closed, Ok(0) | Err(_)));

    let (_, flv) = tokio::time::timeout(Duration::from_secs(30), viewer)
        .await
        .expect("the viewer's stream ends with the new connection")
        .unwrap();
    assert_eq!(
        video_frames(&flv),
        2 * per_capture + other_frames,
        "every frame of both connections, none of the attacker's"
    );
    assert_eq!(
        metadata_sizes(&flv),
        [(720.0, 576.0), (352.0, 288.0)],
        "the new picture size is announced"
    );
    let sequence_headers = flv_tags(&flv)
        .iter()
        .filter(|t| t.tag_type == 9 && t.body.get(1) == Some(&0))
        .count();
    assert_eq!(sequence_headers, 2, "a sequence header per picture size");
}

#[tokio::test]
async fn simulate_loop_reconnects_after_the_gateway_restarts() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let settings = [("JTGW__INGEST__LIVE_LISTEN", listen.as_str())];
    let first = Gateway::start(&settings).await;
    let mut simulator = tokio::process::Command::new(env!("CARGO_BIN_EXE_jt1078-gateway"))
        .args(["simulate", "--file"])
        .arg(testdata(CAPTURE))
        .args(["--server", &listen, "--device", "13800138000", "--loop"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    first
        .wait_for_stream("the simulated device", |s| s.device == "13800138000")
        .await;
    first.stop().await;

    let restarted = Instant::now();
    let second = Gateway::start(&settings).await;
    second
        .wait_for_stream("the simulated device, reconnected", |s| {
            s.device == "13800138000" && s.video_frames > 0
        })
        .await;
    eprintln!(
        "simulator streaming again {:?} after the new gateway started",
        restarted.elapsed()
    );
    assert!(
        simulator.try_wait().unwrap().is_none(),
        "the simulator keeps running"
    );
    simulator.kill().await.unwrap();
    second.stop().await;
}

/// Reads one HTTP/1.1 response with a Content-Length body from `socket`.
async fn read_response(socket: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = socket.read(&mut chunk).await.unwrap();
        assert!(n > 0, "response");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        if buf.len() >= end + 4 + len {
            return head.split_whitespace().nth(1).unwrap().parse().unwrap();
        }
    }
}

#[tokio::test]
async fn an_http_request_head_trickled_in_is_dropped_after_the_head_timeout() {
    let gateway = Gateway::start(&[("JTGW__HTTP__HEAD_TIMEOUT", "2s")]).await;
    let http = gateway.addrs.http;
    let head = b"GET /api/streams HTTP/1.1\r\nHost: test\r\nX-Trickle: ".to_vec();
    let period = Duration::from_millis(300);
    // a new connection trickling its first request head
    let first = TcpStream::connect(http).await.unwrap();
    let fresh = closed_by_gateway(first, head.clone(), period).await;
    // a kept-alive connection trickling its second request head
    let mut kept = TcpStream::connect(http).await.unwrap();
    kept.write_all(b"GET /api/streams HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut kept).await, 200);
    let second = closed_by_gateway(kept, head, period).await;
    for (what, stayed) in [("first head", fresh), ("second head", second)] {
        let stayed = stayed.unwrap_or_else(|| panic!("a trickled {what} is dropped"));
        // both sides: dropped for the timeout (2 s), not at once (the kept-alive one counts
        // from the response, a moment before this side started its clock)
        assert!(
            stayed >= IDLE_TIMEOUT - Duration::from_millis(500),
            "trickled {what}: dropped after {stayed:?}, before the 2 s head timeout"
        );
        eprintln!("trickled {what}: dropped after {stayed:?}");
    }
}

/// `count` packets whose headers parse, each a G.711 A-law audio frame of a size the
/// codec can have (160 bytes, 20 ms) with random samples, a random sequence number and a
/// random channel from 0 to 255; the SIM is `sim` or random per packet. What garbage
/// needs to pass for an audio-only device: before issue 23 one such packet announced a
/// stream.
fn plausible_audio_noise(seed: u64, count: usize, sim: Option<&str>) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut out = BytesMut::new();
    for i in 0..count {
        let digits = match sim {
            Some(digits) => digits.to_owned(),
            None => format!("{:012}", rng.below(1_000_000_000_000)),
        };
        Packet {
            marker: true,
            payload_type: PayloadType::G711A,
            sequence: rng.below(1 << 16) as u16,
            sim: Sim::from_digits(&digits, SimLayout::Bcd6).unwrap(),
            channel: rng.below(256) as u8,
            data_type: DataType::Audio,
            subpackage: Subpackage::Atomic,
            timestamp: Some(i as u64 * 20),
            last_iframe_interval: None,
            last_frame_interval: None,
            body: Bytes::from(rng.bytes(160)),
        }
        .encode(&mut out);
    }
    out.to_vec()
}

/// The issue-23 probe: 100 connections, each 1 MiB of random bytes dense with the frame
/// marker, at once; beside them 20 connections of audio packets that parse (half on one
/// SIM each), with random channels and sequence numbers. No stream, no stream event, no
/// retained status topic: with the default `ingest.max_channel`, and with every channel
/// allowed (the rule on audio alone holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_connections_of_marker_dense_garbage_leave_no_stream_and_no_status() {
    for max_channel in ["37", "255"] {
        let url = embedded_url();
        let gateway = gateway_on(
            &url,
            BrokerAt::Embedded,
            &[IDLE, ("JTGW__INGEST__MAX_CHANNEL", max_channel)],
        )
        .await;
        let mut events = gateway.hub.events();
        let live = gateway.addrs.live;
        let probes: Vec<_> = (100..200)
            .map(|seed| marker_dense_garbage(seed, 1 << 20))
            .chain((200..210).map(|seed| plausible_audio_noise(seed, 3000, None)))
            .chain((210..220).map(|seed| plausible_audio_noise(seed, 3000, Some("13912345678"))))
            .map(|bytes| tokio::spawn(probe(live, bytes)))
            .collect();
        for probe in probes {
            assert!(
                probe.await.unwrap().is_some(),
                "a garbage connection is closed"
            );
        }
        assert!(gateway.hub.list().is_empty(), "{:?}", gateway.hub.list());
        assert_eq!(
            streams_up(&mut events),
            BTreeSet::new(),
            "no stream came up (max_channel {max_channel})"
        );
        let mut subscriber = TestClient::connect(port_of(&url), &["jt1078/status/stream/#"]).await;
        let retained = subscriber.drain_for(Duration::from_secs(2)).await;
        let topics: Vec<&str> = retained.iter().map(|r| r.topic.as_str()).collect();
        assert!(
            topics.is_empty(),
            "retained status of phantom streams: {topics:?}"
        );
        gateway.stop().await;
    }
}

/// The good capture with every packet's logical channel set to `channel` (byte 14 of a
/// 2016 header, JT/T 1078-2016 table 19), sent on one connection that is then half-closed;
/// whether its stream came up. The gateway closes the connection once it has read to the
/// end, so every packet was handled by the time the read ends.
async fn replayed_as_channel(gateway: &Gateway, channel: u8) -> bool {
    let mut bytes = std::fs::read(testdata(CAPTURE)).unwrap();
    for packet in raw_packets(&bytes.clone(), 6) {
        bytes[packet.start + 14] = channel;
    }
    let mut events = gateway.hub.events();
    let mut socket = TcpStream::connect(gateway.addrs.live).await.unwrap();
    socket.write_all(&bytes).await.unwrap();
    socket.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(CLOSE_WITHIN, socket.read_to_end(&mut rest))
        .await
        .expect("the gateway closes after the end")
        .unwrap();
    streams_up(&mut events).contains(&format!("live/{GOOD_DEVICE}_{channel}"))
}

#[tokio::test]
async fn channels_outside_the_logical_ones_make_no_stream() {
    let gateway = Gateway::start(&[]).await;
    assert!(
        replayed_as_channel(&gateway, 37).await,
        "channel 37 is a logical channel"
    );
    assert!(
        !replayed_as_channel(&gateway, 38).await,
        "38 is over ingest.max_channel"
    );
    assert!(!replayed_as_channel(&gateway, 100).await);
    assert!(!replayed_as_channel(&gateway, 0).await);
    gateway.stop().await;
    let gateway = Gateway::start(&[("JTGW__INGEST__MAX_CHANNEL", "100")]).await;
    assert!(
        replayed_as_channel(&gateway, 100).await,
        "ingest.max_channel raised"
    );
    gateway.stop().await;
}
