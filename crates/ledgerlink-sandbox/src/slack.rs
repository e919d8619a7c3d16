//! A Slack incoming-webhook emulator that records every message it accepts.
//!
//! Layout: [`start`] binds on loopback, generates one hook (`/services/T…/B…/secret`) and serves Slack's
//! incoming-webhook contract on it: `POST` a JSON body with `text` and/or `blocks` and get `200 ok` as plain
//! text; a body that is not a JSON object is `400 invalid_payload`, one with neither `text` nor `blocks` is
//! `400 no_text`, any other hook path is `404 no_service`. Accepted messages are kept in memory in arrival order
//! and listed by `GET /sandbox/admin/messages` (`DELETE` empties the list). [`crate::faults`] can throttle
//! (`429 rate_limited` with `Retry-After`) or fail (`5xx`) hook calls, set through `/sandbox/admin/faults`.
//!
//! Slack answers errors as short plain-text codes, not JSON; the sandbox does the same so a client that parses
//! the wrong way fails here as it would against Slack.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::RunningSandbox;
use crate::faults::{Fault, FaultConfig, Faults};

/// How to start the Slack sandbox.
#[derive(Debug, Clone, Default)]
pub struct SlackOptions {
    /// 0 = any free port; always bound on 127.0.0.1.
    pub port: u16,
    /// The hook path to serve (`T…/B…/secret`, without `/services/`); generated when `None`.
    pub hook: Option<String>,
}

/// One accepted message, as `GET /sandbox/admin/messages` lists it.
#[derive(Debug, Clone, serde::Serialize)]
struct Recorded {
    /// The hook path it was posted to (`T…/B…/secret`).
    hook: String,
    /// The `text` field, when given.
    text: Option<String>,
    /// The `blocks` field, when given.
    blocks: Option<Value>,
    /// The whole JSON body as received.
    payload: Value,
    received_at: String,
}

struct Shared {
    hook: String,
    messages: Mutex<Vec<Recorded>>,
    faults: Faults,
}

/// Starts the Slack sandbox. Its `info` holds `system` (`slack`), `base_url`, `webhook_url` (the generated
/// hook, ready to post to) and `admin_url`.
pub async fn start(opts: SlackOptions) -> anyhow::Result<RunningSandbox> {
    let hook = match opts.hook {
        Some(hook) => {
            if !valid_hook(&hook) {
                anyhow::bail!(
                    "the Slack hook path `{hook}` must look like `T…/B…/secret` (three non-empty segments)"
                );
            }
            hook
        }
        None => format!(
            "T{}/B{}/{}",
            random_id(10, true),
            random_id(10, true),
            random_id(24, false)
        ),
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.port)).await?;
    let port = listener.local_addr()?.port();
    let base_url = format!("http://127.0.0.1:{port}");
    let info = json!({
        "system": "slack",
        "base_url": base_url,
        "webhook_url": format!("{base_url}/services/{hook}"),
        "admin_url": format!("{base_url}/sandbox/admin"),
    });
    let shared = Arc::new(Shared {
        hook,
        messages: Mutex::new(Vec::new()),
        faults: Faults::default(),
    });
    let app = Router::new()
        .route("/services/{team}/{bot}/{secret}", post(hook_post))
        .route(
            "/sandbox/admin/messages",
            get(list_messages).delete(clear_messages),
        )
        .route(
            "/sandbox/admin/faults",
            get(get_faults).post(set_faults).delete(clear_faults),
        )
        .fallback(no_service)
        .with_state(shared);
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "Slack sandbox server stopped with an error");
        }
    });
    Ok(RunningSandbox {
        base_url,
        info,
        shutdown: Some(tx),
        task: Some(task),
    })
}

fn valid_hook(hook: &str) -> bool {
    let parts: Vec<&str> = hook.split('/').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()))
        && parts[0].starts_with('T')
        && parts[1].starts_with('B')
}

fn random_id(len: usize, upper: bool) -> String {
    let text: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect();
    if upper {
        text.to_ascii_uppercase()
    } else {
        text
    }
}

/// A plain-text answer, the way Slack writes every webhook answer.
fn plain(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

async fn no_service() -> Response {
    plain(StatusCode::NOT_FOUND, "no_service")
}

async fn hook_post(
    State(shared): State<Arc<Shared>>,
    Path((team, bot, secret)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let hook = format!("{team}/{bot}/{secret}");
    if hook != shared.hook {
        return plain(StatusCode::NOT_FOUND, "no_service");
    }
    match shared.faults.draw() {
        Fault::Throttle => {
            let mut resp = plain(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return resp;
        }
        Fault::ServerError { status, .. } => {
            return plain(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "internal_error",
            );
        }
        Fault::Slow(delay) => tokio::time::sleep(delay).await,
        // Dropped connections and token expiry have no meaning for a webhook: the hook URL is the credential.
        Fault::Drop { .. } | Fault::ExpireToken | Fault::None => {}
    }
    let payload: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return plain(StatusCode::BAD_REQUEST, "invalid_payload"),
    };
    let text = payload
        .get("text")
        .and_then(Value::as_str)
        .filter(|t| !t.trim().is_empty())
        .map(str::to_string);
    let blocks = payload
        .get("blocks")
        .filter(|b| b.as_array().is_some_and(|a| !a.is_empty()))
        .cloned();
    if payload.get("blocks").is_some_and(|b| !b.is_array()) {
        return plain(StatusCode::BAD_REQUEST, "invalid_blocks");
    }
    if text.is_none() && blocks.is_none() {
        return plain(StatusCode::BAD_REQUEST, "no_text");
    }
    let recorded = Recorded {
        hook,
        text,
        blocks,
        payload,
        received_at: chrono::Utc::now().to_rfc3339(),
    };
    shared
        .messages
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(recorded);
    plain(StatusCode::OK, "ok")
}

async fn list_messages(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let messages = shared
        .messages
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Json(json!({ "messages": messages }))
}

async fn clear_messages(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared
        .messages
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    StatusCode::NO_CONTENT
}

async fn get_faults(State(shared): State<Arc<Shared>>) -> Json<FaultConfig> {
    Json(shared.faults.config())
}

async fn set_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let config: FaultConfig = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("invalid fault settings: {e}"),
            )
                .into_response();
        }
    };
    match shared.faults.set(config) {
        Ok(()) => Json(shared.faults.config()).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            format!("invalid fault settings: {e}"),
        )
            .into_response(),
    }
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.faults.clear();
    StatusCode::NO_CONTENT
}
