//! SRS stream names → stream keys. Sans-IO: strings in, [`StreamKey`] or a reason out.
//!
//! An SRS `app` says the kind (`live` → live, `playback` → playback, both configurable);
//! the stream name says device and channel, by the first of the configured forms that fits.
//! A form is a pattern of literal text and placeholders:
//!
//! - `{device}`: 1 to 20 digits (the SIM, any form; canonicalised by [`DeviceId::parse`]);
//! - `{channel}`: 1 to 3 digits, at most 255;
//! - `{sim12}`: exactly 12 digits; `{channel2}`: exactly 2 digits (the seed's 14-digit names,
//!   `06495940943803` = SIM `064959409438` channel 3).
//!
//! Hand-written rather than a regex crate: four placeholders of digits, and a wrong form
//! should fail at start-up naming the key, not at the first hook.

use crate::media::{Channel, DeviceId, StreamKey, StreamKind};

/// The placeholders: name, fewest and most digits, whether it is the device.
const PLACEHOLDERS: [(&str, usize, usize, bool); 4] = [
    ("device", 1, 20, true),
    ("sim12", 12, 12, true),
    ("channel", 1, 3, false),
    ("channel2", 2, 2, false),
];

/// One piece of a form.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    /// A run of digits: (`min`, `max`) digits, device or channel.
    Digits {
        min: usize,
        max: usize,
        is_device: bool,
    },
}

/// A parsed stream-name form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NameForm {
    text: String,
    pieces: Vec<Piece>,
}

/// A form that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FormError {
    /// A `{…}` that is not one of the four placeholders.
    #[error(
        "stream form {form:?}: unknown placeholder {{{name}}} (use {{device}}, {{channel}}, {{sim12}}, {{channel2}})"
    )]
    UnknownPlaceholder { form: String, name: String },
    /// No device or no channel placeholder, or one twice.
    #[error(
        "stream form {form:?} needs exactly one device ({{device}} or {{sim12}}) and one channel ({{channel}} or {{channel2}})"
    )]
    Incomplete { form: String },
    /// Two placeholders with nothing between them, and the first is not of fixed width.
    #[error(
        "stream form {form:?}: a variable-width placeholder must be followed by text or the end"
    )]
    Ambiguous { form: String },
}

/// Why a name did not map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NameError {
    /// The app is neither the live nor the playback app.
    #[error("app {app:?} is neither the live app {live:?} nor the playback app {playback:?}")]
    UnknownApp {
        app: String,
        live: String,
        playback: String,
    },
    /// No form fits.
    #[error("stream name {stream:?} fits none of the forms {forms:?}")]
    NoForm { stream: String, forms: Vec<String> },
}

/// The mapping of (app, stream) to a stream key.
#[derive(Debug, Clone)]
pub(crate) struct StreamNames {
    live_app: String,
    playback_app: String,
    forms: Vec<NameForm>,
}

impl NameForm {
    /// Parses a form like `{device}_{channel}`.
    pub(crate) fn parse(form: &str) -> Result<NameForm, FormError> {
        let mut pieces = Vec::new();
        let mut rest = form;
        let (mut devices, mut channels) = (0, 0);
        while !rest.is_empty() {
            let Some(open) = rest.find('{') else {
                pieces.push(Piece::Literal(rest.to_owned()));
                break;
            };
            if open > 0 {
                pieces.push(Piece::Literal(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| FormError::UnknownPlaceholder {
                    form: form.to_owned(),
                    name: after.to_owned(),
                })?;
            let name = &after[..close];
            let Some(&(_, min, max, is_device)) = PLACEHOLDERS
                .iter()
                .find(|(placeholder, ..)| *placeholder == name)
            else {
                return Err(FormError::UnknownPlaceholder {
                    form: form.to_owned(),
                    name: name.to_owned(),
                });
            };
            let piece = Piece::Digits {
                min,
                max,
                is_device,
            };
            if let Piece::Digits { is_device, .. } = piece {
                if is_device {
                    devices += 1
                } else {
                    channels += 1
                }
            }
            if let (Some(Piece::Digits { min, max, .. }), Piece::Digits { .. }) =
                (pieces.last(), &piece)
                && min != max
            {
                return Err(FormError::Ambiguous {
                    form: form.to_owned(),
                });
            }
            pieces.push(piece);
            rest = &after[close + 1..];
        }
        if devices != 1 || channels != 1 {
            return Err(FormError::Incomplete {
                form: form.to_owned(),
            });
        }
        Ok(NameForm {
            text: form.to_owned(),
            pieces,
        })
    }

    /// (device digits, channel digits) if `name` fits.
    fn capture<'a>(&self, name: &'a str) -> Option<(&'a str, &'a str)> {
        let (mut device, mut channel) = (None, None);
        let mut rest = name;
        for (i, piece) in self.pieces.iter().enumerate() {
            match piece {
                Piece::Literal(text) => rest = rest.strip_prefix(text.as_str())?,
                Piece::Digits {
                    min,
                    max,
                    is_device,
                } => {
                    let run = rest.bytes().take_while(u8::is_ascii_digit).count();
                    // a fixed width takes exactly that; a variable one takes the digits up
                    // to the next literal (or the end): the form forbids two runs touching
                    let len = if min == max {
                        *min
                    } else {
                        match self.pieces.get(i + 1) {
                            Some(Piece::Literal(_)) | None => run,
                            Some(Piece::Digits { .. }) => return None,
                        }
                    };
                    if len < *min || len > *max || len > run {
                        return None;
                    }
                    let (digits, tail) = rest.split_at(len);
                    if *is_device {
                        device = Some(digits)
                    } else {
                        channel = Some(digits)
                    }
                    rest = tail;
                }
            }
        }
        if !rest.is_empty() {
            return None;
        }
        Some((device?, channel?))
    }
}

impl StreamNames {
    /// The mapping for two app names and the forms, tried in order.
    pub(crate) fn new(
        live_app: &str,
        playback_app: &str,
        forms: &[String],
    ) -> Result<StreamNames, FormError> {
        Ok(StreamNames {
            live_app: live_app.to_owned(),
            playback_app: playback_app.to_owned(),
            forms: forms
                .iter()
                .map(|f| NameForm::parse(f))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The live app's name.
    pub(crate) fn live_app(&self) -> &str {
        &self.live_app
    }

    /// The kind an SRS app stands for.
    pub(crate) fn kind(&self, app: &str) -> Result<StreamKind, NameError> {
        if app == self.live_app {
            Ok(StreamKind::Live)
        } else if app == self.playback_app {
            Ok(StreamKind::Playback)
        } else {
            Err(NameError::UnknownApp {
                app: app.to_owned(),
                live: self.live_app.clone(),
                playback: self.playback_app.clone(),
            })
        }
    }

    /// The stream `kind`/`stream` names, by the first form that fits.
    pub(crate) fn key(&self, kind: StreamKind, stream: &str) -> Result<StreamKey, NameError> {
        for form in &self.forms {
            let Some((device, channel)) = form.capture(stream) else {
                continue;
            };
            let (Ok(device), Ok(channel)) = (DeviceId::parse(device), channel.parse::<u8>()) else {
                continue;
            };
            return Ok(StreamKey::new(device, Channel(channel), kind));
        }
        Err(NameError::NoForm {
            stream: stream.to_owned(),
            forms: self.forms.iter().map(|f| f.text.clone()).collect(),
        })
    }

    /// `app` and `stream` together.
    pub(crate) fn resolve(&self, app: &str, stream: &str) -> Result<StreamKey, NameError> {
        self.key(self.kind(app)?, stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> StreamNames {
        let forms = [
            "{device}_{channel}",
            "{device}-{channel}",
            "{sim12}{channel2}",
        ]
        .map(str::to_owned);
        StreamNames::new("live", "playback", &forms).unwrap()
    }

    fn resolved(app: &str, stream: &str) -> Option<(String, u8, StreamKind)> {
        names()
            .resolve(app, stream)
            .ok()
            .map(|k| (k.device.to_string(), k.channel.0, k.kind))
    }

    #[test]
    fn default_forms_map_the_seed_names() {
        let live = StreamKind::Live;
        assert_eq!(
            resolved("live", "13800138000_1"),
            Some(("13800138000".into(), 1, live))
        );
        assert_eq!(
            resolved("live", "013800138000-12"),
            Some(("13800138000".into(), 12, live))
        );
        assert_eq!(
            resolved("live", "06495940943803"),
            Some(("64959409438".into(), 3, live))
        );
        assert_eq!(
            resolved("playback", "13800138000_2"),
            Some(("13800138000".into(), 2, StreamKind::Playback))
        );
    }

    #[test]
    fn names_that_fit_no_form_are_refused() {
        for stream in [
            "test",
            "13800138000",
            "13800138000_",
            "_1",
            "13800138000_1_2",
            "138a_1",
            "13800138000_256",
            "0649594094380",
            "064959409438031",
            "123456789012345678901_1",
        ] {
            assert!(resolved("live", stream).is_none(), "{stream}");
        }
        let err = names().resolve("live", "test").unwrap_err().to_string();
        assert!(
            err.contains("\"test\"") && err.contains("{device}_{channel}"),
            "{err}"
        );
        let err = names()
            .resolve("vod", "13800138000_1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"vod\""), "{err}");
    }

    #[test]
    fn forms_are_checked_when_parsed() {
        assert!(NameForm::parse("cam{device}ch{channel}").is_ok());
        assert!(matches!(
            NameForm::parse("{device}"),
            Err(FormError::Incomplete { .. })
        ));
        assert!(matches!(
            NameForm::parse("{dev}_{channel}"),
            Err(FormError::UnknownPlaceholder { .. })
        ));
        assert!(matches!(
            NameForm::parse("{device}{channel}"),
            Err(FormError::Ambiguous { .. })
        ));
        let names =
            StreamNames::new("live", "playback", &["cam{device}ch{channel}".to_owned()]).unwrap();
        assert_eq!(
            names
                .key(StreamKind::Live, "cam13800138000ch4")
                .unwrap()
                .channel,
            Channel(4)
        );
    }
}
