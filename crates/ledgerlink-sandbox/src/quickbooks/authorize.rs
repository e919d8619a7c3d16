//! Intuit's consent flow as plain server-rendered HTML: sign in, pick a company, approve the scopes, redirect.
//!
//! Layout: `GET /connect/oauth2` checks the authorization request (`client_id`, `response_type=code`, `scope`,
//! `redirect_uri`, `state`) and shows the sign-in form (the sandbox user and password are printed on the page);
//! `POST /connect/oauth2/signin` checks them and lists the user's companies; `POST /connect/oauth2/company` shows
//! the approve/deny screen for the chosen realm; `POST /connect/oauth2/decision` redirects to
//! `redirect_uri?code=…&state=…&realmId=…` or, on deny, `?error=access_denied&state=…`. The request travels between
//! the steps in hidden form fields; a `ticket` (HMAC of the request under the client secret) proves the sign-in
//! happened, so the later steps cannot be reached without it. No JavaScript, no cookies.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use std::collections::HashMap;

use super::Shared;
use super::oauth;

/// The sandbox user shown on the sign-in page.
pub const SANDBOX_USER: &str = "dana@juniperfinch.example";
pub const SANDBOX_PASSWORD: &str = "sandbox-pass";

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/connect/oauth2", get(start))
        .route("/connect/oauth2/signin", post(signin))
        .route("/connect/oauth2/company", post(company))
        .route("/connect/oauth2/decision", post(decision))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{t} - Intuit (sandbox)</title></head>\n<body>\n<h1>{t}</h1>\n{body}\n</body></html>\n",
        t = esc(title)
    );
    (status, Html(html)).into_response()
}

fn error_page(message: &str) -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "Authorization error",
        &format!("<p class=\"error\">{}</p>", esc(message)),
    )
}

/// The authorization request as it travels through the steps.
struct AuthRequest {
    client_id: String,
    scope: String,
    redirect_uri: String,
    state: String,
}

impl AuthRequest {
    fn from(map: &HashMap<String, String>) -> Result<Self, String> {
        let get = |k: &str| {
            map.get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let client_id = get("client_id").ok_or("client_id is missing")?;
        let redirect_uri = get("redirect_uri").ok_or("redirect_uri is missing")?;
        url::Url::parse(&redirect_uri)
            .map_err(|e| format!("redirect_uri is not a valid URL: {e}"))?;
        let scope =
            get("scope").ok_or("scope is missing (e.g. com.intuit.quickbooks.accounting)")?;
        let known = [
            "com.intuit.quickbooks.accounting",
            "com.intuit.quickbooks.payment",
            "openid",
            "profile",
            "email",
            "phone",
            "address",
        ];
        if let Some(bad) = scope.split_whitespace().find(|s| !known.contains(s)) {
            return Err(format!("scope {bad} is not a known scope"));
        }
        Ok(AuthRequest {
            client_id,
            scope,
            redirect_uri,
            state: get("state").unwrap_or_default(),
        })
    }

    fn hidden(&self, ticket: Option<&str>) -> String {
        let mut out = String::new();
        for (k, v) in [
            ("client_id", &self.client_id),
            ("scope", &self.scope),
            ("redirect_uri", &self.redirect_uri),
            ("state", &self.state),
        ] {
            out.push_str(&format!(
                "<input type=\"hidden\" name=\"{k}\" value=\"{}\">\n",
                esc(v)
            ));
        }
        if let Some(t) = ticket {
            out.push_str(&format!(
                "<input type=\"hidden\" name=\"ticket\" value=\"{}\">\n",
                esc(t)
            ));
        }
        out
    }

    fn ticket(&self, secret: &str) -> String {
        super::webhooks::sign(
            secret,
            &format!(
                "signed-in\n{}\n{}\n{}\n{}",
                self.client_id, self.scope, self.redirect_uri, self.state
            ),
        )
    }
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

async fn checked(
    app: &Shared,
    map: &HashMap<String, String>,
    need_ticket: bool,
) -> Result<AuthRequest, Response> {
    let req = AuthRequest::from(map).map_err(|e| error_page(&e))?;
    let st = app.state.lock().await;
    if req.client_id != st.credentials.client_id {
        return Err(error_page(&format!(
            "client_id {} is not a registered app",
            req.client_id
        )));
    }
    if need_ticket
        && map.get("ticket").map(String::as_str)
            != Some(req.ticket(&st.credentials.client_secret).as_str())
    {
        return Err(page(
            StatusCode::UNAUTHORIZED,
            "Sign in required",
            "<p class=\"error\">Sign in first.</p>",
        ));
    }
    Ok(req)
}

fn signin_page(req: &AuthRequest, error: Option<&str>) -> Response {
    let err = error
        .map(|e| format!("<p class=\"error\">{}</p>\n", esc(e)))
        .unwrap_or_default();
    let body = format!(
        "{err}<p>Sandbox user: <code>{u}</code> &mdash; password: <code>{p}</code></p>\n\
         <form method=\"post\" action=\"/connect/oauth2/signin\">\n{h}\
         <label>Email <input type=\"email\" name=\"email\" value=\"{u}\"></label>\n\
         <label>Password <input type=\"password\" name=\"password\"></label>\n\
         <button type=\"submit\">Sign in</button>\n</form>",
        u = SANDBOX_USER,
        p = SANDBOX_PASSWORD,
        h = req.hidden(None)
    );
    page(
        if error.is_some() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        },
        "Sign in to Intuit",
        &body,
    )
}

/// `GET /connect/oauth2`.
async fn start(
    State(app): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if q.get("response_type").map(String::as_str) != Some("code") {
        return error_page("response_type must be code");
    }
    match checked(&app, &q, false).await {
        Ok(req) => signin_page(&req, None),
        Err(r) => r,
    }
}

/// `POST /connect/oauth2/signin`: email and password, then the company picker.
async fn signin(State(app): State<Arc<Shared>>, body: Bytes) -> Response {
    let map = form(&body);
    let req = match checked(&app, &map, false).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let email = map
        .get("email")
        .map(|e| e.trim().to_lowercase())
        .unwrap_or_default();
    if email != SANDBOX_USER || map.get("password").map(String::as_str) != Some(SANDBOX_PASSWORD) {
        return signin_page(&req, Some("The email or password is not right."));
    }
    let st = app.state.lock().await;
    let ticket = req.ticket(&st.credentials.client_secret);
    let mut options = String::new();
    for (i, (realm, co)) in ordered_companies(&st).into_iter().enumerate() {
        let name = co
            .rows("CompanyInfo")
            .next()
            .and_then(|c| c.get("CompanyName"))
            .and_then(|v| v.as_str())
            .unwrap_or("Company")
            .to_string();
        options.push_str(&format!(
            "<label><input type=\"radio\" name=\"realmId\" value=\"{r}\"{c}> {n} (realm {r})</label><br>\n",
            r = esc(&realm),
            n = esc(&name),
            c = if i == 0 { " checked" } else { "" }
        ));
    }
    let body = format!(
        "<form method=\"post\" action=\"/connect/oauth2/company\">\n{}{options}<button type=\"submit\">Next</button>\n</form>",
        req.hidden(Some(&ticket))
    );
    page(StatusCode::OK, "Choose a company", &body)
}

/// The first realm first, then the others in id order.
fn ordered_companies(st: &super::state::SandboxState) -> Vec<(String, &super::state::Company)> {
    let first = st.credentials.realm_id.clone();
    let mut out: Vec<(String, &super::state::Company)> =
        st.companies.iter().map(|(r, c)| (r.clone(), c)).collect();
    out.sort_by_key(|(r, _)| (*r != first, r.clone()));
    out
}

/// `POST /connect/oauth2/company`: the approve/deny screen for the chosen company.
async fn company(State(app): State<Arc<Shared>>, body: Bytes) -> Response {
    let map = form(&body);
    let req = match checked(&app, &map, true).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let realm = map.get("realmId").cloned().unwrap_or_default();
    let st = app.state.lock().await;
    if !st.companies.contains_key(&realm) {
        return error_page(&format!("realmId {realm} is not one of your companies"));
    }
    let ticket = req.ticket(&st.credentials.client_secret);
    let scopes: String = req
        .scope
        .split_whitespace()
        .map(|s| format!("<li>{}</li>\n", esc(s)))
        .collect();
    let body = format!(
        "<p>The app <code>{app}</code> asks for access to company {realm}:</p>\n<ul>\n{scopes}</ul>\n\
         <form method=\"post\" action=\"/connect/oauth2/decision\">\n{h}\
         <input type=\"hidden\" name=\"realmId\" value=\"{realm}\">\n\
         <button type=\"submit\" name=\"decision\" value=\"approve\">Connect</button>\n\
         <button type=\"submit\" name=\"decision\" value=\"deny\">Cancel</button>\n</form>",
        app = esc(&req.client_id),
        realm = esc(&realm),
        h = req.hidden(Some(&ticket))
    );
    page(StatusCode::OK, "Approve access", &body)
}

fn redirect(to: String) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, to)]).into_response()
}

/// `POST /connect/oauth2/decision`: redirects back to the app.
async fn decision(State(app): State<Arc<Shared>>, body: Bytes) -> Response {
    let map = form(&body);
    let req = match checked(&app, &map, true).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let Ok(mut target) = url::Url::parse(&req.redirect_uri) else {
        return error_page("redirect_uri is not a valid URL");
    };
    match map.get("decision").map(String::as_str) {
        Some("approve") => {
            let realm = map.get("realmId").cloned().unwrap_or_default();
            let now = app.clock.now();
            let mut st = app.state.lock().await;
            if !st.companies.contains_key(&realm) {
                return error_page(&format!("realmId {realm} is not one of your companies"));
            }
            let (code, realm) =
                oauth::mint_code(&mut st, Some(realm), Some(req.redirect_uri.clone()), now);
            app.persist(&mut st).await;
            target
                .query_pairs_mut()
                .append_pair("code", &code)
                .append_pair("state", &req.state)
                .append_pair("realmId", &realm);
        }
        Some("deny") => {
            target
                .query_pairs_mut()
                .append_pair("error", "access_denied")
                .append_pair("state", &req.state);
        }
        _ => return error_page("decision must be approve or deny"),
    }
    redirect(target.to_string())
}
