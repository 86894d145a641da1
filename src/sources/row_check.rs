//! Validation of one transfer row, on the ingest hot path: one call per
//! row with plain byte checks, instead of a chain of regular expressions.

use crate::uint256::SignedWei;
use pgrx::prelude::*;

fn is_hex_of_len(text: &str, hex_digits: usize) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == hex_digits + 2
        && bytes[0] == b'0'
        && (bytes[1] == b'x' || bytes[1] == b'X')
        && bytes[2..].iter().all(u8::is_ascii_hexdigit)
}

fn is_small_unsigned(text: &str) -> bool {
    (1..=18).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit())
}

/// True when `text` is the decimal digits of a uint256 (0 <= value < 2^256).
pub fn is_uint256(text: &str) -> bool {
    (1..=78).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_digit())
        && SignedWei::parse(text).is_ok()
}

fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Why a transfer row cannot be counted, or NULL when it can.
///
/// Arguments are the row's columns as text (any column type, via its
/// output function): `p_chain_id` (the resolved chain, NULL when the
/// network is unknown), `p_network`, `p_tx_hash`, `p_log_index`,
/// `p_contract`, `p_from`, `p_to`, `p_value` (wei, decimal), `p_block`.
/// A valid row has a known chain, `0x`+64 hex tx_hash, decimal log_index
/// and block_number, `0x`+40 hex addresses (any case), and a value in
/// 0..2^256-1. The SQL that queues rows (`sources::mapping`) casts only rows for
/// which this returns NULL. Internal; never raises.
#[pg_extern(immutable, parallel_safe)]
#[allow(clippy::too_many_arguments)]
pub fn _transfer_row_error(
    p_chain_id: Option<i32>,
    p_network: Option<&str>,
    p_tx_hash: Option<&str>,
    p_log_index: Option<&str>,
    p_contract: Option<&str>,
    p_from: Option<&str>,
    p_to: Option<&str>,
    p_value: Option<&str>,
    p_block: Option<&str>,
) -> Option<String> {
    let show = |v: Option<&str>| v.map(quoted).unwrap_or_else(|| "NULL".into());
    if p_chain_id.is_none() {
        return Some(format!(
            "unknown network {}: register it with balance_queue.add_chain()",
            show(p_network)
        ));
    }
    if !p_tx_hash.is_some_and(|t| is_hex_of_len(t, 64)) {
        return Some(format!("malformed tx_hash {}", show(p_tx_hash)));
    }
    if !p_log_index.is_some_and(is_small_unsigned) {
        return Some(format!(
            "log_index {} is not a non-negative integer",
            show(p_log_index)
        ));
    }
    if !p_contract.is_some_and(|a| is_hex_of_len(a, 40)) {
        return Some(format!(
            "malformed token contract address {}",
            show(p_contract)
        ));
    }
    match p_from {
        None => return Some("NULL sender (from)".into()),
        Some(a) if !is_hex_of_len(a, 40) => {
            return Some(format!("malformed sender address {}", quoted(a)));
        }
        _ => {}
    }
    match p_to {
        None => return Some("NULL receiver (to)".into()),
        Some(a) if !is_hex_of_len(a, 40) => {
            return Some(format!("malformed receiver address {}", quoted(a)));
        }
        _ => {}
    }
    if !p_value.is_some_and(is_uint256) {
        return Some(format!(
            "value {} is not a non-negative integer below 2^256",
            show(p_value)
        ));
    }
    if !p_block.is_some_and(is_small_unsigned) {
        return Some(format!(
            "block_number {} is not a non-negative integer",
            show(p_block)
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TX: &str = "0xa5f64f2a97119e55d848b26eacdde1586d42ef82a89998026d51c609e7996ea0";
    const A: &str = "0x553e9c493678d8606d6a5ba284643db2110df823";

    fn check(value: &str, from: Option<&str>) -> Option<String> {
        _transfer_row_error(
            Some(1),
            None,
            Some(TX),
            Some("3"),
            Some(A),
            from,
            Some(A),
            Some(value),
            Some("18900005"),
        )
    }

    #[test]
    fn accepts_a_valid_row() {
        assert_eq!(check("2038502754612941152", Some(A)), None);
    }

    #[test]
    fn names_the_reason() {
        assert!(check("1.5", Some(A)).unwrap().contains("value '1.5'"));
        assert!(
            check("-1", Some(A))
                .unwrap()
                .contains("not a non-negative integer")
        );
        assert!(check("1", None).unwrap().contains("NULL sender"));
        assert!(
            check("1", Some("0x12"))
                .unwrap()
                .contains("malformed sender")
        );
        let too_big =
            "115792089237316195423570985008687907853269984665640564039457584007913129639936";
        assert!(check(too_big, Some(A)).unwrap().contains("below 2^256"));
        let unknown =
            _transfer_row_error(None, Some("mars"), None, None, None, None, None, None, None);
        assert!(unknown.unwrap().contains("unknown network 'mars'"));
    }
}
