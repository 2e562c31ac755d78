//! Token verification cost against the crypto library's own RSA-2048 verify.
//!
//! - `raw_rsa2048_verify`: aws-lc-rs verifying one RS256 signature with a pre-parsed
//!   key: the floor for any validator using this library.
//! - `raw_rsa2048_verify_unparsed`: the same from `n`/`e` components on every call, as
//!   JWT libraries that keep keys as components do.
//! - `cold_verify`: the whole check of an Entra-shaped token (decode, header rules,
//!   issuer and key binding, signature, claims, identity) with no cache.
//! - `cached_verify`: the provider's path for a token already seen (hash + lookup).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use criterion::{Criterion, criterion_group, criterion_main};
use intraport_token::issuer::IssuerMatch;
use intraport_token::{
    Algorithm, JwksLocation, KeySet, MetadataSource, Policy, Provider, ProviderConfig, jwt,
};
use support::*;

fn bench(c: &mut Criterion) {
    let key = TestKey::new("bench-kid");
    let now = now();
    let token = key.token(&key.header(), &v2_app_claims(now));
    let (input, sig_b64) = token.rsplit_once('.').unwrap();
    let sig =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig_b64).unwrap();

    let parsed_key =
        ParsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, key.public_der()).unwrap();
    c.bench_function("raw_rsa2048_verify", |b| {
        b.iter(|| {
            parsed_key
                .verify_sig(black_box(input.as_bytes()), black_box(&sig))
                .unwrap()
        })
    });
    let pk = aws_lc_rs::signature::KeyPair::public_key(&key.pair);
    let n = pk.modulus().big_endian_without_leading_zero().to_vec();
    let e = pk.exponent().big_endian_without_leading_zero().to_vec();
    c.bench_function("raw_rsa2048_verify_unparsed", |b| {
        b.iter(|| {
            RsaPublicKeyComponents { n: &n, e: &e }
                .verify(
                    &signature::RSA_PKCS1_2048_8192_SHA256,
                    black_box(input.as_bytes()),
                    black_box(&sig),
                )
                .unwrap()
        })
    });

    let jwks = jwks(&[key.jwk(Some(&v2_issuer(TENANT)))]);
    let set = KeySet::from_json(jwks.as_bytes(), &[Algorithm::RS256]).unwrap();
    let vkey = set.by_kid("bench-kid").unwrap().clone();
    let policy = Policy {
        audiences: vec![AUDIENCE.into()],
        ..Policy::default()
    };
    let issuer = IssuerMatch::parse(&v2_issuer(TENANT));
    c.bench_function("cold_verify", |b| {
        b.iter(|| {
            let parsed = jwt::parse(black_box(&token), &policy).unwrap();
            jwt::verify(&token, parsed, &vkey, &issuer, None, &policy, now).unwrap()
        })
    });

    let dir = std::env::temp_dir().join(format!("intraport-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jwks.json");
    std::fs::write(&file, &jwks).unwrap();
    let provider = Provider::new(ProviderConfig::new(
        "bench",
        vec![MetadataSource::Static {
            issuer: v2_issuer(TENANT),
            jwks: JwksLocation::File(file),
        }],
        policy.clone(),
    ))
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(rt.block_on(provider.load()).is_empty());
    rt.block_on(provider.validate_at(&token, now)).unwrap();
    c.bench_function("cached_verify", |b| {
        b.iter(|| {
            rt.block_on(provider.validate_at(black_box(&token), now))
                .unwrap()
        })
    });
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
