//! Bridge test helpers: an HTTP POST client for SRS hook bodies, the fixtures SRS 6 sent
//! (`tests/fixtures/srs-hooks/`), and a real redis-server on a free port.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{TempDir, free_port, kill_child};

/// POSTs `body` (JSON) over HTTP/1.0: status and body.
pub(crate) async fn http_post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let mut socket = TcpStream::connect(addr).await.expect("connect http");
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: test\r\nContent-Type: application/json\r\n\
         User-Agent: SRS/6.0.157(Hang)\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("http head");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// The fixture `name` (e.g. `on_play-httpflv`) as SRS sent it, with its stream name,
/// app and client id replaced.
pub(crate) fn hook(name: &str, app: &str, stream: &str, client: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/srs-hooks")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut body: serde_json::Value = serde_json::from_str(&text).unwrap();
    body["stream"] = stream.into();
    body["app"] = app.into();
    body["client_id"] = client.into();
    body["stream_url"] = format!("/{app}/{stream}").into();
    body.to_string()
}

/// A redis-server started for one test; killed on drop.
pub(crate) struct Redis {
    pub(crate) port: u16,
    child: Option<Child>,
    dir: TempDir,
}

impl Redis {
    pub(crate) async fn start() -> Redis {
        let mut redis = Redis {
            port: free_port(),
            child: None,
            dir: TempDir::new("redis"),
        };
        redis.spawn().await;
        redis
    }

    async fn spawn(&mut self) {
        let mut child = Command::new(super::program("REDIS_SERVER_BIN", "redis-server"))
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                // keyspace events: the tests wait on a list's changes, not by polling it
                "--notify-keyspace-events",
                "KA",
            ])
            .arg("--dir")
            .arg(&self.dir.0)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts (run ./scripts/test.sh to install it)");
        // the server says when it accepts connections (its log on stdout)
        let stdout = child.stdout.take().expect("piped");
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut ready = Some(ready_tx);
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if line.contains("Ready to accept connections") {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                }
                // read on to the end, so the server never blocks on a full pipe
            }
        });
        self.child = Some(child);
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("redis-server ready within 10 s")
            .expect("redis-server said it is ready before it exited");
    }

    /// Kills it (no clean shutdown; the append-only file keeps every write).
    pub(crate) fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    /// Starts it again on the same port with the same data.
    pub(crate) async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Runs `redis-cli` with `args` and returns its output.
    pub(crate) async fn cli(&self, args: &[&str]) -> String {
        let out = tokio::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .await
            .expect("redis-cli runs");
        assert!(out.status.success(), "redis-cli {args:?}");
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    /// The list `key`, left to right.
    pub(crate) async fn list(&self, key: &str) -> Vec<String> {
        let out = self.cli(&["LRANGE", key, "0", "-1"]).await;
        out.lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Waits until the list `key` satisfies `pred` (checked now and after each change
    /// Redis notifies on the key), at most `wait`; returns it.
    pub(crate) async fn wait_list(
        &self,
        key: &str,
        what: &str,
        wait: Duration,
        pred: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        use futures_util::StreamExt;
        let client = redis::Client::open(self.url()).expect("a redis URL");
        let mut changes = client
            .get_async_pubsub()
            .await
            .expect("a pub/sub connection");
        changes
            .subscribe(format!("__keyspace@0__:{key}"))
            .await
            .expect("subscribed to the key's events");
        let mut changes = changes.into_on_message();
        let deadline = Instant::now() + wait;
        loop {
            // subscribed first, then read: a change in between is not missed
            let list = self.list(key).await;
            if pred(&list) {
                return list;
            }
            match tokio::time::timeout_at(deadline, changes.next()).await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("redis closed the pub/sub connection waiting for {what}"),
                Err(_) => panic!("{what}: not within {wait:?}; {key} is {list:?}"),
            }
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
