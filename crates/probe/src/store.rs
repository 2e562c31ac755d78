//! Results in an embedded SQLite database: one row per run, one per stage, kept for
//! the configured retention.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, params};

use crate::probe::RunResult;
use crate::timing::{Failure, FailureClass, StageError, StageResult};

/// An error of the result database.
#[derive(Debug, thiserror::Error)]
#[error("result database {path}: {source}")]
pub struct StoreError {
    /// The database file.
    pub path: String,
    /// The SQLite error.
    #[source]
    pub source: rusqlite::Error,
}

/// The result database.
pub struct Store {
    conn: Connection,
    path: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    probe TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    duration_ms REAL NOT NULL,
    ok INTEGER NOT NULL,
    failed_stage TEXT,
    failure_class TEXT,
    failure_code TEXT,
    failure_detail TEXT
);
CREATE INDEX IF NOT EXISTS runs_started ON runs(started_ms);
CREATE TABLE IF NOT EXISTS stages (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    stage TEXT NOT NULL,
    duration_ms REAL NOT NULL,
    ok INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS stages_run ON stages(run_id);
";

impl Store {
    /// Open (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let p = path.display().to_string();
        let err = |source| StoreError {
            path: p.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Self { conn, path: p })
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError {
            path: self.path.clone(),
            source,
        }
    }

    /// Record one run.
    pub fn insert(&mut self, r: &RunResult) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(|e| StoreError {
            path: self.path.clone(),
            source: e,
        })?;
        let f = r.failure.as_ref();
        tx.execute(
            "INSERT INTO runs (probe, started_ms, duration_ms, ok, failed_stage, failure_class, failure_code, failure_detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                r.probe,
                r.started_ms,
                r.duration_ms,
                r.ok,
                f.map(|f| f.stage.clone()),
                f.map(|f| f.error.class.as_str()),
                f.and_then(|f| f.error.code.clone()),
                f.map(|f| f.error.detail.clone()),
            ],
        )
        .map_err(|e| StoreError {
            path: self.path.clone(),
            source: e,
        })?;
        let id = tx.last_insert_rowid();
        for (seq, s) in r.stages.iter().enumerate() {
            tx.execute(
                "INSERT INTO stages (run_id, seq, stage, duration_ms, ok) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, seq as i64, s.stage, s.duration_ms, s.ok],
            )
            .map_err(|e| StoreError {
                path: self.path.clone(),
                source: e,
            })?;
        }
        tx.commit().map_err(|e| StoreError {
            path: self.path.clone(),
            source: e,
        })
    }

    /// Delete runs that started before `now_ms - retention`; returns how many.
    pub fn prune(&mut self, now_ms: i64, retention: Duration) -> Result<usize, StoreError> {
        let cutoff =
            now_ms.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
        self.conn
            .execute("DELETE FROM runs WHERE started_ms < ?1", params![cutoff])
            .map_err(|e| self.err(e))
    }

    /// Every stored run, oldest first.
    pub fn runs(&self) -> Result<Vec<RunResult>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, probe, started_ms, duration_ms, ok, failed_stage, failure_class, failure_code, failure_detail
                 FROM runs ORDER BY started_ms, id",
            )
            .map_err(|e| self.err(e))?;
        let mut stage_stmt = self
            .conn
            .prepare("SELECT stage, duration_ms, ok FROM stages WHERE run_id = ?1 ORDER BY seq")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, f64>(3)?,
                    row.get::<_, bool>(4)?,
                    row.get::<_, Option<String>>(5)?,
                    row.get::<_, Option<String>>(6)?,
                    row.get::<_, Option<String>>(7)?,
                    row.get::<_, Option<String>>(8)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, probe, started_ms, duration_ms, ok, stage, class, code, detail) =
                row.map_err(|e| self.err(e))?;
            let stages = stage_stmt
                .query_map([id], |r| {
                    Ok(StageResult {
                        stage: r.get(0)?,
                        duration_ms: r.get(1)?,
                        ok: r.get(2)?,
                    })
                })
                .map_err(|e| self.err(e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| self.err(e))?;
            let failure = match (stage, class) {
                (Some(stage), Some(class)) => Some(Failure {
                    stage,
                    error: StageError {
                        class: parse_class(&class),
                        code,
                        detail: detail.unwrap_or_default(),
                    },
                }),
                _ => None,
            };
            out.push(RunResult {
                probe,
                started_ms,
                duration_ms,
                ok,
                stages,
                failure,
            });
        }
        Ok(out)
    }
}

fn parse_class(s: &str) -> FailureClass {
    use FailureClass::*;
    [
        Dns,
        Connect,
        Tls,
        Timeout,
        Http,
        HttpStatus,
        TokenError,
        BadResponse,
        Validation,
        LdapBind,
        LdapSearch,
        TooFewEntries,
        Ldap,
    ]
    .into_iter()
    .find(|c| c.as_str() == s)
    // A class written by a newer version reads as a generic protocol failure.
    .unwrap_or(Http)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn run(at: i64, ok: bool) -> RunResult {
        RunResult {
            probe: "p".into(),
            started_ms: at,
            duration_ms: 12.5,
            ok,
            stages: vec![StageResult {
                stage: "token_response".into(),
                duration_ms: 10.0,
                ok,
            }],
            failure: (!ok).then(|| Failure {
                stage: "token_response".into(),
                error: StageError::coded(FailureClass::TokenError, "invalid_client", "no"),
            }),
        }
    }

    #[test]
    fn round_trip_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("r.db")).unwrap();
        s.insert(&run(1_000, true)).unwrap();
        s.insert(&run(90_000_000, false)).unwrap();
        let all = s.runs().unwrap();
        assert_eq!(all, vec![run(1_000, true), run(90_000_000, false)]);
        let gone = s.prune(90_000_000, Duration::from_secs(3600)).unwrap();
        assert_eq!(gone, 1);
        assert_eq!(s.runs().unwrap(), vec![run(90_000_000, false)]);
        let n: i64 = s
            .conn
            .query_row("SELECT count(*) FROM stages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1, "stages of pruned runs are deleted with them");
    }
}
