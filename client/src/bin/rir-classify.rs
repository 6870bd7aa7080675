//! `rir-classify`: classify image files through a running server's
//! `Classify` call, or measure a served model's accuracy on a data set's
//! test split through ModelInfer.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use rir_client::accuracy::{Accuracy, against_recorded, evaluate};
use rir_client::balance::{Replicas, Tally, replica_table};
use rir_client::connect::{
    Chan, ClientAuthArgs, ConnectOptions, classify_client, connect_replicas, resolve,
};
use rir_data::Source;
use rir_proto::classify::ClassifyRequest;

#[derive(Parser)]
#[command(
    name = "rir-classify",
    version,
    about = "Classify images with a running rir-serve, or measure a served model's accuracy on a test split.",
    long_about = "Classify images with a running rir-serve (rir.v1.ImageClassifier/Classify: PNG or JPEG files \
        are sent as they are; the server decodes, converts and resizes them), or with --eval send a data \
        set's whole test split through ModelInfer and print the served model's accuracy.\n\n\
        Examples:\n  rir-classify samples/fashion-mnist/*.png\n  rir-classify --eval fashion-mnist"
)]
struct Cli {
    /// Image files (PNG or JPEG).
    #[arg(required_unless_present = "eval")]
    images: Vec<PathBuf>,
    /// Server address: host:port, http://host:port or https://host:port.
    /// Several (comma-separated or repeated) are replicas: requests go
    /// round-robin and one a replica does not answer is sent to the next.
    /// dns:///NAME:PORT stands for every address NAME resolves to.
    #[arg(
        short = 'u',
        long,
        default_value = "127.0.0.1:8001",
        value_delimiter = ','
    )]
    url: Vec<String>,
    /// Model (default for images: the server's default model; for --eval: rir-fashion-mnist).
    #[arg(short = 'm', long)]
    model: Option<String>,
    /// Labels per image.
    #[arg(short = 'k', long, default_value_t = 3)]
    top_k: u32,
    /// Measure accuracy on this data set's test split (fashion-mnist, cifar10, cifar100, cifar100-coarse).
    #[arg(long, conflicts_with = "images")]
    eval: Option<Source>,
    /// Folder of the data set's files (default: where `rir-train` looks).
    #[arg(long, requires = "eval")]
    data_dir: Option<PathBuf>,
    /// With --eval: the served ONNX file, whose metadata holds the trainer's
    /// evaluation of the exported checkpoint; the two figures are compared
    /// and a difference is an error.
    #[arg(long, requires = "eval")]
    model_file: Option<PathBuf>,
    /// With --eval: write every image's label, prediction and scores here
    /// as CSV (`image,label,predicted,score_0,...`), to compare two
    /// servings of a model image by image.
    #[arg(long, requires = "eval", value_name = "FILE")]
    outputs: Option<PathBuf>,
    /// Images per ModelInfer request with --eval.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    #[command(flatten)]
    auth: ClientAuthArgs,
}

fn main() -> ExitCode {
    rir_process::main("info,ort=warn", || {
        let cli = Cli::parse();
        rir_process::block_on(run(cli))?
    })
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let targets = resolve(&cli.url).await?;
    let replicas = connect_replicas(&cli.auth.apply(ConnectOptions::default()), &targets)
        .await?
        .map(|chans| {
            chans
                .into_iter()
                .next()
                .expect("connect opens at least one connection")
        });
    match cli.eval {
        Some(source) => eval(&cli, source, &replicas).await?,
        None => classify_files(&cli, &replicas).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `--eval`: the test split through ModelInfer, its served accuracy, and
/// with `--model-file` the check against the trainer's.
async fn eval(cli: &Cli, source: Source, replicas: &Replicas<Chan>) -> Result<()> {
    let dir = cli.data_dir.clone().unwrap_or_else(|| source.default_dir());
    let data = rir_data::load(source, &dir)
        .with_context(|| format!("loading {} from {}", source.name(), dir.display()))?;
    let i = data.info.input;
    let model = cli.model.as_deref().unwrap_or("rir-fashion-mnist");
    let bar = ProgressBar::new(data.test.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{} test split", source.name()));
    let t = Instant::now();
    let mut tally = Tally::default();
    let evaluation = evaluate(
        replicas,
        model,
        &data.test,
        [i.channels, i.height, i.width],
        cli.batch.max(1),
        &mut tally,
        |n| bar.set_position(n as u64),
    )
    .await?;
    bar.finish_and_clear();
    let acc = evaluation.accuracy;
    if let Some(path) = &cli.outputs {
        std::fs::write(path, evaluation.csv(&data.test.labels))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    print!(
        "{}",
        replica_table(&tally.by_replica(&replicas.addresses()))
    );
    println!(
        "{model} on the {} test split through the server: {:.2} % top-1 ({} of {} images, {:.1} s)",
        source.name(),
        100.0 * acc.fraction(),
        acc.correct,
        acc.total,
        t.elapsed().as_secs_f64()
    );
    match &cli.model_file {
        Some(f) => check_recorded(f, &acc),
        None => Ok(()),
    }
}

/// Whether the served accuracy reproduces the one the model file `f`
/// records; an error with both figures when it does not.
fn check_recorded(f: &Path, acc: &Accuracy) -> Result<()> {
    let info = rir_contract::ModelInfo::read(f)?;
    let j = against_recorded(&info, acc).with_context(|| f.display().to_string())?;
    let (served, recorded) = (100.0 * j.served, 100.0 * j.recorded);
    println!("{} ({}): {recorded:.2} %", j.by.what(), f.display());
    if !j.reproduced {
        bail!(
            "the served model scores {served:.2} %, {} recorded {recorded:.2} %",
            j.by.who()
        );
    }
    println!(
        "served accuracy reproduces {}'s ({} of {} images apart; at most 0.1 % may be)",
        j.by.who(),
        j.apart,
        acc.total
    );
    Ok(())
}

/// The image files through Classify, in one request; the labels of each.
async fn classify_files(cli: &Cli, replicas: &Replicas<Chan>) -> Result<()> {
    let mut images = Vec::with_capacity(cli.images.len());
    for p in &cli.images {
        images.push(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?);
    }
    let request = ClassifyRequest {
        model_name: cli.model.clone().unwrap_or_default(),
        model_version: String::new(),
        images,
        top_k: cli.top_k,
    };
    let t = Instant::now();
    let routed = replicas
        .call(0, |chan| {
            let (mut client, request) = (classify_client(chan.clone()), request.clone());
            async move { client.classify(request).await }
        })
        .await;
    let mut tally = Tally::default();
    tally.record(&routed);
    let resp = routed
        .result
        .map_err(|s| {
            anyhow::anyhow!(
                "Classify failed with {}: {}",
                rir_client::error::code_name(s.code()),
                s.message()
            )
        })?
        .into_inner();
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if resp.results.len() != cli.images.len() {
        bail!(
            "the server answered {} results for {} images",
            resp.results.len(),
            cli.images.len()
        );
    }
    let width = cli
        .images
        .iter()
        .map(|p| p.display().to_string().len())
        .max()
        .unwrap_or(0);
    for (p, r) in cli.images.iter().zip(&resp.results) {
        let labels: Vec<String> = r
            .labels
            .iter()
            .map(|l| format!("{} {:.1} %", l.name, 100.0 * l.probability))
            .collect();
        println!("{:<width$}  {}", p.display().to_string(), labels.join(", "));
    }
    println!(
        "{} images classified by {} v{} in {ms:.1} ms (one request)",
        cli.images.len(),
        resp.model_name,
        resp.model_version
    );
    print!(
        "{}",
        replica_table(&tally.by_replica(&replicas.addresses()))
    );
    Ok(())
}
