//! Queue health, maintenance and snapshots (the seed plan's Phases 4 and 8):
//! metrics per chain, retries, per-chain configuration, cleanup of finished
//! items, and daily balance snapshots.

use crate::address::normalize_arg;
use crate::errors::spi_ok;
use crate::gucs;
use pgrx::prelude::*;

/// Records one `queue_health_metrics` row per chain that has queue items,
/// then drops rows older than `balance_queue.health_retention` hours.
///
/// Per chain: `pending_count`, `processing_count`, `completed_count`
/// (completed since the previous collection) count work, not items: the
/// rows of an id-range item, 1 for any other item; `completed_count_last_hour`
/// (sum of those over the last hour), `error_count_last_hour` (items that
/// ended failed in the last hour), `avg_processing_time_ms` of the newly
/// completed items, and `oldest_pending_age_seconds` (the table derives the
/// plan's `oldest_pending_age_minutes` from it).
/// The worker runs it every `balance_queue.health_interval` seconds.
///
/// Returns the number of rows recorded.
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
pub fn collect_queue_health_metrics() -> i64 {
    crate::errors::refuse_on_standby("collect_queue_health_metrics");
    let retention_h = gucs::HEALTH_RETENTION_H.get();
    Spi::connect_mut(|client| {
        let recorded = spi_ok(client.update(
            "WITH last AS (
                 SELECT DISTINCT ON (chain_id) chain_id, recorded_at
                   FROM balance_queue.queue_health_metrics
                  ORDER BY chain_id, recorded_at DESC
             ), per_chain AS (
                 SELECT q.chain_id,
                        -- work, not items: an id-range item counts its rows
                        coalesce(sum(q.row_count) FILTER (WHERE q.status = 'pending'), 0) AS pending_count,
                        coalesce(sum(q.row_count) FILTER (WHERE q.status = 'processing'), 0) AS processing_count,
                        coalesce(sum(q.row_count) FILTER (WHERE q.status = 'completed'
                                           AND q.processed_at > coalesce(l.recorded_at, '-infinity')), 0)
                            AS completed_count,
                        count(*) FILTER (WHERE q.status = 'failed' AND q.processed_at > now() - interval '1 hour')
                            AS error_count_last_hour,
                        avg(q.processing_duration_ms) FILTER (WHERE q.status = 'completed'
                                           AND q.processed_at > coalesce(l.recorded_at, '-infinity'))
                            AS avg_processing_time_ms,
                        extract(epoch FROM now() - min(q.created_at) FILTER (WHERE q.status = 'pending'))
                            AS oldest_pending_age_seconds
                   FROM balance_queue.balance_update_queue q
                   LEFT JOIN last l ON l.chain_id IS NOT DISTINCT FROM q.chain_id
                  WHERE q.chain_id IS NOT NULL
                  GROUP BY q.chain_id
             ), inserted AS (
                 INSERT INTO balance_queue.queue_health_metrics
                     (recorded_at, chain_id, pending_count, processing_count, completed_count,
                      completed_count_last_hour, error_count_last_hour, avg_processing_time_ms,
                      oldest_pending_age_seconds)
                 SELECT clock_timestamp(), p.chain_id, p.pending_count, p.processing_count, p.completed_count,
                        p.completed_count + coalesce((SELECT sum(m.completed_count)
                                                        FROM balance_queue.queue_health_metrics m
                                                       WHERE m.chain_id = p.chain_id
                                                         AND m.recorded_at > now() - interval '1 hour'), 0),
                        p.error_count_last_hour, round(p.avg_processing_time_ms, 3),
                        round(p.oldest_pending_age_seconds, 3)
                   FROM per_chain p
                 RETURNING 1
             )
             SELECT count(*) FROM inserted",
            Some(1),
            &[],
        ));
        spi_ok(client.update(
            "DELETE FROM balance_queue.queue_health_metrics
              WHERE recorded_at < now() - make_interval(hours => $1)",
            None,
            &[retention_h.into()],
        ));
        spi_ok(recorded.first().get_one::<i64>()).unwrap_or(0)
    })
}

/// Removes completed queue items that are older than
/// `balance_queue.completed_retention` seconds and already counted by a
/// health collection, moving them to `balance_update_queue_archive` first
/// when `balance_queue.archive_completed` is on. Keeps the queue table
/// small under sustained load. Returns the number of items removed.
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
pub fn cleanup_completed_updates() -> i64 {
    crate::errors::refuse_on_standby("cleanup_completed_updates");
    let retention_s = gucs::COMPLETED_RETENTION_S.get();
    let archive = gucs::ARCHIVE_COMPLETED.get();
    let archive_sql = if archive {
        "INSERT INTO balance_queue.balance_update_queue_archive SELECT * FROM removed"
    } else {
        "SELECT 1 FROM removed"
    };
    Spi::connect_mut(|client| {
        let sql = format!(
            "WITH counted AS (
                 SELECT chain_id, max(recorded_at) AS recorded_at
                   FROM balance_queue.queue_health_metrics GROUP BY chain_id
             ), removed AS (
                 DELETE FROM balance_queue.balance_update_queue q
                  USING counted c
                  WHERE q.status = 'completed' AND c.chain_id = q.chain_id
                    AND q.processed_at <= least(c.recorded_at, now() - make_interval(secs => $1))
                 RETURNING q.*
             ), kept AS ({archive_sql})
             SELECT count(*) FROM removed"
        );
        let removed = spi_ok(client.update(&sql, Some(1), &[f64::from(retention_s).into()]));
        spi_ok(removed.first().get_one::<i64>()).unwrap_or(0)
    })
}

/// Puts failed queue items back to `pending` with a fresh retry budget.
///
/// * `p_chain_id`: only this chain's items; NULL (default) for all.
///
/// Items recorded for bad source rows (`retryable = false`) stay failed:
/// the row itself must be fixed (deleted and re-inserted). Returns the
/// number of items put back.
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
pub fn retry_failed_updates(p_chain_id: default!(Option<i32>, "NULL")) -> i64 {
    crate::errors::refuse_on_standby("retry_failed_updates");
    Spi::connect_mut(|client| {
        let rows = spi_ok(client.update(
            "WITH retried AS (
                 UPDATE balance_queue.balance_update_queue
                    SET status = 'pending', retry_count = 0, next_attempt_at = NULL,
                        error_message = NULL, processed_at = NULL
                  WHERE status = 'failed' AND retryable AND ($1::integer IS NULL OR chain_id = $1)
                 RETURNING 1
             )
             SELECT count(*) FROM retried",
            Some(1),
            &[p_chain_id.into()],
        ));
        spi_ok(rows.first().get_one::<i64>()).unwrap_or(0)
    })
}

/// The effective queue processing configuration of a chain, as the worker
/// uses it (the plan's `get_queue_config`, with its four columns first).
///
/// * `p_chain_id`: EIP-155 chain id; NULL for the default.
///
/// Returns one row: `batch_size` (queue items per batch, as in the plan: a
/// batch, one transaction, stops at this many items or at
/// `balance_queue.batch_size` transfers, whichever comes first; an id-range
/// item of a rindexer COPY stands for up to 5,000 transfers),
/// `processing_interval_seconds` (an idle chain is polled this often: after
/// a poll that found nothing for it, the worker looks again only after this
/// many seconds; a chain with work is drained without pause; 0: every
/// `balance_queue.naptime`),
/// `max_retry_attempts`, `enabled`, then `chain_id` and
/// `priority_boost_threshold_hours` (pending items older than this are
/// drained first; 0: never). Each comes from the chain's
/// `queue_processing_config` row, else the NULL-chain row, else the GUC
/// (`balance_queue.batch_size`, `balance_queue.max_retries`), else 0.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
pub fn get_queue_config(
    p_chain_id: Option<i32>,
) -> TableIterator<
    'static,
    (
        name!(batch_size, i32),
        name!(processing_interval_seconds, i32),
        name!(max_retry_attempts, i32),
        name!(enabled, bool),
        name!(chain_id, Option<i32>),
        name!(priority_boost_threshold_hours, i32),
    ),
> {
    let config = Spi::connect(|client| crate::config::effective_config(client, p_chain_id));
    TableIterator::once((
        config.batch_size,
        config.processing_interval_seconds,
        config.max_retry_attempts,
        config.enabled,
        p_chain_id,
        config.priority_boost_threshold_hours,
    ))
}

/// Raises old pending items of one drain group to priority 0, so they are
/// claimed ahead of newer ones (the plan's "boost priority for old items").
/// The claim keeps walking the (priority, id) index: the boost is a
/// priority change, not another sort order. Returns the items boosted.
pub fn boost_old_items(
    client: &mut pgrx::spi::SpiClient<'_>,
    filter: &crate::apply::ClaimFilter,
    threshold_hours: i32,
) -> i64 {
    if threshold_hours <= 0 {
        return 0;
    }
    let rows = spi_ok(client.update(
        &format!(
            "WITH boosted AS (
             UPDATE balance_queue.balance_update_queue
                SET priority = 0
              WHERE id IN (SELECT id FROM balance_queue.balance_update_queue
                            WHERE status = 'pending' AND priority > 0
                              AND created_at < now() - make_interval(hours => $1)
                              AND {chains}
                              -- an item a drain holds is being applied already
                              FOR UPDATE SKIP LOCKED)
             RETURNING 1
         )
         SELECT count(*) FROM boosted",
            chains = crate::apply::chain_filter("$2", "$3")
        ),
        Some(1),
        &[
            threshold_hours.into(),
            filter.chain_id.into(),
            filter.exclude_chains.clone().into(),
        ],
    ));
    spi_ok(rows.first().get_one::<i64>()).unwrap_or(0)
}

/// Copies every non-zero balance into `daily_balance_snapshots` for one day.
///
/// * `p_date`: the snapshot's date (default `current_date`); the worker
///   takes one for the UTC date when the UTC day changes.
///
/// Each row keeps the balance in wei, its USD value, the token symbol, the
/// block it was last updated at (`block_number`) and the chain's head block
/// when the snapshot was taken (`snapshot_block`: the balance is as of it). Taking the same day again replaces that day's rows.
/// Returns the number of balances copied.
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
pub fn create_daily_balance_snapshot(p_date: default!(pgrx::datum::Date, "current_date")) -> i64 {
    crate::errors::refuse_on_standby("create_daily_balance_snapshot");
    Spi::connect_mut(|client| {
        spi_ok(client.update(
            "DELETE FROM balance_queue.daily_balance_snapshots WHERE snapshot_date = $1",
            None,
            &[p_date.into()],
        ));
        let rows = spi_ok(client.update(
            &format!("WITH copied AS (
                 INSERT INTO balance_queue.daily_balance_snapshots
                     (snapshot_date, chain_id, contract_address, holder_address, balance, balance_usd,
                      block_number, snapshot_block, token_symbol)
                 SELECT $1, b.chain_id, b.contract_address, b.holder_address, b.current_balance, {usd},
                        b.last_updated_block, r.head_block, b.token_symbol
                   FROM balance_queue.current_token_balances b
                   LEFT JOIN balance_queue.chain_registry r USING (chain_id)
                   LEFT JOIN balance_queue.token_metadata m USING (chain_id, contract_address)
                  WHERE b.current_balance <> 0
                 RETURNING 1
             )
             SELECT count(*) FROM copied",
            usd = crate::prices::usd_sql("b.current_balance", "m")),
            Some(1),
            &[p_date.into()],
        ));
        spi_ok(rows.first().get_one::<i64>()).unwrap_or(0)
    })
}

/// A holder's balance on a past day, from the latest snapshot taken on or
/// before `p_date` (two index lookups). A key absent from that snapshot
/// held zero. NULL when no snapshot exists on or before `p_date`.
///
/// Errors: 22P02 (invalid_text_representation) for a malformed address.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
pub fn get_balance_at_date(
    p_chain_id: i32,
    p_contract_address: &str,
    p_holder_address: &str,
    p_date: pgrx::datum::Date,
) -> Option<AnyNumeric> {
    let contract = normalize_arg("p_contract_address", p_contract_address);
    let holder = normalize_arg("p_holder_address", p_holder_address);
    Spi::get_one_with_args::<AnyNumeric>(
        "SELECT CASE WHEN d.day IS NOT NULL THEN coalesce(s.balance, 0) END
           FROM (SELECT max(snapshot_date) AS day FROM balance_queue.daily_balance_snapshots
                  WHERE snapshot_date <= $4) d
           LEFT JOIN balance_queue.daily_balance_snapshots s
             ON s.snapshot_date = d.day AND s.chain_id = $1
            AND s.contract_address = $2 AND s.holder_address = $3",
        &[
            p_chain_id.into(),
            contract.as_str().into(),
            holder.as_str().into(),
            p_date.into(),
        ],
    )
    .unwrap_or(None)
}
