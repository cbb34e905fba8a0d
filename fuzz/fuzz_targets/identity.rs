//! Every parser of untrusted identity input: CSRs (DER, PEM), certificates checked as SVIDs,
//! enrollment tokens, SPIFFE IDs, serials.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zerogate_pki::fuzz_input(data);
});
