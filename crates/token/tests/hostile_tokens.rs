//! Tokens minted by an outside library (PyJWT, `support/hostile.py`) as an attacker or
//! a careless issuer would: NumericDates past 2^63, floats and numeric strings,
//! duplicate and case-twin claims, lone surrogates, invalid UTF-8, arrays for objects,
//! a 1024-bit key, a 10 KB `kid`, no `kid` at all, neither `scp` nor `roles`. Each is
//! judged as Microsoft.IdentityModel 8 and Microsoft.Identity.Web would, or refused on
//! purpose where the README's table says so.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use intraport_token::{
    ErrorCode, JwksLocation, KeySet, MetadataSource, Policy, Provider, ProviderConfig,
    require_scope_or_role,
};
use serde_json::json;
use support::*;

/// The Python with the test packages: INTRAPORT_TEST_PYTHON, else the workspace's
/// .venv that the README's test command makes.
fn python() -> PathBuf {
    let p = std::env::var_os("INTRAPORT_TEST_PYTHON").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"),
        PathBuf::from,
    );
    assert!(
        p.exists(),
        "no test Python at {}: run the README's test command (scripts/test.sh), which creates it",
        p.display()
    );
    p
}

struct Minted {
    dir: PathBuf,
    now: u64,
    tokens: HashMap<String, String>,
}

/// The tokens, minted once for every test of this file.
fn minted() -> &'static Minted {
    static M: OnceLock<Minted> = OnceLock::new();
    M.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("intraport-hostile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let now = now();
        let settings = json!({
            "now": now, "iss": v2_issuer(TENANT), "tid": TENANT,
            "other_tid": OTHER_TENANT, "aud": AUDIENCE,
        });
        let out = Command::new(python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/hostile.py"))
            .arg(settings.to_string())
            .arg(&dir)
            .output()
            .expect("running hostile.py");
        assert!(
            out.status.success(),
            "hostile.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tokens = serde_json::from_slice(&std::fs::read(dir.join("tokens.json")).unwrap())
            .expect("tokens.json");
        Minted { dir, now, tokens }
    })
}

async fn provider() -> Provider {
    let m = minted();
    let sources = vec![MetadataSource::Static {
        issuer: v2_issuer(TENANT),
        jwks: JwksLocation::File(m.dir.join("jwks.json")),
    }];
    let policy = Policy {
        audiences: vec![AUDIENCE.into()],
        ..Policy::default()
    };
    let p = Provider::new(ProviderConfig::new("hostile", sources, policy)).unwrap();
    assert!(p.load().await.is_empty());
    p
}

fn token(name: &str) -> &'static str {
    minted()
        .tokens
        .get(name)
        .unwrap_or_else(|| panic!("hostile.py minted no {name:?}"))
}

/// Words that would mean a Rust type or serde's own wording reached a message.
const INTERNAL: [&str; 8] = [
    "RawHeader",
    "RawClaims",
    "RawJwk",
    "Audience",
    "untagged",
    "struct",
    "invalid type",
    "expected a",
];

async fn refused(p: &Provider, name: &str) -> (ErrorCode, String) {
    match p.validate_at(token(name), minted().now).await {
        Ok(id) => panic!("{name}: unexpectedly valid: {id:?}"),
        Err(e) => {
            for word in INTERNAL {
                assert!(!e.message.contains(word), "{name}: {}", e.message);
            }
            (e.code, e.message)
        }
    }
}

#[tokio::test]
async fn numeric_dates_are_read_as_microsoft_reads_them() {
    let p = provider().await;
    let now = minted().now;
    // Floats round (half to even), numeric strings are numbers, .NET's white space
    // around them is skipped: as JsonSerializerPrimitives.ReadLong does.
    for name in [
        "valid",
        "exp_float",
        "exp_numeric_string",
        "exp_float_string",
        "exp_spaced_string",
        "exp_exponent_string",
    ] {
        let id = p
            .validate_at(token(name), now)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            id.expires_at.abs_diff(now + 3600) <= 1,
            "{name}: {}",
            id.expires_at
        );
    }
    // A numeric-string nbf is not ignored: it is in the future.
    assert_eq!(
        refused(&p, "nbf_string_future").await.0,
        ErrorCode::NotYetValid
    );
}

#[tokio::test]
async fn out_of_range_and_mistyped_times_are_malformed() {
    let p = provider().await;
    for name in [
        "exp_2_63",
        "exp_2_64",
        "exp_1e300",
        "exp_year_10000",
        "exp_negative",
        "exp_word",
        "exp_infinity",
        "exp_nan",
        "exp_null",
        "exp_thousands",
        "exp_bool",
        "nbf_bool",
        "nbf_array",
        "nbf_word",
        "iat_word",
        "iat_object",
    ] {
        let (code, message) = refused(&p, name).await;
        assert_eq!(code, ErrorCode::Malformed, "{name}: {message}");
        let claim = &name[..3];
        assert!(message.contains(&format!("`{claim}`")), "{name}: {message}");
    }
    // Nothing of these was cached: a refusal never is.
    assert_eq!(p.cached_tokens(), 0);
}

#[tokio::test]
async fn a_lifetime_that_ends_before_it_starts_is_refused() {
    let p = provider().await;
    // nbf (now + 200) and exp (now + 100) are both within the 300 s skew: only their
    // order is wrong.
    let (code, message) = refused(&p, "nbf_after_exp").await;
    assert_eq!(code, ErrorCode::Expired);
    assert!(message.contains("never valid"), "{message}");
}

#[tokio::test]
async fn duplicate_and_case_twin_claims_and_bad_text_are_malformed() {
    let p = provider().await;
    for (name, says) in [
        ("tid_twice", "\"tid\" appears twice"),
        ("tid_and_TID", "differ only in case"),
        ("nested_duplicate", "\"groups\" appears twice"),
        ("lone_surrogate", "surrogate"),
        ("lone_trailing_surrogate", "surrogate"),
        ("invalid_utf8", "not UTF-8"),
        (
            "payload_array",
            "the payload is a JSON array, not an object",
        ),
        (
            "payload_string",
            "the payload is a JSON string, not an object",
        ),
        (
            "aud_number",
            "claim `aud` must be a string or an array of strings",
        ),
        ("roles_number", "claim `roles` must be an array of strings"),
    ] {
        let (code, message) = refused(&p, name).await;
        assert_eq!(code, ErrorCode::Malformed, "{name}: {message}");
        assert!(message.contains(says), "{name}: {message}");
    }
}

#[tokio::test]
async fn a_missing_or_unknown_kid_tries_the_published_keys() {
    let p = provider().await;
    // Signed by the published k1, its header naming no key or an unpublished one:
    // found by its signature, as Microsoft.IdentityModel does.
    for name in ["no_kid", "rotated_kid"] {
        let id = p
            .validate_at(token(name), minted().now)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(id.kid.as_deref(), Some("k1"), "{name}");
    }
    let (code, message) = refused(&p, "stranger_no_kid").await;
    assert_eq!(code, ErrorCode::UnknownKid);
    assert!(message.contains("no published RS256 key"), "{message}");
}

#[tokio::test]
async fn a_key_under_2048_bits_says_so() {
    let p = provider().await;
    let (code, message) = refused(&p, "weak_key").await;
    assert_eq!(code, ErrorCode::UnknownKid);
    assert!(
        message.contains("\"weak\" is published but refused: an RSA key of 1024 bits"),
        "{message}"
    );
    // Loading: the set keeps its good key and says why the other is skipped ...
    let doc = std::fs::read(minted().dir.join("jwks.json")).unwrap();
    let set = KeySet::from_json(&doc, &[intraport_token::Algorithm::RS256]).unwrap();
    assert_eq!(set.kids(), vec!["k1"]);
    assert!(
        set.skipped[0].contains("an RSA key of 1024 bits: at least 2048 bits are required"),
        "{:?}",
        set.skipped
    );
    // ... and a set of weak keys only is refused, saying why.
    let mut only_weak: serde_json::Value = serde_json::from_slice(&doc).unwrap();
    only_weak["keys"].as_array_mut().unwrap().remove(0);
    let e = KeySet::from_json(
        only_weak.to_string().as_bytes(),
        &[intraport_token::Algorithm::RS256],
    )
    .unwrap_err();
    assert!(e.contains("1024 bits"), "{e}");
}

#[tokio::test]
async fn a_10_kb_kid_is_cut_in_the_message() {
    let p = provider().await;
    let (code, message) = refused(&p, "huge_kid").await;
    assert_eq!(code, ErrorCode::UnknownKid);
    assert!(message.len() < 300, "{} bytes: {message}", message.len());
    assert!(message.contains("(10000 bytes)"), "{message}");
}

#[tokio::test]
async fn a_token_with_neither_scope_nor_role_is_refused_unless_acl() {
    let p = provider().await;
    // The signature, issuer and lifetime are sound: the provider verifies it ...
    let id = p
        .validate_at(token("no_scope_or_role"), minted().now)
        .await
        .unwrap();
    // ... and the default refuses it, as Microsoft.Identity.Web does (IDW10201).
    let e = require_scope_or_role(&id).unwrap_err();
    assert_eq!(e.code, ErrorCode::NoScopeOrRole);
    assert_eq!(e.code.as_str(), "no_scope_or_role");
    let with_role = p.validate_at(token("valid"), minted().now).await.unwrap();
    require_scope_or_role(&with_role).unwrap();
}
