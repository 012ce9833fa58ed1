//! The admin API: a gRPC service (tonic) on a Unix socket in the data dir,
//! mode 0600, and optionally on loopback TCP behind a bearer token. `server`
//! implements it inside the daemon; `client` connects to it for
//! `fulcrumctl`; `token` reads, sends and checks the bearer token.

pub mod client;
pub mod server;
pub mod token;
