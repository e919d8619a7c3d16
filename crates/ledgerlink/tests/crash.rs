//! The engine is killed with SIGKILL at random moments of a run — twenty times over a few hundred closed
//! opportunities — and started again each time; at the end every opportunity has exactly one invoice in QuickBooks.
//! Then the same with three workers sharing one PostgreSQL database, one of them killed over and over.

mod common;

use std::time::Duration;

use ledgerlink::demo::Scenario;
use rand::{Rng, SeedableRng};

fn rng() -> rand::rngs::StdRng {
    let seed = std::env::var("LEDGERLINK_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("crash test seed {seed} (set LEDGERLINK_CRASH_SEED to repeat)");
    rand::rngs::StdRng::seed_from_u64(seed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sigkills_mid_run_leave_exactly_one_invoice_per_closed_opportunity() {
    let w = common::world().await;
    let n = 300;
    let scenario = Scenario::prepare(&w.sf, &w.qb, n).await.unwrap();
    // One job at a time: between two looks at QuickBooks the engine gets only a few invoices further, so each
    // kill lands a few invoices after the last and twenty of them land before the run ends.
    let config = w.config("single", None, "solo", 1);
    let mut rng = rng();

    let mut kills_mid_run = 0;
    let mut first = true;
    let mut invoiced = 0;
    while kills_mid_run < 20 {
        let mut child = common::start_engine(&config);
        if std::mem::take(&mut first) {
            w.close_all(&scenario).await;
        }
        // A random moment: after a random amount of further progress (a few invoices).
        let target = invoiced + rng.random_range(1..=8);
        invoiced = w.wait_for_invoices(&scenario, target, Duration::from_secs(60)).await;
        common::kill(&mut child);
        assert!(invoiced >= target, "the engine made no progress before kill {} ({invoiced} invoiced)", kills_mid_run + 1);
        if invoiced >= n {
            break;
        }
        kills_mid_run += 1;
    }
    eprintln!("{kills_mid_run} kills landed mid-run; {invoiced} of {n} invoiced at the last");
    assert_eq!(kills_mid_run, 20, "twenty kills landed while the run was in progress");

    let mut child = common::start_engine(&config);
    let got = w.wait_for_invoices(&scenario, n, Duration::from_secs(180)).await;
    w.assert_exactly_one_invoice_each(&scenario).await;
    common::kill(&mut child);
    assert_eq!(got, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_on_postgres_one_killed_repeatedly_leave_exactly_one_invoice_each() {
    let Some(db) = ledgerlink_store::testing::TestDatabase::create().await else { return };
    let w = common::world().await;
    let n = 200;
    let scenario = Scenario::prepare(&w.sf, &w.qb, n).await.unwrap();
    // Two jobs at a time per worker: three workers stay under QuickBooks' 10 concurrent requests.
    let configs: Vec<_> = ["w1", "w2", "w3"].iter().map(|id| w.config(id, Some(&db.url), id, 2)).collect();
    let mut rng = rng();

    let mut w1 = common::start_engine(&configs[0]);
    w.close_all(&scenario).await;
    let mut w3 = common::start_engine(&configs[2]);
    let mut invoiced = 0;
    let mut kills = 0;
    while kills < 10 {
        let mut w2 = common::start_engine(&configs[1]);
        let target = invoiced + rng.random_range(3..=12);
        invoiced = w.wait_for_invoices(&scenario, target, Duration::from_secs(60)).await;
        common::kill(&mut w2);
        assert!(invoiced >= target, "no progress while worker 2 lived ({invoiced} invoiced)");
        if invoiced >= n {
            break;
        }
        kills += 1;
    }
    assert!(kills >= 5, "worker 2 was killed mid-run only {kills} times");
    let mut w2 = common::start_engine(&configs[1]);
    let got = w.wait_for_invoices(&scenario, n, Duration::from_secs(180)).await;
    w.assert_exactly_one_invoice_each(&scenario).await;
    for c in [&mut w1, &mut w2, &mut w3] {
        common::kill(c);
    }
    assert_eq!(got, n);
    drop(db);
}
