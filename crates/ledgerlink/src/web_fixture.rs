//! `ledgerlink web-fixture`: the admin web UI over a fresh embedded store with a QuickBooks sandbox to connect
//! to, for the browser tests (`tests/browser`) and for trying the UI by hand.
//!
//! It starts the QuickBooks sandbox (its consent page is what **Connect** leads to), opens a SQLite store in a
//! new directory, adds one administrator, and serves the API and the UI. The first stdout line is JSON with
//! everything a test needs: the UI's URL, the sandbox's, the administrator's email and password, and the
//! sandbox user for its sign-in page, the workspace and an API token for the platform push API. The sandbox's
//! webhooks point at the platform's notification endpoint, as an Intuit app's would. It runs until interrupted (SIGINT or SIGTERM).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use ledgerlink_engine::{Engine, EngineSettings};
use ledgerlink_sandbox::quickbooks;
use ledgerlink_store::{MasterKey, SecretCipher};
use serde_json::json;

pub struct FixtureOptions {
    pub port: u16,
    pub data_dir: Option<PathBuf>,
    pub email: String,
    pub password: String,
    pub workspace: String,
}

pub async fn run(opts: FixtureOptions) -> anyhow::Result<ExitCode> {
    let dir = match &opts.data_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::TempDir::new_in(d)?
        }
        None => tempfile::TempDir::new()?,
    };
    let qbo = quickbooks::start(quickbooks::QuickbooksOptions::default()).await?;
    let key = MasterKey::load(dir.path(), None)?;
    let store = ledgerlink_store::open(&format!("sqlite://{}", dir.path().join("ledgerlink.sqlite").display()), SecretCipher::new(key)).await?;
    let platform = ledgerlink_platform::Platform::new(
        store.clone(),
        // Payments come back through QuickBooks' notifications (registered below); the poll, every five minutes
        // here, is only the backstop, so a payment the browser sees promptly came through a notification.
        ledgerlink_platform::PlatformOptions { payment_poll: std::time::Duration::from_secs(300), ..Default::default() },
    );
    let workspace = platform.create_workspace(&opts.workspace).await?;
    let api_token = platform.issue_token(&workspace.id, "web-fixture").await?;
    ledgerlink_web::create_admin(store.as_ref(), &workspace.id, &opts.email, "Dana (admin)", &opts.password).await?;

    let settings = EngineSettings { worker_id: "web-fixture".into(), ..EngineSettings::default() };
    let engine = Engine::new(store.clone(), BTreeMap::new(), vec![], settings)?;
    let ui = ledgerlink_web::WebConfig {
        quickbooks: Some(ledgerlink_web::QuickbooksApp::from_sandbox_info(&qbo.info)?),
        ..ledgerlink_web::WebConfig::default()
    };
    let app = ledgerlink_server::router_with_ui(engine.clone(), platform.clone(), ui)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let (bound, server) = ledgerlink_server::serve_app(app, SocketAddr::from(([127, 0, 0, 1], opts.port)), async move {
        let _ = server_stop.changed().await;
    })
    .await?;
    let hook = ledgerlink_connectors::http::client()
        .post(format!("{}/sandbox/admin/webhooks", qbo.base_url))
        .json(&json!({"url": format!("http://{bound}{}", ledgerlink_platform::api::QUICKBOOKS_NOTIFICATIONS_PATH), "entities": ["Payment", "Invoice"]}))
        .send()
        .await?;
    anyhow::ensure!(hook.status().is_success(), "the QuickBooks sandbox did not take the webhook endpoint");
    println!(
        "{}",
        json!({
            "event": "listening",
            "url": format!("http://{bound}"),
            "quickbooks_url": qbo.base_url,
            "realm_id": qbo.info_str("realm_id"),
            "email": opts.email,
            "password": opts.password,
            "workspace": workspace.id,
            "api_token": api_token.token,
            "sandbox_user": quickbooks::authorize::SANDBOX_USER,
            "sandbox_password": quickbooks::authorize::SANDBOX_PASSWORD,
        })
    );
    let platform_worker = {
        let stop = stop_rx.clone();
        tokio::spawn(async move { platform.run(stop).await })
    };
    let runner = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.run(stop_rx).await })
    };
    wait_for_stop_signal().await?;
    let _ = stop_tx.send(true);
    runner.await??;
    let _ = platform_worker.await;
    let _ = server.await;
    drop(qbo);
    Ok(ExitCode::SUCCESS)
}

/// SIGINT (Ctrl-C) or, on Unix, SIGTERM (what a test harness sends).
async fn wait_for_stop_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok(())
    }
}
