//! Reorgs, confirmations and proofs: `handle_reorg` for indexers that cannot
//! delete orphaned rows, pruning of the confirmation window, and
//! `verify_balances` to prove the stored state against the sources.

use crate::address::normalize_arg;
use crate::apply::{ledger_key, same_ledger_key, sources_for_chain};
use crate::errors::{invalid_parameter, spi_ok};
use crate::sources::mapping::RowFilter;
use once_cell::sync::Lazy;
use pgrx::prelude::*;

/// Takes every counted side of `chain_id` at or above `from_block` out of
/// the ledger and the balances. Returns the number of sides taken back.
static TAKE_BACK_SQL: Lazy<String> = Lazy::new(|| {
    format!(
        "
    WITH taken AS (
        UPDATE balance_queue.applied_transfers l
           SET copies = 0, last_change = -l.copies
          FROM (SELECT {key}
                  FROM balance_queue.applied_transfers
                 WHERE chain_id = $1 AND block_number >= $2 AND copies <> 0
                 ORDER BY {key}
                   FOR UPDATE) k
         WHERE {same_key}
        RETURNING l.chain_id, l.tx_hash, l.log_index, l.is_inbound, l.contract_address,
                  l.holder_address, l.delta_wei, l.last_change
    ), unpended AS (
        DELETE FROM balance_queue.unconfirmed_transfer_sides p
         WHERE p.chain_id = $1 AND p.block_number >= $2
        RETURNING 1
    ), effects AS (
        SELECT chain_id, contract_address, holder_address, sum(delta_wei) AS delta_wei
          FROM taken
         WHERE last_change < 0  -- it was counted (copies > 0) before
         GROUP BY 1, 2, 3
    ), locked AS (
        SELECT b.chain_id, b.contract_address, b.holder_address
          FROM balance_queue.current_token_balances b
          JOIN effects e USING (chain_id, contract_address, holder_address)
         ORDER BY 1, 2, 3
           FOR UPDATE OF b
    ), updated AS (
        UPDATE balance_queue.current_token_balances b
           SET current_balance = b.current_balance - e.delta_wei,
               last_updated_time = now()
          FROM effects e
         WHERE (b.chain_id, b.contract_address, b.holder_address) IN (SELECT * FROM locked)
           AND b.chain_id = e.chain_id AND b.contract_address = e.contract_address
           AND b.holder_address = e.holder_address
        RETURNING 1
    )
    SELECT count(*) FROM taken WHERE last_change < 0",
        key = ledger_key(""),
        same_key = same_ledger_key("l", "k"),
    )
});

/// Forgets every counted transfer side of chain `$1`: its ledger rows,
/// pending-window rows and balances. Returns the number of sides that were
/// counted.
const FORGET_CHAIN_SQL: &str = "
    WITH ledger_gone AS (
        DELETE FROM balance_queue.applied_transfers WHERE chain_id = $1 RETURNING copies
    ), pending_gone AS (
        DELETE FROM balance_queue.unconfirmed_transfer_sides WHERE chain_id = $1 RETURNING 1
    ), balances_gone AS (
        DELETE FROM balance_queue.current_token_balances WHERE chain_id = $1 RETURNING 1
    )
    SELECT count(*) FILTER (WHERE copies > 0) FROM ledger_gone";

/// Rolls a chain back to just below `p_from_block`, for an indexer that
/// cannot delete its orphaned rows: takes back the effect of every applied
/// transfer at or above that block, then re-queues the rows the sources
/// still hold from that block on. Once the queue drains, every balance
/// equals what the remaining rows give. rindexer needs none of this: its
/// own DELETE of the orphaned blocks is followed exactly by the triggers.
///
/// * `p_chain_id`: EIP-155 chain id; `p_from_block`: the first orphaned
///   block (>= 0).
///
/// Pending transfer-side items of the chain at or above the block are
/// consumed (the re-queued rows supersede them), waiting for a drain that
/// holds some. Rows still waiting in a pending id-range item are not
/// re-queued: their item applies them once.
/// Returns one row: `sides_taken_back` (counted transfer sides removed) and
/// `items_requeued` (what was written to the queue from the sources: one
/// item per holder side, or, in a rebuild of a table queued by id, the rows
/// its id-range items hold).
///
/// `p_from_block` 0 rebuilds the chain: its ledger rows, pending-window
/// rows and balances are deleted rather than taken back one by one, so the
/// re-queued rows find the chain empty and the worker applies them in one
/// bulk when there are at least `balance_queue.bulk_threshold` (see
/// `balance_queue.bulk_loads`). Until the queue drains, the chain's
/// balances are missing or partial, as `queue_health_summary` shows.
///
/// Errors: 22023 (invalid_parameter_value) for a negative block or a chain
/// missing from `chain_registry`.
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
pub fn handle_reorg(
    p_chain_id: i32,
    p_from_block: i64,
) -> TableIterator<'static, (name!(sides_taken_back, i64), name!(items_requeued, i64))> {
    crate::errors::refuse_on_standby("handle_reorg");
    if p_from_block < 0 {
        invalid_parameter(format!("p_from_block {p_from_block} must be >= 0"));
    }
    let result = Spi::connect_mut(|client| {
        let known = spi_ok(client.select(
            "SELECT 1 FROM balance_queue.chain_registry WHERE chain_id = $1",
            Some(1),
            &[p_chain_id.into()],
        ));
        if known.is_empty() {
            invalid_parameter(format!(
                "chain_id {p_chain_id} is not in balance_queue.chain_registry"
            ));
        }
        let rolled_back = roll_back(client, p_chain_id, p_from_block, "handle_reorg");
        crate::apply::announce_changes(client);
        rolled_back
    });
    TableIterator::once(result)
}

/// Takes back every counted side of chain `p_chain_id` at or above
/// `p_from_block` and queues again the rows the sources still hold from
/// there on (see [`handle_reorg`]; `by` names the caller in the messages of
/// the items it supersedes), then judges those rows again against the
/// canonical hashes. Returns (sides taken back, items queued).
pub(crate) fn roll_back(
    client: &mut pgrx::spi::SpiClient<'_>,
    p_chain_id: i32,
    p_from_block: i64,
    by: &str,
) -> (i64, i64) {
    // Wait for drains holding id-range items of the chain, and keep
    // others off them: once they commit their rows count (and are taken
    // back and re-queued below); the rest stay waiting for their item.
    crate::sources::row_ids::lock_row_sources(client);
    crate::sources::row_ids::lock_waiting_rows_of_chain(client, p_chain_id);
    // Consume the chain's pending items from the block on, waiting for
    // drains that hold some: the rows they came from are re-read below.
    spi_ok(client.update(
        "UPDATE balance_queue.balance_update_queue q
            SET status = 'completed', processed_at = clock_timestamp(),
                error_message = format('superseded by %s(%s, %s)', $3::text, $1, $2)
          WHERE q.id IN (SELECT id FROM balance_queue.balance_update_queue
                          WHERE status = 'pending' AND chain_id = $1 AND triggered_by_block >= $2
                          ORDER BY id FOR UPDATE)",
        None,
        &[p_chain_id.into(), p_from_block.into(), by.into()],
    ));
    // Every queue item this needs is held: now wait for the drains that
    // write the chain (a rebuild keeps them all off until it commits).
    let forget = if p_from_block == 0 {
        crate::apply::chain_lock::own_chain(client, p_chain_id);
        FORGET_CHAIN_SQL
    } else {
        crate::apply::chain_lock::share_chain(client, p_chain_id);
        TAKE_BACK_SQL.as_str()
    };
    let taken = spi_ok(
        spi_ok(client.update(forget, Some(1), &[p_chain_id.into(), p_from_block.into()]))
            .first()
            .get_one::<i64>(),
    )
    .unwrap_or(0);
    // This reads the sources with the extension owner's rights (the worker
    // runs it for rechecks): only tables of built-in column types, as the
    // drain, whose items of other tables fail.
    let sources: Vec<_> = sources_for_chain(client, p_chain_id)
        .into_iter()
        .filter(|source| {
            let readable = source.relid == 0
                || crate::apply::builtin_columns(client, pg_sys::Oid::from(source.relid), source);
            if !readable {
                warning!(
                    "balance_queue: {} has a mapped column of a user-defined type: its rows are not queued again",
                    source.label
                );
            }
            readable
        })
        .collect();
    crate::sources::orphans::forget_unjudged(client, p_chain_id, p_from_block);
    let mut requeued = 0;
    for source in sources {
        let queued = if p_from_block == 0 && source.row_id_column.is_some() {
            // A rebuild re-queues a table queued by id the way its backfill
            // did: one item per 5,000 rows (bad rows among them are
            // recorded again when read back).
            crate::sources::row_ids::queue_rows_of_chain(client, &source, p_chain_id)
        } else {
            // Rows still waiting in an id-range item are left to it; bad
            // rows were recorded as failed items when first queued.
            let insert = source.enqueue_item_rows(
                &crate::sources::row_ids::counted_relation(&source),
                1,
                source.relid,
                &RowFilter {
                    valid: Some(true),
                    chain_id: Some(&p_chain_id.to_string()),
                    from_block: Some(&p_from_block.to_string()),
                    ..RowFilter::default()
                },
            );
            crate::sources::attach::run_counted(client, &insert)
        };
        // The rows queued again as sides are judged now (after a rebuild,
        // those counted on one partition only).
        crate::sources::orphans::rejudge(client, &source, p_chain_id, p_from_block);
        not_applied_yet(client, source.relid, queued);
        requeued += queued;
    }
    (taken, requeued)
}

/// Takes `requeued` transfers, queued again, off table `relid`'s
/// `rows_applied`: they were taken back, and count there again when
/// applied, so `source_progress` shows the table's rows, not twice as many.
fn not_applied_yet(client: &mut pgrx::spi::SpiClient<'_>, relid: u32, requeued: i64) {
    if requeued == 0 {
        return;
    }
    spi_ok(client.update(
        "UPDATE balance_queue.attached_sources
            SET rows_applied = greatest(rows_applied - $2, 0)
          WHERE source_table = $1::oid::regclass",
        None,
        &[pg_sys::Oid::from(relid).into(), requeued.into()],
    ));
}

/// Drops the pending-window rows of blocks that are now confirmed (at or
/// below head_block - confirmation_depth). The worker runs it every second;
/// queries ignore such rows anyway. Returns the rows dropped.
pub fn prune_confirmed_sides() -> i64 {
    Spi::get_one::<i64>(
        "WITH pruned AS (
             DELETE FROM balance_queue.unconfirmed_transfer_sides p
              USING balance_queue.chain_registry r
              WHERE p.chain_id = r.chain_id
                AND NOT balance_queue.is_unconfirmed(
                        p.block_number, balance_queue.confirmed_through(r.head_block, r.confirmation_depth))
             RETURNING 1
         )
         SELECT count(*) FROM pruned",
    )
    .ok()
    .flatten()
    .unwrap_or(0)
}

/// Proves the stored balances: recomputes every balance from the sources
/// (attached tables and seed-wired tables, each (tx_hash, log_index) once)
/// and returns every key whose stored balance differs.
///
/// * `p_chain_id`: only this chain; NULL (default) for every registered chain.
/// * `p_contract_address`: only this token; NULL (default) for all.
///
/// Returns rows of `chain_id`, `contract_address`, `holder_address`,
/// `stored_balance`, `computed_balance` (wei; 0 where a side has no row) and
/// `difference` (stored - computed). Run it with the queue drained: pending
/// items are changes not yet applied and show as differences. Repair one
/// key with `recalculate_address_balance`. Cost: a scan of the sources.
///
/// Errors: 22P02 (invalid_text_representation) for a malformed address.
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
pub fn verify_balances(
    p_chain_id: default!(Option<i32>, "NULL"),
    p_contract_address: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(chain_id, i32),
        name!(contract_address, String),
        name!(holder_address, String),
        name!(stored_balance, AnyNumeric),
        name!(computed_balance, AnyNumeric),
        name!(difference, AnyNumeric),
    ),
> {
    let contract = p_contract_address.map(|c| normalize_arg("p_contract_address", c));
    let rows = Spi::connect(|client| {
        let chains: Vec<i32> = spi_ok(client.select(
            "SELECT chain_id FROM balance_queue.chain_registry WHERE $1::integer IS NULL OR chain_id = $1 ORDER BY 1",
            None,
            &[p_chain_id.into()],
        ))
        .filter_map(|row| spi_ok(row.get::<i32>(1)))
        .collect();
        let mut out = Vec::new();
        for chain in chains {
            let chain_id = chain.to_string();
            let filter = RowFilter {
                chain_id: Some(&chain_id),
                // $1: the token, bound below; NULL keeps every token.
                contract_address: contract.as_ref().map(|_| "$1"),
                ..RowFilter::default()
            };
            let sources = sources_for_chain(client, chain);
            let computed = if sources.is_empty() {
                "SELECT NULL::integer AS chain_id, NULL::text AS contract_address, NULL::text AS holder_address,
                        NULL::numeric AS balance WHERE false"
                    .to_string()
            } else {
                let union = sources
                    .iter()
                    .map(|m| m.sides(&m.label, &filter))
                    .collect::<Vec<_>>()
                    .join(" UNION ALL ");
                format!(
                    "SELECT chain_id, contract_address, holder_address, sum(delta_wei) AS balance
                       FROM (SELECT DISTINCT * FROM ({union}) sides) counted
                      GROUP BY 1, 2, 3"
                )
            };
            let sql = format!(
                "WITH computed AS ({computed}),
                      stored AS (SELECT chain_id, contract_address, holder_address, current_balance
                                   FROM balance_queue.current_token_balances
                                  WHERE chain_id = {chain} AND ($1::text IS NULL OR contract_address = $1))
                 SELECT coalesce(s.chain_id, c.chain_id), coalesce(s.contract_address, c.contract_address),
                        coalesce(s.holder_address, c.holder_address),
                        coalesce(s.current_balance, 0), coalesce(c.balance, 0),
                        coalesce(s.current_balance, 0) - coalesce(c.balance, 0)
                   FROM stored s
                   FULL JOIN computed c USING (chain_id, contract_address, holder_address)
                  WHERE coalesce(s.current_balance, 0) <> coalesce(c.balance, 0)
                  ORDER BY 1, 2, 3"
            );
            for row in spi_ok(client.select(&sql, None, &[contract.as_deref().into()])) {
                out.push((
                    spi_ok(row.get::<i32>(1)).unwrap_or_default(),
                    spi_ok(row.get::<String>(2)).unwrap_or_default(),
                    spi_ok(row.get::<String>(3)).unwrap_or_default(),
                    spi_ok(row.get::<AnyNumeric>(4)).unwrap_or_default(),
                    spi_ok(row.get::<AnyNumeric>(5)).unwrap_or_default(),
                    spi_ok(row.get::<AnyNumeric>(6)).unwrap_or_default(),
                ));
            }
        }
        out
    });
    TableIterator::new(rows)
}
