//! The `ledgerlink` command's library.
//!
//! Layout: [`demo`] runs the sandboxes, the engine on embedded SQLite and the HTTP port in one process with a
//! scripted scenario ([`demo::Scenario`], also used by the crash tests); [`sandbox_cmd`] serves one sandbox on its
//! own; [`bench`] measures the engine (throughput, QuickBooks limits, webhook latency, backfill memory); [`serve`] runs the engine from a config file; [`flows_cmd`] validates flow files and lists templates; [`templates_install`] adds a template to a config file; [`admin_cmd`] lists and acts on jobs and review items; [`reports_cmd`] shows the reports flows kept; [`users_cmd`] adds web UI administrators; [`web_fixture`] serves the web UI over a fresh store and a QuickBooks sandbox for the browser tests.

pub mod admin_cmd;
pub mod bench;
pub mod demo;
pub mod flows_cmd;
pub mod reports_cmd;
pub mod sandbox_cmd;
pub mod serve;
pub mod templates_install;
pub mod users_cmd;
pub mod web_fixture;
