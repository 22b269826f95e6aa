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

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use common::mqtt::Mosquitto;
use common::{Gateway, TempDir, free_port};
use jt1078_gateway::control::auth::device_password;
use jt1078_gateway::media::DeviceId;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish, Subscribe, SubscribeReasonCode,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_rustls::rustls;

const WAIT: Duration = Duration::from_secs(10);
/// Each transport's device (a device is sent one REQPULL however many ask).
const DEVICES: [&str; 4] = ["13800138000", "13800138001", "13800138002", "13800138003"];
const DEVICE: &str = DEVICES[0];
const OTHER: &str = "13900000001";
const SECRET: &str = "test-device-secret";
const PASSWORDS: [(&str, &str, &str); 4] = [
    ("backend", "backend-password", "backend"),
    ("viewer", "viewer-password", "viewer"),
    ("admin", "admin-password", "admin"),
    ("jt1078-gateway", "gateway-password", "admin"),
];

/// How a client reaches the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Tcp,
    Ws,
    Tls,
    Wss,
}

/// A CA and a server certificate for `localhost` and 127.0.0.1, made for the test.
struct Pki {
    ca_pem: String,
    cert: PathBuf,
    key: PathBuf,
}

fn make_pki(dir: &TempDir, tag: &str) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("test CA {tag}"));
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let (cert_path, key_path) = (
        dir.path(&format!("{tag}.crt")),
        dir.path(&format!("{tag}.key")),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert: cert_path,
        key: key_path,
    }
}

/// The broker under test and how to reach it.
struct Target {
    name: &'static str,
    tcp: u16,
    ws: u16,
    tls: Option<u16>,
    wss: Option<u16>,
    ca_pem: Option<String>,
    /// The embedded broker answers "bad user name or password" (4) for wrong
    /// credentials; mosquitto answers "not authorized" (5).
    exact_codes: bool,
    gateway: Gateway,
    _mosquitto: Option<Mosquitto>,
    dir: TempDir,
}

fn hash(password: &str) -> String {
    jt1078_gateway::cli::hash_password(password).unwrap()
}

/// A gateway with its embedded broker: users of every role, the device secret, TLS.
async fn embedded(extra: &[(&str, &str)]) -> Target {
    let dir = TempDir::new("mqtt-security");
    let pki = make_pki(&dir, "server");
    let mut toml = String::from("[mqtt]\n");
    toml += &format!(
        "device_secret = {SECRET:?}\ntls_cert = {:?}\ntls_key = {:?}\n",
        pki.cert.display().to_string(),
        pki.key.display().to_string()
    );
    for (name, password, role) in PASSWORDS.iter().take(3) {
        toml += &format!(
            "[[mqtt.users]]\nname = {name:?}\npassword_hash = {:?}\nrole = {role:?}\n",
            hash(password)
        );
    }
    let file = dir.path("gateway.toml");
    std::fs::write(&file, toml).unwrap();
    let (tcp, ws, tls, wss) = (free_port(), free_port(), free_port(), free_port());
    let listens = [
        format!("127.0.0.1:{tcp}"),
        format!("127.0.0.1:{ws}"),
        format!("127.0.0.1:{tls}"),
        format!("127.0.0.1:{wss}"),
    ];
    let mut env = vec![
        ("JTGW__MQTT__EMBEDDED_LISTEN", listens[0].as_str()),
        ("JTGW__MQTT__EMBEDDED_WS_LISTEN", listens[1].as_str()),
        ("JTGW__MQTT__EMBEDDED_TLS_LISTEN", listens[2].as_str()),
        ("JTGW__MQTT__EMBEDDED_WSS_LISTEN", listens[3].as_str()),
    ];
    env.extend_from_slice(extra);
    let gateway = Gateway::start_from(Some(&file), &env).await;
    // the broker's listeners come up on threads of their own
    for port in [tcp, ws, tls, wss] {
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "the embedded broker did not listen"
            );
            tokio::task::yield_now().await;
        }
    }
    wait_online(tcp, Some(("admin", "admin-password"))).await;
    Target {
        name: "embedded",
        tcp,
        ws,
        tls: Some(tls),
        wss: Some(wss),
        ca_pem: Some(pki.ca_pem),
        exact_codes: true,
        gateway,
        _mosquitto: None,
        dir,
    }
}

/// mosquitto with the shipped configuration and ACL, a password file of the same users
/// (and of the two devices, with their HMAC passwords), and a gateway using it.
async fn mosquitto() -> Target {
    let devices: Vec<(String, String)> = DEVICES
        .iter()
        .chain([OTHER].iter())
        .map(|id| {
            let id = DeviceId::parse(id).unwrap();
            (
                id.as_str().to_owned(),
                device_password(SECRET.as_bytes(), &id),
            )
        })
        .collect();
    let mut logins: Vec<(&str, &str)> = PASSWORDS.iter().map(|(u, p, _)| (*u, *p)).collect();
    logins.extend(devices.iter().map(|(u, p)| (u.as_str(), p.as_str())));
    let broker = Mosquitto::start_secure(&logins).await;
    let url = broker.url();
    let gateway = Gateway::start(&[
        ("JTGW__MQTT__EMBEDDED", "false"),
        ("JTGW__MQTT__URL", url.as_str()),
        ("JTGW__MQTT__USERNAME", "jt1078-gateway"),
        ("JTGW__MQTT__PASSWORD", "gateway-password"),
    ])
    .await;
    wait_online(broker.port, Some(("admin", "admin-password"))).await;
    Target {
        name: "mosquitto",
        tcp: broker.port,
        ws: broker.ws_port,
        tls: None,
        wss: None,
        ca_pem: None,
        exact_codes: false,
        gateway,
        _mosquitto: Some(broker),
        dir: TempDir::new("mqtt-security-mosquitto"),
    }
}

/// Waits until the gateway announced itself online (it hears requests from then on).
async fn wait_online(port: u16, login: Option<(&str, &str)>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut connect = Connect::new(format!("online-{port}"));
    connect.keep_alive = 60;
    if let Some((user, password)) = login {
        connect.set_login(user, password);
    }
    let mut subscribe = Subscribe::new("jt1078/status/gateway/gw1", QoS::AtLeastOnce);
    subscribe.pkid = 1;
    let mut out = BytesMut::new();
    Packet::Connect(connect).write(&mut out, 1 << 20).unwrap();
    Packet::Subscribe(subscribe)
        .write(&mut out, 1 << 20)
        .unwrap();
    stream.write_all(&out).await.unwrap();
    let mut client = Client {
        io: Box::new(stream),
        buf: BytesMut::new(),
        pkid: 1,
        inbox: Vec::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let online = client.inbox.iter().any(|p| {
            p.topic == "jt1078/status/gateway/gw1"
                && String::from_utf8_lossy(&p.payload).contains("\"online\"")
        });
        if online {
            return;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        assert!(
            client.next(remaining).await.is_some(),
            "the gateway did not come online"
        );
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

fn tls_connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn websocket<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    port: u16,
) -> Box<dyn Io> {
    use async_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://localhost:{port}/mqtt")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    let (ws, _) = async_tungstenite::tokio::client_async(request, stream)
        .await
        .expect("WebSocket handshake");
    Box::new(ws_stream_tungstenite::WsStream::new(ws))
}

/// A byte stream to the broker over `transport`.
async fn open(target: &Target, transport: Transport) -> Box<dyn Io> {
    let port = match transport {
        Transport::Tcp => target.tcp,
        Transport::Ws => target.ws,
        Transport::Tls => target.tls.expect("a TLS listener"),
        Transport::Wss => target.wss.expect("a WSS listener"),
    };
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    match transport {
        Transport::Tcp => Box::new(tcp),
        Transport::Ws => websocket(tcp, port).await,
        Transport::Tls | Transport::Wss => {
            let connector = tls_connector(target.ca_pem.as_deref().unwrap());
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let tls = connector.connect(name, tcp).await.expect("TLS handshake");
            if transport == Transport::Tls {
                Box::new(tls)
            } else {
                websocket(tls, port).await
            }
        }
    }
}

/// A client speaking MQTT 3.1.1 with rumqttc's packet codec, one request at a time.
struct Client {
    io: Box<dyn Io>,
    buf: BytesMut,
    pkid: u16,
    /// Publishes received and not yet taken.
    inbox: Vec<Publish>,
}

impl Client {
    /// CONNECTs; the CONNACK code, and the client if it was accepted.
    async fn connect(
        target: &Target,
        transport: Transport,
        client_id: &str,
        login: Option<(&str, &str)>,
    ) -> (ConnectReturnCode, Option<Client>) {
        Self::connect_with_will(target, transport, client_id, login, None).await
    }

    /// CONNECTs with a last will on `will` (a topic).
    async fn connect_with_will(
        target: &Target,
        transport: Transport,
        client_id: &str,
        login: Option<(&str, &str)>,
        will: Option<&str>,
    ) -> (ConnectReturnCode, Option<Client>) {
        let io = open(target, transport).await;
        let mut client = Client {
            io,
            buf: BytesMut::new(),
            pkid: 0,
            inbox: Vec::new(),
        };
        let mut connect = Connect::new(client_id);
        connect.keep_alive = 60;
        if let Some((user, password)) = login {
            connect.set_login(user, password);
        }
        connect.last_will = will.map(|topic| {
            rumqttc::mqttbytes::v4::LastWill::new(topic, "{}", QoS::AtLeastOnce, false)
        });
        client.send(Packet::Connect(connect)).await;
        match client.next(WAIT).await {
            Some(Packet::ConnAck(ConnAck { code, .. })) => {
                let ok = code == ConnectReturnCode::Success;
                (code, ok.then_some(client))
            }
            other => panic!("{}: expected CONNACK, got {other:?}", target.name),
        }
    }

    async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out, 1 << 20).unwrap();
        self.io.write_all(&out).await.unwrap();
        self.io.flush().await.unwrap();
    }

    /// The next packet (publishes are acknowledged and kept in the inbox too), or `None`
    /// when the connection closes or `wait` passes.
    async fn next(&mut self, wait: Duration) -> Option<Packet> {
        let deadline = Instant::now() + wait;
        loop {
            match Packet::read(&mut self.buf, 1 << 20) {
                Ok(packet) => {
                    if let Packet::Publish(publish) = &packet {
                        if publish.qos == QoS::AtLeastOnce {
                            self.send(Packet::PubAck(PubAck::new(publish.pkid))).await;
                        }
                        self.inbox.push(publish.clone());
                    }
                    return Some(packet);
                }
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(error) => panic!("bad packet from the broker: {error:?}"),
            }
            let mut chunk = [0u8; 4096];
            let remaining = deadline.saturating_duration_since(Instant::now());
            match timeout(remaining, self.io.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    async fn subscribe(&mut self, filter: &str) -> SubscribeReasonCode {
        self.pkid += 1;
        let mut subscribe = Subscribe::new(filter, QoS::AtLeastOnce);
        subscribe.pkid = self.pkid;
        self.send(Packet::Subscribe(subscribe)).await;
        loop {
            match self.next(WAIT).await {
                Some(Packet::SubAck(ack)) if ack.pkid == self.pkid => return ack.return_codes[0],
                Some(_) => {}
                None => panic!("no SUBACK for {filter}"),
            }
        }
    }

    /// Publishes at QoS 1 and waits for the PUBACK (a refused publish is acknowledged
    /// too, and dropped).
    async fn publish(&mut self, topic: &str, payload: &str) {
        self.pkid += 1;
        let mut publish = Publish::new(topic, QoS::AtLeastOnce, payload.as_bytes().to_vec());
        publish.pkid = self.pkid;
        self.send(Packet::Publish(publish)).await;
        loop {
            match self.next(WAIT).await {
                Some(Packet::PubAck(ack)) if ack.pkid == self.pkid => return,
                Some(_) => {}
                None => panic!("no PUBACK for {topic}"),
            }
        }
    }

    /// Waits for a publish on `topic`; the publishes before it stay in the inbox.
    async fn expect(&mut self, topic: &str) -> Publish {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(at) = self.inbox.iter().position(|p| p.topic == topic) {
                return self.inbox.remove(at);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if self.next(remaining).await.is_none() {
                panic!(
                    "no publish on {topic}; got {:?}",
                    self.inbox.iter().map(|p| &p.topic).collect::<Vec<_>>()
                );
            }
        }
    }

    fn got(&self, topic: &str) -> bool {
        self.inbox.iter().any(|p| p.topic == topic)
    }
}

fn granted(code: SubscribeReasonCode) -> bool {
    matches!(code, SubscribeReasonCode::Success(_))
}

fn device_login(id: &str) -> (String, String) {
    (
        id.to_owned(),
        device_password(SECRET.as_bytes(), &DeviceId::parse(id).unwrap()),
    )
}

fn refused(target: &Target, code: ConnectReturnCode, exact: ConnectReturnCode) {
    if target.exact_codes {
        assert_eq!(code, exact, "{}", target.name);
    } else {
        assert!(
            matches!(
                code,
                ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized
            ),
            "{}: {code:?}",
            target.name
        );
    }
}

/// A SUBSCRIBE the client may not make: SUBACK failure from the embedded broker;
/// mosquitto 2.0 grants it and then delivers nothing the client may not read (checked on
/// the inboxes).
fn refused_filter(target: &Target, code: SubscribeReasonCode, what: &str) {
    if target.exact_codes {
        assert_eq!(code, SubscribeReasonCode::Failure, "{what}");
    }
}

/// The checks of item 2 over one transport.
async fn roles_do_what_they_may_and_nothing_else(target: &Target, transport: Transport) {
    let device_id = DEVICES[transport as usize];
    let tag = format!("{}-{transport:?}", target.name);
    let id = |who: &str| format!("{who}-{tag}-{}", std::process::id());
    // an admin sees everything that gets through
    let (code, watcher) = Client::connect(
        target,
        transport,
        &id("watch"),
        Some(("admin", "admin-password")),
    )
    .await;
    assert_eq!(code, ConnectReturnCode::Success, "{tag}: admin");
    let mut watcher = watcher.unwrap();
    assert!(
        granted(watcher.subscribe("jt1078/#").await),
        "{tag}: admin #"
    );

    // device: its own commands, its own heartbeat; nothing else
    let (user, password) = device_login(device_id);
    let (code, device) =
        Client::connect(target, transport, &id("dev"), Some((&user, &password))).await;
    assert_eq!(code, ConnectReturnCode::Success, "{tag}: device");
    let mut device = device.unwrap();
    assert!(
        granted(
            device
                .subscribe(&format!("jt1078/device/{device_id}/#"))
                .await
        ),
        "{tag}"
    );
    for filter in [
        format!("jt1078/device/{OTHER}/#"),
        "jt1078/device/#".to_owned(),
        "jt1078/client/#".to_owned(),
        "jt1078/gateway/#".to_owned(),
        "#".to_owned(),
    ] {
        let code = device.subscribe(&filter).await;
        refused_filter(target, code, &format!("{tag}: device subscribes {filter}"));
    }
    // forbidden publishes first, then an allowed one: the watcher sees only the last
    for topic in [
        format!("jt1078/gateway/{device_id}/SUBSCRIBE"),
        format!("jt1078/gateway/{OTHER}/HEART"),
        format!("jt1078/device/{OTHER}/STOP"),
        "jt1078/client/s1/OK".to_owned(),
    ] {
        device.publish(&topic, "{}").await;
    }
    let heart = format!("jt1078/gateway/{device_id}/HEART");
    device.publish(&heart, r#"{"seqid":"h1"}"#).await;
    watcher.expect(&heart).await;
    for topic in [
        format!("jt1078/gateway/{device_id}/SUBSCRIBE"),
        format!("jt1078/gateway/{OTHER}/HEART"),
        format!("jt1078/device/{OTHER}/STOP"),
        "jt1078/client/s1/OK".to_owned(),
    ] {
        assert!(!watcher.got(&topic), "{tag}: a device published {topic}");
    }

    // a last will is a publish made later: on a topic the device may not publish, the
    // CONNECT is refused (the embedded broker; mosquitto drops such a will when it fires)
    if target.exact_codes {
        let (code, _) = Client::connect_with_will(
            target,
            transport,
            &id("will"),
            Some((&user, &password)),
            Some(&format!("jt1078/device/{OTHER}/STOP")),
        )
        .await;
        assert_eq!(
            code,
            ConnectReturnCode::NotAuthorized,
            "{tag}: a device's forged will"
        );
        let (code, _) = Client::connect_with_will(
            target,
            transport,
            &id("will2"),
            Some((&user, &password)),
            Some(&format!("jt1078/gateway/{device_id}/HEART")),
        )
        .await;
        assert_eq!(
            code,
            ConnectReturnCode::Success,
            "{tag}: a device's own will"
        );
    }

    // a device with the HMAC password of another id
    let (_, other_password) = device_login(OTHER);
    let (code, _) = Client::connect(
        target,
        transport,
        &id("fake"),
        Some((device_id, &other_password)),
    )
    .await;
    refused(target, code, ConnectReturnCode::BadUserNamePassword);

    // backend: requests, replies, device commands, status; no command to a device
    let (code, backend) = Client::connect(
        target,
        transport,
        &id("backend"),
        Some(("backend", "backend-password")),
    )
    .await;
    assert_eq!(code, ConnectReturnCode::Success, "{tag}: backend");
    let mut backend = backend.unwrap();
    for filter in ["jt1078/client/#", "jt1078/status/#", "jt1078/device/#"] {
        assert!(
            granted(backend.subscribe(filter).await),
            "{tag}: backend {filter}"
        );
    }
    for filter in ["jt1078/#", "jt1078/gateway/#", "#"] {
        let code = backend.subscribe(filter).await;
        refused_filter(target, code, &format!("{tag}: backend subscribes {filter}"));
    }
    let stop = format!("jt1078/device/{device_id}/STOP");
    backend.publish(&stop, r#"{"seqid":"forged"}"#).await;
    let seqid = format!("s-{tag}");
    backend
        .publish(
            &format!("jt1078/gateway/{device_id}/SUBSCRIBE"),
            &format!(r#"{{"seqid":"{seqid}","client_id":"b1","channel":1}}"#),
        )
        .await;
    // the gateway answers, and tells the device: the request went through
    backend.expect(&format!("jt1078/client/{seqid}/OK")).await;
    device
        .expect(&format!("jt1078/device/{device_id}/REQPULL"))
        .await;
    assert!(
        !watcher.got(&stop) && !device.got(&stop),
        "{tag}: a backend sent STOP"
    );

    // viewer: WEBRTC requests, replies on jt1078/client/viewer/…
    let (code, viewer) = Client::connect(
        target,
        transport,
        &id("viewer"),
        Some(("viewer", "viewer-password")),
    )
    .await;
    assert_eq!(code, ConnectReturnCode::Success, "{tag}: viewer");
    let mut viewer = viewer.unwrap();
    assert!(
        granted(viewer.subscribe("jt1078/client/viewer/#").await),
        "{tag}"
    );
    for filter in ["jt1078/client/#", "jt1078/client/+/OK", "jt1078/status/#"] {
        let code = viewer.subscribe(filter).await;
        refused_filter(target, code, &format!("{tag}: viewer subscribes {filter}"));
    }
    let forbidden = format!("jt1078/gateway/{device_id}/UNSUBSCRIBE");
    viewer.publish(&forbidden, r#"{"seqid":"viewer"}"#).await;
    let webrtc = format!("jt1078/gateway/{device_id}/WEBRTC");
    viewer
        .publish(&webrtc, r#"{"seqid":"viewer","channel":1}"#)
        .await;
    watcher.expect(&webrtc).await;
    assert!(!watcher.got(&forbidden), "{tag}: a viewer sent UNSUBSCRIBE");
    // the gateway's answer (an error: the request has no offer) reaches the viewer
    let deadline = Instant::now() + WAIT;
    while !viewer
        .inbox
        .iter()
        .any(|p| p.topic.starts_with("jt1078/client/viewer/"))
    {
        let remaining = deadline.saturating_duration_since(Instant::now());
        assert!(
            viewer.next(remaining).await.is_some(),
            "{tag}: no reply to the viewer"
        );
    }

    // nobody got anything beyond its rights (mosquitto grants a refused filter and then
    // delivers only what the client may read: this is where it shows)
    let own = format!("jt1078/device/{device_id}/");
    assert!(
        device.inbox.iter().all(|p| p.topic.starts_with(&own)),
        "{tag}: the device got {:?}",
        device.inbox.iter().map(|p| &p.topic).collect::<Vec<_>>()
    );
    assert!(
        viewer
            .inbox
            .iter()
            .all(|p| p.topic.starts_with("jt1078/client/viewer/")),
        "{tag}: the viewer got {:?}",
        viewer.inbox.iter().map(|p| &p.topic).collect::<Vec<_>>()
    );
    assert!(
        backend
            .inbox
            .iter()
            .all(|p| !p.topic.starts_with("jt1078/gateway/") || p.topic.ends_with("/HEART")),
        "{tag}: the backend read requests: {:?}",
        backend.inbox.iter().map(|p| &p.topic).collect::<Vec<_>>()
    );

    // wrong password, unknown user, no login from loopback on a secured broker
    let (code, _) = Client::connect(target, transport, &id("x"), Some(("backend", "guess"))).await;
    refused(target, code, ConnectReturnCode::BadUserNamePassword);
    let (code, _) = Client::connect(target, transport, &id("y"), Some(("nobody", "guess"))).await;
    refused(target, code, ConnectReturnCode::BadUserNamePassword);
}

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

/// One raw CONNECT from `source` with arbitrary bytes as user name and password: the
/// CONNACK code, or `None` if the broker closed the connection without one.
async fn raw_connect(
    source: std::net::IpAddr,
    port: u16,
    user: &[u8],
    password: &[u8],
) -> (Option<u8>, TcpStream) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((source, 0).into()).unwrap();
    let mut stream = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x80 | 0x40 | 0x02, 0, 60];
    for field in [&b"raw"[..], user, password] {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field);
    }
    let mut packet = vec![0x10];
    push_length(&mut packet, body.len());
    packet.extend_from_slice(&body);
    stream.write_all(&packet).await.unwrap();
    let mut ack = [0u8; 4];
    let code = match timeout(Duration::from_secs(90), stream.read_exact(&mut ack)).await {
        Ok(Ok(_)) if ack[0] == 0x20 => Some(ack[3]),
        _ => None,
    };
    (code, stream)
}

fn push_length(packet: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
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
