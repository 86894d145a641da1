//! Chain locks: what keeps a bulk apply alone on its chain. Every statement
//! that writes a chain's ledger rows or balances holds the chain's advisory
//! lock shared for the rest of its transaction; a bulk apply (and a
//! rebuild) holds it exclusively, so it sees every earlier write committed
//! and none begins until it commits.
//!
//! Items whose chain is not known yet (`source_rows` items of rows whose
//! network was not registered) may hold rows of any chain: they take chain
//! 0's lock, which an exclusive holder takes as well. Locks are taken in
//! ascending chain order, chain 0 first, by shared and exclusive holders
//! alike, so they cannot deadlock among themselves; an exclusive holder
//! claims queue items only with SKIP LOCKED, so a batch that holds items
//! and waits for the chain never waits in a circle.

use crate::errors::spi_ok;
use pgrx::spi::SpiClient;

/// The first key of the chain locks' advisory keys (the second is the
/// chain id): "bqch" in ASCII, so they are easy to find in pg_locks
/// (`classid` = 1651598184, `objid` = the chain id).
pub const CHAIN_LOCK_CLASS: i32 = 0x6271_6368;

/// The chains of the queue items `$1` (bigint[]) and `$2` (bigint[]),
/// 0 for items whose chain is not known, ascending.
const CHAINS_OF_ITEMS_SQL: &str = "SELECT DISTINCT coalesce(chain_id, 0) AS chain_id
               FROM balance_queue.balance_update_queue
              WHERE id = ANY($1) OR id = ANY($2)
              ORDER BY 1";

/// Holds shared the lock of each chain the items `ids` and `row_ids` belong to.
pub(super) fn share_chains_of_items(client: &mut SpiClient<'_>, ids: &[i64], row_ids: &[i64]) {
    let chains: Vec<i32> = spi_ok(client.select(
        CHAINS_OF_ITEMS_SQL,
        None,
        &[ids.to_vec().into(), row_ids.to_vec().into()],
    ))
    .filter_map(|row| spi_ok(row.get::<i32>(1)))
    .collect();
    for chain in chains {
        share_chain(client, chain);
    }
}

/// Holds chain `chain_id`'s lock shared until the transaction ends.
pub fn share_chain(client: &mut SpiClient<'_>, chain_id: i32) {
    spi_ok(client.select(
        "SELECT pg_catalog.pg_advisory_xact_lock_shared($1, $2)",
        None,
        &[CHAIN_LOCK_CLASS.into(), chain_id.into()],
    ));
}

/// Holds chain `chain_id`'s lock, and chain 0's, exclusively until the
/// transaction ends, waiting for the statements that write it to commit.
pub fn own_chain(client: &mut SpiClient<'_>, chain_id: i32) {
    for chain in [0, chain_id] {
        spi_ok(client.select(
            "SELECT pg_catalog.pg_advisory_xact_lock($1, $2)",
            None,
            &[CHAIN_LOCK_CLASS.into(), chain.into()],
        ));
    }
}
