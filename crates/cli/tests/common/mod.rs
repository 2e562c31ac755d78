//! Harness for end-to-end tests of the `intraport` binary: processes that are always
//! stopped, readiness by polling with a deadline, paths of the test components.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_intraport")
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python with `msal` (and the other test packages): INTRAPORT_TEST_PYTHON, else
/// the workspace's .venv made by the README's test command.
pub fn python() -> PathBuf {
    let p = std::env::var_os("INTRAPORT_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"));
    assert!(
        p.exists(),
        "no test Python at {}: run the README's test command (scripts/test.sh), which creates it",
        p.display()
    );
    p
}

/// Run `intraport ARGS` (with optional stdin) to completion.
pub fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

pub fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A child process killed and reaped on drop.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `intraport dev --format json`: the running issuer and its start-up summary.
pub struct Dev {
    pub guard: Guard,
    pub info: serde_json::Value,
}

impl Dev {
    pub fn start() -> Dev {
        let state =
            std::env::temp_dir().join(format!("intraport-dev-test-{}", uuid::Uuid::new_v4()));
        let mut child = Command::new(bin())
            .args(["dev", "--format", "json", "--state-dir"])
            .arg(&state)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut doc = String::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                doc.push_str(&line);
                doc.push('\n');
                if line == "}" {
                    let _ = tx.send(doc);
                    // keep draining so the child never blocks on a full pipe
                    doc = String::new();
                }
            }
        });
        let guard = Guard(child);
        let doc = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("intraport dev printed no summary within 20 s");
        Dev {
            guard,
            info: serde_json::from_str(&doc).unwrap(),
        }
    }

    pub fn s(&self, key: &str) -> String {
        self.info[key].as_str().unwrap_or_default().to_string()
    }

    /// The `token verify` arguments that trust this issuer.
    pub fn verify_args(&self) -> Vec<String> {
        vec![
            "token".into(),
            "verify".into(),
            "--authority".into(),
            self.s("authority"),
            "--tenant".into(),
            self.s("tenant_id"),
            "--ca".into(),
            self.s("ca_file"),
            "--audience".into(),
            self.info["audience"][0].as_str().unwrap().into(),
            "--audience".into(),
            self.info["audience"][1].as_str().unwrap().into(),
            "--format".into(),
            "json".into(),
        ]
    }
}
