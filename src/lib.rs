//! balance_queue: exact, incremental ERC20 balances for EVM chains indexed
//! into Postgres (rindexer), kept by a queue inside Postgres.
//!
//! Module map: `source_sql` (what a valid transfer row is), `attach` and
//! `triggers` (ingest: queue changes, never block), `apply` and `recalc`
//! (exactly-once apply path), `queries` (reading balances), `format` and
//! `uint256` (exact amounts), `chains` (registry and partitions).

mod address;
mod apply;
mod attach;
mod chains;
mod errors;
mod format;
mod queries;
mod recalc;
mod row_check;
mod source_sql;
mod triggers;
mod uint256;

::pgrx::pg_module_magic!();

pgrx::extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
pgrx::extension_sql_file!("../sql/preload.sql", name = "preload", finalize);

#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
