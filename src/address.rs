//! EVM addresses: 20 bytes as `0x` + 40 hex digits, stored lowercase.

use crate::errors::raise;
use pgrx::prelude::*;

/// The zero address: a transfer from it is a mint, to it a burn. It is never a holder.
pub const ZERO_ADDRESS: &str = "0x0000000000000000000000000000000000000000";

/// Returns the address lowercased (checksummed EIP-55 input is accepted), or
/// `None` when it is not `0x` followed by exactly 40 hex digits.
pub fn normalize(address: &str) -> Option<String> {
    let trimmed = address.trim();
    let hex = trimmed
        .strip_prefix("0x")
        .or_else(|| trimmed.strip_prefix("0X"))?;
    (hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("0x{}", hex.to_ascii_lowercase()))
}

/// Normalises a function argument, raising 22P02 (invalid_text_representation)
/// with the argument's name when it is not an address.
#[track_caller]
pub fn normalize_arg(argument: &str, address: &str) -> String {
    normalize(address).unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION,
            format!("{argument} {address:?} is not an EVM address"),
            Some("An address is 0x followed by 40 hex digits, e.g. 0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48."),
        )
    })
}

/// [`normalize_arg`] for the extension's SQL functions (sql/prices.sql,
/// sql/collateral.sql, sql/history.sql): the address lowercased, or 22P02
/// naming `p_argument`. Internal (`_`), not an interface.
#[pg_extern(immutable, strict, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
pub fn _address_arg(p_address: &str, p_argument: &str) -> String {
    normalize_arg(p_argument, p_address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_checksummed_addresses() {
        assert_eq!(
            normalize("0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48").as_deref(),
            Some("0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48")
        );
    }

    #[test]
    fn rejects_malformed_addresses() {
        assert_eq!(normalize("0x123"), None);
        assert_eq!(normalize("a0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"), None);
        assert_eq!(
            normalize("0xg0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"),
            None
        );
    }
}
