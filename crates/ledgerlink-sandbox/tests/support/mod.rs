//! What the Salesforce sandbox test files share: a sandbox org started on loopback (over HTTPS when its options
//! ask for TLS, trusting the certificate it wrote) and a client that sends REST calls with the org's token and
//! reads the answer as JSON. Each file adds the helpers only it needs in an `impl Org` of its own.

// Each test file is its own crate and uses part of this module.
#![allow(dead_code)]

use ledgerlink_sandbox::RunningSandbox;
use ledgerlink_sandbox::salesforce::{SalesforceOptions, start};
use reqwest::{Client, Method, StatusCode};
use serde_json::Value;

pub struct Org {
    pub sb: RunningSandbox,
    pub http: Client,
    pub token: String,
}

pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Org {
    /// Starts a sandbox org. The client does not follow redirects, so a test sees each one.
    pub async fn start(opts: SalesforceOptions) -> Org {
        install_provider();
        let tls = opts.tls;
        let sb = start(opts).await.expect("sandbox starts");
        let mut builder = Client::builder().redirect(reqwest::redirect::Policy::none());
        if tls {
            let pem = std::fs::read(sb.info_str("cert_pem_path")).expect("the certificate PEM was written");
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        let token = sb.info_str("access_token").to_string();
        Org { sb, http: builder.build().unwrap(), token }
    }

    pub async fn default() -> Org {
        Org::start(SalesforceOptions::default()).await
    }

    /// The REST URL of `path` (`/sobjects/Account`) under API version 59.0.
    pub fn url(&self, path: &str) -> String {
        format!("{}/services/data/v59.0{path}", self.sb.base_url)
    }

    pub async fn try_send(&self, method: Method, path: &str, body: Option<Value>) -> reqwest::Result<reqwest::Response> {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await
    }

    /// Sends a call and returns its status and its body as JSON (`Null` when empty).
    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let resp = self.try_send(method, path, body).await.expect("request is served");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
        };
        (status, json)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::PATCH, path, Some(body)).await
    }
}
