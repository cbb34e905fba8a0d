//! `zerogate up` (the embedded default in one process) and `zerogate gateway --config FILE`.
//! Both assemble the gateway from the data directory: its CA issues the gateway's certificate and
//! verifies client certificates, its audit log records every decision, its revocations apply to
//! the next request; the policy files are reloaded when they change, keeping the last good set.

#![allow(clippy::print_stdout, reason = "these commands print where things are and what to run next")]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use clap::Args;
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use zerogate_authn::identity::{Method, Revocations};
use zerogate_authn::jwt::Validation;
use zerogate_authn::oidc::{FetchSettings, IssuerConfig, OidcVerifier};
use zerogate_control::datadir::{DataDir, write_atomic};
use zerogate_control::server::{ServerOptions, unix_now};
use zerogate_control::service::IdentityService;
use zerogate_gateway::assertion::AssertionSigner;
use zerogate_gateway::certificate::{CertificateFiles, ServerCertificate};
use zerogate_gateway::config::{AppSettings, GatewayConfig};
use zerogate_gateway::decide::{Action, App, Mode};
use zerogate_gateway::freshness::{Freshness, keep_current};
use zerogate_gateway::proxy::{Gateway, GatewayParts, SharedKeys, tls_config};
use zerogate_pki::{Lifetimes, SvidVerifier, TrustDomain};
use zerogate_policy::{LivePolicy, PolicyFiles, Reload};
use zerogate_store::{RevokedKind, SqliteStore};

use crate::identity_cmd::{DataDirArg, init_logging, service};

/// The demo TCP service's name, asked for by SNI.
const ECHO_HOST: &str = "echo.localhost";

/// How long a stopping gateway waits for the requests in flight.
const DRAIN: Duration = Duration::from_secs(30);

/// `zerogate up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    /// The gateway (HTTPS), in front of the demo application.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: String,
    /// The control plane (HTTPS): enrollment and renewal.
    #[arg(long, default_value = "127.0.0.1:8444")]
    control_listen: String,
    /// Metrics, health and the assertion JWKS (HTTP, keep it local).
    #[arg(long, default_value = "127.0.0.1:9090")]
    admin_listen: String,
    /// The trust domain of a new CA (first start only).
    #[arg(long, default_value = "zerogate.local")]
    trust_domain: String,
}

/// `zerogate gateway`.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    /// The gateway's configuration (TOML).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

const DEMO_POLICY: &str = r#"// The demo application: any device or workload enrolled with this CA, and any API client
// with an access key, may use it from anywhere, except the /admin route, which is for
// workloads only.
@id("enrolled-devices-workloads-and-api-clients")
permit (principal, action == Zerogate::Action::"http", resource in Zerogate::Application::"demo")
when { principal is Zerogate::Device || principal is Zerogate::Workload || principal is Zerogate::ApiClient };

@id("demo-admin-workloads-only")
forbid (principal, action, resource == Zerogate::Route::"demo-admin")
unless { principal is Zerogate::Workload };

// The demo TCP service (echo.localhost, reached with `zerogate connect`): enrolled devices and
// workloads may open a tunnel to it.
@id("enrolled-devices-and-workloads-echo")
permit (principal, action == Zerogate::Action::"connect", resource == Zerogate::TcpTarget::"demo-echo")
when { principal is Zerogate::Device || principal is Zerogate::Workload };
"#;

const DEMO_ENTITIES: &str = r#"[
  { "uid": { "type": "Zerogate::Application", "id": "demo" }, "attrs": { "sensitivity": "low" }, "parents": [] },
  { "uid": { "type": "Zerogate::Route", "id": "demo-admin" }, "attrs": { "path_prefix": "/admin" },
    "parents": [{ "type": "Zerogate::Application", "id": "demo" }] },
  { "uid": { "type": "Zerogate::TcpTarget", "id": "demo-echo" }, "attrs": {}, "parents": [] }
]
"#;

/// Runs `zerogate up` until interrupted.
pub fn run_up(args: UpArgs) -> Result<ExitCode> {
    init_logging();
    let dir = args.data_dir.get();
    let first_start = !dir.is_initialised();
    if first_start {
        let domain =
            TrustDomain::parse(&args.trust_domain).with_context(|| format!("trust domain `{}`", args.trust_domain))?;
        dir.init(&domain, Lifetimes::default(), None, unix_now())?;
    }
    let policy_dir = dir.path().join("policy");
    if !policy_dir.exists() {
        std::fs::create_dir_all(&policy_dir).with_context(|| format!("creating `{}`", policy_dir.display()))?;
        write_atomic(&policy_dir.join("demo.cedar"), DEMO_POLICY.as_bytes(), false)?;
        write_atomic(&policy_dir.join("entities.json"), DEMO_ENTITIES.as_bytes(), false)?;
    }
    let service = Arc::new(service(&dir)?);
    crate::identity_cmd::runtime()?.block_on(async move {
        let gateway_listener = bind(&args.listen).await?;
        let control_listener = bind(&args.control_listen).await?;
        let admin_listener = bind(&args.admin_listen).await?;
        let demo_listener = bind("127.0.0.1:0").await?;
        let demo_addr = demo_listener.local_addr()?;
        let echo_listener = bind("127.0.0.1:0").await?;
        let echo_addr = echo_listener.local_addr()?;
        let gateway_addr = gateway_listener.local_addr()?;
        let control_addr = control_listener.local_addr()?;
        let admin_addr = admin_listener.local_addr()?;
        let host = "localhost".to_owned();
        let config = GatewayConfig {
            listen: gateway_addr,
            admin_listen: Some(admin_addr),
            id: "up".into(),
            reauthorize_every: Duration::from_secs(5),
            client_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_requests_per_principal: zerogate_gateway::config::DEFAULT_MAX_REQUESTS_PER_PRINCIPAL,
            audit_segment_bytes: zerogate_audit::DEFAULT_SEGMENT_BYTES,
            certificate: None,
            policies: policy_dir.clone(),
            entities: Some(policy_dir.join("entities.json")),
            issuers: Vec::new(),
            apps: vec![AppSettings {
                app: App {
                    host: host.clone(),
                    resource: r#"Zerogate::Application::"demo""#.into(),
                    routes: vec![("/admin".into(), r#"Zerogate::Route::"demo-admin""#.into())],
                    methods: vec![Method::Mtls, Method::SigV4],
                    mode: Mode::Enforce,
                    action: Action::Http,
                },
                upstream: format!("http://{demo_addr}"),
                upstream_ca_file: None,
                upstream_http2: false,
                require_client_certificate: false,
                sigv4_region: "us-east-1".into(),
                sigv4_service: "execute-api".into(),
                upstream_timeout: Duration::from_secs(60),
                certificate: None,
                proxy_protocol: None,
                idle_timeout: None,
            }, AppSettings {
                app: App {
                    host: ECHO_HOST.into(),
                    resource: r#"Zerogate::TcpTarget::"demo-echo""#.into(),
                    routes: Vec::new(),
                    methods: vec![Method::Mtls],
                    mode: Mode::Enforce,
                    action: Action::Connect,
                },
                upstream: format!("tcp://{echo_addr}"),
                upstream_ca_file: None,
                upstream_http2: false,
                require_client_certificate: true,
                sigv4_region: "us-east-1".into(),
                sigv4_service: "execute-api".into(),
                upstream_timeout: Duration::from_secs(10),
                certificate: None,
                proxy_protocol: None,
                idle_timeout: None,
            }],
        };
        let names = vec![host.clone(), "127.0.0.1".to_owned(), ECHO_HOST.to_owned()];
        let running = assemble(&dir, &service, &config, &names)?;
        tokio::spawn(zerogate_gateway::demo::echo(echo_listener));
        tokio::spawn(zerogate_gateway::demo::serve(demo_listener, running.jwks.clone(), running.issuer.clone(), host));
        tokio::spawn(zerogate_gateway::admin::serve(admin_listener, Arc::clone(&running.gateway)));
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let serving =
            tokio::spawn(Arc::clone(&running.gateway).serve(gateway_listener, Arc::clone(&running.tls), stopping, DRAIN));
        let control = {
            let service = Arc::clone(&service);
            let options = ServerOptions { names: names.clone() };
            tokio::spawn(async move {
                let forever = std::future::pending::<()>();
                if let Err(error) = zerogate_control::server::serve(service, control_listener, options, forever).await {
                    tracing::error!(%error, "control plane stopped");
                }
            })
        };
        let domain = service.authority().trust_domain().to_string();
        let data = dir.path().display().to_string();
        let gateway_port = gateway_addr.port();
        println!("zerogate is up{}", if first_start { " (first start: CA, store and demo policy created)" } else { "" });
        println!("  gateway      https://localhost:{gateway_port}  (the demo application, behind mTLS + Cedar + audit)");
        println!("  control      https://localhost:{}  (enrollment and renewal)", control_addr.port());
        println!("  admin        http://{admin_addr}  (/metrics, /healthz, /jwks.json)");
        println!("  policy       {}  (edit it: changes apply without a restart)", policy_dir.display());
        println!("  audit log    {}", dir.audit_log_path().display());
        println!("  data         {data}");
        println!();
        println!("next, in another terminal:");
        println!("  zerogate ca token create --data-dir {data} --spiffe-id spiffe://{domain}/device/my-laptop");
        println!("  zerogate enroll --server https://localhost:{} --token <the token> --dir ./my-laptop", control_addr.port());
        println!(
            "  curl --cacert ./my-laptop/bundle.pem --cert ./my-laptop/svid.pem --key ./my-laptop/svid.key.pem https://localhost:{gateway_port}/"
        );
        println!("  zerogate audit tail --data-dir {data}");
        // (A data directory from before the echo keeps its own policy, which does not name it.)
        if policy_names(&policy_dir, "demo-echo") {
            println!("a TCP service (an echo) through a tunnel, with the same certificate:");
            println!(
                "  zerogate connect --gateway localhost:{gateway_port} --service {ECHO_HOST} --identity ./my-laptop --listen 127.0.0.1:7007"
            );
            println!("  (then whatever a TCP client sends to 127.0.0.1:7007 comes back: nc 127.0.0.1 7007)");
        }
        println!("or as an API client signing with AWS SigV4 (region us-east-1, service execute-api):");
        println!("  zerogate ca access-key create --data-dir {data} --client my-script");
        use std::io::Write;
        std::io::stdout().flush()?;
        shutdown_signal().await;
        // Finish the requests in flight (their records are written), then close the log.
        let _ = stop.send(true);
        let _ = serving.await;
        control.abort();
        running.audit_close();
        Ok(ExitCode::SUCCESS)
    })
}

/// Whether any policy file in `dir` mentions `name`.
fn policy_names(dir: &Path, name: &str) -> bool {
    std::fs::read_dir(dir).into_iter().flatten().flatten().any(|entry| {
        entry.path().extension().is_some_and(|e| e == "cedar")
            && std::fs::read_to_string(entry.path()).is_ok_and(|text| text.contains(name))
    })
}

/// Runs `zerogate gateway --config FILE` until interrupted.
pub fn run_gateway(args: GatewayArgs) -> Result<ExitCode> {
    init_logging();
    let config = GatewayConfig::load(&args.config)?;
    let dir = args.data_dir.get();
    if !dir.is_initialised() {
        bail!(
            "no CA in `{}`: run `zerogate ca init` first (the gateway's certificate comes from it)",
            dir.path().display()
        );
    }
    let service = Arc::new(service(&dir)?);
    crate::identity_cmd::runtime()?.block_on(async move {
        let listener = bind(&config.listen.to_string()).await?;
        let names: Vec<String> = config.apps.iter().map(|a| a.app.host.clone()).collect();
        let running = assemble(&dir, &service, &config, &names)?;
        if let Some(oidc) = &running.oidc {
            for (issuer, result) in oidc.refresh_all().await {
                match result {
                    Ok(keys) => println!("oidc issuer {issuer}: {keys} keys"),
                    Err(error) => {
                        println!("oidc issuer {issuer}: not ready ({error}); its tokens are refused until it is")
                    }
                }
            }
            oidc.spawn_refresher();
        }
        if let Some(admin) = config.admin_listen {
            tokio::spawn(zerogate_gateway::admin::serve(bind(&admin.to_string()).await?, Arc::clone(&running.gateway)));
        }
        println!(
            "zerogate gateway `{}` on https://{}: {} application(s)",
            config.id,
            listener.local_addr()?,
            config.apps.len()
        );
        use std::io::Write;
        std::io::stdout().flush()?;
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let serving =
            tokio::spawn(Arc::clone(&running.gateway).serve(listener, Arc::clone(&running.tls), stopping, DRAIN));
        shutdown_signal().await;
        let _ = stop.send(true);
        let _ = serving.await;
        running.audit_close();
        Ok(ExitCode::SUCCESS)
    })
}

/// Ctrl-C or SIGTERM: the audit log is closed with a signed checkpoint before exiting.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn bind(address: &str) -> Result<TcpListener> {
    TcpListener::bind(address).await.with_context(|| format!("listening on {address}"))
}

struct Running {
    gateway: Arc<Gateway>,
    tls: Arc<rustls::ServerConfig>,
    jwks: serde_json::Value,
    issuer: String,
    oidc: Option<Arc<OidcVerifier>>,
    audit: Arc<zerogate_audit::AuditLog>,
}

impl Running {
    fn audit_close(&self) {
        self.audit.close();
    }
}

/// The gateway from the data directory and `config`, with its background tasks: certificate
/// renewal at half-life, revocations refreshed every second, policy files watched.
fn assemble(
    dir: &DataDir,
    service: &Arc<IdentityService<SqliteStore>>,
    config: &GatewayConfig,
    names: &[String],
) -> Result<Running> {
    let options = zerogate_audit::Options {
        segment_bytes: Some(config.audit_segment_bytes),
        ..zerogate_audit::Options::default()
    };
    let audit = Arc::new(dir.audit_log_with(options)?);
    let files = PolicyFiles { policies: config.policies.clone(), entities: config.entities.clone() };
    let policy = Arc::new(LivePolicy::start(files).context("policy")?);
    let authority = service.authority();
    let svid = Arc::new(
        SvidVerifier::default().with_domain(authority.trust_domain().clone(), &[authority.root_der().clone()])?,
    );
    let svid_revocations = Arc::new(RwLock::new(service.revocation_list().map_err(|e| anyhow::anyhow!("{e}"))?));
    let issuer = format!("https://{}/zerogate-gateway/{}", authority.trust_domain(), config.id);
    let signer = Arc::new(assertion_signer(dir, &issuer)?);
    let jwks = signer.jwks();
    let oidc = if config.issuers.is_empty() {
        None
    } else {
        let mut issuers = Vec::new();
        for settings in &config.issuers {
            let validation = Validation::new(
                &settings.issuer,
                settings.audiences.clone(),
                settings.algorithms.clone(),
                settings.token_kind,
            )
            .map_err(|e| anyhow::anyhow!("oidc issuer `{}`: {e}", settings.issuer))?;
            let mut extra_roots = Vec::new();
            if let Some(file) = &settings.ca_file {
                let pem = std::fs::read(file).with_context(|| format!("reading `{}`", file.display()))?;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    extra_roots.push(cert.with_context(|| format!("`{}` is not PEM", file.display()))?);
                }
            }
            let static_jwks = match &settings.jwks_file {
                Some(file) => Some(std::fs::read(file).with_context(|| format!("reading `{}`", file.display()))?),
                None => None,
            };
            let fetch = FetchSettings {
                jwks_uri: settings.jwks_uri.clone(),
                static_jwks,
                extra_roots,
                ..FetchSettings::default()
            };
            issuers.push(IssuerConfig { validation, fetch });
        }
        Some(Arc::new(OidcVerifier::new(issuers)?))
    };
    let user_id_from_email = config.issuers.iter().any(|i| i.user_id_from_email);
    let revocations = Arc::new(RwLock::new(Revocations {
        trusted_until: Some(std::time::Instant::now() + REVOCATIONS_GRACE),
        ..revoked_access(service)?
    }));
    let access_keys = SharedKeys::default();
    if let (Ok(keys), Ok(mut shared)) = (service.access_keys(), access_keys.0.write()) {
        *shared = keys;
    }
    let gateway = Gateway::new(GatewayParts {
        id: config.id.clone(),
        apps: config.apps.clone(),
        policy: Arc::clone(&policy),
        audit: Arc::clone(&audit),
        svid,
        svid_revocations: Arc::clone(&svid_revocations),
        revocations: Arc::clone(&revocations),
        oidc: oidc.clone(),
        access_keys: access_keys.clone(),
        user_id_from_email,
        assertion: signer,
        reauthorize_every: config.reauthorize_every,
        client_timeout: config.client_timeout,
        max_connections: config.max_connections,
        max_requests_per_principal: config.max_requests_per_principal,
    })?;
    let certificate = served_certificates(service, config, names, &gateway)?;
    let tls = Arc::new(tls_config(certificate, &[authority.root_der().clone()])?);
    // Revocations (certificates, identities, credentials, principals) and access keys from the
    // store, every second. Each completed read keeps them trusted for REVOCATIONS_GRACE; past
    // that (a store that fails or hangs) every request is refused (503, recorded) until one
    // completes again.
    {
        let service = Arc::clone(service);
        let read = move || -> Result<_> {
            let list = service.revocation_list()?;
            let keys = service.access_keys()?;
            Ok((list, keys, revoked_access(&service)?))
        };
        let apply = move |(list, keys, revoked)| {
            if let Ok(mut current) = svid_revocations.write() {
                *current = list;
            }
            if let Ok(mut current) = access_keys.0.write() {
                *current = keys;
            }
            revoked
        };
        let freshness = Freshness { every: Duration::from_secs(1), grace: REVOCATIONS_GRACE };
        tokio::spawn(keep_current(read, apply, revocations, freshness));
    }
    // Policy files: reloaded when they change; a set that does not validate is refused and the
    // last good one stays.
    {
        let watched = [config.policies.clone()].into_iter().chain(config.entities.clone()).collect::<Vec<_>>();
        tokio::spawn(async move {
            let mut watch = Watched::new(watched);
            loop {
                watch.settled_change().await;
                match policy.reload() {
                    Reload::Applied { generation, policies } => {
                        tracing::info!(generation, policies, "policy reloaded");
                    }
                    Reload::Kept { generation, error } => {
                        tracing::error!(generation, %error, "new policy refused; the last good set stays in force");
                    }
                }
            }
        });
    }
    Ok(Running { gateway, tls, jwks, issuer, oidc, audit })
}

/// How long revocations may go unread (the store failing) before nothing is trusted.
const REVOCATIONS_GRACE: Duration = Duration::from_secs(10);

/// The revoked credentials and principals in the store, as the decision reads them.
fn revoked_access(service: &IdentityService<SqliteStore>) -> Result<Revocations> {
    let mut revocations = Revocations::default();
    for revoked in service.revoked_access()? {
        match revoked.kind {
            RevokedKind::Credential => revocations.credentials.insert(revoked.id),
            RevokedKind::Principal => revocations.principals.insert(revoked.id),
        };
    }
    Ok(revocations)
}

/// Files (or directories of them) watched for changes, polled every second.
struct Watched {
    paths: Vec<PathBuf>,
    seen: Option<SystemTime>,
}

impl Watched {
    fn new(paths: Vec<PathBuf>) -> Self {
        let seen = newest_change(&paths);
        Self { paths, seen }
    }

    /// Returns once the files have changed and the change has settled: the same newest change
    /// twice, 250 ms apart, so a change spread over several files (a deploy copying a directory,
    /// a certificate and its key, a file written in place) is not read half-way. (For a change
    /// that must apply at one instant, swap a symlink.)
    async fn settled_change(&mut self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let mut now = newest_change(&self.paths);
            if now == self.seen {
                continue;
            }
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let again = newest_change(&self.paths);
                if again == now {
                    break;
                }
                now = again;
            }
            self.seen = now;
            return;
        }
    }
}

/// The latest modification time among `paths` (files, or the files of a directory).
fn newest_change(paths: &[PathBuf]) -> Option<SystemTime> {
    let mut newest = None;
    let mut consider = |path: &Path| {
        if let Ok(modified) = std::fs::metadata(path).and_then(|m| m.modified()) {
            newest = newest.max(Some(modified));
        }
    };
    for path in paths {
        consider(path);
        if let Ok(entries) = std::fs::read_dir(path) {
            for entry in entries.flatten() {
                consider(&entry.path());
            }
        }
    }
    newest
}

/// The certificate from zerogate's CA, renewed at half its lifetime.
fn ca_certificate(
    service: &Arc<IdentityService<SqliteStore>>,
    names: &[String],
    gateway: &Arc<Gateway>,
) -> Result<Arc<ServerCertificate>> {
    let (chain, key, lifetime) = server_certificate(service, names)?;
    let certificate = Arc::new(ServerCertificate::new(chain, key)?);
    let (service, names, gateway, serving) =
        (Arc::clone(service), names.to_vec(), Arc::clone(gateway), Arc::clone(&certificate));
    tokio::spawn(async move {
        let mut period = Duration::from_secs(lifetime / 2).max(Duration::from_secs(30));
        loop {
            tokio::time::sleep(period).await;
            match server_certificate(&service, &names) {
                Ok((chain, key, lifetime)) => {
                    match serving.replace(chain, key) {
                        Ok(()) => gateway.metrics().server_certificate_expires(serving.earliest_expiry()),
                        Err(error) => tracing::error!(%error, "gateway certificate replacement failed"),
                    }
                    period = Duration::from_secs(lifetime / 2).max(Duration::from_secs(30));
                }
                Err(error) => {
                    tracing::error!(%error, "gateway certificate renewal failed; retrying in 30 s");
                    period = Duration::from_secs(30);
                }
            }
        }
    });
    Ok(certificate)
}

/// Where a brought pair is served.
#[derive(Clone, Copy)]
enum Slot {
    /// For every host without a certificate of its own (`[gateway] certificate`).
    Default,
    /// For the hosts it is checked against alone (an `[[app]]`'s `certificate`).
    Hosts,
}

/// The certificates the operator brings: the default (`[gateway] certificate`, else one from
/// zerogate's CA) and each application's own (served for its host). Each pair is checked before
/// it is served, for the hosts it serves; its files are watched, and a new pair is served once it
/// checks (a pair that does not is refused, and the one in service stays).
fn served_certificates(
    service: &Arc<IdentityService<SqliteStore>>,
    config: &GatewayConfig,
    names: &[String],
    gateway: &Arc<Gateway>,
) -> Result<Arc<ServerCertificate>> {
    // Applications that share files share one pair.
    let mut own: Vec<(CertificateFiles, Vec<String>)> = Vec::new();
    for app in &config.apps {
        if let Some(files) = &app.certificate {
            match own.iter_mut().find(|(f, _)| (&f.chain, &f.key) == (&files.chain, &files.key)) {
                Some((_, hosts)) => hosts.push(app.app.host.clone()),
                None => own.push((files.clone(), vec![app.app.host.clone()])),
            }
        }
    }
    let certificate = match &config.certificate {
        Some(files) => {
            // The default serves every host without its own (and `zerogate up`'s extra names).
            let hosts: Vec<String> =
                names.iter().filter(|n| !own.iter().any(|(_, hosts)| hosts.contains(n))).cloned().collect();
            let checked = files.load(&hosts, unix_now())?;
            warn_if_expiring(files, checked.not_after);
            let not_after = checked.not_after;
            let certificate = Arc::new(ServerCertificate::new(checked.chain, checked.key)?);
            watch_brought(files.clone(), hosts, Slot::Default, not_after, &certificate, gateway);
            certificate
        }
        None => ca_certificate(service, names, gateway)?,
    };
    for (files, hosts) in own {
        let checked = files.load(&hosts, unix_now())?;
        warn_if_expiring(&files, checked.not_after);
        let not_after = checked.not_after;
        certificate.replace_for(&hosts, checked.chain, checked.key)?;
        watch_brought(files, hosts, Slot::Hosts, not_after, &certificate, gateway);
    }
    gateway.metrics().server_certificate_expires(certificate.earliest_expiry());
    Ok(certificate)
}

/// Reads `files` again whenever they change, and serves the new pair once it checks; the pair
/// in service (valid until `not_after`) is looked at every hour, so the warning that it expires
/// soon goes on until someone renews it, not only when it was loaded.
fn watch_brought(
    files: CertificateFiles,
    hosts: Vec<String>,
    slot: Slot,
    mut not_after: i64,
    certificate: &Arc<ServerCertificate>,
    gateway: &Arc<Gateway>,
) {
    let (serving, gateway) = (Arc::clone(certificate), Arc::clone(gateway));
    tokio::spawn(async move {
        let mut watch = Watched::new(vec![files.chain.clone(), files.key.clone()]);
        let mut hourly = tokio::time::interval_at(tokio::time::Instant::now() + EXPIRY_CHECK_EVERY, EXPIRY_CHECK_EVERY);
        loop {
            tokio::select! {
                () = watch.settled_change() => {}
                _ = hourly.tick() => {
                    warn_if_expiring(&files, not_after);
                    continue;
                }
            }
            let table = files.table.as_str();
            match files.load(&hosts, unix_now()) {
                Ok(checked) => {
                    let checked_until = checked.not_after;
                    let replaced = match slot {
                        Slot::Default => serving.replace(checked.chain, checked.key),
                        Slot::Hosts => serving.replace_for(&hosts, checked.chain, checked.key),
                    };
                    match replaced {
                        Ok(()) => {
                            not_after = checked_until;
                            tracing::info!(table, not_after, "certificate reloaded from its files");
                            gateway.metrics().server_certificate_expires(serving.earliest_expiry());
                            warn_if_expiring(&files, not_after);
                        }
                        Err(error) => tracing::error!(table, %error, "certificate replacement failed"),
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "new certificate refused; the one in service stays");
                }
            }
        }
    });
}

/// How often a brought certificate in service is looked at for its expiry.
const EXPIRY_CHECK_EVERY: Duration = Duration::from_secs(3600);

/// A brought certificate is renewed by someone else: say so while there is time, and loudly
/// once it is too late.
fn warn_if_expiring(files: &CertificateFiles, not_after: i64) {
    let left = not_after - unix_now();
    if left <= 0 {
        let file = files.chain.display().to_string();
        tracing::error!(table = files.table, file, not_after, "a served certificate has expired: clients refuse it");
    } else if left < 7 * 24 * 3600 {
        let file = files.chain.display().to_string();
        tracing::warn!(
            table = files.table,
            file,
            not_after,
            days_left = left / 86_400,
            "a certificate expires within 7 days"
        );
    }
}

/// A fresh certificate for the gateway from the CA (key made here), and its lifetime in seconds.
fn server_certificate(
    service: &IdentityService<SqliteStore>,
    names: &[String],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, u64)> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let issued = service
        .issue_server(&key.subject_public_key_info(), names, unix_now())
        .map_err(|e| anyhow::anyhow!("gateway certificate: {e}"))?;
    let chain = CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((chain, key, u64::try_from(issued.not_after - issued.not_before).unwrap_or(3600)))
}

/// The assertion key, made on first use and kept in the data directory (owner-only).
fn assertion_signer(dir: &DataDir, issuer: &str) -> Result<AssertionSigner> {
    let path = dir.path().join("gateway").join("assertion.key.der");
    if let Ok(der) = std::fs::read(&path) {
        return AssertionSigner::from_pkcs8(issuer, &der).with_context(|| format!("`{}`", path.display()));
    }
    let (signer, der) = AssertionSigner::generate(issuer)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating `{}`", parent.display()))?;
    }
    write_atomic(&path, &der, true)?;
    Ok(signer)
}
