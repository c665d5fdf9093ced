//! `command`: a program run without a shell, the payload on its stdin, the main fields in its
//! environment, in a working folder, killed (with everything it started) at its timeout. Its
//! exit status and the tail of its output are what the attempt records.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::{Outcome, Payload};

/// How much of a command's output is kept: its last bytes.
const TAIL: usize = 2000;

pub(super) async fn run(
    program: &Path,
    args: &[String],
    working_dir: &Path,
    payload: &Payload,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Outcome {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .current_dir(working_dir)
        .envs(environment(payload))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Its own process group: the kill at the timeout reaches what it started too.
    #[cfg(unix)]
    command.process_group(0);
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome::Retry(format!(
                "cannot run {} in {}: {e}",
                program.display(),
                working_dir.display()
            ));
        }
    };
    let pid = child.id();
    let body = serde_json::to_vec(payload).expect("a payload serializes");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // A program that does not read its stdin must not block: the write goes on beside it.
    let feed = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let stdout = tokio::spawn(tail(child.stdout.take().expect("stdout is piped")));
    let stderr = tokio::spawn(tail(child.stderr.take().expect("stderr is piped")));
    let status = tokio::select! {
        status = child.wait() => Some(status),
        _ = tokio::time::sleep(timeout) => None,
        _ = cancel.cancelled() => None,
    };
    if status.is_none() {
        kill_group(pid);
        let _ = child.kill().await;
    }
    feed.abort();
    let out = stdout.await.unwrap_or_default();
    let err = stderr.await.unwrap_or_default();
    let mut output = String::new();
    for (name, text) in [("stdout", out), ("stderr", err)] {
        if !text.trim().is_empty() {
            output.push_str(&format!("{name}: {}\n", text.trim_end()));
        }
    }
    let output = output.trim_end().to_owned();
    match status {
        None if cancel.is_cancelled() => Outcome::Retry("the agent stopped while it ran".into()),
        None => Outcome::Retry(with_output(
            format!(
                "{} did not finish within {timeout:?}: killed",
                program.display()
            ),
            &output,
        )),
        Some(Err(e)) => Outcome::Retry(format!("waiting for {}: {e}", program.display())),
        Some(Ok(status)) if status.success() => Outcome::Delivered(if output.is_empty() {
            "exit status 0".into()
        } else {
            format!("exit status 0\n{output}")
        }),
        Some(Ok(status)) => Outcome::Retry(with_output(
            format!("{} ended with {status}", program.display()),
            &output,
        )),
    }
}

fn with_output(error: String, output: &str) -> String {
    if output.is_empty() {
        error
    } else {
        format!("{error}\n{output}")
    }
}

/// The environment a command gets: the event's main fields.
fn environment(p: &Payload) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("MASV_EVENT", p.event.clone()),
        ("MASV_EVENT_ID", p.id.clone()),
        ("MASV_RULE", p.rule.clone().unwrap_or_default()),
        ("MASV_ERROR", p.error.clone().unwrap_or_default()),
        ("MASV_LINK", p.link.clone().unwrap_or_default()),
        ("MASV_FILES", p.counts.files_done.to_string()),
        ("MASV_BYTES", p.bytes.done.to_string()),
        // One path a line (a name with a newline in it is better read from the payload).
        (
            "MASV_PATHS",
            p.files
                .iter()
                .filter(|f| f.state == "complete")
                .map(|f| f.local_path.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    ];
    if let Some(t) = &p.transfer {
        env.push(("MASV_TRANSFER_ID", t.id.clone()));
        env.push(("MASV_TRANSFER_KIND", t.kind.clone()));
    }
    if let Some(pkg) = &p.package {
        env.push(("MASV_PACKAGE_ID", pkg.id.clone().unwrap_or_default()));
        env.push(("MASV_PACKAGE_NAME", pkg.name.clone().unwrap_or_default()));
    }
    env
}

/// The last [`TAIL`] bytes of a stream, read to its end.
async fn tail(mut stream: impl AsyncRead + Unpin) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * TAIL {
            kept.drain(..kept.len() - TAIL);
        }
    }
    if kept.len() > TAIL {
        kept.drain(..kept.len() - TAIL);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

fn kill_group(pid: Option<u32>) {
    #[cfg(unix)]
    if let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    #[cfg(not(unix))]
    let _ = pid;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload() -> Payload {
        Payload::rule(
            super::super::event::RULE_FAILED,
            "outbox",
            Some("gone".into()),
        )
    }

    #[tokio::test]
    async fn a_command_past_its_timeout_is_killed_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let start = std::time::Instant::now();
        // The shell's child keeps the output pipes open: only a kill of the group ends it.
        let outcome = run(
            Path::new("/bin/sh"),
            &["-c".into(), "echo started; sleep 30 & wait".into()],
            dir.path(),
            &payload(),
            Duration::from_millis(300),
            &CancellationToken::new(),
        )
        .await;
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        match outcome {
            Outcome::Retry(e) => {
                assert!(e.contains("did not finish within 300ms: killed"), "{e}");
                assert!(e.contains("stdout: started"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_failing_command_is_tried_again_with_its_status_and_output_tail() {
        let dir = tempfile::tempdir().unwrap();
        let long = "x".repeat(5000);
        let outcome = run(
            Path::new("/bin/sh"),
            &[
                "-c".into(),
                format!("echo {long} >&2; echo \"$MASV_EVENT $MASV_RULE\" >&2; exit 3"),
            ],
            dir.path(),
            &payload(),
            Duration::from_secs(20),
            &CancellationToken::new(),
        )
        .await;
        match outcome {
            Outcome::Retry(e) => {
                assert!(e.contains("exit status: 3"), "{e}");
                assert!(e.ends_with("rule.failed outbox"), "{e}");
                assert!(
                    e.len() < TAIL + 200,
                    "only the tail is kept: {} bytes",
                    e.len()
                );
            }
            other => panic!("{other:?}"),
        }
        let missing = run(
            &dir.path().join("no-such-program"),
            &[],
            dir.path(),
            &payload(),
            Duration::from_secs(5),
            &CancellationToken::new(),
        )
        .await;
        assert!(
            matches!(&missing, Outcome::Retry(e) if e.contains("cannot run") && e.contains("no-such-program")),
            "{missing:?}"
        );
    }
}
