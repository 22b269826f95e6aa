//! MQTT topic names: one place builds and parses them.
//!
//! ```text
//! {prefix}/gateway/{device}/{MODE}         requests to the gateway (backends, bridge, devices)
//! {prefix}/device/{device}/{MODE}          commands to a device / its 808 platform
//! {prefix}/client/{seqid}/{MODE}           replies to a requester
//! {prefix}/status/gateway/{gateway_id}     retained online/offline (offline = last will)
//! {prefix}/status/gateway/{gateway_id}/heart   heartbeat
//! {prefix}/status/stream/{device}/{channel}[/playback]   retained stream state
//! ```

use crate::media::{StreamKey, StreamKind};

/// Topic builder for one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    /// Topics under `prefix` (default `jt1078`).
    pub fn new(prefix: &str) -> Topics {
        Topics {
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }

    /// The subscription filter for all requests.
    pub fn requests_filter(&self) -> String {
        format!("{}/gateway/+/+", self.prefix)
    }

    /// Splits a request topic into (device, mode).
    pub fn parse_request<'a>(&self, topic: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = topic
            .strip_prefix(&self.prefix)?
            .strip_prefix("/gateway/")?;
        let (device, mode) = rest.split_once('/')?;
        (!mode.contains('/')).then_some((device, mode))
    }

    /// A request topic (for clients and the bridge).
    pub fn request(&self, device: &str, mode: &str) -> String {
        format!("{}/gateway/{device}/{mode}", self.prefix)
    }

    /// A command to a device.
    pub fn device(&self, device: &str, mode: &str) -> String {
        format!("{}/device/{device}/{mode}", self.prefix)
    }

    /// The filter a device subscribes to.
    pub fn device_filter(&self, device: &str) -> String {
        format!("{}/device/{device}/#", self.prefix)
    }

    /// A reply to a requester.
    pub fn reply(&self, seqid: &str, mode: &str) -> String {
        format!("{}/client/{seqid}/{mode}", self.prefix)
    }

    /// The gateway's retained status (and last will).
    pub fn gateway_status(&self, gateway_id: &str) -> String {
        format!("{}/status/gateway/{gateway_id}", self.prefix)
    }

    /// The gateway's heartbeat.
    pub fn gateway_heart(&self, gateway_id: &str) -> String {
        format!("{}/status/gateway/{gateway_id}/heart", self.prefix)
    }

    /// A stream's retained state.
    pub fn stream_status(&self, key: &StreamKey) -> String {
        match key.kind {
            StreamKind::Live => format!(
                "{}/status/stream/{}/{}",
                self.prefix, key.device, key.channel
            ),
            StreamKind::Playback => format!(
                "{}/status/stream/{}/{}/playback",
                self.prefix, key.device, key.channel
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_topics_round_trip() {
        let t = Topics::new("jt1078");
        let topic = t.request("13800138000", "SUBSCRIBE");
        assert_eq!(topic, "jt1078/gateway/13800138000/SUBSCRIBE");
        assert_eq!(t.parse_request(&topic), Some(("13800138000", "SUBSCRIBE")));
        assert_eq!(t.parse_request("jt1078/gateway/1/2/3"), None);
        assert_eq!(t.parse_request("other/gateway/1/SUBSCRIBE"), None);
        assert_eq!(t.reply("s1", "OK"), "jt1078/client/s1/OK");
    }
}
