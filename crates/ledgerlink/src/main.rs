//! `ledgerlink`: the command line. Parses the arguments and dispatches to the library's commands.

use ledgerlink::{admin_cmd, bench, demo, flows_cmd, reports_cmd, sandbox_cmd, serve, templates_install, users_cmd, web_fixture};
use ledgerlink_engine::review::Decision;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: a job allocates and frees many small JSON and expression values
/// from several threads, where glibc's malloc spent about 40% of the engine's CPU (see `docs/benchmarks.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "ledgerlink", version, about = "Keeps QuickBooks Online in sync with Salesforce and the systems a business runs on.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sandboxes, engine, embedded SQLite and the HTTP port in one process, with a scripted scenario.
    Demo {
        /// Exit after the summary (the last stdout line is one JSON object).
        #[arg(long)]
        once: bool,
        /// HTTP port for the status API (0 picks a free one).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Where the key file and the demo database live (default: a new temporary directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// How many opportunities the scenario closes.
        #[arg(long, default_value_t = 30)]
        opportunities: usize,
    },
    /// Measure the engine with in-process sandboxes: throughput, QuickBooks limits, webhook latency, backfill
    /// memory. Prints a table and, last on stdout, one JSON line.
    Bench {
        which: bench::Which,
        /// The engine's store.
        #[arg(long, value_enum, default_value = "sqlite")]
        store: bench::StoreKind,
        /// Records (throughput: 2,000; limits: 1,000; backfill: 100,000) or webhook events (latency: rate × seconds).
        #[arg(long)]
        n: Option<usize>,
        /// Only the JSON line on stdout (the table goes to stderr).
        #[arg(long)]
        json: bool,
        /// A PostgreSQL server to create a fresh database on for the run (dropped afterwards).
        #[arg(long, env = "LEDGERLINK_TEST_POSTGRES_URL")]
        postgres_url: Option<String>,
        /// Jobs the engine runs at once (the engine's default unless given).
        #[arg(long, default_value_t = ledgerlink_engine::DEFAULT_CONCURRENCY)]
        concurrency: usize,
        /// `limits`: how much faster than real time QuickBooks' limit minute passes (sandbox and connector).
        #[arg(long, default_value_t = 10.0)]
        time_scale: f64,
        /// `latency`: webhook events per second.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        /// `latency`: seconds of events.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Milliseconds a linked customer or item read by a run is reused instead of read again (0: read each time).
        #[arg(long, default_value_t = 5000)]
        linked_copy_ttl_ms: u64,
    },
    /// Serve one sandbox on its own; the first stdout line is JSON with its URL and credentials.
    Sandbox {
        #[arg(value_parser = ["quickbooks", "salesforce"])]
        system: String,
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Load state from this file if it exists, and save every change to it.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Serve https with a self-signed certificate generated at start (Salesforce only; the startup line gives
        /// its PEM path as `cert_pem_path`).
        #[arg(long)]
        tls: bool,
    },
    /// Run the engine with the connections and flows of a config file.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Administrators of the web UI.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
        #[arg(long, global = true, env = "LEDGERLINK_CONFIG", default_value = "ledgerlink.toml")]
        config: PathBuf,
    },
    /// The web UI over a fresh store with a QuickBooks sandbox to connect (for the browser tests). The first
    /// stdout line is JSON with the URLs and the administrator's sign-in.
    #[command(hide = true)]
    WebFixture {
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Parent of the fresh data directory (default: the system's temporary directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, default_value = "admin@example.com")]
        email: String,
        #[arg(long, default_value = "correct horse battery")]
        password: String,
        /// The name of the workspace the administrator manages.
        #[arg(long, default_value = "Juniper Finch Design")]
        workspace: String,
    },
    /// Flow files: validate them.
    Flows {
        #[command(subcommand)]
        command: FlowsCommand,
    },
    /// Shipped flow templates.
    Templates {
        #[command(subcommand)]
        command: TemplatesCommand,
    },
    /// The durable job queue: list, show, retry dead-lettered jobs, replay finished ones.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
        /// The config file naming the store.
        #[arg(long, global = true, env = "LEDGERLINK_CONFIG", default_value = "ledgerlink.toml")]
        config: PathBuf,
    },
    /// Decisions the engine must not guess: list, show, resolve (the waiting job then resumes).
    Review {
        #[command(subcommand)]
        command: ReviewCommand,
        #[arg(long, global = true, env = "LEDGERLINK_CONFIG", default_value = "ledgerlink.toml")]
        config: PathBuf,
    },
    /// Reports flows kept (weekly reconciliations): list, show.
    Reports {
        #[command(subcommand)]
        command: ReportsCommand,
        #[arg(long, global = true, env = "LEDGERLINK_CONFIG", default_value = "ledgerlink.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum ReportsCommand {
    /// Newest first.
    List {
        #[arg(long)]
        flow: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// One report in full.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Add an administrator of one workspace; the password is read from standard input (one line).
    Add {
        #[arg(long)]
        email: String,
        /// The name shown in the UI (default: the email).
        #[arg(long)]
        name: Option<String>,
        /// An existing workspace's id…
        #[arg(long, conflicts_with = "new_workspace")]
        workspace: Option<String>,
        /// …or the name of a new workspace to create.
        #[arg(long)]
        new_workspace: Option<String>,
    },
}

#[derive(Subcommand)]
enum JobsCommand {
    List {
        /// queued, running, done, dead or parked
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        flow: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    Show { id: i64 },
    /// Queue a dead-lettered job again.
    Retry { id: i64 },
    /// Run a finished job again (safe: creates are found by their links and keys).
    Replay { id: i64 },
}

#[derive(Subcommand)]
enum ReviewCommand {
    List {
        /// open or resolved
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        json: bool,
    },
    Show { id: i64 },
    /// Decide: --link ID (one of the candidates), --create, --retry or --dismiss.
    Resolve {
        id: i64,
        #[arg(long, conflicts_with_all = ["create", "retry", "dismiss"])]
        link: Option<String>,
        #[arg(long)]
        create: bool,
        #[arg(long)]
        retry: bool,
        #[arg(long)]
        dismiss: bool,
    },
}

#[derive(Subcommand)]
enum FlowsCommand {
    /// Report every error in a flow file with file:line:column; exit non-zero when invalid.
    Validate {
        file: PathBuf,
        /// Template parameters, `key=value`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Queue a run of a configured flow now (a running `serve` picks it up): one record by id, or one firing of
    /// a scheduled flow.
    Run {
        #[arg(long, env = "LEDGERLINK_CONFIG", default_value = "ledgerlink.toml")]
        config: PathBuf,
        #[arg(long)]
        flow: String,
        #[arg(long)]
        record: Option<String>,
    },
    /// Plan a configured flow against live data and show the writes it would make, without making any.
    DryRun {
        #[arg(long, env = "LEDGERLINK_CONFIG", default_value = "ledgerlink.toml")]
        config: PathBuf,
        /// The flow (needed when the config has several).
        #[arg(long)]
        flow: Option<String>,
        /// One source record by id, instead of the recent changes.
        #[arg(long)]
        record: Option<String>,
        /// How far back to read changes.
        #[arg(long, default_value_t = 24)]
        since_hours: i64,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TemplatesCommand {
    /// List the shipped templates.
    List,
    /// Print a template's flow file.
    Show { name: String },
    /// Add a template to the config file as a `[[flows]]` entry, after checking its parameters.
    Install {
        name: String,
        /// Template parameters, `key=value` (the others keep the template's defaults).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// The config file to add the flow to (created when missing).
        #[arg(long, env = "LEDGERLINK_CONFIG", default_value = "ledgerlink.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("LEDGERLINK_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Demo { once, port, data_dir, opportunities } => demo::run(demo::DemoOptions { once, port, data_dir, opportunities }).await,
            Command::Bench { which, store, n, json, postgres_url, concurrency, time_scale, rate, seconds, linked_copy_ttl_ms } => {
                let linked_copy_ttl = std::time::Duration::from_millis(linked_copy_ttl_ms);
                bench::run(bench::BenchOptions { which, store, n, json, postgres_url, concurrency, time_scale, rate, seconds, linked_copy_ttl })
                    .await
            }
            Command::Sandbox { system, port, state, tls } => sandbox_cmd::run(&system, port, state, tls).await,
            Command::Serve { config } => serve::run(&config).await,
            Command::Users { command: UsersCommand::Add { email, name, workspace, new_workspace }, config } => {
                users_cmd::add(&config, users_cmd::AddUser { email, name, workspace, new_workspace }).await
            }
            Command::WebFixture { port, data_dir, email, password, workspace } => {
                web_fixture::run(web_fixture::FixtureOptions { port, data_dir, email, password, workspace }).await
            }
            Command::Flows { command: FlowsCommand::Validate { file, set } } => flows_cmd::validate(&file, &set),
            Command::Flows { command: FlowsCommand::Run { config, flow, record } } => flows_cmd::run_now(&config, &flow, record.as_deref()).await,
            Command::Flows { command: FlowsCommand::DryRun { config, flow, record, since_hours, limit, json } } => {
                flows_cmd::dry_run(&config, flow.as_deref(), record.as_deref(), since_hours, limit, json).await
            }
            Command::Templates { command: TemplatesCommand::List } => flows_cmd::list_templates(),
            Command::Templates { command: TemplatesCommand::Show { name } } => flows_cmd::show_template(&name),
            Command::Templates { command: TemplatesCommand::Install { name, set, config } } => templates_install::install(&name, &set, &config),
            Command::Jobs { command, config } => match command {
                JobsCommand::List { status, flow, limit, json } => admin_cmd::jobs_list(&config, status, flow, limit, json).await,
                JobsCommand::Show { id } => admin_cmd::jobs_show(&config, id).await,
                JobsCommand::Retry { id } => admin_cmd::jobs_retry(&config, id, false).await,
                JobsCommand::Replay { id } => admin_cmd::jobs_retry(&config, id, true).await,
            },
            Command::Reports { command, config } => match command {
                ReportsCommand::List { flow, limit, json } => reports_cmd::list(&config, flow, limit, json).await,
                ReportsCommand::Show { id, json } => reports_cmd::show(&config, id, json).await,
            },
            Command::Review { command, config } => match command {
                ReviewCommand::List { status, json } => admin_cmd::review_list(&config, status, json).await,
                ReviewCommand::Show { id } => admin_cmd::review_show(&config, id).await,
                ReviewCommand::Resolve { id, link, create, retry, dismiss } => {
                    let decision = match (link, create, retry, dismiss) {
                        (Some(target_id), false, false, false) => Decision::Link { target_id },
                        (None, true, false, false) => Decision::Create,
                        (None, false, true, false) => Decision::Retry,
                        (None, false, false, true) => Decision::Dismiss,
                        _ => {
                            eprintln!("error: give exactly one of --link ID, --create, --retry, --dismiss");
                            return Ok(ExitCode::from(2));
                        }
                    };
                    admin_cmd::review_resolve(&config, id, decision).await
                }
            },
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
