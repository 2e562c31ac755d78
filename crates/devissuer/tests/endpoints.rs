//! The issuer on loopback over HTTPS, driven with an HTTP client that
//! trusts only the generated CA: discovery, keys, both token endpoints,
//! every refusal with its AADSTS code, rotation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{Env, decode};
use intraport_devissuer::{
    ApiConfig, DevIssuer, DevIssuerConfig, Error, GroupMembershipClaims, LifetimeRange,
    TokenRequest, TokenVersion, UserConfig, demo,
};
use serde_json::{Value, json};
use uuid::Uuid;

const API: &str = "api://intraport-demo";

fn client_id() -> String {
    demo::CLIENT_ID.to_string()
}

async fn client_credentials(
    env: &Env,
    path: &str,
    scope_or_resource: (&str, &str),
) -> (u16, Value) {
    let cid = client_id();
    env.post_form(
        path,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &cid),
            ("client_secret", demo::CLIENT_SECRET),
            scope_or_resource,
        ],
    )
    .await
}

/// A config with a v1.0 API beside the demo's v2.0 one.
fn with_v1_api() -> DevIssuerConfig {
    let mut config = DevIssuerConfig::demo();
    config.apis.push(ApiConfig {
        name: "legacy".into(),
        app_id: Uuid::from_u128(0xabc),
        app_id_uri: "api://legacy".into(),
        app_roles: vec!["Legacy.Read".into()],
        scopes: vec!["user_impersonation".into()],
        access_token_version: TokenVersion::V1,
        group_membership_claims: GroupMembershipClaims::All,
    });
    config.clients[0]
        .roles
        .insert("legacy".into(), vec!["Legacy.Read".into()]);
    config.users[0]
        .roles
        .insert("legacy".into(), vec!["Legacy.Read".into()]);
    config.users[0].wids = vec!["62e90394-69f5-4237-9190-012177145e10".into()];
    config
}

#[tokio::test]
async fn v2_discovery_for_tenant_id_and_domain_alias() {
    let env = Env::demo().await;
    let tid = env.tid();
    let authority = env.issuer.authority();
    assert!(authority.starts_with("https://127.0.0.1:"));
    for segment in [tid.as_str(), "contoso.example", "CONTOSO.example"] {
        let (status, doc) = env
            .get_json(&format!("/{segment}/v2.0/.well-known/openid-configuration"))
            .await;
        assert_eq!(status, 200, "{segment}");
        assert_eq!(doc["issuer"], format!("{authority}/{tid}/v2.0"));
        assert_eq!(doc["issuer"], env.issuer.issuer_v2());
        assert_eq!(
            doc["jwks_uri"],
            format!("{authority}/{tid}/discovery/v2.0/keys")
        );
        assert_eq!(
            doc["token_endpoint"],
            format!("{authority}/{tid}/oauth2/v2.0/token")
        );
        assert_eq!(
            doc["authorization_endpoint"],
            format!("{authority}/{tid}/oauth2/v2.0/authorize")
        );
        assert_eq!(
            doc["id_token_signing_alg_values_supported"],
            json!(["RS256"])
        );
        assert!(
            doc["token_endpoint_auth_methods_supported"]
                .as_array()
                .unwrap()
                .contains(&json!("client_secret_basic"))
        );
    }
}

#[tokio::test]
async fn v1_discovery_has_the_sts_issuer() {
    let env = Env::demo().await;
    let tid = env.tid();
    let authority = env.issuer.authority();
    let (status, doc) = env
        .get_json(&format!("/{tid}/.well-known/openid-configuration"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(doc["issuer"], format!("https://sts.windows.net/{tid}/"));
    assert_eq!(doc["issuer"], env.issuer.issuer_v1());
    assert_eq!(doc["jwks_uri"], format!("{authority}/{tid}/discovery/keys"));
    assert_eq!(
        doc["token_endpoint"],
        format!("{authority}/{tid}/oauth2/token")
    );
}

#[tokio::test]
async fn tenant_independent_documents_use_the_tenantid_template() {
    let env = Env::demo().await;
    let authority = env.issuer.authority();
    for t in ["common", "organizations"] {
        let (status, doc) = env
            .get_json(&format!("/{t}/v2.0/.well-known/openid-configuration"))
            .await;
        assert_eq!(status, 200);
        assert_eq!(doc["issuer"], format!("{authority}/{{tenantid}}/v2.0"));
        assert_eq!(
            doc["jwks_uri"],
            format!("{authority}/{t}/discovery/v2.0/keys")
        );
    }
    let (_, keys) = env.get_json("/common/discovery/v2.0/keys").await;
    for k in keys["keys"].as_array().unwrap() {
        assert_eq!(k["issuer"], format!("{authority}/{{tenantid}}/v2.0"));
    }
}

/// DER encoding of a PKCS#1 RSAPublicKey from big-endian n and e; an
/// X.509 certificate's SubjectPublicKeyInfo carries exactly these bytes.
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn len(l: usize) -> Vec<u8> {
        if l < 0x80 {
            vec![l as u8]
        } else if l < 0x100 {
            vec![0x81, l as u8]
        } else {
            vec![0x82, (l >> 8) as u8, l as u8]
        }
    }
    fn int(v: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        if v[0] & 0x80 != 0 {
            body.push(0);
        }
        body.extend_from_slice(v);
        let mut out = vec![0x02];
        out.extend(len(body.len()));
        out.extend(body);
        out
    }
    let mut body = int(n);
    body.extend(int(e));
    let mut out = vec![0x30];
    out.extend(len(body.len()));
    out.extend(body);
    out
}

#[tokio::test]
async fn both_jwks_carry_issuer_x5t_and_a_matching_x5c() {
    let env = Env::demo().await;
    let tid = env.tid();
    for path in [
        format!("/{tid}/discovery/v2.0/keys"),
        format!("/{tid}/discovery/keys"),
        "/contoso.example/discovery/v2.0/keys".to_string(),
    ] {
        let (status, jwks) = env.get_json(&path).await;
        assert_eq!(status, 200, "{path}");
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        let k = &keys[0];
        assert_eq!(k["kty"], "RSA");
        assert_eq!(k["use"], "sig");
        assert_eq!(k["kid"], k["x5t"]);
        assert_eq!(k["kid"], env.issuer.current_kid());
        assert_eq!(k["issuer"], env.issuer.issuer_v2());
        assert_eq!(k["e"], "AQAB");
        let der = STANDARD.decode(k["x5c"][0].as_str().unwrap()).unwrap();
        let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &der);
        assert_eq!(common::b64(k["x5t"].as_str().unwrap()), sha1.as_ref());
        let n = common::b64(k["n"].as_str().unwrap());
        let e = common::b64(k["e"].as_str().unwrap());
        let spki = rsa_public_key_der(&n, &e);
        assert!(
            der.windows(spki.len()).any(|w| w == spki.as_slice()),
            "x5c certificate holds the published n/e"
        );
    }
}

#[tokio::test]
async fn client_credentials_v2_token_has_app_claims() {
    let env = Env::demo().await;
    let tid = env.tid();
    let (status, body) = client_credentials(
        &env,
        &format!("/{tid}/oauth2/v2.0/token"),
        ("scope", "api://intraport-demo/.default"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!((3600..=5400).contains(&expires_in), "{expires_in}");
    assert_eq!(body["ext_expires_in"], body["expires_in"]);
    assert!(body.get("scope").is_none());
    let token = body["access_token"].as_str().unwrap();
    let (header, c) = env
        .verify(token, &format!("/{tid}/discovery/v2.0/keys"))
        .await;
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["alg"], "RS256");
    assert!(header.get("x5t").is_none(), "v2.0 headers carry only kid");
    assert_eq!(c["aud"], demo::API_APP_ID.to_string());
    assert_eq!(c["iss"], env.issuer.issuer_v2());
    assert_eq!(c["azp"], client_id());
    assert_eq!(c["azpacr"], "1");
    assert_eq!(c["idtyp"], "app");
    assert_eq!(c["roles"], json!(["Reader"]));
    assert_eq!(c["tid"], tid);
    assert_eq!(c["ver"], "2.0");
    assert_eq!(c["oid"], c["sub"]);
    assert!(Uuid::parse_str(c["oid"].as_str().unwrap()).is_ok());
    for claim in ["aio", "rh", "uti"] {
        assert!(!c[claim].as_str().unwrap().is_empty(), "{claim}");
    }
    for absent in ["scp", "name", "preferred_username", "appid", "groups"] {
        assert!(c.get(absent).is_none(), "{absent}");
    }
    assert_eq!(c["iat"], c["nbf"]);
    let lifetime = c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap();
    assert_eq!(lifetime, expires_in + 300, "iat is backdated five minutes");
}

#[tokio::test]
async fn basic_auth_and_admin_roles() {
    let env = Env::demo().await;
    let tid = env.tid();
    let resp = env
        .http
        .post(env.url(&format!("/{tid}/oauth2/v2.0/token")))
        .basic_auth(demo::ADMIN_CLIENT_ID, Some(demo::ADMIN_CLIENT_SECRET))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "api://intraport-demo/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let (_, c) = env
        .verify(
            body["access_token"].as_str().unwrap(),
            &format!("/{tid}/discovery/v2.0/keys"),
        )
        .await;
    assert_eq!(c["roles"], json!(["Reader", "Writer"]));
    assert_eq!(c["azp"], demo::ADMIN_CLIENT_ID.to_string());

    // A wrong secret in Basic is refused like a wrong form secret.
    let resp = env
        .http
        .post(env.url(&format!("/{tid}/oauth2/v2.0/token")))
        .basic_auth(demo::ADMIN_CLIENT_ID, Some("nope"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "api://intraport-demo/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error_codes"], json!([7000215]));
}

#[tokio::test]
async fn v1_endpoint_follows_the_api_token_version() {
    let env = Env::start(with_v1_api()).await;
    let tid = env.tid();
    // The demo API accepts v2.0 tokens: the v1 endpoint issues v2.0.
    let (status, body) =
        client_credentials(&env, &format!("/{tid}/oauth2/token"), ("resource", API)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["expires_in"].is_string(), "v1 endpoint sends strings");
    assert!(body["expires_on"].as_str().unwrap().parse::<u64>().is_ok());
    assert_eq!(body["resource"], API);
    let (_, c) = decode(body["access_token"].as_str().unwrap());
    assert_eq!(c["ver"], "2.0");
    assert_eq!(c["aud"], demo::API_APP_ID.to_string());

    // The legacy API accepts v1.0: even the v2 endpoint issues v1.0.
    let (status, body) = client_credentials(
        &env,
        &format!("/{tid}/oauth2/v2.0/token"),
        ("scope", "api://legacy/.default"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let (header, c) = env.verify(token, &format!("/{tid}/discovery/keys")).await;
    assert_eq!(header["x5t"], header["kid"]);
    assert_eq!(c["ver"], "1.0");
    assert_eq!(c["aud"], "api://legacy");
    assert_eq!(c["iss"], format!("https://sts.windows.net/{tid}/"));
    assert_eq!(c["idp"], c["iss"]);
    assert_eq!(c["appid"], client_id());
    assert_eq!(c["appidacr"], "1");
    assert_eq!(c["roles"], json!(["Legacy.Read"]));
    for absent in ["azp", "azpacr", "upn", "scp"] {
        assert!(c.get(absent).is_none(), "{absent}");
    }

    // v1 endpoint for a v1 API: aud is the resource as requested.
    let app_id = Uuid::from_u128(0xabc).to_string();
    let (status, body) =
        client_credentials(&env, &format!("/{tid}/oauth2/token"), ("resource", &app_id)).await;
    assert_eq!(status, 200, "{body}");
    let (_, c) = decode(body["access_token"].as_str().unwrap());
    assert_eq!(c["aud"], app_id);
}

#[tokio::test]
async fn password_grant_v2_user_token() {
    let env = Env::demo().await;
    let tid = env.tid();
    let cid = client_id();
    // Public-client flow: no secret.
    let (status, body) = env
        .post_form(
            "/contoso.example/oauth2/v2.0/token",
            &[
                ("grant_type", "password"),
                ("client_id", &cid),
                ("username", demo::USERNAME),
                ("password", demo::PASSWORD),
                (
                    "scope",
                    "api://intraport-demo/access_as_user openid profile offline_access",
                ),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "api://intraport-demo/access_as_user");
    assert!(body["id_token"].is_string());
    let info: Value =
        serde_json::from_slice(&common::b64(body["client_info"].as_str().unwrap())).unwrap();
    assert_eq!(info["utid"], tid);
    let (_, c) = env
        .verify(
            body["access_token"].as_str().unwrap(),
            &format!("/{tid}/discovery/v2.0/keys"),
        )
        .await;
    assert_eq!(c["idtyp"], "user");
    assert_eq!(c["scp"], "access_as_user");
    assert_eq!(c["roles"], json!(["Reader"]));
    assert_eq!(c["azpacr"], "0");
    assert_eq!(c["preferred_username"], demo::USERNAME);
    assert_eq!(c["name"], "Alice Example");
    assert_eq!(info["uid"], c["oid"]);
    assert_ne!(c["sub"], c["oid"], "sub is pairwise");
    assert_eq!(c["groups"].as_array().unwrap().len(), 1);
    assert!(c.get("wids").is_none(), "demo API emits groups only");

    // With the client secret, and .default: all exposed scopes, azpacr 1.
    let (status, body) = env
        .post_form(
            &format!("/{tid}/oauth2/v2.0/token"),
            &[
                ("grant_type", "password"),
                ("client_id", &cid),
                ("client_secret", demo::CLIENT_SECRET),
                ("username", "ALICE@contoso.example"),
                ("password", demo::PASSWORD),
                ("scope", "api://intraport-demo/.default"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("id_token").is_none(), "no openid, no id_token");
    let (_, c) = decode(body["access_token"].as_str().unwrap());
    assert_eq!(c["azpacr"], "1");
    assert_eq!(c["scp"], "access_as_user");

    // The tenant-independent token endpoint stands for the one tenant.
    let (status, body) = env
        .post_form(
            "/organizations/oauth2/v2.0/token",
            &[
                ("grant_type", "password"),
                ("client_id", &cid),
                ("username", demo::USERNAME),
                ("password", demo::PASSWORD),
                ("scope", "api://intraport-demo/access_as_user"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, c) = decode(body["access_token"].as_str().unwrap());
    assert_eq!(c["tid"], tid);
}

#[tokio::test]
async fn password_grant_v1_user_token() {
    let env = Env::start(with_v1_api()).await;
    let tid = env.tid();
    let cid = client_id();
    let (status, body) = env
        .post_form(
            &format!("/{tid}/oauth2/token"),
            &[
                ("grant_type", "password"),
                ("client_id", &cid),
                ("client_secret", demo::CLIENT_SECRET),
                ("username", demo::USERNAME),
                ("password", demo::PASSWORD),
                ("resource", "api://legacy"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "user_impersonation");
    let (header, c) = env
        .verify(
            body["access_token"].as_str().unwrap(),
            &format!("/{tid}/discovery/keys"),
        )
        .await;
    assert_eq!(header["x5t"], header["kid"]);
    assert_eq!(c["ver"], "1.0");
    assert_eq!(c["upn"], demo::USERNAME);
    assert_eq!(c["unique_name"], demo::USERNAME);
    assert_eq!(c["name"], "Alice Example");
    assert_eq!(c["scp"], "user_impersonation");
    assert_eq!(c["amr"], json!(["pwd"]));
    assert_eq!(c["idtyp"], "user");
    assert_eq!(c["roles"], json!(["Legacy.Read"]));
    assert_eq!(c["wids"], json!(["62e90394-69f5-4237-9190-012177145e10"]));
    assert!(c["groups"].is_array());
    assert!(c.get("preferred_username").is_none());
}

#[tokio::test]
async fn groups_overage_replaces_groups_past_the_limit() {
    let mut config = DevIssuerConfig::demo();
    config.group_overage_limit = 2;
    config.users.push(UserConfig {
        username: "bob@contoso.example".into(),
        password: "bob-pw".into(),
        object_id: None,
        name: None,
        roles: BTreeMap::new(),
        groups: (1..=3).map(|i| Uuid::from_u128(i).to_string()).collect(),
        wids: Vec::new(),
    });
    let env = Env::start(config).await;
    let api = "api://intraport-demo".to_string();
    let bob = env
        .issuer
        .issue_token(&TokenRequest::User {
            client: "demo-client".into(),
            username: "bob@contoso.example".into(),
            api: api.clone(),
            scopes: vec![],
        })
        .unwrap();
    let (_, c) = decode(&bob.access_token);
    assert!(c.get("groups").is_none());
    assert_eq!(c["_claim_names"], json!({"groups": "src1"}));
    let endpoint = c["_claim_sources"]["src1"]["endpoint"].as_str().unwrap();
    assert!(endpoint.ends_with(&format!(
        "/users/{}/getMemberObjects",
        c["oid"].as_str().unwrap()
    )));
    assert!(c.get("roles").is_none(), "bob has no roles");

    let alice = env
        .issuer
        .issue_token(&TokenRequest::User {
            client: "demo-client".into(),
            username: demo::USERNAME.into(),
            api,
            scopes: vec!["access_as_user".into()],
        })
        .unwrap();
    let (_, c) = decode(&alice.access_token);
    assert_eq!(c["groups"].as_array().unwrap().len(), 1);
    assert!(c.get("_claim_names").is_none());
}

#[tokio::test]
async fn issue_token_directly() {
    let mut config = DevIssuerConfig::demo();
    config.token_lifetime = LifetimeRange {
        min_secs: 120,
        max_secs: 120,
    };
    let env = Env::start(config).await;
    let t = env
        .issuer
        .issue_token(&TokenRequest::App {
            client: demo::ADMIN_CLIENT_ID.to_string(),
            api: "intraport-demo".into(),
        })
        .unwrap();
    assert_eq!(t.expires_in, 120);
    assert_eq!(t.version, TokenVersion::V2);
    assert_eq!(t.kid, env.issuer.current_kid());
    assert_eq!(t.issuer, env.issuer.issuer_v2());
    assert_eq!(t.audience, demo::API_APP_ID.to_string());
    let (_, c) = env
        .verify(
            &t.access_token,
            &format!("/{}/discovery/v2.0/keys", env.tid()),
        )
        .await;
    assert_eq!(c["roles"], json!(["Reader", "Writer"]));
    assert_eq!(c["exp"].as_u64().unwrap(), t.expires_on);

    let err = env
        .issuer
        .issue_token(&TokenRequest::App {
            client: "nobody".into(),
            api: "intraport-demo".into(),
        })
        .unwrap_err();
    assert!(
        matches!(err, Error::Grant(ref e) if e.code == 700016),
        "{err}"
    );
    let err = env
        .issuer
        .issue_token(&TokenRequest::User {
            client: "demo-client".into(),
            username: demo::USERNAME.into(),
            api: API.into(),
            scopes: vec!["delete_everything".into()],
        })
        .unwrap_err();
    assert!(
        matches!(err, Error::Grant(ref e) if e.code == 70011),
        "{err}"
    );
}

/// Asserts Entra's error shape and returns the body.
fn assert_aadsts(status: u16, body: &Value, want_status: u16, error: &str, code: u32) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"], error, "{body}");
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
    assert_eq!(body["error_codes"], json!([code]));
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(Uuid::parse_str(body["trace_id"].as_str().unwrap()).is_ok());
    assert!(Uuid::parse_str(body["correlation_id"].as_str().unwrap()).is_ok());
}

#[tokio::test]
async fn every_refusal_has_its_aadsts_code() {
    let env = Env::start(with_v1_api()).await;
    let tid = env.tid();
    let v2 = format!("/{tid}/oauth2/v2.0/token");
    let v1 = format!("/{tid}/oauth2/token");
    let cid = client_id();
    let scope = ("scope", "api://intraport-demo/.default");
    let cc = ("grant_type", "client_credentials");
    let secret = ("client_secret", demo::CLIENT_SECRET);

    // Unknown client, on both endpoints.
    let unknown = Uuid::new_v4().to_string();
    let (s, b) = env
        .post_form(&v2, &[cc, ("client_id", &unknown), secret, scope])
        .await;
    assert_aadsts(s, &b, 400, "unauthorized_client", 700016);
    let (s, b) = env
        .post_form(
            &v1,
            &[cc, ("client_id", "not-a-guid"), secret, ("resource", API)],
        )
        .await;
    assert_aadsts(s, &b, 400, "unauthorized_client", 700016);

    // Bad secret.
    let (s, b) = env
        .post_form(
            &v2,
            &[cc, ("client_id", &cid), ("client_secret", "wrong"), scope],
        )
        .await;
    assert_aadsts(s, &b, 401, "invalid_client", 7000215);

    // No secret for client credentials.
    let (s, b) = env.post_form(&v2, &[cc, ("client_id", &cid), scope]).await;
    assert_aadsts(s, &b, 401, "invalid_client", 7000218);

    // Bad user password, unknown user.
    let pw = ("grant_type", "password");
    let user_scope = ("scope", "api://intraport-demo/access_as_user");
    let (s, b) = env
        .post_form(
            &v2,
            &[
                pw,
                ("client_id", &cid),
                ("username", demo::USERNAME),
                ("password", "wrong"),
                user_scope,
            ],
        )
        .await;
    assert_aadsts(s, &b, 400, "invalid_grant", 50126);
    let (s, b) = env
        .post_form(
            &v2,
            &[
                pw,
                ("client_id", &cid),
                ("username", "eve@contoso.example"),
                ("password", "x"),
                user_scope,
            ],
        )
        .await;
    assert_aadsts(s, &b, 400, "invalid_grant", 50034);

    // Password grant by a confidential client without public flows.
    let admin = demo::ADMIN_CLIENT_ID.to_string();
    let (s, b) = env
        .post_form(
            &v2,
            &[
                pw,
                ("client_id", &admin),
                ("username", demo::USERNAME),
                ("password", demo::PASSWORD),
                user_scope,
            ],
        )
        .await;
    assert_aadsts(s, &b, 401, "invalid_client", 7000218);

    // Unknown resource, by scope and by resource.
    let (s, b) = env
        .post_form(
            &v2,
            &[
                cc,
                ("client_id", &cid),
                secret,
                ("scope", "api://nope/.default"),
            ],
        )
        .await;
    assert_aadsts(s, &b, 400, "invalid_resource", 500011);
    let (s, b) = env
        .post_form(
            &v1,
            &[cc, ("client_id", &cid), secret, ("resource", "api://nope")],
        )
        .await;
    assert_aadsts(s, &b, 400, "invalid_resource", 500011);

    // Unknown delegated scope; non-.default client-credentials scope; two APIs.
    let (s, b) = env
        .post_form(
            &v2,
            &[
                pw,
                ("client_id", &cid),
                ("username", demo::USERNAME),
                ("password", demo::PASSWORD),
                ("scope", "api://intraport-demo/delete_all"),
            ],
        )
        .await;
    assert_aadsts(s, &b, 400, "invalid_scope", 70011);
    let (s, b) = env
        .post_form(
            &v2,
            &[
                cc,
                ("client_id", &cid),
                secret,
                ("scope", "api://intraport-demo/access_as_user"),
            ],
        )
        .await;
    assert_aadsts(s, &b, 400, "invalid_scope", 1002012);
    let (s, b) = env
        .post_form(
            &v2,
            &[
                pw,
                ("client_id", &cid),
                ("username", demo::USERNAME),
                ("password", demo::PASSWORD),
                (
                    "scope",
                    "api://intraport-demo/access_as_user api://legacy/user_impersonation",
                ),
            ],
        )
        .await;
    assert_aadsts(s, &b, 400, "invalid_scope", 28000);

    // Unsupported grant.
    let (s, b) = env
        .post_form(
            &v2,
            &[
                ("grant_type", "authorization_code"),
                ("client_id", &cid),
                secret,
                scope,
            ],
        )
        .await;
    assert_aadsts(s, &b, 400, "unsupported_grant_type", 70003);

    // Missing parameters, each named.
    for (path, form, missing) in [
        (&v2, vec![("client_id", cid.as_str()), scope], "grant_type"),
        (&v2, vec![cc, secret, scope], "client_id"),
        (&v2, vec![cc, ("client_id", cid.as_str()), secret], "scope"),
        (
            &v1,
            vec![cc, ("client_id", cid.as_str()), secret],
            "resource",
        ),
        (
            &v2,
            vec![
                pw,
                ("client_id", cid.as_str()),
                ("password", "x"),
                user_scope,
            ],
            "username",
        ),
    ] {
        let (s, b) = env.post_form(path, &form).await;
        assert_aadsts(s, &b, 400, "invalid_request", 900144);
        assert!(
            b["error_description"]
                .as_str()
                .unwrap()
                .contains(&format!("'{missing}'")),
            "{b}"
        );
    }
}

#[tokio::test]
async fn malformed_requests_get_entra_errors_not_crashes() {
    let env = Env::demo().await;
    let tid = env.tid();
    let url = env.url(&format!("/{tid}/oauth2/v2.0/token"));
    let correlation = Uuid::new_v4().to_string();

    // Binary garbage as a form body.
    let resp = env
        .http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("client-request-id", &correlation)
        .body(vec![0xff, 0x00, b'=', b'&', b'%', 0xfe])
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_aadsts(status, &body, 400, "invalid_request", 900144);
    assert_eq!(
        body["correlation_id"], correlation,
        "client-request-id is echoed"
    );

    // JSON instead of a form.
    let resp = env
        .http
        .post(&url)
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert_aadsts(
        status,
        &resp.json().await.unwrap(),
        400,
        "invalid_request",
        900144,
    );

    // A body over the limit.
    let resp = env
        .http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![b'a'; 100 * 1024])
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert_aadsts(
        status,
        &resp.json().await.unwrap(),
        400,
        "invalid_request",
        90023,
    );

    // A malformed Basic header.
    let resp = env
        .http
        .post(&url)
        .header("authorization", "Basic !!!not-base64")
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert_aadsts(
        status,
        &resp.json().await.unwrap(),
        400,
        "invalid_request",
        90023,
    );

    // Unknown tenants, GUID or domain, and a tenant that is neither.
    let other = Uuid::new_v4();
    for path in [
        format!("/{other}/v2.0/.well-known/openid-configuration"),
        format!("/{other}/discovery/v2.0/keys"),
        "/fabrikam.example/.well-known/openid-configuration".to_string(),
    ] {
        let (s, b) = env.get_json(&path).await;
        assert_aadsts(s, &b, 400, "invalid_tenant", 90002);
    }
    let (s, b) = env
        .post_form(
            &format!("/{other}/oauth2/v2.0/token"),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_aadsts(s, &b, 400, "invalid_tenant", 90002);
    let (s, b) = env
        .get_json("/not_a_tenant/v2.0/.well-known/openid-configuration")
        .await;
    assert_aadsts(s, &b, 400, "invalid_request", 900023);

    // Unknown paths: JSON 404.
    let (s, b) = env.get_json("/nothing/here/at/all").await;
    assert_eq!(s, 404);
    assert_eq!(b["error"], "not_found");

    // The server is still fine.
    let (s, _) = env.get_json(&format!("/{tid}/discovery/v2.0/keys")).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn user_realm_says_managed_for_the_tenant_domain() {
    let env = Env::demo().await;
    let (s, b) = env
        .get_json("/common/userrealm/alice@contoso.example?api-version=1.0")
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["account_type"], "Managed");
    assert_eq!(b["domain_name"], "contoso.example");
    let (_, b) = env
        .get_json("/common/userrealm/someone@elsewhere.example?api-version=1.0")
        .await;
    assert_eq!(b["account_type"], "Unknown");
}

#[tokio::test]
async fn rotation_over_http_and_api() {
    let env = Env::demo().await;
    let tid = env.tid();
    let jwks_path = format!("/{tid}/discovery/v2.0/keys");
    let app = TokenRequest::App {
        client: "demo-client".into(),
        api: API.into(),
    };
    let old = env.issuer.issue_token(&app).unwrap();
    let old_kid = old.kid.clone();

    let resp = env.http.post(env.url("/_dev/rotate")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let new_kid = resp.json::<Value>().await.unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_kid, old_kid);
    assert_eq!(env.issuer.current_kid(), new_kid);

    // New tokens are signed by the new key, over HTTP too.
    let (_, body) = client_credentials(
        &env,
        &format!("/{tid}/oauth2/v2.0/token"),
        ("scope", "api://intraport-demo/.default"),
    )
    .await;
    let (header, _) = env
        .verify(body["access_token"].as_str().unwrap(), &jwks_path)
        .await;
    assert_eq!(header["kid"], new_kid);
    // The old token still verifies: its key is still published.
    let (_, jwks) = env.get_json(&jwks_path).await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    common::verify_with(&old.access_token, &jwks).unwrap();

    // The current key cannot be retired; unknown kids are 404.
    let resp = env
        .http
        .post(env.url(&format!("/_dev/retire/{new_kid}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let resp = env
        .http
        .post(env.url("/_dev/retire/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    let resp = env
        .http
        .post(env.url(&format!("/_dev/retire/{old_kid}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (_, jwks) = env.get_json(&jwks_path).await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert_eq!(
        common::verify_with(&old.access_token, &jwks).unwrap_err(),
        format!("kid {old_kid} not published")
    );

    // The same through the library API.
    let third = env.issuer.rotate_key().unwrap();
    assert!(matches!(
        env.issuer.retire_key(&third),
        Err(Error::KeyInUse(_))
    ));
    env.issuer.retire_key(&new_kid).unwrap();
    assert!(matches!(
        env.issuer.retire_key(&new_kid),
        Err(Error::UnknownKey(_))
    ));
    let (_, jwks) = env.get_json(&jwks_path).await;
    assert_eq!(jwks["keys"][0]["kid"], third);
}

#[tokio::test]
async fn plain_http_when_asked_and_graceful_shutdown() {
    let config = DevIssuerConfig {
        tls: false,
        ..DevIssuerConfig::demo()
    };
    let env = Env::start(config).await;
    assert!(env.issuer.authority().starts_with("http://127.0.0.1:"));
    assert!(env.issuer.ca_pem_path().is_none());
    let (s, doc) = env
        .get_json("/contoso.example/v2.0/.well-known/openid-configuration")
        .await;
    assert_eq!(s, 200);
    assert!(doc["jwks_uri"].as_str().unwrap().starts_with("http://"));

    let addr = env.issuer.addr();
    let Env { issuer, .. } = env;
    issuer.shutdown().await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn https_ca_file_is_written_and_a_fixed_port_binds() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let dir = tempfile::tempdir().unwrap();
    let issuer = DevIssuer::start(DevIssuerConfig {
        port,
        state_dir: Some(dir.path().join("nested")),
        ..DevIssuerConfig::demo()
    })
    .await
    .unwrap();
    assert_eq!(issuer.addr().port(), port);
    let pem = std::fs::read_to_string(issuer.ca_pem_path().unwrap()).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    // The server pair is written too (for `intraport dev`'s gateway), the key
    // readable by its owner only.
    let (cert, key) = issuer.server_cert_paths().unwrap();
    assert!(
        std::fs::read_to_string(cert)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    assert!(
        std::fs::read_to_string(key)
            .unwrap()
            .contains("PRIVATE KEY-----")
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "key file mode {mode:o}");
    }
    // A client that does not trust the CA is refused.
    let untrusting = reqwest::Client::builder()
        .tls_certs_only(std::iter::empty::<reqwest::Certificate>())
        .build()
        .unwrap();
    assert!(
        untrusting
            .get(format!("{}/common/discovery/v2.0/keys", issuer.authority()))
            .send()
            .await
            .is_err()
    );
    // The same port twice fails with a Bind error, not a panic.
    let err = DevIssuer::start(DevIssuerConfig {
        port,
        ..DevIssuerConfig::demo()
    })
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Bind { .. }), "{err}");
    issuer.shutdown().await.unwrap();
}

#[tokio::test]
async fn invalid_config_is_refused_before_binding() {
    let mut config = DevIssuerConfig::demo();
    config.domain = Some("common".into());
    let err = DevIssuer::start(config).await.unwrap_err();
    assert!(
        matches!(err, Error::Config { ref field, .. } if field == "domain"),
        "{err}"
    );
}
