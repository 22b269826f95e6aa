//! WS-FLV: the HTTP-FLV play paths over a WebSocket (issue 29). A raw WebSocket client
//! (RFC 6455 framing written here, so the test checks the gateway's frames byte by byte)
//! saves the stream; ffprobe/ffmpeg decode it.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "helpers of tests: a failure is a test failure"
)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The key of RFC 6455 §1.3 and the accept value it must get.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A WS-FLV client on a raw socket (TCP, or TLS for wss).
struct WsViewer<S = TcpStream> {
    socket: S,
    buf: Vec<u8>,
}

/// What a WebSocket connection delivered until it ended.
struct Received {
    /// The binary messages' payloads, concatenated (the FLV stream).
    flv: Vec<u8>,
    messages: usize,
    /// The close frame's code and reason, if one came.
    close: Option<(u16, String)>,
}

impl WsViewer {
    async fn connect(addr: SocketAddr, path: &str) -> WsViewer {
        WsViewer::request(TcpStream::connect(addr).await.unwrap(), path).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsViewer<S> {
    /// Sends the upgrade request for `path` on `socket`.
    async fn request(mut socket: S, path: &str) -> WsViewer<S> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\
             Origin: http://elsewhere.example\r\n\r\n"
        );
        socket.write_all(request.as_bytes()).await.unwrap();
        WsViewer {
            socket,
            buf: Vec::new(),
        }
    }

    /// Reads the answer's head: status and lower-cased text.
    async fn head(&mut self) -> (u16, String) {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_lowercase();
                self.buf.drain(..end + 4);
                let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                return (status, head);
            }
            let mut chunk = [0u8; 4096];
            let n = self.socket.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed inside a response head");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads the 101 and checks the accept key.
    async fn switched(&mut self) {
        let (status, head) = self.head().await;
        assert_eq!(status, 101, "{head}");
        assert!(head.contains("upgrade: websocket"), "{head}");
        assert!(
            head.contains(&format!("sec-websocket-accept: {}", ACCEPT.to_lowercase())),
            "{head}"
        );
    }

    /// One frame: opcode and payload; `None` if the connection ended first.
    async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some((opcode, len, at)) = frame_head(&self.buf) {
                if self.buf.len() >= at + len {
                    let payload = self.buf[at..at + len].to_vec();
                    self.buf.drain(..at + len);
                    return Some((opcode, payload));
                }
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.socket.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                assert!(self.buf.is_empty(), "connection ended inside a frame");
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads until the close frame (answering it) or the end of the connection.
    async fn read_to_end(&mut self) -> Received {
        let mut received = Received {
            flv: Vec::new(),
            messages: 0,
            close: None,
        };
        while let Some((opcode, payload)) = self.frame().await {
            match opcode {
                2 => {
                    received.messages += 1;
                    received.flv.extend_from_slice(&payload);
                }
                8 => {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    let reason = String::from_utf8(payload[2..].to_vec()).unwrap();
                    received.close = Some((code, reason));
                    // the client's close: masked, echoing the code
                    let mut close = vec![0x88, 0x82, 1, 2, 3, 4];
                    close.extend_from_slice(&[payload[0] ^ 1, payload[1] ^ 2]);
                    let _ = self.socket.write_all(&close).await;
                    let mut rest = Vec::new();
                    let _ = self.socket.read_to_end(&mut rest).await;
                    assert!(rest.is_empty(), "nothing after the close frame");
                    return received;
                }
                other => panic!("unexpected opcode {other}"),
            }
        }
        received
    }

    /// Reads until the FLV holds a video frame tag (not the sequence header).
    async fn first_video_frame(&mut self) -> Vec<u8> {
        let mut flv = Vec::new();
        loop {
            let (opcode, payload) = self.frame().await.expect("a message");
            assert_eq!(opcode, 2, "binary messages");
            flv.extend_from_slice(&payload);
            if flv_tags(&flv)
                .iter()
                .any(|t| t.tag_type == 9 && t.body.get(1) == Some(&1))
            {
                return flv;
            }
        }
    }
}

/// A complete server frame head at the start of `buf`: opcode, payload length, head size.
fn frame_head(buf: &[u8]) -> Option<(u8, usize, usize)> {
    let (first, second) = (*buf.first()?, *buf.get(1)?);
    assert_eq!(
        first & 0x80,
        0x80,
        "every frame is final (one frame per message)"
    );
    assert_eq!(second & 0x80, 0, "server frames are not masked");
    let (len, at) = match second & 0x7f {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().unwrap()) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().unwrap()) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    Some((first & 0x0f, len, at))
}

#[tokio::test]
async fn every_frame_of_a_recording_arrives_over_ws_flv_and_the_end_is_a_close_frame() {
    let file = testdata("h264-g711a-156987000796-ch1.jt1078");
    let bytes = std::fs::read(&file).unwrap();
    let packets = raw_packets(&bytes, 6);
    let expected = expected_video_frames(&packets);
    let gateway = Gateway::start(&[]).await;
    let mut events = gateway.hub.events();
    let mut viewer = WsViewer::connect(gateway.addrs.http, "/live/156987000796_1.flv").await;
    gateway.wait_for_waiting_reader(&mut events).await;
    replay(gateway.addrs.live, &bytes).await;
    viewer.switched().await;
    let received = tokio::time::timeout(Duration::from_secs(60), viewer.read_to_end())
        .await
        .expect("the stream ends");
    gateway.stop().await;

    let (code, reason) = received.close.expect("a close frame ends the stream");
    assert_eq!(code, 1000);
    assert_eq!(reason, "stream ended");
    assert!(received.messages > 1);
    let tmp = TempDir::new("wsflv");
    let out = tmp.path("out.flv");
    std::fs::write(&out, &received.flv).unwrap();
    let video = probe_stream(&out, "v", None).await;
    assert_eq!(video["codec_name"], "h264");
    let frames: usize = video["nb_read_frames"].as_str().unwrap().parse().unwrap();
    assert_eq!(frames, expected, "every completed video frame arrives");
    // AAC by default, as HTTP-FLV
    let audio = probe_stream(&out, "a", None).await;
    assert_eq!(audio["codec_name"], "aac");
    let errors = decode_errors(&out, "0:v", None).await;
    assert!(errors.is_empty(), "decode errors: {errors}");
}

#[tokio::test]
async fn a_cold_ws_flv_viewer_pulls_the_device_and_gets_the_first_frame() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let gateway = Gateway::start(&[("JTGW__MQTT__EMBEDDED_LISTEN", &listen)]).await;
    let mut backend = common::mqtt::TestClient::connect(port, &["jt1078/device/#"]).await;
    let mut viewer = WsViewer::connect(gateway.addrs.http, "/live/156987000796_1.flv").await;
    let pull = backend
        .expect(
            "REQPULL from the WS-FLV viewer",
            common::control::WAIT,
            |r| r.topic == "jt1078/device/156987000796/REQPULL",
        )
        .await
        .json();
    assert_eq!(pull["channel"], 1);
    assert_eq!(pull["tcp_port"], gateway.addrs.live.port());
    let (_device, _) = gateway.device_holding_capture().await;
    viewer.switched().await;
    let flv = tokio::time::timeout(Duration::from_secs(20), viewer.first_video_frame())
        .await
        .expect("a first video frame");
    assert_eq!(&flv[..3], b"FLV");
    let s = gateway
        .wait_for_stream("one WS-FLV viewer counted", |s| s.viewers_of("ws_flv") == 1)
        .await;
    assert_eq!(s.viewers, 1);
    let (status, api) = http_get(gateway.addrs.http, "/api/streams").await;
    assert_eq!(status, 200);
    let api: serde_json::Value = serde_json::from_slice(&api).unwrap();
    assert_eq!(api[0]["wsflv_viewers"], 1, "{api}");
    drop(viewer);
    gateway
        .wait_for_stream("the viewer counted out", |s| {
            s.viewers_of("ws_flv") == 0 && s.viewers == 0
        })
        .await;
}

#[tokio::test]
async fn a_ws_flv_viewer_that_never_reads_is_dropped_and_the_drop_counted() {
    // 8 s of a ~5 MB/s noisy stream: far more than a viewer may have queued
    let tmp = TempDir::new("wsstall");
    let bytes = noisy_lossless_h264(&tmp, 8).await;
    let gateway = Gateway::start(&[
        ("JTGW__HTTP__VIEWER_MAX_LAG", "1s"),
        ("JTGW__HTTP__VIEWER_BACKLOG_TOTAL", "4194304"),
    ])
    .await;
    let mut events = gateway.hub.events();
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let socket = socket.connect(gateway.addrs.http).await.unwrap();
    let mut stalled = WsViewer::request(socket, "/live/13800138000_1.flv").await;
    gateway.wait_for_waiting_reader(&mut events).await;
    let file = tmp.path("in.jt1078");
    std::fs::write(&file, &bytes).unwrap();
    let device = replay_realtime(&file, gateway.addrs.live);
    // counted dropped, and out of both counts once its task ended (a moment after the drop)
    gateway
        .wait_for_stream("the stalled WS-FLV viewer dropped", |s| {
            s.viewers_dropped == 1
                && s.viewers_dropped_of("ws_flv") == 1
                && s.viewers == 0
                && s.viewers_of("ws_flv") == 0
        })
        .await;
    // the gateway closed the connection: what is left to read ends
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        let mut sink = vec![0u8; 1 << 16];
        while stalled.socket.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    assert!(ended.is_ok(), "the dropped viewer's connection is closed");
    device.abort();
}

#[tokio::test]
async fn a_garbage_upgrade_is_answered_400_and_an_unfinished_one_is_closed() {
    let gateway = Gateway::start(&[("JTGW__HTTP__HEAD_TIMEOUT", "1s")]).await;
    let http = gateway.addrs.http;
    // an upgrade without a key, and one with a version nobody speaks
    for extra in [
        "Sec-WebSocket-Version: 13\r\n",
        &format!("Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 8\r\n"),
        "Sec-WebSocket-Key: not base64!\r\nSec-WebSocket-Version: 13\r\n",
    ] {
        let mut socket = TcpStream::connect(http).await.unwrap();
        let request = format!(
            "GET /live/13800138000_1.flv HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\n{extra}\r\n"
        );
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let (status, head) = common::http::read_head(&mut socket, &mut buf).await;
        assert_eq!(status, 400, "{extra:?}: {head}");
    }
    // a handshake that never completes: closed after http.head_timeout
    let mut socket = TcpStream::connect(http).await.unwrap();
    socket
        .write_all(b"GET /live/13800138000_1.flv HTTP/1.1\r\nUpgrade: websocket\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "closed by the head timeout");
    assert!(rest.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn a_ws_flv_play_after_another_request_on_a_kept_alive_connection_is_served() {
    // the routed path: hyper serves the first request, then upgrades the play
    let gateway = Gateway::start(&[]).await;
    let (_device, _) = gateway.device_holding_capture().await;
    let mut socket = TcpStream::connect(gateway.addrs.http).await.unwrap();
    let mut buf = Vec::new();
    let (status, head) = common::http::get_kept_alive(&mut socket, &mut buf, "/api/streams").await;
    assert_eq!(status, 200);
    let length = common::http::content_length(&head);
    common::http::read_body(&mut socket, &mut buf, length).await;
    let mut viewer = WsViewer::request(socket, "/live/156987000796_1.flv").await;
    viewer.buf = buf;
    viewer.switched().await;
    let flv = tokio::time::timeout(Duration::from_secs(20), viewer.first_video_frame())
        .await
        .expect("a first video frame");
    assert_eq!(&flv[..3], b"FLV");
    gateway
        .wait_for_stream("one WS-FLV viewer counted", |s| s.viewers_of("ws_flv") == 1)
        .await;
}

#[tokio::test]
async fn an_unsigned_ws_flv_play_is_refused_when_plays_need_a_signature() {
    let gateway = Gateway::start(&[("JTGW__HTTP__PLAY_SECRET", "s3cret-for-tests")]).await;
    let mut viewer = WsViewer::connect(gateway.addrs.http, "/live/13800138000_1.flv").await;
    let (status, head) = viewer.head().await;
    assert_eq!(status, 403, "{head}");
}

/// A self-signed certificate for `localhost` in `dir`: (cert, key).
async fn self_signed(dir: &TempDir) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.path("cert.pem"), dir.path("key.pem"));
    let args = [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ];
    run("openssl", &args).await;
    (cert, key)
}

/// `curl` of `https://localhost:{port}{path}` trusting `ca`, with `extra` arguments:
/// exit code and stdout.
async fn curl(port: u16, path: &str, ca: &std::path::Path, extra: &[&str]) -> (i32, String) {
    let output = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--resolve",
            &format!("localhost:{port}:127.0.0.1"),
            "--cacert",
        ])
        .arg(ca)
        .args(extra)
        .arg(format!("https://localhost:{port}{path}"))
        .output()
        .await
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).to_string(),
    )
}

#[tokio::test]
async fn with_tls_plays_share_one_http2_connection_and_ws_flv_works_over_wss() {
    let tmp = TempDir::new("h2");
    let (cert, key) = self_signed(&tmp).await;
    let gateway = Gateway::start(&[
        ("JTGW__HTTP__TLS_CERT", cert.to_str().unwrap()),
        ("JTGW__HTTP__TLS_KEY", key.to_str().unwrap()),
    ])
    .await;
    let port = gateway.addrs.http.port();
    let (device, _) = gateway.device_holding_capture().await;

    // two plays in one curl over HTTP/2: one connection, two streams
    let (a, b) = (tmp.path("a.flv"), tmp.path("b.flv"));
    let play = "/live/156987000796_1.flv";
    let url = format!("https://localhost:{port}{play}");
    let (a_out, b_out) = (
        a.to_str().unwrap().to_owned(),
        b.to_str().unwrap().to_owned(),
    );
    let ca = cert.clone();
    let plays = tokio::spawn(async move {
        let extra = [
            "--http2",
            "-Z",
            "-w",
            "%{http_version} %{num_connects}\\n",
            "-o",
            &a_out,
            &url,
            "-o",
            &b_out,
        ];
        curl(port, play, &ca, &extra).await
    });
    gateway
        .wait_for_stream("two HTTP/2 viewers", |s| s.viewers == 2)
        .await;

    // and a WS-FLV viewer over wss (a WebSocket over HTTP/1.1 on the same TLS listener)
    let connector = tls_connector(&cert, b"http/1.1");
    let tcp = TcpStream::connect(gateway.addrs.http).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let mut viewer = WsViewer::request(tls, play).await;
    viewer.switched().await;
    let flv = tokio::time::timeout(Duration::from_secs(20), viewer.first_video_frame())
        .await
        .expect("a first video frame over wss");
    assert_eq!(&flv[..3], b"FLV");
    gateway
        .wait_for_stream("the wss viewer counted", |s| s.viewers_of("ws_flv") == 1)
        .await;

    drop(device);
    let received = tokio::time::timeout(Duration::from_secs(20), viewer.read_to_end())
        .await
        .expect("the wss stream ends");
    assert_eq!(received.close.map(|(code, _)| code), Some(1000));
    let (code, written) = tokio::time::timeout(Duration::from_secs(20), plays)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, 0);
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(
        lines,
        ["2 1", "2 0"],
        "HTTP/2, and the second play on the first's connection"
    );
    for out in [a, b] {
        let video = probe_stream(&out, "v", None).await;
        assert_eq!(video["codec_name"], "h264");
    }
}

/// A TLS client config trusting `cert`, offering `alpn`.
fn tls_connector(cert: &std::path::Path, alpn: &[u8]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for der in rustls::pki_types::CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(der.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// Chromium opens HTTP/2 connections ahead of need; one that never sent a request held the
/// gateway's shutdown (hyper's graceful shutdown waits for the client) until the CI's
/// 20-second limit.
#[tokio::test]
async fn the_gateway_stops_though_http2_connections_sit_open_without_a_request() {
    let tmp = TempDir::new("h2idle");
    let (cert, key) = self_signed(&tmp).await;
    let gateway = Gateway::start(&[
        ("JTGW__HTTP__TLS_CERT", cert.to_str().unwrap()),
        ("JTGW__HTTP__TLS_KEY", key.to_str().unwrap()),
    ])
    .await;
    let connector = tls_connector(&cert, b"h2");
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    // one with the TLS handshake only, one that also sent the HTTP/2 preface
    let mut idle = Vec::new();
    for preface in [false, true] {
        let tcp = TcpStream::connect(gateway.addrs.http).await.unwrap();
        let mut tls = connector.connect(name.clone(), tcp).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        if preface {
            let settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00";
            tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                .await
                .unwrap();
            tls.write_all(settings).await.unwrap();
            // the server's SETTINGS: the connection is being served
            let mut head = [0u8; 9];
            tls.read_exact(&mut head).await.unwrap();
            assert_eq!(head[3], 4, "a SETTINGS frame first");
        }
        idle.push(tls);
    }
    let started = tokio::time::Instant::now();
    gateway.stop().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "stopped in {took:?}, the grace is two seconds"
    );
    // and the connections were closed, not left open
    for mut tls in idle {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the connection is closed after the stop");
    }
}
