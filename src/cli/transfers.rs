//! What `masv download …` and `masv upload …` share once a transfer exists: `ls`, `status`,
//! `pause`, `resume` and `rm`, over the same routes under `/downloads` or `/uploads`
//! (docs/agent-api.md). Each command module names its [`Noun`]; only `start` (and, for uploads,
//! `finalize` and `link`) live in the command modules themselves.

use std::process::ExitCode;

use serde::Deserialize;
use serde_json::Value;

use super::agent::{self, AgentClient, Column, Followed, null_as_default, print_json};
use super::exit::{Failure, Status};

/// What a command manages: its routes and the words its messages use.
#[derive(Debug, Clone, Copy)]
pub struct Noun {
    /// `download`, as in "Download 5c8b… paused".
    pub one: &'static str,
    /// The route under `/api/v1`, and the plural: `downloads`.
    pub route: &'static str,
    /// The key of the id lists that pause/resume all and rm answer: `download_ids`.
    pub ids_key: &'static str,
}

pub const DOWNLOADS: Noun = Noun {
    one: "download",
    route: "downloads",
    ids_key: "download_ids",
};

pub const UPLOADS: Noun = Noun {
    one: "upload",
    route: "uploads",
    ids_key: "upload_ids",
};

impl Noun {
    /// `Download`, to start a sentence.
    fn title(self) -> String {
        let mut chars = self.one.chars();
        chars
            .next()
            .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
            .unwrap_or_default()
    }
}

/// A transfer as the list routes show it. Read tolerantly: fields the agent adds are ignored,
/// and those of the other kind of transfer are simply absent.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Summary {
    #[serde(alias = "download_id", alias = "upload_id")]
    pub id: String,
    #[serde(flatten)]
    pub progress: agent::Progress,
    /// Downloads: the Link and the folder.
    pub url: Option<String>,
    pub dst_folder: Option<String>,
    /// Uploads: `team`, `link` or `portal`, the share link, the recipients, the portal.
    pub kind: Option<String>,
    pub link: Option<String>,
    pub recipients: Option<Vec<String>>,
    pub subdomain: Option<String>,
    pub package_id: Option<String>,
    pub package_name: Option<String>,
    pub priority: Option<i64>,
    pub rule: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

/// The detail route: the summary and its files.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Detail {
    #[serde(flatten)]
    pub summary: Summary,
    #[serde(deserialize_with = "null_as_default")]
    pub files: Vec<TransferFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TransferFile {
    pub name: String,
    /// The folder inside the Package, `/`-separated; `""` or `"/"` for its root.
    pub path: Option<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub size: u64,
    pub state: String,
    #[serde(deserialize_with = "null_as_default")]
    pub bytes_done: u64,
    pub error: Option<String>,
}

impl TransferFile {
    /// Where the file sits in the Package: `folder/sub/name.mov`.
    pub fn package_path(&self) -> String {
        let folder = self.path.as_deref().unwrap_or("").trim_matches('/');
        if folder.is_empty() {
            self.name.clone()
        } else {
            format!("{folder}/{}", self.name)
        }
    }
}

/// Follows a transfer until one of `end_states`, with live progress unless `quiet`; `None` when
/// the user pressed Ctrl-C (after saying how to watch it again). Gives the last detail, read and
/// as answered (for `--json`).
pub async fn follow_to_end(
    client: &AgentClient,
    noun: Noun,
    id: &str,
    end_states: &[&str],
    quiet: bool,
) -> anyhow::Result<Option<(Detail, Value)>> {
    let label = format!("{} {id}", noun.title());
    match agent::follow(client, &[noun.route, id], &label, end_states, quiet).await? {
        Followed::Interrupted => {
            eprintln!(
                "Stopped watching; {} {id} goes on in the agent at {} (masv {} status {id} --follow).",
                noun.one,
                client.url(),
                noun.one
            );
            Ok(None)
        }
        Followed::Ended(value) => {
            let what = format!("GET /api/v1/{}/{{id}}", noun.route);
            let detail: Detail = client.decode(&value, &what)?;
            Ok(Some((detail, value)))
        }
    }
}

/// The names of clap states as the API takes them (`--states=complete,error`).
pub fn state_names<T: clap::ValueEnum>(states: &[T]) -> Vec<String> {
    states
        .iter()
        .filter_map(|s| s.to_possible_value())
        .map(|v| v.get_name().to_owned())
        .collect()
}

/// Prints why a followed transfer failed, file by file, and how to retry; exit status 6.
pub fn report_failure(noun: Noun, detail: &Detail) -> ExitCode {
    let id = &detail.summary.id;
    let reason = detail
        .summary
        .progress
        .error
        .as_deref()
        .unwrap_or("the agent gave no reason");
    eprintln!("error: {} {id} failed: {reason}", noun.one);
    for file in detail.files.iter().filter(|f| f.state == "error") {
        let why = file.error.as_deref().unwrap_or("no reason given");
        eprintln!("  {}: {why}", file.package_path());
    }
    let reasons: Vec<&str> = std::iter::once(reason)
        .chain(detail.files.iter().filter_map(|f| f.error.as_deref()))
        .collect();
    match advice(&reasons) {
        Some(advice) => eprintln!("{advice}"),
        None => eprintln!("Retry what failed with 'masv {} resume {id}'.", noun.one),
    }
    Status::TransferFailed.into()
}

/// What to do about failures that resuming cannot mend (a permanent answer of the service, a
/// name refused for good); `None` when resuming may help.
fn advice(reasons: &[&str]) -> Option<&'static str> {
    let any = |needle: &str| reasons.iter().any(|r| r.contains(needle));
    if any(": 404") {
        Some(
            "What the transfer points at is gone (404): ask the sender for a new link; resuming will not help.",
        )
    } else if any(": 401") {
        Some(
            "The service refused the credentials (401): check the password, access code or API key and start the transfer again; resuming will not help.",
        )
    } else if any(": 403") || any(": 410") {
        Some(
            "The link has expired, was disabled or reached its download limit: ask the sender for a new one; resuming will not help.",
        )
    } else if reasons.iter().skip(1).all(|r| r.starts_with("refused: ")) && reasons.len() > 1 {
        Some(
            "The files named above can never be written here: their names would leave the destination. Ask the sender to rename them.",
        )
    } else {
        None
    }
}

pub async fn list(client: &AgentClient, noun: Noun, json: bool) -> anyhow::Result<ExitCode> {
    let answer = client.get(&[noun.route]).await?;
    if json {
        print_json(&answer);
        return Ok(ExitCode::SUCCESS);
    }
    let transfers: Vec<Summary> = client.decode(&answer, &format!("GET /api/v1/{}", noun.route))?;
    if transfers.is_empty() {
        println!("No {}.", noun.route);
    } else {
        print!("{}", list_table(&transfers));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn list_table(transfers: &[Summary]) -> String {
    let rows: Vec<Vec<String>> = transfers
        .iter()
        .map(|t| {
            let p = &t.progress;
            vec![
                t.id.clone(),
                p.shown_state(),
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
                t.package_name.clone().unwrap_or_else(|| "-".into()),
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

pub async fn status(
    client: &AgentClient,
    noun: Noun,
    id: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let answer = client.get(&[noun.route, id]).await?;
    if json {
        print_json(&answer);
        return Ok(ExitCode::SUCCESS);
    }
    let detail: Detail = client.decode(&answer, &format!("GET /api/v1/{}/{{id}}", noun.route))?;
    print!("{}", detail_text(noun, &detail));
    Ok(ExitCode::SUCCESS)
}

pub fn detail_text(noun: Noun, detail: &Detail) -> String {
    let d = &detail.summary;
    let p = &d.progress;
    let title = noun.title();
    let mut lines: Vec<(&str, String)> = vec![(&title, d.id.clone())];
    lines.push(("State", p.shown_state()));
    if let Some(waiting) = &p.waiting {
        let next = match &p.next_try_at {
            Some(at) if p.state == "transferring" => format!("; next try at {at}"),
            _ => String::new(),
        };
        lines.push(("Waiting", format!("{waiting}{next}")));
    }
    if let Some(error) = &p.error {
        lines.push(("Error", error.clone()));
    }
    if let Some(kind) = &d.kind {
        lines.push(("Kind", kind.clone()));
    }
    match (&d.package_name, &d.package_id) {
        (Some(name), Some(id)) => lines.push(("Package", format!("{name} ({id})"))),
        (Some(only), None) | (None, Some(only)) => lines.push(("Package", only.clone())),
        (None, None) => {}
    }
    if let Some(url) = &d.url {
        lines.push(("Link", url.clone()));
    }
    if let Some(link) = &d.link {
        lines.push(("Link", link.clone()));
    }
    if let Some(recipients) = d.recipients.as_ref().filter(|r| !r.is_empty()) {
        lines.push(("Recipients", recipients.join(", ")));
    }
    if let Some(subdomain) = &d.subdomain {
        lines.push(("Portal", subdomain.clone()));
    }
    if let Some(dst) = &d.dst_folder {
        lines.push(("Destination", dst.clone()));
    }
    if let Some(rule) = &d.rule {
        lines.push(("Rule", rule.clone()));
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

/// The ids a pause/resume all or rm answered.
fn ids_of(noun: Noun, client: &AgentClient, answer: &Value, what: &str) -> anyhow::Result<usize> {
    let ids: Vec<String> = client.decode(
        answer.get(noun.ids_key).unwrap_or(&Value::Null),
        &format!("{what} ({})", noun.ids_key),
    )?;
    Ok(ids.len())
}

pub async fn pause_or_resume(
    client: &AgentClient,
    noun: Noun,
    target: &str,
    pause: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let action = if pause { "pause" } else { "resume" };
    let done = if pause { "paused" } else { "resumed" };
    if target == "all" {
        let answer = client.post_empty(&[noun.route, action]).await?;
        if json {
            print_json(&answer);
            return Ok(ExitCode::SUCCESS);
        }
        let what = format!("POST /api/v1/{}/{action}", noun.route);
        let count = ids_of(noun, client, &answer, &what)?;
        println!("{}", count_text(noun, count, done));
        return Ok(ExitCode::SUCCESS);
    }
    let answer = client.post_empty(&[noun.route, target, action]).await?;
    if json {
        print_json(&answer);
    } else {
        let what = format!("POST /api/v1/{}/{{id}}/{action}", noun.route);
        let summary: Summary = client.decode(&answer, &what)?;
        let expected = if pause { "paused" } else { "transferring" };
        if summary.progress.state == expected {
            println!("{} {target} {done}.", noun.title());
        } else {
            println!("{} {target} is {}.", noun.title(), summary.progress.state);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `rm ID` or `rm all [--states=…]`; `remove_files` only for downloads (uploads never delete
/// their sources). `rm all` asks first when stdin is a terminal, unless `yes`; from a script
/// (stdin not a terminal) it removes without asking, as MASV Agent's CLI does.
pub async fn remove(
    client: &AgentClient,
    noun: Noun,
    target: &str,
    remove_files: bool,
    states: &[&str],
    yes: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    if target == "all" && !yes && std::io::stdin().is_terminal() {
        let question = rm_all_question(noun, remove_files, states);
        let stdin = std::io::stdin();
        if !confirmed(&question, &mut stdin.lock(), &mut std::io::stderr())? {
            eprintln!("Nothing removed.");
            return Ok(Status::Error.into());
        }
    }
    let mut query = Vec::new();
    if remove_files {
        query.push(("remove_files", "true".to_owned()));
    }
    let answer = if target == "all" {
        if !states.is_empty() {
            query.push(("states", states.join(",")));
        }
        let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        client.delete(&[noun.route], &query).await?
    } else {
        if !states.is_empty() {
            return Err(Failure::usage(format!(
                "--states goes with 'masv {} rm all'; to remove {} {target}, give its id alone",
                noun.one, noun.one
            ))
            .into());
        }
        let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        client.delete(&[noun.route, target], &query).await?
    };
    if json {
        print_json(&answer);
        return Ok(ExitCode::SUCCESS);
    }
    let count = ids_of(
        noun,
        client,
        &answer,
        &format!("DELETE /api/v1/{}", noun.route),
    )?;
    let with_files = match (remove_files, count) {
        (false, _) => "",
        (true, 1) => " with its files",
        (true, _) => " with their files",
    };
    if target == "all" {
        println!("{}{with_files}.", count_text(noun, count, "removed"));
    } else {
        println!("{} {target} removed{with_files}.", noun.title());
    }
    Ok(ExitCode::SUCCESS)
}

/// `Remove every download in state complete or error, with its files?`
fn rm_all_question(noun: Noun, remove_files: bool, states: &[&str]) -> String {
    let mut question = format!("Remove every {}", noun.one);
    if !states.is_empty() {
        question.push_str(&format!(" in state {}", states.join(" or ")));
    }
    if remove_files {
        question.push_str(", with its files");
    }
    question.push('?');
    question
}

/// Asks `question [y/N]` on `output` and reads the answer: only `y` or `yes` (any case) agree;
/// an empty line or the end of input decline.
fn confirmed(
    question: &str,
    input: &mut dyn std::io::BufRead,
    output: &mut dyn std::io::Write,
) -> anyhow::Result<bool> {
    write!(output, "{question} [y/N] ")?;
    output.flush()?;
    let mut answer = String::new();
    input.read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// `1 download paused`, `3 uploads removed`, `No downloads resumed`.
pub fn count_text(noun: Noun, count: usize, done: &str) -> String {
    match count {
        0 => format!("No {} {done}", noun.route),
        1 => format!("1 {} {done}", noun.one),
        n => format!("{n} {} {done}", noun.route),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_list_shows_one_row_per_transfer() {
        let downloads: Vec<Summary> = serde_json::from_value(json!([
            {"download_id": "f98b1e92-1c67-48e4-9b9c-f2bb27a33375", "state": "transferring",
             "url": "https://get.massive.io/ID", "dst_folder": "/dst", "package_id": "01",
             "package_name": "Dailies", "priority": 0, "created_at": "2026-11-22T21:00:00.000Z",
             "updated_at": "2026-11-22T21:00:00.000Z", "bytes_done": 1536, "bytes_total": 3072,
             "bytes_per_second": 1024, "files_total": 3, "files_done": 1, "error": null},
            {"upload_id": "0b", "state": "error", "package_name": null, "kind": "link",
             "bytes_done": 0, "bytes_total": 0, "bytes_per_second": 0, "error": "Link expired"},
            {"download_id": "0c", "state": "transferring", "package_name": "Next",
             "bytes_done": 0, "bytes_total": 1024, "bytes_per_second": 0, "queue_position": 2}
        ]))
        .unwrap();
        assert_eq!(
            list_table(&downloads),
            "\
ID                                    STATE         PROGRESS     SIZE      SPEED  NAME
f98b1e92-1c67-48e4-9b9c-f2bb27a33375  transferring       50%  3.0 KiB  1.0 KiB/s  Dailies
0b                                    error                -        -          -  -
0c                                    queued (2)          0%  1.0 KiB      0 B/s  Next
"
        );
    }

    #[test]
    fn advice_fits_the_failure_and_resume_is_offered_only_where_it_helps() {
        let gone = advice(&["link lookup: 404 no such link"]).unwrap();
        assert!(
            gone.contains("new link") && !gone.contains("masv"),
            "{gone}"
        );
        assert!(
            advice(&["link lookup: 401 wrong password"])
                .unwrap()
                .contains("password")
        );
        assert!(
            advice(&["link lookup: 410 expired"])
                .unwrap()
                .contains("new one")
        );
        let refused = advice(&["1 of 3 files failed", "refused: refusing \"../x\""]).unwrap();
        assert!(refused.contains("rename"), "{refused}");
        assert_eq!(advice(&["1 of 3 files failed", "storage: 503 busy"]), None);
    }

    #[test]
    fn the_detail_shows_each_file_and_its_error() {
        let detail: Detail = serde_json::from_value(json!({
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
        let text = detail_text(DOWNLOADS, &detail);
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
    fn an_upload_shows_its_kind_link_and_recipients() {
        let detail: Detail = serde_json::from_value(json!({
            "upload_id": "5c8b", "state": "complete", "kind": "team",
            "link": "https://get.massive.io/L?secret=S", "recipients": ["a@x.com", "b@x.com"],
            "package_name": "Dailies", "bytes_done": 5, "bytes_total": 5,
            "files_total": 1, "files_done": 1, "rule": "drop box",
            "files": [{"name": "a.mov", "path": "day 1", "size": 5, "state": "complete",
                       "bytes_done": 5, "local_path": "/src/day 1/a.mov"}]
        }))
        .unwrap();
        let text = detail_text(UPLOADS, &detail);
        assert!(
            text.starts_with("Upload      5c8b\nState       complete\nKind        team\n"),
            "{text}"
        );
        assert!(
            text.contains("Link        https://get.massive.io/L?secret=S\n"),
            "{text}"
        );
        assert!(text.contains("Recipients  a@x.com, b@x.com\n"), "{text}");
        assert!(text.contains("Rule        drop box\n"), "{text}");
        assert!(
            text.contains("complete      100%   5 B  day 1/a.mov\n"),
            "{text}"
        );
    }

    #[test]
    fn rm_all_asks_and_only_yes_agrees() {
        let ask = |answer: &str| {
            let mut shown = Vec::new();
            let agreed = confirmed("Remove?", &mut answer.as_bytes(), &mut shown).unwrap();
            assert_eq!(String::from_utf8(shown).unwrap(), "Remove? [y/N] ");
            agreed
        };
        assert!(ask("y\n") && ask("YES\n") && ask(" yes "));
        assert!(!ask("\n") && !ask("") && !ask("n\n") && !ask("yess\n"));
        assert_eq!(
            rm_all_question(DOWNLOADS, true, &["complete", "error"]),
            "Remove every download in state complete or error, with its files?"
        );
        assert_eq!(rm_all_question(UPLOADS, false, &[]), "Remove every upload?");
    }

    #[test]
    fn counts_read_as_sentences() {
        assert_eq!(count_text(DOWNLOADS, 0, "paused"), "No downloads paused");
        assert_eq!(count_text(UPLOADS, 1, "resumed"), "1 upload resumed");
        assert_eq!(count_text(DOWNLOADS, 4, "removed"), "4 downloads removed");
    }
}
