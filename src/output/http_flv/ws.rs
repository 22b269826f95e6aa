//! WS-FLV: the HTTP-FLV play paths (`/live/{device}_{channel}.flv`, `/playback/…`) asked
//! for with a WebSocket upgrade (RFC 6455) get the same FLV byte stream, carried in binary
//! messages. Browsers open at most six HTTP/1.1 connections per host, so a wall of nine or
//! sixteen HTTP-FLV players stalls; WebSockets do not count against that limit.
//!
//! This module is the protocol's pure part: the upgrade request's validation and answer,
//! the header of a server's binary message or close frame, and a parser of what a client
//! sends (only to notice its close frame). No sockets: the bytes are written by
//! `output::http_flv::direct` (the direct path) or by `output::http_flv` (the routed path, over
//! hyper's upgrade, also over TLS), with everything else of an HTTP-FLV viewer: demand,
//! AAC, limits, counters, signed URLs.
//!
//! One binary message per write batch (what HTTP-FLV sends as one chunk: the FLV tags of
//! one device read), not per tag: the message header takes the chunk size line's place in
//! the same vectored write, so a WS-FLV viewer costs what an HTTP-FLV one does. A tag may
//! be split across messages (a backlog drained in pieces); players (mpegts.js, flv.js)
//! read the messages as one byte stream.
//!
//! Origins: like HTTP-FLV's `Access-Control-Allow-Origin: *`, any `Origin` may play; a
//! signed URL (`http.play_secret`) is what restricts plays.

use tungstenite::handshake::derive_accept_key;

/// The WebSocket protocol version a client must ask for (RFC 6455 §4.1).
const VERSION: &str = "13";

/// A close frame's payload: 2 bytes of code and at most 123 of reason (RFC 6455 §5.5).
const MAX_CLOSE_REASON: usize = 123;

/// Opcodes (RFC 6455 §5.2).
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
/// FIN bit of the first header byte.
const FIN: u8 = 0x80;

/// Close status: the stream ended (RFC 6455 §7.4.1, 1000 normal closure).
pub(crate) const CLOSE_NORMAL: u16 = 1000;

/// The WebSocket headers of a request, collected while its head is parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpgradeHeaders {
    upgrade: Option<String>,
    connection_upgrade: bool,
    key: Option<String>,
    version: Option<String>,
}

/// A valid upgrade request: what the 101 answer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Handshake {
    accept: String,
}

/// A message header or frame head, at most 10 bytes, built on the stack.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameHead {
    bytes: [u8; 10],
    len: usize,
}

/// Notices a client's close frame in the bytes it sends (masked frames, RFC 6455 §5.2);
/// other frames (pings, data) are skipped without being kept.
#[derive(Debug, Default)]
pub(crate) struct ClientFrames {
    /// Bytes of a frame header not complete yet.
    head: Vec<u8>,
    /// Payload bytes of the current frame still to skip.
    skip: u64,
}

impl UpgradeHeaders {
    /// Records a request header (only the WebSocket ones are kept).
    pub fn add_header(&mut self, name: &str, value: &[u8]) {
        let Ok(value) = std::str::from_utf8(value) else {
            return;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("upgrade") {
            self.upgrade = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("connection") {
            self.connection_upgrade |= value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            self.key = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            self.version = Some(value.to_owned());
        }
    }

    /// Whether the request asks for a WebSocket (it names `Upgrade: websocket`).
    pub fn is_websocket(&self) -> bool {
        self.upgrade.as_deref().is_some_and(|u| {
            u.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
        })
    }

    /// The handshake, or why the upgrade request is refused (a one-line reason for a 400).
    /// `method_get`: the request is a `GET`; `http10`: it is HTTP/1.0.
    pub(crate) fn handshake(&self, method_get: bool, http10: bool) -> Result<Handshake, String> {
        if !method_get || http10 {
            return Err("a WebSocket upgrade must be an HTTP/1.1 GET\n".to_owned());
        }
        if !self.connection_upgrade {
            return Err("a WebSocket upgrade needs \"Connection: Upgrade\"\n".to_owned());
        }
        if self.version.as_deref() != Some(VERSION) {
            return Err(format!(
                "unsupported Sec-WebSocket-Version {:?}: expected {VERSION}\n",
                crate::media::echo(self.version.as_deref().unwrap_or_default())
            ));
        }
        let key = self.key.as_deref().unwrap_or_default();
        // base64 of 16 bytes (RFC 6455 §4.1, item 7)
        let valid = key.len() == 24
            && key.ends_with("==")
            && key
                .bytes()
                .take(22)
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
        if !valid {
            return Err(format!(
                "invalid Sec-WebSocket-Key {:?}: expected 16 bytes in base64\n",
                crate::media::echo(key)
            ));
        }
        Ok(Handshake {
            accept: derive_accept_key(key.as_bytes()),
        })
    }
}

impl Handshake {
    /// The `Sec-WebSocket-Accept` value.
    pub(crate) fn accept(&self) -> &str {
        &self.accept
    }

    /// The 101 answer's head.
    pub(crate) fn response_head(&self) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            self.accept
        )
    }
}

impl FrameHead {
    /// The header of an unmasked binary message of `len` bytes, in one frame (a server's
    /// frames are not masked, RFC 6455 §5.1).
    pub(crate) fn binary(len: usize) -> FrameHead {
        FrameHead::new(OP_BINARY, len)
    }

    fn new(opcode: u8, len: usize) -> FrameHead {
        let mut bytes = [0u8; 10];
        bytes[0] = FIN | opcode;
        let n = match len {
            0..=125 => {
                bytes[1] = len as u8;
                2
            }
            126..=0xffff => {
                bytes[1] = 126;
                bytes[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            }
            _ => {
                bytes[1] = 127;
                bytes[2..10].copy_from_slice(&(len as u64).to_be_bytes());
                10
            }
        };
        FrameHead { bytes, len: n }
    }

    /// The header's bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

/// A whole close frame with `code` and `reason` (cut to what a control frame may carry).
pub(crate) fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = reason.get(..end).unwrap_or_default();
    let head = FrameHead::new(OP_CLOSE, 2 + reason.len());
    let mut frame = Vec::with_capacity(head.len + 2 + reason.len());
    frame.extend_from_slice(head.as_bytes());
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason.as_bytes());
    frame
}

impl ClientFrames {
    /// Reads `bytes` the client sent; `true` once a close frame began (its payload does not
    /// matter: the viewer is leaving).
    pub(crate) fn push(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = usize::try_from(self.skip)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.skip -= n as u64;
                bytes = bytes.get(n..).unwrap_or_default();
                continue;
            }
            let Some((&byte, rest)) = bytes.split_first() else {
                break;
            };
            self.head.push(byte);
            bytes = rest;
            if let Some((opcode, payload)) = parse_head(&self.head) {
                if opcode == OP_CLOSE {
                    return true;
                }
                self.head.clear();
                self.skip = payload;
            }
        }
        false
    }
}

/// A complete frame head in `head`: its opcode and payload length (mask key included in
/// what follows it is not: the mask key is part of the head here).
fn parse_head(head: &[u8]) -> Option<(u8, u64)> {
    let (&first, &second) = (head.first()?, head.get(1)?);
    let masked = second & 0x80 != 0;
    let mask = if masked { 4 } else { 0 };
    let (len, at) = match second & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes(head.get(2..4)?.try_into().ok()?)),
            4,
        ),
        127 => (u64::from_be_bytes(head.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    if head.len() < at + mask {
        return None;
    }
    Some((first & 0x0f, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> UpgradeHeaders {
        let mut h = UpgradeHeaders::default();
        for (name, value) in pairs {
            h.add_header(name, value.as_bytes());
        }
        h
    }

    const GOOD: &[(&str, &str)] = &[
        ("Upgrade", "websocket"),
        ("Connection", "keep-alive, Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ];

    #[test]
    fn the_rfc_example_key_is_accepted() {
        let h = headers(GOOD);
        assert!(h.is_websocket());
        let hs = h.handshake(true, false).unwrap();
        // RFC 6455 §1.3
        assert_eq!(hs.accept(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(hs.response_head().starts_with("HTTP/1.1 101 "));
    }

    #[test]
    fn bad_upgrades_are_refused_with_a_reason() {
        let mut no_key = GOOD.to_vec();
        no_key.retain(|(n, _)| *n != "Sec-WebSocket-Key");
        assert!(
            headers(&no_key)
                .handshake(true, false)
                .unwrap_err()
                .contains("Key")
        );
        let mut bad_version = GOOD.to_vec();
        bad_version[3] = ("Sec-WebSocket-Version", "8");
        assert!(
            headers(&bad_version)
                .handshake(true, false)
                .unwrap_err()
                .contains("Version")
        );
        let mut garbage_key = GOOD.to_vec();
        garbage_key[2] = ("Sec-WebSocket-Key", "\u{1}\u{2}");
        assert!(headers(&garbage_key).handshake(true, false).is_err());
        assert!(headers(GOOD).handshake(false, false).is_err());
        assert!(headers(GOOD).handshake(true, true).is_err());
        assert!(!headers(&[("Upgrade", "h2c")]).is_websocket());
    }

    #[test]
    fn frame_heads_use_the_shortest_length() {
        assert_eq!(FrameHead::binary(5).as_bytes(), [0x82, 5]);
        assert_eq!(FrameHead::binary(300).as_bytes(), [0x82, 126, 1, 44]);
        let big = FrameHead::binary(70_000);
        assert_eq!(big.as_bytes().len(), 10);
        assert_eq!(big.as_bytes()[..2], [0x82, 127]);
        assert_eq!(parse_head(big.as_bytes()), Some((2, 70_000)));
        let close = close_frame(1000, &"é".repeat(100));
        assert_eq!(close[0], 0x88);
        assert!(close.len() <= 2 + 125);
        assert!(std::str::from_utf8(&close[4..]).is_ok());
    }

    #[test]
    fn a_client_close_is_noticed_after_skipped_frames_in_any_split() {
        // a masked ping with 4 payload bytes, a masked 300-byte binary message, a close
        let mut bytes = vec![0x89, 0x84, 1, 2, 3, 4, 9, 9, 9, 9];
        bytes.extend_from_slice(&[0x82, 0xfe, 1, 44, 1, 2, 3, 4]);
        bytes.extend_from_slice(&[0u8; 300]);
        bytes.extend_from_slice(&[0x88, 0x82, 1, 2, 3, 4, 5, 6]);
        for split in 1..bytes.len() {
            let mut frames = ClientFrames::default();
            let (a, b) = bytes.split_at(split);
            let early = frames.push(a);
            assert!(early || frames.push(b), "split at {split}");
        }
        let mut frames = ClientFrames::default();
        assert!(!frames.push(&bytes[..bytes.len() - 8]));
    }
}
