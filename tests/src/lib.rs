//! Real-server harness for balance_queue.
//!
//! `cluster` starts throwaway Postgres clusters, from the system install or
//! from a private copy of it (`pgtree`, for installing other builds, e.g.
//! the upgrade test's old release); `rindexer` creates
//! rindexer's exact Transfer table and writes to it the way rindexer does
//! (binary COPY for batches over 100 rows, one multi-row INSERT below);
//! `data` reads the real exports in `../shared/data/`; `workload` generates
//! a realistic ERC20 workload; `recompute` is an independent recomputation
//! of balances from raw rows, used to check the extension.

pub mod cluster;
pub mod data;
pub mod pgtree;
pub mod recompute;
pub mod rindexer;
pub mod workload;

/// Drains the queue by calling `process_balance_update_queue` until a call
/// processes nothing. Returns (items processed, items failed).
pub fn drain(client: &mut postgres::Client, batch_size: i32) -> (i64, i64) {
    let (mut processed, mut failed) = (0i64, 0i64);
    loop {
        let row = client
            .query_one(
                "SELECT processed_count, error_count FROM balance_queue.process_balance_update_queue($1)",
                &[&batch_size],
            )
            .expect("process_balance_update_queue");
        let (p, f): (i32, i32) = (row.get(0), row.get(1));
        if p == 0 {
            return (processed, failed);
        }
        processed += i64::from(p);
        failed += i64::from(f);
    }
}
