//! The apply path: claims queue items, counts each transfer side exactly
//! once through the `applied_transfers` ledger, sums the effective deltas
//! per (chain id, token contract, holder) and applies each sum once, all in
//! the transaction that consumes the items.
//!
//! Locks are taken in one global order (queue items with SKIP LOCKED, then
//! ledger rows sorted by key, then balance rows sorted by key), so any
//! number of concurrent drains cannot deadlock, and none waits on a queue
//! item another holds.
//!
//! One module per step, in the order a batch takes them: `batch`
//! (orchestration) → `claim` (which items, under `partition_lock`) →
//! `read_back` (rows queued by id) → `ledger` (the apply statement) →
//! `set_back` (keys out of range) → `complete` (heads, completed items) →
//! `recompute` (recalculation items).
//! `bulk` applies a chain with no counted state and a large backlog in one
//! set-based statement, kept alone on its chain by `chain_lock`; into empty
//! tables it builds their indexes afterwards (`deferred_indexes`).
//! `announce` sends the change feed's NOTIFY for a transaction's changes.
//! `drain` and `split` take the same steps for one key and for one id-range
//! item; `api` is the SQL entry point; `balances` holds the types and SQL
//! expressions the steps share. Nothing here imports the modules that call
//! the apply path (`recalc`, `reorg`, `worker`).

mod announce;
mod api;
mod balances;
mod batch;
mod bulk;
pub mod chain_lock;
mod claim;
mod complete;
mod deferred_indexes;
mod drain;
mod ledger;
mod partition_lock;
mod read_back;
mod recompute;
mod set_back;
mod split;

pub use announce::{announce_changes, changed_keys_sql};
pub use balances::{BalanceKey, ledger_key, same_ledger_key};
pub use batch::apply_batch;
pub use bulk::{
    apply_bulk, begin_bulk_load, bulk_candidate, chains_in_bulk, end_bulk_load,
    settle_own_bulk_loads,
};
pub use claim::{ClaimFilter, DUE, chain_filter};
pub use drain::{complete_drained, drain_key};
pub use read_back::builtin_columns;
pub use recompute::{recompute_and_store, sources_for_chain};
pub use set_back::failed_attempt_set;
pub use split::split_row_item;
// Part of the face, though no caller names them today (they use the values
// without spelling the types), so rustc sees these paths unused.
#[allow(unused_imports)]
pub use {balances::MAX_U256, batch::BatchOutcome, drain::Drained};
