//! masv-agent: a MASV-compatible file-transfer agent, and a MASV-compatible hub in the same crate.
//!
//! Layout (see `../shared/design/ARCHITECTURE.md`):
//! - `actions`: post-transfer actions: events delivered to webhooks, commands and email.
//! - `api`: the agent's local REST API (`/api/v1`), an axum router over the transfer engine.
//! - `cli`: the `masv` command line.
//! - `cloud`: the typed MASV API client and the wire types (DTOs) shared with the hub.
//! - `config`: the agent's configuration.
//! - `crash`: named crash points for the fault-injection tests (debug builds only).
//! - `dashboard`: the web dashboard at `/`: pages, login sessions and CSRF, the live stream.
//! - `daemon`: the agent as a service: store, engine and API started and stopped together.
//! - `direct`: direct I/O shared by downloads and the hub: aligned, pooled buffers; writer; reads.
//! - `files`: safe paths under a destination, name cleaning, preallocated part files, chown.
//! - `hub`: the MASV-compatible service: control plane routes, tokens, signed blob storage.
//! - `metrics`: the agent's counters and gauges, as Prometheus text for `GET /metrics`.
//! - `mhl`: ASC MHL v2 hash lists: seal a folder, verify it, build a generation from known hashes.
//! - `rules`: the automations in force: watch folders and download rules turned into jobs.
//! - `schedule`: cron schedules and transfer windows, in time zones.
//! - `store`: the agent's SQLite state (transfers, files, committed chunks), on its own thread.
//! - `transfer`: the shared transfer core: jobs, queue, connection budget, download engine.
//! - `watch`: watched folders → settled files (events or polling, rescans on overflow).
//! - `web`: what the two HTTP servers share (JSON bodies, `{code, message}` errors).

pub mod actions;
pub mod api;
pub mod cli;
pub mod cloud;
pub mod config;
pub mod crash;
pub mod daemon;
pub mod dashboard;
pub mod direct;
pub mod files;
pub mod hub;
pub use masv_md5s as md5s;
pub mod metrics;
pub mod mhl;
pub mod rules;
pub mod schedule;
pub mod store;
pub mod transfer;
pub mod watch;
pub mod web;
