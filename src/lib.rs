//! assignd: rule-based auto-assignment of HelpCrunch chats.
//!
//! Data flows one way: a queue row is claimed by the [`worker`], its chat is
//! matched against the [`rules`] by a pure decision function, the
//! assignment goes to HelpCrunch through the [`helpcrunch`] client and its
//! single [`limiter`], and the outcome is recorded by the [`store`].

pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod diag;
pub mod domain;
pub mod duration;
pub mod experiment;
pub mod explain;
pub mod helpcrunch;
pub mod http;
pub mod limiter;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod rate;
pub mod report;
pub mod rules;
pub mod sandbox;
pub mod secrets;
pub mod simulate;
pub mod store;
pub mod timeline;
pub mod worker;
