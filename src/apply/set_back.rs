//! Setting back a balance key the apply statement could not apply (its
//! balance would leave the uint256 range): the key's items back off and
//! retry, or fail after the chain's max_retry_attempts, and their copies go
//! back out of the ledger so the retry starts clean.
//!
//! Both statements here bind the same arguments at the same positions
//! ([`key_args`]): `$1` the batch's items of the statement's kind
//! (bigint[]), `$2` chain id, `$3` token contract, `$4` holder, `$5` the
//! chain's max_retry_attempts, `$6` the retry backoff in milliseconds.

use super::balances::{BalanceKey, SIDE_FACTS, ledger_key, same_ledger_key, side_id};
use super::read_back::ReadBack;
use crate::errors::spi_ok;
use crate::sources::mapping::{RowFilter, SourceMapping};
use once_cell::sync::Lazy;
use pgrx::datum::DatumWithOid;
use pgrx::spi::SpiClient;
use std::collections::BTreeSet;

/// The SET list that records one more failed attempt of queue item `q`
/// (an alias): `retry_count` + 1; `failed` (with `processed_at`) once
/// `max_attempts` (a parameter, integer) attempts failed, else pending
/// again after `backoff_ms` (a parameter, milliseconds) doubled per earlier
/// attempt. The one definition of the retry rule.
pub fn failed_attempt_set(q: &str, max_attempts: &str, backoff_ms: &str) -> String {
    format!(
        "retry_count = {q}.retry_count + 1,
         status = CASE WHEN {q}.retry_count + 1 >= {max_attempts} THEN 'failed' ELSE 'pending' END,
         processed_at = CASE WHEN {q}.retry_count + 1 >= {max_attempts} THEN clock_timestamp() END,
         next_attempt_at = now() + make_interval(secs => {backoff_ms} / 1000.0 * power(2, {q}.retry_count))"
    )
}

/// The key's sides, bound as in [`key_args`].
const KEY_SIDES: RowFilter<'static> = RowFilter {
    valid: None,
    chain_id: Some("$2"),
    contract_address: Some("$3"),
    holder_address: Some("$4"),
    from_block: None,
};

/// The error message of a transfer side set back because its key's balance
/// would leave the uint256 range; format() arguments: tx_hash, log_index,
/// attempts, holder, token, chain.
const OUT_OF_RANGE_MESSAGE: &str = "'transfer (tx_hash %s, log_index %s) not applied after %s attempt(s): the balance of holder %s '
     'for token %s on chain %s would leave -(2^256-1)..2^256-1 (a uint256 overflow; ERC721 token '
     'ids summed as amounts do this)'";

/// A CTE `reverted` taking the copies counted in CTE `undo` (the ledger
/// key's columns, change) back out of the ledger, for sides set back so that
/// their retry starts clean.
static REVERT_LEDGER: Lazy<String> = Lazy::new(|| {
    format!(
        "reverted AS (
        UPDATE balance_queue.applied_transfers l
           SET copies = l.copies - undo.change, last_change = 0
          FROM undo
         WHERE {same_key}
        RETURNING 1
    )",
        same_key = same_ledger_key("l", "undo")
    )
});

/// Sets back the batch's transfer-side items (`$1`) of one out-of-range
/// key, naming each row, and takes their copies back out of the ledger so
/// the retry starts clean. The items back off and are retried (another
/// drain may be applying the rest of a reorg out of order, which puts a
/// balance out of range only for a moment); after the chain's
/// max_retry_attempts they stay `failed` (an ERC721 token's ids summed as
/// amounts never come back into range). Returns each item's id and whether
/// it is now failed.
static FAIL_KEY_SQL: Lazy<String> = Lazy::new(|| {
    format!(
        "
    WITH failed AS (
        UPDATE balance_queue.balance_update_queue q
           SET {attempt},
               error_message = format({OUT_OF_RANGE_MESSAGE},
                   q.triggered_by_tx, q.triggered_by_log_index, q.retry_count + 1, q.holder_address,
                   q.contract_address, q.chain_id)
         WHERE q.id = ANY($1) AND q.chain_id = $2 AND q.contract_address = $3 AND q.holder_address = $4
           AND q.delta_wei IS NOT NULL
        RETURNING q.id, q.status, q.chain_id, q.triggered_by_block AS block_number, {side_id} AS side_id,
                  q.source_change
    ), undo AS (
        SELECT {key}, sum(source_change) AS change
          FROM failed GROUP BY {key}
    ), {revert}
    SELECT id, status = 'failed' FROM failed",
        side_id = side_id([
            "q.triggered_by_tx",
            "q.triggered_by_log_index",
            "q.update_type = 'transfer_in'",
            "q.contract_address",
            "q.holder_address",
            "q.delta_wei",
            "q.triggered_by_block"
        ]),
        attempt = failed_attempt_set("q", "$5", "$6"),
        key = ledger_key(""),
        revert = REVERT_LEDGER.as_str(),
    )
});

/// The rows of the batch's `source_rows` items (`$1`) read back for one
/// out-of-range key leave their item: each side becomes a transfer-side
/// item that has had one attempt (pending after the backoff, or failed when
/// max_retry_attempts is 1 or less), and its copies go back out of the
/// ledger. From then on it retries like any set-back item. Returns
/// (failed, spilled) counts.
fn spill_key_sql(sources: &[SourceMapping]) -> String {
    let read_back = ReadBack::new(sources, "$1");
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
                    CASE WHEN $5 <= 1 THEN 'failed' ELSE 'pending' END, 1,
                    CASE WHEN $5 <= 1 THEN clock_timestamp() END,
                    now() + make_interval(secs => $6 / 1000.0),
                    format({OUT_OF_RANGE_MESSAGE}, tx_hash, log_index, 1, holder_address, contract_address, chain_id)
               FROM key_sides
             RETURNING status
         ), undo AS (
             SELECT chain_id, block_number, {side_id} AS side_id, count(*) AS change
               FROM key_sides
              GROUP BY chain_id, tx_hash, log_index, is_inbound, contract_address, holder_address,
                       delta_wei, block_number
         ), {revert}
         SELECT count(*) FILTER (WHERE status = 'failed'), count(*) FROM spilled",
        read_back = read_back.ctes(),
        sides = read_back.sides(&KEY_SIDES),
        side_id = side_id(SIDE_FACTS),
        revert = REVERT_LEDGER.as_str(),
    )
}

/// The arguments both statements bind (see the module doc).
fn key_args<'a>(
    items: &[i64],
    key: &'a BalanceKey,
    max_attempts: i32,
    backoff_ms: f64,
) -> [DatumWithOid<'a>; 6] {
    let (chain_id, contract, holder) = key;
    [
        items.to_vec().into(),
        (*chain_id).into(),
        contract.as_str().into(),
        holder.as_str().into(),
        max_attempts.into(),
        backoff_ms.into(),
    ]
}

/// Items an apply set back (out of range): to retry, or failed for good.
#[derive(Default)]
pub(super) struct SetBack {
    pub ids: BTreeSet<i64>,
    pub failed: i32,
}

/// Sets back each out-of-range key among the transfer-side items `ids` and
/// the `source_rows` items `row_ids` (rows of `sources`), into `set_back`.
pub(super) fn set_back_keys(
    client: &mut SpiClient<'_>,
    keys: &[BalanceKey],
    ids: &[i64],
    sources: &[SourceMapping],
    row_ids: &[i64],
    set_back: &mut SetBack,
) {
    let backoff_ms = f64::from(crate::gucs::RETRY_BACKOFF_MS.get());
    for key in keys {
        let max_attempts = crate::config::effective_config(client, Some(key.0)).max_retry_attempts;
        let args = key_args(ids, key, max_attempts, backoff_ms);
        for row in spi_ok(client.update(FAIL_KEY_SQL.as_str(), None, &args)) {
            set_back.ids.insert(spi_ok(row.get::<i64>(1)).expect("id"));
            if spi_ok(row.get::<bool>(2)).unwrap_or(false) {
                set_back.failed += 1;
            }
        }
        if sources.is_empty() {
            continue;
        }
        let args = key_args(row_ids, key, max_attempts, backoff_ms);
        let spilled = spi_ok(client.update(&spill_key_sql(sources), Some(1), &args));
        set_back.failed += spi_ok(spilled.first().get_one::<i64>()).unwrap_or(0) as i32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_attempt_backs_off_doubling_then_fails_at_the_limit() {
        let set = failed_attempt_set("q", "$5", "$6");
        assert!(set.contains("retry_count = q.retry_count + 1"), "{set}");
        assert!(
            set.contains("WHEN q.retry_count + 1 >= $5 THEN 'failed' ELSE 'pending'"),
            "{set}"
        );
        assert!(
            set.contains("$6 / 1000.0 * power(2, q.retry_count)"),
            "{set}"
        );
        // The set-back statement binds the limit at $5 and the backoff at
        // $6, as key_args does.
        assert!(FAIL_KEY_SQL.contains(&set));
    }
}
