//! WebRTC to browsers: the gateway is the browser's peer (ICE-lite, DTLS-SRTP), with no
//! media server between. Signalling arrives over MQTT (`WEBRTC`, answered on `ANSWER`) or
//! over WHEP (`POST /whep/{kind}/{device}_{channel}`, see `whep.rs`); both end in
//! [`WebRtc::offer`].
//!
//! Built on `str0m`, a sans-IO WebRTC stack, not on the `webrtc` crate the design named:
//! `webrtc` 0.21 binds sockets per peer connection inside its own driver and has no way to
//! serve every peer from one UDP port, which `webrtc.udp_listen` requires (one port to open
//! in a firewall, as SRS does); nor can its sockets choose the source address per packet.
//! With `str0m` the gateway owns the one socket (`udp.rs`) and each peer is a plain task
//! (`peer.rs`) that is handed its datagrams (docs/architecture.md, "WebRTC").

mod endpoint;
mod offer;
mod peer;
mod relay;
mod to_rtp;
mod udp;
pub mod whep;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use str0m::change::SdpOffer;
use str0m::config::DtlsCert;
use str0m::rtp::Extension;
use str0m::{Candidate, IceCreds, Rtc, RtcConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{IceTransportPolicy, WebRtcSettings};
use crate::hub::Hub;
use crate::media::StreamKey;
pub use endpoint::Addresses;
use endpoint::LocalCandidates;
use offer::{OfferedCodecs, Plan, Want, sdp_error};
pub use peer::Ended;
use peer::PeerSetup;
use udp::{PEER_QUEUE, UdpMux};

/// Video packets a peer keeps for retransmission (NACK) and between a frame's write and
/// its send: one large key frame (about 600 KB at 1,200 bytes a packet) and seconds of a
/// vehicle camera's P frames. str0m's default of 1,000 held 1.2 MB a peer.
const SEND_BUFFER_VIDEO: usize = 512;

/// A request for a peer.
#[derive(Debug, Clone)]
pub struct Offer {
    /// The stream to play.
    pub key: StreamKey,
    /// The browser's SDP offer.
    pub sdp: String,
    /// Send video.
    pub video: bool,
    /// Send audio.
    pub audio: bool,
    /// Who asked, for the event when the peer ends (MQTT: client_id or seqid).
    pub requester: Option<String>,
    /// Relays on the request's own TURN servers (`iceserver`, with
    /// `webrtc.request_ice_servers`), from [`WebRtc::lease_relays`].
    pub relays: RelayLease,
}

/// Relays leased on a request's TURN servers for its peer (given back when it ends).
#[derive(Debug, Clone, Default)]
pub struct RelayLease {
    ids: Vec<u64>,
    relayed: Vec<SocketAddr>,
}

impl RelayLease {
    /// The relayed addresses allocated for the request.
    pub fn relayed(&self) -> &[SocketAddr] {
        &self.relayed
    }
}

/// How long an offer with its own TURN servers waits for their allocations.
const REQUEST_RELAY_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// An accepted offer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Session id (WHEP resource, `DELETE /whep/session/{id}`).
    pub session: String,
    /// The SDP answer, with the gateway's candidates.
    pub sdp: String,
}

/// Why an offer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `webrtc.enabled` is off.
    #[error("WebRTC is disabled on this gateway (webrtc.enabled = false)")]
    Disabled,
    /// The offer is not SDP the gateway can read.
    #[error("bad SDP offer: {0}")]
    BadSdp(String),
    /// No video (or audio) codec the stream can be sent in.
    #[error("{0}")]
    NoCommonCodec(String),
    /// `webrtc.max_peers` peers already.
    #[error("too many WebRTC peers: {0} at once is the limit (webrtc.max_peers)")]
    TooManyPeers(usize),
    /// `webrtc.ice_transport_policy = "relay"` and no TURN allocation to offer.
    #[error(
        "no TURN relay to offer: webrtc.ice_transport_policy is relay and no TURN server (webrtc.turn_servers, or the request's own) has allocated an address; GET /api/webrtc shows each relay's last error"
    )]
    RelayUnavailable,
}

/// A peer ended (for control, which releases the requester's demand).
#[derive(Debug, Clone)]
pub struct PeerEvent {
    /// The stream.
    pub key: StreamKey,
    /// The requester the offer named.
    pub requester: Option<String>,
    /// Why it ended.
    pub ended: Ended,
}

/// The WebRTC side of the gateway (cheap to clone).
#[derive(Debug, Clone)]
pub struct WebRtc {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: WebRtcSettings,
    hub: Hub,
    mux: Arc<UdpMux>,
    candidates: LocalCandidates,
    /// One DTLS certificate for every peer (its fingerprint goes in each answer), made at
    /// start: making one per offer cost the first offer tens of milliseconds.
    certificate: Option<DtlsCert>,
    runtime: tokio::runtime::Handle,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    sessions: Mutex<HashMap<String, Session>>,
    next_id: AtomicU64,
    events_tx: mpsc::Sender<PeerEvent>,
}

#[derive(Debug)]
struct Session {
    key: StreamKey,
    cancel: CancellationToken,
    started: Instant,
}

/// One session in `GET /api/webrtc`.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    /// Session id.
    pub session: String,
    /// `{kind}/{device}_{channel}`.
    pub stream: String,
    /// Seconds since the offer.
    pub age_secs: f64,
}

impl WebRtc {
    /// Serves WebRTC on `socket` (bound to `webrtc.udp_listen`; within a tokio runtime).
    /// Peer endings are reported on the returned channel; the addresses offered (the STUN
    /// servers' answers, the TURN relays) are published on `addresses_tx` whenever they
    /// change.
    pub fn start(
        settings: &WebRtcSettings,
        socket: std::net::UdpSocket,
        hub: Hub,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
        addresses_tx: tokio::sync::watch::Sender<Addresses>,
    ) -> anyhow::Result<(WebRtc, mpsc::Receiver<PeerEvent>)> {
        install_crypto();
        let (mux, udp_loop) = UdpMux::new(
            socket,
            addresses_tx,
            &settings.stun_servers,
            settings.max_peers.get(),
        )
        .context("setting up the webrtc socket")?;
        let mux = Arc::new(mux);
        let candidates = local_candidates(settings, mux.local_addr());
        info!(udp = %mux.local_addr(), candidates = ?candidates.announced, "webrtc listening");
        tasks.spawn(udp_loop.run(Arc::clone(&mux), shutdown.clone()));
        if !settings.stun_servers.is_empty() || !settings.turn_servers.is_empty() {
            tasks.spawn(udp::resolve_servers(
                Arc::clone(&mux),
                settings.stun_servers.clone(),
                settings.turn_servers.clone(),
                shutdown.clone(),
            ));
        }
        let (events_tx, events_rx) = mpsc::channel(1024);
        let certificate = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate();
        if certificate.is_none() {
            warn!("no shared DTLS certificate; each peer makes its own");
        }
        let inner = Inner {
            certificate,
            settings: settings.clone(),
            hub,
            mux,
            candidates,
            runtime: tokio::runtime::Handle::current(),
            tasks: tasks.clone(),
            shutdown,
            sessions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            events_tx,
        };
        Ok((
            WebRtc {
                inner: Arc::new(inner),
            },
            events_rx,
        ))
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.mux.local_addr()
    }

    /// The addresses announced to browsers.
    pub fn candidates(&self) -> &[SocketAddr] {
        &self.inner.candidates.announced
    }

    /// The UDP port's addresses outside a NAT, as the STUN servers (`webrtc.stun_servers`)
    /// last saw it: announced too (as host candidates, like `public_ips`).
    pub fn reflexive(&self) -> Vec<SocketAddr> {
        self.inner.mux.addresses().reflexive.clone()
    }

    /// The relayed addresses allocated on the TURN servers (`webrtc.turn_servers`) now:
    /// announced as relay candidates.
    pub fn relayed(&self) -> Vec<SocketAddr> {
        self.inner.mux.addresses().relayed()
    }

    /// Whether a request's own TURN servers (`iceserver`) are used
    /// (`webrtc.request_ice_servers`).
    pub fn request_ice_servers(&self) -> bool {
        self.inner.settings.request_ice_servers
    }

    /// Leases a relay on each of a request's TURN `servers` for its peer, waiting for the
    /// allocations (a few seconds at most; those not made by then are left out), and, if
    /// [`WebRtc::relays_starting`], for those of `webrtc.turn_servers`.
    pub async fn lease_relays(&self, servers: &[crate::config::TurnServer]) -> RelayLease {
        self.wait_for_starting_relays().await;
        let (ids, relayed) = self
            .inner
            .mux
            .lease_relays(servers, REQUEST_RELAY_WAIT)
            .await;
        RelayLease { ids, relayed }
    }

    /// Whether an offer now should wait for [`WebRtc::wait_for_starting_relays`] first: only relays
    /// may be offered (`ice_transport_policy = "relay"`), none of `webrtc.turn_servers`
    /// has an allocation, and some are still being asked for (the first moments after
    /// start).
    pub fn relays_starting(&self) -> bool {
        let settings = &self.inner.settings;
        settings.ice_transport_policy == IceTransportPolicy::Relay
            && !settings.turn_servers.is_empty()
            && self.relayed().is_empty()
            && self
                .inner
                .mux
                .addresses()
                .configured_undecided(settings.turn_servers.len())
    }

    /// If [`WebRtc::relays_starting`], waits (a few seconds at most) until each server of
    /// `webrtc.turn_servers` has an allocation or failed.
    pub async fn wait_for_starting_relays(&self) {
        if !self.relays_starting() {
            return;
        }
        self.inner
            .mux
            .configured_relays_ready(self.inner.settings.turn_servers.len(), REQUEST_RELAY_WAIT)
            .await;
    }

    /// Gives back a lease whose offer was not taken.
    pub fn release(&self, lease: &RelayLease) {
        self.inner.mux.release_relays(&lease.ids);
    }

    /// Each TURN relay (`webrtc.turn_servers`, and those requests named): its server,
    /// relayed address, last error.
    pub fn relays(&self) -> serde_json::Value {
        serde_json::to_value(&self.inner.mux.addresses().relays).unwrap_or_default()
    }

    /// The UDP socket's datagram counters (received, sent, relayed, dropped), for the API.
    pub fn socket_counters(&self) -> serde_json::Value {
        self.inner.mux.stats.snapshot()
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        // each update is one insert or remove: the map is consistent after a panic
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Peers running now.
    pub fn peers(&self) -> usize {
        self.sessions().len()
    }

    /// The sessions running now.
    pub fn list(&self) -> Vec<SessionInfo> {
        let mut list: Vec<SessionInfo> = self
            .sessions()
            .iter()
            .map(|(id, s)| SessionInfo {
                session: id.clone(),
                stream: s.key.to_string(),
                age_secs: s.started.elapsed().as_secs_f64(),
            })
            .collect();
        list.sort_by(|a, b| a.session.cmp(&b.session));
        list
    }

    /// Accepts a browser's offer: a peer that plays `offer.key` starts (it waits for the
    /// stream if it is not live; its hub reader asks for it) and the answer is returned.
    /// The offer's relay lease is the peer's until it ends (given back if refused).
    pub fn offer(&self, offer: Offer) -> Result<Answer, Refusal> {
        let lease = offer.relays.clone();
        let answer = self.offer_peer(offer);
        if answer.is_err() {
            self.release(&lease);
        }
        answer
    }

    fn offer_peer(&self, offer: Offer) -> Result<Answer, Refusal> {
        let plan = self.plan(&offer)?;
        let (mut rtc, ufrag) = self.build_rtc(&plan);
        // the TURN servers pass on only what comes from addresses allowed: the browser's
        // candidates are, before its first check
        self.inner
            .mux
            .permit(&plan.offered.candidate_ips, &plan.relayed);
        let answer = rtc
            .sdp_api()
            .accept_offer(plan.parsed)
            .map_err(|e| Refusal::BadSdp(sdp_error(&e)))?;
        let want = Want {
            video: plan.video,
            audio: plan.audio,
        };
        let (session, setup) = self.register(&offer.key, rtc, &ufrag, want, plan.relayed)?;
        info!(stream = %offer.key, session, video = want.video, audio = want.audio, "webrtc peer starts");
        self.spawn_peer(session.clone(), setup, offer.requester, offer.relays);
        Ok(Answer {
            session,
            sdp: answer.to_sdp_string(),
        })
    }

    /// Checks an offer against the settings, the peers running and the stream: what its
    /// peer will send and through which relays, or why not.
    fn plan(&self, offer: &Offer) -> Result<Plan, Refusal> {
        let settings = &self.inner.settings;
        if !settings.enabled {
            return Err(Refusal::Disabled);
        }
        let max = settings.max_peers.get();
        if self.peers() >= max {
            return Err(Refusal::TooManyPeers(max));
        }
        let parsed =
            SdpOffer::from_sdp_string(&offer.sdp).map_err(|e| Refusal::BadSdp(sdp_error(&e)))?;
        let offered = OfferedCodecs::read(&parsed);
        let video = offer.video && offered.has_video_section;
        let audio = offer.audio && offered.has_audio_section;
        if !video && !audio {
            return Err(Refusal::BadSdp(
                "the offer has no audio or video section to receive (add recvonly transceivers)"
                    .to_owned(),
            ));
        }
        if video {
            let live_video = self
                .inner
                .hub
                .live_media(&offer.key)
                .and_then(|media| media.video);
            offered.check_video(live_video)?;
        }
        let mut relayed = self.relayed();
        relayed.extend_from_slice(offer.relays.relayed());
        let relay_only = settings.ice_transport_policy == IceTransportPolicy::Relay;
        if relay_only && relayed.is_empty() {
            return Err(Refusal::RelayUnavailable);
        }
        Ok(Plan {
            parsed,
            offered,
            video,
            audio,
            relayed,
            relay_only,
        })
    }

    /// The peer's session, with its candidates, for a checked offer; and its local ufrag.
    fn build_rtc(&self, plan: &Plan) -> (Rtc, String) {
        let creds = IceCreds::new();
        let ufrag = creds.ufrag.clone();
        // ICE-lite unless there is a relay: a lite peer has only host candidates (RFC 8445
        // §2.5) and a relay's must be checked from this side through the relay
        let ice_lite = plan.relayed.is_empty();
        let mut rtc = session_config(self.inner.certificate.as_ref(), ice_lite, plan.offered.h265)
            .set_local_ice_credentials(creds)
            .build(clock());
        if !plan.relay_only {
            self.add_host_candidates(&mut rtc);
        }
        for addr in &plan.relayed {
            match Candidate::relayed(*addr, self.local_addr(), "udp") {
                Ok(candidate) => {
                    rtc.add_local_candidate(candidate);
                }
                Err(error) => warn!(%addr, %error, "webrtc relay candidate not usable"),
            }
        }
        (rtc, ufrag)
    }

    /// Registers a peer: its session id, its datagrams' route, its entry in the sessions
    /// (which counts it against `webrtc.max_peers`); returns what its task needs.
    fn register(
        &self,
        key: &StreamKey,
        rtc: Rtc,
        ufrag: &str,
        want: Want,
        relayed: Vec<SocketAddr>,
    ) -> Result<(String, PeerSetup), Refusal> {
        let settings = &self.inner.settings;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        // the random ufrag makes the id unguessable (a WHEP DELETE needs only the id)
        let session = format!("{id:x}-{ufrag}");
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        if !self.inner.mux.register(id, ufrag, tx) {
            // the socket's loop has a queue of commands sized for every peer registering
            // and leaving at once: full, it is that far behind
            warn!("webrtc socket loop behind: offer refused");
            return Err(Refusal::TooManyPeers(settings.max_peers.get()));
        }
        let cancel = self.inner.shutdown.child_token();
        self.sessions().insert(
            session.clone(),
            Session {
                key: key.clone(),
                cancel: cancel.clone(),
                started: clock(),
            },
        );
        let setup = PeerSetup {
            id,
            key: key.clone(),
            rtc,
            want_video: want.video,
            want_audio: want.audio,
            rx,
            mux: Arc::clone(&self.inner.mux),
            candidates: self.inner.candidates.clone(),
            relayed,
            hub: self.inner.hub.clone(),
            wait: settings.wait_timeout,
            consent_timeout: settings.consent_timeout,
            cancel,
        };
        Ok((session, setup))
    }

    /// Runs a registered peer on the gateway's tracker; when it ends, gives its relay
    /// lease back, forgets its session and tells control.
    fn spawn_peer(
        &self,
        session: String,
        setup: PeerSetup,
        requester: Option<String>,
        lease: RelayLease,
    ) {
        let this = self.clone();
        self.inner.tasks.spawn_on(
            async move {
                let key = setup.key.clone();
                let finished = peer::run(setup).await;
                let ended = finished.ended;
                this.release(&lease);
                this.sessions().remove(&session);
                // its hub reader goes last: no viewer counted for a session that is gone
                drop(finished);
                info!(stream = %key, session, reason = ended.as_str(), "webrtc peer ended");
                let event = PeerEvent {
                    key,
                    requester,
                    ended,
                };
                // control gone (shutdown): nobody to tell
                let _ = this.inner.events_tx.send(event).await;
            },
            &self.inner.runtime,
        );
    }

    /// Adds the host candidates: the announced addresses and those the STUN servers saw.
    fn add_host_candidates(&self, rtc: &mut Rtc) {
        for addr in &self.inner.candidates.announced {
            match Candidate::host(*addr, "udp") {
                Ok(candidate) => {
                    rtc.add_local_candidate(candidate);
                }
                Err(error) => warn!(%addr, %error, "webrtc candidate not usable"),
            }
        }
        // the port's address outside a NAT, as a STUN server saw it: announced as a host
        // candidate, as `public_ips` would name it (an ICE-lite peer announces only host
        // candidates, RFC 8445 §2.5; str0m refuses others)
        for mapped in self.reflexive() {
            if self.inner.candidates.announced.contains(&mapped) {
                continue;
            }
            match Candidate::host(mapped, "udp") {
                Ok(candidate) => {
                    rtc.add_local_candidate(candidate);
                }
                Err(error) => warn!(%mapped, %error, "webrtc candidate not usable"),
            }
        }
    }

    /// Ends a session (WHEP `DELETE`); false if there is none by that id.
    pub fn close(&self, session: &str) -> bool {
        match self.sessions().get(session) {
            Some(s) => {
                s.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Bearer token WHEP requests must carry (empty: none).
    pub(crate) fn whep_token(&self) -> &crate::config::Secret {
        &self.inner.settings.whep_token
    }

    /// `Access-Control-Allow-Origin` for WHEP.
    pub(crate) fn cors_origin(&self) -> &str {
        &self.inner.settings.cors_origin
    }
}

/// A peer's session settings: the shared DTLS `certificate` (`None`: str0m makes one),
/// ICE-lite or not, H.265 if the browser offered it.
fn session_config(certificate: Option<&DtlsCert>, ice_lite: bool, h265: bool) -> RtcConfig {
    let mut config = Rtc::builder();
    if let Some(certificate) = certificate {
        config = config.set_dtls_cert(certificate.clone());
    }
    config
        // only the mid: no transport-cc or abs-send-time, so browsers send no congestion
        // feedback the gateway would only parse and drop (it passes the device's bitrate
        // through; it has no bitrate to adapt)
        .clear_extension_map()
        .set_extension(4, Extension::RtpMid)
        .set_ice_lite(ice_lite)
        .clear_codecs()
        .enable_h264(true)
        .enable_h265(h265)
        .enable_pcma(true, false)
        .enable_pcmu(true, false)
        .set_send_buffer_video(SEND_BUFFER_VIDEO)
}

/// Now, on tokio's clock (paused-time tests move it).
pub(crate) fn clock() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Installs `str0m`'s crypto provider for the process, once.
fn install_crypto() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| str0m::crypto::from_feature_flags().install_process_default());
}

/// The host candidates to announce: `webrtc.public_ips`, else the bound address, else
/// (bound to a wildcard) the machine's interface addresses of its family, loopback only
/// when there is no other.
fn local_candidates(settings: &WebRtcSettings, bound: SocketAddr) -> LocalCandidates {
    let port = bound.port();
    let machine: Vec<IpAddr> = if bound.ip().is_unspecified() {
        interface_addrs(bound.is_ipv4())
    } else {
        vec![bound.ip()]
    };
    let announced_ips: Vec<IpAddr> = if settings.public_ips.is_empty() {
        let outside: Vec<IpAddr> = machine
            .iter()
            .copied()
            .filter(|ip| !ip.is_loopback())
            .collect();
        if outside.is_empty() {
            machine.clone()
        } else {
            outside
        }
    } else {
        settings.public_ips.clone()
    };
    LocalCandidates {
        announced: announced_ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect(),
        machine,
    }
}

/// The addresses of this machine's interfaces (IPv4 or IPv6), link-local excluded.
fn interface_addrs(ipv4: bool) -> Vec<IpAddr> {
    let mut addrs: Vec<IpAddr> = match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces
            .into_iter()
            .map(|i| i.ip())
            .filter(|ip| ip.is_ipv4() == ipv4)
            .filter(|ip| match ip {
                IpAddr::V4(v4) => !v4.is_link_local(),
                IpAddr::V6(v6) => !v6.is_unicast_link_local(),
            })
            .collect(),
        Err(error) => {
            warn!(%error, "cannot list network interfaces; announcing loopback only");
            Vec::new()
        }
    };
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        addrs.push(if ipv4 {
            IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        });
    }
    addrs
}

#[cfg(test)]
mod tests;
