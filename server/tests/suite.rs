//! rir-server's integration tests over real sockets and real processes.
//! One test binary for all of them: one compile of the shared code and one
//! link instead of one per file (the files keep their own modules). Four
//! stay binaries of their own, as they depend on what else runs in their
//! process: fuzz.rs (its counting allocator), images.rs and hostile.rs (the
//! process's peak RSS) and batcher.rs (which thread runs a batch, with its tests taking
//! turns among themselves only).

#[path = "config.rs"]
mod config;
#[path = "connections.rs"]
mod connections;
#[path = "grpc.rs"]
mod grpc;
#[path = "http.rs"]
mod http;
#[path = "live.rs"]
mod live;
#[path = "monitoring.rs"]
mod monitoring;
#[path = "processes.rs"]
mod processes;
#[path = "reload.rs"]
mod reload;
#[path = "traces.rs"]
mod traces;
