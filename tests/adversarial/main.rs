//! The standing adversarial suite: what a hostile world does to the real
//! daemon (garbage producer rows, stalled clients, a misbehaving upstream,
//! truncated rules, storage faults, signals), each case checked end to end
//! against the real binary, the real sandbox and real SQLite files.

#[path = "../common/mod.rs"]
mod common;

mod listener;
mod panics;
mod producers;
mod rules;
mod shutdown;
mod upstream;
