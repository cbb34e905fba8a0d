//! The demo application that `zerogate up` protects: a small HTTP service that trusts nothing but
//! the gateway's signed identity assertion, verified with the gateway's JWKS, the way any
//! upstream should. It greets the caller the assertion names, or answers 401.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::SystemTime;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use zerogate_authn::jwt::{Algorithm, KeySet, TokenKind, UnverifiedToken, Validation};

use crate::assertion::ASSERTION_HEADER;

struct Demo {
    keys: KeySet,
    validation: Validation,
}

/// Serves the demo application on `listener`: assertions must come from `issuer`, for
/// `audience`, verified with `jwks`.
pub async fn serve(listener: TcpListener, jwks: serde_json::Value, issuer: String, audience: String) {
    let keys = match KeySet::from_jwks(jwks.to_string().as_bytes(), &[Algorithm::ES256]) {
        Ok((keys, _)) => keys,
        Err(error) => {
            tracing::error!(%error, "demo application: unusable JWKS");
            return;
        }
    };
    let Ok(validation) = Validation::new(issuer, vec![audience], vec![Algorithm::ES256], TokenKind::Id) else {
        return;
    };
    let demo = Arc::new(Demo { keys, validation });
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        let demo = Arc::clone(&demo);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let demo = Arc::clone(&demo);
                async move { Ok::<_, Infallible>(demo.answer(&request)) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}

impl Demo {
    fn answer(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        let assertion = request.headers().get(ASSERTION_HEADER).and_then(|v| v.to_str().ok());
        let verified = assertion
            .ok_or("no identity assertion")
            .and_then(|token| UnverifiedToken::parse(token).map_err(|_| "malformed assertion"))
            .and_then(|token| {
                token.verify(&self.keys, &self.validation, SystemTime::now()).map_err(|_| "assertion does not verify")
            });
        let (status, text) = match verified {
            Ok(who) => (
                StatusCode::OK,
                format!(
                    "hello {}\nyou reached the zerogate demo application at {} through the gateway;\nthe identity above comes from the gateway's signed assertion (key {}), not from anything you sent.\n",
                    who.subject,
                    request.uri().path(),
                    who.key_id.unwrap_or_default(),
                ),
            ),
            Err(reason) => (StatusCode::UNAUTHORIZED, format!("{reason}\n")),
        };
        let mut response = Response::new(Full::new(Bytes::from(text)));
        *response.status_mut() = status;
        response
    }
}

/// The demo TCP service that `zerogate up` protects (`echo.localhost`): every byte sent comes
/// back, on as many connections as are open, until the client closes.
pub async fn echo(listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        tokio::spawn(async move {
            let (mut read, mut write) = stream.split();
            let _ = tokio::io::copy(&mut read, &mut write).await;
        });
    }
}
