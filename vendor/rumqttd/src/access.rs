//! jt1078-gateway patch: hooks for authentication, authorization and the transport of a
//! listener, so that the embedding application decides who may connect, publish and
//! subscribe (upstream has only `external_auth`, which sees neither the peer's address nor
//! the topics), and terminates TLS itself (with a certificate it can reload).
//!
//! - [`ConnectHook`] is called once per CONNECT, after the packet is read, with the peer's
//!   address and the login. It returns the connection's [`Permissions`] or a refusal,
//!   which is sent as the CONNACK code. It may take its time (a delay for an address that
//!   keeps failing): only this connection waits.
//! - [`Permissions`] are asked by the router for every PUBLISH (a refused one is dropped,
//!   QoS 1 still acknowledged so the client does not retransmit it forever; QoS 2 ends
//!   the connection) and every SUBSCRIBE filter (a refused one gets the SUBACK failure
//!   code 0x80), and at CONNECT for the last will's topic (refused: CONNACK "not
//!   authorized").
//! - [`StreamHook`] turns an accepted TCP stream into the stream MQTT runs on (a TLS
//!   server session); it runs in the connection's task, not in the accept loop.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::net::TcpStream;

/// A stream MQTT can run on (what a [`StreamHook`] returns).
pub use crate::link::network::N;

/// Why a CONNECT is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// CONNACK 4 (MQTT 3.1.1): bad user name or password.
    BadUserNameOrPassword,
    /// CONNACK 5: not authorized.
    NotAuthorized,
}

/// What a CONNECT hook sees.
#[derive(Clone)]
pub struct ConnectRequest {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The listener's name in the config (`v4`, `ws`, …).
    pub listener: String,
    /// The client id as sent (may be empty).
    pub client_id: String,
    /// User name, if the CONNECT had one.
    pub username: Option<String>,
    /// Password, if the CONNECT had one.
    pub password: Option<String>,
}

impl fmt::Debug for ConnectRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectRequest")
            .field("peer", &self.peer)
            .field("listener", &self.listener)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// What one connection may do; asked by the router thread, so it must be quick.
pub trait Permissions: Send + Sync + fmt::Debug {
    /// May the connection publish on `topic`?
    fn may_publish(&self, topic: &str) -> bool;
    /// May the connection subscribe to `filter` (a shared subscription's group already
    /// removed)?
    fn may_subscribe(&self, filter: &str) -> bool;
}

/// Decides a CONNECT.
pub type ConnectHook = Arc<
    dyn Fn(
            ConnectRequest,
        )
            -> Pin<Box<dyn Future<Output = Result<Arc<dyn Permissions>, Refusal>> + Send>>
        + Send
        + Sync,
>;

/// Wraps an accepted TCP stream (e.g. a TLS handshake).
pub type StreamHook = Arc<
    dyn Fn(TcpStream) -> Pin<Box<dyn Future<Output = io::Result<Box<dyn N>>> + Send>>
        + Send
        + Sync,
>;
