//! Demand counting: who wants which stream, and when to tell the device to push or stop.
//!
//! Sans-IO: inputs are requests, releases, stream up/down and `now`; outputs are
//! [`Action`]s the control task performs (REQPULL, STOP, failure replies). Every requester
//! holds a lease; the device gets one pull per stream however many ask, and one stop after
//! the last requester leaves and the linger time passes (a new request inside it cancels the
//! stop). A pull that never arrives is retried a bounded number of times, then fails.
//! Streams a device pushes without being asked are never stopped from here; if one goes
//! down while someone wants it, the device is asked for it. A stop is remembered until the
//! stream goes down, so it can be repeated after a reconnect to the broker.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::media::StreamKey;

/// Entries a map may hold unused before it is shrunk.
const SHRINK_SLACK: usize = 1024;

/// Tuning, from `[control]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemandSettings {
    /// Wait after the last requester leaves before stopping the device.
    pub stop_linger: Duration,
    /// How long a requester's subscription lasts without renewal.
    pub lease: Duration,
    /// How long to wait for the device after a pull before asking again.
    pub pull_timeout: Duration,
    /// Pulls sent before giving up.
    pub pull_attempts: u32,
}

/// Who asked: an MQTT client (`client_id`), or a viewer attached to the hub.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RequesterId {
    /// A requester identified by its `client_id` (or its `seqid` when it has none).
    Client(String),
    /// The hub's readers of the stream (HTTP-FLV viewers and other outputs), as one.
    Viewers,
}

/// Something the control task must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ask the device to connect and push (REQPULL / PLAYBACK). `attempt` counts from 1.
    Pull {
        /// The stream.
        key: StreamKey,
        /// Which try this is.
        attempt: u32,
    },
    /// Tell the device to stop pushing (STOP / PLAYBACK_CTRL end).
    Stop {
        /// The stream.
        key: StreamKey,
    },
    /// The stream never arrived: tell these requesters (by the seqid of their request).
    Failed {
        /// The stream.
        key: StreamKey,
        /// `(requester, seqid)` of everyone who was waiting.
        requesters: Vec<(RequesterId, Option<String>)>,
        /// Pulls sent.
        attempts: u32,
    },
}

/// What a request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    /// The stream is live now.
    Live,
    /// The device has been asked (now or earlier) and is expected.
    Pulling,
    /// The requester may not make the device push (a viewer of a playback nobody asked
    /// for): it waits for the device to push on its own or for a requester that may.
    Waiting,
}

#[derive(Debug)]
struct Lease {
    expires: Option<Instant>,
    seqid: Option<String>,
    /// This requester may make the device push (false: it only waits).
    may_pull: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nobody asked the device (it may still push on its own).
    Idle,
    /// Asked; waiting for the stream.
    Pulling { attempt: u32, retry_at: Instant },
    /// Asked and live.
    Live,
    /// Asked, nobody wants it any more: stop at `stop_at` unless someone asks.
    Lingering { stop_at: Instant },
    /// Told to stop (`sent` times), still pushing: the stop is repeated after a reconnect
    /// to the broker (a command queued while the broker was away may have been lost), up
    /// to `pull_attempts` times in all.
    Stopping { sent: u32 },
}

#[derive(Debug)]
struct Entry {
    requesters: HashMap<RequesterId, Lease>,
    phase: Phase,
    live: bool,
    /// The earliest deadline of this entry in the timer heap, if any.
    scheduled: Option<Instant>,
}

/// The demand state machine for all streams.
#[derive(Debug)]
pub struct Demand {
    settings: DemandSettings,
    entries: HashMap<StreamKey, Entry>,
    /// When each entry next has something due (earliest first). An entry's deadlines may
    /// move later without its heap item moving: such an item fires early and is
    /// rescheduled. So finding the next wake-up and what is due costs a heap operation,
    /// not a pass over every stream (a flood of 20,000 requests made that quadratic).
    timers: BinaryHeap<Reverse<(Instant, StreamKey)>>,
}

impl Demand {
    /// Empty state.
    pub fn new(settings: DemandSettings) -> Demand {
        Demand {
            settings,
            entries: HashMap::new(),
            timers: BinaryHeap::new(),
        }
    }

    /// A requester wants `key` (or renews its lease). Viewers hold no lease (their
    /// presence is tracked otherwise). A requester that may not pull (`may_pull` false)
    /// keeps the stream wanted but never makes the device push by itself.
    pub fn request(
        &mut self,
        key: &StreamKey,
        requester: RequesterId,
        seqid: Option<String>,
        may_pull: bool,
        now: Instant,
        actions: &mut Vec<Action>,
    ) -> RequestOutcome {
        let expires = match requester {
            RequesterId::Viewers => None,
            RequesterId::Client(_) => Some(now + self.settings.lease),
        };
        let timeout = self.settings.pull_timeout;
        let entry = self.entry(key);
        entry.requesters.insert(
            requester,
            Lease {
                expires,
                seqid,
                may_pull,
            },
        );
        let outcome = match entry.phase {
            Phase::Idle if entry.live => RequestOutcome::Live,
            Phase::Idle | Phase::Stopping { .. } if !entry.live && !entry.may_pull() => {
                RequestOutcome::Waiting
            }
            Phase::Pulling { .. } => RequestOutcome::Pulling,
            Phase::Live => RequestOutcome::Live,
            // Lingering: asked earlier, so asking again is legitimate whoever requests.
            Phase::Stopping { .. } | Phase::Lingering { .. } if entry.live => {
                entry.phase = Phase::Live;
                RequestOutcome::Live
            }
            Phase::Idle | Phase::Stopping { .. } | Phase::Lingering { .. } => {
                entry.start_pulling(key, now + timeout, actions);
                RequestOutcome::Pulling
            }
        };
        self.schedule(key);
        outcome
    }

    /// A requester no longer wants `key`. True if it was a requester.
    pub fn release(&mut self, key: &StreamKey, requester: &RequesterId, now: Instant) -> bool {
        let linger = self.settings.stop_linger;
        let Some(entry) = self.entries.get_mut(key) else {
            return false;
        };
        let was = entry.requesters.remove(requester).is_some();
        if entry.requesters.is_empty() {
            entry.phase = match entry.phase {
                Phase::Pulling { .. } | Phase::Live => Phase::Lingering {
                    stop_at: now + linger,
                },
                other => other,
            };
        }
        self.schedule(key);
        self.forget_if_unused(key);
        was
    }

    /// The stream came up (the device connected, asked or not).
    pub fn stream_up(&mut self, key: &StreamKey) {
        let entry = self.entry(key);
        entry.live = true;
        if let Phase::Pulling { .. } = entry.phase {
            entry.phase = Phase::Live;
        }
    }

    /// The stream went down. If requesters still want it (asked for, or pushed by the
    /// device on its own), the device is asked again.
    pub fn stream_down(&mut self, key: &StreamKey, now: Instant, actions: &mut Vec<Action>) {
        let timeout = self.settings.pull_timeout;
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        entry.live = false;
        match entry.phase {
            Phase::Live if !entry.requesters.is_empty() => {
                entry.start_pulling(key, now + timeout, actions);
            }
            Phase::Idle if entry.may_pull() => {
                entry.start_pulling(key, now + timeout, actions);
            }
            // gone on its own while lingering or stopping: nothing left to stop
            Phase::Lingering { .. } | Phase::Live | Phase::Stopping { .. } => {
                entry.phase = Phase::Idle;
            }
            Phase::Idle | Phase::Pulling { .. } => {}
        }
        self.schedule(key);
        self.forget_if_unused(key);
    }

    /// The connection to the broker was re-established, possibly without the session that
    /// held queued commands: the commands still in force are due again. A pull still
    /// waiting for its stream is sent again as its next attempt (so however often the
    /// connection drops, a device gets at most `pull_attempts` pulls, spaced by the growing
    /// timeout); a stop of a stream that still pushes, up to `pull_attempts` stops in all.
    pub fn reconnected(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let settings = self.settings;
        let mut retried = Vec::new();
        for (key, entry) in &mut self.entries {
            match entry.phase {
                Phase::Pulling { attempt, .. } if attempt < settings.pull_attempts => {
                    let next = attempt + 1;
                    entry.phase = Phase::Pulling {
                        attempt: next,
                        retry_at: now + settings.pull_timeout * next,
                    };
                    actions.push(Action::Pull {
                        key: key.clone(),
                        attempt: next,
                    });
                    retried.push(key.clone());
                }
                Phase::Stopping { sent } if sent < settings.pull_attempts => {
                    entry.phase = Phase::Stopping { sent: sent + 1 };
                    actions.push(Action::Stop { key: key.clone() });
                }
                Phase::Idle
                | Phase::Live
                | Phase::Lingering { .. }
                | Phase::Pulling { .. }
                | Phase::Stopping { .. } => {}
            }
        }
        for key in retried {
            self.schedule(&key);
        }
    }

    /// Performs what is due at `now`: lease expiry, stops after linger, retries, failures.
    /// A failure also stops the device, so one that connects late does not stream for
    /// nobody.
    pub fn poll(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let settings = self.settings;
        let mut due = Vec::new();
        let mut seen = HashSet::new();
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, key))) = self.timers.pop() else {
                break;
            };
            if let Some(entry) = self.entries.get_mut(&key) {
                if entry.scheduled == Some(at) {
                    entry.scheduled = None;
                }
                if seen.insert(key.clone()) {
                    due.push(key);
                }
            }
        }
        for key in due {
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            let before = entry.requesters.len();
            entry
                .requesters
                .retain(|_, lease| lease.expires.is_none_or(|t| t > now));
            if before > 0
                && entry.requesters.is_empty()
                && matches!(entry.phase, Phase::Pulling { .. } | Phase::Live)
            {
                entry.phase = Phase::Lingering {
                    stop_at: now + settings.stop_linger,
                };
            }
            match entry.phase {
                Phase::Pulling { attempt, retry_at } if retry_at <= now => {
                    if attempt < settings.pull_attempts {
                        let next = attempt + 1;
                        let backoff = settings.pull_timeout * next;
                        entry.phase = Phase::Pulling {
                            attempt: next,
                            retry_at: now + backoff,
                        };
                        actions.push(Action::Pull {
                            key: key.clone(),
                            attempt: next,
                        });
                    } else {
                        let requesters = entry
                            .requesters
                            .drain()
                            .map(|(id, lease)| (id, lease.seqid))
                            .collect();
                        entry.phase = Phase::Idle;
                        actions.push(Action::Failed {
                            key: key.clone(),
                            requesters,
                            attempts: attempt,
                        });
                        actions.push(Action::Stop { key: key.clone() });
                    }
                }
                Phase::Lingering { stop_at } if stop_at <= now => {
                    entry.phase = if entry.live {
                        Phase::Stopping { sent: 1 }
                    } else {
                        Phase::Idle
                    };
                    actions.push(Action::Stop { key: key.clone() });
                }
                _ => {}
            }
            self.schedule(&key);
            self.forget_if_unused(&key);
        }
        self.shrink();
    }

    /// Gives back the memory of a flood once it has passed (maps keep their largest size).
    fn shrink(&mut self) {
        if self.entries.capacity() > 4 * self.entries.len() + SHRINK_SLACK {
            self.entries.shrink_to_fit();
        }
        if self.timers.capacity() > 4 * self.timers.len() + SHRINK_SLACK {
            self.timers.shrink_to_fit();
        }
    }

    /// When `poll` next has something to do (possibly earlier: a deadline that moved later
    /// wakes `poll` once for nothing). Drops heap items of forgotten streams.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, key))) = self.timers.peek() {
            let at = *at;
            match self.entries.get_mut(key) {
                Some(entry) if entry.next_deadline().is_some() => return Some(at),
                Some(entry) if entry.scheduled == Some(at) => entry.scheduled = None,
                Some(_) | None => {}
            }
            self.timers.pop();
        }
        None
    }

    /// Makes `requester`'s lease on `key` last until `until` (a RECORD request holds the
    /// stream for its `duration`, not for `control.lease`). False if it holds none.
    pub fn lease_until(
        &mut self,
        key: &StreamKey,
        requester: &RequesterId,
        until: Instant,
    ) -> bool {
        let Some(lease) = self
            .entries
            .get_mut(key)
            .and_then(|e| e.requesters.get_mut(requester))
        else {
            return false;
        };
        lease.expires = Some(until);
        if let Some(entry) = self.entries.get_mut(key) {
            // the item in the heap may be later than the new deadline: schedule afresh
            entry.scheduled = None;
        }
        self.schedule(key);
        true
    }

    /// Requesters of `key` (for status and tests).
    pub fn requesters(&self, key: &StreamKey) -> usize {
        self.entries.get(key).map_or(0, |e| e.requesters.len())
    }

    /// Whether `requester` holds a lease on `key` (it was not released, did not expire and
    /// was not failed).
    pub fn holds(&self, key: &StreamKey, requester: &RequesterId) -> bool {
        self.entries
            .get(key)
            .is_some_and(|e| e.requesters.contains_key(requester))
    }

    /// Streams known to be up.
    pub fn live(&self) -> impl Iterator<Item = &StreamKey> {
        self.entries.iter().filter(|(_, e)| e.live).map(|(k, _)| k)
    }

    /// Streams this state follows (asked for, live, lingering or stopping).
    pub fn followed(&self) -> usize {
        self.entries.len()
    }

    /// Streams somebody wants.
    pub fn wanted(&self) -> impl Iterator<Item = &StreamKey> {
        self.entries
            .iter()
            .filter(|(_, e)| !e.requesters.is_empty())
            .map(|(k, _)| k)
    }

    fn entry(&mut self, key: &StreamKey) -> &mut Entry {
        self.entries.entry(key.clone()).or_insert_with(|| Entry {
            requesters: HashMap::new(),
            phase: Phase::Idle,
            live: false,
            scheduled: None,
        })
    }

    /// Puts `key`'s next deadline in the timer heap unless an earlier item is there.
    fn schedule(&mut self, key: &StreamKey) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        let Some(next) = entry.next_deadline() else {
            return;
        };
        if entry.scheduled.is_none_or(|at| next < at) {
            entry.scheduled = Some(next);
            self.timers.push(Reverse((next, key.clone())));
        }
    }

    fn forget_if_unused(&mut self, key: &StreamKey) {
        if self
            .entries
            .get(key)
            .is_some_and(|e| e.requesters.is_empty() && e.phase == Phase::Idle && !e.live)
        {
            self.entries.remove(key);
        }
    }
}

impl Entry {
    /// The earliest lease expiry, retry or stop of this stream.
    fn next_deadline(&self) -> Option<Instant> {
        let phase = match self.phase {
            Phase::Pulling { retry_at, .. } => Some(retry_at),
            Phase::Lingering { stop_at } => Some(stop_at),
            Phase::Idle | Phase::Live | Phase::Stopping { .. } => None,
        };
        self.requesters
            .values()
            .filter_map(|lease| lease.expires)
            .chain(phase)
            .min()
    }

    /// True if some requester may make the device push.
    fn may_pull(&self) -> bool {
        self.requesters.values().any(|lease| lease.may_pull)
    }

    /// Sends the first pull and waits for the stream until `retry_at`.
    fn start_pulling(&mut self, key: &StreamKey, retry_at: Instant, actions: &mut Vec<Action>) {
        self.phase = Phase::Pulling {
            attempt: 1,
            retry_at,
        };
        actions.push(Action::Pull {
            key: key.clone(),
            attempt: 1,
        });
    }
}

#[cfg(test)]
mod tests;
