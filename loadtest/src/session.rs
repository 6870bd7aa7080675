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
    let outcome = Outcome {
        missed: missed(&plan.thresholds, judged(search.as_ref(), &reports)),
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

/// The reports the thresholds judge: a search's answer alone (none when
/// no level met its goal), else every report.
fn judged<'a>(search: Option<&SearchResult>, reports: &'a [Report]) -> &'a [Report] {
    match search {
        Some(SearchResult { knee: Some(i), .. }) => std::slice::from_ref(&reports[*i]),
        Some(SearchResult { knee: None, .. }) => &[],
        None => reports,
    }
}

/// This process's command line, each argument quoted when it needs to be.
fn command_line() -> String {
    std::env::args()
        .map(shell_word)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `arg` as a POSIX shell reads it back: bare when it holds only characters
/// no shell treats specially, else in single quotes.
fn shell_word(arg: String) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
    match plain {
        true => arg,
        false => format!("'{}'", arg.replace('\'', r"'\''")),
    }
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
    search_levels(goal, |level| async move {
        let load = Levels::at(step, level);
        Ok(run(workload.clone(), load, &plan.run).await?.report)
    })
    .await
}

/// The search's course over levels, whatever runs each: tries the levels
/// [`Search`] asks for, by `try_level`, until the answer is known; the
/// reports sorted by level, and the index of the answer among them.
async fn search_levels<F, R>(
    goal: Goal,
    mut try_level: F,
) -> Result<(Vec<Report>, Option<usize>), LoadError>
where
    F: FnMut(u64) -> R,
    R: std::future::Future<Output = Result<Report, LoadError>>,
{
    let mut state = Search::default();
    let mut tried: Vec<(u64, Report)> = Vec::new();
    while let Some(level) = state.next(goal.max_level) {
        let report = try_level(level).await?;
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
    forward(bench_beside(std::env::current_exe().ok().as_deref()), args)
}

/// The `rir-bench` beside the executable `me` when there is one, else the
/// bare name for PATH to find.
fn bench_beside(me: Option<&Path>) -> PathBuf {
    me.map(|me| me.with_file_name("rir-bench"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("rir-bench"))
}

/// Runs `bin` with `args`; its exit status, 1 when a signal ended it.
fn forward(bin: PathBuf, args: &[String]) -> Result<u8, LoadError> {
    let status = std::process::Command::new(&bin)
        .args(args)
        .status()
        .map_err(|source| LoadError::Bench { bin, source })?;
    Ok(status.code().map_or(1, |c| c.clamp(0, 255) as u8))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Load;

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

    /// `n` successes of `micros` each at concurrency `c` over one second,
    /// through JSON as `--json` writes it.
    fn report_of(c: usize, micros: u64, n: u64) -> Report {
        let mut record = crate::recorder::Recorder::new();
        record.latency.record_n(micros, n).unwrap();
        let r = Report::new(&Load::Closed { concurrency: c }, 1, 1.0, &record, None, 1);
        serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap()
    }

    fn goal(bound_ms: f64, max_level: u64) -> Goal {
        Goal {
            percentile: crate::thresholds::Percentile::P99,
            bound_ms,
            max_level,
        }
    }

    #[test]
    fn a_search_judges_its_answer_alone() {
        let reports = [report_of(1, 100, 1), report_of(2, 200, 1)];
        let at = |knee| SearchResult {
            goal: goal(1.0, 2),
            knee,
        };
        let loads = |r: &[Report]| r.iter().map(|r| r.load.label()).collect::<Vec<_>>();
        assert_eq!(
            loads(judged(None, &reports)),
            ["concurrency 1", "concurrency 2"]
        );
        assert_eq!(
            loads(judged(Some(&at(Some(1))), &reports)),
            ["concurrency 2"]
        );
        assert_eq!(
            loads(judged(Some(&at(Some(0))), &reports)),
            ["concurrency 1"]
        );
        assert!(judged(Some(&at(None)), &reports).is_empty());
    }

    #[tokio::test]
    async fn the_search_runs_the_levels_it_needs_and_sorts_them() {
        // A server whose p99 is 0.1 ms per level: with a bound of 1 ms the
        // highest level that meets it is 10. By hand, the course is
        // 1, 2, 4, 8, 16 (missed), then halving: 12 (missed), 10, 11 (missed).
        let mut asked = Vec::new();
        let (reports, knee) = search_levels(goal(1.0, 64), |level| {
            asked.push(level);
            async move { Ok(report_of(level as usize, level * 100, 10)) }
        })
        .await
        .unwrap();
        assert_eq!(asked, [1, 2, 4, 8, 16, 12, 10, 11]);
        let levels: Vec<_> = reports.iter().map(|r| r.concurrency).collect();
        let want = [1, 2, 4, 8, 10, 11, 12, 16].map(Some);
        assert_eq!(levels, want);
        assert_eq!(knee, Some(4), "index of level 10 among the sorted");
        // Not even level 1 meets a bound of 0.05 ms: one level, no answer.
        let (reports, knee) = search_levels(goal(0.05, 64), |level| async move {
            Ok(report_of(level as usize, level * 100, 10))
        })
        .await
        .unwrap();
        assert_eq!((reports.len(), knee), (1, None));
        // A level that cannot run ends the search with its error.
        let failed = search_levels(goal(1.0, 64), |level| async move {
            match level {
                1 => Ok(report_of(1, 100, 10)),
                _ => Err(LoadError::io(
                    Path::new("level 2"),
                    std::io::Error::other("down"),
                )),
            }
        })
        .await;
        assert!(matches!(failed, Err(LoadError::Io { .. })), "{failed:?}");
    }

    #[test]
    fn a_shell_reads_each_word_back_as_it_was() {
        assert_eq!(shell_word("--rate=1,2".into()), "--rate=1,2");
        assert_eq!(
            shell_word("http://h:1/a@b%c+d_e".into()),
            "http://h:1/a@b%c+d_e"
        );
        assert_eq!(shell_word("".into()), "''");
        assert_eq!(shell_word("a b".into()), "'a b'");
        assert_eq!(shell_word("it's".into()), r"'it'\''s'");
        // The reference: /bin/sh itself, on words that a shell would split,
        // expand or glob.
        let words = ["$HOME", "a b", "it's", "*", "x;y", "é", "", "a\"b", "~"];
        let line = words.map(|w| shell_word(w.to_string())).join(" ");
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("printf '%s\\n' {line}")])
            .output()
            .unwrap();
        let back: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
        assert_eq!(back, words);
    }

    fn plan_of(flags: &[&str]) -> TestPlan {
        crate::plan::tests::plan(flags).unwrap()
    }

    #[test]
    fn the_settings_name_what_the_flags_left_to_defaults() {
        let rows = settings(&plan_of(&[]));
        let row = |rows: &[(String, String)], key: &str| {
            rows.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
        };
        let defaults = [
            ("server", "127.0.0.1:8001"),
            ("protocol", "grpc"),
            ("API", "infer"),
            ("model", "rir-fashion-mnist"),
            ("batch", "1"),
            ("warm-up", "2 s"),
            ("measurement", "10 s per level"),
            ("server figures", "statistics"),
        ];
        for (key, want) in defaults {
            assert_eq!(row(&rows, key).as_deref(), Some(want), "{key}");
        }
        for absent in ["interval", "over-time split", "bad requests"] {
            assert_eq!(row(&rows, absent), None, "{absent}");
        }
        let rows = settings(&plan_of(&[
            "-u",
            "a:1,b:2",
            "-i",
            "http",
            "-m",
            "m",
            "--model-version",
            "3",
            "--api",
            "classify",
            "-b",
            "4",
            "-w",
            "0.5",
            "-n",
            "300",
            "--interval",
            "2",
            "--bad-fraction",
            "0.25",
            "--no-server-stats",
        ]));
        let given = [
            ("server", "a:1, b:2"),
            ("protocol", "http"),
            ("API", "classify"),
            ("model", "m version 3"),
            ("batch", "4"),
            ("warm-up", "0.5 s"),
            ("measurement", "300 requests per level"),
            ("server figures", "off"),
            ("interval", "2 s"),
            ("bad requests", "0.25 of all"),
        ];
        for (key, want) in given {
            assert_eq!(row(&rows, key).as_deref(), Some(want), "{key}");
        }
        // The HTML report's split shows when it is the report's own, and a
        // schedule is measured by its steps.
        let rows = settings(&plan_of(&["-d", "240", "--html", "r.html"]));
        assert_eq!(row(&rows, "over-time split").as_deref(), Some("2 s"));
        let rows = settings(&plan_of(&[
            "-r",
            "100,300",
            "--step-seconds",
            "3",
            "--html",
            "r.html",
        ]));
        assert_eq!(
            row(&rows, "measurement").as_deref(),
            Some("6 s, a row per 3 s")
        );
        assert_eq!(row(&rows, "over-time split"), None);
    }

    #[test]
    fn reports_are_written_where_asked_and_read_back_for_merging() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(name);
        let a = vec![report_of(1, 1_000, 30), report_of(4, 2_000, 40)];
        let b = vec![report_of(1, 3_000, 10), report_of(2, 5_000, 60)];
        for (name, reports) in [("a.json", &a), ("b.json", &b)] {
            let o = Outputs {
                json: Some(at(name)),
                csv: Some(at(&format!("{name}.csv"))),
                ..Default::default()
            };
            write_outputs(&o, reports).unwrap();
            let csv = std::fs::read_to_string(at(&format!("{name}.csv"))).unwrap();
            assert_eq!(csv.lines().count(), 3, "a header and a row per report");
            assert!(
                csv.lines().nth(1).unwrap().starts_with("concurrency 1,"),
                "{csv}"
            );
        }
        // Nothing asked, nothing written.
        write_outputs(&Outputs::default(), &a).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4);

        let bound = Thresholds {
            max_latency_ms: vec![(crate::thresholds::Percentile::P50, 4.0)],
            ..Default::default()
        };
        let out = Outputs {
            json: Some(at("merged.json")),
            html: Some(at("merged.html")),
            ..Default::default()
        };
        let outcome = merge_files(&[at("a.json"), at("b.json")], &bound, &out).unwrap();
        assert_eq!(outcome.description, "2 generators merged");
        // Level by level, by hand: 30 + 10 and 40 + 60 requests; the second
        // level's p50 is 5 ms (rank 50 of 100 falls among the 60 at 5 ms),
        // over the bound of 4; the first's is 1 ms.
        let counts: Vec<_> = outcome
            .reports
            .iter()
            .map(|r| (r.ok, r.concurrency))
            .collect();
        assert_eq!(counts, [(40, Some(2)), (100, Some(6))]);
        let missed: Vec<_> = outcome.missed.iter().map(|m| m.load.as_str()).collect();
        assert_eq!(missed, ["concurrency 6"]);
        assert!(outcome.bounded && outcome.search.is_none());
        assert_eq!(outcome.exit_code(), MISSED);
        let written: Vec<Report> =
            serde_json::from_str(&std::fs::read_to_string(at("merged.json")).unwrap()).unwrap();
        assert_eq!(written.iter().map(|r| r.ok).collect::<Vec<_>>(), [40, 100]);
        let html = std::fs::read_to_string(at("merged.html")).unwrap();
        assert!(
            html.contains("a.json") && html.contains("b.json"),
            "inputs named"
        );

        // What cannot be read is named, by kind.
        let missing = merge_files(&[at("a.json"), at("none.json")], &bound, &out);
        assert!(
            matches!(&missing, Err(LoadError::MergeInput(MergeInputError::Read { path, .. })) if path == &at("none.json")),
            "{missing:?}"
        );
        let not_reports = merge_files(&[at("a.json"), at("a.json.csv")], &bound, &out);
        assert!(
            matches!(&not_reports, Err(LoadError::MergeInput(MergeInputError::NotReports { path, .. })) if path == &at("a.json.csv")),
            "{not_reports:?}"
        );
        // A file that cannot be written is an error, not a silent skip.
        let into_a_folder = Outputs {
            csv: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        assert!(write_outputs(&into_a_folder, &a).is_err());
        let into_a_folder = Outputs {
            json: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        assert!(write_outputs(&into_a_folder, &a).is_err());
    }

    #[test]
    fn bench_is_the_one_beside_this_binary_else_the_one_on_path() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let me = dir.path().join("rir-loadtest");
        assert_eq!(bench_beside(Some(&me)), PathBuf::from("rir-bench"));
        assert_eq!(bench_beside(None), PathBuf::from("rir-bench"));
        let got = dir.path().join("got");
        let beside = dir.path().join("rir-bench");
        let script = format!(
            "#!/bin/sh\nprintf '%s|' \"$@\" > '{}'\nexit 7\n",
            got.display()
        );
        std::fs::write(&beside, script).unwrap();
        std::fs::set_permissions(&beside, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(bench_beside(Some(&me)), beside);
        let args = ["soak", "a dir", "-q"].map(String::from);
        assert_eq!(forward(beside, &args).unwrap(), 7);
        assert_eq!(std::fs::read_to_string(&got).unwrap(), "soak|a dir|-q|");
        // Ended by a signal: no exit code, so 1.
        let killed = ["-c", "kill -9 $$"].map(String::from);
        assert_eq!(forward("sh".into(), &killed).unwrap(), 1);
        let absent = forward(dir.path().join("nothing"), &[]);
        assert!(matches!(absent, Err(LoadError::Bench { .. })), "{absent:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plans_carried_out_against_a_real_server() {
        let server = rir_testserver::server::TestServer::start(None, &[]).await;
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(name).display().to_string();
        let (json, csv, html, plot) = (at("r.json"), at("r.csv"), at("r.html"), at("r.svg"));
        let base = ["-m", "gray", "-n", "30", "-w", "0", "-q"];
        let with = |flags: &[&str]| plan_of(&[&base[..], flags].concat());
        let url = server.url.as_str();
        let loads = |o: &Outcome| o.reports.iter().map(|r| r.load.label()).collect::<Vec<_>>();

        // Two levels, every output, a bound met, bad requests mixed in.
        let o = execute(&with(&[
            "-u",
            url,
            "-c",
            "1,2",
            "--bad-fraction",
            "0.3",
            "--max-p50-ms",
            "60000",
            "--json",
            &json,
            "--csv",
            &csv,
            "--html",
            &html,
            "--plot",
            &plot,
        ]))
        .await
        .unwrap();
        assert_eq!(loads(&o), ["concurrency 1", "concurrency 2"]);
        assert!(
            o.reports.iter().all(|r| r.ok > 0 && r.server.is_some()),
            "{o:?}"
        );
        let bad: u64 = o
            .reports
            .iter()
            .flat_map(|r| r.bad_requests.values())
            .map(|c| c.sent)
            .sum();
        assert!(bad > 0, "bad requests were mixed in");
        assert_eq!((o.mismatched, o.bounded, o.missed.len()), (0, true, 0));
        assert!(o.description.contains("gray"), "{}", o.description);
        assert_eq!(o.exit_code(), 0);
        let written: Vec<Report> =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let oks = |r: &[Report]| r.iter().map(|r| r.ok).collect::<Vec<_>>();
        assert_eq!(oks(&written), oks(&o.reports));
        assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 3);
        let page = std::fs::read_to_string(&html).unwrap();
        assert!(page.contains("concurrency 2"), "the levels");
        let me = std::env::args().next().unwrap();
        assert!(page.contains(&me), "the command line, from {me}");
        assert!(page.contains("0.3 of all"), "the settings");
        assert!(std::fs::read_to_string(&plot).unwrap().starts_with("<svg"));

        // The server's figures: off, or from the metrics page; REST too.
        let o = execute(&with(&["-u", url, "--no-server-stats"]))
            .await
            .unwrap();
        assert!(
            o.reports[0].ok > 0 && o.reports[0].server.is_none(),
            "{o:?}"
        );
        let metrics = server.metrics_url.as_str();
        let o = execute(&with(&["-u", url, "--metrics-url", metrics]))
            .await
            .unwrap();
        assert!(o.reports[0].server.is_some(), "{o:?}");
        let o = execute(&with(&["-i", "http", "-u", &server.http_url]))
            .await
            .unwrap();
        assert!(o.reports[0].ok > 0, "{o:?}");

        // A search that meets its goal up to its highest level: the bounds
        // judge its answer alone, the highest.
        let o = execute(&with(&[
            "-u",
            url,
            "--latency-threshold",
            "60000",
            "--search-max",
            "2",
            "--max-p50-ms",
            "0.0001",
        ]))
        .await
        .unwrap();
        assert_eq!(loads(&o), ["concurrency 1", "concurrency 2"]);
        assert_eq!(o.search.as_ref().map(|s| s.knee), Some(Some(1)));
        let missed: Vec<_> = o.missed.iter().map(|m| m.load.as_str()).collect();
        assert_eq!(missed, ["concurrency 2"]);
        // One nothing meets: one level, no answer, nothing judged, exit 3.
        let o = execute(&with(&[
            "-u",
            url,
            "--latency-threshold",
            "0.0001",
            "--max-p50-ms",
            "0.0001",
        ]))
        .await
        .unwrap();
        assert_eq!(loads(&o), ["concurrency 1"]);
        assert_eq!(o.search.as_ref().map(|s| s.knee), Some(None));
        assert!(o.missed.is_empty());
        assert_eq!(o.exit_code(), MISSED);
        server.shutdown().await.unwrap();
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
