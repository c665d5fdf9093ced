//! The MASV cloud API (spec §1–4): wire types shared with the hub, and the client the agent uses.

pub mod dto;
