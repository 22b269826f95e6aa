//! WEBRTC requests: the browser's offer goes to the WebRTC side, the answer back on
//! `{prefix}/client/{seqid}/ANSWER`. The requester counts as one of the stream's (the device
//! is asked to push if it is not live, and `device_unavailable` reaches the requester's
//! seqid if it never connects) until its peer ends.

use tokio::time::Instant;
use tracing::info;

use super::Control;
use crate::control::demand::RequesterId;
use crate::control::messages::{ErrorCode, Mode, Request, RequestError, WebRtcAnswer};
use crate::media::DeviceId;
use crate::output::webrtc::{Offer, PeerEvent, Refusal};

impl Control {
    /// `WEBRTC`: an offer in, an answer out.
    pub(super) fn webrtc_request(&mut self, device: &DeviceId, request: &Request) {
        let seqid = self.seqid_of(request);
        let key = request.stream_key(device, Mode::WebRtc);
        let Some(webrtc) = self.webrtc.clone() else {
            return self.reject(RequestError {
                code: ErrorCode::NotSupported,
                message: format!(
                    "WebRTC is disabled on this gateway (webrtc.enabled = false); play the \
                     stream over HTTP-FLV instead: {}",
                    self.urls(&key).flv
                ),
                seqid: Some(seqid),
            });
        };
        let sdp = match &request.offer {
            Some(offer) if offer.kind == "offer" => offer.sdp.clone(),
            Some(offer) => {
                return self.reject(RequestError {
                    code: ErrorCode::InvalidField,
                    message: format!(
                        "offer.type is {:?}; the gateway answers offers (\"type\": \"offer\")",
                        crate::media::echo(&offer.kind)
                    ),
                    seqid: Some(seqid),
                });
            }
            None => {
                return self.reject(RequestError {
                    code: ErrorCode::MissingField,
                    message: "WEBRTC needs \"offer\": {\"type\": \"offer\", \"sdp\": \"v=0…\"} \
                              (RTCPeerConnection.localDescription after createOffer)"
                        .to_owned(),
                    seqid: Some(seqid),
                });
            }
        };
        let requester_id = request.client_id.clone().unwrap_or_else(|| seqid.clone());
        let requester = RequesterId::Client(requester_id.clone());
        // the offer first: a refused one must not make the device push
        let offer = Offer {
            key: key.clone(),
            sdp,
            video: request.video.unwrap_or(true),
            audio: request.audio.unwrap_or(true),
            requester: Some(requester_id),
        };
        let answer = match webrtc.offer(offer) {
            Ok(answer) => answer,
            Err(refusal) => {
                let code = match refusal {
                    Refusal::Disabled => ErrorCode::NotSupported,
                    Refusal::BadSdp(_) => ErrorCode::BadSdp,
                    Refusal::NoCommonCodec(_) => ErrorCode::NoCommonCodec,
                    Refusal::TooManyPeers(_) => ErrorCode::TooManyPeers,
                    Refusal::RelayUnavailable => ErrorCode::RelayUnavailable,
                };
                return self.reject(RequestError {
                    code,
                    message: refusal.to_string(),
                    seqid: Some(seqid),
                });
            }
        };
        let (state, actions) = match self.want(&key, &requester, &seqid, request) {
            Ok(wanted) => wanted,
            Err(error) => {
                webrtc.close(&answer.session);
                return self.reject(error);
            }
        };
        info!(stream = %key, requester = ?requester, state, session = %answer.session, "webrtc answered");
        let reply = WebRtcAnswer {
            seqid: seqid.clone(),
            sdp_type: "answer".to_owned(),
            sdp: answer.sdp,
            session: answer.session,
            device: key.device.to_string(),
            channel: key.channel.0,
            kind: key.kind,
            state: state.to_owned(),
        };
        self.publish_json(&self.topics.reply(&seqid, "ANSWER"), &reply, false);
        self.perform(actions);
    }

    /// A peer ended: its requester no longer wants the stream.
    pub(super) fn handle_peer_event(&mut self, event: PeerEvent) {
        let Some(requester) = event.requester else {
            return;
        };
        let requester = RequesterId::Client(requester);
        if self
            .demand
            .release(&event.key, &requester, Instant::now().into_std())
        {
            info!(stream = %event.key, requester = ?requester, reason = event.ended.as_str(), "webrtc requester left");
        }
    }
}
