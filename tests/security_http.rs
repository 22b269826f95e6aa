//! The HTTP listener's guards (issue 23), against an in-process gateway, real sockets and
//! curl: signed play URLs on HTTP-FLV (direct and routed) and WHEP, signed URLs in MQTT
//! replies, the `/api/*` guard, trusted proxies and the per-address cold-pull limit,
//! HTTPS with a certificate reloaded on SIGHUP, and `print-config` / `sign-url`.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "helpers of tests: a failure is a test failure"
)]

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::control::{WAIT, is, wait_online};
use common::http::{content_length, get_kept_alive, read_body};
use common::mqtt::TestClient;
use common::*;
use jt1078_gateway::auth::PlaySigner;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "play-s3cret-for-tests";
/// The stream `device_holding_capture` makes live.
const PLAY: &str = "/live/156987000796_1.flv";

fn now() -> u64 {
    jt1078_gateway::auth::unix_now()
}

fn signed(path: &str, expires: u64) -> String {
    format!(
        "{path}?{}",
        PlaySigner::new(SECRET.as_bytes()).query(path, expires)
    )
}

/// Sends `head` (a whole HTTP/1.0 request head) and reads the response to its end:
/// status and body.
async fn exchange(addr: SocketAddr, head: &str) -> (u16, String) {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, socket.read_to_end(&mut response))
        .await
        .expect("an answer")
        .unwrap();
    let text = String::from_utf8_lossy(&response).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// The status line of a play that is allowed: the first bytes of its (endless) answer.
async fn play_status(addr: SocketAddr, path: &str) -> String {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut first = [0u8; 12];
    tokio::time::timeout(WAIT, socket.read_exact(&mut first))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&first).to_string()
}

#[tokio::test]
async fn plays_need_a_valid_signature_when_a_play_secret_is_set() {
    let gateway = Gateway::start(&[("JTGW__HTTP__PLAY_SECRET", SECRET)]).await;
    let http = gateway.addrs.http;
    let (_device, _) = gateway.device_holding_capture().await;
    let t = now();

    // valid: 200, the FLV follows
    assert_eq!(
        play_status(http, &signed(PLAY, t + 60)).await,
        "HTTP/1.0 200"
    );
    // expired by one second, forged, for another path, missing: 403 with the reason
    let get = |path: String| format!("GET {path} HTTP/1.0\r\n\r\n");
    let cases = [
        (signed(PLAY, t - 1), "expired"),
        (
            format!("{PLAY}?{}", PlaySigner::new(b"a guess").query(PLAY, t + 60)),
            "does not match",
        ),
        (
            signed("/live/156987000796_2.flv", t + 60).replace("_2.flv", "_1.flv"),
            "does not match",
        ),
        (PLAY.to_owned(), "expires is missing"),
        (format!("{PLAY}?expires={}", t + 60), "sig is missing"),
    ];
    for (path, reason) in &cases {
        let (status, body) = exchange(http, &get(path.clone())).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains(reason), "{path}: {body}");
    }
    // HEAD too
    let (status, _) = exchange(http, &format!("HEAD {PLAY} HTTP/1.0\r\n\r\n")).await;
    assert_eq!(status, 403);
    let (status, _) = exchange(
        http,
        &format!("HEAD {} HTTP/1.0\r\n\r\n", signed(PLAY, t + 60)),
    )
    .await;
    assert_eq!(status, 200);

    // the routed path: a play after another request on a kept-alive connection
    let mut socket = TcpStream::connect(http).await.unwrap();
    let mut buf = Vec::new();
    let (status, head) = get_kept_alive(&mut socket, &mut buf, "/api/streams").await;
    assert_eq!(status, 200);
    read_body(&mut socket, &mut buf, content_length(&head)).await;
    let (status, head) = get_kept_alive(&mut socket, &mut buf, PLAY).await;
    assert_eq!(status, 403, "{head}");
    let body = read_body(&mut socket, &mut buf, content_length(&head)).await;
    assert!(String::from_utf8_lossy(&body).contains("expires is missing"));
    let (status, head) = get_kept_alive(&mut socket, &mut buf, &signed(PLAY, t + 60)).await;
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("video/x-flv"), "{head}");

    // WHEP: unsigned 403 before anything else; signed, the offer is looked at (and this
    // one is no SDP)
    let whep = "/whep/live/156987000796_1";
    let post = |path: &str| {
        format!(
            "POST {path} HTTP/1.0\r\nContent-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n"
        )
    };
    let (status, body) = exchange(http, &post(whep)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("signed URL"), "{body}");
    let (status, body) = exchange(http, &post(&signed(whep, t + 60))).await;
    assert_eq!(status, 400, "past the signature check: {body}");
    gateway.stop().await;
}

#[tokio::test]
async fn without_a_play_secret_plays_stay_open() {
    let gateway = Gateway::start(&[]).await;
    let (_device, _) = gateway.device_holding_capture().await;
    assert_eq!(play_status(gateway.addrs.http, PLAY).await, "HTTP/1.0 200");
    gateway.stop().await;
}

#[tokio::test]
async fn ok_replies_carry_signed_urls_and_retained_status_unsigned_ones() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let gateway = Gateway::start(&[
        ("JTGW__MQTT__EMBEDDED_LISTEN", &listen),
        ("JTGW__HTTP__PLAY_SECRET", SECRET),
        ("JTGW__HTTP__PLAY_TTL", "10m"),
    ])
    .await;
    let mut backend = TestClient::connect(port, &["jt1078/client/#", "jt1078/status/#"]).await;
    wait_online(&mut backend).await;
    let (_device, _) = gateway.device_holding_capture().await;
    backend
        .publish(
            "jt1078/gateway/156987000796/SUBSCRIBE",
            r#"{"seqid":"sig1","client_id":"backend-1","channel":1}"#,
        )
        .await;
    let ok = backend
        .expect("OK", WAIT, is("jt1078/client/sig1/OK"))
        .await
        .json();
    let url = ok["urls"]["flv"].as_str().unwrap().to_owned();
    let path = url.split_once("://").unwrap().1;
    let path = &path[path.find('/').unwrap()..];
    assert!(path.starts_with(&format!("{PLAY}?expires=")), "{url}");
    let expires: u64 = path
        .split_once("expires=")
        .unwrap()
        .1
        .split('&')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let t = now();
    assert!(
        (t + 590..=t + 601).contains(&expires),
        "play_ttl 10m: {expires} vs {t}"
    );
    assert_eq!(play_status(gateway.addrs.http, path).await, "HTTP/1.0 200");
    let status = backend
        .expect("retained status", WAIT, |r| {
            r.topic == "jt1078/status/stream/156987000796/1" && r.json()["live"] == true
        })
        .await
        .json();
    let unsigned = status["urls"]["flv"].as_str().unwrap();
    assert!(
        unsigned.ends_with(PLAY),
        "no signature in a retained message: {unsigned}"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn an_mqtt_viewer_or_admin_logs_into_the_api_with_basic_and_other_roles_do_not() {
    use base64::Engine;
    let tmp = TempDir::new("api-logins");
    let file = tmp.path("gateway.toml");
    let mut toml = String::from("[mqtt]\n");
    for (name, role) in [("ops", "admin"), ("wall", "viewer"), ("fleet", "backend")] {
        let hash = jt1078_gateway::cli::hash_password(&format!("{name}-pw")).unwrap();
        toml += &format!(
            "[[mqtt.users]]\nname = {name:?}\npassword_hash = {hash:?}\nrole = {role:?}\n"
        );
    }
    std::fs::write(&file, toml).unwrap();
    // a remote client behind a trusted proxy, no API token: Basic logins of MQTT users
    let gateway = Gateway::start_from(
        Some(&file),
        &[("JTGW__HTTP__TRUSTED_PROXIES", "127.0.0.0/8")],
    )
    .await;
    let http = gateway.addrs.http;
    let get = |login: &str| {
        let basic = base64::engine::general_purpose::STANDARD.encode(login);
        format!(
            "GET /api/streams HTTP/1.0\r\nX-Forwarded-For: 203.0.113.9\r\n\
             Authorization: Basic {basic}\r\n\r\n"
        )
    };
    for login in ["ops:ops-pw", "wall:wall-pw"] {
        let (status, body) = exchange(http, &get(login)).await;
        assert_eq!((status, body.as_str()), (200, "[]"), "{login}");
    }
    let (status, body) = exchange(http, &get("fleet:fleet-pw")).await;
    assert_eq!(status, 403, "a backend is not an API user: {body}");
    assert!(body.contains("viewer or admin"), "{body}");
    let (status, body) = exchange(http, &get("ops:wrong")).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("wrong user or password"), "{body}");
    // without a login the remote client is still refused, and told it may log in
    let (status, _) = exchange(
        http,
        "GET /api/streams HTTP/1.0\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n",
    )
    .await;
    assert_eq!(status, 403);
    gateway.stop().await;
}

#[tokio::test]
async fn the_api_answers_loopback_only_without_a_token_and_the_bearer_with_one() {
    // a trusted proxy on loopback forwards a remote client: the API sees the client
    let gateway = Gateway::start(&[("JTGW__HTTP__TRUSTED_PROXIES", "127.0.0.0/8")]).await;
    let http = gateway.addrs.http;
    for path in ["/api/streams", "/api/bridge", "/api/webrtc"] {
        let (status, _) = exchange(http, &format!("GET {path} HTTP/1.0\r\n\r\n")).await;
        assert_eq!(status, 200, "{path} from loopback");
        let (status, body) = exchange(
            http,
            &format!("GET {path} HTTP/1.0\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 403, "{path} from a remote client");
        assert!(
            body.contains("loopback") && body.contains("http.api_token"),
            "{body}"
        );
    }
    gateway.stop().await;

    let gateway = Gateway::start(&[("JTGW__HTTP__API_TOKEN", "api-t0ken")]).await;
    let http = gateway.addrs.http;
    let (status, body) = exchange(http, "GET /api/streams HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Bearer"), "{body}");
    let (status, _) = exchange(
        http,
        "GET /api/streams HTTP/1.0\r\nAuthorization: Bearer wrong\r\n\r\n",
    )
    .await;
    assert_eq!(status, 403);
    let (status, body) = exchange(
        http,
        "GET /api/streams HTTP/1.0\r\nAuthorization: Bearer api-t0ken\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, "[]");
    // the SRS hooks keep their own guard (bridge.hook_allow): loopback, no token needed
    let (status, body) = common::bridge::http_post(http, "/api/v1/streams", "{}").await;
    assert_eq!(
        status, 400,
        "the hook's own answer (not the API guard's): {body}"
    );
    gateway.stop().await;
}

/// Statuses of `count` cold viewers (devices that never connect) sent at once from this
/// host, the i-th with `X-Forwarded-For: 198.51.100.{i}`.
async fn cold_viewers(http: SocketAddr, count: usize) -> Vec<u16> {
    let viewers: Vec<_> = (0..count)
        .map(|i| {
            let head = format!(
                "GET /live/1390000{i:04}_1.flv HTTP/1.0\r\nX-Forwarded-For: 198.51.100.{i}\r\n\r\n"
            );
            tokio::spawn(async move { exchange(http, &head).await.0 })
        })
        .collect();
    let mut statuses = Vec::new();
    for viewer in viewers {
        statuses.push(viewer.await.unwrap());
    }
    statuses
}

#[tokio::test]
async fn viewers_behind_a_trusted_proxy_are_limited_each_and_forged_headers_count_for_nothing() {
    let limits = [
        ("JTGW__HTTP__COLD_PULLS_PER_MINUTE", "10"),
        ("JTGW__HTTP__FLV_WAIT_TIMEOUT", "1s"),
    ];
    // through a trusted proxy (this host): each viewer is its own address
    let mut env = limits.to_vec();
    env.push(("JTGW__HTTP__TRUSTED_PROXIES", "127.0.0.1/32, ::1/128"));
    let gateway = Gateway::start(&env).await;
    let statuses = cold_viewers(gateway.addrs.http, 100).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        0,
        "none refused: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 404),
        "the devices never came: {statuses:?}"
    );
    gateway.stop().await;

    // the same headers from an address that is not trusted: the limit is the sender's
    let mut env = limits.to_vec();
    env.push(("JTGW__HTTP__TRUSTED_PROXIES", "10.0.0.0/8"));
    let gateway = Gateway::start(&env).await;
    let statuses = cold_viewers(gateway.addrs.http, 100).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 404).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        90,
        "{statuses:?}"
    );
    gateway.stop().await;
}

/// Runs `openssl` with `args` in `dir`; fails the test if it fails.
async fn openssl(dir: &Path, args: &[&str]) {
    let output = tokio::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .await
        .expect("openssl runs");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA `{name}-ca.pem` and a certificate for `localhost` and 127.0.0.1 it signed,
/// `{name}-cert.pem` with its key `{name}-key.pem`, made in `dir`.
async fn make_ca_and_cert(dir: &Path, name: &str) {
    let ca_key = format!("{name}-ca-key.pem");
    let ca = format!("{name}-ca.pem");
    let key = format!("{name}-key.pem");
    let csr = format!("{name}.csr");
    let cert = format!("{name}-cert.pem");
    let ext = format!("{name}.ext");
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &ca_key,
        ],
    )
    .await;
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            &ca_key,
            "-subj",
            &format!("/CN={name} test CA"),
            "-days",
            "2",
            "-out",
            &ca,
        ],
    )
    .await;
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &key,
        ],
    )
    .await;
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &key,
            "-subj",
            "/CN=localhost",
            "-out",
            &csr,
        ],
    )
    .await;
    std::fs::write(
        dir.join(&ext),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    )
    .await;
}

/// `curl` of `https://localhost:{port}{path}` trusting `ca`: exit code and stdout.
async fn curl(port: u16, path: &str, ca: &Path, extra: &[&str]) -> (i32, String) {
    let url = format!("https://localhost:{port}{path}");
    let output = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--resolve",
            &format!("localhost:{port}:127.0.0.1"),
            "--cacert",
        ])
        .arg(ca)
        .args(extra)
        .arg(&url)
        .output()
        .await
        .expect("curl runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).to_string(),
    )
}

#[tokio::test]
async fn https_serves_plays_and_the_api_and_takes_a_new_certificate_on_sighup() {
    let tmp = TempDir::new("https");
    make_ca_and_cert(&tmp.0, "first").await;
    make_ca_and_cert(&tmp.0, "second").await;
    let (cert, key) = (tmp.path("served-cert.pem"), tmp.path("served-key.pem"));
    std::fs::copy(tmp.path("first-cert.pem"), &cert).unwrap();
    std::fs::copy(tmp.path("first-key.pem"), &key).unwrap();
    let gateway = Gateway::start(&[
        ("JTGW__HTTP__TLS_CERT", cert.to_str().unwrap()),
        ("JTGW__HTTP__TLS_KEY", key.to_str().unwrap()),
    ])
    .await;
    let port = gateway.addrs.http.port();
    let (first_ca, second_ca) = (tmp.path("first-ca.pem"), tmp.path("second-ca.pem"));

    let (code, body) = curl(port, "/api/streams", &first_ca, &[]).await;
    assert_eq!((code, body.as_str()), (0, "[]"));
    // plain HTTP on the HTTPS port is no request
    let (status, _) = tokio::time::timeout(WAIT, async {
        let mut socket = TcpStream::connect(gateway.addrs.http).await.unwrap();
        socket
            .write_all(b"GET /api/streams HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = socket.read_to_end(&mut answer).await;
        (answer.starts_with(b"HTTP/"), answer)
    })
    .await
    .unwrap();
    assert!(!status, "no HTTP answer to plain text on the TLS port");

    // a play over HTTPS: the FLV until the device leaves
    let (device, _) = gateway.device_holding_capture().await;
    let flv = tmp.path("played.flv");
    let out = flv.to_str().unwrap().to_owned();
    let play = tokio::spawn({
        let ca = first_ca.clone();
        async move { curl(port, PLAY, &ca, &["-o", &out, "-w", "%{http_code}"]).await }
    });
    gateway
        .wait_for_stream("the HTTPS viewer", |s| s.viewers >= 1)
        .await;
    drop(device);
    let (code, status) = tokio::time::timeout(WAIT, play).await.unwrap().unwrap();
    assert_eq!((code, status.as_str()), (0, "200"));
    let tags = flv_tags(&std::fs::read(&flv).unwrap());
    assert!(tags.iter().any(|t| t.tag_type == 9), "video over HTTPS");

    // the certificate is renewed on disk: served after SIGHUP, without a restart
    let mut reloads = gateway.tls_reloads.clone();
    std::fs::copy(tmp.path("second-cert.pem"), &cert).unwrap();
    std::fs::copy(tmp.path("second-key.pem"), &key).unwrap();
    let (code, _) = curl(port, "/api/streams", &first_ca, &[]).await;
    assert_eq!(code, 0, "the old certificate until the signal");
    hangup().await;
    tokio::time::timeout(WAIT, reloads.changed())
        .await
        .expect("a reload after SIGHUP")
        .unwrap();
    let (code, body) = curl(port, "/api/streams", &second_ca, &[]).await;
    assert_eq!((code, body.as_str()), (0, "[]"), "the new certificate");
    let (code, _) = curl(port, "/api/streams", &first_ca, &[]).await;
    assert_eq!(
        code, 60,
        "the old CA no longer verifies (curl: peer certificate)"
    );

    // a broken file is refused and the certificate in use stays
    std::fs::write(&cert, "not a certificate").unwrap();
    hangup().await;
    tokio::time::timeout(WAIT, reloads.changed())
        .await
        .expect("a reload attempt after SIGHUP")
        .unwrap();
    let (code, _) = curl(port, "/api/streams", &second_ca, &[]).await;
    assert_eq!(code, 0, "still the second certificate");
    gateway.stop().await;
}

/// Sends SIGHUP to this process (the gateway under test handles it).
async fn hangup() {
    let status = tokio::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn https_settings_that_do_not_load_fail_start_with_the_key() {
    let tmp = TempDir::new("https-bad");
    std::fs::write(tmp.path("cert.pem"), "garbage").unwrap();
    let settings = jt1078_gateway::config::Settings::load_from(
        None,
        Some(
            [
                ("JTGW__HTTP__LISTEN", "127.0.0.1:0"),
                ("JTGW__INGEST__LIVE_LISTEN", "127.0.0.1:0"),
                ("JTGW__INGEST__PLAYBACK_LISTEN", "127.0.0.1:0"),
                ("JTGW__WEBRTC__ENABLED", "false"),
                (
                    "JTGW__HTTP__TLS_CERT",
                    tmp.path("cert.pem").to_str().unwrap(),
                ),
                ("JTGW__HTTP__TLS_KEY", tmp.path("key.pem").to_str().unwrap()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        ),
    )
    .unwrap();
    let error = format!(
        "{:#}",
        jt1078_gateway::app::App::bind(settings).await.unwrap_err()
    );
    assert!(error.contains("http.tls_cert"), "{error}");
}

/// Runs the gateway binary with `args` and the `JTGW__…` variables `env`: exit status,
/// stdout, stderr.
async fn gateway_binary(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_jt1078-gateway"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[tokio::test]
async fn print_config_shows_no_secret() {
    let secrets = [
        ("JTGW__MQTT__PASSWORD", "mqtt-pa55word"),
        ("JTGW__BRIDGE__HOOK_TOKEN", "hook-t0ken"),
        ("JTGW__WEBRTC__WHEP_TOKEN", "whep-t0ken"),
        (
            "JTGW__WEBRTC__TURN_SERVERS",
            "turnuser:turn-cr3dential@turn.example.net:3478",
        ),
        ("JTGW__HTTP__PLAY_SECRET", "play-s3cret"),
        ("JTGW__HTTP__API_TOKEN", "api-t0ken"),
    ];
    let (ok, printed, stderr) = gateway_binary(&["print-config"], &secrets).await;
    assert!(ok, "{stderr}");
    for value in [
        "mqtt-pa55word",
        "hook-t0ken",
        "whep-t0ken",
        "turn-cr3dential",
        "play-s3cret",
        "api-t0ken",
    ] {
        assert!(!printed.contains(value), "{value} printed:\n{printed}");
    }
    let config: serde_json::Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(config["mqtt"]["password"], "<redacted>");
    assert_eq!(config["bridge"]["hook_token"], "<redacted>");
    assert_eq!(config["webrtc"]["whep_token"], "<redacted>");
    assert_eq!(
        config["webrtc"]["turn_servers"][0]["credential"],
        "<redacted>"
    );
    assert_eq!(config["webrtc"]["turn_servers"][0]["username"], "turnuser");
    assert_eq!(config["http"]["play_secret"], "<redacted>");
    assert_eq!(config["http"]["api_token"], "<redacted>");
    // unset secrets show as unset
    let (_, printed, _) = gateway_binary(&["print-config"], &[]).await;
    let config: serde_json::Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(config["http"]["play_secret"], "");
}

#[tokio::test]
async fn sign_url_prints_a_url_the_gateway_plays() {
    let gateway = Gateway::start(&[("JTGW__HTTP__PLAY_SECRET", SECRET)]).await;
    let (_device, _) = gateway.device_holding_capture().await;
    let listen = gateway.addrs.http.to_string();
    let env = [
        ("JTGW__HTTP__PLAY_SECRET", SECRET),
        ("JTGW__HTTP__LISTEN", listen.as_str()),
    ];
    let (ok, url, stderr) = gateway_binary(&["sign-url", PLAY, "--ttl", "5m"], &env).await;
    assert!(ok, "{stderr}");
    let url = url.trim();
    let prefix = format!(
        "http://127.0.0.1:{}{PLAY}?expires=",
        gateway.addrs.http.port()
    );
    assert!(url.starts_with(&prefix), "{url}");
    let path = &url[url.find(PLAY).unwrap()..];
    assert_eq!(play_status(gateway.addrs.http, path).await, "HTTP/1.0 200");
    // a whole URL is signed over its path
    let (ok, other, _) =
        gateway_binary(&["sign-url", "http://srs.example:8080/live/x_1.flv"], &env).await;
    assert!(ok);
    assert!(
        other.starts_with("http://srs.example:8080/live/x_1.flv?expires="),
        "{other}"
    );
    // nothing to sign without a secret; a bad path is refused
    let (ok, _, stderr) = gateway_binary(&["sign-url", PLAY], &[]).await;
    assert!(!ok && stderr.contains("http.play_secret"), "{stderr}");
    let (ok, _, stderr) = gateway_binary(&["sign-url", "live/x.flv"], &env).await;
    assert!(!ok && stderr.contains("expected a path"), "{stderr}");
    gateway.stop().await;
}
