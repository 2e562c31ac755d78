//! What the file-sink tests share: a sink's configuration, a numbered event, and the
//! numbers read back from a file's lines.

use std::path::Path;

use intraport_audit::{Action, Audit, AuditConfig, AuditHandle, Event, Outcome};

/// The `[audit]` table of `toml_text`.
pub fn config(toml_text: &str) -> AuditConfig {
    #[derive(serde::Deserialize)]
    struct Doc {
        audit: AuditConfig,
    }
    toml::from_str::<Doc>(toml_text).unwrap().audit
}

/// Starts one file sink at `path`, with `extra` lines of its table.
pub fn start(path: &Path, extra: &str) -> (Audit, AuditHandle) {
    let cfg = config(&format!(
        "[audit]\n[[audit.sink]]\ntype = \"file\"\npath = {path:?}\n{extra}"
    ));
    Audit::start(&cfg).unwrap()
}

/// An event numbered `i` (its `connection_id`).
pub fn event(i: u64) -> Event {
    let mut e = Event::new(Action::ConnectionAccepted, Outcome::Success);
    e.connection_id = Some(i);
    e.source = Some(format!("192.0.2.1:{}", 1000 + i % 60000).parse().unwrap());
    e.listener = Some("public".into());
    e
}

/// The numbers of the JSON lines in `text`; a line that is not a whole event fails.
pub fn ids(text: &str) -> Vec<u64> {
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a whole event ({e}): {l:.200}"));
            v["intraport"]["connection_id"].as_u64().unwrap()
        })
        .collect()
}
