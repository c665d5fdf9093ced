//! The `masv` command line (clap). Agent commands talk to a running agent over its REST API,
//! never to its database; `masv hub …` commands run or administer a hub's data folder. Also
//! the logging set-up, shell completions and the man pages, all generated from this tree.

mod agent;
mod automation;
mod bandwidth;
mod config;
mod docs;
mod download;
mod events;
mod exit;
mod hub;
mod mhl;
mod server;
mod transfers;
mod upload;

use std::process::ExitCode;

use clap::builder::TypedValueParser as _;
use clap::{Parser, Subcommand};

use crate::config::LogFormat;

/// `masv --version`: the version, the git commit it was built from ("unknown" from a source
/// tarball) and the build date (SOURCE_DATE_EPOCH's when set), from build.rs. `-V` prints the
/// version alone, which is also what the man pages carry.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("MASV_GIT_COMMIT"),
    ", built ",
    env!("MASV_BUILD_DATE"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "masv",
    version,
    long_version = LONG_VERSION,
    about = "A MASV-compatible file-transfer agent and hub",
    after_help = "Examples:\n  masv server start --config /etc/masv-agent/agent.toml\n  masv download start --url 'https://get.massive.io/LINK_ID?secret=SECRET' --destination /srv/in --wait\n  masv download ls"
)]
pub struct Cli {
    /// How logs are written to stderr: text (readable) or json (one object a line, for log
    /// collectors) [default: [server] log_format, else text].
    #[arg(
        long,
        global = true,
        env = "MASV_LOG_FORMAT",
        value_parser = clap::builder::PossibleValuesParser::new(["text", "json"])
            .map(|s| s.parse::<LogFormat>().expect("one of the possible values"))
    )]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run or administer a MASV-compatible hub.
    #[command(
        subcommand,
        after_help = "Examples:\n  masv hub serve --data /var/lib/masv-hub --listen 127.0.0.1:9000\n  masv hub team add --data /var/lib/masv-hub --name 'Post House'"
    )]
    Hub(hub::HubCommand),
    /// Run the agent.
    #[command(
        subcommand,
        after_help = "Example:\n  masv server start --config /etc/masv-agent/agent.toml"
    )]
    Server(server::ServerCommand),
    /// Download Packages through a running agent (start, ls, status, pause, resume, rm).
    #[command(
        after_help = "Examples:\n  masv download start --url 'https://get.massive.io/LINK_ID?secret=SECRET' --destination /srv/in\n  masv download ls --json"
    )]
    Download(download::DownloadArgs),
    /// Upload files and folders through a running agent (start email|link|portal, ls, status,
    /// pause, resume, finalize, link, rm).
    #[command(
        after_help = "Examples:\n  masv upload start link --team-id TEAM_ID /srv/out/day1\n  masv upload ls --json"
    )]
    Upload(upload::UploadArgs),
    /// The automations of a running agent (ls, status, run, enable, disable).
    #[command(after_help = "Examples:\n  masv automation ls\n  masv automation run nightly-link")]
    Automation(automation::AutomationArgs),
    /// Rate limits and FIFO caps of a running agent (show, set).
    #[command(
        after_help = "Examples:\n  masv bandwidth show\n  masv bandwidth set --upload 50Mbit --max-active-downloads 2"
    )]
    Bandwidth(bandwidth::BandwidthArgs),
    /// Events of the post-transfer actions and their deliveries (ls, show, retry).
    #[command(after_help = "Examples:\n  masv events ls --failed\n  masv events retry EVENT_ID")]
    Events(events::EventsArgs),
    /// Check a configuration file, or print its JSON Schema.
    #[command(
        subcommand,
        after_help = "Example:\n  masv config check /etc/masv-agent/agent.toml"
    )]
    Config(config::ConfigCommand),
    /// Add an ASC MHL generation to a folder (FOLDER/ascmhl/): every file hashed, checked
    /// against earlier generations.
    #[command(
        after_help = "Examples:\n  masv seal /srv/masv/inbox/day1\n  masv seal --hash md5 --json /srv/out/day1"
    )]
    Seal(mhl::SealArgs),
    /// Verify a folder against its ASC MHL history: exit 1 with the altered, missing and new
    /// files.
    #[command(
        after_help = "Examples:\n  masv verify /srv/masv/inbox/day1\n  masv verify --json /srv/masv/inbox/day1"
    )]
    Verify(mhl::VerifyArgs),
    /// Print the completion script of a shell.
    #[command(
        after_help = "Examples:\n  masv completions bash > /etc/bash_completion.d/masv\n  masv completions zsh > \"${fpath[1]}/_masv\"\n  masv completions fish > ~/.config/fish/completions/masv.fish"
    )]
    Completions(docs::CompletionsArgs),
    /// Print the man page, or write one page per command into a folder.
    #[command(
        after_help = "Examples:\n  masv man | man -l -\n  masv man --out /usr/local/share/man/man1"
    )]
    Man(docs::ManArgs),
}

/// Runs the command line; the exit status says how it went (`exit::Status`).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::Status::Error.into();
        }
    };
    let log_format = cli.log_format;
    if !matches!(cli.command, Command::Server(_)) {
        // The agent sets its logging up once it has read its configuration.
        init_logging(log_format.unwrap_or_default(), None);
    }
    let result = runtime.block_on(async {
        match cli.command {
            Command::Hub(command) => hub::run(command).await,
            Command::Server(command) => server::run(command, log_format).await,
            Command::Download(args) => download::run(args).await,
            Command::Upload(args) => upload::run(args).await,
            Command::Automation(args) => automation::run(args).await,
            Command::Bandwidth(args) => bandwidth::run(args).await,
            Command::Events(args) => events::run(args).await,
            Command::Config(command) => config::run(command),
            Command::Seal(args) => mhl::seal(args),
            Command::Verify(args) => mhl::verify(args),
            Command::Completions(args) => docs::completions(args),
            Command::Man(args) => docs::man(args),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::status_of(&e).into()
        }
    }
}

/// Logs to stderr in `format`, at the levels of RUST_LOG, else `level`, else `info`.
/// Colour in text logs only on a terminal: never in a file, a pipe or journald (which sets
/// `JOURNAL_STREAM`), and never when `NO_COLOR` is set (no-color.org).
fn colour_logs() -> bool {
    use std::io::IsTerminal;
    colour_allowed(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
        std::env::var_os("JOURNAL_STREAM").is_some(),
    )
}

fn colour_allowed(terminal: bool, no_color: bool, journal: bool) -> bool {
    terminal && !no_color && !journal
}

fn init_logging(format: LogFormat, level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
            .unwrap_or_else(|e| {
                eprintln!(
                    "warning: RUST_LOG={directives:?} is not understood ({e}); logging at info"
                );
                EnvFilter::new("info")
            }),
        // `[server] log_level` was checked with the configuration.
        _ => EnvFilter::new(level.unwrap_or("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(colour_logs()).init(),
        // The event's fields at the top level, and the transfer span's (transfer_id, kind,
        // rule) under "span".
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

#[cfg(test)]
mod colour_tests {
    use super::colour_allowed;

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color_or_journald() {
        assert!(colour_allowed(true, false, false));
        assert!(!colour_allowed(false, false, false), "a file or a pipe");
        assert!(!colour_allowed(true, true, false), "NO_COLOR");
        assert!(!colour_allowed(true, false, true), "journald");
    }
}
