//! Every parser of untrusted authentication input: JWTs (split, base64url, header and claims
//! JSON, header rules, key lookup, signature, claims) and JWKS documents.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zerogate_authn::fuzz_input(data);
});
