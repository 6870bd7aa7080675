//! `rir-serve`: serve a model repository over gRPC and HTTP. The arguments,
//! the process's open-files limit and its signals; everything else is the
//! library's [`rir_server::run`], which the tests start the same way.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use rir_server::Args;

fn main() -> ExitCode {
    rir_process::main("info,ort=warn", || {
        let config = Args::parse().into_config()?;
        match rir_process::raise_open_files_limit() {
            Ok(n) => tracing::debug!("open files limit: {n}"),
            Err(e) => tracing::warn!("could not raise the open files limit: {e}"),
        }
        rir_process::block_on(async move {
            // The signals are registered first, before the server is ready:
            // a SIGTERM that arrives between the "gRPC on" line and the
            // first poll of the signal future (an orchestrator stopping a
            // pod that just got ready) must drain and exit 0, not kill the
            // process by the default action.
            let signal = shutdown_signal();
            rir_server::run(config, signal).await
        })??;
        Ok(ExitCode::SUCCESS)
    })
}

/// SIGTERM or SIGINT, registered when this is called rather than when the
/// future is first polled.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = wait(term) => {}
            _ = wait(int) => {}
        }
    }
}
