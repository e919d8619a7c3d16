//! Notifications end to end: Slack through the Slack sandbox over loopback HTTP, email through a real SMTP server
//! (`aiosmtpd` from the project's Python venv, started here) whose delivered Maildir message is read back and
//! parsed with Python's own `email` package.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ledgerlink_connectors::ConnectorError;
use ledgerlink_connectors::notify::Message;
use ledgerlink_connectors::notify::email::{EmailNotifier, SmtpSettings, SmtpTls};
use ledgerlink_connectors::notify::slack::SlackNotifier;
use ledgerlink_sandbox::slack::{SlackOptions, start};
use secrecy::SecretString;
use serde_json::{Value, json};

fn overdue() -> Message {
    Message {
        title: "Invoice 1042 is overdue".into(),
        text: "Acme <Holdings> & Co has not paid.".into(),
        fields: vec![
            ("Amount".into(), "1250.00 USD".into()),
            ("Due".into(), "2026-11-01".into()),
        ],
    }
}

async fn messages(base_url: &str) -> Vec<Value> {
    let v: Value = reqwest::get(format!("{base_url}/sandbox/admin/messages"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["messages"].as_array().unwrap().clone()
}

#[tokio::test]
async fn slack_message_is_recorded_with_its_text_and_blocks() {
    let sb = start(SlackOptions::default()).await.unwrap();
    let notifier = SlackNotifier::new(
        SecretString::from(sb.info_str("webhook_url").to_string()),
        ledgerlink_connectors::http::client(),
    );
    notifier.send(&overdue()).await.unwrap();

    let got = messages(&sb.base_url).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let m = &got[0];
    assert_eq!(
        m["text"],
        "Invoice 1042 is overdue\nAcme &lt;Holdings&gt; &amp; Co has not paid.\n\nAmount: 1250.00 USD\nDue: 2026-11-01"
    );
    assert_eq!(m["blocks"][0]["type"], "header");
    assert_eq!(m["blocks"][0]["text"]["text"], "Invoice 1042 is overdue");
    assert_eq!(
        m["blocks"][1]["text"]["text"],
        "Acme &lt;Holdings&gt; &amp; Co has not paid."
    );
    assert_eq!(m["blocks"][2]["fields"][0]["text"], "*Amount*\n1250.00 USD");
    assert!(
        sb.info_str("webhook_url")
            .ends_with(m["hook"].as_str().unwrap())
    );
    sb.stop().await;
}

#[tokio::test]
async fn slack_sandbox_answers_like_slack() {
    let sb = start(SlackOptions::default()).await.unwrap();
    let url = sb.info_str("webhook_url").to_string();
    let http = ledgerlink_connectors::http::client();
    let post = |url: String, body: &'static str| {
        let http = http.clone();
        async move {
            let r = http
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let ct = r.headers()["content-type"].to_str().unwrap().to_string();
            (r.status().as_u16(), ct, r.text().await.unwrap())
        }
    };
    let (status, ct, body) = post(url.clone(), r#"{"text":"hello"}"#).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert!(ct.starts_with("text/plain"), "{ct}");
    assert_eq!(post(url.clone(), "{not json").await.2, "invalid_payload");
    assert_eq!(post(url.clone(), "{not json").await.0, 400);
    assert_eq!(post(url.clone(), r#"{"username":"x"}"#).await.0, 400);
    assert_eq!(post(url.clone(), r#"{"username":"x"}"#).await.2, "no_text");
    let (status, _, body) = post(
        format!("{}/services/T0/B0/nope", sb.base_url),
        r#"{"text":"x"}"#,
    )
    .await;
    assert_eq!((status, body.as_str()), (404, "no_service"));
    // Blocks alone are a message too.
    assert_eq!(
        post(url.clone(), r#"{"blocks":[{"type":"divider"}]}"#)
            .await
            .0,
        200
    );
    let got = messages(&sb.base_url).await;
    let texts: Vec<&Value> = got.iter().map(|m| &m["text"]).collect();
    assert_eq!(
        texts,
        [&json!("hello"), &Value::Null],
        "only accepted messages are recorded"
    );
    sb.stop().await;
}

#[tokio::test]
async fn slack_errors_are_classified() {
    let sb = start(SlackOptions::default()).await.unwrap();
    let http = ledgerlink_connectors::http::client();
    let url = sb.info_str("webhook_url").to_string();

    // An unknown hook (revoked or mistyped): 404 no_service, not retried.
    let wrong = SlackNotifier::new(
        SecretString::from(format!("{}/services/T1/B1/revoked", sb.base_url)),
        http.clone(),
    );
    let err = wrong.send(&overdue()).await.unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Validation { code, .. } if code == "no_service"),
        "{err:?}"
    );
    assert!(!err.is_retryable());

    let notifier = SlackNotifier::new(SecretString::from(url), http.clone());
    let faults = format!("{}/sandbox/admin/faults", sb.base_url);
    http.post(&faults)
        .json(&json!({"rate_429": 1.0}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let err = notifier.send(&overdue()).await.unwrap_err();
    assert!(
        matches!(&err, ConnectorError::RateLimited { message, .. } if message.contains("rate_limited")),
        "{err:?}"
    );
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));

    http.post(&faults)
        .json(&json!({"rate_5xx": 1.0}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let err = notifier.send(&overdue()).await.unwrap_err();
    assert!(
        matches!(
            err,
            ConnectorError::Transient {
                outcome_unknown: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(messages(&sb.base_url).await.is_empty());

    http.delete(&faults)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    notifier.send(&overdue()).await.unwrap();
    assert_eq!(messages(&sb.base_url).await.len(), 1);
    sb.stop().await;
}

/// Slack's 400 answers (`invalid_payload`, `no_text`, `invalid_blocks`) reach the caller as validation errors
/// carrying Slack's code. The notifier never sends such a payload to the sandbox, so a loopback server answers
/// every post with the 400 Slack would give.
#[tokio::test]
async fn slack_400_carries_slacks_code() {
    use axum::http::StatusCode;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app =
        axum::Router::new().fallback(|| async { (StatusCode::BAD_REQUEST, "invalid_blocks") });
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let notifier = SlackNotifier::new(
        SecretString::from(format!("http://127.0.0.1:{port}/services/T1/B1/x")),
        ledgerlink_connectors::http::client(),
    );
    let err = notifier.send(&overdue()).await.unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Validation { code, field: None, .. } if code == "invalid_blocks"),
        "{err:?}"
    );
    server.abort();
}

#[test]
fn slack_webhook_url_is_redacted() {
    let secret = "https://hooks.slack.com/services/T123/B456/verysecretpart";
    let n = SlackNotifier::new(
        SecretString::from(secret.to_string()),
        ledgerlink_connectors::http::client(),
    );
    let shown = format!("{n:?}");
    assert!(!shown.contains("verysecretpart"), "{shown}");
    let bad = SlackNotifier::new(
        SecretString::from("not a url verysecretpart".to_string()),
        ledgerlink_connectors::http::client(),
    );
    let err = bad.validate().unwrap_err();
    assert!(!err.to_string().contains("verysecretpart"), "{err}");
    assert!(
        matches!(&err, ConnectorError::Validation { field: Some(f), .. } if f == "webhook_url")
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Email through a real SMTP server.

fn venv_python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run ./scripts/test once (it creates the venv with tests/python/requirements.txt, \
         which includes aiosmtpd)",
        python.display()
    );
    python
}

/// A running `aiosmtpd` delivering into a Maildir; killed when dropped.
struct SmtpServer {
    port: u16,
    maildir: tempfile::TempDir,
    _child: tokio::process::Child,
}

async fn start_aiosmtpd(extra: &[&str]) -> SmtpServer {
    let python = venv_python();
    let maildir = tempfile::tempdir().unwrap();
    // A free port: bind, read it, release it for the server.
    let port = StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(python)
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
        .args(extra)
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        // Python's Maildir creates its tmp/new/cur folders only when the folder itself does not exist yet.
        .arg(maildir.path().join("mail"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start aiosmtpd");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut s) = child.stderr.take() {
                use tokio::io::AsyncReadExt;
                let _ = s.read_to_string(&mut err).await;
            }
            panic!(
                "aiosmtpd exited with {status} before accepting connections (is it installed? run ./scripts/test): {err}"
            );
        }
        assert!(
            Instant::now() < deadline,
            "aiosmtpd did not accept connections on port {port} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    SmtpServer {
        port,
        maildir,
        _child: child,
    }
}

/// The delivered messages, each parsed by Python's `email` package into subject, from, to and decoded body.
async fn delivered(maildir: &Path, expected: usize) -> Vec<Value> {
    let new = maildir.join("mail").join("new");
    let deadline = Instant::now() + Duration::from_secs(10);
    let files = loop {
        let files: Vec<PathBuf> = std::fs::read_dir(&new)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        if files.len() >= expected || Instant::now() > deadline {
            break files;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut out = Vec::new();
    for f in files {
        let parsed = tokio::process::Command::new(venv_python())
            .args([
                "-c",
                "import email, email.policy, json, sys\n\
                 m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=email.policy.default)\n\
                 print(json.dumps({'subject': m['subject'], 'from': m['from'], 'to': m['to'],\n\
                   'content_type': m.get_content_type(), 'charset': m.get_content_charset(),\n\
                   'body': m.get_content()}))",
            ])
            .arg(&f)
            .output()
            .await
            .unwrap();
        assert!(
            parsed.status.success(),
            "{}",
            String::from_utf8_lossy(&parsed.stderr)
        );
        out.push(serde_json::from_slice(&parsed.stdout).unwrap());
    }
    out
}

fn settings(port: u16, tls: SmtpTls) -> SmtpSettings {
    SmtpSettings {
        host: "127.0.0.1".into(),
        port,
        from: "Ledgerlink <ledgerlink@example.com>".into(),
        username: None,
        password: None,
        tls,
        root_certificate: None,
    }
}

#[tokio::test]
async fn email_is_delivered_to_a_real_smtp_server() {
    let server = start_aiosmtpd(&[]).await;
    let notifier = EmailNotifier::new(settings(server.port, SmtpTls::None)).unwrap();
    let to = vec![
        "ar@example.com".to_string(),
        "Owner <owner@example.org>".to_string(),
    ];
    notifier.send_message(&to, &overdue()).await.unwrap();
    // Non-ASCII subject and body travel encoded and come back as written.
    notifier
        .send(
            &to[..1],
            "Überfällig: 1 250,00 €",
            "Zahlung fehlt — bitte prüfen.\nZeile 2",
        )
        .await
        .unwrap();

    let mut got = delivered(server.maildir.path(), 2).await;
    assert_eq!(got.len(), 2, "{got:?}");
    got.sort_by_key(|m| m["subject"].as_str().unwrap().to_string());
    let m = &got[0];
    assert_eq!(m["subject"], "Invoice 1042 is overdue");
    assert_eq!(m["from"], "Ledgerlink <ledgerlink@example.com>");
    assert_eq!(m["to"], "ar@example.com, Owner <owner@example.org>");
    assert_eq!(m["content_type"], "text/plain");
    assert_eq!(
        m["body"].as_str().unwrap().replace("\r\n", "\n").trim_end(),
        "Acme <Holdings> & Co has not paid.\n\nAmount: 1250.00 USD\nDue: 2026-11-01"
    );
    let m = &got[1];
    assert_eq!(m["subject"], "Überfällig: 1 250,00 €");
    assert_eq!(m["to"], "ar@example.com");
    assert_eq!(m["charset"], "utf-8");
    assert_eq!(
        m["body"].as_str().unwrap().replace("\r\n", "\n").trim_end(),
        "Zahlung fehlt — bitte prüfen.\nZeile 2"
    );
}

/// A certificate authority and a server certificate for 127.0.0.1, written as PEM files into `dir`.
fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "notify test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let mut leaf_params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let (ca_pem, cert_pem, key_pem) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    std::fs::write(&cert_pem, leaf.pem()).unwrap();
    std::fs::write(&key_pem, leaf_key.serialize_pem()).unwrap();
    (ca_pem, cert_pem, key_pem)
}

#[tokio::test]
async fn email_over_starttls_verifies_the_server_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let (ca_pem, cert_pem, key_pem) = make_certs(certs.path());
    let server = start_aiosmtpd(&[
        "--tlscert",
        cert_pem.to_str().unwrap(),
        "--tlskey",
        key_pem.to_str().unwrap(),
    ])
    .await;
    let to = vec!["ar@example.com".to_string()];

    // The server requires STARTTLS: a plain client is refused with a permanent reply, nothing delivered.
    let plain = EmailNotifier::new(settings(server.port, SmtpTls::None)).unwrap();
    let err = plain.send(&to, "plain", "x").await.unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Validation { code, .. } if code == "smtp_530"),
        "{err:?}"
    );

    // STARTTLS without trusting the private CA: the certificate is rejected.
    let untrusting = EmailNotifier::new(settings(server.port, SmtpTls::StartTls)).unwrap();
    let err = untrusting.send(&to, "untrusted", "x").await.unwrap_err();
    assert!(matches!(&err, ConnectorError::Transient { outcome_unknown: false, .. }), "{err:?}");
    assert!(err.to_string().contains("TLS"), "{err}");

    let trusting = EmailNotifier::new(SmtpSettings {
        root_certificate: Some(ca_pem),
        ..settings(server.port, SmtpTls::StartTls)
    })
    .unwrap();
    trusting.send(&to, "over TLS", "sealed").await.unwrap();

    let got = delivered(server.maildir.path(), 1).await;
    let subjects: Vec<&str> = got.iter().map(|m| m["subject"].as_str().unwrap()).collect();
    assert_eq!(subjects, ["over TLS"]);
    assert_eq!(got[0]["body"].as_str().unwrap().trim_end(), "sealed");
}

#[test]
fn smtp_settings_are_checked_naming_the_field() {
    let field_of = |s: SmtpSettings| match EmailNotifier::new(s).unwrap_err() {
        ConnectorError::Validation { field, .. } => field.unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        field_of(SmtpSettings {
            host: " ".into(),
            ..settings(25, SmtpTls::None)
        }),
        "host"
    );
    assert_eq!(
        field_of(SmtpSettings {
            from: "not an address".into(),
            ..settings(25, SmtpTls::None)
        }),
        "from"
    );
    assert_eq!(
        field_of(SmtpSettings {
            username: Some("u".into()),
            ..settings(25, SmtpTls::None)
        }),
        "password"
    );
    assert_eq!(
        field_of(SmtpSettings {
            root_certificate: Some("/nonexistent/ca.pem".into()),
            ..settings(25, SmtpTls::StartTls)
        }),
        "root_certificate"
    );
    let n = EmailNotifier::new(SmtpSettings {
        username: Some("u".into()),
        password: Some(SecretString::from("hunter2-secret".to_string())),
        ..settings(25, SmtpTls::None)
    })
    .unwrap();
    assert!(!format!("{n:?}").contains("hunter2"));
}

#[tokio::test]
async fn bad_recipients_are_refused_before_connecting() {
    // Port 1 on loopback: nothing listens, so reaching the network would give a transient error instead.
    let n = EmailNotifier::new(settings(1, SmtpTls::None)).unwrap();
    let err = n
        .send(&["ok@example.com".into(), "broken".into()], "s", "b")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Validation { field: Some(f), .. } if f == "to[1]"),
        "{err:?}"
    );
    let err = n.send(&[], "s", "b").await.unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Validation { field: Some(f), .. } if f == "to"),
        "{err:?}"
    );
    let err = n
        .send(&["ok@example.com".into()], "s", "b")
        .await
        .unwrap_err();
    assert!(matches!(&err, ConnectorError::Transient { .. }), "{err:?}");
}
