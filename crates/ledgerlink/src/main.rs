//! `ledgerlink`: the command line. Parses the arguments and dispatches to the library's commands.

use ledgerlink::{demo, flows_cmd, sandbox_cmd, serve};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Serve one sandbox on its own; the first stdout line is JSON with its URL and credentials.
    Sandbox {
        #[arg(value_parser = ["quickbooks", "salesforce"])]
        system: String,
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Load state from this file if it exists, and save every change to it.
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Run the engine with the connections and flows of a config file.
    Serve {
        #[arg(long)]
        config: PathBuf,
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
}

#[derive(Subcommand)]
enum TemplatesCommand {
    /// List the shipped templates.
    List,
    /// Print a template's flow file.
    Show { name: String },
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
            Command::Sandbox { system, port, state } => sandbox_cmd::run(&system, port, state).await,
            Command::Serve { config } => serve::run(&config).await,
            Command::Flows { command: FlowsCommand::Validate { file, set } } => flows_cmd::validate(&file, &set),
            Command::Templates { command: TemplatesCommand::List } => flows_cmd::list_templates(),
            Command::Templates { command: TemplatesCommand::Show { name } } => flows_cmd::show_template(&name),
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
