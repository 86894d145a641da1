//! The apply path: claims queue items, counts each transfer side exactly
//! once through the `applied_transfers` ledger, sums the effective deltas
//! per (chain id, token contract, holder) and applies each sum once, all in
//! the transaction that consumes the items.
//!
//! Locks are taken in one global order (queue items with SKIP LOCKED, then
//! ledger rows sorted by key, then balance rows sorted by key), so any
//! number of concurrent drains cannot deadlock, and none waits on a queue
//! item another holds.

use crate::errors::{invalid_parameter, spi_ok};
use crate::recalc;
use crate::source_rows;
use crate::source_sql::SourceMapping;
use once_cell::sync::Lazy;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// The content of a transfer side (token, holder, signed amount, block) as
/// a uuid. The ledger counts copies per (chain, tx_hash, log_index, side,
/// content): copies of one log count once, and a log that a reorg
/// re-includes with another amount or in another block is another content,
/// so the old one is taken back and the new one added whatever order the
/// drains apply them in.
fn content_id(contract: &str, holder: &str, delta: &str, block: &str) -> String {
    format!("md5(concat_ws('|', {contract}, {holder}, {delta}, {block}))::uuid")
}

/// 2^256-1: the largest magnitude a balance may have.
pub const MAX_U256: &str =
    "115792089237316195423570985008687907853269984665640564039457584007913129639935";

/// The error message of a transfer side set back because its key's balance
/// would leave the uint256 range; format() arguments: tx_hash, log_index,
/// attempts, holder, token, chain.
const OUT_OF_RANGE_MESSAGE: &str = "'transfer (tx_hash %s, log_index %s) not applied after %s attempt(s): the balance of holder %s '
     'for token %s on chain %s would leave -(2^256-1)..2^256-1 (a uint256 overflow; ERC721 token '
     'ids summed as amounts do this)'";

/// A CTE `reverted` taking the copies counted in CTE `undo` (chain_id,
/// tx_hash, log_index, is_inbound, content_id, change) back out of the
/// ledger, for sides set back so that their retry starts clean.
const REVERT_LEDGER: &str = "reverted AS (
        UPDATE balance_queue.applied_transfers l
           SET copies = l.copies - undo.change, last_change = 0
          FROM undo
         WHERE l.chain_id = undo.chain_id AND l.tx_hash = undo.tx_hash AND l.log_index = undo.log_index
           AND l.is_inbound = undo.is_inbound AND l.content_id = undo.content_id
        RETURNING 1
    )";

/// (chain id, token contract, holder): the key of a balance.
pub type BalanceKey = (i32, String, String);

/// USD value of `balance` wei given token_metadata row alias `m`.
pub fn usd_sql(balance: &str, m: &str) -> String {
    format!(
        "CASE WHEN {m}.price_usd IS NOT NULL AND {m}.decimals IS NOT NULL
              THEN round(({balance}) * {m}.price_usd / power(10::numeric, {m}.decimals), 6) END"
    )
}

/// The apply statement for a batch: transfer-side items `$1` (bigint[])
/// and `source_rows` items `$2` (bigint[]) of `sources`, read back. Bad
/// rows read back become failed items; every valid side goes through the
/// ledger, then the balances. Returns rows (kind, chain_id,
/// contract_address, holder_address, block): kind `out_of_range` for each
/// key whose new balance would leave -(2^256-1)..2^256-1 (its balance is
/// left untouched), kind `head` with the highest block applied per chain,
/// kind `bad_rows` with the number of bad rows read back (in `block`).
fn apply_sql(sources: &[SourceMapping]) -> String {
    let bad_rows = (0..sources.len())
        .map(|i| format!("(SELECT count(*) FROM read_back_failed_{i})"))
        .chain(std::iter::once("0".to_string()))
        .collect::<Vec<_>>()
        .join(" + ");
    let (read_back, read_back_sides) = if sources.is_empty() {
        (String::new(), String::new())
    } else {
        (
            format!(
                "{},\n{},\n",
                source_rows::read_back_ctes(sources),
                source_rows::read_back_failures(sources)
            ),
            format!(
                " UNION ALL SELECT chain_id, tx_hash, log_index, is_inbound, contract_address, holder_address,
                                   delta_wei, block_number, 1
                              FROM ({}) read_back",
                source_rows::read_back_sides(sources, "true")
            ),
        )
    };
    format!(
        "WITH {read_back} sides AS (
             SELECT chain_id, tx_hash, log_index, is_inbound,
                    {content} AS content_id,
                    contract_address, holder_address, delta_wei, block_number,
                    sum(change)::integer AS change
               FROM (SELECT chain_id, triggered_by_tx AS tx_hash, triggered_by_log_index AS log_index,
                            update_type = 'transfer_in' AS is_inbound, contract_address, holder_address,
                            delta_wei, triggered_by_block AS block_number, source_change::integer AS change
                       FROM balance_queue.balance_update_queue
                      WHERE id = ANY($1){read_back_sides}) all_sides
              GROUP BY chain_id, tx_hash, log_index, is_inbound, contract_address, holder_address,
                       delta_wei, block_number
         ), ledger AS (
             INSERT INTO balance_queue.applied_transfers AS l
                 (chain_id, tx_hash, log_index, is_inbound, content_id, contract_address, holder_address,
                  delta_wei, block_number, copies, last_change)
             SELECT chain_id, tx_hash, log_index, is_inbound, content_id, contract_address, holder_address,
                    delta_wei, block_number, change, change
               FROM sides
              ORDER BY chain_id, tx_hash, log_index, is_inbound, content_id
             ON CONFLICT (chain_id, tx_hash, log_index, is_inbound, content_id) DO UPDATE
                SET copies = l.copies + EXCLUDED.copies,
                    last_change = EXCLUDED.copies
             RETURNING l.chain_id, l.tx_hash, l.log_index, l.is_inbound, l.content_id, l.contract_address,
                       l.holder_address, l.delta_wei, l.block_number, l.copies, l.last_change
         ), heads AS (
             SELECT s.chain_id, max(s.block_number) AS block_number,
                    greatest(coalesce(r.head_block, 0), max(s.block_number)) - r.confirmation_depth AS confirmed_through
               FROM sides s JOIN balance_queue.chain_registry r USING (chain_id)
              GROUP BY s.chain_id, r.head_block, r.confirmation_depth
         ), pending_added AS (
             -- newly counted sides inside the confirmation window
             INSERT INTO balance_queue.pending_transfer_sides
                 (chain_id, tx_hash, log_index, is_inbound, content_id, contract_address, holder_address,
                  delta_wei, block_number)
             SELECT l.chain_id, l.tx_hash, l.log_index, l.is_inbound, l.content_id, l.contract_address,
                    l.holder_address, l.delta_wei, l.block_number
               FROM ledger l
               LEFT JOIN heads h USING (chain_id)
              WHERE l.copies > 0 AND l.copies - l.last_change <= 0
                AND l.block_number > coalesce(h.confirmed_through, -1)
              ORDER BY l.chain_id, l.tx_hash, l.log_index, l.is_inbound, l.content_id
             ON CONFLICT DO NOTHING
             RETURNING 1
         ), pending_removed AS (
             -- sides no longer counted leave the window too
             DELETE FROM balance_queue.pending_transfer_sides p
              USING ledger l
              WHERE l.copies <= 0 AND l.copies - l.last_change > 0
                AND p.chain_id = l.chain_id AND p.tx_hash = l.tx_hash AND p.log_index = l.log_index
                AND p.is_inbound = l.is_inbound AND p.content_id = l.content_id
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
             -- the planner picking the primary key over the top-holders
             -- index, which it does not on a table not yet analysed.
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
                 (chain_id, contract_address, holder_address, current_balance, last_updated_block,
                  last_updated_time, token_symbol, token_decimals, balance_usd)
             SELECT c.chain_id, c.contract_address, c.holder_address, c.delta_wei, c.block_number,
                    now(), m.symbol, m.decimals, {usd_new}
               FROM checked c
               LEFT JOIN balance_queue.token_metadata m USING (chain_id, contract_address)
              WHERE c.in_range
              ORDER BY c.chain_id, c.contract_address, c.holder_address
             ON CONFLICT (chain_id, contract_address, holder_address) DO UPDATE
                SET current_balance = b.current_balance + EXCLUDED.current_balance,
                    last_updated_block = greatest(b.last_updated_block, EXCLUDED.last_updated_block),
                    last_updated_time = EXCLUDED.last_updated_time,
                    token_symbol = EXCLUDED.token_symbol,
                    token_decimals = EXCLUDED.token_decimals,
                    balance_usd = (SELECT {usd_sum} FROM balance_queue.token_metadata m
                                    WHERE m.chain_id = b.chain_id AND m.contract_address = b.contract_address)
              WHERE abs(b.current_balance + EXCLUDED.current_balance) <= {MAX_U256}
             RETURNING b.chain_id, b.contract_address, b.holder_address
         )
         SELECT 'out_of_range', c.chain_id, c.contract_address, c.holder_address, NULL::bigint
           FROM checked c
          WHERE NOT EXISTS (SELECT 1 FROM upserted u
                             WHERE u.chain_id = c.chain_id AND u.contract_address = c.contract_address
                               AND u.holder_address = c.holder_address)
         UNION ALL
         SELECT 'head', chain_id, NULL, NULL, block_number FROM heads
         UNION ALL
         SELECT 'bad_rows', NULL, NULL, NULL, {bad_rows}",
        content = content_id("contract_address", "holder_address", "delta_wei", "block_number"),
        bad_rows = bad_rows,
        usd_new = usd_sql("c.delta_wei", "m"),
        usd_sum = usd_sql("b.current_balance + EXCLUDED.current_balance", "m"),
    )
}

/// Sets back the batch's transfer-side items of one out-of-range key,
/// naming each row, and takes their copies back out of the ledger so the
/// retry starts clean. The items back off and are retried (another drain
/// may be applying the rest of a reorg out of order, which puts a balance
/// out of range only for a moment); after the chain's max_retry_attempts
/// they stay `failed` (an ERC721 token's ids summed as amounts never come
/// back into range). Returns each item's id and whether it is now failed.
static FAIL_KEY_SQL: Lazy<String> = Lazy::new(|| {
    format!(
        "
    WITH failed AS (
        UPDATE balance_queue.balance_update_queue q
           SET retry_count = q.retry_count + 1,
               status = CASE WHEN q.retry_count + 1 >= $5 THEN 'failed' ELSE 'pending' END,
               processed_at = CASE WHEN q.retry_count + 1 >= $5 THEN clock_timestamp() END,
               next_attempt_at = now() + make_interval(secs => $6 / 1000.0 * power(2, q.retry_count)),
               error_message = format({OUT_OF_RANGE_MESSAGE},
                   q.triggered_by_tx, q.triggered_by_log_index, q.retry_count + 1, q.holder_address,
                   q.contract_address, q.chain_id)
         WHERE q.id = ANY($1) AND q.chain_id = $2 AND q.contract_address = $3 AND q.holder_address = $4
           AND q.delta_wei IS NOT NULL
        RETURNING q.id, q.status, q.chain_id, q.triggered_by_tx, q.triggered_by_log_index,
                  q.update_type = 'transfer_in' AS is_inbound, {content} AS content_id, q.source_change
    ), undo AS (
        SELECT chain_id, triggered_by_tx AS tx_hash, triggered_by_log_index AS log_index, is_inbound,
               content_id, sum(source_change) AS change
          FROM failed GROUP BY 1, 2, 3, 4, 5
    ), {REVERT_LEDGER}
    SELECT id, status = 'failed' FROM failed",
        content = content_id(
            "q.contract_address",
            "q.holder_address",
            "q.delta_wei",
            "q.triggered_by_block"
        )
    )
});

/// The rows read back for one out-of-range key leave their `source_rows`
/// item: each side becomes a transfer-side item that has had one attempt
/// (pending after the backoff, or failed when max_retry_attempts ($6) is
/// 1 or less), and its copies go back out of the ledger. From then on it
/// retries like any set-back item. Returns (failed, spilled) counts.
fn spill_key_sql(sources: &[SourceMapping]) -> String {
    format!(
        "WITH {read_back},
         key_sides AS ({sides}),
         spilled AS (
             INSERT INTO balance_queue.balance_update_queue
                 (chain_id, contract_address, holder_address, update_type, delta_wei, source_change,
                  triggered_by_tx, triggered_by_log_index, triggered_by_block, source_table,
                  status, retry_count, processed_at, next_attempt_at, error_message)
             SELECT chain_id, contract_address, holder_address,
                    CASE WHEN is_inbound THEN 'transfer_in' ELSE 'transfer_out' END, delta_wei, 1,
                    tx_hash, log_index, block_number, source_oid::regclass,
                    CASE WHEN $6 <= 1 THEN 'failed' ELSE 'pending' END, 1,
                    CASE WHEN $6 <= 1 THEN clock_timestamp() END,
                    now() + make_interval(secs => $7 / 1000.0),
                    format({OUT_OF_RANGE_MESSAGE}, tx_hash, log_index, 1, holder_address, contract_address, chain_id)
               FROM key_sides
             RETURNING status
         ), undo AS (
             SELECT chain_id, tx_hash, log_index, is_inbound, {content} AS content_id, count(*) AS change
               FROM key_sides
              GROUP BY chain_id, tx_hash, log_index, is_inbound, contract_address, holder_address,
                       delta_wei, block_number
         ), {REVERT_LEDGER}
         SELECT count(*) FILTER (WHERE status = 'failed'), count(*) FROM spilled",
        read_back = source_rows::read_back_ctes(sources),
        sides = source_rows::read_back_sides(
            sources,
            "v.chain_id = $3 AND v.contract_address = $4 AND s.holder_address = $5"
        ),
        content = content_id("contract_address", "holder_address", "delta_wei", "block_number"),
    )
}

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

/// Items taken for one batch.
#[derive(Default)]
struct Claimed {
    /// Transfer-side items.
    delta_ids: Vec<i64>,
    /// `source_rows` items and their source table.
    row_items: Vec<(i64, u32)>,
    /// Recalculation requests per key.
    recalc: Vec<(BalanceKey, Vec<i64>)>,
    /// Highest block among the claimed items, per chain.
    heads: BTreeMap<i32, i64>,
    /// Transfers the items stand for.
    transfers: i64,
    /// Items taken.
    items: i64,
}

const CLAIM_COLUMNS: &str = "id, delta_wei IS NULL AND source_row_ids IS NULL, chain_id, contract_address, \
     holder_address, triggered_by_block, source_row_ids IS NOT NULL, row_count, source_table::oid";

impl Claimed {
    /// Adds one row selected with `CLAIM_COLUMNS`; returns its weight.
    fn absorb(&mut self, row: &pgrx::spi::SpiHeapTupleData) -> i64 {
        let id = spi_ok(row.get::<i64>(1)).expect("id is NOT NULL");
        let is_recalc = spi_ok(row.get::<bool>(2)).unwrap_or(false);
        if let (Some(chain), Some(block)) = (spi_ok(row.get::<i32>(3)), spi_ok(row.get::<i64>(6))) {
            merge_heads(&mut self.heads, &BTreeMap::from([(chain, block)]));
        }
        let weight = i64::from(spi_ok(row.get::<i32>(8)).unwrap_or(1).max(1));
        self.transfers += weight;
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
            match self.recalc.iter_mut().find(|(k, _)| *k == key) {
                Some((_, ids)) => ids.push(id),
                None => self.recalc.push((key, vec![id])),
            }
        }
        weight
    }
}

fn claim(client: &mut SpiClient<'_>, sql: &str, args: &[pgrx::datum::DatumWithOid<'_>]) -> Claimed {
    let mut claimed = Claimed::default();
    for row in spi_ok(client.update(sql, None, args)) {
        claimed.absorb(&row);
    }
    claimed.recalc.sort();
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
    args: &[pgrx::datum::DatumWithOid<'_>],
) -> Claimed {
    let sql = format!(
        "SELECT {CLAIM_COLUMNS} FROM balance_queue.balance_update_queue
          WHERE status = 'pending'
            AND (next_attempt_at IS NULL OR next_attempt_at <= now())
            AND ($1::integer IS NULL OR chain_id = $1)
            AND coalesce(chain_id <> ALL($2::integer[]), true)
            AND ($3::bigint[] IS NULL OR id = ANY($3))
            AND (source_row_ids IS NULL OR source_table::oid = ANY($4::oid[]))
          ORDER BY priority, id
          FOR UPDATE SKIP LOCKED"
    );
    let target = i64::from(batch_size.max(1));
    let item_cap = max_items.map_or(i64::MAX, |n| i64::from(n.max(1)));
    let mut claimed = Claimed::default();
    let mut cursor = client.open_cursor_mut(sql.as_str(), args);
    let mut heaviest = 1i64;
    let mut want = 1i64;
    while claimed.transfers < target && claimed.items < item_cap {
        let rows = spi_ok(cursor.fetch(want as _));
        if rows.is_empty() {
            break;
        }
        for row in rows {
            heaviest = heaviest.max(claimed.absorb(&row));
            claimed.items += 1;
        }
        // Fetch about as many items as should fill the rest of the batch.
        want = ((target - claimed.transfers) / heaviest)
            .min(item_cap - claimed.items)
            .clamp(1, 1000);
    }
    drop(cursor);
    claimed.recalc.sort();
    claimed
}

/// Loads the mapping of each source table with claimed `source_rows`
/// items. Items of a table no longer attached (detached or dropped while
/// they waited; both normally supersede them first) are marked failed:
/// their rows were never counted. So are items of a table without the
/// extension's insert trigger, or with a column of a user-defined type: the
/// drain reads rows back with the extension owner's rights, so it reads only
/// tables whose owner let the trigger be created (a row in
/// `attached_sources` alone is not enough), and only built-in types' casts.
fn row_sources(client: &mut SpiClient<'_>, items: &[(i64, u32)]) -> (Vec<SourceMapping>, Vec<i64>) {
    let relids: BTreeSet<u32> = items.iter().map(|(_, relid)| *relid).collect();
    let mut sources = Vec::new();
    let mut orphans = Vec::new();
    for relid in relids {
        let ids = items.iter().filter(|(_, r)| *r == relid).map(|(id, _)| *id);
        let oid = pg_sys::Oid::from(relid);
        let triggered = !spi_ok(client.select(
            "SELECT 1 FROM pg_catalog.pg_trigger
              WHERE tgrelid = $1 AND NOT tgisinternal
                AND tgfoid = 'balance_queue._enqueue_transfer_rows()'::pg_catalog.regprocedure",
            Some(1),
            &[oid.into()],
        ))
        .is_empty();
        match crate::attach::load_mapping(client, oid) {
            Some(mapping)
                if triggered
                    && mapping.row_id_column.is_some()
                    && builtin_columns(client, oid, &mapping) =>
            {
                sources.push(mapping)
            }
            _ => orphans.extend(ids),
        }
    }
    if !orphans.is_empty() {
        spi_ok(client.update(
            "UPDATE balance_queue.balance_update_queue
                SET status = 'failed', processed_at = clock_timestamp(), retryable = false,
                    error_message = format('rows %s of %s not counted: the table is no longer attached '
                                           '(or was never attached with attach_transfer_table, or now has a '
                                           'column of a user-defined type)',
                                           source_row_ids, source_table)
              WHERE id = ANY($1)",
            None,
            &[orphans.clone().into()],
        ));
    }
    let ids = items
        .iter()
        .filter(|(id, _)| !orphans.contains(id))
        .map(|(id, _)| *id)
        .collect();
    (sources, ids)
}

/// Whether every column the mapping reads is of a built-in type. Checked
/// on every read, not only at attach: the table's owner may since have
/// changed a column to a type whose cast to text is its own code.
fn builtin_columns(client: &SpiClient<'_>, relid: pg_sys::Oid, mapping: &SourceMapping) -> bool {
    let columns: Vec<String> = [
        Some(&mapping.from_column),
        Some(&mapping.to_column),
        Some(&mapping.value_column),
        Some(&mapping.contract_column),
        Some(&mapping.tx_hash_column),
        Some(&mapping.log_index_column),
        Some(&mapping.block_number_column),
        mapping.network_column.as_ref(),
        mapping.row_id_column.as_ref(),
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect();
    spi_ok(client.select(
        "SELECT 1 FROM pg_catalog.pg_attribute
          WHERE attrelid = $1 AND attname = ANY($2) AND atttypid >= 16384",
        Some(1),
        &[relid.into(), columns.into()],
    ))
    .is_empty()
}

/// Applies the transfer-side items `ids` and the `source_rows` items
/// `row_ids` (rows of `sources`), sets back the out-of-range keys, and
/// raises `heads` to the highest blocks applied.
fn apply_delta_items(
    client: &mut SpiClient<'_>,
    ids: &[i64],
    sources: &[SourceMapping],
    row_ids: &[i64],
    heads: &mut BTreeMap<i32, i64>,
) -> SetBack {
    let mut set_back = SetBack::default();
    if ids.is_empty() && row_ids.is_empty() {
        return set_back;
    }
    let mut out_of_range: Vec<BalanceKey> = Vec::new();
    for row in spi_ok(client.update(
        &apply_sql(sources),
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
    let backoff_ms = f64::from(crate::gucs::RETRY_BACKOFF_MS.get());
    for (chain_id, contract, holder) in out_of_range {
        let max_attempts =
            crate::health::effective_config(client, Some(chain_id)).max_retry_attempts;
        let args = [
            ids.to_vec().into(),
            chain_id.into(),
            contract.as_str().into(),
            holder.as_str().into(),
            max_attempts.into(),
            backoff_ms.into(),
        ];
        for row in spi_ok(client.update(FAIL_KEY_SQL.as_str(), None, &args)) {
            set_back.ids.insert(spi_ok(row.get::<i64>(1)).expect("id"));
            if spi_ok(row.get::<bool>(2)).unwrap_or(false) {
                set_back.failed += 1;
            }
        }
        if sources.is_empty() {
            continue;
        }
        let args = [
            ids.to_vec().into(),
            row_ids.to_vec().into(),
            chain_id.into(),
            contract.as_str().into(),
            holder.as_str().into(),
            max_attempts.into(),
            backoff_ms.into(),
        ];
        let spilled = spi_ok(client.update(&spill_key_sql(sources), Some(1), &args));
        set_back.failed += spi_ok(spilled.first().get_one::<i64>()).unwrap_or(0) as i32;
    }
    set_back
}

/// Items an apply set back (out of range): to retry, or failed for good.
#[derive(Default)]
struct SetBack {
    ids: BTreeSet<i64>,
    failed: i32,
}

/// Raises each chain's head block to the highest block applied. Registry
/// rows are locked in chain order, after every balance row, and only when
/// the head moves.
fn raise_heads(client: &mut SpiClient<'_>, heads: &BTreeMap<i32, i64>) {
    for (&chain_id, &block) in heads {
        spi_ok(client.update(
            "UPDATE balance_queue.chain_registry SET head_block = $2
              WHERE chain_id = $1 AND (head_block IS NULL OR head_block < $2)",
            None,
            &[chain_id.into(), block.into()],
        ));
    }
}

/// Raises the chains' head blocks, then marks the still-pending items among
/// `ids` completed. (The status test is written so the planner looks the
/// ids up by primary key, not through the pending index: that one covers
/// the whole backlog.)
fn complete(client: &mut SpiClient<'_>, ids: &[i64], heads: &BTreeMap<i32, i64>, elapsed_ms: f64) {
    raise_heads(client, heads);
    if ids.is_empty() {
        return;
    }
    spi_ok(client.update(
        "UPDATE balance_queue.balance_update_queue
            SET status = 'completed', processed_at = clock_timestamp(),
                processing_duration_ms = round($2::numeric, 3)
          WHERE id = ANY($1) AND status NOT IN ('completed', 'failed')",
        None,
        &[ids.to_vec().into(), elapsed_ms.into()],
    ));
}

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
    let readable = source_rows::try_lock_row_sources(client);
    // The claim must walk the (priority, id) index and stop after the
    // batch. Queue statistics lag far behind a growing backlog, and with
    // them the planner picks a scan that sorts every pending item for each
    // batch, which makes a backlog quadratic. Steer this statement only.
    let saved_planner = spi_ok(
        spi_ok(client.update(
            "SELECT concat_ws(',', current_setting('enable_bitmapscan'), current_setting('enable_seqscan'),
                              current_setting('enable_sort')),
                    set_config('enable_bitmapscan', 'off', true), set_config('enable_seqscan', 'off', true),
                    set_config('enable_sort', 'off', true)",
            Some(1),
            &[],
        ))
        .first()
        .get_one::<String>(),
    )
    .unwrap_or_else(|| "on,on,on".into());
    let mut claimed = claim_weighted(
        client,
        batch_size,
        filter.max_items,
        &[
            filter.chain_id.into(),
            filter.exclude_chains.clone().into(),
            filter.ids.clone().into(),
            readable
                .iter()
                .map(|&relid| pg_sys::Oid::from(relid))
                .collect::<Vec<_>>()
                .into(),
        ],
    );
    spi_ok(client.update(
        "SELECT set_config('enable_bitmapscan', split_part($1, ',', 1), true),
                set_config('enable_seqscan', split_part($1, ',', 2), true),
                set_config('enable_sort', split_part($1, ',', 3), true)",
        None,
        &[saved_planner.as_str().into()],
    ));
    // A recalculation must see every earlier change of its key applied: take
    // the key's other pending items too, and defer the recalculation when
    // another session holds some of them (never wait on a queue item).
    let mut recalc_now = Vec::new();
    let mut heads = std::mem::take(&mut claimed.heads);
    let mut all_ids: BTreeSet<i64> = claimed.delta_ids.iter().copied().collect();
    all_ids.extend(claimed.row_items.iter().map(|(id, _)| *id));
    for (key, ids) in std::mem::take(&mut claimed.recalc) {
        let (chain, contract, holder) = &key;
        let mut taken: Vec<i64> = all_ids.iter().copied().chain(ids.iter().copied()).collect();
        let extra = claim(
            client,
            &format!(
                "SELECT {CLAIM_COLUMNS} FROM balance_queue.balance_update_queue
                  WHERE status = 'pending' AND chain_id = $1 AND contract_address = $2
                    AND holder_address = $3 AND id <> ALL($4)
                  FOR UPDATE SKIP LOCKED"
            ),
            &[
                (*chain).into(),
                contract.as_str().into(),
                holder.as_str().into(),
                taken.clone().into(),
            ],
        );
        merge_heads(&mut heads, &extra.heads);
        taken.extend(extra.delta_ids.iter().copied());
        taken.extend(extra.recalc.iter().flat_map(|(_, ids)| ids.iter().copied()));
        let held_elsewhere = !spi_ok(client.select(
            "SELECT 1 FROM balance_queue.balance_update_queue
              WHERE status = 'pending' AND chain_id = $1 AND contract_address = $2
                AND holder_address = $3 AND id <> ALL($4) LIMIT 1",
            None,
            &[
                (*chain).into(),
                contract.as_str().into(),
                holder.as_str().into(),
                taken.into(),
            ],
        ))
        .is_empty();
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
    let set_back = apply_delta_items(client, &claimed.delta_ids, &sources, &row_ids, &mut heads);
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
        if recalc::recompute_and_store(client, *chain, contract, holder).is_none() {
            recalc::fail_out_of_range(client, ids);
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
    BatchOutcome {
        processed: attempted,
        full: claimed.transfers >= i64::from(batch_size.max(1))
            || filter
                .max_items
                .is_some_and(|n| claimed.items >= i64::from(n)),
        failed,
        elapsed_ms,
    }
}

/// Drains one batch of the queue in the calling transaction.
///
/// * `p_batch_size`: how many transfers to take (default 100, > 0): items
///   are taken until they stand for that many (an id-range item counts
///   its rows, any other item 1), at least one item. Items are taken
///   lowest `priority` first, then oldest, skipping items another session
///   holds (SKIP LOCKED), so any number of sessions may drain at once; no
///   item is applied twice. Items waiting out a retry backoff
///   (`next_attempt_at` in the future) are left for later.
/// * `p_chain_id`: only this chain's items; NULL (default) for all.
///
/// Rows queued by id are read back from their table by primary key and
/// checked; a bad row becomes a `failed` item naming it. Sums the
/// effective deltas per (chain id, token contract, holder) and applies
/// each sum once, counting every transfer side once however many copies
/// of its row were inserted or deleted. A key whose balance would leave
/// -(2^256-1)..2^256-1 fails alone: its sides are set back with a message
/// naming each row and retried after `balance_queue.retry_backoff`
/// (another session may still be applying the rest of a reorg), then stay
/// `failed` after the chain's max_retry_attempts; the rest applies. Items
/// queued without a delta (update_type `recalculate`, or manual
/// `queue_balance_update` calls) recompute their balance from the
/// attached sources.
///
/// Runs with the extension owner's rights (SECURITY DEFINER), as the
/// triggers do: it reads the attached tables' rows back, which the caller
/// may not be allowed to select.
///
/// Returns one row: `processed_count` (items taken: applied, failed, or
/// set back to retry after a backoff), `error_count` (bad rows found and
/// transfer sides that failed), `avg_processing_time_ms` (batch wall time
/// in milliseconds divided by items processed; 0 when idle).
///
/// Errors: 22023 (invalid_parameter_value) when `p_batch_size` <= 0.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
pub fn process_balance_update_queue(
    p_batch_size: default!(i32, 100),
    p_chain_id: default!(Option<i32>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(processed_count, i32),
        name!(error_count, i32),
        name!(avg_processing_time_ms, AnyNumeric),
    ),
> {
    if p_batch_size <= 0 {
        invalid_parameter(format!("p_batch_size {p_batch_size} must be > 0"));
    }
    let filter = ClaimFilter {
        chain_id: p_chain_id,
        ..Default::default()
    };
    let outcome = Spi::connect_mut(|client| apply_batch(client, p_batch_size, &filter));
    let avg = if outcome.processed > 0 {
        (outcome.elapsed_ms / outcome.processed as f64 * 1000.0).round() / 1000.0
    } else {
        0.0
    };
    let avg = AnyNumeric::try_from(avg).unwrap_or_default();
    TableIterator::once((outcome.processed, outcome.failed, avg))
}

/// Splits the pending id-range item `id` into one transfer-side item per
/// holder side of its rows (bad rows become failed items naming them) and
/// marks it completed with `reason`. The worker does this when applying
/// the item alone raised an error, so that the sides that raise it back
/// off and fail alone while the statement's other transfers apply.
/// Returns the number of items written (0 when its table is locked by a
/// TRUNCATE or DROP: the item stays pending), or `None` when `id` is not a
/// pending id-range item of an attached table.
pub fn split_row_item(client: &mut SpiClient<'_>, id: i64, reason: &str) -> Option<i64> {
    let readable = source_rows::try_lock_row_sources(client);
    // Lock the item (a drain may hold it; once it commits the item is no
    // longer pending and there is nothing to split).
    let relid = spi_ok(
        spi_ok(client.update(
            "SELECT source_table::oid FROM balance_queue.balance_update_queue
              WHERE id = $1 AND status = 'pending' AND source_row_ids IS NOT NULL
                FOR UPDATE",
            Some(1),
            &[id.into()],
        ))
        .first()
        .get_one::<pg_sys::Oid>(),
    )?;
    if !readable.contains(&relid.to_u32()) {
        return Some(0); // its table is being truncated or dropped: later
    }
    let (sources, ids) = row_sources(client, &[(id, relid.to_u32())]);
    if ids.is_empty() {
        return None;
    }
    let sql = format!(
        "WITH {read_back},
         queued AS ({enqueue} RETURNING 1),
         split AS (
             UPDATE balance_queue.balance_update_queue
                SET status = 'completed', processed_at = clock_timestamp(),
                    error_message = format('split into %s transfer-side items after: %s',
                                           (SELECT count(*) FROM queued), $3::text)
              WHERE id = ANY($2) AND status = 'pending'
             RETURNING 1
         )
         SELECT count(*) FROM queued",
        read_back = source_rows::read_back_ctes(&sources),
        enqueue = sources[0].enqueue_validated("read_back_0", 1, sources[0].relid, ""),
    );
    spi_ok(
        spi_ok(client.update(
            &sql,
            Some(1),
            &[vec![id].into(), vec![id].into(), reason.into()],
        ))
        .first()
        .get_one::<i64>(),
    )
}

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
    let (chain, contract, holder) = key;
    let started = Instant::now();
    source_rows::lock_row_sources(client);
    let mut claimed = claim(
        client,
        &format!(
            "SELECT {CLAIM_COLUMNS} FROM balance_queue.balance_update_queue
              WHERE status = 'pending' AND chain_id = $1 AND contract_address = $2
                AND holder_address = $3
              ORDER BY id
              FOR UPDATE"
        ),
        &[
            (*chain).into(),
            contract.as_str().into(),
            holder.as_str().into(),
        ],
    );
    let rows = claim(
        client,
        &format!(
            "SELECT {CLAIM_COLUMNS} FROM balance_queue.balance_update_queue
              WHERE status = 'pending' AND source_row_ids IS NOT NULL
                AND (chain_id = $1 OR chain_id IS NULL)
              ORDER BY id
              FOR UPDATE"
        ),
        &[(*chain).into()],
    );
    claimed.row_items = rows.row_items;
    let mut heads = claimed.heads;
    let (sources, row_ids) = row_sources(client, &claimed.row_items);
    let set_back = apply_delta_items(client, &claimed.delta_ids, &sources, &row_ids, &mut heads);
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

fn merge_heads(into: &mut BTreeMap<i32, i64>, from: &BTreeMap<i32, i64>) {
    for (&chain, &block) in from {
        let head = into.entry(chain).or_insert(block);
        *head = (*head).max(block);
    }
}
