//! `masv upload …`: send files and folders as Packages through a running agent (seed 002,
//! spec §5), over its REST API (docs/agent-api.md): team uploads to email recipients or behind a
//! share link, and portal uploads.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::agent::{AgentArgs, AgentClient, human_bytes, parse_secret, print_json};
use super::download::parse_chunk_size;
use super::exit::INTERRUPTED;
use super::transfers::{self, UPLOADS};
use crate::cloud::dto::Secret;

/// States a followed upload stops at. `idle` ends it only when it stays idle (the agent runs
/// with `--auto-finalize=false`); otherwise the agent finalizes it at once.
const END_STATES: [&str; 3] = ["complete", "error", "idle"];
/// How long an upload must stay idle before `--wait` takes it as waiting for `finalize`.
const IDLE_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, Args)]
pub struct UploadArgs {
    #[command(flatten)]
    agent: AgentArgs,
    #[command(subcommand)]
    command: UploadCommand,
}

#[derive(Debug, Subcommand)]
enum UploadCommand {
    /// Send files and folders as a new Package: to email recipients, behind a share link, or to
    /// a Portal.
    #[command(
        subcommand,
        after_help = "Examples:\n  masv upload start link --team-id TEAM_ID /srv/out/day1\n  masv upload start portal --subdomain acme --sender me@example.com /srv/out/day1"
    )]
    Start(Box<StartCommand>),
    /// List the uploads: id, state, progress, size, speed, Package name.
    #[command(after_help = "Example:\n  masv upload ls\n  masv upload ls --json")]
    Ls,
    /// One upload in detail, with the state of each of its files.
    #[command(
        after_help = "Example:\n  masv upload status 5c8b2cd9-55fc-4462-9c01-87f4df03814a --follow"
    )]
    Status {
        /// The upload's id (see `masv upload ls`).
        id: String,
        /// Show live progress until the upload completes or fails.
        #[arg(long)]
        follow: bool,
    },
    /// Pause an upload, or all of them.
    #[command(
        after_help = "Examples:\n  masv upload pause 5c8b2cd9-55fc-4462-9c01-87f4df03814a\n  masv upload pause all"
    )]
    Pause {
        /// An upload's id, or `all`.
        target: String,
    },
    /// Resume a paused (or failed) upload, or all of them.
    #[command(
        after_help = "Examples:\n  masv upload resume 5c8b2cd9-55fc-4462-9c01-87f4df03814a\n  masv upload resume all"
    )]
    Resume {
        /// An upload's id, or `all`.
        target: String,
    },
    /// Finalize an idle upload (all files sent) so its recipients get it; a no-op once complete.
    #[command(
        after_help = "Example (with 'masv server start --auto-finalize=false'):\n  masv upload finalize 5c8b2cd9-55fc-4462-9c01-87f4df03814a"
    )]
    Finalize {
        /// The upload's id.
        id: String,
    },
    /// Make another shareable download link for a complete team upload.
    #[command(after_help = "Example:\n  masv upload link 5c8b2cd9-55fc-4462-9c01-87f4df03814a")]
    Link {
        /// The upload's id.
        id: String,
    },
    /// Forget an upload (the files sent stay in the Package), or all of them.
    #[command(
        after_help = "Examples:\n  masv upload rm 5c8b2cd9-55fc-4462-9c01-87f4df03814a\n  masv upload rm all --states=complete,error"
    )]
    Rm {
        /// An upload's id, or `all`.
        target: String,
        /// With `all`: only the uploads in these states.
        #[arg(long, value_delimiter = ',')]
        states: Vec<UploadState>,
        /// With `all` on a terminal: remove without asking first.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
enum StartCommand {
    /// A team Package sent to email recipients (needs the agent's MASV API key).
    #[command(
        after_help = "Example:\n  masv upload start email \\\n    --emails='recipient1@domain.tld,recipient2@domain.tld' \\\n    --team-id=TEAM_ID \\\n    --name=\"Optional package name\" \\\n    --password=\"optional_download_password\" \\\n    /path/to/file/or/folder /path/to/another/file/or/folder"
    )]
    Email(EmailArgs),
    /// A team Package behind a shareable download link, printed at once (active once sent).
    #[command(
        after_help = "Example:\n  masv upload start link \\\n    --team-id=TEAM_ID \\\n    --name=\"Optional package name\" \\\n    --description=\"Optional package description\" \\\n    /path/to/file/or/folder /path/to/another/file/or/folder"
    )]
    Link(LinkArgs),
    /// A Package sent to a MASV Portal (no API key needed).
    #[command(
        after_help = "Example:\n  masv upload start portal \\\n    --subdomain=PORTAL_SUBDOMAIN \\\n    --sender='your-email@domain.tld' \\\n    --password=\"access code for the portal\" \\\n    --metadata='project=Dailies,reel=1' \\\n    /path/to/file/or/folder"
    )]
    Portal(PortalArgs),
}

/// The parameters of every upload (seed 002's "common parameters").
#[derive(Debug, Args)]
struct CommonArgs {
    /// Package name.
    #[arg(long)]
    name: Option<String>,
    /// Package description.
    #[arg(long)]
    description: Option<String>,
    /// Part size for this upload: bytes, or a size like 64MiB (overrides the agent's).
    #[arg(long, value_parser = parse_chunk_size, value_name = "SIZE")]
    chunk_size: Option<u64>,
    /// Higher values are sent first.
    #[arg(long, allow_negative_numbers = true)]
    priority: Option<i64>,
    /// Add a manifest to the package: "ascmhl" (an ASC MHL generation of its files, from the
    /// hashes computed while they are sent; off by default).
    #[arg(long, value_parser = ["ascmhl"])]
    manifest: Option<String>,
    /// Show live progress and return only when the upload completes (exit 0) or fails (exit 6).
    #[arg(long)]
    wait: bool,
    /// Files and folders to send (folders with everything in them, their layout kept).
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
}

/// The parameters of team uploads (seed 002's "shareable link parameters").
#[derive(Debug, Args)]
struct TeamArgs {
    /// Team to send the Package from.
    #[arg(long)]
    team_id: String,
    /// Teamspace of that team to associate the upload with.
    #[arg(long)]
    teamspace_id: Option<String>,
    /// Default password of the download links of this Package.
    #[arg(long, value_parser = parse_secret)]
    password: Option<Secret>,
    /// Days to keep the Package in storage.
    #[arg(long, value_name = "DAYS")]
    delete_after: Option<u32>,
    /// Default access limit of the download links of this Package.
    #[arg(long)]
    download_limit: Option<u32>,
    /// Name of the Package's tag (created if it does not exist).
    #[arg(long)]
    tag_name: Option<String>,
    /// Id of an existing Package tag.
    #[arg(long)]
    tag_id: Option<String>,
    /// Keep the Package with unlimited storage.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    unlimited_storage: Option<bool>,
}

#[derive(Debug, Args)]
struct EmailArgs {
    /// Comma-separated recipients: 'a@example.com,b@example.com'.
    #[arg(long, value_delimiter = ',', required = true)]
    emails: Vec<String>,
    #[command(flatten)]
    team: TeamArgs,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Args)]
struct LinkArgs {
    #[command(flatten)]
    team: TeamArgs,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Args)]
struct PortalArgs {
    /// The Portal's subdomain: `acme` for https://acme.portal.massive.io.
    #[arg(long)]
    subdomain: String,
    /// The sender's email address.
    #[arg(long)]
    sender: String,
    /// The Portal's access code, for protected Portals.
    #[arg(long, value_parser = parse_secret)]
    password: Option<Secret>,
    /// Portal metadata: key1=value1,key2=value2.
    #[arg(long, value_delimiter = ',', value_parser = parse_metadata)]
    metadata: Vec<(String, String)>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum UploadState {
    Transferring,
    Paused,
    Idle,
    Complete,
    Error,
}

fn parse_metadata(pair: &str) -> Result<(String, String), String> {
    match pair.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!(
            "{pair:?} is not key=value; write --metadata 'key1=value1,key2=value2'"
        )),
    }
}

pub async fn run(args: UploadArgs) -> anyhow::Result<ExitCode> {
    let client = AgentClient::new(&args.agent)?;
    let json = args.agent.json;
    match args.command {
        UploadCommand::Start(start_command) => start(&client, *start_command, json).await,
        UploadCommand::Ls => transfers::list(&client, UPLOADS, json).await,
        UploadCommand::Status { id, follow: true } => self::follow(&client, &id, json).await,
        UploadCommand::Status { id, follow: false } => {
            transfers::status(&client, UPLOADS, &id, json).await
        }
        UploadCommand::Pause { target } => {
            transfers::pause_or_resume(&client, UPLOADS, &target, true, json).await
        }
        UploadCommand::Resume { target } => {
            transfers::pause_or_resume(&client, UPLOADS, &target, false, json).await
        }
        UploadCommand::Finalize { id } => finalize(&client, &id, json).await,
        UploadCommand::Link { id } => link(&client, &id, json).await,
        UploadCommand::Rm {
            target,
            states,
            yes,
        } => {
            let states = transfers::state_names(&states);
            let states: Vec<&str> = states.iter().map(String::as_str).collect();
            transfers::remove(&client, UPLOADS, &target, false, &states, yes, json).await
        }
    }
}

/// The route and body of a start command, and its common parameters.
fn start_request(command: &StartCommand) -> anyhow::Result<(&'static [&'static str], Value)> {
    let (route, common): (&'static [&'static str], &CommonArgs) = match command {
        StartCommand::Email(args) => (&["uploads"], &args.common),
        StartCommand::Link(args) => (&["uploads"], &args.common),
        StartCommand::Portal(args) => (&["portals", "uploads"], &args.common),
    };
    let mut body = Map::new();
    let paths = common
        .paths
        .iter()
        // The agent may run in another folder: a relative path means the one the user is in.
        .map(|p| {
            std::path::absolute(p).with_context(|| format!("cannot make {} absolute", p.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    body.insert("paths".into(), json!(paths));
    insert(&mut body, "package_name", &common.name);
    insert(&mut body, "package_description", &common.description);
    insert(&mut body, "chunk_size", &common.chunk_size);
    insert(&mut body, "priority", &common.priority);
    insert(&mut body, "manifest", &common.manifest);
    match command {
        StartCommand::Email(args) => {
            let emails: Vec<&str> = args
                .emails
                .iter()
                .map(|e| e.trim())
                .filter(|e| !e.is_empty())
                .collect();
            anyhow::ensure!(
                !emails.is_empty(),
                "--emails is empty; give at least one recipient, or use 'masv upload start link'"
            );
            body.insert("recipients".into(), json!(emails));
            team_body(&mut body, &args.team);
        }
        StartCommand::Link(args) => team_body(&mut body, &args.team),
        StartCommand::Portal(args) => {
            body.insert("subdomain".into(), json!(args.subdomain));
            body.insert("sender_email".into(), json!(args.sender));
            insert(
                &mut body,
                "access_code",
                &args.password.as_ref().map(Secret::expose),
            );
            if !args.metadata.is_empty() {
                let metadata: Map<String, Value> = args
                    .metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(v)))
                    .collect();
                body.insert("metadata".into(), Value::Object(metadata));
            }
        }
    }
    Ok((route, Value::Object(body)))
}

fn team_body(body: &mut Map<String, Value>, team: &TeamArgs) {
    body.insert("team_id".into(), json!(team.team_id));
    insert(body, "teamspace_id", &team.teamspace_id);
    insert(
        body,
        "password",
        &team.password.as_ref().map(Secret::expose),
    );
    insert(body, "delete_after", &team.delete_after);
    insert(body, "download_limit", &team.download_limit);
    insert(body, "tag_name", &team.tag_name);
    insert(body, "tag_id", &team.tag_id);
    insert(body, "unlimited_storage", &team.unlimited_storage);
}

/// Sets `key` when the flag was given.
fn insert<T: serde::Serialize>(body: &mut Map<String, Value>, key: &str, value: &Option<T>) {
    if let Some(value) = value {
        body.insert(key.into(), json!(value));
    }
}

async fn start(
    client: &AgentClient,
    command: StartCommand,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (route, body) = start_request(&command)?;
    let wait = match &command {
        StartCommand::Email(args) => args.common.wait,
        StartCommand::Link(args) => args.common.wait,
        StartCommand::Portal(args) => args.common.wait,
    };
    let answer = client.post(route, &body).await?;
    #[derive(Deserialize)]
    struct Started {
        upload_id: String,
        link: Option<String>,
    }
    let started: Started = client.decode(&answer, &format!("POST /api/v1/{}", route.join("/")))?;
    if json && !wait {
        print_json(&answer);
        return Ok(ExitCode::SUCCESS);
    }
    if !json {
        match &started.link {
            Some(link) => println!(
                "Upload {} started. Shareable link: {link}",
                started.upload_id
            ),
            None => println!("Upload {} started.", started.upload_id),
        }
    }
    if !wait {
        return Ok(ExitCode::SUCCESS);
    }
    follow(client, &started.upload_id, json).await
}

/// `--wait` and `--follow`: live progress until the upload ends; its end decides the exit code.
async fn follow(client: &AgentClient, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let Some((mut detail, mut answer)) =
        transfers::follow_to_end(client, UPLOADS, id, &END_STATES, json).await?
    else {
        return Ok(ExitCode::from(INTERRUPTED));
    };
    // Idle is where an auto-finalizing agent passes on its way to complete: give it the time.
    let since = tokio::time::Instant::now();
    while detail.summary.progress.state == "idle" && since.elapsed() < IDLE_GRACE {
        tokio::time::sleep(Duration::from_millis(250)).await;
        answer = client.get(&["uploads", id]).await?;
        detail = client.decode(&answer, "GET /api/v1/uploads/{id}")?;
    }
    if json {
        print_json(&answer);
    }
    let summary = &detail.summary;
    match summary.progress.state.as_str() {
        "complete" => {
            if !json {
                let sent = human_bytes(summary.progress.bytes_done);
                match &summary.link {
                    Some(link) => println!("Upload {id} complete: {sent} sent. Link: {link}"),
                    None => println!("Upload {id} complete: {sent} sent."),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        "idle" => {
            if !json {
                println!(
                    "Upload {id}: all files sent; it waits for 'masv upload finalize {id}' (the agent does not finalize by itself)."
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        _ => Ok(transfers::report_failure(UPLOADS, &detail)),
    }
}

async fn finalize(client: &AgentClient, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let answer = client.post_empty(&["uploads", id, "finalize"]).await?;
    if json {
        print_json(&answer);
        return Ok(ExitCode::SUCCESS);
    }
    let summary: transfers::Summary =
        client.decode(&answer, "POST /api/v1/uploads/{id}/finalize")?;
    println!("Upload {id} is {}.", summary.progress.state);
    Ok(ExitCode::SUCCESS)
}

async fn link(client: &AgentClient, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let answer = client.post_empty(&["uploads", id, "link"]).await?;
    if json {
        print_json(&answer);
        return Ok(ExitCode::SUCCESS);
    }
    #[derive(Deserialize)]
    struct Made {
        link: String,
    }
    let made: Made = client.decode(&answer, "POST /api/v1/uploads/{id}/link")?;
    println!("{}", made.link);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(line: &[&str]) -> UploadArgs {
        match Cli::try_parse_from(line) {
            Ok(Cli {
                command: Command::Upload(args),
                ..
            }) => args,
            Ok(other) => panic!("not an upload command: {other:?}"),
            Err(e) => panic!("{line:?} does not parse: {e}"),
        }
    }

    fn start_of(line: &[&str]) -> StartCommand {
        match parse(line).command {
            UploadCommand::Start(command) => *command,
            other => panic!("not start: {other:?}"),
        }
    }

    #[test]
    fn the_seeds_email_command_line_becomes_a_team_upload_to_its_recipients() {
        let command = start_of(&[
            "masv",
            "upload",
            "start",
            "email",
            "--emails=recipient1@domain.tld,recipient2@domain.tld",
            "--team-id=TEAM_ID",
            "--name=Optional package name",
            "--description=Optional package description",
            "--password=optional_download_password",
            "/path/to/file/or/folder",
            "/path/to/another/file/or/folder",
        ]);
        let (route, body) = start_request(&command).unwrap();
        assert_eq!(route, ["uploads"]);
        assert_eq!(
            body,
            json!({
                "paths": ["/path/to/file/or/folder", "/path/to/another/file/or/folder"],
                "recipients": ["recipient1@domain.tld", "recipient2@domain.tld"],
                "team_id": "TEAM_ID",
                "package_name": "Optional package name",
                "package_description": "Optional package description",
                "password": "optional_download_password",
            })
        );
        assert!(!format!("{command:?}").contains("optional_download_password"));
    }

    #[test]
    fn every_team_flag_reaches_the_body_under_the_apis_name() {
        let command = start_of(&[
            "masv",
            "upload",
            "start",
            "link",
            "--team-id",
            "T",
            "--teamspace-id=S",
            "--chunk-size=64MiB",
            "--priority=-2",
            "--manifest=ascmhl",
            "--delete-after",
            "30",
            "--download-limit=5",
            "--tag-name=dailies",
            "--tag-id=TAG",
            "--unlimited-storage",
            "--wait",
            "reel",
        ]);
        let (route, body) = start_request(&command).unwrap();
        assert_eq!(route, ["uploads"]);
        let reel = std::env::current_dir().unwrap().join("reel");
        assert_eq!(
            body,
            json!({
                "paths": [reel],
                "team_id": "T",
                "teamspace_id": "S",
                "chunk_size": 64 << 20,
                "priority": -2,
                "manifest": "ascmhl",
                "delete_after": 30,
                "download_limit": 5,
                "tag_name": "dailies",
                "tag_id": "TAG",
                "unlimited_storage": true,
            })
        );
        let StartCommand::Link(args) = command else {
            panic!("a link upload")
        };
        assert!(args.common.wait);
    }

    #[test]
    fn the_seeds_portal_command_line_becomes_a_portal_upload() {
        let command = start_of(&[
            "masv",
            "upload",
            "start",
            "portal",
            "--subdomain=acme",
            "--sender=your-email@domain.tld",
            "--password=access code for the portal",
            "--metadata",
            "project=Dailies,reel=1",
            "/path/to/file/or/folder",
        ]);
        let (route, body) = start_request(&command).unwrap();
        assert_eq!(route, ["portals", "uploads"]);
        assert_eq!(
            body,
            json!({
                "paths": ["/path/to/file/or/folder"],
                "subdomain": "acme",
                "sender_email": "your-email@domain.tld",
                "access_code": "access code for the portal",
                "metadata": {"project": "Dailies", "reel": "1"},
            })
        );
    }

    #[test]
    fn start_refuses_what_the_api_would_not_take() {
        let refused: [&[&str]; 7] = [
            &["masv", "upload", "start", "link", "--team-id=T"],
            &["masv", "upload", "start", "link", "/x"],
            &["masv", "upload", "start", "email", "--team-id=T", "/x"],
            &["masv", "upload", "start", "portal", "--subdomain=a", "/x"],
            &[
                "masv",
                "upload",
                "start",
                "portal",
                "--sender=a@b.c",
                "--subdomain=a",
                "--metadata=oops",
                "/x",
            ],
            &[
                "masv",
                "upload",
                "start",
                "link",
                "--team-id=T",
                "--chunk-size=0",
                "/x",
            ],
            &["masv", "upload", "start", "fax", "--team-id=T", "/x"],
        ];
        for line in refused {
            assert!(Cli::try_parse_from(line).is_err(), "{line:?} parsed");
        }
        let command = start_of(&[
            "masv",
            "upload",
            "start",
            "email",
            "--emails=,",
            "--team-id=T",
            "/x",
        ]);
        let error = start_request(&command).unwrap_err().to_string();
        assert!(error.contains("--emails is empty"), "{error}");
    }

    #[test]
    fn the_seeds_management_command_lines_parse() {
        assert!(matches!(
            parse(&["masv", "upload", "ls"]).command,
            UploadCommand::Ls
        ));
        assert!(matches!(
            parse(&["masv", "upload", "status", "5c8b"]).command,
            UploadCommand::Status { id, follow: false } if id == "5c8b"
        ));
        assert!(matches!(
            parse(&["masv", "upload", "finalize", "5c8b"]).command,
            UploadCommand::Finalize { id } if id == "5c8b"
        ));
        assert!(matches!(
            parse(&["masv", "upload", "link", "5c8b"]).command,
            UploadCommand::Link { id } if id == "5c8b"
        ));
        assert!(matches!(
            parse(&["masv", "upload", "pause", "all"]).command,
            UploadCommand::Pause { target } if target == "all"
        ));
        assert!(matches!(
            parse(&["masv", "upload", "resume", "5c8b"]).command,
            UploadCommand::Resume { target } if target == "5c8b"
        ));
        assert!(matches!(
            parse(&["masv", "upload", "rm", "all", "--states=idle,error"]).command,
            UploadCommand::Rm { ref target, ref states, .. }
                if target == "all" && states == &[UploadState::Idle, UploadState::Error]
        ));
        assert!(Cli::try_parse_from(["masv", "upload", "rm", "all", "--remove-files"]).is_err());
    }
}
