//! One run of one probe: token acquisition (then validation and a gateway call), an
//! LDAP bind + search, and a replication-delay measurement, each timed by stage.

use std::sync::Arc;
use std::time::Instant;

use intraport_token::Provider;
use intraport_token::client::{AcquireError, TokenResponse};
use serde::{Deserialize, Serialize};

use crate::config::{GrantSpec, ProbeSpec, ReplicationSpec, TokenSpec};
use crate::ldap;
use crate::replication::{self, ReplicationResult};
use crate::timing::{
    Failure, FailureClass, HttpRequest, Recorder, StageError, StageResult, http_exchange,
    tls_config,
};

/// The result of one run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunResult {
    /// The probe.
    pub probe: String,
    /// Start, in milliseconds since the Unix epoch (from the injected clock).
    pub started_ms: i64,
    /// Whole run, in milliseconds (monotonic).
    pub duration_ms: f64,
    /// Whether every stage succeeded.
    pub ok: bool,
    /// The stages run, in order (the failed one last).
    pub stages: Vec<StageResult>,
    /// What failed, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// What the replication probe saw (the marker, each replica's lag and
    /// `contextCSN`), when the probe has one and the marker was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationResult>,
}

/// A probe ready to run: TLS configurations built and the validating provider
/// loaded once, not per run.
pub struct PreparedProbe {
    /// The checked configuration.
    pub spec: ProbeSpec,
    token_tls: Option<Arc<rustls::ClientConfig>>,
    gateway_tls: Option<Arc<rustls::ClientConfig>>,
    ldap_tls: Option<Arc<rustls::ClientConfig>>,
    replication: Option<Arc<ReplicationSpec>>,
    replication_tls: Option<Arc<rustls::ClientConfig>>,
    provider: Option<Arc<Provider>>,
}

/// Why a probe could not be prepared (a CA file that does not load, a validation
/// provider that cannot be built).
#[derive(Debug, thiserror::Error)]
#[error("probe {probe}: {message}")]
pub struct PrepareError {
    /// The probe.
    pub probe: String,
    /// What went wrong.
    pub message: String,
}

impl PreparedProbe {
    /// Build the TLS configurations and the validation provider. The provider's
    /// metadata is loaded on first use, inside the `token_validate` stage, so that a
    /// metadata outage shows up as a failed run rather than as a start-up error.
    pub fn new(spec: ProbeSpec) -> Result<Self, PrepareError> {
        let err = |message: String| PrepareError {
            probe: spec.name.clone(),
            message,
        };
        let token_tls = match &spec.token {
            Some(t) => Some(tls_config(t.ca_file.as_deref()).map_err(err)?),
            None => None,
        };
        let gateway_tls = match &spec.gateway {
            Some(g) => Some(tls_config(g.ca_file.as_deref()).map_err(err)?),
            None => None,
        };
        let ldap_tls = |ca_file: Option<&std::path::Path>| {
            let mut c = (*tls_config(ca_file).map_err(err)?).clone();
            c.alpn_protocols.clear();
            Ok::<_, PrepareError>(Arc::new(c))
        };
        let replication_tls = match &spec.replication {
            Some(r)
                if r.provider.scheme() == "ldaps"
                    || r.replicas.iter().any(|x| x.url.scheme() == "ldaps") =>
            {
                Some(ldap_tls(r.ca_file.as_deref())?)
            }
            _ => None,
        };
        let replication = spec.replication.clone().map(Arc::new);
        let ldap_tls = match &spec.ldap {
            Some(l) if l.url.scheme() == "ldaps" => Some(ldap_tls(l.ca_file.as_deref())?),
            _ => None,
        };
        let provider = match &spec.validate {
            Some(v) => {
                let config = v
                    .to_config(&spec.base_dir)
                    .map_err(|e| err(e.to_string()))?;
                Some(Arc::new(
                    Provider::new(config).map_err(|e| err(e.to_string()))?,
                ))
            }
            None => None,
        };
        Ok(Self {
            spec,
            token_tls,
            gateway_tls,
            ldap_tls,
            replication,
            replication_tls,
            provider,
        })
    }

    /// Run every configured part once, under the probe's timeout.
    pub async fn run(&self, started_ms: i64) -> RunResult {
        let start = Instant::now();
        let mut rec = Recorder::new(self.spec.timeout);
        let mut replication = None;
        let result = self
            .run_stages(&mut rec, started_ms, &mut replication)
            .await;
        RunResult {
            probe: self.spec.name.clone(),
            started_ms,
            duration_ms: start.elapsed().as_secs_f64() * 1000.0,
            ok: result.is_ok(),
            stages: rec.stages,
            failure: result.err(),
            replication,
        }
    }

    async fn run_stages(
        &self,
        rec: &mut Recorder,
        started_ms: i64,
        replication: &mut Option<ReplicationResult>,
    ) -> Result<(), Failure> {
        if let (Some(t), Some(tls)) = (&self.spec.token, &self.token_tls) {
            let token = acquire(rec, tls, t).await?;
            if let Some(provider) = &self.provider {
                rec.stage("token_validate", async {
                    if !provider.is_ready() {
                        // First use or an earlier failure: load the metadata now.
                        provider.load().await;
                    }
                    provider
                        .validate(&token.access_token)
                        .await
                        .map(|_| ())
                        .map_err(|e| {
                            StageError::coded(FailureClass::Validation, e.code.as_str(), e.message)
                        })
                })
                .await?;
            }
            if let (Some(g), Some(tls)) = (&self.spec.gateway, &self.gateway_tls) {
                let resp = http_exchange(
                    rec,
                    "gateway",
                    tls,
                    HttpRequest {
                        method: &g.method,
                        url: &g.url,
                        headers: vec![("authorization", format!("Bearer {}", token.access_token))],
                        body: None,
                    },
                )
                .await?;
                if resp.status != g.expect_status {
                    let code = serde_json::from_slice::<serde_json::Value>(&resp.body)
                        .ok()
                        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
                        .unwrap_or_else(|| resp.status.to_string());
                    return Err(Failure {
                        stage: "gateway_response".into(),
                        error: StageError::coded(
                            FailureClass::HttpStatus,
                            code,
                            format!(
                                "HTTP {} from {}, expected {}",
                                resp.status, g.url, g.expect_status
                            ),
                        ),
                    });
                }
            }
        }
        if let Some(l) = &self.spec.ldap {
            ldap::probe(rec, l, self.ldap_tls.clone()).await?;
        }
        if let Some(r) = &self.replication {
            replication::run(
                rec,
                &self.spec.name,
                started_ms,
                r,
                self.replication_tls.clone(),
                replication,
            )
            .await?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct OAuthErrorBody {
    error: Option<String>,
    error_description: Option<String>,
    #[serde(default)]
    error_codes: Vec<u64>,
}

/// The token request, sent over a connection timed stage by stage. The request and
/// its answers are those of `intraport_token::client::acquire` (same form fields,
/// same [`TokenResponse`] and typed [`AcquireError::Endpoint`]); that function is
/// not called because its pooled HTTP client cannot time connect and TLS apart.
async fn acquire(
    rec: &mut Recorder,
    tls: &Arc<rustls::ClientConfig>,
    t: &TokenSpec,
) -> Result<TokenResponse, Failure> {
    let body = {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        match &t.grant {
            GrantSpec::ClientCredentials { client_secret } => {
                form.append_pair("grant_type", "client_credentials");
                form.append_pair("client_id", &t.client_id);
                form.append_pair("client_secret", client_secret);
            }
            GrantSpec::Password {
                client_secret,
                username,
                password,
            } => {
                form.append_pair("grant_type", "password");
                form.append_pair("client_id", &t.client_id);
                if let Some(s) = client_secret {
                    form.append_pair("client_secret", s);
                }
                form.append_pair("username", username);
                form.append_pair("password", password);
            }
        }
        match &t.resource {
            Some(r) => form.append_pair("resource", r),
            None => form.append_pair("scope", &t.scope.join(" ")),
        };
        form.finish()
    };
    let resp = http_exchange(
        rec,
        "token",
        tls,
        HttpRequest {
            method: "POST",
            url: &t.endpoint,
            headers: vec![("accept", "application/json".into())],
            body: Some((body, "application/x-www-form-urlencoded")),
        },
    )
    .await?;
    let fail = |error: StageError| Failure {
        stage: "token_response".into(),
        error,
    };
    if (200..300).contains(&resp.status) {
        return serde_json::from_slice::<TokenResponse>(&resp.body).map_err(|e| {
            fail(StageError::new(
                FailureClass::BadResponse,
                format!("HTTP {} but not a token response: {e}", resp.status),
            ))
        });
    }
    match serde_json::from_slice::<OAuthErrorBody>(&resp.body) {
        Ok(b) => {
            let e = AcquireError::Endpoint {
                status: resp.status,
                error: b.error.unwrap_or_else(|| "unknown_error".into()),
                description: b.error_description.unwrap_or_default(),
                error_codes: b.error_codes,
            };
            let code = match &e {
                AcquireError::Endpoint {
                    error, error_codes, ..
                } if !error_codes.is_empty() => {
                    let codes: Vec<String> =
                        error_codes.iter().map(|c| format!("AADSTS{c}")).collect();
                    format!("{error} {}", codes.join(","))
                }
                AcquireError::Endpoint { error, .. } => error.clone(),
                AcquireError::Transport { .. } => String::new(),
            };
            Err(fail(StageError::coded(
                FailureClass::TokenError,
                code,
                e.to_string(),
            )))
        }
        Err(_) => Err(fail(StageError::coded(
            FailureClass::HttpStatus,
            resp.status.to_string(),
            format!(
                "HTTP {}: {}",
                resp.status,
                String::from_utf8_lossy(&resp.body[..resp.body.len().min(200)])
            ),
        ))),
    }
}
