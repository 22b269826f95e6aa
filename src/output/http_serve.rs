//! The HTTP listener: every connection goes to the merged axum router, except one whose
//! first request is an HTTP-FLV play, which [`FlvPlayer`] takes over as a raw socket.
//!
//! Why not only axum: a played FLV stream through hyper costs a task wake-up and a trip
//! through hyper's body machinery per frame per viewer; on the raw socket the device's
//! task writes each frame itself (see `output::http_flv`). The request head is read here
//! with `httparse` (hyper's own parser) and, for everything else, handed to hyper
//! together with the bytes already read, so the router sees the connection untouched.

use std::io::Cursor;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use bytes::BytesMut;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, warn};

use super::http_flv::{FlvPlayer, PlayRequest};

/// Longest request head read before routing (hyper's default limit is larger, but the
/// gateway's requests are short; a longer head goes to hyper, which answers it).
const MAX_HEAD: usize = 16 * 1024;

/// Pause after a failed accept (out of file descriptors): retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `router` and direct FLV plays on `listener` until `shutdown`; then stops
/// accepting, lets requests in flight finish and ends every play. A client that sends no
/// complete request head within `head_timeout` (`http.head_timeout`) is dropped: on a new
/// connection, counted from its start; on a kept-alive one, from the previous response.
/// Bytes that trickle in do not extend it.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    player: FlvPlayer,
    head_timeout: Duration,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(error) => {
                    warn!(%error, "http accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let (router, player, shutdown) = (router.clone(), player.clone(), shutdown.clone());
        connections.spawn(async move {
            if let Err(error) = connection(socket, router, player, head_timeout, shutdown).await {
                debug!(%error, "http connection ended with an error");
            }
        });
    }
    connections.close();
    connections.wait().await;
}

/// The first request's method, path and version, once its head is complete.
enum Head {
    Complete(Option<PlayRequest>),
    Partial,
    /// Not HTTP, or too long: hyper answers it.
    Invalid,
}

fn parse_head(buf: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {
            let (Some(method), Some(path)) = (request.method, request.path) else {
                return Head::Invalid;
            };
            let http10 = request.version == Some(0);
            Head::Complete(PlayRequest::parse(method, path, http10))
        }
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => Head::Partial,
        Ok(httparse::Status::Partial) | Err(_) => Head::Invalid,
    }
}

async fn connection(
    mut socket: TcpStream,
    router: Router,
    player: FlvPlayer,
    head_timeout: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Nagle stays on: a viewer's small frames (audio) written while earlier ones are not
    // yet acknowledged leave together. Under load that is a sixth less CPU (1,000 streams:
    // 55.6 -> 45.1 %) with no added latency at low load (docs/benchmarks.md).
    let mut buf = BytesMut::with_capacity(1024);
    // one deadline for the whole head, however its bytes arrive
    let head = tokio::time::timeout(head_timeout, async {
        loop {
            if socket.read_buf(&mut buf).await? == 0 {
                return Ok::<_, std::io::Error>(None);
            }
            match parse_head(&buf) {
                Head::Partial => {}
                Head::Complete(play) => return Ok(Some(play)),
                Head::Invalid => return Ok(Some(None)),
            }
        }
    });
    let play = tokio::select! {
        head = head => match head {
            Ok(Ok(Some(play))) => play,
            // closed, timed out or failed before a whole request
            Ok(Ok(None)) | Err(_) => return Ok(()),
            Ok(Err(error)) => return Err(error.into()),
        },
        () = shutdown.cancelled() => return Ok(()),
    };
    if let Some(play) = play {
        player.play(socket, play, shutdown).await?;
        return Ok(());
    }
    // handlers that check who calls (the SRS hooks) see the peer as axum's ConnectInfo
    let peer = socket.peer_addr()?;
    // hyper reads the bytes already taken first, then the socket
    let (read, write) = socket.into_split();
    let io = tokio::io::join(Cursor::new(buf.freeze()).chain(read), write);
    let router = router.map_request(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
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
            conn.await?;
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
            Head::Complete(play) => play,
            Head::Partial => panic!("partial: {head:?}"),
            Head::Invalid => panic!("invalid: {head:?}"),
        };
        assert!(play("GET /live/13800138000_1.flv HTTP/1.1\r\nHost: x\r\n\r\n").is_some());
        assert!(play("GET /playback/13800138000_1.flv?t=1 HTTP/1.0\r\n\r\n").is_some());
        assert!(play("GET /api/streams HTTP/1.1\r\n\r\n").is_none());
        assert!(play("HEAD /live/13800138000_1.flv HTTP/1.1\r\n\r\n").is_none());
        assert!(play("GET /live/a/b.flv HTTP/1.1\r\n\r\n").is_none());
        assert!(matches!(
            parse_head(b"GET /live/13800138000_1.flv HTTP/1.1\r\nHost"),
            Head::Partial
        ));
        assert!(matches!(parse_head(b"\x16\x03\x01 garbage"), Head::Invalid));
    }
}
