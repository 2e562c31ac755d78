//! Gateway policy for intraport: the pure decisions the data plane makes per request
//! or connection, with no I/O.
//!
//! - [`CidrSet`], [`SourceRule`]: source-address allow/deny lists (IPv4 and IPv6,
//!   most-specific match, thousands of networks), and [`client_ip`]: who the client
//!   is, honouring `Forwarded` / `X-Forwarded-For` only from trusted proxies.
//! - [`RoutePolicy`]: the identity a route requires ([`IdentityRequirement`]), what a
//!   token must carry ([`ClaimRequirements`]) and what a client certificate must show
//!   ([`CertRequirements`], [`CertIdentity`]); the outcome is an [`Allowed`] or a
//!   [`Denial`] whose [`DenyReason`] feeds the response, the audit event and the
//!   metric label alike.
//! - [`RouteTable`]: routes by host and path prefix (ignoring case unless a route is
//!   case-sensitive), with [`normalize_path`] keeping a request path from escaping
//!   the prefix policy checked, [`RouteMatch::path`] the path to forward, and
//!   [`check_authority`] for `Host`.
//! - [`forward`]: hop-by-hop removal, stripping of `X-Intraport-*` and of whatever an
//!   upstream could read as it or as a forwarding header, identity headers,
//!   `X-Forwarded-*`.
//!
//! It is not a token validator: an invalid token is refused by `intraport-token`'s
//! error codes before policy sees it. Nor does it read configuration files: the
//! gateway builds these types from its checked configuration.

pub mod cert;
pub mod cidr;
pub mod decision;
pub mod error;
pub mod forward;
pub mod policy;
pub mod route;
pub mod source;

pub use cert::CertIdentity;
pub use cidr::{CidrSet, parse_net};
pub use decision::{Allowed, AllowedBy, Denial, DenyReason};
pub use error::PolicyError;
pub use policy::{
    CertRequirements, ClaimRequirements, IdentityRequirement, RoutePolicy,
    deserialize_identity_kinds, parse_identity_kind,
};
pub use route::{
    HostError, PathError, RouteEntry, RouteMatch, RouteOverlap, RouteTable, check_authority,
    normalize_path, validate_route,
};
pub use source::{ClientAddr, SourceMatch, SourceRule, client_ip};
