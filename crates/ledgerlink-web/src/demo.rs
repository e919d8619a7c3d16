//! One-time sign-in links for `ledgerlink demo`, which serves the UI signed in as its demo admin.
//!
//! The demo prints `http://…/demo-sign-in?token=…`; opening it opens a session for the demo admin, exactly as a
//! password sign-in would, and goes to Settings > Integrations. A link works once and for
//! [`DemoSignIn::LINK_LIFETIME_MINUTES`] minutes. Links live in this process's memory only (the demo is one
//! process, and its links should die with it); the store keeps only the sessions they open.
//!
//! The route exists only when [`crate::WebConfig::demo`] is set: a normal deployment has no `/demo-sign-in`
//! at all (it answers 404 like any unknown page), so there is nothing to misconfigure or guess.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;

use crate::Web;
use crate::pages::UiError;
use crate::session::{constant_time_eq, open_session, random_token, token_hash};

/// The demo admin links sign in as, and the links not used yet.
#[derive(Clone)]
pub struct DemoSignIn {
    email: String,
    /// Token hash → when the link stops working.
    links: Arc<Mutex<HashMap<String, DateTime<Utc>>>>,
}

impl std::fmt::Debug for DemoSignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoSignIn").field("email", &self.email).finish_non_exhaustive()
    }
}

impl DemoSignIn {
    pub const LINK_LIFETIME_MINUTES: i64 = 15;

    /// Links that sign in as the web user with this email (the demo creates it).
    pub fn new(email: &str) -> DemoSignIn {
        DemoSignIn { email: email.trim().to_lowercase(), links: Arc::default() }
    }

    /// A random password nobody is shown, for the demo admin: the links are the only way in.
    pub fn unshown_password() -> String {
        random_token()
    }

    /// A fresh one-time link token, valid from `now` for the link lifetime. Shown once; only its hash is kept.
    pub fn issue(&self, now: DateTime<Utc>) -> String {
        let token = random_token();
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links.retain(|_, until| *until > now);
        links.insert(token_hash(&token), now + Duration::minutes(Self::LINK_LIFETIME_MINUTES));
        token
    }

    /// Uses up the link: true once for a live link, false for a used, expired or unknown one.
    fn redeem(&self, token: &str, now: DateTime<Utc>) -> bool {
        let wanted = token_hash(token);
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        let found = links.keys().find(|k| constant_time_eq(k, &wanted)).cloned();
        match found.and_then(|k| links.remove(&k)) {
            Some(until) => now < until,
            None => false,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct LinkQuery {
    token: Option<String>,
}

/// `GET /demo-sign-in?token=…` (demo mode only).
pub async fn sign_in(State(web): State<Web>, Query(q): Query<LinkQuery>) -> Response {
    let Some(demo) = web.config.demo.as_ref() else {
        return UiError::not_found("This page").into_response();
    };
    let now = web.now();
    if !q.token.as_deref().is_some_and(|t| demo.redeem(t, now)) {
        return UiError::new(
            StatusCode::FORBIDDEN,
            "This sign-in link does not work any more",
            format!(
                "Each demo sign-in link works once, for {} minutes. Use the newest link the demo printed, or \
                 start the demo again for a fresh one.",
                DemoSignIn::LINK_LIFETIME_MINUTES
            ),
        )
        .into_response();
    }
    let user = match web.web_store().web_user_by_email(&demo.email).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            tracing::error!(email = %demo.email, "the demo admin does not exist");
            return UiError::new(StatusCode::INTERNAL_SERVER_ERROR, "The demo admin is missing", "Start the demo again.").into_response();
        }
        Err(e) => return UiError::from(e).into_response(),
    };
    tracing::info!(user = %user.email, "signed in through a demo link");
    open_session(&web, &user, "/settings/integrations").await
}
