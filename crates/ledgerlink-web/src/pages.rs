//! The shared page frame and the error page.
//!
//! Every page template extends `base.html`, which reads a [`Layout`]: who is signed in, the CSRF token for the
//! sign-out form, the banner, and which navigation entry is current. Errors are pages too: [`UiError`] renders
//! as a page with a heading and a sentence a finance admin can act on; the technical cause goes to the log.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::session::Admin;

/// What the frame of every signed-in page shows.
#[derive(Debug, Clone)]
pub struct Layout {
    pub title: String,
    pub user: String,
    pub workspace: String,
    pub csrf: String,
    pub banner: Option<String>,
    /// The navigation entry to mark current (`integrations`, `flows`, …).
    pub nav: &'static str,
}

impl Layout {
    pub fn new(admin: &Admin, banner: Option<&String>, title: impl Into<String>, nav: &'static str) -> Layout {
        Layout {
            title: title.into(),
            user: admin.session.user.display_name.clone(),
            workspace: admin.session.user.workspace.clone(),
            csrf: admin.session.csrf_token.clone(),
            banner: banner.cloned(),
            nav,
        }
    }
}

/// Renders a template as an HTML response.
pub fn render<T: Template>(status: StatusCode, page: &T) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a page could not be rendered");
            (StatusCode::INTERNAL_SERVER_ERROR, Html(FALLBACK.to_string())).into_response()
        }
    }
}

const FALLBACK: &str = "<!doctype html><title>Something went wrong</title><h1>Something went wrong</h1>\
<p>This page could not be shown. Try again; if it keeps happening, tell your administrator.</p>";

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    heading: &'a str,
    message: &'a str,
    back: &'a str,
}

/// A failure shown to the person as a page.
#[derive(Debug)]
pub struct UiError {
    pub status: StatusCode,
    pub heading: String,
    pub message: String,
    /// Where the "Go back" link leads.
    pub back: String,
}

impl UiError {
    pub fn new(status: StatusCode, heading: impl Into<String>, message: impl Into<String>) -> UiError {
        UiError { status, heading: heading.into(), message: message.into(), back: "/settings/integrations".into() }
    }

    pub fn back_to(mut self, back: impl Into<String>) -> UiError {
        self.back = back.into();
        self
    }

    pub fn not_found(what: &str) -> UiError {
        UiError::new(StatusCode::NOT_FOUND, "Not found", format!("{what} does not exist (any more)."))
    }
}

impl From<ledgerlink_store::StoreError> for UiError {
    fn from(e: ledgerlink_store::StoreError) -> Self {
        tracing::error!(error = %e, "store error in the web UI");
        UiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "We could not reach our database",
            "Nothing was changed. Try again in a moment; if it keeps happening, tell your administrator.",
        )
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        render(self.status, &ErrorPage { heading: &self.heading, message: &self.message, back: &self.back })
    }
}

pub type UiResult = Result<Response, UiError>;
