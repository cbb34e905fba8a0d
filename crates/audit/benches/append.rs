//! Audit appends under concurrent load, each durable (written and fdatasync'ed) before it
//! returns: group commit lets one sync serve many. Run: `cargo bench -p zerogate-audit`.
//! Criterion reports records per second ("thrpt").

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_main};
use zerogate_audit::{AuditLog, CheckpointKey, Credential, Decision, DecisionRecord, Options, RequestSummary};

fn record(i: u64) -> DecisionRecord {
    DecisionRecord {
        at_ms: 1_800_000_000_000 + i as i64,
        gateway: "gw-1".into(),
        principal: Some("spiffe://example.org/workload/api".into()),
        credential: Some(Credential {
            kind: "mtls".into(),
            id: "3fcd62c64abcaaa94611b927b0c3940c".into(),
            also_known_as: Vec::new(),
        }),
        resource: "app:billing".into(),
        action: "GET".into(),
        request: RequestSummary {
            method: Some("GET".into()),
            host: Some("billing.example.org".into()),
            path: Some("/v1/invoices/2026-11".into()),
            source: Some("10.0.3.7:51544".into()),
        },
        decision: Decision::Allow,
        policies: vec!["policy12".into()],
        errors: vec![],
        reauthorization: false,
    }
}

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("zerogate-audit-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut group = c.benchmark_group("audit append (durable)");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(10));
    for threads in [1u64, 16, 256] {
        let path = dir.join(format!("audit-{threads}.log"));
        let _ = std::fs::remove_file(&path);
        let log = Arc::new(AuditLog::open(&path, CheckpointKey::generate().unwrap(), Options::default()).unwrap());
        group.bench_function(format!("{threads} concurrent appenders"), |b| {
            b.iter_custom(|iters| {
                let per_thread = iters.div_ceil(threads);
                let start = Instant::now();
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let log = Arc::clone(&log);
                        std::thread::spawn(move || {
                            for i in 0..per_thread {
                                log.append(&record(t * per_thread + i)).unwrap();
                            }
                        })
                    })
                    .collect();
                for h in handles {
                    h.join().unwrap();
                }
                // Time per record, whatever rounding did to the count.
                start.elapsed().mul_f64(iters as f64 / (per_thread * threads) as f64)
            })
        });
    }
    // How an async gateway appends: a few threads, many requests in flight each (the callback
    // API; a request waits for its record without holding a thread).
    for (threads, in_flight) in [(4u64, 64u64), (4, 512)] {
        let path = dir.join(format!("audit-pipelined-{threads}-{in_flight}.log"));
        let _ = std::fs::remove_file(&path);
        let log = Arc::new(AuditLog::open(&path, CheckpointKey::generate().unwrap(), Options::default()).unwrap());
        group.bench_function(format!("{threads} threads x {in_flight} in flight"), |b| {
            b.iter_custom(|iters| {
                let per_thread = iters.div_ceil(threads).max(1);
                let start = Instant::now();
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let log = Arc::clone(&log);
                        std::thread::spawn(move || {
                            let (done_tx, done_rx) = std::sync::mpsc::channel::<bool>();
                            let submit = |i: u64| {
                                let done = done_tx.clone();
                                log.append_then(&record(t * per_thread + i), move |r| {
                                    let _ = done.send(r.is_ok());
                                });
                            };
                            let mut sent = 0;
                            while sent < per_thread.min(in_flight) {
                                submit(sent);
                                sent += 1;
                            }
                            for _ in 0..per_thread {
                                assert!(done_rx.recv().unwrap(), "append failed");
                                if sent < per_thread {
                                    submit(sent);
                                    sent += 1;
                                }
                            }
                        })
                    })
                    .collect();
                for h in handles {
                    h.join().unwrap();
                }
                start.elapsed().mul_f64(iters as f64 / (per_thread * threads) as f64)
            })
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

mod group {
    #![allow(missing_docs)]
    criterion::criterion_group!(benches, super::bench);
}
criterion_main!(group::benches);
