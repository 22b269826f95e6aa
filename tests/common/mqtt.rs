//! MQTT test helpers: a real mosquitto on a free port, and a recording test client.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{TempDir, free_port};

/// Reconnect delay of the test client.
const RETRY: Duration = Duration::from_millis(100);

/// A mosquitto broker started for one test; killed on drop.
pub(crate) struct Mosquitto {
    pub(crate) port: u16,
    child: Option<Child>,
    dir: TempDir,
}

impl Mosquitto {
    pub(crate) async fn start() -> Mosquitto {
        let dir = TempDir::new("mosquitto");
        let port = free_port();
        let mut broker = Mosquitto {
            port,
            child: None,
            dir,
        };
        broker.spawn().await;
        broker
    }

    fn config(&self) -> PathBuf {
        let path = self.dir.path("mosquitto.conf");
        std::fs::write(
            &path,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\n",
                self.port
            ),
        )
        .unwrap();
        path
    }

    async fn spawn(&mut self) {
        let config = self.config();
        let child = Command::new("mosquitto")
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
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub(crate) async fn restart(&mut self) {
        self.kill();
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
        let id = format!("test-{}-{}", std::process::id(), free_port());
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let (tx, rx) = mpsc::channel(1000);
        let (ready_tx, mut ready_rx) = mpsc::channel(1);
        let subscriber = client.clone();
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
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
