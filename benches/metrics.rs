//! Criterion: what one scrape of `/metrics` costs the gateway at 1,000 live streams (the
//! text rendered from the hub's snapshots, ingest's and the bridge's counters, control's
//! instruments and `/proc/self`), without and with per-stream series. Scraped every
//! second, the time per scrape is the share of one core it takes.
//!
//! `cargo bench --bench metrics`; figures go to docs/benchmarks.md.

#![expect(
    clippy::expect_used,
    reason = "a bench that cannot set up its streams has nothing to measure"
)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use jt1078_gateway::bridge::BridgeCounters;
use jt1078_gateway::config::MetricsSettings;
use jt1078_gateway::hub::{Hub, Publisher};
use jt1078_gateway::media::{Channel, Codec, DeviceId, Frame, StreamKey, StreamKind};
use jt1078_gateway::metrics::{ControlMetrics, Sources, render};
use tokio_util::sync::CancellationToken;

const STREAMS: u32 = 1000;

fn hub_with_streams() -> (Hub, Vec<Publisher>) {
    let hub = Hub::default();
    let publishers = (0..STREAMS)
        .map(|i| {
            let key = StreamKey::new(
                DeviceId::parse(&format!("139{i:08}")).expect("device id"),
                Channel(1),
                StreamKind::Live,
            );
            let publisher = hub.publish(key, CancellationToken::new());
            publisher.set_video(Codec::H264, Some((640, 360)));
            let frame = Frame {
                codec: Codec::H264,
                is_key: true,
                pts: 0,
                data: bytes::Bytes::from_static(&[0, 0, 0, 1, 0x65]),
            };
            publisher.send(frame).expect("publish");
            publisher
        })
        .collect();
    (hub, publishers)
}

fn bench_scrape(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _entered = runtime.enter();
    let (hub, _publishers) = hub_with_streams();
    let sources = Sources {
        hub: hub.clone(),
        ingest: std::sync::Arc::default(),
        bridge: BridgeCounters::default(),
        control: ControlMetrics::default(),
        webrtc: None,
    };
    let mut group = c.benchmark_group("metrics_scrape_1000_streams");
    for (name, per_stream) in [("fleet", false), ("per_stream", true)] {
        let settings = MetricsSettings {
            per_stream,
            per_stream_max: 1000,
        };
        let bytes = render(sources.clone(), &settings).expect("render").len();
        println!("{name}: {bytes} bytes");
        group.bench_function(name, |b| {
            b.iter(|| render(black_box(sources.clone()), &settings).expect("render"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_scrape);
criterion_main!(benches);
