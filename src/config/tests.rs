use super::*;

fn errors_of(text: &str) -> String {
    parse(Path::new("agent.toml"), text)
        .unwrap_err()
        .to_string()
}

#[test]
fn a_server_section_is_read_with_sizes_and_secrets() {
    let config = parse(
        Path::new("/etc/masv/agent.toml"),
        r#"
[server]
listen = "127.0.0.1:9090"
cloud_url = "http://127.0.0.1:9000/v1"
api_key = { env = "CARGO_PKG_NAME" }
chunk_size = "8MiB"
max_connections = 4
auto_finalize = false
data_dir = "state"
share_link_base = "https://dl.example.com/share/"
"#,
    )
    .unwrap();
    assert_eq!(
        config.server.share_link_base.as_deref(),
        Some("https://dl.example.com/share/")
    );
    let error = errors_of("[server]\nshare_link_base = \"ftp://x/\"\n");
    assert!(
        error.contains("agent.toml:2:") && error.contains("not an http(s) URL"),
        "{error}"
    );
    assert_eq!(config.server.listen.unwrap().port(), 9090);
    assert_eq!(config.server.chunk_size, Some(8 << 20));
    assert_eq!(config.server.api_key.unwrap().expose(), "masv-agent");
    assert_eq!(config.server.auto_finalize, Some(false));
    assert_eq!(
        config.server.data_dir.unwrap(),
        Path::new("/etc/masv/state")
    );
}

#[test]
fn every_error_of_a_file_is_reported_at_its_line_and_column() {
    let text = errors_of(
        "[server]\nlisten = \"nowhere\"\nchunk_size = \"lots\"\n\n[[watch]]\nname = \"a\"\nfolder = \"/x\"\nsettle = \"soon\"\ninclude = [\"[\"]\n[watch.portal]\nsubdomain = \"s\"\nsender = \"a@b.c\"\n\n[[watch]]\nname = \"b\"\nfolder = \"/y\"\nbogus = 1\n\n[[download]]\nname = \"c\"\ndestination = \"/z\"\nschedule = \"61 * * * *\"\nlink = \"https://get.massive.io/L?secret=s\"\n",
    );
    for expected in [
        "agent.toml:2:1: listen = \"nowhere\"",
        "agent.toml:3:1: chunk_size",
        "agent.toml:8:1: settle",
        "agent.toml:9:1: include",
        "agent.toml:17:1: unknown field `bogus`",
        "agent.toml:22:1: schedule",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert_eq!(text.lines().count(), 6, "{text}");
}

#[test]
fn rules_need_exactly_one_destination_or_source() {
    let text = errors_of(
        "[[watch]]\nname = \"w\"\nfolder = \"/x\"\n\n[[download]]\nname = \"d\"\ndestination = \"/y\"\n",
    );
    assert!(
        text.contains("agent.toml:2:1: watch rule \"w\" needs exactly one destination"),
        "{text}"
    );
    assert!(
        text.contains("agent.toml:6:1: download rule \"d\" needs exactly one source"),
        "{text}"
    );
    let text =
        errors_of("[[watch]]\nname = \"w\"\nfolder = \"/x\"\n[watch.team]\nrecipients = []\n");
    assert!(text.contains("API key"), "{text}");
}

#[test]
fn unknown_sections_and_secrets_from_unset_variables_are_named() {
    let text = errors_of("[sever]\nlisten = \"127.0.0.1:1\"\n");
    assert!(
        text.starts_with("agent.toml:1:2: unknown section `sever`"),
        "{text}"
    );
    let text = errors_of("[server]\napi_key = { env = \"MASV_TEST_SURELY_UNSET\" }\n");
    assert!(
        text.contains(
            "agent.toml:2:1: api_key: environment variable MASV_TEST_SURELY_UNSET is not set"
        ),
        "{text}"
    );
}

#[test]
fn globs_without_a_slash_match_names_at_any_depth() {
    let config = parse(
        Path::new("/c/agent.toml"),
        "[server]\napi_key = \"k\"\n[[watch]]\nname = \"w\"\nfolder = \"in\"\ninclude = [\"*.mov\", \"day1/*.wav\"]\nexclude = [\"tmp*\"]\n[watch.team]\n",
    )
    .unwrap();
    let RuleKind::Watch(watch) = &config.rules[0].kind else {
        panic!()
    };
    assert_eq!(watch.folder, Path::new("/c/in"));
    assert!(watch.wants(Path::new("a/b/c.mov")));
    assert!(watch.wants(Path::new("day1/x.wav")));
    assert!(!watch.wants(Path::new("day2/x.wav")));
    assert!(!watch.wants(Path::new("a/tmp1.mov")));
    assert!(!watch.wants(Path::new("notes.txt")));
}

#[test]
fn every_example_config_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/configs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("#:schema ../../schema/masv-agent.schema.json\n"),
            "{} must start with its #:schema line",
            path.display()
        );
        // The examples read secrets from the environment and from files of the machine they
        // run on: stand in for those here.
        let stand_in = |_: &SecretSource| Ok(Secret::new("https://get.massive.io/L?secret=s"));
        if let Err(e) = parse_with(&path, &text, &stand_in) {
            panic!("{e}");
        }
        seen += 1;
    }
    assert!(seen >= 5, "the examples are in examples/configs");
}

#[test]
fn the_committed_schema_is_the_generated_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/masv-agent.schema.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == schema(),
        "schema/masv-agent.schema.json is out of date: run `cargo run -- config schema > schema/masv-agent.schema.json`"
    );
}

#[test]
fn relative_paths_start_at_the_config_folder_made_absolute() {
    // Watch events name absolute paths: a config given as a relative path must not leave its
    // folders relative to the working folder.
    let config = parse(
        Path::new("conf/agent.toml"),
        "[server]\napi_key = \"k\"\n[[watch]]\nname = \"w\"\nfolder = \"in\"\n[watch.team]\n",
    )
    .unwrap();
    let RuleKind::Watch(watch) = &config.rules[0].kind else {
        panic!()
    };
    assert!(watch.folder.is_absolute(), "{}", watch.folder.display());
    assert!(
        watch.folder.ends_with("conf/in")
            && watch.folder.starts_with(std::env::current_dir().unwrap()),
        "{}",
        watch.folder.display()
    );
}

#[test]
fn a_bandwidth_section_is_read_and_its_errors_point_at_their_keys() {
    let config = parse(
        Path::new("agent.toml"),
        r#"
[bandwidth]
upload = "200Mbit"
download = 1048576
timezone = "UTC"
max_active_downloads = 2

[[bandwidth.schedule]]
days = ["weekdays"]
start = "09:00"
end = "18:00"
upload = "50Mbit"
"#,
    )
    .unwrap();
    let b = &config.bandwidth;
    assert_eq!(b.max_active_downloads(), Some(2));
    assert_eq!(b.max_active_uploads(), None);
    let monday_ten = chrono::DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let (limits, rule) = b.limits_at(monday_ten);
    assert_eq!(rule, Some(0));
    assert_eq!(limits.upload, Some(6_250_000));
    assert_eq!(limits.download, Some(1 << 20), "the rule keeps the default");

    let text = errors_of(
        "[server]\nlisten = \"127.0.0.1:8080\"\n\n[bandwidth]\nupload = \"fast\"\nmax_active_uploads = 0\nschedule = [\n  { start = \"09:00\", end = \"18:00\" },\n  { days = [\"someday\"], start = \"09:00\", end = \"18:00\", download = \"lots\" },\n]\n",
    );
    for expected in [
        "agent.toml:5:1: upload: \"fast\" is not a rate",
        "agent.toml:6:1: max_active_uploads: must be at least 1",
        "agent.toml:9:3: schedule rule 2: \"someday\" is not a day",
        "agent.toml:9:57: schedule rule 2: download: \"lots\" is not a rate",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert_eq!(text.lines().count(), 4, "{text}");
    let text = errors_of("[bandwidth]\nuplaod = \"1MiB\"\n");
    assert!(
        text.contains("agent.toml:2:1: unknown field `uplaod`"),
        "{text}"
    );
}

#[test]
fn service_settings_are_read_and_bad_ones_named_at_their_line() {
    let config = parse(
        Path::new("agent.toml"),
        r#"
[server]
listen = "0.0.0.0:8080"
api_token = { env = "CARGO_PKG_NAME" }
log_format = "json"
log_level = "info,masv_agent::transfer=debug"
shutdown_timeout = "45s"
"#,
    )
    .unwrap();
    assert_eq!(config.server.api_token.unwrap().expose(), "masv-agent");
    assert_eq!(config.server.log_format, Some(LogFormat::Json));
    assert_eq!(
        config.server.log_level.as_deref(),
        Some("info,masv_agent::transfer=debug")
    );
    assert_eq!(
        config.server.shutdown_timeout,
        Some(std::time::Duration::from_secs(45))
    );

    let text = errors_of(
        "[server]\napi_token = \"\"\nlog_level = \"info,=[\"\nshutdown_timeout = \"soon\"\n",
    );
    for expected in [
        "agent.toml:2:1: api_token: the secret from Inline(<redacted>) is empty",
        "agent.toml:3:1: log_level = \"info,=[\"",
        "agent.toml:4:1: shutdown_timeout",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let text = errors_of("[server]\nlog_format = \"xml\"\n");
    assert!(
        text.contains("agent.toml:2:") && text.contains("text") && text.contains("json"),
        "{text}"
    );
}

#[test]
fn the_cli_reads_only_the_api_token_of_a_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    // A rule whose secret the CLI user cannot read does not stop the token from being read.
    std::fs::write(
        &path,
        "[server]\napi_token = \"t0k\"\napi_key = { env = \"MASV_TEST_UNSET_VARIABLE\" }\n\n[[download]]\nname = \"d\"\nlink = { env = \"MASV_TEST_UNSET_VARIABLE\" }\ndestination = \"/in\"\n",
    )
    .unwrap();
    assert_eq!(load_api_token(&path).unwrap().unwrap().expose(), "t0k");
    std::fs::write(
        &path,
        "[server]\napi_token = { file = \"/nonexistent/token\" }\n",
    )
    .unwrap();
    let error = load_api_token(&path).unwrap_err().to_string();
    assert!(error.contains("agent.toml:2:1: api_token"), "{error}");
}

#[test]
fn a_rule_fingerprint_covers_every_key_of_the_rule_inline_tables_included() {
    let print = |text: &str| {
        parse(Path::new("/etc/masv/agent.toml"), text)
            .unwrap()
            .rules
            .iter()
            .map(|r| (r.name.clone(), r.fingerprint))
            .collect::<Vec<_>>()
    };
    let watch = |folder: &str, subdomain: &str| {
        format!(
            r#"
[[watch]]
name = "out"
folder = "{folder}"
portal = {{ subdomain = "{subdomain}", sender = "me@example.com" }}

[[watch]]
name = "other"
folder = "/srv/other"
portal = {{ subdomain = "dailies", sender = "me@example.com" }}
"#
        )
    };
    let base = print(&watch("/srv/out", "dailies"));
    let moved = print(&watch("/srv/elsewhere", "dailies"));
    let retargeted = print(&watch("/srv/out", "vault"));
    assert_ne!(base[0], moved[0], "a new folder changes the rule");
    assert_ne!(
        base[0], retargeted[0],
        "a new inline portal table changes the rule"
    );
    assert_eq!(base[1], moved[1], "the other rule is left alone");
    assert_eq!(base[1], retargeted[1], "the other rule is left alone");
}

#[test]
fn the_retry_policy_is_read_never_or_a_duration() {
    let server = |retry: &str| {
        parse(
            Path::new("/etc/masv/agent.toml"),
            &format!("[server]\nretry = {retry}\n"),
        )
        .map(|c| (c.server.retry_max_delay, c.server.retry_give_up_after))
    };
    assert_eq!(
        server(r#"{ max_delay = "5m", give_up_after = "never" }"#).unwrap(),
        (Some(std::time::Duration::from_secs(300)), Some(None))
    );
    assert_eq!(
        server(r#"{ give_up_after = "12h" }"#).unwrap(),
        (None, Some(Some(std::time::Duration::from_secs(12 * 3600))))
    );
    let error = server(r#"{ give_up_after = "soon" }"#)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("agent.toml:") && error.contains("give_up_after"),
        "{error}"
    );
}

#[test]
fn the_file_hash_is_a_format_or_off() {
    use crate::mhl::HashFormat;
    let hash = |value: &str| {
        parse(
            Path::new("agent.toml"),
            &format!("[server]\nhash = {value:?}\n"),
        )
        .map(|c| c.server.hash)
    };
    assert_eq!(hash("md5").unwrap(), Some(Some(HashFormat::Md5)));
    assert_eq!(hash("sha256").unwrap(), Some(Some(HashFormat::Sha256)));
    assert_eq!(hash("off").unwrap(), Some(None));
    let error = errors_of("[server]\nhash = \"crc32\"\n");
    assert!(
        error.contains("agent.toml:2:") && error.contains("xxh64 (the default)"),
        "{error}"
    );
}

#[test]
fn a_watch_rule_may_ask_for_an_ascmhl_manifest() {
    let rule = |extra: &str| {
        parse(
            Path::new("agent.toml"),
            &format!(
                "[[watch]]\nname = \"w\"\nfolder = \"/x\"\n{extra}[watch.portal]\nsubdomain = \"s\"\nsender = \"a@b.c\"\n"
            ),
        )
        .map(|c| match &c.rules[0].kind {
            RuleKind::Watch(w) => w.manifest,
            RuleKind::Download(_) => panic!("a watch rule"),
        })
    };
    assert_eq!(rule("").unwrap(), None);
    assert_eq!(
        rule("manifest = \"ascmhl\"\n").unwrap(),
        Some(Manifest::Ascmhl)
    );
    let error = rule("manifest = \"md5sum\"\n").unwrap_err().to_string();
    assert!(
        error.contains("agent.toml:4:") && error.contains("ascmhl"),
        "{error}"
    );
}

#[test]
fn an_unknown_key_suggests_the_closest_one() {
    let errors =
        errors_of("[[watch]]\nname = \"out\"\nfolder = \"/srv\"\nsetle = \"2s\"\n[watch.team]\n");
    assert!(errors.contains("did you mean `settle`?"), "{errors}");
    let far = errors_of("[[watch]]\nname = \"out\"\nfolder = \"/srv\"\nzzzzzz = 1\n[watch.team]\n");
    assert!(!far.contains("did you mean"), "{far}");
    assert_eq!(edit_distance("setle", "settle"), 1);
}

#[test]
fn an_unreadable_api_key_is_the_one_error_not_a_missing_key() {
    let errors = errors_of(
        "[server]\napi_key = { file = \"/nonexistent/masv-key\" }\n\n[[watch]]\nname = \"out\"\nfolder = \"/srv\"\n[watch.team]\n",
    );
    assert!(errors.contains("api_key"), "{errors}");
    assert!(!errors.contains("need an API key"), "{errors}");
}

#[test]
fn actions_are_read_and_each_error_points_at_its_key() {
    let config = parse(
        Path::new("/etc/masv/agent.toml"),
        r#"
[[watch]]
name = "outbox"
folder = "/srv/outbox"
portal = { subdomain = "s", sender = "a@b.c" }

[[action]]
name = "hook"
kind = "webhook"
url = "https://hooks.example.com/masv"
secret = { env = "CARGO_PKG_NAME" }
events = ["upload.delivered"]
rules = ["outbox"]
give_up_after = "never"

[[action]]
name = "mail"
kind = "email"
smtp_host = "smtp.example.com"
from = "Agent <agent@example.com>"
to = ["ops@example.com"]

[[action]]
name = "ingest"
kind = "command"
program = "bin/ingest"
timeout = "5m"
"#,
    )
    .unwrap();
    let [hook, mail, ingest] = &config.actions[..] else {
        panic!("three actions: {:?}", config.actions);
    };
    assert!(hook.wants("upload.delivered", Some("outbox")));
    assert!(!hook.wants("upload.delivered", None), "only its rules");
    assert!(!hook.wants("transfer.failed", Some("outbox")));
    assert_eq!(hook.give_up_after, None);
    assert_eq!(mail.events.len(), 5, "all events by default");
    assert!(mail.wants("rule.failed", None), "every rule by default");
    assert_eq!(mail.give_up_after, Some(DEFAULT_GIVE_UP_AFTER));
    assert_eq!(mail.timeout, std::time::Duration::from_secs(30));
    match &mail.target {
        ActionTarget::Email { port, tls, .. } => {
            assert_eq!((*port, *tls), (587, SmtpTls::Starttls))
        }
        other => panic!("{other:?}"),
    }
    match &ingest.target {
        ActionTarget::Command { program, .. } => {
            assert_eq!(program, Path::new("/etc/masv/bin/ingest"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ingest.timeout, std::time::Duration::from_secs(300));
    assert!(
        !format!("{hook:?}").contains("masv-agent"),
        "the secret is redacted"
    );

    let text = errors_of(
        "[[action]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"ftp://x/\"\nprogram = \"x\"\nevents = [\"upload.done\"]\nrules = [\"nope\"]\n\n[[action]]\nname = \"a\"\nkind = \"email\"\nfrom = \"not an address\"\nto = [\"ops@example.com\"]\nusername = \"u\"\ntimeout = \"soon\"\n\n[[action]]\nname = \"c\"\nkind = \"pager\"\n",
    );
    for expected in [
        "agent.toml:4:1: url = \"ftp://x/\" is not an http(s) URL",
        "agent.toml:5:1: program is for command actions; action \"a\" is a webhook",
        "agent.toml:6:1: events: \"upload.done\" is not an event",
        "agent.toml:7:1: rules: no rule is named \"nope\"",
        "agent.toml:10:1: two actions are named \"a\"",
        "agent.toml:10:1: email action \"a\" needs smtp_host",
        "agent.toml:12:1: from = \"not an address\" is not an email address",
        "agent.toml:14:1: username and password go together",
        "agent.toml:15:1: timeout:",
        "agent.toml:19:8: unknown variant `pager`",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

/// The `ReadWritePaths=` of a unit or drop-in, and whether it lifts `RestrictSUIDSGID`.
fn unit_writes(text: &str) -> (Vec<PathBuf>, bool) {
    let mut paths = Vec::new();
    let mut setuid_allowed = false;
    for line in text.lines().map(str::trim) {
        if let Some(list) = line.strip_prefix("ReadWritePaths=") {
            paths.extend(
                list.split_whitespace()
                    .map(|p| PathBuf::from(p.trim_start_matches('-'))),
            );
        }
        if line == "RestrictSUIDSGID=no" {
            setuid_allowed = true;
        }
    }
    (paths, setuid_allowed)
}

/// Every example runs under examples/systemd/masv-agent.service (ProtectSystem=strict): each
/// folder it writes is under the state folder or a ReadWritePaths of the unit or of its own
/// drop-in (examples/systemd/NAME.conf), a rule with an owner names chown.conf (CAP_CHOWN),
/// and no mode has the setuid/setgid bits unless the drop-in lifts RestrictSUIDSGID. The
/// quickstart is not for the service: it runs from the repository (scripts/quickstart.sh).
#[test]
fn every_example_config_writes_only_where_the_shipped_unit_lets_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("examples/systemd/masv-agent.service")).unwrap();
    assert!(unit.contains("ProtectSystem=strict") && unit.contains("RestrictSUIDSGID=yes"));
    assert!(unit.contains("StateDirectory=masv-agent"));
    let (unit_paths, _) = unit_writes(&unit);
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("examples/configs")).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
        if stem == "quickstart" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let stand_in = |_: &SecretSource| Ok(Secret::new("https://get.massive.io/L?secret=s"));
        let config = parse_with(&path, &text, &stand_in).unwrap();
        let dropin = root.join(format!("examples/systemd/{stem}.conf"));
        let (mut writable, setuid_allowed) = match std::fs::read_to_string(&dropin) {
            Ok(dropin_text) => {
                assert!(
                    text.contains(&format!("examples/systemd/{stem}.conf")),
                    "{} must name its drop-in {}",
                    path.display(),
                    dropin.display()
                );
                unit_writes(&dropin_text)
            }
            Err(_) => (Vec::new(), false),
        };
        writable.extend(unit_paths.iter().cloned());
        writable.push(PathBuf::from("/var/lib/masv-agent"));
        let mut writes: Vec<PathBuf> = config.server.data_dir.iter().cloned().collect();
        let mut modes: Vec<u32> = Vec::new();
        for rule in &config.rules {
            match &rule.kind {
                RuleKind::Watch(watch) => {
                    if !matches!(watch.after, After::Keep) {
                        writes.push(watch.folder.clone());
                    }
                    if let After::Move(to) = &watch.after {
                        writes.push(to.clone());
                    }
                    writes.extend(watch.link_folder.iter().cloned());
                }
                RuleKind::Download(download) => {
                    writes.push(download.destination.clone());
                    if let DownloadSource::LinksFolder(folder) = &download.source {
                        writes.push(folder.clone());
                    }
                    modes.extend(
                        download
                            .file_mode
                            .iter()
                            .chain(&download.folder_mode)
                            .copied(),
                    );
                    if download.uid.is_some() || download.gid.is_some() {
                        assert!(
                            text.contains("chown.conf"),
                            "{}: rule {} gives files an owner: name the chown.conf drop-in",
                            path.display(),
                            rule.name
                        );
                    }
                }
            }
        }
        for folder in &writes {
            assert!(
                writable.iter().any(|w| folder.starts_with(w)),
                "{} writes {} outside the unit's ReadWritePaths {writable:?}: move it under \
                 /srv/masv or add it to {}",
                path.display(),
                folder.display(),
                dropin.display()
            );
        }
        for mode in modes {
            assert!(
                mode & 0o6000 == 0 || setuid_allowed,
                "{}: mode {mode:o} has the setuid/setgid bit, refused under RestrictSUIDSGID=yes",
                path.display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 5);
}

#[test]
fn an_owner_is_given_by_names_or_numbers_and_an_unknown_name_is_an_error_at_its_key() {
    let rule = |owner: &str| {
        format!(
            "[[download]]\nname = \"d\"\ndestination = \"/srv/masv/in\"\nlink = \"https://get.massive.io/L?secret=s\"\n{owner}\n"
        )
    };
    let owner_of = |owner: &str| {
        let config = parse(Path::new("agent.toml"), &rule(owner)).unwrap();
        let RuleKind::Download(download) = &config.rules[0].kind else {
            panic!()
        };
        (download.uid, download.gid)
    };
    assert_eq!(
        owner_of("owner = { user = \"root\", group = \"root\" }"),
        (Some(0), Some(0))
    );
    // Debian's unprivileged user and group.
    assert_eq!(
        owner_of("owner = { user = \"nobody\", group = \"nogroup\" }"),
        (Some(65534), Some(65534))
    );
    assert_eq!(
        owner_of("owner = { uid = 1001, group = \"root\" }"),
        (Some(1001), Some(0))
    );
    let text = errors_of(&rule(
        "owner = { user = \"no-such-editor\", group = \"no-such-post\" }",
    ));
    assert!(
        text.contains(
            "agent.toml:5:1: owner user = \"no-such-editor\": there is no such user on this machine"
        ),
        "{text}"
    );
    assert!(
        text.contains("agent.toml:5:1: owner group = \"no-such-post\": there is no such group"),
        "{text}"
    );
    let text = errors_of(&rule("owner = { uid = 0, user = \"root\" }"));
    assert!(
        text.contains("agent.toml:5:1: owner gives both uid and user: keep one"),
        "{text}"
    );
}
