//! `rir-loadtest`: measure a KServe v2 / Triton server's latency and
//! throughput. The benchmarks live in `rir-bench`; `rir-loadtest bench`
//! runs it, so scripts written for the one binary keep working.

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use rir_loadtest::args::{Cli, Command, MergeArgs};
use rir_loadtest::plan::Outputs;
use rir_loadtest::report::table;
use rir_loadtest::session::{self, Outcome};

fn main() -> ExitCode {
    rir_process::main("info,ort=warn", || {
        let cli = Cli::parse();
        let outcome = match cli.bench {
            Some(Command::Bench { args }) => {
                return Ok(ExitCode::from(session::forward_to_bench(&args)?));
            }
            Some(Command::Merge(a)) => merge(&a)?,
            None => {
                let plan = cli.test.plan()?;
                rir_process::block_on(session::execute(&plan))??
            }
        };
        say(&outcome);
        Ok(ExitCode::from(outcome.exit_code()))
    })
}

/// `rir-loadtest merge`.
fn merge(a: &MergeArgs) -> Result<Outcome> {
    let outputs = Outputs {
        json: a.json.clone(),
        csv: a.csv.clone(),
        plot: None,
        html: a.html.clone(),
    };
    Ok(session::merge_files(
        &a.reports,
        &a.bounds.thresholds()?,
        &outputs,
    )?)
}

/// Prints the table, the search's answer and every bound missed.
fn say(o: &Outcome) {
    println!("{}\n", o.description);
    print!("{}", table(&o.reports));
    if o.mismatched > 0 {
        eprintln!(
            "error: {} bad requests were answered with another status than the one they are owed",
            o.mismatched
        );
        return;
    }
    if let Some(s) = &o.search {
        let (goal, p) = (&s.goal, s.goal.percentile.name());
        match s.knee {
            Some(i) => {
                let r = &o.reports[i];
                println!(
                    "\nhighest load with {p} at most {} ms: {} ({:.1} req/s, {p} {:.3} ms)",
                    goal.bound_ms,
                    r.load,
                    r.requests_per_s,
                    goal.percentile.of(&r.latency_ms),
                );
            }
            None => {
                let r = &o.reports[0];
                eprintln!(
                    "error: no load met {p} at most {} ms: {} had {p} {:.3} ms and {} failed",
                    goal.bound_ms,
                    r.load,
                    goal.percentile.of(&r.latency_ms),
                    r.failed(),
                );
                return;
            }
        }
    }
    for m in &o.missed {
        eprintln!("threshold missed: {m}");
    }
    if o.missed.is_empty() && o.bounded {
        println!("\nall thresholds met");
    }
}
