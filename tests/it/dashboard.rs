//! The web dashboard in a real browser (headless chromium over WebDriver) against a real agent
//! and hub: logging in with the token, a download's bar moving to its end, an upload paused and
//! resumed from the page, a rule going to error and back, 1,000 transfers a page at a time;
//! and, over plain HTTP, what the session cookie and the CSRF token let through and what not.
//! Screenshots of every view at desktop and phone width land in `target/screenshots/`.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use masv_agent::store::{FileRecord, Store, TransferKind, TransferRecord};
use serde_json::{Value, json};

use crate::agent::{TestAgent, download_request, engine_config};
use crate::browser::{Browser, DESKTOP, PHONE};
use crate::support::{FileSpec, MIB, World, pseudo_random_bytes};

const TOKEN: &str = "dashboard-test-token-0123456789abcdef";
const LONG: Duration = Duration::from_secs(60);

/// The agent's origin, from its API base.
fn origin(agent: &TestAgent) -> String {
    agent.api.base.trim_end_matches("/api/v1").to_owned()
}

/// The row of transfer `id` as the page shows it: `{state, value, max, why}` or null.
const ROW: &str = r#"
const tr = document.querySelector(`#transfer-rows tr[data-id="${arguments[0]}"]`);
if (!tr) return null;
const bar = tr.querySelector('progress');
return { state: tr.querySelector('.state').textContent, value: bar.value, max: bar.max,
         why: tr.querySelector('.why').textContent,
         pause: !tr.querySelector('[data-action=pause]').hidden,
         resume: !tr.querySelector('[data-action=resume]').hidden };
"#;

/// The state and last error of rule `name` as the Automations view shows it.
const RULE: &str = r#"
const tr = document.querySelector(`#rule-rows tr[data-name="${arguments[0]}"]`);
if (!tr) return null;
return { state: tr.querySelector('.rule-state').textContent,
         error: tr.querySelector('.last-error').textContent,
         config_error: document.getElementById('config-error').hidden ? null
           : document.getElementById('config-error').textContent };
"#;

/// `fetch` from the page (its cookies, none of the dashboard's headers unless `headers` says):
/// the status.
const FETCH: &str = r#"
const [method, path, headers, done] = arguments;
fetch(path, { method, headers, credentials: 'same-origin' })
  .then((r) => done(r.status), (e) => done(String(e)));
"#;

async fn page_fetch(browser: &Browser, method: &str, path: &str, headers: Value) -> Value {
    browser
        .eval_async(FETCH, vec![json!(method), json!(path), headers])
        .await
}

fn watch_config(folder: &Path, team_id: &str, key: &str) -> String {
    format!(
        "[server]\napi_key = \"{key}\"\n\n[[watch]]\nname = \"drop\"\nfolder = \"{}\"\nsettle = \"200ms\"\n[watch.team]\nteam_id = \"{team_id}\"\n",
        folder.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_in_chromium_logs_in_follows_a_download_pauses_an_upload_and_shows_a_rule_fail_and_recover()
 {
    let world = World::new().await;
    let (_, link) = world
        .shared(vec![FileSpec::file(
            "reel.mov",
            pseudo_random_bytes(7, 4 * MIB),
        )])
        .await;
    let site = tempfile::tempdir().unwrap();
    let drop_folder = site.path().join("drop");
    std::fs::create_dir(&drop_folder).unwrap();
    let config = site.path().join("agent.toml");
    let key = world.api_key.expose().to_owned();
    std::fs::write(&config, watch_config(&drop_folder, &world.team_id, &key)).unwrap();
    let mut engine = engine_config(&world.hub.base_url);
    engine.api_key = Some(world.api_key.clone());
    let agent = TestAgent::start_secured(site.path(), engine, Some(&config), Some(TOKEN)).await;
    let base = origin(&agent);
    let browser = Browser::start().await;

    // Not logged in: the page sends the browser to the login form; a wrong token is refused
    // there with where to find the right one.
    browser.goto(&format!("{base}/")).await;
    assert_eq!(browser.path().await, "/login");
    browser.screenshot("login-desktop", DESKTOP).await;
    browser.type_into("#token", "not-the-token").await;
    browser.click("button[type=submit]").await;
    let said = browser
        .wait_for(
            "the login refused",
            LONG,
            "const e = document.getElementById('login-error'); return e && e.textContent",
            vec![],
            |v| v.as_str().is_some_and(|t| !t.is_empty()),
        )
        .await;
    assert!(said.as_str().unwrap().contains("api_token"), "{said}");
    assert_eq!(browser.path().await, "/login");
    browser.type_into("#token", TOKEN).await;
    browser.click("button[type=submit]").await;
    browser
        .wait_for(
            "the dashboard",
            LONG,
            "return location.pathname",
            vec![],
            |v| v == "/",
        )
        .await;
    browser
        .wait_for(
            "the live stream",
            LONG,
            "return document.getElementById('live').textContent",
            vec![],
            |v| v == "live",
        )
        .await;
    // The session cookie is out of the page's reach (HttpOnly), the CSRF token is not.
    let cookies = browser.eval("return document.cookie", vec![]).await;
    let cookies = cookies.as_str().unwrap();
    assert!(
        cookies.contains("masv_csrf=") && !cookies.contains("masv_session"),
        "{cookies}"
    );
    let session = browser
        .client
        .get_named_cookie("masv_session")
        .await
        .unwrap();
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(format!("{:?}", session.same_site()), "Some(Strict)");
    assert_eq!(session.path(), Some("/"));
    // With the cookie but without the CSRF header, a change is refused; reading is not.
    let probe = "/api/v1/downloads/none/pause";
    assert_eq!(page_fetch(&browser, "POST", probe, json!({})).await, 403);
    assert_eq!(
        page_fetch(&browser, "GET", "/api/v1/downloads", json!({})).await,
        200
    );
    let csrf = browser
        .eval(
            "return document.cookie.match(/masv_csrf=([^;]+)/)[1]",
            vec![],
        )
        .await;
    let with_csrf = json!({ "X-CSRF-Token": csrf });
    assert_eq!(
        page_fetch(&browser, "POST", probe, with_csrf).await,
        404,
        "let through: no such download"
    );

    // A download slowed to 1 MiB/s: its bar moves, then stops full at `complete`.
    let (status, _) = agent
        .api
        .put(
            "/bandwidth",
            json!({ "download": "1MiB", "upload": "256KiB" }),
        )
        .await;
    assert_eq!(status, 200);
    let dst = tempfile::tempdir().unwrap();
    let id = agent
        .api
        .download(download_request(&link, dst.path()))
        .await;
    let mut seen = BTreeSet::new();
    let start = Instant::now();
    let last = loop {
        let row = browser.eval(ROW, vec![json!(id)]).await;
        if !row.is_null() {
            let (value, max) = (row["value"].as_f64().unwrap(), row["max"].as_f64().unwrap());
            if value > 0.0 && value < max {
                seen.insert(value as u64);
                if seen.len() == 2 {
                    browser.screenshot("transfers-desktop", DESKTOP).await;
                }
            }
            if row["state"] == "complete" {
                break row;
            }
        }
        assert!(
            start.elapsed() < LONG,
            "the download did not complete on the page: {row}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        seen.len() >= 2,
        "the bar moved through several values: {seen:?}"
    );
    assert_eq!(
        last["value"], last["max"],
        "a complete download's bar is full: {last}"
    );
    assert_eq!(last["max"], 4 * MIB as u64);

    // Its detail: the file, its state and hash.
    browser
        .click(&format!("#transfer-rows tr[data-id=\"{id}\"] a.name"))
        .await;
    let file = browser
        .wait_for("the download's file", LONG, "const tr = document.querySelector('#file-rows tr[data-file=\"reel.mov\"]'); return tr && tr.textContent", vec![], |v| v.as_str().is_some_and(|t| t.contains("xxh64:")))
        .await;
    assert!(file.as_str().unwrap().contains("complete"), "{file}");
    browser.screenshot("detail-desktop", DESKTOP).await;

    // Throughput: the chart has the download's line, and the limits in force are named.
    browser.goto(&format!("{base}/#throughput")).await;
    let limits = browser
        .wait_for(
            "the limits",
            LONG,
            "return document.getElementById('limits').textContent",
            vec![],
            |v| {
                v.as_str()
                    .is_some_and(|t| t.contains("download 1.00 MiB/s"))
            },
        )
        .await;
    assert!(
        limits.as_str().unwrap().contains("upload 256.0 KiB/s"),
        "{limits}"
    );
    let peak = browser
        .wait_for("the download's line", LONG, "const l = document.querySelector('#chart polyline.download'); return l ? l.getAttribute('points').split(' ').length : 0", vec![], |v| v.as_u64().unwrap_or(0) >= 3)
        .await;
    assert!(peak.as_u64().unwrap() >= 3);
    browser.screenshot("throughput-desktop", DESKTOP).await;
    browser.screenshot("throughput-phone", PHONE).await;
    browser
        .client
        .set_window_size(DESKTOP.0, DESKTOP.1)
        .await
        .unwrap();

    // An upload at 256 KiB/s, paused and resumed by the page's buttons.
    browser.goto(&format!("{base}/#transfers")).await;
    let clip = site.path().join("promo.mov");
    std::fs::write(&clip, pseudo_random_bytes(8, 2 * MIB)).unwrap();
    let (status, created) = agent
        .api
        .post(
            "/uploads",
            json!({ "team_id": world.team_id, "paths": [clip], "package_name": "promo" }),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let up = created["upload_id"].as_str().unwrap().to_owned();
    browser
        .wait_for("the upload transferring", LONG, ROW, vec![json!(up)], |r| {
            r["pause"] == true
        })
        .await;
    browser
        .click(&format!(
            "#transfer-rows tr[data-id=\"{up}\"] [data-action=pause]"
        ))
        .await;
    agent.api.wait_for("uploads", &up, &["paused"], LONG).await;
    browser
        .wait_for("the upload paused", LONG, ROW, vec![json!(up)], |r| {
            r["state"] == "paused" && r["resume"] == true
        })
        .await;
    browser.screenshot("transfers-paused-phone", PHONE).await;
    browser
        .client
        .set_window_size(DESKTOP.0, DESKTOP.1)
        .await
        .unwrap();
    let (_, paused) = agent.api.get(&format!("/uploads/{up}")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, still) = agent.api.get(&format!("/uploads/{up}")).await;
    assert_eq!(
        still["bytes_done"], paused["bytes_done"],
        "a paused upload does not move"
    );
    // Resume lifts the limit too, so that the end comes soon.
    browser
        .click(&format!(
            "#transfer-rows tr[data-id=\"{up}\"] [data-action=resume]"
        ))
        .await;
    let (status, _) = agent
        .api
        .patch("/bandwidth", json!({ "upload": null, "download": null }))
        .await;
    assert_eq!(status, 200);
    let done = agent
        .api
        .wait_for("uploads", &up, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    browser
        .wait_for("the upload complete", LONG, ROW, vec![json!(up)], |r| {
            r["state"] == "complete"
        })
        .await;

    // A rule in error and back: its folder moved away by a configuration change, then made.
    browser.goto(&format!("{base}/#automations")).await;
    browser
        .wait_for("the rule watching", LONG, RULE, vec![json!("drop")], |r| {
            r["state"] == "watching"
        })
        .await;
    let gone = site.path().join("gone");
    std::fs::write(&config, watch_config(&gone, &world.team_id, &key)).unwrap();
    let failed = browser
        .wait_for("the rule in error", LONG, RULE, vec![json!("drop")], |r| {
            r["state"] == "error"
        })
        .await;
    assert!(
        failed["error"].as_str().unwrap().contains("gone"),
        "{failed}"
    );
    browser
        .screenshot("automations-error-desktop", DESKTOP)
        .await;
    std::fs::create_dir(&gone).unwrap();
    browser
        .wait_for("the rule back", LONG, RULE, vec![json!("drop")], |r| {
            // (`last_error` stays: the API keeps the rule's last error for history.)
            r["state"] == "watching"
        })
        .await;
    // A broken file: said, and the rule in force stays.
    std::fs::write(&config, "[[watch]\nname = ").unwrap();
    let broken = browser
        .wait_for(
            "the configuration error",
            LONG,
            RULE,
            vec![json!("drop")],
            |r| !r["config_error"].is_null(),
        )
        .await;
    assert_eq!(
        broken["state"], "watching",
        "the last good rule stays: {broken}"
    );
    browser.screenshot("automations-phone", PHONE).await;
    browser
        .client
        .set_window_size(DESKTOP.0, DESKTOP.1)
        .await
        .unwrap();
    std::fs::write(&config, watch_config(&gone, &world.team_id, &key)).unwrap();
    browser
        .wait_for(
            "the configuration fixed",
            LONG,
            RULE,
            vec![json!("drop")],
            |r| r["config_error"].is_null(),
        )
        .await;

    // The events of that: the rule's failure and recovery.
    browser.goto(&format!("{base}/#events")).await;
    let events = browser
        .wait_for(
            "the rule's events",
            LONG,
            "return document.getElementById('event-rows').textContent",
            vec![],
            |v| {
                v.as_str()
                    .is_some_and(|t| t.contains("rule.failed") && t.contains("rule.recovered"))
            },
        )
        .await;
    assert!(events.as_str().unwrap().contains("drop"));
    browser.screenshot("events-desktop", DESKTOP).await;

    // Logging out ends the session for good: the page, and the old cookie elsewhere, get 401.
    let old = browser
        .client
        .get_named_cookie("masv_session")
        .await
        .unwrap()
        .value()
        .to_owned();
    browser.click("#logout").await;
    browser
        .wait_for(
            "the login form",
            LONG,
            "return location.pathname",
            vec![],
            |v| v == "/login",
        )
        .await;
    assert_eq!(
        page_fetch(&browser, "GET", "/api/v1/downloads", json!({})).await,
        401
    );
    let replayed = reqwest::Client::new()
        .get(format!("{base}/api/v1/downloads"))
        .header("Cookie", format!("masv_session={old}"))
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 401);
    browser.close().await;
}

/// 1,000 finished downloads written straight into an agent's store (one file each).
async fn thousand_downloads(data: &Path) {
    std::fs::create_dir_all(data.join("agent")).unwrap();
    let store = Store::open(&data.join("agent/agent.db")).unwrap();
    let start = Utc::now() - chrono::Duration::hours(1);
    let rows = (0..1000)
        .map(|i| {
            let at = start + chrono::Duration::seconds(i);
            let record = TransferRecord {
                id: format!("{:05}-{}", i, uuid_like(i)),
                kind: TransferKind::Download,
                state: "complete".into(),
                priority: 0,
                spec: json!({ "url": "http://127.0.0.1:9/link", "dst_folder": "/tmp/in" }),
                remote: Some(json!({ "package_id": format!("p{i}"), "package_name": format!("package {i:04}") })),
                error: None,
                rule: None,
                created_at: at,
                updated_at: at,
            };
            let file = FileRecord {
                idx: 0,
                remote_id: Some(format!("f{i}")),
                kind: "file".into(),
                name: "clip.mov".into(),
                path: String::new(),
                local_path: "/tmp/in/clip.mov".into(),
                size: 1024,
                chunk_size: 1024,
                last_modified: None,
                state: "complete".into(),
                error: None,
                extra: None,
                hash: None,
            };
            (record, vec![file])
        })
        .collect();
    store.insert_transfers(rows, Vec::new()).await.unwrap();
}

fn uuid_like(i: i64) -> String {
    format!("{:032x}", i as u128 * 0x9E37_79B9_7F4A_7C15)
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_without_a_token_opens_at_once_and_shows_1000_transfers_a_page_at_a_time() {
    let data = tempfile::tempdir().unwrap();
    thousand_downloads(data.path()).await;
    let agent = TestAgent::start_on(data.path(), engine_config("http://127.0.0.1:9/v1")).await;
    let base = origin(&agent);
    let browser = Browser::start().await;
    let asked = Instant::now();
    browser.goto(&format!("{base}/")).await;
    assert_eq!(browser.path().await, "/", "no login without a token");
    browser
        .wait_for(
            "the first page",
            LONG,
            "return document.getElementById('page-info').textContent",
            vec![],
            |v| v == "1–50 of 1000",
        )
        .await;
    let shown = asked.elapsed();
    assert!(
        shown < Duration::from_secs(5),
        "1,000 transfers listed in {shown:?}"
    );
    let rows = browser
        .eval(
            "return document.querySelectorAll('#transfer-rows tr').length",
            vec![],
        )
        .await;
    assert_eq!(rows, 50, "only a page is in the document");
    let first = browser.text("#transfer-rows tr:first-child a.name").await;
    assert_eq!(first, "package 0999", "newest first");
    browser.screenshot("transfers-1000-desktop", DESKTOP).await;
    // Paging is quick: the page changes within a frame or two.
    let turned = browser
        .eval_async(
            "const done = arguments[0]; const t0 = performance.now(); document.getElementById('next').click(); requestAnimationFrame(() => requestAnimationFrame(() => done([document.getElementById('page-info').textContent, performance.now() - t0])));",
            vec![],
        )
        .await;
    assert_eq!(turned[0], "51–100 of 1000");
    assert!(
        turned[1].as_f64().unwrap() < 500.0,
        "a page turn took {} ms",
        turned[1]
    );
    assert_eq!(
        browser.text("#transfer-rows tr:first-child a.name").await,
        "package 0949"
    );
    let logout_hidden = browser
        .eval("return document.getElementById('logout').hidden", vec![])
        .await;
    assert_eq!(logout_hidden, true, "nothing to log out of without a token");
    browser.screenshot("transfers-1000-phone", PHONE).await;
    browser.close().await;
}

/// The status of `req` sent as a browser would: with `cookies`, and `X-CSRF-Token` when given.
async fn as_browser(req: reqwest::RequestBuilder, cookies: &str, csrf: Option<&str>) -> u16 {
    let req = req.header("Cookie", cookies);
    let req = match csrf {
        Some(token) => req.header("X-CSRF-Token", token),
        None => req,
    };
    req.send()
        .await
        .expect("the agent answers")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_sessions_need_the_token_and_changes_need_the_csrf_token_while_bearer_stays() {
    let data = tempfile::tempdir().unwrap();
    let agent = TestAgent::start_secured(
        data.path(),
        engine_config("http://127.0.0.1:9/v1"),
        None,
        Some(TOKEN),
    )
    .await;
    let base = origin(&agent);
    let http = crate::support::raw_http();

    // The page without a session: to the login form; the API: 401 as before.
    let page = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()["location"], "/login");
    let bare = http
        .get(format!("{base}/api/v1/downloads"))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 401);
    assert_eq!(bare.headers()["www-authenticate"], "Bearer");
    // The login form and its style need nothing; its answers carry the page headers.
    let form = http.get(format!("{base}/login")).send().await.unwrap();
    assert_eq!(form.status(), 200);
    for (name, value) in [
        ("content-security-policy", "default-src 'self'"),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
    ] {
        let got = form.headers()[name].to_str().unwrap();
        assert!(got.starts_with(value), "{name}: {got}");
    }
    let body = form.text().await.unwrap();
    assert!(
        !body.contains("<script>") && !body.contains("style="),
        "nothing inline: {body}"
    );

    // A wrong token: 401 and no cookie.
    let wrong = http
        .post(format!("{base}/login"))
        .form(&[("token", "guess")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    // The token: two cookies, the session HttpOnly, both SameSite=Strict on /.
    let ok = http
        .post(format!("{base}/login"))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 303);
    let set: Vec<String> = ok
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let cookie_value = |name: &str| -> String {
        let line = set
            .iter()
            .find(|c| c.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {set:?}"));
        assert!(
            line.contains("SameSite=Strict") && line.contains("Path=/"),
            "{line}"
        );
        line.split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_owned()
    };
    let session = cookie_value("masv_session");
    let csrf = cookie_value("masv_csrf");
    assert!(
        set.iter()
            .any(|c| c.starts_with("masv_session=") && c.contains("HttpOnly"))
    );
    assert!(
        !session.contains(TOKEN) && session.len() == 64,
        "a session, not the token"
    );
    let cookies = format!("masv_session={session}; masv_csrf={csrf}");

    // Reading with the cookie: yes. Changing with the cookie alone, or a wrong CSRF token: 403.
    let downloads = format!("{base}/api/v1/downloads");
    assert_eq!(as_browser(http.get(&downloads), &cookies, None).await, 200);
    let change = format!("{base}/api/v1/bandwidth");
    for csrf_header in [None, Some("0".repeat(64)), Some(session.clone())] {
        let mut req = http
            .put(&change)
            .header("Cookie", &cookies)
            .json(&json!({ "download": "1MiB" }));
        if let Some(value) = &csrf_header {
            req = req.header("X-CSRF-Token", value);
        }
        let refused = req.send().await.unwrap();
        assert_eq!(refused.status(), 403, "CSRF header {csrf_header:?}");
        let said: Value = refused.json().await.unwrap();
        assert!(
            said["message"].as_str().unwrap().contains("X-CSRF-Token"),
            "{said}"
        );
    }
    let (_, bandwidth) = agent.api.get("/bandwidth").await;
    assert!(
        bandwidth["now"]["download"].is_null(),
        "nothing changed: {bandwidth}"
    );
    let allowed = http.put(&change).json(&json!({ "download": "1MiB" }));
    assert_eq!(as_browser(allowed, &cookies, Some(&csrf)).await, 200);
    // The CSRF cookie alone (without the session) is nothing.
    let csrf_only = format!("masv_csrf={csrf}");
    assert_eq!(
        as_browser(http.get(&downloads), &csrf_only, None).await,
        401
    );

    // The bearer token works as before, without any CSRF header; a wrong one is 401.
    let (status, _) = agent
        .api
        .patch("/bandwidth", json!({ "download": null }))
        .await;
    assert_eq!(status, 200);
    let wrong_bearer = http
        .get(format!("{base}/api/v1/downloads"))
        .bearer_auth("guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_bearer.status(), 401);

    // The live stream is the API's too: a script with the token reads it.
    let mut stream = http
        .get(format!("{base}/api/v1/stream"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    while !text.contains("event: synced") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
            .await
            .expect("the stream speaks")
            .unwrap()
            .expect("more");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        text.contains("event: bandwidth") && text.contains("event: automations"),
        "{text}"
    );
    assert!(text.contains("data: {\"transfers\":0}"), "{text}");
    let (status, history) = agent.api.get("/throughput").await;
    assert_eq!(status, 200);
    assert_eq!(history["interval_seconds"], 1);

    // Logout needs the CSRF token too, then the session is gone.
    let logout = format!("{base}/logout");
    assert_eq!(as_browser(http.post(&logout), &cookies, None).await, 403);
    assert_eq!(
        as_browser(http.post(&logout), &cookies, Some(&csrf)).await,
        303
    );
    assert_eq!(as_browser(http.get(&downloads), &cookies, None).await, 401);
}

#[test]
#[should_panic(expected = "install Debian's chromium and chromium-driver")]
fn dashboard_tests_fail_naming_what_to_install_when_the_browser_is_missing() {
    crate::browser::installed("chromium-not-installed-here");
}
