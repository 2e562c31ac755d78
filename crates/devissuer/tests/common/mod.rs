//! Shared helpers: start an issuer on loopback, an HTTPS client trusting
//! only its CA, JWT decoding and RS256 verification against the JWKS.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use intraport_devissuer::{DevIssuer, DevIssuerConfig};
use serde_json::Value;

pub struct Env {
    pub issuer: DevIssuer,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub async fn start(mut config: DevIssuerConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        config.state_dir = Some(dir.path().to_path_buf());
        let issuer = DevIssuer::start(config).await.unwrap();
        let mut builder = reqwest::Client::builder();
        if let Some(ca) = issuer.ca_pem_path() {
            let pem = std::fs::read(ca).unwrap();
            builder = builder.tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()]);
        }
        let http = builder.build().unwrap();
        Self { issuer, http, dir }
    }

    pub async fn demo() -> Self {
        Self::start(DevIssuerConfig::demo()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer.authority())
    }

    pub fn tid(&self) -> String {
        self.issuer.tenant_id().to_string()
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let resp = self.http.get(self.url(path)).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// Verifies `token`'s RS256 signature with the key its `kid` names in
    /// the JWKS at `jwks_path`; returns (header, claims).
    pub async fn verify(&self, token: &str, jwks_path: &str) -> (Value, Value) {
        let (status, jwks) = self.get_json(jwks_path).await;
        assert_eq!(status, 200);
        verify_with(token, &jwks).unwrap()
    }
}

pub fn b64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).unwrap()
}

pub fn decode(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "compact JWS");
    (
        serde_json::from_slice(&b64(parts[0])).unwrap(),
        serde_json::from_slice(&b64(parts[1])).unwrap(),
    )
}

/// Verifies against a JWKS; `Err` says why not.
pub fn verify_with(token: &str, jwks: &Value) -> Result<(Value, Value), String> {
    let (header, claims) = decode(token);
    let kid = header["kid"].as_str().ok_or("no kid")?;
    let key = jwks["keys"]
        .as_array()
        .ok_or("no keys")?
        .iter()
        .find(|k| k["kid"] == kid)
        .ok_or_else(|| format!("kid {kid} not published"))?;
    let n = b64(key["n"].as_str().unwrap());
    let e = b64(key["e"].as_str().unwrap());
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    RsaPublicKeyComponents { n: &n, e: &e }
        .verify(
            &RSA_PKCS1_2048_8192_SHA256,
            signing_input.as_bytes(),
            &b64(signature),
        )
        .map_err(|_| "bad signature".to_string())?;
    Ok((header, claims))
}
