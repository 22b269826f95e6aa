//! Criterion: each audio decoder (one device frame at a time) and the AAC-LC encoder (one
//! 1024-sample frame at a time), and the whole transcode of a 20 ms G.711A frame.
//!
//! `cargo bench --bench audio`; figures (frames/s on one core) go to docs/benchmarks.md.

/// The allocator the gateway binary uses (src/main.rs), so the figures are the gateway's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jt1078_gateway::codec::audio::adpcm::AdpcmDecoder;
use jt1078_gateway::codec::audio::g726::{BitOrder, G726Decoder};
use jt1078_gateway::codec::audio::{
    AacEncode, FdkAacEncoder, PcmDecoder, PcmFormat, TELEPHONY_RATE, Transcoder,
};

/// A 1 kHz tone at 8 kHz, 16-bit.
fn tone(samples: usize) -> Vec<i16> {
    (0..samples)
        .map(|i| (8000.0 * (i as f64 * std::f64::consts::TAU * 1000.0 / 8000.0).sin()) as i16)
        .collect()
}

/// Device frames of each codec (contents need not be a real signal for the decoders'
/// cost: every code word is decoded the same way).
fn frames() -> Vec<(&'static str, PcmDecoder, Vec<u8>)> {
    let noise: Vec<u8> = (0..200u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut adpcm = vec![0, 0, 40, 0];
    adpcm.extend_from_slice(&noise[..160]);
    vec![
        (
            "g711a_160B_20ms",
            PcmDecoder::new(PcmFormat::G711A),
            noise[..160].to_vec(),
        ),
        (
            "g711u_160B_20ms",
            PcmDecoder::new(PcmFormat::G711U),
            noise[..160].to_vec(),
        ),
        (
            "ima_adpcm_164B_40ms",
            PcmDecoder::ImaAdpcm(AdpcmDecoder::default()),
            adpcm,
        ),
        (
            "g726_32k_160B_40ms",
            PcmDecoder::G726(G726Decoder::with_order(BitOrder::MsbFirst)),
            noise[..160].to_vec(),
        ),
        (
            "g726_16k_80B_40ms",
            PcmDecoder::G726(G726Decoder::with_order(BitOrder::LsbFirst)),
            noise[..80].to_vec(),
        ),
        (
            "g726_40k_200B_40ms",
            PcmDecoder::G726(G726Decoder::with_order(BitOrder::MsbFirst)),
            noise[..200].to_vec(),
        ),
    ]
}

fn bench_decoders(c: &mut Criterion) {
    let mut group = c.benchmark_group("audio_decode");
    group.throughput(Throughput::Elements(1));
    for (name, mut decoder, frame) in frames() {
        let mut out = Vec::with_capacity(1024);
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                decoder.decode(std::hint::black_box(&frame), &mut out).ok();
                out.len()
            })
        });
    }
    group.finish();
}

fn bench_encoder(c: &mut Criterion) {
    let mut group = c.benchmark_group("aac_encode");
    group.throughput(Throughput::Elements(1));
    let Ok(mut encoder) = FdkAacEncoder::new(TELEPHONY_RATE, 24_000) else {
        return;
    };
    let pcm = tone(1024);
    let mut out = Vec::new();
    group.bench_function("fdk_lc_8k_mono_24kbps_1024_samples", |b| {
        b.iter(|| {
            out.clear();
            encoder.encode(std::hint::black_box(&pcm), &mut out).ok();
            out.len()
        })
    });
    group.finish();
}

fn bench_transcode(c: &mut Criterion) {
    let mut group = c.benchmark_group("transcode");
    group.throughput(Throughput::Elements(1));
    let Ok(encoder) = FdkAacEncoder::new(TELEPHONY_RATE, 24_000) else {
        return;
    };
    let mut transcoder = Transcoder::new(Box::new(encoder));
    let frame: Vec<u8> = tone(160)
        .into_iter()
        .map(audio_codec_algorithms::encode_alaw)
        .collect();
    let mut pts = 0;
    let mut out = Vec::new();
    group.bench_function("g711a_160B_to_aac", |b| {
        b.iter(|| {
            out.clear();
            transcoder
                .push(PcmFormat::G711A, pts, &frame, &mut out)
                .ok();
            pts += 20;
            out.len()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_decoders, bench_encoder, bench_transcode);
criterion_main!(benches);
