//! `ledgerlink users add`: administrators of the web UI. The password is read from standard input (one line), so
//! it never appears in the process list or the shell history; only its argon2 hash is stored.

use std::io::BufRead;
use std::path::Path;
use std::process::ExitCode;

pub struct AddUser {
    pub email: String,
    pub name: Option<String>,
    /// An existing workspace id…
    pub workspace: Option<String>,
    /// …or the name of a workspace to create.
    pub new_workspace: Option<String>,
}

pub async fn add(config: &Path, opts: AddUser) -> anyhow::Result<ExitCode> {
    let cfg = ledgerlink_engine::Config::load(config)?;
    let store = ledgerlink_engine::open_store(&cfg).await?;
    let platform = ledgerlink_platform::Platform::new(store.clone(), Default::default());
    let workspace = match (&opts.workspace, &opts.new_workspace) {
        (Some(id), None) => platform.get_workspace(id).await.map_err(|e| anyhow::anyhow!("--workspace {id}: {e}"))?,
        (None, Some(name)) => platform.create_workspace(name).await?,
        _ => anyhow::bail!("give exactly one of --workspace ID (an existing workspace) or --new-workspace NAME"),
    };
    eprintln!("password for {} (one line on standard input, at least 8 characters):", opts.email);
    let mut password = String::new();
    std::io::stdin().lock().read_line(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']);
    let name = opts.name.clone().unwrap_or_else(|| opts.email.clone());
    let user = ledgerlink_web::create_admin(store.as_ref(), &workspace.id, &opts.email, &name, password).await?;
    println!("{}", serde_json::json!({"email": user.email, "workspace": workspace.id, "workspace_name": workspace.name}));
    Ok(ExitCode::SUCCESS)
}
