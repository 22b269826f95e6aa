//! Offers read from str0m's parse, and a gateway session with a browser-like one on a
//! hand-driven clock.

use super::*;
use crate::media::{Codec, Frame};
use std::time::Duration;
use str0m::net::{Protocol, Receive};
use str0m::{Event, Input, Output};

/// A receive-only offer for video and audio, as a browser makes it, from a `str0m`
/// session with the video codecs `video` enables, and a host candidate.
fn offer(video: impl FnOnce(str0m::RtcConfig) -> str0m::RtcConfig) -> SdpOffer {
    use str0m::media::{Direction, MediaKind};
    let config = Rtc::builder()
        .clear_codecs()
        .enable_pcma(true, false)
        .enable_opus(true, false);
    let mut rtc = video(config).build(clock());
    let candidate = Candidate::host("192.0.2.7:50000".parse().unwrap(), "udp").unwrap();
    rtc.add_local_candidate(candidate);
    let mut changes = rtc.sdp_api();
    changes.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    changes.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, _) = changes.apply().unwrap();
    SdpOffer::from_sdp_string(&offer.to_sdp_string()).unwrap()
}

#[test]
fn sdp_errors_read_as_one_line_without_addresses() {
    let text = "SDP parse: Parse error at PointerOffset(0x7f21)\nUnexpected end of input\n";
    assert_eq!(
        sdp_error(&text),
        "SDP parse: Parse error; Unexpected end of input"
    );
    let refused = SdpOffer::from_sdp_string("v=0").map_err(|e| sdp_error(&e));
    let message = refused.unwrap_err();
    assert!(
        !message.contains("0x") && !message.contains('\n'),
        "{message}"
    );
}

#[test]
fn offered_codecs_are_read_per_section() {
    let offered = OfferedCodecs::read(&offer(|c| c.enable_vp8(true).enable_h264(true)));
    assert!(offered.has_audio_section && offered.has_video_section);
    assert!(offered.h264 && !offered.h265);
    assert_eq!(offered.video, ["VP8", "H264"]);
    assert_eq!(offered.candidate_ips, [IpAddr::from([192, 0, 2, 7])]);
    assert!(offered.check_video(Some(Codec::H264)).is_ok());
    let refused = offered.check_video(Some(Codec::H265)).unwrap_err();
    assert!(refused.to_string().contains("H.265"), "{refused}");
}

#[test]
fn an_offer_without_h264_is_refused_naming_what_it_offered() {
    let vp8_only = offer(|c| c.enable_vp8(true));
    let refused = OfferedCodecs::read(&vp8_only)
        .check_video(None)
        .unwrap_err();
    assert!(matches!(refused, Refusal::NoCommonCodec(_)));
    assert!(refused.to_string().contains("offered: VP8"), "{refused}");
}

/// One side of a pair: its session, its address, when it wants time.
struct Side {
    rtc: Rtc,
    due: Instant,
}

/// A datagram between the two sides: (source, destination, bytes).
type Wire = std::collections::VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>;

impl Side {
    /// Drains the session's output to its `Timeout` (str0m's contract): datagrams go
    /// on `wire`, events to `on_event`.
    fn drain(&mut self, wire: &mut Wire, mut on_event: impl FnMut(&mut Rtc, Event)) {
        loop {
            match self.rtc.poll_output().unwrap() {
                Output::Timeout(at) => {
                    self.due = at;
                    return;
                }
                Output::Transmit(t) => {
                    wire.push_back((t.source, t.destination, t.contents.to_vec()));
                }
                Output::Event(event) => on_event(&mut self.rtc, event),
            }
        }
    }

    fn receive(
        &mut self,
        now: Instant,
        (source, destination, bytes): (SocketAddr, SocketAddr, Vec<u8>),
    ) {
        let receive = Receive {
            proto: Protocol::Udp,
            source,
            destination,
            contents: bytes.as_slice().try_into().unwrap(),
        };
        self.rtc.handle_input(Input::Receive(now, receive)).unwrap();
    }
}

/// A gateway's session (as `build_rtc` makes it, ICE-lite) and a browser-like one
/// (full ICE, H.264 and PCMA, receive-only), wired to each other without a socket on a
/// hand-driven clock: ICE and DTLS come up, and a key frame and an A-law frame written
/// through `to_rtp` arrive as the browser's media.
#[test]
fn a_peer_pair_connects_and_moves_media_without_a_socket() {
    use str0m::media::{Direction, MediaKind};
    install_crypto();
    let t0 = clock();
    let gateway_addr: SocketAddr = "10.0.0.1:8000".parse().unwrap();
    let browser_addr: SocketAddr = "10.0.0.2:50000".parse().unwrap();
    let mut browser = Rtc::builder()
        .clear_codecs()
        .enable_h264(true)
        .enable_pcma(true, false)
        .build(t0);
    browser.add_local_candidate(Candidate::host(browser_addr, "udp").unwrap());
    let mut changes = browser.sdp_api();
    changes.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    changes.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, pending) = changes.apply().unwrap();
    let parsed = SdpOffer::from_sdp_string(&offer.to_sdp_string()).unwrap();
    let offered = OfferedCodecs::read(&parsed);
    assert!(offered.h264 && offered.has_audio_section);
    let mut gateway = session_config(None, true, offered.h265)
        .set_local_ice_credentials(IceCreds::new())
        .build(t0);
    gateway.add_local_candidate(Candidate::host(gateway_addr, "udp").unwrap());
    let answer = gateway.sdp_api().accept_offer(parsed).unwrap();
    browser.sdp_api().accept_answer(pending, answer).unwrap();

    let mut gateway = Side {
        rtc: gateway,
        due: t0,
    };
    let mut browser = Side {
        rtc: browser,
        due: t0,
    };
    let (mut to_browser, mut to_gateway) = (Wire::new(), Wire::new());
    let mut tracks = to_rtp::Tracks::default();
    let mut connected = false;
    let mut sent = false;
    // what the browser depacketised: (video?, bytes)
    let mut played: Vec<(bool, Vec<u8>)> = Vec::new();
    let gateway_event = |tracks: &mut to_rtp::Tracks,
                         connected: &mut bool,
                         rtc: &mut Rtc,
                         event: Event| match event {
        Event::Connected => *connected = true,
        Event::MediaAdded(added) => {
            let writer = rtc.writer(added.mid).unwrap();
            let params: Vec<_> = writer.payload_params().collect();
            tracks.media_added(added.mid, added.kind, &params, true, true);
        }
        _ => {}
    };
    let browser_event = |played: &mut Vec<(bool, Vec<u8>)>, event: Event| {
        if let Event::MediaData(data) = event {
            played.push((data.params.spec().codec.is_video(), data.data.to_vec()));
        }
    };
    gateway.drain(&mut to_browser, |rtc, e| {
        gateway_event(&mut tracks, &mut connected, rtc, e)
    });
    browser.drain(&mut to_gateway, |_, e| browser_event(&mut played, e));

    let key_frame = Frame {
        codec: Codec::H264,
        is_key: true,
        pts: 0,
        // SPS, PPS, IDR slice (Annex B)
        data: bytes::Bytes::from_static(&[
            0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0x84, 0, 0, 0, 1,
            0x68, 0xce, 0x3c, 0x80, 0, 0, 0, 1, 0x65, 0x88, 0x84, 0x00, 0x33, 0xff, 0xee,
        ]),
    };
    let alaw = Frame {
        codec: Codec::G711A,
        is_key: false,
        pts: 0,
        data: bytes::Bytes::from_static(&[0xd5; 160]),
    };
    let mut now = t0;
    while played.len() < 2 {
        assert!(
            now < t0 + Duration::from_secs(10),
            "no media by 10 s; connected: {connected}"
        );
        while let Some(datagram) = to_gateway.pop_front() {
            gateway.receive(now, datagram);
            gateway.drain(&mut to_browser, |rtc, e| {
                gateway_event(&mut tracks, &mut connected, rtc, e)
            });
        }
        while let Some(datagram) = to_browser.pop_front() {
            browser.receive(now, datagram);
            browser.drain(&mut to_gateway, |_, e| browser_event(&mut played, e));
        }
        if connected && !sent {
            sent = true;
            for frame in [&key_frame, &alaw] {
                let write = tracks.translate(frame, frame.pts).unwrap();
                let writer = gateway.rtc.writer(write.mid).unwrap();
                writer
                    .write(write.pt, now, write.time, &write.payload[..])
                    .unwrap();
                // each write drained before the next
                gateway.drain(&mut to_browser, |rtc, e| {
                    gateway_event(&mut tracks, &mut connected, rtc, e)
                });
            }
        }
        if to_gateway.is_empty() && to_browser.is_empty() {
            now = now.max(gateway.due.min(browser.due));
            for (side, wire) in [
                (&mut gateway, &mut to_browser),
                (&mut browser, &mut to_gateway),
            ] {
                if side.due <= now {
                    side.rtc.handle_input(Input::Timeout(now)).unwrap();
                    side.due = now + Duration::from_secs(3600);
                    // events of a timeout are looked at on the next delivery
                    side.drain(wire, |_, _| {});
                }
            }
        }
    }
    let video = played
        .iter()
        .find(|(video, _)| *video)
        .expect("a video frame");
    let nal_types: Vec<u8> = video
        .1
        .windows(5)
        .filter(|w| w[..4] == [0, 0, 0, 1])
        .map(|w| w[4] & 0x1f)
        .collect();
    for nal in [7, 8, 5] {
        assert!(nal_types.contains(&nal), "NAL {nal} in {nal_types:?}");
    }
    let audio = played
        .iter()
        .find(|(video, _)| !*video)
        .expect("an audio frame");
    assert_eq!(audio.1, [0xd5; 160], "A-law as written");
}
