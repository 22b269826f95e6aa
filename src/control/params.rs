//! The JT/T 1078 values a request sets in a device command (0x9101 REQPULL, 0x9201
//! PLAYBACK, 0x9202 PLAYBACK_CTRL), as enums read from the request's numbers, and what
//! they tell the hub about the tracks to expect.
//!
//! The values are those of JT/T 1078-2016's message bodies: 0x9101 real-time audio and
//! video request (data type, stream type), 0x9201 playback request (audio/video type,
//! stream type, storage type, playback method, speed) and 0x9202 playback control
//! (control, speed). The wire (`DeviceCommand`, docs/mqtt.md) keeps the numbers.

use super::messages::ErrorCode;
use crate::hub::Tracks;

/// Why a request's fields cannot shape a device command: code and message.
pub(crate) type FieldError = (ErrorCode, String);

/// An enum of one JT/T 1078 field: its variants with their numbers, `TryFrom<u8>` naming
/// the field and the range in its error, and `u8::from` for the wire.
macro_rules! wire_values {
    ($(#[$meta:meta])* $name:ident, $field:literal, max $max:literal {
        $($(#[$vmeta:meta])* $variant:ident = $value:literal,)+
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        #[repr(u8)]
        pub(crate) enum $name {
            #[default]
            $($(#[$vmeta])* $variant = $value,)+
        }

        impl TryFrom<u8> for $name {
            type Error = FieldError;

            fn try_from(value: u8) -> Result<Self, FieldError> {
                match value {
                    $($value => Ok($name::$variant),)+
                    _ => Err((
                        ErrorCode::InvalidField,
                        format!(concat!($field, " {}: expected 0 to ", $max), value),
                    )),
                }
            }
        }

        impl From<$name> for u8 {
            fn from(value: $name) -> u8 {
                value as u8
            }
        }
    };
}

// the first variant of each is its default (the field's absent value)
wire_values!(
    /// 0x9101 data type: what the device sends.
    DataType, "data_type", max 5 {
        /// Audio and video.
        AudioVideo = 0,
        /// Video only.
        Video = 1,
        /// Two-way talk.
        Talk = 2,
        /// Listen (audio only).
        Listen = 3,
        /// Broadcast to the cab.
        Broadcast = 4,
        /// Transparent data.
        Transparent = 5,
    }
);

wire_values!(
    /// 0x9101 stream type of a live stream.
    LiveStream, "stream_type", max 1 {
        /// Main stream.
        Main = 0,
        /// Sub stream.
        Sub = 1,
    }
);

wire_values!(
    /// 0x9201 audio/video type: what a playback carries.
    MediaType, "media_type", max 3 {
        /// Audio and video.
        AudioVideo = 0,
        /// Audio only.
        Audio = 1,
        /// Video only.
        Video = 2,
        /// Audio or video.
        AudioOrVideo = 3,
    }
);

wire_values!(
    /// 0x9201 stream type of a playback.
    PlaybackStream, "stream_type", max 2 {
        /// Main or sub stream.
        Any = 0,
        /// Main stream.
        Main = 1,
        /// Sub stream.
        Sub = 2,
    }
);

wire_values!(
    /// 0x9201 storage (memory) type.
    StorageType, "storage_type", max 2 {
        /// Main or backup storage.
        Any = 0,
        /// Main storage.
        Main = 1,
        /// Backup storage.
        Backup = 2,
    }
);

wire_values!(
    /// 0x9201 playback method.
    PlaybackMode, "playback_mode", max 4 {
        /// Normal playback.
        Normal = 0,
        /// Fast forward.
        FastForward = 1,
        /// Key frame rewind.
        KeyFrameRewind = 2,
        /// Key frames only.
        KeyFramePlay = 3,
        /// One frame at a time.
        SingleFrame = 4,
    }
);

wire_values!(
    /// 0x9201/0x9202 fast forward or rewind speed.
    Speed, "speed", max 5 {
        /// Not fast forwarding or rewinding.
        None = 0,
        /// 1x.
        X1 = 1,
        /// 2x.
        X2 = 2,
        /// 4x.
        X4 = 3,
        /// 8x.
        X8 = 4,
        /// 16x.
        X16 = 5,
    }
);

wire_values!(
    /// 0x9202 playback control.
    PlaybackControl, "control", max 6 {
        /// Start (resume) playback.
        Start = 0,
        /// Pause.
        Pause = 1,
        /// End playback.
        End = 2,
        /// Fast forward.
        FastForward = 3,
        /// Key frame rewind.
        KeyFrameRewind = 4,
        /// Seek (drag) to `seek_time`.
        Seek = 5,
        /// Key frames only.
        KeyFramePlay = 6,
    }
);

/// Reads an optional number as `T`: absent is `T`'s default.
pub(crate) fn optional<T>(value: Option<u8>) -> Result<T, FieldError>
where
    T: TryFrom<u8, Error = FieldError> + Default,
{
    value.map_or(Ok(T::default()), T::try_from)
}

/// The fields of the last request per stream that shape the device command, sent again on
/// retries and re-pulls; forgotten when the device is told to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PullParams {
    /// 0x9101 fields of a live request.
    Live(LiveParams),
    /// 0x9201 fields of a playback request.
    Playback(PlaybackParams),
}

/// 0x9101 fields from a live request (`video`, `audio`, `stream_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct LiveParams {
    pub(crate) data_type: DataType,
    pub(crate) stream_type: LiveStream,
}

/// 0x9201 fields from a playback request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlaybackParams {
    pub(crate) media_type: MediaType,
    pub(crate) stream_type: PlaybackStream,
    pub(crate) storage_type: StorageType,
    pub(crate) playback_mode: PlaybackMode,
    pub(crate) speed: Speed,
    /// `YYMMDDhhmmss`.
    pub(crate) start_time: String,
    /// `YYMMDDhhmmss`, all zeros = until the end.
    pub(crate) end_time: String,
}

impl PullParams {
    /// The tracks the request narrowed the stream to: video only (REQPULL data type 1,
    /// PLAYBACK media type 2) or audio only (3 listen; media type 1). `None` when it asked
    /// for both, or for talk and broadcast, which are not streams a viewer plays.
    pub(crate) fn tracks(&self) -> Option<Tracks> {
        let only = |video: bool| {
            Some(Tracks {
                video,
                audio: !video,
            })
        };
        match self {
            PullParams::Live(live) => match live.data_type {
                DataType::Video => only(true),
                DataType::Listen => only(false),
                _ => None,
            },
            PullParams::Playback(playback) => match playback.media_type {
                MediaType::Audio => only(false),
                MediaType::Video => only(true),
                _ => None,
            },
        }
    }
}

impl LiveParams {
    /// From `video` and `audio` (default both) and the stream type (0 main, 1 sub).
    pub(crate) fn new(
        video: Option<bool>,
        audio: Option<bool>,
        stream_type: Option<u8>,
    ) -> Result<LiveParams, FieldError> {
        let data_type = match (video.unwrap_or(true), audio.unwrap_or(true)) {
            (true, true) => DataType::AudioVideo,
            (true, false) => DataType::Video,
            (false, true) => DataType::Listen,
            (false, false) => {
                return Err((
                    ErrorCode::InvalidField,
                    "\"video\" and \"audio\" are both false: ask for at least one".to_owned(),
                ));
            }
        };
        let stream_type = optional(stream_type).map_err(|_| {
            (
                ErrorCode::InvalidField,
                format!(
                    "stream_type {}: expected 0 (main) or 1 (sub) for a live stream",
                    stream_type.unwrap_or_default()
                ),
            )
        })?;
        Ok(LiveParams {
            data_type,
            stream_type,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_for_one_track_tells_the_hub_to_expect_only_that_one() {
        let live = |video, audio| PullParams::Live(LiveParams::new(video, audio, None).unwrap());
        assert_eq!(live(None, None).tracks(), None, "both by default");
        let video_only = Tracks {
            video: true,
            audio: false,
        };
        let audio_only = Tracks {
            video: false,
            audio: true,
        };
        assert_eq!(live(None, Some(false)).tracks(), Some(video_only));
        assert_eq!(live(Some(false), None).tracks(), Some(audio_only));
        let playback = |media_type: u8| {
            PullParams::Playback(PlaybackParams {
                media_type: MediaType::try_from(media_type).unwrap(),
                stream_type: PlaybackStream::Any,
                storage_type: StorageType::Any,
                playback_mode: PlaybackMode::Normal,
                speed: Speed::None,
                start_time: "261122100000".to_owned(),
                end_time: "000000000000".to_owned(),
            })
            .tracks()
        };
        assert_eq!(playback(0), None);
        assert_eq!(playback(3), None, "audio or video");
        assert_eq!(playback(1), Some(audio_only));
        assert_eq!(playback(2), Some(video_only));
    }

    #[test]
    fn values_round_trip_and_out_of_range_names_the_field() {
        for value in 0..=6u8 {
            assert_eq!(u8::from(PlaybackControl::try_from(value).unwrap()), value);
        }
        assert_eq!(
            PlaybackControl::try_from(7).unwrap_err(),
            (
                ErrorCode::InvalidField,
                "control 7: expected 0 to 6".to_owned()
            )
        );
        assert_eq!(
            Speed::try_from(6).unwrap_err().1,
            "speed 6: expected 0 to 5"
        );
        assert_eq!(optional::<StorageType>(None), Ok(StorageType::Any));
        assert_eq!(
            LiveParams::new(None, None, Some(2)).unwrap_err().1,
            "stream_type 2: expected 0 (main) or 1 (sub) for a live stream"
        );
        assert_eq!(
            LiveParams::new(Some(false), Some(false), None)
                .unwrap_err()
                .0,
            ErrorCode::InvalidField
        );
    }
}
