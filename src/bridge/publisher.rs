//! The bridge's own MQTT connection: publishes what hooks and the Redis queue turn into
//! control messages, QoS 1, and says when the broker acknowledged each one.
//!
//! Why its own connection (client id `jt1078-gateway-{gateway_id}-bridge`): its messages
//! go through the broker like any backend's, so a subscriber sees them and the control
//! plane treats them as any MQTT request; and its event loop shows the PubAcks, so a Redis
//! entry leaves the processing list only once the broker has it.
//!
//! How acknowledgements are matched: the task owns the rumqttc event loop and gives each
//! publish a packet id of its own (1..=[`WINDOW`], reused only after its PubAck), queued
//! straight into the event loop's `pending`. The session is clean: after a reconnect the
//! broker remembers nothing and rumqttc drops what it held, so the task sends again every
//! message not yet acknowledged, in order (at least once; a PubAck lost with the connection
//! means the broker sees that message twice).
//!
//! Bounded: [`QUEUE`] messages waiting; past that a message is refused and its sender told.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, EventLoop, Packet, Publish, QoS, Request};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::BridgeStatus;

/// Publishes in flight at once (their packet ids are 1..=WINDOW).
pub(crate) const WINDOW: u16 = 64;

/// Messages waiting to be sent (while the broker is away, say).
pub(crate) const QUEUE: usize = 4096;

/// First and longest wait between reconnection attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(5));

/// A message to publish; `acked` hears when the broker acknowledged it.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) topic: String,
    pub(crate) payload: Bytes,
    pub(crate) acked: Option<oneshot::Sender<()>>,
}

/// The handle sides use.
#[derive(Debug, Clone)]
pub(crate) struct Publisher {
    tx: mpsc::Sender<Outgoing>,
}

/// The publisher's task is gone (shutdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the bridge's MQTT publisher has stopped")]
pub(crate) struct Stopped;

/// The queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the bridge's MQTT queue is full ({QUEUE} messages)")]
pub(crate) struct QueueFull;

impl Publisher {
    /// Queues a message without waiting; it is sent (again after reconnects) until the
    /// broker acknowledges it.
    pub(crate) fn send(&self, topic: String, payload: Vec<u8>) -> Result<(), QueueFull> {
        self.tx
            .try_send(Outgoing {
                topic,
                payload: payload.into(),
                acked: None,
            })
            .map_err(|_| QueueFull)
    }

    /// Queues a message and waits until the broker acknowledged it.
    pub(crate) async fn send_acked(&self, topic: String, payload: Vec<u8>) -> Result<(), Stopped> {
        let (acked_tx, acked_rx) = oneshot::channel();
        let outgoing = Outgoing {
            topic,
            payload: payload.into(),
            acked: Some(acked_tx),
        };
        self.tx.send(outgoing).await.map_err(|_| Stopped)?;
        acked_rx.await.map_err(|_| Stopped)
    }
}

/// The connection task's state.
struct Connection {
    eventloop: EventLoop,
    /// Not yet handed to the event loop, oldest first.
    waiting: VecDeque<Outgoing>,
    /// Handed to the event loop, by packet id, not yet acknowledged.
    in_flight: BTreeMap<u16, (u64, Outgoing)>,
    free_pkids: Vec<u16>,
    next_order: u64,
    connected: bool,
    status: Arc<BridgeStatus>,
}

/// A publisher and the task that drives its connection.
/// With `subscribe`, the connection subscribes that filter on every connect and hands
/// what arrives to `incoming_tx`.
pub(crate) fn start(
    (client, eventloop): (AsyncClient, EventLoop),
    status: Arc<BridgeStatus>,
    subscribe: Option<(String, mpsc::Sender<Publish>)>,
    cancel: CancellationToken,
) -> (Publisher, impl Future<Output = ()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let connection = Connection {
        eventloop,
        waiting: VecDeque::new(),
        in_flight: BTreeMap::new(),
        free_pkids: (1..=WINDOW).rev().collect(),
        next_order: 0,
        connected: false,
        status,
    };
    let (filter, incoming_tx) = subscribe.unzip();
    (
        Publisher { tx },
        connection.run(rx, client, (filter, incoming_tx), cancel),
    )
}

impl Connection {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Outgoing>,
        client: AsyncClient,
        (subscribe, incoming_tx): (Option<String>, Option<mpsc::Sender<Publish>>),
        cancel: CancellationToken,
    ) {
        let mut failures = 0u32;
        loop {
            let room = self.waiting.len() < QUEUE;
            // rumqttc's poll is safe to drop between events: what it read and did not yet
            // report stays in its state and comes out of the next poll
            let event = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                outgoing = rx.recv(), if room => match outgoing {
                    Some(outgoing) => {
                        self.waiting.push_back(outgoing);
                        self.hand_over();
                        continue;
                    }
                    None => break,
                },
                event = self.eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    info!("bridge connected to the MQTT broker");
                    failures = 0;
                    self.connected = true;
                    self.status.mqtt_connected.store(true, Ordering::Relaxed);
                    self.resend();
                    if let Some(filter) = &subscribe
                        && let Err(error) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce)
                    {
                        warn!(%error, "bridge could not queue its subscription");
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => self.acknowledged(ack.pkid),
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if let Some(tx) = &incoming_tx
                        && tx.try_send(publish).is_err()
                    {
                        warn!("bridge mirror is behind; a device command was not mirrored");
                    }
                }
                Ok(other) => debug!(?other, "bridge mqtt event"),
                Err(error) => {
                    if self.connected || failures == 10 {
                        warn!(%error, "bridge lost the MQTT broker; reconnecting");
                    }
                    self.connected = false;
                    self.status.mqtt_connected.store(false, Ordering::Relaxed);
                    failures = failures.saturating_add(1);
                    let backoff = BACKOFF.0.saturating_mul(failures.min(16)).min(BACKOFF.1);
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                }
            }
            self.hand_over();
        }
    }

    /// Moves waiting messages into the event loop while connected and ids are free.
    fn hand_over(&mut self) {
        while self.connected && !self.waiting.is_empty() {
            let Some(pkid) = self.free_pkids.pop() else {
                break;
            };
            let Some(outgoing) = self.waiting.pop_front() else {
                self.free_pkids.push(pkid);
                break;
            };
            let publish = publish(pkid, &outgoing);
            self.eventloop.pending.push_back(Request::Publish(publish));
            self.in_flight.insert(pkid, (self.next_order, outgoing));
            self.next_order += 1;
        }
        self.status
            .mqtt_pending
            .store(self.waiting.len() + self.in_flight.len(), Ordering::Relaxed);
    }

    /// After a (re)connect: the new session has nothing, so everything unacknowledged goes
    /// again, oldest first, under its packet id.
    fn resend(&mut self) {
        self.eventloop.pending.clear();
        let mut again: Vec<(u16, u64)> = self
            .in_flight
            .iter()
            .map(|(pkid, (order, _))| (*pkid, *order))
            .collect();
        again.sort_by_key(|(_, order)| *order);
        for (pkid, _) in again {
            if let Some((_, outgoing)) = self.in_flight.get(&pkid) {
                let publish = publish(pkid, outgoing);
                self.eventloop.pending.push_back(Request::Publish(publish));
            }
        }
    }

    fn acknowledged(&mut self, pkid: u16) {
        let Some((_, outgoing)) = self.in_flight.remove(&pkid) else {
            debug!(pkid, "PubAck for no message of ours");
            return;
        };
        self.free_pkids.push(pkid);
        self.status.mqtt_published.fetch_add(1, Ordering::Relaxed);
        if let Some(acked) = outgoing.acked {
            // the sender may have stopped waiting (shutdown): nothing to tell then
            let _ = acked.send(());
        }
    }
}

/// `outgoing` as a QoS 1 publish under `pkid`.
fn publish(pkid: u16, outgoing: &Outgoing) -> Publish {
    let mut publish = Publish::from_bytes(
        outgoing.topic.clone(),
        QoS::AtLeastOnce,
        outgoing.payload.clone(),
    );
    publish.pkid = pkid;
    publish
}
