//! The client's pace on an HTTP/2 connection. hyper's HTTP/2 server keeps a connection as long
//! as the client keeps it, and waits on HTTP/2 flow control for as long as a client that stops
//! reading a response withholds its window: either holds the gateway's memory, and a stalled
//! response holds its upstream too. The connection task asks [`Pace::verdict`] on a short
//! interval: a connection without a stream for the client timeout is closed (GOAWAY), one with
//! a response its client has not asked more of for the client timeout is cut, as the HTTP/1.1
//! path does with a client that stops reading (nginx's `send_timeout` and idle timeout alike).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Bytes, Frame, SizeHint};
use tokio::time::Instant;

use crate::proxy::BoxError;

/// A stream is open while it holds one of these (its handler, its response body, its tunnel).
#[derive(Debug)]
pub(crate) struct StreamOpen {
    pace: Arc<Shared>,
    /// When the response body last handed hyper a frame that the client has not made room
    /// for since (milliseconds since the connection began, plus one; 0 when not waiting).
    handed: AtomicU64,
}

impl Drop for StreamOpen {
    fn drop(&mut self) {
        self.pace.last_closed.store(self.pace.now(), Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Shared {
    began: Instant,
    /// When the last stream closed (milliseconds since `began`).
    last_closed: AtomicU64,
    streams: Mutex<Vec<Weak<StreamOpen>>>,
}

impl Shared {
    fn now(&self) -> u64 {
        u64::try_from(self.began.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// One connection's streams, as the client paces them.
#[derive(Debug, Clone)]
pub(crate) struct Pace(Arc<Shared>);

/// What the connection task should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing.
    Fine,
    /// No stream for the client timeout: close (GOAWAY, then the connection ends).
    Idle,
    /// A response the client has not made room for in the client timeout: cut the connection.
    Stalled,
}

impl Pace {
    pub(crate) fn new() -> Self {
        Self(Arc::new(Shared { began: Instant::now(), last_closed: AtomicU64::new(0), streams: Mutex::default() }))
    }

    /// A stream begins.
    pub(crate) fn open(&self) -> Arc<StreamOpen> {
        let stream = Arc::new(StreamOpen { pace: Arc::clone(&self.0), handed: AtomicU64::new(0) });
        if let Ok(mut streams) = self.0.streams.lock() {
            streams.retain(|s| s.strong_count() > 0);
            streams.push(Arc::downgrade(&stream));
        }
        stream
    }

    /// How the client keeps pace, against `patience`.
    pub(crate) fn verdict(&self, patience: Duration) -> Verdict {
        self.verdict_at(self.0.now(), patience)
    }

    /// [`Self::verdict`] at `now` (milliseconds since the connection began).
    fn verdict_at(&self, now: u64, patience: Duration) -> Verdict {
        let patience = u64::try_from(patience.as_millis()).unwrap_or(u64::MAX);
        let Ok(mut streams) = self.0.streams.lock() else { return Verdict::Stalled };
        streams.retain(|s| s.strong_count() > 0);
        if streams.is_empty() {
            let quiet_since = self.0.last_closed.load(Ordering::Relaxed);
            return if now.saturating_sub(quiet_since) >= patience { Verdict::Idle } else { Verdict::Fine };
        }
        let stalled = streams.iter().filter_map(Weak::upgrade).any(|stream| {
            let handed = stream.handed.load(Ordering::Relaxed);
            handed != 0 && now.saturating_sub(handed - 1) >= patience
        });
        if stalled { Verdict::Stalled } else { Verdict::Fine }
    }
}

/// A response body that tells its stream's [`StreamOpen`] when it waits for the client: from
/// handing hyper a frame until hyper asks for the next, which it does once the client's window
/// has taken the one before (hyper polls the body first and then waits for window, so a last
/// frame counts too). Data is handed on in pieces of at most [`PIECE`]: the wait for one piece
/// is then a wait for the client, not for a large upstream chunk to trickle out to a slow but
/// live reader.
pub(crate) struct Paced<B> {
    inner: B,
    stream: Arc<StreamOpen>,
    /// What is left of a data frame larger than a piece.
    rest: Bytes,
}

/// The most data handed to hyper at once (HTTP/2's default frame size).
const PIECE: usize = 16 * 1024;

impl<B> Paced<B> {
    pub(crate) fn new(inner: B, stream: Arc<StreamOpen>) -> Self {
        Self { inner, stream, rest: Bytes::new() }
    }
}

impl<B> Body for Paced<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        this.stream.handed.store(0, Ordering::Relaxed);
        let polled = if this.rest.is_empty() {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        this.rest = data;
                        Poll::Ready(Some(Ok(Frame::data(this.rest.split_to(this.rest.len().min(PIECE))))))
                    }
                    Err(frame) => Poll::Ready(Some(Ok(frame))),
                },
                other => other,
            }
        } else {
            Poll::Ready(Some(Ok(Frame::data(this.rest.split_to(this.rest.len().min(PIECE))))))
        };
        if matches!(polled, Poll::Ready(Some(Ok(_)))) {
            this.stream.handed.store(this.stream.pace.now().saturating_add(1), Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(rest));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(rest));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn a_large_frame_is_handed_on_in_pieces_each_waiting_for_the_client() {
        let pace = Pace::new();
        let inner = Full::new(Bytes::from(vec![7u8; 40 * 1024])).map_err(|never| match never {});
        let mut body = Paced::new(inner, pace.open());
        assert_eq!(body.size_hint().exact(), Some(40 * 1024));
        let mut sizes = Vec::new();
        while let Some(frame) = body.frame().await {
            sizes.push(frame.unwrap().into_data().unwrap().len());
            assert_ne!(body.stream.handed.load(Ordering::Relaxed), 0, "handed, and not asked for more yet");
        }
        assert_eq!(sizes, [16 * 1024, 16 * 1024, 8 * 1024]);
        assert!(body.is_end_stream());
    }

    #[test]
    fn a_connection_without_streams_idles_out_and_one_with_a_waiting_response_stalls() {
        let pace = Pace::new();
        let patience = Duration::from_secs(60);
        let s = |seconds: u64| seconds * 1000;
        assert_eq!(pace.verdict_at(s(59), patience), Verdict::Fine);
        assert_eq!(pace.verdict_at(s(60), patience), Verdict::Idle, "no stream since the connection began");
        let stream = pace.open();
        assert_eq!(pace.verdict_at(s(200), patience), Verdict::Fine, "a stream waiting on its upstream is not idle");
        stream.handed.store(s(200) + 1, Ordering::Relaxed);
        assert_eq!(pace.verdict_at(s(259), patience), Verdict::Fine);
        assert_eq!(pace.verdict_at(s(260), patience), Verdict::Stalled);
        stream.handed.store(0, Ordering::Relaxed);
        assert_eq!(pace.verdict_at(s(260), patience), Verdict::Fine, "asked for more: not stalled");
        let second = pace.open();
        drop(stream);
        assert_eq!(pace.verdict_at(s(900), patience), Verdict::Fine, "one stream is still open");
        drop(second);
        let closed = pace.0.last_closed.load(Ordering::Relaxed);
        assert_eq!(pace.verdict_at(closed + s(59), patience), Verdict::Fine, "idle counts from the last stream's end");
        assert_eq!(pace.verdict_at(closed + s(60), patience), Verdict::Idle);
    }
}
