//! TURN relays of the WebRTC socket (`webrtc.turn_servers`, RFC 8656 over UDP): one
//! allocation on each server, made from the mux's own socket and shared by every peer.
//! Its relayed address is announced to browsers as a relay candidate, for a gateway no
//! browser can reach directly (behind a NAT that maps each destination to another port,
//! or a firewall that lets only outgoing UDP through).
//!
//! Owns the TURN clients (`turn-client-proto`, sans-IO: bytes and times in, bytes to send
//! and events out; the mux sends and receives for it). Routes nothing: a datagram from a
//! TURN server comes back as the peer's datagram (its sender, the relayed address it came
//! to), and the mux routes that like any other.
//!
//! Permissions: a TURN server passes on only what comes from addresses the client allowed.
//! A peer's offer names its candidates; their addresses are allowed as the offer is
//! answered ([`Relays::permit`]), so the browser's first checks get through. A send to an
//! address not yet allowed asks for it and is dropped (ICE sends its checks again).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, info, warn};
use turn_client_proto::api::{
    CreatePermissionError, SendError, TurnConfig, TurnEvent, TurnPollRet, TurnRecvRet,
};
use turn_client_proto::prelude::*;
use turn_client_proto::stun::Instant as TurnInstant;
use turn_client_proto::stun::agent::Transmit;
use turn_client_proto::stun::types::attribute::ErrorCode;
use turn_client_proto::stun::types::message::Message;
use turn_client_proto::types::{TransportType, TurnCredentials};
use turn_client_proto::udp::TurnClientUdp;

use crate::config::TurnServer;

/// After an allocation failed or was lost, how long until it is asked for again.
pub(crate) const REALLOCATE_AFTER: Duration = Duration::from_secs(10);

/// A datagram to send to a TURN server.
pub(crate) type ToServer = (SocketAddr, Vec<u8>);

/// What a datagram from a TURN server was.
#[derive(Debug)]
pub(crate) enum FromServer {
    /// Not from a TURN server (or not for its client): route it as it is.
    NotRelayed,
    /// The server's own business (an answer to the client), handled.
    Handled,
    /// A peer's datagram, relayed: its sender and the relayed address it came to.
    Peer {
        source: SocketAddr,
        relayed: SocketAddr,
        data: Bytes,
    },
}

/// The relays of one socket.
#[derive(Debug)]
pub(crate) struct Relays {
    /// The socket's own address, which the allocations are made from.
    local: SocketAddr,
    /// Zero of the TURN clients' clock.
    base: Instant,
    relays: Vec<Relay>,
    /// Set when an allocation is made, fails or is given back (taken by
    /// [`Relays::take_changed`]: the endpoint reports it as an event).
    changed: bool,
    next_id: u64,
}

struct Relay {
    /// As configured, for logs.
    name: String,
    credentials: TurnCredentials,
    server: SocketAddr,
    client: Option<TurnClientUdp>,
    relayed: Option<SocketAddr>,
    /// When to allocate again (after a failure).
    retry_at: Option<Instant>,
    /// Why the last allocation failed (logged once until one succeeds).
    error: Option<String>,
    /// The transaction of the first 401 answer to this client's ALLOCATE (the challenge
    /// to its request without credentials); a 401 to another transaction (the request
    /// with them) refuses the credentials.
    challenged: Option<[u8; 12]>,
    /// Named by a request's `iceserver` (not `webrtc.turn_servers`): offered only to the
    /// peers that hold a lease on it, deleted once none has for [`RELEASE_AFTER`].
    requested: bool,
    /// Peers holding a lease (requested relays).
    leases: usize,
    /// Since when no peer holds a lease (requested relays).
    idle_since: Option<Instant>,
    /// Identifies the relay to its leases.
    id: u64,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the credentials stay out of logs
        f.debug_struct("Relay")
            .field("name", &self.name)
            .field("server", &self.server)
            .field("relayed", &self.relayed)
            .field("error", &self.error)
            .field("requested", &self.requested)
            .field("leases", &self.leases)
            .finish_non_exhaustive()
    }
}

/// Requested relays (a request's `iceserver`) at once, over all requests: more are not
/// allocated (the offer goes on without them).
pub(crate) const MAX_REQUESTED: usize = 32;

/// How long a requested relay nobody leases is kept (the next request with the same
/// server and credentials takes it over) before its allocation is deleted.
pub(crate) const RELEASE_AFTER: Duration = Duration::from_secs(30);

/// One relay, for `GET /api/webrtc`.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct RelayStatus {
    /// Identifies the relay to its leases (not shown).
    #[serde(skip)]
    pub(crate) id: u64,
    /// The server as configured (`host:port`).
    pub(crate) server: String,
    /// The relayed address, while allocated.
    pub(crate) relayed: Option<SocketAddr>,
    /// Why the last allocation failed, until one succeeds.
    pub(crate) error: Option<String>,
    /// Named by a request (`iceserver`), not by `webrtc.turn_servers`.
    pub(crate) requested: bool,
    /// Peers using it (a requested relay).
    pub(crate) leases: usize,
}

impl Relays {
    /// No relays yet, for a socket at `local`.
    pub(crate) fn new(local: SocketAddr, base: Instant) -> Relays {
        Relays {
            local,
            base,
            relays: Vec::new(),
            changed: false,
            next_id: 1,
        }
    }

    /// Whether a relay was added or leased, or an allocation made, lost, failed or given
    /// back since the last call.
    pub(crate) fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Whether there is any relay (a datagram need not be shown to them otherwise).
    pub(crate) fn is_empty(&self) -> bool {
        self.relays.is_empty()
    }

    fn turn_now(&self, now: Instant) -> TurnInstant {
        let nanos = now.saturating_duration_since(self.base).as_nanos();
        TurnInstant::from_nanos(i64::try_from(nanos).unwrap_or(i64::MAX))
    }

    /// Adds a server of `webrtc.turn_servers`, resolved to `server` (allocated on the next
    /// [`Relays::drive`], kept while the gateway runs).
    pub(crate) fn add(&mut self, config: &TurnServer, server: SocketAddr) {
        let relay = self.relay(config, server, false);
        self.relays.push(relay);
        self.changed = true;
    }

    fn relay(&mut self, config: &TurnServer, server: SocketAddr, requested: bool) -> Relay {
        Relay {
            name: config.server.clone(),
            credentials: TurnCredentials::new(&config.username, &config.credential),
            server,
            client: None,
            relayed: None,
            retry_at: None,
            error: None,
            challenged: None,
            requested,
            leases: 0,
            idle_since: None,
            id: {
                self.next_id += 1;
                self.next_id - 1
            },
        }
    }

    /// A lease on the relay of a request's TURN server (`config` resolved to `server`):
    /// the one already there with the same server and credentials, else a new one
    /// (allocated on the next [`Relays::drive`]); `None` past [`MAX_REQUESTED`].
    pub(crate) fn lease(&mut self, config: &TurnServer, server: SocketAddr) -> Option<u64> {
        let credentials = TurnCredentials::new(&config.username, &config.credential);
        if let Some(relay) = self
            .relays
            .iter_mut()
            .find(|r| r.requested && r.server == server && r.credentials == credentials)
        {
            relay.leases += 1;
            relay.idle_since = None;
            self.changed = true;
            return Some(relay.id);
        }
        if self.relays.iter().filter(|r| r.requested).count() >= MAX_REQUESTED {
            return None;
        }
        let mut relay = self.relay(config, server, true);
        relay.leases = 1;
        let id = relay.id;
        self.relays.push(relay);
        self.changed = true;
        Some(id)
    }

    /// Gives the leases `ids` back (their peer ended).
    pub(crate) fn release(&mut self, ids: &[u64], now: Instant) {
        for relay in self.relays.iter_mut().filter(|r| ids.contains(&r.id)) {
            relay.leases = relay.leases.saturating_sub(1);
            if relay.leases == 0 {
                relay.idle_since = Some(now);
            }
        }
        self.changed = true;
    }

    /// Each relay's state.
    pub(crate) fn status(&self) -> Vec<RelayStatus> {
        self.relays
            .iter()
            .map(|r| RelayStatus {
                id: r.id,
                server: r.name.clone(),
                relayed: r.relayed,
                error: r.error.clone(),
                requested: r.requested,
                leases: r.leases,
            })
            .collect()
    }

    /// Moves every client on to `now`: allocates where there is none, refreshes, retries.
    /// Returns what to send and when to be called again.
    pub(crate) fn drive(&mut self, now: Instant) -> (Vec<ToServer>, Instant) {
        let turn_now = self.turn_now(now);
        let mut out = Vec::new();
        let mut wake = now + REALLOCATE_AFTER;
        let local = self.local;
        let base = self.base;
        let mut changed = false;
        let relays = &mut self.relays;
        // requested relays nobody has leased for a while: deleted on the server, forgotten
        relays.retain_mut(|relay| {
            let expired = relay.requested
                && relay.leases == 0
                && relay.idle_since.is_some_and(|at| at + RELEASE_AFTER <= now);
            if expired {
                if let Some(client) = relay.client.as_mut() {
                    // the server frees it at once instead of when its lifetime ends
                    let _ = client.delete(turn_now);
                }
                relay.flush(turn_now, &mut out);
                debug!(server = %relay.name, "requested turn relay released");
                changed = true;
            }
            !expired
        });
        for relay in relays.iter_mut() {
            if relay.client.is_none() && relay.retry_at.is_none_or(|at| at <= now) {
                let config = TurnConfig::new(relay.credentials.clone());
                relay.client = Some(TurnClientUdp::allocate(local, relay.server, config));
                relay.retry_at = None;
            }
            if let Some(at) = relay.idle_since {
                wake = wake.min(at + RELEASE_AFTER);
            }
            let Some(client) = relay.client.as_mut() else {
                if let Some(at) = relay.retry_at {
                    wake = wake.min(at);
                }
                continue;
            };
            let closed = match client.poll(turn_now) {
                TurnPollRet::WaitUntil(at) => {
                    wake = wake.min(std_time(base, at).max(now));
                    false
                }
                TurnPollRet::Closed => true,
                // TCP allocations only: this client asks for UDP
                TurnPollRet::AllocateTcpSocket { .. } | TurnPollRet::TcpClose { .. } => false,
            };
            changed |= relay.flush(turn_now, &mut out);
            if closed {
                changed = true;
                relay.lost(
                    now,
                    "no allocation: the server did not answer, or refused it",
                );
                wake = wake.min(now + REALLOCATE_AFTER);
            }
        }
        self.changed |= changed;
        (out, wake)
    }

    /// Takes a datagram that came from `source` to the socket: a TURN server's answer, or a
    /// peer's datagram it relays.
    pub(crate) fn receive(
        &mut self,
        source: SocketAddr,
        data: &Bytes,
        now: Instant,
        out: &mut Vec<ToServer>,
    ) -> FromServer {
        let turn_now = self.turn_now(now);
        // the same server may be named twice (other credentials): each client takes only
        // its own transactions and relays
        let error = allocate_error(data);
        let local = self.local;
        for relay in self.relays.iter_mut().filter(|r| r.server == source) {
            let Some(client) = relay.client.as_mut() else {
                continue;
            };
            let transmit = Transmit::new(&data[..], TransportType::Udp, source, local);
            let result = match client.recv(transmit, turn_now) {
                TurnRecvRet::Ignored(_) => continue,
                TurnRecvRet::PeerData(peer) => match relay.relayed {
                    Some(relayed) => FromServer::Peer {
                        source: peer.peer,
                        relayed,
                        data: Bytes::copy_from_slice(peer.data()),
                    },
                    None => FromServer::Handled,
                },
                TurnRecvRet::Handled | TurnRecvRet::PeerIcmp { .. } => FromServer::Handled,
            };
            if let Some((401, transaction)) = error {
                // the challenge to the request without credentials
                relay.challenged.get_or_insert(transaction);
            }
            self.changed |= relay.flush(turn_now, out);
            return result;
        }
        // no client took it: a 401 to the request with credentials refuses them (the
        // client would otherwise send them again for 40 s before giving up)
        if let Some((401, transaction)) = error {
            let refused = self.relays.iter_mut().find(|r| {
                r.server == source
                    && r.relayed.is_none()
                    && r.challenged.is_some_and(|first| first != transaction)
            });
            if let Some(relay) = refused {
                relay.lost(now, "credentials refused (401 Unauthorized)");
                self.changed = true;
                return FromServer::Handled;
            }
        }
        FromServer::NotRelayed
    }

    /// Wraps `contents` for `destination` to leave through the relay at `relayed`. Sending
    /// to an address not yet allowed asks for the permission instead (the datagram is
    /// dropped; ICE sends again).
    pub(crate) fn send(
        &mut self,
        relayed: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
        now: Instant,
        out: &mut Vec<ToServer>,
    ) -> bool {
        let turn_now = self.turn_now(now);
        let Some(relay) = self.relays.iter_mut().find(|r| r.relayed == Some(relayed)) else {
            return false;
        };
        let Some(client) = relay.client.as_mut() else {
            return false;
        };
        let sent = match client.send_to(TransportType::Udp, destination, contents, turn_now) {
            Ok(Some(transmit)) => {
                let transmit = transmit.build();
                out.push((transmit.to, transmit.data));
                true
            }
            Ok(None) => false,
            Err(SendError::NoPermission) => {
                permit(client, destination.ip(), turn_now);
                false
            }
            Err(error) => {
                debug!(relay = %relay.name, %destination, %error, "turn send failed");
                false
            }
        };
        self.changed |= relay.flush(turn_now, out);
        sent
    }

    /// Allows `peers` (the addresses of a peer's candidates) to send through the relays at
    /// `relayed` (those the peer is offered).
    pub(crate) fn permit(
        &mut self,
        peers: &[IpAddr],
        relayed: &[SocketAddr],
        now: Instant,
        out: &mut Vec<ToServer>,
    ) {
        let turn_now = self.turn_now(now);
        for relay in self.relays.iter_mut() {
            let Some(relayed) = relay.relayed.filter(|r| relayed.contains(r)) else {
                continue;
            };
            let Some(client) = relay.client.as_mut() else {
                continue;
            };
            for ip in peers.iter().filter(|ip| ip.is_ipv4() == relayed.is_ipv4()) {
                permit(client, *ip, turn_now);
            }
            self.changed |= relay.flush(turn_now, out);
        }
    }
}

/// The instant of the TURN clients' clock `at` (its zero is `base`).
fn std_time(base: Instant, at: TurnInstant) -> Instant {
    let nanos = u64::try_from(at.as_nanos()).unwrap_or(0);
    base + Duration::from_nanos(nanos)
}

/// Asks for a permission for `ip` unless there is one or one is asked for.
fn permit(client: &mut TurnClientUdp, ip: IpAddr, now: TurnInstant) {
    match client.create_permission(TransportType::Udp, ip, now) {
        Ok(()) | Err(CreatePermissionError::AlreadyExists) => {}
        Err(error) => debug!(%ip, %error, "turn permission not asked for"),
    }
}

impl Relay {
    /// Collects what the client has to send and handles its events; true if an
    /// allocation was made.
    fn flush(&mut self, now: TurnInstant, out: &mut Vec<ToServer>) -> bool {
        let mut allocated = false;
        let Some(client) = self.client.as_mut() else {
            return allocated;
        };
        while let Some(transmit) = client.poll_transmit(now) {
            out.push((transmit.to, transmit.data.to_vec()));
        }
        while let Some(event) = client.poll_event() {
            match event {
                TurnEvent::AllocationCreated(_, relayed) => {
                    info!(server = %self.name, %relayed, "turn: relayed address allocated");
                    self.relayed = Some(relayed);
                    self.error = None;
                    allocated = true;
                }
                TurnEvent::PermissionCreateFailed(_, ip) => {
                    debug!(server = %self.name, %ip, "turn permission refused");
                }
                TurnEvent::PermissionCreated(_, ip) => {
                    debug!(server = %self.name, %ip, "turn permission installed");
                }
                _ => {}
            }
        }
        allocated
    }

    /// The allocation is gone or was not made (`why`): drop the client and ask again in
    /// [`REALLOCATE_AFTER`]. Logged once until an allocation succeeds.
    fn lost(&mut self, now: Instant, why: &str) {
        if let Some(relayed) = self.relayed.take() {
            warn!(server = %self.name, %relayed, "turn allocation lost; asking again in 10 s");
        } else if self.error.is_none() {
            warn!(server = %self.name, error = why, "turn relay unavailable; asked again every 10 s");
        }
        self.error = Some(why.to_owned());
        self.client = None;
        self.challenged = None;
        self.retry_at = Some(now + REALLOCATE_AFTER);
    }
}

/// The error code and transaction id of an ALLOCATE error response (RFC 8656 §7.2,
/// ERROR-CODE of RFC 8489 §14.8); `None` for anything else. Read here because the TURN
/// client keeps a refusal of its credentials to itself until its request times out.
fn allocate_error(data: &[u8]) -> Option<(u16, [u8; 12])> {
    // the type first: every relayed packet (a Data indication) comes this way
    if data.get(..2) != Some(&[0x01, 0x13][..]) {
        return None;
    }
    let message = Message::from_bytes(data).ok()?;
    let code = message.attribute::<ErrorCode>().ok()?.code();
    Some((code, data.get(8..20)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever comes from a TURN server's address (spoofed, cut, garbage) is handled
        /// without a panic, and nothing but the allocation request is sent in reply.
        #[test]
        fn anything_from_a_server_is_handled_without_panic(
            datagrams in proptest::collection::vec(
                (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..300)),
                1..40,
            )
        ) {
            let base = super::super::clock();
            let server: SocketAddr = "192.0.2.9:3478".parse().unwrap();
            let mut relays = Relays::new("0.0.0.0:8000".parse().unwrap(), base);
            relays.add(
                &TurnServer {
                    server: server.to_string(),
                    username: "gw".to_owned(),
                    credential: "secret".to_owned(),
                },
                server,
            );
            let (out, _) = relays.drive(base);
            prop_assert_eq!(out.len(), 1, "the ALLOCATE");
            for (i, (stun, mut data)) in datagrams.into_iter().enumerate() {
                if stun && data.len() >= 20 {
                    // a STUN header, so the parser gets past its first checks
                    data[0] &= 0x3f;
                    data[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
                }
                let mut out = Vec::new();
                let now = base + Duration::from_millis(i as u64);
                let _ = relays.receive(server, &Bytes::from(data), now, &mut out);
                let _ = relays.drive(now);
            }
            prop_assert!(relays.status().iter().all(|r| r.relayed.is_none()));
        }
    }

    /// An ALLOCATE error response with ERROR-CODE `code` (and a reason phrase), built by
    /// hand from RFC 8489 §5 and §14.8.
    fn error_response(method_type: [u8; 2], code: u16, id: [u8; 12]) -> Vec<u8> {
        let reason = b"Unauthorized";
        let mut value = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
        value.extend_from_slice(reason);
        let padded = value.len().next_multiple_of(4);
        let mut message = method_type.to_vec();
        message.extend_from_slice(&u16::try_from(4 + padded).unwrap().to_be_bytes());
        message.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        message.extend_from_slice(&id);
        message.extend_from_slice(&[0x00, 0x09]);
        message.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
        message.extend_from_slice(&value);
        message.resize(20 + 4 + padded, 0);
        message
    }

    #[test]
    fn requested_relays_are_shared_given_back_and_forgotten_when_idle() {
        let base = super::super::clock();
        let mut relays = Relays::new("0.0.0.0:8000".parse().unwrap(), base);
        let server: SocketAddr = "192.0.2.9:3478".parse().unwrap();
        let config = |user: &str| TurnServer {
            server: server.to_string(),
            username: user.to_owned(),
            credential: "secret".to_owned(),
        };
        let a = relays.lease(&config("a"), server).unwrap();
        let again = relays.lease(&config("a"), server).unwrap();
        let b = relays.lease(&config("b"), server).unwrap();
        assert_eq!(a, again, "same server and credentials: one relay");
        assert_ne!(a, b);
        let (out, _) = relays.drive(base);
        assert_eq!(out.len(), 2, "an ALLOCATE each");
        let status = relays.status();
        assert!(
            status
                .iter()
                .all(|r| r.requested && r.relayed.is_none() && r.error.is_none()),
            "being allocated: {status:?}"
        );

        relays.release(&[a], base);
        relays.release(&[a, b], base);
        let leases: Vec<usize> = relays.status().iter().map(|r| r.leases).collect();
        assert_eq!(leases, [0, 0]);
        let (_, wake) = relays.drive(base + Duration::from_secs(1));
        assert!(wake <= base + RELEASE_AFTER, "wakes to forget them");
        assert_eq!(
            relays.status().len(),
            2,
            "kept a while for the next request"
        );
        let later = base + RELEASE_AFTER + Duration::from_secs(1);
        relays.drive(later);
        assert!(relays.status().is_empty(), "forgotten once idle");

        // past the cap, no more
        for n in 0..MAX_REQUESTED {
            assert!(relays.lease(&config(&n.to_string()), server).is_some());
        }
        assert_eq!(relays.lease(&config("one more"), server), None);
    }

    #[test]
    fn an_allocate_error_names_its_code_and_transaction() {
        let id = [7u8; 12];
        let refused = error_response([0x01, 0x13], 401, id);
        assert_eq!(allocate_error(&refused), Some((401, id)));
        assert_eq!(
            allocate_error(&error_response([0x01, 0x13], 438, id)),
            Some((438, id))
        );
        // a refresh's error, a success, a cut message: not an ALLOCATE error
        assert_eq!(allocate_error(&error_response([0x01, 0x14], 401, id)), None);
        assert_eq!(allocate_error(&error_response([0x01, 0x03], 401, id)), None);
        for len in 0..refused.len() {
            assert_eq!(allocate_error(&refused[..len]), None, "{len} bytes");
        }
    }
}
