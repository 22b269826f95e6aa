#![expect(
    clippy::expect_used,
    reason = "a benchmark without its input cannot run"
)]

//! Criterion: JT/T 1078 decode + reassembly throughput over the recorded test streams, and
//! FLV muxing of the reassembled frames.
//!
//! `cargo bench --bench jt1078_decode`; figures go to docs/benchmarks.md.

use std::path::{Path, PathBuf};

/// The allocator the gateway binary uses (src/main.rs), so the figures are the gateway's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jt1078_gateway::codec::jt1078::{DEFAULT_MAX_BODY, Decoder, Reassembler};
use jt1078_gateway::hub::MediaInfo;
use jt1078_gateway::media::{Codec, Frame};
use jt1078_gateway::output::shared::flv_mux::FlvMuxer;

/// The recorded streams (`tests/data/`) and the bundled sample.
fn streams() -> Vec<PathBuf> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&data)
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "jt1078"))
                .collect()
        })
        .unwrap_or_default();
    files.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/sample-h264-g711a.jt1078"));
    files.sort();
    files.retain(|p| p.exists());
    files
}

fn decode(bytes: &[u8], read_size: usize) -> (usize, usize) {
    let mut decoder = Decoder::new(DEFAULT_MAX_BODY);
    let mut reassembler = Reassembler::default();
    let (mut packets, mut frames) = (0, 0);
    for chunk in bytes.chunks(read_size) {
        decoder.push(chunk);
        while let Some(packet) = decoder.next_packet() {
            packets += 1;
            frames += usize::from(reassembler.push(packet).is_some());
        }
    }
    (packets, frames)
}

fn bench_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("jt1078_decode");
    for path in streams() {
        let bytes = std::fs::read(&path).expect("test stream");
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (packets, _) = decode(&bytes, 16 * 1024);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(format!("{name}/bytes"), |b| {
            b.iter(|| decode(&bytes, 16 * 1024))
        });
        group.throughput(Throughput::Elements(packets as u64));
        group.bench_function(format!("{name}/packets"), |b| {
            b.iter(|| decode(&bytes, 16 * 1024))
        });
    }
    group.finish();
}

fn bench_flv_mux(c: &mut Criterion) {
    let mut group = c.benchmark_group("flv_mux");
    for path in streams() {
        let bytes = std::fs::read(&path).expect("test stream");
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut decoder = Decoder::new(DEFAULT_MAX_BODY);
        let mut reassembler = Reassembler::default();
        decoder.push(&bytes);
        let mut frames = Vec::new();
        while let Some(packet) = decoder.next_packet() {
            if let Some(f) = reassembler.push(packet) {
                let codec = Codec::from(f.payload_type);
                frames.push(Frame {
                    codec,
                    is_key: f.data_type == jt1078_gateway::codec::jt1078::DataType::IFrame,
                    pts: f.timestamp.unwrap_or(0),
                    data: Bytes::clone(&f.data),
                });
            }
        }
        let total: u64 = frames.iter().map(|f| f.data.len() as u64).sum();
        let info = MediaInfo {
            video: Some(Codec::H264),
            audio: Some(Codec::G711A),
            ..MediaInfo::default()
        };
        group.throughput(Throughput::Bytes(total));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut muxer = FlvMuxer::new(&info, jt1078_gateway::media::AudioMode::Passthrough);
                frames.iter().map(|f| muxer.push(f).len()).sum::<usize>()
            })
        });
    }
    group.finish();
}

/// 10,000 G.711A audio packets of 160 bytes (20 ms each, one packet per frame): the
/// smallest packets devices send at a steady rate, and the per-packet overhead at its
/// worst. Built with the project's own encoder.
fn small_packet_stream() -> Vec<u8> {
    use jt1078_gateway::codec::jt1078::{
        DataType, Encoder, Frame as WireFrame, PayloadType, Sim, SimLayout,
    };
    let mut encoder = Encoder::new();
    let mut out = bytes::BytesMut::new();
    let sim = Sim::from_digits("13800138000", SimLayout::Bcd6).expect("sim");
    for i in 0..10_000u64 {
        let frame = WireFrame {
            payload_type: PayloadType::G711A,
            data_type: DataType::Audio,
            sim,
            channel: 1,
            timestamp: Some(i * 20),
            last_iframe_interval: None,
            last_frame_interval: None,
            data: Bytes::from(vec![0xd5; 160]),
        };
        encoder.encode(&frame, &mut out);
    }
    out.to_vec()
}

fn bench_small_packets(c: &mut Criterion) {
    let bytes = small_packet_stream();
    let mut group = c.benchmark_group("jt1078_small_packets");
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("g711a_160B/decode", |b| {
        b.iter(|| {
            let mut decoder = Decoder::new(DEFAULT_MAX_BODY);
            let mut n = 0usize;
            for chunk in bytes.chunks(16 * 1024) {
                decoder.push(chunk);
                while decoder.next_packet().is_some() {
                    n += 1;
                }
            }
            n
        })
    });
    group.bench_function("g711a_160B/decode_reassemble", |b| {
        b.iter(|| decode(&bytes, 16 * 1024))
    });
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("g711a_160B/bytes", |b| b.iter(|| decode(&bytes, 16 * 1024)));
    group.finish();
}

criterion_group!(benches, bench_decode, bench_flv_mux, bench_small_packets);
criterion_main!(benches);
