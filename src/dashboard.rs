//! The web dashboard, served by the agent's API server at `/`: transfers, automations,
//! throughput and the actions' events, live through `GET /api/v1/stream`. Plain HTML, CSS and
//! one script, embedded in the binary (no build step, nothing fetched from elsewhere: agents run
//! on closed networks); the page is drawn by its script from the same REST API the CLI uses.
//!
//! - `access`: the API token, the dashboard's session cookie, and its CSRF token.
//! - `stream`: the Server-Sent Events stream and the throughput history.
//!
//! Every answer here carries `Content-Security-Policy: default-src 'self'` (so no inline script
//! or style runs, even one slipped into a package name), `X-Frame-Options: DENY` and `nosniff`.

pub mod access;
pub mod stream;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use access::Access;

const INDEX: &str = include_str!("dashboard/assets/index.html");
const LOGIN: &str = include_str!("dashboard/assets/login.html");
const SCRIPT: &str = include_str!("dashboard/assets/dashboard.js");
const STYLE: &str = include_str!("dashboard/assets/dashboard.css");
const ICON: &str = include_str!("dashboard/assets/favicon.svg");

/// The pages and their files. Who may load them is [`Access::check`]'s to say (it runs in front
/// of every route of the agent).
pub fn router(access: Access) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/dashboard.js", get(script))
        .route("/dashboard.css", get(style))
        .route("/favicon.svg", get(icon))
        .layer(axum::middleware::from_fn(page_headers))
        .with_state(access)
}

/// The headers of every page and file of the dashboard.
async fn page_headers(req: Request, next: Next) -> Response {
    let mut answer = next.run(req).await;
    let headers = answer.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        // The page shows live state and the files are small: never a stale copy.
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    answer
}

fn file(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn index() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

async fn script() -> Response {
    file("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    file("text/css; charset=utf-8", STYLE)
}

async fn icon() -> Response {
    file("image/svg+xml", ICON)
}

/// The login form, saying `error` when there is one (escaped: it is text).
fn login_form(status: StatusCode, error: &str) -> Response {
    let error = error
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let page = LOGIN.replace("{{error}}", &error);
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page,
    )
        .into_response()
}

async fn login_page(State(access): State<Access>) -> Response {
    if !access.needs_token() {
        // Nothing to log in to: the agent runs without a token.
        return Redirect::to("/").into_response();
    }
    login_form(StatusCode::OK, "")
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// `POST /login` (a form with `token`): the right token opens a session (its two cookies) and
/// goes to the dashboard; another gets the form again, saying where the token is.
async fn login(State(access): State<Access>, Form(form): Form<LoginForm>) -> Response {
    if !access.needs_token() {
        return Redirect::to("/").into_response();
    }
    if !access.is_token(&form.token) {
        tracing::warn!("dashboard login with a wrong API token");
        return login_form(
            StatusCode::UNAUTHORIZED,
            "That is not this agent's API token. Use the api_token of its [server] configuration, or the token it made in its data folder (api-token).",
        );
    }
    let session = access.open_session();
    let mut answer = Redirect::to("/").into_response();
    set_cookies(
        answer.headers_mut(),
        access::session_cookies(Some(&session)),
    );
    answer
}

/// `POST /logout`: ends the session (it must carry its CSRF token, as any change does).
async fn logout(State(access): State<Access>, headers: HeaderMap) -> Response {
    access.close_session(&headers);
    let mut answer = Redirect::to("/login").into_response();
    set_cookies(answer.headers_mut(), access::session_cookies(None));
    answer
}

fn set_cookies(headers: &mut HeaderMap, cookies: [String; 2]) {
    for cookie in cookies {
        headers.append(
            header::SET_COOKIE,
            HeaderValue::from_str(&cookie).expect("cookie values are hex and ASCII attributes"),
        );
    }
}
