//! `format_token_balance`: exact human-readable token amounts.

use crate::errors::{invalid_parameter, raise};
use crate::uint256::{AmountError, SignedWei};
use pgrx::prelude::*;

/// Largest `decimals` accepted: 2^256-1 has 78 digits.
pub const MAX_DECIMALS: i32 = 77;

/// Formats a balance in wei as whole tokens with `p_decimals` decimals.
///
/// * `p_balance`: an integer amount in wei (the token's smallest unit) in
///   -(2^256-1)..2^256-1; a numeric with an all-zero fraction (`12.000`) is
///   accepted as the integer it is.
/// * `p_decimals`: the token's `decimals()`, 0 to 77.
///
/// Returns the exact decimal string: no floats, no rounding, trailing
/// fractional zeros trimmed, sign kept: `(1234500, 6)` gives `1.2345`,
/// `(1, 18)` gives `0.000000000000000001`, `(0, 18)` gives `0`.
///
/// Errors: 22023 (invalid_parameter_value) when `p_balance` is not an integer
/// or is NaN/infinite, or `p_decimals` is outside 0..77; 22003
/// (numeric_value_out_of_range) when `|p_balance|` exceeds 2^256-1.
#[pg_extern(immutable, strict, parallel_safe)]
pub fn format_token_balance(p_balance: AnyNumeric, p_decimals: i32) -> String {
    if !(0..=MAX_DECIMALS).contains(&p_decimals) {
        invalid_parameter(format!(
            "p_decimals {p_decimals} is outside 0..{MAX_DECIMALS}"
        ));
    }
    match SignedWei::parse(&p_balance.to_string()) {
        Ok(amount) => amount.format_units(p_decimals as usize),
        Err(e @ AmountError::NotInteger(_)) => invalid_parameter(format!("p_balance: {e}")),
        Err(e @ AmountError::OutOfRange(_)) => raise(
            PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
            format!("p_balance: {e}"),
            Some("ERC20 balances are uint256; a sum of token ids (ERC721) is not a balance."),
        ),
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    const MAX_U256: &str =
        "115792089237316195423570985008687907853269984665640564039457584007913129639935";

    fn format_sql(balance: &str, decimals: i32) -> String {
        Spi::get_one::<String>(&format!(
            "SELECT balance_queue.format_token_balance('{balance}'::numeric, {decimals})"
        ))
        .expect("SPI")
        .expect("strict function returned NULL for non-NULL input")
    }

    #[pg_test]
    fn formats_table_of_cases() {
        let cases: &[(&str, i32, &str)] = &[
            ("1234500", 6, "1.2345"),
            ("1", 18, "0.000000000000000001"),
            ("0", 18, "0"),
            ("0", 0, "0"),
            ("-1234500", 6, "-1.2345"),
            ("1000000", 6, "1"),
            ("1000000000000000000", 18, "1"),
            ("123", 0, "123"),
            ("-1", 0, "-1"),
            ("100", 2, "1"),
            ("101", 2, "1.01"),
            ("10.000", 1, "1"),
            ("-0", 18, "0"),
            (MAX_U256, 0, MAX_U256),
            (
                MAX_U256,
                18,
                "115792089237316195423570985008687907853269984665640564039457.584007913129639935",
            ),
            (
                MAX_U256,
                77,
                "1.15792089237316195423570985008687907853269984665640564039457584007913129639935",
            ),
            (
                &format!("-{MAX_U256}"),
                77,
                "-1.15792089237316195423570985008687907853269984665640564039457584007913129639935",
            ),
            (
                "1",
                77,
                "0.00000000000000000000000000000000000000000000000000000000000000000000000000001",
            ),
            ("5", 1, "0.5"),
        ];
        for (balance, decimals, expected) in cases {
            assert_eq!(
                &format_sql(balance, *decimals),
                expected,
                "({balance}, {decimals})"
            );
        }
    }

    #[pg_test]
    fn strict_on_null() {
        let formatted =
            Spi::get_one::<String>("SELECT balance_queue.format_token_balance(NULL, 6)").unwrap();
        assert_eq!(formatted, None);
    }

    fn sqlstate_of(sql: &str) -> String {
        // A PL/pgSQL block reports the SQLSTATE of the error it catches.
        Spi::get_one::<String>(&format!("SELECT balance_queue._test_sqlstate($q${sql}$q$)"))
            .unwrap()
            .unwrap()
    }

    #[pg_test]
    fn rejects_bad_arguments_with_sqlstate() {
        Spi::run(
            "CREATE FUNCTION balance_queue._test_sqlstate(q text) RETURNS text LANGUAGE plpgsql AS $$
             BEGIN EXECUTE q; RETURN 'ok'; EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE; END $$",
        )
        .unwrap();
        let two_pow_256 =
            "115792089237316195423570985008687907853269984665640564039457584007913129639936";
        let cases: &[(String, &str)] = &[
            (
                format!("SELECT balance_queue.format_token_balance({two_pow_256}, 0)"),
                "22003",
            ),
            (
                format!("SELECT balance_queue.format_token_balance(-{two_pow_256}, 0)"),
                "22003",
            ),
            (
                "SELECT balance_queue.format_token_balance(1.5, 0)".into(),
                "22023",
            ),
            (
                "SELECT balance_queue.format_token_balance('NaN', 0)".into(),
                "22023",
            ),
            (
                "SELECT balance_queue.format_token_balance(1, -1)".into(),
                "22023",
            ),
            (
                "SELECT balance_queue.format_token_balance(1, 78)".into(),
                "22023",
            ),
            (
                "SELECT balance_queue.format_token_balance(1, 77)".into(),
                "ok",
            ),
            (
                "SELECT balance_queue.format_token_balance(1, 0)".into(),
                "ok",
            ),
        ];
        for (sql, expected) in cases {
            assert_eq!(&sqlstate_of(sql), expected, "{sql}");
        }
    }
}
