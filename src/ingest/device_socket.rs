//! How a connection reads its device: as data arrives, or merged on shared ticks.
//!
//! Merged read (`ingest.merge_read`, like SRS's `mr`) trades latency for CPU: a device's
//! packets never wake the thread between ticks, and the thread wakes once per tick for all
//! its connections. A stream that has not started yet is still read as data arrives, so
//! merging never delays a cold start (see [`DeviceSocket::started`]).

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Read buffer growth step: one read takes up to this much.
pub(super) const READ_CHUNK: usize = 64 * 1024;

/// Most bytes one tick reads from a device, so a device that sends as fast as it is read
/// cannot keep a thread (and every other connection on it) in one read loop.
const MAX_TICK_READ: usize = 4 * 1024 * 1024;

/// Device bytes a merged read's socket must hold per second of its period: 2 MiB, a
/// 16 Mbit/s device (twice the fastest vehicle cameras).
const TICKED_BYTES_PER_SECOND: usize = 2 * 1024 * 1024;

/// The receive buffer a socket read every `period` asks for. A ticked socket is read once
/// per period, so the kernel must hold a whole period of the device's stream; its buffer
/// autotuning only grows a buffer that is read as data arrives, and a connection switched
/// over mid-stream can stay at the initial ~95 KB window (then a 1 Mbit/s device falls
/// behind on 1 s ticks). A fixed size also bounds what a flooding device can queue in the
/// kernel. The kernel caps the request at `net.core.rmem_max` and doubles it for its own
/// bookkeeping.
fn receive_buffer(period: Duration) -> usize {
    let per_period = TICKED_BYTES_PER_SECOND as f64 * period.as_secs_f64();
    (per_period as usize).max(256 * 1024)
}

/// How a connection reads its device.
pub(super) enum DeviceSocket {
    /// As data arrives (the event loop wakes the task). With `merge_after_start`, only
    /// until the stream has started; merged reads with that period follow.
    Polled {
        socket: TcpStream,
        merge_after_start: Option<Duration>,
    },
    /// Merged read: on every tick of the period, whatever has arrived. The socket is not
    /// registered with the event loop at all, so a device's packets never wake the thread
    /// between ticks.
    Ticked {
        socket: std::net::TcpStream,
        period: Duration,
        /// The last read stopped at [`MAX_TICK_READ`] with more waiting: read again at once.
        more: bool,
    },
    /// Only while [`DeviceSocket::started`] switches over, or after that failed.
    Lost,
}

impl DeviceSocket {
    pub(super) fn new(socket: TcpStream, merge_read: Duration) -> DeviceSocket {
        DeviceSocket::Polled {
            socket,
            merge_after_start: (!merge_read.is_zero()).then_some(merge_read),
        }
    }

    /// Whether reads are still waiting for [`DeviceSocket::started`] to merge them.
    pub(super) fn awaits_start(&self) -> bool {
        matches!(
            self,
            DeviceSocket::Polled {
                merge_after_start: Some(_),
                ..
            }
        )
    }

    /// The stream has started (a viewer has something to start playing from): merged
    /// reads from now on, if configured. The socket leaves the event loop.
    pub(super) fn started(&mut self) -> std::io::Result<()> {
        let period = match self {
            DeviceSocket::Polled {
                merge_after_start: Some(period),
                ..
            } => *period,
            _ => return Ok(()),
        };
        let DeviceSocket::Polled { socket, .. } = std::mem::replace(self, DeviceSocket::Lost)
        else {
            return Ok(());
        };
        // stays non-blocking
        let socket = socket.into_std()?;
        socket2::SockRef::from(&socket).set_recv_buffer_size(receive_buffer(period))?;
        *self = DeviceSocket::Ticked {
            socket,
            period,
            more: false,
        };
        Ok(())
    }

    /// Appends what the device sent to `buf`; `Ok(0)` once it closed. Cancel-safe.
    pub(super) async fn read_buf(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        let (socket, period, more) = match self {
            DeviceSocket::Polled { socket, .. } => return socket.read_buf(buf).await,
            DeviceSocket::Ticked {
                socket,
                period,
                more,
            } => (socket, *period, more),
            DeviceSocket::Lost => {
                return Err(std::io::Error::other(
                    "socket lost while switching to merged reads",
                ));
            }
        };
        thread_local! {
            /// Where ticked reads land before they join the decoder's buffer: one per
            /// thread, so a read neither zeroes a buffer nor needs `unsafe` to fill spare
            /// capacity.
            static SCRATCH: std::cell::RefCell<Vec<u8>> =
                std::cell::RefCell::new(vec![0; READ_CHUNK]);
        }
        loop {
            if std::mem::take(more) {
                // let the thread's other connections run between two big reads
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep_until(next_tick(period)).await;
            }
            // everything that arrived since the last tick (up to a bound): a device sending
            // more than a chunk per tick must not fall further behind every tick
            let read: std::io::Result<(usize, bool)> = SCRATCH.with_borrow_mut(|chunk| {
                let mut total = 0;
                loop {
                    let n = match std::io::Read::read(socket, chunk) {
                        Ok(n) => n,
                        // what this tick already read is decoded first; the error (a
                        // reset, say) comes back on the next one
                        Err(_) if total > 0 => return Ok((total, false)),
                        Err(error) => return Err(error),
                    };
                    buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                    total += n;
                    // a short read drained the socket (0: closed, seen on the next tick if
                    // this one brought data)
                    if n < chunk.len() {
                        return Ok((total, false));
                    }
                    if total >= MAX_TICK_READ {
                        return Ok((total, true));
                    }
                }
            });
            match read {
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error),
                Ok((total, again)) => {
                    *more = again;
                    return Ok(total);
                }
            }
        }
    }
}

/// The next multiple of `period` since the process's first call. Every connection's merged
/// read wakes on the same ticks, so a thread wakes once per tick for all of them instead of
/// once per connection (on a virtual machine a wake-up costs more than a read).
fn next_tick(period: Duration) -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    let period_ns = period.as_nanos().max(1);
    let elapsed = Instant::now().saturating_duration_since(epoch).as_nanos();
    let ticks = elapsed / period_ns + 1;
    let offset = u64::try_from(ticks * period_ns).unwrap_or(u64::MAX);
    epoch + Duration::from_nanos(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_reads_share_ticks() {
        let period = Duration::from_millis(100);
        let now = Instant::now();
        let tick = next_tick(period);
        assert!(tick > now && tick <= now + period + Duration::from_millis(5));
        // every connection asking within one period wakes on the same tick (or, across a
        // tick boundary, on the one after it)
        let again = next_tick(period);
        assert!(
            again == tick || again == tick + period,
            "{again:?} vs {tick:?}"
        );
    }
}
