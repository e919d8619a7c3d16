//! The `ledgerlink` command's library.
//!
//! Layout: [`demo`] runs the sandboxes, the engine on embedded SQLite and the HTTP port in one process with a
//! scripted scenario ([`demo::Scenario`], also used by the crash tests); [`sandbox_cmd`] serves one sandbox on its
//! own; [`bench`] measures the engine (throughput, QuickBooks limits, webhook latency, backfill memory); [`serve`] runs the engine from a config file; [`flows_cmd`] validates flow files and lists templates; [`admin_cmd`] lists and acts on jobs and review items; [`reports_cmd`] shows the reports flows kept.

pub mod admin_cmd;
pub mod bench;
pub mod demo;
pub mod flows_cmd;
pub mod reports_cmd;
pub mod sandbox_cmd;
pub mod serve;
