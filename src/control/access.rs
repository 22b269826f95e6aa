//! Who may publish and subscribe what on the embedded broker: a pure function from
//! (identity, action, topic or filter) to allow or deny. Sans-IO: no sockets, no clocks;
//! the broker (`control::broker`) asks it through the vendored rumqttd's hook.
//!
//! The rules (docs/security.md, "MQTT: who may do what"; `{p}` is `mqtt.topic_prefix`):
//!
//! | identity | publish | subscribe |
//! |---|---|---|
//! | device `{id}` | `{p}/gateway/{id}/HEART`, `{p}/gateway/{id}/DEVPUSH` | `{p}/device/{id}/#` |
//! | backend, anonymous from loopback | `{p}/gateway/+/+` | `{p}/client/#`, `{p}/status/#`, `{p}/device/#`, `{p}/gateway/+/HEART` |
//! | viewer | `{p}/gateway/+/WEBRTC` | `{p}/client/{its user name}/#` (it sends `seqid` = its user name) |
//! | admin, the gateway itself | everything | everything |
//!
//! A device's `{id}` level may be written in any form of the id (`013800138000`); it is
//! compared canonically. A subscription filter is allowed when every topic it can match
//! is allowed (`{p}/client/#` is within `{p}/client/#`, `{p}/#` is not).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::media::DeviceId;

/// A named user's role (`[[mqtt.users]]`'s `role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A fleet backend: sends requests, reads replies, device commands and status.
    Backend,
    /// A browser page: sends WEBRTC requests, reads its own replies.
    Viewer,
    /// Everything.
    Admin,
}

/// Who a connection is, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A named user of `[[mqtt.users]]`.
    User {
        /// User name.
        name: String,
        /// Its role.
        role: Role,
    },
    /// A device that proved its id with the HMAC of `mqtt.device_secret`.
    Device(DeviceId),
    /// No user name, from an address `mqtt.allow_anonymous` lets in: backend rights.
    Anonymous,
    /// The gateway's own connections (the per-process credential): admin rights.
    Gateway,
}

/// An authenticated connection: who, and with which client id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Who.
    pub principal: Principal,
    /// The MQTT client id it connected with.
    pub client_id: String,
}

/// What a connection wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Publish on a topic (no wildcards).
    Publish,
    /// Subscribe to a filter (wildcards allowed).
    Subscribe,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
        })
    }
}

/// Request modes a viewer may send.
pub const VIEWER_MODES: &[&str] = &["WEBRTC"];
/// Request modes a device may send (on its own id only).
pub const DEVICE_MODES: &[&str] = &["HEART", "DEVPUSH"];

/// The rules for one topic prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    prefix: Vec<String>,
}

/// One level of a rule's pattern.
#[derive(Debug, Clone, Copy)]
enum Level<'a> {
    /// Exactly this text.
    Exact(&'a str),
    /// Any one level (`+`).
    Any,
    /// This level and everything below, or nothing (`#`).
    Rest,
    /// A device id equal (canonically) to this one.
    Device(&'a DeviceId),
    /// One of these request modes.
    Mode(&'a [&'a str]),
}

impl Policy {
    /// The rules for topics under `prefix` (`mqtt.topic_prefix`).
    pub fn new(prefix: &str) -> Policy {
        Policy {
            prefix: prefix
                .trim_end_matches('/')
                .split('/')
                .map(str::to_owned)
                .collect(),
        }
    }

    /// Whether `identity` may `action` on `topic` (a filter for [`Action::Subscribe`]).
    pub fn allows(&self, identity: &Identity, action: Action, topic: &str) -> bool {
        if topic.is_empty() || topic.contains('\0') {
            return false;
        }
        if action == Action::Publish && topic.contains(['+', '#']) {
            return false;
        }
        let backend = |this: &Policy| match action {
            Action::Publish => {
                this.within(topic, &[Level::Exact("gateway"), Level::Any, Level::Any])
            }
            Action::Subscribe => {
                this.within(topic, &[Level::Exact("client"), Level::Rest])
                    || this.within(topic, &[Level::Exact("status"), Level::Rest])
                    || this.within(topic, &[Level::Exact("device"), Level::Rest])
                    || this.within(
                        topic,
                        &[Level::Exact("gateway"), Level::Any, Level::Exact("HEART")],
                    )
            }
        };
        match &identity.principal {
            Principal::Gateway
            | Principal::User {
                role: Role::Admin, ..
            } => true,
            Principal::Anonymous
            | Principal::User {
                role: Role::Backend,
                ..
            } => backend(self),
            Principal::User {
                name,
                role: Role::Viewer,
            } => match action {
                Action::Publish => self.within(
                    topic,
                    &[
                        Level::Exact("gateway"),
                        Level::Any,
                        Level::Mode(VIEWER_MODES),
                    ],
                ),
                Action::Subscribe => {
                    // its user name as one literal topic level, or nothing
                    !name.contains(['/', '+', '#'])
                        && self.within(
                            topic,
                            &[Level::Exact("client"), Level::Exact(name), Level::Rest],
                        )
                }
            },
            Principal::Device(device) => match action {
                Action::Publish => self.within(
                    topic,
                    &[
                        Level::Exact("gateway"),
                        Level::Device(device),
                        Level::Mode(DEVICE_MODES),
                    ],
                ),
                Action::Subscribe => self.within(
                    topic,
                    &[Level::Exact("device"), Level::Device(device), Level::Rest],
                ),
            },
        }
    }

    /// Whether every topic `filter` matches also matches `{prefix}/{rest}`.
    fn within(&self, filter: &str, rest: &[Level<'_>]) -> bool {
        let pattern = self
            .prefix
            .iter()
            .map(|level| Level::Exact(level))
            .chain(rest.iter().copied());
        within(filter, pattern)
    }
}

/// Whether every topic `filter` can match is matched by `pattern`.
fn within<'a>(filter: &str, pattern: impl IntoIterator<Item = Level<'a>>) -> bool {
    let mut pattern = pattern.into_iter();
    let mut levels = filter.split('/');
    loop {
        match (levels.next(), pattern.next()) {
            // `a/#` also matches `a`
            (None, None | Some(Level::Rest)) => return pattern.next().is_none(),
            (None, Some(_)) | (Some(_), None) => return false,
            (Some(_), Some(Level::Rest)) => return true,
            (Some("#"), Some(_)) => return false,
            (Some("+"), Some(Level::Any)) => {}
            (Some("+"), Some(_)) => return false,
            (Some(level), Some(expected)) => {
                if level.contains(['+', '#']) {
                    return false;
                }
                let ok = match expected {
                    Level::Exact(text) => level == text,
                    Level::Any => true,
                    Level::Device(device) => DeviceId::parse(level).is_ok_and(|id| id == *device),
                    Level::Mode(modes) => modes.contains(&level),
                    Level::Rest => true,
                };
                if !ok {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(principal: Principal, client_id: &str) -> Identity {
        Identity {
            principal,
            client_id: client_id.to_owned(),
        }
    }

    fn user(role: Role) -> Identity {
        who(
            Principal::User {
                name: "u".to_owned(),
                role,
            },
            "c1",
        )
    }

    fn device(id: &str) -> Identity {
        who(Principal::Device(DeviceId::parse(id).unwrap()), id)
    }

    use super::Action::{Publish as P, Subscribe as S};

    #[test]
    fn device_reaches_only_its_own_topics() {
        let policy = Policy::new("jt1078");
        let me = device("13800138000");
        for (action, topic, allowed) in [
            (S, "jt1078/device/13800138000/#", true),
            (S, "jt1078/device/013800138000/#", true),
            (S, "jt1078/device/13800138000/REQPULL", true),
            (S, "jt1078/device/13800138000", true),
            (S, "jt1078/device/13900000000/#", false),
            (S, "jt1078/device/+/#", false),
            (S, "jt1078/device/#", false),
            (S, "jt1078/#", false),
            (S, "#", false),
            (S, "jt1078/client/#", false),
            (S, "jt1078/gateway/13800138000/#", false),
            (P, "jt1078/gateway/13800138000/HEART", true),
            (P, "jt1078/gateway/013800138000/HEART", true),
            (P, "jt1078/gateway/13800138000/DEVPUSH", true),
            (P, "jt1078/gateway/13800138000/SUBSCRIBE", false),
            (P, "jt1078/gateway/13900000000/HEART", false),
            (P, "jt1078/gateway/13800138000/HEART/x", false),
            (P, "jt1078/device/13900000000/STOP", false),
            (P, "jt1078/device/13800138000/STOP", false),
            (P, "jt1078/client/s1/OK", false),
            (P, "jt1078/status/gateway/gw1", false),
        ] {
            assert_eq!(
                policy.allows(&me, action, topic),
                allowed,
                "{action} {topic}"
            );
        }
    }

    #[test]
    fn backend_requests_and_reads_but_commands_no_device() {
        let policy = Policy::new("jt1078");
        for backend in [user(Role::Backend), who(Principal::Anonymous, "x")] {
            for (action, topic, allowed) in [
                (P, "jt1078/gateway/13800138000/SUBSCRIBE", true),
                (P, "jt1078/gateway/13800138000/STOP/x", false),
                (P, "jt1078/device/13800138000/STOP", false),
                (P, "jt1078/client/s1/OK", false),
                (P, "jt1078/status/gateway/gw1", false),
                (S, "jt1078/client/#", true),
                (S, "jt1078/client/s1/OK", true),
                (S, "jt1078/status/#", true),
                (S, "jt1078/device/#", true),
                (S, "jt1078/device/+/REQPULL", true),
                (S, "jt1078/gateway/+/HEART", true),
                (S, "jt1078/gateway/#", false),
                (S, "jt1078/gateway/+/+", false),
                (S, "jt1078/#", false),
                (S, "#", false),
                (S, "+/client/#", false),
            ] {
                assert_eq!(
                    policy.allows(&backend, action, topic),
                    allowed,
                    "{action} {topic}"
                );
            }
        }
    }

    #[test]
    fn viewer_sends_webrtc_and_reads_its_own_replies() {
        let policy = Policy::new("jt1078");
        let viewer = user(Role::Viewer);
        for (action, topic, allowed) in [
            (P, "jt1078/gateway/13800138000/WEBRTC", true),
            (P, "jt1078/gateway/13800138000/SUBSCRIBE", false),
            (P, "jt1078/gateway/13800138000/STOP", false),
            (S, "jt1078/client/u/#", true),
            (S, "jt1078/client/u/OK", true),
            (S, "jt1078/client/c1/#", false),
            (S, "jt1078/client/+/#", false),
            (S, "jt1078/client/#", false),
            (S, "jt1078/status/#", false),
        ] {
            assert_eq!(
                policy.allows(&viewer, action, topic),
                allowed,
                "{action} {topic}"
            );
        }
        let odd = who(
            Principal::User {
                name: "+".to_owned(),
                role: Role::Viewer,
            },
            "c",
        );
        assert!(!policy.allows(&odd, S, "jt1078/client/+/#"));
    }

    #[test]
    fn admin_and_gateway_do_anything_and_prefix_is_honoured() {
        let policy = Policy::new("fleet/a/");
        assert!(policy.allows(&user(Role::Admin), S, "#"));
        assert!(policy.allows(&who(Principal::Gateway, "g"), P, "fleet/a/device/1/STOP"));
        assert!(policy.allows(&user(Role::Backend), S, "fleet/a/client/#"));
        assert!(!policy.allows(&user(Role::Backend), S, "jt1078/client/#"));
        assert!(!policy.allows(&user(Role::Backend), S, "fleet/#"));
        assert!(!policy.allows(&user(Role::Admin), P, "a/+"));
        assert!(!policy.allows(&user(Role::Admin), P, ""));
    }

    proptest::proptest! {
        #[test]
        fn any_topic_is_decided_without_a_panic(topic in ".*", client in ".*", bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let policy = Policy::new("jt1078");
            let lossy = String::from_utf8_lossy(&bytes).into_owned();
            for identity in [
                user(Role::Backend),
                user(Role::Viewer),
                who(Principal::User { name: client.clone(), role: Role::Viewer }, &client),
                who(Principal::Anonymous, &client),
                device("1"),
            ] {
                for t in [&topic, &lossy] {
                    let _ = policy.allows(&identity, P, t);
                    let _ = policy.allows(&identity, S, t);
                }
            }
        }
    }
}
