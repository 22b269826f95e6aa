//! One RTMP publishing connection: TCP, handshake, `connect`, `createStream`, `publish`,
//! then FLV tags as RTMP audio, video and data messages.
//!
//! The protocol is `rml_rtmp`'s sans-IO [`Handshake`] and [`ClientSession`] (chunking,
//! acknowledgements, command transactions): bytes in, packets out. This file is the thin
//! loop around them: it writes what they return and reads what the server sends.

use std::time::Duration;

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
    PublishRequestType, StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{PushError, RtmpTarget};
use crate::codec::flv::{self, Tag, TagType};

/// Outgoing chunk size: large enough that a video frame is a few chunks, small enough for
/// every server (nginx-rtmp accepts up to 16 MB, SRS up to 64 KB).
const CHUNK_SIZE: u32 = 60_000;

/// Bytes read from the server at a time (it sends little: acknowledgements, statuses).
const READ_BUF: usize = 4096;

/// A connection publishing one stream.
pub(super) struct Connection {
    socket: TcpStream,
    session: ClientSession,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.socket.peer_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects and publishes `target`; returns once the server accepted the publish.
    pub(super) async fn open(target: &RtmpTarget) -> Result<Connection, PushError> {
        let socket = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|error| PushError::Unreachable(format!("{}: {error}", target.address())))?;
        socket.set_nodelay(true).map_err(PushError::Io)?;
        let mut connection = {
            let config = ClientSessionConfig {
                chunk_size: CHUNK_SIZE,
                tc_url: Some(target.tc_url()),
                ..ClientSessionConfig::new()
            };
            let (session, _) = ClientSession::new(config).map_err(protocol)?;
            Connection { socket, session }
        };
        let rest = connection.handshake().await?;
        let request = connection
            .session
            .request_connection(target.app.clone())
            .map_err(protocol)?;
        connection.write_results(vec![request]).await?;
        let mut events = connection.session.handle_input(&rest).map_err(protocol)?;
        let mut publish_requested = false;
        loop {
            for event in connection.write_results(events).await? {
                match event {
                    ClientSessionEvent::ConnectionRequestAccepted if !publish_requested => {
                        publish_requested = true;
                        let publish = connection
                            .session
                            .request_publishing(target.stream.clone(), PublishRequestType::Live)
                            .map_err(protocol)?;
                        connection.write_results(vec![publish]).await?;
                    }
                    ClientSessionEvent::ConnectionRequestRejected { description } => {
                        return Err(PushError::Refused(format!("connect: {description}")));
                    }
                    ClientSessionEvent::PublishRequestAccepted => return Ok(connection),
                    // a publish refused (SRS and nginx-rtmp: NetStream.Publish.BadName when
                    // the stream is already published)
                    ClientSessionEvent::UnhandleableOnStatusCode { code } if is_refusal(&code) => {
                        return Err(PushError::Refused(code));
                    }
                    _ => {}
                }
            }
            events = connection.read_some().await?;
        }
    }

    /// The RTMP handshake (C0+C1, S0+S1+S2, C2); returns bytes read past its end.
    async fn handshake(&mut self) -> Result<Vec<u8>, PushError> {
        let mut handshake = Handshake::new(PeerType::Client);
        let c0c1 = handshake
            .generate_outbound_p0_and_p1()
            .map_err(|e| PushError::Protocol(format!("handshake: {e:?}")))?;
        self.socket.write_all(&c0c1).await.map_err(PushError::Io)?;
        let mut buf = vec![0u8; READ_BUF];
        loop {
            let n = self.socket.read(&mut buf).await.map_err(PushError::Io)?;
            let Some(read) = buf.get(..n).filter(|r| !r.is_empty()) else {
                return Err(PushError::Closed);
            };
            match handshake
                .process_bytes(read)
                .map_err(|e| PushError::Protocol(format!("handshake: {e:?}")))?
            {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    if !response_bytes.is_empty() {
                        self.socket
                            .write_all(&response_bytes)
                            .await
                            .map_err(PushError::Io)?;
                    }
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    self.socket
                        .write_all(&response_bytes)
                        .await
                        .map_err(PushError::Io)?;
                    return Ok(remaining_bytes);
                }
            }
        }
    }

    /// Reads what the server sent and feeds the session (for the set-up exchange).
    async fn read_some(&mut self) -> Result<Vec<ClientSessionResult>, PushError> {
        let mut buf = [0u8; READ_BUF];
        let n = self.socket.read(&mut buf).await.map_err(PushError::Io)?;
        let read = buf.get(..n).unwrap_or_default();
        if read.is_empty() {
            return Err(PushError::Closed);
        }
        self.session.handle_input(read).map_err(protocol)
    }

    /// Writes the session's outbound packets; returns its events.
    async fn write_results(
        &mut self,
        results: Vec<ClientSessionResult>,
    ) -> Result<Vec<ClientSessionEvent>, PushError> {
        let mut out = Vec::new();
        let events = split_results(results, &mut out);
        if !out.is_empty() {
            self.socket.write_all(&out).await.map_err(PushError::Io)?;
        }
        Ok(events)
    }

    /// Whatever the server sends while publishing (acknowledgements, pings, a status that
    /// ends the publish) is read and answered; `Err` when it closed the connection.
    pub(super) async fn serve_input(&mut self) -> Result<(), PushError> {
        self.socket.readable().await.map_err(PushError::Io)?;
        let mut buf = [0u8; READ_BUF];
        let n = match self.socket.try_read(&mut buf) {
            Ok(0) => return Err(PushError::Closed),
            Ok(n) => n,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(error) => return Err(PushError::Io(error)),
        };
        let results = self
            .session
            .handle_input(buf.get(..n).unwrap_or_default())
            .map_err(protocol)?;
        for event in self.write_results(results).await? {
            if let ClientSessionEvent::UnhandleableOnStatusCode { code } = event {
                if is_refusal(&code) || code.contains("Unpublish") {
                    return Err(PushError::Refused(code));
                }
            }
        }
        Ok(())
    }

    /// Sends FLV bytes from the muxer (whole tags, after the file header) as RTMP messages,
    /// in one socket write; a write the server takes nothing of for `stall` fails.
    pub(super) async fn send_flv(&mut self, flv: Bytes, stall: Duration) -> Result<(), PushError> {
        let mut out = Vec::with_capacity(flv.len() + 256);
        for tag in flv::tags(flv) {
            if let Some(result) = self.message(tag)? {
                split_results(vec![result], &mut out);
            }
        }
        if out.is_empty() {
            return Ok(());
        }
        tokio::time::timeout(stall, self.socket.write_all(&out))
            .await
            .map_err(|_| PushError::Stalled(stall))?
            .map_err(PushError::Io)
    }

    /// Ends the publish politely (deleteStream), then closes.
    pub(super) async fn close(mut self, wait: Duration) {
        if let Ok(results) = self.session.stop_publishing() {
            // the server may be gone already: closing is all that is left either way
            let _ = tokio::time::timeout(wait, self.write_results(results)).await;
        }
        let _ = tokio::time::timeout(wait, self.socket.shutdown()).await;
    }

    /// One FLV tag as an RTMP message.
    fn message(&mut self, tag: Tag) -> Result<Option<ClientSessionResult>, PushError> {
        let timestamp = RtmpTimestamp::new(tag.timestamp);
        let result = if tag.tag_type == TagType::Audio as u8 {
            self.session.publish_audio_data(tag.body, timestamp, false)
        } else if tag.tag_type == TagType::Video as u8 {
            self.session.publish_video_data(tag.body, timestamp, false)
        } else if tag.tag_type == TagType::Script as u8 {
            self.session.publish_metadata(&metadata(&tag.body))
        } else {
            return Ok(None);
        };
        result.map(Some).map_err(protocol)
    }
}

/// onMetaData as the muxer wrote it, in `rml_rtmp`'s terms (it sends it with
/// `@setDataFrame`, as encoders do).
fn metadata(body: &[u8]) -> StreamMetadata {
    let mut metadata = StreamMetadata::new();
    for (name, value) in flv::metadata_numbers(body) {
        // the values are small non-negative integers (sizes, codec ids, rates)
        let int = value as u32;
        match name.as_str() {
            "width" => metadata.video_width = Some(int),
            "height" => metadata.video_height = Some(int),
            "videocodecid" => metadata.video_codec_id = Some(int),
            "audiocodecid" => metadata.audio_codec_id = Some(int),
            "audiosamplerate" => metadata.audio_sample_rate = Some(int),
            "stereo" => metadata.audio_is_stereo = Some(int != 0),
            _ => {}
        }
    }
    metadata.encoder = Some(concat!("jt1078-gateway ", env!("CARGO_PKG_VERSION")).to_owned());
    metadata
}

/// Appends the packets of `results` to `out`; returns the events.
fn split_results(results: Vec<ClientSessionResult>, out: &mut Vec<u8>) -> Vec<ClientSessionEvent> {
    let mut events = Vec::new();
    for result in results {
        match result {
            ClientSessionResult::OutboundResponse(packet) => out.extend_from_slice(&packet.bytes),
            ClientSessionResult::RaisedEvent(event) => events.push(event),
            ClientSessionResult::UnhandleableMessageReceived(_) => {}
        }
    }
    events
}

/// Whether an onStatus code says the server refused (`…Error`, `…BadName`, `…Failed`,
/// `…Rejected`).
fn is_refusal(code: &str) -> bool {
    ["Error", "Bad", "Failed", "Reject"]
        .iter()
        .any(|word| code.contains(word))
}

fn protocol(error: impl std::fmt::Debug) -> PushError {
    PushError::Protocol(format!("{error:?}"))
}
