//! First frame: from a viewer's request to its first decodable video frame, for a stream
//! already live (served from the GOP cache) and for a cold start (request → REQPULL over
//! the gateway's embedded MQTT broker → the device connects → first frame). The viewer is
//! an HTTP-FLV player or a WebRTC peer signalling over WHEP ([`Player`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use jt1078_gateway::codec::jt1078::{Sim, SimLayout};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::capacity::percentile_ms;
use crate::device::{Device, DeviceCounters, Schedule};
use crate::gateway::GatewayProcess;
use crate::viewer;
use crate::webrtc_viewer::WebRtcOffer;

/// Milliseconds: p50, p99, max.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Spread {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

impl Spread {
    /// The spread of times in milliseconds (any order).
    pub(crate) fn of(ms: &[f64]) -> Spread {
        let mut us: Vec<u32> = ms.iter().map(|m| (m * 1000.0) as u32).collect();
        us.sort_unstable();
        Spread {
            p50: percentile_ms(&us, 50.0),
            p99: percentile_ms(&us, 99.0),
            max: percentile_ms(&us, 100.0),
        }
    }
}

/// Who asks for the stream.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Player {
    /// `GET /live/{device}_1.flv`; the time ends at the first key frame tag.
    HttpFlv,
    /// `POST /whep/live/{device}_1` from a `str0m` peer; the time ends at the first video
    /// frame it depacketizes (ICE and DTLS included).
    #[serde(rename = "webrtc")]
    WebRtc,
}

impl Player {
    /// What the player's time runs from and to, for the report.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Player::HttpFlv => "HTTP-FLV: request → first key frame tag",
            Player::WebRtc => {
                "WebRTC (str0m peer): WHEP POST → first video frame depacketized (ICE and DTLS included)"
            }
        }
    }

    /// Gets ready to ask (a WebRTC peer makes its offer: a browser's work, before the clock
    /// starts).
    fn prepare(self) -> anyhow::Result<Prepared> {
        Ok(match self {
            Player::HttpFlv => Prepared::HttpFlv,
            Player::WebRtc => Prepared::WebRtc(Box::new(WebRtcOffer::new()?)),
        })
    }
}

/// A player ready to ask (an `Rtc` is some 10 KB: boxed).
enum Prepared {
    HttpFlv,
    WebRtc(Box<WebRtcOffer>),
}

impl Prepared {
    /// Asks for `device`'s channel 1: ms from the request to the first video frame.
    async fn first_frame(self, http: SocketAddr, device: String) -> anyhow::Result<f64> {
        match self {
            Prepared::HttpFlv => {
                viewer::first_key_frame(http, &format!("/live/{device}_1.flv")).await
            }
            Prepared::WebRtc(offer) => {
                offer
                    .first_frame(http, &format!("/whep/live/{device}_1"))
                    .await
            }
        }
    }
}

/// First-frame figures.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FirstFrame {
    /// Who asked.
    pub(crate) player: Player,
    pub(crate) runs: usize,
    /// Stream already live: request → first key frame.
    pub(crate) live: Spread,
    /// Cold: request → first key frame, all of it.
    pub(crate) cold_total: Spread,
    /// Cold: request → REQPULL reaches the device (gateway + its embedded broker).
    pub(crate) cold_request_to_reqpull: Spread,
    /// Cold: REQPULL → TCP connected (the device's share).
    pub(crate) cold_device_connect: Spread,
    /// Cold: the device's first write → the viewer's first key frame (gateway).
    pub(crate) cold_first_packet_to_frame: Spread,
    /// Cold: the gateway's own share (request → REQPULL + first packet → frame).
    pub(crate) cold_gateway_share: Spread,
    /// Cold start of a stream the gateway has seen before (its tracks on record): total.
    pub(crate) seen_before_total: Spread,
    /// … and the gateway's own share.
    pub(crate) seen_before_gateway_share: Spread,
}

fn device(schedule: &Arc<Schedule>, layout: SimLayout, id: &str) -> anyhow::Result<Device> {
    Ok(Device {
        schedule: Arc::clone(schedule),
        sim: Sim::from_digits(id, layout).context("sim")?,
        // no matching here: keep the queue short by never noting frames
        in_flight: Arc::new(Mutex::new(VecDeque::new())),
        counters: Arc::new(DeviceCounters::default()),
        window_start: Instant::now(),
    })
}

/// Measures both, `runs` times each, with `player` asking.
pub(crate) async fn measure(
    bin: &Path,
    schedule: &Arc<Schedule>,
    layout: SimLayout,
    runs: usize,
    player: Player,
) -> anyhow::Result<FirstFrame> {
    let gateway = GatewayProcess::start(bin).await?;
    let live = live(&gateway, schedule, layout, runs, player).await?;
    let (cold, seen_before) = cold(&gateway, schedule, layout, runs, player).await?;
    gateway.stop().await?;
    let column = |i: usize| Spread::of(&cold.iter().map(|c| c[i]).collect::<Vec<_>>());
    let again = |i: usize| Spread::of(&seen_before.iter().map(|c| c[i]).collect::<Vec<_>>());
    Ok(FirstFrame {
        player,
        seen_before_total: again(0),
        seen_before_gateway_share: again(4),
        runs,
        live: Spread::of(&live),
        cold_total: column(0),
        cold_request_to_reqpull: column(1),
        cold_device_connect: column(2),
        cold_first_packet_to_frame: column(3),
        cold_gateway_share: column(4),
    })
}

async fn live(
    gateway: &GatewayProcess,
    schedule: &Arc<Schedule>,
    layout: SimLayout,
    runs: usize,
    player: Player,
) -> anyhow::Result<Vec<f64>> {
    let id = "13700000001";
    let stop = CancellationToken::new();
    let pusher =
        tokio::spawn(device(schedule, layout, id)?.run(gateway.live, Instant::now(), stop.clone()));
    // the first key frame is in the GOP cache once one viewer has seen it
    let first = player.prepare()?;
    first.first_frame(gateway.http, id.to_owned()).await?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let prepared = player.prepare()?;
        times.push(prepared.first_frame(gateway.http, id.to_owned()).await?);
    }
    stop.cancel();
    pusher.await??;
    Ok(times)
}

/// One cold start: [total, request→REQPULL, connect, first packet→frame, gateway share].
type ColdRun = [f64; 5];

/// Cold starts of devices the gateway has never seen, then of devices it has (each pushed
/// for a few seconds beforehand, then stopped).
async fn cold(
    gateway: &GatewayProcess,
    schedule: &Arc<Schedule>,
    layout: SimLayout,
    runs: usize,
    player: Player,
) -> anyhow::Result<(Vec<ColdRun>, Vec<ColdRun>)> {
    let mut options = MqttOptions::new("loadtest-device", "127.0.0.1", gateway.mqtt.port());
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let (reqpull_tx, mut reqpull_rx) = mpsc::channel::<(String, Instant)>(64);
    let (online_tx, mut online_rx) = mpsc::channel::<()>(1);
    let mqtt = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let at = Instant::now();
                    if p.topic.starts_with("jt1078/status/gateway/")
                        && p.payload.windows(6).any(|w| w == b"online")
                    {
                        let _ = online_tx.try_send(());
                        continue;
                    }
                    if p.topic.ends_with("/REQPULL")
                        && reqpull_tx.send((p.topic, at)).await.is_err()
                    {
                        return;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    eprintln!("loadtest MQTT: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    client
        .subscribe("jt1078/device/+/REQPULL", QoS::AtLeastOnce)
        .await?;
    // the gateway's retained status says online once its control plane is connected
    client
        .subscribe("jt1078/status/gateway/+", QoS::AtLeastOnce)
        .await?;
    tokio::time::timeout(Duration::from_secs(10), online_rx.recv())
        .await
        .context("the gateway did not announce itself online within 10 s")?;
    let fresh: Vec<String> = (0..runs).map(|run| format!("137100{run:05}")).collect();
    let first = cold_runs(gateway, schedule, layout, &fresh, &mut reqpull_rx, player).await?;
    let known: Vec<String> = (0..runs).map(|run| format!("137200{run:05}")).collect();
    prime(gateway, schedule, layout, &known).await?;
    // REQPULLs for earlier devices (their viewers lingered) must not be taken for new ones
    while reqpull_rx.try_recv().is_ok() {}
    let again = cold_runs(gateway, schedule, layout, &known, &mut reqpull_rx, player).await?;
    mqtt.abort();
    Ok((first, again))
}

/// Each device in `ids` pushes for a few seconds (long enough for the gateway to note its
/// tracks), all at once; returns once their streams have ended.
async fn prime(
    gateway: &GatewayProcess,
    schedule: &Arc<Schedule>,
    layout: SimLayout,
    ids: &[String],
) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let mut pushers = Vec::with_capacity(ids.len());
    for id in ids {
        let pusher = device(schedule, layout, id)?;
        pushers.push(tokio::spawn(pusher.run(
            gateway.live,
            Instant::now(),
            stop.clone(),
        )));
    }
    tokio::time::sleep(PRIME_TIME).await;
    stop.cancel();
    for pusher in pushers {
        pusher.await??;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gateway.streams().await?.is_empty() {
        if Instant::now() > deadline {
            bail!("primed streams still up 10 s after their devices stopped");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// How long a device pushes so the gateway knows it (its tracks go on record after 50
/// frames of one).
const PRIME_TIME: Duration = Duration::from_secs(4);

async fn cold_runs(
    gateway: &GatewayProcess,
    schedule: &Arc<Schedule>,
    layout: SimLayout,
    ids: &[String],
    reqpull_rx: &mut mpsc::Receiver<(String, Instant)>,
    player: Player,
) -> anyhow::Result<Vec<ColdRun>> {
    let mut results = Vec::with_capacity(ids.len());
    for (run, id) in ids.iter().enumerate() {
        let prepared = player.prepare()?;
        let asked = Instant::now();
        let viewer = tokio::spawn(prepared.first_frame(gateway.http, id.clone()));
        // earlier devices may be asked again (their viewer was still counted when they
        // stopped): wait for this device's own REQPULL
        let wanted = format!("/device/{id}/REQPULL");
        let reqpull_at = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some((topic, at)) = reqpull_rx.recv().await {
                if topic.ends_with(&wanted) {
                    return Ok(at);
                }
            }
            bail!("MQTT task ended")
        })
        .await
        .context("no REQPULL within 10 s")??;
        let mut socket = TcpStream::connect(gateway.live).await?;
        socket.set_nodelay(true)?;
        let connected = Instant::now();
        let stop = CancellationToken::new();
        let pusher = device(schedule, layout, id)?;
        let stop_pusher = stop.clone();
        let first_write = Instant::now();
        let push =
            tokio::spawn(async move { pusher.replay(&mut socket, first_write, stop_pusher).await });
        let total = viewer.await??;
        stop.cancel();
        push.await??;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let to_reqpull = ms(reqpull_at - asked);
        let to_frame = total - ms(first_write - asked);
        eprintln!(
            "cold start {run}: total {total:.2} ms, request → REQPULL {to_reqpull:.2} ms, first packet → frame {to_frame:.2} ms"
        );
        results.push([
            total,
            to_reqpull,
            ms(connected - reqpull_at),
            to_frame,
            to_reqpull + to_frame,
        ]);
    }
    Ok(results)
}
