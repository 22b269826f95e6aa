//! The control task: owns the demand state, turns requests and hub events into device
//! commands, replies and status messages. One task, one owner; MQTT I/O is in `mqtt.rs`.

use std::collections::{HashMap, HashSet};

use rumqttc::AsyncClient;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};

use super::ControlContext;
use super::command::{Command, PlaybackCtrl, Request, Wanted};
use super::demand::{Action, Demand, RequestOutcome, RequesterId};
use super::messages::{DeviceCommand, ErrorCode, Fields, Mode, Reply, RequestError};
use super::mqtt::Inbound;
use super::outbox::Outbox;
use super::params::{LiveParams, PlaybackControl, PullParams, Speed};
use super::topics::Topics;
use crate::hub::{Hub, HubEvent};
use crate::media::{DeviceId, StreamKey, StreamKind};
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

/// Most cold pulls timed at once (for the cold-start histogram); past it new ones go
/// untimed.
const MAX_COLD_PULLS: usize = 100_000;

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
    /// The last seqid the gateway made up (device commands, requests without one).
    sequence: u64,
    rtmp: RtmpControl,
    /// Requested recordings.
    record: RecordControl,
    /// The WebRTC side and its offers waiting for relays (`None`: `webrtc.enabled = false`).
    webrtc: Option<webrtc::WebRtcControl>,
    /// What the current step decided to publish; flushed after it with back-pressure.
    outbox: Outbox,
    /// The last retained status body per stream, so each state is published once.
    statuses: HashMap<StreamKey, Vec<u8>>,
    /// Where the control task's own helpers run (tracked: waited for at shutdown).
    tasks: tokio_util::task::TaskTracker,
    /// What the first reply of the request being handled said (`ok`, `error`,
    /// `refuse`), for the request counter.
    step_outcome: Option<&'static str>,
    /// When the first REQPULL of each cold stream was sent, until its first key frame.
    cold_pulls: HashMap<StreamKey, Instant>,
}

impl Control {
    pub(crate) fn new(
        ctx: ControlContext,
        hub: Hub,
        client: AsyncClient,
        rtmp: RtmpControl,
        webrtc: Option<WebRtc>,
        record: RecordControl,
        tasks: tokio_util::task::TaskTracker,
    ) -> Control {
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
            sequence: 0,
            rtmp,
            record,
            webrtc: webrtc.map(webrtc::WebRtcControl::new),
            outbox: Outbox::default(),
            statuses: HashMap::new(),
            tasks,
            step_outcome: None,
            cold_pulls: HashMap::new(),
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
        self.outbox.flush_now(&self.client);
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
        let mut deferred_rx = webrtc::deferred_offers(self.webrtc.as_mut());
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
            self.ctx.metrics.set_demand_streams(self.demand.followed());
            let mut outbox = std::mem::take(&mut self.outbox);
            if !outbox.flush(&self.client).await {
                return;
            }
        }
    }

    /// Handles a request and counts it by mode and the outcome of its first reply.
    fn handle_inbound(&mut self, inbound: &Inbound) {
        let mode = self
            .topics
            .parse_request(&inbound.topic)
            .map(|(_, mode)| Mode::parse(mode).map_or("unknown", Mode::as_str));
        self.step_outcome = None;
        self.handle_request(inbound);
        if let Some(mode) = mode {
            let outcome = self.step_outcome.take().unwrap_or("none");
            self.ctx.metrics.count_request(mode, outcome);
        }
    }

    /// Notes what the first reply of the request being handled said.
    pub(super) fn note_outcome(&mut self, outcome: &'static str) {
        self.step_outcome.get_or_insert(outcome);
    }

    #[instrument(name = "command", skip_all, fields(topic = %inbound.topic, seqid))]
    fn handle_request(&mut self, inbound: &Inbound) {
        let Some((device, mode)) = self.topics.parse_request(&inbound.topic) else {
            debug!("ignoring a message outside the request topics");
            return;
        };
        let fields = match Fields::parse(&inbound.payload) {
            Ok(fields) => fields,
            Err(error) => return self.reject(error),
        };
        tracing::Span::current().record("seqid", fields.seqid.as_deref().unwrap_or(""));
        let device = match DeviceId::parse(device) {
            Ok(device) => device,
            Err(error) => {
                return self.reject(RequestError {
                    code: ErrorCode::InvalidDevice,
                    message: error.to_string(),
                    seqid: fields.seqid,
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
                seqid: fields.seqid,
            });
        };
        debug!(%device, ?mode, "request");
        let request = match Request::new(mode, &device, fields) {
            Ok(request) => request,
            Err(error) => return self.reject(error),
        };
        if request.command == Command::Heart {
            if self.devices_seen.len() < MAX_DEVICES_SEEN || self.devices_seen.contains_key(&device)
            {
                self.devices_seen.insert(device, Instant::now());
            }
            return;
        }
        let seqid = self.seqid_of(&request);
        let client = request.client_id.unwrap_or_else(|| seqid.clone());
        let requester = RequesterId::Client(client.clone());
        match request.command {
            Command::Subscribe(wanted) => self.subscribe(wanted, &requester, &seqid),
            Command::Unsubscribe(key) => self.unsubscribe(&key, &requester, seqid),
            Command::PlaybackCtrl(ctrl) => self.playback_ctrl(ctrl, &seqid),
            Command::DevPush(key) => self.reply_ok(&seqid, &key, None, None),
            Command::Heart => {}
            Command::Rtmp { wanted, url } => self.rtmp_request(wanted, url, &requester, &seqid),
            Command::WebRtc(offer) => self.webrtc_request(offer, client, seqid),
            Command::Record(action) => self.record_request(action, &requester, &seqid),
        }
    }

    fn subscribe(&mut self, wanted: Vec<Wanted>, requester: &RequesterId, seqid: &str) {
        for wanted in wanted {
            let key = wanted.key.clone();
            let (state, actions) = self.want(wanted, requester, seqid);
            info!(stream = %key, requester = ?requester, state, "subscribed");
            let lease = Some(self.ctx.demand.lease.as_secs());
            self.reply_ok(seqid, &key, Some(state), lease);
            self.perform(actions);
        }
    }

    /// `requester` wants a stream (SUBSCRIBE, PLAYBACK, RTMP, WEBRTC): its pull fields are
    /// kept for the device command and the demand counts it. Returns the state for the
    /// reply and the actions to perform after replying.
    fn want(
        &mut self,
        wanted: Wanted,
        requester: &RequesterId,
        seqid: &str,
    ) -> (&'static str, Vec<Action>) {
        let Wanted { key, pull } = wanted;
        self.hub.expect_tracks(&key, pull.tracks());
        self.pull_params.insert(key.clone(), pull);
        let mut actions = Vec::new();
        let outcome = self.demand.request(
            &key,
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
        (state, actions)
    }

    fn unsubscribe(&mut self, key: &StreamKey, requester: &RequesterId, seqid: String) {
        if self
            .demand
            .release(key, requester, Instant::now().into_std())
        {
            info!(stream = %key, requester = ?requester, "unsubscribed");
            self.rtmp_release(key, requester);
            self.reply_ok(&seqid, key, None, None);
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

    fn playback_ctrl(&mut self, ctrl: PlaybackCtrl, seqid: &str) {
        let PlaybackCtrl {
            key,
            control,
            speed,
            seek_time,
        } = ctrl;
        self.send_device(&DeviceCommand::PlaybackCtrl {
            seqid: seqid.to_owned(),
            device: key.device.to_string(),
            channel: key.channel.0,
            control: control.into(),
            speed: speed.into(),
            seek_time,
        });
        self.reply_ok(seqid, &key, None, None);
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
                self.cold_pulls.remove(&key);
                self.demand.stream_down(&key, now, &mut actions);
                self.publish_stream_status(&key, false);
            }
            HubEvent::MediaChanged { key, info } => {
                // the video codec is known from the first key frame on
                if info.video.is_some() {
                    if let Some(asked) = self.cold_pulls.remove(&key) {
                        let seconds = asked.elapsed().as_secs_f64();
                        self.ctx.metrics.observe_cold_start(seconds);
                    }
                }
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
                        self.ctx.metrics.count_reqpull();
                        if self.cold_pulls.len() < MAX_COLD_PULLS && !self.hub.is_live(&key) {
                            self.cold_pulls.entry(key).or_insert_with(Instant::now);
                        }
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
                            control: PlaybackControl::End.into(),
                            speed: Speed::None.into(),
                            seek_time: "000000000000".to_owned(),
                        },
                    };
                    self.pull_params.remove(&key);
                    self.cold_pulls.remove(&key);
                    self.hub.expect_tracks(&key, None);
                    self.ctx.metrics.count_stop();
                    self.send_device(&command);
                }
                Action::Failed {
                    key,
                    requesters,
                    attempts,
                } => {
                    warn!(stream = %key, attempts, "device did not connect");
                    self.cold_pulls.remove(&key);
                    self.ctx.metrics.count_pull_failed();
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
                        let topic = self.topics.reply(&seqid, "ERROR");
                        self.outbox.push_json(&topic, &reply, false);
                    }
                }
            }
        }
    }

    /// The command that makes the device push `key`: REQPULL for live, PLAYBACK for a
    /// playback (`None` without the fields of a playback request: never a REQPULL aimed at
    /// the playback port).
    fn pull_command(&mut self, key: &StreamKey) -> Option<DeviceCommand> {
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
                    media_type: p.media_type.into(),
                    stream_type: p.stream_type.into(),
                    storage_type: p.storage_type.into(),
                    playback_mode: p.playback_mode.into(),
                    speed: p.speed.into(),
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
                    data_type: live.data_type.into(),
                    stream_type: live.stream_type.into(),
                })
            }
        }
    }

    fn seqid_of(&mut self, request: &Request) -> String {
        match &request.seqid {
            Some(seqid) => seqid.clone(),
            None => self.next_seqid(),
        }
    }

    fn next_seqid(&mut self) -> String {
        self.sequence += 1;
        format!("{}-{}", self.ctx.mqtt.gateway_id, self.sequence)
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
