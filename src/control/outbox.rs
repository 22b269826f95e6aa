//! What the control task has decided to send, checked so that nothing it publishes can
//! break its own MQTT connection, then handed to the client with back-pressure.
//!
//! The handlers are synchronous: they `Outbox::push` messages; the control loop then
//! `Outbox::flush`es them, waiting for room in the client's queue. Nothing decided is
//! dropped for want of room (while the control task waits it reads no more requests, so
//! the broker's reader slows down instead). A message that MQTT cannot carry is refused
//! here, before the client sees it: rumqttc writes a topic's length as 16 bits without
//! checking it, and fails the whole connection on an oversized packet; the unacknowledged
//! message is then sent again after every reconnect, forever.

use rumqttc::{AsyncClient, QoS};
use tracing::warn;

use super::messages::shorten;

/// MQTT's limit on a topic name: its length is a 16-bit field.
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Largest packet the gateway's client sends (and the embedded broker accepts): 256 KiB.
pub const MAX_OUTGOING_PACKET: usize = 256 * 1024;

/// Bytes of a QoS 1 PUBLISH besides topic and payload: fixed header (at most 5), topic
/// length (2), packet id (2).
const PUBLISH_OVERHEAD: usize = 9;

/// Why a message cannot be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The topic is longer than MQTT allows.
    #[error("topic is {len} bytes long; MQTT allows {max}")]
    TopicTooLong {
        /// Its length.
        len: usize,
        /// [`MAX_TOPIC_LEN`].
        max: usize,
    },
    /// The topic is empty or holds a wildcard or NUL.
    #[error("topic {topic:?} is empty or contains '+', '#' or NUL")]
    TopicInvalid {
        /// The topic, shortened.
        topic: String,
    },
    /// The packet would exceed the gateway's packet size.
    #[error("message is {len} bytes; the gateway sends packets of at most {max}")]
    TooLarge {
        /// Packet size.
        len: usize,
        /// [`MAX_OUTGOING_PACKET`].
        max: usize,
    },
}

/// Checks that `topic` and a payload of `payload_len` bytes make a packet MQTT and the
/// broker accept.
pub fn check_publish(topic: &str, payload_len: usize) -> Result<(), PublishError> {
    if topic.len() > MAX_TOPIC_LEN {
        return Err(PublishError::TopicTooLong {
            len: topic.len(),
            max: MAX_TOPIC_LEN,
        });
    }
    if topic.is_empty() || topic.contains(['+', '#', '\0']) {
        return Err(PublishError::TopicInvalid {
            topic: shorten(topic),
        });
    }
    let len = PUBLISH_OVERHEAD + topic.len() + payload_len;
    if len > MAX_OUTGOING_PACKET {
        return Err(PublishError::TooLarge {
            len,
            max: MAX_OUTGOING_PACKET,
        });
    }
    Ok(())
}

/// One message to publish (QoS 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) retain: bool,
}

/// Messages decided by one step of the control task, in order.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    queue: Vec<Message>,
}

impl Outbox {
    /// Queues a message, or refuses it with a warning naming the cause.
    pub(crate) fn push(&mut self, topic: &str, payload: Vec<u8>, retain: bool) {
        if let Err(error) = check_publish(topic, payload.len()) {
            warn!(%error, topic = %shorten(topic), "not published: MQTT cannot carry it");
            return;
        }
        self.queue.push(Message {
            topic: topic.to_owned(),
            payload,
            retain,
        });
    }

    /// Queues `body` as JSON on `topic`.
    pub(crate) fn push_json<T: serde::Serialize>(&mut self, topic: &str, body: &T, retain: bool) {
        match serde_json::to_vec(body) {
            Ok(payload) => self.push(topic, payload, retain),
            Err(error) => warn!(%error, topic = %shorten(topic), "could not encode a message"),
        }
    }

    /// Hands everything queued to the client, waiting for room in its queue. False if
    /// the connection task is gone.
    pub(crate) async fn flush(&mut self, client: &AsyncClient) -> bool {
        for message in self.queue.drain(..) {
            let sent = client
                .publish(
                    message.topic,
                    QoS::AtLeastOnce,
                    message.retain,
                    message.payload,
                )
                .await;
            if let Err(error) = sent {
                warn!(%error, "MQTT client stopped; message not sent");
                return false;
            }
        }
        true
    }

    /// Hands what is queued to the client if it has room now (at shutdown, when waiting
    /// is no longer possible); says how many did not fit.
    pub(crate) fn flush_now(&mut self, client: &AsyncClient) {
        let mut lost = 0;
        for message in self.queue.drain(..) {
            if client
                .try_publish(
                    message.topic,
                    QoS::AtLeastOnce,
                    message.retain,
                    message.payload,
                )
                .is_err()
            {
                lost += 1;
            }
        }
        if lost > 0 {
            warn!(
                lost,
                "shutting down with the MQTT queue full; messages not sent"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_packets_mqtt_cannot_carry_are_refused() {
        assert!(check_publish("jt1078/client/s1/OK", 200).is_ok());
        let long = format!("jt1078/client/{}/OK", "x".repeat(70_000));
        assert!(matches!(
            check_publish(&long, 10),
            Err(PublishError::TopicTooLong { max: 65_535, .. })
        ));
        assert!(check_publish(&"t".repeat(MAX_TOPIC_LEN), 10).is_ok());
        assert!(matches!(
            check_publish("a/+/b", 1),
            Err(PublishError::TopicInvalid { .. })
        ));
        assert!(matches!(
            check_publish("", 1),
            Err(PublishError::TopicInvalid { .. })
        ));
        assert!(matches!(
            check_publish("a/b", MAX_OUTGOING_PACKET),
            Err(PublishError::TooLarge { .. })
        ));
    }

    #[test]
    fn the_outbox_keeps_what_can_be_sent_in_order() {
        let mut outbox = Outbox::default();
        outbox.push("a/1", b"one".to_vec(), false);
        outbox.push(&"x".repeat(70_000), b"lost".to_vec(), false);
        outbox.push("a/2", b"two".to_vec(), true);
        let topics: Vec<&str> = outbox.queue.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(topics, ["a/1", "a/2"]);
    }
}
