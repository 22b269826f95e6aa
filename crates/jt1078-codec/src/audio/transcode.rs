//! Device audio → AAC, for one stream: a [`PcmDecoder`] for whatever the device sends, the
//! AAC encoder, and the clock of the encoded frames.
//!
//! Clock: the encoded frames follow the input's timestamps, sample-exact between them. A
//! gap in the input (lost frames) up to [`MAX_FILL_MS`] is filled with silence, so the AAC
//! timeline and the encoder stay continuous; a longer gap or a jump moves the clock on
//! without a rewind. The encoder's delay is taken off: silence in front of the first input
//! rounds it up to whole frames (fdk-aac's AAC-LC delay is 1600 samples: 448 more make
//! two frames), and those frames of priming are not sent, so frame `j` carries the
//! input's samples `1024 j ..` and has their time.
//! [`Transcoder::finish`] pushes the tail out with silence when the stream ends, so the
//! output lasts as long as the input (to half a frame).

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

use super::aac::SAMPLES_PER_FRAME;
use super::{AacEncode, AudioError, PcmDecoder, PcmFormat};

/// Longest input gap (ms) filled with silence; past it the clock jumps.
pub const MAX_FILL_MS: u64 = 1000;

/// Input gaps shorter than this (ms) are device jitter, not loss.
const MIN_FILL_MS: u64 = 60;

/// One AAC frame out, ADTS-framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// Time of its first sample, in ms on the input's clock.
    pub pts: u64,
    /// ADTS header + raw frame.
    pub data: Bytes,
}

/// Decoder + encoder + clock for one stream.
pub struct Transcoder {
    decoder: Option<PcmDecoder>,
    encoder: Box<dyn AacEncode>,
    pcm: Vec<i16>,
    raw: Vec<Bytes>,
    /// (input sample index, ms) where the clock was set; later samples count on from it.
    anchors: VecDeque<(u64, u64)>,
    samples_in: u64,
    frames_encoded: u64,
    frames_out: u64,
    /// Encoded frames dropped at the start: the encoder's delay and the lead-in.
    priming: u64,
    /// Silence still to feed the encoder before the first input, so that the delay ends
    /// on a frame boundary.
    lead_in: usize,
}

impl std::fmt::Debug for Transcoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcoder")
            .field("decoder", &self.decoder)
            .field("samples_in", &self.samples_in)
            .field("frames_out", &self.frames_out)
            .finish_non_exhaustive()
    }
}

impl Transcoder {
    /// A transcoder writing through `encoder` (whose rate must be the decoders' 8 kHz).
    pub fn new(encoder: Box<dyn AacEncode>) -> Transcoder {
        let delay = encoder.delay();
        let lead_in = (SAMPLES_PER_FRAME - delay % SAMPLES_PER_FRAME) % SAMPLES_PER_FRAME;
        let priming = u64::from(delay.div_ceil(SAMPLES_PER_FRAME));
        Transcoder {
            decoder: None,
            encoder,
            pcm: Vec::new(),
            raw: Vec::new(),
            anchors: VecDeque::new(),
            samples_in: 0,
            frames_encoded: 0,
            frames_out: 0,
            priming,
            lead_in: lead_in as usize,
        }
    }

    /// The PCM of the latest payload decoded (for outputs that take PCM).
    pub fn last_pcm(&self) -> &[i16] {
        &self.pcm
    }

    /// Decodes one payload of `format` taken at `pts` ms and appends the AAC frames it
    /// completes to `out`. A payload that does not decode is an error and changes nothing.
    pub fn push(
        &mut self,
        format: PcmFormat,
        pts: u64,
        payload: &[u8],
        out: &mut Vec<EncodedFrame>,
    ) -> Result<(), AudioError> {
        if self.decoder.as_ref().map(PcmDecoder::format) != Some(format) {
            // a new format mid-stream: a new decoder; the encoder and the clock go on
            self.decoder = Some(PcmDecoder::new(format));
        }
        self.pcm.clear();
        let decoder = self.decoder.as_mut().ok_or(AudioError::NoDecoder)?;
        decoder.decode(payload, &mut self.pcm)?;
        self.follow_clock(pts, out)?;
        let pcm = std::mem::take(&mut self.pcm);
        let result = self.encode(&pcm, out);
        self.pcm = pcm;
        result
    }

    /// The stream ended: encodes silence until the frames out cover the input (rounded to
    /// the nearest frame), and appends them.
    pub fn finish(&mut self, out: &mut Vec<EncodedFrame>) -> Result<(), AudioError> {
        let wanted =
            (self.samples_in + u64::from(SAMPLES_PER_FRAME) / 2) / u64::from(SAMPLES_PER_FRAME);
        let silence = vec![0i16; SAMPLES_PER_FRAME as usize];
        let most = self.priming + 3;
        let mut fed = 0;
        while self.frames_out < wanted && fed < most {
            self.encode_frames(&silence, out, wanted)?;
            fed += 1;
        }
        Ok(())
    }

    /// Fills a gap before `pts` with silence, or moves the clock past a jump.
    fn follow_clock(&mut self, pts: u64, out: &mut Vec<EncodedFrame>) -> Result<(), AudioError> {
        let Some(expected) = self.time_of(self.samples_in) else {
            self.anchors.push_back((self.samples_in, pts));
            return Ok(());
        };
        let gap = pts.saturating_sub(expected);
        if gap < MIN_FILL_MS {
            return Ok(());
        }
        if gap <= MAX_FILL_MS {
            let samples = gap * u64::from(super::TELEPHONY_RATE) / 1000;
            let silence = vec![0i16; usize::try_from(samples).unwrap_or(0)];
            return self.encode(&silence, out);
        }
        self.anchors.push_back((self.samples_in, pts));
        Ok(())
    }

    fn encode(&mut self, pcm: &[i16], out: &mut Vec<EncodedFrame>) -> Result<(), AudioError> {
        self.samples_in += pcm.len() as u64;
        self.encode_frames(pcm, out, u64::MAX)
    }

    /// Encodes `pcm` (already counted in) and appends the frames past the priming, up to
    /// `limit` frames out in all.
    fn encode_frames(
        &mut self,
        pcm: &[i16],
        out: &mut Vec<EncodedFrame>,
        limit: u64,
    ) -> Result<(), AudioError> {
        self.raw.clear();
        if self.lead_in > 0 {
            let silence = vec![0i16; std::mem::take(&mut self.lead_in)];
            self.encoder.encode(&silence, &mut self.raw)?;
        }
        self.encoder.encode(pcm, &mut self.raw)?;
        let config = self.encoder.config();
        for raw in std::mem::take(&mut self.raw) {
            self.frames_encoded += 1;
            if self.frames_encoded <= self.priming || self.frames_out >= limit {
                continue;
            }
            let first_sample = self.frames_out * u64::from(SAMPLES_PER_FRAME);
            let pts = self.time_of(first_sample).unwrap_or(0);
            self.frames_out += 1;
            let mut data = BytesMut::with_capacity(7 + raw.len());
            data.put_slice(&config.adts_header(raw.len()));
            data.put_slice(&raw);
            out.push(EncodedFrame {
                pts,
                data: data.freeze(),
            });
            self.prune_anchors(first_sample);
        }
        Ok(())
    }

    /// Time (ms) of input sample `index`, from the last anchor at or before it.
    fn time_of(&self, index: u64) -> Option<u64> {
        let (at, ms) = self
            .anchors
            .iter()
            .rev()
            .find(|(at, _)| *at <= index)
            .or(self.anchors.front())?;
        Some(ms + index.saturating_sub(*at) * 1000 / u64::from(super::TELEPHONY_RATE))
    }

    /// Forgets anchors no frame still to come can need.
    fn prune_anchors(&mut self, done: u64) {
        while self.anchors.len() > 1 && self.anchors.get(1).is_some_and(|(at, _)| *at <= done) {
            self.anchors.pop_front();
        }
    }
}
