//! The fields of a pull request that shape the device command (0x9101 REQPULL, 0x9201
//! PLAYBACK), checked, and what they tell the hub about the tracks to expect.

use super::messages::{ErrorCode, Request, bcd_time};
use crate::hub::Tracks;

/// The fields of the last request per stream that shape the device command, sent again on
/// retries and re-pulls; forgotten when the device is told to stop.
#[derive(Debug, Clone)]
pub(super) enum PullParams {
    /// 0x9101 fields of a live request.
    Live(LiveParams),
    /// 0x9201 fields of a playback request.
    Playback(PlaybackParams),
}

/// 0x9101 fields from a live request (`video`, `audio`, `stream_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct LiveParams {
    pub(super) data_type: u8,
    pub(super) stream_type: u8,
}

/// 0x9201 fields from a playback request.
#[derive(Debug, Clone)]
pub(super) struct PlaybackParams {
    pub(super) media_type: u8,
    pub(super) stream_type: u8,
    pub(super) storage_type: u8,
    pub(super) playback_mode: u8,
    pub(super) speed: u8,
    pub(super) start_time: String,
    pub(super) end_time: String,
}

impl PullParams {
    /// The tracks the request narrowed the stream to: video only (REQPULL data type 1,
    /// PLAYBACK media type 2) or audio only (3 listen; media type 1). `None` when it asked
    /// for both, or for talk and broadcast, which are not streams a viewer plays.
    pub(super) fn tracks(&self) -> Option<Tracks> {
        let only = |video: bool| {
            Some(Tracks {
                video,
                audio: !video,
            })
        };
        match self {
            PullParams::Live(live) => match live.data_type {
                1 => only(true),
                3 => only(false),
                _ => None,
            },
            PullParams::Playback(playback) => match playback.media_type {
                1 => only(false),
                2 => only(true),
                _ => None,
            },
        }
    }
}

/// Why a request's fields cannot shape a device command: code and message.
pub(super) type FieldError = (ErrorCode, String);

/// 0x9101 data type from `video`/`audio` (JT/T 1078 table 17: 0 audio and video, 1 video,
/// 3 listen, i.e. audio only) and the stream type (0 main, 1 sub).
pub(super) fn live_params(request: &Request) -> Result<LiveParams, FieldError> {
    let data_type = match (request.video.unwrap_or(true), request.audio.unwrap_or(true)) {
        (true, true) => 0,
        (true, false) => 1,
        (false, true) => 3,
        (false, false) => {
            return Err((
                ErrorCode::InvalidField,
                "\"video\" and \"audio\" are both false: ask for at least one".to_owned(),
            ));
        }
    };
    let stream_type = match request.stream_type {
        None => 0,
        Some(t @ 0..=1) => t,
        Some(t) => {
            return Err((
                ErrorCode::InvalidField,
                format!("stream_type {t}: expected 0 (main) or 1 (sub) for a live stream"),
            ));
        }
    };
    Ok(LiveParams {
        data_type,
        stream_type,
    })
}

pub(super) fn playback_params(request: &Request) -> Result<PlaybackParams, FieldError> {
    let start = request.start_time.as_deref().ok_or((
        ErrorCode::MissingField,
        "a playback request needs \"start_time\" (YYMMDDhhmmss or YYYY-MM-DD hh:mm:ss)".to_owned(),
    ))?;
    let invalid = |message: String| (ErrorCode::InvalidField, message);
    let start_time = bcd_time(start).ok_or_else(|| {
        invalid(format!(
            "start_time {start:?}: expected YYMMDDhhmmss or YYYY-MM-DD hh:mm:ss"
        ))
    })?;
    let end_time = match request.end_time.as_deref() {
        None => "000000000000".to_owned(),
        Some(end) => bcd_time(end).ok_or_else(|| {
            invalid(format!(
                "end_time {end:?}: expected YYMMDDhhmmss, YYYY-MM-DD hh:mm:ss or 0"
            ))
        })?,
    };
    let ranged = |name: &str, value: Option<u8>, max: u8| match value {
        Some(v) if v > max => Err(invalid(format!("{name} {v}: expected 0 to {max}"))),
        v => Ok(v.unwrap_or(0)),
    };
    Ok(PlaybackParams {
        media_type: ranged("media_type", request.media_type, 3)?,
        stream_type: ranged("stream_type", request.stream_type, 2)?,
        storage_type: ranged("storage_type", request.storage_type, 2)?,
        playback_mode: ranged("playback_mode", request.playback_mode, 4)?,
        speed: ranged("speed", request.speed, 5)?,
        start_time,
        end_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> Request {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_request_for_one_track_tells_the_hub_to_expect_only_that_one() {
        let live = |json| live_params(&request(json)).map(PullParams::Live).unwrap();
        assert_eq!(live("{}").tracks(), None, "both by default");
        assert_eq!(
            live(r#"{"audio":false}"#).tracks(),
            Some(Tracks {
                video: true,
                audio: false
            })
        );
        assert_eq!(
            live(r#"{"video":false}"#).tracks(),
            Some(Tracks {
                video: false,
                audio: true
            })
        );
        let playback = |media_type: u8| {
            let json = format!(r#"{{"start_time":"261122100000","media_type":{media_type}}}"#);
            playback_params(&request(&json))
                .map(PullParams::Playback)
                .unwrap()
                .tracks()
        };
        assert_eq!(playback(0), None);
        assert_eq!(playback(3), None, "audio or video");
        assert_eq!(playback(1).map(|t| (t.video, t.audio)), Some((false, true)));
        assert_eq!(playback(2).map(|t| (t.video, t.audio)), Some((true, false)));
    }
}
