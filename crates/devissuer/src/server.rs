//! The HTTP surface: the same URL layout as login.microsoftonline.com for
//! one tenant (discovery documents, keys, token endpoints, user realm), the
//! loopback-only `/_dev` rotation endpoints, and the accept loop that
//! serves them over TLS or plain HTTP with graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use uuid::Uuid;

use crate::Error;
use crate::error::OAuthError;
use crate::tokens::{Endpoint, Minter, TokenParams};

/// Largest token request body read; real ones are well under 4 KiB.
const MAX_BODY: usize = 64 * 1024;
/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The peer of the connection a request came on.
#[derive(Clone, Copy)]
struct PeerAddr(SocketAddr);

type Shared = Arc<Minter>;

/// How a tenant path segment resolved.
enum TenantRef {
    /// Our tenant, by id or domain.
    Ours,
    /// `common` or `organizations`: tenant-independent documents.
    Independent(String),
}

fn resolve_tenant(m: &Minter, segment: &str) -> Result<TenantRef, OAuthError> {
    if segment.eq_ignore_ascii_case("common") || segment.eq_ignore_ascii_case("organizations") {
        return Ok(TenantRef::Independent(segment.to_ascii_lowercase()));
    }
    if let Ok(id) = Uuid::parse_str(segment) {
        return if id == m.dir.tenant_id {
            Ok(TenantRef::Ours)
        } else {
            Err(OAuthError::unknown_tenant(segment))
        };
    }
    if m.dir
        .domain
        .as_deref()
        .is_some_and(|d| d.eq_ignore_ascii_case(segment))
    {
        return Ok(TenantRef::Ours);
    }
    let dns_like = segment.contains('.')
        && segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    Err(if dns_like {
        OAuthError::unknown_tenant(segment)
    } else {
        OAuthError::malformed_tenant(segment)
    })
}

/// Entra's error body: `error_description` carries the AADSTS code and the
/// trace/correlation/timestamp trailer, `error_codes` the bare number.
pub(crate) fn error_response(e: &OAuthError, headers: &HeaderMap, authority: &str) -> Response {
    let trace_id = Uuid::new_v4();
    let correlation_id = headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v).ok())
        .unwrap_or_else(Uuid::new_v4);
    let timestamp = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace('T', " ");
    let body = json!({
        "error": e.error,
        "error_description": format!(
            "AADSTS{}: {} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}",
            e.code, e.description
        ),
        "error_codes": [e.code],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": format!("{authority}/error?code={}", e.code),
    });
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    json_response(status, &body)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut resp = (status, axum::Json(body)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

fn ok_json(body: &Value) -> Response {
    json_response(StatusCode::OK, body)
}

pub(crate) fn router(state: Shared) -> Router {
    Router::new()
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(discovery_v2),
        )
        .route(
            "/{tenant}/.well-known/openid-configuration",
            get(discovery_v1),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(keys))
        .route("/{tenant}/discovery/keys", get(keys))
        .route("/{tenant}/oauth2/v2.0/token", post(token_v2))
        .route("/{tenant}/oauth2/token", post(token_v1))
        .route("/{tenant}/userrealm/{username}", get(user_realm))
        .route("/_dev/rotate", post(dev_rotate))
        .route("/_dev/retire/{kid}", post(dev_retire))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({"error": "not_found", "error_description": "No such endpoint on the intraport dev issuer."}),
    )
}

/// The v2.0 discovery document, as Entra serves it for a tenant or for
/// `common`/`organizations` (issuer then the `{tenantid}` template).
async fn discovery_v2(
    State(m): State<Shared>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (segment, issuer) = match resolve_tenant(&m, &tenant) {
        Ok(TenantRef::Ours) => (m.tid(), m.v2_issuer()),
        Ok(TenantRef::Independent(name)) => (name, format!("{}/{{tenantid}}/v2.0", m.authority)),
        Err(e) => return error_response(&e, &headers, &m.authority),
    };
    let base = format!("{}/{segment}", m.authority);
    ok_json(&json!({
        "token_endpoint": format!("{base}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": issuer,
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
        "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
            "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr",
            "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
        "kerberos_endpoint": format!("{base}/kerberos"),
        "tenant_region_scope": null,
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    }))
}

/// The v1.0 discovery document; its issuer is the `sts.windows.net` one
/// that v1.0 tokens carry.
async fn discovery_v1(
    State(m): State<Shared>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (segment, issuer) = match resolve_tenant(&m, &tenant) {
        Ok(TenantRef::Ours) => (m.tid(), m.v1_issuer()),
        Ok(TenantRef::Independent(name)) => (name, "https://sts.windows.net/{tenantid}/".into()),
        Err(e) => return error_response(&e, &headers, &m.authority),
    };
    let base = format!("{}/{segment}", m.authority);
    ok_json(&json!({
        "token_endpoint": format!("{base}/oauth2/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/discovery/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
        "scopes_supported": ["openid"],
        "issuer": issuer,
        "microsoft_multi_refresh_token": true,
        "authorization_endpoint": format!("{base}/oauth2/authorize"),
        "device_authorization_endpoint": format!("{base}/oauth2/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/oauth2/logout"),
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
            "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr",
            "amr", "nonce", "email", "given_name", "family_name", "nickname"],
        "check_session_iframe": format!("{base}/oauth2/checksession"),
        "userinfo_endpoint": format!("{base}/openid/userinfo"),
        "kerberos_endpoint": format!("{base}/kerberos"),
        "tenant_region_scope": null,
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    }))
}

/// JWKS for both versions; every key carries the v2.0 issuer it signs for
/// (the `{tenantid}` template on tenant-independent paths).
async fn keys(State(m): State<Shared>, Path(tenant): Path<String>, headers: HeaderMap) -> Response {
    let issuer = match resolve_tenant(&m, &tenant) {
        Ok(TenantRef::Ours) => m.v2_issuer(),
        Ok(TenantRef::Independent(_)) => format!("{}/{{tenantid}}/v2.0", m.authority),
        Err(e) => return error_response(&e, &headers, &m.authority),
    };
    let set = m.keys.snapshot();
    let keys: Vec<Value> = set.keys.iter().map(|k| k.jwk(&issuer)).collect();
    ok_json(&json!({ "keys": keys }))
}

/// Home realm discovery as MSAL calls it before a password grant.
async fn user_realm(
    State(m): State<Shared>,
    Path((tenant, username)): Path<(String, String)>,
) -> Response {
    if !tenant.eq_ignore_ascii_case("common") {
        return not_found().await;
    }
    let domain = username.rsplit_once('@').map_or("", |(_, d)| d);
    let known = m
        .dir
        .domain
        .as_deref()
        .is_some_and(|d| d.eq_ignore_ascii_case(domain))
        || m.dir.user(&username).is_some();
    ok_json(&json!({
        "ver": "1.0",
        "account_type": if known { "Managed" } else { "Unknown" },
        "domain_name": domain,
        "cloud_instance_name": "microsoftonline.com",
        "cloud_audience_urn": "urn:federation:MicrosoftOnline",
    }))
}

async fn token_v2(
    State(m): State<Shared>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    token(m, Endpoint::V2, tenant, headers, body).await
}

async fn token_v1(
    State(m): State<Shared>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    token(m, Endpoint::V1, tenant, headers, body).await
}

/// Reads the form body and Basic credentials into [`TokenParams`].
/// The form is parsed by hand from bytes (not axum's `Form`) so every
/// malformed body gets Entra's error JSON rather than a framework rejection.
async fn read_params(headers: &HeaderMap, body: Body) -> Result<TokenParams, OAuthError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| OAuthError::unreadable_body("the request body is unreadable or too large"))?;
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    let mut p = TokenParams::default();
    if is_form {
        for (k, v) in form_urlencoded::parse(&bytes) {
            let slot = match k.as_ref() {
                "grant_type" => &mut p.grant_type,
                "client_id" => &mut p.client_id,
                "client_secret" => &mut p.client_secret,
                "scope" => &mut p.scope,
                "resource" => &mut p.resource,
                "username" => &mut p.username,
                "password" => &mut p.password,
                _ => continue,
            };
            // First occurrence wins; empty values count as absent, as in Entra.
            if slot.is_none() && !v.is_empty() {
                *slot = Some(v.into_owned());
            }
        }
    }
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let (id, secret) = parse_basic(auth)
            .ok_or_else(|| OAuthError::unreadable_body("malformed Basic authorization header"))?;
        p.client_id = Some(id);
        p.client_secret = Some(secret);
    }
    Ok(p)
}

/// `Authorization: Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 §2.3.1).
fn parse_basic(value: &HeaderValue) -> Option<(String, String)> {
    let encoded = value.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let unescape = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(|c| c.into_owned())
    };
    Some((unescape(id)?, unescape(secret)?))
}

async fn token(
    m: Shared,
    endpoint: Endpoint,
    tenant: String,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(e) = resolve_tenant(&m, &tenant) {
        return error_response(&e, &headers, &m.authority);
    }
    let params = match read_params(&headers, body).await {
        Ok(p) => p,
        Err(e) => return error_response(&e, &headers, &m.authority),
    };
    // An RSA-2048 signature is about a millisecond of CPU: fine inline.
    match m.token_response(endpoint, &params) {
        Ok(body) => ok_json(&body),
        Err(Error::Grant(e)) => error_response(&e, &headers, &m.authority),
        Err(other) => {
            tracing::error!(error = %other, "token issuance failed");
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": "server_error", "error_description": other.to_string()}),
            )
        }
    }
}

fn loopback_only(peer: Option<PeerAddr>) -> Option<Response> {
    match peer {
        Some(PeerAddr(addr)) if addr.ip().is_loopback() => None,
        _ => Some(json_response(
            StatusCode::FORBIDDEN,
            &json!({"error": "forbidden", "error_description": "/_dev endpoints answer loopback clients only"}),
        )),
    }
}

async fn dev_rotate(State(m): State<Shared>, req: axum::extract::Request) -> Response {
    if let Some(denied) = loopback_only(req.extensions().get::<PeerAddr>().copied()) {
        return denied;
    }
    // Key generation is CPU-bound for up to a few hundred milliseconds.
    match tokio::task::spawn_blocking(move || m.keys.rotate()).await {
        Ok(Ok(kid)) => ok_json(&json!({ "kid": kid })),
        Ok(Err(e)) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": "server_error", "error_description": e.to_string()}),
        ),
        Err(e) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": "server_error", "error_description": e.to_string()}),
        ),
    }
}

async fn dev_retire(
    State(m): State<Shared>,
    Path(kid): Path<String>,
    req: axum::extract::Request,
) -> Response {
    if let Some(denied) = loopback_only(req.extensions().get::<PeerAddr>().copied()) {
        return denied;
    }
    let err = match m.keys.retire(&kid) {
        Ok(()) => return ok_json(&json!({ "retired": kid })),
        Err(e) => e,
    };
    let (status, error) = match err {
        Error::UnknownKey(_) => (StatusCode::NOT_FOUND, "unknown_kid"),
        Error::KeyInUse(_) => (StatusCode::CONFLICT, "key_in_use"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
    };
    json_response(
        status,
        &json!({"error": error, "error_description": err.to_string()}),
    )
}

/// Accepts connections until `shutdown` flips, then drains in-flight
/// requests for up to [`DRAIN_TIMEOUT`].
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(PeerAddr(peer));
                router.clone().oneshot(req)
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let result = match tls {
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        };
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
                None => {
                    let conn = builder.serve_connection(TokioIo::new(tcp), service);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn dev_endpoints_refuse_non_loopback_peers() {
        let remote: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let denied = loopback_only(Some(PeerAddr(remote))).unwrap();
        assert_eq!(denied.status(), StatusCode::FORBIDDEN);
        assert!(loopback_only(None).is_some(), "unknown peer is refused");
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert!(loopback_only(Some(PeerAddr(local))).is_none());
    }

    #[test]
    fn basic_credentials_are_percent_decoded() {
        let header =
            |raw: &str| HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(raw))).unwrap();
        assert_eq!(
            parse_basic(&header("id:s%3Acret%2B1")),
            Some(("id".into(), "s:cret+1".into()))
        );
        assert_eq!(
            parse_basic(&header("id:a:b")),
            Some(("id".into(), "a:b".into())),
            "only the first colon separates"
        );
        assert_eq!(parse_basic(&header("no-colon")), None);
        assert_eq!(parse_basic(&HeaderValue::from_static("Bearer x")), None);
        assert_eq!(parse_basic(&HeaderValue::from_static("Basic %%%")), None);
    }
}
