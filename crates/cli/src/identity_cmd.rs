//! `zerogate ca …`, `zerogate server`, `zerogate enroll` and `zerogate agent`: the identity
//! authority from the command line.

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "this module is the commands' output")]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use zerogate_control::client::{self, IdentityFiles};
use zerogate_control::datadir::{self, write_atomic};
use zerogate_control::server::{ServerOptions, unix_now};
use zerogate_control::{DataDir, IdentityService, Origin};
use zerogate_pki::{Lifetimes, TrustDomain};
use zerogate_store::{SqliteStore, Store};

/// Where zerogate keeps its state.
#[derive(Debug, Args)]
pub struct DataDirArg {
    /// The data directory [default: the platform's per-user data directory, e.g.
    /// ~/.local/share/zerogate].
    #[arg(long, env = datadir::ENV, value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,
}

impl DataDirArg {
    pub(crate) fn get(&self) -> DataDir {
        DataDir::new(self.data_dir.clone().unwrap_or_else(datadir::default_path))
    }
}

/// `zerogate ca`.
#[derive(Debug, Args)]
pub struct CaArgs {
    #[command(subcommand)]
    command: CaCommand,
    #[command(flatten)]
    data_dir: DataDirArg,
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Create the root and intermediate CA (ECDSA P-256) for a trust domain.
    Init {
        /// The trust domain, e.g. example.org.
        #[arg(long)]
        trust_domain: String,
        /// Write the root key to this file and keep it out of the data directory (offline root).
        #[arg(long, value_name = "FILE")]
        offline_root_key: Option<PathBuf>,
        /// Default lifetime of workload certificates.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        workload_ttl: u64,
        /// Default lifetime of device certificates.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        device_ttl: u64,
        /// No certificate lives longer than this.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        max_ttl: u64,
    },
    /// Move the root key out of the data directory into FILE (keep it offline).
    ExportRootKey {
        /// Where to write the root key (must not exist).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// One-time enrollment tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Access keys for API clients that sign requests with AWS SigV4 (the stock AWS SDKs and CLIs).
    AccessKey {
        #[command(subcommand)]
        command: AccessKeyCommand,
    },
    /// Issue a certificate directly (operator), to a CSR or to a key made here.
    Issue {
        /// The identity, e.g. spiffe://example.org/workload/api.
        #[arg(long)]
        spiffe_id: String,
        /// PEM CSR to certify; without it a key is made here and written to --out.
        #[arg(long, value_name = "FILE")]
        csr: Option<PathBuf>,
        /// Directory for svid.pem, svid.key.pem and bundle.pem (with a made key), or file for
        /// the chain (with --csr; default stdout).
        #[arg(long, short = 'o', value_name = "PATH")]
        out: Option<PathBuf>,
        /// Lifetime (default: by kind of identity).
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<u64>,
    },
    /// List issued certificates.
    List {
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a certificate by serial, or every certificate of an identity.
    Revoke {
        /// Serial number (hex) as `ca list` shows it.
        #[arg(long, conflicts_with = "spiffe_id", required_unless_present = "spiffe_id")]
        serial: Option<String>,
        /// The identity: all its certificates now, and its renewals later.
        #[arg(long)]
        spiffe_id: Option<String>,
        /// Why (kept in the store and the event log).
        #[arg(long, default_value = "unspecified")]
        reason: String,
    },
    /// Write a freshly signed CRL.
    Crl {
        /// File to write (default stdout, PEM).
        #[arg(long, short = 'o', value_name = "FILE")]
        out: Option<PathBuf>,
        /// DER instead of PEM.
        #[arg(long)]
        der: bool,
    },
    /// Print the trust bundle.
    Bundle {
        /// PEM (the root certificate) or the SPIFFE bundle format (JWKS).
        #[arg(long, value_enum, default_value_t = BundleFormat::Pem)]
        format: BundleFormat,
    },
    /// Show the identity events (every enrollment, renewal, issuance, revocation; granted or refused).
    Events {
        /// How many, newest last.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// JSON lines.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a one-time token bound to one identity.
    Create {
        /// The identity the token enrolls.
        #[arg(long)]
        spiffe_id: String,
        /// How long the token works.
        #[arg(long, default_value = "15m", value_parser = parse_duration)]
        ttl: u64,
    },
}

#[derive(Debug, Subcommand)]
enum AccessKeyCommand {
    /// Create an access key for an API client; prints the id and the secret (shown once).
    Create {
        /// The API client (its Cedar `Zerogate::ApiClient` id).
        #[arg(long)]
        client: String,
        /// As JSON ({"access_key_id", "secret_access_key", "client"}).
        #[arg(long)]
        json: bool,
    },
    /// List access keys (never their secrets).
    List,
    /// Revoke an access key: requests it signs are refused from the next one on.
    Revoke {
        /// The access key id.
        #[arg(long)]
        id: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BundleFormat {
    Pem,
    Spiffe,
}

/// Parses `90s`, `15m`, `1h`, `7d` (or plain seconds).
pub(crate) fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("`{text}` is not a duration like 90s, 15m, 1h or 7d"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: unit must be s, m, h or d")),
    };
    n.checked_mul(scale).ok_or_else(|| format!("`{text}` is too long"))
}

pub(crate) fn service(dir: &DataDir) -> Result<IdentityService<SqliteStore>> {
    let authority = dir.authority()?;
    let store = dir.store()?;
    Ok(IdentityService::new(authority, store)?.with_audit(dir.audit_log()?))
}

/// Unix milliseconds as RFC 3339.
pub(crate) fn when_ms(ms: i64) -> String {
    when(ms.div_euclid(1000))
}

pub(crate) fn when(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

/// Runs `zerogate ca …`.
pub fn run_ca(args: CaArgs) -> Result<ExitCode> {
    let dir = args.data_dir.get();
    let origin = Origin::default();
    match args.command {
        CaCommand::Init { trust_domain, offline_root_key, workload_ttl, device_ttl, max_ttl } => {
            let domain = TrustDomain::parse(&trust_domain).with_context(|| format!("trust domain `{trust_domain}`"))?;
            if workload_ttl > max_ttl || device_ttl > max_ttl {
                bail!("default lifetimes must not exceed --max-ttl");
            }
            let lifetimes = Lifetimes { workload: workload_ttl, device: device_ttl, max: max_ttl };
            dir.init(&domain, lifetimes, offline_root_key.as_deref(), unix_now())?;
            println!("CA for trust domain {domain} created in {}", dir.path().display());
            println!("  root certificate: {}", dir.root_cert_path().display());
            match offline_root_key {
                Some(path) => {
                    println!("  root key: {} (not kept in the data directory; store it offline)", path.display())
                }
                None => println!("  root key: {}", dir.root_key_path().display()),
            }
        }
        CaCommand::ExportRootKey { out } => {
            dir.export_root_key(&out)?;
            println!("root key moved to {}; it is no longer in {}", out.display(), dir.path().display());
        }
        CaCommand::Token { command: TokenCommand::Create { spiffe_id, ttl } } => {
            let service = service(&dir)?;
            let token = service.create_token(&spiffe_id, ttl, unix_now(), origin)?;
            println!("{token}");
        }
        CaCommand::Issue { spiffe_id, csr, out, ttl } => {
            let service = service(&dir)?;
            match csr {
                Some(path) => {
                    let pem = std::fs::read(&path).with_context(|| format!("reading `{}`", path.display()))?;
                    let issued = service.issue(&spiffe_id, &pem, ttl, unix_now(), origin)?;
                    match out {
                        Some(out) => write_atomic(&out, issued.chain_pem.as_bytes(), false)?,
                        None => print!("{}", issued.chain_pem),
                    }
                    eprintln!("issued {} serial {} until {}", issued.spiffe_id, issued.serial, when(issued.not_after));
                }
                None => {
                    let Some(out) = out else { bail!("--out DIR is needed when no --csr is given") };
                    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
                    let csr = CertificateParams::default().serialize_request(&key)?.pem()?;
                    let issued = service.issue(&spiffe_id, csr.as_bytes(), ttl, unix_now(), origin)?;
                    let files = IdentityFiles::new(&out);
                    std::fs::create_dir_all(&out).with_context(|| format!("creating `{}`", out.display()))?;
                    write_atomic(&files.key(), key.serialize_pem().as_bytes(), true)?;
                    write_atomic(&files.bundle(), std::fs::read(dir.root_cert_path())?.as_slice(), false)?;
                    write_atomic(&files.cert(), issued.chain_pem.as_bytes(), false)?;
                    println!(
                        "issued {} serial {} until {} into {}",
                        issued.spiffe_id,
                        issued.serial,
                        when(issued.not_after),
                        out.display()
                    );
                }
            }
        }
        CaCommand::List { json } => {
            let store = dir.store()?;
            let now = unix_now();
            let certs = store.certificates()?;
            if !json {
                println!("{:<34} {:<9} {:<8} {:<20} SPIFFE ID", "SERIAL", "STATUS", "VIA", "NOT AFTER");
            }
            for c in certs {
                let status = if c.revoked_at.is_some() {
                    "revoked"
                } else if c.not_after <= now {
                    "expired"
                } else {
                    "valid"
                };
                if json {
                    let line = serde_json::json!({
                        "serial": c.serial, "spiffe_id": c.spiffe_id, "status": status, "via": c.via.as_str(),
                        "not_before": when(c.not_before), "not_after": when(c.not_after), "key_type": c.key_type,
                        "renews": c.renews, "revoked_at": c.revoked_at.map(when), "revocation_reason": c.revocation_reason,
                    });
                    println!("{line}");
                } else {
                    println!(
                        "{:<34} {:<9} {:<8} {:<20} {}",
                        c.serial,
                        status,
                        c.via.as_str(),
                        when(c.not_after),
                        c.spiffe_id
                    );
                }
            }
        }
        CaCommand::AccessKey { command } => {
            let service = service(&dir)?;
            match command {
                AccessKeyCommand::Create { client, json } => {
                    let (id, secret) = service.create_access_key(&client, unix_now(), origin)?;
                    if json {
                        let value =
                            serde_json::json!({ "access_key_id": id, "secret_access_key": secret, "client": client });
                        println!("{value}");
                    } else {
                        println!("access key id      {id}\nsecret access key  {secret}\nclient             {client}");
                        println!("(the secret is shown once; give it to the client, e.g. as AWS_SECRET_ACCESS_KEY)");
                    }
                }
                AccessKeyCommand::List => {
                    for key in service.list_access_keys()? {
                        let state =
                            key.revoked_at.map_or_else(|| "live".to_owned(), |at| format!("revoked {}", when(at)));
                        println!("{}  {}  created {}  {state}", key.id, key.client, when(key.created_at));
                    }
                }
                AccessKeyCommand::Revoke { id } => {
                    service.revoke_access_key(&id, unix_now(), origin)?;
                    println!("revoked access key {id}");
                }
            }
        }
        CaCommand::Revoke { serial, spiffe_id, reason } => {
            let service = service(&dir)?;
            if let Some(serial) = serial {
                service.revoke_serial(&serial, &reason, unix_now(), origin)?;
                println!("revoked certificate {serial}");
            } else if let Some(id) = spiffe_id {
                let n = service.revoke_identity(&id, &reason, unix_now(), origin)?;
                println!("revoked identity {id} ({n} certificates)");
            }
        }
        CaCommand::Crl { out, der } => {
            let service = service(&dir)?;
            let crl = service.crl(unix_now(), 24 * 3600)?;
            let bytes = if der { crl } else { zerogate_pki::ca::pem_block("X509 CRL", &crl).into_bytes() };
            match out {
                Some(path) => write_atomic(&path, &bytes, false)?,
                None => {
                    use std::io::Write;
                    std::io::stdout().write_all(&bytes)?;
                }
            }
        }
        CaCommand::Bundle { format } => {
            let authority = dir.authority()?;
            match format {
                BundleFormat::Pem => print!("{}", zerogate_pki::ca::pem_block("CERTIFICATE", authority.root_der())),
                BundleFormat::Spiffe => {
                    let bundle = zerogate_pki::bundle::spiffe_bundle(&[authority.root_der().as_ref()], 1, 300)
                        .map_err(anyhow::Error::msg)?;
                    println!("{}", serde_json::to_string_pretty(&bundle)?);
                }
            }
        }
        CaCommand::Events { limit, json } => {
            for e in dir.store()?.events(limit)? {
                if json {
                    let line = serde_json::json!({
                        "at": when(e.at), "action": e.action, "subject": e.subject, "outcome": e.outcome,
                        "detail": e.detail, "peer": e.peer,
                    });
                    println!("{line}");
                } else {
                    // Debug formatting escapes control characters: one event, one line.
                    println!(
                        "{} {:<12} {:<8} {:?} {:?}{}",
                        when(e.at),
                        e.action,
                        e.outcome,
                        e.subject,
                        e.detail,
                        e.peer.map(|p| format!(" from {p}")).unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `zerogate server`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: String,
    /// DNS names and IP addresses for the server certificate (repeatable).
    #[arg(long = "name", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()])]
    names: Vec<String>,
    #[command(flatten)]
    data_dir: DataDirArg,
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Runs `zerogate server` until interrupted.
pub fn run_server(args: ServerArgs) -> Result<ExitCode> {
    init_logging();
    let dir = args.data_dir.get();
    let service = Arc::new(service(&dir)?);
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let local = listener.local_addr()?;
        println!(
            "zerogate server: identity endpoints on https://{local} (trust domain {})",
            service.authority().trust_domain()
        );
        use std::io::Write;
        std::io::stdout().flush()?;
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        zerogate_control::server::serve(service, listener, ServerOptions { names: args.names }, shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}

pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ZEROGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal: a log file or journald gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}

/// `zerogate enroll`.
#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// The control plane, https://host:port.
    #[arg(long)]
    server: String,
    /// The one-time token (or set ZEROGATE_TOKEN).
    #[arg(long, env = "ZEROGATE_TOKEN", hide_env_values = true, required_unless_present = "renew")]
    token: Option<String>,
    /// Where to keep svid.pem, svid.key.pem and bundle.pem [default: DATA_DIR/identity].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The identity you expect; refused if the token enrolls another.
    #[arg(long)]
    spiffe_id: Option<String>,
    /// Renew the certificate in --dir now, with itself as the credential.
    #[arg(long)]
    renew: bool,
    #[command(flatten)]
    data_dir: DataDirArg,
}

fn identity_dir(dir: Option<PathBuf>, data_dir: &DataDirArg) -> PathBuf {
    dir.unwrap_or_else(|| data_dir.get().path().join("identity"))
}

fn report(issued: &client::Issued, dir: &Path) {
    println!(
        "{} serial {} valid until {} in {}",
        issued.spiffe_id,
        issued.serial,
        when(issued.not_after),
        dir.display()
    );
}

/// Runs `zerogate enroll`.
pub fn run_enroll(args: EnrollArgs) -> Result<ExitCode> {
    let dir = identity_dir(args.dir, &args.data_dir);
    let files = IdentityFiles::new(&dir);
    runtime()?.block_on(async {
        let issued = if args.renew {
            client::renew(&args.server, &files).await?
        } else {
            let token = args.token.unwrap_or_default();
            client::enroll(&args.server, &token, &files, args.spiffe_id.as_deref()).await?
        };
        report(&issued, &dir);
        Ok(ExitCode::SUCCESS)
    })
}

/// `zerogate agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The control plane, https://host:port.
    #[arg(long)]
    server: String,
    /// The identity directory written by `zerogate enroll` [default: DATA_DIR/identity].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    #[command(flatten)]
    data_dir: DataDirArg,
}

/// Runs `zerogate agent`: renews at half the certificate's life, retrying on failure.
pub fn run_agent(args: AgentArgs) -> Result<ExitCode> {
    init_logging();
    let dir = identity_dir(args.dir, &args.data_dir);
    let files = IdentityFiles::new(&dir);
    runtime()?.block_on(async {
        let mut backoff = 5u64;
        let mut renewed_at = None;
        loop {
            let due = client::renewal_due(&files, renewed_at)?;
            let wait = u64::try_from(due - unix_now()).unwrap_or(0);
            if wait > 0 {
                tracing::info!(due = %when(due), "next renewal");
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_secs(wait)) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
                }
            }
            match client::renew(&args.server, &files).await {
                Ok(issued) => {
                    backoff = 5;
                    renewed_at = Some(unix_now());
                    tracing::info!(spiffe_id = %issued.spiffe_id, serial = %issued.serial, until = %when(issued.not_after), "renewed");
                }
                Err(e @ client::ClientError::Refused { status: 401 | 403, .. }) => {
                    bail!("renewal refused, the identity must enroll again: {e}");
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_s = backoff, "renewal failed");
                    tokio::select! {
                        () = tokio::time::sleep(std::time::Duration::from_secs(backoff)) => {}
                        _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
                    }
                    backoff = (backoff * 2).min(300);
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("24h"), Ok(86_400));
        assert_eq!(parse_duration("90"), Ok(90));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }
}
