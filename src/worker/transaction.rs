//! Each worker step in its own transaction, with the extension share-locked
//! against a concurrent DROP EXTENSION, and the version check that keeps a
//! worker from draining with SQL objects of another release.

use super::WorkerState;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use std::panic::AssertUnwindSafe;

/// Runs `body` in its own transaction. An error raised inside is caught,
/// the transaction aborted, and the error's message returned.
pub(super) fn in_transaction<R>(
    body: impl FnOnce() -> R + std::panic::UnwindSafe,
) -> Result<R, String> {
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
pub(super) fn lock_extension() {
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

pub(super) fn extension_exists() -> bool {
    installed_version().is_some()
}

/// The version of the extension installed in this database, if any.
pub(super) fn installed_version() -> Option<String> {
    read_one::<String>(
        "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'balance_queue'",
    )
}

/// The first column of the first row of a read-only query. Not
/// `Spi::get_one`: pgrx runs that as a possibly writing statement and so
/// assigns the transaction an id, which for the two reads of every idle
/// poll (about 50 a second per worker at the default naptime) used about
/// 200 transaction ids a second: a commit record each in the WAL, and
/// every table aged towards an anti-wraparound vacuum in days.
pub(super) fn read_one<T: pgrx::datum::FromDatum + pgrx::datum::IntoDatum>(sql: &str) -> Option<T> {
    Spi::connect(|client| {
        client
            .select(sql, Some(1), &[])
            .ok()?
            .first()
            .get_one::<T>()
            .ok()
            .flatten()
    })
}

/// The version of this library: the SQL objects it expects.
pub(super) const LIBRARY_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Whether the worker may drain: the extension is installed at the version
/// this library was built for. After a new library is installed and the
/// server restarted, the old SQL objects stay until `ALTER EXTENSION
/// balance_queue UPDATE`; draining with them could misread their tables, so
/// the worker waits and says why (once per version seen).
pub(super) fn ready_to_drain(state: &mut WorkerState) -> bool {
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
