//! Reading a browser's offer: its sections, video codecs and candidates, from `str0m`'s
//! parse (the SDP is read once), whether the stream's video can go out in a codec it
//! offers, and the plan a checked offer becomes (`WebRtc::plan`).

use std::net::{IpAddr, SocketAddr};

use str0m::Candidate;
use str0m::change::SdpOffer;
use str0m::format::Codec as RtpCodec;

use super::Refusal;
use crate::media::Codec;

/// A checked offer: what its peer sends, and the relays it is offered.
#[derive(Debug)]
pub(super) struct Plan {
    /// The offer as `str0m` parsed it (read once: [`OfferedCodecs::read`]).
    pub(super) parsed: SdpOffer,
    pub(super) offered: OfferedCodecs,
    pub(super) video: bool,
    pub(super) audio: bool,
    /// The relayed addresses (TURN) the peer is offered.
    pub(super) relayed: Vec<SocketAddr>,
    /// Only relayed addresses are offered (`ice_transport_policy = "relay"`).
    pub(super) relay_only: bool,
}

/// What a peer sends.
#[derive(Debug, Clone, Copy)]
pub(super) struct Want {
    pub(super) video: bool,
    pub(super) audio: bool,
}

/// The codecs an offer lists, per kind (from its payload types as `str0m` parsed them).
#[derive(Debug, Default)]
pub(super) struct OfferedCodecs {
    pub(super) has_video_section: bool,
    pub(super) has_audio_section: bool,
    pub(super) h264: bool,
    pub(super) h265: bool,
    pub(super) video: Vec<String>,
    /// The addresses of the offer's candidates (mDNS names left out: not resolved here).
    pub(super) candidate_ips: Vec<IpAddr>,
}

impl OfferedCodecs {
    /// Reads the sections, video codecs and candidates of an offer `str0m` parsed.
    pub(super) fn read(offer: &SdpOffer) -> OfferedCodecs {
        let mut offered = OfferedCodecs::default();
        let mut candidates: Vec<&Candidate> = offer.session.ice_candidates().collect();
        for line in &offer.media_lines {
            candidates.extend(line.ice_candidates());
            // `str0m` names the kind only through its SDP word ("audio", "video")
            let kind = line.typ.to_string();
            let is_video = kind == "video";
            offered.has_video_section |= is_video;
            offered.has_audio_section |= kind == "audio";
            if !is_video {
                continue;
            }
            for params in line.rtp_params() {
                let codec = params.spec().codec;
                offered.h264 |= codec == RtpCodec::H264;
                offered.h265 |= codec == RtpCodec::H265;
                let name = codec.to_string().to_ascii_uppercase();
                if codec.is_video() && !offered.video.contains(&name) {
                    offered.video.push(name);
                }
            }
        }
        for ip in candidates.iter().map(|c| c.addr().ip()) {
            if !offered.candidate_ips.contains(&ip) {
                offered.candidate_ips.push(ip);
            }
        }
        offered
    }

    /// Whether the stream's video (`None`: not live yet, H.264 or H.265 later) can go
    /// out in a codec offered.
    pub(super) fn check_video(&self, live: Option<Codec>) -> Result<(), Refusal> {
        let offered = if self.video.is_empty() {
            "none".to_owned()
        } else {
            self.video.join(", ")
        };
        match live {
            Some(Codec::H265) if !self.h265 => Err(Refusal::NoCommonCodec(format!(
                "the stream's video is H.265 (HEVC) and this browser does not offer H.265 \
                 (offered: {offered}); play it over HTTP-FLV, or in a browser that decodes H.265"
            ))),
            Some(Codec::H264) | None if !self.h264 && !self.h265 => {
                Err(Refusal::NoCommonCodec(format!(
                    "the stream's video is H.264 and the offer has no H264 (offered: {offered})"
                )))
            }
            _ => Ok(()),
        }
    }
}

/// A parser's error as one line, without the memory address it quotes.
pub(super) fn sdp_error(error: &dyn std::fmt::Display) -> String {
    let text = error.to_string();
    let mut line = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find(" at PointerOffset(") {
        line.push_str(&rest[..at]);
        rest = rest[at..].find(')').map_or("", |end| &rest[at + end + 1..]);
    }
    line.push_str(rest);
    line.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}
