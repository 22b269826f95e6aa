//! Which SRS clients play which stream, as the hooks told. Sans-IO: hooks and `Instant`s
//! in, the requests to send out.
//!
//! Every SRS client is a requester of its stream on the control plane (client id
//! `{prefix}{srs client_id}`); the control plane counts them, so many viewers make one
//! REQPULL and one push, and the last leaving makes one STOP after the linger. This table
//! only remembers who is in, so that:
//! - a duplicate on_stop, or one for a client never seen, sends nothing (the control plane
//!   would answer `not_subscribed`);
//! - an on_unpublish while clients remain asks for the push again;
//! - a client whose on_stop never comes is forgotten after the lease, as the control plane
//!   forgets its subscription (a renewed on_play renews both).
//!
//! Bounded: at most `max` clients; an on_play past that is refused.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::media::StreamKey;

/// What the bridge sends the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Want {
    /// `client` wants `key` (SUBSCRIBE, or the RTMP push request); renews its lease.
    Play { client: String, key: StreamKey },
    /// `client` no longer wants `key` (UNSUBSCRIBE).
    Leave { client: String, key: StreamKey },
}

/// The table is full.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{max} SRS clients are playing already")]
pub(crate) struct Full {
    /// The bound.
    pub(crate) max: usize,
}

#[derive(Debug, Clone)]
struct Session {
    key: StreamKey,
    renewed: Instant,
    /// When SRS was last asked whether this client still plays.
    asked: Option<Instant>,
}

/// The SRS clients the bridge knows.
#[derive(Debug)]
pub(crate) struct Sessions {
    clients: HashMap<String, Session>,
    lease: Duration,
    max: usize,
}

impl Sessions {
    /// A table whose entries last `lease` without a renewed on_play.
    pub(crate) fn new(lease: Duration, max: usize) -> Sessions {
        Sessions {
            clients: HashMap::new(),
            lease,
            max,
        }
    }

    /// on_play of `client` for `key`.
    pub(crate) fn play(
        &mut self,
        client: &str,
        key: StreamKey,
        now: Instant,
        out: &mut Vec<Want>,
    ) -> Result<(), Full> {
        self.expire(now);
        let full = self.clients.len() >= self.max;
        match self.clients.get_mut(client) {
            Some(session) if session.key != key => {
                // SRS does not reuse a client id for another stream; if it did, the old one
                // is over
                out.push(Want::Leave {
                    client: client.to_owned(),
                    key: session.key.clone(),
                });
                session.key = key.clone();
                session.renewed = now;
                session.asked = None;
            }
            Some(session) => {
                session.renewed = now;
                session.asked = None;
            }
            None if full => return Err(Full { max: self.max }),
            None => {
                self.clients.insert(
                    client.to_owned(),
                    Session {
                        key: key.clone(),
                        renewed: now,
                        asked: None,
                    },
                );
            }
        }
        out.push(Want::Play {
            client: client.to_owned(),
            key,
        });
        Ok(())
    }

    /// on_stop of `client`: a `Leave` the first time, nothing after.
    pub(crate) fn stop(&mut self, client: &str, now: Instant) -> Option<Want> {
        self.expire(now);
        let session = self.clients.remove(client)?;
        Some(Want::Leave {
            client: client.to_owned(),
            key: session.key,
        })
    }

    /// on_unpublish of `key`: while clients remain, one of them asks for the push again.
    pub(crate) fn unpublished(&mut self, key: &StreamKey, now: Instant) -> Option<Want> {
        self.expire(now);
        let client = self
            .clients
            .iter()
            .filter(|(_, s)| &s.key == key)
            .map(|(client, _)| client)
            .min()?;
        Some(Want::Play {
            client: client.clone(),
            key: key.clone(),
        })
    }

    /// Clients whose lease is half gone: ask SRS whether they still play, then renew
    /// ([`Sessions::play`]) or end ([`Sessions::stop`]) them. Each is returned once per
    /// half lease (marked as asked).
    pub(crate) fn due(&mut self, now: Instant) -> Vec<(String, StreamKey)> {
        self.expire(now);
        let half = self.lease / 2;
        let mut due = Vec::new();
        for (client, session) in &mut self.clients {
            let asked = session.asked.unwrap_or(session.renewed);
            if now.saturating_duration_since(asked) >= half
                && now.saturating_duration_since(session.renewed) >= half
            {
                session.asked = Some(now);
                due.push((client.clone(), session.key.clone()));
            }
        }
        due.sort();
        due
    }

    /// When [`Sessions::due`] has something next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let half = self.lease / 2;
        self.clients
            .values()
            .map(|s| s.asked.unwrap_or(s.renewed).max(s.renewed) + half)
            .min()
    }

    /// Whether `client` plays `key`.
    pub(crate) fn holds(&self, client: &str, key: &StreamKey) -> bool {
        self.clients.get(client).is_some_and(|s| &s.key == key)
    }

    /// Clients of `key` now.
    pub(crate) fn clients_of(&self, key: &StreamKey) -> usize {
        self.clients.values().filter(|s| &s.key == key).count()
    }

    /// Clients known.
    pub(crate) fn len(&self) -> usize {
        self.clients.len()
    }

    /// Forgets clients whose lease ran out.
    pub(crate) fn expire(&mut self, now: Instant) {
        let lease = self.lease;
        self.clients
            .retain(|_, s| now.saturating_duration_since(s.renewed) < lease);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{Channel, DeviceId, StreamKind};

    fn key(channel: u8) -> StreamKey {
        StreamKey::new(
            DeviceId::parse("13800138000").unwrap(),
            Channel(channel),
            StreamKind::Live,
        )
    }

    #[test]
    fn duplicate_and_unknown_stops_send_nothing() {
        let mut s = Sessions::new(Duration::from_secs(120), 10);
        let t0 = tokio::time::Instant::now().into_std();
        let mut out = Vec::new();
        s.play("a", key(1), t0, &mut out).unwrap();
        s.play("b", key(1), t0, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(s.clients_of(&key(1)), 2);
        let leave = s.stop("a", t0).unwrap();
        assert_eq!(
            leave,
            Want::Leave {
                client: "a".into(),
                key: key(1)
            }
        );
        assert_eq!(s.stop("a", t0), None);
        assert_eq!(s.stop("never", t0), None);
        assert_eq!(s.clients_of(&key(1)), 1);
    }

    #[test]
    fn lease_forgets_a_missing_stop_and_on_play_renews() {
        let mut s = Sessions::new(Duration::from_secs(120), 10);
        let t0 = tokio::time::Instant::now().into_std();
        let mut out = Vec::new();
        s.play("a", key(1), t0, &mut out).unwrap();
        s.play("b", key(1), t0, &mut out).unwrap();
        s.play("b", key(1), t0 + Duration::from_secs(100), &mut out)
            .unwrap();
        assert_eq!(out.len(), 3, "a renewal is sent again");
        s.expire(t0 + Duration::from_secs(150));
        assert_eq!(s.len(), 1);
        assert_eq!(s.stop("a", t0 + Duration::from_secs(150)), None);
        assert!(s.stop("b", t0 + Duration::from_secs(150)).is_some());
    }

    #[test]
    fn unpublish_with_clients_left_asks_again() {
        let mut s = Sessions::new(Duration::from_secs(120), 10);
        let t0 = tokio::time::Instant::now().into_std();
        let mut out = Vec::new();
        s.play("b", key(1), t0, &mut out).unwrap();
        s.play("a", key(1), t0, &mut out).unwrap();
        assert_eq!(
            s.unpublished(&key(1), t0),
            Some(Want::Play {
                client: "a".into(),
                key: key(1)
            })
        );
        assert_eq!(s.unpublished(&key(2), t0), None);
        s.stop("a", t0);
        s.stop("b", t0);
        assert_eq!(s.unpublished(&key(1), t0), None);
    }

    #[test]
    fn clients_are_due_for_a_check_at_half_lease_once() {
        let mut s = Sessions::new(Duration::from_secs(120), 10);
        let t0 = tokio::time::Instant::now().into_std();
        let mut out = Vec::new();
        s.play("a", key(1), t0, &mut out).unwrap();
        s.play("b", key(1), t0 + Duration::from_secs(30), &mut out)
            .unwrap();
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(60)));
        assert!(s.due(t0 + Duration::from_secs(59)).is_empty());
        assert_eq!(
            s.due(t0 + Duration::from_secs(60)),
            [("a".to_owned(), key(1))]
        );
        assert!(s.due(t0 + Duration::from_secs(61)).is_empty(), "asked once");
        assert_eq!(
            s.due(t0 + Duration::from_secs(90)),
            [("b".to_owned(), key(1))]
        );
        // SRS says a still plays: renewed, due again half a lease later
        s.play("a", key(1), t0 + Duration::from_secs(62), &mut out)
            .unwrap();
        assert!(s.due(t0 + Duration::from_secs(100)).is_empty());
        assert_eq!(
            s.due(t0 + Duration::from_secs(122)),
            [("a".to_owned(), key(1))]
        );
        // b's check went unanswered: its lease runs out
        assert_eq!(s.len(), 2);
        s.expire(t0 + Duration::from_secs(151));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn the_table_is_bounded() {
        let mut s = Sessions::new(Duration::from_secs(120), 2);
        let t0 = tokio::time::Instant::now().into_std();
        let mut out = Vec::new();
        s.play("a", key(1), t0, &mut out).unwrap();
        s.play("b", key(1), t0, &mut out).unwrap();
        assert_eq!(s.play("c", key(1), t0, &mut out), Err(Full { max: 2 }));
        s.play("a", key(1), t0, &mut out).unwrap();
        s.play("a", key(2), t0, &mut out).unwrap();
        assert!(matches!(out.last(), Some(Want::Play { key: k, .. }) if *k == key(2)));
        assert!(matches!(out.get(out.len() - 2), Some(Want::Leave { key: k, .. }) if *k == key(1)));
    }
}
