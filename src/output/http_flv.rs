//! HTTP-FLV: `GET /live/{device}_{channel}.flv` and `GET /playback/{device}_{channel}.flv`.
//!
//! A request for a stream that is not live waits (`http.flv_wait_timeout`) for the device
//! to connect, then starts at the latest key frame; 404 after the wait. Such waits are
//! capped (`http.max_waiting` at once, `http.cold_pulls_per_minute` per client address).
//! An HTTP/1.1 response is chunked and ends with the last chunk when the stream ends (the
//! device left, or the playback finished), so the connection can serve another request;
//! an HTTP/1.0 response is close-delimited. `HEAD` answers the headers only, at once
//! (200 if the stream is live, else 404), and starts no pull. [`FlvMuxer`] is the pure
//! part: hub frames in, FLV bytes out. With `http.play_secret` set, a play (`HEAD` too)
//! without a valid signature is answered 403 with the reason before anything else
//! (`auth::PlayAccess`). Limits count the client address `http.trusted_proxies` resolve.
//!
//! WS-FLV (`output::http_flv::ws`): a `GET` of the same paths with a WebSocket upgrade passes the
//! same checks (signature, path), then its upgrade headers (400 with the reason if they do
//! not make a handshake), waits for the stream as a play does, and is answered `101` once it
//! has a reader; the FLV bytes go out in binary messages and end with a close frame.
//!
//! Two ways in, same bytes out:
//! - **Direct** ([`FlvPlayer::play`]): a connection whose request is a play is handed over
//!   raw by `output::shared::http_serve`; its viewer becomes a hub sink (`output::http_flv::direct`)
//!   that the device's task writes to.
//! - **Routed** ([`FlvPlayer::routes`]): a play that arrives on a kept-alive connection
//!   after a request hyper served goes through axum as a streamed body, read from a hub
//!   [`Reader`].

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use bytes::{Bytes, BytesMut};
use futures_util::stream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use self::direct::{Ended, Framing, client_left, serve_direct};
use self::limits::{Refused, ViewerLimits};
use self::ws::{CLOSE_NORMAL, ClientFrames, FrameHead, UpgradeHeaders, close_frame};
pub use super::shared::flv_mux::FlvMuxer;
use super::{FLV_OUTPUT, WS_FLV_OUTPUT};

mod direct;
mod limits;
pub mod ws;
use crate::auth::{ClientAddr, Forwarding, PlayAccess, TrustedProxies};
use crate::config::HttpSettings;
use crate::hub::{Hub, Reader, ViewerCount};
use crate::media::{AudioMode, Channel, DeviceId, StreamKey, StreamKind, echo};

/// Frames already queued for a viewer are written together, up to this many bytes.
const MAX_WRITE: usize = 256 * 1024;

/// A direct viewer's socket send buffer (the kernel doubles it for its bookkeeping): two
/// seconds of a 4 Mbit/s stream, instead of up to 4 MiB each when autotuned.
const VIEWER_SEND_BUFFER: usize = 1024 * 1024;

/// How long a WS-FLV connection waits for the client's close after the server's.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// A routed WS-FLV viewer whose connection takes nothing for this long is dropped.
const ROUTED_WRITE_STALL: Duration = Duration::from_secs(20);

/// Longest merged-write interval honoured.
const MAX_MERGE: Duration = Duration::from_secs(1);

/// Serves HTTP-FLV plays, direct and routed, with the `[http]` settings.
#[derive(Clone, Debug)]
pub struct FlvPlayer {
    hub: Hub,
    wait: Duration,
    merge_write: Duration,
    limits: ViewerLimits,
    audio: AudioMode,
    plays: PlayAccess,
    trusted: TrustedProxies,
}

/// A play request, recognised from its request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayRequest {
    kind: StreamKind,
    file: String,
    /// The URL's path (what a signature signs) and query.
    path: String,
    query: Option<String>,
    head_only: bool,
    http10: bool,
    /// The client asked to close after this response (`Connection: close`).
    close: bool,
    /// `Forwarded` / `X-Forwarded-For`, for a request from a trusted proxy.
    forwarding: Forwarding,
    /// The WebSocket upgrade headers (WS-FLV), if any.
    upgrade: UpgradeHeaders,
}

/// What a direct play left of the connection.
#[derive(Debug)]
pub enum AfterPlay {
    /// Closed, or to be closed.
    Closed,
    /// The response was complete: the connection may carry another request, whose first
    /// bytes (if any arrived meanwhile) are given back.
    KeptAlive(TcpStream, BytesMut),
}

impl PlayRequest {
    /// A play if `method` and `path` name one (`GET` or `HEAD` of `/live/…` or
    /// `/playback/…`, one path segment; the query is ignored). `close`: the request said
    /// `Connection: close`.
    pub fn parse(method: &str, path: &str, http10: bool, close: bool) -> Option<PlayRequest> {
        let head_only = match method {
            "GET" => false,
            "HEAD" => true,
            _ => return None,
        };
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path, None),
        };
        let (kind, file) = if let Some(file) = path.strip_prefix("/live/") {
            (StreamKind::Live, file)
        } else {
            (StreamKind::Playback, path.strip_prefix("/playback/")?)
        };
        if file.is_empty() || file.contains('/') {
            return None;
        }
        Some(PlayRequest {
            kind,
            file: file.to_owned(),
            path: path.to_owned(),
            query: query.map(str::to_owned),
            head_only,
            http10,
            close,
            forwarding: Forwarding::default(),
            upgrade: UpgradeHeaders::default(),
        })
    }

    /// Records a request header (only the forwarding and WebSocket ones are kept).
    pub fn add_header(&mut self, name: &str, value: &[u8]) {
        self.forwarding.add_header(name, value);
        self.upgrade.add_header(name, value);
    }

    /// Whether the request asks for WS-FLV (a WebSocket upgrade).
    pub fn is_websocket(&self) -> bool {
        self.upgrade.is_websocket()
    }

    fn version(&self) -> &'static str {
        if self.http10 { "1.0" } else { "1.1" }
    }

    /// The connection stays open after a complete response.
    fn keeps_alive(&self) -> bool {
        !self.http10 && !self.close
    }
}

impl FlvPlayer {
    /// A player with the `[http]` settings; viewers take audio as `audio` says.
    pub fn new(hub: Hub, settings: &HttpSettings, audio: AudioMode) -> FlvPlayer {
        FlvPlayer {
            hub,
            audio,
            wait: settings.flv_wait_timeout,
            // a viewer sleeping longer could overrun its queue (`http.viewer_max_lag`)
            merge_write: settings.flv_merge_write.min(MAX_MERGE),
            limits: ViewerLimits::new(settings),
            plays: PlayAccess::new(settings),
            trusted: TrustedProxies::new(&settings.trusted_proxies),
        }
    }

    /// The routes for plays that reach the router (see the module docs). A request
    /// carries the client's address as [`ClientAddr`] when the listener adds it.
    pub fn routes(&self) -> Router {
        Router::new()
            .route("/live/{file}", get(play_live).head(head_live))
            .route("/playback/{file}", get(play_playback).head(head_playback))
            .with_state(self.clone())
    }

    /// Answers `request` on `socket` (whose request head was read) until the stream ends,
    /// the viewer leaves or `shutdown`. `pending`: bytes read past the request head.
    pub async fn play(
        &self,
        mut socket: TcpStream,
        request: PlayRequest,
        pending: BytesMut,
        shutdown: CancellationToken,
    ) -> std::io::Result<AfterPlay> {
        let version = request.version();
        let mut pending = pending;
        if let Err(denied) = self.plays.check(&request.path, request.query.as_deref()) {
            return respond(socket, &request, pending, 403, &format!("{denied}\n")).await;
        }
        let key = match parse_stream_file(&request.file, request.kind) {
            Ok(key) => key,
            Err(message) => {
                return respond(socket, &request, pending, 400, &message).await;
            }
        };
        // WS-FLV: the same play with a WebSocket upgrade, checked (signature, path) as above
        let handshake = if request.upgrade.is_websocket() {
            match request
                .upgrade
                .handshake(!request.head_only, request.http10)
            {
                Ok(handshake) => Some(handshake),
                Err(message) => return respond(socket, &request, pending, 400, &message).await,
            }
        } else {
            None
        };
        if request.head_only {
            let status = if self.hub.is_live(&key) { 200 } else { 404 };
            let head = play_head(version, status, &request);
            socket.write_all(head.as_bytes()).await?;
            return Ok(kept_alive(socket, &request, pending));
        }
        let client = socket
            .peer_addr()
            .ok()
            .map(|addr| self.trusted.client(addr.ip(), &request.forwarding));
        let reader = {
            let wait = self.subscribe(&key, client);
            tokio::select! {
                reader = wait => reader,
                // a viewer that gives up waiting for the device stops counting as one
                () = client_left(&socket, &mut pending) => return Ok(AfterPlay::Closed),
                () = shutdown.cancelled() => return Ok(AfterPlay::Closed),
            }
        };
        let reader = match reader {
            Ok(reader) => reader,
            Err(refused) => {
                return respond(socket, &request, pending, refused.status, &refused.message).await;
            }
        };
        info!(stream = %key, client = ?client, websocket = handshake.is_some(), "flv viewer joined");
        // a fixed send buffer: what a viewer falls behind waits in its backlog, where the
        // limits see it, not in a kernel buffer autotuned to megabytes per viewer
        if let Err(error) = socket2::SockRef::from(&socket).set_send_buffer_size(VIEWER_SEND_BUFFER)
        {
            debug!(%error, "could not size a viewer's send buffer");
        }
        let (head, framing) = match &handshake {
            Some(handshake) => (handshake.response_head(), Framing::WebSocket),
            None if request.http10 => (play_head(version, 200, &request), Framing::Close),
            None => (play_head(version, 200, &request), Framing::Chunked),
        };
        socket.write_all(head.as_bytes()).await?;
        let output = if handshake.is_some() {
            WS_FLV_OUTPUT
        } else {
            FLV_OUTPUT
        };
        let (ended, socket) = serve_direct(
            socket,
            reader,
            output,
            framing,
            self.merge_write,
            self.limits.clone(),
            &mut pending,
            shutdown.clone(),
        )
        .await;
        debug!(stream = %key, ?ended, "flv viewer left");
        if framing == Framing::WebSocket {
            // the close frame went out (if the stream ended): the connection ends once the
            // client answers it
            if let Some(socket) = socket {
                tokio::select! {
                    () = close_after_close_frame(socket) => {}
                    () = shutdown.cancelled() => {}
                }
            }
            return Ok(AfterPlay::Closed);
        }
        Ok(match socket {
            Some(socket) if ended == Ended::Complete => kept_alive(socket, &request, pending),
            _ => AfterPlay::Closed,
        })
    }

    /// A reader of `key`: at once if it is live, else after a wait for the device, if the
    /// limits on waits allow one.
    async fn subscribe(&self, key: &StreamKey, client: Option<IpAddr>) -> Result<Reader, Refused> {
        if let Some(reader) = self.hub.subscribe_as(key, self.audio) {
            return Ok(reader);
        }
        let _slot = self.limits.start_wait(client)?;
        self.hub
            .subscribe_or_wait_as(key, self.wait, self.audio)
            .await
            .ok_or_else(|| Refused {
                status: 404,
                message: not_live_message(key, self.wait),
            })
    }
}

/// After the server's close frame: half-closes and waits (briefly) for the client to close
/// its side, so the close frame is not lost to a reset (RFC 6455 §7.1.1).
async fn close_after_close_frame(mut socket: TcpStream) {
    if socket.shutdown().await.is_err() {
        return;
    }
    let mut scratch = [0u8; 512];
    let drained = async {
        // the client's close frame (or anything else) until it closes
        while matches!(socket.read(&mut scratch).await, Ok(n) if n > 0) {}
    };
    // a client that does not close in time is cut off; nothing more to say to it
    let _ = tokio::time::timeout(CLOSE_LINGER, drained).await;
}

/// The connection after a complete response: kept if the request allows it.
fn kept_alive(socket: TcpStream, request: &PlayRequest, pending: BytesMut) -> AfterPlay {
    if request.keeps_alive() {
        AfterPlay::KeptAlive(socket, pending)
    } else {
        AfterPlay::Closed
    }
}

/// The head of a play response (or of its `HEAD`).
fn play_head(version: &str, status: u16, request: &PlayRequest) -> String {
    if status != 200 {
        return format!(
            "HTTP/{version} {status} {}\r\nContent-Length: 0\r\n{}\r\n",
            reason(status),
            connection_line(request)
        );
    }
    let delimiting = if request.http10 {
        ""
    } else {
        "Transfer-Encoding: chunked\r\n"
    };
    format!(
        "HTTP/{version} 200 OK\r\nContent-Type: video/x-flv\r\nCache-Control: no-cache\r\n\
         Access-Control-Allow-Origin: *\r\n{delimiting}{}\r\n",
        connection_line(request)
    )
}

fn connection_line(request: &PlayRequest) -> &'static str {
    if request.keeps_alive() {
        ""
    } else {
        "Connection: close\r\n"
    }
}

fn reason(status: u16) -> &'static str {
    StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

/// A short plain-text answer; the connection stays open if the request allows it.
async fn respond(
    mut socket: TcpStream,
    request: &PlayRequest,
    pending: BytesMut,
    status: u16,
    message: &str,
) -> std::io::Result<AfterPlay> {
    let mut answer = format!(
        "HTTP/{} {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\n{}\r\n",
        request.version(),
        reason(status),
        message.len(),
        connection_line(request),
    );
    if !request.head_only {
        answer.push_str(message);
    }
    socket.write_all(answer.as_bytes()).await?;
    if request.keeps_alive() {
        return Ok(AfterPlay::KeptAlive(socket, pending));
    }
    socket.shutdown().await?;
    Ok(AfterPlay::Closed)
}

async fn play_live(
    player: State<FlvPlayer>,
    client: Option<Extension<ClientAddr>>,
    file: Path<String>,
    request: Request,
) -> Response {
    play(player, client, request, file, StreamKind::Live).await
}

async fn play_playback(
    player: State<FlvPlayer>,
    client: Option<Extension<ClientAddr>>,
    file: Path<String>,
    request: Request,
) -> Response {
    play(player, client, request, file, StreamKind::Playback).await
}

async fn head_live(player: State<FlvPlayer>, uri: Uri, file: Path<String>) -> Response {
    head(player, &uri, file, StreamKind::Live)
}

async fn head_playback(player: State<FlvPlayer>, uri: Uri, file: Path<String>) -> Response {
    head(player, &uri, file, StreamKind::Playback)
}

/// 403 with the reason when `uri` is not a signed play URL (and plays need one).
fn unsigned_refusal(player: &FlvPlayer, uri: &Uri) -> Option<Response> {
    let denied = player.plays.check(uri.path(), uri.query()).err()?;
    Some((StatusCode::FORBIDDEN, format!("{denied}\n")).into_response())
}

/// `HEAD` of a play URL: the play's headers if the stream is live, else 404; no wait.
fn head(
    State(player): State<FlvPlayer>,
    uri: &Uri,
    Path(file): Path<String>,
    kind: StreamKind,
) -> Response {
    if let Some(refused) = unsigned_refusal(&player, uri) {
        return refused;
    }
    match parse_stream_file(&file, kind) {
        Ok(key) if player.hub.is_live(&key) => flv_headers(Body::empty()),
        Ok(key) => (StatusCode::NOT_FOUND, format!("stream {key} is not live\n")).into_response(),
        Err(message) => (StatusCode::BAD_REQUEST, message).into_response(),
    }
}

fn flv_headers(body: Body) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("video/x-flv"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn play(
    State(player): State<FlvPlayer>,
    client: Option<Extension<ClientAddr>>,
    mut request: Request,
    Path(file): Path<String>,
    kind: StreamKind,
) -> Response {
    if let Some(refused) = unsigned_refusal(&player, request.uri()) {
        return refused;
    }
    let key = match parse_stream_file(&file, kind) {
        Ok(key) => key,
        Err(message) => return (StatusCode::BAD_REQUEST, message).into_response(),
    };
    let mut upgrade = UpgradeHeaders::default();
    for (name, value) in request.headers() {
        upgrade.add_header(name.as_str(), value.as_bytes());
    }
    let handshake = if upgrade.is_websocket() {
        let http10 = request.version() < Version::HTTP_11;
        match upgrade.handshake(request.method() == Method::GET, http10) {
            Ok(handshake) => Some(handshake),
            Err(message) => return (StatusCode::BAD_REQUEST, message).into_response(),
        }
    } else {
        None
    };
    let client = client.map(|Extension(ClientAddr(ip))| ip);
    let reader = match player.subscribe(&key, client).await {
        Ok(reader) => reader,
        Err(refused) => {
            let status =
                StatusCode::from_u16(refused.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return (status, refused.message).into_response();
        }
    };
    if let Some(handshake) = handshake {
        let Some(slot) = request.extensions().get::<UpgradedPlay>().cloned() else {
            return (
                StatusCode::BAD_REQUEST,
                "WebSocket upgrades are served over HTTP/1.1 only\n",
            )
                .into_response();
        };
        info!(stream = %key, client = ?client, websocket = true, "flv viewer joined");
        let on_upgrade = hyper::upgrade::on(&mut request);
        let count = reader.count_as(WS_FLV_OUTPUT);
        slot.set(Box::pin(routed_websocket(
            on_upgrade,
            reader,
            count,
            player.merge_write,
        )));
        return (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (header::UPGRADE, HeaderValue::from_static("websocket")),
                (header::CONNECTION, HeaderValue::from_static("Upgrade")),
                (
                    header::SEC_WEBSOCKET_ACCEPT,
                    HeaderValue::from_str(handshake.accept())
                        .unwrap_or(HeaderValue::from_static("")),
                ),
            ],
        )
            .into_response();
    }
    info!(stream = %key, client = ?client, "flv viewer joined");
    let reader = reader.counted_as(FLV_OUTPUT);
    let muxer = FlvMuxer::new(reader.info(), reader.audio_mode());
    let merge = player.merge_write;
    let body = stream::unfold((reader, muxer), move |(mut reader, mut muxer)| async move {
        let mut out = BytesMut::new();
        loop {
            let Some(frame) = reader.recv().await else {
                debug!(stream = %reader.key(), "flv viewer stream ended");
                muxer.finish_into(&mut out);
                if out.is_empty() {
                    return None;
                }
                reader.add_bytes_out(out.len() as u64);
                return Some((Ok(out.freeze()), (reader, muxer)));
            };
            mux_batch(&frame, &mut reader, &mut muxer, &mut out, merge).await;
            if !out.is_empty() {
                reader.add_bytes_out(out.len() as u64);
                return Some((
                    Ok::<Bytes, std::convert::Infallible>(out.freeze()),
                    (reader, muxer),
                ));
            }
        }
    });
    flv_headers(Body::from_stream(body))
}

/// A WS-FLV play that goes on after hyper handed over its connection (a play after another
/// request on a kept-alive connection, or over TLS): `output::shared::http_serve` runs it on the
/// connection's task, under its shutdown.
#[derive(Clone, Default)]
pub struct UpgradedPlay(Arc<Mutex<Option<PlayFuture>>>);

type PlayFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

impl UpgradedPlay {
    fn set(&self, play: PlayFuture) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(play);
    }

    /// The play a handler left, once the connection was upgraded.
    pub fn take(&self) -> Option<impl Future<Output = ()> + Send + use<>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// One write's worth for a routed viewer: `frame` muxed into `out`, then, after `merge`
/// (a merged write lets frames gather without a wake-up per frame), whatever else is
/// already queued, up to [`MAX_WRITE`].
async fn mux_batch(
    frame: &crate::media::Frame,
    reader: &mut Reader,
    muxer: &mut FlvMuxer,
    out: &mut BytesMut,
    merge: Duration,
) {
    muxer.push_into(frame, out);
    if !merge.is_zero() {
        tokio::time::sleep(merge).await;
    }
    while out.len() < MAX_WRITE {
        match reader.try_recv() {
            Some(frame) => muxer.push_into(&frame, out),
            None => break,
        }
    }
}

/// Writes the stream to an upgraded connection as WS-FLV messages, one per write batch,
/// until the stream ends (then a close frame), the client leaves or sends its close, or
/// its socket takes nothing for [`ROUTED_WRITE_STALL`]. A reader that falls behind skips as
/// the hub's reader queue says (as a routed HTTP-FLV viewer).
async fn routed_websocket(
    on_upgrade: hyper::upgrade::OnUpgrade,
    mut reader: Reader,
    _count: ViewerCount,
    merge: Duration,
) {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(error) => {
            debug!(%error, "ws-flv upgrade failed");
            return;
        }
    };
    let (mut read, mut write) = tokio::io::split(TokioIo::new(upgraded));
    let mut muxer = FlvMuxer::new(reader.info(), reader.audio_mode());
    let mut client = ClientFrames::default();
    let mut scratch = [0u8; 512];
    let mut out = BytesMut::new();
    let ended = loop {
        let frame = tokio::select! {
            frame = reader.recv() => frame,
            n = read.read(&mut scratch) => match n {
                Ok(n) if n > 0 && !client.push(scratch.get(..n).unwrap_or_default()) => continue,
                _ => break false,
            },
        };
        let Some(frame) = frame else {
            muxer.finish_into(&mut out);
            break true;
        };
        mux_batch(&frame, &mut reader, &mut muxer, &mut out, merge).await;
        if write_message(&mut write, &out).await.is_err() {
            break false;
        }
        reader.add_bytes_out(out.len() as u64);
        out.clear();
    };
    if !ended {
        debug!(stream = %reader.key(), "ws-flv viewer left");
        return;
    }
    let end = async {
        write_message(&mut write, &out).await?;
        let close = close_frame(CLOSE_NORMAL, "stream ended");
        write.write_all(&close).await?;
        write.shutdown().await
    };
    if tokio::time::timeout(ROUTED_WRITE_STALL, end).await.is_ok() {
        // the client's close, or anything, until it closes
        let drained = async { while matches!(read.read(&mut scratch).await, Ok(n) if n > 0) {} };
        // a client that does not close in time is cut off; nothing more to say to it
        let _ = tokio::time::timeout(CLOSE_LINGER, drained).await;
    }
}

/// Writes `payload` as one binary message (nothing if empty), within
/// [`ROUTED_WRITE_STALL`].
async fn write_message<W: AsyncWriteExt + Unpin>(
    write: &mut W,
    payload: &[u8],
) -> std::io::Result<()> {
    if payload.is_empty() {
        return Ok(());
    }
    let head = FrameHead::binary(payload.len());
    let all = async {
        write.write_all(head.as_bytes()).await?;
        write.write_all(payload).await?;
        write.flush().await
    };
    tokio::time::timeout(ROUTED_WRITE_STALL, all)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

fn not_live_message(key: &StreamKey, wait: Duration) -> String {
    format!(
        "stream {key} is not live: the device did not connect within {}s\n",
        wait.as_secs()
    )
}

/// Parses `{device}_{channel}.flv`.
fn parse_stream_file(file: &str, kind: StreamKind) -> Result<StreamKey, String> {
    let usage = "expected /{live|playback}/{device}_{channel}.flv, e.g. /live/13800138000_1.flv";
    let stem = file
        .strip_suffix(".flv")
        .ok_or_else(|| format!("{:?}: {usage}\n", echo(file)))?;
    parse_stream_name(stem, kind, usage)
}

/// Parses `{device}_{channel}` (a play URL's stream name); `usage` says what was expected.
pub(crate) fn parse_stream_name(
    name: &str,
    kind: StreamKind,
    usage: &str,
) -> Result<StreamKey, String> {
    let (device, channel) = name
        .rsplit_once('_')
        .ok_or_else(|| format!("{:?}: {usage}\n", echo(name)))?;
    let device = DeviceId::parse(device).map_err(|e| format!("{e}\n"))?;
    let channel: u8 = channel
        .parse()
        .map_err(|_| format!("invalid channel {:?}: expected 0 to 255\n", echo(channel)))?;
    Ok(StreamKey::new(device, Channel(channel), kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_file_names_parse_to_canonical_keys() {
        let key = parse_stream_file("013800138000_1.flv", StreamKind::Live).unwrap();
        assert_eq!(key.to_string(), "live/13800138000_1");
        assert!(parse_stream_file("13800138000_1.mp4", StreamKind::Live).is_err());
        assert!(
            parse_stream_file("abc_1.flv", StreamKind::Live)
                .unwrap_err()
                .contains("invalid device id")
        );
        assert!(
            parse_stream_file("13800138000_x.flv", StreamKind::Live)
                .unwrap_err()
                .contains("channel")
        );
        assert!(
            parse_stream_file("000000000000_1.flv", StreamKind::Live)
                .unwrap_err()
                .contains("all zeros")
        );
        let long = format!("{}_1.flv", "9".repeat(5000));
        let message = parse_stream_file(&long, StreamKind::Live).unwrap_err();
        assert!(message.len() < 200, "{message}");
    }
}
