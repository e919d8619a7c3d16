//! `ledgerlink serve --config FILE`: the engine, the platform connector's worker and the HTTP port (with the admin
//! web UI when the config has a `[web]` section), until interrupted.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use ledgerlink_engine::Config;

pub async fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(path)?;
    let engine = ledgerlink_engine::bootstrap(&cfg).await?;
    engine.prime().await?;
    let listen = cfg.listen.clone().unwrap_or_else(|| "127.0.0.1:8080".into());
    let addr: SocketAddr = listen.parse().map_err(|e| anyhow::anyhow!("listen `{listen}` is not an address: {e}"))?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut server_stop = rx.clone();
    let platform = ledgerlink_platform::Platform::new(engine.store.clone(), Default::default());
    let app = match &cfg.web {
        Some(web) => ledgerlink_server::router_with_ui(engine.clone(), platform.clone(), web_config(web))?,
        None => ledgerlink_server::router(engine.clone()),
    };
    let (bound, server) = ledgerlink_server::serve_app(app, addr, async move {
        let _ = server_stop.changed().await;
    })
    .await?;
    // The first stdout line is machine-readable, for scripts and tests.
    println!("{}", serde_json::json!({"event": "listening", "url": format!("http://{bound}")}));
    eprintln!(
        "ledgerlink serving on http://{bound} — store {}, {} flow(s), {} connection(s)",
        engine.store.backend(),
        engine.flows.len(),
        engine.connectors.len()
    );
    let platform = {
        // The platform connector's worker: pushed records to QuickBooks, payments back, outgoing webhooks.
        let rx = rx.clone();
        tokio::spawn(async move { platform.run(rx).await })
    };
    let runner = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.run(rx).await })
    };
    tokio::signal::ctrl_c().await?;
    eprintln!("stopping: letting running jobs finish");
    let _ = tx.send(true);
    runner.await??;
    let _ = platform.await;
    let _ = server.await;
    Ok(ExitCode::SUCCESS)
}

/// The UI's settings from the `[web]` section.
fn web_config(web: &ledgerlink_engine::config::WebSection) -> ledgerlink_web::WebConfig {
    let defaults = ledgerlink_web::WebConfig::default();
    ledgerlink_web::WebConfig {
        quickbooks: web.quickbooks.as_ref().map(|q| ledgerlink_web::QuickbooksApp {
            authorize_url: q.authorize_url.clone(),
            token_url: q.token_url.clone(),
            api_base: q.api_base.clone(),
            client_id: q.client_id.clone(),
            client_secret: secrecy::SecretString::from(q.client_secret.clone()),
            revoke_url: q.revoke_url.clone().unwrap_or_else(|| ledgerlink_platform::integration::INTUIT_REVOKE_URL.to_string()),
            verifier_token: q.verifier_token.clone().map(secrecy::SecretString::from),
        }),
        public_url: web.public_url.clone(),
        idle_timeout: web.idle_minutes.map(|m| chrono::Duration::minutes(m.max(1))).unwrap_or(defaults.idle_timeout),
        absolute_timeout: web.absolute_hours.map(|h| chrono::Duration::hours(h.max(1))).unwrap_or(defaults.absolute_timeout),
        banner: web.banner.clone(),
        ..defaults
    }
}
