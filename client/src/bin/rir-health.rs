//! `rir-health`: ask a gRPC server's standard health service
//! (`grpc.health.v1.Health/Check`) whether it serves, and say so in the exit
//! status: the container image's HEALTHCHECK, and a probe for any host
//! without Kubernetes' built-in gRPC probes.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use rir_client::connect::{ClientAuthArgs, ConnectOptions, connect, error_chain};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[derive(Parser)]
#[command(
    name = "rir-health",
    version,
    about = "Check a gRPC server's health (grpc.health.v1): exit 0 when it is SERVING.",
    long_about = "Check a gRPC server's health with the standard grpc.health.v1.Health/Check call \
        and say so in the exit status: 0 SERVING; 1 bad arguments; 2 no connection; 3 the call \
        failed; 4 NOT_SERVING or unknown to the server. The codes are grpc_health_probe's, so \
        scripts written for it keep working.\n\n\
        The empty service (the default) is the server as a whole: rir-serve answers SERVING while \
        it runs (liveness). `--service inference.GRPCInferenceService` turns NOT_SERVING as soon \
        as rir-serve starts draining on SIGTERM (readiness).\n\n\
        Examples:\n  rir-health\n  rir-health -u 10.0.0.7:8001 --service inference.GRPCInferenceService"
)]
struct Cli {
    /// Server address: host:port, http://host:port or https://host:port.
    #[arg(short = 'u', long, default_value = "127.0.0.1:8001")]
    url: String,
    /// Service to ask about ("" = the whole server).
    #[arg(long, default_value = "")]
    service: String,
    /// Seconds to wait for the connection and for the answer, each.
    #[arg(long, default_value_t = 3.0)]
    timeout: f64,
    #[command(flatten)]
    auth: ClientAuthArgs,
}

/// grpc_health_probe's exit statuses.
const NO_CONNECTION: u8 = 2;
const CALL_FAILED: u8 = 3;
const UNHEALTHY: u8 = 4;

/// Bad arguments: 1, as grpc_health_probe (clap's own would be 2, which
/// here means "no connection").
const BAD_ARGUMENTS: u8 = 1;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(BAD_ARGUMENTS)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    rir_process::main("warn", || rir_process::block_on(check(cli))?)
}

async fn check(cli: Cli) -> Result<ExitCode> {
    let timeout = Duration::try_from_secs_f64(cli.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or_else(|| anyhow::anyhow!("--timeout must be a positive number of seconds"))?;
    let chans = match connect(&cli.auth.apply(ConnectOptions {
        url: cli.url.clone(),
        connect_timeout: timeout,
        ..Default::default()
    }))
    .await
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("unhealthy: {e}");
            return Ok(ExitCode::from(NO_CONNECTION));
        }
    };
    let Some(chan) = chans.into_iter().next() else {
        eprintln!("unhealthy: no connection to {}", cli.url);
        return Ok(ExitCode::from(NO_CONNECTION));
    };
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: cli.service.clone(),
    });
    request.set_timeout(timeout);
    let what = if cli.service.is_empty() {
        "the server".to_string()
    } else {
        format!("service {}", cli.service)
    };
    match HealthClient::new(chan).check(request).await {
        Ok(r) => {
            let status =
                ServingStatus::try_from(r.into_inner().status).unwrap_or(ServingStatus::Unknown);
            if status == ServingStatus::Serving {
                println!("{what}: SERVING");
                Ok(ExitCode::SUCCESS)
            } else {
                println!("{what}: {}", status.as_str_name());
                Ok(ExitCode::from(UNHEALTHY))
            }
        }
        Err(s) if s.code() == tonic::Code::NotFound => {
            eprintln!("unhealthy: the server does not know {what}");
            Ok(ExitCode::from(UNHEALTHY))
        }
        Err(s) => {
            eprintln!(
                "unhealthy: Health/Check failed with {}: {}",
                rir_client::error::code_name(s.code()),
                if s.message().is_empty() {
                    error_chain(&s)
                } else {
                    s.message().to_string()
                }
            );
            Ok(ExitCode::from(CALL_FAILED))
        }
    }
}
