//! Trust bundles: the roots as PEM, and the SPIFFE bundle format (a JWK set whose keys carry
//! `use: x509-svid` and the root certificate in `x5c`).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use x509_parser::prelude::FromDer;

/// The SPIFFE bundle (JWKS) for `roots` (DER), with a sequence number and a refresh hint in
/// seconds.
pub fn spiffe_bundle(roots: &[&[u8]], sequence: u64, refresh_hint: u64) -> Result<Value, String> {
    let keys = roots.iter().map(|der| jwk(der)).collect::<Result<Vec<_>, _>>()?;
    Ok(json!({ "keys": keys, "spiffe_sequence": sequence, "spiffe_refresh_hint": refresh_hint }))
}

fn jwk(der: &[u8]) -> Result<Value, String> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    let spki = cert.public_key();
    let point = spki.subject_public_key.data.as_ref();
    let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
    let (crv, len) = match curve {
        Some(c) if c == x509_parser::oid_registry::OID_EC_P256 => ("P-256", 32),
        Some(c) if c == x509_parser::oid_registry::OID_NIST_EC_P384 => ("P-384", 48),
        _ => return Err("only EC P-256 and P-384 roots are supported in the SPIFFE bundle".into()),
    };
    // An uncompressed point: 0x04 || x || y.
    let (Some(&4), Some(x), Some(y)) = (point.first(), point.get(1..1 + len), point.get(1 + len..1 + 2 * len)) else {
        return Err("the root key is not an uncompressed EC point".into());
    };
    Ok(json!({
        "use": "x509-svid",
        "kty": "EC",
        "crv": crv,
        "x": URL_SAFE_NO_PAD.encode(x),
        "y": URL_SAFE_NO_PAD.encode(y),
        "x5c": [STANDARD.encode(der)],
    }))
}
