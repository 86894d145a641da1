//! The ledger step: one statement counts each claimed transfer side once
//! through the `applied_transfers` ledger, keeps the confirmation window,
//! sums the sides whose counted state flipped per balance key and applies
//! each sum once; keys it cannot apply are then set back.
//!
//! Locks are taken in the apply path's global order: ledger rows sorted by
//! key, then balance rows sorted by key.

use super::balances::{
    BalanceKey, MAX_U256, SIDE_FACTS, ledger_key, same_ledger_key, side_columns, side_id,
};
use super::chain_lock;
use super::complete::merge_heads;
use super::read_back::ReadBack;
use super::set_back::{SetBack, set_back_keys};
use crate::errors::spi_ok;
use crate::sources::mapping::{RowFilter, SourceMapping};
use once_cell::sync::Lazy;
use pgrx::spi::SpiClient;
use std::collections::BTreeMap;

/// How a batch's sides reach the ledger and the balances.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Mode {
    /// Upserts into a ledger and balances that may hold the keys already.
    Incremental,
    /// Plain inserts: the caller holds the chain exclusively (see
    /// [`super::chain_lock`]) and has checked that no ledger row and no
    /// balance of the chain exists, so every side is new and a side counts
    /// exactly when its copies sum above zero. No conflict checks, no
    /// RETURNING of the ledger, no lookups of current balances.
    Bulk,
    /// [`Mode::Bulk`] into tables whose indexes are built afterwards (see
    /// [`super::deferred_indexes`]): rows go into the heaps unsorted, as no
    /// btree gains from their order.
    BulkUnindexed,
}

/// The CTEs every apply statement starts with: the read-back of `source_rows`
/// items `$2` (bigint[]) of `sources`, their bad rows recorded as failed
/// items, and `sides`: each distinct transfer side ([`side_columns`]) of
/// the transfer-side items `$1` (bigint[]) and the rows read back, with
/// `change`, the copies added.
fn sides_ctes(read_back: &ReadBack) -> String {
    let (read_back_ctes, read_back_sides) = if read_back.is_empty() {
        (String::new(), String::new())
    } else {
        (
            format!("{},\n{},\n", read_back.ctes(), read_back.failures()),
            format!(
                " UNION ALL SELECT chain_id, tx_hash, log_index, is_inbound, contract_address, holder_address,
                                   delta_wei, block_number, 1
                              FROM ({}) read_back",
                read_back.sides(&RowFilter::default())
            ),
        )
    };
    format!(
        "{read_back_ctes} sides AS (
             SELECT chain_id, tx_hash, log_index, is_inbound,
                    contract_address, holder_address, delta_wei, block_number,
                    {side_id} AS side_id,
                    sum(change)::integer AS change
               FROM (SELECT chain_id, triggered_by_tx AS tx_hash, triggered_by_log_index AS log_index,
                            update_type = 'transfer_in' AS is_inbound, contract_address, holder_address,
                            delta_wei, triggered_by_block AS block_number, source_change::integer AS change
                       FROM balance_queue.balance_update_queue
                      WHERE id = ANY($1){read_back_sides}) all_sides
              GROUP BY chain_id, tx_hash, log_index, is_inbound, contract_address, holder_address,
                       delta_wei, block_number
         ), heads AS (
             SELECT s.chain_id, max(s.block_number) AS block_number,
                    balance_queue.confirmed_through(greatest(coalesce(r.head_block, 0), max(s.block_number)),
                                                    r.confirmation_depth) AS confirmed_through
               FROM sides s JOIN balance_queue.chain_registry r USING (chain_id)
              GROUP BY s.chain_id, r.head_block, r.confirmation_depth
         ){judgements}",
        judgements = read_back.judgements(&confirmed_through_of("v")),
        side_id = side_id(SIDE_FACTS),
    )
}

/// The `confirmed_through` of the chain of the row aliased `alias`, from
/// `heads`. A subquery per row rather than a join: the planner, which
/// cannot know how many sides a batch holds, built its hash on the sides
/// (a bulk load's millions, spilled to disk) to join the few heads.
fn confirmed_through_of(alias: &str) -> String {
    format!("(SELECT h.confirmed_through FROM heads h WHERE h.chain_id = {alias}.chain_id)")
}

/// The rows every apply statement returns after its `out_of_range` rows:
/// kind `head` with the highest block applied per chain, kind `bad_rows`
/// with the number of bad rows read back (in `block`).
fn heads_and_bad_rows(read_back: &ReadBack) -> String {
    format!(
        "UNION ALL
         SELECT 'head', chain_id, NULL, NULL, block_number FROM heads
         UNION ALL
         SELECT 'bad_rows', NULL, NULL, NULL, {bad_rows}",
        bad_rows = read_back.bad_row_count(),
    )
}

/// The apply statement for a batch: transfer-side items `$1` (bigint[])
/// and `source_rows` items `$2` (bigint[]) of `sources`, read back. Bad
/// rows read back become failed items; every valid side goes through the
/// ledger, then the balances. Returns rows (kind, chain_id,
/// contract_address, holder_address, block): kind `out_of_range` for each
/// key whose new balance would leave -(2^256-1)..2^256-1 (its balance is
/// left untouched), then [`heads_and_bad_rows`].
fn apply_sql(sources: &[SourceMapping], mode: Mode) -> String {
    let read_back = ReadBack::new(sources, "$2");
    let tail = match mode {
        Mode::Incremental => INCREMENTAL_TAIL.as_str(),
        Mode::Bulk => BULK_TAIL.as_str(),
        Mode::BulkUnindexed => BULK_UNINDEXED_TAIL.as_str(),
    };
    format!(
        "WITH {sides}, {tail}\n{rest}",
        sides = sides_ctes(&read_back),
        rest = heads_and_bad_rows(&read_back),
    )
}

/// The columns a balance statement inserts, in [`new_balance_values`]'s order.
const BALANCE_INSERT_COLUMNS: &str = "chain_id, contract_address, holder_address, current_balance, \
     last_updated_block, last_updated_time, token_symbol, token_decimals";

/// The values of a new balance from the per-key sum aliased `e` (chain_id,
/// contract_address, holder_address, delta_wei, block_number) and its token's
/// metadata aliased `m`: [`BALANCE_INSERT_COLUMNS`].
fn new_balance_values(e: &str) -> String {
    format!(
        "{e}.chain_id, {e}.contract_address, {e}.holder_address, {e}.delta_wei, {e}.block_number,
                    now(), m.symbol, m.decimals"
    )
}

/// After [`sides_ctes`]: the ledger upsert, the confirmation window, the
/// balance upsert, and the out-of-range keys.
static INCREMENTAL_TAIL: Lazy<String> = Lazy::new(|| {
    format!(
        "ledger AS (
             INSERT INTO balance_queue.applied_transfers AS l
                 ({sides}, copies, last_change)
             SELECT {sides}, change, change
               FROM sides
              ORDER BY {key}
             ON CONFLICT ({key}) DO UPDATE
                SET copies = l.copies + EXCLUDED.copies,
                    last_change = EXCLUDED.copies
             RETURNING {l_sides}, l.copies, l.last_change
         ), pending_added AS (
             -- newly counted sides inside the confirmation window
             INSERT INTO balance_queue.unconfirmed_transfer_sides
                 ({sides})
             SELECT {l_sides}
               FROM ledger l
              WHERE l.copies > 0 AND l.copies - l.last_change <= 0
                AND balance_queue.is_unconfirmed(l.block_number, {l_confirmed_through})
              ORDER BY {l_key}
             ON CONFLICT DO NOTHING
             RETURNING 1
         ), pending_removed AS (
             -- sides no longer counted leave the window too
             DELETE FROM balance_queue.unconfirmed_transfer_sides p
              USING ledger l
              WHERE l.copies <= 0 AND l.copies - l.last_change > 0
                AND {same_key}
             RETURNING 1
         ), effects AS (
             -- only sides whose counted state flipped change a balance
             SELECT chain_id, contract_address, holder_address,
                    sum(CASE WHEN copies > 0 THEN delta_wei ELSE -delta_wei END) AS delta_wei,
                    max(block_number) AS block_number
               FROM ledger
              WHERE (copies > 0) <> (copies - last_change > 0)
              GROUP BY 1, 2, 3
         ), checked AS (
             -- Whether a new balance would stay in range: the upsert's
             -- conflict clause checks existing keys, so only a delta beyond
             -- the range on its own needs the current balance (ERC721 ids
             -- summed as amounts). No lookup per key: that would depend on
             -- the planner picking the primary key, which it does not on a
             -- table not yet analysed.
             SELECT e.*,
                    CASE WHEN abs(e.delta_wei) <= {MAX_U256} THEN true
                         WHEN abs(e.delta_wei) > 2 * {MAX_U256} THEN false
                         ELSE abs(coalesce((SELECT b.current_balance FROM balance_queue.current_token_balances b
                                             WHERE b.chain_id = e.chain_id AND b.contract_address = e.contract_address
                                               AND b.holder_address = e.holder_address), 0)
                                  + e.delta_wei) <= {MAX_U256} END AS in_range
               FROM effects e
         ), upserted AS (
             INSERT INTO balance_queue.current_token_balances AS b
                 ({BALANCE_INSERT_COLUMNS})
             SELECT {new_balance}
               FROM checked c
               LEFT JOIN balance_queue.token_metadata m USING (chain_id, contract_address)
              WHERE c.in_range
              ORDER BY c.chain_id, c.contract_address, c.holder_address
             ON CONFLICT (chain_id, contract_address, holder_address) DO UPDATE
                SET current_balance = b.current_balance + EXCLUDED.current_balance,
                    last_updated_block = greatest(b.last_updated_block, EXCLUDED.last_updated_block),
                    last_updated_time = EXCLUDED.last_updated_time,
                    token_symbol = EXCLUDED.token_symbol,
                    token_decimals = EXCLUDED.token_decimals
              WHERE abs(b.current_balance + EXCLUDED.current_balance) <= {MAX_U256}
             RETURNING b.chain_id, b.contract_address, b.holder_address
         )
         SELECT 'out_of_range', c.chain_id, c.contract_address, c.holder_address, NULL::bigint
           FROM checked c
          WHERE NOT EXISTS (SELECT 1 FROM upserted u
                             WHERE u.chain_id = c.chain_id AND u.contract_address = c.contract_address
                               AND u.holder_address = c.holder_address)",
        new_balance = new_balance_values("c"),
        key = ledger_key(""),
        l_key = ledger_key("l"),
        sides = side_columns(""),
        l_sides = side_columns("l"),
        same_key = same_ledger_key("p", "l"),
        l_confirmed_through = confirmed_through_of("l"),
    )
});

/// After [`sides_ctes`], in [`Mode::Bulk`]: every side is new, so it goes
/// into the ledger with copies = change, counts when change > 0, and each
/// key's sum is inserted as its balance; a sum beyond the uint256 range is
/// left out and reported, as in the incremental statement.
static BULK_TAIL: Lazy<String> = Lazy::new(|| bulk_tail(true));

/// [`BULK_TAIL`] without sorting the rows it inserts ([`Mode::BulkUnindexed`]).
static BULK_UNINDEXED_TAIL: Lazy<String> = Lazy::new(|| bulk_tail(false));

/// The bulk tail, inserting in key order when `sorted` (the order the
/// ledger's and the balances' primary keys take them in best).
fn bulk_tail(sorted: bool) -> String {
    let (ledger_order, balance_order) = if sorted {
        (
            format!("ORDER BY {}", ledger_key("")),
            "ORDER BY e.chain_id, e.contract_address, e.holder_address",
        )
    } else {
        (String::new(), "")
    };
    format!(
        "ledger AS (
             INSERT INTO balance_queue.applied_transfers
                 ({sides}, copies, last_change)
             SELECT {sides}, change, change
               FROM sides
              {ledger_order}
         ), pending_added AS (
             INSERT INTO balance_queue.unconfirmed_transfer_sides
                 ({sides})
             SELECT {s_sides}
               FROM sides s
              WHERE s.change > 0
                AND balance_queue.is_unconfirmed(s.block_number, {s_confirmed_through})
         ), effects AS (
             SELECT chain_id, contract_address, holder_address, sum(delta_wei) AS delta_wei,
                    max(block_number) AS block_number
               FROM sides
              WHERE change > 0
              GROUP BY 1, 2, 3
         ), inserted AS (
             INSERT INTO balance_queue.current_token_balances
                 ({BALANCE_INSERT_COLUMNS})
             SELECT {new_balance}
               FROM effects e
               LEFT JOIN balance_queue.token_metadata m USING (chain_id, contract_address)
              WHERE abs(e.delta_wei) <= {MAX_U256}
              {balance_order}
         )
         SELECT 'out_of_range', chain_id, contract_address, holder_address, NULL::bigint
           FROM effects WHERE abs(delta_wei) > {MAX_U256}",
        new_balance = new_balance_values("e"),
        sides = side_columns(""),
        s_sides = side_columns("s"),
        s_confirmed_through = confirmed_through_of("s"),
    )
}

/// Applies the transfer-side items `ids` and the `source_rows` items
/// `row_ids` (rows of `sources`), sets back the out-of-range keys, and
/// raises `heads` to the highest blocks applied.
pub(super) fn apply_items(
    client: &mut SpiClient<'_>,
    ids: &[i64],
    sources: &[SourceMapping],
    row_ids: &[i64],
    heads: &mut BTreeMap<i32, i64>,
) -> SetBack {
    apply_items_as(
        client,
        Mode::Incremental,
        ids,
        sources,
        row_ids,
        heads,
        |_| {},
    )
}

/// [`apply_items`] with the statement of `mode`. Holds each chain of the
/// items shared (see [`super::chain_lock`]) unless the caller holds it
/// exclusively for a bulk apply. Runs `before_set_back` after the apply
/// statement and before the out-of-range keys are set back: a bulk load
/// into bare tables builds their indexes there, as each set-back looks its
/// ledger rows up by key.
pub(super) fn apply_items_as(
    client: &mut SpiClient<'_>,
    mode: Mode,
    ids: &[i64],
    sources: &[SourceMapping],
    row_ids: &[i64],
    heads: &mut BTreeMap<i32, i64>,
    before_set_back: impl FnOnce(&mut SpiClient<'_>),
) -> SetBack {
    let mut set_back = SetBack::default();
    if ids.is_empty() && row_ids.is_empty() {
        before_set_back(client);
        return set_back;
    }
    if mode == Mode::Incremental {
        chain_lock::share_chains_of_items(client, ids, row_ids);
    }
    let mut out_of_range: Vec<BalanceKey> = Vec::new();
    for row in spi_ok(client.update(
        &apply_sql(sources, mode),
        None,
        &[ids.to_vec().into(), row_ids.to_vec().into()],
    )) {
        let chain = spi_ok(row.get::<i32>(2)).unwrap_or_default();
        match spi_ok(row.get::<String>(1)).as_deref() {
            Some("head") => {
                if let Some(block) = spi_ok(row.get::<i64>(5)) {
                    merge_heads(heads, &BTreeMap::from([(chain, block)]));
                }
                continue;
            }
            Some("bad_rows") => {
                set_back.failed += spi_ok(row.get::<i64>(5)).unwrap_or(0) as i32;
                continue;
            }
            _ => {}
        }
        out_of_range.push((
            chain,
            spi_ok(row.get::<String>(3)).unwrap_or_default(),
            spi_ok(row.get::<String>(4)).unwrap_or_default(),
        ));
    }
    before_set_back(client);
    set_back_keys(client, &out_of_range, ids, sources, row_ids, &mut set_back);
    set_back
}
