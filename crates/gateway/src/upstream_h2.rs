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
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    carriers: Vec<Carrier>,
    /// Connections being opened: counted against [`CONNECTIONS`] too, so that a burst of
    /// requests finding every connection full opens the few it may, not one each.
    opening: usize,
}

/// What [`Http2Pool::pick`] says to do.
enum Pick<'p> {
    Use(SendRequest<Body>, StreamSlot),
    Open(Opening<'p>),
    /// Every connection allowed is being opened: try again shortly.
    Wait,
}

/// A connection being opened; given up (and no longer counted) when dropped unopened.
struct Opening<'p>(&'p Http2Pool);

impl Opening<'_> {
    /// The connection opened, with the first stream's slot on it.
    fn opened(self, sender: SendRequest<Body>) -> StreamSlot {
        let streams = Arc::new(AtomicUsize::new(1));
        if let Ok(mut state) = self.0.state.lock() {
            state.carriers.push(Carrier { sender, streams: Arc::clone(&streams) });
        }
        StreamSlot(streams)
    }
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.0.state.lock() {
            state.opening = state.opening.saturating_sub(1);
        }
    }
}

impl Http2Pool {
    fn pick(&self) -> Pick<'_> {
        let Ok(mut state) = self.state.lock() else { return Pick::Wait };
        state.carriers.retain(|carrier| !carrier.sender.is_closed());
        let load = |carrier: &Carrier| carrier.streams.load(Ordering::Relaxed);
        let free = state.carriers.iter().find(|carrier| load(carrier) < STREAMS_PER_CONNECTION);
        let chosen = match free {
            Some(free) => free,
            None if state.carriers.len() + state.opening < CONNECTIONS => {
                state.opening += 1;
                return Pick::Open(Opening(self));
            }
            None => match state.carriers.iter().min_by_key(|carrier| load(carrier)) {
                Some(least) => least,
                None => return Pick::Wait,
            },
        };
        chosen.streams.fetch_add(1, Ordering::Relaxed);
        Pick::Use(chosen.sender.clone(), StreamSlot(Arc::clone(&chosen.streams)))
    }

    /// A connection for one more stream and the stream's slot on it: an open one with room,
    /// else a new one from `connect` while fewer than [`CONNECTIONS`] are open or opening, else
    /// the least loaded. (The caller bounds the whole by its upstream timeout.)
    pub(crate) async fn stream<F, C>(&self, connect: C) -> Result<(SendRequest<Body>, StreamSlot), String>
    where
        C: Fn() -> F,
        F: std::future::Future<Output = Result<SendRequest<Body>, String>>,
    {
        loop {
            match self.pick() {
                Pick::Use(sender, slot) => return Ok((sender, slot)),
                Pick::Open(opening) => {
                    let sender = connect().await?;
                    let slot = opening.opened(sender.clone());
                    return Ok((sender, slot));
                }
                Pick::Wait => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            }
        }
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
