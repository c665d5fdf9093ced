//! The hub against the typed client, over real HTTP with real bytes: every route of spec §2–3,
//! the storage of §4, injected faults, restarts, bad input, secrets kept out of `Debug`, and
//! the operator's seed file. Errors are checked as the `CloudError` variant the agent acts on.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use chrono::{SubsecRound, Utc};
use futures_util::future::try_join_all;
use masv_agent::cloud::dto::{
    ChunkExtra, CreateLink, CreatePortalPackage, CreateTeamPackage, DownloadUrl, FileExtras,
    FileKind, FinalizeFile, InboxQuery, LinkUrl, PackageSpec, Secret,
};
use masv_agent::cloud::{Client, CloudError};
use masv_agent::hub::{Faults, Seed};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use url::Url;

use crate::support::*;

fn new_id() -> String {
    ulid::Ulid::new().to_string()
}

/// A small file: one part.
fn small(name: &str, seed: u64) -> FileSpec {
    FileSpec::file(name, pseudo_random_bytes(seed, 64 * KIB + seed as usize))
}

/// A file of two parts: one of the minimum size and a short last one.
fn two_parts(name: &str, seed: u64) -> FileSpec {
    FileSpec::file(name, pseudo_random_bytes(seed, MIN_PART + KIB))
}

/// The download token a recipient gets from a fresh link to `package`.
async fn recipient_token(world: &World, package: &UploadedPackage) -> Secret {
    let link = world.share(package, CreateLink::default()).await;
    world
        .client
        .link(&link.id, &link.download_secret, None)
        .await
        .expect("a fresh link resolves")
        .package_token
}

/// The ids of a package's entries, as its sender sees them.
async fn listing(world: &World, package: &UploadedPackage) -> Vec<String> {
    world
        .client
        .package_files(&package.id, &package.token)
        .await
        .expect("the sender lists the package")
        .into_iter()
        .map(|f| f.id)
        .collect()
}

/// A raw request's status and body, for what the typed client does not show.
async fn status_and_body(request: reqwest::RequestBuilder) -> (StatusCode, String) {
    let response = request.send().await.expect("the hub answers");
    let status = response.status();
    (status, response.text().await.expect("a readable body"))
}

/// Asserts a control-plane error body: `{"code": status, "message": "…"}`.
#[track_caller]
fn assert_api_error(status: StatusCode, body: &str, expected: u16) {
    assert_eq!(status.as_u16(), expected, "{body}");
    let error: serde_json::Value = serde_json::from_str(body).expect("errors are JSON");
    assert_eq!(error["code"], expected, "{body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// `url` with query parameter `key` replaced by `value` (or removed when `None`).
fn with_query(url: &str, key: &str, value: Option<&str>) -> String {
    let mut url = Url::parse(url).expect("signed URLs parse");
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .into_owned()
        .filter(|(k, _)| k != key)
        .collect();
    {
        let mut query = url.query_pairs_mut();
        query.clear();
        for (k, v) in &pairs {
            query.append_pair(k, v);
        }
        if let Some(value) = value {
            query.append_pair(key, value);
        }
    }
    url.to_string()
}

fn query_value(url: &str, key: &str) -> Option<String> {
    Url::parse(url)
        .expect("URLs from the hub parse")
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

fn storage_url(url: String) -> DownloadUrl {
    DownloadUrl {
        method: "GET".into(),
        url: Secret::new(url),
    }
}

// ----- Links (spec §2) -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_lookup_answers_the_package_behind_the_link() {
    let world = World::new().await;
    let package = world
        .upload(vec![
            small("clip.mov", 1),
            small("notes.txt", 2).at("docs"),
            FileSpec::directory("empty").at("docs"),
        ])
        .await;
    let link = world
        .share(
            &package,
            CreateLink {
                email: Some("client@example.com".into()),
                ..CreateLink::default()
            },
        )
        .await;
    assert!(link.active, "{link:?}");
    assert_eq!(link.password, "", "no password, nothing to mask");

    let info = world
        .client
        .link(&link.id, &link.download_secret, None)
        .await
        .unwrap();
    assert_eq!(info.id, link.id);
    assert_eq!(info.package_id, package.id);
    assert_eq!(info.package_size, package.size());
    assert_eq!(info.name, "dailies day 1");
    // A hub team has no address: its name stands in for the sender.
    assert_eq!(info.sender_email.as_deref(), Some(TEAM_NAME));
    assert_eq!(info.recipient_email.as_deref(), Some("client@example.com"));
    assert_eq!(info.expiry, None);
    assert!(!info.package_token.is_empty());

    // The token of the answer is what the download flow goes on with.
    let files = world
        .client
        .package_files(&info.package_id, &info.package_token)
        .await
        .unwrap();
    assert_eq!(files.len(), 3);
    let clip = package.file("clip.mov");
    let bytes = download(
        &world.client,
        &info.package_id,
        &info.package_token,
        &clip.id,
        None,
    )
    .await
    .unwrap();
    assert_eq!(bytes, clip.spec.bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_password_missing_or_wrong_is_auth_and_the_right_one_opens_it() {
    let world = World::new().await;
    let package = world.upload(vec![small("a.bin", 3)]).await;
    let password = Secret::new("correct horse");
    let link = world
        .share(
            &package,
            CreateLink {
                password: Some(password.clone()),
                ..CreateLink::default()
            },
        )
        .await;
    assert_eq!(link.password, "****");

    let client = &world.client;
    let secret = &link.download_secret;
    expect_err(client.link(&link.id, secret, None).await, "auth");
    expect_err(
        client
            .link(&link.id, secret, Some(&Secret::new("battery staple")))
            .await,
        "auth",
    );
    let info = client
        .link(&link.id, secret, Some(&password))
        .await
        .unwrap();
    assert_eq!(info.package_id, package.id);

    // A password given at package creation protects the package's links.
    let protected = world
        .team_package(CreateTeamPackage {
            password: Some(Secret::new("package pw")),
            ..named("protected")
        })
        .await;
    let protected = upload_files(client, protected, vec![small("b.bin", 4)])
        .await
        .unwrap();
    client
        .finalize_package(&protected.id, &protected.token)
        .await
        .unwrap();
    let link = world.share(&protected, CreateLink::default()).await;
    assert_eq!(link.password, "****");
    expect_err(
        client.link(&link.id, &link.download_secret, None).await,
        "auth",
    );
    client
        .link(
            &link.id,
            &link.download_secret,
            Some(&Secret::new("package pw")),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_wrong_link_passwords_are_slowed_down() {
    let world = World::new().await;
    let package = world.upload(vec![small("a.bin", 5)]).await;
    let link = world
        .share(
            &package,
            CreateLink {
                password: Some(Secret::new("right")),
                ..CreateLink::default()
            },
        )
        .await;
    let wrong = Secret::new("guess");
    let mut took = Vec::new();
    for _ in 0..4 {
        let (result, elapsed) = timed(world.client.link(
            &link.id,
            &link.download_secret,
            Some(&wrong),
        ))
        .await;
        expect_err(result, "auth");
        took.push(elapsed);
    }
    // 250 ms owed after the first failure, doubling: the fourth answer waits out a second.
    assert!(took[3] >= Duration::from_millis(900), "{took:?}");
    assert!(took[3] >= took[0] + Duration::from_millis(400), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_link_is_expired_and_so_are_its_tokens() {
    let world = World::new().await;
    let package = world.upload(vec![small("a.bin", 6)]).await;
    let expiry = (Utc::now() + chrono::Duration::milliseconds(1500)).trunc_subsecs(3);
    let link = world
        .share(
            &package,
            CreateLink {
                expiry: Some(expiry),
                ..CreateLink::default()
            },
        )
        .await;
    assert_eq!(link.expiry, Some(expiry));
    let info = world
        .client
        .link(&link.id, &link.download_secret, None)
        .await
        .unwrap();
    assert_eq!(info.expiry, Some(expiry));

    // Time itself is the subject: wait until the link has expired.
    let left = (expiry - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(100)).await;

    expect_err(
        world
            .client
            .link(&link.id, &link.download_secret, None)
            .await,
        "expired",
    );
    let (status, body) = status_and_body(raw_http().get(world.hub.url(&format!(
        "/links/{}?secret={}",
        link.id,
        link.download_secret.expose()
    ))))
    .await;
    assert_api_error(status, &body, 410);
    // The token handed out before expiry dies with the link.
    expect_err(
        world
            .client
            .package_files(&package.id, &info.package_token)
            .await,
        "auth",
    );

    // A link cannot be born expired.
    let error = expect_err(
        world
            .client
            .create_link(
                &package.id,
                &package.token,
                &CreateLink {
                    expiry: Some(Utc::now() - chrono::Duration::seconds(1)),
                    ..CreateLink::default()
                },
            )
            .await,
        "rejected",
    );
    assert_eq!(error.status(), Some(400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_link_is_expired_and_its_tokens_stop_working() {
    let world = World::new().await;
    let package = world.upload(vec![small("a.bin", 7)]).await;
    let client = &world.client;
    let link = world.share(&package, CreateLink::default()).await;
    let info = client
        .link(&link.id, &link.download_secret, None)
        .await
        .unwrap();

    let response = raw_http()
        .delete(
            world
                .hub
                .url(&format!("/packages/{}/links/{}", package.id, link.id)),
        )
        .header("X-Package-Token", package.token.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.bytes().await.unwrap().is_empty());

    expect_err(
        client.link(&link.id, &link.download_secret, None).await,
        "expired",
    );
    // A token obtained through the link is cut off with it.
    let error = expect_err(
        client.package_files(&package.id, &info.package_token).await,
        "rejected",
    );
    assert_eq!(error.status(), Some(403));

    // The same through the typed client.
    let other = world.share(&package, CreateLink::default()).await;
    client
        .disable_link(&package.id, &other.id, &package.token)
        .await
        .unwrap();
    expect_err(
        client.link(&other.id, &other.download_secret, None).await,
        "expired",
    );
    expect_err(
        client
            .disable_link(&package.id, &new_id(), &package.token)
            .await,
        "not_found",
    );
    // Only the sender disables links.
    let third = world.share(&package, CreateLink::default()).await;
    let recipient = client
        .link(&third.id, &third.download_secret, None)
        .await
        .unwrap()
        .package_token;
    expect_err(
        client
            .disable_link(&package.id, &third.id, &recipient)
            .await,
        "rejected",
    );
    client
        .link(&third.id, &third.download_secret, None)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_past_its_download_limit_is_expired() {
    let world = World::new().await;
    let package = world.upload(vec![small("a.bin", 8)]).await;
    let link = world
        .share(
            &package,
            CreateLink {
                access_limit: Some(1),
                ..CreateLink::default()
            },
        )
        .await;
    assert_eq!(link.access_limit, Some(1));
    assert!(link.access_limit_enabled);
    world
        .client
        .link(&link.id, &link.download_secret, None)
        .await
        .unwrap();
    expect_err(
        world
            .client
            .link(&link.id, &link.download_secret, None)
            .await,
        "expired",
    );
    let (status, body) = status_and_body(raw_http().get(world.hub.url(&format!(
        "/links/{}?secret={}",
        link.id,
        link.download_secret.expose()
    ))))
    .await;
    assert_api_error(status, &body, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_links_and_wrong_secrets_are_not_found() {
    let world = World::new().await;
    let package = world.upload(vec![small("a.bin", 9)]).await;
    let link = world.share(&package, CreateLink::default()).await;
    let client = &world.client;
    expect_err(
        client.link(&new_id(), &link.download_secret, None).await,
        "not_found",
    );
    expect_err(
        client
            .link(&link.id, &Secret::new("not the secret"), None)
            .await,
        "not_found",
    );
    expect_err(
        client
            .link("not-a-link-id", &link.download_secret, None)
            .await,
        "not_found",
    );
    let (status, body) =
        status_and_body(raw_http().get(world.hub.url(&format!("/links/{}", link.id)))).await;
    assert_api_error(status, &body, 404);
    // None of that used the link up.
    client
        .link(&link.id, &link.download_secret, None)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_made_before_finalize_is_inactive_until_then() {
    let world = World::new().await;
    let package = world.upload_unfinalized(vec![small("a.bin", 10)]).await;
    let link = world.share(&package, CreateLink::default()).await;
    assert!(!link.active, "{link:?}");
    expect_err(
        world
            .client
            .link(&link.id, &link.download_secret, None)
            .await,
        "expired",
    );
    world
        .client
        .finalize_package(&package.id, &package.token)
        .await
        .unwrap();
    let info = world
        .client
        .link(&link.id, &link.download_secret, None)
        .await
        .unwrap();
    assert_eq!(info.package_id, package.id);
}

// ----- Files and downloads (spec §2) -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_shows_paths_and_directories_and_every_file_downloads() {
    let world = World::new().await;
    let package = world
        .upload(vec![
            small("root.bin", 11),
            two_parts("take 2.mov", 12).at("/shots/day 1/"),
            FileSpec::directory("empty").at("shots"),
            FileSpec::file("zero.txt", Bytes::new()).at("shots"),
        ])
        .await;
    let token = recipient_token(&world, &package).await;
    let files = world
        .client
        .package_files(&package.id, &token)
        .await
        .unwrap();
    let shown: Vec<(FileKind, &str, &str, u64)> = files
        .iter()
        .map(|f| (f.kind, f.path.as_str(), f.name.as_str(), f.size))
        .collect();
    assert_eq!(
        shown,
        vec![
            (FileKind::File, "", "root.bin", 64 * 1024 + 11),
            (FileKind::Directory, "shots", "empty", 0),
            (FileKind::File, "shots", "zero.txt", 0),
            (
                FileKind::File,
                "shots/day 1",
                "take 2.mov",
                (MIN_PART + KIB) as u64
            ),
        ]
    );
    for file in &files {
        let uploaded = package.file(&file.name);
        assert_eq!(file.id, uploaded.id);
        assert_eq!(file.last_modified, uploaded.spec.last_modified);
        assert!(!file.virus_detected);
        if file.kind == FileKind::Directory {
            // A folder has no bytes to hand out.
            let error = expect_err(
                world
                    .client
                    .download_url(&package.id, &file.id, &token)
                    .await,
                "rejected",
            );
            assert_eq!(error.status(), Some(400));
            continue;
        }
        let url = world
            .client
            .download_url(&package.id, &file.id, &token)
            .await
            .unwrap();
        assert_eq!(url.method, "GET");
        let response = world.client.get_range(&url, None).await.unwrap();
        assert_eq!(read_body(response).await.unwrap(), uploaded.spec.bytes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virus_flagged_file_is_quarantined() {
    let world = World::new().await;
    let package = world
        .upload(vec![small("clean.bin", 13), small("infected.bin", 14)])
        .await;
    let infected = package.file("infected.bin");
    world
        .hub
        .operator
        .set_virus_detected(&infected.id, true)
        .unwrap();

    let token = recipient_token(&world, &package).await;
    let files = world
        .client
        .package_files(&package.id, &token)
        .await
        .unwrap();
    let flagged: Vec<(&str, bool)> = files
        .iter()
        .map(|f| (f.name.as_str(), f.virus_detected))
        .collect();
    assert_eq!(flagged, vec![("clean.bin", false), ("infected.bin", true)]);
    expect_err(
        world
            .client
            .download_url(&package.id, &infected.id, &token)
            .await,
        "quarantined",
    );
    let (status, body) = status_and_body(
        raw_http()
            .get(world.hub.url(&format!(
                "/packages/{}/files/{}/download",
                package.id, infected.id
            )))
            .header("X-Package-Token", token.expose()),
    )
    .await;
    assert_api_error(status, &body, 403);
    let clean = package.file("clean.bin");
    let bytes = download(&world.client, &package.id, &token, &clean.id, None)
        .await
        .unwrap();
    assert_eq!(bytes, clean.spec.bytes);

    // Cleared by the operator, it downloads again.
    world
        .hub
        .operator
        .set_virus_detected(&infected.id, false)
        .unwrap();
    let bytes = download(&world.client, &package.id, &token, &infected.id, None)
        .await
        .unwrap();
    assert_eq!(bytes, infected.spec.bytes);
    assert!(
        world
            .hub
            .operator
            .set_virus_detected(&new_id(), true)
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_token_cannot_change_the_package() {
    let world = World::new().await;
    let package = world.upload(vec![small("a.bin", 15)]).await;
    let token = recipient_token(&world, &package).await;
    let client = &world.client;
    let error = expect_err(
        client
            .add_file(&package.id, &token, &small("more.bin", 16).request())
            .await,
        "rejected",
    );
    assert_eq!(error.status(), Some(403));
    expect_err(
        client
            .create_link(&package.id, &token, &CreateLink::default())
            .await,
        "rejected",
    );
    expect_err(
        client.finalize_package(&package.id, &token).await,
        "rejected",
    );
    assert_eq!(
        listing(&world, &package).await,
        vec![package.files[0].id.clone()]
    );
}

// ----- Portals and teams (spec §3) -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portals_are_found_by_subdomain_and_guard_their_access_code() {
    let world = World::new().await;
    let client = &world.client;
    let open = client.portal(&world.open_portal.subdomain).await.unwrap();
    assert_eq!(open.id, world.open_portal.id);
    assert_eq!(open.name, "Dailies");
    assert_eq!(open.subdomain, "dailies");
    assert!(!open.has_access_code);
    assert_eq!(client.portal("DAILIES").await.unwrap().id, open.id);
    let coded = client.portal("vault").await.unwrap();
    assert!(coded.has_access_code);
    expect_err(client.portal("nowhere").await, "not_found");

    let request = |access_code: Option<&str>| CreatePortalPackage {
        name: "rushes".into(),
        description: "day 3".into(),
        sender: "editor@example.com".into(),
        access_code: access_code.map(Secret::from),
        metadata: Some(BTreeMap::from([("show".into(), "Bluey".into())])),
    };
    let created = client
        .create_portal_package(&open.id, &request(None))
        .await
        .unwrap();
    assert_eq!(created.name, "rushes");
    assert!(!created.access_token.is_empty());

    expect_err(
        client
            .create_portal_package(&coded.id, &request(None))
            .await,
        "auth",
    );
    expect_err(
        client
            .create_portal_package(&coded.id, &request(Some("open says me")))
            .await,
        "auth",
    );
    let created = client
        .create_portal_package(&coded.id, &request(Some("open sesame")))
        .await
        .unwrap();
    // The package is a real one: it takes files and finalizes.
    let uploaded = upload_files(client, created, vec![small("a.bin", 17)])
        .await
        .unwrap();
    client
        .finalize_package(&uploaded.id, &uploaded.token)
        .await
        .unwrap();

    let error = expect_err(
        client
            .create_portal_package(
                &open.id,
                &CreatePortalPackage {
                    sender: "not an address".into(),
                    ..request(None)
                },
            )
            .await,
        "rejected",
    );
    assert_eq!(error.status(), Some(400));
    expect_err(
        client
            .create_portal_package(&new_id(), &request(None))
            .await,
        "not_found",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_packages_need_that_teams_api_key() {
    let world = World::new().await;
    let client = &world.client;
    let request = named("team package");
    expect_err(
        client
            .create_team_package(
                &world.team_id,
                &Secret::new("an-api-key-nobody-has-0123456789"),
                &request,
            )
            .await,
        "auth",
    );
    let other_team = world.hub.operator.add_team("Elsewhere", None).unwrap();
    let other_key = world.hub.operator.add_api_key(&other_team, None).unwrap();
    expect_err(
        client
            .create_team_package(&world.team_id, &other_key, &request)
            .await,
        "auth",
    );
    let (status, body) = status_and_body(
        raw_http()
            .post(world.hub.url(&format!("/teams/{}/packages", world.team_id)))
            .header("X-API-KEY", other_key.expose())
            .json(&request),
    )
    .await;
    assert_api_error(status, &body, 403);
    let (status, body) = status_and_body(
        raw_http()
            .post(world.hub.url(&format!("/teams/{}/packages", world.team_id)))
            .json(&request),
    )
    .await;
    assert_api_error(status, &body, 401);

    client
        .create_team_package(&other_team, &other_key, &request)
        .await
        .unwrap();
    let created = client
        .create_team_package(&world.team_id, &world.api_key, &request)
        .await
        .unwrap();
    assert_eq!(created.name, "team package");
    assert_eq!(created.id.len(), 26);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_api_key_does_not_slow_down_the_right_one() {
    let world = World::new().await;
    let wrong = Secret::new("an-api-key-nobody-has-0123456789");
    let (_, guessing) = timed(async {
        for _ in 0..3 {
            expect_err(
                world
                    .client
                    .create_team_package(&world.team_id, &wrong, &named("guess"))
                    .await,
                "auth",
            );
        }
    })
    .await;
    // Wrong keys wait 0, 250 and 500 ms: guessing is slowed down...
    assert!(guessing >= Duration::from_millis(700), "{guessing:?}");
    // ...but the team's own calls do not pay for it (a fourth guess would wait a second).
    let (created, took) = timed(world.team_package(named("real"))).await;
    assert_eq!(created.name, "real");
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizing_a_package_with_recipients_writes_each_a_working_link() {
    let world = World::new().await;
    let recipients = vec!["ana@example.com".to_owned(), "bo@example.com".to_owned()];
    let created = world
        .team_package(CreateTeamPackage {
            recipients: recipients.clone(),
            ..named("for review")
        })
        .await;
    let package = upload_files(&world.client, created, vec![small("cut.mov", 18)])
        .await
        .unwrap();
    world
        .client
        .finalize_package(&package.id, &package.token)
        .await
        .unwrap();

    let outbox = world.hub.data.path().join("outbox");
    let mut messages: Vec<String> = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .collect();
    messages.sort();
    assert_eq!(messages.len(), 2, "{messages:?}");
    for (message, recipient) in messages.iter().zip(&recipients) {
        assert!(
            message.starts_with(&format!("To: {recipient}\n")),
            "{message}"
        );
        let url = message
            .lines()
            .find_map(|l| l.strip_prefix("Download it: "))
            .expect("the message holds the link");
        assert!(
            url.starts_with(&format!("http://{}/", world.hub.addr)),
            "{url}"
        );
        let link = LinkUrl::parse(url).unwrap();
        let info = world
            .client
            .link(&link.link_id, &link.secret, None)
            .await
            .unwrap();
        assert_eq!(info.package_id, package.id);
        assert_eq!(info.recipient_email.as_deref(), Some(recipient.as_str()));
    }
}

// ----- Upload flow (spec §3) -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_speaks_s3() {
    let world = World::new().await;
    let client = &world.client;
    let package = world.team_package(named("multipart")).await;
    let token = &package.access_token;
    let spec = two_parts("two parts.bin", 19);
    let added = client
        .add_file(&package.id, token, &spec.request())
        .await
        .unwrap();
    assert_eq!(added.max_chunks_count, 10_000);
    assert_eq!(added.max_chunk_size, 5 * 1024 * MIB as u64);
    assert_eq!(added.min_chunk_size, MIN_PART as u64);
    let blueprint = added
        .create_blueprint
        .as_ref()
        .expect("a file with bytes gets a create blueprint");
    assert_eq!(blueprint.method, "POST");
    assert!(query_value(blueprint.url.expose(), "uploads").is_some());
    assert!(
        blueprint
            .url
            .expose()
            .starts_with(&format!("http://{}/", world.hub.addr))
    );

    // The blueprint, executed as it is, is an S3 CreateMultipartUpload.
    let response = raw_http()
        .post(blueprint.url.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/xml");
    let xml = response.text().await.unwrap();
    assert!(
        xml.contains(
            r#"<InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">"#
        ),
        "{xml}"
    );
    assert!(xml.contains("<UploadId>"), "{xml}");

    let upload_id = client.create_multipart(blueprint).await.unwrap();
    assert!(!xml.contains(&upload_id), "every creation is a new upload");

    // Part URLs come in batches: part numbers are start+1 ..= start+count.
    let first = client
        .part_urls(&package.id, &added.file.id, token, &upload_id, 0, 1)
        .await
        .unwrap();
    let second = client
        .part_urls(&package.id, &added.file.id, token, &upload_id, 1, 1)
        .await
        .unwrap();
    let three = client
        .part_urls(&package.id, &added.file.id, token, &upload_id, 0, 3)
        .await
        .unwrap();
    let numbers = |blueprints: &[masv_agent::cloud::dto::Blueprint]| -> Vec<String> {
        blueprints
            .iter()
            .map(|b| {
                assert_eq!(b.method, "PUT");
                assert_eq!(
                    query_value(b.url.expose(), "uploadId").as_deref(),
                    Some(upload_id.as_str())
                );
                query_value(b.url.expose(), "partNumber").unwrap()
            })
            .collect()
    };
    assert_eq!(numbers(&first), ["1"]);
    assert_eq!(numbers(&second), ["2"]);
    assert_eq!(numbers(&three), ["1", "2", "3"]);

    // Each PUT answers the quoted MD5 of the part's exact bytes.
    let parts = parts_of(&spec.bytes, MIN_PART as u64);
    assert_eq!(
        parts.iter().map(Bytes::len).collect::<Vec<_>>(),
        [MIN_PART, KIB]
    );
    let etags = put_parts(client, &[first[0].clone(), second[0].clone()], &parts)
        .await
        .unwrap();
    for (etag, part) in etags.iter().zip(&parts) {
        assert_eq!(etag, &format!("\"{}\"", md5_hex(part)));
    }

    let finalize = finalize_request(spec.bytes.len() as u64, MIN_PART as u64, &upload_id, &etags);
    client
        .finalize_file(&package.id, &added.file.id, token, &finalize)
        .await
        .unwrap();
    // Finalizing again is harmless.
    client
        .finalize_file(&package.id, &added.file.id, token, &finalize)
        .await
        .unwrap();
    let bytes = download(client, &package.id, token, &added.file.id, None)
        .await
        .unwrap();
    assert_eq!(bytes, spec.bytes);

    // Batches stay within what a file may have.
    let error = expect_err(
        client
            .part_urls(&package.id, &added.file.id, token, &upload_id, 9_999, 2)
            .await,
        "rejected",
    );
    assert_eq!(error.status(), Some(400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_finalize_checks_every_part_against_storage() {
    let world = World::new().await;
    let client = &world.client;
    let package = world.team_package(named("etags")).await;
    let token = &package.access_token;
    let spec = two_parts("checked.bin", 20);
    let size = spec.bytes.len() as u64;
    let chunk = MIN_PART as u64;
    let (added, upload_id) = start_file(client, &package.id, token, &spec).await.unwrap();
    let (file_id, upload_id) = (added.file.id, upload_id.unwrap());
    let blueprints = part_blueprints(client, &package.id, &file_id, token, &upload_id, 2)
        .await
        .unwrap();
    let parts = parts_of(&spec.bytes, chunk);

    // Only part 1 has arrived: a finalize naming part 2 is refused.
    let mut etags = put_parts(client, &blueprints[..1], &parts[..1])
        .await
        .unwrap();
    etags.push(format!("\"{}\"", md5_hex(&parts[1])));
    let finalize = |etags: &[String]| finalize_request(size, chunk, &upload_id, etags);
    let error = expect_err(
        client
            .finalize_file(&package.id, &file_id, token, &finalize(&etags))
            .await,
        "rejected",
    );
    assert_eq!(error.status(), Some(400));
    assert!(error.to_string().contains("part 2"), "{error}");

    etags[1] = put_parts(client, &blueprints[1..], &parts[1..])
        .await
        .unwrap()
        .remove(0);
    let (package_id, file_id) = (package.id.as_str(), file_id.as_str());
    let rejected = |request| async move {
        let error = expect_err(
            client
                .finalize_file(package_id, file_id, token, &request)
                .await,
            "rejected",
        );
        assert_eq!(error.status(), Some(400), "{error}");
        error
    };
    // A wrong ETag.
    let mut wrong = etags.clone();
    wrong[1] = format!("\"{}\"", md5_hex(b"other bytes"));
    rejected(finalize(&wrong)).await;
    // A part left out of the list (the sizes no longer add up either).
    rejected(finalize(&etags[..1])).await;
    // A gap in the part numbers.
    let mut gap = finalize(&etags);
    gap.chunk_extras[1].part_number = 3;
    rejected(gap).await;
    // Another upload's id.
    let mut other = finalize(&etags);
    other.file_extras.upload_id = "0".repeat(32);
    rejected(other).await;
    // A size the parts do not hold.
    let mut short = finalize(&etags);
    short.size -= 1;
    rejected(short).await;
    // Nothing of that finalized the file.
    let error = expect_err(
        client.download_url(&package.id, file_id, token).await,
        "rejected",
    );
    assert_eq!(error.status(), Some(409));

    // ETags without quotes, in capitals, with numbered `part_number`s: still the same parts.
    let body = serde_json::json!({
        "size": size,
        "chunk_size": chunk,
        "file_extras": {"upload_id": upload_id},
        "chunk_extras": [
            {"part_number": 1, "etag": etags[0].trim_matches('"').to_uppercase()},
            {"partNumber": "2", "etag": etags[1]},
        ],
    });
    let response = raw_http()
        .post(world.hub.url(&format!(
            "/packages/{}/files/{file_id}/finalize",
            package.id
        )))
        .header("X-Package-Token", token.expose())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = download(client, &package.id, token, file_id, None)
        .await
        .unwrap();
    assert_eq!(bytes, spec.bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_but_the_last_must_be_at_least_5_mib() {
    let world = World::new().await;
    let client = &world.client;
    let package = world.team_package(named("small parts")).await;
    let token = &package.access_token;
    let spec = FileSpec::file("two small parts.bin", pseudo_random_bytes(21, 2 * KIB));
    let (added, upload_id) = start_file(client, &package.id, token, &spec).await.unwrap();
    let upload_id = upload_id.unwrap();
    let blueprints = part_blueprints(client, &package.id, &added.file.id, token, &upload_id, 2)
        .await
        .unwrap();
    let parts = parts_of(&spec.bytes, KIB as u64);
    let etags = put_parts(client, &blueprints, &parts).await.unwrap();
    let error = expect_err(
        client
            .finalize_file(
                &package.id,
                &added.file.id,
                token,
                &finalize_request(2 * KIB as u64, KIB as u64, &upload_id, &etags),
            )
            .await,
        "rejected",
    );
    assert!(error.to_string().contains("at least"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_finalizes_only_with_a_finalized_file() {
    let world = World::new().await;
    let client = &world.client;
    let created = world.team_package(named("finalize")).await;
    let (id, token) = (created.id.clone(), created.access_token.clone());

    let error = expect_err(client.finalize_package(&id, &token).await, "rejected");
    assert_eq!(error.status(), Some(400));
    assert!(
        error
            .to_string()
            .contains("package must have at least 1 file"),
        "{error}"
    );
    upload_file(client, &id, &token, FileSpec::directory("only a folder"))
        .await
        .unwrap();
    let error = expect_err(client.finalize_package(&id, &token).await, "rejected");
    assert!(
        error
            .to_string()
            .contains("package must have at least 1 file"),
        "{error}"
    );

    // A file still uploading holds the package back.
    let spec = small("late.bin", 22);
    let (added, upload_id) = start_file(client, &id, &token, &spec).await.unwrap();
    let upload_id = upload_id.unwrap();
    let error = expect_err(client.finalize_package(&id, &token).await, "rejected");
    assert_eq!(error.status(), Some(400));
    let blueprints = part_blueprints(client, &id, &added.file.id, &token, &upload_id, 1)
        .await
        .unwrap();
    let etags = put_parts(client, &blueprints, std::slice::from_ref(&spec.bytes))
        .await
        .unwrap();
    client
        .finalize_file(
            &id,
            &added.file.id,
            &token,
            &finalize_request(spec.bytes.len() as u64, MIN_PART as u64, &upload_id, &etags),
        )
        .await
        .unwrap();

    client.finalize_package(&id, &token).await.unwrap();
    client.finalize_package(&id, &token).await.unwrap();
    // Locked now.
    let error = expect_err(
        client
            .add_file(&id, &token, &small("too late.bin", 23).request())
            .await,
        "rejected",
    );
    assert_eq!(error.status(), Some(409));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_are_created_with_201_and_a_masked_password() {
    let world = World::new().await;
    let package = world.upload(vec![small("a.bin", 24)]).await;
    let expiry = (Utc::now() + chrono::Duration::days(2)).trunc_subsecs(3);
    let response = raw_http()
        .post(world.hub.url(&format!("/packages/{}/links", package.id)))
        .header("X-Package-Token", package.token.expose())
        .json(&serde_json::json!({
            "email": "client@example.com",
            "password": "hunter2",
            "access_limit": 3,
            "expiry": masv_agent::cloud::dto::format_time(&expiry),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let link: serde_json::Value = response.json().await.unwrap();
    assert_eq!(link["id"].as_str().unwrap().len(), 26);
    assert!(link["download_secret"].as_str().unwrap().len() >= 16);
    assert_eq!(link["email"], "client@example.com");
    assert_eq!(link["access_limit"], 3);
    assert_eq!(link["access_limit_enabled"], true);
    assert_eq!(link["active"], true);
    assert_eq!(link["password"], "****");
    assert_eq!(
        link["expiry"],
        masv_agent::cloud::dto::format_time(&expiry).as_str()
    );
    assert!(!link.to_string().contains("hunter2"));

    let error = expect_err(
        world
            .client
            .create_link(
                &package.id,
                &package.token,
                &CreateLink {
                    email: Some("not an address".into()),
                    ..CreateLink::default()
                },
            )
            .await,
        "rejected",
    );
    assert_eq!(error.status(), Some(400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_inbox_lists_finalized_packages_by_portal_time_and_page() {
    let world = World::new().await;
    let client = &world.client;
    let direct = world.upload(vec![small("direct.bin", 25)]).await;
    let first = world
        .portal_upload(&world.open_portal, "first", vec![small("1.bin", 26)])
        .await;
    let between = Utc::now().trunc_subsecs(3);
    let second = world
        .portal_upload(&world.coded_portal, "second", vec![small("2.bin", 27)])
        .await;
    let third = world
        .portal_upload(
            &world.open_portal,
            "third",
            vec![small("3a.bin", 28), small("3b.bin", 29)],
        )
        .await;
    world
        .upload_unfinalized(vec![small("unsent.bin", 30)])
        .await;

    let inbox = |query: InboxQuery| {
        let client = client.clone();
        let (team, key) = (world.team_id.clone(), world.api_key.clone());
        async move { client.team_inbox(&team, &key, &query).await.unwrap() }
    };
    let ids = |inbox: &masv_agent::cloud::dto::Inbox| -> Vec<String> {
        inbox.records.iter().map(|r| r.id.clone()).collect()
    };

    let all = inbox(InboxQuery::default()).await;
    assert_eq!(all.metadata.total, 4);
    assert_eq!(
        ids(&all),
        [&direct.id, &first.id, &second.id, &third.id].map(String::as_str)
    );
    let record = &all.records[3];
    assert_eq!(record.name, "third");
    assert_eq!(record.sender, "editor@example.com");
    assert_eq!(record.size, third.size());
    assert_eq!(record.state, "finalized");
    assert_eq!(
        record.portal_id.as_deref(),
        Some(world.open_portal.id.as_str())
    );
    assert_eq!(record.total_files, 2);
    assert!(record.created_at.is_some_and(|t| t >= between));
    assert_eq!(all.records[0].portal_id, None);

    let open = inbox(InboxQuery {
        portal: Some(world.open_portal.id.clone()),
        ..InboxQuery::default()
    })
    .await;
    assert_eq!(open.metadata.total, 2);
    assert_eq!(ids(&open), [first.id.as_str(), third.id.as_str()]);
    let recent = inbox(InboxQuery {
        created_at_start: Some(between),
        ..InboxQuery::default()
    })
    .await;
    assert_eq!(ids(&recent), [second.id.as_str(), third.id.as_str()]);
    let both = inbox(InboxQuery {
        portal: Some(world.open_portal.id.clone()),
        created_at_start: Some(between),
        ..InboxQuery::default()
    })
    .await;
    assert_eq!(ids(&both), [third.id.as_str()]);
    let page_two = inbox(InboxQuery {
        page: Some(2),
        limit: Some(1),
        ..InboxQuery::default()
    })
    .await;
    assert_eq!(page_two.metadata.total, 4);
    assert_eq!(ids(&page_two), [first.id.as_str()]);
    let past_the_end = inbox(InboxQuery {
        page: Some(3),
        limit: Some(2),
        ..InboxQuery::default()
    })
    .await;
    assert_eq!(past_the_end.metadata.total, 4);
    assert!(past_the_end.records.is_empty());

    // A record's token lists and downloads the package, and nothing more.
    let token = &all.records[3].access_token;
    let files = client.package_files(&third.id, token).await.unwrap();
    assert_eq!(files.len(), 2);
    let file = third.file("3b.bin");
    let bytes = download(client, &third.id, token, &file.id, None)
        .await
        .unwrap();
    assert_eq!(bytes, file.spec.bytes);
    expect_err(
        client
            .add_file(&third.id, token, &small("x.bin", 31).request())
            .await,
        "rejected",
    );

    // Served under /v1 as well as /v1.1, and only with the team's key.
    let under_v1 = client.clone().with_inbox_base(&world.hub.base_url).unwrap();
    let again = under_v1
        .team_inbox(&world.team_id, &world.api_key, &InboxQuery::default())
        .await
        .unwrap();
    assert_eq!(ids(&again), ids(&all));
    expect_err(
        client
            .team_inbox(
                &world.team_id,
                &Secret::new("an-api-key-nobody-has-0123456789"),
                &InboxQuery::default(),
            )
            .await,
        "auth",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn package_spec_reports_the_part_limits() {
    let hub = TestHub::start().await;
    let spec = hub.client().package_spec().await.unwrap();
    assert_eq!(spec, PackageSpec::default());
    assert_eq!(spec.max_chunks_count, 10_000);
    assert_eq!(spec.min_chunk_size, MIN_PART as u64);
    assert_eq!(spec.default_chunk_size, 100 * MIB as u64);
    assert_eq!(spec.max_chunk_size, 5 * 1024 * MIB as u64);
}

// ----- Storage (spec §4) -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_serves_whole_files_and_ranges() {
    let world = World::new().await;
    let package = world
        .upload(vec![FileSpec::file(
            "ranged.bin",
            pseudo_random_bytes(32, 3 * MIB + 123),
        )])
        .await;
    let file = &package.files[0];
    let bytes = &file.spec.bytes;
    let len = bytes.len() as u64;
    let client = &world.client;
    let url = client
        .download_url(&package.id, &file.id, &package.token)
        .await
        .unwrap();

    let whole = client.get_range(&url, None).await.unwrap();
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.headers()[CONTENT_LENGTH], len.to_string().as_str());
    assert_eq!(whole.headers()[ACCEPT_RANGES], "bytes");
    assert_eq!(read_body(whole).await.unwrap(), *bytes);

    for (start, end) in [
        (0, 0),
        (0, 1023),
        (1_000, 2_000_000),
        (len - 10, len - 1),
        (len - 10, len + 1_000),
    ] {
        let response = client.get_range(&url, Some((start, end))).await.unwrap();
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
        let last = end.min(len - 1);
        assert_eq!(
            response.headers()[CONTENT_RANGE],
            format!("bytes {start}-{last}/{len}").as_str()
        );
        assert_eq!(
            read_body(response).await.unwrap(),
            bytes[start as usize..=last as usize]
        );
    }

    // Suffix ranges, as S3 serves them.
    let response = raw_http()
        .get(url.url.expose())
        .header(RANGE, "bytes=-100")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        response.bytes().await.unwrap(),
        bytes[(len - 100) as usize..]
    );

    // Past the end: 416 with the length, as S3 XML.
    let error = expect_err(
        client.get_range(&url, Some((len, len + 10))).await,
        "rejected",
    );
    assert_eq!(error.status(), Some(416));
    let response = raw_http()
        .get(url.url.expose())
        .header(RANGE, format!("bytes={len}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        response.headers()[CONTENT_RANGE],
        format!("bytes */{len}").as_str()
    );
    let xml = response.text().await.unwrap();
    assert!(xml.contains("<Code>InvalidRange</Code>"), "{xml}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_or_expired_storage_urls_are_refused_with_s3_xml() {
    let world = World::new().await;
    let package = world.upload(vec![small("signed.bin", 33)]).await;
    let file = &package.files[0];
    let client = &world.client;
    let url = client
        .download_url(&package.id, &file.id, &package.token)
        .await
        .unwrap();
    let signed = url.url.expose();

    let signature = query_value(signed, "X-Signature").unwrap();
    let flipped: String = signature.chars().rev().collect::<String>();
    let expires: i64 = query_value(signed, "X-Expires").unwrap().parse().unwrap();
    let tampered = [
        with_query(signed, "X-Signature", Some(&flipped)),
        with_query(signed, "X-Signature", None),
        with_query(signed, "X-Expires", Some(&(expires + 3600).to_string())),
        with_query(signed, "X-Expires", None),
    ];
    for bad in tampered {
        expect_err(
            client.get_range(&storage_url(bad.clone()), None).await,
            "expired",
        );
        let response = raw_http().get(&bad).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/xml");
        let xml = response.text().await.unwrap();
        assert!(xml.starts_with("<?xml"), "{xml}");
        assert!(
            xml.contains("<Error><Code>SignatureDoesNotMatch</Code>")
                || xml.contains("<Error><Code>AccessDenied</Code>"),
            "{xml}"
        );
    }

    // A hub on the same data (same key) whose URLs live 0 s: expired as soon as issued.
    let short = TestHub::start_with(
        world.hub.data.clone(),
        HubOptions {
            url_ttl: Some(Duration::ZERO),
            ..HubOptions::default()
        },
    )
    .await;
    let stale = short
        .client()
        .download_url(&package.id, &file.id, &package.token)
        .await
        .unwrap();
    let error = expect_err(client.get_range(&stale, None).await, "expired");
    assert!(error.to_string().contains("Request has expired"), "{error}");
    let response = raw_http().get(stale.url.expose()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        response.text().await.unwrap(),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
    );
    // Asking for the URL again (spec §2 step 5) gets a working one.
    let fresh = client
        .download_url(&package.id, &file.id, &package.token)
        .await
        .unwrap();
    let response = client.get_range(&fresh, None).await.unwrap();
    assert_eq!(read_body(response).await.unwrap(), file.spec.bytes);

    // A part URL is signed for its part: it cannot be replayed for another.
    let created = world.team_package(named("replay")).await;
    let spec = small("part.bin", 34);
    let (added, upload_id) = start_file(client, &created.id, &created.access_token, &spec)
        .await
        .unwrap();
    let blueprint = part_blueprints(
        client,
        &created.id,
        &added.file.id,
        &created.access_token,
        upload_id.as_deref().unwrap(),
        1,
    )
    .await
    .unwrap()
    .remove(0);
    let replayed = with_query(blueprint.url.expose(), "partNumber", Some("2"));
    let response = raw_http()
        .put(&replayed)
        .body(spec.bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let mut replayed_blueprint = blueprint.clone();
    replayed_blueprint.url = Secret::new(replayed);
    expect_err(
        client
            .put_part(
                &replayed_blueprint,
                reqwest::Body::from(spec.bytes.clone()),
                spec.bytes.len() as u64,
                None,
            )
            .await,
        "expired",
    );
}

// ----- Faults -----

/// A world with one uploaded file, and a second hub on the same data with `faults`.
async fn faulty(faults: Faults) -> (World, UploadedPackage, TestHub) {
    let world = World::new().await;
    let package = world
        .upload(vec![FileSpec::file(
            "fragile.bin",
            pseudo_random_bytes(35, MIB),
        )])
        .await;
    let hub = TestHub::start_with(world.hub.data.clone(), HubOptions::faults(faults)).await;
    (world, package, hub)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_storage_is_transient() {
    let (world, package, hub) = faulty(Faults {
        fail_ratio: 1.0,
        ..Faults::default()
    })
    .await;
    let client = hub.client();
    let file = &package.files[0];
    // The API is not faulted, only storage.
    let url = client
        .download_url(&package.id, &file.id, &package.token)
        .await
        .unwrap();
    let error = expect_err(client.get_range(&url, None).await, "transient");
    assert_eq!(error.status(), Some(500));
    assert!(error.is_transient());

    let created = client
        .create_team_package(&world.team_id, &world.api_key, &named("upload"))
        .await
        .unwrap();
    let added = client
        .add_file(
            &created.id,
            &created.access_token,
            &small("a.bin", 36).request(),
        )
        .await
        .unwrap();
    expect_err(
        client
            .create_multipart(added.create_blueprint.as_ref().unwrap())
            .await,
        "transient",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_downloads_break_before_the_last_byte() {
    let (_world, package, hub) = faulty(Faults {
        cut_ratio: 1.0,
        ..Faults::default()
    })
    .await;
    let client = hub.client();
    let file = &package.files[0];
    let len = file.spec.bytes.len();
    let url = client
        .download_url(&package.id, &file.id, &package.token)
        .await
        .unwrap();
    for range in [None, Some((0, len as u64 / 2))] {
        // The answer starts well: status and headers promise every byte asked for...
        let mut response = client.get_range(&url, range).await.unwrap();
        let promised = response.content_length().unwrap() as usize;
        let mut got = Vec::new();
        let error = loop {
            match response.chunk().await {
                Ok(Some(chunk)) => got.extend_from_slice(&chunk),
                Ok(None) => panic!("the body ended normally after {} bytes", got.len()),
                Err(e) => break CloudError::transport("download", e),
            }
        };
        // ...and the connection is cut after at most half of them.
        assert!(error.is_transient(), "{error:?}");
        assert!(
            got.len() <= promised / 2,
            "{} of {promised} bytes",
            got.len()
        );
        assert_eq!(got, file.spec.bytes[..got.len()], "a prefix of the file");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_delay_adds_latency() {
    let delay = Duration::from_millis(300);
    let (_world, package, hub) = faulty(Faults {
        delay,
        ..Faults::default()
    })
    .await;
    let client = hub.client();
    let file = &package.files[0];
    let url = client
        .download_url(&package.id, &file.id, &package.token)
        .await
        .unwrap();
    let (bytes, took) = timed(async {
        read_body(client.get_range(&url, Some((0, 99))).await.unwrap())
            .await
            .unwrap()
    })
    .await;
    assert!(took >= delay, "{took:?}");
    assert_eq!(bytes, file.spec.bytes[..100]);
}

// ----- Persistence -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_hub_restart() {
    let world = World::new().await;
    let package = world
        .upload(vec![
            two_parts("kept.bin", 37),
            small("also.bin", 38).at("sub"),
        ])
        .await;
    let password = Secret::new("still here");
    let link = world
        .share(
            &package,
            CreateLink {
                password: Some(password.clone()),
                ..CreateLink::default()
            },
        )
        .await;
    // An upload interrupted by the restart: part 1 of 2 is in.
    let created = world.team_package(named("interrupted")).await;
    let token = created.access_token.clone();
    let spec = two_parts("half.bin", 39);
    let (added, upload_id) = start_file(&world.client, &created.id, &token, &spec)
        .await
        .unwrap();
    let upload_id = upload_id.unwrap();
    let parts = parts_of(&spec.bytes, MIN_PART as u64);
    let blueprints = part_blueprints(
        &world.client,
        &created.id,
        &added.file.id,
        &token,
        &upload_id,
        1,
    )
    .await
    .unwrap();
    let mut etags = put_parts(&world.client, &blueprints, &parts[..1])
        .await
        .unwrap();

    let World {
        hub,
        team_id,
        api_key,
        ..
    } = world;
    let data = hub.stop().await;
    let hub = TestHub::start_with(data, HubOptions::default()).await;
    let client = hub.client();

    let info = client
        .link(&link.id, &link.download_secret, Some(&password))
        .await
        .unwrap();
    assert_eq!(info.package_id, package.id);
    let files = client
        .package_files(&package.id, &info.package_token)
        .await
        .unwrap();
    assert_eq!(files.len(), 2);
    for file in &package.files {
        let bytes = download(&client, &package.id, &info.package_token, &file.id, None)
            .await
            .unwrap();
        assert_eq!(bytes, file.spec.bytes, "{}", file.spec.name);
    }
    client
        .create_team_package(&team_id, &api_key, &named("after restart"))
        .await
        .unwrap();

    // The interrupted upload carries on where it was.
    let blueprints = part_blueprints(&client, &created.id, &added.file.id, &token, &upload_id, 2)
        .await
        .unwrap();
    etags.extend(
        put_parts(&client, &blueprints[1..], &parts[1..])
            .await
            .unwrap(),
    );
    client
        .finalize_file(
            &created.id,
            &added.file.id,
            &token,
            &finalize_request(spec.bytes.len() as u64, MIN_PART as u64, &upload_id, &etags),
        )
        .await
        .unwrap();
    let bytes = download(&client, &created.id, &token, &added.file.id, None)
        .await
        .unwrap();
    assert_eq!(bytes, spec.bytes);
}

// ----- Streaming -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_file_goes_up_in_parts_and_down_in_ranges() {
    const SIZE: usize = 64 * MIB;
    const CHUNK: usize = 8 * MIB;
    const RANGE: usize = 7 * MIB + 1;
    let world = World::new().await;
    let package = world
        .upload(vec![
            FileSpec::file("big.bin", pseudo_random_bytes(40, SIZE)).chunk_size(CHUNK),
        ])
        .await;
    let file = &package.files[0];
    let parts = parts_of(&file.spec.bytes, CHUNK as u64);
    assert_eq!(parts.len(), 8);
    assert_eq!(file.etags.len(), 8);
    for (etag, part) in file.etags.iter().zip(&parts) {
        assert_eq!(etag, &format!("\"{}\"", md5_hex(part)));
    }

    let token = recipient_token(&world, &package).await;
    let url = world
        .client
        .download_url(&package.id, &file.id, &token)
        .await
        .unwrap();
    let ranges: Vec<(u64, u64)> = (0..SIZE)
        .step_by(RANGE)
        .map(|start| (start as u64, ((start + RANGE).min(SIZE) - 1) as u64))
        .collect();
    let mut downloaded = Vec::with_capacity(SIZE);
    for batch in ranges.chunks(4) {
        let fetches = batch.iter().map(|&range| {
            let (client, url) = (&world.client, &url);
            async move { read_body(client.get_range(url, Some(range)).await?).await }
        });
        for bytes in try_join_all(fetches).await.unwrap() {
            downloaded.extend_from_slice(&bytes);
        }
    }
    assert_eq!(downloaded.len(), SIZE);
    assert!(downloaded == file.spec.bytes, "the bytes differ");
}

// ----- Bad input -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_mistyped_json_is_400_and_changes_nothing() {
    let world = World::new().await;
    let package = world.upload_unfinalized(vec![small("a.bin", 41)]).await;
    let file_id = &package.files[0].id;
    let before = listing(&world, &package).await;
    let p = &package.id;
    let cases: Vec<(String, &str)> = vec![
        (format!("/packages/{p}/files"), r#"{"name": "#),
        (
            format!("/packages/{p}/files"),
            r#"{"name": 5, "size": "big"}"#,
        ),
        (
            format!("/packages/{p}/files"),
            r#"{"name": "a.bin", "size": -1}"#,
        ),
        (format!("/packages/{p}/files"), "[]"),
        (format!("/packages/{p}/files"), ""),
        (
            format!("/packages/{p}/files"),
            r#"{"kind": "zip_mac", "name": "all.zip", "size": 1}"#,
        ),
        (format!("/packages/{p}/links"), r#"{"expiry": "tomorrow"}"#),
        (
            format!("/packages/{p}/links"),
            r#"{"access_limit": "many"}"#,
        ),
        (
            format!("/packages/{p}/files/{file_id}/finalize"),
            r#"{"size": 1}"#,
        ),
        (
            format!("/packages/{p}/files/{file_id}?start=x&count=1"),
            r#"{"upload_id": "u"}"#,
        ),
        (
            format!("/packages/{p}/files/{file_id}?start=0&count=1"),
            "{}",
        ),
        (
            format!("/packages/{p}/files/{file_id}?start=0&count=0"),
            r#"{"upload_id": "u"}"#,
        ),
    ];
    for (path, body) in cases {
        let (status, answer) = status_and_body(
            raw_http()
                .post(world.hub.url(&path))
                .header("X-Package-Token", package.token.expose())
                .header(CONTENT_TYPE, "application/json")
                .body(body),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {answer}");
        assert_api_error(status, &answer, 400);
    }
    let team_path = format!("/teams/{}/packages", world.team_id);
    for body in [r#"{"recipients": "a@example.com"}"#, r#"{"name": ["x"]}"#] {
        let (status, answer) = status_and_body(
            raw_http()
                .post(world.hub.url(&team_path))
                .header("X-API-KEY", world.api_key.expose())
                .header(CONTENT_TYPE, "application/json")
                .body(body),
        )
        .await;
        assert_api_error(status, &answer, 400);
    }
    for bad in ["page=abc", "limit=-1", "created_at_start=yesterday"] {
        let (status, answer) = status_and_body(
            raw_http()
                .get(
                    world
                        .hub
                        .url(&format!("/teams/{}/inbox?{bad}", world.team_id)),
                )
                .header("X-API-KEY", world.api_key.expose()),
        )
        .await;
        assert_api_error(status, &answer, 400);
    }
    assert_eq!(listing(&world, &package).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbox_page_past_any_number_is_empty_not_a_server_error() {
    let world = World::new().await;
    world.upload(vec![small("a.bin", 42)]).await;
    for query in [
        "page=18446744073709551615&limit=50",
        "page=9223372036854775807&limit=2",
    ] {
        let (status, body) = status_and_body(
            raw_http()
                .get(
                    world
                        .hub
                        .url(&format!("/teams/{}/inbox?{query}", world.team_id)),
                )
                .header("X-API-KEY", world.api_key.expose()),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        let inbox: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(inbox["metadata"]["total"], 1);
        assert_eq!(inbox["records"], serde_json::json!([]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_413() {
    let world = World::new().await;
    let package = world.upload_unfinalized(vec![small("a.bin", 43)]).await;
    let before = listing(&world, &package).await;
    let huge_name = "a".repeat(MIB + 1);
    let (status, body) = status_and_body(
        raw_http()
            .post(world.hub.url(&format!("/packages/{}/files", package.id)))
            .header("X-Package-Token", package.token.expose())
            .json(&serde_json::json!({"name": huge_name, "size": 1})),
    )
    .await;
    assert_api_error(status, &body, 413);
    let error = expect_err(
        world
            .client
            .add_file(
                &package.id,
                &package.token,
                &FileSpec::file(&huge_name, Bytes::new()).request(),
            )
            .await,
        "rejected",
    );
    assert_eq!(error.status(), Some(413));
    assert_eq!(listing(&world, &package).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_are_404() {
    let world = World::new().await;
    let package = world.upload_unfinalized(vec![small("a.bin", 44)]).await;
    let (client, token, p) = (&world.client, &package.token, &package.id);
    let nobody = new_id();
    expect_err(client.download_url(p, &nobody, token).await, "not_found");
    expect_err(
        client
            .finalize_file(
                p,
                &nobody,
                token,
                &finalize_request(1, 1, &"0".repeat(32), &[]),
            )
            .await,
        "not_found",
    );
    expect_err(
        client
            .part_urls(p, &package.files[0].id, token, &"0".repeat(32), 0, 1)
            .await,
        "not_found",
    );
    expect_err(client.disable_link(p, &nobody, token).await, "not_found");
    expect_err(
        client.download_url(p, "not-an-id", token).await,
        "not_found",
    );
    expect_err(client.package_files("not-an-id", token).await, "not_found");
    // An unknown package is not this token's to ask about.
    expect_err(client.package_files(&nobody, token).await, "auth");

    let http = raw_http();
    for path in [
        format!("/packages/{nobody}!/files"),
        "/no/such/route".to_owned(),
        format!("/packages/{p}/files/{nobody}/download"),
    ] {
        let (status, body) = status_and_body(
            http.get(world.hub.url(&path))
                .header("X-Package-Token", token.expose()),
        )
        .await;
        assert_api_error(status, &body, 404);
    }
    let (status, body) = status_and_body(http.get(format!(
        "http://{}/storage/{nobody}/{nobody}",
        world.hub.addr
    )))
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "unsigned: {body}");
    assert!(body.contains("<Error>"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_like_names_and_climbing_paths_are_400_and_change_nothing() {
    let world = World::new().await;
    let package = world.upload_unfinalized(vec![small("a.bin", 45)]).await;
    let before = listing(&world, &package).await;
    let (client, package_id, token) = (&world.client, package.id.as_str(), &package.token);
    let refused = |spec: FileSpec| async move {
        let error = expect_err(
            client.add_file(package_id, token, &spec.request()).await,
            "rejected",
        );
        assert_eq!(error.status(), Some(400), "{spec:?}: {error}");
    };
    for name in ["../x", "a/b", "..", ".", "", "a\\b", "nul\0byte"] {
        refused(small(name, 46)).await;
        refused(FileSpec::directory(name)).await;
    }
    for path in [
        "..",
        "../outside",
        "a/../../b",
        "./a",
        "a\\..\\b",
        "/../etc",
    ] {
        refused(small("x.bin", 47).at(path)).await;
        refused(FileSpec::directory("d").at(path)).await;
    }
    assert_eq!(listing(&world, &package).await, before);

    // Odd but harmless names and paths are kept, the path normalised.
    let odd = upload_file(
        client,
        &package.id,
        &package.token,
        small("Ünïcode clip (1).mov", 48).at("//a//b/"),
    )
    .await
    .unwrap();
    let files = client
        .package_files(&package.id, &package.token)
        .await
        .unwrap();
    let entry = files.iter().find(|f| f.id == odd.id).unwrap();
    assert_eq!(
        (entry.path.as_str(), entry.name.as_str()),
        ("a/b", "Ünïcode clip (1).mov")
    );
}

// ----- Secrets -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_output_never_shows_secrets() {
    let world = World::new().await;
    let client = &world.client;
    let created = world.team_package(named("secret stuff")).await;
    let upload_token = created.access_token.expose().to_owned();
    let created_debug = format!("{created:?}");
    let package = upload_files(client, created, vec![small("a.bin", 49)])
        .await
        .unwrap();
    client
        .finalize_package(&package.id, &package.token)
        .await
        .unwrap();
    let password = Secret::new("pass-word-9f8e7d");
    let request = CreateLink {
        password: Some(password.clone()),
        ..CreateLink::default()
    };
    let link = world.share(&package, request.clone()).await;
    let info = client
        .link(&link.id, &link.download_secret, Some(&password))
        .await
        .unwrap();
    let url = client
        .download_url(&package.id, &package.files[0].id, &info.package_token)
        .await
        .unwrap();
    let signature = query_value(url.url.expose(), "X-Signature").unwrap();
    let inbox = client
        .team_inbox(&world.team_id, &world.api_key, &InboxQuery::default())
        .await
        .unwrap();
    let open = world.team_package(named("still open")).await;
    let added = client
        .add_file(
            &open.id,
            &open.access_token,
            &small("late.bin", 50).request(),
        )
        .await
        .unwrap();
    let parts = client
        .part_urls(
            &open.id,
            &added.file.id,
            &open.access_token,
            &client
                .create_multipart(added.create_blueprint.as_ref().unwrap())
                .await
                .unwrap(),
            0,
            2,
        )
        .await
        .unwrap();

    let wrong_password = client
        .link(
            &link.id,
            &link.download_secret,
            Some(&Secret::new("pass-word-wrong1")),
        )
        .await
        .unwrap_err();
    let wrong_secret = client
        .link(&link.id, &Secret::new("secret-wrong-123"), Some(&password))
        .await
        .unwrap_err();
    let bad_signature = client
        .get_range(
            &storage_url(with_query(url.url.expose(), "X-Expires", Some("1"))),
            None,
        )
        .await
        .unwrap_err();
    let bad_key = client
        .team_inbox(
            &world.team_id,
            &Secret::new("api-key-wrong-0123456789"),
            &InboxQuery::default(),
        )
        .await
        .unwrap_err();

    let shown = [
        created_debug,
        format!("{package:?}"),
        format!("{request:?}"),
        format!("{link:?}"),
        format!("{info:?}"),
        format!("{url:?}"),
        format!("{inbox:?}"),
        format!("{added:?}"),
        format!("{parts:?}"),
        format!("{open:?}"),
        format!("{client:?}"),
        format!("{wrong_password:?} {wrong_password}"),
        format!("{wrong_secret:?} {wrong_secret}"),
        format!("{bad_signature:?} {bad_signature}"),
        format!("{bad_key:?} {bad_key}"),
    ];
    let secrets = [
        upload_token.as_str(),
        password.expose(),
        "pass-word-wrong1",
        "secret-wrong-123",
        "api-key-wrong-0123456789",
        link.download_secret.expose(),
        info.package_token.expose(),
        inbox.records[0].access_token.expose(),
        world.api_key.expose(),
        open.access_token.expose(),
        signature.as_str(),
    ];
    for text in &shown {
        for secret in secrets {
            assert!(!text.contains(secret), "{text} shows {secret}");
        }
        assert!(!text.contains("X-Signature"), "{text}");
    }
}

// ----- Seed file -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_file_applies_twice_to_the_same_hub() {
    // Cargo and nextest export CARGO_PKG_NAME to test binaries: an environment variable this
    // test can rely on without setting one (which would race with other threads).
    let code_from_env =
        std::env::var("CARGO_PKG_NAME").expect("cargo and nextest set CARGO_PKG_NAME");
    let data = DataDir::new();
    let key_file = data.path().join("team.key");
    std::fs::write(&key_file, "file-key-0123456789abcdef\n").unwrap();
    let text = format!(
        r#"
[[team]]
name = "Seeded House"
id = "01jaaaaaaaaaaaaaaaaaaaaaaa"
api_keys = ["inline-key-0123456789abcdef", {{ file = "{}" }}]

[[team.portal]]
subdomain = "Seeded"
name = "Seeded Uploads"
access_code = {{ env = "CARGO_PKG_NAME" }}

[[team.portal]]
subdomain = "open-seeded"

[[team]]
name = "Second House"
"#,
        key_file.display()
    );
    let seed_path = data.path().join("hub.toml");
    std::fs::write(&seed_path, &text).unwrap();

    let hub = TestHub::start_with(data.clone(), HubOptions::default()).await;
    let done = hub
        .operator
        .apply_seed(&Seed::load(&seed_path).unwrap())
        .unwrap();
    assert_eq!(done.len(), 4, "{done:?}");
    assert!(done[0].contains("01JAAAAAAAAAAAAAAAAAAAAAAA"), "{done:?}");
    for line in &done {
        assert!(!line.contains("key-0123456789abcdef"), "{line}");
        assert!(!line.contains(&code_from_env), "{line}");
    }
    let seed: Seed = toml::from_str(&text).unwrap();
    assert!(!format!("{seed:?}").contains("inline-key"), "{seed:?}");
    assert_eq!(
        hub.operator.apply_seed(&seed).unwrap(),
        Vec::<String>::new()
    );

    let client = hub.client();
    let team = "01JAAAAAAAAAAAAAAAAAAAAAAA";
    for key in ["inline-key-0123456789abcdef", "file-key-0123456789abcdef"] {
        client
            .create_team_package(team, &Secret::from(key), &named("seeded"))
            .await
            .unwrap();
    }
    let portal = client.portal("seeded").await.unwrap();
    assert_eq!(portal.name, "Seeded Uploads");
    assert!(portal.has_access_code);
    assert!(!client.portal("open-seeded").await.unwrap().has_access_code);
    let request = |code: &str| CreatePortalPackage {
        name: "via seed".into(),
        sender: "editor@example.com".into(),
        access_code: Some(Secret::from(code)),
        ..CreatePortalPackage::default()
    };
    expect_err(
        client
            .create_portal_package(&portal.id, &request("not it"))
            .await,
        "auth",
    );
    client
        .create_portal_package(&portal.id, &request(&code_from_env))
        .await
        .unwrap();

    // Mistakes are reported with where they are, and unset variables by name.
    let broken = data.path().join("broken.toml");
    std::fs::write(&broken, "[[team]]\nname = \"X\"\ncolour = \"red\"\n").unwrap();
    let error = Seed::load(&broken).unwrap_err().to_string();
    assert!(error.contains("broken.toml:3:1"), "{error}");
    assert!(error.contains("colour"), "{error}");
    let unset: Seed = toml::from_str(
        "[[team]]\nname = \"Y\"\napi_keys = [{ env = \"MASV_IT_NEVER_SET_7F3A\" }]\n",
    )
    .unwrap();
    let error = hub.operator.apply_seed(&unset).unwrap_err().to_string();
    assert!(error.contains("MASV_IT_NEVER_SET_7F3A"), "{error}");
}

/// The typed client refuses ids that would leave their path segment before any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_never_sends_ids_that_climb() {
    let hub = TestHub::start().await;
    let client: Client = hub.client();
    let token = Secret::new("t");
    expect_err(client.package_files("..", &token).await, "invalid_url");
    // Encoded, `../x` stays one segment: the hub sees an unknown id.
    expect_err(client.package_files("../x", &token).await, "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hubs_storage_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let world = World::new().await;
    world
        .upload(vec![
            FileSpec::file("reel.mov", pseudo_random_bytes(4, 6 * MIB)),
            FileSpec::file("notes.txt", b"take 3".to_vec()),
        ])
        .await;
    let mut stack = vec![world.hub.data.path().to_path_buf()];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let mode = std::fs::symlink_metadata(&path)
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            if path.is_dir() {
                assert_eq!(mode, 0o700, "{}", path.display());
                stack.push(path);
            } else {
                assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
                seen += 1;
            }
        }
    }
    assert!(seen >= 3, "the parts and the database were looked at");
}

/// A part's `Content-MD5` is checked as S3 checks it: the right one stores the part (its ETag
/// is that MD5), a wrong one is `400 BadDigest` and stores nothing, a malformed one is
/// `400 InvalidDigest`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_whose_bytes_do_not_match_its_content_md5_is_refused() {
    use base64::Engine as _;
    use md5::Digest as _;
    let world = World::new().await;
    let client = &world.client;
    let created = world.team_package(named("digest")).await;
    let spec = small("part.bin", 35);
    let (added, upload_id) = start_file(client, &created.id, &created.access_token, &spec)
        .await
        .unwrap();
    let blueprint = part_blueprints(
        client,
        &created.id,
        &added.file.id,
        &created.access_token,
        upload_id.as_deref().unwrap(),
        1,
    )
    .await
    .unwrap()
    .remove(0);
    let md5 = md5::Md5::digest(&spec.bytes);
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let put = |content_md5: String| {
        raw_http()
            .put(blueprint.url.expose())
            .header("content-md5", content_md5)
            .body(spec.bytes.clone())
    };
    let mut wrong = md5;
    wrong[0] ^= 1;
    let (status, body) = status_and_body(put(b64(&wrong))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("<Code>BadDigest</Code>"), "{body}");
    let (status, body) = status_and_body(put("not base64!".into())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("<Code>InvalidDigest</Code>"), "{body}");
    // Nothing was stored by the refused ones: finalizing with the part's ETag fails.
    let finalize = |etag: &str| FinalizeFile {
        size: spec.bytes.len() as u64,
        chunk_size: spec.bytes.len() as u64,
        file_extras: FileExtras {
            upload_id: upload_id.clone().unwrap(),
        },
        chunk_extras: vec![ChunkExtra {
            part_number: 1,
            etag: etag.to_string(),
        }],
    };
    let etag = hex::encode(md5);
    let early = client
        .finalize_file(
            &created.id,
            &added.file.id,
            &created.access_token,
            &finalize(&etag),
        )
        .await;
    assert!(early.is_err(), "{early:?}");

    let response = put(b64(&md5)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["etag"], format!("\"{etag}\""));
    // The hub counts what it received: the refused body and the stored one (a malformed
    // Content-MD5 is refused before the body is read).
    let metrics = reqwest::get(format!("http://{}/metrics", world.hub.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "masv_hub_storage_bytes_received_total {}",
            2 * spec.bytes.len()
        )),
        "{metrics}"
    );
    client
        .finalize_file(
            &created.id,
            &added.file.id,
            &created.access_token,
            &finalize(&etag),
        )
        .await
        .unwrap();
}
