//! One batch, end to end: claim due items, take the rest of each key that
//! asks for a recalculation, read back rows queued by id, apply through the
//! ledger, complete what applied, then recompute the recalculated keys.

use super::claim::{ClaimFilter, claim_due, claim_rest_of_key, pending_elsewhere};
use super::complete::{complete, merge_heads};
use super::ledger::apply_items;
use super::read_back::row_sources;
use super::recompute::{fail_out_of_range, recompute_and_store};
use crate::sources::row_ids;
use pgrx::spi::SpiClient;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// What one batch did.
#[derive(Debug, Default, Clone, Copy)]
pub struct BatchOutcome {
    /// Items taken.
    pub processed: i32,
    /// The batch took as much as it could: more is probably waiting.
    pub full: bool,
    pub failed: i32,
    pub elapsed_ms: f64,
}

/// Claims due pending items matching `filter` standing for up to
/// `batch_size` transfers, with SKIP LOCKED, and applies them in the
/// current transaction.
pub fn apply_batch(
    client: &mut SpiClient<'_>,
    batch_size: i32,
    filter: &ClaimFilter,
) -> BatchOutcome {
    let started = Instant::now();
    let readable = row_ids::try_lock_row_sources(client);
    let mut claimed = claim_due(client, batch_size, filter, &readable);
    // A recalculation must see every earlier change of its key applied: take
    // the key's other pending items too, and defer the recalculation when
    // another session holds some of them (never wait on a queue item).
    let mut recalc_now = Vec::new();
    let mut heads = std::mem::take(&mut claimed.heads);
    let mut all_ids: BTreeSet<i64> = claimed.delta_ids.iter().copied().collect();
    all_ids.extend(claimed.row_items.iter().map(|(id, _)| *id));
    for (key, ids) in std::mem::take(&mut claimed.recalc) {
        let mut taken: Vec<i64> = all_ids.iter().copied().chain(ids.iter().copied()).collect();
        let extra = claim_rest_of_key(client, &key, &taken);
        merge_heads(&mut heads, &extra.heads);
        taken.extend(extra.delta_ids.iter().copied());
        taken.extend(extra.recalc.iter().flat_map(|(_, ids)| ids.iter().copied()));
        let held_elsewhere = pending_elsewhere(client, &key, &taken);
        all_ids.extend(extra.delta_ids.iter().copied());
        claimed.delta_ids.extend(extra.delta_ids);
        if held_elsewhere {
            continue;
        }
        let mut recalc_ids = ids;
        recalc_ids.extend(extra.recalc.into_iter().flat_map(|(_, ids)| ids));
        all_ids.extend(recalc_ids.iter().copied());
        recalc_now.push((key, recalc_ids));
    }
    let (sources, row_ids) = row_sources(client, &claimed.row_items);
    let set_back = apply_items(client, &claimed.delta_ids, &sources, &row_ids, &mut heads);
    let mut failed = set_back.failed;
    // Items set back for a retry stay pending; the others are done. The
    // applied ones are marked before any recomputation, which leaves rows
    // of still-pending id-range items to their item.
    let attempted = all_ids.len() as i32;
    let recalc_ids: BTreeSet<i64> = recalc_now
        .iter()
        .flat_map(|(_, ids)| ids.iter().copied())
        .collect();
    let applied: Vec<i64> = all_ids
        .iter()
        .copied()
        .filter(|id| !set_back.ids.contains(id) && !recalc_ids.contains(id))
        .collect();
    complete(
        client,
        &applied,
        &heads,
        started.elapsed().as_secs_f64() * 1000.0,
    );
    for ((chain, contract, holder), ids) in &recalc_now {
        if recompute_and_store(client, *chain, contract, holder).is_none() {
            fail_out_of_range(client, ids);
            failed += ids.len() as i32;
        }
    }
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    complete(
        client,
        &recalc_ids.into_iter().collect::<Vec<_>>(),
        &BTreeMap::new(),
        elapsed_ms,
    );
    super::announce::announce_changes(client);
    BatchOutcome {
        processed: attempted,
        full: claimed.is_full(batch_size, filter.max_items),
        failed,
        elapsed_ms,
    }
}
