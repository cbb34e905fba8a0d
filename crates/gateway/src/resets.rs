//! The stream resets the HTTP/2 layer makes on its own. The h2 crate refuses a malformed
//! request (a connection-specific header, a bad or missing pseudo-header, a body longer or
//! shorter than its `content-length`) with a `RST_STREAM` of `PROTOCOL_ERROR` before hyper, and
//! so the gateway, ever sees it: nothing reaches an upstream, but nothing reached the audit log
//! either. [`ResetWatch`] sits between hyper and the TLS stream and reads the frame headers of
//! what the gateway writes (a few arithmetic steps per frame; payloads are skipped, never
//! copied); the connection task records the first such reset as soon as it is written and
//! the rest of a connection's in one record when it ends, so a client cannot make the log pay a
//! record per stream (h2 closes a connection after 1,024 of them).

use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `RST_STREAM` (RFC 9113, section 6.4).
const RST_STREAM: u8 = 0x3;
/// The error code h2 resets a malformed request with.
const PROTOCOL_ERROR: u32 = 0x1;
const FRAME_HEADER_LEN: usize = 9;

/// What the watch saw on one connection, shared with its connection task.
#[derive(Debug, Default)]
pub(crate) struct Resets {
    /// Streams reset with `PROTOCOL_ERROR` so far.
    count: AtomicU64,
    /// The first of them.
    first: OnceLock<u32>,
    found: tokio::sync::Notify,
}

impl Resets {
    fn saw(&self, stream: u32) {
        if self.count.fetch_add(1, Ordering::Relaxed) == 0 {
            let _ = self.first.set(stream);
            self.found.notify_one();
        }
    }

    /// Resolves once the first reset has been written (at once if it already has).
    pub(crate) async fn first_found(&self) -> u32 {
        loop {
            if let Some(stream) = self.first.get() {
                return *stream;
            }
            self.found.notified().await;
        }
    }

    /// The first reset's stream, if there was one.
    pub(crate) fn first(&self) -> Option<u32> {
        self.first.get().copied()
    }

    /// How many streams were reset with `PROTOCOL_ERROR`.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Where the scan is in the stream of frames the server writes (it starts with a frame: the
/// server's connection preface is its SETTINGS frame).
#[derive(Debug, Default)]
struct FrameScan {
    head: [u8; FRAME_HEADER_LEN],
    /// Bytes of `head` filled.
    have: usize,
    /// Payload bytes of the current frame still to pass over.
    skip: usize,
    /// Inside a `RST_STREAM` payload: its stream, the error code read so far and how many of
    /// its four bytes.
    reset: Option<(u32, u32, usize)>,
}

impl FrameScan {
    fn feed(&mut self, mut bytes: &[u8], resets: &Resets) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = bytes.get(n..).unwrap_or_default();
                continue;
            }
            if let Some((stream, mut code, mut read)) = self.reset.take() {
                while read < 4
                    && let Some((byte, rest)) = bytes.split_first()
                {
                    code = code << 8 | u32::from(*byte);
                    read += 1;
                    bytes = rest;
                }
                if read < 4 {
                    self.reset = Some((stream, code, read));
                } else if code == PROTOCOL_ERROR {
                    resets.saw(stream);
                }
                continue;
            }
            let n = (FRAME_HEADER_LEN - self.have).min(bytes.len());
            if let (Some(into), Some(from)) = (self.head.get_mut(self.have..self.have + n), bytes.get(..n)) {
                into.copy_from_slice(from);
            }
            self.have += n;
            bytes = bytes.get(n..).unwrap_or_default();
            if self.have == FRAME_HEADER_LEN {
                self.have = 0;
                let [l0, l1, l2, kind, _flags, s0, s1, s2, s3] = self.head;
                let length = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
                let stream = u32::from_be_bytes([s0, s1, s2, s3]) & 0x7fff_ffff;
                if kind == RST_STREAM && length == 4 {
                    self.reset = Some((stream, 0, 0));
                } else {
                    self.skip = length;
                }
            }
        }
    }
}

/// The TLS stream of an HTTP/2 connection, its written frames watched for resets.
pub(crate) struct ResetWatch<T> {
    inner: T,
    scan: FrameScan,
    resets: std::sync::Arc<Resets>,
}

impl<T> ResetWatch<T> {
    pub(crate) fn new(inner: T, resets: std::sync::Arc<Resets>) -> Self {
        Self { inner, scan: FrameScan::default(), resets }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ResetWatch<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ResetWatch<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.scan.feed(buf.get(..written).unwrap_or_default(), &this.resets);
        Poll::Ready(Ok(written))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let written = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        let mut left = written;
        for buf in bufs {
            if left == 0 {
                break;
            }
            let n = left.min(buf.len());
            this.scan.feed(buf.get(..n).unwrap_or_default(), &this.resets);
            left -= n;
        }
        Poll::Ready(Ok(written))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut bytes = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, 0];
        bytes.extend_from_slice(&stream.to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn protocol_error_resets_are_found_however_the_writes_split_the_frames() {
        let mut written = frame(0x4, 0, &[0; 12]); // SETTINGS
        written.extend(frame(0x1, 1, &[0x88])); // HEADERS
        let mut data = vec![b'x'; 20_000];
        data.extend(frame(RST_STREAM, 9, &PROTOCOL_ERROR.to_be_bytes())); // payload, not a frame
        written.extend(frame(0x0, 1, &data)); // DATA
        written.extend(frame(RST_STREAM, 3, &8u32.to_be_bytes())); // CANCEL: not the client's fault
        written.extend(frame(RST_STREAM, 5, &PROTOCOL_ERROR.to_be_bytes()));
        written.extend(frame(0x8, 0, &[0, 0, 1, 0])); // WINDOW_UPDATE
        written.extend(frame(RST_STREAM, 7, &PROTOCOL_ERROR.to_be_bytes()));
        for piece in [1, 2, 4, 9, 13, 4096, written.len()] {
            let resets = Resets::default();
            let mut scan = FrameScan::default();
            for chunk in written.chunks(piece) {
                scan.feed(chunk, &resets);
            }
            assert_eq!((resets.first(), resets.count()), (Some(5), 2), "written {piece} bytes at a time");
        }
    }
}
