//! `EXTERNAL_COMMAND` entries → MQTT messages. Sans-IO: an entry's text in, a topic and a
//! payload (or the reason it is not valid) out.
//!
//! An entry is a JSON object with `mode` and `device` plus that mode's fields. Device
//! commands (`REQPULL`, `STOP`, `PLAYBACK`, `PLAYBACK_CTRL`) go to
//! `{prefix}/device/{device}/{MODE}`, requests (`SUBSCRIBE`, `UNSUBSCRIBE`, `DEVPUSH`,
//! `HEART`, `RTMP`, `WEBRTC`) to `{prefix}/gateway/{device}/{MODE}`. The payload is the
//! entry itself with `mode` in capitals and `device` canonical; the control plane checks a
//! request's fields and answers on MQTT, so here only what makes a topic is checked, and
//! the fields a device command needs to be understood at all.

use serde_json::{Map, Value};

use crate::control::topics::Topics;
use crate::media::DeviceId;

/// Largest entry accepted, in bytes (the control plane's MQTT payload cap is 256 KB; a
/// command is a few hundred bytes).
pub(crate) const MAX_ENTRY: usize = 64 * 1024;

/// Modes published to the device's topic.
const DEVICE_MODES: [&str; 4] = ["REQPULL", "STOP", "PLAYBACK", "PLAYBACK_CTRL"];
/// Modes published to the gateway's request topic.
const REQUEST_MODES: [&str; 6] = [
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "DEVPUSH",
    "HEART",
    "RTMP",
    "WEBRTC",
];

/// An entry ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Routed {
    /// MQTT topic.
    pub(crate) topic: String,
    /// JSON body.
    pub(crate) payload: Vec<u8>,
}

/// Why an entry goes to the dead-letter list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EntryError {
    /// Over [`MAX_ENTRY`].
    #[error("entry is {len} bytes, more than {max}")]
    TooLarge { len: usize, max: usize },
    /// Not JSON, or not an object.
    #[error("entry is not a JSON object: {0}")]
    NotAnObject(String),
    /// `mode` or `device` missing or of the wrong type.
    #[error("entry has no {0:?} string")]
    Missing(&'static str),
    /// `mode` is not one the bridge routes.
    #[error(
        "mode {0:?} is neither a device command (REQPULL, STOP, PLAYBACK, PLAYBACK_CTRL) nor a request (SUBSCRIBE, UNSUBSCRIBE, DEVPUSH, HEART, RTMP, WEBRTC)"
    )]
    UnknownMode(String),
    /// `device` is not a device id.
    #[error("{0}")]
    InvalidDevice(String),
    /// A field a device command needs has the wrong type.
    #[error("field {field:?}: {expected}")]
    InvalidField {
        field: &'static str,
        expected: &'static str,
    },
}

/// Routes one entry.
pub(crate) fn route(topics: &Topics, entry: &str) -> Result<Routed, EntryError> {
    if entry.len() > MAX_ENTRY {
        return Err(EntryError::TooLarge {
            len: entry.len(),
            max: MAX_ENTRY,
        });
    }
    let value: Value =
        serde_json::from_str(entry).map_err(|e| EntryError::NotAnObject(e.to_string()))?;
    let Value::Object(mut map) = value else {
        return Err(EntryError::NotAnObject(format!(
            "found {}",
            kind_of(&value)
        )));
    };
    let mode = match map.get("mode") {
        Some(Value::String(mode)) => mode.to_ascii_uppercase(),
        _ => return Err(EntryError::Missing("mode")),
    };
    let device = match map.get("device") {
        Some(Value::String(d)) => d.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(EntryError::Missing("device")),
    };
    let device = DeviceId::parse(&device).map_err(|e| EntryError::InvalidDevice(e.to_string()))?;
    let topic = if DEVICE_MODES.contains(&mode.as_str()) {
        check_device_fields(&map)?;
        topics.device(device.as_str(), &mode)
    } else if REQUEST_MODES.contains(&mode.as_str()) {
        topics.request(device.as_str(), &mode)
    } else {
        return Err(EntryError::UnknownMode(mode));
    };
    map.insert("mode".to_owned(), Value::String(mode));
    map.insert("device".to_owned(), Value::String(device.to_string()));
    let payload = serde_json::to_vec(&map).map_err(|e| EntryError::NotAnObject(e.to_string()))?;
    Ok(Routed { topic, payload })
}

/// A device reads `channel` as a number 0–255 and `seqid` as text; anything else would be
/// published to a device that cannot answer, so it is refused here.
fn check_device_fields(map: &Map<String, Value>) -> Result<(), EntryError> {
    match map.get("channel") {
        None => {}
        Some(Value::Number(n)) if n.as_u64().is_some_and(|c| c <= 255) => {}
        Some(_) => {
            return Err(EntryError::InvalidField {
                field: "channel",
                expected: "a number 0-255",
            });
        }
    }
    match map.get("seqid") {
        None | Some(Value::String(_) | Value::Number(_)) => Ok(()),
        Some(_) => Err(EntryError::InvalidField {
            field: "seqid",
            expected: "a string or number",
        }),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The dead-letter record of `entry`: the entry as it was, the reason, and who refused it.
pub(crate) fn dead_letter(entry: &str, reason: &EntryError, gateway_id: &str) -> String {
    serde_json::json!({
        "reason": reason.to_string(),
        "entry": entry,
        "gateway_id": gateway_id,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(entry: &str) -> Result<(String, Value), EntryError> {
        route(&Topics::new("jt1078"), entry)
            .map(|r| (r.topic, serde_json::from_slice(&r.payload).unwrap()))
    }

    #[test]
    fn device_commands_and_requests_get_their_topics() {
        let (topic, body) =
            routed(r#"{"mode":"reqpull","device":"013800138000","channel":2,"seqid":"x1"}"#)
                .unwrap();
        assert_eq!(topic, "jt1078/device/13800138000/REQPULL");
        assert_eq!(body["mode"], "REQPULL");
        assert_eq!(body["device"], "13800138000");
        assert_eq!(body["channel"], 2);
        let (topic, _) =
            routed(r#"{"mode":"SUBSCRIBE","device":13800138000,"client_id":"pc-1"}"#).unwrap();
        assert_eq!(topic, "jt1078/gateway/13800138000/SUBSCRIBE");
        let (topic, _) = routed(r#"{"mode":"PLAYBACK_CTRL","device":"1","control":1}"#).unwrap();
        assert_eq!(topic, "jt1078/device/1/PLAYBACK_CTRL");
    }

    #[test]
    fn bad_entries_say_why() {
        let cases = [
            ("not json", "not a JSON object"),
            ("[1,2]", "found an array"),
            (r#"{"device":"1"}"#, "no \"mode\""),
            (r#"{"mode":"STOP"}"#, "no \"device\""),
            (r#"{"mode":"FLY","device":"1"}"#, "\"FLY\""),
            (r#"{"mode":"STOP","device":"abc"}"#, "invalid device id"),
            (
                r#"{"mode":"STOP","device":"1","channel":"one"}"#,
                "\"channel\"",
            ),
            (
                r#"{"mode":"STOP","device":"1","channel":300}"#,
                "\"channel\"",
            ),
        ];
        for (entry, says) in cases {
            let reason = routed(entry).unwrap_err().to_string();
            assert!(reason.contains(says), "{entry}: {reason}");
        }
        let big = format!(
            r#"{{"mode":"STOP","device":"1","x":"{}"}}"#,
            "a".repeat(MAX_ENTRY)
        );
        assert!(matches!(routed(&big), Err(EntryError::TooLarge { .. })));
        let record: Value =
            serde_json::from_str(&dead_letter("x", &EntryError::Missing("mode"), "gw1")).unwrap();
        assert_eq!(record["entry"], "x");
        assert_eq!(record["gateway_id"], "gw1");
    }
}
