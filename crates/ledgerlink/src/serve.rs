//! `ledgerlink serve --config FILE`: the engine and its HTTP port, until interrupted.

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
    let (bound, server) = ledgerlink_server::serve(engine.clone(), addr, async move {
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
        let platform = ledgerlink_platform::Platform::new(engine.store.clone(), Default::default());
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
