//! Sign-in, sessions and CSRF.
//!
//! - Passwords are argon2id PHC strings ([`hash_password`], [`verify_password`]); a wrong email and a wrong
//!   password get the same answer, after the same work.
//! - A session is a random 32-byte token in an `HttpOnly; SameSite=Lax` cookie; the store keeps only its
//!   SHA-256, with an idle expiry that slides on each request and an absolute one that does not.
//! - Every session has its own CSRF token. Forms carry it in a hidden `csrf` field; [`Posted`] checks it in
//!   constant time before any POST handler runs, so a handler cannot forget. The sign-in form, which has no
//!   session yet, uses a double-submit cookie instead.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use askama::Template;
use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Web;
use crate::pages::{UiError, render};
use ledgerlink_store::{NewWebSession, WebSession};

pub const SESSION_COOKIE: &str = "ledgerlink_session";
const LOGIN_COOKIE: &str = "ledgerlink_login";
/// Largest form body accepted (the settings form with a long service map fits easily).
const MAX_FORM_BYTES: usize = 256 * 1024;

/// Hashes a password with argon2id and a fresh salt.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt).map_err(|e| anyhow::anyhow!("hashing: {e}"))?.to_string())
}

/// Whether `password` matches the stored hash. A malformed hash never matches.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// A hash of a password nobody has, verified against when the email is unknown so that both failures take the
/// same time.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy password that matches nothing").unwrap_or_default())
}

/// Trims and lower-cases an email; refuses what cannot be one.
pub fn normalize_email(email: &str) -> anyhow::Result<String> {
    let e = email.trim().to_lowercase();
    match e.split_once('@') {
        Some((user, domain)) if !user.is_empty() && domain.contains('.') && !e.contains(char::is_whitespace) => Ok(e),
        _ => anyhow::bail!("`{}` is not an email address", email.trim()),
    }
}

pub(crate) fn random_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

pub(crate) fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The value of cookie `name`, if the request has it.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn set_cookie(web: &Web, name: &str, value: &str, max_age_secs: i64) -> HeaderValue {
    let secure = if web.config.secure_cookie || web.config.public_url.as_deref().is_some_and(|u| u.starts_with("https://")) {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}"))
        .unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

/// A signed-in administrator: the live session (already touched, so its idle expiry has moved on).
#[derive(Debug, Clone)]
pub struct Admin {
    pub session: WebSession,
}

impl Admin {
    pub fn workspace(&self) -> &str {
        &self.session.user.workspace
    }

    pub fn email(&self) -> &str {
        &self.session.user.email
    }
}

/// Why there is no signed-in admin: the browser goes to the sign-in page, told why when a session ran out.
pub struct SignInFirst {
    next: String,
    expired: bool,
}

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        let mut to = url::form_urlencoded::Serializer::new(String::new());
        to.append_pair("next", &self.next);
        if self.expired {
            to.append_pair("expired", "1");
        }
        Redirect::to(&format!("/login?{}", to.finish())).into_response()
    }
}

impl FromRequestParts<Web> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, web: &Web) -> Result<Admin, Response> {
        let next = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(SignInFirst { next, expired: false }.into_response());
        };
        let touched = web.web_store().touch_web_session(&token_hash(&token), web.now(), web.config.idle_timeout).await;
        match touched {
            Ok(Some(session)) => Ok(Admin { session }),
            Ok(None) => Err(SignInFirst { next, expired: true }.into_response()),
            Err(e) => Err(UiError::from(e).into_response()),
        }
    }
}

/// A POSTed form from a signed-in admin whose CSRF token checked out. `T` gets the form's other fields.
pub struct Posted<T> {
    pub admin: Admin,
    pub form: T,
}

fn csrf_refused() -> UiError {
    UiError::new(
        StatusCode::FORBIDDEN,
        "This form has expired",
        "The form was not sent from a page of this site, or it was open from an earlier session. Nothing was \
         changed. Go back, reload the page and try again.",
    )
}

impl<T: DeserializeOwned + Send> FromRequest<Web> for Posted<T> {
    type Rejection = Response;

    async fn from_request(req: Request, web: &Web) -> Result<Posted<T>, Response> {
        let (mut parts, body) = req.into_parts();
        let admin = Admin::from_request_parts(&mut parts, web).await?;
        let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES).await.map_err(|_| {
            UiError::new(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large", "Send fewer changes at once.").into_response()
        })?;
        let sent = url::form_urlencoded::parse(&bytes).find(|(k, _)| k == "csrf").map(|(_, v)| v.into_owned());
        if !sent.is_some_and(|s| constant_time_eq(&s, &admin.session.csrf_token)) {
            tracing::warn!(user = %admin.session.user.email, path = %parts.uri.path(), "form refused: CSRF token missing or wrong");
            return Err(csrf_refused().into_response());
        }
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        let axum::Form(form) = axum::Form::<T>::from_request(req, web).await.map_err(|e| {
            UiError::new(StatusCode::BAD_REQUEST, "The form could not be read", format!("Some of its fields are not what this page expects ({}).", e.body_text()))
                .into_response()
        })?;
        Ok(Posted { admin, form })
    }
}

/// A form with nothing but its CSRF token.
#[derive(Debug, Deserialize)]
pub struct NoFields {}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    csrf: &'a str,
    next: &'a str,
    email: &'a str,
    error: Option<&'a str>,
    notice: Option<&'a str>,
    banner: Option<&'a str>,
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
    expired: Option<String>,
}

/// Only paths on this site, so the sign-in page cannot be used to send people elsewhere.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.starts_with("/\\") => n.to_string(),
        _ => "/settings/integrations".to_string(),
    }
}

fn login_form(web: &Web, next: &str, email: &str, error: Option<&str>, notice: Option<&str>) -> Response {
    let csrf = random_token();
    let status = if error.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    let page = LoginPage { csrf: &csrf, next, email, error, notice, banner: web.config.banner.as_deref() };
    let mut resp = render(status, &page);
    resp.headers_mut().append(header::SET_COOKIE, set_cookie(web, LOGIN_COOKIE, &csrf, 3600));
    resp
}

/// `GET /login`.
pub async fn login_page(State(web): State<Web>, Query(q): Query<LoginQuery>) -> Response {
    let notice = q.expired.is_some().then_some("Your session has ended. Sign in again to continue.");
    login_form(&web, &safe_next(q.next.as_deref()), "", None, notice)
}

#[derive(Deserialize)]
pub struct LoginForm {
    email: String,
    password: String,
    csrf: String,
    next: Option<String>,
}

/// `POST /login`: checks the double-submit token, then the password; opens a session.
pub async fn login(State(web): State<Web>, headers: HeaderMap, axum::Form(f): axum::Form<LoginForm>) -> Response {
    let next = safe_next(f.next.as_deref());
    if !cookie(&headers, LOGIN_COOKIE).is_some_and(|c| constant_time_eq(&c, &f.csrf)) {
        return login_form(&web, &next, &f.email, Some("The sign-in form had expired. Please sign in again."), None);
    }
    let user = match normalize_email(&f.email) {
        Ok(email) => match web.web_store().web_user_by_email(&email).await {
            Ok(u) => u,
            Err(e) => return UiError::from(e).into_response(),
        },
        Err(_) => None,
    };
    let hash = user.as_ref().map_or(decoy_hash(), |u| u.password_hash.as_str()).to_string();
    let password = f.password.clone();
    // argon2 is deliberately slow: off the async threads.
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash)).await.unwrap_or(false);
    let Some(user) = user.filter(|_| ok) else {
        tracing::info!("sign-in refused");
        return login_form(&web, &next, &f.email, Some("The email or password is not right."), None);
    };
    tracing::info!(user = %user.email, workspace = %user.workspace, "signed in");
    let mut resp = open_session(&web, &user, &next).await;
    resp.headers_mut().append(header::SET_COOKIE, set_cookie(&web, LOGIN_COOKIE, "", 0));
    resp
}

/// Opens a session for `user` (a new token, its own CSRF token, idle and absolute expiry) and sends the browser
/// to `next` with the session cookie.
pub(crate) async fn open_session(web: &Web, user: &ledgerlink_store::WebUser, next: &str) -> Response {
    let token = random_token();
    let now = web.now();
    let new = NewWebSession {
        token_hash: token_hash(&token),
        user_id: user.id,
        csrf_token: random_token(),
        now,
        idle_expires_at: now + web.config.idle_timeout,
        absolute_expires_at: now + web.config.absolute_timeout,
    };
    if let Err(e) = web.web_store().create_web_session(&new).await {
        return UiError::from(e).into_response();
    }
    // Sessions that ran out are swept at each sign-in, which keeps the table small without a timer.
    if let Err(e) = web.web_store().purge_web_sessions(now).await {
        tracing::warn!(error = %e, "expired sessions were not swept");
    }
    let mut resp = Redirect::to(next).into_response();
    resp.headers_mut().append(header::SET_COOKIE, set_cookie(web, SESSION_COOKIE, &token, web.config.absolute_timeout.num_seconds()));
    resp
}

/// `POST /logout`.
pub async fn logout(State(web): State<Web>, posted: Posted<NoFields>) -> Response {
    if let Err(e) = web.web_store().delete_web_session(&posted.admin.session.token_hash).await {
        return UiError::from(e).into_response();
    }
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().append(header::SET_COOKIE, set_cookie(&web, SESSION_COOKIE, "", 0));
    resp
}

/// Stores (or clears) the session's short-lived pending state.
pub async fn set_pending(web: &Web, admin: &Admin, pending: Option<&serde_json::Value>) -> Result<(), UiError> {
    Ok(web.web_store().set_web_session_pending(&admin.session.token_hash, pending).await?)
}

/// A fresh unguessable value (OAuth `state`).
pub fn new_nonce() -> String {
    random_token()
}

/// Constant-time comparison for secrets (OAuth `state`).
pub fn same_secret(a: &str, b: &str) -> bool {
    constant_time_eq(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_own_hash() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct horsE", &h));
        assert!(!verify_password("correct horse", "not a hash"));
        assert_ne!(h, hash_password("correct horse").unwrap(), "each hash has its own salt");
    }

    #[test]
    fn emails_are_normalised_and_nonsense_refused() {
        assert_eq!(normalize_email("  Dana@Example.COM ").unwrap(), "dana@example.com");
        assert!(normalize_email("dana").is_err());
        assert!(normalize_email("@example.com").is_err());
        assert!(normalize_email("da na@example.com").is_err());
    }

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/jobs?status=dead")), "/jobs?status=dead");
        assert_eq!(safe_next(Some("//evil.example/")), "/settings/integrations");
        assert_eq!(safe_next(Some("https://evil.example/")), "/settings/integrations");
        assert_eq!(safe_next(None), "/settings/integrations");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; ledgerlink_session=tok; b=2"));
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("tok"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
