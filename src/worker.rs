//! The background worker: drains `balance_update_queue` in one database,
//! batch by batch, each batch one transaction, and runs the periodic
//! maintenance (health metrics, cleanup, daily snapshots).
//!
//! With `balance_queue` in `shared_preload_libraries`, `_PG_init` registers
//! `balance_queue.workers` workers per database in `balance_queue.database`;
//! the postmaster starts them and restarts one that exits abnormally or is
//! terminated. Without preloading, `start_worker()` starts them as dynamic
//! workers for the current database. The database list is fixed at server
//! start, so the postmaster itself is the launcher: no extra process is
//! needed.
//!
//! The workers of one database split the queue by claiming items with
//! `FOR UPDATE SKIP LOCKED`: each item is applied by exactly one of them.
//! Two batches may touch the same balance; both lock ledger and balance
//! rows in key order, so one waits for the other's commit and they never
//! deadlock. Worker 0 alone runs the maintenance (health, cleanup,
//! pruning, snapshots, priority boosts).

use crate::apply::{self, ClaimFilter};
use crate::config;
use crate::errors::spi_ok;
use crate::gucs;
use crate::maintenance::health;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

/// `pg_stat_activity.backend_type` (and application_name) of every worker.
pub const WORKER_TYPE: &str = "balance_queue worker";

/// A worker of database `db`: `kind` is `static` or `dynamic`, `index`
/// its number among the database's workers (0 runs the maintenance).
fn builder(db: &str, kind: &str, index: i32) -> BackgroundWorkerBuilder {
    BackgroundWorkerBuilder::new(&format!("{WORKER_TYPE} {db} #{index}"))
        .set_type(WORKER_TYPE)
        .set_library("balance_queue")
        .set_function("balance_queue_worker_main")
        .set_extra(&format!("{kind}:{index}:{db}"))
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
}

/// Registers `balance_queue.workers` static workers per database in
/// `balance_queue.database`. Called from `_PG_init` while
/// shared_preload_libraries load.
pub fn register_static_workers() {
    for db in gucs::databases() {
        for index in 0..gucs::WORKERS.get() {
            builder(&db, "static", index)
                .set_restart_time(Some(Duration::from_secs(1)))
                .load();
        }
    }
}

/// Runs `body` in its own transaction. An error raised inside is caught,
/// the transaction aborted, and the error's message returned.
fn in_transaction<R>(body: impl FnOnce() -> R + std::panic::UnwindSafe) -> Result<R, String> {
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let result = PgTryBuilder::new(AssertUnwindSafe(move || {
        lock_extension();
        Ok(body())
    }))
    .catch_others(|error| {
        Err(match error {
            CaughtError::PostgresError(e) | CaughtError::ErrorReport(e) => e.message().to_string(),
            CaughtError::RustPanic { ereport, .. } => ereport.message().to_string(),
        })
    })
    .execute();
    unsafe {
        if result.is_ok() {
            pg_sys::PopActiveSnapshot();
            pg_sys::CommitTransactionCommand();
        } else {
            pg_sys::AbortCurrentTransaction();
        }
    }
    result
}

/// Share-locks the extension object for the rest of the transaction.
/// `DROP EXTENSION` locks it exclusively before it touches any member
/// table, so a drop either waits for this transaction or this transaction
/// waits for the drop: never a deadlock between their table locks.
fn lock_extension() {
    unsafe {
        let extension = pg_sys::get_extension_oid(c"balance_queue".as_ptr(), true);
        if extension != pg_sys::InvalidOid {
            pg_sys::LockDatabaseObject(
                pg_sys::ExtensionRelationId,
                extension,
                0,
                pg_sys::AccessShareLock as pg_sys::LOCKMODE,
            );
        }
    }
}

fn extension_exists() -> bool {
    installed_version().is_some()
}

/// The version of the extension installed in this database, if any.
fn installed_version() -> Option<String> {
    Spi::get_one::<String>(
        "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'balance_queue'",
    )
    .ok()
    .flatten()
}

/// The version of this library: the SQL objects it expects.
const LIBRARY_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Whether the worker may drain: the extension is installed at the version
/// this library was built for. After a new library is installed and the
/// server restarted, the old SQL objects stay until `ALTER EXTENSION
/// balance_queue UPDATE`; draining with them could misread their tables, so
/// the worker waits and says why (once per version seen).
fn ready_to_drain(state: &mut WorkerState) -> bool {
    let installed = match in_transaction(installed_version) {
        Ok(Some(version)) => version,
        Ok(None) => return false,
        Err(e) => {
            warning!("balance_queue: could not read the installed version: {e}");
            return false;
        }
    };
    if installed == LIBRARY_VERSION {
        state.version_mismatch = None;
        return true;
    }
    if state.version_mismatch.as_deref() != Some(installed.as_str()) {
        log!(
            "balance_queue worker waits: the extension is installed at version {installed} but the library is {LIBRARY_VERSION}; run ALTER EXTENSION balance_queue UPDATE"
        );
        state.version_mismatch = Some(installed);
    }
    false
}

/// Whether any item is due at all: one probe of the pending index, so an
/// idle worker costs one cheap query per naptime, whatever the number of
/// configured chains.
fn work_due() -> bool {
    Spi::get_one::<bool>(&format!(
        "SELECT EXISTS (SELECT 1 FROM balance_queue.balance_update_queue WHERE {})",
        apply::DUE
    ))
    .ok()
    .flatten()
    .unwrap_or(true)
}

/// One drain schedule: a chain with its own configuration row, or the
/// default for every chain without one.
#[derive(Debug, Clone)]
struct Group {
    filter: ClaimFilter,
    config: config::QueueConfig,
}

fn load_groups() -> Vec<Group> {
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
fn record_failure(id: i64, message: &str, max_attempts: i32) {
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
fn isolate_failures(group: &Group, batch_error: &str) {
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

/// What the worker remembers between iterations.
struct WorkerState {
    /// This worker's number among its database's (0 runs the maintenance).
    index: i32,
    /// When each group last found nothing to drain (see
    /// processing_interval_seconds).
    last_empty_poll: HashMap<Option<i32>, Instant>,
    last_boost: Option<Instant>,
    /// The installed version the worker last logged it waits for.
    version_mismatch: Option<String>,
    last_health: Option<Instant>,
    last_date_check: Option<Instant>,
    last_prune: Option<Instant>,
    utc_date: Option<String>,
    /// Chains whose bulk apply failed, and when: drained batch by batch
    /// (which isolates the failing items) for a while.
    bulk_failed: HashMap<i32, Instant>,
}

/// How often confirmed blocks leave the pending window table.
const PRUNE_INTERVAL: Duration = Duration::from_secs(1);

/// How often old pending items are checked for a priority boost.
const BOOST_INTERVAL: Duration = Duration::from_secs(60);

/// How long a chain whose bulk apply failed is drained batch by batch.
const BULK_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Applies in bulk the chain of `group` that is due one (see
/// `apply::bulk_candidate`), if any. Asked before every batch: a worker
/// that started a batch on a chain due a bulk load would make the chain
/// non-empty under it, and the other worker's bulk load would give way.
/// Returns whether it applied one.
fn bulk_pass(state: &mut WorkerState, group: &Group) -> bool {
    let threshold = i64::from(gucs::BULK_THRESHOLD.get());
    if threshold <= 0 {
        return false;
    }
    state
        .bulk_failed
        .retain(|_, t| t.elapsed() < BULK_RETRY_AFTER);
    let mut filter = group.filter.clone();
    filter
        .exclude_chains
        .extend(state.bulk_failed.keys().copied());
    let begun = in_transaction(|| {
        Spi::connect_mut(|client| {
            let (chain, transfers) = apply::bulk_candidate(client, &filter, threshold)?;
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
            state.bulk_failed.insert(chain, Instant::now());
            let _ = in_transaction(|| {
                Spi::connect_mut(|client| {
                    apply::end_bulk_load(client, load, "failed", Some(&message))
                })
            });
            false
        }
    }
}

/// How often the worker looks at the UTC date for the daily snapshot.
const DATE_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Runs the periodic maintenance when due.
fn maintenance(state: &mut WorkerState) {
    if state
        .last_prune
        .is_none_or(|t| t.elapsed() >= PRUNE_INTERVAL)
    {
        state.last_prune = Some(Instant::now());
        if let Err(e) = in_transaction(crate::repair::reorg::prune_confirmed_sides) {
            warning!("balance_queue: pruning confirmed blocks failed: {e}");
        }
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
    }
    if !gucs::DAILY_SNAPSHOTS.get()
        || state
            .last_date_check
            .is_some_and(|t| t.elapsed() < DATE_CHECK_INTERVAL)
    {
        return;
    }
    state.last_date_check = Some(Instant::now());
    let today = in_transaction(|| {
        Spi::get_one::<String>("SELECT (now() AT TIME ZONE 'UTC')::date::text")
            .ok()
            .flatten()
    })
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

/// The holder partition worker `index` applies first, `(index, n)`: with
/// more than one worker, each has its own (see `ClaimFilter`), so they
/// never wait on each other's keys. `None` (every item) for a lone worker,
/// or one beyond `balance_queue.workers` (the setting was lowered).
fn own_holder_partition(index: i32) -> Option<(i32, i32)> {
    let partitions = gucs::holder_partitions();
    (partitions > 1 && index < partitions).then_some((index, partitions))
}

/// One pass over every group. Returns how long to sleep before the next,
/// or None when the extension is not (or no longer) in this database.
fn drain_pass(state: &mut WorkerState) -> Option<Duration> {
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
    for group in groups {
        if !group.config.enabled {
            continue;
        }
        // A chain that had nothing to drain is looked at again only after
        // its interval; one with work is drained without pause. (When no
        // chain has work, no chain is polled: one probe per naptime.)
        let interval = Duration::from_secs(group.config.processing_interval_seconds.max(0) as u64);
        if let Some(last) = state.last_empty_poll.get(&group.filter.chain_id)
            && last.elapsed() < interval
        {
            sleep = sleep.min(interval - last.elapsed());
            continue;
        }
        if bulk_pass(state, &group) {
            sleep = Duration::ZERO;
            continue;
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
                if outcome.processed == 0 {
                    state
                        .last_empty_poll
                        .insert(group.filter.chain_id, Instant::now());
                } else {
                    state.last_empty_poll.remove(&group.filter.chain_id);
                }
                if outcome.full {
                    sleep = Duration::ZERO; // more is waiting: come back at once
                }
            }
            Err(message) => {
                if !in_transaction(extension_exists).unwrap_or(false) {
                    return None; // dropped under us
                }
                isolate_failures(&group, &message);
            }
        }
    }
    Some(sleep)
}

/// Shows what the worker is doing in `pg_stat_activity`, as autovacuum
/// does for its workers: `state` active with `what` as the `query`, or
/// idle (None; the last `query` stays, as for any idle backend).
fn report_activity(what: Option<&str>) {
    let text = what.and_then(|w| std::ffi::CString::new(w).ok());
    let (state, ptr) = match &text {
        Some(t) => (pg_sys::BackendState::STATE_RUNNING, t.as_ptr()),
        None => (pg_sys::BackendState::STATE_IDLE, std::ptr::null()),
    };
    // SAFETY: the worker's own backend; Postgres copies the text.
    unsafe { pg_sys::pgstat_report_activity(state, ptr) };
}

/// The worker's entry point (bgw_function_name).
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn balance_queue_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let extra = BackgroundWorker::get_extra().to_string();
    let mut parts = extra.splitn(3, ':');
    let kind = parts.next().unwrap_or("static").to_string();
    let index: i32 = parts.next().and_then(|i| i.parse().ok()).unwrap_or(0);
    let db = parts.next().unwrap_or("postgres").to_string();
    let db = db.as_str();
    BackgroundWorker::connect_worker_to_spi(Some(db), None);
    unsafe {
        pg_sys::SetConfigOption(
            c"application_name".as_ptr(),
            c"balance_queue worker".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
        );
        // The worker runs as the bootstrap superuser and calls the apply
        // path directly, not through the SQL functions that pin their
        // search_path: pin it for the whole session, so no object in
        // `public` can stand in for a pg_catalog one.
        pg_sys::SetConfigOption(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_OVERRIDE,
        );
        // A batch statement's estimated cost crosses jit_above_cost, and
        // compiling it would cost more than running it.
        pg_sys::SetConfigOption(
            c"jit".as_ptr(),
            c"off".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
        );
    }
    log!("balance_queue worker #{index} ({kind}) started for database {db}");
    let mut state = WorkerState {
        index,
        last_empty_poll: HashMap::new(),
        last_boost: None,
        version_mismatch: None,
        last_health: None,
        last_date_check: None,
        last_prune: None,
        utc_date: None,
        bulk_failed: HashMap::new(),
    };
    loop {
        if unsafe { pg_sys::ShutdownRequestPending } != 0 {
            break;
        }
        if unsafe { pg_sys::ConfigReloadPending } != 0 {
            unsafe {
                pg_sys::ConfigReloadPending = 0;
                pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP);
            }
        }
        let naptime = Duration::from_millis(gucs::NAPTIME_MS.get().max(1) as u64);
        let sleep = if gucs::ENABLED.get() {
            match drain_pass(&mut state) {
                Some(sleep) => {
                    if state.index == 0 {
                        report_activity(Some("balance_queue: maintenance"));
                        maintenance(&mut state);
                    }
                    sleep
                }
                None => naptime,
            }
        } else {
            naptime
        };
        report_activity(None);
        if !sleep.is_zero() && !BackgroundWorker::wait_latch(Some(sleep)) {
            break;
        }
    }
    log!("balance_queue worker for database {db} stopping");
    // Exit code 1: the postmaster restarts a static worker after
    // pg_terminate_backend (a server shutdown restarts nothing); a dynamic
    // worker has no restart time and stays stopped.
    unsafe { pg_sys::proc_exit(1) };
}

fn workers_of_current_database() -> Vec<i32> {
    Spi::connect(|client| {
        spi_ok(client.select(
            "SELECT pid FROM pg_catalog.pg_stat_activity
              WHERE backend_type = $1 AND datname = current_database() ORDER BY pid",
            None,
            &[WORKER_TYPE.into()],
        ))
        .filter_map(|row| spi_ok(row.get::<i32>(1)))
        .collect()
    })
}

fn current_database() -> String {
    Spi::get_one::<String>("SELECT current_database()::text")
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Starts the current database's background workers that are not running,
/// up to `balance_queue.workers` (needed only without
/// `shared_preload_libraries`; they do not survive a server restart).
/// Returns what it did, e.g. `started balance_queue worker (pid 1234) for
/// database app`, or `... workers (pids 1234, 1235) ...`.
///
/// Errors: 53000 (insufficient_resources) when no background worker slot
/// is free (`max_worker_processes`).
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
pub fn start_worker() -> String {
    crate::errors::refuse_on_standby("start_worker");
    let db = current_database();
    let running = workers_of_current_database();
    let wanted = gucs::WORKERS.get().max(1) as usize;
    if running.len() >= wanted {
        let pids: Vec<String> = running.iter().map(|p| p.to_string()).collect();
        return format!(
            "balance_queue already drains database {db} with {} worker(s) (pid {})",
            pids.len(),
            pids.join(", ")
        );
    }
    let started: Vec<String> = (running.len()..wanted)
        .map(|index| start_dynamic_worker(&db, index as i32))
        .collect();
    let noun = if started.len() == 1 {
        "worker (pid"
    } else {
        "workers (pids"
    };
    format!(
        "started balance_queue {noun} {}) for database {db}",
        started.join(", ")
    )
}

/// Starts dynamic worker number `index` of `db` and returns its pid once it
/// shows in pg_stat_activity, so a later call sees it.
fn start_dynamic_worker(db: &str, index: i32) -> String {
    let worker = builder(db, "dynamic", index)
        .set_restart_time(None)
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .load_dynamic()
        .unwrap_or_else(|_| {
            crate::errors::raise(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_RESOURCES,
                "could not start a balance_queue worker: no free background worker slot",
                Some(
                    "Raise max_worker_processes (needs a restart), or lower balance_queue.workers.",
                ),
            )
        });
    match worker.wait_for_startup() {
        Ok(pid) => {
            for _ in 0..500 {
                // pg_stat_activity is cached per transaction until cleared.
                let _ = Spi::run("SELECT pg_catalog.pg_stat_clear_snapshot()");
                let visible = Spi::get_one_with_args::<bool>(
                    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity WHERE pid = $1)",
                    &[pid.into()],
                );
                if matches!(visible, Ok(Some(true))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            pid.to_string()
        }
        Err(status) => format!("none ({status:?})"),
    }
}

/// Stops the background workers of the current database. Returns what it
/// did. A worker started by `shared_preload_libraries` is restarted by the
/// postmaster: set `balance_queue.enabled = off` to pause it instead.
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
pub fn stop_worker() -> String {
    crate::errors::refuse_on_standby("stop_worker");
    let db = current_database();
    let pids = workers_of_current_database();
    if pids.is_empty() {
        return format!("no balance_queue worker runs for database {db}");
    }
    for pid in &pids {
        let _ = Spi::get_one_with_args::<bool>(
            "SELECT pg_catalog.pg_terminate_backend($1)",
            &[(*pid).into()],
        );
    }
    let preloaded = gucs::databases().contains(&db)
        && Spi::get_one::<bool>(
            "SELECT current_setting('shared_preload_libraries') ~ 'balance_queue'",
        )
        .ok()
        .flatten()
        .unwrap_or(false);
    let pids: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
    if preloaded {
        format!(
            "terminated balance_queue worker pid {} for database {db}; it is started by shared_preload_libraries, \
             so the postmaster starts it again: set balance_queue.enabled = off to pause draining",
            pids.join(", ")
        )
    } else {
        format!(
            "stopped balance_queue worker pid {} for database {db}",
            pids.join(", ")
        )
    }
}
