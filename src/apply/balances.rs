//! The vocabulary every balance statement shares: the key of a balance, the
//! uint256 bound it must stay within, its USD value, and the content id the
//! ledger counts transfer sides by. One place, so the apply statement, the
//! set-backs, recomputation and reorgs cannot drift apart.

/// (chain id, token contract, holder): the key of a balance.
pub type BalanceKey = (i32, String, String);

/// 2^256-1: the largest magnitude a balance may have.
pub const MAX_U256: &str =
    "115792089237316195423570985008687907853269984665640564039457584007913129639935";

/// USD value of `balance` wei given token_metadata row alias `m`.
pub fn usd_sql(balance: &str, m: &str) -> String {
    format!(
        "CASE WHEN {m}.price_usd IS NOT NULL AND {m}.decimals IS NOT NULL
              THEN round(({balance}) * {m}.price_usd / power(10::numeric, {m}.decimals), 6) END"
    )
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
