//! The one UDP socket of every WebRTC peer: receives with the address each datagram was
//! sent to (`IP_PKTINFO`, through `quinn-udp`), routes it to its peer, and sends each peer's
//! packets from the address that peer's packets arrived on.
//!
//! Why the source address matters: a socket bound to `0.0.0.0` lets the kernel pick the
//! source of each reply by route. A browser gathers a candidate per interface (loopback and
//! the LAN address, say) and checks every pair; a reply to its loopback socket about the
//! LAN candidate would leave from 127.0.0.1, which the browser does not expect for that
//! pair, and drops. So each send names its source, the local address the peer's packets
//! came to.
//!
//! Routing: a STUN binding request names its peer in USERNAME (`{our ufrag}:{theirs}`); the
//! source address it came from is then that peer's, and so is every later datagram from it
//! (DTLS, SRTP, SRTCP). A datagram from an address nobody claimed is dropped (counted).
//!
//! STUN servers (`webrtc.stun_servers`): the socket asks each for its own address as seen
//! from outside (a binding request, RFC 8489), at start and every [`STUN_REFRESH`]; their
//! answers are taken out before routing, and the addresses they name are announced too
//! (as host candidates, like `webrtc.public_ips`: an ICE-lite peer announces no others).
//!
//! TURN servers (`webrtc.turn_servers`, `relay.rs`): the socket holds an allocation on
//! each; what the servers relay from peers is unwrapped here and routed like a datagram
//! that came directly (marked with the relayed address it came to), and a peer's packets
//! from a relayed address are wrapped for its server ([`UdpMux::send_relayed`]).

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use str0m::ice::{StunMessage, StunMessageBuilder, TransId};
use turn_client_proto::stun::types::attribute::{
    AttributeType, MappedSocketAddr, XorMappedAddress,
};
use turn_client_proto::stun::types::message::{BINDING, Message, MessageClass};

use super::clock;
use super::relay::{FromServer, Relays, ToServer};
use crate::config::TurnServer;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Datagrams queued for one peer before more are dropped (a peer task that stalls must
/// not stall the socket or the other peers).
pub(crate) const PEER_QUEUE: usize = 256;

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

/// Counters of the socket, for `/api/webrtc`.
#[derive(Debug, Default)]
pub(crate) struct UdpStats {
    pub(crate) received: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) unrouted: AtomicU64,
    pub(crate) peer_queue_full: AtomicU64,
    pub(crate) send_failed: AtomicU64,
    /// Peers' datagrams that came through a TURN relay (counted in `received` too).
    pub(crate) relayed_received: AtomicU64,
    /// Peers' datagrams sent through a TURN relay.
    pub(crate) relayed_sent: AtomicU64,
}

impl UdpStats {
    /// The counters as JSON.
    pub(crate) fn snapshot(&self) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "received": get(&self.received),
            "sent": get(&self.sent),
            "unrouted": get(&self.unrouted),
            "peer_queue_full": get(&self.peer_queue_full),
            "send_failed": get(&self.send_failed),
            "relayed_received": get(&self.relayed_received),
            "relayed_sent": get(&self.relayed_sent),
        })
    }
}

#[derive(Debug, Default)]
struct Routes {
    /// Peers by their local ICE ufrag.
    by_ufrag: HashMap<String, Route>,
    /// Peers by the remote addresses that proved themselves with a STUN check.
    by_addr: HashMap<SocketAddr, Route>,
}

#[derive(Debug, Clone)]
struct Route {
    peer: u64,
    ufrag: String,
    tx: mpsc::Sender<Datagram>,
}

/// How often the STUN servers are asked again once they answered (keeps a NAT's mapping
/// of the port alive, and notices a new one).
const STUN_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// Between the first binding requests, until a server answers.
const STUN_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

/// What the STUN servers were asked and what they answered.
#[derive(Debug, Default)]
struct Reflexive {
    /// The transaction id of the request in flight to each server.
    asked: HashMap<SocketAddr, [u8; 12]>,
    /// Each server's last answer: the socket's address outside.
    mapped: HashMap<SocketAddr, SocketAddr>,
}

/// The shared socket.
#[derive(Debug)]
pub(crate) struct UdpMux {
    socket: UdpSocket,
    state: UdpSocketState,
    local: SocketAddr,
    routes: Mutex<Routes>,
    reflexive: Mutex<Reflexive>,
    relays: Relays,
    /// Bumped when the addresses offered change.
    changes: Arc<tokio::sync::watch::Sender<u64>>,
    /// Whether any TURN server is configured (every datagram would otherwise lock
    /// `relays` to learn there is none).
    relaying: std::sync::atomic::AtomicBool,
    /// Wakes the relays' task when a peer's send or a server's answer moved a client.
    relay_moved: tokio::sync::Notify,
    pub(crate) stats: UdpStats,
}

impl UdpMux {
    /// Takes over a bound socket (must be called within a tokio runtime); `changes` is
    /// bumped when the addresses it offers change (a STUN answer, a TURN allocation).
    pub(crate) fn new(
        std_socket: std::net::UdpSocket,
        changes: Arc<tokio::sync::watch::Sender<u64>>,
    ) -> std::io::Result<UdpMux> {
        std_socket.set_nonblocking(true)?;
        let state = UdpSocketState::new((&std_socket).into())?;
        let socket = UdpSocket::from_std(std_socket)?;
        let local = socket.local_addr()?;
        Ok(UdpMux {
            socket,
            state,
            local,
            routes: Mutex::new(Routes::default()),
            reflexive: Mutex::new(Reflexive::default()),
            relays: Relays::new(local, clock(), Arc::clone(&changes)),
            changes,
            relaying: std::sync::atomic::AtomicBool::new(false),
            relay_moved: tokio::sync::Notify::new(),
            stats: UdpStats::default(),
        })
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn routes(&self) -> MutexGuard<'_, Routes> {
        // the map stays consistent if a holder panicked: each update is one insert/remove
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Routes datagrams for the peer with local ICE ufrag `ufrag` to `tx`.
    pub(crate) fn register(&self, peer: u64, ufrag: &str, tx: mpsc::Sender<Datagram>) {
        self.routes().by_ufrag.insert(
            ufrag.to_owned(),
            Route {
                peer,
                ufrag: ufrag.to_owned(),
                tx,
            },
        );
    }

    /// Forgets every route of `peer`.
    pub(crate) fn unregister(&self, peer: u64, ufrag: &str) {
        let mut routes = self.routes();
        if routes.by_ufrag.get(ufrag).is_some_and(|r| r.peer == peer) {
            routes.by_ufrag.remove(ufrag);
        }
        routes.by_addr.retain(|_, route| route.peer != peer);
    }

    /// How many datagrams one send may carry (UDP GSO; 1 where the kernel has none).
    pub(crate) fn max_segments(&self) -> usize {
        self.state.max_gso_segments().max(1)
    }

    /// Sends `contents` to `destination` from `source` (the local address the peer's
    /// packets arrived on; `None`: as the kernel routes it): one datagram, or with
    /// `segment_size` one datagram per that many bytes (GSO; the last may be shorter). A
    /// full socket buffer drops them (UDP: the peer's retransmission or the next frame
    /// covers it).
    pub(crate) fn send(
        &self,
        source: Option<IpAddr>,
        destination: SocketAddr,
        contents: &[u8],
        segment_size: Option<usize>,
    ) {
        let transmit = Transmit {
            destination,
            ecn: None,
            contents,
            segment_size,
            src_ip: source.filter(|ip| !ip.is_unspecified()),
        };
        let result = self.socket.try_io(Interest::WRITABLE, || {
            self.state.try_send((&self.socket).into(), &transmit)
        });
        match result {
            Ok(()) => {
                let datagrams = segment_size.map_or(1, |size| contents.len().div_ceil(size.max(1)));
                self.stats
                    .sent
                    .fetch_add(datagrams as u64, Ordering::Relaxed);
            }
            Err(error) => {
                let n = self.stats.send_failed.fetch_add(1, Ordering::Relaxed);
                // a burst of these is one fault: say it once, then per thousand
                if n.is_multiple_of(1000) {
                    debug!(%destination, %error, failed = n + 1, "webrtc send failed");
                }
            }
        }
    }

    /// Reads and routes datagrams until `shutdown`.
    pub(crate) async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let batch = quinn_udp::BATCH_SIZE.min(8);
        let segment = 2048 * self.state.gro_segments().max(1);
        let mut buffers: Vec<Vec<u8>> = (0..batch).map(|_| vec![0u8; segment]).collect();
        let mut metas = vec![RecvMeta::default(); batch];
        loop {
            let read = tokio::select! {
                () = shutdown.cancelled() => return,
                read = self.socket.async_io(Interest::READABLE, || {
                    let mut slices: Vec<IoSliceMut<'_>> =
                        buffers.iter_mut().map(|b| IoSliceMut::new(b)).collect();
                    self.state.recv((&self.socket).into(), &mut slices, &mut metas)
                }) => read,
            };
            let count = match read {
                Ok(count) => count,
                Err(error) => {
                    // ICMP errors of one peer surface here on some kernels: never fatal
                    debug!(%error, "webrtc socket read");
                    continue;
                }
            };
            let at = clock();
            for (meta, buffer) in metas.iter().zip(&buffers).take(count) {
                let stride = meta.stride.max(1);
                for datagram in buffer[..meta.len].chunks(stride) {
                    self.stats.received.fetch_add(1, Ordering::Relaxed);
                    self.route(Datagram {
                        at,
                        source: meta.addr,
                        local_ip: meta.dst_ip,
                        relayed: None,
                        data: Bytes::copy_from_slice(datagram),
                    });
                }
            }
        }
    }

    fn reflexive(&self) -> MutexGuard<'_, Reflexive> {
        // two maps, each updated by one insert: consistent after a panic
        self.reflexive
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The socket's addresses outside, as the STUN servers last saw it (each once).
    pub(crate) fn reflexive_addrs(&self) -> Vec<SocketAddr> {
        let mut addrs: Vec<SocketAddr> = self.reflexive().mapped.values().copied().collect();
        addrs.sort();
        addrs.dedup();
        addrs
    }

    /// Asks each of `servers` (`host:port`) for the socket's address outside: at once, again
    /// every [`STUN_RETRY`] until it answers, then every [`STUN_REFRESH`], until `shutdown`.
    pub(crate) async fn discover(
        self: Arc<Self>,
        servers: Vec<String>,
        shutdown: CancellationToken,
    ) {
        let mut warned = std::collections::HashSet::new();
        let mut unanswered_rounds = 0u32;
        loop {
            for server in &servers {
                match self.resolve(server).await {
                    Ok(addr) => self.ask(addr),
                    Err(error) => {
                        if warned.insert(server.clone()) {
                            warn!(%server, %error, "stun server not resolved; asked again later");
                        }
                    }
                }
            }
            let answered = !self.reflexive().mapped.is_empty();
            if !answered {
                unanswered_rounds += 1;
                if unanswered_rounds == 6 {
                    warn!(
                        servers = ?servers,
                        error = "no answer to 6 binding requests",
                        "no stun server answered: no address outside announced; asking every 30 s"
                    );
                }
            }
            let wait = if answered || unanswered_rounds >= 6 {
                STUN_REFRESH
            } else {
                STUN_RETRY
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// The address of `server` (`host:port`) of the socket's family (a v4 socket cannot
    /// reach a v6 server).
    async fn resolve(&self, server: &str) -> Result<SocketAddr, String> {
        let mut addrs = tokio::net::lookup_host(server)
            .await
            .map_err(|e| e.to_string())?;
        addrs
            .find(|a| a.is_ipv4() == self.local.is_ipv4())
            .ok_or_else(|| "no address of the socket's family".to_owned())
    }

    /// Waits until `decided` holds for the relays (checked again whenever an allocation is
    /// made or fails), or `deadline`.
    async fn relays_until(&self, deadline: tokio::time::Instant, decided: impl Fn() -> bool) {
        let mut changed = self.relays.watch();
        while !decided() {
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    }

    /// Sends a binding request to `server` (it replaces the one in flight there).
    fn ask(&self, server: SocketAddr) {
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
                self.reflexive().asked.insert(server, id);
                self.send(None, server, &buf[..len], None);
            }
            Err(error) => warn!(%server, %error, "stun binding request not built"),
        }
    }

    /// Takes a STUN server's answer to a request in flight; false for anything else.
    fn take_stun_answer(&self, datagram: &Datagram) -> bool {
        let data = &datagram.data[..];
        if data.len() < 20 || data[0] > 3 || data[4..8] != STUN_COOKIE {
            return false;
        }
        let mut reflexive = self.reflexive();
        let Some(id) = reflexive.asked.get(&datagram.source).copied() else {
            return false;
        };
        let Some(mapped) = binding_reply_address(data, &id) else {
            return false;
        };
        reflexive.asked.remove(&datagram.source);
        let before = reflexive.mapped.insert(datagram.source, mapped);
        if before != Some(mapped) {
            info!(server = %datagram.source, %mapped, "stun: the webrtc port outside");
            self.changes.send_modify(|n| *n += 1);
        }
        true
    }

    /// Each TURN relay's state.
    pub(crate) fn relay_status(&self) -> Vec<super::relay::RelayStatus> {
        self.relays.status()
    }

    /// The relayed addresses allocated on the TURN servers now.
    pub(crate) fn relayed_addrs(&self) -> Vec<SocketAddr> {
        if !self.relaying.load(Ordering::Relaxed) {
            return Vec::new();
        }
        self.relays.relayed()
    }

    /// Allocates a relayed address on each of `servers` and keeps them (refreshes, asks
    /// again after a failure) until `shutdown`.
    pub(crate) async fn relay(
        self: Arc<Self>,
        servers: Vec<TurnServer>,
        shutdown: CancellationToken,
    ) {
        let mut unresolved = servers;
        let mut warned = std::collections::HashSet::new();
        loop {
            let mut still = Vec::new();
            for server in unresolved {
                match self.resolve(&server.server).await {
                    Ok(addr) => {
                        self.relays.add(&server, addr);
                        self.relaying.store(true, Ordering::Relaxed);
                    }
                    Err(error) => {
                        if warned.insert(server.server.clone()) {
                            warn!(server = %server.server, %error, "turn server not resolved; asked again every 10 s");
                        }
                        still.push(server);
                    }
                }
            }
            unresolved = still;
            let (out, mut wake) = self.relays.drive(clock());
            self.send_to_servers(out, false);
            if !unresolved.is_empty() {
                wake = wake.min(clock() + super::relay::REALLOCATE_AFTER);
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(wake.into()) => {}
                () = self.relay_moved.notified() => {}
            }
        }
    }

    /// Leases a relay on each of a request's TURN `servers` and waits (at most `wait`) for
    /// their allocations: the lease ids (to give back when the peer ends) and the relayed
    /// addresses allocated by then.
    pub(crate) async fn lease_relays(
        &self,
        servers: &[TurnServer],
        wait: std::time::Duration,
    ) -> (Vec<u64>, Vec<SocketAddr>) {
        let deadline = tokio::time::Instant::now() + wait;
        let mut ids = Vec::new();
        for server in servers {
            let found = tokio::time::timeout_at(deadline, self.resolve(&server.server)).await;
            let Ok(Ok(addr)) = found else {
                debug!(server = %server.server, "requested turn server not resolved");
                continue;
            };
            match self.relays.lease(server, addr) {
                Some(id) => ids.push(id),
                None => warn!(
                    server = %server.server,
                    limit = super::relay::MAX_REQUESTED,
                    "too many requested turn relays at once; this one is not allocated"
                ),
            }
        }
        if ids.is_empty() {
            return (ids, Vec::new());
        }
        self.relaying.store(true, Ordering::Relaxed);
        self.relay_moved.notify_one();
        self.relays_until(deadline, || !self.relays.leased(&ids).1)
            .await;
        let (relayed, _) = self.relays.leased(&ids);
        (ids, relayed)
    }

    /// Waits (at most `wait`) until each of the `configured` servers of
    /// `webrtc.turn_servers` has an allocation or failed: at start, before their first
    /// answers.
    pub(crate) async fn configured_relays_ready(
        &self,
        configured: usize,
        wait: std::time::Duration,
    ) {
        let deadline = tokio::time::Instant::now() + wait;
        self.relays_until(deadline, || !self.relays.configured_undecided(configured))
            .await;
    }

    /// Whether some of the `configured` servers of `webrtc.turn_servers` have neither an
    /// allocation nor a failure yet.
    pub(crate) fn configured_relays_undecided(&self, configured: usize) -> bool {
        self.relays.configured_undecided(configured)
    }

    /// Gives back the leases `ids` (their peer ended).
    pub(crate) fn release_relays(&self, ids: &[u64]) {
        if !ids.is_empty() {
            self.relays.release(ids, clock());
            self.relay_moved.notify_one();
        }
    }

    /// Sends `contents` to `destination` through the relay whose relayed address is
    /// `relayed` (a peer's packet from its relay candidate).
    pub(crate) fn send_relayed(
        &self,
        relayed: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) {
        let mut out = Vec::new();
        let sent = self
            .relays
            .send(relayed, destination, contents, clock(), &mut out);
        if sent {
            self.stats.relayed_sent.fetch_add(1, Ordering::Relaxed);
        }
        // a peer's packet changes no timer; a permission asked for instead does
        self.send_to_servers(out, !sent);
    }

    /// Lets `peers` (a peer's candidate addresses) send through the relays at `relayed`
    /// (those it is offered).
    pub(crate) fn permit(&self, peers: &[IpAddr], relayed: &[SocketAddr]) {
        if peers.is_empty() || relayed.is_empty() {
            return;
        }
        let mut out = Vec::new();
        self.relays.permit(peers, relayed, clock(), &mut out);
        self.send_to_servers(out, true);
    }

    /// Sends what the TURN clients wrote; with `moved`, has their task look at their
    /// timers again (a request went out, or an answer came).
    fn send_to_servers(&self, out: Vec<ToServer>, moved: bool) {
        if out.is_empty() && !moved {
            return;
        }
        for (server, data) in out {
            self.send(None, server, &data, None);
        }
        if moved {
            self.relay_moved.notify_one();
        }
    }

    /// A datagram as its peer sent it: unwrapped if a TURN server relayed it; `None` if it
    /// was the server's own (handled here).
    fn unrelay(&self, datagram: Datagram) -> Option<Datagram> {
        if !self.relaying.load(Ordering::Relaxed) {
            return Some(datagram);
        }
        let mut out = Vec::new();
        let from = self
            .relays
            .receive(datagram.source, &datagram.data, datagram.at, &mut out);
        self.send_to_servers(out, matches!(from, FromServer::Handled));
        match from {
            FromServer::NotRelayed => Some(datagram),
            FromServer::Handled => None,
            FromServer::Peer {
                source,
                relayed,
                data,
            } => {
                self.stats.relayed_received.fetch_add(1, Ordering::Relaxed);
                Some(Datagram {
                    at: datagram.at,
                    source,
                    local_ip: None,
                    relayed: Some(relayed),
                    data,
                })
            }
        }
    }

    fn route(&self, datagram: Datagram) {
        if self.take_stun_answer(&datagram) {
            return;
        }
        let Some(datagram) = self.unrelay(datagram) else {
            return;
        };
        let route = {
            let mut routes = self.routes();
            let by_stun = stun_ufrag(&datagram.data)
                .and_then(|ufrag| routes.by_ufrag.get(ufrag))
                .cloned();
            match by_stun {
                Some(route) => {
                    if routes.by_addr.get(&datagram.source).map(|r| r.peer) != Some(route.peer) {
                        routes.by_addr.insert(datagram.source, route.clone());
                    }
                    Some(route)
                }
                None => routes.by_addr.get(&datagram.source).cloned(),
            }
        };
        let Some(route) = route else {
            self.stats.unrouted.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match route.tx.try_send(datagram) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                let n = self.stats.peer_queue_full.fetch_add(1, Ordering::Relaxed);
                if n.is_multiple_of(1000) {
                    warn!(
                        peer = route.peer,
                        "webrtc peer is not keeping up: datagrams dropped"
                    );
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.unregister(route.peer, &route.ufrag);
            }
        }
    }
}

/// STUN's magic cookie (RFC 8489 §5).
const STUN_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

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

/// The local ufrag a STUN binding request is addressed to (USERNAME `{ours}:{theirs}`).
fn stun_ufrag(data: &[u8]) -> Option<&str> {
    // STUN: first two bits zero and the magic cookie (RFC 5389); anything else is DTLS/RTP
    if data.len() < 20 || data[0] > 3 || data[4..8] != STUN_COOKIE {
        return None;
    }
    let message = StunMessage::parse(data).ok()?;
    let username = message.username()?;
    username.split(':').next()
}

/// Most bytes a [`SendBatch`] gathers (its one buffer, kept for the peer's life): a frame
/// of a few packets; a key frame leaves in several sends.
const MAX_BATCH: usize = 16 * 1024;

/// Consecutive packets of one peer for one destination, gathered to leave in one `sendmsg`
/// (UDP GSO): a video frame's RTP packets are the same size but the last, so a frame goes
/// out in one system call instead of one per packet. Where the kernel has no GSO
/// ([`UdpMux::max_segments`] is 1) every packet is sent on its own, as before.
#[derive(Debug, Default)]
pub(crate) struct SendBatch {
    buf: Vec<u8>,
    source: Option<IpAddr>,
    destination: Option<SocketAddr>,
    /// The size of every packet but the last.
    segment: usize,
    count: usize,
}

impl SendBatch {
    /// Adds one packet, sending what is gathered first if this one cannot join it (another
    /// address, larger than the first, after a shorter one, or the batch is full).
    pub(crate) fn push(
        &mut self,
        mux: &UdpMux,
        source: Option<IpAddr>,
        destination: SocketAddr,
        contents: &[u8],
    ) {
        let joins = self.count > 0
            && self.destination == Some(destination)
            && self.source == source
            && contents.len() <= self.segment
            && self.buf.len() == self.count * self.segment
            && self.buf.len() + contents.len() <= MAX_BATCH
            && self.count < mux.max_segments();
        if !joins {
            self.flush(mux);
            self.segment = contents.len();
            self.source = source;
            self.destination = Some(destination);
            if self.buf.capacity() == 0 {
                self.buf.reserve_exact(MAX_BATCH.max(contents.len()));
            }
        }
        self.buf.extend_from_slice(contents);
        self.count += 1;
    }

    /// Sends what is gathered.
    pub(crate) fn flush(&mut self, mux: &UdpMux) {
        let Some(destination) = self.destination.filter(|_| self.count > 0) else {
            return;
        };
        let segment_size = (self.count > 1).then_some(self.segment);
        mux.send(self.source, destination, &self.buf, segment_size);
        self.buf.clear();
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_stun_has_no_ufrag() {
        assert_eq!(stun_ufrag(b""), None);
        assert_eq!(stun_ufrag(&[0x16; 40]), None); // DTLS
        assert_eq!(stun_ufrag(&[0x80; 40]), None); // RTP
    }

    fn from_hex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn a_stun_servers_binding_reply_names_the_address_it_saw() {
        // coturn 4.6.1's reply to a binding request from 127.0.0.1:55309: XOR-MAPPED-ADDRESS,
        // MAPPED-ADDRESS, RESPONSE-ORIGIN, SOFTWARE, no MESSAGE-INTEGRITY
        let reply = from_hex(
            "0101003c2112a442c19e0360db4d07c3a68b0ec4002000080001f91f5e12a443000100080001d80d7f000001802b0008000187dd7f00000180220014436f7475726e2d342e362e312027476f72737427",
        );
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

    #[tokio::test]
    async fn a_batch_leaves_as_the_packets_it_gathered() {
        let bind = || std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mux = UdpMux::new(bind(), Arc::default()).unwrap();
        let (near, far) = (bind(), bind());
        let source = Some(IpAddr::from([127, 0, 0, 1]));
        let packet = |n: usize, fill: u8| vec![fill; n];
        // the reactor learns the socket is writable (as it has long before a peer sends)
        mux.socket.writable().await.unwrap();
        let mut batch = SendBatch::default();
        // a frame (two full packets and a short last), then audio to another address,
        // then a packet larger than the first of its batch
        let sent = [
            (&near, packet(1200, 1)),
            (&near, packet(1200, 2)),
            (&near, packet(300, 3)),
            (&far, packet(160, 4)),
            (&near, packet(100, 5)),
            (&near, packet(200, 6)),
        ];
        for (to, contents) in &sent {
            batch.push(&mux, source, to.local_addr().unwrap(), contents);
        }
        batch.flush(&mux);
        for (socket, want) in [(&near, vec![1, 2, 3, 5, 6]), (&far, vec![4])] {
            socket
                .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            for fill in want {
                let mut buf = [0u8; 2048];
                let (n, from) = socket.recv_from(&mut buf).unwrap();
                let (_, expected) = sent.iter().find(|(_, p)| p[0] == fill).unwrap();
                assert_eq!(&buf[..n], &expected[..], "packet {fill}");
                assert_eq!(from, mux.local_addr());
            }
        }
        assert_eq!(mux.stats.sent.load(Ordering::Relaxed), 6);
        assert!(mux.max_segments() >= 1);
    }
}
