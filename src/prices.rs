//! USD values: the SQL expression every reader uses. Prices themselves
//! (manual, Chainlink feeds followed from rindexer tables, the stable
//! default) are kept by sql/prices.sql in one `token_metadata` row per
//! token, and USD values are computed when read, so a price change writes
//! one row whatever the number of holders.

/// The USD value of `balance` wei with the token's `token_metadata` row
/// aliased `m`, rounded to 6 decimals for display (collateral values use
/// `balance_queue.token_value_usd` unrounded). NULL when the token has no
/// price or no decimals.
pub fn usd_sql(balance: &str, m: &str) -> String {
    format!("round(balance_queue.token_value_usd({balance}, {m}.decimals, {m}.price_usd), 6)")
}
