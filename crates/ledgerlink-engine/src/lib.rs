//! The ledgerlink runtime.
//!
//! Layout: a trigger ([`poller`]) reads each flow's source for changes and turns every new (id, version) into one
//! durable job with an idempotency key; the [`worker`] claims due jobs from the store under a lease and hands each to
//! the [`executor`], which runs the flow's steps: reads, matching through the link table, exactly-once creates
//! (the intent is stored before the call, the call carries a deterministic idempotency key, the link is stored
//! after), write-backs that are skipped when nothing would change. Failures are classified: retryable ones are
//! retried with exponential backoff and jitter (honouring Retry-After), the rest go to review with the reason.
//! [`connections`] builds connectors from stored connections, with tokens kept sealed in the store.
//! [`Engine`] ties them together; [`config`] is the one typed settings struct.

pub mod config;
pub mod connections;
pub mod executor;
pub mod job_control;
pub mod keys;
pub mod locks;
pub mod matching;
pub mod notifications;
pub mod own_writes;
pub mod reconcile;
pub mod review;
pub mod poller;
pub mod recent;
pub mod seen;
pub mod stats;
pub mod templates;
pub mod triggers;
pub mod webhooks;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ledgerlink_connectors::Connector;
use ledgerlink_flow::Flow;
use ledgerlink_store::Store;

pub use config::{Config, ConnectionConfig, FlowConfig};
pub use stats::{Stats, StatsSnapshot};

/// The time source of the engine. Tests and the demo share one so retries and cursors agree.
pub fn now() -> DateTime<Utc> {
    Utc::now()
}

/// Everything a running engine needs: the store, one connector per connection, the loaded flows.
#[derive(Clone)]
pub struct Engine {
    pub store: Arc<dyn Store>,
    pub connectors: Arc<BTreeMap<String, Arc<dyn Connector>>>,
    /// One notifier per Slack or email connection, for `notify` steps.
    pub notifiers: Arc<BTreeMap<String, Arc<notifications::Notifier>>>,
    pub flows: Arc<BTreeMap<String, Arc<Flow>>>,
    pub stats: Arc<Stats>,
    pub settings: EngineSettings,
    /// Serialises creates of the same target record within this process.
    pub locks: Arc<locks::KeyedLocks>,
    /// Rung when this process queues a job, so an idle worker starts it at once instead of at its next look.
    pub work_queued: Arc<tokio::sync::Notify>,
    /// Linked target records read a moment ago (see [`recent`]).
    pub recent: Arc<recent::RecentRecords>,
    /// Versions this process wrote back and recorded (see [`own_writes`]).
    pub own_writes: Arc<own_writes::OwnWrites>,
}

/// Jobs run at once by default. At 4 or 16 the engine spent most of its time waiting with its CPU idle (in
/// `ledgerlink bench throughput`, 16 jobs made a quarter of the rate of 128; see `docs/benchmarks.md`), and a job in
/// flight costs little memory.
pub const DEFAULT_CONCURRENCY: usize = 128;

/// Runtime knobs (part of [`Config`]).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Identifies this process in job leases.
    pub worker_id: String,
    /// Jobs run at once by this process. Most of a job's time is waiting (for a QuickBooks batch, a Salesforce
    /// Collections call, a group commit), so throughput grows with it far past the number of cores; the
    /// connectors' limiters, not this number, keep the APIs within their limits.
    pub concurrency: usize,
    /// How long a claimed job is leased before another worker may take it over.
    pub lease: chrono::Duration,
    /// Attempts before a job is dead-lettered.
    pub max_attempts: i32,
    /// First retry delay; doubles per attempt (with jitter), capped at `retry_max`.
    pub retry_base: chrono::Duration,
    pub retry_max: chrono::Duration,
    /// How long the worker waits when no job is due.
    pub idle_wait: std::time::Duration,
    /// Overrides every flow's poll interval (the demo polls faster than a production default).
    pub poll_interval: Option<std::time::Duration>,
    /// Whether the worker runs a connection's jobs only while it holds that connection's lease (see
    /// [`worker`]). `None`: yes on PostgreSQL, where several workers may share the queue; no on SQLite.
    pub connection_leases: Option<bool>,
    /// How long a connection lease lasts unless renewed: how soon a dead worker's connections are taken over.
    pub connection_lease_ttl: chrono::Duration,
    /// A held connection with no work for this long is released, so another worker may take it.
    pub connection_idle_release: std::time::Duration,
    /// How long a linked record (a customer, an item) read by `find_or_create` is reused instead of read again;
    /// zero reads it every time (see [`recent`]).
    pub linked_copy_ttl: std::time::Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            worker_id: format!("worker-{}", std::process::id()),
            concurrency: DEFAULT_CONCURRENCY,
            lease: chrono::Duration::seconds(60),
            max_attempts: 8,
            retry_base: chrono::Duration::milliseconds(500),
            retry_max: chrono::Duration::minutes(10),
            idle_wait: std::time::Duration::from_millis(100),
            poll_interval: None,
            connection_leases: None,
            connection_lease_ttl: chrono::Duration::seconds(30),
            connection_idle_release: std::time::Duration::from_secs(10),
            linked_copy_ttl: std::time::Duration::from_secs(5),
        }
    }
}

impl Engine {
    pub fn new(
        store: Arc<dyn Store>,
        connectors: BTreeMap<String, Arc<dyn Connector>>,
        flows: Vec<Flow>,
        settings: EngineSettings,
    ) -> anyhow::Result<Engine> {
        Engine::with_notifiers(store, connectors, BTreeMap::new(), flows, settings)
    }

    /// [`Engine::new`] with notification connections (Slack, email) for the flows' `notify` steps.
    pub fn with_notifiers(
        store: Arc<dyn Store>,
        connectors: BTreeMap<String, Arc<dyn Connector>>,
        notifiers: BTreeMap<String, Arc<notifications::Notifier>>,
        flows: Vec<Flow>,
        settings: EngineSettings,
    ) -> anyhow::Result<Engine> {
        let mut by_name = BTreeMap::new();
        for flow in flows {
            for step in &flow.steps {
                // A notify step needs a notification connection; every other step a data connection.
                let (Some(conn), notify) = (step.kind.connection(), matches!(step.kind, ledgerlink_flow::StepKind::Notify { .. })) else {
                    continue;
                };
                let (known, what): (Vec<&String>, &str) = if notify {
                    (notifiers.keys().collect(), "notification (slack or email) connections")
                } else {
                    (connectors.keys().collect(), "data connections")
                };
                if !known.iter().any(|k| *k == conn) {
                    anyhow::bail!(
                        "flow `{}` ({}) step `{}` uses connection `{conn}`, which is not one of the configured {what} ({})",
                        flow.name,
                        flow.file,
                        step.id,
                        known.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    );
                }
            }
            for conn in flow_connections(&flow) {
                if !connectors.contains_key(&conn) && !notifiers.contains_key(&conn) {
                    anyhow::bail!(
                        "flow `{}` ({}) uses connection `{}`, which is not configured (configured: {})",
                        flow.name,
                        flow.file,
                        conn,
                        connectors.keys().chain(notifiers.keys()).cloned().collect::<Vec<_>>().join(", ")
                    );
                }
            }
            if by_name.insert(flow.name.clone(), Arc::new(flow)).is_some() {
                anyhow::bail!("two flows are named the same; flow names must be unique");
            }
        }
        Ok(Engine {
            store,
            connectors: Arc::new(connectors),
            notifiers: Arc::new(notifiers),
            flows: Arc::new(by_name),
            stats: Arc::new(Stats::default()),
            locks: Arc::new(locks::KeyedLocks::default()),
            work_queued: Arc::new(tokio::sync::Notify::new()),
            recent: Arc::new(recent::RecentRecords::new(settings.linked_copy_ttl)),
            own_writes: Arc::default(),
            settings,
        })
    }

    pub fn connector(&self, name: &str) -> anyhow::Result<&Arc<dyn Connector>> {
        self.connectors.get(name).ok_or_else(|| anyhow::anyhow!("connection `{name}` is not configured"))
    }
}

/// Every connection a flow's trigger and steps use.
pub fn flow_connections(flow: &Flow) -> Vec<String> {
    let mut out = Vec::new();
    match &flow.trigger {
        ledgerlink_flow::Trigger::Poll { connection, .. } => out.push(connection.clone()),
        ledgerlink_flow::Trigger::Schedule { .. } => {}
    }
    for step in &flow.steps {
        if let Some(conn) = step.kind.connection() {
            out.push(conn.to_string());
        }
        if let ledgerlink_flow::StepKind::FindOrCreate { source, .. } | ledgerlink_flow::StepKind::CreateInvoice { source, .. } =
            &step.kind
        {
            out.push(source.connection.clone());
        }
    }
    out.sort();
    out.dedup();
    out
}

impl Engine {
    /// Whether an admin left `flow` switched on (the web UI's Flows page). A switched-off flow takes no new
    /// changes and fires no schedule; its cursor stays where it was, so switching it on again catches up. A store
    /// error counts as on: a pause is a convenience, not a safety stop.
    pub async fn flow_switched_on(&self, flow: &str) -> bool {
        let Some(web) = self.store.web() else { return true };
        match web.flow_switches().await {
            Ok(switches) => switches.iter().find(|s| s.flow == flow).is_none_or(|s| s.enabled),
            Err(e) => {
                tracing::warn!(flow, error = %e, "flow switches could not be read; running the flow");
                true
            }
        }
    }

    /// Polls every flow once, so that a new flow's baseline is taken before anything else happens: changes made
    /// after this returns are handled; changes from before a flow existed are not.
    pub async fn prime(&self) -> anyhow::Result<()> {
        for flow in self.flows.values() {
            if let ledgerlink_flow::Trigger::Poll { .. } = flow.trigger {
                poller::poll_and_record(self, flow).await?;
            }
            if flow.trigger.schedule().is_some() {
                triggers::tick(self, flow, now()).await?;
            }
        }
        Ok(())
    }

    /// Runs every flow's poll trigger and the worker until `shutdown` turns true.
    pub async fn run(&self, shutdown: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        for flow in self.flows.values() {
            // A record trigger with a schedule (see `triggers`) also fires on it, beside its poll.
            if let ledgerlink_flow::Trigger::Poll { schedule: Some(_), .. } = flow.trigger {
                let (engine, flow, mut stop) = (self.clone(), flow.clone(), shutdown.clone());
                tasks.spawn(async move { schedule_loop(&engine, &flow, &mut stop).await });
            }
            let engine = self.clone();
            let flow = flow.clone();
            let mut stop = shutdown.clone();
            tasks.spawn(async move {
                let ledgerlink_flow::Trigger::Poll { interval_seconds, .. } = &flow.trigger else {
                    schedule_loop(&engine, &flow, &mut stop).await;
                    return;
                };
                let every = engine.settings.poll_interval.unwrap_or(std::time::Duration::from_secs((*interval_seconds).max(1)));
                loop {
                    if *stop.borrow() {
                        break;
                    }
                    let polled = if engine.flow_switched_on(&flow.name).await { poller::poll_and_record(&engine, &flow).await } else { Ok(Default::default()) };
                    match polled {
                        Ok(r) if r.enqueued > 0 => tracing::info!(flow = %flow.name, new = r.new_changes, enqueued = r.enqueued, "poll"),
                        Ok(_) => {}
                        Err(e) => {
                            Stats::inc(&engine.stats.errors);
                            tracing::warn!(flow = %flow.name, error = %e, "poll failed; will try again");
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = stop.changed() => {}
                    }
                }
            });
        }
        let worker = worker::run(self.clone(), shutdown);
        let result = worker.await;
        while tasks.join_next().await.is_some() {}
        result
    }
}

/// Ticks one scheduled flow until shutdown, sleeping until its next firing (at most a minute at a time, so a
/// clock change or a firing enqueued by another worker is noticed).
async fn schedule_loop(engine: &Engine, flow: &Flow, stop: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        let ticked = if engine.flow_switched_on(&flow.name).await { triggers::tick(engine, flow, now()).await } else { Ok(now() + chrono::Duration::seconds(5)) };
        let wait = match ticked {
            Ok(next) => (next - now()).to_std().unwrap_or_default().min(std::time::Duration::from_secs(60)),
            Err(e) => {
                Stats::inc(&engine.stats.errors);
                tracing::warn!(flow = %flow.name, error = %e, "schedule tick failed; will try again");
                std::time::Duration::from_secs(30)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait.max(std::time::Duration::from_millis(50))) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Opens the store a config names (creating the data directory and its master key file if needed).
pub async fn open_store(cfg: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let data_dir = cfg.data_dir();
    std::fs::create_dir_all(&data_dir)?;
    let key = ledgerlink_store::MasterKey::load(&data_dir, cfg.master_key_env.as_deref())?;
    Ok(ledgerlink_store::open(&cfg.store_url(), ledgerlink_store::SecretCipher::new(key)).await?)
}

/// Opens the store, imports configured connections, builds connectors and loads flows.
///
/// A connection from the config is imported the first time; afterwards the store's copy wins, because its
/// refresh token has rotated since (the config's would be stale). Non-secret settings are refreshed from the file.
pub async fn bootstrap(cfg: &Config) -> anyhow::Result<Engine> {
    assemble(cfg, true).await
}

/// Like [`bootstrap`], but leaves running jobs alone: for commands that only look (`flows dry-run`).
pub async fn load_for_inspection(cfg: &Config) -> anyhow::Result<Engine> {
    assemble(cfg, false).await
}

async fn assemble(cfg: &Config, recover_leases: bool) -> anyhow::Result<Engine> {
    let store = open_store(cfg).await?;
    for c in &cfg.connections {
        let new = c.to_new_connection();
        let merged = match store.get_connection(&c.name).await? {
            Some(existing) => ledgerlink_store::NewConnection { credentials: existing.credentials, ..new },
            None => new,
        };
        store.put_connection(&merged).await?;
    }
    // Jobs left running by a previous process of ours are taken back now rather than when their leases expire:
    // the embedded store has one process, so every running job there is orphaned; on PostgreSQL only a worker
    // with an explicitly configured (stable) id knows which leases were its own.
    let settings = cfg.settings();
    let orphan_owner = if store.backend() == "sqlite" { None } else { cfg.engine.worker_id.as_deref() };
    if recover_leases && (store.backend() == "sqlite" || orphan_owner.is_some()) {
        let n = store.recover_leases(orphan_owner, now()).await?;
        if n > 0 {
            tracing::warn!(jobs = n, "took back jobs left running by a previous process");
        }
        // Likewise its connection, refresh and heartbeat leases, which would otherwise hold up this process (and
        // the others) until they expire.
        let n = store.release_leases_of(orphan_owner).await?;
        if n > 0 {
            tracing::info!(leases = n, "dropped leases left by a previous process");
        }
    }
    let connectors = connections::build_all(store.clone()).await?;
    let notifiers = notifications::build_all(store.clone()).await?;
    let mut flows = Vec::new();
    for f in &cfg.flows {
        let flow = match (&f.template, &f.file) {
            (Some(t), _) => templates::load(t, &f.params)?,
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read flow {}: {e}", path.display()))?;
                ledgerlink_flow::parse_flow(&text, &path.display().to_string(), &f.params).map_err(|e| anyhow::anyhow!("{e}"))?
            }
            (None, None) => anyhow::bail!("a [[flows]] entry needs `template` or `file`"),
        };
        flows.push(flow);
    }
    Engine::with_notifiers(store, connectors, notifiers, flows, settings)
}
