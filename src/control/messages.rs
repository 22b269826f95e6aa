//! The JSON bodies of control messages, and parsing requests into typed commands.
//!
//! Field names follow the seed design (`seqid`, `mode`, `video`, `audio`, `offer`,
//! `iceserver`, `streamname`, `topicprefix`, `pull_stream_from_device`) plus `channel`,
//! `kind` and `client_id`. Unknown fields are ignored (older clients send more); a field
//! of the wrong type is an error that names it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::media::StreamKind;

mod ids;

pub use ids::MAX_ID_LEN;
pub(crate) use ids::shorten;
use ids::{check_client_id, check_seqid, salvage_seqid};

/// Most streams in one batch request (`pull_stream_from_device`): each gets its own reply.
pub const MAX_BATCH: usize = 64;

/// Stable error codes carried by `ERROR`/`REFUSE` replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not JSON, or not an object.
    InvalidJson,
    /// A field has the wrong type or value.
    InvalidField,
    /// A required field is missing.
    MissingField,
    /// The device id in the topic is not 1 to 20 digits.
    InvalidDevice,
    /// The topic's mode is not one the gateway knows.
    UnknownMode,
    /// The mode is known but not available in this version.
    NotSupported,
    /// The device did not connect after the pull was retried.
    DeviceUnavailable,
    /// The request was about a stream the requester did not subscribe to.
    NotSubscribed,
    /// The RTMP push failed as many times in a row as allowed (`rtmp.max_attempts`).
    RtmpUnavailable,
    /// A WebRTC offer that is not SDP the gateway can read.
    BadSdp,
    /// A WebRTC offer without a codec the stream can be sent in (e.g. no H264).
    NoCommonCodec,
    /// `webrtc.max_peers` WebRTC peers run already.
    TooManyPeers,
    /// `webrtc.ice_transport_policy` is `relay` and no TURN server has allocated an
    /// address.
    RelayUnavailable,
}

/// Request modes on `{prefix}/gateway/{device}/{MODE}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Want a stream (live, or playback with `kind: playback`).
    Subscribe,
    /// No longer want it.
    Unsubscribe,
    /// Want a history playback stream (same as SUBSCRIBE with `kind: playback`).
    Playback,
    /// Pause / resume / seek a playback (0x9202).
    PlaybackCtrl,
    /// A device announces it pushes on its own.
    DevPush,
    /// A device heartbeat.
    Heart,
    /// Push the stream to an RTMP server (SRS); counts as a requester like SUBSCRIBE.
    Rtmp,
    /// A WebRTC offer: answered on `ANSWER` with the gateway's SDP answer.
    WebRtc,
    /// Record the stream (`action` start/stop, `duration`, `pre_roll`); counts as a
    /// requester like SUBSCRIBE until `duration` or stop.
    Record,
}

impl Mode {
    /// Parses a topic's MODE segment (case-insensitive).
    pub fn parse(mode: &str) -> Option<Mode> {
        Some(match mode.to_ascii_uppercase().as_str() {
            "SUBSCRIBE" => Mode::Subscribe,
            "UNSUBSCRIBE" => Mode::Unsubscribe,
            "PLAYBACK" => Mode::Playback,
            "PLAYBACK_CTRL" => Mode::PlaybackCtrl,
            "DEVPUSH" => Mode::DevPush,
            "HEART" => Mode::Heart,
            "RTMP" => Mode::Rtmp,
            "WEBRTC" => Mode::WebRtc,
            "RECORD" => Mode::Record,
            _ => return None,
        })
    }

    /// The mode as topics spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Subscribe => "SUBSCRIBE",
            Mode::Unsubscribe => "UNSUBSCRIBE",
            Mode::Playback => "PLAYBACK",
            Mode::PlaybackCtrl => "PLAYBACK_CTRL",
            Mode::DevPush => "DEVPUSH",
            Mode::Heart => "HEART",
            Mode::Rtmp => "RTMP",
            Mode::WebRtc => "WEBRTC",
            Mode::Record => "RECORD",
        }
    }
}

/// A request body's fields as they are on the wire, every one optional: the first step of
/// parsing (JSON, types, the seqid and client id). The topic's mode then reads what it uses
/// into a typed command (`control::command`); nothing else sees this struct.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub(crate) struct Fields {
    /// Correlates the reply; chosen by the requester.
    pub seqid: Option<String>,
    /// Identifies the requester (a backend, a browser tab).
    pub client_id: Option<String>,
    /// Logical channel, default 1.
    pub channel: Option<u8>,
    /// `live` (default) or `playback`.
    pub kind: Option<StreamKind>,
    /// Want video (default true).
    pub video: Option<bool>,
    /// Want audio (default true).
    pub audio: Option<bool>,
    /// 0 main stream (default), 1 sub stream.
    pub stream_type: Option<u8>,
    /// 0x9201: 0 audio+video, 1 audio, 2 video, 3 audio or video.
    pub media_type: Option<u8>,
    /// 0x9201: 0 main or backup, 1 main, 2 backup.
    pub storage_type: Option<u8>,
    /// 0x9201: 0 normal, 1 fast forward, 2 key frame rewind, 3 key frame play, 4 single frame.
    pub playback_mode: Option<u8>,
    /// 0x9201/0x9202: 0 n/a, 1..5 = 1x, 2x, 4x, 8x, 16x.
    pub speed: Option<u8>,
    /// 0x9201 start time, `YYMMDDhhmmss` or `YYYY-MM-DD hh:mm:ss`.
    pub start_time: Option<String>,
    /// 0x9201 end time (absent or 0 = until the end).
    pub end_time: Option<String>,
    /// 0x9202 control: 0 start, 1 pause, 2 end, 3 fast forward, 4 key frame rewind, 5 seek,
    /// 6 key frame play.
    pub control: Option<u8>,
    /// 0x9202 seek position.
    pub seek_time: Option<String>,
    /// Batch: several streams in one request.
    pub pull_stream_from_device: Option<Vec<BatchItem>>,
    /// RTMP: where to push instead of the `rtmp.live_url`/`rtmp.playback_url` template.
    pub url: Option<String>,
    /// WEBRTC: the browser's offer, `{"type": "offer", "sdp": "v=0…"}`.
    pub offer: Option<SessionDescription>,
    /// WEBRTC: ICE servers the page uses (the seed's field, `RTCIceServer` objects). With
    /// `webrtc.request_ice_servers` the gateway allocates a relay on each TURN server in it
    /// for this request's peer; otherwise ignored.
    pub iceserver: Option<serde_json::Value>,
    /// RECORD: `start` (default) or `stop`.
    pub action: Option<String>,
    /// RECORD: how long to record (`"10m"`, default; at most a day).
    pub duration: Option<String>,
    /// RECORD: how much before the request the recording may start (`"10s"`): what the GOP
    /// cache holds of it.
    pub pre_roll: Option<String>,
}

/// An SDP offer or answer as browsers write it (`RTCSessionDescription.toJSON()`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionDescription {
    /// `offer` or `answer`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The SDP.
    pub sdp: String,
}

/// The reply to WEBRTC, on `{prefix}/client/{seqid}/ANSWER`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WebRtcAnswer {
    /// The request's seqid.
    pub seqid: String,
    /// `answer`.
    #[serde(rename = "type")]
    pub sdp_type: String,
    /// The gateway's SDP answer (every candidate included: no trickle).
    pub sdp: String,
    /// The session (also ended by `DELETE /whep/session/{session}`).
    pub session: String,
    /// Canonical device id.
    pub device: String,
    /// Channel.
    pub channel: u8,
    /// `live` or `playback`.
    pub kind: StreamKind,
    /// `live`, `pulling` or `waiting`, as for SUBSCRIBE.
    pub state: String,
}

/// One stream of a batch request.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct BatchItem {
    /// Device id (any form).
    pub device: String,
    /// Channel, default 1.
    pub channel: Option<u8>,
    /// Kind, default live.
    pub kind: Option<StreamKind>,
}

/// Why a request body was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// Stable code.
    pub code: ErrorCode,
    /// What a person can act on.
    pub message: String,
    /// The seqid, if the body had one.
    pub seqid: Option<String>,
}

impl Fields {
    /// Parses a body. The seqid is recovered even when the rest is wrong, so the error can
    /// be answered.
    pub(crate) fn parse(payload: &[u8]) -> Result<Fields, RequestError> {
        let value: Value = serde_json::from_slice(payload).map_err(|e| RequestError {
            code: ErrorCode::InvalidJson,
            message: format!("body is not valid JSON: {e}"),
            // a shell typo still shows its seqid: answer it there
            seqid: salvage_seqid(payload),
        })?;
        let Value::Object(map) = &value else {
            return Err(RequestError {
                code: ErrorCode::InvalidJson,
                message: "body must be a JSON object".to_owned(),
                seqid: None,
            });
        };
        let seqid = match map.get("seqid") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        if let Some(s) = &seqid {
            check_seqid(s)?;
        }
        if let Some(Value::String(client_id)) = map.get("client_id") {
            check_client_id(client_id, seqid.as_deref())?;
        }
        let batch = match map.get("pull_stream_from_device") {
            Some(Value::Array(batch)) => batch.len(),
            _ => 0,
        };
        if batch > MAX_BATCH {
            return Err(RequestError {
                code: ErrorCode::InvalidField,
                message: format!(
                    "pull_stream_from_device has {batch} streams; at most {MAX_BATCH} per request"
                ),
                seqid,
            });
        }
        let mut normalised = map.clone();
        if let Some(s) = &seqid {
            normalised.insert("seqid".to_owned(), Value::String(s.clone()));
        }
        serde_path_to_error::deserialize(Value::Object(normalised)).map_err(|e| RequestError {
            code: ErrorCode::InvalidField,
            message: format!("field {:?}: {}", e.path().to_string(), e.inner()),
            seqid,
        })
    }
}

/// Normalises a 0x9201/0x9202 time to the 12 BCD digits `YYMMDDhhmmss`.
pub fn bcd_time(input: &str) -> Option<String> {
    let digits: String = input.chars().filter(char::is_ascii_digit).collect();
    let digits = match digits.len() {
        1 if digits == "0" => "000000000000".to_owned(),
        12 => digits,
        14 => digits.get(2..)?.to_owned(),
        _ => return None,
    };
    let field = |at: usize| digits.get(at..at + 2)?.parse::<u8>().ok();
    let (month, day, hour, minute, second) =
        (field(2)?, field(4)?, field(6)?, field(8)?, field(10)?);
    let zero = digits.bytes().all(|b| b == b'0');
    let valid = (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && hour < 24
        && minute < 60
        && second < 60;
    (zero || valid).then_some(digits)
}

/// A reply on `{prefix}/client/{seqid}/{MODE}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reply {
    /// The request's seqid.
    pub seqid: String,
    /// `OK`, `REFUSE` or `ERROR`.
    pub mode: String,
    /// The device (canonical id), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The channel, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<u8>,
    /// The stream kind, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<StreamKind>,
    /// `live` (playing now) or `pulling` (the device has been asked), for OK.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Play URLs, for OK.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub urls: Option<PlayUrls>,
    /// Seconds the subscription lasts without renewal, for OK to SUBSCRIBE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_secs: Option<u64>,
    /// The RTMP push, for replies to RTMP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmp: Option<RtmpReply>,
    /// The recording, for replies to RECORD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<RecordReply>,
    /// Error code, for ERROR/REFUSE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    /// Human-readable message, for ERROR/REFUSE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What an OK reply to RECORD says of the recording.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordReply {
    /// `start` or `stop`.
    pub action: String,
    /// When the recording started (RFC 3339): the request's time less what the GOP cache
    /// holds before it, at most `pre_roll` (for start, when the stream is live; else when
    /// it comes up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// When it stops unless renewed or stopped (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// The HLS playlist of the recording's time range (through the gateway's HTTP port).
    pub hls: String,
    /// The fMP4 download of the same range.
    pub mp4: String,
    /// The recorded ranges (`/api/records`).
    pub api: String,
}

/// Longest `message` of an error reply, in bytes.
pub const MAX_MESSAGE: usize = 1024;

/// Where to play a stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlayUrls {
    /// HTTP-FLV.
    pub flv: String,
}

/// The RTMP part of a reply to RTMP.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RtmpReply {
    /// Where the stream is (or was to be) pushed.
    pub url: String,
    /// Where to play it on the RTMP server, by name (`rtmp.play_urls`), for OK.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub play_urls: std::collections::BTreeMap<String, String>,
    /// What went wrong last (`refused`, `unreachable`, `closed`, `stalled`, `timeout`,
    /// `protocol`, `bad_url`), for ERROR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    /// An error or refusal. The message is cut at [`MAX_MESSAGE`] bytes: it may quote the
    /// request (a bad value, an unknown mode), and a reply must stay a small packet.
    pub fn error(seqid: &str, mode: &str, code: ErrorCode, message: impl Into<String>) -> Reply {
        let mut message = message.into();
        if message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        Reply {
            seqid: seqid.to_owned(),
            mode: mode.to_owned(),
            device: None,
            channel: None,
            kind: None,
            state: None,
            urls: None,
            lease_secs: None,
            rtmp: None,
            record: None,
            code: Some(code),
            message: Some(message),
        }
    }
}

/// Commands to a device on `{prefix}/device/{device}/{MODE}`, mirroring JT/T 1078.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "mode")]
pub enum DeviceCommand {
    /// 0x9101 real-time AV request: connect to `server_host:tcp_port` and push.
    #[serde(rename = "REQPULL")]
    ReqPull {
        /// Correlation id.
        seqid: String,
        /// Canonical device id.
        device: String,
        /// Where to connect.
        server_host: String,
        /// TCP port (live ingest).
        tcp_port: u16,
        /// UDP port, 0 = not used.
        udp_port: u16,
        /// Logical channel.
        channel: u8,
        /// 0 audio+video, 1 video, 2 two-way talk, 3 listen, 4 broadcast, 5 transparent.
        data_type: u8,
        /// 0 main, 1 sub.
        stream_type: u8,
    },
    /// 0x9102 real-time AV control.
    #[serde(rename = "STOP")]
    Stop {
        /// Correlation id.
        seqid: String,
        /// Canonical device id.
        device: String,
        /// Logical channel.
        channel: u8,
        /// 0 close transmission, 1 switch stream, 2 pause, 3 resume, 4 close talk.
        command: u8,
        /// 0 audio and video, 1 audio only, 2 video only.
        close_type: u8,
        /// New stream type when switching.
        stream_type: u8,
    },
    /// 0x9201 playback request: connect to `server_host:tcp_port` (playback ingest).
    #[serde(rename = "PLAYBACK")]
    Playback {
        /// Correlation id.
        seqid: String,
        /// Canonical device id.
        device: String,
        /// Where to connect.
        server_host: String,
        /// TCP port (playback ingest).
        tcp_port: u16,
        /// UDP port, 0 = not used.
        udp_port: u16,
        /// Logical channel.
        channel: u8,
        /// 0 audio+video, 1 audio, 2 video, 3 audio or video.
        media_type: u8,
        /// 0 main or sub, 1 main, 2 sub.
        stream_type: u8,
        /// 0 main or backup, 1 main, 2 backup.
        storage_type: u8,
        /// 0 normal, 1 fast forward, 2 key frame rewind, 3 key frame play, 4 single frame.
        playback_mode: u8,
        /// 0 n/a, 1..5 = 1x..16x.
        speed: u8,
        /// `YYMMDDhhmmss`.
        start_time: String,
        /// `YYMMDDhhmmss`, all zeros = until the end.
        end_time: String,
    },
    /// 0x9202 playback control.
    #[serde(rename = "PLAYBACK_CTRL")]
    PlaybackCtrl {
        /// Correlation id.
        seqid: String,
        /// Canonical device id.
        device: String,
        /// Logical channel.
        channel: u8,
        /// 0 start, 1 pause, 2 end, 3 fast forward, 4 key frame rewind, 5 seek, 6 key frame play.
        control: u8,
        /// 0 n/a, 1..5 = 1x..16x.
        speed: u8,
        /// Seek position `YYMMDDhhmmss` (control 5).
        seek_time: String,
    },
}

impl DeviceCommand {
    /// The MODE segment of the device topic.
    pub fn mode(&self) -> &'static str {
        match self {
            DeviceCommand::ReqPull { .. } => "REQPULL",
            DeviceCommand::Stop { .. } => "STOP",
            DeviceCommand::Playback { .. } => "PLAYBACK",
            DeviceCommand::PlaybackCtrl { .. } => "PLAYBACK_CTRL",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqid_survives_a_bad_field() {
        let err = Fields::parse(br#"{"seqid":"s1","channel":"one"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidField);
        assert_eq!(err.seqid.as_deref(), Some("s1"));
        assert!(
            err.message.contains("channel") || err.message.contains("u8"),
            "{}",
            err.message
        );
        let err = Fields::parse(b"{not json").unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidJson);
        assert_eq!(
            Fields::parse(b"[1]").unwrap_err().code,
            ErrorCode::InvalidJson
        );
        let ok =
            Fields::parse(br#"{"seqid":7,"client_id":"b","unknown":1,"kind":"playback"}"#).unwrap();
        assert_eq!(ok.seqid.as_deref(), Some("7"));
        assert_eq!(ok.kind, Some(StreamKind::Playback));
    }

    #[test]
    fn a_seqid_that_cannot_name_a_topic_is_rejected() {
        let err = Fields::parse(br#"{"seqid":"a/b"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidField);
        assert!(err.message.contains("'/'"), "{}", err.message);
        assert_eq!(err.seqid.as_deref(), Some("a/b"), "still repliable");
        for bad in [r#""a+b""#, r##""a#""##, r#""""#] {
            let body = format!(r#"{{"seqid":{bad}}}"#);
            let err = Fields::parse(body.as_bytes()).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidField, "{body}");
            assert_eq!(err.seqid, None, "{body}: no topic to reply on");
        }
        assert!(Fields::parse(br#"{"seqid":"s-1.x_y"}"#).is_ok());
    }

    #[test]
    fn times_normalise_to_bcd_digits() {
        assert_eq!(
            bcd_time("2026-11-22 10:00:00").as_deref(),
            Some("261122100000")
        );
        assert_eq!(bcd_time("261122100000").as_deref(), Some("261122100000"));
        assert_eq!(bcd_time("0").as_deref(), Some("000000000000"));
        assert_eq!(bcd_time("2026-13-22 10:00:00"), None);
        assert_eq!(bcd_time("yesterday"), None);
    }

    #[test]
    fn device_commands_carry_their_mode() {
        let cmd = DeviceCommand::Stop {
            seqid: "g1".into(),
            device: "1".into(),
            channel: 1,
            command: 0,
            close_type: 0,
            stream_type: 0,
        };
        let json = serde_json::to_value(&cmd).unwrap();
        assert_eq!(json["mode"], "STOP");
        assert_eq!(cmd.mode(), "STOP");
    }
}
