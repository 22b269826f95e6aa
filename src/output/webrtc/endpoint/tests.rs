//! The endpoint on a hand-driven clock: no socket, no runtime.

use std::net::SocketAddrV4;

use turn_client_proto::stun::types::attribute::{ErrorCode, Nonce, Realm};
use turn_client_proto::stun::types::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, MessageIntegrityCredentials, MessageWriteVec,
};
use turn_client_proto::stun::types::prelude::*;
use turn_client_proto::types::attribute::{Data, Lifetime, XorPeerAddress, XorRelayedAddress};
use turn_client_proto::types::message::{ALLOCATE, DATA, REFRESH};

use super::*;
use crate::config::TurnServer;
use crate::output::webrtc::clock;

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn datagram(source: &str, local_ip: Option<&str>, data: &[u8], at: Instant) -> Datagram {
    Datagram {
        at,
        source: addr(source),
        local_ip: local_ip.map(|ip| ip.parse().unwrap()),
        relayed: None,
        data: Bytes::copy_from_slice(data),
    }
}

/// An ICE connectivity check (a binding request with USERNAME, PRIORITY and
/// MESSAGE-INTEGRITY), as a browser sends it.
fn check(username: &str) -> Vec<u8> {
    let mut buf = vec![0u8; 256];
    let request = StunMessageBuilder::new()
        .binding()
        .request()
        .username(username)
        .prio(1)
        .build(TransId::new());
    let len = request
        .to_bytes(Some(b"password"), &mut buf, |_, _| [7; 20])
        .unwrap();
    buf.truncate(len);
    buf
}

/// A STUN server's binding success reply to transaction `id` naming `mapped` (RFC 8489
/// §5, §14.2), without MESSAGE-INTEGRITY, as a server answers a request without
/// credentials.
fn binding_reply(id: &[u8], mapped: SocketAddrV4) -> Vec<u8> {
    let mut reply = vec![0x01, 0x01, 0, 12];
    reply.extend_from_slice(&STUN_COOKIE);
    reply.extend_from_slice(id);
    reply.extend_from_slice(&[0x00, 0x20, 0, 8, 0, 1]);
    reply.extend_from_slice(&(mapped.port() ^ 0x2112).to_be_bytes());
    let ip = u32::from(*mapped.ip()) ^ u32::from_be_bytes(STUN_COOKIE);
    reply.extend_from_slice(&ip.to_be_bytes());
    reply
}

fn peer_of(routed: Routed) -> Option<u64> {
    match routed {
        Routed::Peer { peer, .. } => Some(peer),
        Routed::Taken | Routed::Unrouted => None,
    }
}

const DTLS: [u8; 40] = [0x16; 40];

#[test]
fn datagrams_are_routed_by_ufrag_then_by_the_address_a_check_claimed() {
    let now = clock();
    let mut endpoint = Endpoint::new(addr("127.0.0.1:8000"), now, &[]);
    endpoint.register(1, "aaaa");
    endpoint.register(2, "bbbb");
    let mut route = |source: &str, data: &[u8]| {
        peer_of(endpoint.handle(datagram(source, Some("127.0.0.1"), data, now), now))
    };
    // nobody claimed this address yet
    assert_eq!(route("10.0.0.1:5000", &DTLS), None);
    assert_eq!(route("10.0.0.1:5000", &check("bbbb:them")), Some(2));
    // DTLS and SRTP follow the address the check came from
    assert_eq!(route("10.0.0.1:5000", &DTLS), Some(2));
    assert_eq!(route("10.0.0.1:5000", &[0x80; 40]), Some(2));
    assert_eq!(route("10.0.0.2:5000", &DTLS), None, "another address");
    assert_eq!(route("10.0.0.2:5000", &check("aaaa:them")), Some(1));
    assert_eq!(route("10.0.0.2:5000", &DTLS), Some(1));
    assert_eq!(
        route("10.0.0.3:5000", &check("zzzz:them")),
        None,
        "no such ufrag"
    );
    // a check for another peer moves the address to it
    assert_eq!(route("10.0.0.1:5000", &check("aaaa:them")), Some(1));
    assert_eq!(route("10.0.0.1:5000", &DTLS), Some(1));
    // garbage that looks like STUN routes nowhere new, and does not panic
    let mut torn = check("bbbb:them");
    torn.truncate(30);
    assert_eq!(route("10.0.0.4:5000", &torn), None);

    endpoint.unregister(1);
    let mut route = |source: &str, data: &[u8]| {
        peer_of(endpoint.handle(datagram(source, Some("127.0.0.1"), data, now), now))
    };
    assert_eq!(
        route("10.0.0.1:5000", &DTLS),
        None,
        "its addresses forgotten"
    );
    assert_eq!(route("10.0.0.2:5000", &check("aaaa:them")), None);
    assert_eq!(route("10.0.0.5:5000", &check("bbbb:them")), Some(2));
}

#[test]
fn a_peer_answers_from_the_address_its_packets_arrived_on() {
    let now = clock();
    // announced: a NAT's public address (not this machine's) and loopback
    let candidates = LocalCandidates {
        announced: vec![addr("203.0.113.1:8000"), addr("127.0.0.1:8000")],
        machine: vec!["10.0.0.5".parse().unwrap(), "127.0.0.1".parse().unwrap()],
    };
    let mut paths = Paths::new(candidates, addr("0.0.0.0:8000"));
    // sent to the public address, arrived at the private one (NAT 1:1): str0m is told it
    // came to the public candidate, and the answer leaves from the private address
    let browser = addr("198.51.100.9:5000");
    let through_nat = datagram("198.51.100.9:5000", Some("10.0.0.5"), &DTLS, now);
    assert_eq!(paths.arrived(&through_nat), addr("203.0.113.1:8000"));
    assert_eq!(
        paths.source_for(addr("203.0.113.1:8000"), browser),
        Some("10.0.0.5".parse().unwrap())
    );
    // a browser's loopback socket: its own candidate, answered from it
    let looped = datagram("127.0.0.1:6000", Some("127.0.0.1"), &DTLS, now);
    assert_eq!(paths.arrived(&looped), addr("127.0.0.1:8000"));
    assert_eq!(
        paths.source_for(addr("127.0.0.1:8000"), addr("127.0.0.1:6000")),
        Some("127.0.0.1".parse().unwrap())
    );
    // nothing heard from that address: as the kernel routes it
    assert_eq!(
        paths.source_for(addr("203.0.113.1:8000"), addr("198.51.100.10:5000")),
        None
    );
    // relayed: the relayed address is the candidate
    let mut relayed = datagram("198.51.100.9:5000", None, &DTLS, now);
    relayed.relayed = Some(addr("192.0.2.50:49152"));
    assert_eq!(paths.arrived(&relayed), addr("192.0.2.50:49152"));
    // unknown local address: the socket's own
    let unknown = datagram("198.51.100.9:5001", None, &DTLS, now);
    assert_eq!(paths.arrived(&unknown), addr("0.0.0.0:8000"));
}

/// The binding requests the endpoint sends: (destination, transaction id).
fn binding_requests(endpoint: &mut Endpoint) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut requests = Vec::new();
    while let Some(transmit) = endpoint.poll_transmit() {
        assert_eq!(&transmit.contents[..2], &[0x00, 0x01], "a binding request");
        assert!(is_stun(&transmit.contents));
        requests.push((transmit.destination, transmit.contents[8..20].to_vec()));
    }
    requests
}

#[test]
fn stun_servers_are_asked_until_one_answers_then_every_refresh() {
    let t0 = clock();
    let server = addr("192.0.2.3:3478");
    let mut endpoint = Endpoint::new(addr("10.0.0.5:8000"), t0, &["stun.example:3478".into()]);
    assert_eq!(
        endpoint.poll_timeout(),
        None,
        "nothing to ask before it resolves"
    );
    endpoint.stun_server_resolved(0, server, t0);
    assert_eq!(endpoint.poll_timeout(), Some(t0));
    endpoint.handle_timeout(t0);
    let first = binding_requests(&mut endpoint);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].0, server);
    assert_eq!(endpoint.poll_timeout(), Some(t0 + STUN_RETRY));

    // not answered: asked again on the retry period, a new transaction
    let t1 = t0 + STUN_RETRY;
    endpoint.handle_timeout(t1);
    let second = binding_requests(&mut endpoint);
    assert_eq!(second.len(), 1);
    assert_ne!(first[0].1, second[0].1);

    // the late answer to the first is not taken; the answer to the second is
    let mapped: SocketAddrV4 = "203.0.113.7:40000".parse().unwrap();
    let stale = binding_reply(&first[0].1, mapped);
    let routed = endpoint.handle(datagram("192.0.2.3:3478", None, &stale, t1), t1);
    assert!(matches!(routed, Routed::Unrouted), "{routed:?}");
    assert_eq!(endpoint.poll_event(), None);
    let answer = binding_reply(&second[0].1, mapped);
    let routed = endpoint.handle(datagram("192.0.2.3:3478", None, &answer, t1), t1);
    assert!(matches!(routed, Routed::Taken), "{routed:?}");
    assert_eq!(endpoint.poll_event(), Some(EndpointEvent::AddressesChanged));
    assert_eq!(endpoint.poll_event(), None, "reported once");
    assert_eq!(endpoint.addresses().reflexive, [SocketAddr::V4(mapped)]);
    // the same answer from another address is someone else's
    let spoofed = endpoint.handle(datagram("192.0.2.4:3478", None, &answer, t1), t1);
    assert!(matches!(spoofed, Routed::Unrouted));

    // answered: the next round refreshes after STUN_REFRESH
    let t2 = t1 + STUN_RETRY;
    assert_eq!(endpoint.poll_timeout(), Some(t2));
    endpoint.handle_timeout(t2);
    let third = binding_requests(&mut endpoint);
    assert_eq!(third.len(), 1);
    assert_eq!(endpoint.poll_timeout(), Some(t2 + STUN_REFRESH));
    endpoint.handle_timeout(t2 + STUN_REFRESH - Duration::from_millis(1));
    assert!(binding_requests(&mut endpoint).is_empty(), "not yet");
    // the same address again changes nothing
    let again = binding_reply(&third[0].1, mapped);
    let routed = endpoint.handle(datagram("192.0.2.3:3478", None, &again, t2), t2);
    assert!(matches!(routed, Routed::Taken));
    assert_eq!(endpoint.poll_event(), None);
    endpoint.handle_timeout(t2 + STUN_REFRESH);
    assert_eq!(binding_requests(&mut endpoint).len(), 1);
}

#[test]
fn a_stun_server_that_never_answers_is_asked_every_refresh_after_some_rounds() {
    let t0 = clock();
    let mut endpoint = Endpoint::new(addr("10.0.0.5:8000"), t0, &["192.0.2.3:3478".into()]);
    endpoint.stun_server_resolved(0, addr("192.0.2.3:3478"), t0);
    let mut now = t0;
    for round in 1..=STUN_ROUNDS {
        endpoint.handle_timeout(now);
        assert_eq!(binding_requests(&mut endpoint).len(), 1, "round {round}");
        let wait = if round < STUN_ROUNDS {
            STUN_RETRY
        } else {
            STUN_REFRESH
        };
        assert_eq!(
            endpoint.poll_timeout(),
            Some(now + wait),
            "after round {round}"
        );
        now += wait;
    }
}

#[test]
fn a_stun_servers_binding_reply_names_the_address_it_saw() {
    // coturn 4.6.1's reply to a binding request from 127.0.0.1:55309: XOR-MAPPED-ADDRESS,
    // MAPPED-ADDRESS, RESPONSE-ORIGIN, SOFTWARE, no MESSAGE-INTEGRITY
    let hex = "0101003c2112a442c19e0360db4d07c3a68b0ec4002000080001f91f5e12a443000100080001d80d7f000001802b0008000187dd7f00000180220014436f7475726e2d342e362e312027476f72737427";
    let reply: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let id: [u8; 12] = reply[8..20].try_into().unwrap();
    let seen = SocketAddr::from(([127, 0, 0, 1], 55309));
    assert_eq!(binding_reply_address(&reply, &id), Some(seen));
    let mut other = id;
    other[0] ^= 1;
    assert_eq!(
        binding_reply_address(&reply, &other),
        None,
        "another request's"
    );
    for cut in [0, 19, 20, 31, reply.len() - 1] {
        assert_eq!(
            binding_reply_address(&reply[..cut], &id),
            None,
            "cut at {cut}"
        );
    }
    let mut request = reply.clone();
    request[0] = 0x00; // 0x0001: a binding request, not its reply
    assert_eq!(binding_reply_address(&request, &id), None);
}

#[test]
fn an_ipv6_address_is_xored_with_the_cookie_and_the_transaction() {
    let id = [7u8; 12];
    let seen: SocketAddr = "[2001:db8::1]:3478".parse().unwrap();
    let IpAddr::V6(v6) = seen.ip() else {
        unreachable!()
    };
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&STUN_COOKIE);
    key[4..].copy_from_slice(&id);
    let mut value = vec![0, 2];
    value.extend_from_slice(&(seen.port() ^ 0x2112).to_be_bytes());
    value.extend(v6.octets().iter().zip(key).map(|(a, k)| a ^ k));
    let mut reply = vec![0x01, 0x01, 0, 24];
    reply.extend_from_slice(&STUN_COOKIE);
    reply.extend_from_slice(&id);
    reply.extend_from_slice(&[0x00, 0x20, 0, 20]);
    reply.extend_from_slice(&value);
    assert_eq!(binding_reply_address(&reply, &id), Some(seen));
}

#[test]
fn only_stun_has_a_ufrag() {
    assert_eq!(stun_ufrag(b""), None);
    assert_eq!(stun_ufrag(&DTLS), None);
    assert_eq!(stun_ufrag(&[0x80; 40]), None); // RTP
    assert_eq!(stun_ufrag(&check("ours:theirs")), Some("ours"));
}

/// A TURN server (RFC 8656) reduced to what the endpoint's relays need, written here with
/// `stun-types`: a 401 with realm and nonce to a request without credentials, then success
/// to ALLOCATE (a relayed address, 600 s), REFRESH and CREATE-PERMISSION.
struct TurnServerStub {
    relayed: SocketAddr,
    credentials: LongTermKeyCredentials,
}

impl TurnServerStub {
    const LIFETIME: u32 = 600;

    fn answer(&self, request: &[u8], from: SocketAddr) -> Vec<u8> {
        let request = Message::from_bytes(request).unwrap();
        assert!(request.has_class(MessageClass::Request), "{request}");
        let signed = request
            .raw_attribute(AttributeType::new(0x0008)) // MESSAGE-INTEGRITY
            .is_some();
        if !signed {
            let mut reply = Message::builder_error(&request, MessageWriteVec::new());
            reply.add_attribute(&Realm::new("realm").unwrap()).unwrap();
            reply.add_attribute(&Nonce::new("nonce").unwrap()).unwrap();
            let code = ErrorCode::builder(ErrorCode::UNAUTHORIZED).build().unwrap();
            reply.add_attribute(&code).unwrap();
            return reply.finish();
        }
        let mut reply = Message::builder_success(&request, MessageWriteVec::new());
        let transaction = reply.transaction_id();
        if request.method() == ALLOCATE {
            let relayed = XorRelayedAddress::new(self.relayed, transaction);
            reply.add_attribute(&relayed).unwrap();
            let mapped = XorMappedAddress::new(from, transaction);
            reply.add_attribute(&mapped).unwrap();
        }
        if request.method() == ALLOCATE || request.method() == REFRESH {
            reply.add_attribute(&Lifetime::new(Self::LIFETIME)).unwrap();
        }
        let credentials = MessageIntegrityCredentials::from(self.credentials.clone());
        reply
            .add_message_integrity(&credentials, IntegrityAlgorithm::Sha1)
            .unwrap();
        reply.finish()
    }

    /// Answers every request the endpoint sends it at `now`; returns their methods.
    fn serve(&self, endpoint: &mut Endpoint, server: SocketAddr, now: Instant) -> Vec<u16> {
        let mut methods = Vec::new();
        loop {
            // an answer moves the client: what it sends next is due now
            if endpoint.poll_timeout().is_some_and(|due| due <= now) {
                endpoint.handle_timeout(now);
            }
            let Some(transmit) = endpoint.poll_transmit() else {
                break;
            };
            assert_eq!(transmit.destination, server);
            let method = Message::from_bytes(&transmit.contents).unwrap().method();
            methods.push(method.value());
            let reply = self.answer(&transmit.contents, addr("10.0.0.5:8000"));
            let routed = endpoint.handle(datagram(&server.to_string(), None, &reply, now), now);
            assert!(matches!(routed, Routed::Taken), "{routed:?}");
        }
        methods
    }

    /// A Data indication: `data` relayed from `peer`.
    fn data_from(&self, peer: SocketAddr, data: &[u8]) -> Vec<u8> {
        let mut indication = Message::builder_indication(DATA, MessageWriteVec::new());
        let transaction = indication.transaction_id();
        indication
            .add_attribute(&XorPeerAddress::new(peer, transaction))
            .unwrap();
        indication.add_attribute(&Data::new(data)).unwrap();
        indication.finish()
    }
}

#[test]
fn a_turn_relay_is_allocated_refreshed_on_the_clock_and_relays_a_peer_both_ways() {
    let t0 = clock();
    let server = addr("192.0.2.9:3478");
    let stub = TurnServerStub {
        relayed: addr("192.0.2.9:49152"),
        credentials: LongTermKeyCredentials::new("gw".into(), "secret".into(), "realm".into()),
    };
    let config = TurnServer {
        server: server.to_string(),
        username: "gw".to_owned(),
        credential: "secret".to_owned(),
    };
    let mut endpoint = Endpoint::new(addr("10.0.0.5:8000"), t0, &[]);
    endpoint.add_turn_server(&config, server, t0);
    assert_eq!(endpoint.poll_event(), Some(EndpointEvent::AddressesChanged));
    assert!(
        endpoint.addresses().configured_undecided(1),
        "being allocated"
    );
    assert_eq!(endpoint.poll_timeout(), Some(t0));
    // the challenge, then the ALLOCATE with credentials (the client sends it on its
    // own clock)
    let mut methods = Vec::new();
    let mut now = t0;
    while endpoint.addresses().relayed().is_empty() {
        assert!(methods.len() < 4, "no allocation: {methods:?}");
        now = endpoint.poll_timeout().expect("the relay's timer");
        endpoint.handle_timeout(now);
        methods.extend(stub.serve(&mut endpoint, server, now));
    }
    assert_eq!(methods, [0x003, 0x003], "two ALLOCATEs");
    assert!(now - t0 < Duration::from_secs(1), "{:?}", now - t0);
    assert_eq!(endpoint.poll_event(), Some(EndpointEvent::AddressesChanged));
    let addresses = endpoint.addresses();
    assert_eq!(addresses.relayed(), [stub.relayed]);
    assert!(!addresses.configured_undecided(1));

    // the allocation is refreshed before its lifetime ends, again and again
    let lifetime = Duration::from_secs(u64::from(TurnServerStub::LIFETIME));
    let mut refreshed = Vec::new();
    while refreshed.len() < 2 {
        let due = endpoint.poll_timeout().expect("the relay's timer");
        assert!(due >= now, "time moves on");
        now = due;
        assert!(now < t0 + 3 * lifetime, "no refresh by {:?}", now - t0);
        endpoint.handle_timeout(now);
        if stub.serve(&mut endpoint, server, now).contains(&0x004) {
            refreshed.push(now);
        }
    }
    let first = refreshed[0] - t0;
    assert!(
        first < lifetime,
        "refreshed after {first:?}, lifetime {lifetime:?}"
    );
    let between = refreshed[1] - refreshed[0];
    assert!(between < lifetime, "again after {between:?}");
    assert_eq!(
        endpoint.addresses().relayed(),
        [stub.relayed],
        "still allocated"
    );

    // a browser's candidate is allowed through, and what it sends is routed to its peer
    endpoint.register(1, "aaaa");
    let browser = addr("198.51.100.9:5000");
    endpoint.permit(&[browser.ip()], &[stub.relayed], now);
    let mut methods = Vec::new();
    let asked = now;
    while !methods.contains(&0x008) {
        assert!(methods.len() < 4, "no CREATE-PERMISSION: {methods:?}");
        now = endpoint.poll_timeout().expect("the relay's timer");
        endpoint.handle_timeout(now);
        methods.extend(stub.serve(&mut endpoint, server, now));
    }
    assert!(now - asked < Duration::from_secs(1), "{:?}", now - asked);
    let relayed = stub.data_from(browser, &check("aaaa:them"));
    match endpoint.handle(datagram(&server.to_string(), None, &relayed, now), now) {
        Routed::Peer { peer, datagram } => {
            assert_eq!(peer, 1);
            assert_eq!(datagram.source, browser);
            assert_eq!(datagram.relayed, Some(stub.relayed));
            assert_eq!(stun_ufrag(&datagram.data), Some("aaaa"), "the check inside");
        }
        other => panic!("not routed: {other:?}"),
    }
    // and the peer's answer leaves wrapped for the server
    assert!(endpoint.send_relayed(stub.relayed, browser, &DTLS, now));
    let wrapped = endpoint.poll_transmit().expect("wrapped for the server");
    assert_eq!(wrapped.destination, server);
    assert!(
        wrapped.contents.windows(DTLS.len()).any(|w| w == DTLS),
        "the packet inside"
    );
    // to an address not allowed: not sent, the permission asked for
    assert!(!endpoint.send_relayed(stub.relayed, addr("203.0.113.50:9"), &DTLS, now));
}
