//! The Salesforce card: Connect through Salesforce's own sign-in (the OAuth web-server flow), Test Connection and
//! Disconnect, as for QuickBooks.
//!
//! **Connect** (a POST, so it carries the CSRF token) keeps a fresh `state` in the session and sends the browser to
//! the org's authorize page; Salesforce sends it back to `/oauth/salesforce/callback` with `code` and `state`. The
//! callback checks `state` (one use only), exchanges the code, reads the org's name with the new tokens, and only
//! then stores the connection as `salesforce.<workspace>` (secrets sealed by the store), where flows can name it.
//! **Disconnect** revokes the refresh token at Salesforce (which ends its access tokens too) and deletes the
//! tokens here; a failed revocation still disconnects here and says so. The platform's own record sync is with
//! QuickBooks only, and the card says that plainly.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use chrono::{DateTime, Utc};
use ledgerlink_store::NewConnection;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Web;
use crate::integrations::public_base;
use crate::pages::{Layout, UiError, UiResult, render};
use crate::session::{Admin, NoFields, Posted, new_nonce, same_secret, set_pending};

/// How long a started sign-in stays valid.
const SIGN_IN_WINDOW_MINUTES: i64 = 15;

/// The Salesforce connected app users connect through.
#[derive(Clone)]
pub struct SalesforceApp {
    /// `https://login.salesforce.com/services/oauth2/authorize`, or the sandbox's.
    pub authorize_url: String,
    pub token_url: String,
    pub revoke_url: String,
    pub api_version: String,
    pub client_id: String,
    pub client_secret: SecretString,
}

impl std::fmt::Debug for SalesforceApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SalesforceApp").field("authorize_url", &self.authorize_url).field("client_id", &self.client_id).finish_non_exhaustive()
    }
}

impl SalesforceApp {
    /// The connected app as a Salesforce sandbox's startup line describes it.
    pub fn from_sandbox_info(info: &Value) -> anyhow::Result<SalesforceApp> {
        let s = |k: &str| {
            info.get(k).and_then(Value::as_str).map(str::to_string).ok_or_else(|| anyhow::anyhow!("the Salesforce sandbox's startup line has no `{k}`"))
        };
        let base = s("base_url")?;
        Ok(SalesforceApp {
            authorize_url: s("authorize_url")?,
            token_url: s("token_url")?,
            revoke_url: format!("{base}/services/oauth2/revoke"),
            api_version: s("api_version")?,
            client_id: s("client_id")?,
            client_secret: SecretString::from(s("client_secret")?),
        })
    }
}

/// The store connection a workspace's Salesforce sign-in is kept under.
pub fn connection_name(workspace: &str) -> String {
    format!("salesforce.{workspace}")
}

/// What the Salesforce card shows.
#[derive(Debug, Clone)]
pub struct SalesforceCard {
    pub connected: bool,
    pub org: Option<String>,
    pub connection: String,
    /// Whether a Connect button can work (an app is configured).
    pub can_connect: bool,
}

pub(crate) async fn card(web: &Web, workspace: &str) -> Result<SalesforceCard, UiError> {
    let name = connection_name(workspace);
    let conn = web.engine.store.get_connection(&name).await?;
    let connected = conn.as_ref().is_some_and(|c| c.credentials.get("refresh_token").and_then(Value::as_str).is_some_and(|t| !t.is_empty()));
    Ok(SalesforceCard {
        connected,
        org: conn.and_then(|c| c.config.get("org_name").and_then(Value::as_str).map(str::to_string)),
        connection: name,
        can_connect: web.config.salesforce.is_some(),
    })
}

fn app(web: &Web) -> Result<&SalesforceApp, UiError> {
    web.config.salesforce.as_ref().ok_or_else(|| {
        UiError::new(
            StatusCode::CONFLICT,
            "Salesforce is not set up on this server",
            "No Salesforce connected app is configured, so there is nothing to connect through. Ask your administrator to add one.",
        )
    })
}

fn failed(message: impl Into<String>) -> UiError {
    UiError::new(StatusCode::BAD_REQUEST, "Salesforce was not connected", message)
}

/// `POST /settings/integrations/salesforce/connect`.
pub async fn connect(State(web): State<Web>, headers: HeaderMap, posted: Posted<NoFields>) -> UiResult {
    let app = app(&web)?;
    let redirect_uri = format!("{}/oauth/salesforce/callback", public_base(&web, &headers)?);
    let state = new_nonce();
    let pending = json!({"system": "salesforce", "oauth_state": state, "redirect_uri": redirect_uri, "started_at": web.now().to_rfc3339()});
    set_pending(&web, &posted.admin, Some(&pending)).await?;
    let mut to = url::Url::parse(&app.authorize_url).map_err(|_| {
        UiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Salesforce is not set up correctly", "The sign-in address configured for Salesforce is not valid. Tell your administrator.")
    })?;
    to.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &app.client_id)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("scope", "api refresh_token")
        .append_pair("state", &state);
    Ok(Redirect::to(to.as_str()).into_response())
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /oauth/salesforce/callback`.
pub async fn callback(State(web): State<Web>, admin: Admin, Query(q): Query<CallbackQuery>) -> UiResult {
    let app = app(&web)?;
    let pending = admin.session.pending.clone().filter(|p| p["system"] == "salesforce");
    set_pending(&web, &admin, None).await?;
    let Some(pending) = pending else {
        return Err(failed("This Salesforce sign-in was not started from this browser session (or it was already used). Nothing was connected. Click Connect to start again."));
    };
    if !q.state.as_deref().is_some_and(|s| same_secret(s, pending["oauth_state"].as_str().unwrap_or_default())) {
        tracing::warn!(user = %admin.email(), "Salesforce callback with a state that does not match the session");
        return Err(failed("The answer from Salesforce does not belong to the sign-in you started (its security check did not match). Nothing was connected. Click Connect to start again."));
    }
    let started = pending["started_at"].as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.with_timezone(&Utc));
    if started.is_none_or(|t| web.now() - t > chrono::Duration::minutes(SIGN_IN_WINDOW_MINUTES)) {
        return Err(failed(format!("The sign-in took longer than {SIGN_IN_WINDOW_MINUTES} minutes and has expired. Nothing was connected. Click Connect to start again.")));
    }
    if let Some(error) = q.error.as_deref() {
        return Err(failed(if error == "access_denied" {
            "You denied access on the Salesforce page, so nothing was connected. Click Connect whenever you are ready.".to_string()
        } else {
            format!("Salesforce refused the sign-in ({}). Nothing was connected.", q.error_description.as_deref().unwrap_or(error))
        }));
    }
    let Some(code) = q.code.as_deref() else {
        return Err(failed("Salesforce came back without the authorization. Nothing was connected. Click Connect to try again."));
    };
    let redirect_uri = pending["redirect_uri"].as_str().unwrap_or_default();
    let reply = web
        .http
        .post(&app.token_url)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("client_id", app.client_id.as_str()),
            ("client_secret", app.client_secret.expose_secret()),
        ])
        .send()
        .await
        .map_err(|_| failed("Salesforce could not be reached to finish the sign-in. Nothing was connected. Try again."))?;
    let ok = reply.status().is_success();
    let body: Value = reply.json().await.unwrap_or(Value::Null);
    let text = |k: &str| body.get(k).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_string);
    let (true, Some(access), Some(refresh), Some(instance)) = (ok, text("access_token"), text("refresh_token"), text("instance_url")) else {
        tracing::warn!(error = ?text("error"), "Salesforce authorization code exchange failed");
        return Err(failed(format!(
            "Salesforce did not accept the sign-in when we asked for access ({}). Nothing was connected. Click Connect to try again.",
            text("error_description").unwrap_or_else(|| "no tokens came back".into())
        )));
    };
    let conn = NewConnection {
        name: connection_name(admin.workspace()),
        system: "salesforce".into(),
        config: json!({
            "instance_url": instance,
            "token_url": app.token_url,
            "revoke_url": app.revoke_url,
            "api_version": app.api_version,
            "client_id": app.client_id,
            "workspace": admin.workspace(),
        }),
        credentials: json!({"client_secret": app.client_secret.expose_secret(), "access_token": access, "refresh_token": refresh}),
    };
    // Read the org with the new tokens; a connection that cannot is not kept (its tokens are wiped again).
    let stored = web.engine.store.put_connection(&conn).await?;
    let org = match ledgerlink_engine::connections::build_connector(web.engine.store.clone(), &stored, web.http.clone()) {
        Ok(c) => c.test_connection().await.map_err(|e| failed(format!("We signed in, but could not read the org from Salesforce ({e}). Nothing was connected."))),
        Err(e) => Err(failed(format!("The Salesforce connection could not be set up ({e}). Nothing was connected."))),
    };
    let org = match org {
        Ok(org) => org,
        Err(e) => {
            web.engine.store.put_connection(&NewConnection { credentials: json!({}), ..conn }).await?;
            return Err(e);
        }
    };
    let mut conn = conn;
    conn.config["org_name"] = json!(org);
    let creds = web.engine.store.get_connection(&conn.name).await?.map(|c| c.credentials).unwrap_or(conn.credentials.clone());
    web.engine.store.put_connection(&NewConnection { credentials: creds, ..conn }).await?;
    tracing::info!(workspace = %admin.workspace(), "Salesforce connected");
    Ok(Redirect::to("/settings/integrations?salesforce=connected").into_response())
}

/// `POST /settings/integrations/salesforce/test`: one read-only call with the stored sign-in.
pub async fn test_connection(State(web): State<Web>, posted: Posted<NoFields>) -> UiResult {
    let admin = posted.admin;
    let message = match stored(&web, admin.workspace()).await? {
        None => "Salesforce is not connected: click Connect on its card first.".to_string(),
        Some(conn) => match ledgerlink_engine::connections::build_connector(web.engine.store.clone(), &conn, web.http.clone()) {
            Err(e) => format!("The Salesforce connection does not work: {e}."),
            Ok(c) => match c.test_connection().await {
                Ok(org) => format!("The Salesforce connection works: Salesforce accepted the sign-in and the org “{org}” can be read."),
                Err(e) => format!("The Salesforce connection does not work: {}. Disconnect and connect again to sign in anew.", crate::integrations::plain_reason(&e).replace("QuickBooks", "Salesforce")),
            },
        },
    };
    crate::integrations::integrations_page(&web, &admin, Some(message)).await
}

async fn stored(web: &Web, workspace: &str) -> Result<Option<ledgerlink_store::Connection>, UiError> {
    let conn = web.engine.store.get_connection(&connection_name(workspace)).await?;
    Ok(conn.filter(|c| c.credentials.get("refresh_token").and_then(Value::as_str).is_some_and(|t| !t.is_empty())))
}

#[derive(Template)]
#[template(path = "salesforce_disconnect.html")]
struct DisconnectPage {
    l: Layout,
    sf: SalesforceCard,
}

/// `GET /settings/integrations/salesforce/disconnect`: the confirmation.
pub async fn disconnect_confirm(State(web): State<Web>, admin: Admin) -> UiResult {
    let sf = card(&web, admin.workspace()).await?;
    if !sf.connected {
        return Ok(Redirect::to("/settings/integrations").into_response());
    }
    let l = Layout::new(&admin, web.config.banner.as_ref(), "Disconnect Salesforce", "integrations");
    Ok(render(StatusCode::OK, &DisconnectPage { l, sf }))
}

/// `POST /settings/integrations/salesforce/disconnect`: revokes at Salesforce, deletes the tokens here; records
/// in both systems stay.
pub async fn disconnect(State(web): State<Web>, posted: Posted<NoFields>) -> UiResult {
    let admin = posted.admin;
    let Some(conn) = stored(&web, admin.workspace()).await? else {
        return Ok(Redirect::to("/settings/integrations").into_response());
    };
    let token = conn.credentials.get("refresh_token").and_then(Value::as_str).unwrap_or_default().to_string();
    let revoke_url = conn.config.get("revoke_url").and_then(Value::as_str).unwrap_or_default().to_string();
    let revoked = match web.http.post(&revoke_url).form(&[("token", token.as_str())]).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("Salesforce answered the revocation with HTTP {}", r.status().as_u16())),
        Err(_) => Err("Salesforce could not be reached".to_string()),
    };
    web.engine
        .store
        .put_connection(&NewConnection { name: conn.name.clone(), system: conn.system.clone(), config: conn.config.clone(), credentials: json!({}) })
        .await?;
    tracing::info!(workspace = %admin.workspace(), revoked = revoked.is_ok(), "Salesforce disconnected");
    let message = match revoked {
        Ok(()) => "Salesforce is disconnected and its access revoked. All records stay where they are.".to_string(),
        Err(why) => format!(
            "Salesforce is disconnected here and the sign-in deleted, but Salesforce could not be told to revoke access ({why}). \
             To be sure, revoke ledgerlink under Connected Apps OAuth Usage in Salesforce Setup."
        ),
    };
    crate::integrations::integrations_page(&web, &admin, Some(message)).await
}
