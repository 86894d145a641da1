//! uint256 amounts as decimal text: parsing, range checks and exact
//! formatting with token decimals. No floats anywhere: every digit is kept.

use ruint::aliases::U256;

/// A signed integer whose magnitude fits in a uint256: -(2^256-1)..2^256-1.
/// This is the range of an ERC20 balance or of any sum kept in
/// `current_token_balances.current_balance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedWei {
    pub negative: bool,
    pub magnitude: U256,
}

/// Why a decimal text is not a balance in -(2^256-1)..2^256-1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("value {0:?} is not an integer")]
    NotInteger(String),
    #[error("value {0} is outside -(2^256-1)..2^256-1")]
    OutOfRange(String),
}

impl SignedWei {
    /// Parses Postgres numeric output text (`-123`, `100.000`, `NaN`).
    /// A fractional part is accepted only when it is all zeros.
    pub fn parse(text: &str) -> Result<Self, AmountError> {
        let not_integer = || AmountError::NotInteger(text.to_string());
        let (negative, unsigned) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let (integer, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
        if integer.is_empty()
            || !integer.bytes().all(|b| b.is_ascii_digit())
            || !fraction.bytes().all(|b| b == b'0')
        {
            return Err(not_integer());
        }
        let magnitude = U256::from_str_radix(integer, 10)
            .map_err(|_| AmountError::OutOfRange(text.to_string()))?;
        Ok(Self {
            negative: negative && !magnitude.is_zero(),
            magnitude,
        })
    }

    /// Formats the amount in whole tokens: `decimals` digits move behind the
    /// point, trailing fractional zeros are trimmed, and the point goes too
    /// when nothing is left behind it. `decimals` must be at most 77 (the
    /// digits of 2^256-1 minus one), which callers check.
    pub fn format_units(&self, decimals: usize) -> String {
        let digits = self.magnitude.to_string();
        let mut out = String::with_capacity(digits.len() + decimals + 3);
        if self.negative {
            out.push('-');
        }
        if decimals == 0 {
            out.push_str(&digits);
            return out;
        }
        let padded = if digits.len() <= decimals {
            format!("{}{}", "0".repeat(decimals + 1 - digits.len()), digits)
        } else {
            digits
        };
        let (integer, fraction) = padded.split_at(padded.len() - decimals);
        out.push_str(integer);
        let fraction = fraction.trim_end_matches('0');
        if !fraction.is_empty() {
            out.push('.');
            out.push_str(fraction);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_integers_and_zero_fractions() {
        assert_eq!(
            SignedWei::parse("12.000").unwrap().magnitude,
            U256::from(12)
        );
        assert!(!SignedWei::parse("-0").unwrap().negative);
        assert!(SignedWei::parse("-5").unwrap().negative);
    }

    #[test]
    fn parse_rejects_fractions_nan_and_overflow() {
        assert!(matches!(
            SignedWei::parse("1.5"),
            Err(AmountError::NotInteger(_))
        ));
        assert!(matches!(
            SignedWei::parse("NaN"),
            Err(AmountError::NotInteger(_))
        ));
        assert!(matches!(
            SignedWei::parse(""),
            Err(AmountError::NotInteger(_))
        ));
        let two_pow_256 =
            "115792089237316195423570985008687907853269984665640564039457584007913129639936";
        assert!(matches!(
            SignedWei::parse(two_pow_256),
            Err(AmountError::OutOfRange(_))
        ));
    }
}
