//! A WebRTC viewer for the load runner: a receive-only `str0m` peer (H.264 and PCMA/PCMU,
//! as a browser offers, like tests/common/webrtc.rs) on its own loopback UDP socket,
//! signalled over WHEP. It counts the frames it depacketizes and notes when it connected
//! and got its first video frame.
//!
//! A viewer never waits on its socket: the pool (`webrtc_pool`) reads every viewer's
//! socket on its ticks, with `recvmmsg` (quinn-udp), so the load client stays cheap and a
//! datagram to a viewer wakes nobody (on loopback, waking a waiting reader is work charged
//! to the gateway's send, which a remote browser would not cost it).

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::BytesMut;
use quinn_udp::{RecvMeta, UdpSocketState};
use serde::Serialize;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::chunked::Dechunker;

/// Datagrams read per `recvmmsg`.
pub(crate) const BATCH: usize = 16;

/// How often a viewer playing alone (first-frame runs) reads its socket.
const POLL_TICK: Duration = Duration::from_millis(1);

/// How long a first-frame run waits (a cold start includes the device connecting).
const FIRST_FRAME_WAIT: Duration = Duration::from_secs(15);

/// Receive buffer of a viewer's socket: a key frame sent at once (~50 datagrams) and a
/// pool tick of the 4× catch-up fit with room to spare.
const RECV_BUFFER: usize = 1 << 20;

/// What a viewer received, counted since it started.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct ViewerCounts {
    /// Video frames (depacketized access units).
    pub(crate) video_frames: u64,
    /// Video frames that did not follow the previous one (RTP packets were lost between).
    pub(crate) video_gaps: u64,
    /// Audio frames.
    pub(crate) audio_frames: u64,
    /// Datagrams read.
    pub(crate) datagrams: u64,
    /// Bytes read.
    pub(crate) bytes: u64,
    /// WHEP POST sent → 201 with the answer, ms.
    pub(crate) answer_ms: f64,
    /// WHEP POST sent → ICE and DTLS up, ms.
    pub(crate) connected_ms: Option<f64>,
    /// WHEP POST sent → first video frame depacketized, ms.
    pub(crate) first_frame_ms: Option<f64>,
    /// The session ended (the gateway closed it, or it failed).
    pub(crate) closed: bool,
}

/// One receiving peer.
pub(crate) struct WebRtcViewer {
    rtc: Rtc,
    socket: std::net::UdpSocket,
    state: UdpSocketState,
    local: SocketAddr,
    video: Mid,
    /// When the WHEP POST was sent.
    posted: Instant,
    /// When `str0m` next wants the time.
    timeout_at: Instant,
    pub(crate) counts: ViewerCounts,
}

/// A peer with its offer made, not yet sent (what a browser has before it signals).
pub(crate) struct WebRtcOffer {
    rtc: Rtc,
    socket: std::net::UdpSocket,
    state: UdpSocketState,
    local: SocketAddr,
    video: Mid,
    pending: SdpPendingOffer,
    sdp: String,
}

impl WebRtcOffer {
    /// A receive-only peer on a new loopback socket, and its offer.
    pub(crate) fn new() -> anyhow::Result<WebRtcOffer> {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").context("binding a viewer")?;
        socket.set_nonblocking(true)?;
        let state = UdpSocketState::new((&socket).into())?;
        // the kernel caps it at net.core.rmem_max; what is left is fine on loopback
        let _ = state.set_recv_buffer_size((&socket).into(), RECV_BUFFER);
        let local = socket.local_addr()?;
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_h264(true)
            .enable_pcma(true, false)
            .enable_pcmu(true, false)
            .build(clock());
        rtc.add_local_candidate(Candidate::host(local, "udp")?);
        let mut changes = rtc.sdp_api();
        let video = changes.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        changes.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, pending) = changes.apply().context("no offer")?;
        Ok(WebRtcOffer {
            rtc,
            socket,
            state,
            local,
            video,
            pending,
            sdp: offer.to_sdp_string(),
        })
    }

    /// Sends the offer over WHEP (`POST http://{http}{path}`) and takes the answer; the
    /// viewer's clock starts as the request goes out.
    pub(crate) async fn post(self, http: SocketAddr, path: &str) -> anyhow::Result<WebRtcViewer> {
        let WebRtcOffer {
            mut rtc,
            socket,
            state,
            local,
            video,
            pending,
            sdp,
        } = self;
        let posted = clock();
        let answer = post_offer(http, path, &sdp).await?;
        let answered = clock();
        let answer = SdpAnswer::from_sdp_string(&answer).context("the answer is not SDP")?;
        rtc.sdp_api().accept_answer(pending, answer)?;
        Ok(WebRtcViewer {
            rtc,
            socket,
            state,
            local,
            video,
            posted,
            timeout_at: answered,
            counts: ViewerCounts {
                answer_ms: ms_between(posted, answered),
                ..ViewerCounts::default()
            },
        })
    }

    /// Posts the offer and plays alone until the first video frame: ms from the POST.
    pub(crate) async fn first_frame(self, http: SocketAddr, path: &str) -> anyhow::Result<f64> {
        let mut viewer = self.post(http, path).await?;
        let mut buffers: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; 2048 * 64]).collect();
        let mut metas = vec![RecvMeta::default(); BATCH];
        let deadline = clock() + FIRST_FRAME_WAIT;
        loop {
            let now = clock();
            viewer.poll(now, &mut buffers, &mut metas);
            if let Some(ms) = viewer.counts.first_frame_ms {
                // leave as a closing browser tab does: DTLS close_notify and RTCP BYE
                if viewer.rtc.close().is_ok() {
                    viewer.drive(now);
                }
                return Ok(ms);
            }
            if viewer.counts.closed {
                bail!("{path}: the session ended before a video frame");
            }
            if now > deadline {
                bail!("{path}: no video frame within {FIRST_FRAME_WAIT:?}");
            }
            tokio::time::sleep(POLL_TICK).await;
        }
    }
}

impl WebRtcViewer {
    /// Still coming up: no video frame yet, not closed (the pool polls such viewers often,
    /// so their first-frame time is not rounded up to its slow tick).
    pub(crate) fn is_starting(&self) -> bool {
        self.counts.first_frame_ms.is_none() && !self.counts.closed
    }

    /// Reads every datagram waiting on the socket, feeds `str0m`, gives it the time when it
    /// asked for it, and sends what it has to send. `buffers` and `metas` are the pool's
    /// scratch space (one buffer per datagram of a `recvmmsg`).
    pub(crate) fn poll(&mut self, now: Instant, buffers: &mut [Vec<u8>], metas: &mut [RecvMeta]) {
        if self.counts.closed {
            return;
        }
        loop {
            let read = {
                let mut slices: Vec<IoSliceMut<'_>> =
                    buffers.iter_mut().map(|b| IoSliceMut::new(b)).collect();
                self.state.recv((&self.socket).into(), &mut slices, metas)
            };
            let count = match read {
                Ok(count) => count,
                // WouldBlock: all read; another error (an ICMP error on loopback) is no
                // datagram either, and the session's own timers notice a dead peer
                Err(_) => break,
            };
            for (meta, buffer) in metas.iter().zip(buffers.iter()).take(count) {
                for datagram in buffer[..meta.len].chunks(meta.stride.max(1)) {
                    self.counts.datagrams += 1;
                    self.counts.bytes += datagram.len() as u64;
                    let Ok(contents) = datagram.try_into() else {
                        continue;
                    };
                    let input = Input::Receive(
                        now,
                        Receive {
                            proto: Protocol::Udp,
                            source: meta.addr,
                            destination: self.local,
                            contents,
                        },
                    );
                    // a datagram str0m rejects shows in the frame counts
                    let _ = self.rtc.handle_input(input);
                    self.drive(now);
                }
            }
            if count < metas.len() {
                break;
            }
        }
        if now >= self.timeout_at {
            // an error here is a dead session: drive() sees it
            let _ = self.rtc.handle_input(Input::Timeout(now));
        }
        self.drive(now);
    }

    /// Handles `str0m`'s output until it wants time.
    fn drive(&mut self, now: Instant) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    self.timeout_at = at;
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    // loopback: a datagram the kernel refuses is retried by str0m's timers
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(event)) => self.event(event, now),
                Err(_) => {
                    self.counts.closed = true;
                    break;
                }
            }
        }
        if !self.rtc.is_alive() {
            self.counts.closed = true;
        }
    }

    fn event(&mut self, event: Event, now: Instant) {
        match event {
            Event::Connected => self.counts.connected_ms = Some(ms_between(self.posted, now)),
            Event::Closed => self.counts.closed = true,
            Event::MediaData(data) if data.mid == self.video => {
                if self.counts.first_frame_ms.is_none() {
                    self.counts.first_frame_ms = Some(ms_between(self.posted, now));
                }
                self.counts.video_frames += 1;
                self.counts.video_gaps += u64::from(!data.contiguous);
            }
            Event::MediaData(_) => self.counts.audio_frames += 1,
            _ => {}
        }
    }
}

/// `POST {path}` with the SDP offer; returns the SDP answer (status 201).
async fn post_offer(http: SocketAddr, path: &str, sdp: &str) -> anyhow::Result<String> {
    let mut socket = TcpStream::connect(http).await.context("connect http")?;
    socket.set_nodelay(true)?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{sdp}",
        sdp.len()
    );
    socket.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await?;
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no HTTP response header")?;
    let head = String::from_utf8_lossy(&response[..end]).into_owned();
    let mut raw = BytesMut::from(&response[end + 4..]);
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 201") {
        bail!(
            "WHEP {path}: {status}: {}",
            String::from_utf8_lossy(&raw).trim()
        );
    }
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        let mut body = BytesMut::new();
        if !Dechunker::default().decode(&mut raw, &mut body)? {
            bail!("WHEP {path}: the answer ended early");
        }
        body
    } else {
        raw
    };
    String::from_utf8(body.to_vec()).context("the answer is not UTF-8")
}

/// Now, as a std instant (str0m's clock), from tokio's.
pub(crate) fn clock() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn ms_between(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1000.0
}
