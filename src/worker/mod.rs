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
//! The workers of one database split the queue by holder: worker k of n
//! applies the items of holder partition k (`holder_partition()`), claimed
//! with `FOR UPDATE SKIP LOCKED`, so each item is applied by exactly one
//! of them and two workers do not write the same keys; a batch its own
//! partition does not fill takes what other partitions left waiting
//! `balance_queue.takeover_after`, and only while no other batch applies
//! that partition (`apply::partition_lock`). Should two batches touch the same
//! balance, both lock ledger and balance rows in key order, so one waits
//! for the other's commit and they never deadlock. Worker 0 alone runs the
//! maintenance (health, cleanup, pruning, snapshots, priority boosts).
//!
//! Modules: `drain` (one pass over the chain groups: bulk loads, batches,
//! failure isolation), `maintenance` (worker 0's periodic work),
//! `transaction` (each step in its own transaction; the version check),
//! `dynamic` (start_worker/stop_worker from SQL).

mod drain;
mod dynamic;
mod maintenance;
mod transaction;

use drain::drain_pass;
use maintenance::maintenance;

use crate::gucs;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::prelude::*;
use std::collections::{HashMap, VecDeque};
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
    /// Tokens whose top-holder boards are due a change, found every
    /// health interval and changed one per second (worker 0).
    boards_due: VecDeque<maintenance::BoardDue>,
}

/// Sends the worker's table statistics (rows inserted, updated, deleted
/// per table) to the cumulative statistics system, at most once a second.
/// A client backend does this when it goes idle; a background worker must
/// do it itself, or it never does: autovacuum then never saw the millions
/// of rows the workers write (the ledger, the balances, the confirmation
/// window), so it neither analysed nor vacuumed those tables
/// (`pg_stat_user_tables` showed 0 inserts into `applied_transfers` during
/// the sustained benchmark). Outside any transaction, as it must be.
fn report_table_stats() {
    // Its return value (PG15+: milliseconds until the next flush is due;
    // PG14: none) is not needed.
    #[allow(clippy::let_unit_value)]
    let _ = unsafe { pg_sys::pgstat_report_stat(false) };
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
        boards_due: VecDeque::new(),
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
        report_table_stats();
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
