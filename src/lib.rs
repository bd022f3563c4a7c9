//! tokenvault: a payment tokenization vault. Cards and bank accounts in over mutual
//! TLS, opaque tokens out; raw data only envelope-encrypted at rest.
//!
//! See ARCHITECTURE.md for the module map and the request path.

#[cfg(feature = "rocksdb")]
pub mod admin;
pub mod api;
pub mod audit;
pub mod auth;
pub mod client;
pub mod clock;
pub mod commit;
pub mod config;
pub mod cork;
pub mod crypto;
#[cfg(feature = "rocksdb")]
pub mod daemon;
#[doc(hidden)]
pub mod fuzzing;
pub mod harden;
pub mod metrics;
#[cfg(feature = "rocksdb")]
pub mod ops;
pub mod pki;
pub mod ratelimit;
pub mod secret;
pub mod server;
pub mod startup;
pub mod store;
pub mod tls;
pub mod token;
pub mod validate;
pub mod vault;
