//! The `masv` command line end to end: the real binary against an agent and a hub, as a script
//! written for MASV Agent would run it (seeds 000 and 002).

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::agent::{ProcessAgent, TestAgent, engine_config};
use crate::support::{FileSpec, MIB, World, pseudo_random_bytes};

/// Runs `masv ARGS` against the agent at `agent_url` (`…/api/v1`, as the docs' curl examples
/// write it) and waits for it.
pub async fn masv(agent_url: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_masv"))
        .args(args)
        .env("MASV_AGENT_URL", agent_url)
        .env_remove("MASV_API_TOKEN")
        .output()
        .await
        .expect("the masv binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the command succeeded, showing what it printed otherwise.
pub fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        stdout(output),
        stderr(output)
    );
    stdout(output)
}

fn json_of(output: &Output) -> Value {
    let text = ok(output);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn uploading_agent_config(world: &World) -> masv_agent::transfer::EngineConfig {
    let mut config = engine_config(&world.hub.base_url);
    config.api_key = Some(world.api_key.clone());
    config
}

fn str_arg(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_folder_goes_up_by_link_and_comes_down_with_the_cli_alone() {
    let world = World::new().await;
    let agent = TestAgent::start(uploading_agent_config(&world)).await;
    let url = agent.api.base.clone();
    let src = tempfile::tempdir().unwrap();
    let reel = src.path().join("Reel 1");
    std::fs::create_dir_all(reel.join("day1")).unwrap();
    let big = pseudo_random_bytes(3, 6 * MIB + 11);
    std::fs::write(reel.join("day1/a.mov"), &big).unwrap();
    std::fs::write(reel.join("notes.txt"), b"use take 3").unwrap();
    std::fs::write(reel.join(".DS_Store"), b"junk").unwrap();

    let started = ok(&masv(
        &url,
        &[
            "upload",
            "start",
            "link",
            "--team-id",
            &world.team_id,
            "--name=Dailies",
            "--chunk-size=5MiB",
            "--wait",
            str_arg(&reel),
        ],
    )
    .await);
    // The seed's first line, then the end of --wait (progress lines in between, no terminal).
    let first = started.lines().next().unwrap_or_default();
    let (upload_id, link) = first
        .strip_prefix("Upload ")
        .and_then(|rest| rest.split_once(" started. Shareable link: "))
        .unwrap_or_else(|| panic!("the seed's start line: {started}"));
    // MASV's link base whatever the cloud ([server] share_link_base); the agent downloads it
    // from its own cloud all the same.
    assert!(link.starts_with("https://get.massive.io/"), "{link}");
    assert!(
        started.contains(&format!("Upload {upload_id} complete:")),
        "{started}"
    );

    let listed = json_of(&masv(&url, &["upload", "ls", "--json"]).await);
    assert_eq!(listed[0]["upload_id"], upload_id, "{listed}");
    assert_eq!(listed[0]["state"], "complete");
    let table = ok(&masv(&url, &["upload", "ls"]).await);
    assert!(table.starts_with("ID "), "{table}");
    assert!(
        table.contains(upload_id) && table.contains("Dailies"),
        "{table}"
    );
    let status = ok(&masv(&url, &["upload", "status", upload_id]).await);
    assert!(status.contains("State     complete"), "{status}");
    assert!(status.contains("day1/a.mov"), "{status}");
    assert!(!status.contains(".DS_Store"), "{status}");

    // Another link for the same package, then everything back down through the first one.
    let another = ok(&masv(&url, &["upload", "link", upload_id]).await);
    assert!(
        another.trim().starts_with("https://get.massive.io/"),
        "{another}"
    );
    assert_ne!(another.trim(), link);
    let dst = tempfile::tempdir().unwrap();
    let done = json_of(
        &masv(
            &url,
            &[
                "download",
                "start",
                "--url",
                link,
                "--destination",
                str_arg(dst.path()),
                "--wait",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(done["state"], "complete", "{done}");
    let root = dst.path().join("Dailies");
    assert_eq!(std::fs::read(root.join("Reel 1/day1/a.mov")).unwrap(), big);
    assert_eq!(
        std::fs::read(root.join("Reel 1/notes.txt")).unwrap(),
        b"use take 3"
    );
    assert!(!root.join("Reel 1/.DS_Store").exists());

    let removed = ok(&masv(&url, &["upload", "rm", "all", "--states=complete"]).await);
    assert_eq!(removed.trim(), "1 upload removed.");
    let removed = ok(&masv(&url, &["download", "rm", "all", "--states", "complete"]).await);
    assert_eq!(removed.trim(), "1 download removed.");
    assert_eq!(
        ok(&masv(&url, &["upload", "ls"]).await).trim(),
        "No uploads."
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_auto_finalize_wait_stops_at_idle_and_finalize_sends_the_email() {
    let world = World::new().await;
    let mut config = uploading_agent_config(&world);
    config.auto_finalize = false;
    let agent = TestAgent::start(config).await;
    let url = agent.api.base.clone();
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("cut.mov");
    std::fs::write(&file, pseudo_random_bytes(9, MIB)).unwrap();

    let started = ok(&masv(
        &url,
        &[
            "upload",
            "start",
            "email",
            "--emails=ana@example.com,bo@example.com",
            "--team-id",
            &world.team_id,
            "--wait",
            str_arg(&file),
        ],
    )
    .await);
    let upload_id = started
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("Upload "))
        .and_then(|l| l.strip_suffix(" started."))
        .unwrap_or_else(|| panic!("{started}"));
    assert!(
        started.contains(&format!("waits for 'masv upload finalize {upload_id}'")),
        "{started}"
    );
    let outbox = world.hub.data.path().join("outbox");
    assert!(!outbox.exists() || std::fs::read_dir(&outbox).unwrap().count() == 0);

    let finalized = ok(&masv(&url, &["upload", "finalize", upload_id]).await);
    assert_eq!(finalized.trim(), format!("Upload {upload_id} is complete."));
    assert_eq!(std::fs::read_dir(&outbox).unwrap().count(), 2);
    // Once more: a no-op.
    let again = ok(&masv(&url, &["upload", "finalize", upload_id]).await);
    assert_eq!(again.trim(), format!("Upload {upload_id} is complete."));
    assert_eq!(std::fs::read_dir(&outbox).unwrap().count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_download_makes_wait_exit_6_naming_the_file() {
    let world = World::new().await;
    let (package, link) = world
        .shared(vec![
            FileSpec::file("clean.txt", b"clean".to_vec()),
            FileSpec::file("infected.exe", b"evil".to_vec()),
        ])
        .await;
    world
        .hub
        .operator
        .set_virus_detected(&package.file("infected.exe").id, true)
        .unwrap();
    let agent = TestAgent::start(engine_config(&world.hub.base_url)).await;
    let dst = tempfile::tempdir().unwrap();
    let output = masv(
        &agent.api.base,
        &[
            "download",
            "start",
            "--url",
            &link,
            "--destination",
            str_arg(dst.path()),
            "--bypass-package-quarantine=false",
            "--wait",
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(6), "{}", stdout(&output));
    let errors = stderr(&output);
    assert!(errors.contains("infected.exe"), "{errors}");
    assert!(errors.contains("masv download resume"), "{errors}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_agent_every_command_says_how_to_start_one() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let url = format!("http://{closed}");
    for args in [
        &["download", "ls"][..],
        &["upload", "status", "x"],
        &["automation", "ls"],
    ] {
        let output = masv(&url, args).await;
        assert_eq!(output.status.code(), Some(3), "{args:?}");
        let errors = stderr(&output);
        assert_eq!(
            errors.trim(),
            format!("error: no agent is answering at {url}; start one with 'masv server start'"),
            "{args:?}"
        );
    }
}

/// Exit statuses (masv(1) EXIT STATUS): 2 usage, 4 refused, 5 not found, 0 ok, 1 otherwise;
/// 3 and 6 are checked above (no agent; a failed `--wait`).
#[tokio::test(flavor = "multi_thread")]
async fn each_kind_of_failure_has_its_exit_status() {
    let world = World::new().await;
    let data = tempfile::tempdir().unwrap();
    let agent = ProcessAgent::start(
        data.path(),
        &world.hub.base_url,
        &["--api-token", "right-token"],
        None,
    )
    .await;
    let url = agent.api.base.clone();
    let with_token = async |token: &str, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--api-token", token]);
        masv(&url, &all).await
    };
    let code = |output: &Output| output.status.code();

    let listed = with_token("right-token", &["download", "ls"]).await;
    assert_eq!(code(&listed), Some(0), "{}", stderr(&listed));
    let refused = with_token("wrong-token", &["download", "ls"]).await;
    assert_eq!(code(&refused), Some(4), "{}", stderr(&refused));
    let missing = with_token("right-token", &["download", "status", "no-such-id"]).await;
    assert_eq!(code(&missing), Some(5), "{}", stderr(&missing));
    let missing = with_token("right-token", &["upload", "pause", "no-such-id"]).await;
    assert_eq!(code(&missing), Some(5), "{}", stderr(&missing));
    // Usage: clap's own errors, and options that do not go together.
    let unknown = with_token("right-token", &["download", "ls", "--no-such-flag"]).await;
    assert_eq!(code(&unknown), Some(2), "{}", stderr(&unknown));
    let states = with_token("right-token", &["download", "rm", "x", "--states=complete"]).await;
    assert_eq!(code(&states), Some(2), "{}", stderr(&states));
    assert!(
        stderr(&states).contains("--states goes with"),
        "{}",
        stderr(&states)
    );
    // Anything else: a configuration that does not check.
    let bad = data.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nlisten = 5\n").unwrap();
    let checked = masv(&url, &["config", "check", str_arg(&bad)]).await;
    assert_eq!(code(&checked), Some(1), "{}", stderr(&checked));
}

/// `rm all` from a script (stdin not a terminal) removes without asking; on a terminal (a pty
/// through `script`) it asks, and a "no" removes nothing and exits 1; `--yes` does not ask.
#[tokio::test(flavor = "multi_thread")]
async fn rm_all_asks_on_a_terminal_unless_yes_and_not_in_scripts() {
    let world = World::new().await;
    let (_, link) = world
        .shared(vec![FileSpec::file("a.txt", b"a".to_vec())])
        .await;
    let agent = TestAgent::start(engine_config(&world.hub.base_url)).await;
    let url = agent.api.base.clone();
    let dst = tempfile::tempdir().unwrap();
    let start = |n: u32| {
        let folder = dst.path().join(n.to_string());
        let link = link.clone();
        let url = url.clone();
        async move {
            ok(&masv(
                &url,
                &[
                    "download",
                    "start",
                    "--url",
                    &link,
                    "--destination",
                    str_arg(&folder),
                    "--wait",
                ],
            )
            .await);
        }
    };
    let on_a_terminal = |command: &str, answer: &'static str| {
        let url = url.clone();
        let command = format!("{} {command}", env!("CARGO_BIN_EXE_masv"));
        async move {
            let mut child = tokio::process::Command::new("script")
                .args(["--quiet", "--return", "--command", &command, "/dev/null"])
                .env("MASV_AGENT_URL", url)
                .env_remove("MASV_API_TOKEN")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("script (util-linux) runs");
            use tokio::io::AsyncWriteExt;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(answer.as_bytes()).await.unwrap();
            let output = child.wait_with_output().await.unwrap();
            drop(stdin);
            output
        }
    };
    start(1).await;
    let declined = on_a_terminal("download rm all", "n\n").await;
    assert_eq!(declined.status.code(), Some(1), "{}", stdout(&declined));
    let shown = stdout(&declined);
    assert!(shown.contains("Remove every download? [y/N]"), "{shown}");
    assert!(shown.contains("Nothing removed."), "{shown}");
    let listed = json_of(&masv(&url, &["download", "ls", "--json"]).await);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    let agreed = on_a_terminal("download rm all", "y\n").await;
    assert_eq!(agreed.status.code(), Some(0), "{}", stdout(&agreed));
    assert!(
        stdout(&agreed).contains("1 download removed"),
        "{}",
        stdout(&agreed)
    );

    start(2).await;
    let forced = on_a_terminal("download rm all --yes", "").await;
    assert_eq!(forced.status.code(), Some(0), "{}", stdout(&forced));
    assert!(!stdout(&forced).contains("[y/N]"), "{}", stdout(&forced));

    start(3).await;
    let scripted = ok(&masv(&url, &["download", "rm", "all"]).await);
    assert!(scripted.contains("1 download removed"), "{scripted}");
}

/// `masv --version`: the version, the commit it was built from (`unknown` outside a git
/// checkout, e.g. a source tarball) and the build date.
#[tokio::test(flavor = "multi_thread")]
async fn version_names_the_commit_and_the_build_date() {
    let output = masv("http://127.0.0.1:9", &["--version"]).await;
    let text = ok(&output);
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("unknown".to_owned(), |o| {
            String::from_utf8_lossy(&o.stdout).trim().to_owned()
        });
    let prefix = format!(
        "masv {} (commit {commit}, built ",
        env!("CARGO_PKG_VERSION")
    );
    let date = text
        .trim()
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{text:?} does not start with {prefix:?}"));
    assert!(
        chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok(),
        "{date}"
    );
    let short = ok(&masv("http://127.0.0.1:9", &["-V"]).await);
    assert_eq!(short.trim(), format!("masv {}", env!("CARGO_PKG_VERSION")));
}
