//! The recorder of one stream session: hub frames in, fMP4 objects out. Sans-IO: the wall
//! clock is an argument ([`Recorder::push`] takes `now` in Unix ms) and nothing here
//! touches a store.
//!
//! A segment starts at a video key frame with parameter sets and is cut at the first key
//! frame on or after `segment` of media (or at a new codec configuration, or past
//! [`MAX_SEGMENT_BYTES`]). Each cut yields the segment (one `moof` + `mdat`, video and AAC
//! audio) and, when its configuration is new, its init segment. Times in the fragments are
//! wall-clock based (decode time = Unix time in the track's timescale), so segments of
//! different sessions line up on one timeline and a player seeks by time.
//!
//! The wall clock of the stream clock is estimated as the smallest `now - pts` seen until
//! the first cut: frames that arrive late (a GOP cache handed over at once, the pre-roll
//! of a recording started on request) do not shift the recording to the time they
//! arrived.

use bytes::Bytes;

use super::fmp4::{self, Fmp4Error, InitConfig, Sample, TrackRun, VIDEO_TIMESCALE, VideoConfig};
use super::keys::{self, SegmentName};
use crate::codec::audio::aac::{AacConfig, SAMPLES_PER_FRAME, split_adts};
use crate::codec::h26x::VideoCodec;
use crate::media::{Codec, Frame};
use crate::output::shared::flv_mux::decoder_config;

/// A segment grown past this is cut at the next key frame whatever its duration; past
/// twice this (a device that sends no key frame) it is cut at once and the frames until the
/// next key frame are left out (counted): a recording's memory is bounded.
pub(crate) const MAX_SEGMENT_BYTES: usize = 32 * 1024 * 1024;

/// The duration given to a segment's last video frame when no later frame tells it.
const LAST_FRAME_MS: u64 = 40;

/// Audio whose stream-clock time strays this far from the running sample count is placed
/// by its time again (a gap in the device's audio).
const AUDIO_RESYNC_MS: u64 = 200;

/// An object to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedObject {
    /// The object key.
    pub key: String,
    /// Its bytes.
    pub data: Bytes,
}

/// A finished segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedSegment {
    /// The init segment, when this segment is the first of its configuration in this
    /// session (stored before the segment).
    pub init: Option<RecordedObject>,
    /// The segment.
    pub segment: RecordedObject,
    /// Start, Unix ms.
    pub start_ms: u64,
    /// Duration, ms.
    pub duration_ms: u64,
}

/// The recorder of one session of one stream.
#[derive(Debug)]
pub struct Recorder {
    device: String,
    channel: u8,
    segment_ms: u64,
    /// Unix ms minus stream ms (fixed at the first cut).
    anchor: Option<u64>,
    anchored: bool,
    /// The segment being gathered.
    current: Option<Gathering>,
    /// The session's AAC configuration once seen (kept in every init after: no new init
    /// when a segment happens to carry no audio).
    audio: Option<AacConfig>,
    /// Next audio decode time, in samples on the stream clock.
    audio_next: Option<u64>,
    /// Init ids written in this session.
    inits_written: Vec<String>,
    sequence: u32,
    /// Frames left out (bad parameter sets, a codec the recording cannot carry).
    skipped: u64,
    /// [`MAX_SEGMENT_BYTES`] (smaller in tests).
    max_bytes: usize,
}

#[derive(Debug)]
struct Gathering {
    video: VideoConfig,
    start_pts: u64,
    /// Video frames: (pts ms, key, sample).
    frames: Vec<(u64, bool, Bytes)>,
    /// Audio: (decode time in samples on the stream clock, raw frame).
    audio: Vec<(u64, Bytes)>,
    audio_config: Option<AacConfig>,
    bytes: usize,
}

impl Recorder {
    /// A recorder of `device` channel `channel` cutting segments of `segment`.
    pub fn new(device: &str, channel: u8, segment: std::time::Duration) -> Recorder {
        Recorder {
            device: device.to_owned(),
            channel,
            segment_ms: u64::try_from(segment.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            anchor: None,
            anchored: false,
            current: None,
            audio: None,
            audio_next: None,
            inits_written: Vec::new(),
            sequence: 0,
            skipped: 0,
            max_bytes: MAX_SEGMENT_BYTES,
        }
    }

    /// The same recorder cutting past `max_bytes` instead of `MAX_SEGMENT_BYTES`.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Recorder {
        self.max_bytes = max_bytes.max(1);
        self
    }

    /// Frames left out so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Whether a segment is being gathered.
    pub fn is_recording(&self) -> bool {
        self.current.is_some()
    }

    /// Takes one frame (as a hub reader in AAC mode gets it) that arrived at `now_ms`
    /// (Unix ms); returns the segment it finished, if any.
    pub fn push(
        &mut self,
        frame: &Frame,
        now_ms: u64,
    ) -> Result<Option<FinishedSegment>, Fmp4Error> {
        if !self.anchored {
            let estimate = now_ms.saturating_sub(frame.pts);
            self.anchor = Some(self.anchor.map_or(estimate, |a| a.min(estimate)));
        }
        match frame.codec {
            Codec::H264 | Codec::H265 => self.push_video(frame),
            Codec::Aac => {
                self.push_audio(frame);
                Ok(None)
            }
            // in AAC mode the device's own audio frames come too, as a hint: the AAC made
            // of them follows
            _ => Ok(None),
        }
    }

    /// The session ended: the segment being gathered, if any.
    pub fn finish(&mut self) -> Result<Option<FinishedSegment>, Fmp4Error> {
        let Some(current) = self.current.take() else {
            return Ok(None);
        };
        let end = current
            .frames
            .last()
            .map_or(current.start_pts, |(pts, _, _)| pts + LAST_FRAME_MS);
        self.cut(current, end).map(Some)
    }

    fn push_video(&mut self, frame: &Frame) -> Result<Option<FinishedSegment>, Fmp4Error> {
        let codec = match frame.codec {
            Codec::H265 => VideoCodec::H265,
            _ => VideoCodec::H264,
        };
        let config = if frame.is_key {
            decoder_config(codec, &frame.data).map(|(record, (width, height))| VideoConfig {
                codec,
                record,
                width,
                height,
            })
        } else {
            None
        };
        let mut finished = None;
        if let Some(config) = config {
            let cut_now = self.current.as_ref().is_some_and(|current| {
                frame.pts.saturating_sub(current.start_pts) >= self.segment_ms
                    || current.video != config
                    || current.bytes >= self.max_bytes
                    || frame.pts < current.start_pts
            });
            if cut_now {
                if let Some(current) = self.current.take() {
                    finished = Some(self.cut(current, frame.pts)?);
                }
            }
            if self.current.is_none() {
                self.current = Some(Gathering {
                    video: config,
                    start_pts: frame.pts,
                    frames: Vec::new(),
                    audio: Vec::new(),
                    audio_config: self.audio,
                    bytes: 0,
                });
            }
        }
        let Some(current) = self.current.as_mut() else {
            // nothing before a key frame with parameter sets can be decoded
            self.skipped += 1;
            return Ok(finished);
        };
        let sample = fmp4::length_prefixed(codec, &frame.data);
        current.bytes += sample.len();
        current.frames.push((frame.pts, frame.is_key, sample));
        if current.bytes >= self.max_bytes.saturating_mul(2) && finished.is_none() {
            // no key frame came to cut at: cut here, wait for the next key frame
            if let Some(current) = self.current.take() {
                finished = Some(self.cut(current, frame.pts + LAST_FRAME_MS)?);
            }
        }
        Ok(finished)
    }

    fn push_audio(&mut self, frame: &Frame) {
        let Some(current) = self.current.as_mut() else {
            return;
        };
        let Ok(raw_frames) = split_adts(&frame.data) else {
            self.skipped += 1;
            return;
        };
        for raw in raw_frames {
            let rate = u64::from(raw.config.sample_rate().max(1));
            // one configuration per segment; the next segment takes a new one
            match current.audio_config {
                None => current.audio_config = Some(raw.config),
                Some(config) if config != raw.config => {
                    self.audio = Some(raw.config);
                    self.skipped += 1;
                    continue;
                }
                Some(_) => {}
            }
            self.audio = Some(raw.config);
            let by_time = frame.pts * rate / 1000;
            let dts = match self.audio_next {
                Some(next) if next.abs_diff(by_time) <= AUDIO_RESYNC_MS * rate / 1000 => next,
                _ => by_time,
            };
            self.audio_next = Some(dts + u64::from(SAMPLES_PER_FRAME));
            current.bytes += raw.data.len();
            current.audio.push((dts, raw.data));
        }
    }

    /// Writes out `current`, which ends at stream time `end_pts`.
    fn cut(&mut self, current: Gathering, end_pts: u64) -> Result<FinishedSegment, Fmp4Error> {
        self.anchored = true;
        let anchor = self.anchor.unwrap_or(0);
        let config = InitConfig {
            video: current.video.clone(),
            audio: current.audio_config.or(self.audio),
        };
        let init = fmp4::init_segment(&config)?;
        let init_id = keys::init_id(&init);
        let video = video_run(&current, end_pts, anchor);
        let audio = config.audio.map(|audio| {
            let rate = u64::from(audio.sample_rate().max(1));
            let anchor_samples = anchor * rate / 1000;
            TrackRun {
                base_decode_time: current
                    .audio
                    .first()
                    .map_or(0, |(dts, _)| dts + anchor_samples),
                samples: current
                    .audio
                    .iter()
                    .map(|(_, data)| Sample {
                        duration: SAMPLES_PER_FRAME,
                        is_sync: true,
                        data: data.clone(),
                    })
                    .collect(),
            }
        });
        self.sequence = self.sequence.wrapping_add(1);
        let data = fmp4::fragment(self.sequence, &video, audio.as_ref())?;
        let name = SegmentName {
            start_ms: anchor + current.start_pts,
            duration_ms: end_pts.saturating_sub(current.start_pts).max(1),
            init: init_id.clone(),
        };
        let init = if self.inits_written.contains(&init_id) {
            None
        } else {
            self.inits_written.push(init_id.clone());
            Some(RecordedObject {
                key: keys::init_key(&self.device, self.channel, &init_id),
                data: Bytes::from(init),
            })
        };
        Ok(FinishedSegment {
            init,
            segment: RecordedObject {
                key: keys::segment_key(&self.device, self.channel, &name),
                data: Bytes::from(data),
            },
            start_ms: name.start_ms,
            duration_ms: name.duration_ms,
        })
    }
}

/// The video samples of a segment, each lasting until the next (the last until `end_pts`).
fn video_run(current: &Gathering, end_pts: u64, anchor: u64) -> TrackRun {
    let ticks = u64::from(VIDEO_TIMESCALE) / 1000;
    let samples = current
        .frames
        .iter()
        .enumerate()
        .map(|(i, (pts, is_key, data))| {
            let next = current
                .frames
                .get(i + 1)
                .map_or(end_pts.max(pts + 1), |(next, _, _)| *next);
            Sample {
                duration: u32::try_from(next.saturating_sub(*pts) * ticks).unwrap_or(u32::MAX),
                is_sync: *is_key,
                data: data.clone(),
            }
        })
        .collect();
    TrackRun {
        base_decode_time: (anchor + current.start_pts) * ticks,
        samples,
    }
}
