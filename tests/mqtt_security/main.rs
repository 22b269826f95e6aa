//! MQTT security (issue 23, items 1–3 and 9): every role does what it may and is refused
//! what it may not, on the embedded broker over TCP, WebSocket, TLS and secure WebSocket,
//! and on mosquitto with the shipped `broker/mosquitto.conf` and `broker/acl` (the same
//! checks). Logins are refused with their CONNACK code; anonymous clients are let in from
//! loopback only by default; a guesser is slowed down while everyone else is served; a
//! certificate replaced on disk is used after SIGHUP.
//!
//! The clients are real: `mosquitto_pub`/`mosquitto_sub`, rumqttc, and a small client
//! speaking rumqttc's packet codec over any transport (so that each CONNACK and SUBACK
//! code can be asserted).

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "in a test a failure is a test failure"
)]

#[path = "../common/mod.rs"]
mod common;
mod harness;
mod roles;

use std::sync::Arc;
use std::time::Duration;

use common::{TempDir, free_port};
use harness::*;
use jt1078_gateway::media::DeviceId;
use roles::roles_do_what_they_may_and_nothing_else;
use rumqttc::mqttbytes::v4::{ConnectReturnCode, SubscribeReasonCode};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_rustls::rustls;

#[tokio::test]
async fn embedded_broker_enforces_the_roles_over_tcp_websocket_tls_and_wss() {
    let target = embedded(&[]).await;
    for transport in [
        Transport::Tcp,
        Transport::Ws,
        Transport::Tls,
        Transport::Wss,
    ] {
        roles_do_what_they_may_and_nothing_else(&target, transport).await;
    }
    // anonymous from loopback (the default): backend rights
    let (code, client) = Client::connect(&target, Transport::Tcp, "anon", None).await;
    assert_eq!(code, ConnectReturnCode::Success);
    let mut client = client.unwrap();
    assert!(granted(client.subscribe("jt1078/client/#").await));
    assert_eq!(
        client.subscribe("jt1078/#").await,
        SubscribeReasonCode::Failure
    );
    target.gateway.stop().await;
}

#[tokio::test]
async fn shipped_mosquitto_files_enforce_the_same_roles() {
    let target = mosquitto().await;
    for transport in [Transport::Tcp, Transport::Ws] {
        roles_do_what_they_may_and_nothing_else(&target, transport).await;
    }
    let (code, _) = Client::connect(&target, Transport::Tcp, "anon", None).await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    target.gateway.stop().await;
}

#[tokio::test]
async fn anonymous_clients_are_refused_when_allow_anonymous_is_false() {
    let target = embedded(&[("JTGW__MQTT__ALLOW_ANONYMOUS", "false")]).await;
    for transport in [Transport::Tcp, Transport::Ws] {
        let (code, _) = Client::connect(&target, transport, "anon", None).await;
        assert_eq!(code, ConnectReturnCode::NotAuthorized, "{transport:?}");
    }
    // the gateway's own connections still work: a request is answered
    let (_, backend) = Client::connect(
        &target,
        Transport::Tcp,
        "b",
        Some(("backend", "backend-password")),
    )
    .await;
    let mut backend = backend.unwrap();
    assert!(granted(backend.subscribe("jt1078/client/#").await));
    backend
        .publish(
            &format!("jt1078/gateway/{DEVICE}/SUBSCRIBE"),
            r#"{"seqid":"a1","client_id":"b","channel":1}"#,
        )
        .await;
    backend.expect("jt1078/client/a1/OK").await;
    target.gateway.stop().await;
}

/// `mosquitto_pub` / `mosquitto_sub` with `-u/-P`, over TCP and TLS (`--cafile`), as
/// docs/mqtt.md shows them.
#[tokio::test]
async fn mosquitto_clients_log_in_with_user_and_password_over_tcp_and_tls() {
    let target = embedded(&[]).await;
    let ca = target.dir.path("ca.pem");
    std::fs::write(&ca, target.ca_pem.as_deref().unwrap()).unwrap();
    let ca = ca.display().to_string();
    let tcp = target.tcp.to_string();
    let tls = target.tls.unwrap().to_string();
    for (port, tls_args) in [(&tcp, vec![]), (&tls, vec!["--cafile", ca.as_str()])] {
        let sub = tokio::process::Command::new("mosquitto_sub")
            .args([
                "-h",
                "localhost",
                "-p",
                port,
                "-u",
                "backend",
                "-P",
                "backend-password",
            ])
            .args(&tls_args)
            .args(["-t", "jt1078/client/#", "-C", "1", "-W", "10", "-v"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("mosquitto_sub runs");
        // published until the subscriber is there to see one (it may not be yet)
        let seqid = format!("m{port}");
        let body = format!(r#"{{"seqid":"{seqid}","client_id":"m","channel":1}}"#);
        let topic = format!("jt1078/gateway/{DEVICE}/SUBSCRIBE");
        let mut output = Box::pin(sub.wait_with_output());
        let out = loop {
            let status = tokio::process::Command::new("mosquitto_pub")
                .args([
                    "-h",
                    "localhost",
                    "-p",
                    port,
                    "-u",
                    "backend",
                    "-P",
                    "backend-password",
                ])
                .args(&tls_args)
                .args(["-q", "1", "-t", &topic, "-m", &body])
                .status()
                .await
                .unwrap();
            assert!(status.success(), "mosquitto_pub on {port}");
            if let Ok(out) = timeout(Duration::from_millis(500), &mut output).await {
                break out.unwrap();
            }
        };
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with(&format!("jt1078/client/{seqid}/OK")),
            "{text}"
        );
        // a wrong password: mosquitto_pub fails with the broker's reason
        let out = tokio::process::Command::new("mosquitto_pub")
            .args([
                "-h",
                "localhost",
                "-p",
                port,
                "-u",
                "backend",
                "-P",
                "wrong",
            ])
            .args(&tls_args)
            .args(["-t", &topic, "-m", "{}"])
            .output()
            .await
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(err.contains("bad user name or password"), "{err}");
    }
    target.gateway.stop().await;
}

/// rumqttc as a device over TLS, with the simulator's derivation of the password.
#[tokio::test]
async fn rumqttc_device_logs_in_over_tls_and_gets_its_commands_only() {
    let target = embedded(&[]).await;
    let (user, password) = device_login(DEVICE);
    let mut options = rumqttc::MqttOptions::new("dev-tls", "localhost", target.tls.unwrap());
    options.set_credentials(user, password);
    let connector_config = {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(target.ca_pem.as_deref().unwrap().as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth()
    };
    options.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(Arc::new(connector_config)),
    ));
    let (client, mut events) = rumqttc::AsyncClient::new(options, 10);
    let mut subacks = Vec::new();
    let deadline = Instant::now() + WAIT;
    while subacks.len() < 2 {
        let event = timeout(
            deadline.saturating_duration_since(Instant::now()),
            events.poll(),
        )
        .await
        .expect("events in time")
        .expect("TLS connection");
        match event {
            rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)) => {
                client
                    .subscribe(
                        format!("jt1078/device/{DEVICE}/#"),
                        rumqttc::QoS::AtLeastOnce,
                    )
                    .await
                    .unwrap();
                client
                    .subscribe(
                        format!("jt1078/device/{OTHER}/#"),
                        rumqttc::QoS::AtLeastOnce,
                    )
                    .await
                    .unwrap();
            }
            rumqttc::Event::Incoming(rumqttc::Packet::SubAck(ack)) => {
                subacks.push(ack.return_codes[0])
            }
            _ => {}
        }
    }
    assert_eq!(
        subacks,
        [
            rumqttc::SubscribeReasonCode::Success(rumqttc::QoS::AtLeastOnce),
            rumqttc::SubscribeReasonCode::Failure
        ]
    );
    target.gateway.stop().await;
}

/// A certificate replaced on disk is served to new connections after SIGHUP.
#[tokio::test]
async fn a_certificate_replaced_on_disk_is_used_after_sighup() {
    let mut target = embedded(&[]).await;
    // the first certificate works
    let (code, _) = Client::connect(&target, Transport::Tls, "t0", None).await;
    assert_eq!(code, ConnectReturnCode::Success);
    // a new CA and certificate over the same files
    let renewed = make_pki(&target.dir, "renewed");
    std::fs::copy(&renewed.cert, target.dir.path("server.crt")).unwrap();
    std::fs::copy(&renewed.key, target.dir.path("server.key")).unwrap();
    target.ca_pem = Some(renewed.ca_pem.clone());
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // new connections trust only the new CA; they succeed once the reload is done
    let connector = tls_connector(&renewed.ca_pem);
    let deadline = Instant::now() + WAIT;
    loop {
        let tcp = TcpStream::connect(("127.0.0.1", target.tls.unwrap()))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        if connector.connect(name, tcp).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not served"
        );
        tokio::task::yield_now().await;
    }
    let (code, _) = Client::connect(&target, Transport::Wss, "t1", None).await;
    assert_eq!(code, ConnectReturnCode::Success);
    target.gateway.stop().await;
}

/// 1,000 wrong passwords for one device from one address (127.0.0.2, 16 at a time) take
/// at least 30 s, while a backend on 127.0.0.1, and another device on 127.0.0.2, keep
/// logging in at once (and the backend being answered).
#[tokio::test]
async fn a_thousand_wrong_passwords_take_thirty_seconds_and_others_are_served() {
    let target = embedded(&[]).await;
    let guesser: std::net::IpAddr = [127, 0, 0, 2].into();
    let port = target.tcp;
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0usize);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (next, progress_tx) = (Arc::clone(&next), progress_tx.clone());
        workers.spawn(async move {
            let mut codes = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 1000 {
                let password = format!("{:064x}", codes.len());
                let (code, _) =
                    raw_connect(guesser, port, DEVICE.as_bytes(), password.as_bytes()).await;
                codes.push(code);
                progress_tx.send_modify(|n| *n += 1);
            }
            codes
        });
    }
    // others are served while the guesser waits: at 100, 500 and 900 attempts
    for at in [100, 500, 900] {
        progress.wait_for(|n| *n >= at).await.unwrap();
        let asked = Instant::now();
        let (code, backend) = Client::connect(
            &target,
            Transport::Tcp,
            &format!("served-{at}"),
            Some(("backend", "backend-password")),
        )
        .await;
        assert_eq!(code, ConnectReturnCode::Success);
        let mut backend = backend.unwrap();
        assert!(granted(backend.subscribe("jt1078/client/#").await));
        let seqid = format!("bf{at}");
        backend
            .publish(
                &format!("jt1078/gateway/{DEVICE}/SUBSCRIBE"),
                &format!(r#"{{"seqid":"{seqid}","client_id":"b","channel":1}}"#),
            )
            .await;
        backend.expect(&format!("jt1078/client/{seqid}/OK")).await;
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "a backend waited {:?} during the guessing",
            asked.elapsed()
        );
        // another device behind the guesser's address (one carrier NAT) is not held up
        let asked = Instant::now();
        let (user, password) = device_login(OTHER);
        let (code, _) = raw_connect(guesser, port, user.as_bytes(), password.as_bytes()).await;
        assert_eq!(code, Some(0));
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "a device behind the guesser's address waited {:?}",
            asked.elapsed()
        );
    }
    let mut codes = Vec::new();
    while let Some(done) = workers.join_next().await {
        codes.extend(done.unwrap());
    }
    let took = started.elapsed();
    assert_eq!(codes.len(), 1000);
    assert!(
        codes.iter().all(|c| *c == Some(4)),
        "every guess is answered 'bad user name or password': {:?}",
        codes
            .iter()
            .filter(|c| **c != Some(4))
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(
        took >= Duration::from_secs(30),
        "1,000 guesses took only {took:?}"
    );
    target.gateway.stop().await;
}

/// Any bytes as user name, password or topic: refused or accepted, and the broker keeps
/// serving.
#[tokio::test]
async fn arbitrary_logins_and_topics_are_decided_without_harm() {
    use proptest::strategy::{Strategy, ValueTree};
    let target = embedded(&[("JTGW__MQTT__ALLOW_ANONYMOUS", "true")]).await;
    let bytes = || proptest::collection::vec(proptest::num::u8::ANY, 0..80);
    let strategy = (bytes(), bytes(), bytes());
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let loopback: std::net::IpAddr = [127, 0, 0, 1].into();
    for case in 0..64 {
        let (mut user, password, topic) = strategy.new_tree(&mut runner).unwrap().current();
        if case % 4 == 0 {
            // also well-formed device names with a garbage password
            user = DEVICE.as_bytes().to_vec();
        }
        let (code, mut stream) = raw_connect(loopback, target.tcp, &user, &password).await;
        assert!(
            matches!(code, None | Some(0 | 4 | 5)),
            "case {case}: CONNACK {code:?}"
        );
        if code == Some(0) {
            // a SUBSCRIBE and a PUBLISH with the arbitrary topic
            let mut sub = vec![0, 1];
            sub.extend_from_slice(&(topic.len() as u16).to_be_bytes());
            sub.extend_from_slice(&topic);
            sub.push(1);
            let mut packet = vec![0x82];
            push_length(&mut packet, sub.len());
            packet.extend_from_slice(&sub);
            let mut publish = (topic.len() as u16).to_be_bytes().to_vec();
            publish.extend_from_slice(&topic);
            publish.extend_from_slice(b"{}");
            packet.push(0x30);
            push_length(&mut packet, publish.len());
            packet.extend_from_slice(&publish);
            let _ = stream.write_all(&packet).await;
        }
    }
    // still serving, and still deciding
    let (code, client) = Client::connect(
        &target,
        Transport::Tcp,
        "after",
        Some(("backend", "backend-password")),
    )
    .await;
    assert_eq!(code, ConnectReturnCode::Success);
    assert!(granted(client.unwrap().subscribe("jt1078/client/#").await));
    let (code, _) =
        Client::connect(&target, Transport::Tcp, "after2", Some(("backend", "x"))).await;
    assert_eq!(code, ConnectReturnCode::BadUserNamePassword);
    target.gateway.stop().await;
}

/// What a login costs, printed for docs/benchmarks.md: a user's first login (one argon2id
/// verification), the same user again (the verified-credential cache), a device (HMAC)
/// and an anonymous client, each a whole TCP connection, CONNECT and CONNACK.
#[tokio::test]
async fn login_costs() {
    let target = embedded(&[]).await;
    let device = device_login(DEVICE);
    let logins: [(&str, Option<(&str, &str)>); 4] = [
        (
            "user, first login (argon2id)",
            Some(("viewer", "viewer-password")),
        ),
        ("user again (cached)", Some(("viewer", "viewer-password"))),
        (
            "device (HMAC)",
            Some((device.0.as_str(), device.1.as_str())),
        ),
        ("anonymous from loopback", None),
    ];
    for (i, (what, login)) in logins.into_iter().enumerate() {
        let runs = if i == 0 { 1 } else { 200 };
        let started = Instant::now();
        for n in 0..runs {
            let (code, _) =
                Client::connect(&target, Transport::Tcp, &format!("cost-{i}-{n}"), login).await;
            assert_eq!(code, ConnectReturnCode::Success, "{what}");
        }
        eprintln!("{what}: {:?} per login", started.elapsed() / runs);
    }
    target.gateway.stop().await;
}

/// The simulator logs in like a device (`--device-secret`): with anonymous clients refused,
/// two simulated devices each get their own REQPULL and push.
#[tokio::test]
async fn simulated_devices_log_in_with_the_device_secret_and_push() {
    use jt1078_gateway::simulate::Pace;
    use jt1078_gateway::simulate::mqtt_device::{self, MqttDeviceOptions};
    let target = embedded(&[("JTGW__MQTT__ALLOW_ANONYMOUS", "false")]).await;
    let sample =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/sample-h264-g711a.jt1078");
    let options = MqttDeviceOptions {
        packets: Arc::new(jt1078_gateway::simulate::load_file(&sample).unwrap()),
        url: format!("mqtt://127.0.0.1:{}", target.tcp),
        topic_prefix: "jt1078".to_owned(),
        devices: vec![
            DeviceId::parse(DEVICES[0]).unwrap(),
            DeviceId::parse(DEVICES[1]).unwrap(),
        ],
        pace: Pace::Realtime,
        looping: true,
        device_secret: Some(SECRET.to_owned()),
        talk: false,
        talk_out: None,
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let devices = tokio::spawn(mqtt_device::run(options, cancel.clone()));
    let (_, backend) = Client::connect(
        &target,
        Transport::Tcp,
        "sim-backend",
        Some(("backend", "backend-password")),
    )
    .await;
    let mut backend = backend.unwrap();
    for filter in ["jt1078/client/#", "jt1078/gateway/+/HEART"] {
        assert!(granted(backend.subscribe(filter).await));
    }
    for (i, device) in DEVICES[..2].iter().enumerate() {
        // logged in and listening once it heartbeats
        backend
            .expect(&format!("jt1078/gateway/{device}/HEART"))
            .await;
        backend
            .publish(
                &format!("jt1078/gateway/{device}/SUBSCRIBE"),
                &format!(r#"{{"seqid":"sim{i}","client_id":"b","channel":1}}"#),
            )
            .await;
        backend.expect(&format!("jt1078/client/sim{i}/OK")).await;
        target
            .gateway
            .wait_for_stream(&format!("{device} live"), |s| {
                s.device == *device && s.video_codec.is_some()
            })
            .await;
    }
    cancel.cancel();
    devices.await.unwrap().unwrap();
    target.gateway.stop().await;
}

/// `mqtt.username` with the embedded broker must name an admin: the gateway's own
/// connections publish device commands and replies.
#[tokio::test]
async fn a_gateway_login_that_is_not_an_admin_fails_at_start_up() {
    let dir = TempDir::new("mqtt-security-username");
    let file = dir.path("gateway.toml");
    std::fs::write(
        &file,
        format!(
            "[mqtt]\n[[mqtt.users]]\nname = \"backend\"\npassword_hash = {:?}\nrole = \"backend\"\n",
            hash("backend-password")
        ),
    )
    .unwrap();
    for (password, expected) in [
        ("backend-password", "is not an admin"),
        ("wrong", "cannot log in to the embedded broker"),
    ] {
        let listen = [
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
        ];
        let env: std::collections::HashMap<String, String> = [
            ("JTGW__INGEST__LIVE_LISTEN", "127.0.0.1:0"),
            ("JTGW__INGEST__PLAYBACK_LISTEN", "127.0.0.1:0"),
            ("JTGW__HTTP__LISTEN", "127.0.0.1:0"),
            ("JTGW__WEBRTC__UDP_LISTEN", "127.0.0.1:0"),
            ("JTGW__MQTT__EMBEDDED_LISTEN", listen[0].as_str()),
            ("JTGW__MQTT__EMBEDDED_WS_LISTEN", listen[1].as_str()),
            ("JTGW__MQTT__USERNAME", "backend"),
            ("JTGW__MQTT__PASSWORD", password),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let settings = jt1078_gateway::config::Settings::load_from(Some(&file), Some(env)).unwrap();
        let app = jt1078_gateway::app::App::bind(settings).await.unwrap();
        let cancel = tokio_util::sync::CancellationToken::new();
        let result = timeout(WAIT, app.run(cancel.clone()))
            .await
            .expect("run returns");
        cancel.cancel();
        let error = format!("{:#}", result.unwrap_err());
        assert!(error.contains(expected), "{error}");
    }
}
