//! Storage. `log` is the agreement log, the source of truth and the commit
//! point; `index` is the sled database of indexes and derived state, which
//! can always be rebuilt from the log; `checkpoints` holds the checkpoints
//! this node signed of its own log; `export` and `backup` write them out,
//! and `backup` restores them into a new data dir.

pub mod backup;
pub mod checkpoints;
pub mod export;
pub mod index;
pub mod log;
