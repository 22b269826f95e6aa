//! Prometheus metrics: `GET /metrics` in the Prometheus text format (0.0.4), with
//! `prometheus-client` (the Prometheus project's Rust client).
//!
//! Two kinds of source. Counters that exist nowhere else (control's requests, REQPULLs,
//! STOPs, the cold-start histogram, RTMP pushes by state) are instruments in
//! [`ControlMetrics`], which `app` hands to control. Everything the sides already count
//! (the hub's streams and viewers, ingest's connections and bytes, the bridge's hooks and
//! Redis entries) is read at scrape time by collectors: nothing is added to the per-frame
//! path. Names are prefixed `jt1078_`, with their unit (`_seconds`, `_bytes`, `_total`);
//! the process's own are the standard `process_*`.
//!
//! Label cardinality is bounded: the fleet's series are labelled by kind, codec and output
//! only; series per stream come only with `metrics.per_stream`, for at most
//! `metrics.per_stream_max` streams.

mod hub;
mod process;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::bridge::BridgeCounters;
use crate::config::MetricsSettings;
use crate::hub::Hub;
use crate::ingest::IngestStats;

/// Upper bounds of the cold-start histogram, in seconds: a device answers a REQPULL and
/// sends its first key frame in 0.2 to 10 s.
const COLD_START_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0,
];

/// A label set of one label.
type Label = [(&'static str, &'static str); 1];

/// Control's instruments: a cheap `Clone` (each instrument is shared).
#[derive(Debug, Clone)]
pub struct ControlMetrics {
    requests: Family<[(&'static str, &'static str); 2], Counter>,
    reqpulls: Counter,
    stops: Counter,
    pulls_failed: Counter,
    demand_streams: Gauge,
    cold_start: Histogram,
    rtmp_pushes: Family<Label, Gauge>,
}

impl Default for ControlMetrics {
    fn default() -> Self {
        let metrics = ControlMetrics {
            requests: Family::default(),
            reqpulls: Counter::default(),
            stops: Counter::default(),
            pulls_failed: Counter::default(),
            demand_streams: Gauge::default(),
            cold_start: Histogram::new(COLD_START_BUCKETS),
            rtmp_pushes: Family::default(),
        };
        // every series from the start, at zero: a family appears in /metrics before its
        // first event (so rate() has a start and dashboards find it)
        for mode in REQUEST_MODES {
            for outcome in REQUEST_OUTCOMES {
                drop(
                    metrics
                        .requests
                        .get_or_create(&[("mode", mode), ("outcome", outcome)]),
                );
            }
        }
        metrics.set_rtmp_pushes([0; 4]);
        metrics
    }
}

/// RTMP push states, as the label `state` names them.
pub const PUSH_STATES: [&str; 4] = ["connecting", "publishing", "retrying", "failed"];

/// Request modes as the label `mode` names them (`unknown`: a mode the gateway does not
/// know).
const REQUEST_MODES: [&str; 10] = [
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "PLAYBACK",
    "PLAYBACK_CTRL",
    "DEVPUSH",
    "HEART",
    "RTMP",
    "WEBRTC",
    "RECORD",
    "unknown",
];

/// Request outcomes as the label `outcome` names them.
const REQUEST_OUTCOMES: [&str; 4] = ["ok", "error", "refuse", "none"];

impl ControlMetrics {
    /// A request on `{prefix}/gateway/{device}/{MODE}` was handled: `mode` as in the topic
    /// (upper case; `unknown` for a mode the gateway does not know), `outcome` what its
    /// first reply said (`ok`, `error`, `refuse`) or `none` (no reply yet: it waits for
    /// the device, or needs none).
    pub fn count_request(&self, mode: &'static str, outcome: &'static str) {
        self.requests
            .get_or_create(&[("mode", mode), ("outcome", outcome)])
            .inc();
    }

    /// A REQPULL (or a playback request, 0x9201) was sent to a device.
    pub fn count_reqpull(&self) {
        self.reqpulls.inc();
    }

    /// A STOP (0x9102, or playback control 2) was sent to a device.
    pub fn count_stop(&self) {
        self.stops.inc();
    }

    /// A pull was given up: the device did not connect after its retries.
    pub fn count_pull_failed(&self) {
        self.pulls_failed.inc();
    }

    /// Streams the demand state follows now (asked for, live, lingering or stopping).
    pub fn set_demand_streams(&self, n: usize) {
        self.demand_streams
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Seconds from the first REQPULL for a stream nobody published to its first key frame.
    pub fn observe_cold_start(&self, seconds: f64) {
        self.cold_start.observe(seconds);
    }

    /// RTMP pushes now in each state (`state` one of [`PUSH_STATES`]).
    pub fn set_rtmp_pushes(&self, counts: [usize; 4]) {
        for (state, n) in PUSH_STATES.into_iter().zip(counts) {
            self.rtmp_pushes
                .get_or_create(&[("state", state)])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "control_requests",
            "MQTT requests handled, by mode and the outcome of their first reply",
            self.requests.clone(),
        );
        registry.register(
            "control_reqpulls",
            "REQPULL (0x9101) and playback requests (0x9201) sent to devices",
            self.reqpulls.clone(),
        );
        registry.register(
            "control_stops",
            "STOP commands (0x9102, playback control 2) sent to devices",
            self.stops.clone(),
        );
        registry.register(
            "control_pulls_failed",
            "Pulls given up: the device did not connect after its retries",
            self.pulls_failed.clone(),
        );
        registry.register(
            "control_demand_streams",
            "Streams the demand state follows (leases held, live, lingering or stopping)",
            self.demand_streams.clone(),
        );
        registry.register(
            "control_cold_start_seconds",
            "Seconds from the first REQPULL for a stream nobody published to its first key frame",
            self.cold_start.clone(),
        );
        registry.register(
            "rtmp_pushes",
            "RTMP pushes by state",
            self.rtmp_pushes.clone(),
        );
    }
}

/// What `/metrics` reads: the sides' counters and control's instruments.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The hub.
    pub hub: Hub,
    /// Ingest's counters.
    pub ingest: Arc<IngestStats>,
    /// The bridge's counters.
    pub bridge: BridgeCounters,
    /// Control's instruments.
    pub control: ControlMetrics,
    /// The WebRTC side (`None`: `webrtc.enabled = false`).
    pub webrtc: Option<crate::output::webrtc::WebRtc>,
}

/// The registries `/metrics` encodes: the gateway's (prefixed `jt1078_`) and the
/// process's (the standard `process_*` names, unprefixed).
#[derive(Debug)]
struct Registries {
    gateway: Registry,
    process: Registry,
}

/// `GET /metrics` (guarded with `/api/*` by `app`).
pub fn routes(sources: Sources, settings: &MetricsSettings) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Arc::new(registries(sources, settings)))
}

/// The text `/metrics` answers with now (for tests and benchmarks).
pub fn render(sources: Sources, settings: &MetricsSettings) -> Result<String, std::fmt::Error> {
    encode(&registries(sources, settings))
}

fn registries(sources: Sources, settings: &MetricsSettings) -> Registries {
    let mut gateway = Registry::with_prefix("jt1078");
    sources.control.register(&mut gateway);
    gateway.register_collector(Box::new(hub::HubCollector::new(
        sources.hub,
        sources.webrtc,
        settings.per_stream,
        settings.per_stream_max,
    )));
    gateway.register_collector(Box::new(hub::IngestCollector(sources.ingest)));
    gateway.register_collector(Box::new(hub::BridgeCollector(sources.bridge)));
    let mut process = Registry::default();
    process.register_collector(Box::new(process::ProcessCollector::default()));
    Registries { gateway, process }
}

fn encode(registries: &Registries) -> Result<String, std::fmt::Error> {
    use prometheus_client::encoding::prometheus_text;
    let mut text = String::with_capacity(16 * 1024);
    prometheus_text::encode(&mut text, &registries.gateway)?;
    prometheus_text::encode(&mut text, &registries.process)?;
    Ok(text)
}

async fn scrape(State(registries): State<Arc<Registries>>) -> Response {
    match encode(&registries) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(error) => {
            tracing::warn!(%error, "could not encode the metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not encode the metrics\n",
            )
                .into_response()
        }
    }
}
