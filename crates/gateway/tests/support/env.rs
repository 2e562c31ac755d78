//! A complete gateway for a test: certificates, a token minter, real upstreams, and
//! the gateway itself on 127.0.0.1 with every route the tests exercise.

use std::net::SocketAddr;
use std::sync::Arc;

use intraport_gateway::{Gateway, GatewayHandle};

use super::mint::{self, Minter};
use super::pki::Pki;
use super::upstream;

pub struct Env {
    pub pki: Pki,
    pub minter: Minter,
    pub gw: Arc<GatewayHandle>,
    pub web: SocketAddr,
    pub proxied: SocketAddr,
    pub mtls: SocketAddr,
    pub server_ca: String,
}

fn route(name: &str, prefix: &str, upstream: &str, extra: &str) -> String {
    format!(
        "\n[[route]]\nname = \"{name}\"\nlistener = \"web\"\npath_prefix = \"{prefix}\"\nupstream = \"{upstream}\"\n{extra}\n"
    )
}

const ANY: &str = "[route.source]\nallow = [\"127.0.0.0/8\", \"::1/128\"]\n";

/// The configuration text (relative paths resolve in the PKI directory).
pub fn config_text(minter: &Minter, h1: SocketAddr, h2: SocketAddr, closed: u16) -> String {
    let up = format!("http://{h1}");
    let tok = |req: &str| {
        format!("identity = \"token\"\nprovider = \"local\"\n{ANY}[route.require]\n{req}\n")
    };
    let none = format!("identity = \"none\"\n{ANY}");
    let mut text = format!(
        r#"
[server]
shutdown_grace_seconds = 5
watch_config = false

[admin]
listen = "127.0.0.1:0"

[[provider]]
name = "local"
issuer = "{iss}"
jwks = "{jwks}"
audiences = ["{aud}"]
allowed_tenants = ["{t1}", "{t2}"]

[[provider]]
name = "down"
issuer = "{iss}"
jwks = "http://127.0.0.1:{closed}/keys"
audiences = ["{aud}"]
fetch_timeout_seconds = 1

[[listener]]
name = "web"
listen = "127.0.0.1:0"
protocol = "https"
[listener.tls]
cert = "server.pem"
key = "server-key.pem"
client_ca = "client-ca.pem"
client_cert = "optional"

[[listener]]
name = "proxied"
listen = "127.0.0.1:0"
protocol = "http"
trusted_proxies = ["127.0.0.1/32"]

[[listener]]
name = "mtls"
listen = "127.0.0.1:0"
protocol = "https"
[listener.tls]
cert = "server.pem"
key = "server-key.pem"
client_ca = "client-ca.pem"
client_cert = "required"
min_version = "1.3"

[[route]]
name = "via-proxy"
listener = "proxied"
upstream = "{up}"
identity = "none"
[route.source]
allow = ["10.9.9.9/32"]

[[route]]
name = "mtls"
listener = "mtls"
upstream = "{up}"
identity = "client_cert"
[route.source]
allow = ["127.0.0.1"]
[route.require]
client_cert_subjects = ["CN=agent"]
"#,
        iss = mint::ISSUER,
        jwks = minter.jwks_path.display(),
        aud = mint::AUDIENCE,
        t1 = mint::TENANT,
        t2 = mint::OTHER_TENANT,
    );
    text += &route("open", "/open", &up, &none);
    text += &route("api", "/api", &up, &tok("roles_any = [\"Reader\"]"));
    text += &route(
        "h2",
        "/h2",
        &format!("https://{h2}"),
        &format!("upstream_ca = \"server-ca.pem\"\n{}", tok("")),
    );
    text += &route(
        "tenant",
        "/tenant",
        &up,
        &tok(&format!("tenants = [\"{}\"]", mint::TENANT)),
    );
    text += &route(
        "role",
        "/role",
        &up,
        &tok("roles_all = [\"Reader\", \"Writer\"]"),
    );
    text += &route("scope", "/scope", &up, &tok("scopes_any = [\"write\"]"));
    text += &route("group", "/group", &up, &tok("groups_any = [\"g1\"]"));
    text += &route(
        "app",
        "/app",
        &up,
        &tok(&format!("app_ids = [\"{}\"]", mint::APP)),
    );
    text += &route(
        "acl",
        "/acl",
        &up,
        &format!(
            "allow_acl_tokens = true\n{}",
            tok(&format!("app_ids = [\"{}\"]", mint::APP))
        ),
    );
    text += &route("version", "/version", &up, &tok("versions = [\"1.0\"]"));
    text += &route("kind", "/kind", &up, &tok("identity_types = [\"user\"]"));
    text += &route(
        "cert",
        "/cert",
        &up,
        &format!(
            "identity = \"client_cert\"\n{ANY}[route.require]\nclient_cert_subjects = [\"CN=agent\"]\n"
        ),
    );
    text += &route(
        "either",
        "/either",
        &up,
        &format!("identity = \"token_or_cert\"\nprovider = \"local\"\n{ANY}"),
    );
    text += &route(
        "srcdeny",
        "/srcdeny",
        &up,
        "identity = \"none\"\n[route.source]\nallow = [\"127.0.0.0/8\"]\ndeny = [\"127.0.0.1\"]\n",
    );
    text += &route(
        "srcnot",
        "/srcnot",
        &up,
        "identity = \"none\"\n[route.source]\nallow = [\"10.0.0.0/8\"]\n",
    );
    text += &route(
        "slow",
        "/slow",
        &up,
        &format!("response_timeout_ms = 500\n{none}"),
    );
    text += &route("stream", "/stream", &up, &none);
    text += &route("ws", "/ws", &up, &tok(""));
    text += &route(
        "down",
        "/down",
        &format!("http://127.0.0.1:{closed}"),
        &none,
    );
    text += &route(
        "jwksdown",
        "/jwksdown",
        &up,
        &format!("identity = \"token\"\nprovider = \"down\"\n{ANY}"),
    );
    text += &route(
        "strip",
        "/strip",
        &up,
        &format!("strip_authorization = true\n{}", tok("")),
    );
    text
}

impl Env {
    pub async fn start() -> Env {
        let pki = Pki::new();
        let minter = Minter::new(&pki.dir);
        let h1 = upstream::http1().await;
        let leaf = pki.server_ca.server();
        let h2 = upstream::h2_tls(&leaf.cert_pem, &leaf.key_pem).await;
        let text = config_text(&minter, h1, h2, upstream::closed_port());
        let config = super::parse_config(&text, &pki.dir);
        let gw = Gateway::start(config).await.unwrap();
        let web = gw.listener_addr("web").await.unwrap();
        let proxied = gw.listener_addr("proxied").await.unwrap();
        let mtls = gw.listener_addr("mtls").await.unwrap();
        let server_ca = pki.server_ca.pem.clone();
        Env {
            pki,
            minter,
            gw,
            web,
            proxied,
            mtls,
            server_ca,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.web.port())
    }

    /// A client trusting the gateway, without a client certificate.
    pub fn client(&self) -> reqwest::Client {
        super::http_client(super::client_tls(
            &self.server_ca,
            None,
            rustls::DEFAULT_VERSIONS,
        ))
    }

    /// A client presenting the named client certificate (`agent`, `other`, `rogue`).
    pub fn client_with_cert(&self, name: &str) -> reqwest::Client {
        let cert = std::fs::read_to_string(self.pki.path(&format!("{name}.pem"))).unwrap();
        let key = std::fs::read_to_string(self.pki.path(&format!("{name}-key.pem"))).unwrap();
        super::http_client(super::client_tls(
            &self.server_ca,
            Some((&cert, &key)),
            rustls::DEFAULT_VERSIONS,
        ))
    }
}
