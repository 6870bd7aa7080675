//! `rir-train report`: finished runs read back (a sweep, or runs copied
//! from several machines, the same run counted once), ranked and compared
//! with intervals over seeds, and drawn. The tables are [`crate::summary`]'s.

use std::path::PathBuf;

use clap::Args;
use rir_arch::meta::EpochMetrics;

use crate::error::TrainError;
use crate::{plot, summary};

#[derive(Args, Debug, Clone, Default)]
pub struct ReportArgs {
    /// Run folders (each with last.safetensors), or folders holding runs
    /// (searched below), e.g. a sweep or runs copied back from several
    /// machines; the same run found twice counts once (the copy with most
    /// epochs).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Draw every run's loss and accuracy curves into this PNG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Draw final accuracy against each option that differs between the
    /// runs (one panel per option) into this PNG.
    #[arg(long)]
    pub axes_plot: Option<PathBuf>,
    /// Also write the ranked configurations as CSV here.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Title of the curves plot.
    #[arg(long, default_value = "test and training curves")]
    pub title: String,
}

/// What a report produced: its text, the notes about runs counted once,
/// and the files written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reported {
    /// The tables.
    pub text: String,
    /// One line per run found twice.
    pub notes: Vec<String>,
    /// `(what, where)` of each file written.
    pub written: Vec<(&'static str, PathBuf)>,
}

/// Reads, ranks and draws the runs `a` names.
pub fn report(a: &ReportArgs) -> Result<Reported, TrainError> {
    let runs = summary::find_runs(&a.runs)?
        .iter()
        .map(|f| summary::read_run(f))
        .collect::<Result<Vec<_>, _>>()?;
    let (runs, dropped) = summary::merge(runs);
    let notes = dropped
        .iter()
        .map(|(left, kept)| {
            format!(
                "note: {} is the same run as {} (variant, network, recipe, seed); counted once, from {}",
                left.display(),
                kept.display(),
                kept.display()
            )
        })
        .collect();
    let paired = summary::paired_table(&runs);
    let mut text = summary::table(&runs);
    if !paired.is_empty() {
        text += &format!("\n{paired}");
    }
    text += &format!("\n{}", summary::runs_list(&runs));
    let mut written = vec![];
    if let Some(path) = &a.csv {
        std::fs::write(path, summary::csv(&runs)).map_err(|e| TrainError::Io(path.clone(), e))?;
        written.push(("csv", path.clone()));
    }
    if let Some(path) = &a.plot {
        let labels: Vec<String> = runs
            .iter()
            .map(|r| format!("{} s{}", r.variant, r.seed))
            .collect();
        let series: Vec<(&str, &[EpochMetrics])> = labels
            .iter()
            .zip(&runs)
            .map(|(l, r)| (l.as_str(), r.history.as_slice()))
            .collect();
        plot::curves(path, &a.title, &series)?;
        written.push(("curves", path.clone()));
    }
    if let Some(path) = &a.axes_plot {
        let title = "final-epoch accuracy by option";
        plot::axes(path, title, &summary::axes(&runs))?;
        written.push(("axes", path.clone()));
    }
    Ok(Reported {
        text,
        notes,
        written,
    })
}
