//! The admin API: a gRPC service (tonic) on a Unix socket in the data dir,
//! mode 0600. `server` implements it inside the daemon; `client` connects to
//! it for `fulcrumctl`.

pub mod client;
pub mod server;
