//! A small HTTPS load generator for the gateway benchmark, for what wrk cannot do: present a
//! client certificate. Keep-alive HTTP/1.1 over rustls, N connections for D seconds; prints
//! `requests/s p50_ms p99_ms non_2xx` on one line.
//!
//! `cargo run --release -p zerogate-gateway --example https_load -- --connect 127.0.0.1:8443
//!  --name localhost --path / --seconds 10 --connections 64 --ca root.pem [--cert svid.pem --key
//!  svid.key.pem] [--header 'Authorization: Bearer …']`

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

struct Options {
    connect: String,
    name: String,
    path: String,
    seconds: u64,
    connections: usize,
    ca: String,
    cert: Option<(String, String)>,
    headers: Vec<(String, String)>,
}

fn options() -> Options {
    let mut args = std::env::args().skip(1);
    let mut o = Options {
        connect: String::new(),
        name: "localhost".into(),
        path: "/".into(),
        seconds: 10,
        connections: 64,
        ca: String::new(),
        cert: None,
        headers: Vec::new(),
    };
    let (mut cert, mut key) = (None, None);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--connect" => o.connect = value,
            "--name" => o.name = value,
            "--path" => o.path = value,
            "--seconds" => o.seconds = value.parse().expect("--seconds"),
            "--connections" => o.connections = value.parse().expect("--connections"),
            "--ca" => o.ca = value,
            "--cert" => cert = Some(value),
            "--key" => key = Some(value),
            "--header" => {
                let (name, value) = value.split_once(':').expect("--header 'Name: value'");
                o.headers.push((name.trim().to_owned(), value.trim().to_owned()));
            }
            other => panic!("unknown flag {other}"),
        }
    }
    o.cert = cert.zip(key);
    o
}

#[tokio::main]
async fn main() {
    let o = Arc::new(options());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&o.ca).expect("--ca") {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match &o.cert {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(key).unwrap()).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..o.connections {
        let (o, connector, stop, failures) =
            (Arc::clone(&o), connector.clone(), Arc::clone(&stop), Arc::clone(&failures));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let tcp = tokio::net::TcpStream::connect(&o.connect).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let name = ServerName::try_from(o.name.clone()).unwrap();
            let tls = connector.connect(name, tcp).await.unwrap();
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
            tokio::spawn(connection);
            while !stop.load(Ordering::Relaxed) {
                let mut request = hyper::Request::get(o.path.as_str()).header("host", o.name.as_str());
                for (name, value) in &o.headers {
                    request = request.header(name.as_str(), value.as_str());
                }
                let request = request.body(Empty::<Bytes>::new()).unwrap();
                let started = Instant::now();
                if sender.ready().await.is_err() {
                    break;
                }
                match sender.send_request(request).await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        let _ = response.into_body().collect().await;
                        latencies.push(started.elapsed());
                        if !ok {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => break,
                }
            }
            latencies
        }));
    }
    let began = Instant::now();
    tokio::time::sleep(Duration::from_secs(o.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let elapsed = began.elapsed().as_secs_f64();
    all.sort();
    let at = |q: f64| all.get(((all.len() as f64 - 1.0) * q) as usize).map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    println!("{:.0} {:.2} {:.2} {}", all.len() as f64 / elapsed, at(0.5), at(0.99), failures.load(Ordering::Relaxed));
}
