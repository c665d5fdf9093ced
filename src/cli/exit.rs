//! How `masv` ends, for scripts: one exit status per kind of outcome ([`Status`]), the error
//! that carries a status ([`Failure`]), the one function that turns any error of a command
//! into its status ([`status_of`]), and the man page sections that document them.
//!
//! Decisions: a 409 of the agent (the transfer's state does not allow what was asked: resume
//! of a transfer held by its window, finalize of an upload that is not idle) is a refusal like
//! 401/403, so 4; an agent that does not answer in time or an answer that is not a masv agent's
//! count as unreachable (3): in every case no agent did what was asked. Declining the
//! confirmation of `rm all` is 1: nothing was done, and nothing went wrong.

use std::process::ExitCode;

use reqwest::StatusCode;

use super::agent::AgentError;

/// The exit statuses of `masv`, as listed in masv(1) and the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok = 0,
    /// Anything not below: a bad configuration, a local file, an agent error not listed.
    Error = 1,
    /// The command line is wrong (clap exits with it too).
    Usage = 2,
    Unreachable = 3,
    Refused = 4,
    NotFound = 5,
    TransferFailed = 6,
}

/// What a shell reports for a program stopped by Ctrl-C: `--wait` and `--follow` interrupted
/// (the transfer goes on in the agent).
pub const INTERRUPTED: u8 = 130;

impl From<Status> for ExitCode {
    fn from(status: Status) -> ExitCode {
        ExitCode::from(status as u8)
    }
}

/// An error that ends `masv` with its own status; its text is printed as `error: …`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub status: Status,
    message: String,
}

impl Failure {
    /// A command line that is wrong in a way clap cannot see (options that do not go together).
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            status: Status::Usage,
            message: message.into(),
        }
    }
}

impl AgentError {
    /// The status a failed call to the agent ends `masv` with.
    pub fn status(&self) -> Status {
        match self {
            AgentError::Unreachable { .. }
            | AgentError::TimedOut { .. }
            | AgentError::Unexpected { .. } => Status::Unreachable,
            AgentError::Api { status, .. } => match *status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::CONFLICT => {
                    Status::Refused
                }
                StatusCode::NOT_FOUND => Status::NotFound,
                _ => Status::Error,
            },
            AgentError::Misunderstood { .. } | AgentError::Transport { .. } => Status::Error,
        }
    }
}

/// The status of a command's error: the first [`Failure`] or [`AgentError`] in its chain (a
/// context added on the way keeps the cause's status), else 1.
pub fn status_of(error: &anyhow::Error) -> Status {
    error
        .chain()
        .find_map(|cause| {
            if let Some(failure) = cause.downcast_ref::<Failure>() {
                Some(failure.status)
            } else {
                cause.downcast_ref::<AgentError>().map(AgentError::status)
            }
        })
        .unwrap_or(Status::Error)
}

/// The man page sections every page carries (EXIT STATUS), and those of masv(1) alone
/// (ENVIRONMENT, FILES), in roff.
pub fn man_sections(top: bool) -> String {
    let mut roff = String::from(
        r".SH EXIT STATUS
.TP
\fB0\fR
Success.
.TP
\fB1\fR
Any other error: a bad configuration, a file that cannot be read, an error of the agent not
listed below, or \fBrm all\fR declined at its prompt.
.TP
\fB2\fR
Usage: the command line is wrong (an unknown option, a missing or bad value, options that do
not go together).
.TP
\fB3\fR
The agent is unreachable: nothing answers at \fB\-\-agent\-url\fR, it did not answer in time,
or what answered is not a masv agent.
.TP
\fB4\fR
Refused: the agent refused the request: 401 or 403 (no API token, or a wrong one), or 409
(the transfer's state does not allow it: finalizing an upload that is not idle, resuming a
transfer its automation's window holds).
.TP
\fB5\fR
Not found: no such download, upload or automation (404).
.TP
\fB6\fR
A transfer followed to its end (\fB\-\-wait\fR, \fB\-\-follow\fR) failed.
.TP
\fB130\fR
Interrupted (Ctrl\-C) while following a transfer, which goes on in the agent.
",
    );
    if top {
        roff.push_str(
            r".SH ENVIRONMENT
.TP
\fBMASV_AGENT_URL\fR
The agent that commands talk to (default http://127.0.0.1:8080).
.TP
\fBMASV_API_TOKEN\fR
The agent's API token: what commands send, or what \fBmasv server start\fR requires.
.TP
\fBMASV_CONFIG\fR
The agent's configuration file, where commands read its \fBapi_token\fR and \fBdata_dir\fR.
.TP
\fBMASV_DATA_DIR\fR
The agent's data folder, where commands look for its \fBapi\-token\fR file.
.TP
\fBMASV_API_KEY\fR, \fBMASV_CLOUD_URL\fR, \fBMASV_SHARE_LINK_BASE\fR
The MASV API key, the cloud API's URL and the base of share links (\fBmasv server start\fR).
.TP
\fBMASV_HUB_DATA\fR
The data folder of \fBmasv hub\fR commands.
.TP
\fBMASV_LOG_FORMAT\fR, \fBRUST_LOG\fR
Log format (text or json) and levels (e.g. info,masv_agent::transfer=debug).
.TP
\fBNO_COLOR\fR
No colour in logs (there is none when stderr is not a terminal or under journald).
.SH FILES
.TP
\fI/etc/masv\-agent/agent.toml\fR
The configuration of the packaged service (root:masv\-agent, 0640).
.TP
\fI/var/lib/masv\-agent/\fR
The service's data folder: its database and \fBapi\-token\fR (0600, in a 0700 folder).
.TP
\fI~/.local/share/masv\-agent/\fR
The data folder of an agent run by a user (\fB$XDG_DATA_HOME/masv\-agent\fR when set).
.TP
\fI/usr/lib/systemd/system/masv\-agent.service\fR
The packaged systemd unit; \fBsystemctl edit masv\-agent\fR adds drop\-ins.
",
        );
    }
    roff
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: StatusCode) -> anyhow::Error {
        AgentError::Api {
            status,
            message: "no".into(),
        }
        .into()
    }

    #[test]
    fn every_kind_of_failure_has_its_status_through_added_context() {
        assert_eq!(status_of(&api(StatusCode::UNAUTHORIZED)), Status::Refused);
        assert_eq!(status_of(&api(StatusCode::FORBIDDEN)), Status::Refused);
        assert_eq!(status_of(&api(StatusCode::CONFLICT)), Status::Refused);
        assert_eq!(status_of(&api(StatusCode::NOT_FOUND)), Status::NotFound);
        assert_eq!(status_of(&api(StatusCode::BAD_REQUEST)), Status::Error);
        let unreachable = anyhow::Error::from(AgentError::Unreachable { url: "u".into() })
            .context("listing the downloads");
        assert_eq!(status_of(&unreachable), Status::Unreachable);
        assert_eq!(
            status_of(&Failure::usage("--states goes with rm all").into()),
            Status::Usage
        );
        assert_eq!(status_of(&anyhow::anyhow!("a local file")), Status::Error);
        assert_eq!(ExitCode::from(Status::TransferFailed), ExitCode::from(6));
    }
}
