//! Requests as typed commands: the mode of the topic reads the body's fields into one
//! [`Command`] variant holding only what that mode uses, checked, with JT/T 1078 values as
//! enums (`params`). The dispatcher matches on the variant and never reads a raw field.
//!
//! Error codes and messages are the contract of docs/mqtt.md: the checks here say what the
//! dispatcher used to say, in the same words.

use std::time::Duration;

use serde::Deserialize;

use super::messages::{ErrorCode, Fields, Mode, RequestError, SessionDescription, bcd_time};
use super::params::{
    FieldError, LiveParams, PlaybackControl, PlaybackParams, PullParams, Speed, optional,
};
use crate::media::{Channel, DeviceId, StreamKey, StreamKind};

/// A request: who asked (`seqid`, `client_id`) and what for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Request {
    /// Correlates the reply; chosen by the requester.
    pub(crate) seqid: Option<String>,
    /// Identifies the requester (a backend, a browser tab).
    pub(crate) client_id: Option<String>,
    /// What the mode asks for.
    pub(crate) command: Command,
}

/// One variant per request mode.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    /// SUBSCRIBE or PLAYBACK: want each stream (several with `pull_stream_from_device`).
    Subscribe(Vec<Wanted>),
    /// No longer want the stream.
    Unsubscribe(StreamKey),
    /// Pause, resume or seek a playback (0x9202).
    PlaybackCtrl(PlaybackCtrl),
    /// A device announces it pushes on its own.
    DevPush(StreamKey),
    /// A device heartbeat.
    Heart,
    /// Push the stream to an RTMP server: where (`None`: the configured template).
    Rtmp {
        /// The stream and its pull fields.
        wanted: Wanted,
        /// `url`.
        url: Option<String>,
    },
    /// A WebRTC offer.
    WebRtc(WebRtcOffer),
    /// Record the stream, or stop recording it.
    Record(RecordAction),
}

/// RECORD's fields: `action` start (default) or stop.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RecordAction {
    /// Record for `duration` (the requester holds the stream until then); the reply's
    /// range reaches `pre_roll` back.
    Start {
        /// The stream and its pull fields.
        wanted: Wanted,
        /// `duration`: default [`RECORD_DURATION`], at most [`MAX_RECORD_DURATION`].
        duration: Duration,
        /// `pre_roll`: default none, at most [`MAX_PRE_ROLL`].
        pre_roll: Duration,
    },
    /// Stop this requester's recording.
    Stop(StreamKey),
}

/// Default `duration` of a RECORD request.
pub(crate) const RECORD_DURATION: Duration = Duration::from_secs(600);
/// Longest `duration` of a RECORD request.
pub(crate) const MAX_RECORD_DURATION: Duration = Duration::from_secs(86_400);
/// Longest `pre_roll` a reply's playback range reaches back.
pub(crate) const MAX_PRE_ROLL: Duration = Duration::from_secs(60);

/// A stream a requester wants, with the fields that shape its device command.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Wanted {
    pub(crate) key: StreamKey,
    pub(crate) pull: PullParams,
}

/// PLAYBACK_CTRL's fields.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PlaybackCtrl {
    pub(crate) key: StreamKey,
    pub(crate) control: PlaybackControl,
    pub(crate) speed: Speed,
    /// `YYMMDDhhmmss`, zeros unless seeking.
    pub(crate) seek_time: String,
}

/// WEBRTC's fields.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WebRtcOffer {
    /// The stream and its pull fields.
    pub(crate) wanted: Wanted,
    /// The offer's SDP.
    pub(crate) sdp: String,
    /// Send video (default true).
    pub(crate) video: bool,
    /// Send audio (default true).
    pub(crate) audio: bool,
    /// The page's ICE servers (`iceserver`).
    pub(crate) ice_servers: Vec<IceServer>,
}

/// An `RTCIceServer` as a page writes it: `urls` (one URL or several; `url` in older
/// pages), and the credentials of a TURN server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct IceServer {
    #[serde(alias = "url")]
    pub(crate) urls: Urls,
    #[serde(default)]
    pub(crate) username: Option<String>,
    #[serde(default)]
    pub(crate) credential: Option<String>,
}

/// One URL or a list of them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub(crate) enum Urls {
    One(String),
    Many(Vec<String>),
}

impl Urls {
    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> {
        let (one, many) = match self {
            Urls::One(url) => (Some(url.as_str()), &[][..]),
            Urls::Many(urls) => (None, urls.as_slice()),
        };
        one.into_iter().chain(many.iter().map(String::as_str))
    }
}

impl Request {
    /// Reads `fields` (parsed by [`Fields::parse`]) as a request of `mode` on `device`'s
    /// topic.
    pub(crate) fn new(
        mode: Mode,
        device: &DeviceId,
        fields: Fields,
    ) -> Result<Request, RequestError> {
        let seqid = fields.seqid.clone();
        let fail = |(code, message): FieldError| RequestError {
            code,
            message,
            seqid: seqid.clone(),
        };
        let command = Command::new(mode, device, &fields).map_err(fail)?;
        Ok(Request {
            seqid: fields.seqid,
            client_id: fields.client_id,
            command,
        })
    }
}

impl Command {
    fn new(mode: Mode, device: &DeviceId, fields: &Fields) -> Result<Command, FieldError> {
        let key = stream_key(device, mode, fields);
        Ok(match mode {
            Mode::Subscribe | Mode::Playback => {
                Command::Subscribe(wanted_streams(device, mode, fields)?)
            }
            Mode::Unsubscribe => Command::Unsubscribe(key),
            Mode::PlaybackCtrl => Command::PlaybackCtrl(playback_ctrl(key, fields)?),
            Mode::DevPush => Command::DevPush(key),
            Mode::Heart => Command::Heart,
            Mode::Rtmp => Command::Rtmp {
                wanted: wanted(key, fields)?,
                url: fields.url.clone(),
            },
            Mode::WebRtc => Command::WebRtc(webrtc_offer(key, fields)?),
            Mode::Record => Command::Record(record_action(key, fields)?),
        })
    }
}

/// The stream a request is about, on `device`: the channel (default 1) and kind (default
/// live; always playback for PLAYBACK and PLAYBACK_CTRL).
fn stream_key(device: &DeviceId, mode: Mode, fields: &Fields) -> StreamKey {
    let kind = match mode {
        Mode::Playback | Mode::PlaybackCtrl => StreamKind::Playback,
        _ => fields.kind.unwrap_or(StreamKind::Live),
    };
    StreamKey::new(device.clone(), Channel(fields.channel.unwrap_or(1)), kind)
}

/// The streams of a SUBSCRIBE or PLAYBACK: the topic's, or each of a batch's.
fn wanted_streams(
    device: &DeviceId,
    mode: Mode,
    fields: &Fields,
) -> Result<Vec<Wanted>, FieldError> {
    let Some(batch) = &fields.pull_stream_from_device else {
        return Ok(vec![wanted(stream_key(device, mode, fields), fields)?]);
    };
    batch
        .iter()
        .map(|item| {
            let device = DeviceId::parse(&item.device).map_err(|error| {
                (
                    ErrorCode::InvalidDevice,
                    format!("pull_stream_from_device: {error}"),
                )
            })?;
            let channel = Channel(item.channel.unwrap_or(1));
            let key = StreamKey::new(device, channel, item.kind.unwrap_or(StreamKind::Live));
            wanted(key, fields)
        })
        .collect()
}

/// `key` with the pull fields of its kind: 0x9101's for live, 0x9201's for a playback.
fn wanted(key: StreamKey, fields: &Fields) -> Result<Wanted, FieldError> {
    let pull = match key.kind {
        StreamKind::Live => PullParams::Live(LiveParams::new(
            fields.video,
            fields.audio,
            fields.stream_type,
        )?),
        StreamKind::Playback => PullParams::Playback(playback_params(fields)?),
    };
    Ok(Wanted { key, pull })
}

fn playback_params(fields: &Fields) -> Result<PlaybackParams, FieldError> {
    let start = fields.start_time.as_deref().ok_or((
        ErrorCode::MissingField,
        "a playback request needs \"start_time\" (YYMMDDhhmmss or YYYY-MM-DD hh:mm:ss)".to_owned(),
    ))?;
    let invalid = |message: String| (ErrorCode::InvalidField, message);
    let start_time = bcd_time(start).ok_or_else(|| {
        invalid(format!(
            "start_time {start:?}: expected YYMMDDhhmmss or YYYY-MM-DD hh:mm:ss"
        ))
    })?;
    let end_time = match fields.end_time.as_deref() {
        None => "000000000000".to_owned(),
        Some(end) => bcd_time(end).ok_or_else(|| {
            invalid(format!(
                "end_time {end:?}: expected YYMMDDhhmmss, YYYY-MM-DD hh:mm:ss or 0"
            ))
        })?,
    };
    Ok(PlaybackParams {
        media_type: optional(fields.media_type)?,
        stream_type: optional(fields.stream_type)?,
        storage_type: optional(fields.storage_type)?,
        playback_mode: optional(fields.playback_mode)?,
        speed: optional(fields.speed)?,
        start_time,
        end_time,
    })
}

fn playback_ctrl(key: StreamKey, fields: &Fields) -> Result<PlaybackCtrl, FieldError> {
    let control = fields
        .control
        .and_then(|c| PlaybackControl::try_from(c).ok())
        .ok_or_else(|| {
            (
                ErrorCode::MissingField,
                "PLAYBACK_CTRL needs \"control\": 0 start, 1 pause, 2 end, 3 fast forward, \
                 4 key frame rewind, 5 seek, 6 key frame play"
                    .to_owned(),
            )
        })?;
    let seek_time = match (&fields.seek_time, control) {
        (Some(t), _) => bcd_time(t).ok_or_else(|| {
            (
                ErrorCode::InvalidField,
                format!("seek_time {t:?}: expected YYMMDDhhmmss or YYYY-MM-DD hh:mm:ss"),
            )
        })?,
        (None, PlaybackControl::Seek) => {
            return Err((
                ErrorCode::MissingField,
                "control 5 (seek) needs \"seek_time\"".to_owned(),
            ));
        }
        (None, _) => "000000000000".to_owned(),
    };
    Ok(PlaybackCtrl {
        key,
        control,
        speed: optional(fields.speed)?,
        seek_time,
    })
}

fn webrtc_offer(key: StreamKey, fields: &Fields) -> Result<WebRtcOffer, FieldError> {
    let sdp = match &fields.offer {
        Some(SessionDescription { kind, sdp }) if kind == "offer" => sdp.clone(),
        Some(offer) => {
            return Err((
                ErrorCode::InvalidField,
                format!(
                    "offer.type is {:?}; the gateway answers offers (\"type\": \"offer\")",
                    crate::media::echo(&offer.kind)
                ),
            ));
        }
        None => {
            return Err((
                ErrorCode::MissingField,
                "WEBRTC needs \"offer\": {\"type\": \"offer\", \"sdp\": \"v=0…\"} \
                 (RTCPeerConnection.localDescription after createOffer)"
                    .to_owned(),
            ));
        }
    };
    let ice_servers = ice_servers(fields.iceserver.as_ref())
        .map_err(|message| (ErrorCode::InvalidField, message))?;
    Ok(WebRtcOffer {
        wanted: wanted(key, fields)?,
        sdp,
        video: fields.video.unwrap_or(true),
        audio: fields.audio.unwrap_or(true),
        ice_servers,
    })
}

fn record_action(key: StreamKey, fields: &Fields) -> Result<RecordAction, FieldError> {
    let duration = duration_field(
        fields.duration.as_deref(),
        "duration",
        RECORD_DURATION,
        MAX_RECORD_DURATION,
    )?;
    // zero is the default, not a recording that ends at once
    let duration = if duration.is_zero() {
        RECORD_DURATION
    } else {
        duration
    };
    let pre_roll = duration_field(
        fields.pre_roll.as_deref(),
        "pre_roll",
        Duration::ZERO,
        MAX_PRE_ROLL,
    )?;
    match fields.action.as_deref().unwrap_or("start") {
        "start" => Ok(RecordAction::Start {
            wanted: wanted(key, fields)?,
            duration,
            pre_roll,
        }),
        "stop" => Ok(RecordAction::Stop(key)),
        other => Err((
            ErrorCode::InvalidField,
            format!(
                "action: {:?}; expected \"start\" or \"stop\"",
                crate::media::echo(other)
            ),
        )),
    }
}

/// A duration field (`"10m"`, `"30s"`): `default` when absent, at most `max`.
fn duration_field(
    value: Option<&str>,
    name: &str,
    default: Duration,
    max: Duration,
) -> Result<Duration, FieldError> {
    let Some(text) = value else {
        return Ok(default);
    };
    let parsed = humantime::parse_duration(text).map_err(|e| {
        (
            ErrorCode::InvalidField,
            format!(
                "{name}: {:?} is not a duration like \"10m\" ({e})",
                crate::media::echo(text)
            ),
        )
    })?;
    if parsed > max {
        return Err((
            ErrorCode::InvalidField,
            format!("{name}: at most {}", humantime::format_duration(max)),
        ));
    }
    Ok(parsed)
}

/// `iceserver`: a list of `RTCIceServer` objects, one object, or nothing.
pub(crate) fn ice_servers(value: Option<&serde_json::Value>) -> Result<Vec<IceServer>, String> {
    use serde_json::Value;
    let list = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(object @ Value::Object(_)) => Value::Array(vec![object.clone()]),
        Some(list @ Value::Array(_)) => list.clone(),
        Some(_) => {
            return Err("iceserver: expected a list of {urls, username, credential}".to_owned());
        }
    };
    serde_path_to_error::deserialize::<_, Vec<IceServer>>(list).map_err(|error| {
        // the path is `[i]` (not an object) or `[i].field`
        let path = error.path().to_string();
        match path.split_once('.') {
            Some((entry, "urls" | "url")) => {
                format!("iceserver{entry}.urls: expected a URL or a list of URLs")
            }
            Some((entry, field)) => format!("iceserver{entry}.{field}: {}", error.inner()),
            None if error.inner().to_string().contains("missing field") => {
                format!("iceserver{path}.urls: expected a URL or a list of URLs")
            }
            None => format!("iceserver{path}: expected an object {{urls, username, credential}}"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::params::{DataType, MediaType};

    fn parse(mode: Mode, json: &str) -> Result<Command, RequestError> {
        let device = DeviceId::parse("13800138000").unwrap();
        let fields = Fields::parse(json.as_bytes())?;
        Request::new(mode, &device, fields).map(|r| r.command)
    }

    fn error(mode: Mode, json: &str) -> (ErrorCode, String) {
        let error = parse(mode, json).unwrap_err();
        (error.code, error.message)
    }

    #[test]
    fn each_mode_reads_only_its_fields() {
        let Command::Subscribe(wanted) =
            parse(Mode::Subscribe, r#"{"channel":2,"audio":false}"#).unwrap()
        else {
            panic!("a subscription");
        };
        assert_eq!(wanted.len(), 1);
        assert_eq!(wanted[0].key.to_string(), "live/13800138000_2");
        assert_eq!(
            wanted[0].pull,
            PullParams::Live(LiveParams {
                data_type: DataType::Video,
                ..LiveParams::default()
            })
        );
        let Command::Subscribe(wanted) = parse(
            Mode::Playback,
            r#"{"start_time":"2026-11-22 10:00:00","media_type":2}"#,
        )
        .unwrap() else {
            panic!("a playback");
        };
        assert_eq!(wanted[0].key.kind, StreamKind::Playback);
        let PullParams::Playback(p) = &wanted[0].pull else {
            panic!("playback fields");
        };
        assert_eq!(
            (p.media_type, p.start_time.as_str()),
            (MediaType::Video, "261122100000")
        );
        assert_eq!(
            parse(Mode::Heart, r#"{"speed":200}"#).unwrap(),
            Command::Heart
        );
        let Command::PlaybackCtrl(ctrl) = parse(Mode::PlaybackCtrl, r#"{"control":1}"#).unwrap()
        else {
            panic!("a control");
        };
        assert_eq!(
            (ctrl.control, ctrl.seek_time.as_str()),
            (PlaybackControl::Pause, "000000000000")
        );
    }

    #[test]
    fn errors_keep_their_codes_and_words() {
        assert_eq!(
            error(Mode::PlaybackCtrl, r#"{"control":9}"#).0,
            ErrorCode::MissingField
        );
        assert_eq!(
            error(Mode::PlaybackCtrl, r#"{"control":5}"#),
            (
                ErrorCode::MissingField,
                "control 5 (seek) needs \"seek_time\"".to_owned()
            )
        );
        assert_eq!(
            error(Mode::Playback, "{}").0,
            ErrorCode::MissingField,
            "no start_time"
        );
        assert_eq!(
            error(Mode::Playback, r#"{"start_time":"0","playback_mode":5}"#).1,
            "playback_mode 5: expected 0 to 4"
        );
        assert_eq!(
            error(Mode::Subscribe, r#"{"video":false,"audio":false}"#).0,
            ErrorCode::InvalidField
        );
        assert_eq!(
            error(
                Mode::Subscribe,
                r#"{"pull_stream_from_device":[{"device":"x"}]}"#
            )
            .0,
            ErrorCode::InvalidDevice
        );
        assert_eq!(error(Mode::WebRtc, "{}").0, ErrorCode::MissingField);
        assert!(
            error(Mode::WebRtc, r#"{"offer":{"type":"answer","sdp":""}}"#)
                .1
                .starts_with("offer.type is \"answer\"")
        );
        let seqid = parse(Mode::PlaybackCtrl, r#"{"seqid":"s9"}"#)
            .unwrap_err()
            .seqid;
        assert_eq!(seqid.as_deref(), Some("s9"), "an error keeps the seqid");
    }

    #[test]
    fn ice_servers_are_read_as_browsers_write_them() {
        let list = serde_json::json!([
            {"urls": "stun:stun.example.net:3478"},
            {"urls": ["turn:a", "turns:b"], "username": "u", "credential": "c"},
            {"url": "turn:c:3480", "username": "u", "credential": "p"}
        ]);
        let servers = ice_servers(Some(&list)).unwrap();
        assert_eq!(servers.len(), 3);
        assert_eq!(
            servers[1].urls.iter().collect::<Vec<_>>(),
            ["turn:a", "turns:b"]
        );
        assert_eq!(servers[2].urls.iter().collect::<Vec<_>>(), ["turn:c:3480"]);
        let one = serde_json::json!({"urls": "turn:x", "username": "u", "credential": "c"});
        assert_eq!(ice_servers(Some(&one)).unwrap().len(), 1, "one object");
        assert!(ice_servers(None).unwrap().is_empty());
    }
}
