//! Who may use the agent's HTTP surface: the API token as `Authorization: Bearer` (the CLI,
//! scripts: unchanged), or a dashboard session cookie got by logging in with that token. A
//! cookie is sent by the browser whoever made the request, so a request that changes something
//! (any method but GET and HEAD) on a cookie also needs the session's CSRF token in
//! `X-CSRF-Token`, which only the dashboard's own pages can read (double submit: it is in a
//! second cookie, `SameSite=Strict`, that scripts of the agent's origin read).
//!
//! Sessions are random (256 bits), kept in memory only: logging out ends one for good, a
//! restart ends them all, and the token itself never leaves the login request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use crate::cloud::dto::Secret;
use crate::web::ErrorAnswer;

/// The cookie holding the session (HttpOnly: no script reads it).
pub const SESSION_COOKIE: &str = "masv_session";
/// The cookie holding the session's CSRF token, which the dashboard's script copies into
/// [`CSRF_HEADER`].
pub const CSRF_COOKIE: &str = "masv_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts after logging in.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; logging in past that ends the oldest.
const MAX_SESSIONS: usize = 256;

/// The routes anyone may load: the login page, and what it is drawn with.
const PUBLIC: [&str; 3] = ["/login", "/dashboard.css", "/favicon.svg"];

/// The token's SHA-256: requests are compared by digest, so the time a comparison takes says
/// nothing about the token.
pub fn token_digest(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// The access rules of one agent; cheap to clone.
#[derive(Clone)]
pub struct Access {
    /// The token's digest; `None`: the agent runs without a token (`--insecure-no-token`), and
    /// everything is open, the dashboard included.
    expected: Option<[u8; 32]>,
    sessions: Arc<Mutex<HashMap<[u8; 32], Session>>>,
}

struct Session {
    csrf: String,
    started: Instant,
}

/// A session just opened: the values of its two cookies.
pub struct NewSession {
    pub session: String,
    pub csrf: String,
}

impl Access {
    pub fn new(token: Option<&Secret>) -> Access {
        Access {
            expected: token.map(|t| token_digest(t.expose())),
            sessions: Arc::default(),
        }
    }

    /// Whether requests need the token (or a session).
    pub fn needs_token(&self) -> bool {
        self.expected.is_some()
    }

    /// Whether `given` is the agent's token.
    pub fn is_token(&self, given: &str) -> bool {
        self.expected == Some(token_digest(given.trim()))
    }

    /// A new session (after the token was checked).
    pub fn open_session(&self) -> NewSession {
        let new = NewSession {
            session: random_hex(),
            csrf: random_hex(),
        };
        let mut sessions = self
            .sessions
            .lock()
            .expect("sessions lock is never poisoned");
        sessions.retain(|_, s| s.started.elapsed() < SESSION_LIFETIME);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.started)
                .map(|(k, _)| *k)
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            token_digest(&new.session),
            Session {
                csrf: new.csrf.clone(),
                started: Instant::now(),
            },
        );
        new
    }

    /// Ends the session of `headers`' cookie, if any.
    pub fn close_session(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, SESSION_COOKIE) {
            self.sessions
                .lock()
                .expect("sessions lock is never poisoned")
                .remove(&token_digest(&id));
        }
    }

    /// The CSRF token of the live session of `headers`' cookie.
    fn session_csrf(&self, headers: &HeaderMap) -> Option<String> {
        let id = cookie(headers, SESSION_COOKIE)?;
        let sessions = self
            .sessions
            .lock()
            .expect("sessions lock is never poisoned");
        sessions
            .get(&token_digest(&id))
            .filter(|s| s.started.elapsed() < SESSION_LIFETIME)
            .map(|s| s.csrf.clone())
    }

    /// The middleware: lets a request through with the bearer token, or with a live session
    /// (and, unless it only reads, the session's CSRF token); sends a browser asking for a page
    /// to the login form; refuses the rest with 401 (403 for a missing CSRF token).
    pub async fn check(self, req: Request, next: Next) -> Response {
        let Some(expected) = self.expected else {
            return next.run(req).await;
        };
        if PUBLIC.contains(&req.uri().path()) {
            return next.run(req).await;
        }
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| token_digest(t.trim()));
        if let Some(given) = bearer {
            if given == expected {
                return next.run(req).await;
            }
            return unauthorized(
                "wrong API token; use the api_token of the agent's [server] configuration",
            );
        }
        if let Some(csrf) = self.session_csrf(req.headers()) {
            let reads = matches!(*req.method(), Method::GET | Method::HEAD);
            let given = req
                .headers()
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(token_digest);
            if reads || given == Some(token_digest(&csrf)) {
                return next.run(req).await;
            }
            return ErrorAnswer::new(
                StatusCode::FORBIDDEN,
                "a request that changes something needs the X-CSRF-Token header of the dashboard's session (the value of its masv_csrf cookie)",
            )
            .into_response();
        }
        if req.method() == Method::GET && req.uri().path() == "/" {
            return Redirect::to("/login").into_response();
        }
        unauthorized(
            "this agent needs its API token: send Authorization: Bearer TOKEN (masv commands take --api-token or MASV_API_TOKEN), or log in to the dashboard at /login",
        )
    }
}

fn unauthorized(message: &str) -> Response {
    let mut answer = ErrorAnswer::new(StatusCode::UNAUTHORIZED, message).into_response();
    answer
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    answer
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    hex::encode(bytes)
}

/// The value of cookie `name` in `headers`.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The `Set-Cookie` values that open `session` (`None`: that end it): the session HttpOnly,
/// the CSRF token readable by the page's script; both `SameSite=Strict` on the whole site.
pub fn session_cookies(session: Option<&NewSession>) -> [String; 2] {
    let age = SESSION_LIFETIME.as_secs();
    match session {
        Some(s) => [
            format!(
                "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={age}",
                s.session
            ),
            format!(
                "{CSRF_COOKIE}={}; SameSite=Strict; Path=/; Max-Age={age}",
                s.csrf
            ),
        ],
        None => [
            format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
            format!("{CSRF_COOKIE}=; SameSite=Strict; Path=/; Max-Age=0"),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others_and_sessions_end_when_closed() {
        let access = Access::new(Some(&Secret::new("tok")));
        assert!(access.is_token(" tok\n") && !access.is_token("to"));
        let s = access.open_session();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=b; {SESSION_COOKIE}={}; c=d", s.session)).unwrap(),
        );
        assert_eq!(access.session_csrf(&headers), Some(s.csrf.clone()));
        access.close_session(&headers);
        assert_eq!(access.session_csrf(&headers), None);
        let [session, csrf] = session_cookies(Some(&s));
        assert!(session.contains("HttpOnly; SameSite=Strict; Path=/"));
        assert!(!csrf.contains("HttpOnly") && csrf.contains("SameSite=Strict"));
    }
}
