//! Splitting an id-range item that cannot be applied whole into one
//! transfer-side item per holder side of its rows, so the sides that raise
//! an error back off and fail alone.

use super::read_back::{ReadBack, row_sources};
use crate::errors::spi_ok;
use crate::sources::mapping::SourceMapping;
use crate::sources::row_ids;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

/// Locks item `$1` when it is a pending id-range item; returns its table.
const LOCK_ROW_ITEM_SQL: &str = "SELECT source_table::oid FROM balance_queue.balance_update_queue
              WHERE id = $1 AND status = 'pending' AND source_row_ids IS NOT NULL
                FOR UPDATE";

/// Splits the `source_rows` items `$1` (bigint[]) of the one table in
/// `sources` into transfer-side items and completes them with reason `$2`
/// (text). Returns the number of items written.
fn split_sql(sources: &[SourceMapping]) -> String {
    let read_back = ReadBack::new(sources, "$1");
    // The rows are judged here, as the drain would judge them: record what
    // it found (orphans, unjudged hashes).
    let judgements = read_back.judgements(crate::sources::mapping::REGISTRY_CONFIRMED_THROUGH);
    format!(
        "WITH {read_back}{judgements},
         queued AS ({enqueue} RETURNING 1),
         split AS (
             UPDATE balance_queue.balance_update_queue
                SET status = 'completed', processed_at = clock_timestamp(),
                    error_message = format('split into %s transfer-side items after: %s',
                                           (SELECT count(*) FROM queued), $2::text)
              WHERE id = ANY($1) AND status = 'pending'
             RETURNING 1
         )
         SELECT count(*) FROM queued",
        read_back = read_back.ctes(),
        enqueue = read_back.enqueue_rows(0),
    )
}

/// Splits the pending id-range item `id` into one transfer-side item per
/// holder side of its rows (bad rows become failed items naming them) and
/// marks it completed with `reason`. The worker does this when applying
/// the item alone raised an error, so that the sides that raise it back
/// off and fail alone while the statement's other transfers apply.
/// Returns the number of items written (0 when its table is locked by a
/// TRUNCATE or DROP: the item stays pending), or `None` when `id` is not a
/// pending id-range item of an attached table.
pub fn split_row_item(client: &mut SpiClient<'_>, id: i64, reason: &str) -> Option<i64> {
    let readable = row_ids::try_lock_row_sources(client);
    // Lock the item (a drain may hold it; once it commits the item is no
    // longer pending and there is nothing to split).
    let relid = spi_ok(
        spi_ok(client.update(LOCK_ROW_ITEM_SQL, Some(1), &[id.into()]))
            .first()
            .get_one::<pg_sys::Oid>(),
    )?;
    if !readable.contains(&relid.to_u32()) {
        return Some(0); // its table is being truncated or dropped: later
    }
    let (sources, ids) = row_sources(client, &[(id, relid.to_u32())]);
    if ids.is_empty() {
        return None;
    }
    spi_ok(
        spi_ok(client.update(
            &split_sql(&sources),
            Some(1),
            &[vec![id].into(), reason.into()],
        ))
        .first()
        .get_one::<i64>(),
    )
}
