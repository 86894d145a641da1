//! Workers started and stopped from SQL, for servers without
//! `balance_queue` in shared_preload_libraries.

use super::{WORKER_TYPE, builder};
use crate::errors::spi_ok;
use crate::gucs;
use pgrx::prelude::*;
use std::time::Duration;

pub(super) fn workers_of_current_database() -> Vec<i32> {
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

pub(super) fn current_database() -> String {
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
pub(super) fn start_dynamic_worker(db: &str, index: i32) -> String {
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
