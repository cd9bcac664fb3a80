//! The byte tunnel of an upgraded connection (WebSocket): what one end sends is written to the
//! other, both ways at once, until both directions have ended or either fails.
//!
//! It copies between the two ends itself instead of through `tokio::io::copy_bidirectional`
//! over `TokioIo` adapters, so a read or write crosses as few layers as possible:
//! - the upstream end is taken back out of hyper's `Upgraded` as the plain `TcpStream` when the
//!   upstream is plain HTTP (bytes hyper already read past the 101 are sent on first);
//! - the client end stays hyper's `Upgraded` (hyper-util's protocol sniffing wraps it in a type
//!   that cannot be named), read through hyper's own `Read`/`Write`;
//! - no idle tracker of its own: every byte of the tunnel passes through the client
//!   connection, whose tracker ([`crate::idle::Tracked`], set up by the server) already records
//!   it, so the tunnel's idle timeout watches that connection's [`crate::idle::Activity`].
//!
//! One task copies both directions, with one buffer per direction allocated once; a second
//! task, woken only by its timer, closes the tunnel when it is idle.
//! End of input on one side is passed on as a shutdown of the other side's writing (half-close);
//! the other direction goes on until it ends too.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use hyper::upgrade::{OnUpgrade, Upgraded};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use hyper_util::rt::TokioIo;

/// Bytes read at once in each direction.
const BUF_BYTES: usize = 16 * 1024;

/// The upstream end as hyper's client leaves it for a plain-HTTP upstream.
type PlainUpstream = hyper_rustls::MaybeHttpsStream<TokioIo<TcpStream>>;

/// Starts the tunnel of a request that upgraded: once both upgrades resolve, copies between the
/// client and the upstream until both directions end or either fails. The tunnel counts as one
/// of `tunnels` (the client connection's) while it lives, and is closed when no byte has moved
/// through the client connection for `idle_timeout`.
///
/// The idle watch is a task of its own, woken only by its timer (once per `idle_timeout`), so
/// the copying task is not made to poll a timer on every message it moves.
pub(super) fn spawn(
    client: OnUpgrade,
    upstream: OnUpgrade,
    tunnels: super::Tunnels,
    idle_timeout: std::time::Duration,
) {
    let activity = tunnels.activity.clone();
    let guard = tunnels.open();
    let mut copying = tokio::spawn(async move {
        let _guard = guard;
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        if let Err(e) = run(client, upstream).await {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
        }
    });
    tokio::spawn(async move {
        tokio::select! {
            _ = &mut copying => {}
            _ = activity.idle_for(idle_timeout) => {
                // Dropping the copy closes both ends and the tunnel's count.
                copying.abort();
                tracing::debug!("upgraded connection closed after being idle");
            }
        }
    });
}

/// Copies between the ends, with the upstream end taken back out of hyper when it is a plain
/// TCP connection.
async fn run(client: Upgraded, upstream: Upgraded) -> io::Result<()> {
    match upstream.downcast::<PlainUpstream>() {
        Ok(parts) => match parts.io {
            hyper_rustls::MaybeHttpsStream::Http(tcp) => {
                copy(client, tcp.into_inner(), parts.read_buf).await
            }
            other => copy(client, other, parts.read_buf).await,
        },
        Err(upstream) => copy(client, upstream, bytes::Bytes::new()).await,
    }
}

/// The tunnel with its ends' types known; `from_upstream` is what hyper read from the upstream
/// past its 101, to be sent to the client first.
async fn copy(
    mut client: impl End,
    mut upstream: impl End,
    from_upstream: bytes::Bytes,
) -> io::Result<()> {
    let mut up = Half::new(&[]);
    let mut down = Half::new(&from_upstream);
    drop(from_upstream);
    std::future::poll_fn(|cx| {
        let to_upstream = up.poll(cx, &mut client, &mut upstream)?;
        let to_client = down.poll(cx, &mut upstream, &mut client)?;
        if to_upstream.is_ready() && to_client.is_ready() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await
}

/// One direction of the tunnel: a buffer, what of it is still to be written, and whether the
/// reading side has ended.
struct Half {
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    read_done: bool,
    need_flush: bool,
    done: bool,
}

impl Half {
    /// A direction whose first bytes to write are `pending`.
    fn new(pending: &[u8]) -> Half {
        let mut buf = vec![0; BUF_BYTES.max(pending.len())].into_boxed_slice();
        buf[..pending.len()].copy_from_slice(pending);
        Half {
            buf,
            pos: 0,
            end: pending.len(),
            read_done: false,
            need_flush: false,
            done: false,
        }
    }

    /// Moves what `from` has to `to`; ready once `from` has ended and `to` is shut down.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut impl End,
        to: &mut impl End,
    ) -> Poll<io::Result<()>> {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            while self.pos < self.end {
                let n = ready!(to.poll_write(cx, &self.buf[self.pos..self.end]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.need_flush = true;
            }
            if self.read_done {
                ready!(to.poll_flush(cx))?;
                ready!(to.poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            match from.poll_read(cx, &mut self.buf) {
                Poll::Ready(Ok(0)) => self.read_done = true,
                Poll::Ready(Ok(n)) => {
                    self.pos = 0;
                    self.end = n;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // Nothing more to read for now: what was written must not wait in a
                    // buffer of the writing side (TLS) for the next read.
                    if self.need_flush {
                        ready!(to.poll_flush(cx))?;
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// An end of a tunnel, read and written without adapters.
trait End {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>>;
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

/// hyper's `Read`/`Write` (an end hyper keeps: the client, or a TLS upstream).
macro_rules! hyper_end {
    ($t:ty) => {
        impl End for $t {
            fn poll_read(
                &mut self,
                cx: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                let mut buf = hyper::rt::ReadBuf::new(buf);
                ready!(hyper::rt::Read::poll_read(
                    Pin::new(self),
                    cx,
                    buf.unfilled()
                ))?;
                Poll::Ready(Ok(buf.filled().len()))
            }
            fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
                hyper::rt::Write::poll_write(Pin::new(self), cx, buf)
            }
            fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                hyper::rt::Write::poll_flush(Pin::new(self), cx)
            }
            fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                hyper::rt::Write::poll_shutdown(Pin::new(self), cx)
            }
        }
    };
}
hyper_end!(Upgraded);
hyper_end!(PlainUpstream);

/// tokio's `AsyncRead`/`AsyncWrite`.
macro_rules! tokio_end {
    ($t:ty) => {
        impl End for $t {
            fn poll_read(
                &mut self,
                cx: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                let mut buf = tokio::io::ReadBuf::new(buf);
                ready!(AsyncRead::poll_read(Pin::new(self), cx, &mut buf))?;
                Poll::Ready(Ok(buf.filled().len()))
            }
            fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
                AsyncWrite::poll_write(Pin::new(self), cx, buf)
            }
            fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                AsyncWrite::poll_flush(Pin::new(self), cx)
            }
            fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                AsyncWrite::poll_shutdown(Pin::new(self), cx)
            }
        }
    };
}
tokio_end!(TcpStream);
