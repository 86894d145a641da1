//! `recalculate_address_balance`: repairs one balance from the attached
//! source tables, after draining the key's pending items through the apply
//! path.

use crate::address::{ZERO_ADDRESS, normalize_arg};
use crate::apply::{self, BalanceKey};
use crate::errors::{invalid_parameter, raise};
use pgrx::prelude::*;
use std::time::Instant;

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
/// sum outside -(2^256-1)..2^256-1; 55000 (object_not_in_prerequisite_state)
/// while a block of the chain waits for a recheck of its canonical hash
/// (docs/orphans.md; the worker rechecks within a second).
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
pub fn recalculate_address_balance(
    p_chain_id: i32,
    p_contract_address: &str,
    p_holder_address: &str,
) -> AnyNumeric {
    crate::errors::refuse_on_standby("recalculate_address_balance");
    let contract = normalize_arg("p_contract_address", p_contract_address);
    let holder = normalize_arg("p_holder_address", p_holder_address);
    if holder == ZERO_ADDRESS {
        invalid_parameter("the zero address is never a holder: transfers to it are burns");
    }
    let started = Instant::now();
    let key: BalanceKey = (p_chain_id, contract, holder);
    let balance = Spi::connect_mut(|client| {
        // The recomputation below judges rows by the canonical hashes of
        // now; while a block of the chain waits for its recheck the ledger
        // still judges them by the old ones, and the recheck would take back
        // from this balance what it no longer holds. The worker rechecks
        // within a second.
        if crate::repair::recheck::rechecks_queued(client, Some(key.0)) {
            raise(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "blocks of chain {} wait for a recheck of their canonical hash",
                    key.0
                ),
                Some(
                    "Retry in a second (the worker rechecks them), or call balance_queue.recheck_block_hashes() first.",
                ),
            );
        }
        let drained = apply::drain_key(client, &key);
        let balance = apply::recompute_and_store(client, key.0, &key.1, &key.2);
        apply::complete_drained(client, &drained, started.elapsed().as_secs_f64() * 1000.0);
        apply::announce_changes(client);
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
