//! Reading balances: one holder, a holder's portfolio, a token's top holders,
//! and the seed's manual enqueue call.

// The TableIterator signatures are the SQL result shapes; pgrx reads them
// from the signature itself, so they cannot hide behind type aliases.
#![allow(clippy::type_complexity)]

use crate::address::{ZERO_ADDRESS, normalize_arg};
use crate::errors::{invalid_parameter, spi_ok};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

/// The formatted balance of balance row alias `b`, with the token's
/// decimals; unknown decimals show wei.
fn formatted(b: &str) -> String {
    format!(
        "balance_queue.format_token_balance({b}.current_balance, coalesce({b}.token_decimals, 0))"
    )
}

/// The current balance of one holder of one token on one chain.
///
/// * `p_chain_id`: EIP-155 chain id; `p_contract_address`,
///   `p_holder_address`: `0x` + 40 hex digits, any case.
///
/// Returns one row, the plan's six columns first: `balance` in wei (signed
/// NUMERIC; 0 for a holder never seen), `balance_formatted` (whole tokens
/// with the token's decimals from `token_metadata`, or wei when they are
/// unknown), `balance_usd` (USD, NULL without a price), `token_symbol`,
/// `last_updated_block` and `last_updated_time` (NULL for a holder never
/// seen); then `token_decimals`, `confirmed_balance` (wei from transfers at or below the chain's head
/// block minus its confirmation depth: the part no reorg shallower than the
/// depth can move) and `pending_delta` (wei from the blocks above it);
/// `confirmed_balance + pending_delta = current_balance`.
///
/// Errors: 22P02 (invalid_text_representation) for a malformed address.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
pub fn get_current_balance(
    p_chain_id: i32,
    p_contract_address: &str,
    p_holder_address: &str,
) -> TableIterator<
    'static,
    (
        name!(balance, AnyNumeric),
        name!(balance_formatted, String),
        name!(balance_usd, Option<AnyNumeric>),
        name!(token_symbol, Option<String>),
        name!(last_updated_block, Option<i64>),
        name!(last_updated_time, Option<TimestampWithTimeZone>),
        name!(token_decimals, Option<i32>),
        name!(confirmed_balance, AnyNumeric),
        name!(pending_delta, AnyNumeric),
    ),
> {
    let contract = normalize_arg("p_contract_address", p_contract_address);
    let holder = normalize_arg("p_holder_address", p_holder_address);
    let row = Spi::connect(|client| {
        let rows = spi_ok(client.select(
            &format!("SELECT coalesce(b.current_balance, 0),
                    balance_queue.format_token_balance(coalesce(b.current_balance, 0),
                                                       coalesce(b.token_decimals, m.decimals, 0)),
                    {usd}, coalesce(b.token_symbol, m.symbol),
                    b.last_updated_block, b.last_updated_time, coalesce(b.token_decimals, m.decimals),
                    coalesce(b.current_balance, 0) - p.pending_delta, p.pending_delta
               FROM (SELECT coalesce(sum(s.delta_wei), 0) AS pending_delta
                       FROM balance_queue.unconfirmed_transfer_sides s
                       JOIN balance_queue.chain_registry r USING (chain_id)
                      WHERE s.chain_id = $1 AND s.contract_address = $2 AND s.holder_address = $3
                        AND balance_queue.is_unconfirmed(
                                s.block_number, balance_queue.confirmed_through(r.head_block, r.confirmation_depth))) AS p
               LEFT JOIN balance_queue.current_token_balances b
                 ON b.chain_id = $1 AND b.contract_address = $2 AND b.holder_address = $3
               LEFT JOIN balance_queue.token_metadata m
                 ON m.chain_id = $1 AND m.contract_address = $2",
                usd = crate::prices::usd_sql("coalesce(b.current_balance, 0)", "m")),
            Some(1),
            &[
                p_chain_id.into(),
                contract.as_str().into(),
                holder.as_str().into(),
            ],
        ));
        let row = rows.first();
        (
            spi_ok(row.get::<AnyNumeric>(1)).unwrap_or_default(),
            spi_ok(row.get::<String>(2)).unwrap_or_default(),
            spi_ok(row.get::<AnyNumeric>(3)),
            spi_ok(row.get::<String>(4)),
            spi_ok(row.get::<i64>(5)),
            spi_ok(row.get::<TimestampWithTimeZone>(6)),
            spi_ok(row.get::<i32>(7)),
            spi_ok(row.get::<AnyNumeric>(8)).unwrap_or_default(),
            spi_ok(row.get::<AnyNumeric>(9)).unwrap_or_default(),
        )
    });
    TableIterator::once(row)
}

/// Every token a holder holds, on every chain, largest USD value first.
///
/// * `p_holder_address`: `0x` + 40 hex digits, any case.
/// * `p_min_balance_usd`: the smallest `balance_usd` to include (default
///   1.00 USD); 0 or less includes every non-zero balance, priced or not.
///
/// Returns rows of the plan's columns: `chain_id`, `chain_name` (the
/// chain's rindexer network name from `chain_registry`, e.g. `ethereum`, as
/// in the plan), `contract_address`, `token_symbol`, `balance` (wei,
/// signed: negative balances are listed too), `balance_formatted`,
/// `balance_usd`, `last_updated_time`; then `last_updated_block`.
///
/// Errors: 22P02 (invalid_text_representation) for a malformed address.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
pub fn get_address_portfolio(
    p_holder_address: &str,
    p_min_balance_usd: default!(AnyNumeric, 1.00),
) -> TableIterator<
    'static,
    (
        name!(chain_id, i32),
        name!(chain_name, Option<String>),
        name!(contract_address, String),
        name!(token_symbol, Option<String>),
        name!(balance, AnyNumeric),
        name!(balance_formatted, String),
        name!(balance_usd, Option<AnyNumeric>),
        name!(last_updated_time, TimestampWithTimeZone),
        name!(last_updated_block, Option<i64>),
    ),
> {
    let holder = normalize_arg("p_holder_address", p_holder_address);
    let rows = Spi::connect(|client| {
        spi_ok(client.select(
            &format!(
                "SELECT p.chain_id, c.network_name, p.contract_address, p.token_symbol,
                        p.current_balance, {formatted_p}, p.balance_usd, p.last_updated_time,
                        p.last_updated_block
                   FROM (SELECT b.chain_id, b.contract_address, b.token_symbol, b.current_balance,
                                b.token_decimals, b.last_updated_time, b.last_updated_block,
                                {usd} AS balance_usd
                           FROM balance_queue.current_token_balances b
                           LEFT JOIN balance_queue.token_metadata m USING (chain_id, contract_address)
                          WHERE b.holder_address = $1 AND b.current_balance <> 0) p
                   LEFT JOIN balance_queue.chain_registry c USING (chain_id)
                  WHERE $2 <= 0 OR p.balance_usd >= $2
                  ORDER BY p.balance_usd DESC NULLS LAST, p.chain_id, p.contract_address",
                usd = crate::prices::usd_sql("b.current_balance", "m"),
                formatted_p = formatted("p")
            ),
            None,
            &[holder.as_str().into(), p_min_balance_usd.into()],
        ))
        .map(|row| {
            (
                spi_ok(row.get::<i32>(1)).unwrap_or_default(),
                spi_ok(row.get::<String>(2)),
                spi_ok(row.get::<String>(3)).unwrap_or_default(),
                spi_ok(row.get::<String>(4)),
                spi_ok(row.get::<AnyNumeric>(5)).unwrap_or_default(),
                spi_ok(row.get::<String>(6)).unwrap_or_default(),
                spi_ok(row.get::<AnyNumeric>(7)),
                spi_ok(row.get::<TimestampWithTimeZone>(8)).expect("last_updated_time is NOT NULL"),
                spi_ok(row.get::<i64>(9)),
            )
        })
        .collect::<Vec<_>>()
    });
    TableIterator::new(rows)
}

/// The largest holders of one token on one chain, by balance.
///
/// * `p_chain_id`: EIP-155 chain id; `p_contract_address`: the token.
/// * `p_limit`: how many holders (default 100, > 0).
///
/// Returns rows of `rank` (1 = largest; equal balances by holder address),
/// `holder_address`, `current_balance` (wei), `balance_formatted`,
/// `balance_usd`, `last_updated_block`. A token with a board
/// (`token_leaderboard`, see sql/leaderboard.sql) holding at least
/// `p_limit` keys is answered from it (cost grows with `p_limit`, not
/// holders); any other token from its balances (a token gets a board once it
/// has about 5,000 holders, so this reads a few thousand rows at most).
///
/// Errors: 22P02 (invalid_text_representation) for a malformed address;
/// 22023 (invalid_parameter_value) when `p_limit` <= 0.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
pub fn get_top_holders(
    p_chain_id: i32,
    p_contract_address: &str,
    p_limit: default!(i32, 100),
) -> TableIterator<
    'static,
    (
        name!(rank, i64),
        name!(holder_address, String),
        name!(current_balance, AnyNumeric),
        name!(balance_formatted, String),
        name!(balance_usd, Option<AnyNumeric>),
        name!(last_updated_block, Option<i64>),
    ),
> {
    if p_limit <= 0 {
        invalid_parameter(format!("p_limit {p_limit} must be > 0"));
    }
    let contract = normalize_arg("p_contract_address", p_contract_address);
    let rows = Spi::connect(|client| {
        // Two statements rather than one with both branches: a branch that
        // a one-time filter skips is still planned, and the planner makes
        // the scan of a 1,000,000-holder token a parallel query whose
        // workers start (about 10 ms) even when it never runs.
        let board_full = spi_ok(
            spi_ok(client.select(
                "SELECT count(*) = $3 FROM (SELECT 1 FROM balance_queue.token_leaderboard t
                                             WHERE t.chain_id = $1 AND t.contract_address = $2
                                             LIMIT $3) b",
                Some(1),
                &[
                    p_chain_id.into(),
                    contract.as_str().into(),
                    i64::from(p_limit).into(),
                ],
            ))
            .first()
            .get_one::<bool>(),
        )
        .unwrap_or(false);
        // A full board holds the top p_limit: all are at or above its cutoff.
        let chosen = if board_full {
            "SELECT t.holder_address FROM balance_queue.token_leaderboard t
              WHERE t.chain_id = $1 AND t.contract_address = $2
              ORDER BY t.balance DESC, t.holder_address
              LIMIT $3"
        } else {
            "SELECT s.holder_address FROM balance_queue.current_token_balances s
              WHERE s.chain_id = $1 AND s.contract_address = $2
              ORDER BY s.current_balance DESC, s.holder_address
              LIMIT $3"
        };
        spi_ok(client.select(
            &format!(
                // The token's price and decimals read once, not once per holder.
                "WITH chosen AS ({chosen}),
                      m AS MATERIALIZED (SELECT t.price_usd, t.decimals FROM balance_queue.token_metadata t
                                          WHERE t.chain_id = $1 AND t.contract_address = $2)
                 SELECT row_number() OVER (ORDER BY b.current_balance DESC, b.holder_address),
                        b.holder_address, b.current_balance, {formatted_b}, {usd},
                        b.last_updated_block
                   FROM chosen c
                   JOIN balance_queue.current_token_balances b
                     ON b.chain_id = $1 AND b.contract_address = $2 AND b.holder_address = c.holder_address
                   LEFT JOIN m ON true
                  ORDER BY 1",
                usd = crate::prices::usd_sql("b.current_balance", "m"),
                formatted_b = formatted("b")
            ),
            None,
            &[p_chain_id.into(), contract.as_str().into(), p_limit.into()],
        ))
        .map(|row| {
            (
                spi_ok(row.get::<i64>(1)).unwrap_or_default(),
                spi_ok(row.get::<String>(2)).unwrap_or_default(),
                spi_ok(row.get::<AnyNumeric>(3)).unwrap_or_default(),
                spi_ok(row.get::<String>(4)).unwrap_or_default(),
                spi_ok(row.get::<AnyNumeric>(5)),
                spi_ok(row.get::<i64>(6)),
            )
        })
        .collect::<Vec<_>>()
    });
    TableIterator::new(rows)
}

/// Queues a recalculation of one balance by hand (the seed plan's call).
///
/// * `p_chain_id`: EIP-155 chain id; `p_contract_address`,
///   `p_holder_address`: `0x` + 40 hex digits, any case.
/// * `p_update_type`: `transfer_in`, `transfer_out` or `recalculate`;
///   recorded as given. A hand-queued item carries no amount, so whatever
///   its type the drain recomputes the balance from the attached sources.
/// * `p_tx_hash`, `p_block_number`: provenance, recorded as given.
/// * `p_priority`: lower is drained first (default 5).
///
/// Returns the new item's id.
///
/// Errors: 22P02 (invalid_text_representation) for a malformed address;
/// 22023 (invalid_parameter_value) for another update type or the zero
/// address as holder.
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
pub fn queue_balance_update(
    p_chain_id: i32,
    p_contract_address: &str,
    p_holder_address: &str,
    p_update_type: &str,
    p_tx_hash: default!(Option<&str>, "NULL"),
    p_block_number: default!(Option<i64>, "NULL"),
    p_priority: default!(i32, 5),
) -> i64 {
    crate::errors::refuse_on_standby("queue_balance_update");
    let contract = normalize_arg("p_contract_address", p_contract_address);
    let holder = normalize_arg("p_holder_address", p_holder_address);
    if !["transfer_in", "transfer_out", "recalculate"].contains(&p_update_type) {
        invalid_parameter(format!(
            "p_update_type {p_update_type:?} must be transfer_in, transfer_out or recalculate"
        ));
    }
    if holder == ZERO_ADDRESS {
        invalid_parameter("the zero address is never a holder: transfers to it are burns");
    }
    Spi::connect_mut(|client| {
        let rows = spi_ok(client.update(
            "INSERT INTO balance_queue.balance_update_queue
                 (chain_id, contract_address, holder_address, update_type, triggered_by_tx,
                  triggered_by_block, priority)
             VALUES ($1, $2, $3, $4, lower($5), $6, $7)
             RETURNING id",
            Some(1),
            &[
                p_chain_id.into(),
                contract.as_str().into(),
                holder.as_str().into(),
                p_update_type.into(),
                p_tx_hash.into(),
                p_block_number.into(),
                p_priority.into(),
            ],
        ));
        spi_ok(rows.first().get_one::<i64>()).expect("RETURNING id")
    })
}
