//! End-to-end tests: the real daemon binary on a loopback port, real mutual TLS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod access;
mod dev_mode;
mod durability;
mod fixtures;
mod harness;
mod keys;
mod leaks;
mod lifecycle;
mod ops;
mod regressions;
mod tenants;
