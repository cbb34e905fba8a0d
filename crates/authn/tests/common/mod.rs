//! Test tokens made by PyJWT (an independent implementation) through `tests/jwt/make_tokens.py`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use zerogate_authn::jwt::{Algorithm, TokenKind, Validation};

pub const AUDIENCE: &str = "zerogate-gateway";

pub struct Case {
    pub name: String,
    pub kind: TokenKind,
    pub issuers: u64,
    pub expect: String,
    pub token: String,
}

pub struct Cases {
    pub dir: PathBuf,
    pub now: SystemTime,
    pub cases: Vec<Case>,
}

impl Cases {
    pub fn get(&self, name: &str) -> &Case {
        self.cases.iter().find(|case| case.name == name).unwrap_or_else(|| panic!("no case {name}"))
    }
    pub fn file(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).unwrap()
    }
}

/// Runs the generator at the current second. Needs Python 3 with PyJWT and cryptography
/// (`.ci/run` installs them).
pub fn make(issuer: &str, second_issuer: &str, dir: &Path) -> Cases {
    let now_secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/jwt/make_tokens.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg(now_secs.to_string())
        .args([issuer, second_issuer])
        .arg(dir)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "make_tokens.py failed (install PyJWT and cryptography: pip install 'pyjwt[crypto]'):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let list: Vec<Value> = serde_json::from_slice(&std::fs::read(dir.join("cases.json")).unwrap()).unwrap();
    let cases = list
        .into_iter()
        .map(|case| Case {
            name: case["name"].as_str().unwrap().to_owned(),
            kind: if case["kind"] == "id" { TokenKind::Id } else { TokenKind::Access },
            issuers: case["issuers"].as_u64().unwrap(),
            expect: case["expect"].as_str().unwrap().to_owned(),
            token: case["token"].as_str().unwrap().to_owned(),
        })
        .collect();
    Cases { dir: dir.to_owned(), now: UNIX_EPOCH + Duration::from_secs(now_secs), cases }
}

pub fn allowed() -> Vec<Algorithm> {
    vec![Algorithm::RS256, Algorithm::PS256, Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA]
}

pub fn validation(issuer: &str, kind: TokenKind) -> Validation {
    Validation::new(issuer, vec![AUDIENCE.to_owned()], allowed(), kind).unwrap()
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zerogate-authn-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
