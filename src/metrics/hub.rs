//! Collectors reading what the sides count, at scrape time: the hub's streams and viewers,
//! ingest's connections and bytes, the bridge's hooks and Redis entries.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::bridge::BridgeCounters;
use crate::hub::{Hub, StreamSnapshot};
use crate::ingest::IngestStats;
use crate::media::Codec;
use crate::output::webrtc::WebRtc;

/// Encodes one counter family: `rows` are its label sets and values.
fn counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Encodes one gauge family.
fn gauges<L: EncodeLabelSet, V: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, V)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// No labels.
const NONE: [(&str, &str); 0] = [];

/// A codec as a label value (`none` before one is seen).
fn codec_label(codec: Option<Codec>) -> String {
    match codec {
        None => "none".to_owned(),
        Some(codec) => serde_json::to_value(codec)
            .ok()
            .and_then(|v| match v {
                serde_json::Value::String(s) => Some(s),
                serde_json::Value::Number(n) => Some(format!("pt{n}")),
                _ => None,
            })
            .unwrap_or_else(|| "other".to_owned()),
    }
}

/// The hub's streams, viewers and totals (and, with `per_stream`, each stream's series).
#[derive(Debug)]
pub(super) struct HubCollector {
    hub: Hub,
    /// The WebRTC side, for its peer count (`None`: disabled).
    webrtc: Option<WebRtc>,
    per_stream: bool,
    per_stream_max: usize,
}

impl HubCollector {
    pub(super) fn new(
        hub: Hub,
        webrtc: Option<WebRtc>,
        per_stream: bool,
        per_stream_max: usize,
    ) -> HubCollector {
        HubCollector {
            hub,
            webrtc,
            per_stream,
            per_stream_max,
        }
    }
}

/// The labels of the `streams` gauge: kind, video codec, audio codec in and out.
type StreamLabels = [(&'static str, String); 4];

impl Collector for HubCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let streams = self.hub.list();
        let totals = self.hub.totals();
        let mut by_labels: BTreeMap<StreamLabels, u64> = BTreeMap::new();
        let mut viewers: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut readers = 0;
        let mut devices = BTreeSet::new();
        for s in &streams {
            let out: Vec<String> = s
                .audio_codec_out
                .iter()
                .map(|c| codec_label(Some(*c)))
                .collect();
            let labels = [
                ("kind", s.kind.as_str().to_owned()),
                ("video_codec", codec_label(s.video_codec)),
                ("audio_codec", codec_label(s.audio_codec)),
                (
                    "audio_codec_out",
                    if out.is_empty() {
                        "none".to_owned()
                    } else {
                        out.join("+")
                    },
                ),
            ];
            *by_labels.entry(labels).or_default() += 1;
            for (output, n) in &s.viewers_by_output {
                *viewers.entry(output).or_default() += n;
            }
            readers += s.viewers;
            devices.insert(s.device.as_str());
        }
        gauges(
            &mut encoder,
            "streams",
            "Live streams, by kind, video codec, audio codec from the device and audio codecs out",
            by_labels.into_iter().map(|(labels, n)| (labels, n as i64)),
        )?;
        gauges(
            &mut encoder,
            "devices_online",
            "Devices publishing at least one stream",
            [(NONE, devices.len() as i64)],
        )?;
        gauges(
            &mut encoder,
            "readers",
            "Readers of live streams counted as viewers (the demand that keeps a device pushing)",
            [(NONE, readers as i64)],
        )?;
        gauges(
            &mut encoder,
            "viewers",
            "Viewers by output",
            viewers
                .iter()
                .map(|(output, n)| ([("output", *output)], *n as i64)),
        )?;
        let peers = match &self.webrtc {
            Some(webrtc) => webrtc.peers(),
            None => 0,
        };
        gauges(
            &mut encoder,
            "webrtc_peers",
            "WebRTC peers, connecting or playing (those reading a stream are also viewers of output webrtc)",
            [(NONE, peers as i64)],
        )?;
        counters(
            &mut encoder,
            "viewers_dropped",
            "Viewers an output dropped because they fell too far behind, by output",
            totals
                .viewers_dropped_by_output
                .iter()
                .map(|(output, n)| ([("output", *output)], *n)),
        )?;
        counters(
            &mut encoder,
            "frames_in",
            "Frames published to the hub",
            [(NONE, totals.frames_in)],
        )?;
        counters(
            &mut encoder,
            "frames_dropped",
            "Frames readers skipped because they fell behind, plus frames ingest dropped",
            [(NONE, totals.frames_dropped)],
        )?;
        counters(
            &mut encoder,
            "sent_bytes",
            "Bytes outputs wrote to readers (viewers, peers, pushes)",
            [(NONE, totals.bytes_out)],
        )?;
        counters(
            &mut encoder,
            "audio_undecodable_frames",
            "Device audio frames AAC outputs could not take (dropped; video goes on)",
            [(NONE, totals.audio_undecodable)],
        )?;
        if self.per_stream {
            self.encode_per_stream(&mut encoder, &streams)?;
        }
        Ok(())
    }
}

/// The labels of one stream's series.
type PerStream = [(&'static str, String); 3];

impl HubCollector {
    fn encode_per_stream(
        &self,
        encoder: &mut DescriptorEncoder,
        streams: &[StreamSnapshot],
    ) -> Result<(), std::fmt::Error> {
        let kept = &streams[..streams.len().min(self.per_stream_max)];
        let labels = |s: &StreamSnapshot| -> PerStream {
            [
                ("device", s.device.clone()),
                ("channel", s.channel.to_string()),
                ("kind", s.kind.as_str().to_owned()),
            ]
        };
        let counter = |encoder: &mut DescriptorEncoder,
                       name: &str,
                       help: &str,
                       value: fn(&StreamSnapshot) -> u64| {
            counters(
                encoder,
                name,
                help,
                kept.iter().map(|s| (labels(s), value(s))),
            )
        };
        counter(
            encoder,
            "stream_frames_in",
            "Frames this stream published",
            |s| s.frames_in,
        )?;
        counter(
            encoder,
            "stream_frames_dropped",
            "Frames dropped on this stream",
            |s| s.frames_dropped,
        )?;
        counter(
            encoder,
            "stream_received_bytes",
            "JT/T 1078 bytes this stream received",
            |s| s.bytes_in,
        )?;
        counter(
            encoder,
            "stream_sent_bytes",
            "Bytes written to this stream's readers",
            |s| s.bytes_out,
        )?;
        gauges(
            encoder,
            "stream_viewers",
            "This stream's viewers, by output",
            kept.iter().flat_map(|s| {
                s.viewers_by_output.iter().map(move |(output, n)| {
                    let [device, channel, kind] = labels(s);
                    (
                        [device, channel, kind, ("output", (*output).to_owned())],
                        *n as i64,
                    )
                })
            }),
        )?;
        gauges(
            encoder,
            "stream_fps",
            "This stream's video frames per second",
            kept.iter().map(|s| (labels(s), s.fps)),
        )?;
        gauges(
            encoder,
            "per_stream_omitted",
            "Live streams left without series of their own (past metrics.per_stream_max)",
            [(NONE, streams.len().saturating_sub(kept.len()) as i64)],
        )?;
        Ok(())
    }
}

/// Ingest's connections, packets and bytes.
#[derive(Debug)]
pub(super) struct IngestCollector(pub(super) Arc<IngestStats>);

impl Collector for IngestCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let live = load(&s.accepted_live);
        let all = load(&s.accepted);
        counters(
            &mut encoder,
            "ingest_connections",
            "Device connections accepted, by listener (live, playback)",
            [
                ([("kind", "live")], live),
                ([("kind", "playback")], all.saturating_sub(live)),
            ],
        )?;
        counters(
            &mut encoder,
            "ingest_connections_refused",
            "Device connections refused at ingest.max_connections",
            [(NONE, load(&s.refused))],
        )?;
        gauges(
            &mut encoder,
            "ingest_connections_open",
            "Device connections open, by listener",
            [
                ([("kind", "live")], load(&s.open_live) as i64),
                ([("kind", "playback")], load(&s.open_playback) as i64),
            ],
        )?;
        counters(
            &mut encoder,
            "ingest_packets",
            "JT/T 1078 packets decoded",
            [(NONE, load(&s.packets))],
        )?;
        counters(
            &mut encoder,
            "ingest_received_bytes",
            "Bytes read from devices (packets and garbage)",
            [(NONE, load(&s.bytes))],
        )?;
        counters(
            &mut encoder,
            "ingest_garbage_bytes",
            "Bytes skipped while looking for a packet marker",
            [(NONE, load(&s.garbage_bytes))],
        )?;
        counters(
            &mut encoder,
            "ingest_resyncs",
            "Times a device connection lost alignment on the wire",
            [(NONE, load(&s.resyncs))],
        )?;
        Ok(())
    }
}

/// The bridge's hooks and Redis entries.
#[derive(Debug)]
pub(super) struct BridgeCollector(pub(super) BridgeCounters);

impl Collector for BridgeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = self.0.now();
        counters(
            &mut encoder,
            "bridge_hooks",
            "SRS hooks, by outcome (allowed, refused)",
            [
                ([("outcome", "allowed")], c.hooks_allowed),
                ([("outcome", "refused")], c.hooks_refused),
            ],
        )?;
        counters(
            &mut encoder,
            "bridge_redis_entries",
            "Redis entries, by outcome (consumed, dead_lettered, mirrored)",
            [
                ([("outcome", "consumed")], c.redis_consumed),
                ([("outcome", "dead_lettered")], c.redis_dead_lettered),
                ([("outcome", "mirrored")], c.redis_mirrored),
            ],
        )?;
        counters(
            &mut encoder,
            "bridge_mqtt_published",
            "Requests the bridge published on MQTT",
            [(NONE, c.mqtt_published)],
        )?;
        gauges(
            &mut encoder,
            "bridge_srs_clients",
            "SRS clients the bridge follows",
            [(NONE, c.srs_clients as i64)],
        )?;
        Ok(())
    }
}
