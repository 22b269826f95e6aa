//! What the control task publishes: replies, device commands, retained stream and gateway
//! status, heartbeats.

use serde::Serialize;
use tracing::{info, warn};

use super::Control;
use crate::control::messages::{DeviceCommand, ErrorCode, PlayUrls, Reply, RequestError, shorten};
use crate::hub::StreamSnapshot;
use crate::media::{Channel, DeviceId, StreamKey, StreamKind};

/// Gateway status, retained on `status/gateway/{id}`.
#[derive(Debug, Serialize)]
pub(crate) struct GatewayStatus<'a> {
    pub(crate) gateway_id: &'a str,
    pub(crate) status: &'a str,
}

#[derive(Debug, Serialize)]
pub(super) struct Heartbeat<'a> {
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
pub(super) struct StreamStatus {
    device: String,
    channel: u8,
    kind: StreamKind,
    live: bool,
    video_codec: Option<crate::media::Codec>,
    audio_codec: Option<crate::media::Codec>,
    width: Option<u32>,
    height: Option<u32>,
    urls: PlayUrls,
    /// Whether the stream is being recorded (`record.auto` or a RECORD request).
    recording: bool,
    /// The RTMP push of this stream, while one runs or after it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    rtmp: Option<super::rtmp::PushStatus>,
}

impl Control {
    pub(super) fn reject(&mut self, error: RequestError) {
        self.note_outcome(match error.code {
            ErrorCode::NotSupported | ErrorCode::NoCommonCodec | ErrorCode::TooManyPeers => {
                "refuse"
            }
            _ => "error",
        });
        let Some(seqid) = &error.seqid else {
            warn!(code = ?error.code, "{} (no seqid to reply to)", error.message);
            return;
        };
        // a refusal is the gateway declining (by configuration or capacity), not a fault
        let mode = match error.code {
            ErrorCode::NotSupported | ErrorCode::NoCommonCodec | ErrorCode::TooManyPeers => {
                "REFUSE"
            }
            _ => "ERROR",
        };
        info!(seqid = %shorten(seqid), code = ?error.code, "{}", error.message);
        let reply = Reply::error(seqid, mode, error.code, error.message.clone());
        self.outbox
            .push_json(&self.topics.reply(seqid, mode), &reply, false);
    }

    pub(super) fn reply_ok(
        &mut self,
        seqid: &str,
        key: &StreamKey,
        state: Option<&str>,
        lease_secs: Option<u64>,
    ) {
        self.reply_ok_with(seqid, key, state, lease_secs, None);
    }

    /// An OK reply, with the RTMP part for a reply to RTMP.
    pub(super) fn reply_ok_with(
        &mut self,
        seqid: &str,
        key: &StreamKey,
        state: Option<&str>,
        lease_secs: Option<u64>,
        rtmp: Option<crate::control::messages::RtmpReply>,
    ) {
        self.note_outcome("ok");
        let reply = Reply {
            seqid: seqid.to_owned(),
            mode: "OK".to_owned(),
            device: Some(key.device.to_string()),
            channel: Some(key.channel.0),
            kind: Some(key.kind),
            state: state.map(str::to_owned),
            urls: Some(self.signed_urls(key)),
            lease_secs,
            rtmp,
            record: None,
            code: None,
            message: None,
        };
        self.outbox
            .push_json(&self.topics.reply(seqid, "OK"), &reply, false);
    }

    /// The play URLs of `key` for a reply: signed for `http.play_ttl` when plays need a
    /// signature.
    pub(super) fn signed_urls(&self, key: &StreamKey) -> PlayUrls {
        let PlayUrls { flv } = self.urls(key);
        PlayUrls {
            flv: self.ctx.plays.sign(&flv),
        }
    }

    /// The play URLs of `key`, unsigned: for retained status (a signature there would
    /// outlive its expiry).
    pub(super) fn urls(&self, key: &StreamKey) -> PlayUrls {
        PlayUrls {
            flv: format!(
                "{}://{}:{}/{}/{}.flv",
                self.ctx.http_scheme,
                self.ctx.public_host,
                self.ctx.http_port,
                key.kind,
                key.name()
            ),
        }
    }

    pub(super) fn send_device(&mut self, command: &DeviceCommand) {
        let device = match command {
            DeviceCommand::ReqPull { device, .. }
            | DeviceCommand::Stop { device, .. }
            | DeviceCommand::Playback { device, .. }
            | DeviceCommand::PlaybackCtrl { device, .. } => device,
        };
        self.outbox
            .push_json(&self.topics.device(device, command.mode()), command, false);
    }

    pub(super) fn publish_stream_status(&mut self, key: &StreamKey, live: bool) {
        self.publish_status(key, live, self.hub.snapshot(key).as_ref());
    }

    /// The retained status of `key`, with codecs and picture size from `snapshot`.
    pub(super) fn publish_status(
        &mut self,
        key: &StreamKey,
        live: bool,
        snapshot: Option<&StreamSnapshot>,
    ) {
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
            recording: live && self.record.is_recording(key),
            rtmp: self.rtmp.status(key),
        };
        let payload = match serde_json::to_vec(&status) {
            Ok(payload) => payload,
            Err(error) => return warn!(%error, stream = %key, "could not encode a status"),
        };
        // once per state: a stream start brings up to four events with the same picture
        if self.statuses.get(key) == Some(&payload) {
            return;
        }
        let topic = self.topics.stream_status(key);
        self.outbox.push(&topic, payload.clone(), true);
        if live {
            self.statuses.insert(key.clone(), payload);
        } else {
            self.statuses.remove(key);
        }
    }

    /// The retained `online`/`offline` of the gateway.
    pub(super) fn publish_gateway_status(&mut self, status: &str) {
        self.outbox.push_json(
            &self.topics.gateway_status(&self.ctx.mqtt.gateway_id),
            &GatewayStatus {
                gateway_id: &self.ctx.mqtt.gateway_id,
                status,
            },
            true,
        );
    }

    /// On (re)connect: online status and the state of every live stream.
    pub(super) fn announce(&mut self) {
        self.publish_gateway_status("online");
        for (key, snapshot) in self.live_streams() {
            self.publish_status(&key, true, Some(&snapshot));
        }
    }

    /// Every live stream with its key and snapshot (one pass over the hub).
    pub(super) fn live_streams(&self) -> Vec<(StreamKey, StreamSnapshot)> {
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

    pub(super) fn publish_heartbeat(&mut self) {
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
        self.outbox.push_json(
            &self.topics.gateway_heart(&self.ctx.mqtt.gateway_id),
            &heart,
            false,
        );
    }
}
