//! Every `balance_queue.*` setting, in one place. All but
//! `balance_queue.database` change on `pg_reload_conf()` (the worker reads
//! them at its next pass); a superuser may also SET them per session, e.g.
//! to run `cleanup_completed_updates()` with another retention.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

/// `balance_queue.enabled`: the background worker drains the queue (default on).
pub static ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);

/// `balance_queue.database`: comma-separated databases that get a worker
/// when the library is in shared_preload_libraries (default `postgres`).
pub static DATABASES: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));

/// `balance_queue.workers`: workers per database (default 2).
pub static WORKERS: GucSetting<i32> = GucSetting::<i32>::new(2);

/// `balance_queue.batch_size`: transfers per worker batch (one transaction).
pub static BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(50_000);

/// `balance_queue.bulk_threshold`: queued transfers of a chain with no
/// counted state from which the worker applies them in one bulk (0: never).
pub static BULK_THRESHOLD: GucSetting<i32> = GucSetting::<i32>::new(100_000);

/// `balance_queue.bulk_rebuilds_indexes`: whether a bulk load into an empty
/// ledger and balance table drops their indexes and builds them after the
/// rows (readers of the balances wait for the load meanwhile).
pub static BULK_REBUILDS_INDEXES: GucSetting<bool> = GucSetting::<bool>::new(true);

/// `balance_queue.takeover_after`: milliseconds an item of another
/// worker's holder partition waits before a worker with nothing of its own
/// takes it (default 1000).
pub static TAKEOVER_AFTER_MS: GucSetting<i32> = GucSetting::<i32>::new(1000);

/// `balance_queue.naptime`: milliseconds the worker sleeps when the queue is idle.
pub static NAPTIME_MS: GucSetting<i32> = GucSetting::<i32>::new(20);

/// `balance_queue.max_retries`: attempts before an item that keeps erroring stays failed.
pub static MAX_RETRIES: GucSetting<i32> = GucSetting::<i32>::new(3);

/// `balance_queue.retry_backoff`: milliseconds before the first retry; doubles per attempt.
pub static RETRY_BACKOFF_MS: GucSetting<i32> = GucSetting::<i32>::new(1000);

/// `balance_queue.completed_retention`: seconds completed items stay in the queue.
pub static COMPLETED_RETENTION_S: GucSetting<i32> = GucSetting::<i32>::new(120);

/// `balance_queue.archive_completed`: move completed items to the archive
/// table instead of deleting them (default off).
pub static ARCHIVE_COMPLETED: GucSetting<bool> = GucSetting::<bool>::new(false);

/// `balance_queue.health_interval`: seconds between health metric collections.
pub static HEALTH_INTERVAL_S: GucSetting<i32> = GucSetting::<i32>::new(60);

/// `balance_queue.health_retention`: hours of health metrics kept.
pub static HEALTH_RETENTION_H: GucSetting<i32> = GucSetting::<i32>::new(24);

/// `balance_queue.snapshots`: take a daily balance snapshot when the UTC day changes.
pub static DAILY_SNAPSHOTS: GucSetting<bool> = GucSetting::<bool>::new(true);

/// `balance_queue.change_feed`: record which balances each transaction
/// changed, for `balance_changes_since()` and the NOTIFY (default on).
pub static CHANGE_FEED: GucSetting<bool> = GucSetting::<bool>::new(true);

/// `balance_queue.change_channel`: the NOTIFY channel each drain batch that
/// changed balances announces on (default `balance_queue_changes`; empty:
/// no NOTIFY).
pub static CHANGE_CHANNEL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"balance_queue_changes"));

/// `balance_queue.change_retention`: seconds the recorded changes are kept
/// for `balance_changes_since()` (default 3600).
pub static CHANGE_RETENTION_S: GucSetting<i32> = GucSetting::<i32>::new(3600);

/// Registers every setting; called from `_PG_init`.
pub fn init() {
    GucRegistry::define_bool_guc(
        c"balance_queue.enabled",
        c"Whether the balance_queue background worker drains the queue.",
        c"Off pauses draining; items keep queueing.",
        &ENABLED,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"balance_queue.database",
        c"Databases whose queue a background worker drains (comma-separated).",
        c"One worker per database; needs balance_queue in shared_preload_libraries and a restart to change.",
        &DATABASES,
        // Postmaster-only settings can be defined only while preloading;
        // loaded later (start_worker), the setting is informational.
        if unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
            GucContext::Postmaster
        } else {
            GucContext::Sighup
        },
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"balance_queue.workers",
        c"Background workers per database.",
        c"They split the queue with SKIP LOCKED; worker 0 also runs the maintenance. Needs a restart when preloaded; start_worker() starts this many.",
        &WORKERS,
        1,
        64,
        if unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
            GucContext::Postmaster
        } else {
            GucContext::Suset
        },
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"balance_queue.batch_size",
        c"Transfers per worker batch.",
        c"Each batch is one transaction. A chain's queue_processing_config.batch_size caps the queue items of its batches too.",
        &BATCH_SIZE,
        1,
        1_000_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"balance_queue.bulk_threshold",
        c"Queued transfers from which a chain with no counted state is applied in one bulk (0: never).",
        c"A chain with no ledger rows and no balances (a first attach of a table with history, a rebuild by handle_reorg(chain, 0)) and at least this many transfers waiting is applied in one transaction with plain inserts, using maintenance_work_mem; balance_queue.bulk_loads shows each run.",
        &BULK_THRESHOLD,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"balance_queue.bulk_rebuilds_indexes",
        c"Whether a bulk load into an empty ledger and balance table builds their indexes after the rows.",
        c"When no chain has counted state yet (a first attach on a fresh install, the rebuild of the only chain), a bulk load can drop the indexes of applied_transfers and current_token_balances and build them once at the end (a 10M-transfer rebuild: 270 s instead of 462 s); readers of the balances, hot standbys' included, then wait until it commits. Off: the load always inserts through the indexes and never blocks readers.",
        &BULK_REBUILDS_INDEXES,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"balance_queue.takeover_after",
        c"Milliseconds an item of another worker's holder partition waits before an idle worker takes it.",
        c"Workers split the queue by holder; a worker with nothing of its own takes the items another worker left this long while that worker is not applying a batch (it is busy with maintenance, or stopped). Lower: less lag behind a busy worker; higher: fewer small batches of taken-over items.",
        &TAKEOVER_AFTER_MS,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"balance_queue.naptime",
        c"Milliseconds the worker sleeps when the queue is idle.",
        c"Also the longest a newly committed transfer waits before the worker looks, unless its chain's queue_processing_config.processing_interval_seconds is longer.",
        &NAPTIME_MS,
        1,
        60_000,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"balance_queue.max_retries",
        c"Attempts before an item that keeps raising an error stays failed.",
        c"A queue_processing_config row overrides it per chain.",
        &MAX_RETRIES,
        0,
        1000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"balance_queue.retry_backoff",
        c"Milliseconds before a failed item is retried; doubles with each attempt.",
        c"",
        &RETRY_BACKOFF_MS,
        0,
        3_600_000,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"balance_queue.completed_retention",
        c"Seconds completed queue items are kept before the worker removes them.",
        c"Items are counted into queue_health_metrics before removal.",
        &COMPLETED_RETENTION_S,
        0,
        86_400 * 30,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_bool_guc(
        c"balance_queue.archive_completed",
        c"Move completed queue items to balance_update_queue_archive instead of deleting them.",
        c"",
        &ARCHIVE_COMPLETED,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"balance_queue.health_interval",
        c"Seconds between the worker's queue health collections.",
        c"",
        &HEALTH_INTERVAL_S,
        1,
        86_400,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"balance_queue.health_retention",
        c"Hours of queue_health_metrics kept.",
        c"",
        &HEALTH_RETENTION_H,
        1,
        24 * 365,
        GucContext::Suset,
        GucFlags::default(),
    );
    // The feed's settings are reload-only: every drainer of a database,
    // worker or session, must record and announce alike.
    GucRegistry::define_bool_guc(
        c"balance_queue.change_feed",
        c"Record which balances each transaction changed (balance_changes_since, NOTIFY).",
        c"Off: nothing is recorded or announced, and balance_changes_since() refuses cursors.",
        &CHANGE_FEED,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"balance_queue.change_channel",
        c"NOTIFY channel a drain batch that changed balances announces on (empty: none).",
        c"One notification per committed batch, with a JSON payload of at most about 6,000 bytes (docs/change-feed.md).",
        &CHANGE_CHANNEL,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"balance_queue.change_retention",
        c"Seconds the recorded balance changes are kept for balance_changes_since().",
        c"A cursor older than what the worker deleted is refused; its consumer reloads every balance.",
        &CHANGE_RETENTION_S,
        1,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_bool_guc(
        c"balance_queue.snapshots",
        c"Take a daily balance snapshot when the UTC day changes.",
        c"",
        &DAILY_SNAPSHOTS,
        GucContext::Suset,
        GucFlags::default(),
    );
}

/// The database list, trimmed, without empty entries.
pub fn databases() -> Vec<String> {
    DATABASES
        .get()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
        .split(',')
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
        .collect()
}

/// The number of holder partitions the queue is split into: one per
/// worker (`balance_queue.workers`). Each new `source_rows` item is written
/// once per partition, and worker k applies partition k (see
/// `balance_queue.holder_partition()`), so workers never share a key.
pub fn holder_partitions() -> i32 {
    WORKERS.get().max(1)
}

/// The NOTIFY channel for balance changes, or None when announcing is off
/// (the feed is off or the channel is empty).
pub fn change_channel() -> Option<String> {
    if !CHANGE_FEED.get() {
        return None;
    }
    CHANGE_CHANNEL
        .get()
        .map(|c| c.to_string_lossy().trim().to_string())
        .filter(|c| !c.is_empty())
}
