//! Settings > Integrations: the QuickBooks and Salesforce cards, QuickBooks' OAuth connect flow, Test
//! Connection, and Disconnect behind a confirmation (the Manage page itself is [`crate::manage`]).
//!
//! The connect flow, as the host platform's help page describes it: **Connect** (a POST, so it carries the CSRF
//! token) stores a fresh `state` in the session and sends the browser to QuickBooks' consent page; the person
//! signs in, picks a company and approves; QuickBooks sends the browser back to `/oauth/quickbooks/callback` with
//! `code`, `state` and `realmId`. The callback checks `state` against the session (one use only), exchanges the
//! code for tokens, reads the company's name with them, and only then stores the connection, its secrets sealed.
//! Each way this can fail (cancelled, a `state` that does not match, a code QuickBooks will not exchange, a
//! company that cannot be read) gets its own sentence, and nothing is stored.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use chrono::{DateTime, Utc};
use ledgerlink_connectors::ConnectorError;
use ledgerlink_connectors::auth::{ClientAuth, MemoryTokenStore, RefreshConfig};
use ledgerlink_connectors::quickbooks::{QuickbooksConfig, QuickbooksConnector};
use ledgerlink_model::QboRealmId;
use ledgerlink_platform::{ConnectionState, PlatformError};
use serde::Deserialize;
use serde_json::json;

use crate::pages::{Layout, UiError, UiResult, render};
use crate::session::{Admin, NoFields, Posted, new_nonce, same_secret, set_pending};
use crate::manage::{TestOutcome, manage_page};
use crate::salesforce::SalesforceCard;
use crate::{QuickbooksApp, Web};

/// The scope QuickBooks is asked for: the accounting API (customers, invoices, expenses, accounts).
const SCOPE: &str = "com.intuit.quickbooks.accounting";
/// How long a started sign-in stays valid.
const SIGN_IN_WINDOW_MINUTES: i64 = 15;

/// What the QuickBooks card shows.
#[derive(Debug, Clone)]
pub struct QuickbooksCard {
    pub connected: bool,
    /// Connected once, disconnected since: data kept, Connect resumes.
    pub paused: bool,
    pub company: Option<String>,
    pub realm_id: Option<String>,
    pub connected_at: Option<String>,
    /// Whether a Connect button can work (an app is configured).
    pub can_connect: bool,
}


/// A platform error as a page: invalid input names the setting; the rest is said plainly.
pub fn platform_error(e: PlatformError) -> UiError {
    match e {
        PlatformError::Invalid { field, message } => UiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Please check the settings", format!("{field}: {message}")),
        PlatformError::NotConnected => UiError::new(StatusCode::CONFLICT, "QuickBooks is not connected", "Connect QuickBooks first (the Connect button on its card)."),
        PlatformError::QuickBooks(m) => UiError::new(StatusCode::BAD_GATEWAY, "QuickBooks did not answer as expected", m),
        PlatformError::NotFound { what, id } => UiError::not_found(&format!("The {what} {id}")),
        PlatformError::Store(s) => s.into(),
        other => {
            tracing::error!(error = %other, "platform error in the web UI");
            UiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong", "Nothing was changed. Try again; if it keeps happening, tell your administrator.")
        }
    }
}


pub(crate) async fn quickbooks_card(web: &Web, workspace: &str) -> Result<QuickbooksCard, UiError> {
    let st = web.platform.status(workspace).await.map_err(platform_error)?;
    Ok(QuickbooksCard {
        connected: st.state == ConnectionState::Connected,
        paused: st.state == ConnectionState::Disconnected,
        company: st.company_name,
        realm_id: st.realm_id,
        connected_at: st.connected_at.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string()),
        can_connect: web.config.quickbooks.is_some(),
    })
}

#[derive(Template)]
#[template(path = "integrations.html")]
struct IntegrationsPage {
    l: Layout,
    qb: QuickbooksCard,
    sf: SalesforceCard,
    flash: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct IndexQuery {
    connected: Option<String>,
    disconnected: Option<String>,
    salesforce: Option<String>,
}

/// `GET /settings/integrations`.
pub async fn index(State(web): State<Web>, admin: Admin, Query(q): Query<IndexQuery>) -> UiResult {
    let qb = quickbooks_card(&web, admin.workspace()).await?;
    let sf = crate::salesforce::card(&web, admin.workspace()).await?;
    let flash = if q.connected.is_some() {
        qb.company.as_ref().map(|c| format!("QuickBooks is connected to {c}."))
    } else if q.salesforce.as_deref() == Some("connected") {
        sf.org.as_ref().map(|o| format!("Salesforce is connected to {o}."))
    } else if q.disconnected.is_some() {
        Some(
            "QuickBooks is disconnected and its access revoked. Nothing syncs until you connect again; all data \
             stays where it is."
                .into(),
        )
    } else {
        None
    };
    let l = Layout::new(&admin, web.config.banner.as_ref(), "Integrations", "integrations");
    Ok(render(StatusCode::OK, &IntegrationsPage { l, qb, sf, flash }))
}

/// The Integrations page with a message of the moment.
pub(crate) async fn integrations_page(web: &Web, admin: &Admin, flash: Option<String>) -> UiResult {
    let qb = quickbooks_card(web, admin.workspace()).await?;
    let sf = crate::salesforce::card(web, admin.workspace()).await?;
    let l = Layout::new(admin, web.config.banner.as_ref(), "Integrations", "integrations");
    Ok(render(StatusCode::OK, &IntegrationsPage { l, qb, sf, flash }))
}

/// This server's base URL as the browser sees it.
pub(crate) fn public_base(web: &Web, headers: &HeaderMap) -> Result<String, UiError> {
    if let Some(u) = &web.config.public_url {
        return Ok(u.trim_end_matches('/').to_string());
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).filter(|h| !h.is_empty()).ok_or_else(|| {
        UiError::new(StatusCode::BAD_REQUEST, "Cannot start the sign-in", "The request did not say which address it was sent to.")
    })?;
    Ok(format!("http://{host}"))
}

fn app(web: &Web) -> Result<&QuickbooksApp, UiError> {
    web.config.quickbooks.as_ref().ok_or_else(|| {
        UiError::new(
            StatusCode::CONFLICT,
            "QuickBooks is not set up on this server",
            "No QuickBooks app is configured, so there is nothing to connect through. Ask your administrator to add one.",
        )
    })
}

/// `POST /settings/integrations/quickbooks/connect`: remember a fresh `state`, go to QuickBooks.
pub async fn connect(State(web): State<Web>, headers: HeaderMap, posted: Posted<NoFields>) -> UiResult {
    let app = app(&web)?;
    let redirect_uri = format!("{}/oauth/quickbooks/callback", public_base(&web, &headers)?);
    let state = new_nonce();
    let pending = json!({
        "system": "quickbooks",
        "oauth_state": state,
        "redirect_uri": redirect_uri,
        "started_at": web.now().to_rfc3339(),
    });
    set_pending(&web, &posted.admin, Some(&pending)).await?;
    let mut to = url::Url::parse(&app.authorize_url).map_err(|e| {
        tracing::error!(error = %e, "the QuickBooks authorize URL is not a URL");
        UiError::new(StatusCode::INTERNAL_SERVER_ERROR, "QuickBooks is not set up correctly", "The sign-in address configured for QuickBooks is not valid. Tell your administrator.")
    })?;
    to.query_pairs_mut()
        .append_pair("client_id", &app.client_id)
        .append_pair("response_type", "code")
        .append_pair("scope", SCOPE)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("state", &state);
    Ok(Redirect::to(to.as_str()).into_response())
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    #[serde(rename = "realmId")]
    realm_id: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn sign_in_failed(message: impl Into<String>) -> UiError {
    UiError::new(StatusCode::BAD_REQUEST, "QuickBooks was not connected", message)
}

/// `GET /oauth/quickbooks/callback`.
pub async fn callback(State(web): State<Web>, admin: Admin, Query(q): Query<CallbackQuery>) -> UiResult {
    let app = app(&web)?;
    // The state is used once, whatever happens next.
    let pending = admin.session.pending.clone().filter(|p| p["system"] == "quickbooks");
    set_pending(&web, &admin, None).await?;
    let Some(pending) = pending else {
        return Err(sign_in_failed(
            "This QuickBooks sign-in was not started from this browser session (or it was already used). Nothing \
             was connected. Click Connect to start again.",
        ));
    };
    let expected = pending["oauth_state"].as_str().unwrap_or_default();
    if !q.state.as_deref().is_some_and(|s| same_secret(s, expected)) {
        tracing::warn!(user = %admin.email(), "QuickBooks callback with a state that does not match the session");
        return Err(sign_in_failed(
            "The answer from QuickBooks does not belong to the sign-in you started (its security check did not \
             match). Nothing was connected. Click Connect to start again.",
        ));
    }
    let started = pending["started_at"].as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.with_timezone(&Utc));
    if started.is_none_or(|t| web.now() - t > chrono::Duration::minutes(SIGN_IN_WINDOW_MINUTES)) {
        return Err(sign_in_failed(format!(
            "The sign-in took longer than {SIGN_IN_WINDOW_MINUTES} minutes and has expired. Nothing was connected. Click Connect to start again."
        )));
    }
    if let Some(error) = q.error.as_deref() {
        let message = if error == "access_denied" {
            "You cancelled on the QuickBooks page, so access was not granted. Nothing was connected. Click Connect \
             whenever you are ready."
                .to_string()
        } else {
            format!(
                "QuickBooks refused the sign-in ({}). Nothing was connected.",
                q.error_description.as_deref().unwrap_or(error)
            )
        };
        return Err(sign_in_failed(message));
    }
    let (Some(code), Some(realm)) = (q.code.as_deref(), q.realm_id.as_deref()) else {
        return Err(sign_in_failed("QuickBooks came back without the company or the authorization. Nothing was connected. Click Connect to try again."));
    };
    let realm = QboRealmId::parse(realm).map_err(|_| sign_in_failed(format!("QuickBooks named a company id ({realm}) that is not valid. Nothing was connected.")))?;
    let redirect_uri = pending["redirect_uri"].as_str().unwrap_or_default();
    let refresh = RefreshConfig {
        token_url: app.token_url.clone(),
        client_id: app.client_id.clone(),
        client_secret: app.client_secret.clone(),
        client_auth: ClientAuth::Basic,
    };
    let tokens = refresh.exchange_code(&web.http, code, redirect_uri).await.map_err(|e| {
        tracing::warn!(error = %e, "QuickBooks authorization code exchange failed");
        sign_in_failed(format!(
            "QuickBooks did not accept the sign-in when we asked for access ({}). Nothing was connected. Click \
             Connect to try again.",
            plain_reason(&e)
        ))
    })?;
    // Read the company with the new tokens before storing anything: a connection is kept only once it works.
    let probe = QuickbooksConnector::new(
        QuickbooksConfig {
            api_base: app.api_base.clone(),
            token_url: app.token_url.clone(),
            realm_id: realm.clone(),
            client_id: app.client_id.clone(),
            client_secret: app.client_secret.clone(),
            minor_version: 75,
        },
        Arc::new(MemoryTokenStore::new(tokens.clone())),
        web.http.clone(),
    );
    let company = probe.company_name().await.map_err(|e| {
        tracing::warn!(error = %e, "QuickBooks company could not be read after connecting");
        sign_in_failed(format!("We signed in, but could not read the company from QuickBooks ({}). Nothing was connected.", plain_reason(&e)))
    })?;
    let conn = ledgerlink_platform::integration::new_connection(admin.workspace(), realm.as_str(), &company, &app.keys(), &tokens);
    web.engine.store.put_connection(&conn).await?;
    web.platform.connect(admin.workspace(), &conn.name, &company, realm.as_str()).await.map_err(platform_error)?;
    tracing::info!(workspace = %admin.workspace(), realm = %realm.as_str(), "QuickBooks connected");
    Ok(Redirect::to("/settings/integrations?connected=1").into_response())
}

/// A connector error in a finance admin's words (no tokens, no stack).
pub fn plain_reason(e: &ConnectorError) -> String {
    match e {
        ConnectorError::Unauthorized { .. } => "QuickBooks no longer accepts our sign-in: it was revoked, has expired or was already used".into(),
        ConnectorError::RateLimited { .. } | ConnectorError::BudgetExhausted { .. } => {
            "QuickBooks asked us to slow down; try again in a minute".into()
        }
        ConnectorError::Transient { .. } => "QuickBooks could not be reached or did not answer in time".into(),
        ConnectorError::NotFound { .. } => "QuickBooks says the company does not exist or we may not see it".into(),
        ConnectorError::Validation { message, .. } | ConnectorError::Conflict { message } => format!("QuickBooks said: {message}"),
    }
}

/// `POST /settings/integrations/quickbooks/test`: one read-only call (CompanyInfo) with the stored credentials.
pub async fn test_connection(State(web): State<Web>, posted: Posted<NoFields>) -> UiResult {
    let admin = posted.admin;
    let r = web.platform.test_connection(admin.workspace()).await.map_err(platform_error)?;
    let outcome = TestOutcome {
        ok: r.ok,
        headline: match (&r.ok, &r.company_name) {
            (true, Some(c)) => format!("The connection works: QuickBooks company “{c}”."),
            (true, None) => "The connection works.".into(),
            (false, _) => "The connection does not work.".into(),
        },
        checks: r.checks.into_iter().map(|c| (c.message, c.ok)).collect(),
        advice: Some(r.message),
    };
    manage_page(&web, &admin, Some(outcome), None).await
}

#[derive(Template)]
#[template(path = "disconnect.html")]
struct DisconnectPage {
    l: Layout,
    qb: QuickbooksCard,
}

/// `GET /settings/integrations/quickbooks/disconnect`: the confirmation.
pub async fn disconnect_confirm(State(web): State<Web>, admin: Admin) -> UiResult {
    let qb = quickbooks_card(&web, admin.workspace()).await?;
    if !qb.connected {
        return Ok(Redirect::to("/settings/integrations").into_response());
    }
    let l = Layout::new(&admin, web.config.banner.as_ref(), "Disconnect QuickBooks", "integrations");
    Ok(render(StatusCode::OK, &DisconnectPage { l, qb }))
}

/// `POST /settings/integrations/quickbooks/disconnect`: stops syncing both ways, revokes the grant at QuickBooks
/// and deletes the tokens here; every record on both sides and the links between them stay, so connecting again
/// (a new sign-in) resumes. When QuickBooks could not be told, the page says so and what to do instead.
pub async fn disconnect(State(web): State<Web>, posted: Posted<NoFields>) -> UiResult {
    let admin = posted.admin;
    let done = web.platform.disconnect(admin.workspace()).await.map_err(platform_error)?;
    tracing::info!(workspace = %admin.workspace(), revoked = done.revoked, "QuickBooks disconnected");
    match done.revoke_error {
        None => Ok(Redirect::to("/settings/integrations?disconnected=1").into_response()),
        Some(why) => {
            let flash = format!(
                "QuickBooks is disconnected here: nothing syncs and the sign-in is deleted, all data stays where it is. \
                 But QuickBooks could not be told to revoke ledgerlink's access ({why}). To be sure, remove ledgerlink \
                 from the connected apps in your Intuit account."
            );
            integrations_page(&web, &admin, Some(flash)).await
        }
    }
}
