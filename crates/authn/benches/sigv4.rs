//! One SigV4 verification (header form, the AWS suite's `get-vanilla`): canonical request, key
//! derivation, signature, replay check. Run: `cargo bench -p zerogate-authn`.

use std::collections::HashMap;

use criterion::{BatchSize, Criterion, criterion_main};
use zerogate_authn::sigv4::{Config, Request, Verifier};

fn bench(c: &mut Criterion) {
    let headers = [
        ("Host", "example.amazonaws.com"),
        ("X-Amz-Date", "20150830T123600Z"),
        (
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
    ];
    let request = Request { method: "GET", path: "/", query: "", headers: &headers, body: b"" };
    let keys = HashMap::from([("AKIDEXAMPLE".to_owned(), "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_owned())]);
    // The usual case: the verifier has seen this key today, so its signing key is derived.
    let warm = Verifier::new(Config::new("us-east-1", "service"), keys.clone());
    let mut now = 1_440_938_160;
    c.bench_function("sigv4 verify (header form, signing key cached)", |b| {
        b.iter_batched(
            || {
                now += 1; // a new request time: a different signature, not a replay
                let date =
                    format!("20150830T12{:02}{:02}Z", 36 + (now - 1_440_938_160) / 60 % 20, (now - 1_440_938_160) % 60);
                (date, now)
            },
            |(date, now)| {
                let headers =
                    [("Host", "example.amazonaws.com"), ("X-Amz-Date", date.as_str()), ("Authorization", headers[2].1)];
                // The signature no longer matches the date: this measures the full path up to the
                // constant-time comparison, which is what every request pays.
                let _ = warm.verify(&Request { headers: &headers, ..request }, now);
            },
            BatchSize::SmallInput,
        )
    });
    c.bench_function("sigv4 verify (header form, first request of the day)", |b| {
        // A fresh verifier per iteration, so the replay cache does not refuse the repeat; its
        // construction is not timed.
        b.iter_batched(
            || Verifier::new(Config::new("us-east-1", "service"), keys.clone()),
            |v| v.verify(&request, 1_440_938_160).unwrap(),
            BatchSize::SmallInput,
        )
    });
}

mod group {
    #![allow(missing_docs)]
    criterion::criterion_group!(benches, super::bench);
}
criterion_main!(group::benches);
