//! The one typed settings struct. Precedence: defaults < config file < environment (`LEDGERLINK_*`) < flags
//! (applied by the CLI). This is the only module that reads environment variables.
//!
//! A config file:
//! ```toml
//! data_dir = "./ledgerlink-data"              # key file, embedded database
//! store_url = "sqlite://./ledgerlink-data/ledgerlink.sqlite"   # or postgres://user@host/db
//! listen = "127.0.0.1:8080"                   # health, status API, metrics
//!
//! [engine]
//! concurrency = 128                           # jobs run at once by this process (the default)
//! max_attempts = 8                            # then the job is dead-lettered
//! # connection_leases = true                  # one worker per connection (default: on with PostgreSQL)
//! # connection_lease_seconds = 30             # a dead worker's connections move after this
//!
//! [[connections]]                             # imported into the store (secrets sealed) on first start
//! name = "salesforce"
//! system = "salesforce"
//! instance_url = "http://127.0.0.1:8701"
//! token_url = "http://127.0.0.1:8701/services/oauth2/token"
//! client_id = "…"
//! client_secret = "…"
//! refresh_token = "…"
//!
//! [[flows]]
//! template = "salesforce-closed-won-to-quickbooks-invoice"   # or: file = "flows/my-flow.toml"
//! params = { salesforce = "salesforce", quickbooks = "quickbooks" }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use ledgerlink_store::NewConnection;

/// Keys of a `[[connections]]` table that are secrets: sealed in the store, never echoed.
/// (`webhook_url` is a Slack incoming webhook: whoever has it can post to the channel; `password` is an SMTP login.)
pub const SECRET_KEYS: &[&str] =
    &["client_secret", "access_token", "refresh_token", "verifier_token", "webhook_url", "password"];

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the key file and the embedded database live. Default `./ledgerlink-data`.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// `sqlite://PATH` or `postgres://…`. Default: `ledgerlink.sqlite` in the data directory.
    #[serde(default)]
    pub store_url: Option<String>,
    /// Address of the HTTP port. Default `127.0.0.1:8080`.
    #[serde(default)]
    pub listen: Option<String>,
    #[serde(default)]
    pub engine: EngineSection,
    #[serde(default)]
    pub connections: Vec<ConnectionConfig>,
    #[serde(default)]
    pub flows: Vec<FlowConfig>,
    /// The admin web UI. Without this section `serve` answers only the API.
    #[serde(default)]
    pub web: Option<WebSection>,
    /// The master key from `LEDGERLINK_MASTER_KEY` (base64 of 32 bytes), if set. Never from the file.
    #[serde(skip)]
    pub master_key_env: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    pub concurrency: Option<usize>,
    pub max_attempts: Option<i32>,
    /// Seconds a claimed job is leased to this worker.
    pub lease_seconds: Option<i64>,
    /// Name of this worker in job leases (default: `worker-<pid>`).
    pub worker_id: Option<String>,
    /// Run a connection's jobs only while holding its lease (default: on with PostgreSQL, off with SQLite).
    pub connection_leases: Option<bool>,
    /// Seconds a connection lease lasts unless renewed (default 30): how soon a dead worker's connections move.
    pub connection_lease_seconds: Option<i64>,
}

/// `[web]`: the admin web UI.
/// ```toml
/// [web]
/// public_url = "https://ledgerlink.example.com"   # how browsers reach this server (the OAuth redirect URI)
/// idle_minutes = 30                                # a session ends after this long unused…
/// absolute_hours = 12                              # …and this long after sign-in in any case
///
/// [web.quickbooks]                                 # the Intuit app behind the Connect button
/// authorize_url = "https://appcenter.intuit.com/connect/oauth2"
/// token_url = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
/// api_base = "https://quickbooks.api.intuit.com/v3"
/// client_id = "…"
/// client_secret = "…"
/// verifier_token = "…"                              # optional: webhooks at /webhooks/platform/quickbooks
/// ```
#[derive(Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WebSection {
    pub public_url: Option<String>,
    pub idle_minutes: Option<i64>,
    pub absolute_hours: Option<i64>,
    pub banner: Option<String>,
    pub quickbooks: Option<QuickbooksAppSection>,
}

impl std::fmt::Debug for WebSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSection")
            .field("public_url", &self.public_url)
            .field("quickbooks", &self.quickbooks.as_ref().map(|q| &q.client_id))
            .finish_non_exhaustive()
    }
}

/// `[web.quickbooks]`: the OAuth app users connect their QuickBooks company through.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuickbooksAppSection {
    pub authorize_url: String,
    pub token_url: String,
    pub api_base: String,
    pub client_id: String,
    /// A secret: never echoed.
    pub client_secret: String,
    /// Where Disconnect revokes a grant (default: Intuit's `https://developer.api.intuit.com/v2/oauth2/tokens/revoke`).
    #[serde(default)]
    pub revoke_url: Option<String>,
    /// The app's webhook verifier token (a secret), when its webhooks point at `/webhooks/platform/quickbooks`.
    #[serde(default)]
    pub verifier_token: Option<String>,
}

/// One connection: `name`, `system`, and the system's settings; secrets among them are sealed on import.
#[derive(Clone, Deserialize)]
pub struct ConnectionConfig {
    pub name: String,
    pub system: String,
    #[serde(flatten)]
    pub settings: BTreeMap<String, Value>,
}

impl std::fmt::Debug for ConnectionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: BTreeMap<&String, &Value> = self.settings.iter().filter(|(k, _)| !SECRET_KEYS.contains(&k.as_str())).collect();
        f.debug_struct("ConnectionConfig").field("name", &self.name).field("system", &self.system).field("settings", &shown).finish()
    }
}

impl ConnectionConfig {
    /// Splits the settings into the stored connection: secrets into `credentials`, the rest into `config`.
    pub fn to_new_connection(&self) -> NewConnection {
        let mut config = serde_json::Map::new();
        let mut credentials = serde_json::Map::new();
        for (k, v) in &self.settings {
            if SECRET_KEYS.contains(&k.as_str()) {
                credentials.insert(k.clone(), v.clone());
            } else {
                config.insert(k.clone(), v.clone());
            }
        }
        NewConnection { name: self.name.clone(), system: self.system.clone(), config: Value::Object(config), credentials: Value::Object(credentials) }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowConfig {
    /// A shipped template by name…
    pub template: Option<String>,
    /// …or a flow file (relative to the config file).
    pub file: Option<PathBuf>,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

impl Config {
    /// Reads a config file; errors name the file and the line and column.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        let mut cfg: Config = toml::from_str(&text).map_err(|e| {
            let (line, col) = e.span().map(|s| line_col(&text, s.start)).unwrap_or((1, 1));
            anyhow::anyhow!("{}:{line}:{col}: {}", path.display(), e.message())
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for f in &mut cfg.flows {
            if let Some(file) = &f.file
                && file.is_relative()
            {
                f.file = Some(base.join(file));
            }
            if f.template.is_some() == f.file.is_some() {
                anyhow::bail!("{}: each [[flows]] entry needs exactly one of `template` or `file`", path.display());
            }
        }
        cfg.apply_env();
        Ok(cfg)
    }

    /// Environment overrides: `LEDGERLINK_DATA_DIR`, `LEDGERLINK_STORE_URL`, `LEDGERLINK_MASTER_KEY`.
    pub fn apply_env(&mut self) {
        if let Ok(v) = std::env::var("LEDGERLINK_DATA_DIR") {
            self.data_dir = Some(PathBuf::from(v));
        }
        if let Ok(v) = std::env::var("LEDGERLINK_STORE_URL") {
            self.store_url = Some(v);
        }
        self.master_key_env = std::env::var("LEDGERLINK_MASTER_KEY").ok();
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| PathBuf::from("ledgerlink-data"))
    }

    pub fn store_url(&self) -> String {
        self.store_url.clone().unwrap_or_else(|| format!("sqlite://{}", self.data_dir().join("ledgerlink.sqlite").display()))
    }

    pub fn settings(&self) -> crate::EngineSettings {
        let mut s = crate::EngineSettings::default();
        if let Some(c) = self.engine.concurrency {
            s.concurrency = c.max(1);
        }
        if let Some(m) = self.engine.max_attempts {
            s.max_attempts = m.max(1);
        }
        if let Some(l) = self.engine.lease_seconds {
            s.lease = chrono::Duration::seconds(l.max(1));
        }
        if let Some(w) = &self.engine.worker_id {
            s.worker_id = w.clone();
        }
        if let Some(on) = self.engine.connection_leases {
            s.connection_leases = Some(on);
        }
        if let Some(l) = self.engine.connection_lease_seconds {
            s.connection_lease_ttl = chrono::Duration::seconds(l.max(1));
        }
        s
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_split_from_settings_and_hidden_from_debug() {
        let c: Config = toml::from_str(
            r#"
            [[connections]]
            name = "qb"
            system = "quickbooks"
            realm_id = "123"
            client_secret = "s3cret"
            refresh_token = "rt"
            "#,
        )
        .unwrap();
        let conn = c.connections[0].to_new_connection();
        assert_eq!(conn.config["realm_id"], "123");
        assert!(conn.config.get("client_secret").is_none());
        assert_eq!(conn.credentials["client_secret"], "s3cret");
        assert!(!format!("{:?}", c.connections[0]).contains("s3cret"));
    }

    #[test]
    fn bad_config_names_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "listen = \"x\"\nbogus = 1\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("c.toml:2:1"), "{e}");
        assert!(e.contains("bogus"), "{e}");
    }
}
