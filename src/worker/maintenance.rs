//! The periodic maintenance worker 0 runs between batches: pruning the
//! confirmation window and the change feed, folding the token statistics,
//! health metrics and cleanup, the top-holder boards, the GraphQL wrappers
//! of recreated schemas, and the daily snapshot when the UTC day changes.

use super::WorkerState;
use super::transaction::{in_transaction, read_one};
use crate::errors::spi_ok;
use crate::gucs;
use crate::maintenance::health;
use pgrx::prelude::*;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How often confirmed blocks leave the pending window table, old changes
/// leave the change feed, and token statistics are folded.
pub(super) const PRUNE_INTERVAL: Duration = Duration::from_secs(1);

/// How often the worker looks at the UTC date for the daily snapshot.
pub(super) const DATE_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Makes the GraphQL wrappers of recorded exposures again where rindexer
/// recreated their schema, as its owner, one transaction per schema.
fn restore_graphql_exposures() {
    let missing = in_transaction(crate::graphql::missing_exposures).unwrap_or_default();
    for (schema, prefix, role) in missing {
        match in_transaction(|| crate::graphql::restore_exposure(&schema, &prefix, &role)) {
            Ok(()) => log!("balance_queue: exposed schema {schema} to GraphQL again (as {role})"),
            Err(e) => warning!(
                "balance_queue: could not expose schema {schema} to GraphQL again as {role}: {e}"
            ),
        }
    }
}

/// Rechecks the blocks whose canonical hash changed, if any, and drops the
/// canonical hashes and unjudged hashes of confirmed blocks.
fn recheck_block_hashes() {
    let queued = in_transaction(|| {
        Spi::connect(|client| crate::repair::recheck::rechecks_queued(client, None))
    });
    if queued.unwrap_or(false) {
        match in_transaction(|| crate::repair::recheck::recheck_block_hashes().collect::<Vec<_>>())
        {
            Ok(rows) => {
                for (chain, from, taken, requeued) in rows {
                    log!(
                        "balance_queue: rechecked chain {chain} from block {from}: \
                         {taken} sides taken back, {requeued} items queued again"
                    );
                }
            }
            Err(e) => warning!("balance_queue: rechecking block hashes failed: {e}"),
        }
    }
    if let Err(e) = in_transaction(|| Spi::run("SELECT balance_queue._prune_block_hashes()")) {
        warning!("balance_queue: pruning block hashes failed: {e}");
    }
}

/// The number of holders a top-holder board keeps (the default `p_target`
/// of `refresh_leaderboards()` in sql/leaderboard.sql).
const BOARD_TARGET: i32 = 1000;

/// How long changing one token's board waits for its SHARE lock on the
/// balances. Drains queue behind a waiting SHARE request, so a token whose
/// lock is not free within this is tried again later.
const BOARD_LOCK_TIMEOUT: &str = "100ms";

/// A token whose top-holder board is due a change: chain id, token
/// contract, keys on its board (None: no board yet).
pub(super) type BoardDue = (i32, String, Option<i64>);

/// The tokens whose boards are due a change (`_leaderboards_due`).
fn leaderboards_due() -> VecDeque<BoardDue> {
    let due = in_transaction(|| {
        Spi::connect(|client| {
            spi_ok(client.select(
                "SELECT chain_id, contract_address, on_board FROM balance_queue._leaderboards_due($1)",
                None,
                &[BOARD_TARGET.into()],
            ))
            .map(|row| {
                (
                    spi_ok(row.get::<i32>(1)).unwrap_or_default(),
                    spi_ok(row.get::<String>(2)).unwrap_or_default(),
                    spi_ok(row.get::<i64>(3)),
                )
            })
            .collect()
        })
    });
    due.unwrap_or_else(|e| {
        warning!("balance_queue: finding the top-holder boards due a change failed: {e}");
        VecDeque::new()
    })
}

/// Changes the board of the next due token, in its own transaction, when
/// its SHARE lock on the balances is free within [`BOARD_LOCK_TIMEOUT`];
/// a token whose lock was busy goes to the back of the line. One token per
/// call (once a second): the drains wait for one token's change at a time,
/// and worker 0 leaves its batches for no longer. (Changing every due token
/// in one transaction held the lock for 2 s in the sustained benchmark;
/// one transaction per token, tried back to back, kept worker 0 from its
/// batches for 6 s while the other worker held the balances.) A board
/// changed late is still exact: the token's top holders are read from its
/// balances, or from a board larger than needed, meanwhile.
fn change_one_board(due: &mut VecDeque<BoardDue>) {
    let Some((chain, contract, on_board)) = due.pop_front() else {
        return;
    };
    let changed = in_transaction(|| {
        Spi::connect_mut(|client| {
            spi_ok(client.update(
                "SELECT set_config('lock_timeout', $1, true)",
                None,
                &[BOARD_LOCK_TIMEOUT.into()],
            ));
            spi_ok(
                spi_ok(client.update(
                    "SELECT balance_queue._refresh_leaderboard($1, $2, $3, $4)",
                    Some(1),
                    &[
                        chain.into(),
                        contract.as_str().into(),
                        on_board.into(),
                        BOARD_TARGET.into(),
                    ],
                ))
                .first()
                .get_one::<bool>(),
            )
        })
    });
    match changed {
        Ok(Some(true)) => {}
        Ok(_) => due.push_back((chain, contract, on_board)),
        Err(e) => warning!(
            "balance_queue: changing the top-holder board of token {contract} on chain {chain} failed: {e}"
        ),
    }
}

/// Runs the periodic maintenance when due.
pub(super) fn maintenance(state: &mut WorkerState) {
    if state
        .last_prune
        .is_none_or(|t| t.elapsed() >= PRUNE_INTERVAL)
    {
        state.last_prune = Some(Instant::now());
        if let Err(e) = in_transaction(crate::repair::reorg::prune_confirmed_sides) {
            warning!("balance_queue: pruning confirmed blocks failed: {e}");
        }
        if let Err(e) = in_transaction(crate::change_feed::prune_balance_changes) {
            warning!("balance_queue: pruning the change feed failed: {e}");
        }
        if let Err(e) = in_transaction(crate::token_stats::fold_token_stats) {
            warning!("balance_queue: folding the token statistics failed: {e}");
        }
        recheck_block_hashes();
        change_one_board(&mut state.boards_due);
    }
    let interval = Duration::from_secs(gucs::HEALTH_INTERVAL_S.get().max(1) as u64);
    if state.last_health.is_none_or(|t| t.elapsed() >= interval) {
        state.last_health = Some(Instant::now());
        if let Err(e) = in_transaction(|| {
            health::collect_queue_health_metrics();
            health::cleanup_completed_updates();
        }) {
            warning!("balance_queue: health collection failed: {e}");
        }
        state.boards_due = leaderboards_due();
        restore_graphql_exposures();
        match in_transaction(|| {
            Spi::get_one::<i32>("SELECT balance_queue.follow_rindexer_block_hashes()")
        }) {
            Ok(Ok(Some(n))) if n > 0 => {
                log!(
                    "balance_queue: following rindexer_internal.reorg_block_hashes ({n} hashes copied)"
                )
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warning!(
                "balance_queue: following rindexer_internal.reorg_block_hashes failed: {e}"
            ),
            Err(e) => warning!(
                "balance_queue: following rindexer_internal.reorg_block_hashes failed: {e}"
            ),
        }
    }
    if !gucs::DAILY_SNAPSHOTS.get()
        || state
            .last_date_check
            .is_some_and(|t| t.elapsed() < DATE_CHECK_INTERVAL)
    {
        return;
    }
    state.last_date_check = Some(Instant::now());
    let today =
        in_transaction(|| read_one::<String>("SELECT (now() AT TIME ZONE 'UTC')::date::text"))
            .ok()
            .flatten();
    match (&state.utc_date, today) {
        (Some(previous), Some(today)) if *previous != today => {
            // The UTC day changed: snapshot the balances as the day closed.
            let day = previous.clone();
            match in_transaction(|| {
                Spi::get_one_with_args::<i64>(
                    "SELECT balance_queue.create_daily_balance_snapshot($1::date)",
                    &[day.as_str().into()],
                )
            }) {
                Ok(Ok(Some(rows))) => {
                    log!("balance_queue: daily snapshot of {day}: {rows} balances")
                }
                other => warning!("balance_queue: daily snapshot of {day} failed: {other:?}"),
            }
            state.utc_date = Some(today);
        }
        (None, Some(today)) => state.utc_date = Some(today),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_worker_keeps_boards_of_the_sql_default_size() {
        let sql = include_str!("../../sql/leaderboard.sql");
        assert!(sql.contains(&format!(
            "refresh_leaderboards(p_target integer DEFAULT {})",
            super::BOARD_TARGET
        )));
    }
}
