//! The change feed's announcement: one NOTIFY per transaction of the apply
//! path that changed balances, sent by Postgres when (and only if) the
//! transaction commits. The keys come from what the statement triggers of
//! sql/change_feed.sql recorded for this transaction, so every writer of
//! the batch (ledger apply, set-back, recalculation) is announced at once.

use crate::errors::spi_ok;
use once_cell::sync::Lazy;
use pgrx::spi::SpiClient;

/// The distinct keys recorded in the `balance_changes` rows `c` that match
/// `condition`: the one reading of the feed's three parallel arrays, for
/// the announcement here and the cursor (src/change_feed.rs). The
/// several-array `unnest` is FROM-clause syntax, not a function, so it
/// cannot be schema-qualified.
pub fn changed_keys_sql(condition: &str) -> String {
    format!(
        "SELECT DISTINCT u.chain_id, u.contract_address, u.holder_address
           FROM balance_queue.balance_changes c
          CROSS JOIN LATERAL unnest(c.chain_ids, c.contract_addresses, c.holder_addresses)
                             AS u(chain_id, contract_address, holder_address)
          WHERE {condition}"
    )
}

/// Most tokens and keys a payload names; beyond them it carries counts only
/// (a consumer then reads the keys with `balance_changes_since`). 30 keys
/// of ~95 bytes, 30 tokens of ~50 and every chain stay under 6,000 bytes,
/// well below NOTIFY's 8,000-byte payload limit.
pub const PAYLOAD_MAX_KEYS: i64 = 30;

/// Version 1 of the payload, built from this transaction's recorded changes:
/// `{"v": 1, "txid": "<transaction id>", "keys": <distinct keys>,
///   "chains": [chain ids], "token_count": <distinct tokens>,
///   "tokens": [[chain id, token contract], ...] or null when more than
///   PAYLOAD_MAX_KEYS, "changes": [[chain id, token contract, holder], ...]
///   or null when more than PAYLOAD_MAX_KEYS}`. `$1` is the channel.
static ANNOUNCE_SQL: Lazy<String> = Lazy::new(|| {
    format!(
        "WITH recorded AS (
        SELECT c.part, c.chain_ids, c.contract_addresses, c.holder_addresses
          FROM balance_queue.balance_changes c
         WHERE {this_transaction}
    ), keys AS ({keys}
    ), tokens AS (
        SELECT DISTINCT u.chain_id, u.contract_address
          FROM recorded c
         CROSS JOIN LATERAL unnest(c.chain_ids, c.contract_addresses) AS u(chain_id, contract_address)
    ), counts AS (
        -- One statement's rows name each key once (a statement writes a
        -- balance once; each statement has one row of part 0): their
        -- lengths sum to the count, and the keys (a bulk load's are every
        -- balance of a chain) are deduplicated only when listed or when
        -- several statements recorded them.
        SELECT CASE WHEN (SELECT count(*) FROM recorded WHERE part = 0) = 1
                    THEN (SELECT sum(cardinality(chain_ids)) FROM recorded)
                    ELSE (SELECT count(*) FROM keys) END AS keys,
               (SELECT count(*) FROM tokens) AS tokens
    ), payload AS (
        SELECT pg_catalog.json_build_object(
                   'v', 1,
                   'txid', pg_catalog.pg_current_xact_id_if_assigned()::text,
                   'keys', n.keys,
                   'chains', (SELECT pg_catalog.json_agg(DISTINCT chain_id ORDER BY chain_id) FROM tokens),
                   'token_count', n.tokens,
                   'tokens', CASE WHEN n.tokens <= $2 THEN
                       (SELECT pg_catalog.json_agg(pg_catalog.json_build_array(chain_id, contract_address)
                                                   ORDER BY chain_id, contract_address) FROM tokens) END,
                   'changes', CASE WHEN n.keys <= $2 THEN
                       (SELECT pg_catalog.json_agg(pg_catalog.json_build_array(chain_id, contract_address, holder_address)
                                                   ORDER BY chain_id, contract_address, holder_address) FROM keys) END
               )::text AS body
          FROM counts n
         WHERE n.keys > 0
    )
    SELECT pg_catalog.pg_notify($1, body) FROM payload",
        this_transaction = THIS_TRANSACTION,
        keys = changed_keys_sql(THIS_TRANSACTION)
    )
});

/// The `balance_changes` rows `c` of the current transaction.
const THIS_TRANSACTION: &str = "c.txid = pg_catalog.pg_current_xact_id_if_assigned()";

/// Queues this transaction's NOTIFY on `balance_queue.change_channel` when
/// it changed balances and the feed is on; Postgres delivers it after
/// commit, and drops it on rollback. Call once, at the end of the
/// transaction's work: a second call would announce the same keys again.
pub fn announce_changes(client: &mut SpiClient<'_>) {
    let Some(channel) = crate::gucs::change_channel() else {
        return;
    };
    spi_ok(client.update(
        ANNOUNCE_SQL.as_str(),
        None,
        &[channel.into(), PAYLOAD_MAX_KEYS.into()],
    ));
}
