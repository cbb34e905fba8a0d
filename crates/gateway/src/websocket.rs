//! WebSockets to an application whose upstream speaks HTTP/2. The gateway opens them as an
//! extended CONNECT (RFC 8441) on one of the application's HTTP/2 connections, however the
//! client asked (the HTTP/1.1 upgrade of RFC 6455, or an extended CONNECT of its own), and joins
//! the two ends with the tunnel every WebSocket gets: authorized again on the interval, cut (and
//! the cut recorded) when access ends. An upstream that has not enabled extended CONNECT (it resets
//! the stream) or answers with anything but a 200 opens no tunnel, and the client gets no 101
//! or 200: its refusal's status, or a 502.

use std::sync::Arc;

use hyper::header::{self, HeaderName, HeaderValue};
use hyper::upgrade::Upgraded;
use hyper::{HeaderMap, Request, StatusCode, Version};
use hyper_util::rt::TokioIo;

use crate::canonical::CanonicalRequest;
use crate::proxy::{Admitted, AppRuntime, Gateway, bump};
use crate::upstream_h2::StreamSlot;

/// A WebSocket the upstream has accepted.
pub(crate) struct Opened {
    /// The upstream's end of the tunnel: the extended CONNECT's stream.
    pub(crate) io: TokioIo<Upgraded>,
    /// The subprotocol and extensions the upstream chose, for the client's answer.
    pub(crate) chosen: Vec<(HeaderName, HeaderValue)>,
    /// The stream's place on its upstream connection, held while the tunnel lasts.
    pub(crate) slot: StreamSlot,
}

/// Opens the WebSocket of an admitted handshake (its client's `headers`) on the application's
/// HTTP/2 upstream; the status to answer the client with when the upstream does not take it.
pub(crate) async fn open_on_http2_upstream(
    gateway: &Arc<Gateway>,
    app: &AppRuntime,
    headers: HeaderMap,
    version: Version,
    canonical: &CanonicalRequest,
    admitted: &Admitted,
    peer: std::net::IpAddr,
) -> Result<Opened, StatusCode> {
    let failed = |reason: &str, status: StatusCode| {
        bump(&gateway.metrics.upstream_failures);
        tracing::warn!(upstream = %app.settings.upstream, %reason, "WebSocket (extended CONNECT) to the upstream failed");
        status
    };
    let mut headers = gateway.upstream_headers(headers, version, admitted, peer);
    // RFC 8441 has no key and accept: the stream itself is the proof the upstream took it.
    for name in [header::HOST, header::SEC_WEBSOCKET_KEY, header::SEC_WEBSOCKET_ACCEPT, header::CONTENT_LENGTH] {
        headers.remove(name);
    }
    if !headers.contains_key(header::SEC_WEBSOCKET_VERSION) {
        headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    }
    let scheme = if app.upstream.tls.is_some() { "https" } else { "http" };
    let mut request = Request::builder()
        .version(Version::HTTP_2)
        .method(hyper::Method::CONNECT)
        .uri(format!("{scheme}://{}{}", app.upstream.authority, canonical.target()))
        .extension(hyper::ext::Protocol::from_static("websocket"));
    if let Some(target) = request.headers_mut() {
        *target = headers;
    }
    let Ok(request) = request.body(crate::proxy::empty_body()) else {
        return Err(failed("an unusable request", StatusCode::BAD_GATEWAY));
    };
    let answered = tokio::time::timeout(app.settings.upstream_timeout, app.upstream.send_http2(request)).await;
    let (response, slot) = match answered {
        Ok(Ok(answered)) => answered,
        // An upstream that has not enabled extended CONNECT resets the stream: it fails here.
        Ok(Err(reason)) => return Err(failed(&reason, StatusCode::BAD_GATEWAY)),
        Err(_) => return Err(failed("no answer in time", StatusCode::GATEWAY_TIMEOUT)),
    };
    if response.status() != StatusCode::OK {
        // Its refusal, with the gateway's generic body; any other 2xx would tell the client a
        // tunnel is open that is not (RFC 8441 §5).
        let status = response.status();
        return Err(if status.is_success() || status.is_informational() {
            failed(&format!("answered the extended CONNECT with {status}"), StatusCode::BAD_GATEWAY)
        } else {
            status
        });
    }
    let chosen = [header::SEC_WEBSOCKET_PROTOCOL, header::SEC_WEBSOCKET_EXTENSIONS]
        .into_iter()
        .filter_map(|name| response.headers().get(&name).cloned().map(|value| (name, value)))
        .collect();
    match tokio::time::timeout(app.settings.upstream_timeout, hyper::upgrade::on(response)).await {
        Ok(Ok(upgraded)) => Ok(Opened { io: TokioIo::new(upgraded), chosen, slot }),
        Ok(Err(error)) => Err(failed(&format!("no stream after its 200: {error}"), StatusCode::BAD_GATEWAY)),
        Err(_) => Err(failed("no stream after its 200 in time", StatusCode::GATEWAY_TIMEOUT)),
    }
}
