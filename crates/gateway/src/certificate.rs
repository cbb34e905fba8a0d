//! The certificate the public listener serves: one issued by zerogate's CA (renewed by the
//! caller at half its life), or one the operator brings, read from PEM files (a public CA's, so
//! that browsers trust the gateway without zerogate's root). A brought certificate is checked
//! before it is served: its key is its own, it is valid now, and it names every application's
//! host. When its files change it is read and checked again; a pair that fails is refused and the
//! last good one stays in service, so a half-finished renewal never takes the listener down.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::proxy::GatewayError;

/// The certificates served to new connections: one for the names the client asks for (SNI) that
/// an application brings its own for, and the default for every other. Each pair is replaced
/// whole, so a handshake sees one pair.
#[derive(Debug)]
pub struct ServerCertificate {
    default: RwLock<Served>,
    /// By application host (lowercase, as the configuration keeps it).
    by_host: RwLock<HashMap<String, Served>>,
}

/// One pair as rustls serves it, and when its leaf expires (Unix seconds).
#[derive(Debug, Clone)]
struct Served {
    key: Arc<CertifiedKey>,
    not_after: i64,
}

impl Served {
    fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Self, GatewayError> {
        let not_after = chain.first().and_then(|leaf| zerogate_pki::ca::validity(leaf)).map_or(0, |(_, to)| to);
        Ok(Self { key: Arc::new(certified(chain, key)?), not_after })
    }
}

impl ServerCertificate {
    /// The default certificate: a chain (leaf first) and its key.
    pub fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Self, GatewayError> {
        Ok(Self { default: RwLock::new(Served::new(chain, key)?), by_host: RwLock::default() })
    }

    /// Replaces the default certificate for new connections.
    pub fn replace(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<(), GatewayError> {
        let fresh = Served::new(chain, key)?;
        *self.default.write().map_err(|_| poisoned())? = fresh;
        Ok(())
    }

    /// Serves `chain` and `key` to new connections that ask for any of `hosts`, in place of the
    /// default (set and replaced alike).
    pub fn replace_for(
        &self,
        hosts: &[String],
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<(), GatewayError> {
        let fresh = Served::new(chain, key)?;
        let mut by_host = self.by_host.write().map_err(|_| poisoned())?;
        for host in hosts {
            by_host.insert(host.to_ascii_lowercase(), fresh.clone());
        }
        Ok(())
    }

    /// When the first of the certificates served expires (Unix seconds): what to renew next.
    pub fn earliest_expiry(&self) -> i64 {
        let default = self.default.read().map_or(0, |d| d.not_after);
        let by_host = self.by_host.read().map(|m| m.values().map(|s| s.not_after).min()).ok().flatten();
        by_host.map_or(default, |earliest| earliest.min(default))
    }
}

fn poisoned() -> GatewayError {
    GatewayError::Tls("certificate lock poisoned".into())
}

/// The pair as rustls serves it; a key that is not the leaf's is refused.
fn certified(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<CertifiedKey, GatewayError> {
    CertifiedKey::from_der(chain, key, &rustls::crypto::aws_lc_rs::default_provider())
        .map_err(|e| GatewayError::Tls(e.to_string()))
}

impl ResolvesServerCert for ServerCertificate {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            let own = self.by_host.read().ok().filter(|m| !m.is_empty()).and_then(|m| {
                // A trailing dot names the same host; SNI is case-insensitive.
                let name = name.strip_suffix('.').unwrap_or(name);
                m.get(name).or_else(|| m.get(&name.to_ascii_lowercase())).map(|s| Arc::clone(&s.key))
            });
            if own.is_some() {
                return own;
            }
        }
        self.default.read().ok().map(|d| Arc::clone(&d.key))
    }
}

/// A certificate the operator brings: `certificate` (the chain, leaf first) and `private_key`,
/// both PEM, in `[gateway]` (the default) or in an `[[app]]` (for its host alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    /// Where they are configured, for errors: `gateway` or `app[2]`.
    pub table: String,
    /// The chain, leaf first.
    pub chain: PathBuf,
    /// The leaf's private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

/// Why a brought certificate cannot be served: the configuration key, its file and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} `{}`: {reason}", file.display())]
pub struct CertificateFileError {
    /// `certificate` or `private_key`, under its table (`gateway.certificate`, `app[2].private_key`).
    pub key: String,
    /// The file.
    pub file: PathBuf,
    /// What is wrong.
    pub reason: String,
}

/// A brought certificate that passed its checks, ready to serve.
#[derive(Debug)]
pub struct CheckedCertificate {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's key.
    pub key: PrivateKeyDer<'static>,
    /// When the leaf expires (Unix seconds).
    pub not_after: i64,
}

impl CertificateFiles {
    /// Reads both files and checks the pair at `now` (Unix seconds) for every name in `hosts`.
    pub fn load(&self, hosts: &[String], now: i64) -> Result<CheckedCertificate, CertificateFileError> {
        let chain_error = |reason: String| CertificateFileError {
            key: format!("{}.certificate", self.table),
            file: self.chain.clone(),
            reason,
        };
        let key_error = |reason: String| CertificateFileError {
            key: format!("{}.private_key", self.table),
            file: self.key.clone(),
            reason,
        };
        let pem = std::fs::read(&self.chain).map_err(|e| chain_error(e.to_string()))?;
        let chain = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| chain_error(format!("not PEM: {e}")))?;
        let Some(leaf) = chain.first() else {
            return Err(chain_error("no CERTIFICATE block".into()));
        };
        let key = std::fs::read(&self.key).map_err(|e| key_error(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(&key)
            .map_err(|e| key_error(format!("no private key (PKCS#8, SEC1 or PKCS#1 PEM): {e}")))?;
        let (not_before, not_after) = zerogate_pki::ca::validity(leaf)
            .ok_or_else(|| chain_error("the first certificate does not parse".into()))?;
        if now < not_before {
            return Err(chain_error(format!("not valid before {} (now {now}, Unix seconds)", not_before)));
        }
        if now >= not_after {
            return Err(chain_error(format!("expired at {not_after} (now {now}, Unix seconds)")));
        }
        let parsed = webpki::EndEntityCert::try_from(leaf).map_err(|e| chain_error(format!("the leaf: {e}")))?;
        for host in hosts {
            let name = ServerName::try_from(host.as_str()).map_err(|e| chain_error(format!("host `{host}`: {e}")))?;
            if parsed.verify_is_valid_for_subject_name(&name).is_err() {
                return Err(chain_error(format!("does not name the application host `{host}`")));
            }
        }
        certified(chain.clone(), key.clone_key()).map_err(|e| match e {
            GatewayError::Tls(reason) => key_error(format!("not the certificate's key: {reason}")),
            other => key_error(other.to_string()),
        })?;
        Ok(CheckedCertificate { chain, key, not_after })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, date_time_ymd};
    use std::path::Path;

    /// 2026-06-01, inside the test certificates' validity.
    const NOW: i64 = 1_780_272_000;

    /// A self-signed certificate for `names`, valid through 2026, and its key, written to `dir`.
    fn pair(dir: &Path, names: &[&str], from: i32, to: i32) -> (CertificateFiles, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
        params.not_before = date_time_ymd(from, 1, 1);
        params.not_after = date_time_ymd(to, 12, 31);
        let cert = params.self_signed(&key).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let files =
            CertificateFiles { table: "gateway".into(), chain: dir.join("chain.pem"), key: dir.join("key.pem") };
        std::fs::write(&files.chain, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        (files, key)
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("zerogate-certificate-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn hosts(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn a_brought_certificate_is_served_only_when_it_is_valid_now_for_every_host_with_its_own_key() {
        let dir = scratch("checks");
        let (files, _) = pair(&dir.join("good"), &["*.example.org", "127.0.0.1"], 2026, 2026);
        let checked = files.load(&hosts(&["billing.example.org", "wiki.example.org", "127.0.0.1"]), NOW).unwrap();
        assert_eq!(checked.chain.len(), 1);
        assert_eq!(checked.not_after, 1_798_675_200, "2026-12-31");
        let refused = |files: &CertificateFiles, names: &[&str], now: i64| files.load(&hosts(names), now).unwrap_err();

        let error = refused(&files, &["billing.example.org", "example.org"], NOW);
        assert_eq!(error.key, "gateway.certificate");
        assert!(error.to_string().contains("does not name the application host `example.org`"), "{error}");
        let error = refused(&files, &["a.b.example.org"], NOW);
        assert!(error.reason.contains("`a.b.example.org`"), "a wildcard covers one label: {error}");
        assert!(refused(&files, &["billing.example.org"], 1_798_675_200).reason.contains("expired at 1798675200"));
        let (later, _) = pair(&dir.join("later"), &["billing.example.org"], 2027, 2027);
        assert!(refused(&later, &["billing.example.org"], NOW).reason.contains("not valid before"));

        // Another certificate's key, an empty file, a key where the chain should be.
        let (other, _) = pair(&dir.join("other"), &["billing.example.org"], 2026, 2026);
        let crossed = CertificateFiles { key: other.key.clone(), ..files.clone() };
        let error = refused(&crossed, &["billing.example.org"], NOW);
        assert_eq!(error.key, "gateway.private_key");
        assert!(error.to_string().starts_with(&format!("gateway.private_key `{}`", other.key.display())), "{error}");
        assert!(error.reason.contains("not the certificate's key"), "{error}");
        std::fs::write(dir.join("empty.pem"), "").unwrap();
        let empty = CertificateFiles { chain: dir.join("empty.pem"), ..files.clone() };
        assert!(refused(&empty, &["billing.example.org"], NOW).reason.contains("no CERTIFICATE block"));
        let swapped = CertificateFiles { table: "app[1]".into(), chain: files.key.clone(), key: files.chain.clone() };
        let error = refused(&swapped, &["billing.example.org"], NOW);
        assert!(error.key == "app[1].certificate" && error.reason.contains("no CERTIFICATE block"), "{error}");
        let missing = CertificateFiles { chain: dir.join("none.pem"), ..files.clone() };
        assert_eq!(refused(&missing, &["billing.example.org"], NOW).key, "gateway.certificate");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
