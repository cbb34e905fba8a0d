//! `zerogate connect`: the client side of a TCP service behind the gateway. It listens on a
//! local port (loopback by default) and carries each connection made to it through TLS to the
//! gateway, asking for the service by name and presenting this device's or workload's
//! certificate, so that `psql -h 127.0.0.1 -p PORT` or `ssh -p PORT 127.0.0.1` reach the
//! service only as policy allows. The identity files are read for each connection: a
//! certificate the agent renewed is used from the next one on.

#![allow(clippy::print_stdout, reason = "the command prints where it listens")]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use rustls_pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use zerogate_control::client::IdentityFiles;

use crate::identity_cmd::init_logging;

/// `zerogate connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The gateway's public listener, host:port.
    #[arg(long)]
    gateway: String,
    /// The service, by the name the gateway serves it under (its `[[app]] host`).
    #[arg(long)]
    service: String,
    /// The directory `zerogate enroll` wrote: svid.pem, svid.key.pem and bundle.pem.
    #[arg(long, value_name = "DIR")]
    identity: PathBuf,
    /// Where to accept local connections: plain TCP, on loopback unless `--shared`.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Roots (PEM) to trust for the gateway's own certificate, when it serves one from another CA
    /// (a public CA's, a company's); zerogate's bundle otherwise. The client certificate is
    /// zerogate's either way.
    #[arg(long, value_name = "FILE")]
    gateway_ca: Option<PathBuf>,
    /// Allow `--listen` on an address other hosts reach: anyone who can connect to it then
    /// uses this identity.
    #[arg(long)]
    shared: bool,
}

/// Runs `zerogate connect` until interrupted.
pub fn run(args: ConnectArgs) -> Result<ExitCode> {
    init_logging();
    let files = IdentityFiles::new(&args.identity);
    // Checked once before listening, so that a wrong directory fails at once, not per connection.
    let trust = Arc::new(args.gateway_ca.clone().unwrap_or_else(|| files.bundle()));
    files.tls_client_config_trusting(&trust).with_context(|| format!("identity in `{}`", args.identity.display()))?;
    // A name, never an address: the gateway picks the service by the name sent (SNI), and a
    // client sends none for an address.
    let name = match ServerName::try_from(args.service.clone()) {
        Ok(name @ ServerName::DnsName(_)) => name,
        _ => anyhow::bail!("--service `{}` is not a host name (the gateway serves services by name)", args.service),
    };
    crate::identity_cmd::runtime()?.block_on(async move {
        let listener =
            TcpListener::bind(&args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
        let local = listener.local_addr()?;
        if !local.ip().is_loopback() && !args.shared {
            anyhow::bail!(
                "--listen {local} is reachable from other hosts, and whoever connects to it uses this identity; \
                 listen on loopback, or pass --shared"
            );
        }
        println!("listening on {local}: connections go to `{}` through {}", args.service, args.gateway);
        let _ = std::io::stdout().flush();
        let gateway = Arc::new(args.gateway);
        let files = Arc::new(files);
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (local, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            // Out of file descriptors, say: retrying at once would spin.
                            tracing::warn!(%error, "accept failed; retrying in 100 ms");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let (gateway, files, name) = (Arc::clone(&gateway), Arc::clone(&files), name.clone());
                    let trust = Arc::clone(&trust);
                    tokio::spawn(async move {
                        if let Err(error) = carry(local, &gateway, &files, &trust, name).await {
                            tracing::warn!(%peer, error = format!("{error:#}"), "tunnel failed");
                        }
                    });
                }
                _ = &mut interrupted => return Ok(ExitCode::SUCCESS),
            }
        }
    })
}

/// One local connection, through the gateway to the service, until either end closes.
async fn carry(
    mut local: TcpStream,
    gateway: &str,
    files: &IdentityFiles,
    trust: &std::path::Path,
    name: ServerName<'static>,
) -> Result<()> {
    let config = files.tls_client_config_trusting(trust)?;
    let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(gateway))
        .await
        .context("connecting to the gateway timed out")?
        .with_context(|| format!("connecting to {gateway}"))?;
    let _ = tcp.set_nodelay(true);
    let _ = local.set_nodelay(true);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .context("the TLS handshake with the gateway timed out")?
        .context("TLS with the gateway")?;
    tokio::io::copy_bidirectional(&mut local, &mut tls).await.context("relaying")?;
    Ok(())
}
