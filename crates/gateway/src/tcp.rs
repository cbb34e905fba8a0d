//! TCP services behind the gateway: an `[[app]]` whose upstream is `tcp://host:port` (a
//! database, an SSH server) is reached by a TLS connection to the gateway's listener that asks
//! for the service's name (SNI). The client's certificate from zerogate's CA is the credential;
//! Cedar decides the `connect` action on the service's entity; the decision record is durable
//! before a byte reaches the upstream. Then the gateway relays bytes both ways, authorizes the
//! tunnel again on the reauthorization interval, and cuts it (recorded) once access ends:
//! a revoked or expired certificate, a policy change, revocation lists gone stale. A tunnel
//! always needs a certificate, in shadow mode too (shadow mode lets a would-be policy denial
//! through, never an anonymous, unbounded relay); a client that stops taking what the service
//! sends is cut after `client_timeout`; one that sends nothing either way for the service's
//! `idle_timeout_seconds` (when it has one) is closed; a stopping gateway closes its tunnels. A service that
//! asks for it gets a PROXY protocol header first ([`crate::proxy_protocol`]), once the decision
//! is durable and before any byte of the client's.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::canonical::CanonicalRequest;
use crate::decide::Attempt;
use crate::h1::WriteBounded;
use crate::proxy::{AppRuntime, Connection, Gateway, Session, bump, stopped};
use crate::proxy_protocol::{Names, header};

/// Serves one tunnel to `app` on the TLS connection `client`, until either side closes it,
/// access ends, or the gateway stops.
pub(crate) async fn tunnel<S>(
    gateway: Arc<Gateway>,
    app: &AppRuntime,
    client: S,
    connection: Arc<Connection>,
    reached_at: Option<std::net::SocketAddr>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut client = WriteBounded::new(client, gateway.parts.client_timeout);
    let now = SystemTime::now();
    let request = CanonicalRequest { host: app.settings.app.host.clone(), path: String::new(), query: None };
    let authn = match gateway.required_certificate(app, &connection, now) {
        Ok(Some(who)) => Ok(who),
        Ok(None) => Err(crate::decide::AuthnFailure {
            method: Some(zerogate_authn::identity::Method::Mtls),
            reason: "client_certificate_required".into(),
        }),
        Err(failure) => Err(failure),
    };
    let attempt =
        Attempt { app: &app.settings.app, request: &request, method: "CONNECT", source: connection.peer.ip(), authn };
    let mut outcome = gateway.decide_now(&attempt, now);
    // The decision holds for one reauthorization interval from now, however long the connect
    // to the service then takes.
    let decided_at = tokio::time::Instant::now();
    // A tunnel holds a place in its principal's share for as long as it is open.
    let in_flight = gateway.take_place(&mut outcome);
    let decision = outcome.record.decision;
    let Ok(receipt) = gateway.audit_receipt(outcome.record).await else {
        close(&mut client).await;
        return;
    };
    gateway.count(decision);
    let Attempt { authn, .. } = attempt;
    let (true, Ok(who)) = (outcome.forward, authn) else {
        // Refused: the client sees the connection closed (TLS close_notify), nothing more.
        close(&mut client).await;
        return;
    };
    if *stop.borrow() {
        // The gateway began stopping while this tunnel was decided: it does not open.
        close(&mut client).await;
        return;
    }
    // The connect within `upstream_timeout_seconds` (and at most the 10 s any connect gets),
    // given up when the gateway stops.
    let connecting = tokio::time::timeout(app.settings.upstream_timeout, app.upstream.tcp());
    let connected = tokio::select! {
        biased;
        () = stopped(&mut stop) => {
            close(&mut client).await;
            return;
        }
        connected = connecting => connected.unwrap_or_else(|_| Err("connect timed out".to_owned())),
    };
    let connected = match connected {
        Ok(mut upstream) => {
            keep_alive(&upstream);
            // A service that expects a PROXY header gets it before any byte of the client's.
            let sent = match app.settings.proxy_protocol {
                None => Ok(()),
                Some(version) => {
                    let unique_id = format!("{}:{}", gateway.parts.id, receipt.seq);
                    let names = Names { authority: &app.settings.app.host, unique_id: &unique_id };
                    let local = reached_at.ok_or_else(|| "the listener's address is unknown".to_owned());
                    match local.and_then(|local| header(version, connection.peer, local, names)) {
                        Ok(header) => tokio::time::timeout(app.settings.upstream_timeout, upstream.write_all(&header))
                            .await
                            .map_err(|_| "PROXY header: timed out".to_owned())
                            .and_then(|sent| sent.map_err(|e| format!("PROXY header: {e}"))),
                        Err(error) => Err(format!("PROXY header: {error}")),
                    }
                }
            };
            sent.map(|()| upstream)
        }
        Err(error) => Err(error),
    };
    let mut upstream = match connected {
        Ok(upstream) => upstream,
        Err(error) => {
            bump(&gateway.metrics.upstream_failures);
            tracing::warn!(service = %app.settings.app.host, %error, "TCP service unreachable");
            close(&mut client).await;
            return;
        }
    };
    let session = Session {
        request,
        method: "CONNECT".into(),
        source: connection.peer.ip(),
        certificate: Some(who.clone()),
        who,
        in_flight,
        shadow_noted: std::sync::atomic::AtomicBool::new(false),
    };
    let _open = OpenTunnel::count(&gateway);
    // First due one interval after the decision: a connect slower than that is followed by a
    // reauthorization before any byte is relayed.
    let mut every =
        tokio::time::interval_at(decided_at + gateway.parts.reauthorize_every, gateway.parts.reauthorize_every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = tokio::time::Instant::now();
    // When a byte last came from either side, in milliseconds from `started`.
    let last_read = AtomicU64::new(0);
    let idle_timeout = app.settings.idle_timeout;
    let (ended, relayed): (std::borrow::Cow<'static, str>, _) = {
        let mut client = Active { io: &mut client, started, last_read: &last_read };
        let mut upstream = Active { io: &mut upstream, started, last_read: &last_read };
        let relay = tokio::io::copy_bidirectional(&mut client, &mut upstream);
        tokio::pin!(relay);
        let quiet_until = tokio::time::sleep(idle_timeout.unwrap_or(std::time::Duration::from_secs(86_400)));
        tokio::pin!(quiet_until);
        loop {
            tokio::select! {
                // Stopping and reauthorization come before relaying more.
                biased;
                () = stopped(&mut stop) => break ("the gateway stopped".into(), None),
                _ = every.tick() => {
                    if let Err(record) = gateway.reauthorize(app, &session) {
                        bump(&gateway.metrics.tunnels_cut);
                        let _ = gateway.audit(*record).await;
                        break ("cut: access ended".into(), None);
                    }
                }
                relayed = &mut relay => match relayed {
                    Ok(bytes) => break ("closed".into(), Some(bytes)),
                    Err(error) if error.kind() == std::io::ErrorKind::TimedOut => {
                        break ("cut: the client took nothing for client_timeout".into(), None)
                    }
                    // (A service may reset its connection when a session ends.)
                    Err(error) => break (format!("broke off: {error}").into(), None),
                },
                // After relaying: data that came with the deadline is not idleness.
                () = &mut quiet_until, if idle_timeout.is_some() => {
                    let timeout = idle_timeout.unwrap_or_default();
                    let last = started + std::time::Duration::from_millis(last_read.load(Ordering::Relaxed));
                    if last.elapsed() >= timeout {
                        bump(&gateway.metrics.tunnels_idle_closed);
                        break (format!("closed: idle for {} s", timeout.as_secs()).into(), None);
                    }
                    quiet_until.as_mut().reset(last + timeout);
                }
            }
        }
    };
    // Both connections close: cut (access ended, the gateway stops), whatever is still in
    // flight on them; or one side broke off (a reset), and the other still gets a clean close.
    let _ = upstream.shutdown().await;
    close(&mut client).await;
    // How long it lasted and (when it closed cleanly) what it carried, for the operator's log:
    // the audit log holds the decisions.
    let (from_client, to_client) = relayed.unzip();
    tracing::info!(
        service = %app.settings.app.host,
        principal = %session.who.cedar_uid(),
        source = %connection.peer,
        seconds = started.elapsed().as_secs(),
        from_client,
        to_client,
        ended = %ended,
        "tunnel ended"
    );
}

/// One side of a tunnel, noting in `last_read` when a byte last came from it or went to it:
/// what an idle timeout measures.
struct Active<'a, S> {
    io: &'a mut S,
    started: tokio::time::Instant,
    last_read: &'a AtomicU64,
}

impl<S> Active<'_, S> {
    fn stamp(&self) {
        let at = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_read.store(at, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Active<'_, S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut *self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.stamp();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Active<'_, S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        // A peer still taking bytes is not idle, though nothing new was read for a while.
        let polled = Pin::new(&mut *self.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.stamp();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }
}

/// One open tunnel in the `zerogate_tunnels_open` gauge, taken out when dropped.
struct OpenTunnel<'g>(&'g Gateway);

impl<'g> OpenTunnel<'g> {
    fn count(gateway: &'g Gateway) -> Self {
        gateway.metrics.tunnels_open.fetch_add(1, Ordering::Relaxed);
        Self(gateway)
    }
}

impl Drop for OpenTunnel<'_> {
    fn drop(&mut self) {
        self.0.metrics.tunnels_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Keepalive probes on a tunnel's connection: after a minute without traffic, then every 10 s.
/// A peer that answers none of 6 is gone (a laptop off the network, a NAT entry dropped): the
/// kernel fails the socket and the tunnel ends, instead of holding its place until the
/// certificate expires.
pub(crate) fn keep_alive(stream: &tokio::net::TcpStream) {
    let probes = socket2::TcpKeepalive::new()
        .with_time(std::time::Duration::from_secs(60))
        .with_interval(std::time::Duration::from_secs(10))
        .with_retries(6);
    if let Err(error) = socket2::SockRef::from(stream).set_tcp_keepalive(&probes) {
        tracing::debug!(%error, "TCP keepalive not set");
    }
}

/// Closes the client's connection (a TLS close_notify), waiting at most a second for a client
/// that reads nothing more.
async fn close<S: AsyncWrite + Unpin>(client: &mut S) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), client.shutdown()).await;
}
