//! The control task: owns the demand state, turns requests and hub events into device
//! commands, replies and status messages. One task, one owner; MQTT I/O is in `mqtt.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use rumqttc::{AsyncClient, QoS};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};

use super::ControlContext;
use super::demand::{Action, Demand, RequestOutcome, RequesterId};
use super::messages::{
    DeviceCommand, ErrorCode, Mode, PlayUrls, Reply, Request, RequestError, bcd_time,
};
use super::mqtt::Inbound;
use super::topics::Topics;
use crate::hub::{Hub, HubEvent, StreamSnapshot};
use crate::media::{Channel, DeviceId, StreamKey, StreamKind};

/// Most devices whose heartbeat is remembered (bounded against floods of made-up ids).
const MAX_DEVICES_SEEN: usize = 100_000;

/// Gateway status, retained on `status/gateway/{id}`.
#[derive(Debug, Serialize)]
pub(crate) struct GatewayStatus<'a> {
    pub(crate) gateway_id: &'a str,
    pub(crate) status: &'a str,
}

#[derive(Debug, Serialize)]
struct Heartbeat<'a> {
    gateway_id: &'a str,
    count: u64,
    uptime_secs: u64,
    streams: usize,
    viewers: u64,
    bytes_in: u64,
    bytes_out: u64,
    devices_seen: usize,
}

#[derive(Debug, Serialize)]
struct StreamStatus {
    device: String,
    channel: u8,
    kind: StreamKind,
    live: bool,
    video_codec: Option<crate::media::Codec>,
    audio_codec: Option<crate::media::Codec>,
    width: Option<u32>,
    height: Option<u32>,
    urls: PlayUrls,
}

/// The fields of the last request per stream that shape the device command, sent again on
/// retries and re-pulls; forgotten when the device is told to stop.
#[derive(Debug, Clone)]
enum PullParams {
    /// 0x9101 fields of a live request.
    Live(LiveParams),
    /// 0x9201 fields of a playback request.
    Playback(PlaybackParams),
}

/// 0x9101 fields from a live request (`video`, `audio`, `stream_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct LiveParams {
    data_type: u8,
    stream_type: u8,
}

/// 0x9201 fields from a playback request.
#[derive(Debug, Clone)]
struct PlaybackParams {
    media_type: u8,
    stream_type: u8,
    storage_type: u8,
    playback_mode: u8,
    speed: u8,
    start_time: String,
    end_time: String,
}

pub(crate) struct Control {
    ctx: ControlContext,
    hub: Hub,
    client: AsyncClient,
    topics: Topics,
    demand: Demand,
    pull_params: HashMap<StreamKey, PullParams>,
    devices_seen: HashMap<DeviceId, Instant>,
    started: Instant,
    heartbeats: u64,
    sequence: AtomicU64,
}

impl Control {
    pub(crate) fn new(ctx: ControlContext, hub: Hub, client: AsyncClient) -> Control {
        Control {
            topics: Topics::new(&ctx.mqtt.topic_prefix),
            demand: Demand::new(ctx.demand),
            ctx,
            hub,
            client,
            pull_params: HashMap::new(),
            devices_seen: HashMap::new(),
            started: Instant::now(),
            heartbeats: 0,
            sequence: AtomicU64::new(0),
        }
    }

    pub(crate) async fn run(
        mut self,
        mut inbound_rx: mpsc::Receiver<Inbound>,
        mut connected_rx: watch::Receiver<u64>,
        cancel: CancellationToken,
    ) {
        let mut events = self.hub.events();
        let mut heartbeat = tokio::time::interval(self.ctx.mqtt.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = self.demand.poll_timeout();
            tokio::select! {
                () = cancel.cancelled() => break,
                inbound = inbound_rx.recv() => match inbound {
                    Some(inbound) => self.handle_inbound(&inbound),
                    None => break,
                },
                event = events.recv() => match event {
                    Ok(event) => self.handle_hub_event(event),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        warn!(missed, "control fell behind hub events; resynchronising");
                        self.resync_viewers();
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                () = sleep_until_opt(wake.map(Instant::from_std)) => {
                    let mut actions = Vec::new();
                    self.demand.poll(Instant::now().into_std(), &mut actions);
                    self.perform(actions);
                }
                _ = heartbeat.tick() => self.publish_heartbeat(),
                changed = connected_rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.announce();
                    // Commands queued while the broker was away may be lost with the
                    // session: send again those still in force (on a reconnect; what was
                    // queued before the first connect is still in the client's queue).
                    if *connected_rx.borrow_and_update() > 1 {
                        let mut actions = Vec::new();
                        self.demand.reconnected(&mut actions);
                        self.perform(actions);
                    }
                }
            }
        }
        self.publish_json(
            &self.topics.gateway_status(&self.ctx.mqtt.gateway_id),
            &GatewayStatus {
                gateway_id: &self.ctx.mqtt.gateway_id,
                status: "offline",
            },
            true,
        );
    }

    #[instrument(name = "command", skip_all, fields(topic = %inbound.topic, seqid))]
    fn handle_inbound(&mut self, inbound: &Inbound) {
        let Some((device, mode)) = self.topics.parse_request(&inbound.topic) else {
            debug!("ignoring a message outside the request topics");
            return;
        };
        let request = match Request::parse(&inbound.payload) {
            Ok(request) => request,
            Err(error) => return self.reject(error),
        };
        tracing::Span::current().record("seqid", request.seqid.as_deref().unwrap_or(""));
        let device = match DeviceId::parse(device) {
            Ok(device) => device,
            Err(error) => {
                return self.reject(RequestError {
                    code: ErrorCode::InvalidDevice,
                    message: error.to_string(),
                    seqid: request.seqid,
                });
            }
        };
        let Some(mode) = Mode::parse(mode) else {
            return self.reject(RequestError {
                code: ErrorCode::UnknownMode,
                message: format!(
                    "unknown mode {mode:?}; expected SUBSCRIBE, UNSUBSCRIBE, PLAYBACK, \
                     PLAYBACK_CTRL, DEVPUSH, HEART, RTMP or WEBRTC"
                ),
                seqid: request.seqid,
            });
        };
        debug!(%device, ?mode, "request");
        match mode {
            Mode::Subscribe | Mode::Playback => self.subscribe(&device, mode, &request),
            Mode::Unsubscribe => self.unsubscribe(&device, &request),
            Mode::PlaybackCtrl => self.playback_ctrl(&device, &request),
            Mode::DevPush => {
                let key = request.stream_key(&device, mode);
                let seqid = self.seqid_of(&request);
                self.reply_ok(&seqid, &key, None, None);
            }
            Mode::Heart => {
                if self.devices_seen.len() < MAX_DEVICES_SEEN
                    || self.devices_seen.contains_key(&device)
                {
                    self.devices_seen.insert(device, Instant::now());
                }
            }
            Mode::Rtmp | Mode::WebRtc => {
                let key = request.stream_key(&device, mode);
                let what = if mode == Mode::Rtmp {
                    "RTMP republishing"
                } else {
                    "WebRTC playback"
                };
                self.reject(RequestError {
                    code: ErrorCode::NotSupported,
                    message: format!(
                        "{what} is not available in this version of the gateway; \
                         play the stream over HTTP-FLV instead: {}",
                        self.urls(&key).flv
                    ),
                    seqid: request.seqid.clone(),
                });
            }
        }
    }

    fn subscribe(&mut self, device: &DeviceId, mode: Mode, request: &Request) {
        let seqid = self.seqid_of(request);
        let mut keys = vec![request.stream_key(device, mode)];
        if let Some(batch) = &request.pull_stream_from_device {
            keys.clear();
            for item in batch {
                match DeviceId::parse(&item.device) {
                    Ok(d) => keys.push(StreamKey::new(
                        d,
                        Channel(item.channel.unwrap_or(1)),
                        item.kind.unwrap_or(StreamKind::Live),
                    )),
                    Err(error) => {
                        return self.reject(RequestError {
                            code: ErrorCode::InvalidDevice,
                            message: format!("pull_stream_from_device: {error}"),
                            seqid: Some(seqid),
                        });
                    }
                }
            }
        }
        let requester =
            RequesterId::Client(request.client_id.clone().unwrap_or_else(|| seqid.clone()));
        for key in keys {
            let params = match key.kind {
                StreamKind::Live => live_params(request).map(PullParams::Live),
                StreamKind::Playback => playback_params(request).map(PullParams::Playback),
            };
            match params {
                Ok(params) => {
                    self.pull_params.insert(key.clone(), params);
                }
                Err((code, message)) => {
                    return self.reject(RequestError {
                        code,
                        message,
                        seqid: Some(seqid),
                    });
                }
            }
            let mut actions = Vec::new();
            let outcome = self.demand.request(
                &key,
                requester.clone(),
                Some(seqid.clone()),
                true,
                Instant::now().into_std(),
                &mut actions,
            );
            let state = match outcome {
                RequestOutcome::Live => "live",
                RequestOutcome::Pulling => "pulling",
                RequestOutcome::Waiting => "waiting",
            };
            info!(stream = %key, requester = ?requester, state, "subscribed");
            self.reply_ok(
                &seqid,
                &key,
                Some(state),
                Some(self.ctx.demand.lease.as_secs()),
            );
            self.perform(actions);
        }
    }

    fn unsubscribe(&mut self, device: &DeviceId, request: &Request) {
        let seqid = self.seqid_of(request);
        let key = request.stream_key(device, Mode::Unsubscribe);
        let requester =
            RequesterId::Client(request.client_id.clone().unwrap_or_else(|| seqid.clone()));
        if self
            .demand
            .release(&key, &requester, Instant::now().into_std())
        {
            info!(stream = %key, requester = ?requester, "unsubscribed");
            self.reply_ok(&seqid, &key, None, None);
        } else {
            self.reject(RequestError {
                code: ErrorCode::NotSubscribed,
                message: format!(
                    "{requester:?} has no subscription to {key}; subscribe with the same client_id first"
                ),
                seqid: Some(seqid),
            });
        }
    }

    fn playback_ctrl(&mut self, device: &DeviceId, request: &Request) {
        let seqid = self.seqid_of(request);
        let key = request.stream_key(device, Mode::PlaybackCtrl);
        let Some(control) = request.control.filter(|c| *c <= 6) else {
            return self.reject(RequestError {
                code: ErrorCode::MissingField,
                message:
                    "PLAYBACK_CTRL needs \"control\": 0 start, 1 pause, 2 end, 3 fast forward, \
                          4 key frame rewind, 5 seek, 6 key frame play"
                        .to_owned(),
                seqid: Some(seqid),
            });
        };
        let seek_time = match (&request.seek_time, control) {
            (Some(t), _) => match bcd_time(t) {
                Some(t) => t,
                None => {
                    return self.reject(RequestError {
                        code: ErrorCode::InvalidField,
                        message: format!(
                            "seek_time {t:?}: expected YYMMDDhhmmss or YYYY-MM-DD hh:mm:ss"
                        ),
                        seqid: Some(seqid),
                    });
                }
            },
            (None, 5) => {
                return self.reject(RequestError {
                    code: ErrorCode::MissingField,
                    message: "control 5 (seek) needs \"seek_time\"".to_owned(),
                    seqid: Some(seqid),
                });
            }
            (None, _) => "000000000000".to_owned(),
        };
        self.send_device(&DeviceCommand::PlaybackCtrl {
            seqid: seqid.clone(),
            device: key.device.to_string(),
            channel: key.channel.0,
            control,
            speed: request.speed.unwrap_or(0),
            seek_time,
        });
        self.reply_ok(&seqid, &key, None, None);
    }

    fn handle_hub_event(&mut self, event: HubEvent) {
        let now = Instant::now().into_std();
        let mut actions = Vec::new();
        match event {
            HubEvent::StreamUp(key) => {
                self.demand.stream_up(&key);
                self.publish_stream_status(&key, true);
            }
            HubEvent::StreamDown(key) => {
                self.demand.stream_down(&key, now, &mut actions);
                self.publish_stream_status(&key, false);
            }
            HubEvent::MediaChanged { key, .. } => {
                if self.hub.is_live(&key) {
                    self.publish_stream_status(&key, true);
                }
            }
            HubEvent::ReadersChanged { key, readers } => {
                if readers > 0 {
                    let may_pull = self.viewers_may_pull(&key);
                    self.demand.request(
                        &key,
                        RequesterId::Viewers,
                        None,
                        may_pull,
                        now,
                        &mut actions,
                    );
                } else {
                    self.demand.release(&key, &RequesterId::Viewers, now);
                }
            }
            HubEvent::ReaderWaiting(_) => {}
        }
        self.perform(actions);
    }

    /// After missed events: viewers and live streams as the hub has them now.
    fn resync_viewers(&mut self) {
        let now = Instant::now().into_std();
        let counts: HashMap<StreamKey, u64> = self.hub.reader_counts().into_iter().collect();
        let wanted: Vec<StreamKey> = self.demand.wanted().cloned().collect();
        let mut actions = Vec::new();
        for key in wanted {
            if !counts.contains_key(&key) {
                self.demand.release(&key, &RequesterId::Viewers, now);
            }
        }
        for key in counts.keys() {
            let may_pull = self.viewers_may_pull(key);
            self.demand
                .request(key, RequesterId::Viewers, None, may_pull, now, &mut actions);
        }
        // streams that came up or went down unseen: tell the demand state and the retained
        // status, as the events would have
        let mut live: HashSet<StreamKey> = HashSet::new();
        for (key, snapshot) in self.live_streams() {
            self.demand.stream_up(&key);
            self.publish_status(&key, true, Some(&snapshot));
            live.insert(key);
        }
        let gone: Vec<StreamKey> = self
            .demand
            .live()
            .filter(|k| !live.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.demand.stream_down(&key, now, &mut actions);
            self.publish_stream_status(&key, false);
        }
        self.perform(actions);
    }

    /// Viewers make the device push a live stream, but a playback only with the 0x9201
    /// fields of a request (otherwise they wait): live and playback never mix.
    fn viewers_may_pull(&self, key: &StreamKey) -> bool {
        match key.kind {
            StreamKind::Live => true,
            StreamKind::Playback => {
                matches!(self.pull_params.get(key), Some(PullParams::Playback(_)))
            }
        }
    }

    fn perform(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Pull { key, attempt } => match self.pull_command(&key) {
                    Some(command) => {
                        info!(stream = %key, attempt, "asking the device to push");
                        self.send_device(&command);
                    }
                    None => warn!(stream = %key, "no playback request to ask the device for"),
                },
                Action::Stop { key } => {
                    info!(stream = %key, "asking the device to stop");
                    let seqid = self.next_seqid();
                    let command = match key.kind {
                        StreamKind::Live => DeviceCommand::Stop {
                            seqid,
                            device: key.device.to_string(),
                            channel: key.channel.0,
                            command: 0,
                            close_type: 0,
                            stream_type: 0,
                        },
                        StreamKind::Playback => DeviceCommand::PlaybackCtrl {
                            seqid,
                            device: key.device.to_string(),
                            channel: key.channel.0,
                            control: 2,
                            speed: 0,
                            seek_time: "000000000000".to_owned(),
                        },
                    };
                    self.pull_params.remove(&key);
                    self.send_device(&command);
                }
                Action::Failed {
                    key,
                    requesters,
                    attempts,
                } => {
                    warn!(stream = %key, attempts, "device did not connect");
                    for seqid in requesters.into_iter().filter_map(|(_, seqid)| seqid) {
                        let mut reply = Reply::error(
                            &seqid,
                            "ERROR",
                            ErrorCode::DeviceUnavailable,
                            format!(
                                "device {} did not connect for {} after {attempts} requests; \
                                 check that it is online and can reach {}",
                                key.device, key, self.ctx.public_host
                            ),
                        );
                        reply.device = Some(key.device.to_string());
                        reply.channel = Some(key.channel.0);
                        reply.kind = Some(key.kind);
                        self.publish_json(&self.topics.reply(&seqid, "ERROR"), &reply, false);
                    }
                }
            }
        }
    }

    /// The command that makes the device push `key`: REQPULL for live, PLAYBACK for a
    /// playback (`None` without the fields of a playback request: never a REQPULL aimed at
    /// the playback port).
    fn pull_command(&self, key: &StreamKey) -> Option<DeviceCommand> {
        let seqid = self.next_seqid();
        let device = key.device.to_string();
        let server_host = self.ctx.public_host.clone();
        let channel = key.channel.0;
        match (key.kind, self.pull_params.get(key)) {
            (StreamKind::Playback, Some(PullParams::Playback(p))) => {
                Some(DeviceCommand::Playback {
                    seqid,
                    device,
                    server_host,
                    tcp_port: self.ctx.playback_port,
                    udp_port: 0,
                    channel,
                    media_type: p.media_type,
                    stream_type: p.stream_type,
                    storage_type: p.storage_type,
                    playback_mode: p.playback_mode,
                    speed: p.speed,
                    start_time: p.start_time.clone(),
                    end_time: p.end_time.clone(),
                })
            }
            (StreamKind::Playback, _) => None,
            (StreamKind::Live, params) => {
                let live = match params {
                    Some(PullParams::Live(live)) => *live,
                    _ => LiveParams::default(),
                };
                Some(DeviceCommand::ReqPull {
                    seqid,
                    device,
                    server_host,
                    tcp_port: self.ctx.live_port,
                    udp_port: 0,
                    channel,
                    data_type: live.data_type,
                    stream_type: live.stream_type,
                })
            }
        }
    }

    fn reject(&self, error: RequestError) {
        let Some(seqid) = &error.seqid else {
            warn!(code = ?error.code, "{} (no seqid to reply to)", error.message);
            return;
        };
        let mode = if error.code == ErrorCode::NotSupported {
            "REFUSE"
        } else {
            "ERROR"
        };
        info!(seqid, code = ?error.code, "{}", error.message);
        let reply = Reply::error(seqid, mode, error.code, error.message.clone());
        self.publish_json(&self.topics.reply(seqid, mode), &reply, false);
    }

    fn reply_ok(&self, seqid: &str, key: &StreamKey, state: Option<&str>, lease_secs: Option<u64>) {
        let reply = Reply {
            seqid: seqid.to_owned(),
            mode: "OK".to_owned(),
            device: Some(key.device.to_string()),
            channel: Some(key.channel.0),
            kind: Some(key.kind),
            state: state.map(str::to_owned),
            urls: Some(self.urls(key)),
            lease_secs,
            code: None,
            message: None,
        };
        self.publish_json(&self.topics.reply(seqid, "OK"), &reply, false);
    }

    fn urls(&self, key: &StreamKey) -> PlayUrls {
        PlayUrls {
            flv: format!(
                "http://{}:{}/{}/{}.flv",
                self.ctx.public_host,
                self.ctx.http_port,
                key.kind,
                key.name()
            ),
        }
    }

    fn send_device(&self, command: &DeviceCommand) {
        let device = match command {
            DeviceCommand::ReqPull { device, .. }
            | DeviceCommand::Stop { device, .. }
            | DeviceCommand::Playback { device, .. }
            | DeviceCommand::PlaybackCtrl { device, .. } => device,
        };
        self.publish_json(&self.topics.device(device, command.mode()), command, false);
    }

    fn publish_stream_status(&self, key: &StreamKey, live: bool) {
        self.publish_status(key, live, self.hub.snapshot(key).as_ref());
    }

    /// The retained status of `key`, with codecs and picture size from `snapshot`.
    fn publish_status(&self, key: &StreamKey, live: bool, snapshot: Option<&StreamSnapshot>) {
        let status = StreamStatus {
            device: key.device.to_string(),
            channel: key.channel.0,
            kind: key.kind,
            live,
            video_codec: snapshot.and_then(|s| s.video_codec),
            audio_codec: snapshot.and_then(|s| s.audio_codec),
            width: snapshot.and_then(|s| s.width),
            height: snapshot.and_then(|s| s.height),
            urls: self.urls(key),
        };
        self.publish_json(&self.topics.stream_status(key), &status, true);
    }

    /// On (re)connect: online status and the state of every live stream.
    fn announce(&self) {
        self.publish_json(
            &self.topics.gateway_status(&self.ctx.mqtt.gateway_id),
            &GatewayStatus {
                gateway_id: &self.ctx.mqtt.gateway_id,
                status: "online",
            },
            true,
        );
        for (key, snapshot) in self.live_streams() {
            self.publish_status(&key, true, Some(&snapshot));
        }
    }

    /// Every live stream with its key and snapshot (one pass over the hub).
    fn live_streams(&self) -> Vec<(StreamKey, StreamSnapshot)> {
        self.hub
            .list()
            .into_iter()
            .filter_map(|snapshot| {
                let device = DeviceId::parse(&snapshot.device).ok()?;
                let key = StreamKey::new(device, Channel(snapshot.channel), snapshot.kind);
                Some((key, snapshot))
            })
            .collect()
    }

    fn publish_heartbeat(&mut self) {
        self.heartbeats += 1;
        let streams = self.hub.list();
        let heart = Heartbeat {
            gateway_id: &self.ctx.mqtt.gateway_id,
            count: self.heartbeats,
            uptime_secs: self.started.elapsed().as_secs(),
            streams: streams.len(),
            viewers: streams.iter().map(|s| s.viewers).sum(),
            bytes_in: streams.iter().map(|s| s.bytes_in).sum(),
            bytes_out: streams.iter().map(|s| s.bytes_out).sum(),
            devices_seen: self.devices_seen.len(),
        };
        self.publish_json(
            &self.topics.gateway_heart(&self.ctx.mqtt.gateway_id),
            &heart,
            false,
        );
    }

    fn publish_json<T: Serialize>(&self, topic: &str, body: &T, retain: bool) {
        let payload = match serde_json::to_vec(body) {
            Ok(payload) => payload,
            Err(error) => {
                warn!(%error, topic, "could not encode a message");
                return;
            }
        };
        if let Err(error) = self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
        {
            warn!(%error, topic, "MQTT publish queue full; message dropped");
        }
    }

    fn seqid_of(&self, request: &Request) -> String {
        request.seqid.clone().unwrap_or_else(|| self.next_seqid())
    }

    fn next_seqid(&self) -> String {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}-{n}", self.ctx.mqtt.gateway_id)
    }
}

/// Why a request's fields cannot shape a device command: code and message.
type FieldError = (ErrorCode, String);

/// 0x9101 data type from `video`/`audio` (JT/T 1078 table 17: 0 audio and video, 1 video,
/// 3 listen, i.e. audio only) and the stream type (0 main, 1 sub).
fn live_params(request: &Request) -> Result<LiveParams, FieldError> {
    let data_type = match (request.video.unwrap_or(true), request.audio.unwrap_or(true)) {
        (true, true) => 0,
        (true, false) => 1,
        (false, true) => 3,
        (false, false) => {
            return Err((
                ErrorCode::InvalidField,
                "\"video\" and \"audio\" are both false: ask for at least one".to_owned(),
            ));
        }
    };
    let stream_type = match request.stream_type {
        None => 0,
        Some(t @ 0..=1) => t,
        Some(t) => {
            return Err((
                ErrorCode::InvalidField,
                format!("stream_type {t}: expected 0 (main) or 1 (sub) for a live stream"),
            ));
        }
    };
    Ok(LiveParams {
        data_type,
        stream_type,
    })
}

fn playback_params(request: &Request) -> Result<PlaybackParams, FieldError> {
    let start = request.start_time.as_deref().ok_or((
        ErrorCode::MissingField,
        "a playback request needs \"start_time\" (YYMMDDhhmmss or YYYY-MM-DD hh:mm:ss)".to_owned(),
    ))?;
    let invalid = |message: String| (ErrorCode::InvalidField, message);
    let start_time = bcd_time(start).ok_or_else(|| {
        invalid(format!(
            "start_time {start:?}: expected YYMMDDhhmmss or YYYY-MM-DD hh:mm:ss"
        ))
    })?;
    let end_time = match request.end_time.as_deref() {
        None => "000000000000".to_owned(),
        Some(end) => bcd_time(end).ok_or_else(|| {
            invalid(format!(
                "end_time {end:?}: expected YYMMDDhhmmss, YYYY-MM-DD hh:mm:ss or 0"
            ))
        })?,
    };
    let ranged = |name: &str, value: Option<u8>, max: u8| match value {
        Some(v) if v > max => Err(invalid(format!("{name} {v}: expected 0 to {max}"))),
        v => Ok(v.unwrap_or(0)),
    };
    Ok(PlaybackParams {
        media_type: ranged("media_type", request.media_type, 3)?,
        stream_type: ranged("stream_type", request.stream_type, 2)?,
        storage_type: ranged("storage_type", request.storage_type, 2)?,
        playback_mode: ranged("playback_mode", request.playback_mode, 4)?,
        speed: ranged("speed", request.speed, 5)?,
        start_time,
        end_time,
    })
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
