//! The member list, from the gateways' retained status topics: a member is live from its
//! `online` status until its `offline` (its own at shutdown, or the last will the broker
//! publishes when its connection dies), an emptied retained topic, or silence: a status
//! refreshed every heartbeat interval that stops for [`STALE_AFTER`] of them (a gateway
//! whose process hangs while its connection lives on).
//!
//! Sans-IO: [`Membership::handle_status`] takes a topic's payload and `now`,
//! [`Membership::handle_timeout`] expires the silent; both return what changed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Heartbeat intervals without a status after which a member is taken for gone.
pub const STALE_AFTER: u32 = 3;

/// A gateway's retained status body (`{prefix}/status/gateway/{id}`), with the cluster's
/// fields: where it is reached, its weight, its load, its version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// The gateway id (`mqtt.gateway_id`).
    pub gateway_id: String,
    /// `online` or `offline`.
    pub status: String,
    /// Host devices and viewers reach it at (`control.public_host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Live ingest port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_port: Option<u16>,
    /// Playback ingest port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playback_port: Option<u16>,
    /// HTTP port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_port: Option<u16>,
    /// `cluster.weight`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Streams live on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streams: Option<u64>,
    /// Viewers on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewers: Option<u64>,
    /// Its CPU use, as a share of its cores (0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// Its version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// A live member.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// What it said last.
    pub status: MemberStatus,
    /// When it said it.
    pub seen: Instant,
}

impl Member {
    /// Its weight (at least 1).
    pub fn weight(&self) -> u32 {
        self.status.weight.unwrap_or(1).max(1)
    }
}

/// What a status or the clock changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberEvent {
    /// A gateway came online (or back).
    Joined(String),
    /// A gateway is gone: offline, its will, an emptied topic, or silent too long.
    Left {
        /// Its id.
        id: String,
        /// Why it is taken for gone.
        reason: LeftBecause,
    },
}

/// Why a member left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeftBecause {
    /// It said `offline` (at shutdown, or its last will).
    Offline,
    /// Its retained status was removed.
    Cleared,
    /// No status for [`STALE_AFTER`] heartbeat intervals.
    Silent,
}

/// The live members, by id.
#[derive(Debug, Clone)]
pub struct Membership {
    members: BTreeMap<String, Member>,
    /// Silence after which a member is gone.
    stale: Duration,
    /// Most members kept (bounded against a flood of made-up ids on the status topics).
    max_members: usize,
}

impl Membership {
    /// An empty list; members silent for `STALE_AFTER` × `heartbeat` leave.
    pub fn new(heartbeat: Duration, max_members: usize) -> Membership {
        Membership {
            members: BTreeMap::new(),
            stale: heartbeat * STALE_AFTER,
            max_members,
        }
    }

    /// The status topic of `id` carried `payload` (empty: the retained message was
    /// cleared) at `now`. A payload that is not a status, or names another id than its
    /// topic, changes nothing (`Err` says why).
    pub fn handle_status(
        &mut self,
        id: &str,
        payload: &[u8],
        now: Instant,
    ) -> Result<Option<MemberEvent>, String> {
        if payload.is_empty() {
            return Ok(self.remove(id, LeftBecause::Cleared));
        }
        let status: MemberStatus = serde_json::from_slice(payload)
            .map_err(|error| format!("status of gateway {id:?} is not a status: {error}"))?;
        if status.gateway_id != id {
            return Err(format!(
                "status on gateway {id:?}'s topic names {:?}",
                status.gateway_id
            ));
        }
        match status.status.as_str() {
            "online" => {
                let joined = !self.members.contains_key(id);
                if joined && self.members.len() >= self.max_members {
                    return Err(format!(
                        "{} members already: gateway {id:?} not added",
                        self.max_members
                    ));
                }
                self.members
                    .insert(id.to_owned(), Member { status, seen: now });
                Ok(joined.then(|| MemberEvent::Joined(id.to_owned())))
            }
            "offline" => Ok(self.remove(id, LeftBecause::Offline)),
            other => Err(format!("gateway {id:?} has status {other:?}")),
        }
    }

    /// Members silent for too long at `now` leave; what left.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<MemberEvent> {
        let silent: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| now.saturating_duration_since(m.seen) >= self.stale)
            .map(|(id, _)| id.clone())
            .collect();
        silent
            .into_iter()
            .filter_map(|id| self.remove(&id, LeftBecause::Silent))
            .collect()
    }

    /// When the next member falls silent, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.members.values().map(|m| m.seen + self.stale).min()
    }

    /// The live members, by id.
    pub fn members(&self) -> impl Iterator<Item = (&str, &Member)> {
        self.members.iter().map(|(id, m)| (id.as_str(), m))
    }

    /// The live members' ids and weights, for [`super::owner_of`].
    pub fn weights(&self) -> impl Iterator<Item = (&str, u32)> {
        self.members.iter().map(|(id, m)| (id.as_str(), m.weight()))
    }

    /// The member `id`, if live.
    pub fn get(&self, id: &str) -> Option<&Member> {
        self.members.get(id)
    }

    fn remove(&mut self, id: &str, reason: LeftBecause) -> Option<MemberEvent> {
        self.members.remove(id).map(|_| MemberEvent::Left {
            id: id.to_owned(),
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEARTBEAT: Duration = Duration::from_secs(10);

    /// The origin of the hand-driven clock.
    #[expect(
        clippy::disallowed_methods,
        reason = "one fixed origin; the tests move time by hand"
    )]
    fn origin() -> Instant {
        Instant::now()
    }

    fn online(id: &str, weight: u32) -> Vec<u8> {
        serde_json::json!({
            "gateway_id": id, "status": "online", "host": "10.0.0.1", "live_port": 9501,
            "http_port": 9531, "weight": weight, "streams": 3,
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn members_join_on_online_and_leave_on_offline_a_cleared_topic_or_silence() {
        let t0 = origin();
        let mut list = Membership::new(HEARTBEAT, 100);
        assert_eq!(
            list.handle_status("gw-a", &online("gw-a", 1), t0),
            Ok(Some(MemberEvent::Joined("gw-a".into())))
        );
        // a refresh is no news
        assert_eq!(list.handle_status("gw-a", &online("gw-a", 2), t0), Ok(None));
        assert_eq!(list.get("gw-a").unwrap().weight(), 2);
        list.handle_status("gw-b", &online("gw-b", 1), t0).unwrap();
        list.handle_status("gw-c", &online("gw-c", 1), t0).unwrap();
        let offline = br#"{"gateway_id":"gw-a","status":"offline"}"#;
        assert_eq!(
            list.handle_status("gw-a", offline, t0),
            Ok(Some(MemberEvent::Left {
                id: "gw-a".into(),
                reason: LeftBecause::Offline
            }))
        );
        assert_eq!(
            list.handle_status("gw-b", b"", t0),
            Ok(Some(MemberEvent::Left {
                id: "gw-b".into(),
                reason: LeftBecause::Cleared
            }))
        );
        // gw-c refreshed at 20 s stays past 30 s; silent from then, it leaves at 50 s
        list.handle_status("gw-c", &online("gw-c", 1), t0 + HEARTBEAT * 2)
            .unwrap();
        assert_eq!(list.handle_timeout(t0 + HEARTBEAT * 3), []);
        assert_eq!(list.poll_timeout(), Some(t0 + HEARTBEAT * 5));
        assert_eq!(
            list.handle_timeout(t0 + HEARTBEAT * 5),
            [MemberEvent::Left {
                id: "gw-c".into(),
                reason: LeftBecause::Silent
            }]
        );
        assert_eq!(list.members().count(), 0);
        assert_eq!(list.poll_timeout(), None);
    }

    #[test]
    fn bad_statuses_change_nothing_and_say_why() {
        let t0 = origin();
        let mut list = Membership::new(HEARTBEAT, 2);
        assert!(list.handle_status("gw-a", b"{not json", t0).is_err());
        let other = list
            .handle_status("gw-a", &online("gw-b", 1), t0)
            .unwrap_err();
        assert!(other.contains("names \"gw-b\""), "{other}");
        let odd = br#"{"gateway_id":"gw-a","status":"sleeping"}"#;
        assert!(list.handle_status("gw-a", odd, t0).is_err());
        list.handle_status("gw-a", &online("gw-a", 1), t0).unwrap();
        list.handle_status("gw-b", &online("gw-b", 1), t0).unwrap();
        let full = list
            .handle_status("gw-c", &online("gw-c", 1), t0)
            .unwrap_err();
        assert!(full.contains("2 members already"), "{full}");
        assert_eq!(
            list.weights().collect::<Vec<_>>(),
            [("gw-a", 1), ("gw-b", 1)]
        );
    }

    #[test]
    fn the_plain_status_of_a_gateway_outside_a_cluster_still_reads() {
        // what a gateway without cluster fields publishes (docs/mqtt.md)
        let t0 = origin();
        let mut list = Membership::new(HEARTBEAT, 10);
        let plain = br#"{"gateway_id":"gw-1","status":"online"}"#;
        list.handle_status("gw-1", plain, t0).unwrap();
        assert_eq!(list.get("gw-1").unwrap().weight(), 1);
    }
}
