//! A stream's audio for the outputs that take AAC: one transcoder per stream, shared by all
//! of them, running only while one is attached.
//!
//! The stream carries two renditions: the device's frames (for outputs in
//! [`AudioMode::Passthrough`]), and those plus AAC made here (for [`AudioMode::Aac`]): a
//! device's AAC passes as it came, anything else is decoded and encoded once here, on the
//! publisher's thread. Outputs taking AAC also get the device's own audio frames: the first
//! AAC frame trails the first device frame by the encoder's delay (about 0.4 s of audio),
//! and an output that announces its tracks up front (FLV) learns from the device's frames
//! that audio is coming; it plays only the AAC ones. Audio that cannot be decoded is counted (`audio_undecodable`), logged once
//! per stream and dropped from the AAC rendition; video never waits for it.
//!
//! Names codecs, never protocols: which output takes which rendition is the output's choice.

use bytes::Bytes;
use tracing::warn;

use super::stream::StreamStats;
use crate::codec::audio::aac::split_adts;
use crate::codec::audio::{
    AudioError, EncodedFrame, FdkAacEncoder, PcmFormat, TELEPHONY_RATE, Transcoder,
};
use crate::media::{AudioMode, Codec, Frame, StreamKey};

/// Bit rate of the AAC made from device audio: clear speech at 8 kHz mono.
pub(crate) const AAC_BIT_RATE: u32 = 24_000;

/// Which renditions a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Renditions {
    pub(crate) device: bool,
    pub(crate) aac: bool,
}

impl Renditions {
    /// A device's frame: every reader.
    pub(crate) const BOTH: Renditions = Renditions {
        device: true,
        aac: true,
    };
    /// AAC made here: readers taking AAC.
    pub(crate) const AAC: Renditions = Renditions {
        device: false,
        aac: true,
    };

    /// Whether an output in `mode` takes the frame.
    pub(crate) fn includes(self, mode: AudioMode) -> bool {
        match mode {
            AudioMode::Aac => self.aac,
            AudioMode::Passthrough => self.device,
        }
    }
}

/// The AAC side of one stream's audio.
#[derive(Debug, Default)]
pub(crate) struct StreamAudio {
    transcoder: Option<Transcoder>,
    /// Undecodable audio was logged for this stream.
    warned: bool,
    encoded: Vec<EncodedFrame>,
}

impl StreamAudio {
    /// Makes the AAC of one device audio frame for outputs taking AAC (appended to
    /// `derived`). The device's frame itself goes to every reader (see the module docs).
    /// With `wanted` false (no such output) nothing is decoded and the transcoder is
    /// dropped.
    pub(crate) fn route(
        &mut self,
        frame: &Frame,
        wanted: bool,
        key: &StreamKey,
        stats: &StreamStats,
        derived: &mut Vec<Frame>,
    ) {
        if !wanted {
            self.transcoder = None;
            return;
        }
        if frame.codec == Codec::Aac {
            // never re-encoded; a payload that is not ADTS is counted (outputs skip it)
            if let Err(error) = split_adts(&frame.data) {
                self.undecodable(frame.codec, &error, key, stats);
            }
            return;
        }
        let Some(format) = frame.codec.pcm_format() else {
            self.undecodable(frame.codec, &AudioError::NoDecoder, key, stats);
            return;
        };
        if let Err(error) = self.transcode(format, frame, derived) {
            self.undecodable(frame.codec, &error, key, stats);
        }
    }

    /// Whether a transcoder runs.
    #[cfg(test)]
    pub(crate) fn is_transcoding(&self) -> bool {
        self.transcoder.is_some()
    }

    /// The stream ends: the transcoder's last frames.
    pub(crate) fn finish(&mut self, derived: &mut Vec<Frame>) {
        let Some(mut transcoder) = self.transcoder.take() else {
            return;
        };
        self.encoded.clear();
        // a failure here loses at most the last frame's worth of audio: nothing to report
        let _ = transcoder.finish(&mut self.encoded);
        derived.extend(self.encoded.drain(..).map(aac_frame));
    }

    fn transcode(
        &mut self,
        format: PcmFormat,
        frame: &Frame,
        derived: &mut Vec<Frame>,
    ) -> Result<(), AudioError> {
        let transcoder = match &mut self.transcoder {
            Some(transcoder) => transcoder,
            slot @ None => {
                let encoder = FdkAacEncoder::new(TELEPHONY_RATE, AAC_BIT_RATE)?;
                slot.insert(Transcoder::new(Box::new(encoder)))
            }
        };
        self.encoded.clear();
        transcoder.push(format, frame.pts, &frame.data, &mut self.encoded)?;
        derived.extend(self.encoded.drain(..).map(aac_frame));
        Ok(())
    }

    fn undecodable(
        &mut self,
        codec: Codec,
        error: &AudioError,
        key: &StreamKey,
        stats: &StreamStats,
    ) {
        stats.add_audio_undecodable();
        if !self.warned {
            self.warned = true;
            warn!(stream = %key, ?codec, %error, "audio not decodable: dropped for AAC outputs (logged once per stream)");
        }
    }
}

fn aac_frame(encoded: EncodedFrame) -> Frame {
    Frame {
        codec: Codec::Aac,
        is_key: false,
        pts: encoded.pts,
        data: Bytes::clone(&encoded.data),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tokio_util::sync::CancellationToken;

    use crate::codec::audio::encoder::{AacEncode, FdkAacEncoder};
    use crate::hub::Hub;
    use crate::media::{AudioMode, Channel, Codec, DeviceId, Frame, StreamKey, StreamKind};

    fn key() -> StreamKey {
        StreamKey::new(
            DeviceId::parse("13800138000").unwrap(),
            Channel(1),
            StreamKind::Live,
        )
    }

    fn frame(codec: Codec, is_key: bool, pts: u64, data: Vec<u8>) -> Frame {
        Frame {
            codec,
            is_key,
            pts,
            data: bytes::Bytes::from(data),
        }
    }

    /// Everything queued for `reader` now.
    fn drain(reader: &mut crate::hub::Reader) -> Vec<Frame> {
        std::iter::from_fn(|| reader.try_recv()).collect()
    }

    #[test]
    fn aac_readers_share_one_transcode_and_passthrough_readers_keep_g711() {
        let hub = Hub::default();
        let publisher = hub.publish(key(), CancellationToken::new());
        publisher.set_audio(Codec::G711A);
        let mut passthrough = hub.subscribe_as(&key(), AudioMode::Passthrough).unwrap();
        let mut aac = [
            hub.subscribe_as(&key(), AudioMode::Aac).unwrap(),
            hub.subscribe_as(&key(), AudioMode::Aac).unwrap(),
        ];
        publisher
            .send(frame(Codec::H264, true, 0, vec![0, 0, 1, 0x65]))
            .unwrap();
        // 2 s of G.711A: 100 frames of 20 ms
        for i in 0..100 {
            publisher
                .send(frame(Codec::G711A, false, i * 20, vec![0xd5; 160]))
                .unwrap();
        }
        let got = drain(&mut passthrough);
        assert_eq!(got.iter().filter(|f| f.codec == Codec::G711A).count(), 100);
        assert!(got.iter().all(|f| f.codec != Codec::Aac));
        // 16000 samples in after the silence that rounds the encoder's delay up to whole
        // frames, 1024 a frame out, those frames of delay held back
        let delay = FdkAacEncoder::new(8000, 24_000).unwrap().delay() as usize;
        let lead_in = (1024 - delay % 1024) % 1024;
        let frames = (16000 + lead_in) / 1024 - delay.div_ceil(1024);
        let mut firsts = Vec::new();
        for reader in &mut aac {
            let got = drain(reader);
            assert_eq!(got.first().map(|f| f.codec), Some(Codec::H264));
            // the device's frames (a hint for outputs) and the AAC made of them
            assert_eq!(got.iter().filter(|f| f.codec == Codec::G711A).count(), 100);
            let aac: Vec<&Frame> = got.iter().filter(|f| f.codec == Codec::Aac).collect();
            assert_eq!(aac.len(), frames, "frames (encoder delay {delay})");
            assert_eq!(
                aac.iter().map(|f| f.pts).collect::<Vec<_>>(),
                (0..frames as u64).map(|j| j * 128).collect::<Vec<_>>()
            );
            firsts.push(aac[0].data.clone());
        }
        // one transcode: both readers got the very same buffers
        assert_eq!(firsts[0].as_ptr(), firsts[1].as_ptr());
        let snapshot = hub.snapshot(&key()).unwrap();
        assert_eq!(snapshot.audio_codec_out, vec![Codec::G711A, Codec::Aac]);
        // the stream ends: the encoder's tail comes out, the whole 2 s are covered
        drop(publisher);
        let tail = drain(&mut aac[0]);
        assert_eq!(
            frames + tail.len(),
            16,
            "16 frames in all: 2 s to the nearest frame"
        );
        assert!(tail.iter().all(|f| f.codec == Codec::Aac));
    }

    #[test]
    fn no_aac_reader_no_transcode() {
        let hub = Hub::default();
        let publisher = hub.publish(key(), CancellationToken::new());
        let mut passthrough = hub.subscribe(&key()).unwrap();
        for i in 0..100 {
            publisher
                .send(frame(Codec::G711A, false, i * 20, vec![0xd5; 160]))
                .unwrap();
        }
        assert_eq!(drain(&mut passthrough).len(), 100);
        let state = publisher_state_has_transcoder(&hub);
        assert!(!state, "nothing transcoded while no output takes AAC");
    }

    fn publisher_state_has_transcoder(hub: &Hub) -> bool {
        let stream = hub
            .registry()
            .get(&key())
            .map(std::sync::Arc::clone)
            .unwrap();
        stream.has_transcoder()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Random and truncated audio of every kind never panics and never holds back
        /// video, for AAC and passthrough readers alike; what cannot be decoded is counted.
        #[test]
        fn bad_audio_never_hurts_video(
            audio in proptest::collection::vec(
                (0usize..7, proptest::collection::vec(any::<u8>(), 0..400)),
                1..40,
            ),
        ) {
            let hub = Hub::default();
            let publisher = hub.publish(key(), CancellationToken::new());
            let mut readers = [
                hub.subscribe_as(&key(), AudioMode::Aac).unwrap(),
                hub.subscribe_as(&key(), AudioMode::Passthrough).unwrap(),
            ];
            let codecs = [Codec::G711A, Codec::G711U, Codec::G726, Codec::Adpcm, Codec::Aac, Codec::Mp3, Codec::Other(2)];
            let mut pts = 0;
            for (i, (codec, data)) in audio.into_iter().enumerate() {
                publisher.send(frame(Codec::H264, i % 10 == 0, pts, vec![0, 0, 1, 0x41])).unwrap();
                publisher.send(frame(codecs[codec], false, pts, data)).unwrap();
                pts += 20;
            }
            let sent = hub.snapshot(&key()).unwrap().video_frames;
            for reader in &mut readers {
                let video = drain(reader).iter().filter(|f| f.codec == Codec::H264).count() as u64;
                prop_assert_eq!(video, sent);
            }
        }
    }
}
