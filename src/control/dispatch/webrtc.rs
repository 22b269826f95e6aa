//! WEBRTC requests: the browser's offer goes to the WebRTC side, the answer back on
//! `{prefix}/client/{seqid}/ANSWER`. The requester counts as one of the stream's (the device
//! is asked to push if it is not live, and `device_unavailable` reaches the requester's
//! seqid if it never connects) until its peer ends.

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::info;

use super::Control;
use crate::config::TurnServer;
use crate::control::command::{IceServer, WebRtcOffer};
use crate::control::demand::RequesterId;
use crate::control::messages::{ErrorCode, RequestError, WebRtcAnswer};
use crate::output::webrtc::{Offer, PeerEvent, Refusal, RelayLease, WebRtc};

/// WEBRTC requests waiting for their own TURN servers' allocations at once; more are
/// refused (`relay_unavailable`).
pub(super) const MAX_DEFERRED: usize = 64;

/// TURN servers one request may name.
const MAX_REQUEST_TURN_SERVERS: usize = 4;

/// The WebRTC side as control sees it: the output, and the offers waiting for the relays
/// on their own TURN servers.
pub(crate) struct WebRtcControl {
    webrtc: WebRtc,
    /// Offers whose relays are being allocated come back here.
    deferred_tx: mpsc::Sender<DeferredOffer>,
    deferred_rx: Option<mpsc::Receiver<DeferredOffer>>,
    /// How many are out.
    deferred: usize,
}

impl WebRtcControl {
    pub(super) fn new(webrtc: WebRtc) -> WebRtcControl {
        let (deferred_tx, deferred_rx) = mpsc::channel(MAX_DEFERRED);
        WebRtcControl {
            webrtc,
            deferred_tx,
            deferred_rx: Some(deferred_rx),
            deferred: 0,
        }
    }
}

/// Where deferred offers come back (taken once; never anything without WebRTC).
pub(super) fn deferred_offers(webrtc: Option<&mut WebRtcControl>) -> mpsc::Receiver<DeferredOffer> {
    webrtc
        .and_then(|w| w.deferred_rx.take())
        .unwrap_or_else(|| mpsc::channel(1).1)
}

/// A WEBRTC request whose own TURN servers were being allocated, back in the control loop.
#[derive(Debug)]
pub(crate) struct DeferredOffer {
    offer: WebRtcOffer,
    /// The requester's client id (the seqid without one).
    client: String,
    seqid: String,
    lease: RelayLease,
}

impl Control {
    /// `WEBRTC`: an offer in, an answer out.
    pub(super) fn webrtc_request(&mut self, offer: WebRtcOffer, client: String, seqid: String) {
        self.webrtc_offer(offer, client, seqid, None);
    }

    /// A request whose TURN allocations are done (or timed out): answered now.
    pub(super) fn handle_deferred_offer(&mut self, deferred: DeferredOffer) {
        if let Some(webrtc) = &mut self.webrtc {
            webrtc.deferred = webrtc.deferred.saturating_sub(1);
        }
        let DeferredOffer {
            offer,
            client,
            seqid,
            lease,
        } = deferred;
        self.webrtc_offer(offer, client, seqid, Some(lease));
    }

    /// The offer, with the relays leased on its own TURN servers (`None`: not asked yet;
    /// if it names some, they are allocated first and the request comes back).
    fn webrtc_offer(
        &mut self,
        request: WebRtcOffer,
        client: String,
        seqid: String,
        lease: Option<RelayLease>,
    ) {
        let key = request.wanted.key.clone();
        let Some(webrtc) = self.webrtc.as_ref().map(|w| w.webrtc.clone()) else {
            let flv = self.signed_urls(&key).flv;
            return self.reject(RequestError {
                code: ErrorCode::NotSupported,
                message: format!(
                    "WebRTC is disabled on this gateway (webrtc.enabled = false); play the \
                     stream over HTTP-FLV instead: {flv}"
                ),
                seqid: Some(seqid),
            });
        };
        let relays = match lease {
            Some(lease) => lease,
            None => match request_turn_servers(&webrtc, &request.ice_servers) {
                Err(message) => {
                    return self.reject(RequestError {
                        code: ErrorCode::InvalidField,
                        message,
                        seqid: Some(seqid),
                    });
                }
                // only relays to offer and they are being allocated (the first moments
                // after start): the request waits for them rather than being refused
                Ok(servers) if servers.is_empty() && !webrtc.relays_starting() => {
                    RelayLease::default()
                }
                Ok(servers) => {
                    let deferred = DeferredOffer {
                        offer: request,
                        client,
                        seqid,
                        lease: RelayLease::default(),
                    };
                    return self.defer_offer(webrtc, deferred, servers);
                }
            },
        };
        // the offer first: a refused one must not make the device push
        let offer = Offer {
            key: key.clone(),
            sdp: request.sdp,
            video: request.video,
            audio: request.audio,
            requester: Some(client.clone()),
            relays,
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
        let requester = RequesterId::Client(client);
        let (state, actions) = self.want(request.wanted, &requester, &seqid);
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
        let topic = self.topics.reply(&seqid, "ANSWER");
        self.outbox.push_json(&topic, &reply, false);
        self.perform(actions);
    }

    /// Allocates relays on the request's own TURN servers (and waits for those of
    /// `webrtc.turn_servers` at start) off the control loop, in a tracked task; the
    /// request comes back through [`Control::handle_deferred_offer`].
    fn defer_offer(&mut self, webrtc: WebRtc, deferred: DeferredOffer, servers: Vec<TurnServer>) {
        let Some(control) = self.webrtc.as_mut() else {
            return;
        };
        if control.deferred >= MAX_DEFERRED {
            return self.reject(RequestError {
                code: ErrorCode::RelayUnavailable,
                message: format!(
                    "{MAX_DEFERRED} WEBRTC offers are already waiting for their TURN servers; try again"
                ),
                seqid: Some(deferred.seqid),
            });
        }
        control.deferred += 1;
        let back = control.deferred_tx.clone();
        self.tasks.spawn(async move {
            let lease = webrtc.lease_relays(&servers).await;
            let deferred = DeferredOffer { lease, ..deferred };
            if let Err(unsent) = back.send(deferred).await {
                // control is gone (shutdown): nobody will offer with it
                webrtc.release(&unsent.0.lease);
            }
        });
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

/// The TURN servers of a request's `iceserver`, if `webrtc.request_ice_servers` lets the
/// gateway use them (else none: the list is for the browser's side).
fn request_turn_servers(webrtc: &WebRtc, servers: &[IceServer]) -> Result<Vec<TurnServer>, String> {
    if webrtc.request_ice_servers() {
        turn_servers_of(servers)
    } else {
        Ok(Vec::new())
    }
}

/// The TURN servers (UDP) of a page's ICE servers. STUN URLs, `turns:` and
/// `?transport=tcp` are left out: the gateway's relays are UDP.
pub(crate) fn turn_servers_of(ice_servers: &[IceServer]) -> Result<Vec<TurnServer>, String> {
    let mut servers = Vec::new();
    for (i, entry) in ice_servers.iter().enumerate() {
        for url in entry.urls.iter() {
            let Some(rest) = url
                .get(..5)
                .filter(|scheme| scheme.eq_ignore_ascii_case("turn:"))
                .map(|_| &url[5..])
            else {
                continue;
            };
            let (address, query) = rest.split_once('?').unwrap_or((rest, ""));
            if query
                .split('&')
                .any(|p| p.eq_ignore_ascii_case("transport=tcp"))
            {
                continue;
            }
            let (Some(username), Some(credential)) = (&entry.username, &entry.credential) else {
                return Err(format!(
                    "iceserver[{i}]: {} needs a username and a credential",
                    crate::media::echo(url)
                ));
            };
            let has_port = match address.strip_prefix('[') {
                Some(v6) => v6.contains("]:"),
                None => address.contains(':'),
            };
            let server = if has_port {
                address.to_owned()
            } else {
                format!("{address}:3478")
            };
            let server = TurnServer::new(&server, username, credential).map_err(|_| {
                format!(
                    "iceserver[{i}]: {} is not turn:host[:port]",
                    crate::media::echo(url)
                )
            })?;
            servers.push(server);
        }
    }
    if servers.len() > MAX_REQUEST_TURN_SERVERS {
        return Err(format!(
            "iceserver: {} TURN servers; at most {MAX_REQUEST_TURN_SERVERS} per request",
            servers.len()
        ));
    }
    Ok(servers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::command::ice_servers;
    use serde_json::json;

    /// `iceserver` as a request carries it, read and then searched for TURN servers.
    fn turn_servers(value: &serde_json::Value) -> Result<Vec<TurnServer>, String> {
        turn_servers_of(&ice_servers(Some(value))?)
    }

    #[test]
    fn a_requests_turn_servers_are_read_as_browsers_write_them() {
        let list = json!([
            {"urls": "stun:stun.example.net:3478"},
            {"urls": ["turn:turn.example.net?transport=udp", "turns:turn.example.net:5349",
                      "turn:turn.example.net:3478?transport=tcp", "TURN:[2001:db8::1]:3479"],
             "username": "1700000000:gw", "credential": "c2VjcmV0"},
            {"url": "turn:192.0.2.9:3480", "username": "u", "credential": "p"}
        ]);
        let servers: Vec<(String, String, String)> = turn_servers(&list)
            .unwrap()
            .into_iter()
            .map(|t| (t.server, t.username, t.credential))
            .collect();
        let own = |s: &str, u: &str, c: &str| (s.to_owned(), u.to_owned(), c.to_owned());
        assert_eq!(
            servers,
            [
                own("turn.example.net:3478", "1700000000:gw", "c2VjcmV0"),
                own("[2001:db8::1]:3479", "1700000000:gw", "c2VjcmV0"),
                own("192.0.2.9:3480", "u", "p"),
            ]
        );
        assert_eq!(turn_servers(&json!(null)).unwrap().len(), 0);
        assert_eq!(
            turn_servers(&json!([{"urls": "stun:x:1"}])).unwrap().len(),
            0
        );
    }

    #[test]
    fn a_bad_iceserver_list_is_an_error_that_names_the_entry() {
        for (value, says) in [
            (json!("turn:x"), "expected a list"),
            (json!([1]), "iceserver[0]: expected an object"),
            (json!([{"urls": 5}]), "iceserver[0].urls"),
            (
                json!([{"urls": "stun:s.example"}, {"urls": "turn:t.example:3478"}]),
                "iceserver[1]: turn:t.example:3478 needs a username",
            ),
            (
                json!([{"urls": "turn:t.example:port", "username": "u", "credential": "p"}]),
                "is not turn:host[:port]",
            ),
            (
                json!([{"urls": ["turn:a:1", "turn:b:1", "turn:c:1", "turn:d:1", "turn:e:1"],
                        "username": "u", "credential": "p"}]),
                "at most 4",
            ),
        ] {
            let error = turn_servers(&value).unwrap_err();
            assert!(error.contains(says), "{value}: {error}");
        }
    }
}
