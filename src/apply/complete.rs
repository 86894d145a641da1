//! Finishing: each chain's head block raised to the highest block applied,
//! and the applied items marked completed. Registry rows are the last locks
//! of the apply path's global order.

use crate::errors::spi_ok;
use pgrx::spi::SpiClient;
use std::collections::BTreeMap;

/// Raises chain `$1`'s head block to `$2` when that is higher.
const RAISE_HEAD_SQL: &str = "UPDATE balance_queue.chain_registry SET head_block = $2
              WHERE chain_id = $1 AND (head_block IS NULL OR head_block < $2)";

/// Marks the still-pending items among `$1` (bigint[]) completed, in `$2`
/// milliseconds, and adds their transfers to each source table's
/// `rows_applied` (the progress an operator watches in `source_progress`).
/// The attached_sources rows are the last locks a batch takes, so
/// concurrent workers wait on them only while the other commits.
const COMPLETE_SQL: &str = "WITH done AS (
             UPDATE balance_queue.balance_update_queue
                SET status = 'completed', processed_at = clock_timestamp(),
                    processing_duration_ms = round($2::numeric, 3)
              WHERE id = ANY($1) AND status NOT IN ('completed', 'failed')
             RETURNING source_table, row_count
         ), per_source AS (
             SELECT source_table, sum(row_count) AS rows
               FROM done WHERE source_table IS NOT NULL
              GROUP BY source_table
              ORDER BY source_table
         )
         UPDATE balance_queue.attached_sources s
            SET rows_applied = s.rows_applied + p.rows, last_applied_at = clock_timestamp()
           FROM per_source p
          WHERE s.source_table = p.source_table";

/// Raises each chain's head in `into` to its head in `from`.
pub(super) fn merge_heads(into: &mut BTreeMap<i32, i64>, from: &BTreeMap<i32, i64>) {
    for (&chain, &block) in from {
        let head = into.entry(chain).or_insert(block);
        *head = (*head).max(block);
    }
}

/// Raises each chain's head block to the highest block applied. Registry
/// rows are locked in chain order, after every balance row, and only when
/// the head moves.
fn raise_heads(client: &mut SpiClient<'_>, heads: &BTreeMap<i32, i64>) {
    for (&chain_id, &block) in heads {
        spi_ok(client.update(RAISE_HEAD_SQL, None, &[chain_id.into(), block.into()]));
    }
}

/// Raises the chains' head blocks, then marks the still-pending items among
/// `ids` completed. (The status test is written so the planner looks the
/// ids up by primary key, not through the pending index: that one covers
/// the whole backlog.)
pub(super) fn complete(
    client: &mut SpiClient<'_>,
    ids: &[i64],
    heads: &BTreeMap<i32, i64>,
    elapsed_ms: f64,
) {
    raise_heads(client, heads);
    if ids.is_empty() {
        return;
    }
    spi_ok(client.update(
        COMPLETE_SQL,
        None,
        &[ids.to_vec().into(), elapsed_ms.into()],
    ));
}
