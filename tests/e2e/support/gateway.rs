//! The real `gateway` binary, run as a child process on a free loopback port.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

pub struct Gateway {
    child: Child,
    /// The first listener's address.
    pub addr: SocketAddr,
    /// Every listener, as `http://ADDRESS` or `https://ADDRESS`.
    pub listeners: Vec<String>,
    /// The `listen` part of the config, kept when the rest is replaced.
    listen: String,
    /// The admin listener, when the config has `admin:`.
    pub admin: Option<SocketAddr>,
    /// The config file the gateway runs (and watches).
    pub config_path: PathBuf,
    stderr: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

/// What a test config starts with: a free port for the gateway.
const LISTEN: &str = "listen: 127.0.0.1:0\n";

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_gateway")
}

/// Writes `yaml` to a fresh temporary `gateway.yaml` and returns (dir, path).
pub fn write_config(yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml).expect("write config");
    (dir, path)
}

impl Gateway {
    /// Starts the gateway with `yaml` (without `listen`, which is added) and
    /// waits until it says where it listens.
    pub fn start(yaml: &str) -> Gateway {
        Self::try_start(yaml).unwrap_or_else(|stderr| panic!("gateway did not start:\n{stderr}"))
    }

    /// Like `start`, but returns what the gateway printed if it exits instead.
    pub fn try_start(yaml: &str) -> Result<Gateway, String> {
        Self::try_start_listening(LISTEN, 1, yaml)
    }

    /// Starts with `listen` (a `listen:` block of `listeners` listeners,
    /// ports 0) and the rest of the config in `yaml`.
    pub fn start_listening(listen: &str, listeners: usize, yaml: &str) -> Gateway {
        Self::try_start_listening(listen, listeners, yaml)
            .unwrap_or_else(|stderr| panic!("gateway did not start:\n{stderr}"))
    }

    pub fn try_start_listening(
        listen: &str,
        listeners: usize,
        yaml: &str,
    ) -> Result<Gateway, String> {
        Self::launch(listen, listeners, yaml, &[])
    }

    /// `start` with environment variables set for the gateway process.
    pub fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Gateway {
        Self::launch(LISTEN, 1, yaml, env)
            .unwrap_or_else(|stderr| panic!("gateway did not start:\n{stderr}"))
    }

    fn launch(
        listen: &str,
        listeners: usize,
        yaml: &str,
        env: &[(&str, &str)],
    ) -> Result<Gateway, String> {
        let (dir, path) = write_config(&format!("{listen}{yaml}"));
        let mut child = Command::new(binary())
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gateway");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut admin = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("admin listening on http://") {
                    admin = addr.parse::<SocketAddr>().ok();
                }
                if let Some(url) = line.strip_prefix("gateway listening on ") {
                    let _ = tx.send(Some((url.to_string(), admin)));
                }
            }
        });
        let mut urls = Vec::new();
        let mut admin = None;
        while urls.len() < listeners {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(Some((url, admin_addr))) => {
                    urls.push(url);
                    admin = admin_addr;
                }
                _ => break,
            }
        }
        let first = urls
            .first()
            .and_then(|url| url.split_once("://"))
            .and_then(|(_, addr)| addr.parse::<SocketAddr>().ok());
        match first {
            Some(addr) if urls.len() == listeners => Ok(Gateway {
                child,
                addr,
                listeners: urls,
                listen: listen.to_string(),
                admin,
                config_path: path,
                stderr,
                _dir: dir,
            }),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(50));
                Err(stderr.lock().map(|s| s.clone()).unwrap_or_default())
            }
        }
    }

    /// Replaces the config with `yaml` (plus the same `listen`) by writing
    /// a new file and renaming it over the old one, as deploy tools do.
    pub fn replace_config(&self, yaml: &str) {
        let temp = self.config_path.with_extension("yaml.tmp");
        std::fs::write(&temp, format!("{}{yaml}", self.listen)).expect("write config");
        std::fs::rename(&temp, &self.config_path).expect("rename config");
    }

    /// Rewrites the config file in place, as an editor saving does.
    pub fn edit_config(&self, yaml: &str) {
        std::fs::write(&self.config_path, format!("{}{yaml}", self.listen)).expect("write config");
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!(
            "http://{}{path}",
            self.admin.expect("the config has admin.listen")
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The address of the first `https://` listener.
    pub fn tls_addr(&self) -> SocketAddr {
        self.listeners
            .iter()
            .find_map(|url| url.strip_prefix("https://"))
            .and_then(|addr| addr.parse().ok())
            .expect("the config has a TLS listener")
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The log once it has a line containing every one of `needles` (the
    /// gateway's stderr is read by a thread of its own, so a line written
    /// before a response may arrive after it); the log as it is after 10s.
    pub async fn log_with(&self, needles: &[&str]) -> String {
        let started = Instant::now();
        loop {
            let log = self.stderr();
            let found = log.lines().any(|l| needles.iter().all(|n| l.contains(n)));
            if found || started.elapsed() > Duration::from_secs(10) {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Peak resident memory of the gateway process so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.proc_status_kib("VmHWM:")
    }

    /// Resident memory of the gateway process now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.proc_status_kib("VmRSS:")
    }

    fn proc_status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc status"))
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, signal).expect("send a signal to the gateway");
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "gateway did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // A test failing against this gateway shows whether the gateway was
        // still running and what it logged: the cause of a flake in CI.
        if std::thread::panicking() {
            let status = self.child.try_wait();
            eprintln!(
                "gateway {} at the failure; its stderr:\n{}",
                match status {
                    Ok(Some(exit)) => format!("had exited ({exit})"),
                    Ok(None) => "was running".to_string(),
                    Err(e) => format!("state unknown ({e})"),
                },
                self.stderr()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `gateway validate FILE`; returns (success, stdout + stderr).
pub fn validate(path: &Path) -> (bool, String) {
    validate_with_env(path, &[])
}

/// `validate` with these environment variables set (for `${NAME}` in the file).
pub fn validate_with_env(path: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let output = Command::new(binary())
        .arg("validate")
        .arg(path)
        .envs(env.iter().copied())
        .output()
        .expect("run gateway validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}
