//! The one UDP socket of every WebRTC peer, and the thin loop around it: reads with the
//! address each datagram was sent to (`IP_PKTINFO`, through `quinn-udp`), hands it to the
//! [`Endpoint`] (sans-IO: routing, STUN, TURN) and the datagram to the peer it names; sends
//! what the endpoint has to send; performs the commands the rest of the WebRTC side sends
//! it (a peer registered or gone, a relay leased, a relayed packet); and publishes the
//! endpoint's addresses ([`Addresses`]) on a watch channel. It owns the endpoint: no lock.
//!
//! Peers send their own packets on the socket ([`UdpMux::send`], through [`SendBatch`]: a
//! frame's RTP packets in one `sendmsg` with UDP GSO), from the source their [`Paths`]
//! name; only packets from a relayed address go through the loop (the endpoint wraps them
//! for their TURN server).
//!
//! [`Paths`]: super::endpoint::Paths

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::clock;
use super::endpoint::{Addresses, Datagram, Endpoint, Routed, STUN_REFRESH};
use super::relay::REALLOCATE_AFTER;
use crate::config::TurnServer;

/// Datagrams queued for one peer before more are dropped (a peer task that stalls must
/// not stall the socket or the other peers).
pub(crate) const PEER_QUEUE: usize = 256;

/// Peers' packets from a relayed address queued for the loop before more are dropped.
const RELAYED_QUEUE: usize = 1024;

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

/// What the rest of the WebRTC side asks of the loop.
#[derive(Debug)]
enum Command {
    /// Route the datagrams of the peer with local ufrag `ufrag` to `tx`.
    Register {
        peer: u64,
        ufrag: String,
        tx: mpsc::Sender<Datagram>,
    },
    /// The peer ended.
    Unregister { peer: u64 },
    /// Allow a peer's candidate addresses through the relays it is offered.
    Permit {
        peers: Vec<IpAddr>,
        relayed: Vec<SocketAddr>,
    },
    /// A relay on a request's TURN server: its lease id (`None`: too many).
    Lease {
        config: TurnServer,
        server: SocketAddr,
        reply: oneshot::Sender<Option<u64>>,
    },
    /// Leases given back.
    Release { ids: Vec<u64> },
    /// A STUN server of `webrtc.stun_servers` (by index) resolved.
    StunServer { index: usize, addr: SocketAddr },
    /// A TURN server of `webrtc.turn_servers` resolved.
    TurnServer {
        config: TurnServer,
        addr: SocketAddr,
    },
}

/// A peer's packet from a relayed address, for the endpoint to wrap.
#[derive(Debug)]
struct RelayedPacket {
    relayed: SocketAddr,
    destination: SocketAddr,
    contents: Vec<u8>,
}

/// The shared socket: what peers and offers use (sends, and messages to the loop).
#[derive(Debug)]
pub(crate) struct UdpMux {
    socket: UdpSocket,
    state: UdpSocketState,
    local: SocketAddr,
    commands_tx: mpsc::Sender<Command>,
    relayed_tx: mpsc::Sender<RelayedPacket>,
    addresses: watch::Receiver<Addresses>,
    pub(crate) stats: UdpStats,
}

/// The loop's own half: the endpoint and the peers' queues.
#[derive(Debug)]
pub(crate) struct UdpLoop {
    endpoint: Endpoint,
    peers: HashMap<u64, mpsc::Sender<Datagram>>,
    commands_rx: mpsc::Receiver<Command>,
    relayed_rx: mpsc::Receiver<RelayedPacket>,
    addresses_tx: watch::Sender<Addresses>,
}

impl UdpMux {
    /// Takes over a bound socket (must be called within a tokio runtime): the socket's
    /// shared half and its loop. The loop publishes the addresses it offers on
    /// `addresses_tx`; it asks `stun_servers` (resolved by [`resolve_servers`]);
    /// `max_peers` sizes its command queue.
    pub(crate) fn new(
        std_socket: std::net::UdpSocket,
        addresses_tx: watch::Sender<Addresses>,
        stun_servers: &[String],
        max_peers: usize,
    ) -> std::io::Result<(UdpMux, UdpLoop)> {
        std_socket.set_nonblocking(true)?;
        let state = UdpSocketState::new((&std_socket).into())?;
        let socket = UdpSocket::from_std(std_socket)?;
        let local = socket.local_addr()?;
        // each peer sends at most a register, a permit, a release and an unregister; the
        // loop takes them between reads
        let (commands_tx, commands_rx) = mpsc::channel(256 + 4 * max_peers);
        let (relayed_tx, relayed_rx) = mpsc::channel(RELAYED_QUEUE);
        let mux = UdpMux {
            socket,
            state,
            local,
            commands_tx,
            relayed_tx,
            addresses: addresses_tx.subscribe(),
            stats: UdpStats::default(),
        };
        let udp_loop = UdpLoop {
            endpoint: Endpoint::new(local, clock(), stun_servers),
            peers: HashMap::new(),
            commands_rx,
            relayed_rx,
            addresses_tx,
        };
        Ok((mux, udp_loop))
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The addresses offered, as the loop last published them.
    pub(crate) fn addresses(&self) -> watch::Ref<'_, Addresses> {
        self.addresses.borrow()
    }

    /// Has the datagrams for the peer with local ICE ufrag `ufrag` routed to `tx`; false
    /// if the loop cannot take it (its queue is full, or it ended).
    pub(crate) fn register(&self, peer: u64, ufrag: &str, tx: mpsc::Sender<Datagram>) -> bool {
        let command = Command::Register {
            peer,
            ufrag: ufrag.to_owned(),
            tx,
        };
        self.commands_tx.try_send(command).is_ok()
    }

    /// Forgets every route of `peer`.
    pub(crate) async fn unregister(&self, peer: u64) {
        // the loop gone (shutdown): nothing to forget
        let _ = self.commands_tx.send(Command::Unregister { peer }).await;
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

    /// Sends `contents` to `destination` through the relay whose relayed address is
    /// `relayed` (a peer's packet from its relay candidate; the loop wraps it). Dropped
    /// if the loop is that far behind.
    pub(crate) fn send_relayed(
        &self,
        relayed: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) {
        let packet = RelayedPacket {
            relayed,
            destination,
            contents: contents.to_vec(),
        };
        if self.relayed_tx.try_send(packet).is_err() {
            self.stats.send_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lets `peers` (a peer's candidate addresses) send through the relays at `relayed`
    /// (those it is offered).
    pub(crate) fn permit(&self, peers: &[IpAddr], relayed: &[SocketAddr]) {
        if peers.is_empty() || relayed.is_empty() {
            return;
        }
        let command = Command::Permit {
            peers: peers.to_vec(),
            relayed: relayed.to_vec(),
        };
        if self.commands_tx.try_send(command).is_err() {
            // the browser's checks through the relay then ask for it (and ICE sends again)
            debug!("turn permissions not asked for ahead: the webrtc loop is behind");
        }
    }

    /// Gives back the leases `ids` (their peer ended).
    pub(crate) fn release_relays(&self, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        let command = Command::Release { ids: ids.to_vec() };
        if self.commands_tx.try_send(command).is_err() {
            warn!(
                ?ids,
                "turn relay leases not given back: the webrtc loop is behind or gone"
            );
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
            let found =
                tokio::time::timeout_at(deadline, resolve(&server.server, self.local.is_ipv4()))
                    .await;
            let Ok(Ok(addr)) = found else {
                debug!(server = %server.server, "requested turn server not resolved");
                continue;
            };
            let (reply, leased) = oneshot::channel();
            let command = Command::Lease {
                config: server.clone(),
                server: addr,
                reply,
            };
            if self.commands_tx.send(command).await.is_err() {
                break;
            }
            match leased.await {
                Ok(Some(id)) => ids.push(id),
                Ok(None) => warn!(
                    server = %server.server,
                    limit = super::relay::MAX_REQUESTED,
                    "too many requested turn relays at once; this one is not allocated"
                ),
                Err(_) => break,
            }
        }
        if ids.is_empty() {
            return (ids, Vec::new());
        }
        self.addresses_until(deadline, |a| !a.leased(&ids).1).await;
        let (relayed, _) = self.addresses().leased(&ids);
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
        self.addresses_until(deadline, |a| !a.configured_undecided(configured))
            .await;
    }

    /// Waits until `decided` holds for the addresses (checked again whenever they change),
    /// or `deadline`.
    async fn addresses_until(
        &self,
        deadline: tokio::time::Instant,
        decided: impl Fn(&Addresses) -> bool,
    ) {
        let mut changed = self.addresses.clone();
        // a timeout or the loop gone: decided as far as it goes
        let _ = tokio::time::timeout_at(deadline, changed.wait_for(|a| decided(a))).await;
    }
}

impl UdpLoop {
    /// Reads and routes datagrams, performs commands and the endpoint's timers, until
    /// `shutdown`.
    pub(crate) async fn run(mut self, mux: std::sync::Arc<UdpMux>, shutdown: CancellationToken) {
        let batch = quinn_udp::BATCH_SIZE.min(8);
        let segment = 2048 * mux.state.gro_segments().max(1);
        let mut buffers: Vec<Vec<u8>> = (0..batch).map(|_| vec![0u8; segment]).collect();
        let mut metas = vec![RecvMeta::default(); batch];
        loop {
            self.flush(&mux);
            let due = self.endpoint.poll_timeout();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                Some(command) = self.commands_rx.recv() => self.command(command, clock()),
                Some(packet) = self.relayed_rx.recv() => self.send_relayed(&mux, &packet),
                () = sleep_until(due) => self.endpoint.handle_timeout(clock()),
                read = mux.socket.async_io(Interest::READABLE, || {
                    let mut slices: Vec<IoSliceMut<'_>> =
                        buffers.iter_mut().map(|b| IoSliceMut::new(b)).collect();
                    mux.state.recv((&mux.socket).into(), &mut slices, &mut metas)
                }) => {
                    let count = match read {
                        Ok(count) => count,
                        Err(error) => {
                            // ICMP errors of one peer surface here on some kernels: never fatal
                            debug!(%error, "webrtc socket read");
                            continue;
                        }
                    };
                    // a peer registered before its answer left: its first check, read now,
                    // finds its route
                    while let Ok(command) = self.commands_rx.try_recv() {
                        self.command(command, clock());
                    }
                    let at = clock();
                    for (meta, buffer) in metas.iter().zip(&buffers).take(count) {
                        let stride = meta.stride.max(1);
                        for datagram in buffer[..meta.len].chunks(stride) {
                            mux.stats.received.fetch_add(1, Ordering::Relaxed);
                            self.route(&mux, Datagram {
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
        }
    }

    fn command(&mut self, command: Command, now: Instant) {
        match command {
            Command::Register { peer, ufrag, tx } => {
                self.endpoint.register(peer, &ufrag);
                self.peers.insert(peer, tx);
            }
            Command::Unregister { peer } => {
                self.endpoint.unregister(peer);
                self.peers.remove(&peer);
            }
            Command::Permit { peers, relayed } => self.endpoint.permit(&peers, &relayed, now),
            Command::Lease {
                config,
                server,
                reply,
            } => {
                let id = self.endpoint.lease(&config, server, now);
                // the asker gone (its request timed out): the lease is given back below
                if reply.send(id).is_err() {
                    if let Some(id) = id {
                        self.endpoint.release(&[id], now);
                    }
                }
            }
            Command::Release { ids } => self.endpoint.release(&ids, now),
            Command::StunServer { index, addr } => {
                self.endpoint.stun_server_resolved(index, addr, now);
            }
            Command::TurnServer { config, addr } => {
                self.endpoint.add_turn_server(&config, addr, now);
            }
        }
    }

    fn send_relayed(&mut self, mux: &UdpMux, packet: &RelayedPacket) {
        let sent = self.endpoint.send_relayed(
            packet.relayed,
            packet.destination,
            &packet.contents,
            clock(),
        );
        if sent {
            mux.stats.relayed_sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends what the endpoint has to send; publishes its addresses if they changed.
    fn flush(&mut self, mux: &UdpMux) {
        while let Some(transmit) = self.endpoint.poll_transmit() {
            mux.send(None, transmit.destination, &transmit.contents, None);
        }
        if self.endpoint.poll_event().is_some() {
            self.addresses_tx.send_replace(self.endpoint.addresses());
        }
    }

    fn route(&mut self, mux: &UdpMux, datagram: Datagram) {
        let now = datagram.at;
        let (peer, datagram) = match self.endpoint.handle(datagram, now) {
            Routed::Peer { peer, datagram } => (peer, datagram),
            Routed::Taken => return,
            Routed::Unrouted => {
                mux.stats.unrouted.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if datagram.relayed.is_some() {
            mux.stats.relayed_received.fetch_add(1, Ordering::Relaxed);
        }
        let Some(tx) = self.peers.get(&peer) else {
            mux.stats.unrouted.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match tx.try_send(datagram) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                let n = mux.stats.peer_queue_full.fetch_add(1, Ordering::Relaxed);
                if n.is_multiple_of(1000) {
                    warn!(peer, "webrtc peer is not keeping up: datagrams dropped");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.endpoint.unregister(peer);
                self.peers.remove(&peer);
            }
        }
    }
}

/// Sleeps until `due` (forever without one).
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due.into()).await,
        None => std::future::pending().await,
    }
}

/// Resolves the servers of `webrtc.stun_servers` and `webrtc.turn_servers` for the loop
/// (DNS is the one thing the loop must not wait for): the STUN servers at once and again
/// every [`STUN_REFRESH`] (a server's address may change), a TURN server until it
/// resolves (every [`REALLOCATE_AFTER`]). Each name that does not resolve is logged once.
pub(crate) async fn resolve_servers(
    mux: std::sync::Arc<UdpMux>,
    stun: Vec<String>,
    turn: Vec<TurnServer>,
    shutdown: CancellationToken,
) {
    let ipv4 = mux.local.is_ipv4();
    let mut unresolved = turn;
    let mut warned = std::collections::HashSet::new();
    loop {
        let mut commands = Vec::new();
        let mut stun_unresolved = false;
        for (index, server) in stun.iter().enumerate() {
            match resolve(server, ipv4).await {
                Ok(addr) => commands.push(Command::StunServer { index, addr }),
                Err(error) => {
                    stun_unresolved = true;
                    if warned.insert(server.clone()) {
                        warn!(%server, %error, "stun server not resolved; asked again later");
                    }
                }
            }
        }
        let mut still = Vec::new();
        for server in unresolved {
            match resolve(&server.server, ipv4).await {
                Ok(addr) => commands.push(Command::TurnServer {
                    config: server,
                    addr,
                }),
                Err(error) => {
                    if warned.insert(server.server.clone()) {
                        warn!(server = %server.server, %error, "turn server not resolved; asked again every 10 s");
                    }
                    still.push(server);
                }
            }
        }
        unresolved = still;
        for command in commands {
            if mux.commands_tx.send(command).await.is_err() {
                return;
            }
        }
        let wait = if !unresolved.is_empty() || stun_unresolved {
            REALLOCATE_AFTER
        } else if !stun.is_empty() {
            STUN_REFRESH
        } else {
            return;
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// The address of `server` (`host:port`) of the socket's family (a v4 socket cannot
/// reach a v6 server).
async fn resolve(server: &str, ipv4: bool) -> Result<SocketAddr, String> {
    let mut addrs = tokio::net::lookup_host(server)
        .await
        .map_err(|e| e.to_string())?;
    addrs
        .find(|a| a.is_ipv4() == ipv4)
        .ok_or_else(|| "no address of the socket's family".to_owned())
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

    #[tokio::test]
    async fn a_batch_leaves_as_the_packets_it_gathered() {
        let bind = || std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (mux, _loop) =
            UdpMux::new(bind(), watch::channel(Addresses::default()).0, &[], 1).unwrap();
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
