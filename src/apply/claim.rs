//! Claiming: which pending queue items a batch or a key drain takes, and
//! what they stand for. Queue items are the first locks of the apply path's
//! global order: a batch takes them with SKIP LOCKED (never waiting on an
//! item another drain holds), a key drain outside any batch waits for them.

use super::balances::BalanceKey;
use super::complete::merge_heads;
use super::partition_lock::try_hold_partitions;
use crate::errors::spi_ok;
use once_cell::sync::Lazy;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::{SpiClient, SpiHeapTupleData};
use std::collections::BTreeMap;

/// Which pending items a batch may take.
#[derive(Debug, Clone, Default)]
pub struct ClaimFilter {
    /// Only this chain's items.
    pub chain_id: Option<i32>,
    /// Never these chains' items (disabled, or drained on their own schedule).
    pub exclude_chains: Vec<i32>,
    /// Only these items.
    pub ids: Option<Vec<i64>>,
    /// At most this many items per batch (a chain's `batch_size` in
    /// `queue_processing_config`, counted in queue items as in the plan).
    pub max_items: Option<i32>,
    /// The items of this holder partition (worker k of n: `(k, n)`); a
    /// batch they do not fill also takes other partitions' items that have
    /// waited `balance_queue.takeover_after` (their worker is busy with
    /// maintenance, far behind, or stopped: a dynamic worker is not
    /// restarted). `None`: every item.
    pub holder_partition: Option<(i32, i32)>,
}

/// Whether an item is for one of the holder partitions `$set` (an
/// integer[] expression; NULL: every item is) of `$n` (integer): an
/// id-range item by the partition it was written for (taken modulo `$n`
/// when the number of workers changed since), a transfer-side item by its
/// holder. When `$takeover` (an interval parameter) is NULL, an item of no
/// holder is too; otherwise only the partitions' items that have waited
/// that long are (items of other workers' partitions, taken over).
fn in_holder_partition(set: &str, n: &str, takeover: &str) -> String {
    format!(
        "({set}::integer[] IS NULL
          OR (CASE WHEN holder_partitions IS NOT NULL THEN holder_partition % {n}::integer = ANY({set}::integer[])
                   WHEN source_row_ids IS NULL AND holder_address IS NOT NULL
                        THEN balance_queue.holder_partition(holder_address, {n}::integer) = ANY({set}::integer[])
                   ELSE {takeover}::interval IS NULL END)
             AND ({takeover}::interval IS NULL OR created_at < now() - {takeover}::interval))"
    )
}

/// Items taken for one batch.
#[derive(Default)]
pub(super) struct Claimed {
    /// Transfer-side items.
    pub delta_ids: Vec<i64>,
    /// `source_rows` items and their source table.
    pub row_items: Vec<(i64, u32)>,
    /// Recalculation requests per key.
    pub recalc: Vec<(BalanceKey, Vec<i64>)>,
    /// Highest block among the claimed items, per chain.
    pub heads: BTreeMap<i32, i64>,
    /// Transfers the items stand for.
    pub transfers: i64,
    /// Items taken.
    pub items: i64,
}

/// A queue item that is due: pending and past its backoff. The one
/// definition of "due"; the pending index (`balance_update_queue_pending_idx`,
/// on pending items) serves it.
pub const DUE: &str =
    "status = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= now())";

/// Items of chain `chain` (a parameter, integer; NULL for every chain) and
/// of no chain in `exclude` (a parameter, integer[]): the chain part of a
/// [`ClaimFilter`], the one definition every claim and probe uses.
pub fn chain_filter(chain: &str, exclude: &str) -> String {
    format!(
        "({chain}::integer IS NULL OR chain_id = {chain}) AND coalesce(chain_id <> ALL({exclude}::integer[]), true)"
    )
}

/// The columns every claim selects, read by position in [`Claimed::absorb`].
const CLAIM_COLUMNS: &str = "id, delta_wei IS NULL AND source_row_ids IS NULL, chain_id, contract_address, \
     holder_address, triggered_by_block, source_row_ids IS NOT NULL, row_count, source_table::oid";

/// The items a batch may claim, in terms of the parameters every claim of
/// due items binds: due, of chain `$1` (integer, NULL for all), of no
/// chain in `$2` (integer[]), among `$3` (bigint[], NULL for all),
/// `source_rows` items only of the tables `$4` (oid[]) the drain could
/// lock, and of the holder partitions `set` of `$6` (see
/// [`in_holder_partition`], `$7` the takeover interval).
fn claimable(set: &str) -> String {
    format!(
        "{DUE}
            AND {chains}
            AND ($3::bigint[] IS NULL OR id = ANY($3))
            AND (source_row_ids IS NULL OR source_table::oid = ANY($4::oid[]))
            AND {partition}",
        chains = chain_filter("$1", "$2"),
        partition = in_holder_partition(set, "$6", "$7"),
    )
}

/// Due pending items in (priority, id) order, skipping locked ones: the
/// [`claimable`] items of holder partitions `$5` (integer[], NULL for
/// every item).
static CLAIM_DUE_SQL: Lazy<String> = Lazy::new(|| {
    format!(
        "SELECT {CLAIM_COLUMNS} FROM balance_queue.balance_update_queue
          WHERE {claimable}
          ORDER BY priority, id
          FOR UPDATE SKIP LOCKED",
        claimable = claimable("$5"),
    )
});

/// The partitions among `$5` (integer[]) with [`claimable`] items that have
/// waited the takeover interval `$7`: the ones worth trying to take over.
/// (A partition lock taken for nothing would keep its worker from its own
/// items until this batch commits.)
static WAITING_PARTITIONS_SQL: Lazy<String> = Lazy::new(|| {
    format!(
        "SELECT p FROM unnest($5::integer[]) p
          WHERE EXISTS (SELECT 1 FROM balance_queue.balance_update_queue
                         WHERE {claimable})
          ORDER BY p",
        claimable = claimable("ARRAY[p]"),
    )
});

/// Turns off the plans that sort the whole backlog for the rest of the
/// transaction; returns the settings it replaced, comma-separated.
const STEER_PLANNER_SQL: &str = "SELECT concat_ws(',', current_setting('enable_bitmapscan'), current_setting('enable_seqscan'),
                              current_setting('enable_sort')),
                    set_config('enable_bitmapscan', 'off', true), set_config('enable_seqscan', 'off', true),
                    set_config('enable_sort', 'off', true)";

/// Puts back the settings `$1` that [`STEER_PLANNER_SQL`] returned.
const RESTORE_PLANNER_SQL: &str =
    "SELECT set_config('enable_bitmapscan', split_part($1, ',', 1), true),
                set_config('enable_seqscan', split_part($1, ',', 2), true),
                set_config('enable_sort', split_part($1, ',', 3), true)";

/// The other pending items of key ($1 chain, $2 token, $3 holder), not
/// among `$4` (bigint[]), skipping locked ones.
static CLAIM_REST_OF_KEY_SQL: Lazy<String> = Lazy::new(|| {
    format!(
        "SELECT {CLAIM_COLUMNS} FROM balance_queue.balance_update_queue
                  WHERE status = 'pending' AND chain_id = $1 AND contract_address = $2
                    AND holder_address = $3 AND id <> ALL($4)
                  FOR UPDATE SKIP LOCKED"
    )
});

/// A row when key ($1 chain, $2 token, $3 holder) has a pending item not
/// among `$4` (bigint[]).
const PENDING_ELSEWHERE_SQL: &str = "SELECT 1 FROM balance_queue.balance_update_queue
              WHERE status = 'pending' AND chain_id = $1 AND contract_address = $2
                AND holder_address = $3 AND id <> ALL($4) LIMIT 1";

/// Every pending item of key ($1 chain, $2 token, $3 holder), waiting for
/// sessions that hold some.
static CLAIM_KEY_SQL: Lazy<String> = Lazy::new(|| {
    format!(
        "SELECT {CLAIM_COLUMNS} FROM balance_queue.balance_update_queue
              WHERE status = 'pending' AND chain_id = $1 AND contract_address = $2
                AND holder_address = $3
              ORDER BY id
              FOR UPDATE"
    )
});

/// Every pending `source_rows` item that can hold rows of chain `$1`,
/// waiting for sessions that hold some.
static CLAIM_CHAIN_ROW_ITEMS_SQL: Lazy<String> = Lazy::new(|| {
    format!(
        "SELECT {CLAIM_COLUMNS} FROM balance_queue.balance_update_queue
              WHERE status = 'pending' AND source_row_ids IS NOT NULL
                AND (chain_id = $1 OR chain_id IS NULL)
              ORDER BY id
              FOR UPDATE"
    )
});

/// Every due pending transfer-side and `source_rows` item of chain `$1`
/// (integer), `source_rows` items only of the tables `$2` (oid[]) the drain
/// could lock, skipping locked ones: what a bulk apply takes.
/// Recalculation items are left to the batches that follow.
static CLAIM_CHAIN_SQL: Lazy<String> = Lazy::new(|| {
    format!(
        "SELECT {CLAIM_COLUMNS} FROM balance_queue.balance_update_queue
              WHERE {DUE} AND chain_id = $1
                AND (delta_wei IS NOT NULL OR source_row_ids IS NOT NULL)
                AND (source_row_ids IS NULL OR source_table::oid = ANY($2::oid[]))
              FOR UPDATE SKIP LOCKED"
    )
});

impl Claimed {
    /// Whether the batch is full: it stands for `batch_size` transfers or
    /// holds `max_items` items. The one definition of that rule.
    pub(super) fn is_full(&self, batch_size: i32, max_items: Option<i32>) -> bool {
        self.transfers >= i64::from(batch_size.max(1))
            || max_items.is_some_and(|n| self.items >= i64::from(n.max(1)))
    }

    /// Adds recalculation item(s) `ids` of `key`, one entry per key.
    fn add_recalc(&mut self, key: BalanceKey, ids: Vec<i64>) {
        match self.recalc.iter_mut().find(|(k, _)| *k == key) {
            Some((_, mine)) => mine.extend(ids),
            None => self.recalc.push((key, ids)),
        }
    }

    /// Adds the items of another claim of the same batch.
    fn absorb_claim(&mut self, other: Claimed) {
        self.delta_ids.extend(other.delta_ids);
        self.row_items.extend(other.row_items);
        for (key, ids) in other.recalc {
            self.add_recalc(key, ids);
        }
        self.recalc.sort();
        merge_heads(&mut self.heads, &other.heads);
        self.transfers += other.transfers;
        self.items += other.items;
    }

    /// Adds one row selected with `CLAIM_COLUMNS`; returns its weight.
    fn absorb(&mut self, row: &SpiHeapTupleData) -> i64 {
        let id = spi_ok(row.get::<i64>(1)).expect("id is NOT NULL");
        let is_recalc = spi_ok(row.get::<bool>(2)).unwrap_or(false);
        if let (Some(chain), Some(block)) = (spi_ok(row.get::<i32>(3)), spi_ok(row.get::<i64>(6))) {
            merge_heads(&mut self.heads, &BTreeMap::from([(chain, block)]));
        }
        // An item of a holder partition may stand for no transfer (its
        // share of a one-row statement): counted as it is, weighed as one.
        let row_count = i64::from(spi_ok(row.get::<i32>(8)).unwrap_or(1));
        self.transfers += row_count;
        let weight = row_count.max(1);
        if spi_ok(row.get::<bool>(7)).unwrap_or(false) {
            let relid = spi_ok(row.get::<pg_sys::Oid>(9)).map_or(0, |oid| oid.to_u32());
            self.row_items.push((id, relid));
        } else if !is_recalc {
            self.delta_ids.push(id);
        } else {
            let key: BalanceKey = (
                spi_ok(row.get::<i32>(3)).unwrap_or_default(),
                spi_ok(row.get::<String>(4)).unwrap_or_default(),
                spi_ok(row.get::<String>(5)).unwrap_or_default(),
            );
            self.add_recalc(key, vec![id]);
        }
        weight
    }
}

fn claim(client: &mut SpiClient<'_>, sql: &str, args: &[DatumWithOid<'_>]) -> Claimed {
    let mut claimed = Claimed::default();
    for row in spi_ok(client.update(sql, None, args)) {
        claimed.absorb(&row);
    }
    claimed.recalc.sort();
    claimed
}

/// The bind arguments of a statement over one key: chain $1, token $2,
/// holder $3.
fn key_args(key: &BalanceKey) -> [DatumWithOid<'_>; 3] {
    let (chain, contract, holder) = key;
    [
        (*chain).into(),
        contract.as_str().into(),
        holder.as_str().into(),
    ]
}

/// Claims the due pending items matching `filter` for one batch (see
/// [`claim_weighted`]); `source_rows` items only of the `readable` tables.
pub(super) fn claim_due(
    client: &mut SpiClient<'_>,
    batch_size: i32,
    filter: &ClaimFilter,
    readable: &[u32],
) -> Claimed {
    // The claim must walk the (priority, id) index and stop after the
    // batch. Queue statistics lag far behind a growing backlog, and with
    // them the planner picks a scan that sorts every pending item for each
    // batch, which makes a backlog quadratic. Steer this statement only.
    let saved_planner = spi_ok(
        spi_ok(client.update(STEER_PLANNER_SQL, Some(1), &[]))
            .first()
            .get_one::<String>(),
    )
    .unwrap_or_else(|| "on,on,on".into());
    let partitions = filter.holder_partition.map(|(_, n)| n);
    let args = |set: Option<Vec<i32>>, takeover: Option<String>| -> Vec<DatumWithOid<'static>> {
        vec![
            filter.chain_id.into(),
            filter.exclude_chains.clone().into(),
            filter.ids.clone().into(),
            readable
                .iter()
                .map(|&relid| pg_sys::Oid::from(relid))
                .collect::<Vec<_>>()
                .into(),
            set.into(),
            partitions.into(),
            takeover.into(),
        ]
    };
    // Its own partition's items only while no other batch applies them
    // (see `partition_lock`); its items of no holder in any case.
    let own = filter
        .holder_partition
        .map(|(k, _)| try_hold_partitions(client, &[k]));
    let mut claimed = claim_weighted(client, batch_size, filter.max_items, &args(own, None));
    // A batch its own partition does not fill takes the items other
    // partitions left waiting: a worker busy with the maintenance, or
    // stopped, delays its partition by takeover_after, while on a backlog
    // (every batch full) each worker keeps to its own keys. Only of the
    // partitions whose lock it gets: never while their worker applies them.
    if let Some((k, n)) = filter.holder_partition
        && !claimed.is_full(batch_size, filter.max_items)
    {
        let takeover = Some(format!("{} ms", crate::gucs::TAKEOVER_AFTER_MS.get()));
        let others: Vec<i32> = (0..n).filter(|&j| j != k).collect();
        let waiting: Vec<i32> = spi_ok(client.select(
            WAITING_PARTITIONS_SQL.as_str(),
            None,
            &args(Some(others), takeover.clone()),
        ))
        .filter_map(|row| spi_ok(row.get::<i32>(1)))
        .collect();
        let held = try_hold_partitions(client, &waiting);
        if !held.is_empty() {
            let rest = claim_weighted(
                client,
                (i64::from(batch_size) - claimed.transfers).clamp(1, i64::from(i32::MAX)) as i32,
                filter
                    .max_items
                    .map(|n| (i64::from(n) - claimed.items).max(1) as i32),
                &args(Some(held), takeover),
            );
            claimed.absorb_claim(rest);
        }
    }
    spi_ok(client.update(RESTORE_PLANNER_SQL, None, &[saved_planner.as_str().into()]));
    claimed
}

/// Claims due pending items in (priority, id) order, skipping locked ones,
/// until they stand for `batch_size` transfers (at least one item) or
/// number `max_items`, whichever comes first. Rows
/// are fetched through a cursor, so FOR UPDATE locks only what is fetched:
/// a `source_rows` item of 5,000 rows fills a batch of 5,000 on its own.
fn claim_weighted(
    client: &mut SpiClient<'_>,
    batch_size: i32,
    max_items: Option<i32>,
    args: &[DatumWithOid<'_>],
) -> Claimed {
    let target = i64::from(batch_size.max(1));
    let item_cap = max_items.map_or(i64::MAX, |n| i64::from(n.max(1)));
    let mut claimed = Claimed::default();
    let mut cursor = client.open_cursor_mut(CLAIM_DUE_SQL.as_str(), args);
    let mut heaviest = 1i64;
    let mut want = 1i64;
    while !claimed.is_full(batch_size, max_items) {
        let rows = spi_ok(cursor.fetch(want as _));
        let fetched = rows.len() as i64;
        if fetched == 0 {
            break;
        }
        for row in rows {
            // A fetched row is locked, but one past the batch is left out:
            // it stays pending, and other sessions take it once this
            // transaction ends.
            if claimed.items > 0 && claimed.is_full(batch_size, max_items) {
                break;
            }
            heaviest = heaviest.max(claimed.absorb(&row));
            claimed.items += 1;
        }
        // Fetch about as many items as should fill the rest of the batch,
        // at most twice as many as last time: light items seen first
        // (an id-range item of one row) say nothing of the next ones.
        want = ((target - claimed.transfers) / heaviest)
            .min(item_cap - claimed.items)
            .min(2 * fetched)
            .clamp(1, 1000);
    }
    drop(cursor);
    claimed.recalc.sort();
    claimed
}

/// Claims the other pending items of `key` not in `taken`, skipping those
/// another session holds.
pub(super) fn claim_rest_of_key(
    client: &mut SpiClient<'_>,
    key: &BalanceKey,
    taken: &[i64],
) -> Claimed {
    let [chain, contract, holder] = key_args(key);
    claim(
        client,
        CLAIM_REST_OF_KEY_SQL.as_str(),
        &[chain, contract, holder, taken.to_vec().into()],
    )
}

/// Whether `key` has a pending item not in `taken` (one another session
/// holds, after [`claim_rest_of_key`]).
pub(super) fn pending_elsewhere(client: &SpiClient<'_>, key: &BalanceKey, taken: &[i64]) -> bool {
    let [chain, contract, holder] = key_args(key);
    !spi_ok(client.select(
        PENDING_ELSEWHERE_SQL,
        None,
        &[chain, contract, holder, taken.to_vec().into()],
    ))
    .is_empty()
}

/// Claims every pending item of `key`, waiting for sessions that hold some.
pub(super) fn claim_key(client: &mut SpiClient<'_>, key: &BalanceKey) -> Claimed {
    claim(client, CLAIM_KEY_SQL.as_str(), &key_args(key))
}

/// Claims every pending `source_rows` item that can hold rows of
/// `chain_id`, waiting for sessions that hold some.
pub(super) fn claim_chain_row_items(client: &mut SpiClient<'_>, chain_id: i32) -> Claimed {
    claim(
        client,
        CLAIM_CHAIN_ROW_ITEMS_SQL.as_str(),
        &[chain_id.into()],
    )
}

/// Claims every due pending transfer-side and `source_rows` item of
/// `chain_id` (of the `readable` tables), skipping locked ones.
pub(super) fn claim_chain(client: &mut SpiClient<'_>, chain_id: i32, readable: &[u32]) -> Claimed {
    let mut claimed = claim(
        client,
        CLAIM_CHAIN_SQL.as_str(),
        &[
            chain_id.into(),
            readable
                .iter()
                .map(|&relid| pg_sys::Oid::from(relid))
                .collect::<Vec<_>>()
                .into(),
        ],
    );
    claimed.items = (claimed.delta_ids.len() + claimed.row_items.len()) as i64;
    claimed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_claim_of_due_items_uses_the_one_due_rule() {
        assert!(CLAIM_DUE_SQL.contains(&chain_filter("$1", "$2")));
        for sql in [CLAIM_DUE_SQL.as_str(), CLAIM_CHAIN_SQL.as_str()] {
            assert!(sql.contains(DUE), "{sql}");
            assert!(sql.contains("FOR UPDATE SKIP LOCKED"), "{sql}");
        }
        assert_eq!(
            DUE,
            "status = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= now())"
        );
    }
}
