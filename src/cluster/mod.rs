//! Many gateways as one (issue 27), on the MQTT broker cluster the deployment runs: the
//! retained `{prefix}/status/gateway/{id}` of each gateway (with a last will saying it is
//! gone) is the membership, and rendezvous hashing of the device id over the live members
//! says who owns a stream that is live nowhere. No consensus of our own: the broker's
//! retained messages and wills are the shared state.
//!
//! Sans-IO, like `control/demand.rs`: [`membership::Membership`] is driven by status
//! messages and `now`, [`placement`] is a pure function of the members and a device id.

pub mod membership;
pub mod placement;

pub use membership::{Member, MemberEvent, MemberStatus, Membership};
pub use placement::owner_of;
