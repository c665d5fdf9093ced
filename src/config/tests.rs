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
"#,
    )
    .unwrap();
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
