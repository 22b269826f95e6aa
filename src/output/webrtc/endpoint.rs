//! The WebRTC socket's state, sans-IO (quinn-proto's `Endpoint` is the model): which peer
//! a datagram is for, what the STUN servers say the socket's address outside is, and the
//! TURN relays. Driven by [`Endpoint::handle`] (a datagram, the time it came) and
//! [`Endpoint::handle_timeout`]; what it has to send comes out of
//! [`Endpoint::poll_transmit`], when it wants time next out of [`Endpoint::poll_timeout`],
//! and a change of the addresses it offers out of [`Endpoint::poll_event`]. No socket, no
//! task, no clock and no lock: `udp.rs` is the loop that owns it and the socket.
//!
//! Routing: a STUN binding request names its peer in USERNAME (`{our ufrag}:{theirs}`); the
//! address it came from is then that peer's, and so is every later datagram from it (DTLS,
//! SRTP, SRTCP). A datagram from an address nobody claimed is not routed.
//!
//! STUN servers (`webrtc.stun_servers`): asked for the socket's address outside (a binding
//! request, RFC 8489) once their addresses are known, again every [`STUN_RETRY`] until one
//! answers (for [`STUN_ROUNDS`] rounds), then every [`STUN_REFRESH`] (which keeps a NAT's
//! mapping alive). Their answers are taken before routing, by transaction id.
//!
//! TURN servers (`relay.rs`): what they relay from peers is unwrapped before routing and
//! marked with the relayed address it came to; a peer's packets from a relayed address are
//! wrapped for its server ([`Endpoint::send_relayed`]).
//!
//! Sending from the right address: a peer answers from the local address its browser's
//! packets arrived on ([`Paths`]), which each peer keeps for its own sends.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use str0m::ice::{StunMessage, StunMessageBuilder, TransId};
use tracing::{info, warn};
use turn_client_proto::stun::types::attribute::{
    AttributeType, MappedSocketAddr, XorMappedAddress,
};
use turn_client_proto::stun::types::message::{BINDING, Message, MessageClass};

use super::relay::{FromServer, RelayStatus, Relays};
use crate::config::TurnServer;

/// How often the STUN servers are asked again once they answered (keeps a NAT's mapping
/// of the port alive, and notices a new one), or once [`STUN_ROUNDS`] went unanswered.
pub(crate) const STUN_REFRESH: Duration = Duration::from_secs(30);

/// Between the first binding requests, until a server answers.
const STUN_RETRY: Duration = Duration::from_millis(500);

/// Rounds of binding requests at [`STUN_RETRY`] before asking only every [`STUN_REFRESH`].
const STUN_ROUNDS: u32 = 6;

/// STUN's magic cookie (RFC 8489 §5).
const STUN_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

/// One datagram for a peer.
#[derive(Debug)]
pub(crate) struct Datagram {
    /// When it was read.
    pub(crate) at: Instant,
    /// Who sent it.
    pub(crate) source: SocketAddr,
    /// The local address it was sent to (`None`: the socket's own address).
    pub(crate) local_ip: Option<IpAddr>,
    /// The relayed address (TURN) it came to, if it came through a relay.
    pub(crate) relayed: Option<SocketAddr>,
    /// The bytes.
    pub(crate) data: Bytes,
}

/// Where a datagram goes.
#[derive(Debug)]
pub(crate) enum Routed {
    /// To a peer (unwrapped if a TURN server relayed it).
    Peer { peer: u64, datagram: Datagram },
    /// A STUN or TURN server's answer, taken by the endpoint.
    Taken,
    /// Nobody's.
    Unrouted,
}

/// What the endpoint reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndpointEvent {
    /// The addresses it offers changed ([`Endpoint::addresses`]): a STUN answer, a TURN
    /// allocation made, lost, failed or given back.
    AddressesChanged,
}

/// A datagram the endpoint sends (to a STUN or TURN server), from the socket's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transmit {
    pub(crate) destination: SocketAddr,
    pub(crate) contents: Vec<u8>,
}

/// The addresses the endpoint offers, as last reported: what offers announce, what
/// `/api/webrtc` shows, and what a lease waits for.
#[derive(Debug, Clone, Default)]
pub struct Addresses {
    /// The socket's addresses outside, as the STUN servers last saw it (each once).
    pub(crate) reflexive: Vec<SocketAddr>,
    /// Each TURN relay's state.
    pub(crate) relays: Vec<RelayStatus>,
}

impl Addresses {
    /// The relayed addresses of `webrtc.turn_servers` allocated (a request's relays are
    /// its own).
    pub(crate) fn relayed(&self) -> Vec<SocketAddr> {
        self.relays
            .iter()
            .filter(|r| !r.requested)
            .filter_map(|r| r.relayed)
            .collect()
    }

    /// For the relays `ids`: the relayed addresses allocated, and whether any is still
    /// being allocated (neither allocated nor failed, or not published yet).
    pub(crate) fn leased(&self, ids: &[u64]) -> (Vec<SocketAddr>, bool) {
        let mine = self.relays.iter().filter(|r| ids.contains(&r.id));
        let relayed = mine.clone().filter_map(|r| r.relayed).collect();
        let pending = mine.clone().count() < ids.len()
            || mine
                .clone()
                .any(|r| r.relayed.is_none() && r.error.is_none());
        (relayed, pending)
    }

    /// Whether some of the `configured` servers of `webrtc.turn_servers` are not added yet
    /// (their names are being resolved) or have neither an allocation nor a failure.
    pub(crate) fn configured_undecided(&self, configured: usize) -> bool {
        let mut added = self.relays.iter().filter(|r| !r.requested);
        added.clone().count() < configured
            || added.any(|r| r.relayed.is_none() && r.error.is_none())
    }
}

/// The state of the WebRTC socket (see the module's documentation).
#[derive(Debug)]
pub(crate) struct Endpoint {
    /// Peers by their local ICE ufrag.
    by_ufrag: HashMap<String, u64>,
    /// Peers by the remote addresses that proved themselves with a STUN check.
    by_addr: HashMap<SocketAddr, u64>,
    /// Each peer's ufrag.
    ufrags: HashMap<u64, String>,
    stun: Stun,
    relays: Relays,
    /// When the relays' clients want time (`None`: no relay).
    relays_due: Option<Instant>,
    transmits: VecDeque<Transmit>,
    /// STUN answers changed what is offered (relays keep their own flag).
    changed: bool,
}

#[derive(Debug, Default)]
struct Stun {
    servers: Vec<StunServer>,
    /// The next round of binding requests (`None`: no server address known yet).
    due: Option<Instant>,
    unanswered_rounds: u32,
}

#[derive(Debug)]
struct StunServer {
    /// As configured (`host:port`), for logs.
    name: String,
    /// Its address, once resolved.
    addr: Option<SocketAddr>,
    /// The transaction id of the request in flight to it.
    asked: Option<[u8; 12]>,
    /// Its last answer: the socket's address outside.
    mapped: Option<SocketAddr>,
}

impl Endpoint {
    /// An endpoint for the socket at `local`, started at `now`, that will ask the STUN
    /// servers `stun_servers` (`host:port`, resolved by the caller:
    /// [`Endpoint::stun_server_resolved`]).
    pub(crate) fn new(local: SocketAddr, now: Instant, stun_servers: &[String]) -> Endpoint {
        let servers = stun_servers
            .iter()
            .map(|name| StunServer {
                name: name.clone(),
                addr: None,
                asked: None,
                mapped: None,
            })
            .collect();
        Endpoint {
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            ufrags: HashMap::new(),
            stun: Stun {
                servers,
                ..Stun::default()
            },
            relays: Relays::new(local, now),
            relays_due: None,
            transmits: VecDeque::new(),
            changed: false,
        }
    }

    /// Routes datagrams for the peer with local ICE ufrag `ufrag` to `peer`.
    pub(crate) fn register(&mut self, peer: u64, ufrag: &str) {
        self.by_ufrag.insert(ufrag.to_owned(), peer);
        self.ufrags.insert(peer, ufrag.to_owned());
    }

    /// Forgets every route of `peer`.
    pub(crate) fn unregister(&mut self, peer: u64) {
        if let Some(ufrag) = self.ufrags.remove(&peer) {
            if self.by_ufrag.get(&ufrag) == Some(&peer) {
                self.by_ufrag.remove(&ufrag);
            }
        }
        self.by_addr.retain(|_, p| *p != peer);
    }

    /// The STUN server `index` (of those given to [`Endpoint::new`]) is at `addr`.
    pub(crate) fn stun_server_resolved(&mut self, index: usize, addr: SocketAddr, now: Instant) {
        let Some(server) = self.stun.servers.get_mut(index) else {
            return;
        };
        if server.addr != Some(addr) {
            server.addr = Some(addr);
            server.asked = None;
        }
        // the first address known: the first round is now
        self.stun.due.get_or_insert(now);
    }

    /// Adds a server of `webrtc.turn_servers`, resolved to `server` (allocated at once,
    /// kept while the gateway runs).
    pub(crate) fn add_turn_server(
        &mut self,
        config: &TurnServer,
        server: SocketAddr,
        now: Instant,
    ) {
        self.relays.add(config, server);
        self.relays_due = Some(now);
    }

    /// A lease on a relay on a request's TURN server (`config` resolved to `server`): see
    /// `Relays::lease`.
    pub(crate) fn lease(
        &mut self,
        config: &TurnServer,
        server: SocketAddr,
        now: Instant,
    ) -> Option<u64> {
        let id = self.relays.lease(config, server)?;
        self.relays_due = Some(now);
        Some(id)
    }

    /// Gives back the leases `ids` (their peer ended).
    pub(crate) fn release(&mut self, ids: &[u64], now: Instant) {
        if ids.is_empty() {
            return;
        }
        self.relays.release(ids, now);
        self.relays_due = Some(now);
    }

    /// Lets `peers` (a peer's candidate addresses) send through the relays at `relayed`
    /// (those it is offered).
    pub(crate) fn permit(&mut self, peers: &[IpAddr], relayed: &[SocketAddr], now: Instant) {
        if peers.is_empty() || relayed.is_empty() {
            return;
        }
        let mut out = Vec::new();
        self.relays.permit(peers, relayed, now, &mut out);
        self.queue(out);
        // a permission asked for has timers of its own
        self.relays_due = Some(now);
    }

    /// Wraps a peer's packet to `destination` for the relay whose relayed address is
    /// `relayed`; false if it was not sent (no such relay; no permission yet, which is
    /// asked for).
    pub(crate) fn send_relayed(
        &mut self,
        relayed: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
        now: Instant,
    ) -> bool {
        let mut out = Vec::new();
        let sent = self
            .relays
            .send(relayed, destination, contents, now, &mut out);
        self.queue(out);
        if !sent {
            // a permission asked for instead: its timers
            self.relays_due = Some(now);
        }
        sent
    }

    /// Takes a datagram that came to the socket at `now`: a STUN or TURN server's answer
    /// (taken), or a peer's (routed, unwrapped if relayed).
    pub(crate) fn handle(&mut self, datagram: Datagram, now: Instant) -> Routed {
        let stun = is_stun(&datagram.data);
        if stun && self.take_stun_answer(&datagram) {
            return Routed::Taken;
        }
        let datagram = if self.relays.is_empty() {
            datagram
        } else {
            let mut out = Vec::new();
            let from = self
                .relays
                .receive(datagram.source, &datagram.data, now, &mut out);
            self.queue(out);
            match from {
                FromServer::NotRelayed => datagram,
                FromServer::Handled => {
                    self.relays_due = Some(now);
                    return Routed::Taken;
                }
                FromServer::Peer {
                    source,
                    relayed,
                    data,
                } => Datagram {
                    at: datagram.at,
                    source,
                    local_ip: None,
                    relayed: Some(relayed),
                    data,
                },
            }
        };
        // a relayed datagram is sniffed again: it is the peer's own
        let ufrag = if datagram.relayed.is_none() && !stun {
            None
        } else {
            stun_ufrag(&datagram.data)
        };
        let by_stun = ufrag.and_then(|ufrag| self.by_ufrag.get(ufrag)).copied();
        let peer = match by_stun {
            Some(peer) => {
                // the check claims its source address for that peer
                if self.by_addr.get(&datagram.source) != Some(&peer) {
                    self.by_addr.insert(datagram.source, peer);
                }
                Some(peer)
            }
            None => self.by_addr.get(&datagram.source).copied(),
        };
        match peer {
            Some(peer) => Routed::Peer { peer, datagram },
            None => Routed::Unrouted,
        }
    }

    /// Moves the STUN and TURN clients on to `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.stun.due.is_some_and(|due| due <= now) {
            self.ask_stun_servers(now);
        }
        if self.relays_due.is_some_and(|due| due <= now) {
            let (out, wake) = self.relays.drive(now);
            self.queue(out);
            self.relays_due = (!self.relays.is_empty()).then_some(wake);
        }
    }

    /// When [`Endpoint::handle_timeout`] is due next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        [self.stun.due, self.relays_due].into_iter().flatten().min()
    }

    /// A datagram to send (to a STUN or TURN server).
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// What changed since the last call.
    pub(crate) fn poll_event(&mut self) -> Option<EndpointEvent> {
        let relays = self.relays.take_changed();
        (std::mem::take(&mut self.changed) | relays).then_some(EndpointEvent::AddressesChanged)
    }

    /// The addresses offered now.
    pub(crate) fn addresses(&self) -> Addresses {
        let mut reflexive: Vec<SocketAddr> =
            self.stun.servers.iter().filter_map(|s| s.mapped).collect();
        reflexive.sort();
        reflexive.dedup();
        Addresses {
            reflexive,
            relays: self.relays.status(),
        }
    }

    fn queue(&mut self, out: Vec<(SocketAddr, Vec<u8>)>) {
        self.transmits
            .extend(out.into_iter().map(|(destination, contents)| Transmit {
                destination,
                contents,
            }));
    }

    /// One round: a binding request to each server whose address is known (it replaces
    /// the one in flight there); the next round in [`STUN_RETRY`] while none answered,
    /// [`STUN_REFRESH`] after.
    fn ask_stun_servers(&mut self, now: Instant) {
        for server in &mut self.stun.servers {
            let Some(addr) = server.addr else {
                continue;
            };
            let mut buf = [0u8; 64];
            let request = StunMessageBuilder::new()
                .binding()
                .request()
                .build(TransId::new());
            // no MESSAGE-INTEGRITY without a password: the HMAC is never called
            match request.to_bytes(None, &mut buf, |_, _| [0; 20]) {
                Ok(len) => {
                    let mut id = [0u8; 12];
                    id.copy_from_slice(&buf[8..20]);
                    server.asked = Some(id);
                    self.transmits.push_back(Transmit {
                        destination: addr,
                        contents: buf[..len].to_vec(),
                    });
                }
                Err(error) => {
                    warn!(server = %server.name, %error, "stun binding request not built")
                }
            }
        }
        let answered = self.stun.servers.iter().any(|s| s.mapped.is_some());
        if !answered {
            self.stun.unanswered_rounds += 1;
            if self.stun.unanswered_rounds == STUN_ROUNDS {
                let servers: Vec<&str> = self.stun.servers.iter().map(|s| &s.name[..]).collect();
                warn!(
                    ?servers,
                    rounds = STUN_ROUNDS,
                    every = ?STUN_REFRESH,
                    "no stun server answered: no address outside announced; asking again less often"
                );
            }
        }
        let wait = if answered || self.stun.unanswered_rounds >= STUN_ROUNDS {
            STUN_REFRESH
        } else {
            STUN_RETRY
        };
        self.stun.due = Some(now + wait);
    }

    /// Takes a STUN server's answer to a request in flight; false for anything else.
    fn take_stun_answer(&mut self, datagram: &Datagram) -> bool {
        let Some(server) = self
            .stun
            .servers
            .iter_mut()
            .find(|s| s.addr == Some(datagram.source) && s.asked.is_some())
        else {
            return false;
        };
        let Some(mapped) = server
            .asked
            .and_then(|id| binding_reply_address(&datagram.data, &id))
        else {
            return false;
        };
        server.asked = None;
        if server.mapped.replace(mapped) != Some(mapped) {
            info!(server = %server.name, %mapped, "stun: the webrtc port outside");
            self.changed = true;
        }
        true
    }
}

/// Where a peer's ICE candidates are: to give `str0m` the candidate a datagram came to,
/// and to send from the address the browser's packets arrived on.
#[derive(Debug, Clone)]
pub(crate) struct LocalCandidates {
    /// Announced addresses (host candidates).
    pub(crate) announced: Vec<SocketAddr>,
    /// Addresses of this machine among them (the rest are public addresses of a NAT).
    pub(crate) machine: Vec<IpAddr>,
}

/// One peer's paths: which local candidate each datagram came to, and which local address
/// to answer from. A socket bound to `0.0.0.0` lets the kernel pick the source of each
/// reply by route; a browser that checks its loopback candidate against the LAN one would
/// get the reply from 127.0.0.1, not the address it checked, and drop it. So each send
/// names its source: the announced candidate when it is an address of this machine, else
/// (NAT 1:1) the address that destination's packets arrived on.
#[derive(Debug)]
pub(crate) struct Paths {
    candidates: LocalCandidates,
    /// The socket's own address (a datagram whose local address is unknown came to it).
    local: SocketAddr,
    /// The local address each remote address's packets arrived on.
    arrived_on: HashMap<SocketAddr, IpAddr>,
}

impl Paths {
    /// The paths of a peer announced `candidates` on the socket at `local`.
    pub(crate) fn new(candidates: LocalCandidates, local: SocketAddr) -> Paths {
        Paths {
            candidates,
            local,
            arrived_on: HashMap::new(),
        }
    }

    /// Notes where `datagram` arrived; returns the local candidate it came to (`str0m`'s
    /// `destination`): its relayed address, the announced candidate with the address it
    /// came to, else (NAT 1:1: sent to the public address, arrived at a private one) the
    /// first of that family.
    pub(crate) fn arrived(&mut self, datagram: &Datagram) -> SocketAddr {
        if let Some(relayed) = datagram.relayed {
            return relayed;
        }
        let Some(ip) = datagram.local_ip else {
            return self.local;
        };
        self.arrived_on.insert(datagram.source, ip);
        let announced = &self.candidates.announced;
        announced
            .iter()
            .find(|c| c.ip() == ip)
            .or_else(|| announced.iter().find(|c| c.is_ipv4() == ip.is_ipv4()))
            .copied()
            .unwrap_or(self.local)
    }

    /// The local address to send from, for a packet `str0m` sends from `candidate` to
    /// `destination` (`None`: as the kernel routes it).
    pub(crate) fn source_for(
        &self,
        candidate: SocketAddr,
        destination: SocketAddr,
    ) -> Option<IpAddr> {
        if self.candidates.machine.contains(&candidate.ip()) {
            return Some(candidate.ip());
        }
        self.arrived_on.get(&destination).copied()
    }
}

/// Whether `data` looks like STUN: first two bits zero and the magic cookie (RFC 8489
/// §6); anything else on the socket is DTLS, RTP or RTCP.
fn is_stun(data: &[u8]) -> bool {
    data.len() >= 20 && data[0] <= 3 && data.get(4..8) == Some(&STUN_COOKIE[..])
}

/// The local ufrag a STUN binding request is addressed to (USERNAME `{ours}:{theirs}`).
fn stun_ufrag(data: &[u8]) -> Option<&str> {
    if !is_stun(data) {
        return None;
    }
    let message = StunMessage::parse(data).ok()?;
    let username = message.username()?;
    username.split(':').next()
}

/// The address a binding success reply to transaction `id` names (XOR-MAPPED-ADDRESS,
/// else MAPPED-ADDRESS; RFC 8489 §14.1-14.2). Read with `stun-types` (which the TURN client
/// brings): `str0m`'s STUN parser refuses a reply without MESSAGE-INTEGRITY, and a STUN
/// server's reply to a request without credentials has none.
fn binding_reply_address(data: &[u8], id: &[u8; 12]) -> Option<SocketAddr> {
    // another transaction's (or no STUN at all): not parsed
    if data.get(8..20) != Some(&id[..]) {
        return None;
    }
    let message = Message::from_bytes(data).ok()?;
    if !message.has_class(MessageClass::Success) || !message.has_method(BINDING) {
        return None;
    }
    if let Ok(xor) = message.attribute::<XorMappedAddress>() {
        return Some(xor.addr(message.transaction_id()));
    }
    let plain = message.raw_attribute(AttributeType::new(0x0001))?;
    MappedSocketAddr::from_raw(&plain).ok().map(|m| m.addr())
}

#[cfg(test)]
mod tests;
