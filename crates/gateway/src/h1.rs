//! HTTP/1.1 from clients, on the gateway's own connection loop rather than hyper's: the request
//! head is parsed by httparse (the parser hyper itself uses) into the same parts the HTTP/2 path
//! checks, so [`canonical::canonicalize`] sees every header as sent — `Content-Length` beside
//! `Transfer-Encoding`, a second `Host` — and refuses it, instead of a framework resolving it
//! first. The framing of both bodies is this module's, and strict: one `Content-Length` or
//! `chunked` alone, hexadecimal chunk sizes without signs or spaces, CRLF only; anything else
//! ends the connection.
//!
//! The upstream leg runs in the request's own task, on an idle connection of the application's
//! pool (checked alive before use) or a new one, written in one piece when the body is already
//! here; the response head is parsed, cleaned of hop-by-hop headers and re-framed for the
//! client, and the connection goes back to the pool once its response has been read to the end.
//! No per-request task, channel or header map on the response side: this is the path the
//! throughput of the gateway depends on.
//!
//! What the path keeps from the shared pipeline ([`Gateway::screen`], [`Gateway::authorize`]):
//! audit before allow, every refusal recorded, the identity headers of every family removed and
//! the signed assertion added after `Connection:` was applied. Long-lived responses and
//! WebSockets are authorized again every `reauthorize_every` and cut (the connection closed, the
//! chunked body never terminated) when access ends.

use std::io::{self, Write as _};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::assertion::ASSERTION_HEADER;
use crate::canonical;
use crate::proxy::{
    AUDIT_RECORD_HEADER, Admitted, AppRuntime, Connection, Gateway, MAX_SIGNED_BODY, Refused, Screened, Session,
    Unreadable, Upstream, bump, empty_body, generic, generic_text, is_websocket_upgrade, stopped,
};
use crate::share::HeldBody;

/// The largest request or response head, and the most header fields in one.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;
/// How long a client may take to send a head once it has begun. How long it may send or take
/// nothing at all is the gateway's `client_timeout` (idle keep-alive, a stalled request body, a
/// response it stops reading).
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an upstream may take none of a handshake the gateway writes to it.
const UPSTREAM_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// What one read asks for.
const READ_SIZE: usize = 16 * 1024;
/// A body this small, left unread by a refusal, is read and dropped so the connection can go
/// on; a larger one closes the connection.
const MAX_DRAIN: u64 = 64 * 1024;
/// How long an upstream that stopped taking the request body has to have its answer read.
const EARLY_ANSWER_WAIT: Duration = Duration::from_secs(2);
/// After closing with the client's request unread: how long, and how much, is read and dropped.
const LINGER: Duration = Duration::from_secs(2);
const MAX_LINGER_BYTES: usize = 16 * 1024 * 1024;

/// A stream and the bytes read from it that are not used yet.
pub(crate) struct Buffered<S> {
    io: S,
    buf: Vec<u8>,
    /// How long the peer may send or take nothing while the gateway waits on it.
    patience: Duration,
}

impl<S: AsyncRead + Unpin> Buffered<S> {
    fn new(io: S, patience: Duration) -> Self {
        Self { io, buf: Vec::with_capacity(READ_SIZE), patience }
    }

    /// Reads more; `Ok(0)` at the end of the stream.
    async fn fill(&mut self) -> io::Result<usize> {
        self.buf.reserve(READ_SIZE);
        self.io.read_buf(&mut self.buf).await
    }

    fn consume(&mut self, n: usize) {
        self.buf.drain(..n.min(self.buf.len()));
    }

    /// How many of the `left` bytes still due of a body are in the buffer (at least one), read
    /// first if it is empty; an error if the stream ends before them.
    async fn due(&mut self, left: u64) -> io::Result<usize> {
        if self.buf.is_empty() && self.fill().await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(self.buf.len().min(usize::try_from(left).unwrap_or(usize::MAX)))
    }
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the upstream closes (a response without length or chunked coding).
    UntilClose,
}

/// Why a body could not be carried on.
#[derive(Debug)]
enum Relay {
    /// The client went away or broke the framing of its body: nothing more to say to it.
    Client(String),
    /// The upstream failed while the request was still being sent: 502 can still be answered.
    UpstreamBeforeResponse(String),
    /// The upstream failed while the response was relayed: the client's response is cut.
    UpstreamDuringResponse(String),
    /// Access ended while the response streamed: cut, and recorded.
    Cut,
}

/// Where a connection goes after one exchange.
enum Next {
    KeepAlive,
    Close,
    /// Close, with some of the client's request still unread: the gateway half-closes, then
    /// reads and drops what keeps coming for a short while (RFC 9112 §9.6), so that closing with
    /// unread bytes (a TCP reset) does not destroy the answer before the client has read it.
    CloseUnread,
}

/// Serves HTTP/1.1 on one client connection until it closes, fails, idles out, or `stop` turns
/// true between two requests.
pub(crate) async fn serve<S>(
    gateway: Arc<Gateway>,
    io: S,
    connection: Arc<Connection>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut client = Buffered::new(io, gateway.parts.client_timeout);
    let mut out = Vec::with_capacity(READ_SIZE);
    let mut linger = false;
    loop {
        let parts = match read_request_head(&mut client, &mut stop).await {
            HeadRead::Head(parts) => parts,
            HeadRead::Closed => break,
            HeadRead::Unparsable(Unparsable { status, reason }) => {
                let record = gateway.unparsed_record(&connection, &reason, "HTTP/1.1");
                let status = match gateway.audit(record).await {
                    Ok(()) => status,
                    Err(()) => StatusCode::SERVICE_UNAVAILABLE,
                };
                out.clear();
                write_generic(&mut out, status, true);
                let _ = send(&mut client.io, &out, client.patience).await;
                linger = true;
                break;
            }
        };
        let next = exchange(&gateway, &mut client, &connection, parts, &mut out).await;
        if matches!(next, Next::CloseUnread) {
            linger = true;
        }
        if !matches!(next, Next::KeepAlive) || *stop.borrow() {
            break;
        }
    }
    // (A client that takes nothing holds the close_notify too: bounded as every write is.)
    let _ = tokio::time::timeout(client.patience, client.io.shutdown()).await;
    if linger {
        let drop_the_rest = async {
            let mut scratch = vec![0u8; READ_SIZE];
            let mut dropped = 0usize;
            while dropped < MAX_LINGER_BYTES {
                match client.io.read(&mut scratch).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => dropped += n,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drop_the_rest).await;
    }
}

enum HeadRead {
    Head(hyper::http::request::Parts),
    /// The client closed (or the gateway is stopping) between requests, or went quiet.
    Closed,
    Unparsable(Unparsable),
}

/// A head that could not be parsed: 400 or 431, and why.
struct Unparsable {
    status: StatusCode,
    reason: String,
}

async fn read_request_head<S: AsyncRead + Unpin>(
    client: &mut Buffered<S>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> HeadRead {
    let mut deadline = None;
    loop {
        if !client.buf.is_empty() {
            match parse_request_head(&client.buf) {
                Ok(Some((parts, used))) => {
                    client.consume(used);
                    return HeadRead::Head(parts);
                }
                Ok(None) if client.buf.len() >= MAX_HEAD => {
                    let reason = "message head is too large".to_owned();
                    return HeadRead::Unparsable(Unparsable {
                        status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        reason,
                    });
                }
                Ok(None) => {}
                Err(unparsable) => return HeadRead::Unparsable(unparsable),
            }
        }
        let read = if client.buf.is_empty() && deadline.is_none() {
            // Between requests: wait for the next one, or for the gateway to stop.
            tokio::select! {
                read = tokio::time::timeout(client.patience, client.fill()) => read,
                () = stopped(stop) => return HeadRead::Closed,
            }
        } else {
            let until = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + HEAD_TIMEOUT);
            tokio::time::timeout_at(until, client.fill()).await
        };
        match read {
            Ok(Ok(n)) if n > 0 => {
                deadline.get_or_insert_with(|| tokio::time::Instant::now() + HEAD_TIMEOUT);
            }
            // The end of the stream, an error, or a head that takes too long: close.
            _ => return HeadRead::Closed,
        }
    }
}

/// The request head at the start of `buf` as hyper's parts, and its length; `None` while it is
/// incomplete.
fn parse_request_head(buf: &[u8]) -> Result<Option<(hyper::http::request::Parts, usize)>, Unparsable> {
    let unparsable = |reason: String| Unparsable { status: StatusCode::BAD_REQUEST, reason };
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut fields);
    let used = match head.parse(buf) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            let reason = "message head is too large (header fields)".to_owned();
            return Err(Unparsable { status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, reason });
        }
        Err(error) => return Err(unparsable(format!("invalid HTTP/1.1 head: {error}"))),
    };
    // httparse accepts a bare LF as a line end (RFC 9112 allows it); a proxy in front of or
    // behind the gateway may not, and two readings of one head are how requests are smuggled.
    if has_bare_lf(buf.get(..used).unwrap_or_default()) {
        return Err(unparsable("a line in the head ends in LF without CR".into()));
    }
    let method = head.method.and_then(|m| Method::from_bytes(m.as_bytes()).ok());
    let method = method.ok_or_else(|| unparsable("invalid method".into()))?;
    let version = match head.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(unparsable("unsupported HTTP version".into())),
    };
    let target = head.path.unwrap_or_default();
    // The URI parser drops a fragment without a word: what is refused must be seen first.
    if target.contains('#') {
        return Err(unparsable("fragment in the request target".into()));
    }
    let uri: Uri = target.parse().map_err(|_| unparsable("invalid request target".into()))?;
    let mut headers = HeaderMap::with_capacity(head.headers.len());
    for field in head.headers.iter() {
        let name =
            HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| unparsable("invalid header name".into()))?;
        let value = HeaderValue::from_bytes(field.value).map_err(|_| unparsable("invalid header value".into()))?;
        headers.append(name, value);
    }
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some((parts, used)))
}

fn has_bare_lf(head: &[u8]) -> bool {
    let mut previous = 0u8;
    for &byte in head {
        if byte == b'\n' && previous != b'\r' {
            return true;
        }
        previous = byte;
    }
    false
}

/// How the client frames the body of a request that passed [`canonical::canonicalize`] (so
/// `Content-Length` is one run of digits and `Transfer-Encoding`, if present, is `chunked`
/// alone and without a length).
fn request_framing(parts: &hyper::http::request::Parts) -> Result<Framing, &'static str> {
    if parts.headers.contains_key(header::TRANSFER_ENCODING) {
        if parts.version == Version::HTTP_10 {
            return Err("Transfer-Encoding in an HTTP/1.0 request");
        }
        return Ok(Framing::Chunked);
    }
    match parts.headers.get(header::CONTENT_LENGTH) {
        None => Ok(Framing::Empty),
        Some(value) => {
            let length: u64 = value.to_str().ok().and_then(|v| v.parse().ok()).ok_or("malformed Content-Length")?;
            Ok(if length == 0 { Framing::Empty } else { Framing::Length(length) })
        }
    }
}

/// One request and its response.
async fn exchange<S>(
    gateway: &Arc<Gateway>,
    client: &mut Buffered<S>,
    connection: &Connection,
    mut parts: hyper::http::request::Parts,
    out: &mut Vec<u8>,
) -> Next
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let now = SystemTime::now();
    let screened = match gateway.screen(&parts, connection, now).await {
        Ok(screened) => screened,
        Err(refused) => {
            // The framing is unknown if the request was refused as ambiguous: always closed then.
            let framing = request_framing(&parts).unwrap_or(Framing::Chunked);
            return refuse(client, refused, framing, expects_continue(&parts), out).await;
        }
    };
    // A WebSocket handshake has no body: bytes after its head would be the tunnel's (or, should
    // the upstream refuse the upgrade, read as the next request). Its key is checked here too,
    // before anything is decided, so that a malformed handshake is refused on record.
    let framing = request_framing(&parts).and_then(|framing| {
        if !is_websocket_upgrade(&parts.headers) {
            Ok(framing)
        } else if framing != Framing::Empty {
            Err("a WebSocket handshake with a body")
        } else if parts.headers.get(header::SEC_WEBSOCKET_KEY).is_none_or(|key| key.len() != 24) {
            Err("a WebSocket handshake without a 24-character Sec-WebSocket-Key")
        } else {
            Ok(framing)
        }
    });
    let framing = match framing {
        Ok(framing) => framing,
        Err(reason) => {
            let record = gateway.unparsed_record(connection, &reason, "HTTP/1.1");
            let status = if gateway.audit(record).await.is_ok() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            return refuse(client, Refused { status, close: true }, Framing::Chunked, false, out).await;
        }
    };
    let continues = expects_continue(&parts);
    // A signed body is read whole before the decision, unless the request has already failed
    // the application's certificate requirement: then it stays unread (the refusal closes the
    // connection after it) and the decision refuses without it.
    let reads_signed_body =
        screened.needs_signed_body() && gateway.required_certificate(screened.app, connection, now).is_ok();
    let signed_body = if reads_signed_body && framing != Framing::Empty {
        if continues && send(&mut client.io, b"HTTP/1.1 100 Continue\r\n\r\n", client.patience).await.is_err() {
            return Next::Close;
        }
        match read_whole_body(client, framing, MAX_SIGNED_BODY, gateway.signed_body_budget.hold(connection.peer.ip()))
            .await
        {
            Ok(body) => Some(Bytes::from(body)),
            Err(unread) => {
                let refused = gateway.refuse_unreadable_body(&parts, connection, &screened, unread, now).await;
                return refuse(client, refused, Framing::Chunked, false, out).await;
            }
        }
    } else if reads_signed_body {
        Some(Bytes::new())
    } else {
        None
    };
    // What is still to be read of the request body from the client.
    let pending = if signed_body.is_some() { Framing::Empty } else { framing };
    let admitted = match gateway.authorize(&screened, &parts, signed_body.as_ref(), connection, now).await {
        Ok(admitted) => admitted,
        Err(refused) => return refuse(client, refused, pending, continues, out).await,
    };
    let Screened { app, canonical, .. } = screened;
    let websocket = admitted.who.is_some() && is_websocket_upgrade(&parts.headers);
    if continues {
        parts.headers.remove(header::EXPECT);
        if pending != Framing::Empty
            && send(&mut client.io, b"HTTP/1.1 100 Continue\r\n\r\n", client.patience).await.is_err()
        {
            return Next::Close;
        }
    }
    if websocket && app.upstream.http2.is_some() {
        return upgrade_to_http2(gateway, client, app, parts, canonical, admitted, connection, out).await;
    }
    if app.upstream.http2.is_some() {
        return through_hyper(gateway, client, app, parts, pending, signed_body, &canonical, &admitted, connection)
            .await;
    }
    let keep_client = parts.version == Version::HTTP_11;
    let head_only = parts.method == Method::HEAD;
    let method = parts.method.clone();
    // The request head (and the body, as far as it is here), for the upstream.
    out.clear();
    let head = UpstreamHead { gateway_id: &gateway.parts.id, admitted: &admitted, connection };
    push_upstream_head(out, &method, &canonical, app, &parts.headers, &head);
    // What a long-lived exchange is authorized again as (the identity and request moved here:
    // nothing below reads them).
    let session = admitted.who.map(|who| Session {
        request: canonical,
        method: method.as_str().to_owned(),
        source: connection.peer.ip(),
        who,
        certificate: admitted.certificate,
        in_flight: admitted.in_flight,
        shadow_noted: std::sync::atomic::AtomicBool::new(false),
    });
    if websocket {
        out.extend_from_slice(b"connection: upgrade\r\nupgrade: websocket\r\n");
    }
    let mut rest = pending;
    match (&signed_body, pending) {
        (Some(body), _) if !body.is_empty() => {
            push_length(out, body.len() as u64);
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(body);
        }
        (_, Framing::Length(length)) => {
            push_length(out, length);
            out.extend_from_slice(b"\r\n");
            let here = client.buf.len().min(usize::try_from(length).unwrap_or(usize::MAX));
            out.extend_from_slice(client.buf.get(..here).unwrap_or_default());
            client.consume(here);
            let left = length - here as u64;
            rest = if left == 0 { Framing::Empty } else { Framing::Length(left) };
        }
        (_, Framing::Chunked) => out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n"),
        _ => out.extend_from_slice(b"\r\n"),
    }
    if websocket {
        let key = parts.headers.get(header::SEC_WEBSOCKET_KEY).map(|key| key.as_bytes().to_vec());
        return upgrade(gateway, client, app, out, key, session).await;
    }
    // Sent whole (no body still to come): safe to send again on a fresh connection if a pooled
    // one turns out to have been closed by the upstream before it answered.
    let retriable = rest == Framing::Empty && is_idempotent(&method);
    let deadline = app.settings.upstream_timeout;
    let mut upstream = match tokio::time::timeout(deadline, app.upstream.request_connection(out, retriable)).await {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(reason)) => {
            return upstream_failed(gateway, client, app, UpstreamFault::Failed(&reason), rest, out).await;
        }
        Err(_) => return upstream_failed(gateway, client, app, UpstreamFault::TimedOut, rest, out).await,
    };
    // An upstream may answer before it has read the whole body (a 413, a 401) and close: then
    // writing the rest fails, and its answer, if it came, is what the client gets.
    let mut answered_early = None;
    // The session is authorized again while the body arrives, as while the response streams.
    let mut reauthorize = session.map(|session| Reauthorize::new(gateway, session));
    if let Err(failure) = relay_request_body(client, &mut upstream, rest, out, deadline, reauthorize.as_mut()).await {
        match failure {
            Relay::UpstreamBeforeResponse(reason) => {
                match tokio::time::timeout(EARLY_ANSWER_WAIT, read_response_head(&mut upstream, head_only)).await {
                    Ok(Ok(read)) => answered_early = Some(read),
                    // How much of the body was read is unknown here: reading past "the rest"
                    // could eat the next request, so the connection closes after the 502.
                    _ => {
                        return upstream_failed(
                            gateway,
                            client,
                            app,
                            UpstreamFault::Failed(&reason),
                            Framing::UntilClose,
                            out,
                        )
                        .await;
                    }
                }
            }
            Relay::Client(reason) => {
                // The client's body broke off or broke its framing: the upstream connection (which
                // holds half a request) is dropped, nothing more is read from the client, and it
                // is told why in general terms.
                tracing::debug!(%reason, "request body not completed");
                return refuse(
                    client,
                    Refused { status: StatusCode::BAD_REQUEST, close: true },
                    Framing::Empty,
                    false,
                    out,
                )
                .await;
            }
            Relay::UpstreamDuringResponse(reason) => {
                tracing::debug!(%reason, "request body not completed");
                return Next::Close;
            }
            Relay::Cut => {
                if let Some(reauthorize) = reauthorize {
                    reauthorize.record_cut().await;
                }
                return Next::Close;
            }
        }
    }
    let body_unfinished = answered_early.is_some();
    let (head, framing) = match answered_early {
        Some(read) => read,
        None => match tokio::time::timeout(deadline, read_response_head(&mut upstream, head_only)).await {
            Ok(Ok(read)) => read,
            Ok(Err(reason)) => {
                return upstream_failed(gateway, client, app, UpstreamFault::Failed(&reason), Framing::Empty, out)
                    .await;
            }
            // The connection, which may still answer late, is dropped with this request.
            Err(_) => return upstream_failed(gateway, client, app, UpstreamFault::TimedOut, Framing::Empty, out).await,
        },
    };
    if head.status == 101 {
        // The upstream switched protocols on a request that asked for no upgrade (the client's
        // `Upgrade` is never forwarded): what follows is no HTTP response, and the connection is
        // dropped, not pooled.
        let reason = "a 101 to a request that asked for no upgrade";
        let unread = if body_unfinished { Framing::Chunked } else { Framing::Empty };
        return upstream_failed(gateway, client, app, UpstreamFault::Failed(reason), unread, out).await;
    }
    // The rest of a body the upstream did not take is unread: the client connection cannot be
    // used again, and it is told so.
    let close_after = body_unfinished || !keep_client || asks_to_close(&parts);
    out.clear();
    let to_client = write_response_head(out, &upstream.buf, &head, framing, keep_client, close_after);
    upstream.consume(head.len);
    let relayed = relay_response_body(client, &mut upstream, framing, to_client, out, reauthorize.as_mut(), deadline);
    match relayed.await {
        Ok(()) => {
            if head.reusable && framing != Framing::UntilClose && !body_unfinished {
                app.upstream.put_idle(upstream);
            }
            if body_unfinished {
                Next::CloseUnread
            } else if close_after {
                Next::Close
            } else {
                Next::KeepAlive
            }
        }
        Err(Relay::Cut) => {
            if let Some(reauthorize) = reauthorize {
                reauthorize.record_cut().await;
            }
            Next::Close
        }
        Err(Relay::UpstreamDuringResponse(reason)) => {
            bump(&gateway.metrics.upstream_failures);
            tracing::warn!(upstream = %app.settings.upstream, %reason, "upstream response failed");
            Next::Close
        }
        Err(Relay::Client(reason) | Relay::UpstreamBeforeResponse(reason)) => {
            tracing::debug!(%reason, "response not completed");
            Next::Close
        }
    }
}

/// The upstream's request head up to its framing fields: the request line, `host`, the headers
/// the shared rule lets through (canonical::forwardable), then the gateway's own (the identity
/// assertion, `x-forwarded-for`, `x-forwarded-proto`). The caller ends it.
#[allow(clippy::too_many_arguments)]
/// What the gateway adds to a request head for the upstream.
struct UpstreamHead<'a> {
    gateway_id: &'a str,
    admitted: &'a Admitted,
    connection: &'a Connection,
}

fn push_upstream_head(
    out: &mut Vec<u8>,
    method: &Method,
    canonical: &canonical::CanonicalRequest,
    app: &AppRuntime,
    headers: &HeaderMap,
    head: &UpstreamHead<'_>,
) {
    let UpstreamHead { gateway_id, admitted, connection } = *head;
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(canonical.path.as_bytes());
    if let Some(query) = &canonical.query {
        out.push(b'?');
        out.extend_from_slice(query.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(app.upstream.authority.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in canonical::forwardable(headers, admitted.credential_header.as_ref()) {
        if matches!(*name, header::HOST | header::CONTENT_LENGTH | header::TRANSFER_ENCODING) {
            continue;
        }
        push_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if let Some(assertion) = &admitted.assertion {
        push_field(out, ASSERTION_HEADER.as_bytes(), assertion.as_bytes());
    }
    out.extend_from_slice(AUDIT_RECORD_HEADER.as_bytes());
    let _ = write!(out, ": {gateway_id}:{}\r\n", admitted.record);
    out.extend_from_slice(b"x-forwarded-for: ");
    let _ = write!(out, "{}", connection.peer.ip());
    out.extend_from_slice(b"\r\nx-forwarded-proto: https\r\n");
}

fn expects_continue(parts: &hyper::http::request::Parts) -> bool {
    parts.version == Version::HTTP_11
        && parts.headers.get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// The client's `Connection` names `close`: this is its last request on the connection.
fn asks_to_close(parts: &hyper::http::request::Parts) -> bool {
    parts.headers.get_all(header::CONNECTION).iter().any(|value| {
        value.as_bytes().split(|&b| b == b',').any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn push_length(out: &mut Vec<u8>, length: u64) {
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(length.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A generic refusal (the body says nothing the audit record does not).
fn write_generic(out: &mut Vec<u8>, status: StatusCode, close: bool) {
    let text = generic_text(status);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\ncache-control: no-store\r\n");
    push_length(out, text.len() as u64);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(text.as_bytes());
}

/// Writes `bytes` whole; a peer that takes none of them for `patience` (a client that stops
/// reading) has broken off.
async fn send<S: AsyncWrite + Unpin>(io: &mut S, bytes: &[u8], patience: Duration) -> io::Result<()> {
    let write = async {
        io.write_all(bytes).await?;
        io.flush().await
    };
    tokio::time::timeout(patience, write).await.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// Answers a refusal; the connection goes on only if the refusal allows it and the unread body
/// (if any) is small enough to read past.
async fn refuse<S>(
    client: &mut Buffered<S>,
    refused: Refused,
    unread: Framing,
    expects_continue: bool,
    out: &mut Vec<u8>,
) -> Next
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut close = refused.close;
    match unread {
        // Closing anyway: nothing more is read from a client whose request was refused.
        _ if close => {}
        Framing::Empty => {}
        // A client waiting for `100 Continue` has not sent its body: nothing to read past.
        _ if expects_continue => close = true,
        Framing::Length(length) if length <= MAX_DRAIN => {
            if tokio::time::timeout(HEAD_TIMEOUT, discard(client, length)).await.map_or(true, |read| read.is_err()) {
                close = true;
            }
        }
        _ => close = true,
    }
    out.clear();
    write_generic(out, refused.status, close);
    match send(&mut client.io, out, client.patience).await {
        Ok(()) if !close => Next::KeepAlive,
        Ok(()) if unread != Framing::Empty => Next::CloseUnread,
        _ => Next::Close,
    }
}

async fn discard<S: AsyncRead + Unpin>(client: &mut Buffered<S>, mut length: u64) -> io::Result<()> {
    while length > 0 {
        let here = client.due(length).await?;
        client.consume(here);
        length -= here as u64;
    }
    Ok(())
}

/// How an upstream failed before it answered.
enum UpstreamFault<'r> {
    /// It could not be reached, or failed: 502.
    Failed(&'r str),
    /// It did not accept the connection or answer within its timeout: 504.
    TimedOut,
}

/// The refusal for an upstream that failed before it answered.
async fn upstream_failed<S>(
    gateway: &Gateway,
    client: &mut Buffered<S>,
    app: &AppRuntime,
    fault: UpstreamFault<'_>,
    unread: Framing,
    out: &mut Vec<u8>,
) -> Next
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    bump(&gateway.metrics.upstream_failures);
    let status = match fault {
        UpstreamFault::Failed(reason) => {
            tracing::warn!(upstream = %app.settings.upstream, %reason, "upstream request failed");
            StatusCode::BAD_GATEWAY
        }
        UpstreamFault::TimedOut => {
            let timeout = app.settings.upstream_timeout;
            tracing::warn!(upstream = %app.settings.upstream, ?timeout, "upstream did not answer in time");
            StatusCode::GATEWAY_TIMEOUT
        }
    };
    refuse(client, Refused { status, close: false }, unread, false, out).await
}

/// Reads a whole request body (a signed one: SigV4 covers its hash) of at most `limit` bytes,
/// all of it within the client's patience: it is read before any credential is checked, so a
/// body that stops arriving, or trickles in a byte at a time, must hold neither the connection
/// nor its share of the budget for longer.
async fn read_whole_body<S: AsyncRead + Unpin>(
    client: &mut Buffered<S>,
    framing: Framing,
    limit: usize,
    mut held: HeldBody<'_>,
) -> Result<Vec<u8>, Unreadable> {
    let patience = client.patience;
    let whole = async {
        let mut body = Vec::new();
        match framing {
            Framing::Empty => {}
            Framing::Length(length) => {
                if length > limit as u64 {
                    return Err(Unreadable::TooLarge);
                }
                let mut left = length;
                while left > 0 {
                    let here = client.due(left).await.map_err(|_| Unreadable::Broken)?;
                    held.more(here)?;
                    body.extend_from_slice(client.buf.get(..here).unwrap_or_default());
                    client.consume(here);
                    left -= here as u64;
                }
            }
            Framing::Chunked => {
                let mut decoder = Chunked::default();
                loop {
                    let before = body.len();
                    let more = decoder.next(client, &mut body).await.map_err(|_| Unreadable::Broken)?;
                    if body.len() > limit {
                        return Err(Unreadable::TooLarge);
                    }
                    held.more(body.len() - before)?;
                    if !more {
                        break;
                    }
                }
            }
            Framing::UntilClose => return Err(Unreadable::Broken),
        }
        Ok(body)
    };
    tokio::time::timeout(patience, whole).await.unwrap_or(Err(Unreadable::Broken))
}

/// Carries what is left of the request body to the upstream, as it arrives.
async fn relay_request_body<S: AsyncRead + Unpin>(
    client: &mut Buffered<S>,
    upstream: &mut Buffered<UpstreamIo>,
    framing: Framing,
    out: &mut Vec<u8>,
    stall: Duration,
    mut reauthorize: Option<&mut Reauthorize<'_>>,
) -> Result<(), Relay> {
    let write = |e: io::Error| Relay::UpstreamBeforeResponse(format!("write: {e}"));
    // An upstream that takes nothing for `stall` is treated as one that stopped reading (it may
    // have answered already); a client that sends nothing for its patience has broken off.
    let stalled = |_| Relay::UpstreamBeforeResponse(format!("took no body for {stall:?}"));
    match framing {
        Framing::Empty | Framing::UntilClose => Ok(()),
        Framing::Length(mut left) => {
            while left > 0 {
                let here = match tokio::time::timeout(client.patience, client.due(left)).await {
                    Ok(read) => read.map_err(|e| Relay::Client(format!("the request body: {e}")))?,
                    Err(_) => return Err(Relay::Client("the request body stalled".into())),
                };
                if let Some(reauthorize) = reauthorize.as_deref_mut() {
                    reauthorize.check_if_due()?;
                }
                let piece = client.buf.get(..here).unwrap_or_default();
                tokio::time::timeout(stall, upstream.io.write_all(piece)).await.map_err(stalled)?.map_err(write)?;
                client.consume(here);
                left -= here as u64;
            }
            upstream.io.flush().await.map_err(write)
        }
        Framing::Chunked => {
            let mut decoder = Chunked::default();
            loop {
                out.clear();
                let more = match tokio::time::timeout(client.patience, decoder.next(client, out)).await {
                    Ok(more) => more.map_err(Relay::Client)?,
                    Err(_) => return Err(Relay::Client("the request body stalled".into())),
                };
                if let Some(reauthorize) = reauthorize.as_deref_mut() {
                    reauthorize.check_if_due()?;
                }
                let mut chunk = Vec::with_capacity(out.len() + 16);
                if !out.is_empty() {
                    chunk.extend_from_slice(format!("{:x}\r\n", out.len()).as_bytes());
                    chunk.extend_from_slice(out);
                    chunk.extend_from_slice(b"\r\n");
                }
                if !more {
                    chunk.extend_from_slice(b"0\r\n\r\n");
                }
                tokio::time::timeout(stall, upstream.io.write_all(&chunk)).await.map_err(stalled)?.map_err(write)?;
                if !more {
                    return upstream.io.flush().await.map_err(write);
                }
            }
        }
    }
}

/// The decoder of a chunked body: strict hexadecimal sizes, extensions allowed but ignored,
/// trailers read and dropped, CRLF only.
#[derive(Default)]
struct Chunked {
    /// Bytes left in the current chunk.
    left: u64,
    /// The CRLF after a chunk's data is still to come.
    after_data: bool,
}

/// The longest chunk-size line and the most trailer bytes accepted.
const MAX_CHUNK_LINE: usize = 4096;

impl Chunked {
    /// Appends the next piece of the body to `out`: `Ok(true)` while more may follow,
    /// `Ok(false)` once the last chunk and its trailers have been read.
    async fn next<S: AsyncRead + Unpin>(&mut self, from: &mut Buffered<S>, out: &mut Vec<u8>) -> Result<bool, String> {
        loop {
            if self.left > 0 {
                let here = from.due(self.left).await.map_err(|e| format!("the chunked body: {e}"))?;
                out.extend_from_slice(from.buf.get(..here).unwrap_or_default());
                from.consume(here);
                self.left -= here as u64;
                self.after_data = self.left == 0;
                return Ok(true);
            }
            if self.after_data {
                let line = read_line(from).await?;
                if !line.is_empty() {
                    return Err("chunk data longer than its size".into());
                }
                self.after_data = false;
                if from.buf.is_empty() {
                    // A chunk boundary with nothing more here yet: the caller decides how to wait.
                    return Ok(true);
                }
                continue;
            }
            let line = read_line(from).await?;
            let size = line.split(|&b| b == b';').next().unwrap_or_default();
            if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
                return Err("malformed chunk size".into());
            }
            let size = std::str::from_utf8(size).ok().and_then(|s| u64::from_str_radix(s, 16).ok());
            let size = size.ok_or("malformed chunk size")?;
            if size == 0 {
                // Trailers, up to the empty line: read and dropped (never forwarded as headers).
                let mut trailer_bytes = 0;
                loop {
                    let line = read_line(from).await?;
                    if line.is_empty() {
                        return Ok(false);
                    }
                    trailer_bytes += line.len();
                    if trailer_bytes > MAX_HEAD {
                        return Err("trailers too large".into());
                    }
                }
            }
            self.left = size;
        }
    }
}

/// One CRLF-terminated line (without the CRLF); a bare LF or CR is refused.
async fn read_line<S: AsyncRead + Unpin>(from: &mut Buffered<S>) -> Result<Vec<u8>, String> {
    loop {
        if let Some(end) = from.buf.iter().position(|&b| b == b'\n') {
            let line = from.buf.get(..end).unwrap_or_default();
            let Some(line) = line.strip_suffix(b"\r") else { return Err("bare LF in chunked framing".into()) };
            if line.contains(&b'\r') {
                return Err("bare CR in chunked framing".into());
            }
            let line = line.to_vec();
            from.consume(end + 1);
            return Ok(line);
        }
        if from.buf.len() > MAX_CHUNK_LINE {
            return Err("chunk line too long".into());
        }
        if from.fill().await.map_err(|e| e.to_string())? == 0 {
            return Err("the chunked body ended early".into());
        }
    }
}

/// A parsed response head: where its fields are in the buffer, and what they say.
struct ResponseHead {
    len: usize,
    status: u16,
    /// (name start, name end, value start, value end) in the buffer.
    fields: Vec<(usize, usize, usize, usize)>,
    /// Names the `Connection` header lists (lowercase), to be removed.
    connection_names: Vec<String>,
    /// Whether the upstream lets the connection be used again.
    reusable: bool,
}

/// Reads the upstream's final response head (interim 1xx responses other than 101 are read and
/// dropped) and how its body is framed.
async fn read_response_head(
    upstream: &mut Buffered<UpstreamIo>,
    head_only: bool,
) -> Result<(ResponseHead, Framing), String> {
    loop {
        match parse_response_head(&upstream.buf, head_only)? {
            Some((head, _)) if (100..200).contains(&head.status) && head.status != 101 => {
                upstream.consume(head.len);
                continue;
            }
            Some(parsed) => return Ok(parsed),
            None if upstream.buf.len() >= MAX_HEAD => return Err("response head too large".into()),
            None => {}
        }
        if upstream.fill().await.map_err(|e| format!("read: {e}"))? == 0 {
            return Err("the upstream closed the connection before answering".into());
        }
    }
}

fn parse_response_head(buf: &[u8], head_only: bool) -> Result<Option<(ResponseHead, Framing)>, String> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut fields);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(format!("invalid response head: {error}")),
    };
    let status = parsed.code.ok_or("response without a status")?;
    let base = buf.as_ptr() as usize;
    let offset = |part: &[u8]| part.as_ptr() as usize - base;
    let mut head = ResponseHead {
        len,
        status,
        fields: Vec::with_capacity(parsed.headers.len()),
        connection_names: Vec::new(),
        reusable: parsed.version == Some(1),
    };
    let mut length: Option<u64> = None;
    let mut chunked = None;
    for field in parsed.headers.iter() {
        let name = field.name.as_bytes();
        let (start, value_start) = (offset(name), offset(field.value));
        head.fields.push((start, start + name.len(), value_start, value_start + field.value.len()));
        if name.eq_ignore_ascii_case(b"connection") {
            for token in field.value.split(|&b| b == b',') {
                let token = String::from_utf8_lossy(token).trim().to_ascii_lowercase();
                if token == "close" {
                    head.reusable = false;
                }
                head.connection_names.push(token);
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let value = std::str::from_utf8(field.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()));
            let value: u64 = value.and_then(|v| v.parse().ok()).ok_or("malformed Content-Length in the response")?;
            if length.is_some_and(|known| known != value) {
                return Err("conflicting Content-Length in the response".into());
            }
            length = Some(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // The gateway sets the client's framing itself: a coding other than chunked (gzip)
            // would reach the client undone and no longer named, and chunked applies once.
            if chunked.is_some() || !field.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err("a response transfer coding other than one chunked".into());
            }
            chunked = Some(true);
        }
    }
    let framing = if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::Empty
    } else if let Some(chunked) = chunked {
        // With a transfer coding a length means nothing (RFC 9112 §6.3), and the connection
        // is not trusted with another request.
        if length.is_some() {
            head.reusable = false;
        }
        if chunked { Framing::Chunked } else { Framing::UntilClose }
    } else {
        match length {
            Some(0) => Framing::Empty,
            Some(length) => Framing::Length(length),
            None => Framing::UntilClose,
        }
    };
    if framing == Framing::UntilClose {
        head.reusable = false;
    }
    Ok(Some((head, framing)))
}

/// How the response body goes to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ToClient {
    /// As it comes (a length, no body, or until close for an HTTP/1.0 client).
    AsIs,
    /// Re-chunked (chunked from the upstream, or until close to an HTTP/1.1 client).
    Chunked,
}

/// The response head for the client: the status, the upstream's fields less hop-by-hop ones,
/// those its `Connection` names, and its own framing, which the gateway sets.
fn write_response_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &ResponseHead,
    framing: Framing,
    keep_client: bool,
    close: bool,
) -> ToClient {
    let status = StatusCode::from_u16(head.status).unwrap_or(StatusCode::BAD_GATEWAY);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for &(name_start, name_end, value_start, value_end) in &head.fields {
        let name = buf.get(name_start..name_end).unwrap_or_default();
        let framing_field =
            name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"transfer-encoding");
        if (framing_field && framing != Framing::Empty)
            || canonical::is_hop_by_hop(name)
            || head.connection_names.iter().any(|listed| name.eq_ignore_ascii_case(listed.as_bytes()))
        {
            continue;
        }
        push_field(out, name, buf.get(value_start..value_end).unwrap_or_default());
    }
    let to_client = match framing {
        Framing::Length(length) => {
            push_length(out, length);
            ToClient::AsIs
        }
        Framing::Chunked | Framing::UntilClose if keep_client => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            ToClient::Chunked
        }
        // An HTTP/1.0 client knows no chunked coding: the body goes as it is (de-chunked), the
        // connection's close ending it.
        Framing::Chunked | Framing::UntilClose | Framing::Empty => ToClient::AsIs,
    };
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    to_client
}

/// Re-authorization of a streaming response: the timer is armed the first time the relay has to
/// wait for the upstream, so short responses never arm one.
struct Reauthorize<'g> {
    gateway: &'g Arc<Gateway>,
    session: Session,
    /// When the session is authorized again: compared before each piece of the exchange, so
    /// one whose bytes are always already here is checked as one that waits is.
    due: tokio::time::Instant,
    /// Wakes a wait at `due`; made the first time the exchange waits.
    wake: Option<Pin<Box<tokio::time::Sleep>>>,
    refused: Option<Box<zerogate_audit::DecisionRecord>>,
}

impl<'g> Reauthorize<'g> {
    fn new(gateway: &'g Arc<Gateway>, session: Session) -> Self {
        let due = tokio::time::Instant::now() + gateway.parts.reauthorize_every;
        Self { gateway, session, due, wake: None, refused: None }
    }

    /// Reads more from the upstream, authorizing the session again whenever the interval
    /// passes while waiting; `Err(Relay::Cut)` when access ended.
    async fn fill(&mut self, upstream: &mut Buffered<UpstreamIo>) -> Result<usize, Relay> {
        loop {
            let due = self.due;
            let wake = self.wake.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            if wake.deadline() != due {
                wake.as_mut().reset(due);
            }
            // The interval first: an upstream that always has more ready must not starve it.
            tokio::select! {
                biased;
                () = wake.as_mut() => self.check()?,
                read = upstream.fill() => return read.map_err(|e| Relay::UpstreamDuringResponse(format!("read: {e}"))),
            }
        }
    }

    /// Authorizes the session again if the interval has passed, without waiting.
    fn check_if_due(&mut self) -> Result<(), Relay> {
        if tokio::time::Instant::now() >= self.due { self.check() } else { Ok(()) }
    }

    /// Authorizes the session again now; the next check is an interval away.
    fn check(&mut self) -> Result<(), Relay> {
        let refused = match self.gateway.apps.get(&self.session.request.host) {
            Some(app) => self.gateway.reauthorize(app, &self.session).err(),
            None => None,
        };
        if let Some(record) = refused {
            self.refused = Some(record);
            return Err(Relay::Cut);
        }
        self.due = tokio::time::Instant::now() + self.gateway.parts.reauthorize_every;
        Ok(())
    }

    async fn record_cut(self) {
        if let Some(record) = self.refused {
            let _ = self.gateway.audit(*record).await;
        }
    }
}

/// Bounds one wait for more of the response: an upstream that sends nothing for `idle` (the
/// application's upstream timeout) in the middle of a body has failed, as nginx's
/// `proxy_read_timeout` has it.
async fn within<T>(idle: Duration, read: impl Future<Output = Result<T, Relay>>) -> Result<T, Relay> {
    tokio::time::timeout(idle, read)
        .await
        .unwrap_or_else(|_| Err(Relay::UpstreamDuringResponse(format!("no response data for {idle:?}"))))
}

/// Carries the response body to the client, re-chunking where the client's framing differs;
/// the upstream may pause for at most `idle` between two reads.
async fn relay_response_body<S: AsyncWrite + Unpin>(
    client: &mut Buffered<S>,
    upstream: &mut Buffered<UpstreamIo>,
    framing: Framing,
    to_client: ToClient,
    out: &mut Vec<u8>,
    mut reauthorize: Option<&mut Reauthorize<'_>>,
    idle: Duration,
) -> Result<(), Relay> {
    let to_client_error = |e: io::Error| Relay::Client(e.to_string());
    match framing {
        Framing::Empty => send(&mut client.io, out, client.patience).await.map_err(to_client_error),
        Framing::Length(mut left) => loop {
            if let Some(reauthorize) = reauthorize.as_deref_mut() {
                reauthorize.check_if_due()?;
            }
            let here = upstream.buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            out.extend_from_slice(upstream.buf.get(..here).unwrap_or_default());
            upstream.consume(here);
            left -= here as u64;
            if !out.is_empty() {
                send(&mut client.io, out, client.patience).await.map_err(to_client_error)?;
                out.clear();
            }
            if left == 0 {
                return Ok(());
            }
            let read = within(idle, wait_for_upstream(upstream, reauthorize.as_deref_mut())).await?;
            if read == 0 {
                return Err(Relay::UpstreamDuringResponse("the response body ended early".into()));
            }
        },
        Framing::Chunked | Framing::UntilClose => {
            let mut decoder = Chunked::default();
            let mut piece = Vec::new();
            loop {
                piece.clear();
                if let Some(reauthorize) = reauthorize.as_deref_mut() {
                    reauthorize.check_if_due()?;
                }
                let more = if framing == Framing::Chunked {
                    // Everything already here is decoded without waiting; a wait is where the
                    // session is authorized again.
                    if upstream.buf.is_empty() && decoder.left == 0 && !decoder.after_data {
                        within(idle, wait_for_upstream(upstream, reauthorize.as_deref_mut())).await?;
                    }
                    let decoded =
                        async { decoder.next(upstream, &mut piece).await.map_err(Relay::UpstreamDuringResponse) };
                    within(idle, decoded).await?
                } else {
                    if upstream.buf.is_empty() {
                        within(idle, wait_for_upstream(upstream, reauthorize.as_deref_mut())).await?;
                    }
                    piece.extend_from_slice(&upstream.buf);
                    let taken = upstream.buf.len();
                    upstream.consume(taken);
                    !piece.is_empty()
                };
                if !piece.is_empty() {
                    if to_client == ToClient::Chunked {
                        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                        out.extend_from_slice(&piece);
                        out.extend_from_slice(b"\r\n");
                    } else {
                        out.extend_from_slice(&piece);
                    }
                }
                if !more && to_client == ToClient::Chunked {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                if !out.is_empty() {
                    send(&mut client.io, out, client.patience).await.map_err(to_client_error)?;
                    out.clear();
                }
                if !more {
                    return Ok(());
                }
            }
        }
    }
}

/// Waits until the upstream has sent more; how much (0 at the end of the stream).
async fn wait_for_upstream(
    upstream: &mut Buffered<UpstreamIo>,
    reauthorize: Option<&mut Reauthorize<'_>>,
) -> Result<usize, Relay> {
    match reauthorize {
        Some(reauthorize) => reauthorize.fill(upstream).await,
        None => upstream.fill().await.map_err(|e| Relay::UpstreamDuringResponse(format!("read: {e}"))),
    }
}

/// A WebSocket: the upgrade on a connection of its own; on 101 the two streams are joined and
/// the session is authorized again every `reauthorize_every`, cut (and recorded) when refused.
async fn upgrade<S>(
    gateway: &Arc<Gateway>,
    client: &mut Buffered<S>,
    app: &AppRuntime,
    out: &mut Vec<u8>,
    key: Option<Vec<u8>>,
    session: Option<Session>,
) -> Next
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let sent = async {
        let mut upstream = app.upstream.connect_raw().await?;
        upstream.io.write_all(out).await.map_err(|e| format!("write: {e}"))?;
        upstream.io.flush().await.map_err(|e| format!("write: {e}"))?;
        let (head, framing) = read_response_head(&mut upstream, false).await?;
        Ok::<_, String>((upstream, head, framing))
    };
    let (mut upstream, head, framing) = match tokio::time::timeout(app.settings.upstream_timeout, sent).await {
        Ok(Ok(answered)) => answered,
        Ok(Err(reason)) => {
            return upstream_failed(gateway, client, app, UpstreamFault::Failed(&reason), Framing::Empty, out).await;
        }
        Err(_) => return upstream_failed(gateway, client, app, UpstreamFault::TimedOut, Framing::Empty, out).await,
    };
    // A 101 opens a raw tunnel past every later check: only a WebSocket handshake answered as
    // RFC 6455 says (the upgrade named, the client's key accepted) may open one.
    if head.status == 101 {
        let field = |wanted: &[u8]| {
            head.fields.iter().find_map(|&(name_start, name_end, value_start, value_end)| {
                let name = upstream.buf.get(name_start..name_end)?;
                name.eq_ignore_ascii_case(wanted).then(|| upstream.buf.get(value_start..value_end)).flatten()
            })
        };
        let upgraded = field(b"upgrade").is_some_and(|value| value.eq_ignore_ascii_case(b"websocket"));
        let accepted = match (&key, field(b"sec-websocket-accept")) {
            (Some(key), Some(accept)) => accept == websocket_accept(key).as_bytes(),
            _ => false,
        };
        if !(upgraded && accepted) {
            let reason = "a 101 that is not a WebSocket handshake's (upgrade or sec-websocket-accept)";
            out.clear();
            return upstream_failed(gateway, client, app, UpstreamFault::Failed(reason), Framing::Empty, out).await;
        }
    }
    out.clear();
    if head.status != 101 {
        let to_client = write_response_head(out, &upstream.buf, &head, framing, true, false);
        upstream.consume(head.len);
        let idle = app.settings.upstream_timeout;
        return match relay_response_body(client, &mut upstream, framing, to_client, out, None, idle).await {
            Ok(()) => Next::KeepAlive,
            Err(_) => Next::Close,
        };
    }
    write_response_head(out, &upstream.buf, &head, Framing::Empty, true, false);
    // The head ends with an empty line; the upgrade fields go before it.
    out.truncate(out.len().saturating_sub(2));
    out.extend_from_slice(b"connection: upgrade\r\nupgrade: websocket\r\n\r\n");
    upstream.consume(head.len);
    out.extend_from_slice(&upstream.buf);
    upstream.buf.clear();
    if send(&mut client.io, out, client.patience).await.is_err() {
        return Next::Close;
    }
    if !client.buf.is_empty() {
        if upstream.io.write_all(&client.buf).await.is_err() {
            return Next::Close;
        }
        client.buf.clear();
    }
    if let Some(session) = session {
        tunnel(gateway, &mut client.io, &mut upstream.io, &session).await;
    }
    Next::Close
}

/// The accept value of RFC 6455 §4.2.2 for a handshake's `Sec-WebSocket-Key`.
fn websocket_accept(key: &[u8]) -> String {
    use base64::Engine as _;
    let mut keyed = key.to_vec();
    keyed.extend_from_slice(WEBSOCKET_GUID.as_bytes());
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &keyed);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// A WebSocket upgrade from an HTTP/1.1 client for an application whose upstream speaks
/// HTTP/2: opened there as an extended CONNECT ([`crate::websocket`]); the client gets the 101
/// of RFC 6455, its accept derived from the client's own key (the upstream never sees one),
/// and the connection and the stream are joined by [`tunnel`].
#[allow(clippy::too_many_arguments)]
async fn upgrade_to_http2<S>(
    gateway: &Arc<Gateway>,
    client: &mut Buffered<S>,
    app: &AppRuntime,
    parts: hyper::http::request::Parts,
    canonical: canonical::CanonicalRequest,
    admitted: Admitted,
    connection: &Connection,
    out: &mut Vec<u8>,
) -> Next
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let refused = |status| Refused { status, close: true };
    let key = parts.headers.get(header::SEC_WEBSOCKET_KEY).map(|key| key.as_bytes().to_vec());
    let Some(key) = key.filter(|key| key.len() == 24) else {
        return refuse(client, refused(StatusCode::BAD_REQUEST), Framing::Empty, false, out).await;
    };
    let Some(who) = admitted.who.clone() else {
        return refuse(client, refused(StatusCode::FORBIDDEN), Framing::Empty, false, out).await;
    };
    let peer = connection.peer.ip();
    let opened = crate::websocket::open_on_http2_upstream(
        gateway,
        app,
        parts.headers,
        parts.version,
        &canonical,
        &admitted,
        peer,
    )
    .await;
    let mut opened = match opened {
        Ok(opened) => opened,
        Err(status) => return refuse(client, refused(status), Framing::Empty, false, out).await,
    };
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n");
    push_field(out, b"sec-websocket-accept", websocket_accept(&key).as_bytes());
    for (name, value) in &opened.chosen {
        push_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    if send(&mut client.io, out, client.patience).await.is_err() {
        return Next::Close;
    }
    if !client.buf.is_empty() {
        if send(&mut opened.io, &client.buf, client.patience).await.is_err() {
            return Next::Close;
        }
        client.buf.clear();
    }
    let (certificate, in_flight) = (admitted.certificate.clone(), admitted.in_flight.clone());
    let session = Session {
        request: canonical,
        method: "GET".to_owned(),
        source: peer,
        who,
        certificate,
        in_flight,
        shadow_noted: std::sync::atomic::AtomicBool::new(false),
    };
    tunnel(gateway, &mut client.io, &mut opened.io, &session).await;
    Next::Close
}

/// Joins an upgraded client connection (or HTTP/2 stream) and its upstream connection until
/// either ends, authorizing `session` again on the interval; when access ends the tunnel is
/// cut and the cut recorded.
async fn tunnel<C, U>(gateway: &Arc<Gateway>, client: &mut C, upstream: &mut U, session: &Session)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    // The first tick is at once: the decision was taken before the upstream's handshake, which
    // may have taken longer than an interval, so the session is authorized again before a byte
    // crosses (one Cedar evaluation per WebSocket).
    let mut tick = tokio::time::interval(gateway.parts.reauthorize_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A tunnel may be quiet for as long as both ends like; a client that stops taking what the
    // upstream sends has broken off.
    let mut client = WriteBounded::new(client, gateway.parts.client_timeout);
    let copy = tokio::io::copy_bidirectional(&mut client, upstream);
    tokio::pin!(copy);
    loop {
        tokio::select! {
            // Reauthorization before relaying more.
            biased;
            _ = tick.tick() => {
                let Some(app) = gateway.apps.get(&session.request.host) else { return };
                if let Err(record) = gateway.reauthorize(app, session) {
                    let _ = gateway.audit(*record).await;
                    return; // both sides close when they are dropped
                }
            }
            _ = copy.as_mut() => return,
        }
    }
}

/// A stream whose writes wait at most `patience` for the peer to take anything; past that
/// they fail with `TimedOut`.
pub(crate) struct WriteBounded<S> {
    io: S,
    patience: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteBounded<S> {
    /// `io`, its writes bounded by `patience`.
    pub(crate) fn new(io: S, patience: Duration) -> Self {
        Self { io, patience, stalled: None }
    }
}

impl<S: AsyncWrite + Unpin> WriteBounded<S> {
    fn bound<T>(&mut self, cx: &mut std::task::Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let patience = self.patience;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(patience)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::ErrorKind::TimedOut.into())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteBounded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteBounded<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.bound(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.bound(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<io::Result<()>> {
        // (Closing writes too: a TLS close_notify, an HTTP/2 END_STREAM.)
        let polled = Pin::new(&mut self.io).poll_shutdown(cx);
        self.bound(cx, polled)
    }
}

/// What an open WebSocket is authorized again as: its handshake, decided as a GET.
fn websocket_session(
    canonical: &canonical::CanonicalRequest,
    connection: &Connection,
    who: zerogate_authn::identity::Authenticated,
    admitted: &Admitted,
) -> Session {
    Session {
        request: canonical.clone(),
        method: "GET".to_owned(),
        source: connection.peer.ip(),
        who,
        certificate: admitted.certificate.clone(),
        in_flight: admitted.in_flight.clone(),
        shadow_noted: std::sync::atomic::AtomicBool::new(false),
    }
}

/// The GUID of RFC 6455 §1.3, from which an upstream derives `Sec-WebSocket-Accept`.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A WebSocket opened over HTTP/2 (RFC 8441: an extended CONNECT with `:protocol` websocket,
/// already decided and recorded), to an HTTP/1.1 upstream: the upstream gets the HTTP/1.1
/// upgrade handshake of RFC 6455 with a key of the gateway's (and its answer is checked), the
/// client a 200 once the upstream has switched protocols; then the stream and the upstream
/// connection are joined by [`tunnel`], re-authorized and cut when access ends. Without an
/// identity to re-verify no tunnel is opened (403).
pub(crate) async fn websocket_over_http2(
    gateway: &Arc<Gateway>,
    app: &AppRuntime,
    mut parts: hyper::http::request::Parts,
    canonical: &canonical::CanonicalRequest,
    admitted: &Admitted,
    connection: &Connection,
) -> Response<crate::proxy::Body> {
    use base64::Engine as _;
    let Some(who) = admitted.who.clone() else { return generic(StatusCode::FORBIDDEN, false) };
    let Some(client) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return generic(StatusCode::BAD_REQUEST, false);
    };
    if app.upstream.http2.is_some() {
        // To an HTTP/2 upstream: an extended CONNECT there too, its 200 passed on.
        let stream_open = parts.extensions.remove::<Arc<crate::pace::StreamOpen>>();
        let opened = crate::websocket::open_on_http2_upstream(
            gateway,
            app,
            parts.headers,
            Version::HTTP_2,
            canonical,
            admitted,
            connection.peer.ip(),
        )
        .await;
        let opened = match opened {
            Ok(opened) => opened,
            Err(status) => return generic(status, false),
        };
        let mut response = Response::builder().status(StatusCode::OK);
        for (name, value) in opened.chosen {
            response = response.header(name, value);
        }
        let Ok(response) = response.body(empty_body()) else { return generic(StatusCode::BAD_GATEWAY, false) };
        let session = websocket_session(canonical, connection, who, admitted);
        let gateway = Arc::clone(gateway);
        let (mut upstream, slot) = (opened.io, opened.slot);
        tokio::spawn(async move {
            let (_stream_open, _slot) = (stream_open, slot);
            let Ok(upgraded) = client.await else { return };
            tunnel(&gateway, &mut hyper_util::rt::TokioIo::new(upgraded), &mut upstream, &session).await;
        });
        return response;
    }
    canonical::join_cookies(&mut parts.headers);
    parts.headers.remove(header::SEC_WEBSOCKET_KEY);
    parts.headers.remove(header::SEC_WEBSOCKET_ACCEPT);
    let mut nonce = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut nonce).is_err() {
        return generic(StatusCode::SERVICE_UNAVAILABLE, false);
    }
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    let mut out = Vec::with_capacity(1024);
    let head = UpstreamHead { gateway_id: &gateway.parts.id, admitted, connection };
    push_upstream_head(&mut out, &Method::GET, canonical, app, &parts.headers, &head);
    if !parts.headers.contains_key(header::SEC_WEBSOCKET_VERSION) {
        out.extend_from_slice(b"sec-websocket-version: 13\r\n");
    }
    push_field(&mut out, b"sec-websocket-key", key.as_bytes());
    out.extend_from_slice(b"connection: upgrade\r\nupgrade: websocket\r\n\r\n");
    let opened = async {
        let mut upstream = app.upstream.connect_raw().await?;
        send(&mut upstream.io, &out, upstream.patience).await.map_err(|e| format!("write: {e}"))?;
        let (head, _) = read_response_head(&mut upstream, false).await?;
        Ok::<_, String>((upstream, head))
    };
    let failed = |reason: &str, status: StatusCode| {
        bump(&gateway.metrics.upstream_failures);
        tracing::warn!(upstream = %app.settings.upstream, %reason, "WebSocket handshake with the upstream failed");
        generic(status, false)
    };
    let (mut upstream, head) = match tokio::time::timeout(app.settings.upstream_timeout, opened).await {
        Ok(Ok(opened)) => opened,
        Ok(Err(reason)) => return failed(&reason, StatusCode::BAD_GATEWAY),
        Err(_) => return failed("no answer in time", StatusCode::GATEWAY_TIMEOUT),
    };
    if head.status != 101 {
        // The upstream refused the upgrade: its status, with the gateway's generic body. A 2xx
        // would tell the client its tunnel is open (RFC 8441 §5): an upstream that answers the
        // handshake with one has failed it.
        let status = StatusCode::from_u16(head.status).ok().filter(|status| !status.is_success());
        return match status {
            Some(status) => generic(status, false),
            None => failed(&format!("answered the upgrade with {}", head.status), StatusCode::BAD_GATEWAY),
        };
    }
    let expected_accept = websocket_accept(key.as_bytes());
    let mut accepted = false;
    let mut response = Response::builder().status(StatusCode::OK);
    for &(name_start, name_end, value_start, value_end) in &head.fields {
        let (Some(name), Some(value)) =
            (upstream.buf.get(name_start..name_end), upstream.buf.get(value_start..value_end))
        else {
            continue;
        };
        if name.eq_ignore_ascii_case(b"sec-websocket-accept") {
            accepted = value == expected_accept.as_bytes();
        } else if name.eq_ignore_ascii_case(b"sec-websocket-protocol")
            || name.eq_ignore_ascii_case(b"sec-websocket-extensions")
        {
            response = response.header(name, value);
        }
    }
    if !accepted {
        return failed("no valid sec-websocket-accept in its 101", StatusCode::BAD_GATEWAY);
    }
    let Ok(response) = response.body(empty_body()) else {
        return failed("an unusable field in its 101", StatusCode::BAD_GATEWAY);
    };
    upstream.consume(head.len);
    let early = std::mem::take(&mut upstream.buf);
    let session = websocket_session(canonical, connection, who, admitted);
    let gateway = Arc::clone(gateway);
    // The HTTP/2 stream stays open (the connection is not idle) while the tunnel lasts.
    let stream_open = parts.extensions.remove::<Arc<crate::pace::StreamOpen>>();
    tokio::spawn(async move {
        let _stream_open = stream_open;
        let Ok(upgraded) = client.await else { return };
        let mut client = hyper_util::rt::TokioIo::new(upgraded);
        if !early.is_empty() && send(&mut client, &early, gateway.parts.client_timeout).await.is_err() {
            return;
        }
        tunnel(&gateway, &mut client, &mut upstream.io, &session).await;
    });
    response
}

/// An HTTP/1.1 request for an application whose upstream speaks HTTP/2: the request goes
/// through hyper's HTTP/2 client with its body streamed from the client as it arrives (a signed
/// body was read whole already), and the response (re-authorized while it streams) is written
/// back as HTTP/1.1 once the request body is through.
#[allow(clippy::too_many_arguments)]
async fn through_hyper<S>(
    gateway: &Arc<Gateway>,
    client: &mut Buffered<S>,
    app: &AppRuntime,
    parts: hyper::http::request::Parts,
    pending: Framing,
    signed_body: Option<Bytes>,
    canonical: &canonical::CanonicalRequest,
    admitted: &Admitted,
    connection: &Connection,
) -> Next
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let keep_client = parts.version == Version::HTTP_11;
    let mut close = !keep_client || asks_to_close(&parts);
    let head_only = parts.method == Method::HEAD;
    let method = parts.method.as_str().to_owned();
    let whole = signed_body.or_else(|| (pending == Framing::Empty).then(Bytes::new));
    let mut upload_cut = None;
    let (body, pieces) = match whole {
        Some(body) => (Full::new(body).map_err(|never| match never {}).boxed(), None),
        None => {
            let (sender, receiver) = tokio::sync::mpsc::channel(4);
            let length = match pending {
                Framing::Length(length) => Some(length),
                _ => None,
            };
            let fed = FedBody { pieces: receiver, left: length, ended: false }.boxed();
            // The body still to come is authorized again on the interval, as the response is.
            let fed = match admitted.session(canonical, &method, connection.peer.ip()) {
                Some(session) => {
                    let (fed, cut) = crate::proxy::reverified_upload(Arc::clone(gateway), session, fed);
                    upload_cut = Some(cut);
                    fed
                }
                None => fed,
            };
            (fed, Some(sender))
        }
    };
    let forward = gateway.forward(app, parts, body, upload_cut, canonical, admitted, connection.peer.ip());
    let response = match pieces {
        None => Some(forward.await),
        Some(pieces) => {
            let feeding = feed_body(client, pending, pieces);
            tokio::pin!(forward, feeding);
            let mut fed = None;
            let response = loop {
                tokio::select! {
                    response = &mut forward => break response,
                    result = &mut feeding, if fed.is_none() => fed = Some(result),
                }
            };
            let fed = match fed {
                Some(fed) => fed,
                // The upstream answered first: the rest of the body is still read (the upstream
                // may want it), for a while; then the connection closes after the answer.
                None => tokio::time::timeout(HEAD_TIMEOUT, &mut feeding).await.unwrap_or(Err(FeedStop::Upstream)),
            };
            match fed {
                Ok(()) => Some(response),
                Err(FeedStop::Upstream) => {
                    close = true;
                    Some(response)
                }
                Err(FeedStop::Client) => None,
            }
        }
    };
    let mut out = Vec::with_capacity(READ_SIZE);
    let Some(response) = response else {
        // The body broke off or broke its framing; the upstream's stream was failed with it, so
        // what it saw was never a complete request.
        let refused = Refused { status: StatusCode::BAD_REQUEST, close: true };
        return refuse(client, refused, Framing::Empty, false, &mut out).await;
    };
    let (head, body) = response.into_parts();
    let mut body = match admitted.session(canonical, &method, connection.peer.ip()) {
        Some(session) => crate::proxy::reverified(Arc::clone(gateway), session, body),
        None => body,
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(head.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let no_body = head_only || head.status == StatusCode::NO_CONTENT || head.status == StatusCode::NOT_MODIFIED;
    let exact = hyper::body::Body::size_hint(&body).exact();
    for (name, value) in &head.headers {
        if !no_body && matches!(*name, header::CONTENT_LENGTH | header::TRANSFER_ENCODING) {
            continue;
        }
        push_field(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    let chunked = !no_body && exact.is_none() && keep_client;
    if !no_body {
        match exact {
            Some(length) => push_length(&mut out, length),
            None if chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            None => {}
        }
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !no_body {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return Next::Close };
            if let Ok(data) = frame.into_data()
                && !data.is_empty()
            {
                if chunked {
                    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                    out.extend_from_slice(&data);
                    out.extend_from_slice(b"\r\n");
                } else {
                    out.extend_from_slice(&data);
                }
                if send(&mut client.io, &out, client.patience).await.is_err() {
                    return Next::Close;
                }
                out.clear();
            }
        }
        if chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
    }
    match send(&mut client.io, &out, client.patience).await {
        Ok(()) if !close => Next::KeepAlive,
        _ => Next::Close,
    }
}

/// A piece of a request body on its way from the client's connection to hyper's HTTP/2 client.
enum Piece {
    Data(Bytes),
    /// The whole body was read: the only way the upstream sees it end cleanly.
    End,
}

/// Why feeding a request body stopped before its end.
enum FeedStop {
    /// The client broke the body off, broke its framing, or stalled.
    Client,
    /// The upstream no longer takes it (it answered and reset the stream, or failed).
    Upstream,
}

/// The request body of an HTTP/1.1 client bound for an HTTP/2 upstream, as it arrives. It ends
/// cleanly only after [`Piece::End`]: a feeder that stops without it fails the body, which
/// resets the upstream's stream, so a truncated body never passes as complete.
struct FedBody {
    pieces: tokio::sync::mpsc::Receiver<Piece>,
    /// Bytes still to come of a body with a length.
    left: Option<u64>,
    ended: bool,
}

impl hyper::body::Body for FedBody {
    type Data = Bytes;
    type Error = crate::proxy::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.pieces.poll_recv(cx) {
            Poll::Ready(Some(Piece::Data(data))) => {
                if let Some(left) = &mut self.left {
                    *left = left.saturating_sub(data.len() as u64);
                }
                Poll::Ready(Some(Ok(hyper::body::Frame::data(data))))
            }
            Poll::Ready(Some(Piece::End)) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(Some(Err("the client's request body broke off".into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.left.map_or_else(hyper::body::SizeHint::default, hyper::body::SizeHint::with_exact)
    }
}

/// Reads a request body from the client and hands it on in pieces, then [`Piece::End`].
async fn feed_body<S: AsyncRead + Unpin>(
    client: &mut Buffered<S>,
    framing: Framing,
    pieces: tokio::sync::mpsc::Sender<Piece>,
) -> Result<(), FeedStop> {
    match framing {
        Framing::Empty | Framing::UntilClose => {}
        Framing::Length(mut left) => {
            while left > 0 {
                let here = match tokio::time::timeout(client.patience, client.due(left)).await {
                    Ok(Ok(here)) => here,
                    _ => return Err(FeedStop::Client),
                };
                let data = Bytes::copy_from_slice(client.buf.get(..here).unwrap_or_default());
                client.consume(here);
                left -= here as u64;
                pieces.send(Piece::Data(data)).await.map_err(|_| FeedStop::Upstream)?;
            }
        }
        Framing::Chunked => {
            let mut decoder = Chunked::default();
            let mut piece = Vec::new();
            loop {
                piece.clear();
                let more = match tokio::time::timeout(client.patience, decoder.next(client, &mut piece)).await {
                    Ok(Ok(more)) => more,
                    _ => return Err(FeedStop::Client),
                };
                if !piece.is_empty() {
                    let data = Bytes::copy_from_slice(&piece);
                    pieces.send(Piece::Data(data)).await.map_err(|_| FeedStop::Upstream)?;
                }
                if !more {
                    break;
                }
            }
        }
    }
    pieces.send(Piece::End).await.map_err(|_| FeedStop::Upstream)
}

/// A connection to an HTTP/1.1 upstream: plain TCP or verified TLS.
pub(crate) enum UpstreamIo {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl UpstreamIo {
    /// Whether an idle connection is still open: the upstream has sent nothing (an idle
    /// connection that has something to read was closed, or is broken).
    fn is_idle_and_open(&self) -> bool {
        let tcp = match self {
            Self::Tcp(tcp) => tcp,
            Self::Tls(tls) => tls.get_ref().0,
        };
        let mut probe = [0u8; 1];
        matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

impl AsyncRead for UpstreamIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An upstream connection with its read buffer, as kept in the pool.
pub(crate) type UpstreamConnection = Buffered<UpstreamIo>;

/// Idle HTTP/1.1 upstream connections kept per application at most.
const MAX_IDLE: usize = 256;

impl Upstream {
    /// A new connection (TCP, then TLS verified against the configured roots).
    pub(crate) async fn connect_raw(&self) -> Result<UpstreamConnection, String> {
        let tcp = self.tcp().await?;
        let io = match &self.tls {
            Some(connector) => {
                let name = rustls_pki_types::ServerName::try_from(self.host.clone()).map_err(|e| e.to_string())?;
                UpstreamIo::Tls(Box::new(connector.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?))
            }
            None => UpstreamIo::Tcp(tcp),
        };
        Ok(Buffered::new(io, UPSTREAM_WRITE_TIMEOUT))
    }

    /// Sends `request` (a head, and the body as far as it is here) on an idle connection that is
    /// still open, else on a new one. When `retriable`, a pooled connection the upstream closed
    /// before answering is replaced once and the request sent again.
    async fn request_connection(&self, request: &[u8], retriable: bool) -> Result<UpstreamConnection, String> {
        let pooled = loop {
            let Some(candidate) = self.idle.lock().ok().and_then(|mut idle| idle.pop()) else { break None };
            if candidate.buf.is_empty() && candidate.io.is_idle_and_open() {
                break Some(candidate);
            }
        };
        if let Some(mut upstream) = pooled {
            let sent = async {
                upstream.io.write_all(request).await?;
                upstream.io.flush().await
            };
            match sent.await {
                Ok(()) if !retriable => return Ok(upstream),
                Ok(()) => {
                    // Wait for the first byte of the answer: an upstream that closed the idle
                    // connection meanwhile shows up here, and the request can go again.
                    match upstream.fill().await {
                        Ok(n) if n > 0 => return Ok(upstream),
                        _ => {}
                    }
                }
                Err(_) if retriable => {}
                Err(error) => return Err(format!("write: {error}")),
            }
        }
        let mut upstream = self.connect_raw().await?;
        upstream.io.write_all(request).await.map_err(|e| format!("write: {e}"))?;
        upstream.io.flush().await.map_err(|e| format!("write: {e}"))?;
        Ok(upstream)
    }

    /// Returns a connection whose exchange is complete to the pool.
    fn put_idle(&self, upstream: UpstreamConnection) {
        if !upstream.buf.is_empty() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(upstream);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_head_keeps_every_field_as_sent() {
        let raw =
            b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nHost: y\r\n\r\nabc";
        let Ok(Some((parts, used))) = parse_request_head(raw) else { panic!("parses") };
        assert_eq!(used, raw.len() - 3);
        assert_eq!(parts.headers.get_all(header::HOST).iter().count(), 2);
        assert!(parts.headers.contains_key(header::CONTENT_LENGTH));
        assert!(parts.headers.contains_key(header::TRANSFER_ENCODING));
        assert_eq!(parts.uri.path_and_query().map(|pq| pq.as_str()), Some("/a?b=1"));
    }

    #[test]
    fn malformed_heads_are_refused_not_guessed() {
        for raw in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n folded: value\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHo\x00st: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\x01\r\n\r\n",
            b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
            b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\n",
        ] {
            assert!(parse_request_head(raw).is_err(), "{:?}", String::from_utf8_lossy(raw));
        }
        assert!(matches!(parse_request_head(b"GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None)));
    }

    fn response(raw: &[u8], head_only: bool) -> Result<Option<(ResponseHead, Framing)>, String> {
        parse_response_head(raw, head_only)
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let framing = |raw: &[u8]| response(raw, false).ok().flatten().map(|(_, f)| f);
        assert_eq!(framing(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"), Some(Framing::Length(5)));
        assert_eq!(framing(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), Some(Framing::Chunked));
        for coding in ["gzip", "gzip, chunked", "chunked, chunked", ""] {
            let raw = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {coding}\r\n\r\n");
            assert!(response(raw.as_bytes(), false).is_err(), "{coding:?}");
        }
        let twice = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(response(twice, false).is_err());
        assert_eq!(framing(b"HTTP/1.1 200 OK\r\n\r\n"), Some(Framing::UntilClose));
        assert_eq!(framing(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"), Some(Framing::Empty));
        assert!(response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", false).is_err());
        assert!(response(b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n", false).is_err());
        let Ok(Some((head, framing))) = response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true) else {
            panic!("parses")
        };
        assert_eq!(framing, Framing::Empty);
        assert!(head.reusable);
        let Ok(Some((head, _))) =
            response(b"HTTP/1.1 200 OK\r\nConnection: close, x-secret\r\nContent-Length: 1\r\n\r\n", false)
        else {
            panic!("parses")
        };
        assert!(!head.reusable);
        assert_eq!(head.connection_names, ["close", "x-secret"]);
    }

    #[test]
    fn the_client_sees_the_gateways_framing_and_no_hop_by_hop_field() {
        let raw = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, x-internal\r\nKeep-Alive: timeout=5\r\nX-Internal: 1\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n";
        let Ok(Some((head, framing))) = response(raw, false) else { panic!("parses") };
        let mut out = Vec::new();
        let to_client = write_response_head(&mut out, raw, &head, framing, true, false);
        assert_eq!(to_client, ToClient::Chunked);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        // To an HTTP/1.0 client: no chunked coding, the body as it is, closed after it.
        out.clear();
        let to_client = write_response_head(&mut out, raw, &head, framing, false, true);
        assert_eq!(to_client, ToClient::AsIs);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nconnection: close\r\n\r\n"
        );
    }

    async fn decode(raw: &[u8]) -> Result<Vec<u8>, String> {
        let mut from = Buffered::new(raw, Duration::from_secs(1));
        let mut body = Vec::new();
        let mut decoder = Chunked::default();
        while decoder.next(&mut from, &mut body).await? {}
        if !from.buf.is_empty() {
            return Err("left over".into());
        }
        Ok(body)
    }

    #[tokio::test]
    async fn chunked_bodies_are_decoded_strictly() {
        assert_eq!(
            decode(b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nx-trailer: 1\r\n\r\n").await.as_deref(),
            Ok(&b"abcde"[..])
        );
        for bad in [
            &b"3\nabc\r\n0\r\n\r\n"[..],
            b"+3\r\nabc\r\n0\r\n\r\n",
            b"0x3\r\nabc\r\n0\r\n\r\n",
            b" 3\r\nabc\r\n0\r\n\r\n",
            b"3\r\nabcd\r\n0\r\n\r\n",
            b"fffffffffffffffff\r\n",
            b"3\r\nab",
            b"3\r\nabc\r\n0\r\n",
        ] {
            assert!(decode(bad).await.is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
