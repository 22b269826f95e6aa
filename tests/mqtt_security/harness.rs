//! The clients and brokers of the MQTT security tests: a small MQTT 3.1.1 client on
//! rumqttc's packet codec over TCP, WebSocket, TLS or secure WebSocket (so that each
//! CONNACK and SUBACK code can be asserted), raw CONNECTs with arbitrary bytes, a CA and
//! certificates made at test time, and the two brokers under test (the embedded one with
//! users of every role, mosquitto with the shipped configuration and ACL).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
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

use crate::common::mqtt::Mosquitto;
use crate::common::{Gateway, TempDir, free_port, wait_listening};

pub(crate) const WAIT: Duration = Duration::from_secs(10);
/// Each transport's device (a device is sent one REQPULL however many ask).
pub(crate) const DEVICES: [&str; 4] = ["13800138000", "13800138001", "13800138002", "13800138003"];
pub(crate) const DEVICE: &str = DEVICES[0];
pub(crate) const OTHER: &str = "13900000001";
pub(crate) const SECRET: &str = "test-device-secret";
pub(crate) const PASSWORDS: [(&str, &str, &str); 4] = [
    ("backend", "backend-password", "backend"),
    ("viewer", "viewer-password", "viewer"),
    ("admin", "admin-password", "admin"),
    ("jt1078-gateway", "gateway-password", "admin"),
];

/// How a client reaches the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Tcp,
    Ws,
    Tls,
    Wss,
}

/// A CA and a server certificate for `localhost` and 127.0.0.1, made for the test.
pub(crate) struct Pki {
    pub(crate) ca_pem: String,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

pub(crate) fn make_pki(dir: &TempDir, tag: &str) -> Pki {
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
pub(crate) struct Target {
    pub(crate) name: &'static str,
    pub(crate) tcp: u16,
    pub(crate) ws: u16,
    pub(crate) tls: Option<u16>,
    pub(crate) wss: Option<u16>,
    pub(crate) ca_pem: Option<String>,
    /// The embedded broker answers "bad user name or password" (4) for wrong
    /// credentials; mosquitto answers "not authorized" (5).
    pub(crate) exact_codes: bool,
    pub(crate) gateway: Gateway,
    pub(crate) _mosquitto: Option<Mosquitto>,
    pub(crate) dir: TempDir,
}

pub(crate) fn hash(password: &str) -> String {
    jt1078_gateway::cli::hash_password(password).unwrap()
}

/// A gateway with its embedded broker: users of every role, the device secret, TLS.
pub(crate) async fn embedded(extra: &[(&str, &str)]) -> Target {
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
        wait_listening(port, "the embedded broker").await;
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
pub(crate) async fn mosquitto() -> Target {
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
pub(crate) async fn wait_online(port: u16, login: Option<(&str, &str)>) {
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

pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(crate) fn tls_connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
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

pub(crate) async fn websocket<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
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
pub(crate) async fn open(target: &Target, transport: Transport) -> Box<dyn Io> {
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
pub(crate) struct Client {
    pub(crate) io: Box<dyn Io>,
    pub(crate) buf: BytesMut,
    pub(crate) pkid: u16,
    /// Publishes received and not yet taken.
    pub(crate) inbox: Vec<Publish>,
}

impl Client {
    /// CONNECTs; the CONNACK code, and the client if it was accepted.
    pub(crate) async fn connect(
        target: &Target,
        transport: Transport,
        client_id: &str,
        login: Option<(&str, &str)>,
    ) -> (ConnectReturnCode, Option<Client>) {
        Self::connect_with_will(target, transport, client_id, login, None).await
    }

    /// CONNECTs with a last will on `will` (a topic).
    pub(crate) async fn connect_with_will(
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

    pub(crate) async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out, 1 << 20).unwrap();
        self.io.write_all(&out).await.unwrap();
        self.io.flush().await.unwrap();
    }

    /// The next packet (publishes are acknowledged and kept in the inbox too), or `None`
    /// when the connection closes or `wait` passes.
    pub(crate) async fn next(&mut self, wait: Duration) -> Option<Packet> {
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

    pub(crate) async fn subscribe(&mut self, filter: &str) -> SubscribeReasonCode {
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
    pub(crate) async fn publish(&mut self, topic: &str, payload: &str) {
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
    pub(crate) async fn expect(&mut self, topic: &str) -> Publish {
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

    pub(crate) fn got(&self, topic: &str) -> bool {
        self.inbox.iter().any(|p| p.topic == topic)
    }
}

pub(crate) fn granted(code: SubscribeReasonCode) -> bool {
    matches!(code, SubscribeReasonCode::Success(_))
}

pub(crate) fn device_login(id: &str) -> (String, String) {
    (
        id.to_owned(),
        device_password(SECRET.as_bytes(), &DeviceId::parse(id).unwrap()),
    )
}

pub(crate) fn refused(target: &Target, code: ConnectReturnCode, exact: ConnectReturnCode) {
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
pub(crate) fn refused_filter(target: &Target, code: SubscribeReasonCode, what: &str) {
    if target.exact_codes {
        assert_eq!(code, SubscribeReasonCode::Failure, "{what}");
    }
}

/// One raw CONNECT from `source` with arbitrary bytes as user name and password: the
/// CONNACK code, or `None` if the broker closed the connection without one.
pub(crate) async fn raw_connect(
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

pub(crate) fn push_length(packet: &mut Vec<u8>, mut len: usize) {
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
