//! The vocabulary every balance statement shares: the key of a balance, the
//! uint256 bound it must stay within, and the side id the ledger counts
//! transfer sides by. One place, so the apply statement, the set-backs,
//! recomputation and reorgs cannot drift apart.

/// (chain id, token contract, holder): the key of a balance.
pub type BalanceKey = (i32, String, String);

/// 2^256-1: the largest magnitude a balance may have.
pub const MAX_U256: &str =
    "115792089237316195423570985008687907853269984665640564039457584007913129639935";

/// The ledger key of a counted transfer side: the primary key of
/// `applied_transfers` and of `unconfirmed_transfer_sides` (sql/schema.sql;
/// a test below holds the two together). The one definition of it. Chain,
/// block, then [`side_id`]: the block first, because an indexer writes
/// blocks in order, so the next batch's sides go to the right edge of the
/// btree and its conflict checks read the same few pages, where a key led
/// by the random side id sent every side to a random leaf of an index that
/// outgrows shared buffers with history (20,000 sides into 20M: 194–274 ms
/// random, 83–88 ms block first; docs/benchmarks.md, "The ledger key in
/// block order"). A reorg's take-back from a block can read a range of
/// it, too. The five columns the side id replaced (tx_hash as text among
/// them) made a primary key three times the size ("A narrow ledger key").
pub const LEDGER_KEY: [&str; 3] = ["chain_id", "block_number", "side_id"];

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

/// What identifies and what counts in a transfer side, under the ledger's
/// column names: which log and side (tx_hash, log_index, is_inbound), then
/// what it counts (token contract, holder, signed amount in wei, block).
/// What [`side_id`] hashes.
pub const SIDE_FACTS: [&str; 7] = [
    "tx_hash",
    "log_index",
    "is_inbound",
    "contract_address",
    "holder_address",
    "delta_wei",
    "block_number",
];

/// A counted transfer side: chain_id, its [`SIDE_FACTS`], then its
/// [`side_id`]: the columns of `unconfirmed_transfer_sides`, and those of
/// `applied_transfers` but its counts. Each column prefixed with `alias.`
/// (none for ""). The side id comes last as it was added in 0.2.0.
pub fn side_columns(alias: &str) -> String {
    let dot = if alias.is_empty() {
        String::new()
    } else {
        format!("{alias}.")
    };
    std::iter::once("chain_id")
        .chain(SIDE_FACTS)
        .chain(std::iter::once("side_id"))
        .map(|c| format!("{dot}{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `a` and `b` (aliases) have the same [`LEDGER_KEY`].
pub fn same_ledger_key(a: &str, b: &str) -> String {
    LEDGER_KEY
        .map(|c| format!("{a}.{c} = {b}.{c}"))
        .join(" AND ")
}

/// A transfer side as a uuid: the md5 of its [`SIDE_FACTS`] (the seven
/// expressions `side` gives for them, in that order). The ledger counts
/// copies per chain and side id: copies of one log count once, and a log
/// that a reorg re-includes with another amount or in another block is
/// another side, so the old one is taken back and the new one added
/// whatever order the drains apply them in. Two distinct sides of one
/// chain share an id with a probability below 10^-18 at 10^10 sides (a
/// 128-bit hash; the birthday bound).
pub fn side_id(side: [&str; 7]) -> String {
    format!("md5(concat_ws('|', {}))::uuid", side.join(", "))
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
            .filter(|line| !line.trim_start().starts_with("--"))
            .filter_map(|line| line.split_whitespace().next())
            .collect();
        assert_eq!(columns.join(", "), side_columns(""));
        assert_eq!(
            same_ledger_key("p", "l"),
            "p.chain_id = l.chain_id AND p.block_number = l.block_number AND p.side_id = l.side_id"
        );
    }

    #[test]
    fn the_upgrade_computes_the_side_ids_the_apply_path_does() {
        // 0.1.0 ledger rows get their side_id in the upgrade script, written
        // out there as SQL inside a quoted statement: it must be this
        // expression, or copies of transfers counted before the upgrade
        // would count again.
        let upgrade = include_str!("../../sql/balance_queue--0.1.0--0.2.0.sql");
        let expression = format!("SET side_id = {}'", side_id(SIDE_FACTS).replace('\'', "''"));
        assert_eq!(upgrade.matches(&expression).count(), 1, "{expression}");
    }
}
