//! Flow definitions for ledgerlink.
//!
//! Layout: [`def`] holds the validated flow ([`Flow`], its [`Trigger`] and [`Step`]s); [`expr`] wraps CEL
//! expressions ([`Expr`]) evaluated against JSON variables; [`parse`] turns a TOML flow file plus template
//! parameters into a [`Flow`], or into every error found, each with `file:line:column`. Nothing here does I/O:
//! the engine reads files and runs flows.

pub mod def;
pub mod expr;
pub mod parse;

pub use def::*;
pub use expr::{EvalError, Expr, Scope, Vars};
pub use parse::{FlowError, FlowErrors, parse_flow};
