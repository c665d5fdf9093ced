//! The MASV cloud API (spec §1–4): wire types shared with the hub, and the client the agent uses.
//!
//! - `dto`: the JSON bodies, read tolerantly, secrets redacted.
//! - `client`: [`Client`], one typed method per route, plus storage blueprints and ranged GETs.
//! - `error`: [`CloudError`], failures sorted by what the caller must do about them.

mod client;
pub mod dto;
mod error;

pub use client::{Client, default_inbox_base};
pub use error::CloudError;
