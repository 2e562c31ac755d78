//! Real upstream servers started by the tests, each on 127.0.0.1 and a port the OS
//! chose, stopped when dropped: Apache Tomcat (Debian `tomcat10`, from a temporary
//! `CATALINA_BASE`, no system service), Express (npm, installed into tests/express by
//! scripts/test.sh) and Python's wsgiref.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server process, killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// What the server logged (Tomcat), for failure messages.
    pub log: Option<PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Reads the child's stdout until a line `listening PORT`.
fn await_listening(mut child: Child, what: &str, secs: u64) -> Server {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(port) = line.strip_prefix("listening ") {
                let _ = tx.send(port.trim().parse::<u16>().ok());
                return;
            }
        }
    });
    let port = match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(Some(p)) => p,
        _ => {
            let _ = child.kill();
            panic!("{what} did not start listening within {secs} s");
        }
    };
    Server {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        log: None,
    }
}

/// tests/express/server.mjs: `GET /admin/secret` answers the secret; Express's
/// routing ignores case, as it does by default.
pub fn express() -> Server {
    let dir = repo().join("tests/express");
    assert!(
        dir.join("node_modules/express").is_dir(),
        "express is not installed in tests/express: run scripts/test.sh, which installs it"
    );
    let child = Command::new("node")
        .arg(dir.join("server.mjs"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting node");
    await_listening(child, "Express", 30)
}

/// The Python of the tests: INTRAPORT_TEST_PYTHON, else the workspace's .venv (any
/// Python 3 has wsgiref).
fn python() -> PathBuf {
    std::env::var_os("INTRAPORT_TEST_PYTHON")
        .map_or_else(|| repo().join(".venv/bin/python"), PathBuf::from)
}

/// tests/wsgi/app.py on wsgiref's `simple_server`.
pub fn wsgiref() -> Server {
    let python = python();
    assert!(
        python.exists(),
        "no test Python at {}: run scripts/test.sh, which creates it",
        python.display()
    );
    let child = Command::new(python)
        .arg(repo().join("tests/wsgi/app.py"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting python");
    await_listening(child, "wsgiref", 30)
}

const TOMCAT_HOME: &str = "/usr/share/tomcat10";

/// Tomcat serving `files` (path relative to the web root, content) as static files
/// from its `DefaultServlet`, out of a fresh `CATALINA_BASE` under `dir`.
pub fn tomcat(dir: &Path, files: &[(&str, &str)]) -> Server {
    let home = Path::new(TOMCAT_HOME);
    assert!(
        home.join("bin/bootstrap.jar").is_file(),
        "Tomcat is not installed: run scripts/test.sh, which installs the Debian package tomcat10"
    );
    let base = dir.join("catalina");
    let root = base.join("webapps/ROOT");
    for d in ["conf", "logs", "temp", "work"] {
        std::fs::create_dir_all(base.join(d)).unwrap();
    }
    std::fs::create_dir_all(root.join("WEB-INF")).unwrap();
    // One connector on loopback, port 0: Tomcat logs the port it was given.
    std::fs::write(
        base.join("conf/server.xml"),
        r#"<Server port="-1" shutdown="SHUTDOWN">
  <Service name="Catalina">
    <Connector port="0" address="127.0.0.1" protocol="HTTP/1.1" />
    <Engine name="Catalina" defaultHost="localhost">
      <Host name="localhost" appBase="webapps" unpackWARs="false" autoDeploy="false" />
    </Engine>
  </Service>
</Server>
"#,
    )
    .unwrap();
    std::fs::write(
        root.join("WEB-INF/web.xml"),
        r#"<web-app xmlns="https://jakarta.ee/xml/ns/jakartaee" version="6.0">
  <servlet>
    <servlet-name>default</servlet-name>
    <servlet-class>org.apache.catalina.servlets.DefaultServlet</servlet-class>
  </servlet>
  <servlet-mapping>
    <servlet-name>default</servlet-name>
    <url-pattern>/</url-pattern>
  </servlet-mapping>
</web-app>
"#,
    )
    .unwrap();
    for (path, content) in files {
        let f = root.join(path);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, content).unwrap();
    }
    let log = base.join("logs/console.log");
    let out = std::fs::File::create(&log).unwrap();
    let classpath = format!("{TOMCAT_HOME}/bin/bootstrap.jar:{TOMCAT_HOME}/bin/tomcat-juli.jar");
    let mut child = Command::new("java")
        .arg("-cp")
        .arg(classpath)
        .arg(format!("-Dcatalina.home={TOMCAT_HOME}"))
        .arg(format!("-Dcatalina.base={}", base.display()))
        .arg(format!("-Djava.io.tmpdir={}", base.join("temp").display()))
        .args(["org.apache.catalina.startup.Bootstrap", "start"])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("starting java (Tomcat)");
    // "Starting ProtocolHandler ["http-nio-127.0.0.1-auto-1-PORT"]"
    let deadline = Instant::now() + Duration::from_secs(120);
    let port = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let port = text.lines().find_map(|l| {
            let rest = l.split("-auto-1-").nth(1)?;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u16>().ok()
        });
        if let Some(p) = port
            && text.contains("Server startup in")
        {
            break p;
        }
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            panic!("Tomcat did not start within 120 s:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Server {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        log: Some(log),
    }
}
