//! The bulk path: a chain with no counted state (no ledger row, no balance,
//! no pending-window row) and a large backlog is applied in one
//! transaction with plain inserts ([`Mode::Bulk`]) instead of batch after
//! batch of upserts. It is what a first attach of a table with history and
//! a rebuild by `handle_reorg(chain, 0)` lead to.
//!
//! Exact by construction: it holds the chain exclusively (see
//! [`super::chain_lock`]), checks the chain is still empty once it does,
//! and writes the state the incremental path would reach from the same
//! items. Crash-safe by construction: one transaction, so a crash leaves
//! the items pending and nothing counted, and the worker starts over. Its
//! `bulk_loads` row (committed before it starts) shows it to operators.

use super::batch::BatchOutcome;
use super::chain_lock;
use super::claim::{ClaimFilter, DUE, chain_filter, claim_chain};
use super::complete::complete;
use super::deferred_indexes;
use super::ledger::{Mode, apply_items_as};
use super::read_back::row_sources;
use crate::errors::spi_ok;
use crate::sources::row_ids;
use pgrx::spi::SpiClient;
use std::time::Instant;

/// No ledger row, balance or pending-window row of chain `$1` exists.
const CHAIN_EMPTY: &str =
    "NOT EXISTS (SELECT 1 FROM balance_queue.applied_transfers WHERE chain_id = $1)
         AND NOT EXISTS (SELECT 1 FROM balance_queue.current_token_balances WHERE chain_id = $1)
         AND NOT EXISTS (SELECT 1 FROM balance_queue.unconfirmed_transfer_sides WHERE chain_id = $1)";

/// Seconds after a bulk load of a chain failed during which no worker
/// tries the chain in bulk again: it drains batch by batch, which sets the
/// failing items apart. Read from `bulk_loads`, so the other workers do not
/// repeat a load that failed in one (a load of 10M transfers that failed
/// took 8 minutes, holding the chain all along).
const BULK_RETRY_AFTER_SECONDS: i32 = 600;

/// The chains among chain `$1` (integer, NULL for all) and not in `$2`
/// (integer[]) with at least `$3` (bigint) due transfers queued and no bulk
/// load failed in the last [`BULK_RETRY_AFTER_SECONDS`]: (chain id,
/// transfers queued), most first. Summed from the pending items alone (a
/// partial index); whether each has counted state is asked after, chain by
/// chain ([`CHAIN_EMPTY`]): written as `NOT EXISTS` in one statement, the
/// planner turned the balances' check into a hash anti-join over every
/// balance (1.0–1.4 s per batch at 2.6M balances, measured with
/// auto_explain in `--mode growth`), asked before every batch.
fn candidates_sql() -> String {
    format!(
        "SELECT q.chain_id, sum(q.row_count) AS transfers
           FROM balance_queue.balance_update_queue q
          WHERE {due} AND q.chain_id IS NOT NULL AND {chains}
            AND EXISTS (SELECT 1 FROM balance_queue.chain_registry r WHERE r.chain_id = q.chain_id)
            AND NOT EXISTS (SELECT 1 FROM balance_queue.bulk_loads f
                             WHERE f.chain_id = q.chain_id AND f.status = 'failed'
                               AND f.finished_at > now() - {BULK_RETRY_AFTER_SECONDS} * interval '1 second')
          GROUP BY q.chain_id
         HAVING sum(q.row_count) >= $3
          ORDER BY transfers DESC, q.chain_id",
        due = DUE,
        chains = chain_filter("$1", "$2"),
    )
}

/// Marks the `running` bulk loads whose backend is gone `interrupted`.
const MARK_INTERRUPTED_SQL: &str = "UPDATE balance_queue.bulk_loads
                SET status = 'interrupted', finished_at = clock_timestamp(),
                    message = 'the backend stopped before it committed; nothing of it counted'
              WHERE status = 'running'
                AND backend_pid NOT IN (SELECT pid FROM pg_catalog.pg_stat_activity)";

/// Marks `failed` the `running` bulk loads of this backend, called by a
/// worker between bulk loads, when none of its own is running: such a row
/// is one whose load ended in an error that could not be recorded either
/// (its `done` is written in the load's own transaction). Left `running`
/// with a live pid, it kept every batch off its chain until the worker
/// restarted; `failed`, no worker tries the chain in bulk again for
/// [`BULK_RETRY_AFTER_SECONDS`] and batches drain it.
pub fn settle_own_bulk_loads(client: &mut SpiClient<'_>) {
    spi_ok(client.update(
        "UPDATE balance_queue.bulk_loads
            SET status = 'failed', finished_at = clock_timestamp(),
                message = 'the load failed, and so did recording its error (the server log has it); nothing of it counted'
          WHERE status = 'running' AND backend_pid = pg_catalog.pg_backend_pid()",
        None,
        &[],
    ));
}

/// A chain due a bulk apply: matching `filter`, with no counted state and
/// at least `threshold` due transfers queued. Returns (chain id, transfers
/// queued). Writes nothing: the worker asks it before every batch.
pub fn bulk_candidate(
    client: &mut SpiClient<'_>,
    filter: &ClaimFilter,
    threshold: i64,
) -> Option<(i32, i64)> {
    let candidates: Vec<(i32, i64)> = spi_ok(client.select(
        &candidates_sql(),
        None,
        &[
            filter.chain_id.into(),
            filter.exclude_chains.clone().into(),
            threshold.into(),
        ],
    ))
    .filter_map(|row| Some((spi_ok(row.get::<i32>(1))?, spi_ok(row.get::<i64>(2))?)))
    .collect();
    // One statement per chain, its id a constant the planner sees: a chain
    // with no rows is one index probe per table.
    candidates
        .into_iter()
        .find(|&(chain_id, _)| chain_empty(client, chain_id))
}

/// The chains a live backend is bulk-applying: batches leave them alone, so
/// that a bulk load does not find its chain written under it and give way.
pub fn chains_in_bulk(client: &SpiClient<'_>) -> Vec<i32> {
    spi_ok(client.select(
        "SELECT chain_id FROM balance_queue.bulk_loads
          WHERE status = 'running'
            AND backend_pid IN (SELECT pid FROM pg_catalog.pg_stat_activity)",
        None,
        &[],
    ))
    .filter_map(|row| spi_ok(row.get::<i32>(1)))
    .collect()
}

/// Records a bulk load of `chain_id` starting with `transfers` queued, in
/// its own transaction before the bulk starts; returns its id, or None when
/// another one of the chain is running, or the chain is no longer empty.
/// Emptiness is checked after the row is in, in a statement of its own: a
/// load of the chain that committed while this insert waited on its
/// `running` row is then seen, rather than this one recorded as `skipped` a
/// moment later. First marks interrupted loads as such, so a crashed load
/// of the chain does not hold its `running` slot.
pub fn begin_bulk_load(client: &mut SpiClient<'_>, chain_id: i32, transfers: i64) -> Option<i64> {
    spi_ok(client.update(MARK_INTERRUPTED_SQL, None, &[]));
    let id = spi_ok(client.update(
        "INSERT INTO balance_queue.bulk_loads (chain_id, transfers_queued)
         VALUES ($1, $2)
         ON CONFLICT (chain_id) WHERE status = 'running' DO NOTHING
         RETURNING id",
        Some(1),
        &[chain_id.into(), transfers.into()],
    ))
    .next()
    .and_then(|row| spi_ok(row.get::<i64>(1)))?;
    if chain_empty(client, chain_id) {
        return Some(id);
    }
    spi_ok(client.update(
        "DELETE FROM balance_queue.bulk_loads WHERE id = $1",
        None,
        &[id.into()],
    ));
    None
}

/// Whether `chain_id` has no counted state ([`CHAIN_EMPTY`]), in a fresh
/// snapshot (a read-write SPI call takes one per statement; a read-only
/// one in a transaction that wrote nothing yet would reuse its first).
fn chain_empty(client: &mut SpiClient<'_>, chain_id: i32) -> bool {
    spi_ok(
        spi_ok(client.update(
            &format!("SELECT {CHAIN_EMPTY}"),
            Some(1),
            &[chain_id.into()],
        ))
        .first()
        .get_one::<bool>(),
    )
    .unwrap_or(false)
}

/// Ends bulk load `id` with `status` and `message` (its own transaction
/// when the bulk failed; the bulk's own otherwise).
pub fn end_bulk_load(client: &mut SpiClient<'_>, id: i64, status: &str, message: Option<&str>) {
    spi_ok(client.update(
        "UPDATE balance_queue.bulk_loads
            SET status = $2, finished_at = clock_timestamp(), message = $3
          WHERE id = $1",
        None,
        &[id.into(), status.into(), message.into()],
    ));
}

/// Records the outcome of a done bulk load `$1`: `$2` transfers applied,
/// the balances of its chain, and whether it built the indexes after the
/// rows (`$3`).
const DONE_SQL: &str = "UPDATE balance_queue.bulk_loads
            SET status = 'done', finished_at = clock_timestamp(), transfers_applied = $2,
                indexes_rebuilt = $3,
                balances_written = (SELECT count(*) FROM balance_queue.current_token_balances b
                                     WHERE b.chain_id = bulk_loads.chain_id)
          WHERE id = $1";

/// Applies every due pending item of `chain_id` in one bulk, in the current
/// transaction, for bulk load `load_id`. Returns None (and marks the load
/// `skipped`) when the chain has counted state by the time it holds it:
/// the caller then drains it batch by batch.
pub fn apply_bulk(client: &mut SpiClient<'_>, chain_id: i32, load_id: i64) -> Option<BatchOutcome> {
    let started = Instant::now();
    chain_lock::own_chain(client, chain_id);
    if !chain_empty(client, chain_id) {
        end_bulk_load(
            client,
            load_id,
            "skipped",
            Some("the chain had counted state by the time the bulk held it"),
        );
        return None;
    }
    // The whole backlog in one statement: let its sorts and aggregates use
    // the memory set aside for bulk operations, and group its sides by
    // hashing. The planner cannot count a statement's sides (they come
    // through CTEs, estimated at a few dozen rows), so it grouped them by
    // sorting on the eight facts of a side; hashing takes half the time
    // (1,160,000 sides, as a 1M-transfer load has: sort and group 3.7 s,
    // hash 1.8 s; the load 5% faster). Sorts an ORDER BY asks for still
    // run. Batches keep their plan: for 110,000 sides the gain was within
    // the noise, and sustained load showed nothing to pay for it
    // (docs/benchmarks.md, "The bulk load, profiled again").
    spi_ok(client.select(
        "SELECT set_config('work_mem', current_setting('maintenance_work_mem'), true),
                set_config('enable_sort', 'off', true)",
        None,
        &[],
    ));
    let deferred = deferred_indexes::defer_indexes(client);
    let readable = row_ids::try_lock_row_sources(client);
    let claimed = claim_chain(client, chain_id, &readable);
    let mut heads = claimed.heads.clone();
    let (sources, row_ids) = row_sources(client, &claimed.row_items);
    let indexes_rebuilt = deferred.is_some();
    let mode = if indexes_rebuilt {
        Mode::BulkUnindexed
    } else {
        Mode::Bulk
    };
    let set_back = apply_items_as(
        client,
        mode,
        &claimed.delta_ids,
        &sources,
        &row_ids,
        &mut heads,
        |client| {
            if let Some(deferred) = deferred {
                deferred.build(client);
            }
        },
    );
    let applied: Vec<i64> = claimed
        .delta_ids
        .iter()
        .chain(row_ids.iter())
        .copied()
        .filter(|id| !set_back.ids.contains(id))
        .collect();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    complete(client, &applied, &heads, elapsed_ms);
    spi_ok(client.update(
        DONE_SQL,
        None,
        &[
            load_id.into(),
            claimed.transfers.into(),
            indexes_rebuilt.into(),
        ],
    ));
    super::announce::announce_changes(client);
    Some(BatchOutcome {
        processed: claimed.items as i32,
        full: true,
        failed: set_back.failed,
        elapsed_ms,
    })
}
