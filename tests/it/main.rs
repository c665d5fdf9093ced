//! The one integration test binary: hubs (and later agents) started in-process on port 0 with
//! temporary folders, moving real bytes over real HTTP.
//!
//! - `support`: starting hubs, a ready-made world, uploads and downloads through the client.
//! - `hub`: the hub against the typed client, route by route (spec §2–4).

mod hub;
mod support;
