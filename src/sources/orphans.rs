//! Orphaned rows: rows of an attached table whose block has a canonical
//! hash (`canonical_block_hashes`, followed from rindexer's
//! `rindexer_internal.reorg_block_hashes` or set by an operator) other than
//! their own. The rule that leaves them uncounted lives in
//! `mapping::ORPHANED`, applied wherever rows are read; this module keeps
//! the records that report them (`orphaned_transfer_rows`) and the hashes
//! of rows judged before their block had a canonical hash
//! (`unjudged_block_hashes`) in step when rows go or blocks are rechecked.

use crate::errors::spi_ok;
use crate::sources::mapping::SourceMapping;
use crate::sources::row_ids::counted_relation;
use pgrx::pg_sys;
use pgrx::spi::SpiClient;

/// Forgets the orphan records of the rows of `old_rows` (a transition
/// table of rows deleted or updated): they are gone.
pub fn forget_rows(client: &mut SpiClient<'_>, mapping: &SourceMapping, old_rows: &str) {
    let Some(id) = mapping.row_id_column.as_ref() else {
        return;
    };
    if mapping.block_hash_column.is_none() {
        return;
    }
    spi_ok(client.update(
        &format!(
            "DELETE FROM balance_queue.orphaned_transfer_rows o
              WHERE o.source_table = $1::oid::regclass
                AND o.row_id IN (SELECT r.{}::bigint FROM {old_rows} r)",
            pgrx::spi::quote_identifier(id)
        ),
        None,
        &[pg_sys::Oid::from(mapping.relid).into()],
    ));
}

/// Forgets every orphan record of table `relid` (truncated or detached).
pub fn forget_table(client: &mut SpiClient<'_>, relid: u32) {
    spi_ok(client.update(
        "DELETE FROM balance_queue.orphaned_transfer_rows WHERE source_table = $1::oid::regclass",
        None,
        &[pg_sys::Oid::from(relid).into()],
    ));
}

/// Forgets the unjudged hashes of chain `chain_id` from `from_block` on,
/// before `handle_reorg` judges the rows of every source again
/// ([`rejudge`]): once per chain, so each source's hashes are kept.
pub fn forget_unjudged(client: &mut SpiClient<'_>, chain_id: i32, from_block: i64) {
    spi_ok(client.update(
        "DELETE FROM balance_queue.unjudged_block_hashes WHERE chain_id = $1 AND block_number >= $2",
        None,
        &[chain_id.into(), from_block.into()],
    ));
}

/// Judges again the rows of chain `chain_id` at or above `from_block` in
/// the table of `mapping` that `handle_reorg` queued again as transfer
/// sides: their orphan records are renewed (or forgotten) and the hashes of
/// unjudged ones recorded. Rows still waiting in an id-range item (all of
/// them after a rebuild) keep their records until their item is read back,
/// which renews them: a record keeps its block's canonical hash from being
/// pruned, so it must not go before the row is judged again.
pub fn rejudge(
    client: &mut SpiClient<'_>,
    mapping: &SourceMapping,
    chain_id: i32,
    from_block: i64,
) {
    let rows = format!(
        "(SELECT v.* FROM ({}) v WHERE v.chain_id = {chain_id} AND v.block_number >= {from_block})",
        mapping.validated_item_rows(&counted_relation(mapping))
    );
    if let Some(statements) =
        mapping.record_judgements(&rows, crate::sources::mapping::REGISTRY_CONFIRMED_THROUGH)
    {
        for statement in statements {
            spi_ok(client.update(&statement, None, &[]));
        }
    }
}
