//! LDAP sessions timed by stage (DNS, connect, TLS for `ldaps`, bind), shared by the
//! LDAP bind + search probe and the replication probe, and the bind + search probe
//! itself.
//!
//! The TCP connection is opened by [`crate::timing::connect`] and handed to `ldap3`,
//! so that DNS and connect are timed apart from the LDAP exchange.

use std::sync::Arc;
use std::time::Duration;

use crate::config::LdapSpec;
use crate::timing::{Failure, FailureClass, Recorder, StageError, connect};

/// An open LDAP session and the task that drives its connection.
pub(crate) struct Session {
    pub(crate) handle: ldap3::Ldap,
    driver: tokio::task::JoinHandle<()>,
}

impl Session {
    /// Unbind (briefly; a server that does not answer is not waited for) and stop
    /// driving the connection.
    pub(crate) async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.handle.unbind()).await;
        self.driver.abort();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// A protocol or connection error of an LDAP operation.
pub(crate) fn protocol_error(e: ldap3::LdapError) -> StageError {
    StageError::new(FailureClass::Ldap, e.to_string())
}

/// Resolve and connect (stages `{prefix}_dns`, `{prefix}_connect`) and, for
/// `ldaps`, shake hands (stage `{prefix}_tls`). `tls` is required for `ldaps`.
pub(crate) async fn open(
    rec: &mut Recorder,
    prefix: &str,
    url: &url::Url,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Session, Failure> {
    let host = url.host_str().unwrap_or_default().to_string();
    let secure = url.scheme() == "ldaps";
    let port = url.port().unwrap_or(if secure { 636 } else { 389 });
    let tcp = connect(rec, prefix, &host, port).await?;
    let std = tcp.into_std().map_err(|e| Failure {
        stage: format!("{prefix}_connect"),
        error: StageError::new(FailureClass::Connect, e.to_string()),
    })?;
    let mut settings = ldap3::LdapConnSettings::new()
        .set_std_stream(ldap3::StdStream::Tcp(std))
        .set_conn_timeout(Duration::from_secs(30));
    if let Some(c) = tls {
        settings = settings.set_config(c);
    }
    let url = url.as_str().to_string();
    let opening = async {
        ldap3::LdapConnAsync::with_settings(settings, &url)
            .await
            .map_err(|e| {
                StageError::new(
                    if secure {
                        FailureClass::Tls
                    } else {
                        FailureClass::Ldap
                    },
                    e.to_string(),
                )
            })
    };
    // With ldaps the handshake happens while opening; with ldap nothing is sent yet.
    let (conn, handle) = if secure {
        rec.stage(&format!("{prefix}_tls"), opening).await?
    } else {
        opening.await.map_err(|error| Failure {
            stage: format!("{prefix}_connect"),
            error,
        })?
    };
    let driver = tokio::spawn(async move {
        let _ = conn.drive().await;
    });
    Ok(Session { handle, driver })
}

/// A simple bind (anonymous without a DN), as stage `stage`.
pub(crate) async fn bind(
    rec: &mut Recorder,
    stage: &str,
    h: &mut ldap3::Ldap,
    bind_dn: Option<&str>,
    password: &str,
) -> Result<(), Failure> {
    rec.stage(stage, simple_bind(h, bind_dn, password)).await
}

/// A simple bind, untimed.
pub(crate) async fn simple_bind(
    h: &mut ldap3::Ldap,
    bind_dn: Option<&str>,
    password: &str,
) -> Result<(), StageError> {
    let res = h
        .simple_bind(bind_dn.unwrap_or(""), password)
        .await
        .map_err(protocol_error)?;
    if res.rc != 0 {
        return Err(StageError::coded(
            FailureClass::LdapBind,
            res.rc.to_string(),
            format!("bind refused: result code {} {}", res.rc, res.text),
        ));
    }
    Ok(())
}

/// The values of `attribute` of the entry `dn` (a base-scope search); `None` when
/// the entry does not exist (result code 32, noSuchObject).
pub(crate) async fn read_attribute(
    h: &mut ldap3::Ldap,
    dn: &str,
    attribute: &str,
) -> Result<Option<Vec<String>>, StageError> {
    let ldap3::SearchResult(entries, res) = h
        .search(dn, ldap3::Scope::Base, "(objectClass=*)", vec![attribute])
        .await
        .map_err(protocol_error)?;
    match res.rc {
        0 => {}
        32 => return Ok(None),
        rc => {
            return Err(StageError::coded(
                FailureClass::LdapSearch,
                rc.to_string(),
                format!("reading {attribute} of {dn}: result code {rc} {}", res.text),
            ));
        }
    }
    let values = entries
        .into_iter()
        .next()
        .map(|e| {
            ldap3::SearchEntry::construct(e)
                .attrs
                .into_iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(attribute))
                .flat_map(|(_, v)| v)
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(values))
}

/// The LDAP bind + search probe: open, bind (`ldap_bind`), search (`ldap_search`).
pub(crate) async fn probe(
    rec: &mut Recorder,
    l: &LdapSpec,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<(), Failure> {
    let mut session = open(rec, "ldap", &l.url, tls).await?;
    let result = bind_and_search(rec, l, &mut session.handle).await;
    session.close().await;
    result
}

async fn bind_and_search(
    rec: &mut Recorder,
    l: &LdapSpec,
    h: &mut ldap3::Ldap,
) -> Result<(), Failure> {
    bind(rec, "ldap_bind", h, l.bind_dn.as_deref(), &l.password).await?;
    rec.stage("ldap_search", async {
        let attrs: Vec<&str> = l.attributes.iter().map(String::as_str).collect();
        let res = h
            .search(&l.base, ldap3::Scope::Subtree, &l.filter, attrs)
            .await
            .map_err(protocol_error)?;
        if res.1.rc != 0 {
            return Err(StageError::coded(
                FailureClass::LdapSearch,
                res.1.rc.to_string(),
                format!("search failed: result code {} {}", res.1.rc, res.1.text),
            ));
        }
        if res.0.len() < l.min_entries {
            return Err(StageError::new(
                FailureClass::TooFewEntries,
                format!(
                    "{} entries under {} for {}, at least {} expected",
                    res.0.len(),
                    l.base,
                    l.filter,
                    l.min_entries
                ),
            ));
        }
        Ok(())
    })
    .await
}
