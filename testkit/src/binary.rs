//! rir-serve as a user starts it: the binary, its flags and environment as
//! given, its log captured, and its addresses read from the lines it
//! announces them with ("gRPC on ...", "HTTP on ...", "metrics on ...").
//! For the claims about the binary itself (flags, environment variables,
//! signals, what it logs); [`crate::server`] is the faster way to the rest.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a start may take (ONNX Runtime loads and warms each model).
const READY_WITHIN: Duration = Duration::from_secs(60);

/// A running rir-serve and its log.
pub struct Launched {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
    /// `host:port` of the gRPC front end.
    pub grpc: String,
    /// `http://host:port` of the HTTP front end, when it is on.
    pub http: Option<String>,
    /// `http://host:port/metrics`.
    pub metrics: String,
}

/// The word after `marker` on the first line of `log` holding it.
fn announced(log: &str, marker: &str) -> Option<String> {
    log.lines().find_map(|l| {
        let rest = &l[l.find(marker)? + marker.len()..];
        rest.split_whitespace().next().map(String::from)
    })
}

/// Why a rir-serve process did not get ready.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// Its log file or the process could not be made.
    #[error("starting rir-serve: {0}")]
    Io(#[source] std::io::Error),
    /// It exited first; its log says why.
    #[error("rir-serve exited ({status}) before it was ready:\n{log}")]
    Exited { status: ExitStatus, log: String },
    /// It did not announce its address in time.
    #[error("rir-serve was not ready within {READY_WITHIN:?}:\n{log}")]
    NotReady { log: String },
}

impl Launched {
    /// Starts `bin` with `args` (loopback addresses unless `args` give
    /// their own) and `env`, and waits for it to announce its gRPC address;
    /// `Err` holds the log of a server that exited first.
    pub fn start(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Launched, LaunchError> {
        let dir = tempfile::tempdir().map_err(LaunchError::Io)?;
        let log = dir.path().join("rir-serve.log");
        let file = std::fs::File::create(&log).map_err(LaunchError::Io)?;
        let mut command = Command::new(bin);
        for (flag, value) in [
            ("--grpc-addr", "127.0.0.1:0"),
            ("--metrics-addr", "127.0.0.1:0"),
        ] {
            if !args.contains(&flag) {
                command.args([flag, value]);
            }
        }
        let child = command
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .map_err(LaunchError::Io)?;
        let mut launched = Launched {
            child,
            log,
            _dir: dir,
            grpc: String::new(),
            http: None,
            metrics: String::new(),
        };
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let text = launched.log();
            if let Some(grpc) = announced(&text, "gRPC on ") {
                launched.grpc = grpc;
                launched.http =
                    announced(&text, "HTTP on ").map(|u| u.trim_end_matches("/v2").to_string());
                launched.metrics = announced(&text, "metrics on ").unwrap_or_default();
                return Ok(launched);
            }
            if let Ok(Some(status)) = launched.child.try_wait() {
                return Err(LaunchError::Exited { status, log: text });
            }
            if Instant::now() > deadline {
                return Err(LaunchError::NotReady { log: text });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://` and the gRPC address.
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// Everything it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` and waits for the exit; the status and the whole log.
    pub fn stop(mut self, signal: i32) -> (ExitStatus, String) {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        let status = self.child.wait().expect("waiting for rir-serve");
        (status, self.log())
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
