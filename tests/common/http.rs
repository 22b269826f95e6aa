//! A raw HTTP/1.1 client for kept-alive connections: response heads and chunked bodies.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest wait for the next bytes of a response.
const READ_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Appends what the socket brings next to `buf`; the connection must not end inside `what`,
/// nor stay silent for [`READ_WAIT`].
pub(crate) async fn read_more(socket: &mut TcpStream, buf: &mut Vec<u8>, what: &str) {
    let mut chunk = [0u8; 64 * 1024];
    let n = tokio::time::timeout(READ_WAIT, socket.read(&mut chunk))
        .await
        .unwrap_or_else(|_| panic!("nothing more for {READ_WAIT:?} inside {what}"))
        .unwrap();
    assert!(n > 0, "connection closed inside {what}");
    buf.extend_from_slice(&chunk[..n]);
}

/// Reads one HTTP/1.1 response head: status and lower-cased head text.
pub(crate) async fn read_head(socket: &mut TcpStream, buf: &mut Vec<u8>) -> (u16, String) {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            buf.drain(..end + 4);
            let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
            return (status, head);
        }
        read_more(socket, buf, "a response head").await;
    }
}

/// Sends a keep-alive HTTP/1.1 GET for `path` and reads the response head.
pub(crate) async fn get_kept_alive(
    socket: &mut TcpStream,
    buf: &mut Vec<u8>,
    path: &str,
) -> (u16, String) {
    socket
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .unwrap();
    read_head(socket, buf).await
}

/// Decodes a chunked body up to its last chunk, reading more from `socket` as needed.
pub(crate) async fn read_chunked(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        if let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") {
            let size_text = String::from_utf8_lossy(&buf[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.trim(), 16).unwrap();
            if buf.len() >= line_end + 2 + size + 2 {
                body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
                buf.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    return body;
                }
                continue;
            }
        }
        read_more(socket, buf, "a chunked body").await;
    }
}

/// The `content-length` of a lower-cased response head.
pub(crate) fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .expect("content-length")
        .trim()
        .parse()
        .unwrap()
}

/// Reads a body of `length` bytes that follows a head already read into `buf`.
pub(crate) async fn read_body(socket: &mut TcpStream, buf: &mut Vec<u8>, length: usize) -> Vec<u8> {
    while buf.len() < length {
        read_more(socket, buf, "a response body").await;
    }
    buf.drain(..length).collect()
}

/// Sends a raw request (a whole head, `\r\n\r\n` included).
pub(crate) async fn send(socket: &mut TcpStream, request: &str) {
    socket.write_all(request.as_bytes()).await.unwrap();
}
