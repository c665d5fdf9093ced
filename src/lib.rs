//! masv-agent: a MASV-compatible file-transfer agent, and a MASV-compatible hub in the same crate.
//!
//! Layout (see `../shared/design/ARCHITECTURE.md`):
//! - `cloud`: the typed MASV API client and the wire types (DTOs) shared with the hub.
//! - `cli`: the `masv` command line.
//! - `hub`: the MASV-compatible service: control plane routes, tokens, signed blob storage.

pub mod cli;
pub mod cloud;
pub mod hub;
