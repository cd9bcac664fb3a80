//! Idle detection for connections: the stream counts its reads and writes that moved bytes, and
//! [`Activity::idle_for`] resolves once none have moved for the given time. Used for client
//! connections (a connection waiting on a slow upstream counts as idle too, which is harmless:
//! it is closed gracefully, so the request in flight completes) and for upgraded tunnels.
//!
//! A read or write only bumps a counter (no clock is read on the data path: a tunnel reads and
//! writes for every message); the watcher looks at the counter [`CHECKS`] times per limit, so
//! it resolves after at least the limit and at most a quarter more of silence.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// A stream that records when bytes last moved through it.
pub struct Tracked<S> {
    inner: S,
    activity: Activity,
}

/// How many times per limit [`Activity::idle_for`] looks whether bytes moved.
const CHECKS: u32 = 4;

/// How often a [`Tracked`] stream has moved bytes.
#[derive(Clone)]
pub struct Activity {
    moves: Arc<AtomicU64>,
}

impl Activity {
    /// Counts a read or write that moved bytes. Only the task that owns the stream writes the
    /// counter, so a plain load and store is enough (no locked instruction).
    fn touch(&self) {
        let n = self.moves.load(Ordering::Relaxed);
        self.moves.store(n.wrapping_add(1), Ordering::Relaxed);
    }

    /// Resolves when nothing has been read or written for `limit` (at most a quarter more).
    pub async fn idle_for(&self, limit: Duration) {
        let tick = limit / CHECKS;
        let mut seen = self.moves.load(Ordering::Relaxed);
        let mut quiet = 0;
        loop {
            tokio::time::sleep_until(Instant::now() + tick).await;
            let now = self.moves.load(Ordering::Relaxed);
            if now == seen {
                quiet += 1;
                if quiet >= CHECKS {
                    return;
                }
            } else {
                seen = now;
                quiet = 0;
            }
        }
    }
}

impl<S> Tracked<S> {
    /// Wraps a stream; the [`Activity`] watches it.
    pub fn new(inner: S) -> (Self, Activity) {
        let activity = Activity {
            moves: Arc::new(AtomicU64::new(0)),
        };
        (
            Tracked {
                inner,
                activity: activity.clone(),
            },
            activity,
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
