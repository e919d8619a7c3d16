//! The web UI as an operator sets it up: `ledgerlink users add` (password on standard input) and `serve` with a
//! `[web]` section, then a sign-in over HTTP with that user.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ledgerlink"))
}

/// The value of `name="…" value="…"` in a page.
fn field(html: &str, name: &str) -> String {
    let key = format!("name=\"{name}\" value=\"");
    let at = html.find(&key).unwrap_or_else(|| panic!("no {name} in {html}")) + key.len();
    html[at..at + html[at..].find('"').unwrap()].to_string()
}

#[tokio::test]
async fn an_added_admin_signs_in_to_the_ui_that_serve_offers() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ledgerlink.toml");
    std::fs::write(
        &config,
        format!("data_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\n\n[web]\nidle_minutes = 20\nbanner = \"Staging\"\n", dir.path().join("data").display()),
    )
    .unwrap();

    // Too short a password is refused, and says why.
    let mut add = bin()
        .args(["users", "add", "--email", "Ops@Example.com", "--new-workspace", "Acme Platform", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    add.stdin.take().unwrap().write_all(b"short\n").unwrap();
    let out = add.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 8 characters"));

    let mut add = bin()
        .args(["users", "add", "--email", "Ops@Example.com", "--new-workspace", "Acme Platform", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    add.stdin.take().unwrap().write_all(b"a long enough password\n").unwrap();
    let out = add.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let added: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(added["email"], "ops@example.com", "emails are kept lower-case");
    assert!(added["workspace"].as_str().unwrap().starts_with("ws_"));

    let mut serve = bin().args(["serve", "--config"]).arg(&config).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(serve.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = serde_json::from_str::<serde_json::Value>(&line).unwrap()["url"].as_str().unwrap().to_string();

    ledgerlink_connectors::http::install_crypto_provider();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let login = http.get(format!("{url}/login")).send().await.unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let body = login.text().await.unwrap();
    assert!(body.contains("Staging"), "the banner is shown");
    let signed = http
        .post(format!("{url}/login"))
        .header("cookie", cookie)
        .form(&[("email", "ops@example.com"), ("password", "a long enough password"), ("csrf", &field(&body, "csrf")), ("next", "/settings/integrations")])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 303);
    let session = signed.headers().get_all("set-cookie").iter().map(|c| c.to_str().unwrap()).find(|c| c.starts_with("ledgerlink_session=")).unwrap();
    assert!(session.contains("Max-Age=43200"), "12 hours at most: {session}");
    let page = http.get(format!("{url}/settings/integrations")).header("cookie", session.split(';').next().unwrap()).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("No QuickBooks app is configured"), "without [web.quickbooks] the card says so");
    serve.kill().unwrap();
    serve.wait().unwrap();
}
