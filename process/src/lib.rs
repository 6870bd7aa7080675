//! What every rir binary does the same way. The start and the end: logs
//! to stderr filtered by `RUST_LOG` (with a per-binary default), ONNX
//! Runtime's telemetry off, a quiet death on a closed pipe, and errors
//! printed with their causes and exit status 1. And what several of them
//! measure of a process: its open-files limit, its resident memory, and
//! its CPU time and cores ([`cpu`]).

use std::process::ExitCode;

pub mod cpu;

/// Runs a binary's body: sets up logging with `default_filter` (used when
/// `RUST_LOG` is unset), then runs `body` and turns an error into
/// `error: <cause chain>` on stderr and exit status 1.
pub fn main(default_filter: &str, body: impl FnOnce() -> anyhow::Result<ExitCode>) -> ExitCode {
    no_onnx_runtime_telemetry();
    // Die quietly on a closed pipe (`rir-train presets | head`) like other tools.
    // SAFETY: resetting a signal disposition at start-up, before threads exist.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    match body() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Keeps ONNX Runtime from collecting telemetry. Microsoft's builds (the
/// PyPI wheel among them) start a telemetry client when the library loads:
/// it writes a device ID and an event database under
/// `~/.cache/Microsoft/DeveloperTools/.onnxruntime/` and uploads model names,
/// metadata and errors. Disabling events on the environment afterwards
/// leaves those files being written (measured); `ORT_DISABLE_TELEMETRY=1`
/// before the library loads stops it all. A value the user set is kept.
fn no_onnx_runtime_telemetry() {
    if std::env::var_os("ORT_DISABLE_TELEMETRY").is_none() {
        // SAFETY: called first thing in main, before any thread is started,
        // so nothing reads the environment concurrently.
        unsafe { std::env::set_var("ORT_DISABLE_TELEMETRY", "1") };
    }
}

/// Raises this process's soft limit on open files to its hard limit (as Go
/// programs do at start), so that a server's own connection limit, not a
/// default soft limit of 1024, decides how many clients it holds. Returns
/// the limit now in force.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit write to and read from `lim`, a valid
    // rlimit owned here.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(lim.rlim_cur)
}

/// Resident memory of process `pid` (`"self"` for this one), KiB: the
/// `VmRSS` line of `/proc/<pid>/status` (Linux). One reader for the
/// server's metrics and the benchmarks' memory figures.
pub fn resident_kib(pid: &str) -> std::io::Result<u64> {
    status_kib(pid, "VmRSS:")
}

/// The peak resident memory of process `pid` since it started or since
/// [`reset_peak`], KiB: `VmHWM` (Linux). What the memory bounds of the
/// hostile-input tests and benchmarks are measured by.
pub fn peak_resident_kib(pid: &str) -> std::io::Result<u64> {
    status_kib(pid, "VmHWM:")
}

/// Sets process `pid`'s peak resident memory back to its resident memory
/// now (`clear_refs` 5, Linux; this process's own or a child's).
pub fn reset_peak(pid: &str) -> std::io::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
}

/// The `field` line of `/proc/<pid>/status`, KiB.
fn status_kib(pid: &str, field: &str) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("no {field} line in /proc/{pid}/status"),
            )
        })
}

/// Runs `fut` to completion on a multi-threaded tokio runtime: the async
/// binaries' (server, load tester, client) way into async code.
#[cfg(feature = "async")]
pub fn block_on<F: std::future::Future>(fut: F) -> anyhow::Result<F::Output> {
    use anyhow::Context;
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(fut))
}
