//! Holder partition locks: what keeps two workers off each other's keys.
//!
//! Worker k of n claims the items of its own holder partition only while
//! it holds partition k's advisory lock, and takes over another
//! partition's waiting items only while it holds that partition's lock;
//! each lock is tried without waiting and held to the end of the batch's
//! transaction. So the items of one partition are applied by one batch at a
//! time, and two workers never wait on each other's ledger and balance
//! rows. Before these locks a worker took over the items of a partition
//! whose worker was merely slow: both then applied the same partition's
//! hot keys at once, each waited on the other's transaction, the waits made
//! the next batches slower still and more items waited past
//! `balance_queue.takeover_after`: a sustained load stalled for seconds.
//!
//! Trying never waits, so these locks add no wait to the apply path's
//! global lock order (see `apply`).

use crate::errors::spi_ok;
use pgrx::spi::SpiClient;

/// The first key of the partition locks' advisory keys (the second is the
/// partition): "bqhp" in ASCII (`classid` = 1651599472 in pg_locks).
pub const PARTITION_LOCK_CLASS: i32 = 0x6271_6870;

/// Tries to hold the lock of each partition in `partitions` until the
/// transaction ends; returns the ones now held, ascending. A lock this
/// transaction holds already is held again (and returned).
pub(super) fn try_hold_partitions(client: &mut SpiClient<'_>, partitions: &[i32]) -> Vec<i32> {
    if partitions.is_empty() {
        return Vec::new();
    }
    spi_ok(client.update(
        "SELECT p FROM unnest($2::integer[]) p
          WHERE pg_catalog.pg_try_advisory_xact_lock($1, p)
          ORDER BY p",
        None,
        &[PARTITION_LOCK_CLASS.into(), partitions.to_vec().into()],
    ))
    .filter_map(|row| spi_ok(row.get::<i32>(1)))
    .collect()
}
