//! Token statistics: holders, negative balances and supply per token,
//! kept incrementally by the statement triggers of sql/token_stats.sql
//! (insert-only delta rows, so concurrent drains never share a row), folded
//! by the worker, read here.

// The TableIterator signature is the SQL result shape; pgrx reads it from
// the signature itself, so it cannot hide behind a type alias.
#![allow(clippy::type_complexity)]

use crate::address::normalize_arg;
use crate::errors::spi_ok;
use pgrx::prelude::*;

/// Statistics of one token: what is folded plus what is not yet. `$1`
/// chain id, `$2` token contract.
const STATS_SQL: &str = "
    WITH d AS (
        SELECT coalesce(sum(holder_count), 0) AS holders,
               coalesce(sum(negative_balance_count), 0) AS negatives,
               coalesce(sum(supply_wei), 0) AS supply
          FROM balance_queue.token_stats_deltas
         WHERE chain_id = $1 AND contract_address = $2
    ), t AS (
        SELECT (coalesce(s.holder_count, 0) + d.holders)::bigint AS holders,
               (coalesce(s.negative_balance_count, 0) + d.negatives)::bigint AS negatives,
               coalesce(s.supply_wei, 0) + d.supply AS supply,
               s.genesis_block
          FROM d LEFT JOIN balance_queue.token_stats s ON s.chain_id = $1 AND s.contract_address = $2
    )
    SELECT t.holders, t.negatives, t.supply,
           CASE WHEN abs(t.supply) <= $3::numeric
                THEN balance_queue.format_token_balance(t.supply, coalesce(m.decimals, 0))
                ELSE t.supply::text END,
           t.genesis_block IS NOT NULL AND t.negatives = 0,
           t.genesis_block, m.symbol, m.decimals
      FROM t
      LEFT JOIN balance_queue.token_metadata m ON m.chain_id = $1 AND m.contract_address = $2";

/// Statistics of token `p_contract_address` on chain `p_chain_id`, exact
/// at the caller's snapshot (folded counts plus the deltas not folded yet).
///
/// Returns one row: `holder_count` (holders with a non-zero balance; the
/// zero address is never one), `negative_balance_count` (holders whose net
/// balance over the indexed range is below zero: the history does not
/// start at the token's deployment), `supply_wei` (the sum of all balances,
/// wei: only mints and burns move it), `supply_formatted` (with the token's
/// decimals from `token_metadata`, wei when unknown), `supply_complete`
/// (true only when `set_token_genesis` recorded that the sources hold the
/// token from its deployment block and no balance is negative; otherwise
/// `supply_wei` is the net of mints and burns over the indexed range),
/// `genesis_block`, `token_symbol`, `token_decimals`. A token never seen
/// has zeros.
///
/// Errors: 22P02 (invalid_text_representation) for a malformed address.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
pub fn get_token_stats(
    p_chain_id: i32,
    p_contract_address: &str,
) -> TableIterator<
    'static,
    (
        name!(holder_count, i64),
        name!(negative_balance_count, i64),
        name!(supply_wei, AnyNumeric),
        name!(supply_formatted, String),
        name!(supply_complete, bool),
        name!(genesis_block, Option<i64>),
        name!(token_symbol, Option<String>),
        name!(token_decimals, Option<i32>),
    ),
> {
    let contract = normalize_arg("p_contract_address", p_contract_address);
    let row = Spi::connect(|client| {
        let rows = spi_ok(client.select(
            STATS_SQL,
            Some(1),
            &[
                p_chain_id.into(),
                contract.as_str().into(),
                crate::apply::MAX_U256.into(),
            ],
        ));
        let row = rows.first();
        (
            spi_ok(row.get::<i64>(1)).unwrap_or(0),
            spi_ok(row.get::<i64>(2)).unwrap_or(0),
            spi_ok(row.get::<AnyNumeric>(3)).unwrap_or_else(|| AnyNumeric::from(0)),
            spi_ok(row.get::<String>(4)).unwrap_or_else(|| "0".into()),
            spi_ok(row.get::<bool>(5)).unwrap_or(false),
            spi_ok(row.get::<i64>(6)),
            spi_ok(row.get::<String>(7)),
            spi_ok(row.get::<i32>(8)),
        )
    });
    TableIterator::once(row)
}

/// Records that the sources hold token `p_contract_address` of chain
/// `p_chain_id` from its deployment block `p_genesis_block` on (the
/// indexer's start block is at or below it), so `get_token_stats` reports
/// its supply as complete; NULL forgets it. Returns the block recorded.
///
/// Errors: 22P02 (invalid_text_representation) for a malformed address;
/// 22023 (invalid_parameter_value) for a negative block.
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
pub fn set_token_genesis(
    p_chain_id: i32,
    p_contract_address: &str,
    p_genesis_block: Option<i64>,
) -> Option<i64> {
    crate::errors::refuse_on_standby("set_token_genesis");
    let contract = normalize_arg("p_contract_address", p_contract_address);
    if p_genesis_block.is_some_and(|b| b < 0) {
        crate::errors::invalid_parameter(format!(
            "p_genesis_block {} must be >= 0",
            p_genesis_block.unwrap_or_default()
        ));
    }
    Spi::connect_mut(|client| {
        spi_ok(client.update(
            "INSERT INTO balance_queue.token_stats AS t (chain_id, contract_address, genesis_block)
             VALUES ($1, $2, $3)
             ON CONFLICT (chain_id, contract_address) DO UPDATE SET genesis_block = EXCLUDED.genesis_block",
            None,
            &[p_chain_id.into(), contract.as_str().into(), p_genesis_block.into()],
        ));
    });
    p_genesis_block
}

/// Folds the committed delta rows into `token_stats`, in one statement (a
/// concurrent fold skips the rows this one deleted). The worker runs it
/// every second; callers may too. Returns the delta rows folded.
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
pub fn fold_token_stats() -> i64 {
    crate::errors::refuse_on_standby("fold_token_stats");
    Spi::get_one::<i64>(
        "WITH d AS (
             DELETE FROM balance_queue.token_stats_deltas RETURNING *
         ), folded AS (
             INSERT INTO balance_queue.token_stats AS t
                 (chain_id, contract_address, holder_count, negative_balance_count, supply_wei)
             SELECT chain_id, contract_address, sum(holder_count), sum(negative_balance_count), sum(supply_wei)
               FROM d GROUP BY 1, 2 ORDER BY 1, 2
             ON CONFLICT (chain_id, contract_address) DO UPDATE
                SET holder_count = t.holder_count + EXCLUDED.holder_count,
                    negative_balance_count = t.negative_balance_count + EXCLUDED.negative_balance_count,
                    supply_wei = t.supply_wei + EXCLUDED.supply_wei,
                    folded_at = now()
         )
         SELECT count(*) FROM d",
    )
    .ok()
    .flatten()
    .unwrap_or(0)
}
