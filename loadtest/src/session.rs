//! A load test carried out: the server reached, the workload prepared, each
//! load run (or the search for the highest that meets a bound), the reports
//! written, and the [`Outcome`] with its exit status. `rir-loadtest` is
//! clap plus [`execute`] (or [`merge_files`]) and printing the outcome.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rir_client::balance::Replicas;
use rir_client::connect::{Target, connect_replicas, resolve};
use rir_client::http::HttpClient;

use crate::LoadError;
use crate::args::Protocol;
use crate::load::{Load, Stop};
use crate::plan::{Levels, Outputs, ServerFigures, Step, TestPlan};
use crate::report::{Report, csv};
use crate::run::run;
use crate::search::{Goal, Search};
use crate::thresholds::{MISSED, Miss, Thresholds};
use crate::workload::Workload;
use rir_client::server_counters::Probe;

/// What a search found.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResult {
    /// What it was after.
    pub goal: Goal,
    /// The index, among the reports, of the highest level that met it;
    /// `None` when none did.
    pub knee: Option<usize>,
}

/// A finished load test: its reports and what they mean.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// What was sent, to whom.
    pub description: String,
    /// One report per load, lowest first for a search.
    pub reports: Vec<Report>,
    /// The search's answer, when one ran.
    pub search: Option<SearchResult>,
    /// Bad requests answered with another status than the one owed.
    pub mismatched: u64,
    /// The bounds missed (for a search: by its answer only).
    pub missed: Vec<Miss>,
    /// Whether any bound was set.
    pub bounded: bool,
}

impl Outcome {
    /// The exit status: 1 when bad requests got the wrong status, 3
    /// ([`MISSED`]) when a bound was missed or no level met the search's
    /// goal, else 0.
    pub fn exit_code(&self) -> u8 {
        match () {
            _ if self.mismatched > 0 => 1,
            _ if matches!(self.search, Some(SearchResult { knee: None, .. })) => MISSED,
            _ if !self.missed.is_empty() => MISSED,
            _ => 0,
        }
    }
}

/// Every bound `reports` missed.
pub fn missed(thresholds: &Thresholds, reports: &[Report]) -> Vec<Miss> {
    reports.iter().flat_map(|r| thresholds.missed(r)).collect()
}

/// Runs `plan` against its server.
pub async fn execute(plan: &TestPlan) -> Result<Outcome, LoadError> {
    let targets = resolve(&plan.urls).await?;
    let workload = Arc::new(workload(plan, &targets).await?);
    if targets.len() > 1 {
        let names = workload.replicas().join(", ");
        tracing::info!("{} replicas: {names}", targets.len());
    }
    let (reports, search) = match &plan.levels {
        Levels::Search { goal, step } => {
            let (reports, knee) = search(&workload, plan, *goal, *step).await?;
            let result = SearchResult { goal: *goal, knee };
            (reports, Some(result))
        }
        Levels::Fixed(loads) => {
            let mut reports: Vec<Report> = Vec::new();
            for load in loads {
                reports.push(run(workload.clone(), load.clone(), &plan.run).await?.report);
            }
            (reports, None)
        }
    };
    write_outputs(&plan.outputs, &reports)?;
    if let Some(p) = &plan.outputs.plot {
        crate::plot::sweep(p, &workload.description, &reports)?;
    }
    // The thresholds judge a search's answer, not the levels that missed.
    let judged = match &search {
        Some(SearchResult { knee: Some(i), .. }) => std::slice::from_ref(&reports[*i]),
        Some(SearchResult { knee: None, .. }) => &[][..],
        None => &reports[..],
    };
    let outcome = Outcome {
        missed: missed(&plan.thresholds, judged),
        bounded: !plan.thresholds.is_empty(),
        mismatched: reports.iter().map(Report::bad_mismatched).sum(),
        description: workload.description.clone(),
        search,
        reports,
    };
    if let Some(p) = &plan.outputs.html {
        write_html(p, &outcome, settings(plan))?;
    }
    Ok(outcome)
}

/// Writes `outcome` as the HTML report at `path`, with `settings`.
fn write_html(
    path: &Path,
    outcome: &Outcome,
    settings: Vec<(String, String)>,
) -> Result<(), LoadError> {
    crate::html::write(
        path,
        &crate::html::Page {
            title: outcome.description.clone(),
            command: command_line(),
            settings,
            reports: &outcome.reports,
            search: outcome.search.as_ref(),
            missed: &outcome.missed,
            bounded: outcome.bounded,
        },
    )
}

/// This process's command line, each argument quoted when it needs to be.
fn command_line() -> String {
    std::env::args()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
            match plain {
                true => a,
                false => format!("'{}'", a.replace('\'', r"'\''")),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The settings a report shows: what the command line left to defaults too.
fn settings(plan: &TestPlan) -> Vec<(String, String)> {
    let w = &plan.workload;
    let r = &plan.run;
    let secs = |d: std::time::Duration| format!("{} s", d.as_secs_f64());
    let schedule = match &plan.levels {
        Levels::Fixed(loads) => loads.iter().find_map(|l| match l {
            Load::Scheduled { schedule, .. } => Some(schedule),
            _ => None,
        }),
        Levels::Search { .. } => None,
    };
    let mut s = vec![
        ("server".to_string(), plan.urls.join(", ")),
        (
            "protocol".into(),
            format!("{:?}", plan.protocol).to_lowercase(),
        ),
        ("API".into(), format!("{:?}", w.api).to_lowercase()),
        (
            "model".into(),
            match w.version.is_empty() {
                true => w.model.clone(),
                false => format!("{} version {}", w.model, w.version),
            },
        ),
        ("batch".into(), w.batch.to_string()),
        ("input".into(), format!("{:?}", w.input)),
        ("warm-up".into(), secs(r.warmup)),
        (
            "measurement".into(),
            match (schedule, &r.stop) {
                (Some(s), _) => format!("{}, a row per {}", secs(s.length()), secs(s.row())),
                (None, Stop::Duration(d)) => format!("{} per level", secs(*d)),
                (None, Stop::Requests(n)) => format!("{n} requests per level"),
            },
        ),
        (
            "server figures".into(),
            format!("{:?}", plan.figures).to_lowercase(),
        ),
    ];
    if let Some(d) = r.interval {
        s.push(("interval".into(), secs(d)));
    }
    if let Some(d) = r.timeline.filter(|_| schedule.is_none()) {
        s.push(("over-time split".into(), secs(d)));
    }
    if plan.bad_fraction > 0.0 {
        s.push((
            "bad requests".into(),
            format!("{} of all", plan.bad_fraction),
        ));
    }
    s
}

/// The workload over every replica, by the protocol asked for, with the
/// server's figures and the bad requests mixed in.
async fn workload(plan: &TestPlan, targets: &[Target]) -> Result<Workload, LoadError> {
    let options = &plan.workload;
    let workload = match plan.protocol {
        Protocol::Grpc => {
            let replicas = connect_replicas(&plan.connect, targets).await?;
            Workload::prepare_replicas(replicas, options).await?
        }
        Protocol::Http => {
            let members = targets
                .iter()
                .map(|t| {
                    HttpClient::new(&t.url, plan.token.clone(), Duration::from_secs(5))
                        .map(|c| (t.url.clone(), c))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Workload::prepare_http_replicas(Replicas::new(members), options).await?
        }
    };
    let workload = match &plan.figures {
        ServerFigures::Off => workload.with_server_counters(None),
        ServerFigures::Metrics(urls) => workload.with_server_counters(Some(Probe::metrics(
            urls,
            &options.model,
            &options.version,
        )?)),
        ServerFigures::Statistics => workload,
    };
    Ok(match plan.bad_fraction {
        f if f > 0.0 => workload.with_bad_fraction(f, options.seed).await?,
        _ => workload,
    })
}

/// Runs the search for `goal`: the reports of the levels tried, lowest
/// load first, and the index of the answer among them.
async fn search(
    workload: &Arc<Workload>,
    plan: &TestPlan,
    goal: Goal,
    step: Option<Step>,
) -> Result<(Vec<Report>, Option<usize>), LoadError> {
    let mut state = Search::default();
    let mut tried: Vec<(u64, Report)> = Vec::new();
    while let Some(level) = state.next(goal.max_level) {
        let load = Levels::at(step, level);
        let report = run(workload.clone(), load, &plan.run).await?.report;
        let met = goal.met(&report);
        tracing::info!(
            "search: {}: {} {:.3} ms, {} failed: {}",
            report.load,
            goal.percentile.name(),
            goal.percentile.of(&report.latency_ms),
            report.failed(),
            if met { "met" } else { "missed" }
        );
        state.record(level, met);
        tried.push((level, report));
    }
    tried.sort_by_key(|(level, _)| *level);
    let knee = state
        .best()
        .and_then(|best| tried.iter().position(|(level, _)| *level == best));
    Ok((tried.into_iter().map(|(_, r)| r).collect(), knee))
}

/// Writes the reports where `--json` and `--csv` ask.
pub fn write_outputs(o: &Outputs, reports: &[Report]) -> Result<(), LoadError> {
    let write = |p: &Path, text: String| std::fs::write(p, text).map_err(|e| LoadError::io(p, e));
    if let Some(p) = &o.json {
        let text = serde_json::to_string_pretty(reports).map_err(|e| {
            LoadError::io(p, std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })?;
        write(p, text)?;
    }
    if let Some(p) = &o.csv {
        write(p, csv(reports))?;
    }
    Ok(())
}

/// Why the reports of a run could not be read back for merging.
#[derive(Debug, thiserror::Error)]
pub enum MergeInputError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not `--json` output.
    #[error("{path}: not the JSON reports of rir-loadtest --json ({source})")]
    NotReports {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Reads each run's `--json` reports and merges them level by level,
/// judged by `thresholds`, written to `outputs`.
pub fn merge_files(
    files: &[PathBuf],
    thresholds: &Thresholds,
    outputs: &Outputs,
) -> Result<Outcome, LoadError> {
    let runs = files
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).map_err(|source| MergeInputError::Read {
                path: p.clone(),
                source,
            })?;
            serde_json::from_str::<Vec<Report>>(&text).map_err(|source| {
                MergeInputError::NotReports {
                    path: p.clone(),
                    source,
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let merged = crate::merge::merge(&runs)?;
    write_outputs(outputs, &merged)?;
    let outcome = Outcome {
        description: format!("{} generators merged", runs.len()),
        missed: missed(thresholds, &merged),
        bounded: !thresholds.is_empty(),
        mismatched: 0,
        search: None,
        reports: merged,
    };
    if let Some(p) = &outputs.html {
        let inputs = files.iter().map(|f| f.display().to_string()).collect();
        write_html(p, &outcome, vec![("merged reports".into(), inputs)])?;
    }
    Ok(outcome)
}

/// Runs `rir-bench` beside this executable (else on PATH) with `args`;
/// its exit status.
pub fn forward_to_bench(args: &[String]) -> Result<u8, LoadError> {
    let beside = std::env::current_exe()
        .ok()
        .map(|me| me.with_file_name("rir-bench"))
        .filter(|p| p.exists());
    let bin = beside.unwrap_or_else(|| PathBuf::from("rir-bench"));
    let status = std::process::Command::new(&bin)
        .args(args)
        .status()
        .map_err(|source| LoadError::Bench { bin, source })?;
    Ok(status.code().unwrap_or(1).clamp(0, 255) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(mismatched: u64, knee: Option<Option<usize>>, missed: usize) -> Outcome {
        let miss = Miss {
            load: "concurrency 1".into(),
            bound: "--max-p50-ms 1".into(),
            measured: "p50 2 ms".into(),
        };
        Outcome {
            description: String::new(),
            reports: vec![],
            search: knee.map(|knee| SearchResult {
                goal: Goal {
                    percentile: crate::thresholds::Percentile::P99,
                    bound_ms: 1.0,
                    max_level: 8,
                },
                knee,
            }),
            mismatched,
            missed: vec![miss; missed],
            bounded: true,
        }
    }

    #[test]
    fn every_report_is_judged_by_every_bound() {
        use crate::load::Load;
        use crate::thresholds::Percentile;
        let report = |concurrency: usize, p50: f64| Report {
            load: Load::Closed { concurrency },
            requests: 100,
            ok: 100,
            latency_ms: crate::report::Latency {
                p50,
                ..Default::default()
            },
            ..Default::default()
        };
        let bound = Thresholds {
            max_latency_ms: vec![(Percentile::P50, 1.0)],
            ..Default::default()
        };
        // Two of three levels over 1 ms at p50: two misses, named by load.
        let misses = missed(&bound, &[report(1, 0.5), report(8, 1.5), report(64, 3.0)]);
        let loads: Vec<&str> = misses.iter().map(|m| m.load.as_str()).collect();
        assert_eq!(loads, ["concurrency 8", "concurrency 64"]);
        assert!(missed(&Thresholds::default(), &[report(64, 3.0)]).is_empty());
    }

    #[test]
    fn the_exit_status_policy() {
        assert_eq!(outcome(0, None, 0).exit_code(), 0);
        assert_eq!(outcome(0, Some(Some(2)), 0).exit_code(), 0);
        assert_eq!(outcome(0, None, 1).exit_code(), 3);
        assert_eq!(outcome(0, Some(None), 0).exit_code(), 3);
        // Bad requests answered wrongly outrank every bound.
        assert_eq!(outcome(1, Some(None), 2).exit_code(), 1);
    }
}
