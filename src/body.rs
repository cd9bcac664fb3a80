//! The body type every response and forwarded request uses: a boxed stream of bytes, so
//! upstream bodies stream through without being buffered and local answers are one chunk.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};

/// Any error a body stream can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming body.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body of one chunk.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A request body read whole before it is forwarded (the HTTP/1.1 fast path's small bodies), in
/// the chunks it arrived in: nothing is copied to join them, since the upstream client writes
/// them with one vectored write, and memory is taken as the bytes come, not for the length a
/// client announced.
#[derive(Debug, Clone, Default)]
pub struct Buffered {
    chunks: std::collections::VecDeque<Bytes>,
    len: u64,
}

impl Buffered {
    /// Adds the next chunk.
    pub fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len() as u64;
            self.chunks.push_back(chunk);
        }
    }

    /// How many bytes it holds.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunks, in order.
    pub fn chunks(&self) -> impl Iterator<Item = &Bytes> {
        self.chunks.iter()
    }

    /// As a [`Body`] whose size is known exactly.
    pub fn into_body(self) -> Body {
        if self.is_empty() {
            empty()
        } else {
            self.map_err(|never| match never {}).boxed()
        }
    }
}

impl http_body::Body for Buffered {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let next = self.chunks.pop_front();
        if let Some(chunk) = &next {
            self.len -= chunk.len() as u64;
        }
        std::task::Poll::Ready(next.map(|c| Ok(http_body::Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.len)
    }
}

/// Wraps any body with a compatible error type.
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// Why reading a client's request body failed. Either way it is the client's doing, never the
/// upstream's: [`crate::error::HttpError::client_body`] answers 408 or 400 for it.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// No byte of the body arrived for `limits.body_timeout`.
    #[error("no request body data for {0:?}")]
    Timeout(std::time::Duration),
    /// The body's framing was malformed (a bad chunk size), it ended short of its
    /// Content-Length, or the client's connection or stream broke.
    #[error("the request body was malformed or broke off: {0}")]
    Broken(BoxError),
}

/// A client's request body with a read timeout, like nginx's `client_body_timeout`: the time
/// allowed between two successive reads, i.e. how long the gateway waits for the next bytes
/// once it wants them. It is not a limit on the whole body (a large upload at a steady pace
/// never hits it), and a wait caused by the upstream not reading does not count: the clock only
/// runs while the reader is waiting on the client. Its errors are [`ClientBodyError`]s.
pub struct ClientBody<B> {
    inner: B,
    timeout: std::time::Duration,
    /// Made on the first wait; most bodies arrive with their head and never need it.
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    waiting: bool,
}

impl<B> ClientBody<B> {
    pub fn new(inner: B, timeout: std::time::Duration) -> Self {
        ClientBody {
            inner,
            timeout,
            deadline: None,
            waiting: false,
        }
    }
}

impl<B> http_body::Body for ClientBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::future::Future as _;
        use std::task::Poll;
        let this = self.get_mut();
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                Poll::Ready(Some(Err(Box::new(ClientBodyError::Broken(e.into())))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let timeout = this.timeout;
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if !this.waiting {
                    this.waiting = true;
                    deadline
                        .as_mut()
                        .reset(tokio::time::Instant::now() + timeout);
                }
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Some(Err(Box::new(ClientBodyError::Timeout(timeout)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
