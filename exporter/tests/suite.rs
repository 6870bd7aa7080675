//! rir-export's integration tests: the command line and the exports checked against their sources.
//! One test binary for all of them: one compile of the shared code and one
//! link instead of one per file (the files keep their own modules).

#[path = "cli.rs"]
mod cli;
mod common;
#[path = "export.rs"]
mod export;
#[path = "modules.rs"]
mod modules;
#[path = "pipeline.rs"]
mod pipeline;
#[path = "quantize.rs"]
mod quantize;
