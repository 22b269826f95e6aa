//! A chunked-transfer decoder for the load runner's viewers (RFC 9112 §7.1): the gateway
//! answers HTTP/1.1 plays with `Transfer-Encoding: chunked` and ends a stream with the last
//! chunk. Sans-IO: raw bytes in, body bytes out. Written here rather than taken from
//! hyper: the runner reads raw sockets on a timer (see `viewer`), which hyper's client
//! cannot do.

use anyhow::{Context, bail};
use bytes::{Buf, BytesMut};

/// Where the decoder is in the chunked body.
#[derive(Debug, Default)]
pub(crate) struct Dechunker {
    /// Body bytes left in the current chunk, then its CRLF.
    left: usize,
    in_chunk: bool,
    /// The last chunk arrived: the body is complete.
    ended: bool,
}

impl Dechunker {
    /// Moves what `raw` holds of the body to `body`; leaves an incomplete size line in
    /// `raw`. True once the last chunk arrived.
    pub(crate) fn decode(
        &mut self,
        raw: &mut BytesMut,
        body: &mut BytesMut,
    ) -> anyhow::Result<bool> {
        while !self.ended {
            if self.in_chunk {
                if self.left > 0 {
                    let n = self.left.min(raw.len());
                    body.extend_from_slice(&raw[..n]);
                    raw.advance(n);
                    self.left -= n;
                    if self.left > 0 {
                        break;
                    }
                }
                if raw.len() < 2 {
                    break;
                }
                if &raw[..2] != b"\r\n" {
                    bail!("a chunk does not end with CRLF");
                }
                raw.advance(2);
                self.in_chunk = false;
                continue;
            }
            let Some(line) = raw.windows(2).position(|w| w == b"\r\n") else {
                if raw.len() > 64 {
                    bail!("chunk size line too long");
                }
                break;
            };
            let text = std::str::from_utf8(&raw[..line]).context("chunk size line")?;
            let size = text.split(';').next().unwrap_or_default().trim();
            let size =
                usize::from_str_radix(size, 16).with_context(|| format!("chunk size {size:?}"))?;
            raw.advance(line + 2);
            if size == 0 {
                // no trailers from the gateway: the final CRLF ends the body
                if raw.len() < 2 {
                    // wait for it
                    self.ended = true;
                    break;
                }
                raw.advance(2);
                self.ended = true;
                break;
            }
            self.left = size;
            self.in_chunk = true;
        }
        Ok(self.ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_split_of_a_chunked_body_decodes_to_the_body() {
        let wire = b"5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n";
        for split in 0..wire.len() {
            let (mut raw, mut body, mut d) =
                (BytesMut::new(), BytesMut::new(), Dechunker::default());
            raw.extend_from_slice(&wire[..split]);
            let early = d.decode(&mut raw, &mut body).unwrap();
            raw.extend_from_slice(&wire[split..]);
            let ended = d.decode(&mut raw, &mut body).unwrap();
            assert!(
                ended && (!early || split >= wire.len() - 2),
                "split {split}"
            );
            assert_eq!(&body[..], b"hello world", "split {split}");
        }
    }
}
