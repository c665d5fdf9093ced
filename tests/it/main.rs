//! The one integration test binary: hubs (and later agents) started in-process on port 0 with
//! temporary folders, moving real bytes over real HTTP.
//!
//! - `actions`: post-transfer actions against a real webhook receiver, SMTP server and command.
//! - `support`: starting hubs, a ready-made world, uploads and downloads through the client.
//! - `agent`: agents in-process or as a real process, driven through their REST API.
//! - `conformance`: the spec section by section, the agent against the hub as a strict
//!   reference (page limits, `null` blueprints, counted link accesses).
//! - `browser`: headless chromium over WebDriver, for the dashboard tests.
//! - `dashboard`: the web dashboard in a real browser against a real agent and hub; its
//!   sessions and CSRF protection over HTTP.
//! - `cli`: the real `masv` command line against an agent and a hub.
//! - `crash`: the real agent aborted at every named crash point, restarted, checked intact.
//! - `bandwidth`: rate limits and FIFO caps felt by real transfers, changed through the API and
//!   the configuration file.
//! - `automations`: configuration files run by agents: watch folders, link and inbox rules, reloads.
//! - `hub`: the hub against the typed client, route by route (spec §2–4).
//! - `mhl`: ASC MHL seal and verify, both ways against the reference `ascmhl` tool.
//! - `proxy`: a loss proxy that cuts connections on the way up or back.
//! - `recovery`: outages ridden out unattended, with the reason shown meanwhile.
//! - `s3`: the hub with its files on a real S3 server: pre-signed URLs of the store.
//! - `download`: downloads end to end: the tree on disk, hostile packages, faults, crashes.
//! - `service`: the agent as a service: systemd notify, SIGTERM, logs, metrics, the API token.
//! - `upload`: uploads end to end: folders up, links back down, edits mid-send, crashes.

mod actions;
mod agent;
mod automations;
mod bandwidth;
mod browser;
mod cli;
mod conformance;
mod crash;
mod dashboard;
mod download;
mod hub;
mod mhl;
mod proxy;
mod recovery;
mod s3;
mod service;
mod support;
mod upload;
