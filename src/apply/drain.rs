//! Draining one balance key outside any batch, so that a recomputation
//! from the sources that follows counts every row once.

use super::balances::BalanceKey;
use super::claim::{claim_chain_row_items, claim_key};
use super::complete::complete;
use super::ledger::apply_items;
use super::read_back::row_sources;
use crate::sources::row_ids;
use pgrx::spi::SpiClient;
use std::collections::BTreeMap;
use std::time::Instant;

/// Items one key drained outside a batch.
pub struct Drained {
    /// Recalculation items taken (the caller completes them once the key
    /// is recomputed).
    pub ids: Vec<i64>,
    /// Highest block among the items, per chain.
    pub heads: BTreeMap<i32, i64>,
}

/// Takes every pending item of one key and every pending id-range item
/// that can hold rows of its chain, waiting for sessions that hold some,
/// applies them and marks them completed, so a recomputation from the
/// sources that follows counts every row once. Returns the key's
/// recalculation items for the caller to complete. Used outside any batch,
/// holding no other lock, so the waits cannot deadlock.
pub fn drain_key(client: &mut SpiClient<'_>, key: &BalanceKey) -> Drained {
    let started = Instant::now();
    row_ids::lock_row_sources(client);
    let mut claimed = claim_key(client, key);
    claimed.row_items = claim_chain_row_items(client, key.0).row_items;
    let mut heads = claimed.heads;
    let (sources, row_ids) = row_sources(client, &claimed.row_items);
    let set_back = apply_items(client, &claimed.delta_ids, &sources, &row_ids, &mut heads);
    let done: Vec<i64> = claimed
        .delta_ids
        .into_iter()
        .chain(row_ids)
        .filter(|id| !set_back.ids.contains(id))
        .collect();
    complete(
        client,
        &done,
        &heads,
        started.elapsed().as_secs_f64() * 1000.0,
    );
    let ids = claimed
        .recalc
        .into_iter()
        .flat_map(|(_, ids)| ids)
        .collect();
    Drained { ids, heads }
}

/// Raises head blocks and marks the still-pending items among `drained`
/// completed (public form of [`complete`] for callers outside a batch).
pub fn complete_drained(client: &mut SpiClient<'_>, drained: &Drained, elapsed_ms: f64) {
    complete(client, &drained.ids, &drained.heads, elapsed_ms);
}
