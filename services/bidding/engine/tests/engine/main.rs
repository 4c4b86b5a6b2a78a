//! The engine's one integration test binary.
//!
//! * `rules_*`: table-driven tests, one module per rule family of the issue.
//! * `reference`: a deliberately simple model that recomputes outcomes from the
//!   full command history, written independently of the engine's incremental code.
//! * `properties`: proptest comparing the engine with the reference model.
//! * `simulator`: a seeded simulator of thousands of random auctions of every
//!   format; a failure prints `SIM_SEED=<seed>` to replay exactly that run.

// Tests fail by panicking; unwrap and expect say exactly where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod properties;
mod reference;
mod rules_common;
mod rules_dutch;
mod rules_english;
mod rules_live;
mod rules_sealed;
mod rules_soft_close;
mod rules_update;
mod scenario;
mod simulator;
mod support;
