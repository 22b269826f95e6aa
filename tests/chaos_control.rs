//! The control plane under hostile and broken clients (issue 16, findings 1, 2, 3 and 10),
//! each probe run against a gateway with its embedded broker while one good device streams
//! and one good viewer watches: a request whose reply topic MQTT cannot carry, a flood of
//! requests, rounds of requests with fresh ids (memory), and the log a person reads.
//! Figures and the commands to reproduce them: docs/reliability.md, "Control plane (MQTT)".

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "helpers of tests: a failure is a test failure"
)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::control::*;
use common::mqtt::Received;
use common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;

const GOOD: &str = "13800138000";

/// What the backend listens to: replies, device commands, gateway status, heartbeats.
const BACKEND: [&str; 4] = [
    "jt1078/client/#",
    "jt1078/device/#",
    "jt1078/status/gateway/#",
    "jt1078/gateway/+/HEART",
];

/// Requests of a flood, as in the issue's probe.
const FLOOD: usize = 20_000;

#[tokio::test]
async fn a_reply_topic_mqtt_cannot_carry_is_refused_and_the_link_stays_up() {
    let url = embedded_url();
    let gateway = gateway_on(&url, BrokerAt::Embedded, &[]).await;
    let port = port_of(&url);
    let backend = Tally::connect(port, &BACKEND).await;
    backend.wait("online", 1, is_online).await;
    let (device, viewer) = good_device_and_viewer(&backend, &gateway, &url).await;
    // a stream that is wanted and never comes: its pulls are counted
    backend
        .publish(
            "jt1078/gateway/13900000001/SUBSCRIBE",
            r#"{"seqid":"wanted","client_id":"fleet"}"#,
        )
        .await;
    backend
        .wait("OK wanted", 1, topic_is("jt1078/client/wanted/OK"))
        .await;
    let frames_before = viewer.frames();

    // the probe: a seqid that makes the reply topic longer than MQTT allows
    let huge = "x".repeat(70_000);
    backend
        .publish(
            &format!("jt1078/gateway/{GOOD}/SUBSCRIBE"),
            &format!(r#"{{"seqid":"{huge}"}}"#),
        )
        .await;
    // too long, yet repliable: refused on its topic
    let long = "y".repeat(1000);
    backend
        .publish(
            &format!("jt1078/gateway/{GOOD}/SUBSCRIBE"),
            &format!(r#"{{"seqid":"{long}"}}"#),
        )
        .await;
    let client_id = "c".repeat(200);
    backend
        .publish(
            &format!("jt1078/gateway/{GOOD}/SUBSCRIBE"),
            &format!(r#"{{"seqid":"longclient","client_id":"{client_id}"}}"#),
        )
        .await;
    // a shell typo that still shows its seqid (issue 13)
    backend
        .publish(
            &format!("jt1078/gateway/{GOOD}/SUBSCRIBE"),
            r#"{"seqid":"typo", "channel":1,,}"#,
        )
        .await;
    backend
        .publish(
            &format!("jt1078/gateway/{GOOD}/SUBSCRIBE"),
            r#"{"seqid":"after","client_id":"fleet"}"#,
        )
        .await;
    backend
        .wait("OK after the probe", 1, topic_is("jt1078/client/after/OK"))
        .await;
    for (topic, code, hint) in [
        (
            format!("jt1078/client/{long}/ERROR"),
            "invalid_field",
            "128",
        ),
        (
            "jt1078/client/longclient/ERROR".to_owned(),
            "invalid_field",
            "client_id",
        ),
        (
            "jt1078/client/typo/ERROR".to_owned(),
            "invalid_json",
            "not valid JSON",
        ),
    ] {
        let reply = backend
            .wait(&format!("{code} reply"), 1, topic_is(&topic))
            .await;
        let reply = reply[0].json();
        assert_eq!(reply["code"], code, "{reply}");
        assert!(reply["message"].as_str().unwrap().contains(hint), "{reply}");
    }
    // the link stays up: no re-announcement (a reconnect publishes "online" again) and no
    // pull sent again, while the good viewer keeps getting frames
    let more = frames_before + 75;
    viewer.wait_frames(more).await;
    backend.settle().await;
    assert_eq!(
        backend.count(is_online),
        1,
        "the gateway reconnected to the broker"
    );
    assert_eq!(
        backend.count(topic_is("jt1078/device/13900000001/REQPULL")),
        1,
        "pulls of a wanted stream"
    );
    assert_eq!(
        backend.count(|r| r.topic.starts_with("jt1078/client/xxxx")),
        0
    );
    device.cancel();
    gateway.stop().await;
}

#[tokio::test]
async fn a_flood_of_requests_loses_no_reply_and_no_command() {
    let url = embedded_url();
    let gateway = gateway_on(
        &url,
        BrokerAt::Embedded,
        // no retries within the test: each fresh device is asked once
        &[("JTGW__CONTROL__PULL_TIMEOUT", "120s")],
    )
    .await;
    let port = port_of(&url);
    let backend = Tally::connect(port, &BACKEND).await;
    backend.wait("online", 1, is_online).await;
    let (device, viewer) = good_device_and_viewer(&backend, &gateway, &url).await;
    let frames_before = viewer.frames();

    let flooder = Tally::connect(port, &[]).await;
    let started = Instant::now();
    for i in 0..FLOOD {
        let device = 15_000_000_000u64 + i as u64;
        flooder.try_publish(
            &format!("jt1078/gateway/{device}/SUBSCRIBE"),
            &format!(r#"{{"seqid":"f{i}","client_id":"flood"}}"#),
        );
        if i == FLOOD / 2 {
            // a normal request in the middle of the flood
            flooder.try_publish(
                &format!("jt1078/gateway/{GOOD}/SUBSCRIBE"),
                r#"{"seqid":"normal","client_id":"fleet"}"#,
            );
        }
    }
    let normal_sent = Instant::now();
    let normal = backend
        .wait("the normal request's reply", 1, |r| {
            r.topic.starts_with("jt1078/client/normal/")
        })
        .await;
    let answered_in = normal[0].at - normal_sent;
    let replies = backend
        .wait("a reply to every request", FLOOD + 1, |r| {
            r.topic.starts_with("jt1078/client/f") || r.topic.starts_with("jt1078/client/normal/")
        })
        .await;
    let pulls = backend
        .wait("a REQPULL for every fresh device", FLOOD, |r| {
            r.topic.starts_with("jt1078/device/15") && r.topic.ends_with("/REQPULL")
        })
        .await;
    eprintln!(
        "flood of {FLOOD}: sent in {:?}, normal request answered in {answered_in:?}, all \
         replies after {:?}",
        normal_sent - started,
        started.elapsed()
    );
    // exactly once: nothing more arrives
    backend.settle().await;
    let mut per_seqid: HashMap<String, usize> = HashMap::new();
    for reply in backend.matching(|r| r.topic.starts_with("jt1078/client/")) {
        let seqid = reply.json()["seqid"].as_str().unwrap().to_owned();
        *per_seqid.entry(seqid).or_default() += 1;
    }
    assert_eq!(replies.len(), FLOOD + 1);
    assert!(
        (0..FLOOD).all(|i| per_seqid.get(&format!("f{i}")) == Some(&1)),
        "every request answered exactly once"
    );
    assert_eq!(per_seqid.get("normal"), Some(&1));
    assert!(
        replies.iter().all(|r| r.topic.ends_with("/OK")),
        "every request accepted"
    );
    let mut per_device: HashMap<String, usize> = HashMap::new();
    for pull in backend.matching(|r| r.topic.ends_with("/REQPULL")) {
        *per_device.entry(pull.topic.clone()).or_default() += 1;
    }
    assert_eq!(pulls.len(), FLOOD, "one REQPULL per fresh device");
    assert!(
        per_device.values().all(|&n| n <= 3),
        "no device gets more REQPULLs than control.pull_attempts"
    );
    // The issue's figure: 2 s. An optimised build answers in 0.3-0.5 s (docs/reliability.md);
    // the unoptimised test build is ~10x slower (2.5-4.7 s measured on the 2-core machine
    // with other builds running), so it is held to ten times the figure: a control loop
    // that fell back to one request per broker round trip, or stalled, fails either way.
    let bound = if cfg!(debug_assertions) {
        Duration::from_secs(20)
    } else {
        Duration::from_secs(2)
    };
    assert!(
        answered_in < bound,
        "normal request answered in {answered_in:?}, more than {bound:?}"
    );
    viewer.wait_frames(frames_before + 75).await;
    device.cancel();
    gateway.stop().await;
}

#[tokio::test]
async fn memory_returns_after_rounds_of_fresh_ids_and_the_log_reads_as_the_gateways() {
    let tmp = TempDir::new("chaos-rss");
    let child = ChildGateway::start(
        &tmp,
        &[
            ("JTGW__CONTROL__LEASE", "2s"),
            ("JTGW__CONTROL__STOP_LINGER", "200ms"),
            ("JTGW__CONTROL__PULL_TIMEOUT", "120s"),
        ],
    );
    let backend = Tally::connect(child.mqtt_port, &BACKEND).await;
    backend.wait("online", 1, is_online).await;
    let url = format!("mqtt://127.0.0.1:{}", child.mqtt_port);
    let http = format!("127.0.0.1:{}", child.http_port).parse().unwrap();
    let device = start_device(&url, GOOD);
    backend
        .wait(
            "the good device's heartbeat",
            1,
            topic_is(&format!("jt1078/gateway/{GOOD}/HEART")),
        )
        .await;
    let viewer = Viewer::start(http, &format!("/live/{GOOD}_1.flv"));
    viewer.wait_frames(50).await;
    let start = child.rss_kb();
    let flooder = Tally::connect(child.mqtt_port, &[]).await;
    let rounds = 3;
    for round in 0..rounds {
        for i in 0..FLOOD as u64 {
            let n = round as u64 * FLOOD as u64 + i;
            flooder.try_publish(
                &format!("jt1078/gateway/{}/SUBSCRIBE", 16_000_000_000 + n),
                &format!(r#"{{"seqid":"m{n}","client_id":"c{n}"}}"#),
            );
        }
        let done = (round + 1) * FLOOD;
        backend
            .wait("the round's replies", done, |r| {
                r.topic.starts_with("jt1078/client/m")
            })
            .await;
        eprintln!("round {round}: RSS {} KB", child.rss_kb());
    }
    // every lease expires, then every device is told to stop
    backend
        .wait("a STOP per fresh device", rounds * FLOOD, |r| {
            r.topic.starts_with("jt1078/device/16") && r.topic.ends_with("/STOP")
        })
        .await;
    let frames = viewer.frames();
    viewer.wait_frames(frames + 50).await;
    // the allocator gives freed pages back after a second (docs/architecture.md)
    let bound = start + 20 * 1024;
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let rss = child.rss_kb();
            if rss < bound {
                return rss;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let end = end.unwrap_or_else(|_| {
        panic!(
            "RSS grew from {start} KB to {} KB, still 10 s after the leases",
            child.rss_kb()
        )
    });
    eprintln!("RSS: start {start} KB, after {rounds} rounds of {FLOOD} and the leases: {end} KB");
    device.cancel();
    let log = child.stop();
    // the log a person reads: no colour codes in a file, no broker chatter, no ERROR for
    // ordinary disconnects, and every warning names its cause
    assert!(!log.contains('\u{1b}'), "ANSI colour codes in a log file");
    let lines: Vec<&str> = log.lines().collect();
    let errors: Vec<&&str> = lines.iter().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "ERROR lines: {errors:#?}");
    let chatter: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("rumqttd") && l.contains(" INFO "))
        .collect();
    assert!(chatter.is_empty(), "broker INFO lines: {chatter:#?}");
    let vague: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains(" WARN ") && !l.contains("error="))
        .collect();
    assert!(vague.is_empty(), "warnings without a cause: {vague:#?}");
}

/// The gateway binary as a child process on free loopback ports, its log in a file.
struct ChildGateway {
    child: std::process::Child,
    mqtt_port: u16,
    http_port: u16,
    log: std::path::PathBuf,
}

impl ChildGateway {
    fn start(tmp: &TempDir, extra: &[(&str, &str)]) -> ChildGateway {
        let (mqtt_port, http_port) = (free_port(), free_port());
        let log = tmp.path("gateway.log");
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_jt1078-gateway"));
        command
            .arg("serve")
            .env_remove("RUST_LOG")
            .env(
                "JTGW__MQTT__EMBEDDED_LISTEN",
                format!("127.0.0.1:{mqtt_port}"),
            )
            .env(
                "JTGW__MQTT__EMBEDDED_WS_LISTEN",
                format!("127.0.0.1:{}", free_port()),
            )
            .env(
                "JTGW__INGEST__LIVE_LISTEN",
                format!("127.0.0.1:{}", free_port()),
            )
            .env("JTGW__INGEST__PLAYBACK_LISTEN", "127.0.0.1:0")
            .env("JTGW__HTTP__LISTEN", format!("127.0.0.1:{http_port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in extra {
            command.env(k, v);
        }
        ChildGateway {
            child: command.spawn().unwrap(),
            mqtt_port,
            http_port,
            log,
        }
    }

    /// Resident memory from /proc, in KB.
    fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Stops it (SIGTERM, as a service manager does) and returns its log.
    fn stop(mut self) -> String {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().unwrap();
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for ChildGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("gateway log, last lines first:\n{}", tail.join("\n"));
        }
    }
}

/// The good device (MQTT-driven simulator) streaming and the good viewer reading it.
async fn good_device_and_viewer(
    backend: &Tally,
    gateway: &Gateway,
    url: &str,
) -> (tokio_util::sync::CancellationToken, Viewer) {
    let device = start_device(url, GOOD);
    // the device listens to its commands once its heartbeat is out
    backend
        .wait(
            "the good device's heartbeat",
            1,
            topic_is(&format!("jt1078/gateway/{GOOD}/HEART")),
        )
        .await;
    backend
        .publish(
            &format!("jt1078/gateway/{GOOD}/SUBSCRIBE"),
            r#"{"seqid":"good","client_id":"fleet"}"#,
        )
        .await;
    backend
        .wait("OK good", 1, topic_is("jt1078/client/good/OK"))
        .await;
    let viewer = Viewer::start(gateway.addrs.http, &format!("/live/{GOOD}_1.flv"));
    viewer.wait_frames(25).await;
    (device, viewer)
}

fn is_online(r: &Received) -> bool {
    r.topic == "jt1078/status/gateway/gw1" && r.json()["status"] == "online"
}

fn topic_is(topic: &str) -> impl Fn(&Received) -> bool + '_ {
    move |r| r.topic == topic
}

/// An MQTT client that records everything it receives and can be waited on; large packets
/// and a deep queue, to probe and to flood.
struct Tally {
    client: AsyncClient,
    log: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<Notify>,
}

/// How long a wait for messages may see nothing new before it gives up.
const STALLED: Duration = Duration::from_secs(20);

/// Nothing new for this long: the gateway has said all it had to say.
const QUIET: Duration = Duration::from_secs(3);

impl Tally {
    async fn connect(port: u16, filters: &[&str]) -> Tally {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = format!(
            "chaos-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, FLOOD + 100);
        let log = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(1);
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        let (subscriber, sink, notify) = (client.clone(), log.clone(), arrived.clone());
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for f in &filters {
                            subscriber.subscribe(f, QoS::AtLeastOnce).await.unwrap();
                        }
                        if filters.is_empty() {
                            let _ = ready_tx.try_send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.try_send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        sink.lock().unwrap().push(Received {
                            topic: p.topic.clone(),
                            payload: p.payload.clone(),
                            at: Instant::now(),
                        });
                        notify.notify_waiters();
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(WAIT, ready_rx.recv())
            .await
            .expect("chaos client connected");
        Tally {
            client,
            log,
            arrived,
        }
    }

    async fn publish(&self, topic: &str, body: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, body.as_bytes().to_vec())
            .await
            .unwrap();
    }

    /// QoS 0 straight into the client's queue, as fast as it goes (`mosquitto_pub`'s QoS).
    fn try_publish(&self, topic: &str, body: &str) {
        self.client
            .try_publish(topic, QoS::AtMostOnce, false, body.as_bytes().to_vec())
            .unwrap();
    }

    fn matching(&self, pred: impl Fn(&Received) -> bool) -> Vec<Received> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| pred(r))
            .cloned()
            .collect()
    }

    fn count(&self, pred: impl Fn(&Received) -> bool) -> usize {
        self.log.lock().unwrap().iter().filter(|r| pred(r)).count()
    }

    /// Waits until `n` messages match; fails when nothing new arrives for [`STALLED`]
    /// before that (or after `WAIT` · 6).
    async fn wait(&self, what: &str, n: usize, pred: impl Fn(&Received) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + WAIT * 6;
        loop {
            let notified = self.arrived.notified();
            let found = self.matching(&pred);
            if found.len() >= n {
                return found;
            }
            let stalled = tokio::time::timeout(STALLED, notified).await.is_err();
            let total = self.log.lock().unwrap().len();
            assert!(
                !stalled && Instant::now() < deadline,
                "waiting for {what}: {} of {n} after {total} messages",
                found.len()
            );
        }
    }

    /// Waits until nothing has arrived for [`QUIET`].
    async fn settle(&self) {
        loop {
            let notified = self.arrived.notified();
            if tokio::time::timeout(QUIET, notified).await.is_err() {
                return;
            }
        }
    }
}

/// A viewer of an HTTP-FLV stream counting the video frames it reads.
struct Viewer {
    frames: Arc<AtomicU64>,
    arrived: Arc<Notify>,
}

impl Viewer {
    fn start(http: std::net::SocketAddr, path: &str) -> Viewer {
        let frames = Arc::new(AtomicU64::new(0));
        let arrived = Arc::new(Notify::new());
        let request = format!("GET {path} HTTP/1.0\r\n\r\n");
        let (count, notify) = (frames.clone(), arrived.clone());
        tokio::spawn(async move {
            let mut socket = tokio::net::TcpStream::connect(http).await.unwrap();
            socket.write_all(request.as_bytes()).await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            let mut in_body = false;
            loop {
                let n = socket.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                if !in_body {
                    // the HTTP header and the 13-byte FLV header, then tags
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    if buf.len() < end + 4 + 13 {
                        continue;
                    }
                    buf.drain(..end + 4 + 13);
                    in_body = true;
                }
                let mut i = 0;
                while i + 11 <= buf.len() {
                    let size = u32::from_be_bytes([0, buf[i + 1], buf[i + 2], buf[i + 3]]);
                    let end = i + 15 + size as usize;
                    if end > buf.len() {
                        break;
                    }
                    if buf[i] == 9 && buf.get(i + 12) == Some(&1) {
                        count.fetch_add(1, Ordering::Relaxed);
                        notify.notify_waiters();
                    }
                    i = end;
                }
                buf.drain(..i);
            }
        });
        Viewer { frames, arrived }
    }

    fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    async fn wait_frames(&self, n: u64) {
        tokio::time::timeout(WAIT * 2, async {
            loop {
                let notified = self.arrived.notified();
                if self.frames() >= n {
                    return;
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("good viewer: {} of {n} frames", self.frames()));
    }
}
