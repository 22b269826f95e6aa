//! The talkback encoders (PCM to what a device plays) against ffmpeg's decoders: a known
//! signal is encoded here frame by frame as a talk connection sends it, ffmpeg decodes
//! the bytes, and the result is compared with the signal. For G.726 the bound is ffmpeg's
//! own encoder at the same rate (its encode and decode of the same signal).

#![expect(
    clippy::unwrap_used,
    reason = "helpers of tests: a failure is a test failure"
)]

mod common;

use common::audio::{SIGNAL, ffmpeg, samples, snr};
use common::*;
use jt1078_gateway::codec::audio::adpcm::NibbleOrder;
use jt1078_gateway::codec::audio::g726::{BitOrder, G726Rate};
use jt1078_gateway::codec::audio::{DeviceCodec, DeviceEncoder};

/// Samples a talk frame carries (40 ms).
const FRAME: usize = 320;

/// The signal as 16-bit PCM.
async fn signal(tmp: &TempDir) -> Vec<i16> {
    let pcm = tmp.path("signal.pcm");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        SIGNAL,
        "-f",
        "s16le",
        pcm.to_str().unwrap(),
    ])
    .await;
    samples(&std::fs::read(&pcm).unwrap())
}

/// Each frame's payload, as a talk connection sends them.
fn encode(codec: DeviceCodec, pcm: &[i16]) -> Vec<Vec<u8>> {
    let mut encoder = DeviceEncoder::new(codec, false);
    pcm.chunks_exact(FRAME)
        .map(|frame| {
            let mut payload = Vec::new();
            encoder.encode(frame, &mut payload);
            payload
        })
        .collect()
}

/// ffmpeg's decode of `input` (`format` and its options), as samples.
async fn decode(tmp: &TempDir, name: &str, bytes: &[u8], input: &[&str]) -> Vec<i16> {
    let (raw, out) = (
        tmp.path(&format!("{name}.raw")),
        tmp.path(&format!("{name}.pcm")),
    );
    std::fs::write(&raw, bytes).unwrap();
    let mut args = input.to_vec();
    args.extend([
        "-i",
        raw.to_str().unwrap(),
        "-f",
        "s16le",
        out.to_str().unwrap(),
    ]);
    ffmpeg(&args).await;
    samples(&std::fs::read(&out).unwrap())
}

#[tokio::test]
async fn g711_frames_decode_in_ffmpeg() {
    let tmp = TempDir::new("talk-g711");
    let pcm = signal(&tmp).await;
    for (codec, format) in [(DeviceCodec::G711A, "alaw"), (DeviceCodec::G711U, "mulaw")] {
        let bytes = encode(codec, &pcm).concat();
        assert_eq!(bytes.len(), pcm.len() / FRAME * FRAME, "a byte a sample");
        let input = ["-f", format, "-ar", "8000", "-ac", "1"];
        let decoded = decode(&tmp, format, &bytes, &input).await;
        let snr = snr(&pcm, &decoded);
        eprintln!("{format}: {snr:.1} dB");
        // G.711's 8-bit companding: about 38 dB on this signal
        assert!(snr >= 30.0, "{format}: {snr:.1} dB");
    }
}

#[tokio::test]
async fn ima_adpcm_frames_decode_in_ffmpeg() {
    let tmp = TempDir::new("talk-adpcm");
    let pcm = signal(&tmp).await;
    // low nibble first: the order WAV's IMA ADPCM has
    let order = NibbleOrder::LowFirst;
    let frames = encode(DeviceCodec::ImaAdpcm { order }, &pcm);
    let block = frames[0].len();
    assert_eq!(block, 4 + FRAME / 2, "state block and two samples a byte");
    // a WAV of IMA ADPCM blocks: the same bytes, but WAV outputs the block's predictor as a
    // sample of its own (321 a block), which the device does not (it is the state before
    // the frame's first sample): that sample is dropped from each block of ffmpeg's decode
    let data = frames.concat();
    let mut wav = Vec::new();
    let fmt_len: u32 = 20;
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(4 + 8 + fmt_len + 8 + data.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&fmt_len.to_le_bytes());
    wav.extend_from_slice(&0x11u16.to_le_bytes()); // IMA ADPCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&8000u32.to_le_bytes());
    wav.extend_from_slice(&(8000 * block as u32 / (FRAME as u32 + 1)).to_le_bytes());
    wav.extend_from_slice(&(block as u16).to_le_bytes());
    wav.extend_from_slice(&4u16.to_le_bytes()); // bits a sample
    wav.extend_from_slice(&2u16.to_le_bytes()); // extra bytes
    wav.extend_from_slice(&(FRAME as u16 + 1).to_le_bytes()); // samples a block
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(data.len() as u32).to_le_bytes());
    wav.extend_from_slice(&data);
    let decoded = decode(&tmp, "adpcm", &wav, &["-f", "wav"]).await;
    assert_eq!(decoded.len(), frames.len() * (FRAME + 1));
    let decoded: Vec<i16> = decoded
        .chunks_exact(FRAME + 1)
        .flat_map(|block| block[1..].to_vec())
        .collect();
    let snr = snr(&pcm, &decoded);
    eprintln!("IMA ADPCM: {snr:.1} dB");
    assert!(snr >= 18.0, "IMA ADPCM: {snr:.1} dB");
}

#[tokio::test]
async fn g726_frames_decode_in_ffmpeg_as_well_as_ffmpegs_own_encoding() {
    let tmp = TempDir::new("talk-g726");
    let pcm = signal(&tmp).await;
    let source = tmp.path("signal.wav");
    ffmpeg(&["-f", "lavfi", "-i", SIGNAL, source.to_str().unwrap()]).await;
    for (rate, bits) in [
        (G726Rate::Kbps16, 2u32),
        (G726Rate::Kbps24, 3),
        (G726Rate::Kbps32, 4),
        (G726Rate::Kbps40, 5),
    ] {
        for (format, order) in [("g726", BitOrder::MsbFirst), ("g726le", BitOrder::LsbFirst)] {
            let frames = encode(DeviceCodec::G726 { rate, order }, &pcm);
            assert_eq!(frames[0].len(), FRAME * bits as usize / 8, "{bits} bits");
            let code_size = bits.to_string();
            let input = [
                "-f",
                format,
                "-code_size",
                &code_size,
                "-sample_rate",
                "8000",
            ];
            let name = format!("{format}-{bits}");
            let ours = snr(&pcm, &decode(&tmp, &name, &frames.concat(), &input).await);
            // ffmpeg's own encoder, the same signal, rate and packing
            let theirs_raw = tmp.path(&format!("{name}-ffmpeg.raw"));
            let bit_rate = format!("{}k", bits * 8);
            ffmpeg(&[
                "-i",
                source.to_str().unwrap(),
                "-c:a",
                format,
                "-b:a",
                &bit_rate,
                "-f",
                format,
                theirs_raw.to_str().unwrap(),
            ])
            .await;
            let theirs_bytes = std::fs::read(&theirs_raw).unwrap();
            let theirs = snr(
                &pcm,
                &decode(&tmp, &format!("{name}-ffmpeg"), &theirs_bytes, &input).await,
            );
            eprintln!("{format} {bits} bits: ours {ours:.1} dB, ffmpeg's {theirs:.1} dB");
            assert!(
                ours >= theirs - 2.0 && ours >= 5.0,
                "{format} {bits} bits: ours {ours:.1} dB, ffmpeg's encoder {theirs:.1} dB"
            );
        }
    }
}
