//! `masv download …`: start, watch and manage the downloads of a running agent (seed 000,
//! spec §5), through its REST API (docs/agent-api.md).

use crate::config::parse_size;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::agent::{
    self, AgentArgs, AgentClient, Column, Followed, null_as_default, parse_secret, print_json,
};
use crate::cloud::dto::Secret;

/// States in which a download has stopped for good (until resumed, for `error`).
const END_STATES: [&str; 2] = ["complete", "error"];
/// What a shell reports for a program stopped by Ctrl-C.
const INTERRUPTED: u8 = 130;

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
    /// Show live progress and return only when the download completes (exit 0) or fails (exit 1).
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

impl DownloadState {
    fn as_str(self) -> &'static str {
        match self {
            DownloadState::Transferring => "transferring",
            DownloadState::Paused => "paused",
            DownloadState::Complete => "complete",
            DownloadState::Error => "error",
        }
    }
}

/// A download as `GET /downloads` lists it. Read tolerantly: fields the agent adds are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DownloadSummary {
    download_id: String,
    #[serde(flatten)]
    progress: agent::Progress,
    url: Option<String>,
    dst_folder: Option<String>,
    package_id: Option<String>,
    package_name: Option<String>,
    priority: Option<i64>,
    created_at: Option<String>,
    updated_at: Option<String>,
}

/// `GET /downloads/{id}`: the summary and its files.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DownloadDetail {
    #[serde(flatten)]
    summary: DownloadSummary,
    #[serde(deserialize_with = "null_as_default")]
    files: Vec<DownloadFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DownloadFile {
    name: String,
    /// The folder inside the Package, `/`-separated; `""` or `"/"` for its root.
    path: Option<String>,
    #[serde(deserialize_with = "null_as_default")]
    size: u64,
    state: String,
    #[serde(deserialize_with = "null_as_default")]
    bytes_done: u64,
    error: Option<String>,
}

impl DownloadFile {
    /// Where the file sits in the Package: `folder/sub/name.mov`.
    fn package_path(&self) -> String {
        let folder = self.path.as_deref().unwrap_or("").trim_matches('/');
        if folder.is_empty() {
            self.name.clone()
        } else {
            format!("{folder}/{}", self.name)
        }
    }
}

/// `{"download_ids": [...]}`: what pause/resume all and rm answer.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DownloadIds {
    download_ids: Vec<String>,
}

pub async fn run(args: DownloadArgs) -> anyhow::Result<ExitCode> {
    let client = AgentClient::new(&args.agent)?;
    let json = args.agent.json;
    match args.command {
        DownloadCommand::Start(start_args) => start(&client, start_args, json).await,
        DownloadCommand::Ls => list(&client, json).await,
        DownloadCommand::Status { id, follow } => status(&client, &id, follow, json).await,
        DownloadCommand::Pause { target } => pause_or_resume(&client, &target, true, json).await,
        DownloadCommand::Resume { target } => pause_or_resume(&client, &target, false, json).await,
        DownloadCommand::Rm {
            target,
            remove_files,
            states,
        } => remove(&client, &target, remove_files, &states, json).await,
    }
}

/// A size as [`parse_size`] reads it, more than 0.
fn parse_chunk_size(text: &str) -> Result<u64, String> {
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
    let label = format!("Download {id}");
    match agent::follow(client, &["downloads", id], &label, &END_STATES, json).await? {
        Followed::Interrupted => {
            eprintln!(
                "Stopped watching; download {id} goes on in the agent at {} (masv download status {id} --follow).",
                client.url()
            );
            Ok(ExitCode::from(INTERRUPTED))
        }
        Followed::Ended(value) => {
            let detail: DownloadDetail = client.decode(&value, "GET /api/v1/downloads/{id}")?;
            if json {
                print_json(&value);
            }
            let summary = &detail.summary;
            if summary.progress.state == "complete" {
                if !json {
                    let into = summary.dst_folder.as_deref().unwrap_or("its destination");
                    println!(
                        "Download {id} complete: {} in {into}.",
                        agent::human_bytes(summary.progress.bytes_done)
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            let reason = summary
                .progress
                .error
                .as_deref()
                .unwrap_or("the agent gave no reason");
            eprintln!("error: download {id} failed: {reason}");
            for file in detail.files.iter().filter(|f| f.state == "error") {
                let why = file.error.as_deref().unwrap_or("no reason given");
                eprintln!("  {}: {why}", file.package_path());
            }
            eprintln!("Retry what failed with 'masv download resume {id}'.");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn list(client: &AgentClient, json: bool) -> anyhow::Result<ExitCode> {
    let answer = client.get(&["downloads"]).await?;
    if json {
        print_json(&answer);
        return Ok(ExitCode::SUCCESS);
    }
    let downloads: Vec<DownloadSummary> = client.decode(&answer, "GET /api/v1/downloads")?;
    if downloads.is_empty() {
        println!("No downloads.");
    } else {
        print!("{}", list_table(&downloads));
    }
    Ok(ExitCode::SUCCESS)
}

fn list_table(downloads: &[DownloadSummary]) -> String {
    let rows: Vec<Vec<String>> = downloads
        .iter()
        .map(|d| {
            let p = &d.progress;
            vec![
                d.download_id.clone(),
                p.state.clone(),
                p.percent().map_or("-".into(), |pc| format!("{pc}%")),
                if p.bytes_total > 0 {
                    agent::human_bytes(p.bytes_total)
                } else {
                    "-".into()
                },
                if p.state == "transferring" {
                    agent::human_speed(p.bytes_per_second)
                } else {
                    "-".into()
                },
                d.package_name.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    agent::table(
        &[
            Column::left("ID"),
            Column::left("STATE"),
            Column::right("PROGRESS"),
            Column::right("SIZE"),
            Column::right("SPEED"),
            Column::left("NAME"),
        ],
        &rows,
    )
}

async fn status(
    client: &AgentClient,
    id: &str,
    follow: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if follow {
        return self::follow(client, id, json).await;
    }
    let answer = client.get(&["downloads", id]).await?;
    if json {
        print_json(&answer);
        return Ok(ExitCode::SUCCESS);
    }
    let detail: DownloadDetail = client.decode(&answer, "GET /api/v1/downloads/{id}")?;
    print!("{}", detail_text(&detail));
    Ok(ExitCode::SUCCESS)
}

fn detail_text(detail: &DownloadDetail) -> String {
    let d = &detail.summary;
    let p = &d.progress;
    let mut lines: Vec<(&str, String)> = vec![("Download", d.download_id.clone())];
    lines.push(("State", p.state.clone()));
    if let Some(error) = &p.error {
        lines.push(("Error", error.clone()));
    }
    match (&d.package_name, &d.package_id) {
        (Some(name), Some(id)) => lines.push(("Package", format!("{name} ({id})"))),
        (Some(only), None) | (None, Some(only)) => lines.push(("Package", only.clone())),
        (None, None) => {}
    }
    if let Some(url) = &d.url {
        lines.push(("Link", url.clone()));
    }
    if let Some(dst) = &d.dst_folder {
        lines.push(("Destination", dst.clone()));
    }
    let mut progress = match p.percent() {
        Some(pc) => format!(
            "{pc}%, {} of {}",
            agent::human_bytes(p.bytes_done),
            agent::human_bytes(p.bytes_total)
        ),
        None => agent::human_bytes(p.bytes_done),
    };
    if p.files_total > 0 {
        progress.push_str(&format!(", {} of {} files", p.files_done, p.files_total));
    }
    lines.push(("Progress", progress));
    if p.state == "transferring" {
        let mut speed = agent::human_speed(p.bytes_per_second);
        if let Some(eta) = p.eta() {
            speed.push_str(&format!(", ETA {}", agent::human_duration(eta)));
        }
        lines.push(("Speed", speed));
    }
    if let Some(priority) = d.priority {
        lines.push(("Priority", priority.to_string()));
    }
    if let Some(created) = &d.created_at {
        lines.push(("Created", created.clone()));
    }
    if let Some(updated) = &d.updated_at {
        lines.push(("Updated", updated.clone()));
    }
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut text = String::new();
    for (key, value) in &lines {
        text.push_str(&format!("{key:<width$}  {value}\n"));
    }
    if !detail.files.is_empty() {
        let rows: Vec<Vec<String>> = detail
            .files
            .iter()
            .map(|f| {
                let mut path = f.package_path();
                if let Some(error) = &f.error {
                    path.push_str(&format!("  ({error})"));
                }
                vec![
                    f.state.clone(),
                    agent::percent(f.bytes_done, f.size).map_or("-".into(), |pc| format!("{pc}%")),
                    agent::human_bytes(f.size),
                    path,
                ]
            })
            .collect();
        text.push('\n');
        text.push_str(&agent::table(
            &[
                Column::left("STATE"),
                Column::right("PROGRESS"),
                Column::right("SIZE"),
                Column::left("FILE"),
            ],
            &rows,
        ));
    }
    text
}

async fn pause_or_resume(
    client: &AgentClient,
    target: &str,
    pause: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let action = if pause { "pause" } else { "resume" };
    let done = if pause { "paused" } else { "resumed" };
    if target == "all" {
        let answer = client.post_empty(&["downloads", action]).await?;
        if json {
            print_json(&answer);
            return Ok(ExitCode::SUCCESS);
        }
        let ids: DownloadIds =
            client.decode(&answer, &format!("POST /api/v1/downloads/{action}"))?;
        println!("{}", count_text(ids.download_ids.len(), done));
        return Ok(ExitCode::SUCCESS);
    }
    let answer = client.post_empty(&["downloads", target, action]).await?;
    if json {
        print_json(&answer);
    } else {
        let summary: DownloadSummary =
            client.decode(&answer, &format!("POST /api/v1/downloads/{{id}}/{action}"))?;
        let expected = if pause { "paused" } else { "transferring" };
        if summary.progress.state == expected {
            println!("Download {target} {done}.");
        } else {
            println!("Download {target} is {}.", summary.progress.state);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn remove(
    client: &AgentClient,
    target: &str,
    remove_files: bool,
    states: &[DownloadState],
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut query = Vec::new();
    if remove_files {
        query.push(("remove_files", "true".to_owned()));
    }
    let answer = if target == "all" {
        if !states.is_empty() {
            let states: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
            query.push(("states", states.join(",")));
        }
        let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        client.delete(&["downloads"], &query).await?
    } else {
        anyhow::ensure!(
            states.is_empty(),
            "--states goes with 'masv download rm all'; to remove download {target}, give its id alone"
        );
        let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        client.delete(&["downloads", target], &query).await?
    };
    if json {
        print_json(&answer);
        return Ok(ExitCode::SUCCESS);
    }
    let ids: DownloadIds = client.decode(&answer, "DELETE /api/v1/downloads")?;
    let count = if target == "all" {
        ids.download_ids.len()
    } else {
        1
    };
    let with_files = match (remove_files, count) {
        (false, _) => "",
        (true, 1) => " with its files",
        (true, _) => " with their files",
    };
    if target == "all" {
        println!("{}{with_files}.", count_text(count, "removed"));
    } else {
        println!("Download {target} removed{with_files}.");
    }
    Ok(ExitCode::SUCCESS)
}

/// `1 download paused`, `3 downloads removed`, `No downloads resumed`.
fn count_text(count: usize, done: &str) -> String {
    match count {
        0 => format!("No downloads {done}"),
        1 => format!("1 download {done}"),
        n => format!("{n} downloads {done}"),
    }
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
            DownloadCommand::Rm { ref target, remove_files: false, ref states }
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

    #[test]
    fn the_list_shows_one_row_per_download() {
        let downloads: Vec<DownloadSummary> = serde_json::from_value(json!([
            {"download_id": "f98b1e92-1c67-48e4-9b9c-f2bb27a33375", "state": "transferring",
             "url": "https://get.massive.io/ID", "dst_folder": "/dst", "package_id": "01",
             "package_name": "Dailies", "priority": 0, "created_at": "2026-11-22T21:00:00.000Z",
             "updated_at": "2026-11-22T21:00:00.000Z", "bytes_done": 1536, "bytes_total": 3072,
             "bytes_per_second": 1024, "files_total": 3, "files_done": 1, "error": null},
            {"download_id": "0b", "state": "error", "package_name": null,
             "bytes_done": 0, "bytes_total": 0, "bytes_per_second": 0, "error": "Link expired"}
        ]))
        .unwrap();
        assert_eq!(
            list_table(&downloads),
            "\
ID                                    STATE         PROGRESS     SIZE      SPEED  NAME
f98b1e92-1c67-48e4-9b9c-f2bb27a33375  transferring       50%  3.0 KiB  1.0 KiB/s  Dailies
0b                                    error                -        -          -  -
"
        );
    }

    #[test]
    fn the_detail_shows_each_file_and_its_error() {
        let detail: DownloadDetail = serde_json::from_value(json!({
            "download_id": "f98b", "state": "error", "error": "1 file failed",
            "url": "https://get.massive.io/ID", "dst_folder": "/dst", "package_id": "01P",
            "package_name": "Dailies", "priority": 2, "bytes_done": 1024, "bytes_total": 2048,
            "bytes_per_second": 0, "files_total": 2, "files_done": 1,
            "files": [
                {"id": "f1", "name": "a.mov", "path": "/", "size": 1024, "state": "complete",
                 "bytes_done": 1024, "error": null, "local_path": "/dst/Dailies/a.mov"},
                {"id": "f2", "name": "b.mov", "path": "/day 1/", "size": 1024, "state": "error",
                 "bytes_done": 0, "error": "disk full", "local_path": null}
            ]
        }))
        .unwrap();
        let text = detail_text(&detail);
        assert!(
            text.starts_with("Download     f98b\nState        error\nError        1 file failed\n"),
            "{text}"
        );
        assert!(text.contains("Package      Dailies (01P)\n"), "{text}");
        assert!(
            text.contains("Progress     50%, 1.0 KiB of 2.0 KiB, 1 of 2 files\n"),
            "{text}"
        );
        assert!(!text.contains("Speed"), "{text}");
        assert!(
            text.contains("complete      100%  1.0 KiB  a.mov\n"),
            "{text}"
        );
        assert!(
            text.contains("error           0%  1.0 KiB  day 1/b.mov  (disk full)\n"),
            "{text}"
        );
    }

    #[test]
    fn counts_read_as_sentences() {
        assert_eq!(count_text(0, "paused"), "No downloads paused");
        assert_eq!(count_text(1, "resumed"), "1 download resumed");
        assert_eq!(count_text(4, "removed"), "4 downloads removed");
    }
}
