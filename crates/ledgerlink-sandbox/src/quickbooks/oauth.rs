//! Intuit's OAuth 2.0 endpoints and bearer-token checks.
//!
//! Layout: [`discovery`] serves the OpenID discovery document pointing at this sandbox; [`token`] implements the
//! bearer endpoint (authorization-code exchange and rotating refresh); [`revoke`] ends a grant and records it
//! (`GET /sandbox/admin/revocations` lists them, tokens as SHA-256 fingerprints only); [`authenticate`]
//! checks the `Authorization: Bearer` header of API calls. Tokens are opaque random strings recorded in the
//! [`TokenBook`]; every token pair belongs to a grant so revoking one token ends the whole connection, as with
//! Intuit.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use super::Shared;
use super::fault::authentication_failed;
use super::state::{
    AccessToken, AuthorizationCode, RefreshToken, Revocation, SandboxState, TokenBook, random_alnum,
};

/// Lifetime of a refresh token (what Intuit announces in `x_refresh_token_expires_in`).
pub const REFRESH_TOKEN_TTL_SECONDS: i64 = 8_726_400;
/// How long a refresh token keeps working after a newer one was issued.
pub const SUPERSEDED_GRACE_HOURS: i64 = 24;
/// How long an authorization code can be exchanged.
pub const AUTHORIZATION_CODE_TTL_SECONDS: i64 = 600;

/// A freshly issued token pair.
pub struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: String,
}

/// Issues a new access/refresh pair for `grant` (a new grant when `None`).
pub fn issue(
    book: &mut TokenBook,
    realm_id: &str,
    grant: Option<String>,
    now: DateTime<Utc>,
    ttl: Duration,
) -> IssuedTokens {
    let grant = grant.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let access_token = format!(
        "eyJlbmMiOiJBMTI4Q0JDLUhTMjU2IiwiYWxnIjoiZGlyIn0..{}",
        random_alnum(96)
    );
    let refresh_token = format!("AB11{}{}", now.timestamp(), random_alnum(37));
    book.access.insert(
        access_token.clone(),
        AccessToken {
            realm_id: realm_id.to_string(),
            grant: grant.clone(),
            expires_at: now + ttl,
        },
    );
    book.refresh.insert(
        refresh_token.clone(),
        RefreshToken {
            realm_id: realm_id.to_string(),
            grant,
            expires_at: now + Duration::seconds(REFRESH_TOKEN_TTL_SECONDS),
            superseded_at: None,
        },
    );
    IssuedTokens {
        access_token,
        refresh_token,
    }
}

/// Whether a refresh token can still be exchanged at `now`.
pub fn refresh_usable(token: &RefreshToken, now: DateTime<Utc>) -> bool {
    now < token.expires_at
        && token
            .superseded_at
            .is_none_or(|at| now < at + Duration::hours(SUPERSEDED_GRACE_HOURS))
}

/// Makes sure the pair announced at startup works: reuses the saved one while valid, otherwise issues a new grant.
pub fn ensure_initial_tokens(st: &mut SandboxState, now: DateTime<Utc>, ttl: Duration) {
    let book = &st.tokens;
    let access_ok = book
        .access
        .get(&book.initial_access)
        .is_some_and(|t| now < t.expires_at);
    let refresh_ok = book
        .refresh
        .get(&book.initial_refresh)
        .is_some_and(|t| t.superseded_at.is_none() && refresh_usable(t, now));
    if access_ok && refresh_ok {
        return;
    }
    let realm = st.credentials.realm_id.clone();
    let issued = issue(&mut st.tokens, &realm, None, now, ttl);
    st.tokens.initial_access = issued.access_token;
    st.tokens.initial_refresh = issued.refresh_token;
}

/// Drops tokens that can never work again, so the state file does not grow without bound.
fn prune(book: &mut TokenBook, now: DateTime<Utc>) {
    let keep_access = book.initial_access.clone();
    book.access.retain(|k, t| {
        *k == keep_access || now < t.expires_at + Duration::hours(SUPERSEDED_GRACE_HOURS)
    });
    book.refresh.retain(|_, t| refresh_usable(t, now));
    book.codes.retain(|_, c| now < c.expires_at);
}

/// `GET /.well-known/openid_configuration` (and the sandbox variant).
pub async fn discovery(State(app): State<Arc<Shared>>) -> Response {
    let base = &app.base_url;
    axum::Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/connect/oauth2"),
        "token_endpoint": format!("{base}/oauth2/v1/tokens/bearer"),
        "userinfo_endpoint": format!("{base}/v1/openid_connect/userinfo"),
        "revocation_endpoint": format!("{base}/oauth2/v1/tokens/revoke"),
        "jwks_uri": format!("{base}/oauth2/v1/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile", "address", "phone", "com.intuit.quickbooks.accounting", "com.intuit.quickbooks.payment"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "claims_supported": ["aud", "exp", "iat", "iss", "realmid", "sub"],
    }))
    .into_response()
}

/// `GET /oauth2/v1/jwks`: no signed ID tokens are issued yet, so the key set is empty.
pub async fn jwks() -> Response {
    axum::Json(json!({"keys": []})).into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut r = (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

/// The client credentials from `Authorization: Basic …` or, failing that, the form.
fn client_credentials(headers: &HeaderMap, form: &[(String, String)]) -> Option<(String, String)> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some((scheme, encoded)) = value.trim().split_once(' ')
        && scheme.eq_ignore_ascii_case("basic")
    {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (id, secret) = decoded.split_once(':')?;
        return Some((id.to_string(), secret.to_string()));
    }
    let get = |k: &str| {
        form.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    Some((get("client_id")?, get("client_secret")?))
}

fn client_ok(app: &SandboxState, headers: &HeaderMap, form: &[(String, String)]) -> bool {
    client_credentials(headers, form).is_some_and(|(id, secret)| {
        id == app.credentials.client_id && secret == app.credentials.client_secret
    })
}

fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// `POST /oauth2/v1/tokens/bearer`.
pub async fn token(State(app): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = form_pairs(&body);
    let get = |k: &str| {
        form.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let now = app.clock.now();
    let ttl = app.access_token_ttl;
    let mut st = app.state.lock().await;
    if !client_ok(&st, &headers, &form) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed",
        );
    }
    prune(&mut st.tokens, now);
    let issued = match get("grant_type") {
        Some("refresh_token") => {
            let Some(presented) = get("refresh_token") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "refresh_token is required",
                );
            };
            let Some(record) = st
                .tokens
                .refresh
                .get(presented)
                .cloned()
                .filter(|t| refresh_usable(t, now))
            else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "Incorrect or invalid refresh token",
                );
            };
            // Every earlier refresh token of the connection now counts down its 24 h of grace.
            for old in st
                .tokens
                .refresh
                .values_mut()
                .filter(|t| t.grant == record.grant)
            {
                old.superseded_at.get_or_insert(now);
            }
            issue(
                &mut st.tokens,
                &record.realm_id,
                Some(record.grant),
                now,
                ttl,
            )
        }
        Some("authorization_code") => {
            let Some(code) = get("code") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "code is required",
                );
            };
            let Some(record) = st.tokens.codes.remove(code).filter(|c| now < c.expires_at) else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Token invalid");
            };
            if let Some(expected) = &record.redirect_uri
                && get("redirect_uri") != Some(expected.as_str())
            {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "redirect_uri does not match the authorization request",
                );
            }
            issue(&mut st.tokens, &record.realm_id, None, now, ttl)
        }
        Some(other) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!(
                    "grant_type {other} is not supported (use authorization_code or refresh_token)"
                ),
            );
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is required",
            );
        }
    };
    app.persist(&mut st).await;
    let mut r = axum::Json(json!({
        "access_token": issued.access_token,
        "refresh_token": issued.refresh_token,
        "token_type": "bearer",
        "expires_in": ttl.num_seconds(),
        "x_refresh_token_expires_in": REFRESH_TOKEN_TTL_SECONDS,
    }))
    .into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

/// `POST /oauth2/v1/tokens/revoke` with `{"token":"…"}` (JSON or form): ends the grant the token belongs to.
pub async fn revoke(State(app): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = form_pairs(&body);
    let token = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("token").and_then(Value::as_str).map(str::to_string))
        .or_else(|| {
            form.iter()
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.clone())
        });
    let mut st = app.state.lock().await;
    if !client_ok(&st, &headers, &form) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed",
        );
    }
    let Some(token) = token else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token is required",
        );
    };
    let grant = st
        .tokens
        .access
        .get(&token)
        .map(|t| (t.grant.clone(), t.realm_id.clone()))
        .or_else(|| st.tokens.refresh.get(&token).map(|t| (t.grant.clone(), t.realm_id.clone())));
    if let Some((grant, realm_id)) = grant {
        let refresh_tokens_sha256 = st
            .tokens
            .refresh
            .iter()
            .filter(|(_, t)| t.grant == grant)
            .map(|(k, _)| fingerprint(k))
            .collect();
        st.tokens.access.retain(|_, t| t.grant != grant);
        st.tokens.refresh.retain(|_, t| t.grant != grant);
        st.tokens.revocations.push(Revocation {
            at: app.clock.now(),
            realm_id,
            grant,
            token_sha256: fingerprint(&token),
            refresh_tokens_sha256,
        });
        app.persist(&mut st).await;
    }
    StatusCode::OK.into_response()
}

/// SHA-256 of a token, hex: how revocations name tokens without keeping them.
pub fn fingerprint(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Mints an authorization code for `realm` (the first company when `None`).
pub fn mint_code(
    st: &mut SandboxState,
    realm: Option<String>,
    redirect_uri: Option<String>,
    now: DateTime<Utc>,
) -> (String, String) {
    let code = format!("AB11{}{}", now.timestamp(), random_alnum(30));
    let realm = realm.unwrap_or_else(|| st.credentials.realm_id.clone());
    st.tokens.codes.insert(
        code.clone(),
        AuthorizationCode {
            realm_id: realm.clone(),
            redirect_uri,
            expires_at: now + Duration::seconds(AUTHORIZATION_CODE_TTL_SECONDS),
        },
    );
    (code, realm)
}

/// Checks the bearer token of an API call for `realm_id`. `Err` is the response to send back.
pub fn authenticate(
    st: &SandboxState,
    headers: &HeaderMap,
    realm_id: &str,
    now: DateTime<Utc>,
) -> Result<(), Box<Response>> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(presented) = presented else {
        return Err(Box::new(authentication_failed(
            "Token invalid: no bearer access token in the Authorization header",
            now,
        )));
    };
    let Some(record) = st.tokens.access.get(presented) else {
        return Err(Box::new(authentication_failed(
            "Token invalid: the access token is unknown or was revoked",
            now,
        )));
    };
    if now >= record.expires_at {
        return Err(Box::new(authentication_failed(
            &format!(
                "Token expired: the access token expired at {}",
                record.expires_at.to_rfc3339()
            ),
            now,
        )));
    }
    if record.realm_id != realm_id {
        return Err(Box::new(
            super::fault::Fault::authorization(format!(
                "Authorization Failure: the access token is not authorized for company {realm_id}"
            ))
            .into_response(now),
        ));
    }
    Ok(())
}

/// `GET /v1/openid_connect/userinfo`.
pub async fn userinfo(State(app): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let now = app.clock.now();
    let st = app.state.lock().await;
    let realm = st.credentials.realm_id.clone();
    if let Err(r) = authenticate(&st, &headers, &realm, now) {
        return *r;
    }
    axum::Json(json!({
        "sub": format!("sandbox-owner-{realm}"),
        "givenName": "Dana",
        "familyName": "Whitcombe",
        "email": "dana@juniperfinch.example",
        "emailVerified": true,
    }))
    .into_response()
}
