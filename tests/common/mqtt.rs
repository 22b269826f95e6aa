//! MQTT test helpers: a real mosquitto on free ports, configured by the repository's
//! `broker/mosquitto.conf`, and a recording test client.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{TempDir, free_port, kill_child};

/// Reconnect delay of the test client.
const RETRY: Duration = Duration::from_millis(100);

/// A client id no other test client of this process has: two clients with one id take the
/// session from each other on every reconnect, and neither gets far.
fn unique_client_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("test-{}-{n}", std::process::id())
}

/// A mosquitto broker started for one test; killed on drop.
pub(crate) struct Mosquitto {
    pub(crate) port: u16,
    /// The MQTT over WebSocket listener.
    pub(crate) ws_port: u16,
    child: Option<Child>,
    dir: TempDir,
    /// `user:password` lines for the password file; `None`: a lab broker, anonymous
    /// clients may do anything.
    logins: Option<Vec<(String, String)>>,
}

impl Mosquitto {
    /// A lab broker: `broker/mosquitto.conf` without its logins and ACL.
    pub(crate) async fn start() -> Mosquitto {
        Self::start_with(None).await
    }

    /// `broker/mosquitto.conf` as shipped, with `broker/acl` and a password file of these
    /// logins (hashed with `mosquitto_passwd`, as `broker/entrypoint.sh` does).
    pub(crate) async fn start_secure(logins: &[(&str, &str)]) -> Mosquitto {
        let logins = logins
            .iter()
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .collect();
        Self::start_with(Some(logins)).await
    }

    async fn start_with(logins: Option<Vec<(String, String)>>) -> Mosquitto {
        let dir = TempDir::new("mosquitto");
        // mosquitto started as root drops to its own user, which must write its database
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut broker = Mosquitto {
            port: free_port(),
            ws_port: free_port(),
            child: None,
            dir,
            logins,
        };
        broker.spawn().await;
        broker
    }

    /// `broker/mosquitto.conf` with this broker's loopback ports and data directory.
    fn config(&self) -> PathBuf {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("broker/mosquitto.conf");
        let mut text = std::fs::read_to_string(&repo).unwrap();
        let data = format!("{}/", self.dir.0.display());
        for (from, to) in [
            (
                "listener 1883 0.0.0.0",
                format!("listener {} 127.0.0.1", self.port),
            ),
            (
                "listener 8083 0.0.0.0",
                format!("listener {} 127.0.0.1", self.ws_port),
            ),
            (
                "persistence_location /mosquitto/data/",
                format!("persistence_location {data}"),
            ),
        ] {
            assert!(text.contains(from), "broker/mosquitto.conf has no {from:?}");
            text = text.replace(from, &to);
        }
        let secure = [
            "allow_anonymous false",
            "password_file /mosquitto/data/passwd",
            "acl_file /mosquitto/config/acl",
        ];
        for line in secure {
            assert!(text.contains(line), "broker/mosquitto.conf has no {line:?}");
        }
        match &self.logins {
            None => {
                text = text
                    .replace(secure[0], "allow_anonymous true")
                    .replace(secure[1], "")
                    .replace(secure[2], "");
            }
            Some(logins) => {
                let passwd = self.dir.path("passwd");
                let lines: String = logins.iter().map(|(u, p)| format!("{u}:{p}\n")).collect();
                std::fs::write(&passwd, lines).unwrap();
                let status = Command::new("mosquitto_passwd")
                    .arg("-U")
                    .arg(&passwd)
                    .status()
                    .expect("mosquitto_passwd runs");
                assert!(status.success(), "mosquitto_passwd -U");
                std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o644)).unwrap();
                let acl = Path::new(env!("CARGO_MANIFEST_DIR")).join("broker/acl");
                text = text
                    .replace(secure[1], &format!("password_file {}", passwd.display()))
                    .replace(secure[2], &format!("acl_file {}", acl.display()));
            }
        }
        let path = self.dir.path("mosquitto.conf");
        std::fs::write(&path, text).unwrap();
        path
    }

    async fn spawn(&mut self) {
        let config = self.config();
        let child = Command::new(super::program("MOSQUITTO_BIN", "mosquitto"))
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts (run ./scripts/test.sh to install it)");
        self.child = Some(child);
        // ready when it accepts connections
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            tokio::task::yield_now().await;
        }
    }

    /// Kills the broker (no clean shutdown).
    pub(crate) fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    /// Starts it again on the same port.
    pub(crate) async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Stops it with SIGTERM (it saves sessions and queued messages) and starts it again.
    pub(crate) async fn restart_gracefully(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success(), "kill -TERM mosquitto");
            child.wait().unwrap();
        }
        self.spawn().await;
    }

    pub(crate) fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A message the test client received.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) topic: String,
    pub(crate) payload: Bytes,
    pub(crate) at: Instant,
}

impl Received {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or(serde_json::Value::Null)
    }
}

/// A client that subscribes to filters and records everything.
pub(crate) struct TestClient {
    pub(crate) client: AsyncClient,
    rx: mpsc::Receiver<Received>,
    pub(crate) seen: Vec<Received>,
}

impl TestClient {
    pub(crate) async fn connect(port: u16, filters: &[&str]) -> TestClient {
        let mut options = MqttOptions::new(unique_client_id(), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        Self::connect_with(options, filters).await
    }

    /// A client with a persistent session: it reconnects by itself, and what the broker
    /// kept for it meanwhile (QoS 1) arrives then.
    pub(crate) async fn connect_persistent(port: u16, filters: &[&str]) -> TestClient {
        let mut options = MqttOptions::new(unique_client_id(), "127.0.0.1", port);
        options
            .set_keep_alive(Duration::from_secs(5))
            .set_clean_session(false);
        Self::connect_with(options, filters).await
    }

    async fn connect_with(options: MqttOptions, filters: &[&str]) -> TestClient {
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let (tx, rx) = mpsc::channel(1000);
        let (ready_tx, mut ready_rx) = mpsc::channel(1);
        let subscriber = client.clone();
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        tokio::spawn(async move {
            loop {
                // the loop lives as long as the client: it ends when the receiver is dropped
                let event = tokio::select! {
                    event = eventloop.poll() => event,
                    () = tx.closed() => return,
                };
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for f in &filters {
                            subscriber
                                .subscribe(f.clone(), QoS::AtLeastOnce)
                                .await
                                .unwrap();
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.try_send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let received = Received {
                            topic: p.topic.clone(),
                            payload: p.payload.clone(),
                            at: Instant::now(),
                        };
                        if tx.send(received).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // the broker is away (a test restarts it): reconnect after a pause
                    Err(_) => tokio::time::sleep(RETRY).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx.recv())
            .await
            .expect("test client subscribed");
        TestClient {
            client,
            rx,
            seen: Vec::new(),
        }
    }

    pub(crate) async fn publish(&self, topic: &str, body: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, body.as_bytes().to_vec())
            .await
            .unwrap();
    }

    /// Waits for the next message (recorded in `seen`) matching `pred`.
    pub(crate) async fn expect(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Received) -> bool,
    ) -> Received {
        if let Some(found) = self.seen.iter().find(|r| pred(r)) {
            let found = found.clone();
            self.seen.retain(|r| {
                !(r.topic == found.topic && r.payload == found.payload && r.at == found.at)
            });
            return found;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, self.rx.recv()).await {
                Ok(Some(r)) if pred(&r) => return r,
                Ok(Some(r)) => self.seen.push(r),
                Ok(None) => panic!("test client closed while waiting for {what}"),
                Err(_) => panic!(
                    "timed out waiting for {what}; seen: {:#?}",
                    self.seen
                        .iter()
                        .map(|r| (&r.topic, String::from_utf8_lossy(&r.payload)))
                        .collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Everything received in the next `window` (to assert that something did not happen).
    pub(crate) async fn drain_for(&mut self, window: Duration) -> Vec<Received> {
        let deadline = Instant::now() + window;
        while let Ok(Some(r)) = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            self.rx.recv(),
        )
        .await
        {
            self.seen.push(r);
        }
        self.seen.clone()
    }
}
