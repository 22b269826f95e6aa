//! Each audio decoder against ffmpeg: a known signal is encoded by ffmpeg, cut into frames
//! as `pack` cuts them for a recording, decoded here, and compared with ffmpeg's own decode
//! of the same bytes.

#![expect(
    clippy::unwrap_used,
    reason = "helpers of tests: a failure is a test failure"
)]

mod common;

use bytes::Bytes;
use common::audio::{SIGNAL, ffmpeg, samples, snr};
use common::*;
use jt1078_gateway::codec::audio::aac::split_adts;
use jt1078_gateway::codec::audio::adpcm::AdpcmDecoder;
use jt1078_gateway::codec::audio::g726::{BitOrder, G726Decoder};
use jt1078_gateway::codec::audio::{PcmDecoder, PcmFormat};
use jt1078_gateway::codec::jt1078::PayloadType;
use jt1078_gateway::simulate::pack::{PackOptions, audio_frames};

/// A pure 1 kHz tone, 3 s at 8 kHz.
const TONE: &str = "sine=frequency=1000:sample_rate=8000:duration=3,volume=0.5";

/// Index and values of the first sample where `a` and `b` differ.
fn first_difference(a: &[i16], b: &[i16]) -> Option<(usize, i16, i16)> {
    a.iter()
        .zip(b)
        .enumerate()
        .find(|(_, (x, y))| x != y)
        .map(|(i, (x, y))| (i, *x, *y))
}

/// The `data` chunk of a RIFF WAVE file: the codec's blocks back to back.
fn wav_data(wav: &[u8]) -> Vec<u8> {
    let mut at = 12;
    while at + 8 <= wav.len() {
        let len = u32::from_le_bytes(wav[at + 4..at + 8].try_into().unwrap()) as usize;
        if &wav[at..at + 4] == b"data" {
            return wav[at + 8..at + 8 + len].to_vec();
        }
        at += 8 + len + (len & 1);
    }
    panic!("no data chunk");
}

/// Decodes the frames `pack` would send of `encoded` with `decoder`.
fn decode_frames(
    decoder: &mut PcmDecoder,
    payload_type: PayloadType,
    encoded: &[u8],
    options: &PackOptions,
) -> Vec<i16> {
    let mut out = Vec::new();
    for (_, frame) in audio_frames(payload_type, encoded, options) {
        decoder.decode(frame, &mut out).unwrap();
    }
    out
}

#[tokio::test]
async fn g711_decodes_exactly_as_ffmpeg() {
    let tmp = TempDir::new("g711-ref");
    for (format, muxer, payload_type) in [
        (PcmFormat::G711A, "alaw", PayloadType::G711A),
        (PcmFormat::G711U, "mulaw", PayloadType::G711U),
    ] {
        let encoded = tmp.path(&format!("a.{muxer}"));
        let reference = tmp.path(&format!("{muxer}.pcm"));
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            SIGNAL,
            "-f",
            muxer,
            encoded.to_str().unwrap(),
        ])
        .await;
        ffmpeg(&[
            "-f",
            muxer,
            "-ar",
            "8000",
            "-i",
            encoded.to_str().unwrap(),
            "-f",
            "s16le",
            reference.to_str().unwrap(),
        ])
        .await;
        let encoded = std::fs::read(&encoded).unwrap();
        let reference = samples(&std::fs::read(&reference).unwrap());
        let ours = decode_frames(
            &mut PcmDecoder::new(format),
            payload_type,
            &encoded,
            &PackOptions::default(),
        );
        // bound: identical, sample for sample
        assert_eq!(ours, reference, "{muxer}");
    }
}

#[tokio::test]
async fn ima_adpcm_decodes_as_ffmpeg_in_either_nibble_order() {
    let tmp = TempDir::new("adpcm-ref");
    // 256-byte blocks (ffmpeg's smallest power of two past a device's 164): the 4-byte
    // state block and 504 samples
    let wav = tmp.path("a.wav");
    let reference = tmp.path("ref.pcm");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        SIGNAL,
        "-c:a",
        "adpcm_ima_wav",
        "-block_size",
        "256",
        wav.to_str().unwrap(),
    ])
    .await;
    ffmpeg(&[
        "-i",
        wav.to_str().unwrap(),
        "-f",
        "s16le",
        reference.to_str().unwrap(),
    ])
    .await;
    let encoded = wav_data(&std::fs::read(&wav).unwrap());
    // ffmpeg's WAV IMA also outputs each block's predictor as a sample; a device's frame
    // does not (its state block is the state before the samples): drop those
    let reference: Vec<i16> = samples(&std::fs::read(&reference).unwrap())
        .chunks(505)
        .flat_map(|block| block.iter().skip(1).copied())
        .collect();
    let options = PackOptions {
        audio_frame: 256,
        ..PackOptions::default()
    };
    let ours = decode_frames(
        &mut PcmDecoder::ImaAdpcm(AdpcmDecoder::default()),
        PayloadType::AdpcmA,
        &encoded,
        &options,
    );
    assert_eq!(ours.len(), reference.len());
    // bound: 50 dB SNR against ffmpeg's decode (ffmpeg computes each step as
    // ((2d + 1) * step) >> 3, the IMA reference and `audio-codec-algorithms` by shifts:
    // they round differently, and the state block of each frame stops the drift)
    let low_first = ours;
    let snr = snr(&reference, &low_first);
    eprintln!("IMA ADPCM: SNR {snr:.1} dB against ffmpeg");
    assert!(snr >= 50.0, "low nibble first, as WAV: SNR {snr:.1} dB");
    // the same stream with each byte's nibbles swapped: recognised after its first frame
    let swapped: Vec<u8> = encoded
        .chunks(256)
        .flat_map(|frame| {
            let (state, data) = frame.split_at(4);
            state
                .iter()
                .copied()
                .chain(data.iter().map(|b| b.rotate_left(4)))
                .collect::<Vec<_>>()
        })
        .collect();
    let ours = decode_frames(
        &mut PcmDecoder::ImaAdpcm(AdpcmDecoder::default()),
        PayloadType::AdpcmA,
        &swapped,
        &options,
    );
    // WAV blocks state the next input sample, not the encoder's state, so the order is
    // known only after 16 frames (a device's frames tell after one); then it decodes alike
    let known = 504 * 17;
    assert_eq!(
        first_difference(&ours[known..], &low_first[known..]),
        None,
        "high nibble first: decoded the same once recognised"
    );
}

#[tokio::test]
async fn g726_decodes_as_ffmpeg_at_every_rate_and_bit_order() {
    let tmp = TempDir::new("g726-ref");
    for (signal, bits) in [SIGNAL, TONE]
        .into_iter()
        .flat_map(|s| [2u32, 3, 4, 5].map(|b| (s, b)))
    {
        for (encoder, order) in [("g726", BitOrder::MsbFirst), ("g726le", BitOrder::LsbFirst)] {
            let tag = if signal == TONE { "tone" } else { "mix" };
            let encoded = tmp.path(&format!("{encoder}-{bits}-{tag}.raw"));
            let reference = tmp.path(&format!("{encoder}-{bits}-{tag}.pcm"));
            let rate = format!("{}k", bits * 8);
            let code_size = bits.to_string();
            ffmpeg(&[
                "-f",
                "lavfi",
                "-i",
                signal,
                "-c:a",
                encoder,
                "-b:a",
                &rate,
                "-f",
                encoder,
                encoded.to_str().unwrap(),
            ])
            .await;
            ffmpeg(&[
                "-f",
                encoder,
                "-code_size",
                &code_size,
                "-sample_rate",
                "8000",
                "-i",
                encoded.to_str().unwrap(),
                "-f",
                "s16le",
                reference.to_str().unwrap(),
            ])
            .await;
            let encoded = std::fs::read(&encoded).unwrap();
            let reference = samples(&std::fs::read(&reference).unwrap());
            // 320-sample frames: the length tells the rate
            let options = PackOptions {
                audio_frame: 320 * bits as usize / 8,
                audio_frame_ms: Some(40),
                ..PackOptions::default()
            };
            let detected = {
                let mut decoder = G726Decoder::default();
                let mut out = Vec::new();
                for (_, frame) in audio_frames(PayloadType::G726, &encoded, &options) {
                    decoder.decode(frame, &mut out);
                }
                (decoder.order(), out)
            };
            let fixed = decode_frames(
                &mut PcmDecoder::G726(G726Decoder::with_order(order)),
                PayloadType::G726,
                &encoded,
                &options,
            );
            let snr_fixed = snr(&reference, &fixed);
            let snr_detected = snr(&reference[8000..], &detected.1[8000..]);
            eprintln!(
                "{tag} {encoder} {bits} bits: SNR {snr_fixed:.1} dB fixed order, {snr_detected:.1} dB detected ({:?})",
                detected.0
            );
            // bound: 30 dB SNR against ffmpeg's decode (the ITU reference arithmetic and
            // ffmpeg's differ in rounding only); 20 dB for a pure tone at 16 kbit/s, where
            // the 2-bit quantiser magnifies those differences
            let bound = if signal == TONE && bits == 2 {
                20.0
            } else {
                30.0
            };
            assert!(
                snr_fixed >= bound,
                "{tag} {encoder} {bits} bits: SNR {snr_fixed:.1} dB"
            );
            // the order is told by how rough each decoding sounds: right on a speech-like
            // signal; on a pure tone the wrong order can come out smoother (a known limit)
            if signal == SIGNAL {
                assert_eq!(detected.0, Some(order), "{encoder} {bits} bits: bit order");
                assert!(
                    snr_detected >= 30.0,
                    "{encoder} {bits} bits: SNR {snr_detected:.1} dB detected"
                );
            }
        }
    }
}

#[tokio::test]
async fn aac_passes_through_frame_for_frame() {
    let tmp = TempDir::new("aac-ref");
    let adts = tmp.path("a.aac");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        SIGNAL,
        "-c:a",
        "aac",
        "-b:a",
        "24k",
        "-f",
        "adts",
        adts.to_str().unwrap(),
    ])
    .await;
    let encoded = std::fs::read(&adts).unwrap();
    let frames = audio_frames(PayloadType::Aac, &encoded, &PackOptions::default());
    let (stdout, _) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-count_packets",
            "-show_entries",
            "stream=nb_read_packets",
            "-of",
            "csv=p=0",
            adts.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(
        frames.len(),
        stdout.trim().parse::<usize>().unwrap(),
        "one packet per ADTS frame"
    );
    // header stripped and rebuilt from the AudioSpecificConfig: the same bytes, so the
    // same PCM as ffmpeg decodes
    let mut rebuilt = Vec::new();
    for (_, frame) in frames {
        for raw in split_adts(&Bytes::copy_from_slice(frame)).unwrap() {
            assert_eq!(
                raw.config.audio_specific_config(),
                [0x15, 0x88],
                "AAC-LC 8 kHz mono"
            );
            rebuilt.extend(raw.config.adts_header(raw.data.len()));
            rebuilt.extend_from_slice(&raw.data);
        }
    }
    let reference = tmp.path("ref.pcm");
    let ours = tmp.path("ours.aac");
    let ours_pcm = tmp.path("ours.pcm");
    std::fs::write(&ours, &rebuilt).unwrap();
    ffmpeg(&[
        "-i",
        adts.to_str().unwrap(),
        "-f",
        "s16le",
        reference.to_str().unwrap(),
    ])
    .await;
    ffmpeg(&[
        "-i",
        ours.to_str().unwrap(),
        "-f",
        "s16le",
        ours_pcm.to_str().unwrap(),
    ])
    .await;
    // bound: identical PCM
    assert_eq!(
        std::fs::read(&reference).unwrap(),
        std::fs::read(&ours_pcm).unwrap()
    );
}
