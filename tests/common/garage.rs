//! Garage, a real S3-compatible object store (a separate AGPL program the tests run, never
//! linked): one node on free loopback ports in its own temporary directory, with a bucket
//! and a key, as Garage's quick-start describes. Killed (SIGKILL) by pid on
//! drop; [`Garage::kill`] and [`Garage::restart`] simulate an outage (the data stays).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::{TempDir, free_port, program, wait_listening};

/// The bucket every test store has.
pub(crate) const BUCKET: &str = "recordings";
/// The region Garage signs for.
pub(crate) const REGION: &str = "garage";

/// A running one-node Garage.
pub(crate) struct Garage {
    /// The S3 API port on 127.0.0.1.
    pub(crate) s3: u16,
    /// The access key id and secret with read, write and owner rights on [`BUCKET`].
    pub(crate) key_id: String,
    pub(crate) secret: String,
    dir: TempDir,
    child: Option<Child>,
}

fn binary() -> PathBuf {
    program("GARAGE_BIN", "garage")
}

impl Garage {
    /// Starts Garage, gives the node its role, makes the bucket and the key.
    pub(crate) async fn start() -> Garage {
        let dir = TempDir::new("garage");
        let (rpc, s3, admin) = (free_port(), free_port(), free_port());
        let conf = format!(
            "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"sqlite\"\n\
             replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_secret = \"4f7d1c0b9e8a6d5c3b2a19f8e7d6c5b4a3928170f6e5d4c3b2a1908f7e6d5c4b\"\n\
             [s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
             root_domain = \".s3.garage.localhost\"\n[admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n",
            meta = dir.path("meta").display(),
            data = dir.path("data").display(),
        );
        std::fs::write(dir.path("garage.toml"), conf).unwrap();
        let mut garage = Garage {
            s3,
            key_id: String::new(),
            secret: String::new(),
            dir,
            child: None,
        };
        garage.spawn().await;
        let node = garage.wait_for_node().await;
        garage
            .cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node])
            .await;
        garage.cli(&["layout", "apply", "--version", "1"]).await;
        garage.cli(&["bucket", "create", BUCKET]).await;
        garage.cli(&["key", "create", "test-key"]).await;
        garage
            .cli(&[
                "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", "test-key",
            ])
            .await;
        let info = garage
            .cli(&["key", "info", "test-key", "--show-secret"])
            .await;
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|| panic!("garage key info without {name}: {info}"))
        };
        garage.key_id = field("Key ID:");
        garage.secret = field("Secret key:");
        garage
    }

    /// The gateway settings that store recordings in this Garage's bucket under `prefix`.
    pub(crate) fn settings(&self, prefix: &str) -> Vec<(String, String)> {
        vec![
            (
                "JTGW__RECORD__STORE".into(),
                format!("s3://{BUCKET}/{prefix}"),
            ),
            (
                "JTGW__RECORD__S3_ENDPOINT".into(),
                format!("http://127.0.0.1:{}", self.s3),
            ),
            ("JTGW__RECORD__S3_REGION".into(), REGION.into()),
            ("JTGW__RECORD__S3_ACCESS_KEY".into(), self.key_id.clone()),
            ("JTGW__RECORD__S3_SECRET_KEY".into(), self.secret.clone()),
        ]
    }

    /// SIGKILL, as a crash or an outage.
    pub(crate) async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts the server again on the same ports and data.
    pub(crate) async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path("server.log")).unwrap();
        let child = Command::new(binary())
            .arg("-c")
            .arg(self.dir.path("garage.toml"))
            .arg("server")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "Garage could not start ({e}): run ./scripts/test.sh (scripts/tools.sh finds \
                     or builds it) or set GARAGE_BIN"
                )
            });
        self.child = Some(child);
        wait_listening(self.s3, "Garage's S3 API").await;
    }

    /// The node's id once `garage status` lists it healthy.
    async fn wait_for_node(&self) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let status = self.try_cli(&["status"]).await.unwrap_or_default();
            let mut healthy = false;
            for line in status.lines() {
                if line.contains("HEALTHY") {
                    healthy = true;
                    continue;
                }
                let id = line.split_whitespace().next().unwrap_or("");
                if healthy && id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return id.to_owned();
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "garage status: {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs the garage CLI; its standard output, `None` if it failed.
    async fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new(binary())
            .arg("-c")
            .arg(self.dir.path("garage.toml"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs the garage CLI against this node; its standard output.
    pub(crate) async fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(binary())
            .arg("-c")
            .arg(self.dir.path("garage.toml"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "garage {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}
