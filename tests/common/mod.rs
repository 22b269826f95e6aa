//! Test harness: an in-process gateway on free loopback ports, a raw HTTP/1.0 client,
//! ffprobe/ffmpeg runners, and an independent reading of JT/T 1078 recordings (written from
//! the protocol notes, not from the code under test) to compute expected values.

#![allow(
    dead_code,
    reason = "each test crate uses a different part of the harness"
)]
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "in the harness a failure is a test failure"
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use jt1078_gateway::app::{App, BoundAddrs};
use jt1078_gateway::config::Settings;
use jt1078_gateway::hub::{Hub, HubEvent, StreamSnapshot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running gateway; stopped on drop.
pub(crate) struct Gateway {
    pub(crate) addrs: BoundAddrs,
    pub(crate) hub: Hub,
    /// Changes when the WebRTC side's addresses change (STUN answers, TURN allocations).
    pub(crate) webrtc_changes:
        tokio::sync::watch::Receiver<jt1078_gateway::output::webrtc::Addresses>,
    /// Changes after each reload of the HTTPS certificate (SIGHUP).
    pub(crate) tls_reloads: tokio::sync::watch::Receiver<u64>,
    cancel: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Gateway {
    /// Starts a gateway on 127.0.0.1 port 0 with extra `JTGW__…` settings.
    pub(crate) async fn start(extra: &[(&str, &str)]) -> Gateway {
        Self::start_from(None, extra).await
    }

    /// Starts a gateway with a configuration file overlaid on the defaults (settings the
    /// environment cannot carry, such as `[[mqtt.users]]`), then `extra`.
    pub(crate) async fn start_from(file: Option<&Path>, extra: &[(&str, &str)]) -> Gateway {
        let mut env: HashMap<String, String> = [
            ("JTGW__INGEST__LIVE_LISTEN", "127.0.0.1:0".to_owned()),
            ("JTGW__INGEST__PLAYBACK_LISTEN", "127.0.0.1:0".to_owned()),
            ("JTGW__HTTP__LISTEN", "127.0.0.1:0".to_owned()),
            // the embedded broker cannot report a port it chose: give it free ones
            (
                "JTGW__MQTT__EMBEDDED_LISTEN",
                format!("127.0.0.1:{}", free_port()),
            ),
            (
                "JTGW__MQTT__EMBEDDED_WS_LISTEN",
                format!("127.0.0.1:{}", free_port()),
            ),
            ("JTGW__WEBRTC__UDP_LISTEN", "127.0.0.1:0".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        let settings = Settings::load_from(file, Some(env)).expect("settings");
        jt1078_gateway::telemetry::init("warn");
        let app = App::bind(settings).await.expect("bind");
        let addrs = app.local_addrs().expect("addrs");
        let hub = app.hub();
        let webrtc_changes = app.webrtc_addresses();
        let tls_reloads = app.tls_reloads();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(app.run(cancel.clone()));
        Gateway {
            addrs,
            hub,
            webrtc_changes,
            tls_reloads,
            cancel,
            task: Some(task),
        }
    }

    /// Stops the gateway and waits for it.
    pub(crate) async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("gateway stops")
                .expect("join")
                .expect("gateway result");
        }
    }

    /// Waits until `pred` holds for the snapshot of some stream.
    pub(crate) async fn wait_for_stream(
        &self,
        what: &str,
        pred: impl Fn(&StreamSnapshot) -> bool,
    ) -> StreamSnapshot {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut events = self.hub.events();
        loop {
            if let Some(s) = self.hub.list().into_iter().find(|s| pred(s)) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            // wake on any stream event, or re-check counters every 20 ms
            let _ = tokio::time::timeout(Duration::from_millis(20), events.recv()).await;
        }
    }
}

impl Gateway {
    /// Waits on `events` until a reader waits for a stream that is not live yet.
    pub(crate) async fn wait_for_waiting_reader(&self, events: &mut broadcast::Receiver<HubEvent>) {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Ok(HubEvent::ReaderWaiting(_)) = events.recv().await {
                    return;
                }
            }
        })
        .await
        .expect("a viewer waits for the stream");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Kills a server the test started, if it runs, and reaps it.
pub(crate) fn kill_child(child: &mut Option<std::process::Child>) {
    if let Some(mut child) = child.take() {
        // it may have exited already: nothing to kill then
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    // Handed out below Linux's ephemeral range (32768-60999), where every port-0 bind of
    // the gateways under test lands: a port given here cannot be taken by one of them
    // between this check and its user's bind (tests run in parallel). Each test binary
    // starts at its own offset; the ports are free for TCP and UDP (coturn takes both).
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    let offset = std::process::id() % COUNT;
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(n < COUNT, "no free port left below the ephemeral range");
        let port = u16::try_from(FIRST + (offset + n) % COUNT).unwrap();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
}

/// A third-party server the tests run: `$var` when set (`scripts/tools.sh` sets it for
/// `scripts/test.sh`: found on the PATH, in a tool cache, or installed), else `name` on the
/// PATH.
pub(crate) fn program(var: &str, name: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|path| !path.is_empty())
        .map_or_else(|| PathBuf::from(name), PathBuf::from)
}

/// Waits (up to 20 s) until something accepts TCP connections on `port` of 127.0.0.1: a
/// server started as a process, or on a thread of its own, says nothing when it is ready.
pub(crate) async fn wait_listening(port: u16, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not listen on {port}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The recordings of real devices the suite replays (`tests/data/`, provenance and
/// licences in its README).
fn testdata_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// `tests/data/{name}`.
pub(crate) fn testdata(name: &str) -> PathBuf {
    testdata_dir().join(name)
}

/// Every `.jt1078` recording in `tests/data/`.
pub(crate) fn all_testdata() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(testdata_dir())
        .expect("tests/data exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jt1078"))
        .collect();
    files.sort();
    files
}

/// A fresh temporary directory, removed on drop.
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "jt1078-test-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// GET over HTTP/1.0 (so the body is close-delimited, never chunked): status and body.
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let mut socket = TcpStream::connect(addr).await.expect("connect http");
    socket
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await.unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("http header end");
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, response[split + 4..].to_vec())
}

/// Replays the recording at `path` into `live` in real time (one device, its own id), in a
/// task.
pub(crate) fn replay_realtime(
    path: &Path,
    live: SocketAddr,
) -> tokio::task::JoinHandle<anyhow::Result<jt1078_gateway::simulate::SimulateReport>> {
    let options = jt1078_gateway::simulate::SimulateOptions {
        packets: std::sync::Arc::new(jt1078_gateway::simulate::load_file(path).unwrap()),
        server: live,
        device: None,
        channel: None,
        devices: 1,
        pace: jt1078_gateway::simulate::Pace::Realtime,
        looping: false,
    };
    tokio::spawn(jt1078_gateway::simulate::run(
        options,
        tokio_util::sync::CancellationToken::new(),
    ))
}

impl Gateway {
    /// A device that sends the H.264 + G.711A capture and stays connected (the stream stays
    /// live, its GOP cached); returns once the gateway has the capture's video.
    pub(crate) async fn device_holding_capture(&self) -> (TcpStream, Vec<u8>) {
        let bytes = std::fs::read(testdata("h264-g711a-156987000796-ch1.jt1078")).unwrap();
        let mut device = TcpStream::connect(self.addrs.live).await.unwrap();
        device.write_all(&bytes).await.unwrap();
        self.wait_for_stream("all video frames", |s| s.video_frames >= 100)
            .await;
        (device, bytes)
    }
}

/// `seconds` of lossless H.264 of a noisy 640×360 picture at 25 fps (~5 MB a second, a key
/// frame a second), packed as a JT/T 1078 recording of device 13800138000 channel 1.
pub(crate) async fn noisy_lossless_h264(tmp: &TempDir, seconds: u32) -> Vec<u8> {
    let h264 = tmp.path("noisy.h264");
    let seconds = seconds.to_string();
    run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=25",
            "-t",
            &seconds,
            "-vf",
            "noise=alls=6:allf=t",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-qp",
            "0",
            "-g",
            "25",
            "-bf",
            "0",
            "-f",
            "h264",
            h264.to_str().unwrap(),
        ],
    )
    .await;
    let video = std::fs::read(&h264).unwrap();
    let options = jt1078_gateway::simulate::pack::PackOptions::default();
    jt1078_gateway::simulate::pack::pack(
        jt1078_gateway::codec::h26x::VideoCodec::H264,
        &video,
        None,
        &options,
    )
    .unwrap()
    .to_vec()
}

/// Writes `bytes` to the ingest port and closes the connection.
pub(crate) async fn replay(addr: SocketAddr, bytes: &[u8]) {
    let mut socket = TcpStream::connect(addr).await.expect("connect ingest");
    socket.write_all(bytes).await.unwrap();
    socket.shutdown().await.unwrap();
    // wait for the gateway to close its side, so the stream is fully ingested
    let mut rest = Vec::new();
    let _ = socket.read_to_end(&mut rest).await;
}

/// Runs a command, returning (stdout, stderr); panics if it cannot start or fails.
pub(crate) async fn run(program: &str, args: &[&str]) -> (String, String) {
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("{program} could not start: {e} (run the README's test command to install it)")
        });
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{program} {args:?} failed: {stderr}");
    (stdout, stderr)
}

/// ffprobe's JSON for the first stream of `kind` ("v" or "a"), counting frames.
pub(crate) async fn probe_stream(
    file: &Path,
    kind: &str,
    format: Option<&str>,
) -> serde_json::Value {
    let file = file.to_str().unwrap();
    let mut args = vec!["-v", "error", "-count_frames", "-select_streams", kind];
    if let Some(f) = format {
        args.extend(["-f", f]);
    }
    args.extend([
        "-show_entries",
        "stream=codec_name,width,height,sample_rate,channels,nb_read_frames",
        "-of",
        "json",
        file,
    ]);
    let (stdout, _) = run("ffprobe", &args).await;
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    v["streams"][0].clone()
}

/// Decodes every frame of one stream kind; returns ffmpeg's error output (empty when clean).
pub(crate) async fn decode_errors(file: &Path, map: &str, format: Option<&str>) -> String {
    let file = file.to_str().unwrap();
    let mut args = vec!["-v", "error"];
    if let Some(f) = format {
        args.extend(["-f", f]);
    }
    args.extend(["-i", file, "-map", map, "-f", "null", "-"]);
    run("ffmpeg", &args).await.1
}

/// One packet as the protocol notes describe it (read independently of the gateway).
#[derive(Debug, Clone)]
pub(crate) struct RawPacket {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) data_type: u8,
    pub(crate) subpackage: u8,
    pub(crate) body: Vec<u8>,
}

/// Walks a well-formed recording by its length fields. `sim_len` is 6 (2016) or 10.
pub(crate) fn raw_packets(bytes: &[u8], sim_len: usize) -> Vec<RawPacket> {
    let mut packets = Vec::new();
    let mut i = 0;
    let shift = sim_len - 6;
    while i + 16 + shift <= bytes.len() {
        assert_eq!(&bytes[i..i + 4], b"01cd", "marker at {i}");
        let type_byte = bytes[i + 15 + shift];
        let (data_type, subpackage) = (type_byte >> 4, type_byte & 0x0f);
        let header = match data_type {
            0..=2 => 30,
            3 => 26,
            _ => 18,
        } + shift;
        if i + header > bytes.len() {
            break;
        }
        let len = u16::from_be_bytes([bytes[i + header - 2], bytes[i + header - 1]]) as usize;
        let end = (i + header + len).min(bytes.len());
        packets.push(RawPacket {
            start: i,
            end,
            data_type,
            subpackage,
            body: bytes[i + header..end].to_vec(),
        });
        i = end;
    }
    packets
}

/// Video frames the recording completes (atomic or last pieces), per the notes.
pub(crate) fn expected_video_frames(packets: &[RawPacket]) -> usize {
    packets
        .iter()
        .filter(|p| p.data_type <= 2 && (p.subpackage == 0 || p.subpackage == 2))
        .count()
}

/// The video payload bytes in order (an Annex-B elementary stream).
pub(crate) fn raw_video(packets: &[RawPacket]) -> Vec<u8> {
    packets
        .iter()
        .filter(|p| p.data_type <= 2)
        .flat_map(|p| p.body.clone())
        .collect()
}

/// A parsed FLV tag.
#[derive(Debug, Clone)]
pub(crate) struct FlvTag {
    pub(crate) tag_type: u8,
    pub(crate) timestamp: u32,
    pub(crate) body: Vec<u8>,
}

/// Splits an FLV file into tags (independent of the gateway's muxer).
pub(crate) fn flv_tags(flv: &[u8]) -> Vec<FlvTag> {
    assert_eq!(&flv[..3], b"FLV", "FLV signature");
    let mut i = 13;
    let mut tags = Vec::new();
    while i + 11 <= flv.len() {
        let size = u32::from_be_bytes([0, flv[i + 1], flv[i + 2], flv[i + 3]]) as usize;
        let ts = u32::from_be_bytes([flv[i + 7], flv[i + 4], flv[i + 5], flv[i + 6]]);
        let body = flv[i + 11..i + 11 + size].to_vec();
        let prev =
            u32::from_be_bytes(flv[i + 11 + size..i + 15 + size].try_into().unwrap()) as usize;
        assert_eq!(prev, 11 + size, "PreviousTagSize");
        tags.push(FlvTag {
            tag_type: flv[i],
            timestamp: ts,
            body,
        });
        i += 15 + size;
    }
    assert_eq!(i, flv.len(), "FLV ends on a tag boundary");
    tags
}
pub(crate) mod audio;
pub(crate) mod bridge;
pub(crate) mod browser;
pub(crate) mod control;
pub(crate) mod garage;
pub(crate) mod http;
pub(crate) mod mqtt;
pub(crate) mod srs;
pub(crate) mod webrtc;

/// Replays `bytes` into the live port while one viewer reads the FLV from before the start;
/// returns the FLV bytes.
pub(crate) async fn replay_and_watch(gateway: &Gateway, bytes: &[u8], stream: &str) -> Vec<u8> {
    let http = gateway.addrs.http;
    let path = format!("/live/{stream}.flv");
    let mut events = gateway.hub.events();
    let viewer = tokio::spawn(async move { http_get(http, &path).await });
    // the viewer is waiting for the device before it connects
    gateway.wait_for_waiting_reader(&mut events).await;
    replay(gateway.addrs.live, bytes).await;
    let (status, body) = tokio::time::timeout(Duration::from_secs(60), viewer)
        .await
        .expect("viewer finishes when the device disconnects")
        .unwrap();
    assert_eq!(status, 200);
    body
}
