//! Group commit: the engine's writes, from however many jobs run at once, go through one connection that commits
//! the writes queued meanwhile together.
//!
//! Why: an autocommitted statement pays for a whole transaction of its own. On SQLite (one writer at a time)
//! that is its pages appended to the WAL, the WAL index updated, a checkpoint every thousand pages, while the
//! other pooled connections wait out the write lock in `busy_timeout` sleeps and then find their page caches
//! stale. On PostgreSQL it is a WAL flush to disk per commit. A job makes about eight writes; a hundred jobs at
//! once made eight hundred transactions where a few dozen do.
//!
//! How: a write is a closure run against the writer's connection. The writer takes every write waiting (up to
//! [`MAX_BATCH`]) and runs them inside one transaction. A caller hears its result only after the `COMMIT`, so a
//! write that returned is exactly as durable as an autocommitted one was; if the commit itself fails, every write
//! of the batch fails with it and none of them took effect. When a write of the batch fails, the transaction is
//! rolled back and each of its writes runs again alone, in a transaction of its own, so the failure stays that
//! write's and the others take effect as if they had never shared a transaction. That is why a write must be
//! safe to run twice after a rollback (it is: it only talks to the database). Savepoints would do the same per
//! write, but each is one more round trip to the connection for every write, to serve the rare failure.
//!
//! Reads stay on the pool: they never wait for the writer (WAL readers on SQLite, MVCC on PostgreSQL) and see
//! each batch once it committed.

use std::future::Future;
use std::pin::Pin;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sqlx::{Connection, Database, Executor};
use tokio::sync::{mpsc, oneshot};

use crate::{Result, StoreError};

/// A boxed future that may borrow the writer's connection for `'c`.
pub(crate) type BoxFuture<'c, T> = Pin<Box<dyn Future<Output = T> + Send + 'c>>;

/// A database the writer can batch for: how it opens the batch's transaction.
pub(crate) trait Batching: Database {
    /// SQLite takes the write lock at once (`IMMEDIATE`), so the batch never fails half-way to upgrade its lock.
    const BEGIN: &'static str;
}

impl Batching for sqlx::Sqlite {
    const BEGIN: &'static str = "BEGIN IMMEDIATE";
}

impl Batching for sqlx::Postgres {
    const BEGIN: &'static str = "BEGIN";
}

/// The most writes one transaction carries, so a flood of writes still commits (and answers) in steps.
const MAX_BATCH: usize = 256;

/// Answers a write's caller once the fate of its batch is known (`None`: committed; `Some`: the commit failed).
type Answer = Box<dyn FnOnce(Option<&str>) + Send>;

/// Runs a write against the connection, keeping its result for the answer; says whether it succeeded.
type Run<DB> = Box<dyn for<'c> FnMut(&'c mut <DB as Database>::Connection) -> BoxFuture<'c, bool> + Send>;

/// One queued write.
struct Op<DB: Database> {
    run: Run<DB>,
    answer: Answer,
}

/// The handle writes are sent through; the writer task ends when the last handle is dropped.
pub(crate) struct Writer<DB: Database> {
    queue: mpsc::UnboundedSender<Op<DB>>,
    /// Transactions committed so far (each carrying one or more writes); read by the tests.
    #[cfg_attr(not(test), allow(dead_code))]
    commits: Arc<AtomicU64>,
}

impl<DB: Database> Clone for Writer<DB> {
    fn clone(&self) -> Self {
        Writer { queue: self.queue.clone(), commits: self.commits.clone() }
    }
}

impl<DB: Database> std::fmt::Debug for Writer<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl<DB: Batching> Writer<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    /// Opens the writer's connection with `connect` and starts the writer on a thread of its own.
    ///
    /// Why a thread of its own: the writer is the one path every job's writes take, one statement after
    /// another. As a task among the engine's hundreds of jobs, each of its statements waited for its turn on a
    /// busy worker before the next could be sent. On its own thread, with its own small runtime driving its
    /// connection, it is woken by the operating system as soon as the database answers. The connection is
    /// opened there too, so its socket belongs to that runtime.
    pub(crate) async fn start<C>(connect: C) -> Result<Writer<DB>>
    where
        C: Future<Output = Result<DB::Connection>> + Send + 'static,
    {
        let (queue, ops) = mpsc::unbounded_channel();
        let commits = Arc::new(AtomicU64::new(0));
        let (opened_tx, opened) = oneshot::channel::<Result<()>>();
        let counter = commits.clone();
        let io_error = |e| StoreError::Database(sqlx::Error::Io(e));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(io_error)?;
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match connect.await {
                        Ok(conn) => {
                            let _ = opened_tx.send(Ok(()));
                            run(conn, ops, counter).await;
                        }
                        Err(e) => {
                            let _ = opened_tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(io_error)?;
        opened.await.map_err(|_| StoreError::Database(sqlx::Error::WorkerCrashed))??;
        Ok(Writer { queue, commits })
    }

    /// How many transactions the writer has committed.
    #[cfg(test)]
    pub(crate) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Runs `op` in the next batch and returns its result once that batch committed. `op` may be run a second
    /// time, alone, if another write of its batch failed (see the module docs).
    pub(crate) async fn write<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> Fn(&'c mut DB::Connection) -> BoxFuture<'c, Result<T>> + Send + Sync + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let slot: Arc<Mutex<Option<Result<T>>>> = Arc::new(Mutex::new(None));
        let op = Arc::new(op);
        let kept = slot.clone();
        let run: Run<DB> = Box::new(move |conn| {
            let (op, kept) = (op.clone(), kept.clone());
            Box::pin(async move {
                let result = op(conn).await;
                let ok = result.is_ok();
                *kept.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
                ok
            })
        });
        let answer: Answer = Box::new(move |commit_failed: Option<&str>| {
            let result = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
            let result = match (commit_failed, result) {
                (_, None) => Err(StoreError::Database(sqlx::Error::WorkerCrashed)),
                (Some(reason), Some(Ok(_))) => Err(commit_error(reason)),
                (_, Some(result)) => result,
            };
            let _ = tx.send(result);
        });
        self.queue.send(Op { run, answer }).map_err(|_| StoreError::Database(sqlx::Error::WorkerCrashed))?;
        rx.await.map_err(|_| StoreError::Database(sqlx::Error::WorkerCrashed))?
    }
}

fn commit_error(reason: &str) -> StoreError {
    StoreError::Database(sqlx::Error::Io(std::io::Error::other(format!(
        "the transaction holding this write could not be committed: {reason}"
    ))))
}

async fn run<DB: Batching>(mut conn: DB::Connection, mut ops: mpsc::UnboundedReceiver<Op<DB>>, commits: Arc<AtomicU64>)
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut batch: Vec<Op<DB>> = Vec::new();
    while ops.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let transactions = commit_batch(&mut conn, std::mem::take(&mut batch)).await;
        commits.fetch_add(transactions, Ordering::Relaxed);
    }
    let _ = conn.close().await;
}

/// Runs one batch in one transaction and answers each write; see the module docs for a write that fails.
/// Returns how many transactions that took.
async fn commit_batch<DB: Batching>(conn: &mut DB::Connection, mut batch: Vec<Op<DB>>) -> u64
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    if conn.execute(DB::BEGIN).await.is_ok() {
        let mut all_ok = true;
        for op in batch.iter_mut() {
            if !(op.run)(conn).await {
                all_ok = false;
                break;
            }
        }
        if all_ok {
            let failed = match conn.execute("COMMIT").await {
                Ok(_) => None,
                Err(e) => {
                    let _ = conn.execute("ROLLBACK").await;
                    Some(e.to_string())
                }
            };
            for op in batch {
                (op.answer)(failed.as_deref());
            }
            return 1;
        }
        if let Err(e) = conn.execute("ROLLBACK").await {
            tracing::warn!(error = %e, "rolling back a batch of writes failed");
        }
    }
    // One at a time, each in a transaction of its own (a write may be several statements).
    let transactions = batch.len() as u64;
    for mut op in batch {
        let begun = conn.execute(DB::BEGIN).await.is_ok();
        let ok = (op.run)(conn).await;
        let failed = match (begun, ok) {
            (false, _) => None,
            (true, false) => {
                let _ = conn.execute("ROLLBACK").await;
                None
            }
            (true, true) => match conn.execute("COMMIT").await {
                Ok(_) => None,
                Err(e) => {
                    let _ = conn.execute("ROLLBACK").await;
                    Some(e.to_string())
                }
            },
        };
        (op.answer)(failed.as_deref());
    }
    transactions
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::ConnectOptions;
    use sqlx::sqlite::SqliteConnectOptions;
    use std::str::FromStr;

    use sqlx::sqlite::SqliteConnection;

    type Writer = super::Writer<sqlx::Sqlite>;

    async fn open(dir: &tempfile::TempDir) -> (Writer, SqliteConnection) {
        let url = format!("sqlite://{}", dir.path().join("w.sqlite").display());
        let options = SqliteConnectOptions::from_str(&url).unwrap().create_if_missing(true);
        let mut setup = options.connect().await.unwrap();
        setup
            .execute("PRAGMA journal_mode = WAL; CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .await
            .unwrap();
        (Writer::start(async move { Ok(options.connect().await?) }).await.unwrap(), setup)
    }

    fn insert(writer: &Writer, k: i64, v: Option<&'static str>) -> impl Future<Output = Result<u64>> + use<> {
        let writer = writer.clone();
        async move {
            writer
                .write(move |conn| {
                    Box::pin(async move {
                        // Two statements: a failure in the second must undo the first (the rollback).
                        sqlx::query("INSERT INTO t (k, v) VALUES (?1, 'placeholder')")
                            .bind(k + 1000)
                            .execute(&mut *conn)
                            .await?;
                        Ok(sqlx::query("INSERT INTO t (k, v) VALUES (?1, ?2)")
                            .bind(k)
                            .bind(v)
                            .execute(&mut *conn)
                            .await?
                            .rows_affected())
                    })
                })
                .await
        }
    }

    async fn keys(reader: &mut SqliteConnection) -> Vec<i64> {
        let rows: Vec<(i64,)> = sqlx::query_as("SELECT k FROM t ORDER BY k").fetch_all(reader).await.unwrap();
        rows.into_iter().map(|r| r.0).collect()
    }

    #[tokio::test]
    async fn concurrent_writes_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, mut reader) = open(&dir).await;
        let tasks: Vec<_> = (0..200i64).map(|k| tokio::spawn(insert(&writer, k, Some("ok")))).collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), 1);
        }
        // Every write that returned is visible to another connection.
        assert_eq!(keys(&mut reader).await.len(), 400);
        assert!(writer.commits() < 50, "200 concurrent writes took {} transactions", writer.commits());
    }

    #[tokio::test]
    async fn a_failing_write_is_undone_alone_and_the_others_of_its_batch_take_effect() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, mut reader) = open(&dir).await;
        // 200 writes at once; every tenth violates NOT NULL in its second statement.
        let tasks: Vec<_> = (0..200i64).map(|k| tokio::spawn(insert(&writer, k, (k % 10 != 0).then_some("ok")))).collect();
        let mut failed = Vec::new();
        for (k, t) in tasks.into_iter().enumerate() {
            if t.await.unwrap().is_err() {
                failed.push(k as i64);
            }
        }
        assert_eq!(failed, (0..200).filter(|k| k % 10 == 0).collect::<Vec<_>>());
        // Nothing of a failed write (not even its first statement), everything of the others.
        let ok: Vec<i64> = (0..200).filter(|k| k % 10 != 0).collect();
        let expected: Vec<i64> = ok.iter().copied().chain(ok.iter().map(|k| k + 1000)).collect();
        assert_eq!(keys(&mut reader).await, expected);
    }

    #[tokio::test]
    async fn a_write_waits_for_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, mut reader) = open(&dir).await;
        insert(&writer, 7, Some("seven")).await.unwrap();
        let v: (String,) = sqlx::query_as("SELECT v FROM t WHERE k = 7").fetch_one(&mut reader).await.unwrap();
        assert_eq!(v.0, "seven");
    }
}
