//! rir-train's integration tests: the command line, training, parameters, sweeps and the equivalence of the network's forms.
//! One test binary for all of them: one compile of the shared code and one
//! link instead of one per file (the files keep their own modules).

#[path = "cli.rs"]
mod cli;
mod common;
#[path = "equivalence.rs"]
mod equivalence;
#[path = "params.rs"]
mod params;
#[path = "sweep.rs"]
mod sweep;
#[path = "training.rs"]
mod training;
