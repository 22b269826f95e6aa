//! An in-process WebRTC peer (`str0m`, full ICE, on its own loopback UDP socket) that plays
//! what the gateway sends: the error paths and the load runner use it; the browser tests
//! check the same in Chromium.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;

/// What the peer received so far.
#[derive(Debug, Default, Clone)]
pub(crate) struct Played {
    /// Video frames (depacketized access units).
    pub(crate) video_frames: u64,
    /// Audio frames.
    pub(crate) audio_frames: u64,
    /// Codec of the video received.
    pub(crate) video_codec: Option<Codec>,
    /// Codec of the audio received.
    pub(crate) audio_codec: Option<Codec>,
    /// NAL unit types of the first video frame.
    pub(crate) first_frame_nals: Vec<u8>,
    /// RTP time of the first video frame.
    pub(crate) first_frame_time: Option<str0m::media::MediaTime>,
    /// When the first video frame arrived.
    pub(crate) first_frame_at: Option<Instant>,
    /// Audio payload bytes received.
    pub(crate) audio_bytes: u64,
    /// The first audio payloads, up to 10 s of G.711.
    pub(crate) audio_payload: Vec<u8>,
    /// Video frames since the last key frame (an IDR or IRAP picture).
    pub(crate) frames_since_key: u64,
    /// Key frames received.
    pub(crate) key_frames: u64,
    /// ICE connected and DTLS up.
    pub(crate) connected: bool,
    /// The gateway closed the session.
    pub(crate) closed: bool,
}

/// A receiving peer.
pub(crate) struct TestPeer {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    pending: Option<SdpPendingOffer>,
    video: Option<Mid>,
    pub(crate) played: Played,
}

/// Which codecs the test peer offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offers {
    /// H.264 video and PCMA/PCMU audio, like a browser.
    H264,
    /// VP8 video only (no H.264): the gateway must refuse.
    Vp8Only,
    /// H.265 and H.264 video, PCMA/PCMU audio.
    H265,
}

impl TestPeer {
    /// A peer with recvonly video and audio; returns it and its SDP offer.
    pub(crate) async fn new(offers: Offers) -> (TestPeer, String) {
        str0m::crypto::from_feature_flags().install_process_default();
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        let mut config = Rtc::builder().clear_codecs();
        config = match offers {
            Offers::H264 => config
                .enable_h264(true)
                .enable_pcma(true, false)
                .enable_pcmu(true, false),
            Offers::Vp8Only => config.enable_vp8(true),
            Offers::H265 => config
                .enable_h265(true)
                .enable_h264(true)
                .enable_pcma(true, false)
                .enable_pcmu(true, false),
        };
        let mut rtc = config.build(clock());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let mut changes = rtc.sdp_api();
        let video = changes.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        if offers != Offers::Vp8Only {
            changes.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        }
        let (offer, pending) = changes.apply().unwrap();
        let peer = TestPeer {
            rtc,
            socket,
            local,
            pending: Some(pending),
            video: Some(video),
            played: Played::default(),
        };
        (peer, offer.to_sdp_string())
    }

    /// Takes the gateway's answer.
    pub(crate) fn accept(&mut self, answer: &str) {
        let answer = SdpAnswer::from_sdp_string(answer).expect("the answer is SDP");
        let pending = self.pending.take().expect("one answer");
        self.rtc.sdp_api().accept_answer(pending, answer).unwrap();
    }

    /// Asks the gateway for a key frame (RTCP PLI), as a browser does after a loss.
    pub(crate) fn request_keyframe(&mut self) {
        let mid = self.video.expect("a video section");
        let mut writer = self.rtc.writer(mid).expect("the video writer");
        writer
            .request_keyframe(None, str0m::media::KeyframeRequestKind::Pli)
            .expect("PLI negotiated");
    }

    /// Plays until `done` holds for what was received (true) or `timeout` passes (false).
    pub(crate) async fn play_until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&Played) -> bool,
    ) -> bool {
        let deadline = clock() + timeout;
        let mut buf = vec![0u8; 2048];
        loop {
            let wait = loop {
                match self.rtc.poll_output() {
                    Ok(Output::Timeout(at)) => break at,
                    Ok(Output::Transmit(t)) => {
                        // loopback: a lost datagram is the peer's own problem to retry
                        let _ = self.socket.send_to(&t.contents, t.destination).await;
                    }
                    Ok(Output::Event(event)) => self.event(event),
                    Err(_) => {
                        self.played.closed = true;
                        break clock() + Duration::from_millis(10);
                    }
                }
            };
            if done(&self.played) {
                return true;
            }
            let now = clock();
            if now >= deadline || !self.rtc.is_alive() {
                self.played.closed |= !self.rtc.is_alive();
                return done(&self.played);
            }
            let wait = wait.min(deadline).max(now);
            match tokio::time::timeout(wait - now, self.socket.recv_from(&mut buf)).await {
                Ok(Ok((n, source))) => {
                    let Ok(contents) = buf[..n].try_into() else {
                        continue;
                    };
                    let input = Input::Receive(
                        clock(),
                        Receive {
                            proto: Protocol::Udp,
                            source,
                            destination: self.local,
                            contents,
                        },
                    );
                    // garbage from the gateway would be a test failure seen in the counts
                    let _ = self.rtc.handle_input(input);
                }
                Ok(Err(_)) | Err(_) => {
                    let _ = self.rtc.handle_input(Input::Timeout(clock()));
                }
            }
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Connected => self.played.connected = true,
            Event::Closed => self.played.closed = true,
            Event::MediaData(data) => {
                let codec = data.params.spec().codec;
                if Some(data.mid) == self.video {
                    let nals = match codec {
                        Codec::H265 => hevc_nal_types(&data.data),
                        _ => nal_types(&data.data),
                    };
                    let key = match codec {
                        Codec::H265 => nals.iter().any(|n| (16..=21).contains(n)),
                        _ => nals.contains(&5),
                    };
                    if key {
                        self.played.key_frames += 1;
                        self.played.frames_since_key = 0;
                    } else {
                        self.played.frames_since_key += 1;
                    }
                    // str0m hands over an H.265 access unit in parts (it ends one at each
                    // fragmented NAL unit): the first frame is everything at its RTP time
                    if self.played.first_frame_time == Some(data.time) {
                        self.played.first_frame_nals.extend(nals);
                        return;
                    }
                    if self.played.video_frames == 0 {
                        self.played.first_frame_time = Some(data.time);
                        self.played.first_frame_nals = nals;
                        self.played.first_frame_at = Some(clock());
                    }
                    self.played.video_frames += 1;
                    self.played.video_codec = Some(codec);
                } else {
                    self.played.audio_frames += 1;
                    self.played.audio_bytes += data.data.len() as u64;
                    if self.played.audio_payload.len() < 80_000 {
                        self.played.audio_payload.extend_from_slice(&data.data);
                    }
                    self.played.audio_codec = Some(codec);
                }
            }
            _ => {}
        }
    }
}

/// NAL unit types of an Annex-B access unit.
pub(crate) fn nal_types(au: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut i = 0;
    while i + 3 < au.len() {
        if au[i] == 0 && au[i + 1] == 0 && au[i + 2] == 1 {
            types.push(au[i + 3] & 0x1f);
            i += 3;
        }
        i += 1;
    }
    types
}

/// NAL unit types of an H.265 Annex-B access unit.
pub(crate) fn hevc_nal_types(au: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut i = 0;
    while i + 3 < au.len() {
        if au[i] == 0 && au[i + 1] == 0 && au[i + 2] == 1 {
            types.push((au[i + 3] >> 1) & 0x3f);
            i += 3;
        }
        i += 1;
    }
    types
}

/// Now, as a std instant (str0m's clock), from tokio's.
fn clock() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// coturn (`turnserver`, which scripts/test.sh installs) on a free loopback port: a
/// STUN-only server, or a TURN server with long-term credentials relaying on loopback;
/// killed on drop.
pub(crate) struct Coturn {
    child: std::process::Child,
    /// Where it listens (UDP).
    pub(crate) addr: SocketAddr,
}

/// The TURN server's user and password.
pub(crate) const TURN_USER: &str = "gw";
pub(crate) const TURN_PASSWORD: &str = "turn-secret";

impl Coturn {
    /// A STUN server only, on loopback.
    pub(crate) fn stun() -> Coturn {
        Coturn::start(IpAddr::from([127, 0, 0, 1]), &["--stun-only"])
    }

    /// A TURN server on loopback: user [`TURN_USER`], password [`TURN_PASSWORD`], relayed
    /// addresses on 127.0.0.1, peers on loopback allowed (they are refused by default).
    pub(crate) fn turn() -> Coturn {
        Coturn::turn_on(IpAddr::from([127, 0, 0, 1]))
    }

    /// A TURN server listening and relaying on `ip` (Chromium pairs no relay candidate on
    /// loopback: its tests need the machine's own address).
    pub(crate) fn turn_on(ip: IpAddr) -> Coturn {
        Coturn::start(
            ip,
            &[
                "--lt-cred-mech",
                &format!("--user={TURN_USER}:{TURN_PASSWORD}"),
                "--realm=jt1078.test",
                &format!("--relay-ip={ip}"),
                "--allow-loopback-peers",
            ],
        )
    }

    fn start(ip: IpAddr, args: &[&str]) -> Coturn {
        let port = super::free_port();
        let child = std::process::Command::new(super::program("TURNSERVER_BIN", "turnserver"))
            .args([
                "-n",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                &format!("--listening-ip={ip}"),
                &format!("--listening-port={port}"),
                "--log-file=stdout",
            ])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("turnserver (Debian's coturn; scripts/test.sh installs it): {e}")
            });
        Coturn {
            child,
            addr: SocketAddr::new(ip, port),
        }
    }

    /// `webrtc.turn_servers` naming this server.
    pub(crate) fn turn_setting(&self) -> String {
        format!("{TURN_USER}:{TURN_PASSWORD}@{}", self.addr)
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `/api/webrtc` of `gateway` once `ready` holds for it: read again whenever the WebRTC
/// side's addresses change (a STUN answer, a TURN allocation made, failed or given back),
/// for 10 s at most.
pub(crate) async fn webrtc_api_when(
    gateway: &super::Gateway,
    what: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut changes = gateway.webrtc_changes.clone();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            changes.borrow_and_update();
            let api = webrtc_api(gateway.addrs.http).await;
            if ready(&api) {
                return api;
            }
            changes.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} within 10 s"))
}

/// `GET /api/webrtc`.
pub(crate) async fn webrtc_api(http: SocketAddr) -> serde_json::Value {
    let (_, body) = super::http_get(http, "/api/webrtc").await;
    serde_json::from_slice(&body).unwrap()
}
