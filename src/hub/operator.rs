//! Operator commands on a hub's data folder: teams, API keys, portals, quarantine flags, and a
//! TOML seed file that sets up all of them at once (idempotently, so it can run at every start).

use std::path::Path;

use serde::Deserialize;

use super::Hub;
use super::auth;
use super::db::{self, PortalRow, TeamRow};
use super::error::HubError;
use crate::cloud::dto::{Secret, SecretSource};

/// A hub's seed file: the teams, their API keys and their portals.
///
/// ```toml
/// [[team]]
/// name = "Post House"
/// id = "01JAAAAAAAAAAAAAAAAAAAAAAA"   # optional: a fixed id that agent configs can name
/// api_keys = [{ env = "HUB_API_KEY" }] # or { file = "/etc/masv/hub-key" } or a plain string
///
/// [[team.portal]]
/// subdomain = "dailies"
/// name = "Dailies"
/// access_code = { env = "DAILIES_CODE" } # optional
///
/// [s3]                                    # with --storage s3://BUCKET (else AWS_* variables)
/// access_key = { env = "HUB_S3_KEY" }
/// secret_key = { file = "/etc/masv/hub-s3-secret" }
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    #[serde(default)]
    pub team: Vec<SeedTeam>,
    /// The object store's credentials, for `--storage s3://…` (else `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY`).
    #[serde(default)]
    pub s3: Option<SeedS3>,
}

/// `[s3] access_key = { env = "…" }, secret_key = { file = "…" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedS3 {
    pub access_key: SecretSource,
    pub secret_key: SecretSource,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedTeam {
    pub name: String,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub api_keys: Vec<SecretSource>,
    #[serde(default)]
    pub portal: Vec<SeedPortal>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedPortal {
    pub subdomain: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub access_code: Option<SecretSource>,
}

impl Seed {
    pub fn load(path: &Path) -> Result<Seed, HubError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            HubError::BadRequest(format!("cannot read seed file {}: {e}", path.display()))
        })?;
        toml::from_str(&text).map_err(|e| {
            let at = e
                .span()
                .map(|span| {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!(":{line}:{col}")
                })
                .unwrap_or_default();
            HubError::BadRequest(format!("{}{at}: {}", path.display(), e.message()))
        })
    }
}

/// What a subdomain may look like: a DNS label.
fn check_subdomain(subdomain: &str) -> Result<String, HubError> {
    let s = subdomain.to_ascii_lowercase();
    let ok = (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(s)
    } else {
        Err(HubError::BadRequest(format!(
            "subdomain {subdomain:?} must be 1 to 63 letters, digits or '-', not starting or ending with '-'"
        )))
    }
}

impl Hub {
    /// Creates a team and returns its id. `id` fixes the id (a ULID) instead of drawing one.
    /// Its subdomain is the slug of its name (`Post House`: `post-house`) unless another team
    /// has it already; [`Hub::set_team_subdomain`] changes it.
    pub fn add_team(&self, name: &str, id: Option<&str>) -> Result<String, HubError> {
        if name.trim().is_empty() {
            return Err(HubError::BadRequest("a team needs a name".into()));
        }
        let id = match id {
            Some(id) if auth::is_id(id) => id.to_ascii_uppercase(),
            Some(id) => {
                return Err(HubError::BadRequest(format!(
                    "team id {id:?} is not a ULID (26 characters)"
                )));
            }
            None => auth::new_id(),
        };
        let row = TeamRow {
            id: id.clone(),
            name: name.to_owned(),
        };
        self.db.with(|conn| {
            if db::team_by_name(conn, name)?.is_some() {
                return Err(HubError::Conflict(format!(
                    "a team named {name:?} exists already"
                )));
            }
            db::insert_team(conn, &row)?;
            let subdomain = db::slug(name);
            if !subdomain.is_empty() {
                db::set_team_subdomain(conn, &row.id, &subdomain)?;
            }
            Ok(())
        })?;
        Ok(id)
    }

    /// Gives a team (by id or name) a subdomain: a DNS label no other team has.
    pub fn set_team_subdomain(&self, team: &str, subdomain: &str) -> Result<(), HubError> {
        let id = self.find_team(team)?;
        let subdomain = check_subdomain(subdomain)?;
        if self
            .db
            .with(|conn| db::set_team_subdomain(conn, &id, &subdomain))?
        {
            Ok(())
        } else {
            Err(HubError::Conflict(format!(
                "the team subdomain {subdomain:?} is taken already"
            )))
        }
    }

    /// The id of a team given by id or by name.
    pub fn find_team(&self, team: &str) -> Result<String, HubError> {
        self.db.with(|conn| {
            if let Some(t) = db::team(conn, team)? {
                return Ok(t.id);
            }
            db::team_by_name(conn, team)?.map(|t| t.id).ok_or_else(|| {
                HubError::NotFound(format!(
                    "no team {team:?}; create it with `masv hub team add`"
                ))
            })
        })
    }

    /// Adds an API key to a team: `key` as given, or a new random one (256 bits). Only its
    /// digest is stored, so this is the one time it can be shown.
    pub fn add_api_key(&self, team: &str, key: Option<Secret>) -> Result<Secret, HubError> {
        let team_id = self.find_team(team)?;
        let key = key.unwrap_or_else(|| Secret::new(auth::random_token(32)));
        if key.expose().len() < 16 {
            return Err(HubError::BadRequest(
                "an API key must be at least 16 characters".into(),
            ));
        }
        self.db.with(|conn| {
            db::insert_api_key(conn, &auth::new_id(), &team_id, &auth::digest(key.expose()))
        })?;
        Ok(key)
    }

    /// Creates a portal of a team and returns its id.
    pub fn add_portal(
        &self,
        team: &str,
        subdomain: &str,
        name: Option<&str>,
        access_code: Option<&Secret>,
    ) -> Result<String, HubError> {
        let team_id = self.find_team(team)?;
        let subdomain = check_subdomain(subdomain)?;
        let access_code_hash = access_code
            .map(|c| auth::hash_password(c.expose()))
            .transpose()?;
        let row = PortalRow {
            id: auth::new_id(),
            team_id,
            name: name.unwrap_or(&subdomain).to_owned(),
            subdomain: subdomain.clone(),
            access_code_hash,
        };
        self.db.with(|conn| {
            if db::portal_by_subdomain(conn, &subdomain)?.is_some() {
                return Err(HubError::Conflict(format!(
                    "the subdomain {subdomain:?} is taken already"
                )));
            }
            db::insert_portal(conn, &row)
        })?;
        Ok(row.id)
    }

    /// How many times a link has been accessed (looked up), as counted against its limit.
    pub fn link_accesses(&self, link_id: &str) -> Result<u32, HubError> {
        let id = link_id.to_ascii_uppercase();
        self.db
            .with(|conn| db::link(conn, &id))?
            .map(|l| l.access_count)
            .ok_or_else(|| HubError::NotFound(format!("no link {link_id}")))
    }

    /// Flags (or clears) a file as virus-infected: its download URL then answers 403.
    pub fn set_virus_detected(&self, file_id: &str, flagged: bool) -> Result<(), HubError> {
        let id = file_id.to_ascii_uppercase();
        if self
            .db
            .with(|conn| db::set_virus_detected(conn, &id, flagged))?
        {
            Ok(())
        } else {
            Err(HubError::NotFound(format!("no file {file_id}")))
        }
    }

    /// Applies a seed: creates what is missing, leaves what exists. Returns what it did, one
    /// line each (secrets never included).
    pub fn apply_seed(&self, seed: &Seed) -> Result<Vec<String>, HubError> {
        let mut done = Vec::new();
        for team in &seed.team {
            let existing = match &team.id {
                Some(id) => self
                    .db
                    .with(|conn| db::team(conn, &id.to_ascii_uppercase()))?,
                None => self.db.with(|conn| db::team_by_name(conn, &team.name))?,
            };
            let team_id = match existing {
                Some(t) => t.id,
                None => {
                    let id = self.add_team(&team.name, team.id.as_deref())?;
                    done.push(format!("team {:?} created: {id}", team.name));
                    id
                }
            };
            for key in &team.api_keys {
                self.add_api_key(&team_id, Some(key.resolve().map_err(HubError::BadRequest)?))?;
            }
            for portal in &team.portal {
                let subdomain = check_subdomain(&portal.subdomain)?;
                if self
                    .db
                    .with(|conn| db::portal_by_subdomain(conn, &subdomain))?
                    .is_some()
                {
                    continue;
                }
                let code = portal
                    .access_code
                    .as_ref()
                    .map(SecretSource::resolve)
                    .transpose()
                    .map_err(HubError::BadRequest)?;
                let id =
                    self.add_portal(&team_id, &subdomain, portal.name.as_deref(), code.as_ref())?;
                done.push(format!("portal {subdomain:?} created: {id}"));
            }
        }
        Ok(done)
    }
}
