//! Hostile identity input: the fuzz target's seed corpus (`fuzz/corpus/identity`) replayed, every
//! truncation and every single-bit flip of each seed fed to every parser (nothing may panic), and
//! no altered CSR ever accepted.

use std::path::PathBuf;

use zerogate_pki::{VerifiedCsr, fuzz_input};

fn seeds() -> Vec<(String, Vec<u8>)> {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/identity");
    let mut seeds: Vec<_> = std::fs::read_dir(&corpus)
        .expect("fuzz/corpus/identity exists")
        .map(|e| {
            let path = e.unwrap().path();
            (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap())
        })
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 8, "seed corpus has {} inputs", seeds.len());
    seeds
}

#[test]
fn corpus_truncations_and_bit_flips_never_panic() {
    for (_, seed) in seeds() {
        fuzz_input(&seed);
        for len in 0..seed.len() {
            fuzz_input(&seed[..len]);
        }
        for i in 0..seed.len().min(600) {
            for bit in 0..8 {
                let mut m = seed.clone();
                m[i] ^= 1 << bit;
                fuzz_input(&m);
            }
        }
    }
}

#[test]
fn no_altered_csr_is_accepted() {
    for (name, seed) in seeds().into_iter().filter(|(n, _)| n == "p256.der" || n == "ed.der") {
        assert!(VerifiedCsr::from_der(&seed).is_ok(), "{name} is a valid seed");
        for i in 0..seed.len() {
            for bit in 0..8 {
                let mut m = seed.clone();
                m[i] ^= 1 << bit;
                assert!(VerifiedCsr::from_der(&m).is_err(), "{name}: flipping bit {bit} of byte {i} was accepted");
            }
        }
        for len in 0..seed.len() {
            assert!(VerifiedCsr::from_der(&seed[..len]).is_err(), "{name} cut to {len} bytes was accepted");
        }
    }
}
