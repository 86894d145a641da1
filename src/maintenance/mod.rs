//! Keeping the queue healthy: metrics, retries, cleanup and snapshots
//! (`health`), and the chain registry with its balance partitions
//! (`chains`).

pub mod chains;
pub mod health;
