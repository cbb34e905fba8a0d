//! The connections to an application whose upstream speaks HTTP/2. One multiplexed connection
//! for everyone let one caller starve the rest: a client holding as many long-lived streams
//! (WebSockets, gRPC streams, server-sent events) as the upstream allows on a connection queued
//! every other request behind them until its timeout. Here a stream goes to the first open
//! connection carrying fewer than [`STREAMS_PER_CONNECTION`] of the gateway's streams (below the
//! 100 that upstreams commonly allow); when every one carries that many a new connection is
//! opened, up to [`CONNECTIONS`], and past that the least loaded takes it. Each stream holds a
//! [`StreamSlot`] on its connection until its response body (or its tunnel) ends.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper::body::{Bytes, Frame, SizeHint};
use hyper::client::conn::http2::SendRequest;

use crate::proxy::{Body, BoxError};

/// Streams of the gateway's on one upstream connection before another is opened.
pub(crate) const STREAMS_PER_CONNECTION: usize = 64;
/// Connections to one HTTP/2 upstream at most.
pub(crate) const CONNECTIONS: usize = 8;

/// One connection and how many of the gateway's streams it carries.
struct Carrier {
    sender: SendRequest<Body>,
    streams: Arc<AtomicUsize>,
}

/// A stream's place on its connection, given back when dropped.
#[derive(Debug)]
pub(crate) struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connections of one HTTP/2 upstream.
#[derive(Default)]
pub(crate) struct Http2Pool {
    carriers: Mutex<Vec<Carrier>>,
}

impl Http2Pool {
    /// A connection for one more stream, and its slot there; `None` when a new connection
    /// should be opened (none is open, or every open one is full and there is room for more).
    pub(crate) fn pick(&self) -> Option<(SendRequest<Body>, StreamSlot)> {
        let mut carriers = self.carriers.lock().ok()?;
        carriers.retain(|carrier| !carrier.sender.is_closed());
        let load = |carrier: &Carrier| carrier.streams.load(Ordering::Relaxed);
        let chosen = match carriers.iter().find(|carrier| load(carrier) < STREAMS_PER_CONNECTION) {
            Some(free) => free,
            None if carriers.len() < CONNECTIONS => return None,
            None => carriers.iter().min_by_key(|carrier| load(carrier))?,
        };
        chosen.streams.fetch_add(1, Ordering::Relaxed);
        Some((chosen.sender.clone(), StreamSlot(Arc::clone(&chosen.streams))))
    }

    /// Adds a connection just opened, with the first stream's slot on it (kept out of the pool,
    /// though still used for that stream, when others opened meanwhile filled it).
    pub(crate) fn add(&self, sender: SendRequest<Body>) -> StreamSlot {
        let streams = Arc::new(AtomicUsize::new(1));
        if let Ok(mut carriers) = self.carriers.lock()
            && carriers.len() < CONNECTIONS
        {
            carriers.push(Carrier { sender, streams: Arc::clone(&streams) });
        }
        StreamSlot(streams)
    }
}

/// A response body that holds its stream's slot until it ends or is dropped.
pub(crate) struct Slotted {
    pub(crate) inner: Body,
    pub(crate) slot: Option<StreamSlot>,
}

impl hyper::body::Body for Slotted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.slot = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
