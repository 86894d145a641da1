//! Recalculation of one balance from the attached source tables.

use crate::address::{ZERO_ADDRESS, normalize_arg};
use crate::apply::{self, BalanceKey, MAX_U256, usd_sql};
use crate::attach::mappings_for_chain;
use crate::errors::{invalid_parameter, raise, spi_ok};
use crate::triggers::row_trigger_mappings;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use std::time::Instant;

/// A SELECT of (delta_wei, block_number) per distinct counted side of
/// holder $3 for token $2 on chain $1: from every source of the chain
/// (attached tables and tables wired with the seed's row trigger), each
/// (tx_hash, log_index, side) and content once however many copies exist,
/// as the ledger counts them. Rows still waiting in a pending id-range item
/// are left to it (it adds them when applied). With no
/// source left (all dropped), from the applied-transfer ledger.
fn counted_sides_sql(client: &SpiClient<'_>, chain_id: i32) -> String {
    let mappings = sources_for_chain(client, chain_id);
    if mappings.is_empty() {
        return "SELECT delta_wei, block_number FROM balance_queue.applied_transfers
                 WHERE chain_id = $1 AND contract_address = $2 AND holder_address = $3
                   AND copies > 0"
            .to_string();
    }
    let union = mappings
        .iter()
        .map(|m| m.sides_of_holder(&crate::source_rows::counted_relation(m)))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    format!(
        "SELECT DISTINCT tx_hash, log_index, is_inbound, delta_wei, block_number
           FROM ({union}) sides"
    )
}

/// Every source that can hold transfers of `chain_id`: tables attached with
/// `attach_transfer_table` and tables wired with the seed's row trigger.
pub fn sources_for_chain(
    client: &SpiClient<'_>,
    chain_id: i32,
) -> Vec<crate::source_sql::SourceMapping> {
    let mut mappings = mappings_for_chain(client, chain_id);
    mappings.extend(row_trigger_mappings(client, chain_id));
    mappings
}

/// Recomputes one balance and stores it. Returns the balance in wei as
/// text, or `None` when it lies outside -(2^256-1)..2^256-1 (nothing stored).
pub fn recompute_and_store(
    client: &mut SpiClient<'_>,
    chain_id: i32,
    contract: &str,
    holder: &str,
) -> Option<String> {
    // Lock the balance row first (creating it if absent), waiting for a
    // drain that is changing it: once that drain commits, its rows count
    // and the recomputation below (a later statement, a later snapshot)
    // sees them; a drain that comes later adds on top of what is stored.
    let created = !spi_ok(client.update(
        "INSERT INTO balance_queue.current_token_balances AS b
             (chain_id, contract_address, holder_address, current_balance)
         VALUES ($1, $2, $3, 0)
         ON CONFLICT (chain_id, contract_address, holder_address) DO NOTHING
         RETURNING 1",
        Some(1),
        &[chain_id.into(), contract.into(), holder.into()],
    ))
    .is_empty();
    spi_ok(client.update(
        "SELECT 1 FROM balance_queue.current_token_balances
          WHERE chain_id = $1 AND contract_address = $2 AND holder_address = $3
            FOR UPDATE",
        None,
        &[chain_id.into(), contract.into(), holder.into()],
    ));
    let sides = counted_sides_sql(client, chain_id);
    let sql = format!(
        "WITH truth AS (
             SELECT coalesce(sum(delta_wei), 0) AS balance, max(block_number) AS block_number
               FROM ({sides}) counted
         )
         INSERT INTO balance_queue.current_token_balances AS b
             (chain_id, contract_address, holder_address, current_balance, last_updated_block,
              last_updated_time, token_symbol, token_decimals, balance_usd)
         SELECT $1, $2, $3, t.balance, t.block_number, now(), m.symbol, m.decimals, {usd}
           FROM truth t
           LEFT JOIN balance_queue.token_metadata m ON m.chain_id = $1 AND m.contract_address = $2
          WHERE abs(t.balance) <= {MAX_U256}
         ON CONFLICT (chain_id, contract_address, holder_address) DO UPDATE
            SET current_balance = EXCLUDED.current_balance,
                last_updated_block = EXCLUDED.last_updated_block,
                last_updated_time = EXCLUDED.last_updated_time,
                token_symbol = EXCLUDED.token_symbol,
                token_decimals = EXCLUDED.token_decimals,
                balance_usd = EXCLUDED.balance_usd
         RETURNING current_balance::text",
        usd = usd_sql("t.balance", "m"),
    );
    let stored = spi_ok(client.update(
        &sql,
        Some(1),
        &[chain_id.into(), contract.into(), holder.into()],
    ))
    .next()
    .and_then(|row| spi_ok(row.get::<String>(1)));
    if stored.is_none() && created {
        // Out of range: nothing is stored, not even the placeholder.
        spi_ok(client.update(
            "DELETE FROM balance_queue.current_token_balances
              WHERE chain_id = $1 AND contract_address = $2 AND holder_address = $3",
            None,
            &[chain_id.into(), contract.into(), holder.into()],
        ));
    }
    stored
}

/// Marks recalculation items failed: their recomputed balance is out of range.
pub fn fail_out_of_range(client: &mut SpiClient<'_>, ids: &[i64]) {
    spi_ok(client.update(
        "UPDATE balance_queue.balance_update_queue
            SET status = 'failed', processed_at = clock_timestamp(),
                error_message = format('recalculation not stored: the balance of holder %s for token %s on chain %s '
                                       'computed from the sources lies outside -(2^256-1)..2^256-1',
                                       holder_address, contract_address, chain_id)
          WHERE id = ANY($1)",
        None,
        &[ids.to_vec().into()],
    ));
}

/// Recomputes one balance from the attached source tables, stores it in
/// `current_token_balances` and returns it.
///
/// * `p_chain_id`: EIP-155 chain id.
/// * `p_contract_address`, `p_holder_address`: `0x` + 40 hex digits, any
///   case (checksummed input is normalised to lowercase).
///
/// Counts each transfer (tx_hash, log_index) once across every source
/// attached for the chain, as mints, burns and self-transfers count in
/// ERC20 (EIP-20 Transfer semantics). The sources are the tables attached
/// with `attach_transfer_table` and those wired with the seed's
/// `trigger_queue_balance_update`; with none left, the applied-transfer
/// ledger. Pending queue items of this key, and pending id-range items of
/// the chain's tables (rows queued by `rindexer_id`, whose holders are not
/// known until read), are applied first, waiting for a drain that holds
/// some, so the stored value and the queue stay consistent.
///
/// Returns the balance in wei (NUMERIC, signed).
///
/// Errors: 22P02 (invalid_text_representation) for a malformed address;
/// 22023 (invalid_parameter_value) for the zero address as holder (it is
/// never a holder); 22003 (numeric_value_out_of_range) when the sources
/// sum outside -(2^256-1)..2^256-1.
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
pub fn recalculate_address_balance(
    p_chain_id: i32,
    p_contract_address: &str,
    p_holder_address: &str,
) -> AnyNumeric {
    let contract = normalize_arg("p_contract_address", p_contract_address);
    let holder = normalize_arg("p_holder_address", p_holder_address);
    if holder == ZERO_ADDRESS {
        invalid_parameter("the zero address is never a holder: transfers to it are burns");
    }
    let started = Instant::now();
    let key: BalanceKey = (p_chain_id, contract, holder);
    let balance = Spi::connect_mut(|client| {
        let drained = apply::drain_key(client, &key);
        let balance = recompute_and_store(client, key.0, &key.1, &key.2);
        apply::complete_drained(client, &drained, started.elapsed().as_secs_f64() * 1000.0);
        balance
    });
    match balance {
        Some(text) => AnyNumeric::try_from(text.as_str()).expect("numeric output parses"),
        None => raise(
            PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
            format!(
                "the balance of holder {} for token {} on chain {} computed from the sources lies outside -(2^256-1)..2^256-1",
                key.2, key.1, key.0
            ),
            Some(
                "The token is probably not an ERC20: ERC721 Transfer logs carry token ids, not amounts.",
            ),
        ),
    }
}
