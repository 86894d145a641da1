//! The periodic maintenance worker 0 runs between batches: pruning the
//! confirmation window and the change feed, folding the token statistics,
//! health metrics and cleanup, the top-holder boards, the GraphQL wrappers
//! of recreated schemas, and the daily snapshot when the UTC day changes.

use super::WorkerState;
use super::transaction::{in_transaction, read_one};
use crate::gucs;
use crate::maintenance::health;
use pgrx::prelude::*;
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
        // Its own transaction: it may wait for drains to commit.
        match in_transaction(|| Spi::run("SELECT balance_queue.refresh_leaderboards()")) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warning!("balance_queue: refreshing the top-holder boards failed: {e}"),
            Err(e) => warning!("balance_queue: refreshing the top-holder boards failed: {e}"),
        }
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
