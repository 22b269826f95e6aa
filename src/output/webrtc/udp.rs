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

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use str0m::ice::StunMessage;

use super::clock;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

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

/// The shared socket.
#[derive(Debug)]
pub(crate) struct UdpMux {
    socket: UdpSocket,
    state: UdpSocketState,
    local: SocketAddr,
    routes: Mutex<Routes>,
    pub(crate) stats: UdpStats,
}

impl UdpMux {
    /// Takes over a bound socket (must be called within a tokio runtime).
    pub(crate) fn new(std_socket: std::net::UdpSocket) -> std::io::Result<UdpMux> {
        std_socket.set_nonblocking(true)?;
        let state = UdpSocketState::new((&std_socket).into())?;
        let socket = UdpSocket::from_std(std_socket)?;
        let local = socket.local_addr()?;
        Ok(UdpMux {
            socket,
            state,
            local,
            routes: Mutex::new(Routes::default()),
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
                        data: Bytes::copy_from_slice(datagram),
                    });
                }
            }
        }
    }

    fn route(&self, datagram: Datagram) {
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

/// The local ufrag a STUN binding request is addressed to (USERNAME `{ours}:{theirs}`).
fn stun_ufrag(data: &[u8]) -> Option<&str> {
    // STUN: first two bits zero and the magic cookie (RFC 5389); anything else is DTLS/RTP
    if data.len() < 20 || data[0] > 3 || data[4..8] != [0x21, 0x12, 0xa4, 0x42] {
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

    #[tokio::test]
    async fn a_batch_leaves_as_the_packets_it_gathered() {
        let bind = || std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mux = UdpMux::new(bind()).unwrap();
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
