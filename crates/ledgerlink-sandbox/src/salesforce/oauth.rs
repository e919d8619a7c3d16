//! The OAuth 2.0 token and revoke endpoints, shaped like Salesforce's.
//!
//! Layout: [`token`] serves `POST /services/oauth2/token` for the refresh-token, password, authorization-code and JWT
//! bearer grants (client credentials in the form or as HTTP Basic); [`authorize_page`] and [`authorize_decision`]
//! are the browser sign-in and approval of the web-server flow (plain server-rendered HTML, redirecting with `code`
//! and `state`, or `error=access_denied`); [`revoke`] ends a session; [`mint_access_token`] is shared with startup.
//! Refresh tokens are not rotated, as in a default Salesforce connected app. The response's `signature` is the
//! HMAC-SHA256 of `id + issued_at` keyed by the client secret, which is what Salesforce signs.
//!
//! A JWT bearer assertion is checked as Salesforce does: RS256 signed by the key of a certificate registered for the
//! connected app (`POST /sandbox/admin/connected-app/certificate`), `iss` the consumer key, `sub` a user's username,
//! `aud` this sandbox's URL or `https://login.salesforce.com` / `https://test.salesforce.com`, `exp` in the future by
//! the sandbox clock. The grant issues no refresh token.

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
use super::state::{AccessToken, AuthCode, Org, RefreshToken, random_token};
use super::value::FieldValue;

/// The grant type of the JWT bearer flow.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

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
        "refresh_token" | "password" | "authorization_code" | JWT_BEARER
    ) {
        return Err(OAuthError::new(
            "unsupported_grant_type",
            "grant type not supported",
        ));
    }
    if grant_type != JWT_BEARER {
        let (id, secret) = client_credentials(headers, &form);
        check_client(&org, id.as_deref(), secret.as_deref())?;
    }
    let (user_id, refresh_for_session, new_refresh) = match grant_type {
        JWT_BEARER => {
            let assertion = field(&form, "assertion").unwrap_or_default();
            let user = check_assertion(app, &org, assertion, now)?;
            (user, None, None)
        }
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

fn b64url(part: &str, what: &str) -> Result<Vec<u8>, OAuthError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| {
            OAuthError::new(
                "invalid_grant",
                &format!("invalid assertion: the {what} is not base64url"),
            )
        })
}

/// Verifies an RS256 signature with a registered PEM: an X.509 certificate or a bare public key.
fn signature_matches(pem: &str, message: &[u8], signature: &[u8]) -> bool {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, SubjectPublicKeyInfoDer};
    let alg = webpki::ring::RSA_PKCS1_2048_8192_SHA256;
    if let Ok(cert) = CertificateDer::from_pem_slice(pem.as_bytes()) {
        return webpki::EndEntityCert::try_from(&cert)
            .is_ok_and(|ee| ee.verify_signature(alg, message, signature).is_ok());
    }
    if let Ok(spki) = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes()) {
        return webpki::RawPublicKeyEntity::try_from(&spki)
            .is_ok_and(|k| k.verify_signature(alg, message, signature).is_ok());
    }
    false
}

/// Checks a JWT bearer assertion and returns the id of the user it names.
fn check_assertion(
    app: &App,
    org: &Org,
    assertion: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String, OAuthError> {
    let invalid =
        |why: &str| OAuthError::new("invalid_grant", &format!("invalid assertion: {why}"));
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return Err(invalid(
            "expected three dot-separated parts (header.claims.signature)",
        ));
    };
    let header: serde_json::Value = serde_json::from_slice(&b64url(header, "header")?)
        .map_err(|_| invalid("the header is not JSON"))?;
    if header["alg"] != "RS256" {
        return Err(invalid(&format!(
            "alg must be RS256, got {}",
            header["alg"]
        )));
    }
    let claims: serde_json::Value = serde_json::from_slice(&b64url(claims, "claim set")?)
        .map_err(|_| invalid("the claim set is not JSON"))?;
    let signature = b64url(signature, "signature")?;
    if org.connected_app_certificates.is_empty() {
        return Err(invalid(
            "no certificate is registered for the connected app (POST /sandbox/admin/connected-app/certificate)",
        ));
    }
    let signed = &assertion[..assertion.rfind('.').unwrap_or(0)];
    if !org
        .connected_app_certificates
        .iter()
        .any(|pem| signature_matches(pem, signed.as_bytes(), &signature))
    {
        return Err(invalid(
            "the signature does not verify with the connected app's certificate",
        ));
    }
    if claims["iss"].as_str() != Some(org.client_id.as_str()) {
        return Err(OAuthError::new(
            "invalid_client_id",
            "client identifier invalid",
        ));
    }
    let aud_ok = |a: &str| {
        let a = a.trim_end_matches('/');
        a == app.base_url
            || a == "https://login.salesforce.com"
            || a == "https://test.salesforce.com"
    };
    let aud_matches = match &claims["aud"] {
        serde_json::Value::String(a) => aud_ok(a),
        serde_json::Value::Array(list) => list.iter().filter_map(|a| a.as_str()).any(aud_ok),
        _ => false,
    };
    if !aud_matches {
        return Err(OAuthError::new("invalid_grant", "audience is invalid"));
    }
    match claims["exp"].as_i64() {
        Some(exp) if exp > now.timestamp() => {}
        Some(_) => {
            return Err(OAuthError::new(
                "invalid_grant",
                "expired authorization code",
            ));
        }
        None => return Err(invalid("the claim set has no numeric exp")),
    }
    let sub = claims["sub"].as_str().unwrap_or_default();
    org.all("User")
        .find(|u| {
            u.get("Username")
                .and_then(FieldValue::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case(sub))
                && u.get("IsActive").and_then(FieldValue::as_bool) == Some(true)
        })
        .and_then(|u| u.get("Id").and_then(FieldValue::as_str).map(str::to_string))
        .ok_or_else(|| OAuthError::new("invalid_grant", "user hasn't approved this consumer"))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn html_page(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n<body style=\"font-family:sans-serif;max-width:28em;margin:3em auto\">\n<h1>{title}</h1>\n{body}\n</body></html>\n"
    );
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page,
    )
        .into_response()
}

/// Appends query parameters to a redirect URI that may already carry some.
fn redirect_with(redirect_uri: &str, params: &[(&str, &str)]) -> Response {
    let mut url = redirect_uri.to_string();
    let mut sep = if url.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        url.push(sep);
        url.push_str(k);
        url.push('=');
        url.push_str(&urlencoding::encode(v));
        sep = '&';
    }
    (StatusCode::FOUND, [(axum::http::header::LOCATION, url)]).into_response()
}

/// Checks the parameters both authorize steps share; an error page when the client or redirect is unusable
/// (never redirect to a URI that was not vouched for).
fn authorize_params(
    org: &Org,
    params: &[(String, String)],
) -> Result<(String, String), Box<Response>> {
    let client_id = field(params, "client_id").unwrap_or_default();
    if client_id != org.client_id {
        return Err(Box::new(html_page(
            StatusCode::BAD_REQUEST,
            "error=invalid_client_id",
            "<p>client identifier invalid: the <code>client_id</code> is not this org's connected app.</p>",
        )));
    }
    let redirect_uri = field(params, "redirect_uri").unwrap_or_default();
    if url::Url::parse(redirect_uri).is_err() {
        return Err(Box::new(html_page(
            StatusCode::BAD_REQUEST,
            "error=redirect_uri_mismatch",
            "<p><code>redirect_uri</code> is missing or not an absolute URL.</p>",
        )));
    }
    Ok((
        redirect_uri.to_string(),
        field(params, "state").unwrap_or_default().to_string(),
    ))
}

fn sign_in_form(org: &Org, params: &[(String, String)], message: Option<&str>) -> Response {
    let hidden: String = [
        "response_type",
        "client_id",
        "redirect_uri",
        "state",
        "scope",
    ]
    .iter()
    .filter_map(|k| field(params, k).map(|v| (k, v)))
    .map(|(k, v)| {
        format!(
            "<input type=\"hidden\" name=\"{k}\" value=\"{}\">\n",
            html_escape(v)
        )
    })
    .collect();
    let message = message
        .map(|m| {
            format!(
                "<p role=\"alert\" style=\"color:#b00\">{}</p>\n",
                html_escape(m)
            )
        })
        .unwrap_or_default();
    let body = format!(
        "{message}<p>Sign in to the Northwind sandbox org and allow the connected app to access your data.</p>\n\
         <p><small>Sandbox credentials: <code>{user}</code> / <code>{pass}</code></small></p>\n\
         <form method=\"post\" action=\"/services/oauth2/authorize\">\n{hidden}\
         <p><label>Username <input name=\"username\" value=\"{user}\"></label></p>\n\
         <p><label>Password <input name=\"password\" type=\"password\"></label></p>\n\
         <p><button name=\"decision\" value=\"allow\">Allow</button> <button name=\"decision\" value=\"deny\">Deny</button></p>\n\
         </form>",
        user = html_escape(&org.username),
        pass = html_escape(&org.password),
    );
    html_page(StatusCode::OK, "Allow Access?", &body)
}

/// `GET /services/oauth2/authorize?response_type=code&client_id=…&redirect_uri=…&state=…`: the sign-in page.
pub async fn authorize_page(
    State(app): State<Arc<App>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let org = app.lock();
    let (redirect_uri, state) = match authorize_params(&org, &params) {
        Ok(p) => p,
        Err(page) => return *page,
    };
    if field(&params, "response_type") != Some("code") {
        return redirect_with(
            &redirect_uri,
            &[
                ("error", "unsupported_response_type"),
                ("error_description", "response type not supported"),
                ("state", &state),
            ],
        );
    }
    sign_in_form(&org, &params, None)
}

/// `POST /services/oauth2/authorize`: the user's decision; redirects with a one-time `code` or `access_denied`.
pub async fn authorize_decision(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let params = form(&body);
    let mut org = app.lock();
    let (redirect_uri, state) = match authorize_params(&org, &params) {
        Ok(p) => p,
        Err(page) => return *page,
    };
    if field(&params, "decision") != Some("allow") {
        return redirect_with(
            &redirect_uri,
            &[
                ("error", "access_denied"),
                ("error_description", "end-user denied authorization"),
                ("state", &state),
            ],
        );
    }
    let username = field(&params, "username").unwrap_or_default();
    let password = field(&params, "password").unwrap_or_default();
    if !username.eq_ignore_ascii_case(&org.username) || password != org.password {
        return sign_in_form(
            &org,
            &params,
            Some("Please check your username and password."),
        );
    }
    let code = format!("aPrx{}", random_token(60));
    let user_id = org.api_user_id.clone();
    org.auth_codes.insert(
        code.clone(),
        AuthCode {
            user_id,
            redirect_uri: Some(redirect_uri.clone()),
            expires_at: app.clock.now() + chrono::Duration::minutes(15),
        },
    );
    app.persist(&org);
    redirect_with(&redirect_uri, &[("code", &code), ("state", &state)])
}
