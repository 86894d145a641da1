//! balance_queue: exact, incremental ERC20 balances for EVM chains indexed
//! into Postgres (rindexer), kept by a queue inside Postgres.
//!
//! Module map: `source_sql` (what a valid transfer row is), `attach` and
//! `triggers` (ingest: queue changes, never block), `source_rows` (rows
//! queued by id and read back when applied), `apply` and `recalc`
//! (exactly-once apply path), `queries` (reading balances), `format` and
//! `uint256` (exact amounts), `chains` (registry and partitions),
//! `worker` and `gucs` (the background worker and its settings), `health`
//! (metrics, retries, cleanup, snapshots).

use pgrx::prelude::*;

mod address;
mod apply;
mod attach;
mod chains;
mod errors;
mod format;
mod gucs;
mod health;
mod queries;
mod recalc;
mod reorg;
mod row_check;
mod source_rows;
mod source_sql;
mod triggers;
mod uint256;
mod worker;

::pgrx::pg_module_magic!();

/// Registers the settings, and with shared_preload_libraries the workers.
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    if unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
        worker::register_static_workers();
    }
}

pgrx::extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
pgrx::extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
