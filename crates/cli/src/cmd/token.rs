//! `intraport token verify|decode|get`.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use intraport_token::client::{self, Grant, Target};
use intraport_token::{
    Algorithm, JwksLocation, MetadataSource, Policy, Provider, ProviderConfig, ProviderSettings,
    TokenVersion,
};
use serde::Deserialize;
use serde_json::json;

use crate::output::outln;
use crate::output::{Format, Outcome, print_json};

/// Token commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Verify one token exactly as the gateway would (signature, issuer, tenant,
    /// audience, lifetime). Exit 0 valid, 1 invalid, 2 usage or configuration error.
    #[command(after_help = VERIFY_EXAMPLES)]
    Verify(VerifyArgs),
    /// Show a token's header and claims WITHOUT verifying anything.
    Decode(DecodeArgs),
    /// Acquire a token from an authority's token endpoint (client credentials, or
    /// the password grant for test users).
    Get(GetArgs),
}

const VERIFY_EXAMPLES: &str = "\
Examples:
  # against Entra, through discovery (v1 and v2 tokens of one tenant)
  intraport token verify --tenant 72f988bf-86f1-41af-91ab-2d7cd011db47 \\
      --token-version v1 --token-version v2 --audience api://my-api \"$TOKEN\"
  # offline, a captured token against a saved key set, at the time it was used
  intraport token verify --issuer https://login.microsoftonline.com/TID/v2.0 \\
      --jwks keys.json --audience api://my-api --now 2026-11-01T10:00:00Z - < token.txt
  # as a provider of a configuration file
  intraport token verify --config intraport.toml --provider entra \"$TOKEN\"
  # exactly as a gateway route would: its provider, then its policy
  intraport token verify --config gateway.toml --route orders-api --source 10.1.2.3 \"$TOKEN\"";

/// Where the trusted issuer and its keys come from.
#[derive(Args, Debug)]
pub struct IssuerArgs {
    /// A configuration file with `[[provider]]` tables.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// With --config: the provider to use (default: the only one).
    #[arg(long, requires = "config", conflicts_with = "route")]
    provider: Option<String>,
    /// With --config (a gateway configuration): verify the token as this HTTP route
    /// would, its provider and then its policy (claims; the source address too with
    /// --source). Exit 1 when the token is invalid or the policy refuses it.
    #[arg(long, requires = "config", value_name = "NAME")]
    route: Option<String>,
    /// With --route: the client address to check against the route's source rules.
    #[arg(long, requires = "route", value_name = "IP")]
    source: Option<std::net::IpAddr>,
    /// Entra authority (sovereign clouds, AD FS, the dev issuer).
    #[arg(long, value_name = "URL")]
    authority: Option<String>,
    /// Tenant id or domain for discovery under --authority (default authority:
    /// the public cloud); a GUID is also the only tenant allowed.
    #[arg(long)]
    tenant: Option<String>,
    /// Token versions accepted with --tenant (repeatable; default both, v2 and v1).
    #[arg(long = "token-version", value_name = "v1|v2", value_parser = parse_version)]
    versions: Vec<TokenVersion>,
    /// A discovery document URL (any OpenID provider, AD FS).
    #[arg(long, value_name = "URL")]
    discovery: Option<String>,
    /// A fixed issuer; its keys come from --jwks, else from its discovery document.
    #[arg(long)]
    issuer: Option<String>,
    /// The key set: a JWKS file (offline) or URL, with --issuer.
    #[arg(long, value_name = "FILE|URL", requires = "issuer")]
    jwks: Option<String>,
    /// Accepted audience (repeatable).
    #[arg(long = "audience", value_name = "AUD")]
    audiences: Vec<String>,
    /// Accepted algorithm (repeatable; default RS256).
    #[arg(long = "alg", value_name = "ALG", value_parser = parse_alg)]
    algorithms: Vec<Algorithm>,
    /// Clock skew in seconds.
    #[arg(long, default_value_t = 300)]
    skew: u64,
    /// Extra CA certificate (PEM) trusted for metadata over HTTPS.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
}

/// `token verify` arguments.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    issuer: IssuerArgs,
    /// Verify as of this time (RFC 3339), e.g. for a captured token.
    #[arg(long, value_name = "RFC3339")]
    now: Option<String>,
    /// Accept a token with neither `scp` nor `roles` (refused by default, as
    /// Microsoft.Identity.Web does); with --route, the route's `allow_acl_tokens` decides.
    #[arg(long, conflicts_with = "route")]
    allow_acl_tokens: bool,
    /// Output format (default: table on a terminal, JSON otherwise).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// The token, or `-` (or nothing) to read it from standard input.
    token: Option<String>,
}

/// `token decode` arguments.
#[derive(Args, Debug)]
pub struct DecodeArgs {
    /// Output format (default: table on a terminal, JSON otherwise).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// The token, or `-` (or nothing) to read it from standard input.
    token: Option<String>,
}

/// `token get` arguments.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// The authority (e.g. https://login.microsoftonline.com).
    #[arg(long, value_name = "URL", default_value = intraport_token::settings::DEFAULT_AUTHORITY)]
    authority: String,
    /// The tenant (id or domain) under the authority.
    #[arg(long, required_unless_present = "token_endpoint")]
    tenant: Option<String>,
    /// A token endpoint URL, instead of authority + tenant.
    #[arg(long, value_name = "URL")]
    token_endpoint: Option<String>,
    /// The client (application) id.
    #[arg(long)]
    client_id: String,
    /// The client secret (prefer the environment variable).
    #[arg(long, env = "INTRAPORT_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    /// Scope (repeatable), e.g. api://my-api/.default; v2 endpoint.
    #[arg(long = "scope", conflicts_with = "resource")]
    scopes: Vec<String>,
    /// Resource (App ID URI): use the v1 endpoint.
    #[arg(long)]
    resource: Option<String>,
    /// Username for the password grant (test users only).
    #[arg(long, requires = "password")]
    username: Option<String>,
    /// Password for the password grant.
    #[arg(long, env = "INTRAPORT_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Extra CA certificate (PEM) to trust.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Print only the access token.
    #[arg(long)]
    raw: bool,
    /// Output format (default: table on a terminal, JSON otherwise).
    #[arg(long, value_enum)]
    format: Option<Format>,
}

fn parse_version(s: &str) -> Result<TokenVersion, String> {
    match s {
        "v1" | "1" | "1.0" => Ok(TokenVersion::V1),
        "v2" | "2" | "2.0" => Ok(TokenVersion::V2),
        _ => Err(format!("{s:?}: expected v1 or v2")),
    }
}

fn parse_alg(s: &str) -> Result<Algorithm, String> {
    Algorithm::from_name(s).ok_or_else(|| format!("{s:?}: expected RS256, PS256 or ES256"))
}

/// Run a token command.
pub fn run(cmd: Command) -> Result<Outcome> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cmd {
        Command::Verify(a) => rt.block_on(verify(a)),
        Command::Decode(a) => decode(a),
        Command::Get(a) => rt.block_on(get(a)),
    }
}

fn read_token(arg: Option<String>) -> Result<String> {
    let raw = match arg.as_deref() {
        Some("-") | None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the token from standard input")?;
            s
        }
        Some(t) => t.to_string(),
    };
    let t = raw.trim();
    let t = t
        .strip_prefix("Bearer ")
        .or_else(|| t.strip_prefix("bearer "))
        .unwrap_or(t)
        .trim();
    if t.is_empty() {
        bail!("no token given (pass it as an argument or on standard input)");
    }
    Ok(t.to_string())
}

#[derive(Deserialize)]
struct ProvidersFile {
    #[serde(default)]
    provider: Vec<ProviderSettings>,
}

/// The provider configuration from a config file's `[[provider]]` tables.
fn provider_from_file(path: &Path, name: Option<&str>) -> Result<ProviderConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    // Only the provider tables matter here; other sections of a gateway
    // configuration are ignored by this command (`config check` validates them).
    let file: ProvidersFile =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let settings = match name {
        Some(n) => file
            .provider
            .iter()
            .find(|p| p.name == n)
            .with_context(|| format!("{}: no provider named {n:?}", path.display()))?,
        None => match file.provider.as_slice() {
            [one] => one,
            [] => bail!("{}: no [[provider]] table", path.display()),
            _ => bail!(
                "{}: several providers; choose one with --provider",
                path.display()
            ),
        },
    };
    let base = path.parent().unwrap_or(Path::new("."));
    settings
        .to_config(base)
        .with_context(|| format!("{}: provider {:?}", path.display(), settings.name))
}

/// An HTTP route of a gateway configuration and its provider's configuration (the
/// verified-token cache off: one token, one check).
fn route_from_file(
    path: &Path,
    name: &str,
) -> Result<(
    std::sync::Arc<intraport_gateway::config::HttpRoute>,
    ProviderConfig,
)> {
    let config = intraport_gateway::load_config(path).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("{}", lines.join("\n"))
    })?;
    let route = config
        .listeners
        .iter()
        .find_map(|l| match &l.routes {
            intraport_gateway::config::Routes::Http { routes, .. } => {
                routes.iter().find(|r| r.name == name).cloned()
            }
            intraport_gateway::config::Routes::Tcp(_) => None,
        })
        .with_context(|| format!("{}: no HTTP route named {name:?}", path.display()))?;
    let mut cfg = route
        .provider
        .and_then(|i| config.providers.get(i))
        .map(|p| p.config.clone())
        .with_context(|| format!("{}: route {name:?} names no provider", path.display()))?;
    cfg.cache_capacity = 0;
    Ok((route, cfg))
}

fn provider_from_args(a: &IssuerArgs) -> Result<ProviderConfig> {
    if let Some(path) = &a.config {
        return provider_from_file(path, a.provider.as_deref());
    }
    if a.audiences.is_empty() {
        bail!("--audience is required (or --config)");
    }
    let sources = match (&a.tenant, &a.discovery, &a.issuer) {
        (Some(t), None, None) if a.jwks.is_none() => {
            let authority = a
                .authority
                .as_deref()
                .unwrap_or(intraport_token::settings::DEFAULT_AUTHORITY);
            let versions = if a.versions.is_empty() {
                vec![TokenVersion::V2, TokenVersion::V1]
            } else {
                a.versions.clone()
            };
            ProviderConfig::entra_sources(authority, t, &versions)
        }
        (_, Some(url), None) => vec![MetadataSource::Discovery {
            url: url.clone(),
            key_issuer_alias: None,
        }],
        (_, None, Some(issuer)) => match &a.jwks {
            Some(j) if j.starts_with("http://") || j.starts_with("https://") => {
                vec![MetadataSource::Static {
                    issuer: issuer.clone(),
                    jwks: JwksLocation::Url(j.clone()),
                }]
            }
            Some(j) => vec![MetadataSource::Static {
                issuer: issuer.clone(),
                jwks: JwksLocation::File(PathBuf::from(j)),
            }],
            None => vec![MetadataSource::Discovery {
                url: format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                ),
                key_issuer_alias: None,
            }],
        },
        _ => {
            bail!("name the issuer one way: --tenant (with --authority), --discovery, or --issuer")
        }
    };
    // --tenant alone is an Entra tenant (discovery under the authority); beside
    // --issuer or --discovery it only restricts the tenant.
    let entra = a.tenant.is_some() && a.issuer.is_none() && a.discovery.is_none();
    let allowed_tenants = match &a.tenant {
        Some(t) if intraport_token::jwt::is_guid(t) => vec![t.to_ascii_lowercase()],
        _ => Vec::new(),
    };
    let policy = Policy {
        audiences: a.audiences.clone(),
        allowed_tenants,
        clock_skew: std::time::Duration::from_secs(a.skew),
        algorithms: if a.algorithms.is_empty() {
            vec![Algorithm::RS256]
        } else {
            a.algorithms.clone()
        },
        require_tenant: entra,
        ..Policy::default()
    };
    let mut cfg = ProviderConfig::new("command-line", sources, policy);
    cfg.cache_capacity = 0;
    if let Some(ca) = &a.ca {
        cfg.extra_ca_pem =
            Some(std::fs::read(ca).with_context(|| format!("reading --ca {}", ca.display()))?);
    }
    Ok(cfg)
}

async fn verify(a: VerifyArgs) -> Result<Outcome> {
    let format = Format::resolve(a.format);
    let now = match &a.now {
        Some(t) => humantime::parse_rfc3339_weak(t)
            .with_context(|| format!("--now {t:?} is not an RFC 3339 time"))?
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    let route = match (&a.issuer.route, &a.issuer.config) {
        (Some(name), Some(path)) => Some(route_from_file(path, name)?),
        _ => None,
    };
    let cfg = match &route {
        Some((_, cfg)) => cfg.clone(),
        None => provider_from_args(&a.issuer)?,
    };
    let token = read_token(a.token)?;
    let provider = Provider::new(cfg)?;
    for e in provider.load().await {
        tracing::warn!("{e}");
    }
    let allow_acl = match &route {
        Some((r, _)) => r.allow_acl_tokens,
        None => a.allow_acl_tokens,
    };
    let result = provider.verify_detailed(&token, now).await.and_then(|v| {
        if allow_acl {
            Ok(v)
        } else {
            intraport_token::require_scope_or_role(&v.identity).map(|()| v)
        }
    });
    let (mut outcome, mut doc) = match &result {
        Ok(v) => (
            Outcome::Ok,
            json!({
                "valid": true,
                "issuer": v.identity.issuer,
                "kid": v.identity.kid,
                "identity": &*v.identity,
                "claims": v.claims,
            }),
        ),
        Err(e) => (
            Outcome::Failed,
            json!({"valid": false, "error": {"code": e.code, "message": e.message}}),
        ),
    };
    if let (Some((route, _)), Ok(v)) = (&route, &result) {
        // The gateway's order: source first, then the identity and the claims.
        let decision = match a.issuer.source {
            Some(ip) => route.policy.check_source(ip).map(|_| ()),
            None => Ok(()),
        }
        .and_then(|()| route.policy.authorize(Some(&v.identity), None).map(|_| ()));
        doc["route"] = json!(route.name);
        match decision {
            Ok(()) => doc["allowed"] = json!(true),
            Err(d) => {
                outcome = Outcome::Failed;
                doc["allowed"] = json!(false);
                doc["policy"] = json!({"code": d.reason.code(), "message": d.detail});
            }
        }
    }
    match format {
        Format::Json => print_json(&doc)?,
        Format::Table => print_verify_table(&doc),
    }
    Ok(outcome)
}

fn print_verify_table(doc: &serde_json::Value) {
    if doc["valid"] == true {
        outln!("VALID");
        let id = &doc["identity"];
        for (label, key) in [
            ("issuer", "issuer"),
            ("audience", "audience"),
            ("key", "kid"),
            ("version", "version"),
            ("tenant", "tenant_id"),
            ("object id", "object_id"),
            ("app id", "app_id"),
            ("kind", "kind"),
            ("username", "username"),
        ] {
            if let Some(v) = id[key].as_str() {
                outln!("  {label:<10} {v}");
            }
        }
        for (label, key) in [
            ("roles", "roles"),
            ("scopes", "scopes"),
            ("groups", "groups"),
        ] {
            if let Some(list) = id[key].as_array().filter(|l| !l.is_empty()) {
                let items: Vec<&str> = list.iter().filter_map(|v| v.as_str()).collect();
                outln!("  {label:<10} {}", items.join(", "));
            }
        }
        if id["groups_overage"] == true {
            outln!("  groups     (overage: the token does not list every group)");
        }
        if let Some(exp) = id["expires_at"].as_u64() {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(exp);
            outln!(
                "  {:<10} {}",
                "expires",
                humantime::format_rfc3339_seconds(t)
            );
        }
        if let Some(route) = doc["route"].as_str() {
            if doc["allowed"] == true {
                outln!("ALLOWED by route {route}");
            } else {
                outln!(
                    "REFUSED by route {route}  {}: {}",
                    doc["policy"]["code"].as_str().unwrap_or("?"),
                    doc["policy"]["message"].as_str().unwrap_or("?")
                );
            }
        }
    } else {
        outln!(
            "INVALID  {}: {}",
            doc["error"]["code"].as_str().unwrap_or("?"),
            doc["error"]["message"].as_str().unwrap_or("?")
        );
    }
}

fn decode(a: DecodeArgs) -> Result<Outcome> {
    use base64::Engine as _;
    let token = read_token(a.token)?;
    let part = |i: usize, name: &str| -> Result<serde_json::Value> {
        let p = token
            .split('.')
            .nth(i)
            .with_context(|| format!("the token has no {name} part"))?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p.trim_end_matches('='))
            .with_context(|| format!("the {name} is not base64url"))?;
        serde_json::from_slice(&bytes).with_context(|| format!("the {name} is not JSON"))
    };
    let header = part(0, "header")?;
    let claims = part(1, "payload")?;
    eprintln!("intraport: UNVERIFIED: decoded only; nothing here is trusted (use `token verify`)");
    let doc = json!({"verified": false, "header": header, "claims": claims});
    match Format::resolve(a.format) {
        Format::Json => print_json(&doc)?,
        Format::Table => {
            outln!("UNVERIFIED token (signature NOT checked)");
            outln!("header:");
            outln!("{}", serde_json::to_string_pretty(&header)?);
            outln!("claims:");
            outln!("{}", serde_json::to_string_pretty(&claims)?);
        }
    }
    Ok(Outcome::Ok)
}

async fn get(a: GetArgs) -> Result<Outcome> {
    let endpoint = match (&a.token_endpoint, &a.tenant) {
        (Some(e), _) => e.clone(),
        (None, Some(t)) => {
            let authority = a.authority.trim_end_matches('/');
            if a.resource.is_some() {
                format!("{authority}/{t}/oauth2/token")
            } else {
                format!("{authority}/{t}/oauth2/v2.0/token")
            }
        }
        (None, None) => bail!("--tenant or --token-endpoint is required"),
    };
    let target = match (&a.resource, a.scopes.is_empty()) {
        (Some(r), _) => Target::Resource(r.clone()),
        (None, false) => Target::Scopes(a.scopes.clone()),
        (None, true) => bail!("--scope (v2) or --resource (v1) is required"),
    };
    let grant = match (&a.username, &a.password) {
        (Some(u), Some(p)) => Grant::Password {
            client_id: a.client_id.clone(),
            client_secret: a.client_secret.clone(),
            username: u.clone(),
            password: p.clone(),
        },
        _ => Grant::ClientCredentials {
            client_id: a.client_id.clone(),
            client_secret: a.client_secret.clone().context(
                "--client-secret (or INTRAPORT_CLIENT_SECRET) is required for client credentials",
            )?,
        },
    };
    let mut builder = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .user_agent(concat!("intraport/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = &a.ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading --ca {}", ca.display()))?;
        for c in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("--ca {}: not PEM certificates", ca.display()))?
        {
            builder = builder.add_root_certificate(c);
        }
    }
    let http = builder.build().context("building the HTTP client")?;
    match client::acquire(&http, &endpoint, &grant, &target).await {
        Ok(resp) => {
            if a.raw {
                outln!("{}", resp.access_token);
            } else {
                match Format::resolve(a.format) {
                    Format::Json => print_json(&resp)?,
                    Format::Table => {
                        outln!("access_token  {}", resp.access_token);
                        if let Some(e) = &resp.expires_in {
                            outln!("expires_in    {e}");
                        }
                    }
                }
            }
            Ok(Outcome::Ok)
        }
        Err(e @ client::AcquireError::Endpoint { .. }) => {
            eprintln!("intraport: {e}");
            if !a.raw && Format::resolve(a.format) == Format::Json {
                print_json(&json!({"error": e}))?;
            }
            Ok(Outcome::Failed)
        }
        Err(e) => Err(e.into()),
    }
}
