//! Criterion: the cost of the signed-play-URL check (`http.play_secret`) a play pays once,
//! valid and forged, and of signing a reply's URL.
//!
//! `cargo bench --bench play_url`; figures go to docs/benchmarks.md.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use jt1078_gateway::auth::PlaySigner;

const PATH: &str = "/live/13800138000_1.flv";
const NOW: u64 = 1_700_000_000;

fn bench_check(c: &mut Criterion) {
    let signer = PlaySigner::new(b"a play secret of some length");
    let valid = signer.query(PATH, NOW + 3600);
    let forged = PlaySigner::new(b"a guess").query(PATH, NOW + 3600);
    let mut group = c.benchmark_group("play_url");
    group.bench_function("verify_valid", |b| {
        b.iter(|| signer.verify(black_box(PATH), black_box(&valid), NOW))
    });
    group.bench_function("verify_forged", |b| {
        b.iter(|| signer.verify(black_box(PATH), black_box(&forged), NOW))
    });
    group.bench_function("sign_url", |b| {
        b.iter(|| signer.sign_url(black_box("http://gw:9531/live/13800138000_1.flv"), NOW))
    });
    group.finish();
}

criterion_group!(benches, bench_check);
criterion_main!(benches);
