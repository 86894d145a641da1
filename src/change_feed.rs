//! The change feed's cursor: which balances changed since a consumer last
//! looked, for caches that lost notifications (a listener that
//! reconnected). The statement triggers of sql/change_feed.sql record the
//! keys each transaction wrote; a cursor is a snapshot (as PgQ reads its
//! batches), so "changed after the cursor" means "written by a transaction
//! the cursor's snapshot did not see and this statement's snapshot does",
//! exact whatever order concurrent drains commit in. The worker deletes
//! what is older than `balance_queue.change_retention`
//! ([`prune_balance_changes`]); a cursor that had not seen something
//! deleted is expired.
//!
//! Cursor text: `1:<feed id>:<pg_snapshot>`. The feed id (a uuid made at
//! CREATE EXTENSION) expires cursors of another install or cluster, whose
//! transaction ids mean nothing here.

use crate::errors::{raise, spi_ok};
use pgrx::prelude::*;

/// The cursor text of the current statement's snapshot.
const CURSOR_NOW_SQL: &str = "'1:' || s.feed_id || ':' || pg_catalog.pg_current_snapshot()::text";

/// The position of the feed now: a consumer that loads every balance takes
/// it first (in the same transaction, or before the load) and then follows
/// with [`balance_changes_since`]. Returns the cursor as text.
///
/// Errors: 55000 (object_not_in_prerequisite_state) when
/// `balance_queue.change_feed` is off.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
pub fn balance_changes_cursor() -> String {
    require_feed();
    Spi::get_one::<String>(&format!(
        "SELECT {CURSOR_NOW_SQL} FROM balance_queue.change_feed_state s"
    ))
    .ok()
    .flatten()
    .expect("change_feed_state holds one row")
}

/// Every balance key changed by a transaction that committed after
/// `p_cursor` (from `balance_changes_cursor()` or an earlier call), once,
/// with its current balance in wei (0 when the row is gone, e.g. after
/// `handle_reorg`), ordered by key. Every row carries the same
/// `next_cursor`: the position this answer is exact up to. No rows: nothing
/// changed, keep your cursor.
///
/// Columns: `chain_id`, `contract_address`, `holder_address`,
/// `current_balance` (wei, signed NUMERIC), `next_cursor` (text).
///
/// Errors: 22023 (invalid_parameter_value) for text that is not a cursor;
/// 55000 (object_not_in_prerequisite_state) when the feed is off, or the
/// cursor is expired: changes after it were deleted (older than
/// `balance_queue.change_retention`), a TRUNCATE of the balances came
/// after it, balances changed after it while the feed was off, or it
/// belongs to another install. The consumer then reloads every balance and
/// starts again from `balance_changes_cursor()`.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
pub fn balance_changes_since(
    p_cursor: &str,
) -> TableIterator<
    'static,
    (
        name!(chain_id, i32),
        name!(contract_address, String),
        name!(holder_address, String),
        name!(current_balance, AnyNumeric),
        name!(next_cursor, String),
    ),
> {
    require_feed();
    let (feed_id, snapshot) = parse_cursor(p_cursor);
    let rows = Spi::connect(|client| {
        let checks = spi_ok(client.select(
            "SELECT s.feed_id = $1::uuid,
                    s.pruned_below <= pg_catalog.pg_snapshot_xmin($2::pg_snapshot),
                    pg_catalog.pg_visible_in_snapshot(s.truncated_by, $2::pg_snapshot),
                    NOT EXISTS (SELECT 1 FROM balance_queue.balance_changes c
                                 WHERE c.unrecorded
                                   AND c.txid >= pg_catalog.pg_snapshot_xmin($2::pg_snapshot)
                                   AND NOT pg_catalog.pg_visible_in_snapshot(c.txid, $2::pg_snapshot))
               FROM balance_queue.change_feed_state s",
            None,
            &[feed_id.into(), snapshot.as_str().into()],
        ));
        let row = checks.first();
        let check = |i| spi_ok(row.get::<bool>(i)).unwrap_or(false);
        let why = if !check(1) {
            Some("it belongs to another install of the extension")
        } else if !check(2) {
            Some("changes after it were deleted (balance_queue.change_retention)")
        } else if !check(3) {
            Some("the balances were truncated after it")
        } else if !check(4) {
            Some("balances changed after it while balance_queue.change_feed was off")
        } else {
            None
        };
        if let Some(why) = why {
            expired(p_cursor, why);
        }
        spi_ok(client.select(
            &format!(
                "SELECT k.chain_id, k.contract_address, k.holder_address,
                        coalesce(b.current_balance, 0), {CURSOR_NOW_SQL}
                   FROM ({changed}) k
                   LEFT JOIN balance_queue.current_token_balances b
                          USING (chain_id, contract_address, holder_address)
                  CROSS JOIN balance_queue.change_feed_state s
                  ORDER BY 1, 2, 3",
                changed = crate::apply::changed_keys_sql(
                    "NOT c.unrecorded
                     AND c.txid >= pg_catalog.pg_snapshot_xmin($1::pg_snapshot)
                     AND NOT pg_catalog.pg_visible_in_snapshot(c.txid, $1::pg_snapshot)"
                )
            ),
            None,
            &[snapshot.into()],
        ))
        .map(|row| {
            (
                row.get::<i32>(1).ok().flatten().unwrap_or_default(),
                row.get::<String>(2).ok().flatten().unwrap_or_default(),
                row.get::<String>(3).ok().flatten().unwrap_or_default(),
                row.get::<AnyNumeric>(4)
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| AnyNumeric::from(0)),
                row.get::<String>(5).ok().flatten().unwrap_or_default(),
            )
        })
        .collect::<Vec<_>>()
    });
    TableIterator::new(rows)
}

/// Deletes recorded changes older than `balance_queue.change_retention`
/// whose transaction is older than every running one (below this
/// snapshot's xmin), and raises `pruned_below` past the newest deleted: a
/// cursor taken before the deletion that had not seen all of them is then
/// refused, and any cursor taken after it is whole (its xmin is at least
/// this snapshot's). Run by the worker every second; returns the rows
/// deleted.
pub fn prune_balance_changes() -> i64 {
    Spi::get_one_with_args::<i64>(
        "WITH gone AS (
             DELETE FROM balance_queue.balance_changes
              WHERE recorded_at < now() - make_interval(secs => $1)
                AND txid < pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())
             RETURNING txid
         ), raised AS (
             UPDATE balance_queue.change_feed_state
                SET pruned_below = greatest(pruned_below,
                                            ((SELECT max(txid) FROM gone)::text::numeric + 1)::text::xid8)
              WHERE EXISTS (SELECT 1 FROM gone)
         )
         SELECT count(*) FROM gone",
        &[f64::from(crate::gucs::CHANGE_RETENTION_S.get()).into()],
    )
    .ok()
    .flatten()
    .unwrap_or(0)
}

/// 55000 unless `balance_queue.change_feed` is on.
fn require_feed() {
    if !crate::gucs::CHANGE_FEED.get() {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "the balance_queue change feed is off (balance_queue.change_feed)",
            Some("ALTER SYSTEM SET balance_queue.change_feed = on; SELECT pg_reload_conf();"),
        );
    }
}

/// Splits `1:<feed id>:<snapshot>`; 22023 for anything else. The snapshot's
/// own syntax is checked by its cast (22P02).
fn parse_cursor(cursor: &str) -> (String, String) {
    let parsed = cursor.strip_prefix("1:").and_then(|rest| {
        let (feed_id, snapshot) = rest.split_once(':')?;
        let uuid_like =
            feed_id.len() == 36 && feed_id.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        (uuid_like && !snapshot.is_empty()).then(|| (feed_id.to_string(), snapshot.to_string()))
    });
    parsed.unwrap_or_else(|| {
        crate::errors::invalid_parameter(format!(
            "{cursor:?} is not a balance_queue change cursor (from balance_changes_cursor() or a next_cursor)"
        ))
    })
}

/// 55000 for an expired cursor, telling the consumer what to do.
fn expired(cursor: &str, why: &str) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        format!("change cursor {cursor} is expired: {why}"),
        Some(
            "Reload every balance you cache, taking balance_changes_cursor() first, and follow from that cursor.",
        ),
    )
}
