//! Demand state machine tests, under a hand-driven clock: requesters, leases, linger,
//! retries, reconnects.

use super::*;
use crate::media::{Channel, DeviceId, StreamKind};

/// The origin of the hand-driven clock.
#[expect(
    clippy::disallowed_methods,
    reason = "one fixed origin; the tests move time by hand"
)]
fn origin() -> Instant {
    Instant::now()
}

fn key() -> StreamKey {
    StreamKey::new(
        DeviceId::parse("13800138000").unwrap(),
        Channel(1),
        StreamKind::Live,
    )
}

fn settings() -> DemandSettings {
    DemandSettings {
        stop_linger: Duration::from_secs(30),
        lease: Duration::from_secs(120),
        pull_timeout: Duration::from_secs(10),
        pull_attempts: 3,
    }
}

fn client(name: &str) -> RequesterId {
    RequesterId::Client(name.to_owned())
}

fn step(d: &mut Demand, now: Instant) -> Vec<Action> {
    let mut actions = Vec::new();
    d.poll(now, &mut actions);
    actions
}

#[test]
fn two_requesters_one_pull_one_stop_after_both_leave_and_linger() {
    let t0 = origin();
    let mut d = Demand::new(settings());
    let mut actions = Vec::new();
    assert_eq!(
        d.request(
            &key(),
            client("a"),
            Some("s1".into()),
            true,
            t0,
            &mut actions
        ),
        RequestOutcome::Pulling
    );
    assert_eq!(
        d.request(
            &key(),
            client("b"),
            Some("s2".into()),
            true,
            t0,
            &mut actions
        ),
        RequestOutcome::Pulling
    );
    // the same client twice counts once
    d.request(
        &key(),
        client("a"),
        Some("s3".into()),
        true,
        t0,
        &mut actions,
    );
    assert_eq!(
        actions,
        vec![Action::Pull {
            key: key(),
            attempt: 1
        }]
    );
    assert_eq!(d.requesters(&key()), 2);
    d.stream_up(&key());
    d.release(&key(), &client("a"), t0);
    assert!(
        step(&mut d, t0 + Duration::from_secs(60)).is_empty(),
        "b still watches"
    );
    let t1 = t0 + Duration::from_secs(61);
    d.release(&key(), &client("b"), t1);
    assert!(
        step(&mut d, t1 + Duration::from_secs(29)).is_empty(),
        "lingering"
    );
    assert_eq!(
        step(&mut d, t1 + Duration::from_secs(30)),
        vec![Action::Stop { key: key() }]
    );
    assert!(
        step(&mut d, t1 + Duration::from_secs(300)).is_empty(),
        "one stop only"
    );
}

#[test]
fn a_request_inside_the_linger_cancels_the_stop() {
    let t0 = origin();
    let mut d = Demand::new(settings());
    let mut actions = Vec::new();
    d.request(&key(), client("a"), None, true, t0, &mut actions);
    d.stream_up(&key());
    d.release(&key(), &client("a"), t0);
    let mut again = Vec::new();
    assert_eq!(
        d.request(
            &key(),
            client("b"),
            None,
            true,
            t0 + Duration::from_secs(10),
            &mut again
        ),
        RequestOutcome::Live
    );
    assert!(again.is_empty(), "no second pull while the stream is live");
    assert!(step(&mut d, t0 + Duration::from_secs(40)).is_empty());
}

#[test]
fn leases_expire_unless_renewed() {
    let t0 = origin();
    let mut d = Demand::new(settings());
    let mut actions = Vec::new();
    d.request(&key(), client("crashed"), None, true, t0, &mut actions);
    d.stream_up(&key());
    // renewed once at 100 s, then silence
    d.request(
        &key(),
        client("crashed"),
        None,
        true,
        t0 + Duration::from_secs(100),
        &mut actions,
    );
    assert!(step(&mut d, t0 + Duration::from_secs(200)).is_empty());
    assert_eq!(d.requesters(&key()), 1);
    assert!(
        step(&mut d, t0 + Duration::from_secs(220)).is_empty(),
        "lease over, linger starts"
    );
    assert_eq!(d.requesters(&key()), 0);
    assert_eq!(
        step(&mut d, t0 + Duration::from_secs(250)),
        vec![Action::Stop { key: key() }]
    );
}

#[test]
fn a_stream_that_never_arrives_is_retried_then_fails() {
    let t0 = origin();
    let mut d = Demand::new(settings());
    let mut actions = Vec::new();
    d.request(
        &key(),
        client("a"),
        Some("s1".into()),
        true,
        t0,
        &mut actions,
    );
    let mut now = t0;
    let mut pulls = 1;
    let mut failed = None;
    let mut stopped = false;
    while failed.is_none() {
        now = d.poll_timeout().unwrap();
        for action in step(&mut d, now) {
            match action {
                Action::Pull { attempt, .. } => {
                    pulls += 1;
                    assert_eq!(attempt, pulls);
                }
                Action::Failed {
                    requesters,
                    attempts,
                    ..
                } => failed = Some((requesters, attempts)),
                Action::Stop { .. } => {
                    assert!(failed.is_some(), "the stop comes with the failure");
                    stopped = true;
                }
            }
        }
    }
    assert!(stopped, "a device that connects late is not left streaming");
    let (requesters, attempts) = failed.unwrap();
    assert_eq!(attempts, 3);
    assert_eq!(pulls, 3);
    assert_eq!(requesters, vec![(client("a"), Some("s1".to_owned()))]);
    assert!(now - t0 >= Duration::from_secs(10 + 20 + 30));
    assert!(d.poll_timeout().is_none(), "nothing left to do");
}

#[test]
fn pushing_on_its_own_is_never_stopped() {
    let t0 = origin();
    let mut d = Demand::new(settings());
    d.stream_up(&key());
    let mut actions = Vec::new();
    assert_eq!(
        d.request(&key(), RequesterId::Viewers, None, true, t0, &mut actions),
        RequestOutcome::Live
    );
    assert!(actions.is_empty(), "no pull for a live stream");
    d.release(&key(), &RequesterId::Viewers, t0);
    assert!(step(&mut d, t0 + Duration::from_secs(3600)).is_empty());
}

#[test]
fn device_dropping_while_wanted_is_pulled_again() {
    let t0 = origin();
    let mut d = Demand::new(settings());
    let mut actions = Vec::new();
    d.request(&key(), client("a"), None, true, t0, &mut actions);
    d.stream_up(&key());
    actions.clear();
    d.stream_down(&key(), t0, &mut actions);
    assert_eq!(
        actions,
        vec![Action::Pull {
            key: key(),
            attempt: 1
        }]
    );
}

fn playback_key() -> StreamKey {
    StreamKey::new(
        DeviceId::parse("13800138000").unwrap(),
        Channel(1),
        StreamKind::Playback,
    )
}

#[test]
fn viewers_that_may_not_pull_only_wait() {
    let t0 = origin();
    let mut d = Demand::new(settings());
    let mut actions = Vec::new();
    let key = playback_key();
    assert_eq!(
        d.request(&key, RequesterId::Viewers, None, false, t0, &mut actions),
        RequestOutcome::Waiting
    );
    assert!(actions.is_empty(), "a waiting viewer never pulls");
    assert!(step(&mut d, t0 + Duration::from_secs(3600)).is_empty());
    // the device pushes on its own, then drops: still nobody may pull
    d.stream_up(&key);
    d.stream_down(&key, t0, &mut actions);
    assert!(actions.is_empty(), "no pull when the stream drops");
    // a requester that may pull (a PLAYBACK with its fields) makes the device push
    assert_eq!(
        d.request(&key, client("a"), None, true, t0, &mut actions),
        RequestOutcome::Pulling
    );
    assert_eq!(actions, vec![Action::Pull { key, attempt: 1 }]);
}

#[test]
fn a_stream_pushed_on_its_own_that_drops_is_pulled_for_its_requesters() {
    let t0 = origin();
    let mut d = Demand::new(settings());
    let mut actions = Vec::new();
    d.stream_up(&key());
    assert_eq!(
        d.request(&key(), client("a"), None, true, t0, &mut actions),
        RequestOutcome::Live
    );
    assert!(actions.is_empty());
    d.stream_down(&key(), t0, &mut actions);
    assert_eq!(
        actions,
        vec![Action::Pull {
            key: key(),
            attempt: 1
        }]
    );
    // and it is now a stream the gateway asked for: stopped after the requester leaves
    d.stream_up(&key());
    d.release(&key(), &client("a"), t0);
    assert_eq!(
        step(&mut d, t0 + Duration::from_secs(30)),
        vec![Action::Stop { key: key() }]
    );
}

/// A stream asked for, live, left, and told to stop after the linger: still pushing.
fn a_stream_told_to_stop_that_still_pushes() -> (Instant, Demand, StreamKey) {
    let t0 = origin();
    let mut d = Demand::new(settings());
    let mut actions = Vec::new();
    let stopped = StreamKey::new(
        DeviceId::parse("13800138001").unwrap(),
        Channel(1),
        StreamKind::Live,
    );
    d.request(&stopped, client("a"), None, true, t0, &mut actions);
    d.stream_up(&stopped);
    d.release(&stopped, &client("a"), t0);
    assert_eq!(
        step(&mut d, t0 + Duration::from_secs(30)),
        vec![Action::Stop {
            key: stopped.clone()
        }]
    );
    (t0, d, stopped)
}

#[test]
fn after_a_reconnect_pending_pulls_and_stops_are_repeated() {
    let (t0, mut d, stopped) = a_stream_told_to_stop_that_still_pushes();
    let mut actions = Vec::new();
    // nobody answers this one yet
    d.request(&key(), client("b"), None, true, t0, &mut actions);
    let mut again = Vec::new();
    d.reconnected(t0, &mut again);
    again.sort_by_key(|a| format!("{a:?}"));
    assert_eq!(
        again,
        vec![
            Action::Pull {
                key: key(),
                attempt: 2
            },
            Action::Stop {
                key: stopped.clone()
            },
        ]
    );
    // once the stopped stream is down and the other is live, nothing is repeated
    d.stream_down(&stopped, t0, &mut actions);
    d.stream_up(&key());
    again.clear();
    d.reconnected(t0, &mut again);
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn reconnects_never_make_more_pulls_or_stops_than_the_attempts() {
    let (t0, mut d, _) = a_stream_told_to_stop_that_still_pushes();
    let mut actions = Vec::new();
    d.request(&key(), client("b"), None, true, t0, &mut actions);
    // a connection that keeps dropping: 100 reconnects
    for _ in 0..100 {
        d.reconnected(t0, &mut actions);
    }
    let pulls = actions
        .iter()
        .filter(|a| matches!(a, Action::Pull { .. }))
        .count();
    let stops = actions
        .iter()
        .filter(|a| matches!(a, Action::Stop { .. }))
        .count();
    assert_eq!(pulls as u32, settings().pull_attempts, "{actions:?}");
    assert_eq!(stops as u32 + 1, settings().pull_attempts, "{actions:?}");
}
