//! rir-serve as a child process on free loopback ports: started, waited
//! for until ServerReady says yes, read for its memory, and stopped the
//! ways processes stop (SIGTERM, SIGKILL). The benchmarks measure such a
//! server; the tests that need a real process (signals, a crash under load)
//! use it too.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rir_proto::inference::ServerReadyRequest;
use rir_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;

/// Why a rir-serve child process could not be started, read or found.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The process could not be started, or did not get ready.
    #[error("{0}")]
    Start(String),
    /// A file, a port or the process could not give what was needed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl ProcessError {
    fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        ProcessError::Io {
            what: what.into(),
            source,
        }
    }
}

/// How long one readiness probe may take.
const PROBE_WITHIN: Duration = Duration::from_secs(2);

/// Lines of a failed server's log that its error carries.
const LOG_LINES: usize = 20;

/// How long a started server may take to report ready.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// A rir-serve child process on loopback ports.
pub struct ServerProcess {
    child: Child,
    /// Its standard error, read back when it fails to start.
    log: tempfile::NamedTempFile,
    /// `http://127.0.0.1:PORT` of its gRPC front end.
    pub url: String,
    /// Its Prometheus endpoint, `http://127.0.0.1:PORT/metrics`.
    pub metrics_url: String,
}

impl ServerProcess {
    /// Process id, for its memory figures.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory, MiB (Linux).
    pub fn rss_mib(&self) -> Result<f64, ProcessError> {
        rss_mib(self.pid())
    }

    /// Kills the server at once (SIGKILL: no drain, connections cut), as a
    /// crash or an OOM kill would, and reaps it.
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.child.kill()?;
        self.child.wait().map(drop)
    }

    /// Sends SIGTERM (a graceful stop, as Kubernetes does).
    pub fn terminate(&self) {
        // SAFETY: signalling our own child, not yet reaped, by its pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
    }

    /// How the server ended, if it has (reaping it); `None` while it runs.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the server to exit.
    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Only a child still running: a reaped one's pid may be reused.
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
            let _ = self.child.wait();
        }
    }
}

/// Resident memory of process `pid`, MiB (Linux).
pub fn rss_mib(pid: u32) -> Result<f64, ProcessError> {
    let kib = rir_process::resident_kib(&pid.to_string())
        .map_err(|e| ProcessError::io(format!("reading the memory of process {pid}"), e))?;
    Ok(kib as f64 / 1024.0)
}

fn free_port() -> Result<u16, ProcessError> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| ProcessError::io("finding a free port", e))?
        .port();
    Ok(port)
}

/// `rir-serve` beside this executable (as cargo builds them), unless given.
pub fn serve_binary(explicit: Option<&Path>) -> Result<PathBuf, ProcessError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let me =
        std::env::current_exe().map_err(|e| ProcessError::io("locating this executable", e))?;
    let p = me.with_file_name("rir-serve");
    if !p.exists() {
        return Err(ProcessError::Start(format!(
            "{} not found: build it (cargo build --bin rir-serve) or pass --serve-bin",
            p.display()
        )));
    }
    Ok(p)
}

/// Starts `bin` on `models` with `args` and waits until it is ready.
///
/// The ports are free when chosen, but another process (a load
/// generator's outgoing connections among them) can take one before the
/// server binds it; a start that fails for that is tried again on new
/// ports, up to [`PORT_TRIES`] times.
pub async fn spawn(
    bin: &Path,
    models: &Path,
    args: &[String],
) -> Result<ServerProcess, ProcessError> {
    let mut tries = 1;
    loop {
        match spawn_on(bin, models, free_port()?, args).await {
            Err(ProcessError::Start(why)) if why.contains(PORT_TAKEN) && tries < PORT_TRIES => {
                tracing::warn!("a port was taken before rir-serve bound it; trying new ports");
                tries += 1;
            }
            started => return started,
        }
    }
}

/// Starts of [`spawn`] on new ports when a chosen one was taken meanwhile.
const PORT_TRIES: usize = 3;

/// What the operating system says of a port already bound (EADDRINUSE).
const PORT_TAKEN: &str = "Address already in use";

/// The same on gRPC port `grpc` (to restart a server where it was).
pub async fn spawn_on(
    bin: &Path,
    models: &Path,
    grpc: u16,
    args: &[String],
) -> Result<ServerProcess, ProcessError> {
    let metrics = free_port()?;
    let log = tempfile::NamedTempFile::new()
        .map_err(|e| ProcessError::io("creating the server's log file", e))?;
    let stderr = log
        .reopen()
        .map_err(|e| ProcessError::io("opening the server's log file", e))?;
    let child = Command::new(bin)
        .arg("--models")
        .arg(models)
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
        .args(match args.iter().any(|a| a == "--http-addr") {
            true => &[][..],
            false => &["--http-addr", "off"][..],
        })
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| ProcessError::io(format!("starting {}", bin.display()), e))?;
    let mut s = ServerProcess {
        child,
        log,
        url: format!("http://127.0.0.1:{grpc}"),
        metrics_url: format!("http://127.0.0.1:{metrics}/metrics"),
    };
    s.until_ready(bin).await?;
    Ok(s)
}

impl ServerProcess {
    /// Whether the server answers ServerReady with true.
    async fn ready(&self) -> bool {
        let Ok(mut c) = GrpcInferenceServiceClient::connect(self.url.clone()).await else {
            return false;
        };
        c.server_ready(ServerReadyRequest {})
            .await
            .is_ok_and(|r| r.get_ref().ready)
    }

    /// Waits until ServerReady answers true, the process exits or
    /// [`READY_WITHIN`] has passed.
    async fn until_ready(&mut self, bin: &Path) -> Result<(), ProcessError> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(LOG_LINES).collect();
                return Err(ProcessError::Start(format!(
                    "{} exited ({status}) before it was ready; the end of its log:\n{}",
                    bin.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )));
            }
            // Each probe has a deadline: whatever else holds the port may
            // accept the connection and never answer.
            if tokio::time::timeout(PROBE_WITHIN, self.ready())
                .await
                .unwrap_or(false)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ProcessError::Start(format!(
                    "{} did not become ready within {} s",
                    bin.display(),
                    READY_WITHIN.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
