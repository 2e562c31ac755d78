//! Every error code of the vocabulary, every rejected header trick, and the Entra
//! issuer rules (templates, `tid`, signing-key issuer, v1 and v2), produced by real
//! RSA/ECDSA signatures through the public `Provider` API.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::path::PathBuf;

use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use intraport_token::{
    Algorithm, ErrorCode, IdentityKind, JwksLocation, MetadataSource, Policy, Provider,
    ProviderConfig,
};
use serde_json::{Value, json};
use support::*;

struct Fixture {
    _dir: tempdir::Dir,
    provider: Provider,
}

mod tempdir {
    use std::path::PathBuf;
    pub struct Dir(pub PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            let p = std::env::temp_dir().join(format!(
                "intraport-token-test-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4()
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn policy() -> Policy {
    Policy {
        audiences: vec![AUDIENCE.into(), "api://intraport-demo".into()],
        ..Policy::default()
    }
}

/// A provider trusting `issuer` with the given JWKS, loaded from a file.
async fn fixture(issuer: &str, keys: &[Value], policy: Policy) -> Fixture {
    fixture_sources(
        |file| {
            vec![MetadataSource::Static {
                issuer: issuer.to_string(),
                jwks: JwksLocation::File(file),
            }]
        },
        keys,
        policy,
    )
    .await
}

async fn fixture_sources(
    sources: impl FnOnce(PathBuf) -> Vec<MetadataSource>,
    keys: &[Value],
    policy: Policy,
) -> Fixture {
    let dir = tempdir::Dir::new();
    let file = dir.0.join("jwks.json");
    std::fs::write(&file, jwks(keys)).unwrap();
    let provider = Provider::new(ProviderConfig::new("test", sources(file), policy)).unwrap();
    let errors = provider.load().await;
    assert!(errors.is_empty(), "{errors:?}");
    Fixture {
        _dir: dir,
        provider,
    }
}

async fn code(p: &Provider, token: &str) -> ErrorCode {
    match p.validate(token).await {
        Ok(id) => panic!("token unexpectedly valid: {id:?}"),
        Err(e) => {
            assert!(!e.message.is_empty());
            e.code
        }
    }
}

fn craft(header: &Value, claims: &Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(sig)
    )
}

#[tokio::test]
async fn a_genuine_v2_app_token_yields_its_identity() {
    let key = TestKey::new("k1");
    let f = fixture(
        &v2_issuer(TENANT),
        &[key.jwk(Some(&v2_issuer(TENANT)))],
        policy(),
    )
    .await;
    let id = f
        .provider
        .validate(&key.token(&key.header(), &v2_app_claims(now())))
        .await
        .unwrap();
    assert_eq!(id.tenant_id.as_deref(), Some(TENANT));
    assert_eq!(id.kind, IdentityKind::App);
    assert_eq!(id.roles, vec!["Reader"]);
    assert_eq!(
        id.app_id.as_deref(),
        Some("f2d5b1c0-1c3a-4b5e-9a51-0a3c2d1e4f60")
    );
    assert_eq!(id.audience, AUDIENCE);
    assert_eq!(id.kid.as_deref(), Some("k1"));
    assert_eq!(id.version.as_deref(), Some("2.0"));
    assert!(!id.groups_overage);
}

#[tokio::test]
async fn user_token_claims_are_typed_and_groups_overage_is_flagged() {
    let key = TestKey::new("k1");
    let f = fixture(&v2_issuer(TENANT), &[key.jwk(None)], policy()).await;
    let mut c = v2_app_claims(now());
    c["idtyp"] = json!("user");
    c["scp"] = json!("access_as_user  Files.Read");
    c["preferred_username"] = json!("alice@contoso.example");
    c["_claim_names"] = json!({"groups": "src1"});
    c["_claim_sources"] =
        json!({"src1": {"endpoint": "https://graph.microsoft.com/v1.0/users/x/getMemberObjects"}});
    let id = f
        .provider
        .validate(&key.token(&key.header(), &c))
        .await
        .unwrap();
    assert_eq!(id.kind, IdentityKind::User);
    assert_eq!(id.scopes, vec!["access_as_user", "Files.Read"]);
    assert_eq!(id.username.as_deref(), Some("alice@contoso.example"));
    assert!(id.groups_overage);
    // without idtyp, a token with scp is a user token and one without is an app token
    c.as_object_mut().unwrap().remove("idtyp");
    let id = f
        .provider
        .validate(&key.token(&key.header(), &c))
        .await
        .unwrap();
    assert_eq!(id.kind, IdentityKind::User);
}

#[tokio::test]
async fn malformed_tokens() {
    let key = TestKey::new("k1");
    let f = fixture(&v2_issuer(TENANT), &[key.jwk(None)], policy()).await;
    let good = key.token(&key.header(), &v2_app_claims(now()));
    let (h, rest) = good.split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    for bad in [
        String::new(),
        "abc".to_string(),
        format!("{h}.{p}"),
        format!("{h}.{p}.{s}.x"),
        format!("{h}.{p}.{s}.x.y"), // JWE shape
        format!("{h}!.{p}.{s}"),
        format!("{h}.{p}.{s}="), // padding is not base64url-no-pad
        format!("{}.{p}.{s}", b64(b"not json")),
        format!("{}.{p}.{s}", b64(b"[1,2]")),
        format!("{h}.{}.{s}", b64(b"\"a string\"")),
        format!("{h}.{}.{s}", b64(&[0xff, 0xfe])),
        format!("{h}.{p}."),
        format!("{}.{p}.{s}", b64(br#"{"typ":"JWT"}"#)), // no alg
    ] {
        assert_eq!(code(&f.provider, &bad).await, ErrorCode::Malformed, "{bad}");
    }
}

#[tokio::test]
async fn too_large_before_any_decoding() {
    let key = TestKey::new("k1");
    let f = fixture(&v2_issuer(TENANT), &[key.jwk(None)], policy()).await;
    let mut c = v2_app_claims(now());
    c["pad"] = json!("x".repeat(17 * 1024));
    assert_eq!(
        code(&f.provider, &key.token(&key.header(), &c)).await,
        ErrorCode::TooLarge
    );
    assert_eq!(
        code(&f.provider, &"a".repeat(20_000)).await,
        ErrorCode::TooLarge
    );
}

#[tokio::test]
async fn algorithm_is_fixed_by_key_and_allowlist_never_by_the_token() {
    let key = TestKey::new("k1");
    let f = fixture(&v2_issuer(TENANT), &[key.jwk(None)], policy()).await;
    let claims = v2_app_claims(now());
    // alg none, with and without a signature
    for alg in ["none", "None", "NONE"] {
        let h = json!({"alg": alg, "kid": "k1"});
        assert_eq!(
            code(&f.provider, &craft(&h, &claims, b"x")).await,
            ErrorCode::UnsupportedAlg
        );
    }
    // HS256 signed with the public key as the HMAC secret (key confusion)
    for alg in ["HS256", "HS384", "HS512"] {
        let h = json!({"alg": alg, "kid": "k1", "typ": "JWT"});
        let input = format!(
            "{}.{}",
            b64(h.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        for secret in [key.public_der(), jwks(&[key.jwk(None)]).into_bytes()] {
            let tag = hmac::sign(
                &hmac::Key::new(hmac::HMAC_SHA256, &secret),
                input.as_bytes(),
            );
            let t = format!("{input}.{}", b64(tag.as_ref()));
            assert_eq!(code(&f.provider, &t).await, ErrorCode::UnsupportedAlg);
        }
    }
    // a real algorithm that is not on the allowlist (PS256 by default)
    let h = json!({"alg": "PS256", "kid": "k1"});
    let input = format!(
        "{}.{}",
        b64(h.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let t = format!("{input}.{}", b64(&key.sign_pss(input.as_bytes())));
    assert_eq!(code(&f.provider, &t).await, ErrorCode::UnsupportedAlg);
    // allowed by policy but the key pins RS256: still refused
    let mut pinned = key.jwk(None);
    pinned["alg"] = json!("RS256");
    let mut pol = policy();
    pol.algorithms = vec![Algorithm::RS256, Algorithm::PS256];
    let f2 = fixture(&v2_issuer(TENANT), &[pinned], pol.clone()).await;
    assert_eq!(code(&f2.provider, &t).await, ErrorCode::UnsupportedAlg);
    // ... and accepted when the key does not pin an algorithm
    let f3 = fixture(&v2_issuer(TENANT), &[key.jwk(None)], pol).await;
    f3.provider.validate(&t).await.unwrap();
    // RS512, ES384: unknown to this crate
    for alg in ["RS512", "ES384", "EdDSA"] {
        let h = json!({"alg": alg, "kid": "k1"});
        assert_eq!(
            code(&f.provider, &craft(&h, &claims, b"sig")).await,
            ErrorCode::UnsupportedAlg
        );
    }
}

#[tokio::test]
async fn key_carrying_and_critical_headers_are_refused() {
    let key = TestKey::new("k1");
    let attacker = TestKey::new("k1");
    let f = fixture(&v2_issuer(TENANT), &[key.jwk(None)], policy()).await;
    let claims = v2_app_claims(now());
    for (name, value) in [
        ("jwk", attacker.jwk(None)),
        ("jku", json!("https://attacker.example/keys")),
        ("x5u", json!("https://attacker.example/cert.pem")),
        ("x5c", json!(["MIIBIjANBgkq"])),
        ("crit", json!(["exp"])),
        ("enc", json!("A256GCM")),
    ] {
        let mut h = key.header();
        h[name] = value;
        // signed by the genuine key: the header alone must cause the rejection
        let t = key.token(&h, &claims);
        let e = f.provider.validate(&t).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Malformed, "{name}");
        assert!(e.message.contains(name), "{name}: {}", e.message);
    }
}

#[tokio::test]
async fn unknown_kid_and_bad_signature() {
    let key = TestKey::new("k1");
    let stranger = TestKey::new("k1");
    let f = fixture(&v2_issuer(TENANT), &[key.jwk(None)], policy()).await;
    let claims = v2_app_claims(now());
    let other = TestKey::new("k2");
    assert_eq!(
        code(&f.provider, &other.token(&other.header(), &claims)).await,
        ErrorCode::UnknownKid
    );
    // No kid: the published keys are tried (Microsoft's rule); the genuine key's
    // signature is found, a stranger's is not.
    let no_kid = json!({"alg": "RS256", "typ": "JWT"});
    let id = f
        .provider
        .validate(&key.token(&no_kid, &claims))
        .await
        .unwrap();
    assert_eq!(id.kid.as_deref(), Some("k1"));
    let e = f
        .provider
        .validate(&stranger.token(&no_kid, &claims))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::UnknownKid);
    assert!(e.message.contains("names no key"), "{}", e.message);
    // a stranger's signature under the genuine kid
    assert_eq!(
        code(&f.provider, &stranger.token(&key.header(), &claims)).await,
        ErrorCode::BadSignature
    );
    // a tampered payload with the genuine signature
    let good = key.token(&key.header(), &claims);
    let mut c2 = claims.clone();
    c2["roles"] = json!(["Admin"]);
    let forged = key.token(&key.header(), &c2);
    let t = format!(
        "{}.{}",
        forged.rsplit_once('.').unwrap().0,
        good.rsplit_once('.').unwrap().1
    );
    assert_eq!(code(&f.provider, &t).await, ErrorCode::BadSignature);
}

#[tokio::test]
async fn lifetime_checks_honour_the_clock_skew() {
    let key = TestKey::new("k1");
    let f = fixture(&v2_issuer(TENANT), &[key.jwk(None)], policy()).await;
    let now = now();
    let mut c = v2_app_claims(now);
    c["exp"] = json!(now - 400);
    assert_eq!(
        code(&f.provider, &key.token(&key.header(), &c)).await,
        ErrorCode::Expired
    );
    c["exp"] = json!(now - 200); // within the 5-minute skew
    c["nbf"] = json!(now - 1000); // (and a lifetime that starts before it ends)
    f.provider
        .validate(&key.token(&key.header(), &c))
        .await
        .unwrap();
    let mut c = v2_app_claims(now);
    c["nbf"] = json!(now + 400);
    assert_eq!(
        code(&f.provider, &key.token(&key.header(), &c)).await,
        ErrorCode::NotYetValid
    );
    let mut c = v2_app_claims(now);
    c["iat"] = json!(now + 4000);
    assert_eq!(
        code(&f.provider, &key.token(&key.header(), &c)).await,
        ErrorCode::NotYetValid
    );
    // validate_at: a captured token checked at the time it was used
    let c = v2_app_claims(now - 100_000);
    let t = key.token(&key.header(), &c);
    assert_eq!(code(&f.provider, &t).await, ErrorCode::Expired);
    f.provider.validate_at(&t, now - 99_000).await.unwrap();
}

#[tokio::test]
async fn missing_claims() {
    let key = TestKey::new("k1");
    let f = fixture(&v2_issuer(TENANT), &[key.jwk(None)], policy()).await;
    for claim in ["exp", "aud", "tid", "iss"] {
        let mut c = v2_app_claims(now());
        c.as_object_mut().unwrap().remove(claim);
        let e = f
            .provider
            .validate(&key.token(&key.header(), &c))
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::MissingClaim, "{claim}");
        assert!(e.message.contains(claim), "{}", e.message);
    }
    // Of the wrong type is not absent: Microsoft.IdentityModel fails to read such a
    // token at all (IDX14102), so it is malformed.
    let mut c = v2_app_claims(now());
    c["exp"] = json!("tomorrow");
    assert_eq!(
        code(&f.provider, &key.token(&key.header(), &c)).await,
        ErrorCode::Malformed
    );
}

#[tokio::test]
async fn audience_and_tenant_allowlist() {
    let key = TestKey::new("k1");
    let f = fixture(&v2_issuer(TENANT), &[key.jwk(None)], policy()).await;
    let mut c = v2_app_claims(now());
    c["aud"] = json!("api://someone-else");
    assert_eq!(
        code(&f.provider, &key.token(&key.header(), &c)).await,
        ErrorCode::WrongAudience
    );
    c["aud"] = json!(["api://someone-else", "api://intraport-demo"]);
    assert_eq!(
        f.provider
            .validate(&key.token(&key.header(), &c))
            .await
            .unwrap()
            .audience,
        "api://intraport-demo"
    );
    let mut pol = policy();
    pol.allowed_tenants = vec![OTHER_TENANT.into()];
    let f2 = fixture(&v2_issuer(TENANT), &[key.jwk(None)], pol).await;
    assert_eq!(
        code(
            &f2.provider,
            &key.token(&key.header(), &v2_app_claims(now()))
        )
        .await,
        ErrorCode::TenantNotAllowed
    );
}

#[tokio::test]
async fn issuer_rules_of_tenant_independent_metadata() {
    let key = TestKey::new("k1");
    let pinned = TestKey::new("k2");
    let template = format!("{AUTHORITY}/{{tenantid}}/v2.0");
    let f = fixture(
        &template,
        &[
            key.jwk(Some(&template)),
            pinned.jwk(Some(&v2_issuer(TENANT))),
        ],
        policy(),
    )
    .await;
    let now = now();
    // tokens of two tenants through the template
    for tid in [TENANT, OTHER_TENANT] {
        let mut c = v2_app_claims(now);
        c["tid"] = json!(tid);
        c["iss"] = json!(v2_issuer(tid));
        f.provider
            .validate(&key.token(&key.header(), &c))
            .await
            .unwrap();
    }
    // iss of one tenant, tid of another
    let mut c = v2_app_claims(now);
    c["tid"] = json!(OTHER_TENANT);
    assert_eq!(
        code(&f.provider, &key.token(&key.header(), &c)).await,
        ErrorCode::WrongIssuer
    );
    // tid that is not a GUID, with a matching iss
    let mut c = v2_app_claims(now);
    c["tid"] = json!("common");
    c["iss"] = json!(format!("{AUTHORITY}/common/v2.0"));
    assert_eq!(
        code(&f.provider, &key.token(&key.header(), &c)).await,
        ErrorCode::WrongIssuer
    );
    // a key published for one tenant never validates another's tokens
    let mut c = v2_app_claims(now);
    c["tid"] = json!(OTHER_TENANT);
    c["iss"] = json!(v2_issuer(OTHER_TENANT));
    let e = f
        .provider
        .validate(&pinned.token(&pinned.header(), &c))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::WrongIssuer);
    assert!(e.message.contains("published for"), "{}", e.message);
    f.provider
        .validate(&pinned.token(&pinned.header(), &v2_app_claims(now)))
        .await
        .unwrap();
    // an issuer nobody trusts
    let mut c = v2_app_claims(now);
    c["iss"] = json!("https://evil.example/tenant/v2.0");
    assert_eq!(
        code(&f.provider, &key.token(&key.header(), &c)).await,
        ErrorCode::WrongIssuer
    );
}

#[tokio::test]
async fn v1_tokens_by_x5t_bound_through_the_v2_key_issuer() {
    // Entra publishes v2-form issuers on its keys; a v1 token of the same tenant
    // (iss https://sts.windows.net/{tid}/) must verify, one of another tenant not.
    let key = TestKey::new("k1");
    let stranger_key = TestKey::new("k9");
    let v1 = format!("https://sts.windows.net/{TENANT}/");
    let f = fixture_sources(
        |file| {
            vec![MetadataSource::Static {
                issuer: v1.clone(),
                jwks: JwksLocation::File(file.clone()),
            }]
        },
        &[
            key.jwk(Some(&v2_issuer(TENANT))),
            stranger_key.jwk(Some(&v2_issuer(OTHER_TENANT))),
        ],
        policy(),
    )
    .await;
    // A static v1 issuer (a key set saved from Entra, `token verify --issuer
    // https://sts.windows.net/{tid}/ --jwks FILE`): its keys are bound to the v2 form.
    let now = now();
    let c = json!({
        "aud": "api://intraport-demo", "iss": v1, "iat": now, "nbf": now, "exp": now + 3600,
        "appid": "f2d5b1c0-1c3a-4b5e-9a51-0a3c2d1e4f60", "appidacr": "1",
        "idp": v1, "oid": "7f4ae3b5-5c2a-4e70-9d4b-1e9a0b6c2d31", "roles": ["Writer"],
        "sub": "7f4ae3b5-5c2a-4e70-9d4b-1e9a0b6c2d31", "tid": TENANT, "ver": "1.0"
    });
    let h = json!({"typ": "JWT", "alg": "RS256", "x5t": "k1"});
    let id = f.provider.validate(&key.token(&h, &c)).await.unwrap();
    assert_eq!(id.version.as_deref(), Some("1.0"));
    // ... and a key bound to another tenant still refuses it.
    let h9 = json!({"typ": "JWT", "alg": "RS256", "x5t": "k9"});
    assert_eq!(
        code(&f.provider, &stranger_key.token(&h9, &c)).await,
        ErrorCode::WrongIssuer
    );

    // With the Entra v1 source description (alias = the authority's v2 template):
    let dir = tempdir::Dir::new();
    let file = dir.0.join("jwks.json");
    std::fs::write(
        &file,
        jwks(&[
            key.jwk(Some(&v2_issuer(TENANT))),
            stranger_key.jwk(Some(&v2_issuer(OTHER_TENANT))),
        ]),
    )
    .unwrap();
    let server = support_http::serve(vec![
        (
            "/t/.well-known/openid-configuration".into(),
            json!({"issuer": v1, "jwks_uri": "JWKS"}).to_string(),
        ),
        ("/keys".into(), std::fs::read_to_string(&file).unwrap()),
    ])
    .await;
    let mut sources = intraport_token::ProviderConfig::entra_sources(
        &server.base,
        "t",
        &[intraport_token::TokenVersion::V1],
    );
    if let MetadataSource::Discovery {
        key_issuer_alias, ..
    } = &mut sources[0]
    {
        *key_issuer_alias = Some(format!("{AUTHORITY}/{{tenantid}}/v2.0"));
    }
    let p = Provider::new(ProviderConfig::new("v1", sources, policy())).unwrap();
    assert!(p.load().await.is_empty());
    let id = p.validate(&key.token(&h, &c)).await.unwrap();
    assert_eq!(
        id.app_id.as_deref(),
        Some("f2d5b1c0-1c3a-4b5e-9a51-0a3c2d1e4f60")
    );
    assert_eq!(id.app_auth.as_deref(), Some("1"));
    assert_eq!(id.version.as_deref(), Some("1.0"));
    assert_eq!(id.kind, IdentityKind::App);
    assert_eq!(
        code(&p, &stranger_key.token(&h9, &c)).await,
        ErrorCode::WrongIssuer
    );
}

#[tokio::test]
async fn es256_when_allowed() {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let pt = pair.public_key().as_ref().to_vec();
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": "ec1", "x": b64(&pt[1..33]), "y": b64(&pt[33..65])});
    let mut pol = policy();
    pol.algorithms = vec![Algorithm::ES256];
    let f = fixture(&v2_issuer(TENANT), &[jwk], pol).await;
    let h = json!({"alg": "ES256", "kid": "ec1"});
    let input = format!(
        "{}.{}",
        b64(h.to_string().as_bytes()),
        b64(v2_app_claims(now()).to_string().as_bytes())
    );
    let sig = pair.sign(&rng, input.as_bytes()).unwrap();
    f.provider
        .validate(&format!("{input}.{}", b64(sig.as_ref())))
        .await
        .unwrap();
    // RS256 header against an EC key: refused
    let h = json!({"alg": "RS256", "kid": "ec1"});
    assert_eq!(
        code(&f.provider, &craft(&h, &v2_app_claims(now()), sig.as_ref())).await,
        ErrorCode::UnsupportedAlg
    );
}

#[tokio::test]
async fn cache_serves_only_live_tokens_of_still_published_keys() {
    let key = TestKey::new("k1");
    let f = fixture(&v2_issuer(TENANT), &[key.jwk(None)], policy()).await;
    let now = now();
    let t = key.token(&key.header(), &v2_app_claims(now));
    f.provider.validate_at(&t, now).await.unwrap();
    assert_eq!(f.provider.cached_tokens(), 1);
    f.provider.validate_at(&t, now).await.unwrap();
    assert_eq!(f.provider.cached_tokens(), 1);
    // the cached entry dies with the token
    assert_eq!(
        f.provider
            .validate_at(&t, now + 3600 + 301)
            .await
            .unwrap_err()
            .code,
        ErrorCode::Expired
    );
    // a failed token is never cached
    let bad = format!("{}x", &t[..t.len() - 1]);
    let _ = f.provider.validate_at(&bad, now).await;
    assert!(f.provider.cached_tokens() <= 1);
}

#[tokio::test]
async fn upper_case_guids_are_the_same_tenant_and_forwarded_lower_case() {
    let key = TestKey::new("k1");
    let template = format!("{AUTHORITY}/{{tenantid}}/v2.0");
    let mut pol = policy();
    pol.allowed_tenants = vec![TENANT.into()];
    let f = fixture(&template, &[key.jwk(Some(&template))], pol).await;
    let upper = TENANT.to_ascii_uppercase();
    let app = "F2D5B1C0-1C3A-4B5E-9A51-0A3C2D1E4F60";
    // tid in upper case, iss in lower case; then both in upper case
    for iss in [v2_issuer(TENANT), v2_issuer(&upper)] {
        let mut c = v2_app_claims(now());
        c["tid"] = json!(upper);
        c["iss"] = json!(iss);
        c["azp"] = json!(app);
        c["oid"] = json!("7F4AE3B5-5C2A-4E70-9D4B-1E9A0B6C2D31");
        let id = f
            .provider
            .validate(&key.token(&key.header(), &c))
            .await
            .unwrap_or_else(|e| panic!("{iss}: {e}"));
        assert_eq!(id.tenant_id.as_deref(), Some(TENANT));
        assert_eq!(
            id.app_id.as_deref(),
            Some("f2d5b1c0-1c3a-4b5e-9a51-0a3c2d1e4f60")
        );
        assert_eq!(
            id.object_id.as_deref(),
            Some("7f4ae3b5-5c2a-4e70-9d4b-1e9a0b6c2d31")
        );
    }
    // another tenant in upper case is still another tenant
    let mut c = v2_app_claims(now());
    c["tid"] = json!(OTHER_TENANT.to_ascii_uppercase());
    assert_eq!(
        code(&f.provider, &key.token(&key.header(), &c)).await,
        ErrorCode::WrongIssuer
    );
}

#[tokio::test]
async fn header_mistakes_are_named_without_internal_wording() {
    let key = TestKey::new("k1");
    let f = fixture(&v2_issuer(TENANT), &[key.jwk(None)], policy()).await;
    let claims = v2_app_claims(now());
    let p = b64(claims.to_string().as_bytes());
    for (header, says) in [
        (
            r#"["RS256","k1"]"#.to_string(),
            "the header is a JSON array, not an object",
        ),
        (
            r#"{"alg":"RS256","kid":5}"#.to_string(),
            "the header's `kid` must be a string, found a number",
        ),
        (
            r#"{"alg":["RS256"],"kid":"k1"}"#.to_string(),
            "the header's `alg` must be a string, found a array",
        ),
        (
            r#"{"alg":"RS256","kid":"k1","kid":"k2"}"#.to_string(),
            "the key \"kid\" appears twice",
        ),
        (
            r#"{"alg":"RS256","kid":"k1","x5t":null}"#.to_string(),
            "the header's `x5t` must be a string, found a null",
        ),
        (
            "{\"alg\":\"RS256\",\"kid\":\"\\ud800\"}".to_string(),
            "surrogate",
        ),
    ] {
        let t = format!("{}.{p}.{}", b64(header.as_bytes()), b64(b"sig"));
        let e = f.provider.validate(&t).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Malformed, "{header}");
        assert!(e.message.contains(says), "{header}: {}", e.message);
        for word in ["RawHeader", "struct", "untagged", "invalid type"] {
            assert!(!e.message.contains(word), "{header}: {}", e.message);
        }
    }
}

#[tokio::test]
async fn a_genuine_v1_token_shape_verifies_against_a_saved_entra_key_set() {
    // As Entra issues a v1 app token: iss sts.windows.net, ver 1.0, appid, aud the
    // App ID URI, x5t and kid in the header; the key saved from Entra's v2 endpoint,
    // with the v2 issuer template Entra puts on every key.
    let key = TestKey::new("L1KfKFI_jnXbwWc22xZxw1sUHH0");
    let template = format!("{AUTHORITY}/{{tenantid}}/v2.0");
    let v1 = format!("https://sts.windows.net/{TENANT}/");
    let f = fixture(&v1, &[key.jwk(Some(&template))], policy()).await;
    let now = now();
    let c = json!({
        "aud": "api://intraport-demo", "iss": v1, "iat": now - 60, "nbf": now - 60,
        "exp": now + 3600, "acr": "1", "aio": "E2RgYPj", "amr": ["pwd"],
        "appid": "f2d5b1c0-1c3a-4b5e-9a51-0a3c2d1e4f60", "appidacr": "0",
        "family_name": "Doe", "given_name": "Jane", "ipaddr": "203.0.113.7",
        "name": "Jane Doe", "oid": "7f4ae3b5-5c2a-4e70-9d4b-1e9a0b6c2d31",
        "rh": "0.AAAA", "scp": "access_as_user", "sub": "hQ9ef_XqgCwL3tVRZm0m2j4HyfP",
        "tid": TENANT, "unique_name": "jane@contoso.example", "upn": "jane@contoso.example",
        "uti": "fqiBqXLPj0eQa82S-IYFAA", "ver": "1.0"
    });
    let h = json!({"typ": "JWT", "alg": "RS256", "x5t": key.kid, "kid": key.kid});
    let id = f.provider.validate(&key.token(&h, &c)).await.unwrap();
    assert_eq!(id.version.as_deref(), Some("1.0"));
    assert_eq!(id.username.as_deref(), Some("jane@contoso.example"));
    assert_eq!(id.kind, IdentityKind::User);
    assert_eq!(id.scopes, vec!["access_as_user"]);
}

pub mod support_http;
