//! `masv download …`: start, watch and manage the downloads of a running agent (seed 000,
//! spec §5), through its REST API (docs/agent-api.md).

use crate::config::parse_size;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::agent::{self, AgentArgs, AgentClient, parse_secret, print_json};
use super::exit::INTERRUPTED;
use super::transfers::{self, DOWNLOADS};
use crate::cloud::dto::Secret;

/// States in which a download has stopped for good (until resumed, for `error`).
const END_STATES: [&str; 2] = ["complete", "error"];

#[derive(Debug, Args)]
pub struct DownloadArgs {
    #[command(flatten)]
    agent: AgentArgs,
    #[command(subcommand)]
    command: DownloadCommand,
}

#[derive(Debug, Subcommand)]
enum DownloadCommand {
    /// Download a Package from its Link into a folder.
    #[command(
        after_help = "Example:\n  masv download start \\\n    --url 'https://get.massive.io/LINK_ID?secret=LINK_SECRET' \\\n    --destination /destination/folder \\\n    --password 'optional_password' --wait"
    )]
    Start(StartArgs),
    /// List the downloads: id, state, progress, size, speed, Package name.
    #[command(after_help = "Example:\n  masv download ls\n  masv download ls --json")]
    Ls,
    /// One download in detail, with the state of each of its files.
    #[command(
        after_help = "Example:\n  masv download status f98b1e92-1c67-48e4-9b9c-f2bb27a33375 --follow"
    )]
    Status {
        /// The download's id (see `masv download ls`).
        id: String,
        /// Show live progress until the download completes or fails.
        #[arg(long)]
        follow: bool,
    },
    /// Pause a download, or all of them.
    #[command(
        after_help = "Examples:\n  masv download pause f98b1e92-1c67-48e4-9b9c-f2bb27a33375\n  masv download pause all"
    )]
    Pause {
        /// A download's id, or `all`.
        target: String,
    },
    /// Resume a paused (or failed) download, or all of them.
    #[command(
        after_help = "Examples:\n  masv download resume f98b1e92-1c67-48e4-9b9c-f2bb27a33375\n  masv download resume all"
    )]
    Resume {
        /// A download's id, or `all`.
        target: String,
    },
    /// Forget a download (its files stay unless --remove-files), or all of them.
    #[command(
        after_help = "Examples:\n  masv download rm f98b1e92-1c67-48e4-9b9c-f2bb27a33375 --remove-files\n  masv download rm all --states=complete,error"
    )]
    Rm {
        /// A download's id, or `all`.
        target: String,
        /// Delete the downloaded files too.
        #[arg(long)]
        remove_files: bool,
        /// With `all`: only the downloads in these states.
        #[arg(long, value_delimiter = ',')]
        states: Vec<DownloadState>,
        /// With `all` on a terminal: remove without asking first.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Debug, Args)]
struct StartArgs {
    /// The full download Link URL (`https://get.massive.io/ID?secret=SECRET`).
    #[arg(long, value_parser = parse_secret)]
    url: Secret,
    /// The folder to download into; a relative path is taken from the current folder.
    #[arg(long)]
    destination: PathBuf,
    /// The Link's download password, when it has one.
    #[arg(long, value_parser = parse_secret)]
    password: Option<Secret>,
    /// Only these Package files, by id: `--file-ids 01FDFQW6Y9...,01HZMN7V90...`.
    #[arg(long, value_delimiter = ',')]
    file_ids: Vec<String>,
    /// Higher values are downloaded first.
    #[arg(long, allow_negative_numbers = true)]
    priority: Option<i64>,
    /// Owner (UID) to give the downloaded files.
    #[arg(long)]
    uid: Option<u32>,
    /// Group (GID) to give the downloaded files.
    #[arg(long)]
    gid: Option<u32>,
    /// Put the files inside a folder named after the Package.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    create_package_folder: bool,
    /// Skip the files flagged as malware and download the others (otherwise: fail).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    bypass_package_quarantine: bool,
    /// Target chunk size: bytes, or a size like 8MiB or 100MB.
    #[arg(long, value_parser = parse_chunk_size, value_name = "SIZE")]
    chunk_size: Option<u64>,
    /// Show live progress and return only when the download completes (exit 0) or fails (exit 6).
    #[arg(long)]
    wait: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DownloadState {
    Transferring,
    Paused,
    Complete,
    Error,
}

pub async fn run(args: DownloadArgs) -> anyhow::Result<ExitCode> {
    let client = AgentClient::new(&args.agent)?;
    let json = args.agent.json;
    match args.command {
        DownloadCommand::Start(start_args) => start(&client, start_args, json).await,
        DownloadCommand::Ls => transfers::list(&client, DOWNLOADS, json).await,
        DownloadCommand::Status { id, follow: true } => self::follow(&client, &id, json).await,
        DownloadCommand::Status { id, follow: false } => {
            transfers::status(&client, DOWNLOADS, &id, json).await
        }
        DownloadCommand::Pause { target } => {
            transfers::pause_or_resume(&client, DOWNLOADS, &target, true, json).await
        }
        DownloadCommand::Resume { target } => {
            transfers::pause_or_resume(&client, DOWNLOADS, &target, false, json).await
        }
        DownloadCommand::Rm {
            target,
            remove_files,
            states,
            yes,
        } => {
            let states = transfers::state_names(&states);
            let states: Vec<&str> = states.iter().map(String::as_str).collect();
            transfers::remove(
                &client,
                DOWNLOADS,
                &target,
                remove_files,
                &states,
                yes,
                json,
            )
            .await
        }
    }
}

/// A size as [`parse_size`] reads it, more than 0.
pub(super) fn parse_chunk_size(text: &str) -> Result<u64, String> {
    match parse_size(text)? {
        0 => Err("a chunk must be more than 0 bytes".to_owned()),
        bytes => Ok(bytes),
    }
}

/// The body of `POST /downloads` (spec §5): the seed's flags under the API's names.
fn start_body(args: &StartArgs, destination: &Path) -> anyhow::Result<Value> {
    let dst_folder = destination.to_str().with_context(|| {
        format!(
            "--destination {} is not valid UTF-8; the agent's API takes UTF-8 paths only",
            destination.display()
        )
    })?;
    let mut body = Map::new();
    body.insert("url".into(), json!(args.url.expose()));
    body.insert("dst_folder".into(), json!(dst_folder));
    if let Some(password) = &args.password {
        body.insert("password".into(), json!(password.expose()));
    }
    let file_ids: Vec<&str> = args
        .file_ids
        .iter()
        .map(|id| id.trim())
        .filter(|id| !id.is_empty())
        .collect();
    if !file_ids.is_empty() {
        body.insert("file_ids".into(), json!(file_ids));
    }
    if let Some(chunk_size) = args.chunk_size {
        body.insert("chunk_size".into(), json!(chunk_size));
    }
    if let Some(priority) = args.priority {
        body.insert("priority".into(), json!(priority));
    }
    body.insert(
        "create_package_folder".into(),
        json!(args.create_package_folder),
    );
    body.insert(
        "bypass_package_quarantine".into(),
        json!(args.bypass_package_quarantine),
    );
    if let Some(uid) = args.uid {
        body.insert("user_id".into(), json!(uid));
    }
    if let Some(gid) = args.gid {
        body.insert("group_id".into(), json!(gid));
    }
    Ok(Value::Object(body))
}

async fn start(client: &AgentClient, args: StartArgs, json: bool) -> anyhow::Result<ExitCode> {
    // The agent may run in another folder: a relative path means the one the user is in.
    let destination = std::path::absolute(&args.destination).with_context(|| {
        format!(
            "cannot make --destination {} absolute",
            args.destination.display()
        )
    })?;
    let body = start_body(&args, &destination)?;
    let answer = client.post(&["downloads"], &body).await?;
    #[derive(Deserialize)]
    struct Started {
        download_id: String,
    }
    let started: Started = client.decode(&answer, "POST /api/v1/downloads")?;
    if !args.wait {
        if json {
            print_json(&answer);
        } else {
            println!("Download {} started.", started.download_id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !json {
        println!("Download {} started.", started.download_id);
    }
    follow(client, &started.download_id, json).await
}

/// `--wait` and `--follow`: live progress until the download ends; its end decides the exit code.
async fn follow(client: &AgentClient, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let Some((detail, answer)) =
        transfers::follow_to_end(client, DOWNLOADS, id, &END_STATES, json).await?
    else {
        return Ok(ExitCode::from(INTERRUPTED));
    };
    if json {
        print_json(&answer);
    }
    let summary = &detail.summary;
    if summary.progress.state != "complete" {
        return Ok(transfers::report_failure(DOWNLOADS, &detail));
    }
    if !json {
        let into = summary.dst_folder.as_deref().unwrap_or("its destination");
        println!(
            "Download {id} complete: {} in {into}.",
            agent::human_bytes(summary.progress.bytes_done)
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(line: &[&str]) -> DownloadArgs {
        match Cli::try_parse_from(line) {
            Ok(Cli {
                command: Command::Download(args),
                ..
            }) => args,
            Ok(other) => panic!("not a download command: {other:?}"),
            Err(e) => panic!("{line:?} does not parse: {e}"),
        }
    }

    fn start_args(line: &[&str]) -> StartArgs {
        match parse(line).command {
            DownloadCommand::Start(args) => args,
            other => panic!("not start: {other:?}"),
        }
    }

    #[test]
    fn the_seeds_start_command_line_parses_into_the_apis_body() {
        let args = start_args(&[
            "masv",
            "download",
            "start",
            "--url",
            "https://get.massive.io/LINK_ID?secret=LINK_SECRET",
            "--destination",
            "/destination/folder",
            "--password",
            "optional_password",
        ]);
        let body = start_body(&args, Path::new("/destination/folder")).unwrap();
        assert_eq!(
            body,
            json!({
                "url": "https://get.massive.io/LINK_ID?secret=LINK_SECRET",
                "dst_folder": "/destination/folder",
                "password": "optional_password",
                "create_package_folder": true,
                "bypass_package_quarantine": true,
            })
        );
        assert!(!args.wait);
        // The Link's secret and the password never show in Debug output.
        let debug = format!("{args:?}");
        assert!(!debug.contains("LINK_SECRET") && !debug.contains("optional_password"));
    }

    #[test]
    fn every_start_flag_reaches_the_body_under_the_apis_name() {
        let args = start_args(&[
            "masv",
            "download",
            "start",
            "--url=https://get.massive.io/ID?secret=S",
            "--destination=/dst",
            "--file-ids",
            "01FDFQW6Y9,01HZMN7V90",
            "--priority",
            "-3",
            "--uid",
            "1000",
            "--gid=100",
            "--create-package-folder=false",
            "--bypass-package-quarantine",
            "false",
            "--chunk-size",
            "8MiB",
            "--wait",
        ]);
        assert!(args.wait);
        let body = start_body(&args, Path::new("/dst")).unwrap();
        assert_eq!(
            body,
            json!({
                "url": "https://get.massive.io/ID?secret=S",
                "dst_folder": "/dst",
                "file_ids": ["01FDFQW6Y9", "01HZMN7V90"],
                "priority": -3,
                "user_id": 1000,
                "group_id": 100,
                "create_package_folder": false,
                "bypass_package_quarantine": false,
                "chunk_size": 8 << 20,
            })
        );
    }

    #[test]
    fn start_refuses_what_the_api_would_not_take() {
        let start = ["masv", "download", "start"];
        let required = ["--url", "u", "--destination", "/d"];
        let missing: [&[&str]; 2] = [&["--destination", "/d"], &["--url", "u"]];
        for args in missing {
            let line = [&start[..], args].concat();
            assert!(Cli::try_parse_from(&line).is_err(), "{line:?} parsed");
        }
        let wrong: [&[&str]; 5] = [
            &["--chunk-size", "lots"],
            &["--chunk-size", "0"],
            &["--create-package-folder"],
            &["--create-package-folder=maybe"],
            &["--uid", "-1"],
        ];
        for args in wrong {
            let line = [&start[..], &required, args].concat();
            assert!(Cli::try_parse_from(&line).is_err(), "{line:?} parsed");
        }
    }

    #[test]
    fn a_relative_destination_is_sent_from_the_current_folder() {
        let destination = std::path::absolute("incoming/dailies").unwrap();
        assert!(destination.is_absolute());
        assert_eq!(
            destination,
            std::env::current_dir().unwrap().join("incoming/dailies")
        );
    }

    #[test]
    fn the_seeds_management_command_lines_parse() {
        assert!(matches!(
            parse(&["masv", "download", "ls"]).command,
            DownloadCommand::Ls
        ));
        assert!(matches!(
            parse(&["masv", "download", "status", "f98b1e92"]).command,
            DownloadCommand::Status { id, follow: false } if id == "f98b1e92"
        ));
        assert!(matches!(
            parse(&["masv", "download", "status", "f98b1e92", "--follow"]).command,
            DownloadCommand::Status { follow: true, .. }
        ));
        assert!(matches!(
            parse(&["masv", "download", "pause", "all"]).command,
            DownloadCommand::Pause { target } if target == "all"
        ));
        assert!(matches!(
            parse(&["masv", "download", "resume", "f98b1e92"]).command,
            DownloadCommand::Resume { target } if target == "f98b1e92"
        ));
        assert!(matches!(
            parse(&["masv", "download", "rm", "f98b1e92", "--remove-files"]).command,
            DownloadCommand::Rm { remove_files: true, ref states, .. } if states.is_empty()
        ));
        assert!(matches!(
            parse(&["masv", "download", "rm", "all", "--states=complete,error"]).command,
            DownloadCommand::Rm { ref target, remove_files: false, ref states, .. }
                if target == "all" && states == &[DownloadState::Complete, DownloadState::Error]
        ));
        assert!(Cli::try_parse_from(["masv", "download", "rm", "all", "--states=done"]).is_err());
        assert!(Cli::try_parse_from(["masv", "download", "pause"]).is_err());
    }

    #[test]
    fn agent_options_go_before_or_after_the_subcommand() {
        let args = parse(&[
            "masv",
            "download",
            "--agent-url",
            "http://127.0.0.1:9999",
            "ls",
            "--json",
            "--api-token",
            "t0k",
        ]);
        assert_eq!(args.agent.agent_url, "http://127.0.0.1:9999");
        assert!(args.agent.json);
        assert_eq!(
            args.agent.api_token.as_ref().map(Secret::expose),
            Some("t0k")
        );
        assert!(!format!("{args:?}").contains("t0k"));
    }
}
