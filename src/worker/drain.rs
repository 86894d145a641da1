//! One pass of the drain: per chain group (a chain with its own
//! configuration row, or the default for the others) a bulk load when one is
//! due, else a batch of the worker's holder partition; a batch that fails is
//! retried item by item so the failing items back off alone.

use super::transaction::{extension_exists, in_transaction, read_one, ready_to_drain};
use super::{WorkerState, report_activity};
use crate::apply::{self, ClaimFilter};
use crate::config;
use crate::errors::spi_ok;
use crate::gucs;
use crate::maintenance::health;
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// Whether any item is due at all: one probe of the pending index, so an
/// idle worker costs one cheap query per naptime, whatever the number of
/// configured chains.
pub(super) fn work_due() -> bool {
    read_one::<bool>(&format!(
        "SELECT EXISTS (SELECT 1 FROM balance_queue.balance_update_queue WHERE {})",
        apply::DUE
    ))
    .unwrap_or(true)
}

/// Whether any item of the chains of `filter` is due, of any holder
/// partition, outside the chains another worker is bulk-loading.
pub(super) fn group_has_due_items(filter: &ClaimFilter) -> bool {
    // Read-only (Spi::connect): no transaction id for a poll.
    Spi::connect(|client| {
        // Chains being bulk-loaded are another worker's until it commits.
        let mut exclude = filter.exclude_chains.clone();
        exclude.extend(apply::chains_in_bulk(client));
        spi_ok(client.select(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM balance_queue.balance_update_queue WHERE {} AND {})",
                apply::DUE,
                apply::chain_filter("$1", "$2"),
            ),
            Some(1),
            &[filter.chain_id.into(), exclude.into()],
        ))
        .first()
        .get_one::<bool>()
        .ok()
        .flatten()
        .unwrap_or(false)
    })
}

/// One drain schedule: a chain with its own configuration row, or the
/// default for every chain without one.
#[derive(Debug, Clone)]
pub(super) struct Group {
    filter: ClaimFilter,
    config: config::QueueConfig,
}

pub(super) fn load_groups() -> Vec<Group> {
    Spi::connect(|client| {
        let configured: Vec<i32> = spi_ok(client.select(
            "SELECT chain_id FROM balance_queue.queue_processing_config WHERE chain_id IS NOT NULL ORDER BY 1",
            None,
            &[],
        ))
        .filter_map(|row| spi_ok(row.get::<i32>(1)))
        .collect();
        let mut groups: Vec<Group> = configured
            .iter()
            .map(|&chain| {
                let config = config::effective_config(client, Some(chain));
                Group {
                    filter: ClaimFilter {
                        chain_id: Some(chain),
                        max_items: Some(config.batch_size),
                        ..Default::default()
                    },
                    config,
                }
            })
            .collect();
        let config = config::effective_config(client, None);
        groups.push(Group {
            filter: ClaimFilter {
                exclude_chains: configured,
                max_items: Some(config.batch_size),
                ..Default::default()
            },
            config,
        });
        groups
    })
}

/// Records a failed attempt of one item: back off exponentially, or give
/// up (status `failed`) once `max_attempts` attempts have failed.
pub(super) fn record_failure(id: i64, message: &str, max_attempts: i32) {
    let backoff_ms = f64::from(gucs::RETRY_BACKOFF_MS.get());
    let recorded = in_transaction(|| {
        Spi::run_with_args(
            &format!(
                "UPDATE balance_queue.balance_update_queue q
                    SET error_message = $2, {attempt}
                  WHERE id = $1 AND status = 'pending'",
                attempt = apply::failed_attempt_set("q", "$3", "$4")
            ),
            &[
                id.into(),
                message.into(),
                max_attempts.into(),
                backoff_ms.into(),
            ],
        )
    });
    let problem = match recorded {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(e) => e,
    };
    warning!("balance_queue: could not record the failure of item {id}: {problem}");
}

/// A batch raised an error: find the items that raise it by applying the
/// batch's candidates one at a time, so they back off (and finally fail)
/// alone while the rest flows.
pub(super) fn isolate_failures(group: &Group, batch_error: &str) {
    warning!("balance_queue: batch failed ({batch_error}); retrying its items one by one");
    let candidates = in_transaction(|| {
        Spi::connect(|client| {
            spi_ok(client.select(
                &format!(
                    "SELECT id FROM balance_queue.balance_update_queue
                      WHERE {due}
                        AND {chains}
                      ORDER BY priority, id LIMIT $1",
                    due = apply::DUE,
                    chains = apply::chain_filter("$2", "$3"),
                ),
                None,
                &[
                    group.config.batch_size.into(),
                    group.filter.chain_id.into(),
                    group.filter.exclude_chains.clone().into(),
                ],
            ))
            .filter_map(|row| spi_ok(row.get::<i64>(1)))
            .collect::<Vec<_>>()
        })
    })
    .unwrap_or_default();
    for id in candidates {
        if unsafe { pg_sys::ShutdownRequestPending } != 0 {
            return;
        }
        let single = ClaimFilter {
            ids: Some(vec![id]),
            ..group.filter.clone()
        };
        let Err(message) =
            in_transaction(|| Spi::connect_mut(|client| apply::apply_batch(client, 1, &single)))
        else {
            continue;
        };
        // An id-range item stands for a whole statement's rows: split it
        // into transfer sides, which the next passes isolate one by one.
        match in_transaction(|| {
            Spi::connect_mut(|client| apply::split_row_item(client, id, &message))
        }) {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => record_failure(id, &message, group.config.max_retry_attempts),
        }
    }
}

/// How often old pending items are checked for a priority boost.
pub(super) const BOOST_INTERVAL: Duration = Duration::from_secs(60);

/// Applies in bulk the chain of `group` that is due one (see
/// `apply::bulk_candidate`), if any. Asked before every batch: a worker
/// that started a batch on a chain due a bulk load would make the chain
/// non-empty under it, and the other worker's bulk load would give way.
/// Returns whether it applied one.
pub(super) fn bulk_pass(group: &Group) -> bool {
    let threshold = i64::from(gucs::BULK_THRESHOLD.get());
    let begun = in_transaction(|| {
        Spi::connect_mut(|client| {
            apply::settle_own_bulk_loads(client);
            if threshold <= 0 {
                return None;
            }
            let (chain, transfers) = apply::bulk_candidate(client, &group.filter, threshold)?;
            let load = apply::begin_bulk_load(client, chain, transfers)?;
            Some((chain, transfers, load))
        })
    });
    let (chain, transfers, load) = match begun {
        Ok(Some(due)) => due,
        Ok(None) => return false,
        Err(e) => {
            warning!("balance_queue: looking for a chain due a bulk apply failed: {e}");
            return false;
        }
    };
    log!(
        "balance_queue: bulk apply of chain {chain} started: {transfers} transfers queued (bulk_loads id {load})"
    );
    report_activity(Some(&format!(
        "balance_queue: bulk load {load} of chain {chain}, {transfers} transfers"
    )));
    match in_transaction(|| Spi::connect_mut(|client| apply::apply_bulk(client, chain, load))) {
        Ok(Some(outcome)) => {
            log!(
                "balance_queue: bulk apply of chain {chain} done in {:.1} s",
                outcome.elapsed_ms / 1000.0
            );
            true
        }
        Ok(None) => false,
        Err(message) => {
            warning!(
                "balance_queue: bulk apply of chain {chain} failed, draining it batch by batch: {message}"
            );
            let _ = in_transaction(|| {
                Spi::connect_mut(|client| {
                    apply::end_bulk_load(client, load, "failed", Some(&message))
                })
            });
            false
        }
    }
}

/// The holder partition worker `index` applies first, `(index, n)`: with
/// more than one worker, each has its own (see `ClaimFilter`), so they
/// never wait on each other's keys. `None` (every item) for a lone worker,
/// or one beyond `balance_queue.workers` (the setting was lowered).
pub(super) fn own_holder_partition(index: i32) -> Option<(i32, i32)> {
    let partitions = gucs::holder_partitions();
    (partitions > 1 && index < partitions).then_some((index, partitions))
}

/// One pass over every group. Returns how long to sleep before the next,
/// or None when the extension is not (or no longer) in this database.
pub(super) fn drain_pass(state: &mut WorkerState) -> Option<Duration> {
    let naptime = Duration::from_millis(gucs::NAPTIME_MS.get().max(1) as u64);
    if !ready_to_drain(state) {
        return None;
    }
    let groups = match in_transaction(|| work_due().then(load_groups)) {
        Ok(Some(groups)) => groups,
        Ok(None) => return Some(naptime), // nothing due
        Err(e) => {
            warning!("balance_queue: could not read the queue configuration: {e}");
            return Some(naptime);
        }
    };
    if state.index == 0
        && state
            .last_boost
            .is_none_or(|t| t.elapsed() >= BOOST_INTERVAL)
    {
        state.last_boost = Some(Instant::now());
        for group in groups.iter().filter(|g| g.config.enabled) {
            let threshold = group.config.priority_boost_threshold_hours;
            if let Err(e) = in_transaction(|| {
                Spi::connect_mut(|client| health::boost_old_items(client, &group.filter, threshold))
            }) {
                warning!("balance_queue: boosting old items failed: {e}");
            }
        }
    }
    let mut sleep = naptime;
    let mut quiet = Vec::new();
    let mut busy = false;
    for group in groups.iter().filter(|g| g.config.enabled) {
        // A chain that had nothing to drain is looked at again only after
        // its interval while other chains keep the worker busy.
        let interval = Duration::from_secs(group.config.processing_interval_seconds.max(0) as u64);
        if let Some(last) = state.last_empty_poll.get(&group.filter.chain_id)
            && last.elapsed() < interval
        {
            sleep = sleep.min(interval - last.elapsed());
            quiet.push(group);
            continue;
        }
        let (wait, applied) = drain_group(state, group, naptime)?;
        sleep = sleep.min(wait);
        busy |= applied;
    }
    // Items are due (work_due) and no chain had any: they are of chains
    // that were quiet a moment ago. On an otherwise idle worker a transfer
    // is applied within the naptime, not its chain's interval. (It used to
    // wait the interval: a worker that found its chain empty between two of
    // the indexer's statements slept 3 s on Ethereum, and the lag spiked.)
    if !busy {
        for group in quiet {
            if in_transaction(|| group_has_due_items(&group.filter)).unwrap_or(false) {
                sleep = sleep.min(drain_group(state, group, naptime)?.0);
            }
        }
    }
    Some(sleep)
}

/// Drains one group: a bulk load when one is due, else one batch of the
/// worker's holder partition. Returns how long to sleep before the next
/// pass (zero when more is waiting) and whether it applied anything, or
/// None when the extension is gone.
fn drain_group(
    state: &mut WorkerState,
    group: &Group,
    naptime: Duration,
) -> Option<(Duration, bool)> {
    if bulk_pass(group) {
        return Some((Duration::ZERO, true));
    }
    report_activity(Some(&match group.filter.chain_id {
        Some(chain) => format!("balance_queue: applying a batch of chain {chain}"),
        None => "balance_queue: applying a batch".to_string(),
    }));
    match in_transaction(|| {
        Spi::connect_mut(|client| {
            let mut filter = group.filter.clone();
            filter.exclude_chains.extend(apply::chains_in_bulk(client));
            filter.holder_partition = own_holder_partition(state.index);
            apply::apply_batch(client, gucs::BATCH_SIZE.get(), &filter)
        })
    }) {
        Ok(outcome) => {
            // A worker that found nothing of its own holder partition
            // while the other partitions have items looks again after the
            // naptime, not the chain's interval: the next items of its
            // partition are seconds away at most.
            if outcome.processed == 0
                && !(own_holder_partition(state.index).is_some()
                    && in_transaction(|| group_has_due_items(&group.filter)).unwrap_or(false))
            {
                state
                    .last_empty_poll
                    .insert(group.filter.chain_id, Instant::now());
            } else {
                state.last_empty_poll.remove(&group.filter.chain_id);
            }
            // A full batch: more is waiting, come back at once.
            let wait = if outcome.full {
                Duration::ZERO
            } else {
                naptime
            };
            Some((wait, outcome.processed > 0))
        }
        Err(message) => {
            if !in_transaction(extension_exists).unwrap_or(false) {
                return None; // dropped under us
            }
            isolate_failures(group, &message);
            Some((naptime, true))
        }
    }
}
