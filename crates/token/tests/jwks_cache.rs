//! The key-set life cycle against a real loopback HTTP server: discovery, refetch on
//! an unknown `kid` throttled by the cool-down, rotation, fetch failures keeping the
//! last good set, and `jwks_unavailable` only when no set was ever loaded.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;
mod support_http;

use std::time::Duration;

use intraport_token::{ErrorCode, Policy, Provider, ProviderConfig, TokenVersion};
use serde_json::json;
use support::*;

const DISCOVERY: &str = "/t/v2.0/.well-known/openid-configuration";

async fn server_with(keys: &[serde_json::Value]) -> support_http::Server {
    support_http::serve(vec![
        (
            DISCOVERY.into(),
            json!({"issuer": v2_issuer(TENANT), "jwks_uri": "JWKS"}).to_string(),
        ),
        ("/keys".into(), jwks(keys)),
    ])
    .await
}

fn provider(base: &str, cooldown: Duration) -> Provider {
    let mut cfg = ProviderConfig::new(
        "cache-test",
        ProviderConfig::entra_sources(base, "t", &[TokenVersion::V2]),
        Policy {
            audiences: vec![AUDIENCE.into()],
            ..Policy::default()
        },
    );
    cfg.unknown_kid_cooldown = cooldown;
    cfg.fetch_timeout = Duration::from_secs(2);
    Provider::new(cfg).unwrap()
}

#[tokio::test]
async fn unknown_kid_refetches_at_most_once_per_cooldown_and_picks_up_rotation() {
    let old = TestKey::new("old");
    let new = TestKey::new("new");
    let server = server_with(&[old.jwk(None)]).await;
    let p = provider(&server.base, Duration::from_secs(3600));
    assert!(p.load().await.is_empty());
    assert!(p.is_ready());
    assert_eq!(server.hits("/keys"), 1);
    let claims = v2_app_claims(now());
    p.validate(&old.token(&old.header(), &claims))
        .await
        .unwrap();

    // The IdP rotates: the new key signs, the old one stays published.
    server.set("/keys", jwks(&[new.jwk(None), old.jwk(None)]));
    let id = p
        .validate(&new.token(&new.header(), &claims))
        .await
        .unwrap();
    assert_eq!(id.kid.as_deref(), Some("new"));
    assert_eq!(server.hits("/keys"), 2, "one refetch for the unknown kid");

    // Forged kids: within the cool-down, no further fetch however many arrive.
    let forger = TestKey::new("forged");
    for i in 0..50 {
        let header = json!({"typ": "JWT", "alg": "RS256", "kid": format!("forged-{i}")});
        let e = p
            .validate(&forger.token(&header, &claims))
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownKid);
    }
    assert_eq!(server.hits("/keys"), 2, "the cool-down throttles refetches");
}

#[tokio::test]
async fn refetch_is_allowed_again_after_the_cooldown() {
    let old = TestKey::new("old");
    let server = server_with(&[old.jwk(None)]).await;
    let p = provider(&server.base, Duration::from_millis(200));
    assert!(p.load().await.is_empty());
    let forger = TestKey::new("forged");
    let t = forger.token(&forger.header(), &v2_app_claims(now()));
    // the first unknown kid refetches; the next, within the cool-down, does not
    assert_eq!(
        p.validate(&t).await.unwrap_err().code,
        ErrorCode::UnknownKid
    );
    assert_eq!(server.hits("/keys"), 2);
    assert_eq!(
        p.validate(&t).await.unwrap_err().code,
        ErrorCode::UnknownKid
    );
    assert_eq!(server.hits("/keys"), 2);
    // poll until the cool-down has passed and exactly one more fetch happened
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.hits("/keys") < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "no refetch after the cool-down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            p.validate(&t).await.unwrap_err().code,
            ErrorCode::UnknownKid
        );
    }
    assert_eq!(server.hits("/keys"), 3);
}

#[tokio::test]
async fn last_good_key_set_survives_failures_and_an_idp_outage() {
    let key = TestKey::new("k1");
    let server = server_with(&[key.jwk(None)]).await;
    let p = provider(&server.base, Duration::from_millis(1));
    assert!(p.load().await.is_empty());
    let t = key.token(&key.header(), &v2_app_claims(now()));

    server.fail(true);
    let errors = p.load().await;
    assert_eq!(errors.len(), 1);
    assert!(errors[0].to_string().contains("503"), "{}", errors[0]);
    p.validate(&t).await.unwrap();
    // a garbage key set does not replace the good one either
    server.fail(false);
    server.set("/keys", "{\"keys\": []}".into());
    assert_eq!(p.load().await.len(), 1);
    p.validate(&t).await.unwrap();
    let status = p.status();
    assert!(
        status[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("no usable signing key")
    );
    assert_eq!(status[0].kids, vec!["k1"]);

    // the IdP disappears entirely
    server.stop();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let fresh = key.token(&key.header(), &v2_app_claims(now()));
    p.validate(&fresh).await.unwrap();
}

#[tokio::test]
async fn jwks_unavailable_only_when_no_key_set_was_ever_loaded() {
    let key = TestKey::new("k1");
    let server = server_with(&[key.jwk(None)]).await;
    server.fail(true);
    let p = provider(&server.base, Duration::from_millis(1));
    assert_eq!(p.load().await.len(), 1);
    assert!(!p.is_ready());
    let t = key.token(&key.header(), &v2_app_claims(now()));
    let e = p.validate(&t).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::JwksUnavailable);
    assert!(e.message.contains("503"), "{}", e.message);

    // Discovery works but the key set endpoint fails: still unavailable.
    server.fail(false);
    server.set("/keys", "not json".into());
    assert_eq!(
        p.validate(&t).await.unwrap_err().code,
        ErrorCode::JwksUnavailable
    );

    // The IdP recovers: the next token triggers a fetch and verifies.
    server.set("/keys", jwks(&[key.jwk(None)]));
    tokio::time::sleep(Duration::from_millis(5)).await;
    p.validate(&t).await.unwrap();
    assert!(p.is_ready());

    // An unreachable authority (nothing listens there) fails closed too.
    let dead = provider("http://127.0.0.1:9", Duration::from_secs(60));
    assert_eq!(dead.load().await.len(), 1);
    assert_eq!(
        dead.validate(&t).await.unwrap_err().code,
        ErrorCode::JwksUnavailable
    );
}

#[tokio::test]
async fn a_removed_key_stops_validating_cached_tokens() {
    let key = TestKey::new("k1");
    let other = TestKey::new("k2");
    let server = server_with(&[key.jwk(None), other.jwk(None)]).await;
    let p = provider(&server.base, Duration::from_millis(1));
    assert!(p.load().await.is_empty());
    let t = key.token(&key.header(), &v2_app_claims(now()));
    p.validate(&t).await.unwrap();
    assert_eq!(p.cached_tokens(), 1);
    // an unchanged key survives a refresh with its cache entries
    assert!(p.load().await.is_empty());
    p.validate(&t).await.unwrap();
    // the IdP withdraws the key: the cached verdict is not served any more
    server.set("/keys", jwks(&[other.jwk(None)]));
    assert!(p.load().await.is_empty());
    assert_eq!(
        p.validate(&t).await.unwrap_err().code,
        ErrorCode::UnknownKid
    );
}

#[tokio::test]
async fn ad_fs_access_token_issuer_is_preferred_over_issuer() {
    let key = TestKey::new("adfs");
    let adfs_issuer = "http://adfs.contoso.example/adfs/services/trust";
    let server = support_http::serve(vec![
        (
            "/adfs/.well-known/openid-configuration".into(),
            json!({
                "issuer": "https://adfs.contoso.example/adfs",
                "access_token_issuer": adfs_issuer,
                "jwks_uri": "JWKS"
            })
            .to_string(),
        ),
        ("/keys".into(), jwks(&[key.jwk(None)])),
    ])
    .await;
    let mut cfg = ProviderConfig::new(
        "adfs",
        vec![intraport_token::MetadataSource::Discovery {
            url: format!("{}/adfs/.well-known/openid-configuration", server.base),
            key_issuer_alias: None,
        }],
        Policy {
            audiences: vec!["microsoft:identityserver:intraport".into()],
            require_tenant: false,
            ..Policy::default()
        },
    );
    cfg.unknown_kid_cooldown = Duration::from_secs(60);
    let p = Provider::new(cfg).unwrap();
    assert!(p.load().await.is_empty());
    let now = now();
    let claims = json!({
        "aud": "microsoft:identityserver:intraport", "iss": adfs_issuer,
        "iat": now, "exp": now + 3600, "appid": "c1", "upn": "bob@contoso.example", "scp": "openid"
    });
    let id = p
        .validate(&key.token(&key.header(), &claims))
        .await
        .unwrap();
    assert_eq!(id.username.as_deref(), Some("bob@contoso.example"));
    let mut wrong = claims.clone();
    wrong["iss"] = json!("https://adfs.contoso.example/adfs");
    assert_eq!(
        p.validate(&key.token(&key.header(), &wrong))
            .await
            .unwrap_err()
            .code,
        ErrorCode::WrongIssuer
    );
}
