//! `masv seal FOLDER` and `masv verify FOLDER`: a folder's ASC MHL history, by hand or in a
//! script, without a running agent. Readable by the reference tool (`ascmhl verify`) and by any
//! other ASC MHL v2 implementation.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use crate::mhl::{self, HashFormat, Report};

#[derive(Debug, Args)]
pub struct SealArgs {
    /// The folder: its files are hashed and a generation is added to FOLDER/ascmhl/.
    folder: PathBuf,
    /// The hash format: xxh64 (the default, fast), xxh3, xxh128, md5, sha1 or c4.
    #[arg(long = "hash", default_value = "xxh64", value_parser = parse_format)]
    format: HashFormat,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The folder with an ascmhl/ history at its root.
    folder: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_format(name: &str) -> Result<HashFormat, String> {
    HashFormat::parse(name).ok_or_else(|| {
        let names: Vec<_> = HashFormat::ALL.iter().map(|f| f.name()).collect();
        format!(
            "unknown hash format {name:?}; use one of {}",
            names.join(", ")
        )
    })
}

/// Exit 0 when the folder matches its history, 1 otherwise.
fn outcome(report: &Report) -> ExitCode {
    if report.altered.is_empty() && report.missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_problems(report: &Report) {
    for a in &report.altered {
        println!(
            "altered  {}  ({} expected {}, found {})",
            a.path, a.format, a.expected, a.actual
        );
    }
    for m in &report.missing {
        println!("missing  {m}");
    }
}

pub fn seal(args: SealArgs) -> anyhow::Result<ExitCode> {
    let sealed = mhl::seal(&args.folder, args.format)
        .with_context(|| format!("cannot seal {}", args.folder.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&sealed)?);
    } else {
        print_problems(&sealed.report);
        println!(
            "{}: generation {} written ({}), {} files verified, {} new, {} altered, {} missing",
            args.folder.display(),
            sealed.sequence,
            sealed.generation,
            sealed.report.verified,
            sealed.report.new.len(),
            sealed.report.altered.len(),
            sealed.report.missing.len()
        );
    }
    Ok(outcome(&sealed.report))
}

pub fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let report = mhl::verify(&args.folder)
        .with_context(|| format!("cannot verify {}", args.folder.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_problems(&report);
        for n in &report.new {
            println!("new      {n}");
        }
        println!(
            "{}: {} files verified, {} altered, {} missing, {} new",
            args.folder.display(),
            report.verified,
            report.altered.len(),
            report.missing.len(),
            report.new.len()
        );
    }
    // New files fail a verification too: the delivery holds something nobody sealed.
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
