//! OAuth 2.0 JWT bearer flow for Salesforce (server-to-server, no refresh token).
//!
//! Layout: [`JwtBearerGrant`] holds the connected app's consumer key, the user to act as, the audience (login
//! URL) and the RSA private key whose certificate is uploaded to the connected app. [`JwtBearerGrant::assertion`]
//! builds the RS256 JWT `{iss, sub, aud, exp}`; the grant implements [`TokenGrant`], so the connection's
//! [`crate::auth::TokenManager`] mints a new assertion whenever the session expires or is refused. Signing uses
//! `ring` (already in the build through rustls), and PEM is read here: both PKCS#8 (`BEGIN PRIVATE KEY`) and
//! PKCS#1 (`BEGIN RSA PRIVATE KEY`) keys are accepted.

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::Utc;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde::Deserialize;

use crate::ConnectorError;
use crate::auth::{self, DEFAULT_ACCESS_LIFETIME_SECS, OAuthTokens, TokenGrant};
use crate::http;

/// The grant type of the JWT bearer flow (RFC 7523).
pub const JWT_BEARER_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// How long an assertion is valid. Salesforce accepts at most a few minutes; it is used at once.
pub const ASSERTION_LIFETIME_SECS: i64 = 180;

fn bad_key(message: String) -> ConnectorError {
    ConnectorError::Validation { code: "invalid_private_key".into(), message, field: Some("private_key_pem".into()) }
}

/// The DER bytes of the first PEM block of `label` in `pem`.
pub fn pem_block(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let body: String = pem[start..stop].chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(body).ok()
}

/// Reads an RSA private key from PEM (PKCS#8 or PKCS#1).
pub fn parse_rsa_private_key(pem: &str) -> Result<RsaKeyPair, ConnectorError> {
    if let Some(der) = pem_block(pem, "PRIVATE KEY") {
        return RsaKeyPair::from_pkcs8(&der)
            .map_err(|e| bad_key(format!("the PKCS#8 private key is not a usable RSA key: {e}")));
    }
    if let Some(der) = pem_block(pem, "RSA PRIVATE KEY") {
        return RsaKeyPair::from_der(&der)
            .map_err(|e| bad_key(format!("the PKCS#1 RSA private key is not usable: {e}")));
    }
    Err(bad_key(
        "the private key must be PEM with a `BEGIN PRIVATE KEY` or `BEGIN RSA PRIVATE KEY` block (RSA, 2048 bits or more)"
            .into(),
    ))
}

/// The JWT bearer grant of one connected app and user.
pub struct JwtBearerGrant {
    token_url: String,
    client_id: String,
    username: String,
    audience: String,
    key: RsaKeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for JwtBearerGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtBearerGrant")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("audience", &self.audience)
            .field("key", &"[redacted]")
            .finish()
    }
}

/// The fields of the token answer used here (Salesforce sends no `expires_in` and no refresh token).
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
}

impl JwtBearerGrant {
    /// `audience` is the login URL the org expects (`https://login.salesforce.com`, `https://test.salesforce.com`).
    pub fn new(
        token_url: &str,
        client_id: &str,
        username: &str,
        audience: &str,
        private_key_pem: &str,
    ) -> Result<Self, ConnectorError> {
        for (name, value) in
            [("token_url", token_url), ("client_id", client_id), ("username", username), ("audience", audience)]
        {
            if value.trim().is_empty() {
                return Err(ConnectorError::Validation {
                    code: "invalid_jwt_bearer".into(),
                    message: format!("the JWT bearer setting `{name}` is empty"),
                    field: Some(name.into()),
                });
            }
        }
        Ok(JwtBearerGrant {
            token_url: token_url.to_string(),
            client_id: client_id.to_string(),
            username: username.to_string(),
            audience: audience.to_string(),
            key: parse_rsa_private_key(private_key_pem)?,
            rng: SystemRandom::new(),
        })
    }

    /// A signed assertion valid for [`ASSERTION_LIFETIME_SECS`] from now.
    pub fn assertion(&self) -> Result<String, ConnectorError> {
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        // A unique id per assertion: two minted within the same second differ, so neither looks like a replay.
        let mut nonce = [0u8; 16];
        ring::rand::SecureRandom::fill(&self.rng, &mut nonce)
            .map_err(|_| bad_key("no randomness for the JWT assertion id".into()))?;
        let claims = serde_json::json!({
            "jti": URL_SAFE_NO_PAD.encode(nonce),
            "iss": self.client_id,
            "sub": self.username,
            "aud": self.audience,
            "exp": Utc::now().timestamp() + ASSERTION_LIFETIME_SECS,
        });
        let signing_input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut signature = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &self.rng, signing_input.as_bytes(), &mut signature)
            .map_err(|_| bad_key("signing the JWT assertion failed".into()))?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    /// The public key (PKCS#1 DER) matching the private key, for checking signatures.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.key.public().as_ref().to_vec()
    }
}

#[async_trait]
impl TokenGrant for JwtBearerGrant {
    fn token_url(&self) -> &str {
        &self.token_url
    }

    async fn obtain(&self, http_client: &reqwest::Client) -> Result<OAuthTokens, ConnectorError> {
        let assertion = self.assertion()?;
        let form = [("grant_type", JWT_BEARER_GRANT_TYPE), ("assertion", assertion.as_str())];
        let request = http_client.post(&self.token_url).header(reqwest::header::ACCEPT, "application/json").form(&form);
        let reply = http::send(request).await?;
        if !reply.is_success() {
            let parsed: Option<serde_json::Value> = serde_json::from_str(&reply.body).ok();
            let field = |k: &str| parsed.as_ref().and_then(|v| v.get(k)).and_then(|v| v.as_str()).map(str::to_string);
            return Err(match (reply.status.as_u16(), field("error")) {
                // The assertion was refused: a certificate, consumer key or user problem only an admin can fix.
                (400..=499, Some(error)) if reply.status.as_u16() != 429 => ConnectorError::Unauthorized {
                    message: format!(
                        "the JWT bearer assertion for {} was refused ({error}: {}); check the connected app's \
                         certificate, the consumer key and that the user is pre-authorised",
                        self.username,
                        field("error_description").unwrap_or_default()
                    ),
                },
                _ => auth::classify_token_error(&reply),
            });
        }
        let answer: TokenAnswer = serde_json::from_str(&reply.body).map_err(|e| ConnectorError::Transient {
            message: format!("the token endpoint answered {} with an unreadable body: {e}", reply.status),
            outcome_unknown: false,
        })?;
        Ok(OAuthTokens {
            access_token: answer.access_token,
            refresh_token: None,
            access_expires_at: Utc::now() + chrono::TimeDelta::seconds(DEFAULT_ACCESS_LIFETIME_SECS),
            refresh_expires_at: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{MemoryTokenStore, TokenManager};
    use axum::extract::State;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    /// A throwaway 2048-bit test key (PKCS#8), used only by these tests.
    const TEST_KEY_PKCS8: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDP+F7IYsPrVoDx\nFMmjqsUEYp6kGfesIVThG/Qp8/jqNLAAnXnxtnUnr3Um+xxqG5jkmyrWByVJSgXi\nFIuEGota9zQEqYrhNNxwSbYKdPhNeoHnwrfOnAW08mbAdSVWczBfX1f31JkJsQgS\npCXz8A+jWG1vcaUMSlEXK+xT/zMHZejwDBq+AgWvMudMDA5V0/IN1WHS9ADS5R2a\nRRcBG2k4A62nxbT+buUX4WYeoGl/04oD7OR2xKY+Cp/OG22bmtK3LhI3Y7354PGS\nj4Ps7hu2s6BoTi6oqmy9GQtXU4e7xyQ6XhyreCYP1n8GyzE4dEmMYFJK4x2hvKeD\nyDJmu6erAgMBAAECggEAFXSTtAulwmffD0AW714k9jywY3tUVxCXP6QRI/+KAgDj\n2Xm672oPRcQEYOb4zvpAOJweJrd/rBh0E+y3r1jHtgpDy76sAmuK2cDDruoosGGU\n+P0t1lBisattA1TylavLj+33rCyQNJ+WwXQ9gCBCP2wA2kWjV+nA2j71930gCBar\n3W73aJ/Ll8EoNTBfGY7tamPmMRIpItdZy3sxobXkaiILtYRDqC2uehIIxVonv3qA\n0zPdbycGj9NBHgHVTEyH2TQ5UsWKpv9ZGL5na01Kr02csj7g6Qf7GlENUi4vERI2\nKQaYdMQjGw820z7SCAULl4oFVRkhxi5I/HyVVl1qQQKBgQD4NWDBkvzG9c8bQyOo\nuH3L50SjhyQY6H1qsb0tkMW35CKaQCNVaYWWTwPPjWIfrCljIQ+1ssNvCLWlX0Ya\nu0d4j0itpF8izsAXSEOfvHwC4yLN6dcmvB4vHWstii7NYQ8J4M/YRgBL/lJ+f31o\nIPp8UH1NoXbuiYlpsX+cQYL26wKBgQDWf6JcnDR/Gj2wZOTGv8whzAW5pXpdawB9\nsqVDptaJZl1CwCDK1OTQqKZaBADgbEg0/r48pFItnZoOQdDTTBdLoFr57RsujMJB\nB13joea/emSKiK3M9JKYv9nNMh/qkEkA1wTHqtSG7qAIFXMiK8/RCTcSwUv3lnWY\nzYxJUp9iQQKBgQCZbmWhQ3t+gfTEpXwlj+YzZYLIk4F85Dqi+bw3roaKZjv9nig5\nZEFv6OgyJPPDIGl1HbrYVuj4einPUFXFsH89x1TmAfXNToDv43vqAlmmb0HUh/i3\nuRHvjf/y5riHvLfPI2lYB+2nDE9yYtziwYAV2KuckXMzgVGwREjeDqEmgQKBgHOn\n5Fq9Gw1Bj+uxqy2DM0Ux5hBgqmb+kAg2sCeXKOxzFmwsfkH/otTjarb0m6hmmlSA\n2wCFtY3FAdEYKcoUqCbt8r/52gMygHdhyn03ydyK2PVdlyEA6p6UK5MZqN3oKITc\na0Zh1TBgMEfLkQXmy6oxptFlCloYdZYLls3eT/RBAoGAd5+/IeBvepfmPfuQOJnA\n7FtCTEfORoHcXvaWAz54Mxapb77O9ca7s2UhSM91Y1yD/cHKvJMMxahIQafWBlpa\nWm3mPFJ0OrdQRXn+Iyht7vRFVbpyJxQyrtEbIwhyuAgBkI4fENwmLurO3vTgm94r\n8SJCkV7UX3ti0g2mN5X/ZJ8=\n-----END PRIVATE KEY-----";
    /// The same key in PKCS#1 form.
    const TEST_KEY_PKCS1: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAz/heyGLD61aA8RTJo6rFBGKepBn3rCFU4Rv0KfP46jSwAJ15\n8bZ1J691JvscahuY5Jsq1gclSUoF4hSLhBqLWvc0BKmK4TTccEm2CnT4TXqB58K3\nzpwFtPJmwHUlVnMwX19X99SZCbEIEqQl8/APo1htb3GlDEpRFyvsU/8zB2Xo8Awa\nvgIFrzLnTAwOVdPyDdVh0vQA0uUdmkUXARtpOAOtp8W0/m7lF+FmHqBpf9OKA+zk\ndsSmPgqfzhttm5rSty4SN2O9+eDxko+D7O4btrOgaE4uqKpsvRkLV1OHu8ckOl4c\nq3gmD9Z/BssxOHRJjGBSSuMdobyng8gyZrunqwIDAQABAoIBABV0k7QLpcJn3w9A\nFu9eJPY8sGN7VFcQlz+kESP/igIA49l5uu9qD0XEBGDm+M76QDicHia3f6wYdBPs\nt69Yx7YKQ8u+rAJritnAw67qKLBhlPj9LdZQYrGrbQNU8pWry4/t96wskDSflsF0\nPYAgQj9sANpFo1fpwNo+9fd9IAgWq91u92ify5fBKDUwXxmO7Wpj5jESKSLXWct7\nMaG15GoiC7WEQ6gtrnoSCMVaJ796gNMz3W8nBo/TQR4B1UxMh9k0OVLFiqb/WRi+\nZ2tNSq9NnLI+4OkH+xpRDVIuLxESNikGmHTEIxsPNtM+0ggFC5eKBVUZIcYuSPx8\nlVZdakECgYEA+DVgwZL8xvXPG0MjqLh9y+dEo4ckGOh9arG9LZDFt+QimkAjVWmF\nlk8Dz41iH6wpYyEPtbLDbwi1pV9GGrtHeI9IraRfIs7AF0hDn7x8AuMizenXJrwe\nLx1rLYouzWEPCeDP2EYAS/5Sfn99aCD6fFB9TaF27omJabF/nEGC9usCgYEA1n+i\nXJw0fxo9sGTkxr/MIcwFuaV6XWsAfbKlQ6bWiWZdQsAgytTk0KimWgQA4GxINP6+\nPKRSLZ2aDkHQ00wXS6Ba+e0bLozCQQdd46Hmv3pkioitzPSSmL/ZzTIf6pBJANcE\nx6rUhu6gCBVzIivP0Qk3EsFL95Z1mM2MSVKfYkECgYEAmW5loUN7foH0xKV8JY/m\nM2WCyJOBfOQ6ovm8N66GimY7/Z4oOWRBb+joMiTzwyBpdR262Fbo+Hopz1BVxbB/\nPcdU5gH1zU6A7+N76gJZpm9B1If4t7kR743/8ua4h7y3zyNpWAftpwxPcmLc4sGA\nFdirnJFzM4FRsERI3g6hJoECgYBzp+RavRsNQY/rsastgzNFMeYQYKpm/pAINrAn\nlyjscxZsLH5B/6LU42q29JuoZppUgNsAhbWNxQHRGCnKFKgm7fK/+doDMoB3Ycp9\nN8ncitj1XZchAOqelCuTGajd6CiE3GtGYdUwYDBHy5EF5suqMabRZQpaGHWWC5bN\n3k/0QQKBgHefvyHgb3qX5j37kDiZwOxbQkxHzkaB3F72lgM+eDMWqW++zvXGu7Nl\nIUjPdWNcg/3ByryTDMWoSEGn1gZaWlpt5jxSdDq3UEV5/iMobe70RVW6cicUMq7R\nGyMIcrgIAZCOHxDcJi7qzt704JveK/EiQpFe1F97YtINpjeV/2Sf\n-----END RSA PRIVATE KEY-----";

    fn grant(token_url: &str) -> JwtBearerGrant {
        JwtBearerGrant::new(
            token_url,
            "consumer-key",
            "api@example.com",
            "https://login.salesforce.com",
            TEST_KEY_PKCS8,
        )
        .unwrap()
    }

    fn decode_part(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn assertion_is_rs256_signed_with_the_claims_salesforce_wants() {
        let g = grant("http://127.0.0.1:1/services/oauth2/token");
        let jwt = g.assertion().unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(decode_part(parts[0])["alg"], "RS256");
        let claims = decode_part(parts[1]);
        assert_eq!(claims["iss"], "consumer-key");
        assert_eq!(claims["sub"], "api@example.com");
        assert_eq!(claims["aud"], "https://login.salesforce.com");
        let exp = claims["exp"].as_i64().unwrap();
        let now = Utc::now().timestamp();
        assert!(exp > now && exp <= now + ASSERTION_LIFETIME_SECS, "{exp} vs {now}");

        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let public =
            ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, g.public_key_der());
        let signed = &jwt[..jwt.rfind('.').unwrap()];
        public.verify(signed.as_bytes(), &signature).expect("the signature verifies with the public key");
        assert!(public.verify(b"something else", &signature).is_err());
    }

    #[test]
    fn pkcs1_keys_are_read_and_bad_keys_are_named() {
        let a = parse_rsa_private_key(TEST_KEY_PKCS1).unwrap();
        let b = parse_rsa_private_key(TEST_KEY_PKCS8).unwrap();
        assert_eq!(a.public().as_ref(), b.public().as_ref());
        let err = parse_rsa_private_key("not a key").err().unwrap();
        assert!(matches!(&err, ConnectorError::Validation { field: Some(f), .. } if f == "private_key_pem"), "{err:?}");
        let err = parse_rsa_private_key("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----").err().unwrap();
        assert!(err.to_string().contains("PKCS#8"), "{err}");
        let err = JwtBearerGrant::new("http://x", "", "u", "https://login.salesforce.com", TEST_KEY_PKCS8).unwrap_err();
        assert!(err.to_string().contains("client_id"), "{err}");
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let text = format!("{:?}", grant("http://x"));
        assert!(text.contains("[redacted]") && !text.contains("PRIVATE"), "{text}");
    }

    type Seen = Arc<Mutex<Vec<HashMap<String, String>>>>;

    async fn token_endpoint(
        State(seen): State<Seen>,
        axum::Form(form): axum::Form<HashMap<String, String>>,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let n = {
            let mut seen = seen.lock().unwrap();
            seen.push(form.clone());
            seen.len()
        };
        if form.get("assertion").is_some_and(|a| a.split('.').count() == 3)
            && form.get("grant_type").map(String::as_str) == Some(JWT_BEARER_GRANT_TYPE)
        {
            axum::Json(serde_json::json!({"access_token": format!("token-{n}"), "instance_url": "http://x", "token_type": "Bearer"})).into_response()
        } else {
            (
                axum::http::StatusCode::BAD_REQUEST,
                axum::Json(serde_json::json!({"error": "invalid_grant", "error_description": "bad"})),
            )
                .into_response()
        }
    }

    #[tokio::test]
    async fn the_token_manager_mints_on_first_use_and_again_after_a_refusal() {
        let seen: Seen = Arc::default();
        let app = axum::Router::new().route("/token", axum::routing::post(token_endpoint)).with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let store = Arc::new(MemoryTokenStore::default());
        let tm = TokenManager::with_grant(store.clone(), Arc::new(grant(&url)), http::client());
        assert_eq!(tm.access_token().await.unwrap(), "token-1");
        assert_eq!(tm.access_token().await.unwrap(), "token-1", "a valid token is reused");
        assert_eq!(store.current().unwrap().refresh_token, None);
        // Refused: a new assertion is minted and saved; concurrent refusals of the same token mint once.
        let (a, b) = tokio::join!(tm.refresh_after_401("token-1"), tm.refresh_after_401("token-1"));
        assert_eq!((a.unwrap(), b.unwrap()), ("token-2".to_string(), "token-2".to_string()));
        assert_eq!(store.current().unwrap().access_token, "token-2");
        assert_eq!(store.save_count(), 2);
        assert_eq!(tm.refresh_count(), 2);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_ne!(seen[0]["assertion"], seen[1]["assertion"], "each renewal signs a fresh assertion");
    }

    async fn refuse() -> axum::response::Response {
        use axum::response::IntoResponse;
        let body =
            serde_json::json!({"error": "invalid_grant", "error_description": "user hasn't approved this consumer"});
        (axum::http::StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
    }

    #[tokio::test]
    async fn a_refused_assertion_says_what_to_check() {
        let app = axum::Router::new().route("/token", axum::routing::post(refuse));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        match grant(&url).obtain(&http::client()).await.unwrap_err() {
            ConnectorError::Unauthorized { message } => {
                assert!(message.contains("api@example.com"), "{message}");
                assert!(message.contains("invalid_grant: user hasn't approved this consumer"), "{message}");
                assert!(message.contains("certificate"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
}
