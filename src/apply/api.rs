//! The SQL entry point of the apply path: `process_balance_update_queue`.

use super::batch::apply_batch;
use super::claim::ClaimFilter;
use crate::errors::invalid_parameter;
use pgrx::prelude::*;

/// Drains one batch of the queue in the calling transaction.
///
/// * `p_batch_size`: how many transfers to take (default 100, > 0): items
///   are taken until they stand for that many (an id-range item counts
///   its rows, any other item 1), at least one item. Items are taken
///   lowest `priority` first, then oldest, skipping items another session
///   holds (SKIP LOCKED), so any number of sessions may drain at once; no
///   item is applied twice. Items waiting out a retry backoff
///   (`next_attempt_at` in the future) are left for later.
/// * `p_chain_id`: only this chain's items; NULL (default) for all.
///
/// Rows queued by id are read back from their table by primary key and
/// checked; a bad row becomes a `failed` item naming it. Sums the
/// effective deltas per (chain id, token contract, holder) and applies
/// each sum once, counting every transfer side once however many copies
/// of its row were inserted or deleted. A key whose balance would leave
/// -(2^256-1)..2^256-1 fails alone: its sides are set back with a message
/// naming each row and retried after `balance_queue.retry_backoff`
/// (another session may still be applying the rest of a reorg), then stay
/// `failed` after the chain's max_retry_attempts; the rest applies. Items
/// queued without a delta (update_type `recalculate`, or manual
/// `queue_balance_update` calls) recompute their balance from the
/// attached sources.
///
/// Runs with the extension owner's rights (SECURITY DEFINER), as the
/// triggers do: it reads the attached tables' rows back, which the caller
/// may not be allowed to select.
///
/// Returns one row: `processed_count` (items taken: applied, failed, or
/// set back to retry after a backoff), `error_count` (bad rows found and
/// transfer sides that failed), `avg_processing_time_ms` (batch wall time
/// in milliseconds divided by items processed; 0 when idle).
///
/// Errors: 22023 (invalid_parameter_value) when `p_batch_size` <= 0.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
pub fn process_balance_update_queue(
    p_batch_size: default!(i32, 100),
    p_chain_id: default!(Option<i32>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(processed_count, i32),
        name!(error_count, i32),
        name!(avg_processing_time_ms, AnyNumeric),
    ),
> {
    crate::errors::refuse_on_standby("process_balance_update_queue");
    if p_batch_size <= 0 {
        invalid_parameter(format!("p_batch_size {p_batch_size} must be > 0"));
    }
    let filter = ClaimFilter {
        chain_id: p_chain_id,
        ..Default::default()
    };
    let outcome = Spi::connect_mut(|client| apply_batch(client, p_batch_size, &filter));
    let avg = if outcome.processed > 0 {
        (outcome.elapsed_ms / outcome.processed as f64 * 1000.0).round() / 1000.0
    } else {
        0.0
    };
    let avg = AnyNumeric::try_from(avg).unwrap_or_default();
    TableIterator::once((outcome.processed, outcome.failed, avg))
}
