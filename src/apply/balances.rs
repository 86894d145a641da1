//! The vocabulary every balance statement shares: the key of a balance, the
//! uint256 bound it must stay within, and the content id the
//! ledger counts transfer sides by. One place, so the apply statement, the
//! set-backs, recomputation and reorgs cannot drift apart.

/// (chain id, token contract, holder): the key of a balance.
pub type BalanceKey = (i32, String, String);

/// 2^256-1: the largest magnitude a balance may have.
pub const MAX_U256: &str =
    "115792089237316195423570985008687907853269984665640564039457584007913129639935";

/// The ledger key of a counted transfer side: the primary key of
/// `applied_transfers` and of `unconfirmed_transfer_sides` (sql/schema.sql;
/// a test below holds the two together). The one definition of it.
pub const LEDGER_KEY: [&str; 5] = [
    "chain_id",
    "tx_hash",
    "log_index",
    "is_inbound",
    "content_id",
];

/// [`LEDGER_KEY`] as a column list, each column prefixed with `alias.`
/// (none for "").
pub fn ledger_key(alias: &str) -> String {
    let dot = if alias.is_empty() {
        String::new()
    } else {
        format!("{alias}.")
    };
    LEDGER_KEY.map(|c| format!("{dot}{c}")).join(", ")
}

/// A counted transfer side: its [`LEDGER_KEY`], then what it counts (token
/// contract, holder, signed amount in wei, block): the columns of
/// `unconfirmed_transfer_sides`, and the first of `applied_transfers`. Each
/// column prefixed with `alias.` (none for "").
pub fn side_columns(alias: &str) -> String {
    let dot = if alias.is_empty() {
        String::new()
    } else {
        format!("{alias}.")
    };
    let facts = [
        "contract_address",
        "holder_address",
        "delta_wei",
        "block_number",
    ]
    .map(|c| format!("{dot}{c}"));
    format!("{}, {}", ledger_key(alias), facts.join(", "))
}

/// `a` and `b` (aliases) have the same [`LEDGER_KEY`].
pub fn same_ledger_key(a: &str, b: &str) -> String {
    LEDGER_KEY
        .map(|c| format!("{a}.{c} = {b}.{c}"))
        .join(" AND ")
}

/// The content of a transfer side (token, holder, signed amount, block) as
/// a uuid. The ledger counts copies per (chain, tx_hash, log_index, side,
/// content): copies of one log count once, and a log that a reorg
/// re-includes with another amount or in another block is another content,
/// so the old one is taken back and the new one added whatever order the
/// drains apply them in.
pub fn content_id(contract: &str, holder: &str, delta: &str, block: &str) -> String {
    format!("md5(concat_ws('|', {contract}, {holder}, {delta}, {block}))::uuid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_key_is_the_primary_key_of_the_ledger_and_the_window() {
        let schema = include_str!("../../sql/schema.sql");
        for table in ["applied_transfers", "unconfirmed_transfer_sides"] {
            let start = schema
                .find(&format!("CREATE TABLE balance_queue.{table} ("))
                .expect(table);
            let definition = &schema[start..start + schema[start..].find(");").unwrap()];
            assert!(
                definition.contains(&format!("PRIMARY KEY ({})", ledger_key(""))),
                "{table}: {definition}"
            );
        }
        // unconfirmed_transfer_sides holds exactly a counted side, in order.
        let start = schema
            .find("CREATE TABLE balance_queue.unconfirmed_transfer_sides (")
            .unwrap();
        let columns: Vec<&str> = schema
            [start..start + schema[start..].find("PRIMARY KEY").unwrap()]
            .lines()
            .skip(1)
            .filter_map(|line| line.split_whitespace().next())
            .collect();
        assert_eq!(columns.join(", "), side_columns(""));
        assert_eq!(
            same_ledger_key("p", "l"),
            "p.chain_id = l.chain_id AND p.tx_hash = l.tx_hash AND p.log_index = l.log_index \
             AND p.is_inbound = l.is_inbound AND p.content_id = l.content_id"
        );
    }
}
