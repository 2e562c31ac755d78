//! Results in an embedded SQLite database: one row per run, one per stage, and for
//! replication probes one for the marker and one per replica (lag, `contextCSN`,
//! failure), kept for the configured retention.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, params};

use crate::probe::RunResult;
use crate::replication::{ReplicaResult, ReplicationResult};
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
CREATE TABLE IF NOT EXISTS replication (
    run_id INTEGER PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
    marker TEXT NOT NULL,
    provider_csn TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS replicas (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    replica TEXT NOT NULL,
    caught_up INTEGER NOT NULL,
    lag_ms REAL NOT NULL,
    context_csn TEXT NOT NULL,
    csn_in_sync INTEGER,
    csn_behind_ms REAL,
    failure_class TEXT,
    failure_code TEXT,
    failure_detail TEXT
);
CREATE INDEX IF NOT EXISTS replicas_run ON replicas(run_id);
";

/// CSN lists are stored as JSON arrays.
fn csn_text(values: &[String]) -> String {
    serde_json::to_string(values).unwrap_or_else(|_| "[]".into())
}

fn csn_list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

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
        let path = self.path.clone();
        let err = |source| StoreError {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
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
        .map_err(err)?;
        let id = tx.last_insert_rowid();
        for (seq, s) in r.stages.iter().enumerate() {
            tx.execute(
                "INSERT INTO stages (run_id, seq, stage, duration_ms, ok) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, seq as i64, s.stage, s.duration_ms, s.ok],
            )
            .map_err(err)?;
        }
        if let Some(rep) = &r.replication {
            tx.execute(
                "INSERT INTO replication (run_id, marker, provider_csn) VALUES (?1, ?2, ?3)",
                params![id, rep.marker, csn_text(&rep.provider_context_csn)],
            )
            .map_err(err)?;
            for (seq, x) in rep.replicas.iter().enumerate() {
                let e = x.error.as_ref();
                tx.execute(
                    "INSERT INTO replicas (run_id, seq, replica, caught_up, lag_ms, context_csn, csn_in_sync, csn_behind_ms, failure_class, failure_code, failure_detail)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    params![
                        id,
                        seq as i64,
                        x.replica,
                        x.caught_up,
                        x.lag_ms,
                        csn_text(&x.context_csn),
                        x.csn_in_sync,
                        x.csn_behind_ms,
                        e.map(|e| e.class.as_str()),
                        e.and_then(|e| e.code.clone()),
                        e.map(|e| e.detail.clone()),
                    ],
                )
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    fn replication_of(&self, run_id: i64) -> Result<Option<ReplicationResult>, StoreError> {
        let head = self
            .conn
            .prepare_cached("SELECT marker, provider_csn FROM replication WHERE run_id = ?1")
            .and_then(|mut st| {
                st.query_map([run_id], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })?
                .next()
                .transpose()
            })
            .map_err(|e| self.err(e))?;
        let Some((marker, provider_csn)) = head else {
            return Ok(None);
        };
        let replicas = self
            .conn
            .prepare_cached(
                "SELECT replica, caught_up, lag_ms, context_csn, csn_in_sync, csn_behind_ms, failure_class, failure_code, failure_detail
                 FROM replicas WHERE run_id = ?1 ORDER BY seq",
            )
            .and_then(|mut st| {
                st.query_map([run_id], |r| {
                    let class: Option<String> = r.get(6)?;
                    Ok(ReplicaResult {
                        replica: r.get(0)?,
                        caught_up: r.get(1)?,
                        lag_ms: r.get(2)?,
                        context_csn: csn_list(&r.get::<_, String>(3)?),
                        csn_in_sync: r.get(4)?,
                        csn_behind_ms: r.get(5)?,
                        error: match class {
                            Some(class) => Some(StageError {
                                class: parse_class(&class),
                                code: r.get(7)?,
                                detail: r.get::<_, Option<String>>(8)?.unwrap_or_default(),
                            }),
                            None => None,
                        },
                    })
                })?
                .collect::<Result<Vec<_>, _>>()
            })
            .map_err(|e| self.err(e))?;
        Ok(Some(ReplicationResult {
            marker,
            provider_context_csn: csn_list(&provider_csn),
            replicas,
        }))
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
            let replication = self.replication_of(id)?;
            out.push(RunResult {
                probe,
                started_ms,
                duration_ms,
                ok,
                stages,
                failure,
                replication,
            });
        }
        Ok(out)
    }
}

fn parse_class(s: &str) -> FailureClass {
    // A class written by a newer version reads as a generic protocol failure.
    FailureClass::parse(s).unwrap_or(FailureClass::Http)
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
            replication: None,
        }
    }

    #[test]
    fn replication_results_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("r.db")).unwrap();
        let csn = "20240501020000.500000Z#000000#000#000000".to_string();
        let r = RunResult {
            probe: "repl".into(),
            started_ms: 5_000,
            duration_ms: 1_200.0,
            ok: false,
            stages: vec![],
            failure: None,
            replication: Some(ReplicationResult {
                marker: "intraport-probe repl x".into(),
                provider_context_csn: vec![csn.clone()],
                replicas: vec![
                    ReplicaResult {
                        replica: "c1".into(),
                        caught_up: true,
                        lag_ms: 12.5,
                        context_csn: vec![csn],
                        csn_in_sync: Some(true),
                        csn_behind_ms: Some(0.0),
                        error: None,
                    },
                    ReplicaResult {
                        replica: "c2".into(),
                        caught_up: false,
                        lag_ms: 1_001.0,
                        context_csn: vec![],
                        csn_in_sync: None,
                        csn_behind_ms: None,
                        error: Some(StageError::new(
                            FailureClass::ReplicationTimeout,
                            "c2 did not show the marker",
                        )),
                    },
                ],
            }),
        };
        s.insert(&r).unwrap();
        s.insert(&run(6_000, true)).unwrap();
        assert_eq!(s.runs().unwrap(), vec![r, run(6_000, true)]);
        s.prune(10_000_000, Duration::from_secs(1)).unwrap();
        let n: i64 = s
            .conn
            .query_row("SELECT count(*) FROM replicas", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0, "replica rows go with their run");
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
