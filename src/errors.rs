//! User-facing errors: every error a caller can cause is raised with a real
//! SQLSTATE, so a DBA can catch it (`EXCEPTION WHEN numeric_value_out_of_range`).

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// Raises an ERROR with the given SQLSTATE, message and hint; never returns.
#[track_caller]
pub fn raise(code: PgSqlErrorCode, message: impl Into<String>, hint: Option<&str>) -> ! {
    let mut report = ErrorReport::new(code, message.into(), "balance_queue");
    if let Some(hint) = hint {
        report = report.set_hint(hint);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR-level reports do not return")
}

/// 22023 invalid_parameter_value: an argument outside what the function accepts.
#[track_caller]
pub fn invalid_parameter(message: impl Into<String>) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        message,
        None,
    )
}

/// Unwraps an SPI result; an SPI failure is an internal error (XX000).
#[track_caller]
pub fn spi_ok<T>(result: Result<T, pgrx::spi::SpiError>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("balance_queue: SPI call failed: {e}"),
            None,
        ),
    }
}

/// 25006 read_only_sql_transaction when this server is a hot standby (in
/// recovery): function `what` writes, and a standby writes nothing. Called
/// first by every writing function, so a caller on a replica gets this
/// rather than an internal error from the first write (docs/scaling.md).
#[track_caller]
pub fn refuse_on_standby(what: &str) {
    // SAFETY: reads shared memory state; callable in any backend.
    if unsafe { pg_sys::RecoveryInProgress() } {
        raise(
            PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            format!("balance_queue.{what}() writes, and this server is a standby in recovery"),
            Some("Call it on the primary; a standby serves the reading functions and views only."),
        )
    }
}
