//! Watch-folder scale (issue 5, point 6), measured on real processes: a release `masv hub serve`
//! and a release `masv server start` with one watch rule, over loopback.
//!
//! 1. Latency. `--batches` batches of `--batch` files are dropped `--gap-ms` apart into a folder
//!    watched with one package per file (`group = "file"`), then per quiet batch (`"batch"`).
//!    For each file: from its settle point (its last write plus the quiet period) to its
//!    upload's `created_at` in the agent's REST API, set when the upload is recorded and its job
//!    started (the job then creates the package on the hub); for each package, the same from its
//!    last file's settle point.
//!    Then every upload must complete, each file exactly once.
//! 2. Memory. A fresh agent (one package per quiet batch) is given `--track` files dropped at
//!    once in folders of 1,000. Its RSS is read from /proc/PID/status once every file is queued
//!    (then it tracks all of them: settled in the watcher, in the ledger, in one upload job), and
//!    again after `--send-secs` of sending them (all of them with `--send-all`: at ~40 files a
//!    second on 2 cores that is long), with the peak (VmHWM) over the whole run.
//!
//! Run: `cargo bench --bench watch-scale` (release build), options after `--`:
//! `--batches 10 --batch 1000 --gap-ms 2000 --settle-ms 1000 --groups file,batch --track 100000
//! --send-secs 60 --send-all --keep` (`--groups ""` or `--track 0` leave a part out).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

const TEAM_ID: &str = "01JBENCHWATCH0000000000000";
const API_KEY: &str = "bench-watch-scale-key-0123456789abcdef";
/// The targets of the issue.
const LATENCY_TARGET_MS: f64 = 250.0;
const RSS_TARGET_MIB: f64 = 200.0;

struct Options {
    batches: usize,
    batch: usize,
    gap: Duration,
    settle: Duration,
    track: usize,
    groups: Vec<String>,
    send_for: Duration,
    send_all: bool,
    keep: bool,
}

fn options() -> Options {
    let mut o = Options {
        batches: 10,
        batch: 1000,
        gap: Duration::from_millis(2000),
        settle: Duration::from_millis(1000),
        track: 100_000,
        groups: vec!["file".into(), "batch".into()],
        send_for: Duration::from_secs(60),
        send_all: false,
        keep: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = || -> u64 {
            args.get(i + 1)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{} needs a number", args[i]))
        };
        match args[i].as_str() {
            "--batches" => o.batches = value() as usize,
            "--batch" => o.batch = value() as usize,
            "--gap-ms" => o.gap = Duration::from_millis(value()),
            "--settle-ms" => o.settle = Duration::from_millis(value()),
            "--track" => o.track = value() as usize,
            "--groups" => {
                o.groups = args
                    .get(i + 1)
                    .map(|g| {
                        g.split(',')
                            .filter(|g| !g.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                i += 2;
                continue;
            }
            "--send-secs" => o.send_for = Duration::from_secs(value()),
            "--send-all" => {
                o.send_all = true;
                i += 1;
                continue;
            }
            "--keep" => {
                o.keep = true;
                i += 1;
                continue;
            }
            // `cargo bench` passes `--bench`.
            "--bench" => {
                i += 1;
                continue;
            }
            other => panic!(
                "unknown option {other}; see the header of benches/watch_scale.rs for the options"
            ),
        }
        i += 2;
    }
    o
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A child process killed when dropped.
struct Process {
    child: Child,
    name: &'static str,
}

impl Process {
    fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Process {
        let log = std::fs::File::create(log).expect("a log file");
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {name}: {e}"));
        Process { child, name }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("the {} exited early: {status}", self.name);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// VmRSS and VmHWM of a process, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command; the
    // kernel counts in USER_HZ, 100 a second on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

struct Bench {
    masv: PathBuf,
    root: PathBuf,
    hub_url: String,
    hub_pid: u32,
    http: reqwest::Client,
}

impl Bench {
    async fn get(&self, url: &str) -> Value {
        for _ in 0..50 {
            if let Ok(r) = self.http.get(url).send().await
                && let Ok(v) = r.json::<Value>().await
            {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no answer from {url}");
    }

    /// Starts an agent whose one rule watches `folder`.
    async fn agent(&self, name: &str, group: &str, package_name: &str, settle: Duration) -> Agent {
        let port = free_port();
        let folder = self.root.join(format!("{name}-drop"));
        std::fs::create_dir_all(&folder).unwrap();
        let config = self.root.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                r#"[server]
listen = "127.0.0.1:{port}"
data_dir = "{name}-agent"
cloud_url = "{hub}/v1"
api_key = {{ env = "BENCH_API_KEY" }}

[[watch]]
name = "bench"
folder = "{name}-drop"
settle = "{settle}ms"
group = "{group}"
package_name = "{package_name}"
[watch.team]
team_id = "{TEAM_ID}"
"#,
                hub = self.hub_url,
                settle = settle.as_millis(),
            ),
        )
        .unwrap();
        let process = Process::spawn(
            "agent",
            Command::new(&self.masv)
                .args(["server", "start", "--insecure-no-token", "--config"])
                .arg(&config)
                .env("BENCH_API_KEY", API_KEY)
                .env("RUST_LOG", "warn"),
            &self.root.join(format!("{name}-agent.log")),
        );
        let agent = Agent {
            process,
            api: format!("http://127.0.0.1:{port}/api/v1"),
            folder,
        };
        let start = Instant::now();
        loop {
            if let Ok(r) = self
                .http
                .get(format!("{}/automations", agent.api))
                .send()
                .await
                && let Ok(v) = r.json::<Value>().await
                && v["automations"][0]["state"] == "watching"
            {
                return agent;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the agent did not start watching; see {}",
                self.root.join(format!("{name}-agent.log")).display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The rule's ledger counts: (queued, sent, failed).
    async fn counts(&self, agent: &Agent) -> (u64, u64, u64) {
        let v = self.get(&format!("{}/automations", agent.api)).await;
        let c = &v["automations"][0]["counts"];
        let n = |k: &str| c[k].as_u64().unwrap_or(0);
        (n("queued"), n("sent"), n("failed"))
    }

    /// Waits until the ledger holds `total` files (queued or sent), or all of them `sent`.
    async fn wait_counts(&self, agent: &mut Agent, total: u64, all_sent: bool, limit: Duration) {
        let start = Instant::now();
        loop {
            agent.process.check_alive();
            let (queued, sent, failed) = self.counts(agent).await;
            assert_eq!(failed, 0, "uploads failed; see the agent's log");
            if (all_sent && sent == total) || (!all_sent && queued + sent == total) {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "after {limit:?}: {queued} queued, {sent} sent of {total}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

struct Agent {
    process: Process,
    api: String,
    folder: PathBuf,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn write_file(path: &Path, i: usize) -> SystemTime {
    std::fs::write(path, format!("file {i}\n").repeat(8)).unwrap();
    std::fs::metadata(path).unwrap().modified().unwrap()
}

async fn latency(bench: &Bench, o: &Options, group: &str) {
    let mut agent = bench
        .agent(&format!("latency-{group}"), group, "{file}", o.settle)
        .await;
    let total = o.batches * o.batch;
    println!(
        "latency, group = \"{group}\": {} batches of {} files, {} ms apart, quiet period {} ms",
        o.batches,
        o.batch,
        o.gap.as_millis(),
        o.settle.as_millis()
    );
    let mut written: HashMap<String, SystemTime> = HashMap::with_capacity(total);
    for b in 0..o.batches {
        let dir = agent.folder.join(format!("b{b}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..o.batch {
            let name = format!("b{b}-f{i}.txt");
            written.insert(name.clone(), write_file(&dir.join(&name), i));
        }
        if b + 1 < o.batches {
            tokio::time::sleep(o.gap).await;
        }
    }
    bench
        .wait_counts(&mut agent, total as u64, false, Duration::from_secs(600))
        .await;
    let uploads = bench.get(&format!("{}/uploads", agent.api)).await;
    let uploads = uploads.as_array().cloned().unwrap_or_default();
    // Per file: its upload's creation after its settle point. Per package: after the settle
    // point of its last file (what a batch waits for by design).
    let (mut per_file, mut per_package) = (Vec::with_capacity(total), Vec::new());
    let mut seen = HashSet::new();
    for u in &uploads {
        let created = chrono::DateTime::parse_from_rfc3339(u["created_at"].as_str().unwrap())
            .expect("created_at is RFC 3339")
            .to_utc();
        let id = u["upload_id"].as_str().unwrap();
        let detail = bench.get(&format!("{}/uploads/{id}", agent.api)).await;
        let mut last = SystemTime::UNIX_EPOCH;
        for f in detail["files"].as_array().cloned().unwrap_or_default() {
            let name = f["name"].as_str().unwrap_or_default().to_owned();
            let modified = *written
                .get(&name)
                .unwrap_or_else(|| panic!("an upload of a file never dropped: {name}"));
            last = last.max(modified);
            per_file.push(ms_after(created, modified + o.settle));
            assert!(seen.insert(name.clone()), "{name} was queued twice");
        }
        per_package.push(ms_after(created, last + o.settle));
    }
    assert_eq!(seen.len(), total, "every file queued, each exactly once");
    let start = Instant::now();
    bench
        .wait_counts(&mut agent, total as u64, true, Duration::from_secs(1200))
        .await;
    let (rss, hwm) = memory(agent.process.pid());
    println!(
        "  {} packages; all {total} files sent exactly once ({:.1} s after the last was queued); agent RSS {rss:.0} MiB, peak {hwm:.0} MiB; CPU used: agent {:.1} s, hub {:.1} s",
        uploads.len(),
        start.elapsed().as_secs_f64(),
        cpu_seconds(agent.process.pid()),
        cpu_seconds(bench.hub_pid),
    );
    let settle_ms = o.settle.as_secs_f64() * 1000.0;
    println!();
    println!(
        "| group = \"{group}\" | after settle point | after last write | target | ratio to target |"
    );
    println!("|---|---|---|---|---|");
    for (what, mut late) in [
        ("per file", per_file),
        ("per package, its last file", per_package),
    ] {
        late.sort_by(f64::total_cmp);
        for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
            let v = percentile(&late, p);
            let (target, ratio) = if label == "p50" {
                (
                    format!("≤ {settle_ms:.0} + {LATENCY_TARGET_MS:.0} ms"),
                    format!("{:.2}", (settle_ms + v) / (settle_ms + LATENCY_TARGET_MS)),
                )
            } else {
                ("-".into(), "-".into())
            };
            println!(
                "| {what} {label} | {v:.0} ms | {:.0} ms | {target} | {ratio} |",
                settle_ms + v
            );
        }
    }
    println!();
}

/// Milliseconds from `from` to `to`.
fn ms_after(to: chrono::DateTime<chrono::Utc>, from: SystemTime) -> f64 {
    (to - chrono::DateTime::<chrono::Utc>::from(from))
        .num_microseconds()
        .expect("within centuries") as f64
        / 1000.0
}

async fn memory_at_scale(bench: &Bench, o: &Options) {
    let mut agent = bench
        .agent("track", "batch", "{rule} {count} files", o.settle)
        .await;
    let pid = agent.process.pid();
    let (idle, _) = memory(pid);
    println!(
        "memory: {} files dropped at once in folders of 1,000, one package per quiet batch",
        o.track
    );
    let start = Instant::now();
    for i in 0..o.track {
        let dir = agent.folder.join(format!("d{}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        write_file(&dir.join(format!("f{i}.txt")), i);
    }
    let dropped = start.elapsed();
    bench
        .wait_counts(&mut agent, o.track as u64, false, Duration::from_secs(900))
        .await;
    let queued_after = start.elapsed();
    let (rss_queued, hwm_queued) = memory(pid);
    let uploads = bench.get(&format!("{}/uploads", agent.api)).await;
    let files: u64 = uploads
        .as_array()
        .map(|a| {
            a.iter()
                .map(|u| u["files_total"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0);
    assert_eq!(files, o.track as u64, "every file in exactly one package");
    println!(
        "  dropped in {:.1} s; all queued after {:.1} s ({} packages); agent CPU {:.1} s",
        dropped.as_secs_f64(),
        queued_after.as_secs_f64(),
        uploads.as_array().map_or(0, Vec::len),
        cpu_seconds(pid),
    );
    // Sending 100,000 small files takes long: memory is read after `--send-secs` of it (and at
    // the end with `--send-all`).
    let sending = Instant::now();
    if o.send_all {
        bench
            .wait_counts(&mut agent, o.track as u64, true, Duration::from_secs(7200))
            .await;
    } else {
        while sending.elapsed() < o.send_for {
            agent.process.check_alive();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // Read before asking anything more of the agent: a package's detail lists every file, and
    // building that answer for 100,000 files would be measured instead.
    let (rss_sending, hwm) = memory(pid);
    let (queued, sent, _) = bench.counts(&agent).await;
    let listed = bench.get(&format!("{}/uploads", agent.api)).await;
    let files_done: u64 = listed
        .as_array()
        .map(|a| {
            a.iter()
                .map(|u| u["files_done"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0);
    println!(
        "  after {:.0} s of sending: {files_done} files sent, ledger {queued} queued / {sent} sent",
        sending.elapsed().as_secs_f64(),
    );
    println!();
    println!(
        "| agent memory, {} files | MiB | target | ratio to target |",
        o.track
    );
    println!("|---|---|---|---|");
    for (label, v) in [
        ("RSS, watching an empty folder", idle),
        (
            "RSS, all files settled, in the ledger and queued",
            rss_queued,
        ),
        ("peak (VmHWM) until then", hwm_queued),
        ("RSS while sending", rss_sending),
        ("peak (VmHWM), whole run", hwm),
    ] {
        println!(
            "| {label} | {v:.0} | ≤ {RSS_TARGET_MIB:.0} | {:.2} |",
            v / RSS_TARGET_MIB
        );
    }
}

#[tokio::main]
async fn main() {
    let o = options();
    let masv = PathBuf::from(env!("CARGO_BIN_EXE_masv"));
    let dir = tempfile::Builder::new()
        .prefix("bench-watch-")
        .tempdir()
        .expect("a temporary folder");
    let root = dir.path().to_path_buf();
    let hub_port = free_port();
    std::fs::write(
        root.join("hub.toml"),
        format!("[[team]]\nname = \"Bench\"\nid = \"{TEAM_ID}\"\napi_keys = [{{ env = \"HUB_API_KEY\" }}]\n"),
    )
    .unwrap();
    let _hub = Process::spawn(
        "hub",
        Command::new(&masv)
            .args(["hub", "serve", "--data"])
            .arg(root.join("hub"))
            .args(["--listen", &format!("127.0.0.1:{hub_port}"), "--seed"])
            .arg(root.join("hub.toml"))
            .env("HUB_API_KEY", API_KEY)
            .env("RUST_LOG", "warn"),
        &root.join("hub.log"),
    );
    let bench = Bench {
        masv,
        root: root.clone(),
        hub_url: format!("http://127.0.0.1:{hub_port}"),
        hub_pid: _hub.pid(),
        http: reqwest::Client::new(),
    };
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", hub_port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the hub did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "watch-folder scale: release agent and hub on loopback, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for group in &o.groups {
        latency(&bench, &o, group).await;
    }
    if o.track > 0 {
        memory_at_scale(&bench, &o).await;
    }
    if o.keep {
        println!("kept: {}", dir.keep().display());
    }
}
