//! Conformance: the agent against the hub as a strict reference of `shared/spec/masv-api.md`,
//! section by section. Each test names the rule of the spec it checks; where the hub is strict
//! (page limits, `null` blueprints, counted link accesses) a raw request shows the hub refusing
//! what the spec refuses, and the agent is run against it end to end over real HTTP.
//!
//! A defect found by running the agent against an independent, docs-following server
//! (issue 12) gets its test here, so that our own hub can no longer hide it.

use std::path::Path;
use std::time::{Duration, Instant};

use masv_agent::transfer::EngineConfig;
use serde_json::{Value, json};

use crate::agent::{TestAgent, download_request, engine_config};
use crate::support::{
    DataDir, FileSpec, HubOptions, MIB, TestHub, World, pseudo_random_bytes, raw_http,
};

const LONG: Duration = Duration::from_secs(60);

/// An agent of `world`'s team, with its API key.
fn uploading(world: &World) -> EngineConfig {
    let mut config = engine_config(&world.hub.base_url);
    config.api_key = Some(world.api_key.clone());
    config
}

/// Downloads `link` through `agent` into `dst`, waits for the end, and returns the detail.
async fn fetched(agent: &TestAgent, link: &str, dst: &Path) -> Value {
    let id = agent.api.download(download_request(link, dst)).await;
    agent
        .api
        .wait_for("downloads", &id, &["complete", "error"], LONG)
        .await
}

// ----- §2 Download flow -----

/// §2.3 + §5: names are only refused when they would leave the destination on this platform.
/// On Unix `a:b.txt` at the root of a package is a plain name (it was refused as "a drive").
#[tokio::test(flavor = "multi_thread")]
async fn s2_a_root_level_name_with_a_colon_is_a_plain_name_on_unix() {
    let world = World::new().await;
    let (_, link) = world
        .shared(vec![
            FileSpec::file("a:b.txt", b"colon".to_vec()),
            FileSpec::file("C:", b"drive-like".to_vec()).at("clips"),
        ])
        .await;
    let agent = TestAgent::start(engine_config(&world.hub.base_url)).await;
    let dst = tempfile::tempdir().unwrap();
    let done = fetched(&agent, &link, dst.path()).await;
    assert_eq!(done["state"], "complete", "{done}");
    let root = dst.path().join("dailies day 1");
    assert_eq!(std::fs::read(root.join("a:b.txt")).unwrap(), b"colon");
    assert_eq!(std::fs::read(root.join("clips/C:")).unwrap(), b"drive-like");
}

/// §2.3: `path` is the folder inside the package. An absolute one (from a hostile or careless
/// service) is re-rooted under the destination, as the README says, never written outside.
#[tokio::test(flavor = "multi_thread")]
async fn s2_an_absolute_entry_path_is_re_rooted_under_the_destination() {
    let hub = TestHub::start_with(
        DataDir::new(),
        HubOptions {
            accept_hostile_names: true,
            ..HubOptions::default()
        },
    )
    .await;
    let world = World::on(hub);
    let (_, link) = world
        .shared(vec![
            FileSpec::file("x.txt", b"rooted".to_vec()).at("/abs/olute"),
        ])
        .await;
    let agent = TestAgent::start(engine_config(&world.hub.base_url)).await;
    let dst = tempfile::tempdir().unwrap();
    let done = fetched(&agent, &link, dst.path()).await;
    assert_eq!(done["state"], "complete", "{done}");
    assert_eq!(
        std::fs::read(dst.path().join("dailies day 1/abs/olute/x.txt")).unwrap(),
        b"rooted"
    );
    assert!(!Path::new("/abs/olute/x.txt").exists());
}

// ----- §3 Upload flow -----

/// §3 step 1, hub side: a directory entry carries no bytes, so file-add answers
/// `create_blueprint: null` (as a docs-following service does), a file a real blueprint.
#[tokio::test(flavor = "multi_thread")]
async fn s3_file_add_answers_a_null_blueprint_for_a_directory() {
    let world = World::new().await;
    let package = world.team_package(crate::support::named("folders")).await;
    let http = raw_http();
    let add = |body: Value| {
        http.post(world.hub.url(&format!("/packages/{}/files", package.id)))
            .header("X-Package-Token", package.access_token.expose())
            .json(&body)
            .send()
    };
    let answer = add(json!({"kind": "directory", "name": "empty", "path": "reel", "size": 0}))
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    let body: Value = answer.json().await.unwrap();
    assert!(body["file"]["id"].is_string(), "{body}");
    assert!(
        body.get("create_blueprint").is_some_and(Value::is_null),
        "a directory's blueprint is null: {body}"
    );
    let answer = add(json!({"kind": "file", "name": "a.mov", "path": "reel", "size": 3}))
        .await
        .unwrap();
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["create_blueprint"]["method"], "POST", "{body}");
}

/// §3 step 1, agent side: a folder holding an empty subfolder is delivered (the agent
/// accepted only a blueprint object, so a `null` one failed the upload) and comes back down
/// with the empty folder recreated.
#[tokio::test(flavor = "multi_thread")]
async fn s3_a_folder_with_an_empty_subfolder_is_delivered() {
    let world = World::new().await;
    let src = tempfile::tempdir().unwrap();
    let reel = src.path().join("Reel");
    std::fs::create_dir_all(reel.join("empty")).unwrap();
    std::fs::create_dir_all(reel.join("cuts/also empty")).unwrap();
    let take = pseudo_random_bytes(7, MIB + 3);
    std::fs::write(reel.join("cuts/take.mov"), &take).unwrap();
    let agent = TestAgent::start(uploading(&world)).await;
    let (status, created) = agent
        .api
        .post(
            "/uploads",
            json!({"team_id": world.team_id, "paths": [reel], "package_name": "Reel"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["upload_id"].as_str().unwrap();
    let done = agent
        .api
        .wait_for("uploads", id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    assert_eq!(done["files_total"], 3, "{done}");
    let link = done["link"].as_str().unwrap().to_owned();

    let dst = tempfile::tempdir().unwrap();
    let got = fetched(&agent, &link, dst.path()).await;
    assert_eq!(got["state"], "complete", "{got}");
    let root = dst.path().join("Reel/Reel");
    assert!(root.join("empty").is_dir(), "the empty folder arrives");
    assert!(root.join("cuts/also empty").is_dir());
    assert_eq!(std::fs::read(root.join("cuts/take.mov")).unwrap(), take);
}

/// §3 links: the share URL is `https://get.massive.io/{id}?secret=…` (`[server]
/// share_link_base`), whatever the cloud URL; it pointed at the API's origin for any cloud
/// but MASV's. A link's host does not matter to the agent: it downloads it from its own cloud.
#[tokio::test(flavor = "multi_thread")]
async fn s3_share_links_point_at_the_link_base_not_at_the_api() {
    let world = World::new().await;
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("cut.mov"), b"the cut").unwrap();
    let agent = TestAgent::start(uploading(&world)).await;
    let (status, created) = agent
        .api
        .post(
            "/uploads",
            json!({"team_id": world.team_id, "paths": [src.path().join("cut.mov")], "package_name": "Cut"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let link = created["link"].as_str().unwrap().to_owned();
    assert!(
        link.starts_with("https://get.massive.io/") && link.contains("?secret="),
        "{link}"
    );
    let id = created["upload_id"].as_str().unwrap();
    let done = agent
        .api
        .wait_for("uploads", id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    let dst = tempfile::tempdir().unwrap();
    let got = fetched(&agent, &link, dst.path()).await;
    assert_eq!(got["state"], "complete", "{got}");
    assert_eq!(
        std::fs::read(dst.path().join("Cut/cut.mov")).unwrap(),
        b"the cut"
    );
}

/// §3 links [ours]: the hub says where its own links point (`GET /system/link_base`: its
/// `link_base`, by default its public URL) and builds the links it mails with it; an agent
/// given that base as `share_link_base` prints the same links.
#[tokio::test(flavor = "multi_thread")]
async fn s3_the_hub_answers_its_link_base_and_the_agent_follows_share_link_base() {
    let plain = TestHub::start().await;
    let answer: Value = raw_http()
        .get(plain.url("/system/link_base"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["link_base"], format!("http://{}/", plain.addr));

    let base = "https://dl.example.com/share/";
    let hub = TestHub::start_with(
        DataDir::new(),
        HubOptions {
            link_base: Some(url::Url::parse(base).unwrap()),
            ..HubOptions::default()
        },
    )
    .await;
    let answer: Value = raw_http()
        .get(hub.url("/system/link_base"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["link_base"], base);
    let world = World::on(hub);
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("cut.mov"), b"the cut").unwrap();
    let mut config = uploading(&world);
    config.link_base = Some(base.into());
    let agent = TestAgent::start(config).await;
    let (status, created) = agent
        .api
        .post(
            "/uploads",
            json!({
                "team_id": world.team_id,
                "paths": [src.path().join("cut.mov")],
                "recipients": ["editor@example.com"],
            }),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["upload_id"].as_str().unwrap();
    let done = agent
        .api
        .wait_for("uploads", id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    let (status, link) = agent
        .api
        .post(&format!("/uploads/{id}/link"), json!({}))
        .await;
    assert_eq!(status, 200, "{link}");
    assert!(link["link"].as_str().unwrap().starts_with(base), "{link}");
    let mails: Vec<String> = std::fs::read_dir(world.hub.data.path().join("outbox"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(mails.len(), 1);
    assert!(
        mails[0].contains(&format!("Download it: {base}")),
        "{}",
        mails[0]
    );
}

// ----- §3 Team inbox -----

/// §3 inbox, hub side: `page` starts at 1 and `limit` is 1 to 50; anything else is `400`.
#[tokio::test(flavor = "multi_thread")]
async fn s3_the_inbox_refuses_pages_below_1_and_limits_outside_1_to_50() {
    let world = World::new().await;
    let inbox = |query: &str| {
        raw_http()
            .get(
                world
                    .hub
                    .url(&format!("/teams/{}/inbox?{query}", world.team_id)),
            )
            .header("X-API-KEY", world.api_key.expose())
            .send()
    };
    for bad in [
        "limit=100",
        "limit=51",
        "limit=0",
        "page=0",
        "page=0&limit=10",
    ] {
        let answer = inbox(bad).await.unwrap();
        assert_eq!(answer.status(), 400, "{bad}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["code"], 400, "{bad}: {body}");
        assert!(body["message"].as_str().unwrap().contains("1"), "{body}");
    }
    for good in ["", "limit=50", "limit=1&page=1", "page=7"] {
        assert_eq!(inbox(good).await.unwrap().status(), 200, "{good}");
    }
}

/// §3 inbox, agent side: an inbox rule asks pages of at most 50, stops once it has listed
/// `total` (no second page), and files each portal's packages under the portal's subdomain.
/// (It asked `limit=100`, which a docs-following service refuses, so nothing ever arrived;
/// and named the folders by portal id.)
#[tokio::test(flavor = "multi_thread")]
async fn s3_an_inbox_rule_reads_pages_of_50_once_into_folders_named_by_subdomain() {
    let world = World::new().await;
    world
        .portal_upload(
            &world.open_portal,
            "Ep 1",
            vec![FileSpec::file("ep1.mov", b"episode one".to_vec())],
        )
        .await;
    world
        .portal_upload(
            &world.coded_portal,
            "Ep 2",
            vec![FileSpec::file("ep2.mov", b"episode two".to_vec())],
        )
        .await;
    let site = tempfile::tempdir().unwrap();
    let config = write_config(
        site.path(),
        &format!(
            r#"
[server]
api_key = "{}"

[[download]]
name = "inbox"
destination = "ingest"
schedule = "@yearly"
[download.inbox]
team_id = "{}"
since = "2020-01-01T00:00:00Z"
subfolder_per_portal = true
"#,
            world.api_key.expose(),
            world.team_id
        ),
    );
    let agent = TestAgent::start_configured(site.path(), uploading(&world), Some(&config)).await;
    let one = site.path().join("ingest/dailies/Ep 1/ep1.mov");
    let two = site.path().join("ingest/vault/Ep 2/ep2.mov");
    wait_until("both portal packages", LONG, || {
        one.exists() && two.exists()
    })
    .await;
    assert_eq!(std::fs::read(&one).unwrap(), b"episode one");
    assert_eq!(std::fs::read(&two).unwrap(), b"episode two");
    assert_eq!(
        hub_counter(&world.hub, "masv_hub_inbox_requests_total").await,
        1,
        "two packages of a total of 2: one page, no second one"
    );
    let (status, _) = agent.api.post("/automations/inbox/run", json!({})).await;
    assert_eq!(status, 200);
    wait_until_async("the second run's page", LONG, || async {
        hub_counter(&world.hub, "masv_hub_inbox_requests_total").await >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        hub_counter(&world.hub, "masv_hub_inbox_requests_total").await,
        2
    );
    let (_, downloads) = agent.api.get("/downloads").await;
    assert_eq!(downloads.as_array().unwrap().len(), 2, "{downloads}");
}

// ----- §3 Links -----

/// §3 links: a lookup counts against the link's access limit, on our hub as on MASV, so a
/// scheduled link rule looks a link up once per package fetch and never again once fetched.
/// A single-use link is downloaded (it failed with 403: the rule's lookup, then the
/// download's, used two accesses), and later runs make no lookup at all.
#[tokio::test(flavor = "multi_thread")]
async fn s3_a_scheduled_link_rule_spends_one_access_of_a_single_use_link() {
    let world = World::new().await;
    let package = world
        .upload(vec![FileSpec::file("cut.mov", b"the cut".to_vec())])
        .await;
    let link = world
        .share(
            &package,
            masv_agent::cloud::dto::CreateLink {
                access_limit: Some(1),
                ..Default::default()
            },
        )
        .await;
    let url = world.hub.link_url(&link);
    let site = tempfile::tempdir().unwrap();
    let config = write_config(
        site.path(),
        &format!(
            r#"
[[download]]
name = "vendor"
link = "{url}"
schedule = "* * * * *"
destination = "incoming"
"#
        ),
    );
    let agent = TestAgent::start_configured(site.path(), uploading(&world), Some(&config)).await;
    let file = site.path().join("incoming/dailies day 1/cut.mov");
    let (_, downloads) = wait_for_downloads(&agent, 1).await;
    assert_eq!(downloads[0]["state"], "complete", "{downloads:?}");
    assert_eq!(std::fs::read(&file).unwrap(), b"the cut");
    assert_eq!(world.hub.operator.link_accesses(&link.id).unwrap(), 1);

    // Later ticks (`run` is a tick now) look nothing up: the link was fetched.
    for _ in 0..3 {
        let (status, _) = agent.api.post("/automations/vendor/run", json!({})).await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(world.hub.operator.link_accesses(&link.id).unwrap(), 1);
    let (_, downloads) = agent.api.get("/downloads").await;
    assert_eq!(downloads.as_array().unwrap().len(), 1, "{downloads}");
    let (_, rules) = agent.api.get("/automations").await;
    let vendor = rules["automations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "vendor")
        .unwrap();
    assert!(vendor["last_error"].is_null(), "{vendor}");
}

/// §3 links, hub side: every lookup counts; past the limit the link answers 403.
#[tokio::test(flavor = "multi_thread")]
async fn s3_link_lookups_count_against_the_access_limit() {
    let world = World::new().await;
    let package = world
        .upload(vec![FileSpec::file("a.txt", b"a".to_vec())])
        .await;
    let link = world
        .share(
            &package,
            masv_agent::cloud::dto::CreateLink {
                access_limit: Some(2),
                ..Default::default()
            },
        )
        .await;
    for n in 1..=2 {
        world
            .client
            .link(&link.id, &link.download_secret, None)
            .await
            .unwrap();
        assert_eq!(world.hub.operator.link_accesses(&link.id).unwrap(), n);
    }
    let refused = world
        .client
        .link(&link.id, &link.download_secret, None)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("limit"), "{refused}");
    assert_eq!(world.hub.operator.link_accesses(&link.id).unwrap(), 2);
}

// ----- §5 The agent's local REST API -----

/// §5 `POST /uploads`: the team may be named by `subdomain`, as MASV's docs (seed 004) send it,
/// or by `team_id`. (`subdomain` was taken as a team id, so the docs' body failed.)
#[tokio::test(flavor = "multi_thread")]
async fn s5_a_team_upload_names_its_team_by_subdomain() {
    let world = World::new().await;
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("cut.mov"), b"the cut").unwrap();
    let agent = TestAgent::start(uploading(&world)).await;
    // The hub's team "Post House" has the subdomain post-house.
    let (status, created) = agent
        .api
        .post(
            "/uploads",
            json!({
                "subdomain": "post-house",
                "paths": [src.path().join("cut.mov")],
                "package_name": "By subdomain",
                "recipients": ["editor@example.com"],
            }),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["upload_id"].as_str().unwrap();
    let done = agent
        .api
        .wait_for("uploads", id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    let inbox = world
        .client
        .team_inbox(
            &world.team_id,
            &world.api_key,
            &masv_agent::cloud::dto::InboxQuery::default(),
        )
        .await
        .unwrap();
    assert!(
        inbox.records.iter().any(|r| r.name == "By subdomain"),
        "the package is the team's: {inbox:?}"
    );

    // An unknown subdomain is refused at once, naming it and the way out.
    let (status, refused) = agent
        .api
        .post(
            "/uploads",
            json!({"subdomain": "nobody", "paths": [src.path().join("cut.mov")]}),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    let message = refused.to_string();
    assert!(
        message.contains("nobody") && message.contains("team_id"),
        "{message}"
    );
}

/// §5 hub side [ours]: `GET /subdomains/teams/{subdomain}` answers the team to its own key only.
#[tokio::test(flavor = "multi_thread")]
async fn s5_the_hub_resolves_a_team_subdomain_for_that_team_only() {
    let world = World::new().await;
    let team = world
        .client
        .team_by_subdomain("post-house", &world.api_key)
        .await
        .unwrap();
    assert_eq!(
        (team.id.as_str(), team.subdomain.as_str()),
        (world.team_id.as_str(), "post-house")
    );
    let other = world.hub.operator.add_team("Other Shop", None).unwrap();
    let other_key = world.hub.operator.add_api_key(&other, None).unwrap();
    let refused = world
        .client
        .team_by_subdomain("post-house", &other_key)
        .await
        .unwrap_err();
    assert_eq!(crate::support::kind(&refused), "auth", "{refused}");
    let unknown = world
        .client
        .team_by_subdomain("nobody", &world.api_key)
        .await
        .unwrap_err();
    assert_eq!(crate::support::kind(&unknown), "not_found", "{unknown}");
    world
        .hub
        .operator
        .set_team_subdomain(&world.team_id, "posthouse")
        .unwrap();
    let renamed = world
        .client
        .team_by_subdomain("posthouse", &world.api_key)
        .await
        .unwrap();
    assert_eq!(renamed.id, world.team_id);
}

/// §5 `DELETE /downloads/{id}` without `remove_files` keeps what arrived and leaves no
/// preallocated `NAME.part` of a file that had not (it was left behind, full size).
#[tokio::test(flavor = "multi_thread")]
async fn s5_forgetting_a_download_removes_the_part_files_of_unfinished_files_only() {
    let world = World::slow(Duration::from_millis(300)).await;
    let big = pseudo_random_bytes(3, 40 * MIB);
    let (_, link) = world
        .shared(vec![
            FileSpec::file("0 small.txt", b"small".to_vec()),
            FileSpec::file("big.bin", big),
        ])
        .await;
    let agent = TestAgent::start(engine_config(&world.hub.base_url)).await;
    let dst = tempfile::tempdir().unwrap();
    let id = agent
        .api
        .download(download_request(&link, dst.path()))
        .await;
    let root = dst.path().join("dailies day 1");
    // The part file of big.bin: `big.bin.TAG.part`.
    let big_part = |root: &Path| {
        std::fs::read_dir(root).ok().is_some_and(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with("big.bin.") && name.ends_with(".part")
            })
        })
    };
    let start = Instant::now();
    while !(root.join("0 small.txt").exists() && big_part(&root)) {
        let (_, detail) = agent.api.get(&format!("/downloads/{id}")).await;
        assert!(
            start.elapsed() < LONG,
            "small.txt did not arrive while big.bin was going: {detail}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, detail) = agent.api.get(&format!("/downloads/{id}")).await;
    assert_eq!(detail["state"], "transferring", "{detail}");
    let (status, answer) = agent.api.delete(&format!("/downloads/{id}")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(std::fs::read(root.join("0 small.txt")).unwrap(), b"small");
    assert!(!big_part(&root), "the unfinished file's part file is gone");
    assert!(!root.join("big.bin").exists());
}

/// §5 counts agree: a download's error says "N of M files failed" with M its `files_total`
/// (skipped quarantined files are in neither; it said "1 of 10" with files_total 9), and a
/// refused name shows in `masv_agent_errors_total{kind="refused"}`.
#[tokio::test(flavor = "multi_thread")]
async fn s5_failure_counts_match_files_total_and_refused_names_are_counted() {
    let hub = TestHub::start_with(
        DataDir::new(),
        HubOptions {
            accept_hostile_names: true,
            ..HubOptions::default()
        },
    )
    .await;
    let world = World::on(hub);
    let mut files: Vec<FileSpec> = (0..8)
        .map(|i| FileSpec::file(&format!("f{i}.txt"), vec![b'x'; 10]))
        .collect();
    files.push(FileSpec::file("infected.exe", b"evil".to_vec()));
    files.push(FileSpec::file("../escaped.txt", b"out".to_vec()));
    let (package, link) = world.shared(files).await;
    world
        .hub
        .operator
        .set_virus_detected(&package.file("infected.exe").id, true)
        .unwrap();
    let agent = TestAgent::start(engine_config(&world.hub.base_url)).await;
    let dst = tempfile::tempdir().unwrap();
    let done = fetched(&agent, &link, dst.path()).await;
    // The only failure is a file that can never arrive: the others did (issue 11).
    assert_eq!(done["state"], "complete", "{done}");
    assert_eq!(done["files_total"], 9, "{done}");
    assert_eq!(done["files_done"], 8, "{done}");
    let error = done["error"].as_str().unwrap();
    assert!(
        error.starts_with("1 of 9 files could never arrive"),
        "{error}"
    );
    let metrics = agent_metrics(&agent).await;
    assert!(
        metrics.contains("masv_agent_errors_total{kind=\"refused\"} 1"),
        "{metrics}"
    );
}

/// §5 states: downloads have no `idle`, so a bad `states` lists only theirs; uploads' list it.
#[tokio::test(flavor = "multi_thread")]
async fn s5_a_bad_states_filter_lists_the_states_of_that_kind() {
    let world = World::new().await;
    let agent = TestAgent::start(engine_config(&world.hub.base_url)).await;
    let (status, answer) = agent.api.delete("/downloads?states=bogus").await;
    assert_eq!(status, 400, "{answer}");
    let message = answer.to_string();
    assert!(
        message.contains("bogus") && message.contains("complete"),
        "{message}"
    );
    assert!(!message.contains("idle"), "{message}");
    let (status, answer) = agent.api.delete("/uploads?states=bogus").await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.to_string().contains("idle"), "{answer}");
}

/// §5 `POST /uploads`: paths must be files or folders. A device, a kernel file, and a path
/// with a NUL byte are refused with 400 naming the path (they were accepted).
#[tokio::test(flavor = "multi_thread")]
async fn s5_uploads_refuse_devices_kernel_files_and_nul_bytes_by_name() {
    let world = World::new().await;
    let agent = TestAgent::start(uploading(&world)).await;
    for (path, shown) in [
        ("/dev/zero", "/dev/zero"),
        ("/proc/self/mem", "/proc/self/mem"),
        ("/tmp/a\u{0}b", "/tmp/a"),
    ] {
        for (route, body) in [
            (
                "/uploads",
                json!({"team_id": world.team_id, "paths": [path]}),
            ),
            (
                "/portals/uploads",
                json!({"subdomain": "dailies", "sender_email": "a@b.c", "paths": [path]}),
            ),
        ] {
            let (status, answer) = agent.api.post(route, body).await;
            assert_eq!(status, 400, "{route} {path:?}: {answer}");
            assert!(answer.to_string().contains(shown), "{route}: {answer}");
        }
    }
    let (_, uploads) = agent.api.get("/uploads").await;
    assert_eq!(uploads.as_array().unwrap().len(), 0, "{uploads}");
}

// ----- helpers -----

/// The agent's `/metrics` text.
async fn agent_metrics(agent: &TestAgent) -> String {
    let url = agent.api.base.replace("/api/v1", "/metrics");
    raw_http()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Writes an agent configuration file in `dir`.
fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A counter of the hub's `/metrics`.
async fn hub_counter(hub: &TestHub, name: &str) -> u64 {
    let text = raw_http()
        .get(format!("http://{}/metrics", hub.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the hub's metrics:\n{text}"))
}

/// Waits until the agent has `n` downloads, all ended; returns them.
async fn wait_for_downloads(agent: &TestAgent, n: usize) -> (u16, Vec<Value>) {
    let start = Instant::now();
    loop {
        let (status, list) = agent.api.get("/downloads").await;
        let list = list.as_array().cloned().unwrap_or_default();
        if list.len() >= n
            && list
                .iter()
                .all(|d| d["state"] == "complete" || d["state"] == "error")
        {
            return (status, list);
        }
        assert!(
            start.elapsed() < LONG,
            "waiting for {n} downloads: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_until_async<F, Fut>(what: &str, limit: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
