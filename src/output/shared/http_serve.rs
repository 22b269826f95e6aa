//! The HTTP listener: every connection goes to the merged axum router, except one whose
//! first request is an HTTP-FLV play, which [`FlvPlayer`] takes over as a raw socket.
//!
//! Why not only axum: a played FLV stream through hyper costs a task wake-up and a trip
//! through hyper's body machinery per frame per viewer; on the raw socket the device's
//! task writes each frame itself (see `output::http_flv`). The request head is read here
//! with `httparse` (hyper's own parser) and, for everything else, handed to hyper
//! together with the bytes already read, so the router sees the connection untouched.
//!
//! Over HTTPS (`http.tls_cert`) every request goes through hyper, plays included (the
//! routed path of `output::http_flv`): the direct path writes to a plain TCP socket. ALPN
//! picks HTTP/2 (`h2`, many plays on one connection) or HTTP/1.1 (WS-FLV upgrades, wss).
//! Every routed request carries the peer as axum's `ConnectInfo` and the client it is
//! attributed to (`http.trusted_proxies`) as [`ClientAddr`].

use std::io::Cursor;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{StatusCode, Uri};
use bytes::BytesMut;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tower::util::MapRequest;
use tracing::{debug, warn};

use crate::auth::{ClientAddr, Forwarding, TrustedProxies};
use crate::output::http_flv::{AfterPlay, FlvPlayer, PlayRequest, UpgradedPlay};

/// Longest request head read before routing (hyper's default limit is larger, but the
/// gateway's requests are short; a longer head goes to hyper, which answers it).
const MAX_HEAD: usize = 16 * 1024;

/// Pause after a failed accept (out of file descriptors): retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How long a connection gets at shutdown to finish what it is doing once told to
/// (HTTP/1.1: the response in flight; HTTP/2: GOAWAY, then its open streams) before it is
/// dropped. hyper's graceful shutdown alone waits for the client: an HTTP/2 connection a
/// browser opened ahead of need (TLS done, no preface yet) held the gateway's shutdown
/// forever.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How the listener treats connections.
#[derive(Clone)]
pub struct ServeOptions {
    /// `http.head_timeout` (also the TLS handshake's limit).
    pub head_timeout: Duration,
    /// HTTPS: the acceptor of `http.tls_cert`.
    pub tls: Option<TlsAcceptor>,
    /// `http.trusted_proxies`.
    pub trusted: TrustedProxies,
}

/// Serves `router` and direct FLV plays on `listener` until `shutdown`; then stops
/// accepting, lets requests in flight finish and ends every play. A client that sends no
/// complete request head within `head_timeout` (`http.head_timeout`) is dropped: on a new
/// connection, counted from its start; on a kept-alive one, from the previous response.
/// Bytes that trickle in do not extend it. A path nothing serves is answered 404 with a
/// one-line reason.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    player: FlvPlayer,
    options: ServeOptions,
    shutdown: CancellationToken,
) {
    let router = router.fallback(unknown_path);
    let connections = TaskTracker::new();
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "http accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let (router, player, shutdown) = (router.clone(), player.clone(), shutdown.clone());
        let options = options.clone();
        connections.spawn(async move {
            let result = match options.tls.clone() {
                Some(acceptor) => {
                    tls_connection(socket, peer, acceptor, router, &options, shutdown).await
                }
                None => connection(socket, peer, router, player, &options, shutdown).await,
            };
            if let Err(error) = result {
                debug!(%error, %peer, "http connection ended with an error");
            }
        });
    }
    connections.close();
    connections.wait().await;
}

async fn unknown_path(uri: Uri) -> (StatusCode, String) {
    let path = crate::media::echo(uri.path());
    (
        StatusCode::NOT_FOUND,
        format!(
            "no such path {path:?}: the gateway serves /live/{{device}}_{{channel}}.flv, \
             /playback/{{device}}_{{channel}}.flv (also as WebSockets), /whep/{{kind}}/{{device}}_{{channel}} and \
             /api/streams\n"
        ),
    )
}

/// A request's head, once complete.
enum Head {
    /// Complete: a play (or not), and the head's length.
    Complete(Option<Box<PlayRequest>>, usize),
    Partial,
    /// Not HTTP, or too long: hyper answers it.
    Invalid,
}

fn parse_head(buf: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let (Some(method), Some(path)) = (request.method, request.path) else {
                return Head::Invalid;
            };
            let http10 = request.version == Some(0);
            let close = request.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("connection")
                    && std::str::from_utf8(h.value)
                        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
            });
            let mut play = PlayRequest::parse(method, path, http10, close);
            if let Some(play) = &mut play {
                for header in request.headers.iter() {
                    play.add_header(header.name, header.value);
                }
            }
            Head::Complete(play.map(Box::new), len)
        }
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => Head::Partial,
        Ok(httparse::Status::Partial) | Err(_) => Head::Invalid,
    }
}

/// Reads until `buf` holds a whole request head; `None` if the client closed or sent no
/// whole head within `head_timeout` (one deadline, however its bytes arrive).
async fn read_head(
    socket: &mut TcpStream,
    buf: &mut BytesMut,
    head_timeout: Duration,
) -> std::io::Result<Option<(Option<PlayRequest>, usize)>> {
    let head = tokio::time::timeout(head_timeout, async {
        loop {
            if !buf.is_empty() {
                match parse_head(buf) {
                    Head::Partial => {}
                    Head::Complete(play, len) => return Ok(Some((play.map(|p| *p), len))),
                    Head::Invalid => return Ok(Some((None, 0))),
                }
            }
            if socket.read_buf(buf).await? == 0 {
                return Ok(None);
            }
        }
    });
    head.await.unwrap_or(Ok(None))
}

async fn connection(
    mut socket: TcpStream,
    peer: SocketAddr,
    router: Router,
    player: FlvPlayer,
    options: &ServeOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let head_timeout = options.head_timeout;
    // Nagle stays on: a viewer's small frames (audio) written while earlier ones are not
    // yet acknowledged leave together. Under load that is a sixth less CPU (1,000 streams:
    // 55.6 -> 45.1 %) with no added latency at low load (docs/benchmarks.md).
    let mut buf = BytesMut::with_capacity(1024);
    // plays are served here, one after another while the client keeps the connection;
    // the first request that is not a play goes to hyper with the rest of the connection
    loop {
        let head = tokio::select! {
            head = read_head(&mut socket, &mut buf, head_timeout) => head?,
            () = shutdown.cancelled() => return Ok(()),
        };
        let Some((play, len)) = head else {
            // closed, timed out or failed before a whole request
            return Ok(());
        };
        let Some(play) = play else { break };
        let pending = buf.split_off(len);
        match player.play(socket, play, pending, shutdown.clone()).await? {
            AfterPlay::Closed => return Ok(()),
            AfterPlay::KeptAlive(kept, pending) => {
                socket = kept;
                buf = pending;
            }
        }
    }
    // hyper reads the bytes already taken first, then the socket
    let (read, write) = socket.into_split();
    let io = tokio::io::join(Cursor::new(buf.freeze()).chain(read), write);
    serve_routed(io, peer, router, options, shutdown).await
}

/// An HTTPS connection: the TLS handshake (within `http.head_timeout`), then hyper.
async fn tls_connection(
    socket: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    router: Router,
    options: &ServeOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let handshake = tokio::select! {
        handshake = tokio::time::timeout(options.head_timeout, acceptor.accept(socket)) => handshake,
        () = shutdown.cancelled() => return Ok(()),
    };
    let Ok(stream) = handshake else {
        debug!(%peer, "TLS handshake timed out");
        return Ok(());
    };
    let stream = stream?;
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        return serve_h2(stream, peer, router, options, shutdown).await;
    }
    serve_routed(stream, peer, router, options, shutdown).await
}

/// Serves an HTTP/2 connection (ALPN `h2` over TLS) with the router until the client
/// leaves or `shutdown`: every play is a stream of the one connection (the routed path of
/// `output::http_flv`). No WebSocket upgrades here (a WS-FLV play asks over HTTP/1.1).
async fn serve_h2<I>(
    io: I,
    peer: SocketAddr,
    router: Router,
    options: &ServeOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(with_client(router, peer, options, None));
    // hyper runs each request of the connection as a task of its own (an HTTP/2
    // connection multiplexes them); they end with the connection
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => result?,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            finish_within_grace(conn, peer).await?;
        }
    }
    Ok(())
}

/// Waits up to [`SHUTDOWN_GRACE`] for a connection told to shut down, then drops it.
async fn finish_within_grace<E>(
    conn: impl Future<Output = Result<(), E>>,
    peer: SocketAddr,
) -> Result<(), E> {
    match tokio::time::timeout(SHUTDOWN_GRACE, conn).await {
        Ok(result) => result,
        Err(_) => {
            debug!(%peer, "http connection still open after the shutdown grace: dropped");
            Ok(())
        }
    }
}

/// `router` with each request carrying the peer as axum's `ConnectInfo` and the client
/// it is attributed to (`http.trusted_proxies`) as [`ClientAddr`] (the SRS hooks check
/// who calls; limits, logs and the API guard use the client), and `upgrades` (HTTP/1.1:
/// where a WS-FLV play is left for the connection's task).
fn with_client(
    router: Router,
    peer: SocketAddr,
    options: &ServeOptions,
    upgrades: Option<UpgradedPlay>,
) -> MapRequest<
    Router,
    impl FnMut(hyper::Request<Incoming>) -> hyper::Request<Incoming> + Clone + use<>,
> {
    let trusted = options.trusted.clone();
    router.map_request(move |mut request: hyper::Request<Incoming>| {
        let client = if trusted.trusts(peer.ip()) {
            trusted.client(peer.ip(), &Forwarding::from_headers(request.headers()))
        } else {
            peer.ip()
        };
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(ClientAddr(client));
        if let Some(upgrades) = &upgrades {
            request.extensions_mut().insert(upgrades.clone());
        }
        request
    })
}

/// Serves `io` with hyper and the router until the client leaves or `shutdown`.
async fn serve_routed<I>(
    io: I,
    peer: SocketAddr,
    router: Router,
    options: &ServeOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let head_timeout = options.head_timeout;
    // a WS-FLV play the router accepted goes on here once hyper hands the connection over
    let upgraded = UpgradedPlay::default();
    let router = with_client(router, peer, options, Some(upgraded.clone()));
    let service = TowerToHyperService::new(router);
    // hyper's own deadline for the heads of later requests on a kept-alive connection
    // (it needs a timer to keep one)
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => result?,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            finish_within_grace(conn, peer).await?;
        }
    }
    if let Some(play) = upgraded.take() {
        tokio::select! {
            () = play => {}
            () = shutdown.cancelled() => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_request_routing() {
        let play = |head: &str| match parse_head(head.as_bytes()) {
            Head::Complete(play, _) => play,
            Head::Partial => panic!("partial: {head:?}"),
            Head::Invalid => panic!("invalid: {head:?}"),
        };
        assert!(play("GET /live/13800138000_1.flv HTTP/1.1\r\nHost: x\r\n\r\n").is_some());
        assert!(play("GET /playback/13800138000_1.flv?t=1 HTTP/1.0\r\n\r\n").is_some());
        assert!(play("GET /api/streams HTTP/1.1\r\n\r\n").is_none());
        assert!(play("HEAD /live/13800138000_1.flv HTTP/1.1\r\n\r\n").is_some());
        assert!(play("POST /live/13800138000_1.flv HTTP/1.1\r\n\r\n").is_none());
        assert!(play("GET /live/a/b.flv HTTP/1.1\r\n\r\n").is_none());
        assert!(matches!(
            parse_head(b"GET /live/13800138000_1.flv HTTP/1.1\r\nHost"),
            Head::Partial
        ));
        assert!(matches!(parse_head(b"\x16\x03\x01 garbage"), Head::Invalid));
    }
}
