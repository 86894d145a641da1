//! Recomputation of one balance from the attached source tables, for
//! recalculation items in a batch and for `recalculate_address_balance`.

use super::balances::MAX_U256;
use crate::errors::spi_ok;
use crate::sources::mapping::mappings_for_chain;
use crate::sources::mapping::{RowFilter, SourceMapping};
use crate::sources::row_ids::counted_relation;
use crate::sources::triggers::row_trigger_mappings;
use pgrx::spi::SpiClient;

/// The sides of the key bound as every statement here binds it: chain $1,
/// token $2, holder $3.
const KEY_SIDES: RowFilter<'static> = RowFilter {
    valid: None,
    chain_id: Some("$1"),
    contract_address: Some("$2"),
    holder_address: Some("$3"),
    from_block: None,
};

/// The key's counted sides when no source is left (all dropped): the
/// applied-transfer ledger's.
const LEDGER_SIDES_SQL: &str = "SELECT delta_wei, block_number FROM balance_queue.applied_transfers
                 WHERE chain_id = $1 AND contract_address = $2 AND holder_address = $3
                   AND copies > 0";

/// Creates the key's balance row at 0 if absent; returns a row if it did.
const INSERT_PLACEHOLDER_SQL: &str = "INSERT INTO balance_queue.current_token_balances AS b
             (chain_id, contract_address, holder_address, current_balance)
         VALUES ($1, $2, $3, 0)
         ON CONFLICT (chain_id, contract_address, holder_address) DO NOTHING
         RETURNING 1";

/// Locks the key's balance row.
const LOCK_BALANCE_SQL: &str = "SELECT 1 FROM balance_queue.current_token_balances
          WHERE chain_id = $1 AND contract_address = $2 AND holder_address = $3
            FOR UPDATE";

/// Removes the key's balance row (the placeholder of an out-of-range key).
const DELETE_BALANCE_SQL: &str = "DELETE FROM balance_queue.current_token_balances
              WHERE chain_id = $1 AND contract_address = $2 AND holder_address = $3";

/// Marks the recalculation items `$1` (bigint[]) failed.
const FAIL_OUT_OF_RANGE_SQL: &str = "UPDATE balance_queue.balance_update_queue
            SET status = 'failed', processed_at = clock_timestamp(),
                error_message = format('recalculation not stored: the balance of holder %s for token %s on chain %s '
                                       'computed from the sources lies outside -(2^256-1)..2^256-1',
                                       holder_address, contract_address, chain_id)
          WHERE id = ANY($1)";

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
        return LEDGER_SIDES_SQL.to_string();
    }
    let union = mappings
        .iter()
        .map(|m| m.item_sides(&counted_relation(m), &KEY_SIDES))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    format!(
        "SELECT DISTINCT tx_hash, log_index, is_inbound, delta_wei, block_number
           FROM ({union}) sides"
    )
}

/// Stores the sum of `sides` (a SELECT of delta_wei, block_number over
/// chain $1, token $2, holder $3) as the key's balance, with its token's
/// symbol and decimals, unless it lies outside
/// -(2^256-1)..2^256-1. Returns the balance stored, as text.
fn store_sql(sides: &str) -> String {
    format!(
        "WITH truth AS (
             SELECT coalesce(sum(delta_wei), 0) AS balance, max(block_number) AS block_number
               FROM ({sides}) counted
         )
         INSERT INTO balance_queue.current_token_balances AS b
             (chain_id, contract_address, holder_address, current_balance, last_updated_block,
              last_updated_time, token_symbol, token_decimals)
         SELECT $1, $2, $3, t.balance, t.block_number, now(), m.symbol, m.decimals
           FROM truth t
           LEFT JOIN balance_queue.token_metadata m ON m.chain_id = $1 AND m.contract_address = $2
          WHERE abs(t.balance) <= {MAX_U256}
         ON CONFLICT (chain_id, contract_address, holder_address) DO UPDATE
            SET current_balance = EXCLUDED.current_balance,
                last_updated_block = EXCLUDED.last_updated_block,
                last_updated_time = EXCLUDED.last_updated_time,
                token_symbol = EXCLUDED.token_symbol,
                token_decimals = EXCLUDED.token_decimals
         RETURNING current_balance::text"
    )
}

/// Every source that can hold transfers of `chain_id`: tables attached with
/// `attach_transfer_table` and tables wired with the seed's row trigger.
pub fn sources_for_chain(client: &SpiClient<'_>, chain_id: i32) -> Vec<SourceMapping> {
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
        INSERT_PLACEHOLDER_SQL,
        Some(1),
        &[chain_id.into(), contract.into(), holder.into()],
    ))
    .is_empty();
    spi_ok(client.update(
        LOCK_BALANCE_SQL,
        None,
        &[chain_id.into(), contract.into(), holder.into()],
    ));
    let sql = store_sql(&counted_sides_sql(client, chain_id));
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
            DELETE_BALANCE_SQL,
            None,
            &[chain_id.into(), contract.into(), holder.into()],
        ));
    }
    stored
}

/// Marks recalculation items failed: their recomputed balance is out of range.
pub fn fail_out_of_range(client: &mut SpiClient<'_>, ids: &[i64]) {
    spi_ok(client.update(FAIL_OUT_OF_RANGE_SQL, None, &[ids.to_vec().into()]));
}
