//! The control task: owns the demand state, turns requests and hub events into device
//! commands, replies and status messages. One task, one owner; MQTT I/O is in `mqtt.rs`.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use rumqttc::AsyncClient;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};

use super::ControlContext;
use super::demand::{Action, Demand, RequestOutcome, RequesterId};
use super::messages::{DeviceCommand, ErrorCode, Mode, Reply, Request, RequestError, bcd_time};
use super::mqtt::Inbound;
use super::outbox::Outbox;
use super::params::{LiveParams, PullParams, live_params, playback_params};
use super::topics::Topics;
use crate::hub::{Hub, HubEvent};
use crate::media::{Channel, DeviceId, StreamKey, StreamKind};
use crate::output::rtmp_push::PushEvent;
use crate::output::webrtc::{PeerEvent, WebRtc};

mod outgoing;
mod record;
mod rtmp;
mod webrtc;

pub(crate) use outgoing::GatewayStatus;
pub(crate) use record::RecordControl;
pub(crate) use rtmp::RtmpControl;

/// Most devices whose heartbeat is remembered (bounded against floods of made-up ids).
const MAX_DEVICES_SEEN: usize = 100_000;

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
    rtmp: RtmpControl,
    /// Requested recordings.
    record: RecordControl,
    /// The WebRTC side (`None`: `webrtc.enabled = false`).
    webrtc: Option<WebRtc>,
    /// What the current step decided to publish; flushed after it with back-pressure.
    outbox: RefCell<Outbox>,
    /// The last retained status body per stream, so each state is published once.
    statuses: HashMap<StreamKey, Vec<u8>>,
    /// WEBRTC requests whose own TURN servers are being allocated come back here.
    deferred_tx: mpsc::Sender<webrtc::DeferredOffer>,
    deferred_rx: Option<mpsc::Receiver<webrtc::DeferredOffer>>,
    /// How many are out.
    deferred: usize,
}

impl Control {
    pub(crate) fn new(
        ctx: ControlContext,
        hub: Hub,
        client: AsyncClient,
        rtmp: RtmpControl,
        webrtc: Option<WebRtc>,
        record: RecordControl,
    ) -> Control {
        let (deferred_tx, deferred_rx) = mpsc::channel(webrtc::MAX_DEFERRED);
        Control {
            deferred_tx,
            deferred_rx: Some(deferred_rx),
            deferred: 0,
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
            rtmp,
            record,
            webrtc,
            outbox: RefCell::new(Outbox::default()),
            statuses: HashMap::new(),
        }
    }

    /// Serves until `cancel`, then publishes the retained "offline" (best effort).
    pub(crate) async fn run(
        mut self,
        mut inbound_rx: mpsc::Receiver<Inbound>,
        mut connected_rx: watch::Receiver<u64>,
        mut push_events_rx: mpsc::Receiver<PushEvent>,
        mut peer_events_rx: mpsc::Receiver<PeerEvent>,
        cancel: CancellationToken,
    ) {
        tokio::select! {
            () = cancel.cancelled() => {}
            () = self.serve(
                &mut inbound_rx,
                &mut connected_rx,
                &mut push_events_rx,
                &mut peer_events_rx,
            ) => {}
        }
        self.publish_gateway_status("offline");
        self.outbox.get_mut().flush_now(&self.client);
    }

    /// One step per event; after each, what it decided is handed to the MQTT client,
    /// waiting for room (back-pressure: meanwhile no request is read).
    async fn serve(
        &mut self,
        inbound_rx: &mut mpsc::Receiver<Inbound>,
        connected_rx: &mut watch::Receiver<u64>,
        push_events_rx: &mut mpsc::Receiver<PushEvent>,
        peer_events_rx: &mut mpsc::Receiver<PeerEvent>,
    ) {
        let mut events = self.hub.events();
        let (_, unused) = mpsc::channel(1);
        let mut deferred_rx = self.deferred_rx.take().unwrap_or(unused);
        let mut heartbeat = tokio::time::interval(self.ctx.mqtt.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = self.demand.poll_timeout();
            tokio::select! {
                inbound = inbound_rx.recv() => match inbound {
                    Some(inbound) => self.handle_inbound(&inbound),
                    None => return,
                },
                event = events.recv() => match event {
                    Ok(event) => self.handle_hub_event(event),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        warn!(missed, "control fell behind hub events; resynchronising");
                        self.resync_viewers();
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                () = sleep_until_opt(wake.map(Instant::from_std)) => {
                    let mut actions = Vec::new();
                    self.demand.poll(Instant::now().into_std(), &mut actions);
                    self.perform(actions);
                    self.rtmp_prune();
                    self.record_prune();
                    // a flood's stream parameters are gone once its devices were stopped
                    if self.pull_params.capacity() > 4 * self.pull_params.len() + 1024 {
                        self.pull_params.shrink_to_fit();
                    }
                }
                Some(event) = push_events_rx.recv() => self.handle_push_event(event),
                Some(event) = peer_events_rx.recv() => self.handle_peer_event(event),
                Some(deferred) = deferred_rx.recv() => self.handle_deferred_offer(deferred),
                _ = heartbeat.tick() => self.publish_heartbeat(),
                changed = connected_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // a new session may have lost the retained state: publish it all again
                    self.statuses.clear();
                    self.announce();
                    // Commands queued while the broker was away may be lost with the
                    // session: send again those still in force (on a reconnect; what was
                    // queued before the first connect is still in the client's queue),
                    // each a bounded number of times.
                    if *connected_rx.borrow_and_update() > 1 {
                        let mut actions = Vec::new();
                        self.demand.reconnected(Instant::now().into_std(), &mut actions);
                        self.perform(actions);
                    }
                }
            }
            let mut outbox = self.outbox.take();
            if !outbox.flush(&self.client).await {
                return;
            }
        }
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
                     PLAYBACK_CTRL, DEVPUSH, HEART, RTMP, WEBRTC or RECORD"
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
            Mode::Rtmp => self.rtmp_request(&device, &request),
            Mode::WebRtc => self.webrtc_request(&device, &request),
            Mode::Record => self.record_request(&device, &request),
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
            let (state, actions) = match self.want(&key, &requester, &seqid, request) {
                Ok(wanted) => wanted,
                Err(error) => return self.reject(error),
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

    /// `requester` wants `key` (SUBSCRIBE, PLAYBACK, RTMP): the request's pull fields are
    /// kept for the device command and the demand counts it. Returns the state for the
    /// reply and the actions to perform after replying.
    fn want(
        &mut self,
        key: &StreamKey,
        requester: &RequesterId,
        seqid: &str,
        request: &Request,
    ) -> Result<(&'static str, Vec<Action>), RequestError> {
        let params = match key.kind {
            StreamKind::Live => live_params(request).map(PullParams::Live),
            StreamKind::Playback => playback_params(request).map(PullParams::Playback),
        };
        let params = params.map_err(|(code, message)| RequestError {
            code,
            message,
            seqid: Some(seqid.to_owned()),
        })?;
        self.hub.expect_tracks(key, params.tracks());
        self.pull_params.insert(key.clone(), params);
        let mut actions = Vec::new();
        let outcome = self.demand.request(
            key,
            requester.clone(),
            Some(seqid.to_owned()),
            true,
            Instant::now().into_std(),
            &mut actions,
        );
        let state = match outcome {
            RequestOutcome::Live => "live",
            RequestOutcome::Pulling => "pulling",
            RequestOutcome::Waiting => "waiting",
        };
        Ok((state, actions))
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
            self.rtmp_release(&key, &requester);
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
                // recorded before its status says whether it is
                self.record_stream_up(&key);
                self.publish_stream_status(&key, true);
                self.rtmp_stream_up(&key);
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
                    self.hub.expect_tracks(&key, None);
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

    fn seqid_of(&self, request: &Request) -> String {
        request.seqid.clone().unwrap_or_else(|| self.next_seqid())
    }

    fn next_seqid(&self) -> String {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}-{n}", self.ctx.mqtt.gateway_id)
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
