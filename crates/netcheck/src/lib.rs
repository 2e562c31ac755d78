//! intraport's network toolkit: the port map of Microsoft Entra ID's hybrid components,
//! the firewall allow rules derived from it, and connectivity, TLS and interception
//! checks against real endpoints.
//!
//! - [`portmap`]: the map itself, as data in the repository with a source for every row;
//! - [`hosts`] and [`rules`]: which addresses play which role, the flows a firewall must
//!   allow ([`rules::required_flows`], also used by the rules audit) and their rendering
//!   as iptables, nftables or NSG rules;
//! - [`check`]: against [`target`]s, [`dns`] (hickory), [`tcp`], the real [`tls`]
//!   handshake (rustls), [`legacy`] TLS 1.0/1.1 acceptance, interception against
//!   [`expect`]ed chains, and classification of silent handshake failures (reset, close
//!   or stall right after the ClientHello, SNI-based filtering), every library error
//!   put in a plain sentence by [`explain`].
//!
//! It is not a scanner: it only touches the targets it is given, and it is not packet
//! capture analysis (that is a separate crate).

pub mod check;
pub mod dns;
pub mod error;
pub mod expect;
pub mod explain;
pub mod hosts;
pub mod legacy;
pub mod portmap;
pub mod render;
pub mod rules;
pub mod table;
pub mod target;
pub mod tcp;
pub mod tls;

pub use error::{Error, Location};
