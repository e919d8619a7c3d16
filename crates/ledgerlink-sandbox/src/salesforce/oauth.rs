//! The OAuth 2.0 token and revoke endpoints, shaped like Salesforce's.
//!
//! Layout: [`token`] serves `POST /services/oauth2/token` for the refresh-token, password and authorization-code
//! grants (client credentials in the form or as HTTP Basic); [`revoke`] ends a session; [`mint_access_token`] is
//! shared with startup. Refresh tokens are not rotated, as in a default Salesforce connected app. The response's
//! `signature` is the HMAC-SHA256 of `id + issued_at` keyed by the client secret, which is what Salesforce signs.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::App;
use super::error::OAuthError;
use super::state::{AccessToken, Org, RefreshToken, random_token};

/// A new access token in Salesforce's `{orgId15}!{opaque}` shape.
pub fn mint_access_token(
    org: &mut Org,
    user_id: &str,
    refresh_token: Option<&str>,
    expires_at: chrono::DateTime<chrono::Utc>,
) -> String {
    let token = format!("{}!{}", &org.org_id[..15], random_token(96));
    org.access_tokens.insert(
        token.clone(),
        AccessToken {
            user_id: user_id.to_string(),
            expires_at,
            refresh_token: refresh_token.map(str::to_string),
        },
    );
    token
}

pub fn mint_refresh_token(org: &mut Org, user_id: &str) -> String {
    let token = format!("5Aep861{}", random_token(80));
    org.refresh_tokens.insert(
        token.clone(),
        RefreshToken {
            user_id: user_id.to_string(),
        },
    );
    token
}

fn form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn field<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Client credentials from the form, or else from `Authorization: Basic`.
fn client_credentials(
    headers: &HeaderMap,
    form: &[(String, String)],
) -> (Option<String>, Option<String>) {
    let mut id = field(form, "client_id").map(str::to_string);
    let mut secret = field(form, "client_secret").map(str::to_string);
    if let Some(basic) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        && let Some((u, p)) = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                s.split_once(':')
                    .map(|(u, p)| (u.to_string(), p.to_string()))
            })
    {
        let decode = |s: &str| {
            urlencoding::decode(s)
                .map(|c| c.into_owned())
                .unwrap_or_else(|_| s.to_string())
        };
        id = id.or(Some(decode(&u)));
        secret = secret.or(Some(decode(&p)));
    }
    (id, secret)
}

fn check_client(org: &Org, id: Option<&str>, secret: Option<&str>) -> Result<(), OAuthError> {
    if id != Some(org.client_id.as_str()) {
        return Err(OAuthError::new(
            "invalid_client_id",
            "client identifier invalid",
        ));
    }
    if secret != Some(org.client_secret.as_str()) {
        return Err(OAuthError::new(
            "invalid_client",
            "invalid client credentials",
        ));
    }
    Ok(())
}

fn signature(secret: &str, id_url: &str, issued_at: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(id_url.as_bytes());
    mac.update(issued_at.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `POST /services/oauth2/token`.
pub async fn token(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    match grant(&app, &headers, &body) {
        Ok(v) => (StatusCode::OK, axum::Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

fn grant(app: &App, headers: &HeaderMap, body: &[u8]) -> Result<serde_json::Value, OAuthError> {
    let form = form(body);
    let now = app.clock.now();
    let mut org = app.lock();
    let grant_type = field(&form, "grant_type").unwrap_or_default();
    if !matches!(
        grant_type,
        "refresh_token" | "password" | "authorization_code"
    ) {
        return Err(OAuthError::new(
            "unsupported_grant_type",
            "grant type not supported",
        ));
    }
    let (id, secret) = client_credentials(headers, &form);
    check_client(&org, id.as_deref(), secret.as_deref())?;
    let (user_id, refresh_for_session, new_refresh) = match grant_type {
        "refresh_token" => {
            let rt = field(&form, "refresh_token")
                .unwrap_or_default()
                .to_string();
            let user = org
                .refresh_tokens
                .get(&rt)
                .map(|r| r.user_id.clone())
                .ok_or_else(OAuthError::invalid_grant_token)?;
            (user, Some(rt), None)
        }
        "password" => {
            let username = field(&form, "username").unwrap_or_default();
            let password = field(&form, "password").unwrap_or_default();
            if !username.eq_ignore_ascii_case(&org.username) || password != org.password {
                return Err(OAuthError::new("invalid_grant", "authentication failure"));
            }
            (org.api_user_id.clone(), None, None)
        }
        _ => {
            let code = field(&form, "code").unwrap_or_default();
            let grant = org
                .auth_codes
                .remove(code)
                .ok_or_else(|| OAuthError::new("invalid_grant", "invalid authorization code"))?;
            if grant.expires_at <= now {
                return Err(OAuthError::new(
                    "invalid_grant",
                    "expired authorization code",
                ));
            }
            if let Some(expected) = &grant.redirect_uri
                && field(&form, "redirect_uri") != Some(expected.as_str())
            {
                return Err(OAuthError::new(
                    "redirect_uri_mismatch",
                    "redirect_uri must match configuration",
                ));
            }
            let rt = mint_refresh_token(&mut org, &grant.user_id);
            (grant.user_id, Some(rt.clone()), Some(rt))
        }
    };
    let access = mint_access_token(
        &mut org,
        &user_id,
        refresh_for_session.as_deref(),
        now + app.access_token_ttl,
    );
    let id_url = format!("{}/id/{}/{}", app.base_url, org.org_id, user_id);
    let issued_at = now.timestamp_millis().to_string();
    let mut out = json!({
        "access_token": access,
        "signature": signature(&org.client_secret, &id_url, &issued_at),
        "scope": "api refresh_token",
        "instance_url": app.base_url,
        "id": id_url,
        "token_type": "Bearer",
        "issued_at": issued_at,
    });
    if let Some(rt) = new_refresh {
        out["refresh_token"] = json!(rt);
    }
    app.persist(&org);
    Ok(out)
}

/// `POST /services/oauth2/revoke` (form `token=`) or `GET …?token=`.
pub async fn revoke(
    State(app): State<Arc<App>>,
    Query(query): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    let form = form(&body);
    let token = field(&form, "token")
        .or_else(|| field(&query, "token"))
        .unwrap_or_default()
        .to_string();
    let mut org = app.lock();
    let found = if org.access_tokens.remove(&token).is_some() {
        true
    } else if org.refresh_tokens.remove(&token).is_some() {
        org.access_tokens
            .retain(|_, a| a.refresh_token.as_deref() != Some(token.as_str()));
        true
    } else {
        false
    };
    if !found {
        return OAuthError::new("invalid_token", "invalid token").into_response();
    }
    app.persist(&org);
    StatusCode::OK.into_response()
}
