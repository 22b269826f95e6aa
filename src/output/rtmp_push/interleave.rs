//! Frames of both tracks in timestamp order, for servers that need it (pure).
//!
//! The AAC the hub makes of a device's G.711/G.726/ADPCM comes out of the encoder about two
//! AAC frames (256 ms at 8 kHz) after the input it carries, with that input's timestamps,
//! so in arrival order audio runs behind video. A browser's flv.js copes; SRS does not: its
//! default `time_jitter full` keeps one clock for both tracks and turns every step back
//! (or any step over 250 ms) into 10 ms, which squeezes the video's timestamps. So an RTMP
//! push holds video until the AAC has caught up with it, at most [`MAX_HOLD_MS`] of media,
//! at the cost of that much latency on the push only.

use std::collections::VecDeque;

use crate::media::{Codec, Frame};

/// Longest a video frame waits for audio, in media time (a stream whose audio stopped
/// goes on with this delay until audio comes back or the stream ends).
const MAX_HOLD_MS: u64 = 1000;

/// Reorders frames so AAC and video leave in timestamp order.
#[derive(Debug, Default)]
pub(crate) struct Interleaver {
    held: VecDeque<Frame>,
    /// An AAC frame was seen: from then on video waits for it.
    audio_seen: bool,
}

impl Interleaver {
    /// Takes `frame`; appends to `out` what may leave now, in order.
    pub(crate) fn push(&mut self, frame: Frame, out: &mut Vec<Frame>) {
        if frame.codec == Codec::Aac {
            self.audio_seen = true;
            while self.held.front().is_some_and(|v| v.pts <= frame.pts) {
                out.extend(self.held.pop_front());
            }
            out.push(frame);
        } else if frame.codec.is_video() && self.audio_seen {
            let newest = frame.pts;
            self.held.push_back(frame);
            while self
                .held
                .front()
                .is_some_and(|v| v.pts.saturating_add(MAX_HOLD_MS) < newest)
            {
                out.extend(self.held.pop_front());
            }
        } else {
            // video before any AAC (the GOP cache), and the device's own audio, which an
            // AAC muxer only reads as a sign that audio comes
            out.push(frame);
        }
    }

    /// The stream ended: everything held, in order.
    pub(crate) fn finish(&mut self, out: &mut Vec<Frame>) {
        out.extend(self.held.drain(..));
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn frame(codec: Codec, pts: u64) -> Frame {
        Frame {
            codec,
            is_key: false,
            pts,
            data: Bytes::new(),
        }
    }

    fn order(frames: &[Frame]) -> Vec<(bool, u64)> {
        frames.iter().map(|f| (f.codec.is_video(), f.pts)).collect()
    }

    #[test]
    fn video_waits_for_the_aac_that_trails_it() {
        let mut interleaver = Interleaver::default();
        let mut out = Vec::new();
        // the GOP cache's video, before any AAC, leaves at once
        interleaver.push(frame(Codec::H264, 0), &mut out);
        interleaver.push(frame(Codec::Aac, 0), &mut out);
        for pts in [40, 80, 120, 160, 200, 240, 280] {
            interleaver.push(frame(Codec::H264, pts), &mut out);
        }
        assert_eq!(order(&out), vec![(true, 0), (false, 0)]);
        // AAC at 128 ms arrives 280 ms of video later: the video up to it goes first
        interleaver.push(frame(Codec::Aac, 128), &mut out);
        assert_eq!(
            order(&out)[2..],
            [(true, 40), (true, 80), (true, 120), (false, 128)]
        );
        interleaver.finish(&mut out);
        let pts: Vec<u64> = out.iter().map(|f| f.pts).collect();
        assert!(pts[1..].windows(2).all(|w| w[0] <= w[1]), "{pts:?}");
        assert_eq!(out.len(), 10);
    }

    #[test]
    fn video_goes_on_when_audio_stops() {
        let mut interleaver = Interleaver::default();
        let mut out = Vec::new();
        interleaver.push(frame(Codec::Aac, 0), &mut out);
        for pts in (40..=2000).step_by(40) {
            interleaver.push(frame(Codec::H264, pts), &mut out);
        }
        let newest_out = out
            .iter()
            .filter(|f| f.codec.is_video())
            .map(|f| f.pts)
            .max();
        assert_eq!(newest_out, Some(960), "held at most a second of media");
        // the device's own audio is never held
        interleaver.push(frame(Codec::G711A, 2000), &mut out);
        assert_eq!(out.last().map(|f| f.codec), Some(Codec::G711A));
    }
}
