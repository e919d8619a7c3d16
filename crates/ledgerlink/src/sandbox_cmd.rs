//! `ledgerlink sandbox quickbooks|salesforce`: one sandbox on its own, until interrupted.

use std::path::PathBuf;
use std::process::ExitCode;

use ledgerlink_sandbox::{quickbooks, salesforce};

pub async fn run(system: &str, port: u16, state: Option<PathBuf>, tls: bool) -> anyhow::Result<ExitCode> {
    if tls && system != "salesforce" {
        anyhow::bail!("--tls is offered by the salesforce sandbox only");
    }
    let running = match system {
        "quickbooks" => quickbooks::start(quickbooks::QuickbooksOptions { port, state_file: state, ..Default::default() }).await?,
        "salesforce" => salesforce::start(salesforce::SalesforceOptions { port, state_file: state, tls, ..Default::default() }).await?,
        other => anyhow::bail!("unknown sandbox `{other}` (quickbooks, salesforce)"),
    };
    // The first stdout line: machine-readable URL and credentials.
    println!("{}", serde_json::to_string(&running.info)?);
    eprintln!("{system} sandbox listening on {} — Ctrl-C to stop", running.base_url);
    tokio::signal::ctrl_c().await?;
    running.stop().await;
    Ok(ExitCode::SUCCESS)
}
