//! The AWS signing test suite (aws-c-auth, `tests/data/aws-signing-test-suite/v4`, Apache-2.0,
//! provenance in `tests/data/NOTICE`) in full, as a verifier meets it: every signed request
//! (header and presigned form) verifies, our canonical request, string to sign and signature equal
//! AWS's byte for byte, and every one of them is refused once anything signed is changed, the clock
//! moves out of the window, or it is replayed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use zerogate_authn::sigv4::*;

/// 2015-08-30T12:36:00Z, the time of every case.
const NOW: i64 = 1_440_938_160;

struct Parsed {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Parsed {
    fn request(&self) -> (Vec<(&str, &str)>, Request<'_>) {
        let headers: Vec<(&str, &str)> = self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let request =
            Request { method: &self.method, path: &self.path, query: &self.query, headers: &[], body: &self.body };
        (headers, request)
    }
}

/// An HTTP/1.1 request as the suite writes it (obs-folded header lines joined with a space).
fn parse(text: &str) -> Parsed {
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let first = lines.next().unwrap();
    let (method, rest) = first.split_once(' ').unwrap();
    let target = rest.strip_suffix(" HTTP/1.1").unwrap();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with(' ') || line.starts_with('\t') {
            headers.last_mut().unwrap().1.push_str(&format!(" {}", line.trim()));
        } else if let Some((n, v)) = line.split_once(':') {
            headers.push((n.to_owned(), v.to_owned()));
        }
    }
    Parsed { method: method.into(), path: path.into(), query: query.into(), headers, body: body.as_bytes().to_vec() }
}

struct Case {
    name: String,
    dir: PathBuf,
    context: serde_json::Value,
}

fn cases() -> Vec<Case> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/aws-signing-test-suite/v4");
    let mut cases: Vec<Case> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| {
            let dir = e.unwrap().path();
            let context = serde_json::from_str(&std::fs::read_to_string(dir.join("context.json")).unwrap()).unwrap();
            Case { name: dir.file_name().unwrap().to_string_lossy().into_owned(), dir, context }
        })
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(cases.len(), 38, "the whole suite");
    cases
}

fn verifier(case: &Case) -> Verifier<HashMap<String, String>> {
    let c = &case.context;
    let mut config = Config::new(c["region"].as_str().unwrap(), c["service"].as_str().unwrap());
    config.normalize_path = c["normalize"].as_bool().unwrap();
    let keys = HashMap::from([(
        c["credentials"]["access_key_id"].as_str().unwrap().to_owned(),
        c["credentials"]["secret_access_key"].as_str().unwrap().to_owned(),
    )]);
    Verifier::new(config, keys)
}

fn read(case: &Case, file: &str) -> String {
    std::fs::read_to_string(case.dir.join(file)).unwrap()
}

fn verify(v: &Verifier<HashMap<String, String>>, p: &Parsed, now: i64) -> Result<Verified, SigV4Error> {
    let (headers, request) = p.request();
    v.verify(&Request { headers: &headers, ..request }, now)
}

#[test]
fn every_case_verifies_in_both_forms_and_matches_aws_byte_for_byte() {
    for case in cases() {
        for form in ["header", "query"] {
            let signed = parse(&read(&case, &format!("{form}-signed-request.txt")));
            let v = verifier(&case);
            let ok = verify(&v, &signed, NOW).unwrap_or_else(|e| panic!("{} ({form}): {e}", case.name));
            assert_eq!(ok.access_key_id, "AKIDEXAMPLE");
            assert_eq!(ok.presigned, form == "query");

            // Our intermediate results are AWS's.
            let (headers, request) = signed.request();
            let request = Request { headers: &headers, ..request };
            let (signed_headers, amz_date) = if form == "header" {
                let auth = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("authorization")).unwrap().1;
                let sh = auth.split("SignedHeaders=").nth(1).unwrap().split(',').next().unwrap();
                (sh.to_owned(), "20150830T123600Z".to_owned())
            } else {
                let sh = signed.query.split('&').find_map(|p| p.strip_prefix("X-Amz-SignedHeaders=")).unwrap();
                (sh.replace("%3B", ";"), "20150830T123600Z".to_owned())
            };
            let signed_headers: Vec<String> = signed_headers.split(';').map(str::to_owned).collect();
            let expected_canonical = read(&case, &format!("{form}-canonical-request.txt"));
            let payload = expected_canonical.lines().last().unwrap();
            let canonical = canonical_request(
                &request,
                &signed_headers,
                payload,
                case.context["normalize"].as_bool().unwrap(),
                form == "query",
                form == "query" && case.context["omit_session_token"].as_bool() == Some(true),
            )
            .unwrap();
            assert_eq!(canonical, expected_canonical, "{} ({form}) canonical request", case.name);
            let to_sign = string_to_sign(&amz_date, "20150830", "us-east-1", "service", &canonical);
            assert_eq!(to_sign, read(&case, &format!("{form}-string-to-sign.txt")), "{} ({form})", case.name);
            let secret = case.context["credentials"]["secret_access_key"].as_str().unwrap();
            assert_eq!(
                signature(secret, "20150830", "us-east-1", "service", &to_sign),
                read(&case, &format!("{form}-signature.txt")).trim(),
                "{} ({form})",
                case.name
            );
        }
    }
}

#[test]
fn every_case_is_refused_when_tampered_with_late_or_replayed() {
    for case in cases() {
        for form in ["header", "query"] {
            let original = parse(&read(&case, &format!("{form}-signed-request.txt")));
            let name = format!("{} ({form})", case.name);
            let refused = |p: &Parsed, now: i64, what: &str| {
                let v = verifier(&case);
                assert!(verify(&v, p, now).is_err(), "{name}: {what} was accepted");
            };
            let mut p = parse(&read(&case, &format!("{form}-signed-request.txt")));
            p.method = if p.method == "GET" { "POST".into() } else { "GET".into() };
            refused(&p, NOW, "another method");
            let mut p = parse(&read(&case, &format!("{form}-signed-request.txt")));
            p.path = format!("{}x", p.path);
            refused(&p, NOW, "another path");
            let mut p = parse(&read(&case, &format!("{form}-signed-request.txt")));
            p.query = if p.query.is_empty() { "a=b".into() } else { format!("{}&zz=1", p.query) };
            refused(&p, NOW, "an added query parameter");
            let mut p = parse(&read(&case, &format!("{form}-signed-request.txt")));
            for (n, v) in p.headers.iter_mut() {
                if n.eq_ignore_ascii_case("host") {
                    v.push_str(".evil");
                }
            }
            refused(&p, NOW, "another host");
            if !original.body.is_empty() {
                let mut p = parse(&read(&case, &format!("{form}-signed-request.txt")));
                p.body.push(b'!');
                refused(&p, NOW, "another body");
            }
            if form == "header" {
                refused(&original, NOW + 301, "a request 301 s old");
                refused(&original, NOW - 301, "a request 301 s early");
                let v = verifier(&case);
                assert!(verify(&v, &original, NOW + 300).is_ok(), "{name}: 300 s is inside the window");
            } else {
                refused(&original, NOW + 3601, "an expired presigned URL");
                let v = verifier(&case);
                assert!(verify(&v, &original, NOW + 3600).is_ok(), "{name}: the last second of the URL");
            }
            // Replay: the very same request, accepted once.
            let v = verifier(&case);
            verify(&v, &original, NOW).unwrap();
            assert_eq!(verify(&v, &original, NOW + 1), Err(SigV4Error::Replay), "{name}");
            // Another secret, another key id.
            let mut config = Config::new("us-east-1", "service");
            config.normalize_path = case.context["normalize"].as_bool().unwrap();
            let wrong =
                Verifier::new(config.clone(), HashMap::from([("AKIDEXAMPLE".to_owned(), "not-the-secret".to_owned())]));
            assert_eq!(verify(&wrong, &original, NOW), Err(SigV4Error::SignatureMismatch), "{name}");
            let unknown = Verifier::new(config.clone(), HashMap::new());
            assert!(matches!(verify(&unknown, &original, NOW), Err(SigV4Error::UnknownKey(_))), "{name}");
            let other_region = Verifier::new(Config::new("eu-west-1", "service"), HashMap::new());
            assert!(matches!(verify(&other_region, &original, NOW), Err(SigV4Error::WrongScope(_))), "{name}");
        }
    }
}
