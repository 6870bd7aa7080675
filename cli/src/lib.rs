//! The start and the end of every rir binary, done one way: logs to stderr
//! filtered by `RUST_LOG` (with a per-binary default), a quiet death on a
//! closed pipe, and errors printed with their causes and exit status 1.

use std::process::ExitCode;

#[cfg(feature = "plot")]
pub mod font;

/// Runs a binary's body: sets up logging with `default_filter` (used when
/// `RUST_LOG` is unset), then runs `body` and turns an error into
/// `error: <cause chain>` on stderr and exit status 1.
pub fn main(default_filter: &str, body: impl FnOnce() -> anyhow::Result<ExitCode>) -> ExitCode {
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
