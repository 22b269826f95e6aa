//! Limits on what HTTP-FLV viewers may cost: the bytes queued for slow viewers (one budget
//! for all of them), the viewers waiting for devices that are not live, and the cold pulls
//! one client address may start per minute.
//!
//! Owns only counters; it never touches a socket or the hub. The cold-pull record is
//! sans-IO (time is an argument) so its window is tested without a clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::HttpSettings;

/// The window cold pulls are counted in.
const COLD_PULL_WINDOW: Duration = Duration::from_secs(60);

/// Client addresses whose cold pulls are remembered; past it, expired entries are pruned,
/// and if none expired a new address is refused (an attacker with more addresses than
/// this is held back by `http.max_waiting`).
const COLD_PULL_CLIENTS: usize = 16_384;

/// Shared limits of every HTTP-FLV viewer (cheap to clone).
#[derive(Debug, Clone)]
pub(crate) struct ViewerLimits {
    inner: Arc<Inner>,
    /// `http.viewer_max_lag`.
    pub(crate) max_lag: Duration,
}

#[derive(Debug)]
struct Inner {
    backlog_total: usize,
    backlog_used: AtomicUsize,
    max_waiting: usize,
    waiting: AtomicUsize,
    cold_pulls: Mutex<ColdPulls>,
}

/// Why a cold pull was refused: the status and a one-line reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) status: u16,
    pub(crate) message: String,
}

/// The bytes one viewer has queued, counted against `http.viewer_backlog_total`; given
/// back on drop.
#[derive(Debug)]
pub(crate) struct BacklogHold {
    limits: ViewerLimits,
    held: usize,
}

impl BacklogHold {
    /// Counts `n` more bytes queued.
    pub(crate) fn add(&mut self, n: usize) {
        self.held += n;
        self.limits
            .inner
            .backlog_used
            .fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` queued bytes written (or given up).
    pub(crate) fn sub(&mut self, n: usize) {
        let n = n.min(self.held);
        self.held -= n;
        self.limits
            .inner
            .backlog_used
            .fetch_sub(n, Ordering::Relaxed);
    }

    /// Counts exactly `n` bytes held from now on.
    pub(crate) fn set(&mut self, n: usize) {
        if n > self.held {
            self.add(n - self.held);
        } else {
            self.sub(self.held - n);
        }
    }
}

impl Drop for BacklogHold {
    fn drop(&mut self) {
        self.sub(self.held);
    }
}

/// A viewer counted as waiting for its device; counted out on drop.
#[derive(Debug)]
pub(crate) struct WaitSlot {
    limits: ViewerLimits,
}

impl ViewerLimits {
    pub(crate) fn new(settings: &HttpSettings) -> ViewerLimits {
        ViewerLimits {
            inner: Arc::new(Inner {
                backlog_total: settings.viewer_backlog_total.get(),
                backlog_used: AtomicUsize::new(0),
                max_waiting: settings.max_waiting.get(),
                waiting: AtomicUsize::new(0),
                cold_pulls: Mutex::new(ColdPulls::new(settings.cold_pulls_per_minute.get())),
            }),
            max_lag: settings.viewer_max_lag,
        }
    }

    /// An empty share of the backlog budget, for one viewer.
    pub(crate) fn hold(&self) -> BacklogHold {
        BacklogHold {
            limits: self.clone(),
            held: 0,
        }
    }

    /// Bytes queued for all viewers now.
    pub(crate) fn backlog_used(&self) -> usize {
        self.inner.backlog_used.load(Ordering::Relaxed)
    }

    /// True once all viewers together hold more than `http.viewer_backlog_total`.
    pub(crate) fn over_budget(&self) -> bool {
        self.backlog_used() > self.inner.backlog_total
    }

    /// A place among the viewers waiting for a device, if `client` may start one more
    /// cold pull and fewer than `http.max_waiting` wait.
    pub(crate) fn start_wait(&self, client: Option<IpAddr>) -> Result<WaitSlot, Refused> {
        let max = self.inner.max_waiting;
        let taken = self
            .inner
            .waiting
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(Refused {
                status: 503,
                message: format!(
                    "too many viewers wait for devices that are not live ({max}, \
                     http.max_waiting); try again later\n"
                ),
            });
        }
        let slot = WaitSlot {
            limits: self.clone(),
        };
        if let Some(client) = client {
            let mut pulls = self
                .inner
                .cold_pulls
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            pulls.admit(client, Instant::now())?;
        }
        Ok(slot)
    }
}

impl Drop for WaitSlot {
    fn drop(&mut self) {
        self.limits.inner.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Cold pulls per client address in fixed one-minute windows.
#[derive(Debug)]
struct ColdPulls {
    per_minute: u32,
    clients: HashMap<IpAddr, (Instant, u32)>,
}

impl ColdPulls {
    fn new(per_minute: u32) -> ColdPulls {
        ColdPulls {
            per_minute,
            clients: HashMap::new(),
        }
    }

    /// Counts one cold pull of `client` at `now`, or refuses it.
    fn admit(&mut self, client: IpAddr, now: Instant) -> Result<(), Refused> {
        if !self.clients.contains_key(&client) && self.clients.len() >= COLD_PULL_CLIENTS {
            self.clients
                .retain(|_, (since, _)| now.duration_since(*since) < COLD_PULL_WINDOW);
            if self.clients.len() >= COLD_PULL_CLIENTS {
                return Err(self.refusal());
            }
        }
        let (since, count) = self.clients.entry(client).or_insert((now, 0));
        if now.duration_since(*since) >= COLD_PULL_WINDOW {
            *since = now;
            *count = 0;
        }
        if *count >= self.per_minute {
            return Err(self.refusal());
        }
        *count += 1;
        Ok(())
    }

    fn refusal(&self) -> Refused {
        Refused {
            status: 429,
            message: format!(
                "too many requests for streams that are not live from this address \
                 ({} a minute, http.cold_pulls_per_minute); try again later\n",
                self.per_minute
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cold_pulls_are_counted_per_client_in_one_minute_windows() {
        let mut pulls = ColdPulls::new(2);
        let t0 = Instant::now();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(pulls.admit(a, t0).is_ok());
        assert!(pulls.admit(a, t0 + Duration::from_secs(1)).is_ok());
        let refused = pulls.admit(a, t0 + Duration::from_secs(2)).unwrap_err();
        assert_eq!(refused.status, 429);
        assert!(refused.message.contains("cold_pulls_per_minute"));
        assert!(pulls.admit(b, t0 + Duration::from_secs(2)).is_ok());
        assert!(pulls.admit(a, t0 + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn the_record_of_clients_is_bounded() {
        let mut pulls = ColdPulls::new(1);
        let t0 = Instant::now();
        for i in 0..COLD_PULL_CLIENTS as u32 {
            assert!(pulls.admit(IpAddr::from(i.to_be_bytes()), t0).is_ok());
        }
        let late: IpAddr = "10.255.255.255".parse().unwrap();
        assert!(pulls.admit(late, t0).is_err(), "full and nothing expired");
        assert!(pulls.admit(late, t0 + COLD_PULL_WINDOW).is_ok());
        assert_eq!(pulls.clients.len(), 1, "expired entries pruned");
    }
}
