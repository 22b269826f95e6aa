//! Device audio payloads, in any mix of formats and timestamps (gaps, jumps back), through
//! the PCM decoders, the ADTS splitter, the AAC decoder and the transcoder to AAC: must never
//! panic, nor take unbounded memory or time (libFuzzer's `-rss_limit_mb` and `-timeout`).
//!
//! Input: records of `[what, pts step, length / 4, payload…]`; `what` picks G.711A, G.711U,
//! G.726, IMA ADPCM (through the transcoder), or AAC (ADTS split and decoded); the signed
//! step moves the stream clock by 20 ms units.
#![no_main]

use bytes::Bytes;
use jt1078_codec::audio::aac::split_adts;
use jt1078_codec::audio::aac_decode::AacToTelephony;
use jt1078_codec::audio::{FdkAacEncoder, PcmFormat, Transcoder};
use libfuzzer_sys::fuzz_target;

const FORMATS: [PcmFormat; 4] = [
    PcmFormat::G711A,
    PcmFormat::G711U,
    PcmFormat::G726,
    PcmFormat::ImaAdpcm,
];

fuzz_target!(|data: &[u8]| {
    let Ok(encoder) = FdkAacEncoder::new(8000, 32_000) else {
        return;
    };
    let mut transcoder = Transcoder::new(Box::new(encoder));
    let mut aac = AacToTelephony::default();
    let (mut pcm, mut frames) = (Vec::new(), Vec::new());
    let mut pts: u64 = 1_000_000;
    let mut rest = data;
    while let [what, step, quarters, tail @ ..] = rest {
        let (payload, next) = tail.split_at((usize::from(*quarters) * 4).min(tail.len()));
        rest = next;
        pts = pts.saturating_add_signed(i64::from(*step as i8) * 20);
        match FORMATS.get(usize::from(what % 5)) {
            Some(&format) => {
                let _ = transcoder.push(format, pts, payload, &mut frames);
            }
            None => {
                let payload = Bytes::copy_from_slice(payload);
                let _ = split_adts(&payload);
                let _ = aac.decode(&payload, &mut pcm);
            }
        }
        pcm.clear();
        frames.clear();
    }
    let _ = transcoder.finish(&mut frames);
});
