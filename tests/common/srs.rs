//! RTMP servers for the push tests: SRS 6 run from `config/srs.conf` (the file
//! docker-compose ships, with its ports and the WebRTC candidate substituted)
//! and Debian's nginx with libnginx-mod-rtmp. Each on free loopback ports, in its own
//! temporary directory, killed by pid on drop.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::process::{Child, Command};

use super::{TempDir, free_port, wait_listening};

/// The SRS 6 binary the suite runs: `$SRS_BIN` (which `scripts/test.sh` sets through
/// `scripts/tools.sh`: found on the PATH, in a local tool cache, or built from SRS's source
/// release), else `srs` on the PATH. Neither is a failure that says what to install.
pub(crate) fn srs_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("SRS_BIN").filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("srs"))
            .find(|candidate| candidate.is_file())
    });
    on_path.unwrap_or_else(|| {
        panic!(
            "SRS 6 is needed by this test and was not found: run ./scripts/test.sh (it finds \
             or builds one), or set SRS_BIN to an srs binary, or put srs on the PATH"
        )
    })
}

/// The hooks switch of `config/srs.conf` (checked to be there by `render_srs_conf`).
const HOOKS_ON: &str = "enabled         on;\n        on_publish";

/// `config/srs.conf` as the tests run it: every substitution must match, so the file and
/// the tests cannot drift apart unnoticed.
pub(crate) fn render_srs_conf(rtmp: u16, http: u16, api: u16, rtc: u16) -> String {
    let conf = include_str!("../../config/srs.conf");
    let substitutions = [
        (
            "listen              1935;",
            format!("listen              {rtmp};"),
        ),
        ("listen          8080;", format!("listen          {http};")),
        ("listen          1985;", format!("listen          {api};")),
        ("listen          8000;", format!("listen          {rtc};")),
        (
            "candidate       $CANDIDATE;",
            "candidate       127.0.0.1;".to_owned(),
        ),
    ];
    assert_eq!(conf.matches(HOOKS_ON).count(), 1, "config/srs.conf hooks");
    let mut out = conf.to_owned();
    for (from, to) in substitutions {
        assert_eq!(
            out.matches(from).count(),
            1,
            "config/srs.conf must contain {from:?} exactly once"
        );
        out = out.replace(from, &to);
    }
    out
}

/// A running SRS.
pub(crate) struct Srs {
    pub(crate) rtmp: u16,
    pub(crate) http: u16,
    pub(crate) api: u16,
    rtc: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl Srs {
    /// Starts SRS on free ports; returns once its RTMP port accepts connections.
    pub(crate) async fn start() -> Srs {
        let mut srs = Srs {
            rtmp: free_port(),
            http: free_port(),
            api: free_port(),
            rtc: free_port(),
            dir: TempDir::new("srs"),
            child: None,
        };
        std::fs::create_dir_all(srs.dir.path("objs/nginx/html")).unwrap();
        // a push test has no bridge to answer hooks: SRS would refuse every publish
        let conf = render_srs_conf(srs.rtmp, srs.http, srs.api, srs.rtc).replacen(
            HOOKS_ON,
            "enabled         off;\n        on_publish",
            1,
        );
        std::fs::write(srs.dir.path("srs.conf"), conf).unwrap();
        srs.spawn().await;
        srs
    }

    /// Starts SRS on `ports` (RTMP, HTTP, API, WebRTC) with its hooks on, pointing at the
    /// gateway's HTTP port `gateway_http` (the bridge).
    pub(crate) async fn start_with_hooks(ports: [u16; 4], gateway_http: u16) -> Srs {
        let [rtmp, http, api, rtc] = ports;
        let mut srs = Srs {
            rtmp,
            http,
            api,
            rtc,
            dir: TempDir::new("srs"),
            child: None,
        };
        std::fs::create_dir_all(srs.dir.path("objs/nginx/html")).unwrap();
        let conf = render_srs_conf(rtmp, http, api, rtc);
        let conf = conf.replace(
            "http://gateway:9531/",
            &format!("http://127.0.0.1:{gateway_http}/"),
        );
        std::fs::write(srs.dir.path("srs.conf"), conf).unwrap();
        srs.spawn().await;
        srs
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path("srs.log"))
            .unwrap();
        let child = Command::new(srs_binary())
            .arg("-c")
            .arg(self.dir.path("srs.conf"))
            .current_dir(&self.dir.0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start SRS ({}): {e}", srs_binary().display()));
        self.child = Some(child);
        wait_listening(self.rtmp, "SRS").await;
    }

    /// Kills SRS (as a crash would).
    pub(crate) async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// Starts it again on the same ports.
    pub(crate) async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }

    /// `rtmp://…/{app}/{stream}`.
    pub(crate) fn rtmp_url(&self, app: &str, stream: &str) -> String {
        format!("rtmp://127.0.0.1:{}/{app}/{stream}", self.rtmp)
    }

    /// `http://…/{app}/{stream}.flv`.
    pub(crate) fn flv_url(&self, app: &str, stream: &str) -> String {
        format!("http://127.0.0.1:{}/{app}/{stream}.flv", self.http)
    }

    /// The SRS log (for failure messages).
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path("srs.log")).unwrap_or_default()
    }

    /// `JTGW__RTMP__…` settings that push to this SRS and name its play URLs.
    pub(crate) fn gateway_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "JTGW__RTMP__LIVE_URL".to_owned(),
                format!("rtmp://127.0.0.1:{}/live/{{device}}_{{channel}}", self.rtmp),
            ),
            (
                "JTGW__RTMP__PLAYBACK_URL".to_owned(),
                format!(
                    "rtmp://127.0.0.1:{}/playback/{{device}}_{{channel}}",
                    self.rtmp
                ),
            ),
            (
                "JTGW__RTMP__PLAY_URLS__FLV".to_owned(),
                format!("http://127.0.0.1:{}/{{app}}/{{stream}}.flv", self.http),
            ),
            (
                "JTGW__RTMP__PLAY_URLS__WHEP".to_owned(),
                format!(
                    "http://127.0.0.1:{}/rtc/v1/whep/?app={{app}}&stream={{stream}}",
                    self.api
                ),
            ),
        ]
    }

    #[allow(dead_code, reason = "the WebRTC port is only reserved")]
    fn rtc_port(&self) -> u16 {
        self.rtc
    }
}

/// nginx with the RTMP module, publish and play on one application `live`.
pub(crate) struct NginxRtmp {
    pub(crate) rtmp: u16,
    _dir: TempDir,
    _child: Child,
}

impl NginxRtmp {
    pub(crate) async fn start() -> NginxRtmp {
        let dir = TempDir::new("nginx-rtmp");
        let rtmp = free_port();
        std::fs::create_dir_all(dir.path("logs")).unwrap();
        let conf = format!(
            "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\n\
             worker_processes 1;\n\
             pid {dir}/nginx.pid;\n\
             error_log {dir}/logs/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             rtmp {{\n  server {{\n    listen 127.0.0.1:{rtmp};\n    chunk_size 4096;\n\
             \x20   application live {{ live on; record off; wait_key on; }}\n  }}\n}}\n",
            dir = dir.0.display()
        );
        std::fs::write(dir.path("nginx.conf"), conf).unwrap();
        let child = Command::new(super::program("NGINX_BIN", "nginx"))
            .args(["-c", dir.path("nginx.conf").to_str().unwrap()])
            .args(["-p", dir.0.to_str().unwrap()])
            .args(["-g", "daemon off; master_process off;"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start nginx (apt-get install nginx libnginx-mod-rtmp)");
        wait_listening(rtmp, "nginx-rtmp").await;
        NginxRtmp {
            rtmp,
            _dir: dir,
            _child: child,
        }
    }
}
