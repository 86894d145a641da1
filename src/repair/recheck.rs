//! Rechecking blocks whose canonical hash changed: when rindexer rewrites
//! `rindexer_internal.reorg_block_hashes` (its reorg rollback), or an
//! operator sets a hash, or a hash is first recorded for a block whose rows
//! were counted with another, the block is queued in
//! `block_hash_rechecks` (sql/orphans.sql). A recheck rolls its chain back
//! to the lowest such block and counts the rows again, judged against the
//! hashes now recorded: rows that became orphaned are taken back, rows that
//! became canonical count.

use crate::errors::spi_ok;
use pgrx::prelude::*;

/// Takes the queued rechecks: per chain, the lowest block queued.
const TAKE_RECHECKS_SQL: &str = "WITH taken AS (
         DELETE FROM balance_queue.block_hash_rechecks
          WHERE (chain_id, block_number) IN (SELECT chain_id, block_number FROM balance_queue.block_hash_rechecks
                                              ORDER BY 1, 2 FOR UPDATE SKIP LOCKED)
         RETURNING chain_id, block_number
     )
     SELECT chain_id, min(block_number) FROM taken GROUP BY 1 ORDER BY 1";

/// Rechecks every block queued in `block_hash_rechecks` (the worker does
/// this every second; call it to do it now). For each chain, takes back
/// what was counted from the lowest queued block on and queues the rows
/// again, as `handle_reorg(chain, block)` does; once the queue drains,
/// rows whose hash is not their block's canonical one do not count and are
/// listed in `orphaned_transfer_rows`.
///
/// Returns one row per chain rechecked: `chain_id`, `from_block` (the
/// lowest block rechecked), `sides_taken_back` and `items_requeued`.
/// Cost: like `handle_reorg`, a scan of the chain's ledger and of its
/// attached tables (rindexer's own rollback DELETE scans its table too).
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
pub fn recheck_block_hashes() -> TableIterator<
    'static,
    (
        name!(chain_id, i32),
        name!(from_block, i64),
        name!(sides_taken_back, i64),
        name!(items_requeued, i64),
    ),
> {
    crate::errors::refuse_on_standby("recheck_block_hashes");
    let rows = Spi::connect_mut(|client| {
        let queued: Vec<(i32, i64)> = spi_ok(client.update(TAKE_RECHECKS_SQL, None, &[]))
            .filter_map(|row| Some((spi_ok(row.get::<i32>(1))?, spi_ok(row.get::<i64>(2))?)))
            .collect();
        let out: Vec<_> = queued
            .into_iter()
            .map(|(chain, from_block)| {
                let (taken, requeued) = crate::repair::reorg::roll_back(
                    client,
                    chain,
                    from_block,
                    "recheck_block_hashes",
                );
                (chain, from_block, taken, requeued)
            })
            .collect();
        if !out.is_empty() {
            crate::apply::announce_changes(client);
        }
        out
    });
    TableIterator::new(rows)
}

/// Whether a block of chain `chain_id` (any chain: `None`) waits for a
/// recheck. Read-only, so an idle worker's poll assigns no transaction id.
pub(crate) fn rechecks_queued(client: &pgrx::spi::SpiClient<'_>, chain_id: Option<i32>) -> bool {
    client
        .select(
            "SELECT EXISTS (SELECT 1 FROM balance_queue.block_hash_rechecks
                             WHERE $1::integer IS NULL OR chain_id = $1)",
            Some(1),
            &[chain_id.into()],
        )
        .ok()
        .and_then(|rows| rows.first().get_one::<bool>().ok().flatten())
        .unwrap_or(false)
}
