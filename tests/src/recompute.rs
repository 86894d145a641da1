//! An independent recomputation of balances from the raw source rows,
//! written apart from the extension: rows are read back as text and
//! validated, deduplicated and summed here in Rust with arbitrary-precision
//! integers. Tests and the demo compare the extension's state to this.

use num_bigint::{BigInt, BigUint};
use num_traits::{One, Zero};
use postgres::Client;
use std::collections::{BTreeMap, HashMap, HashSet};

/// (chain id, token contract, holder), all lowercase.
pub type Key = (i32, String, String);

const ZERO: &str = "0x0000000000000000000000000000000000000000";

/// A source table and the names of its columns.
#[derive(Debug, Clone)]
pub struct Source {
    pub table: String,
    pub from: String,
    pub to: String,
    pub value: String,
    /// Fixed chain id, or None to map the `network` column through the registry.
    pub chain_id: Option<i32>,
}

impl Source {
    /// A rindexer Transfer table with its default column names.
    pub fn rindexer(table: &str) -> Source {
        Source {
            table: table.into(),
            from: "from".into(),
            to: "to".into(),
            value: "value".into(),
            chain_id: None,
        }
    }
}

/// The recomputed state.
#[derive(Debug, Default)]
pub struct Expected {
    pub balances: HashMap<Key, BigInt>,
    /// Source rows that cannot count (malformed, unknown network, ...).
    pub invalid_rows: usize,
    /// Distinct (chain, tx_hash, log_index) transfers counted.
    pub distinct_transfers: usize,
    /// Rows beyond the first copy of a transfer.
    pub duplicate_rows: usize,
}

fn is_hex(s: &str, digits: usize) -> bool {
    s.len() == digits + 2 && s.starts_with("0x") && s[2..].chars().all(|c| c.is_ascii_hexdigit())
}

/// 2^256 - 1.
pub fn max_uint256() -> BigUint {
    (BigUint::one() << 256u32) - BigUint::one()
}

/// Recomputes every balance from the rows of `sources`.
pub fn recompute(client: &mut Client, sources: &[Source]) -> Expected {
    recompute_where(client, sources, |_, _| true)
}

/// Recomputes balances from the rows of `sources` for which
/// `keep(chain_id, block_number)` holds (e.g. confirmed blocks only).
pub fn recompute_where(
    client: &mut Client,
    sources: &[Source],
    keep: impl Fn(i32, u64) -> bool,
) -> Expected {
    let networks: HashMap<String, i32> = client
        .query(
            "SELECT network_name, chain_id FROM balance_queue.chain_registry",
            &[],
        )
        .expect("read chain registry")
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let max = max_uint256();
    let mut seen: HashSet<(i32, String, u64)> = HashSet::new();
    let mut expected = Expected::default();
    for source in sources {
        let sql = format!(
            "SELECT network::text, contract_address::text, {}::text, {}::text, {}::text, tx_hash::text, log_index::text,
                    block_number::text
               FROM {}",
            quote(&source.from), quote(&source.to), quote(&source.value), source.table
        );
        for row in client.query(sql.as_str(), &[]).expect("read source rows") {
            let network: Option<String> = row.get(0);
            let chain = source
                .chain_id
                .or_else(|| network.as_ref().and_then(|n| networks.get(n).copied()));
            let contract: String = row.get::<_, String>(1).to_lowercase();
            let from: Option<String> = row.get::<_, Option<String>>(2).map(|s| s.to_lowercase());
            let to: Option<String> = row.get::<_, Option<String>>(3).map(|s| s.to_lowercase());
            let value: Option<BigUint> = row
                .get::<_, Option<String>>(4)
                .filter(|v| !v.is_empty() && v.len() <= 78 && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<BigUint>().ok())
                .filter(|v| *v <= max);
            let tx_hash: String = row.get::<_, String>(5).to_lowercase();
            let log_index: Option<u64> = row.get::<_, String>(6).parse().ok();
            let block: Option<u64> = row.get::<_, String>(7).parse().ok();
            let (Some(chain), Some(from), Some(to), Some(value), Some(log_index)) =
                (chain, from, to, value, log_index)
            else {
                expected.invalid_rows += 1;
                continue;
            };
            if !is_hex(&contract, 40)
                || !is_hex(&from, 40)
                || !is_hex(&to, 40)
                || !is_hex(&tx_hash, 64)
            {
                expected.invalid_rows += 1;
                continue;
            }
            let Some(block) = block else {
                expected.invalid_rows += 1;
                continue;
            };
            if !keep(chain, block) {
                continue;
            }
            if !seen.insert((chain, tx_hash, log_index)) {
                expected.duplicate_rows += 1;
                continue;
            }
            expected.distinct_transfers += 1;
            let amount = BigInt::from(value);
            if from != ZERO {
                *expected
                    .balances
                    .entry((chain, contract.clone(), from))
                    .or_insert_with(BigInt::zero) -= &amount;
            }
            if to != ZERO {
                *expected
                    .balances
                    .entry((chain, contract, to))
                    .or_insert_with(BigInt::zero) += &amount;
            }
        }
    }
    expected
}

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// Keys whose recomputed balance lies outside -(2^256-1)..2^256-1.
pub fn out_of_range_keys(expected: &Expected) -> HashSet<Key> {
    let max = BigInt::from(max_uint256());
    expected
        .balances
        .iter()
        .filter(|(_, b)| *b > &max || *b < &-max.clone())
        .map(|(k, _)| k.clone())
        .collect()
}

/// How the stored balances compare with the recomputation.
#[derive(Debug, Default)]
pub struct Comparison {
    /// Keys compared (the union of stored and recomputed keys, minus skipped ones).
    pub keys: usize,
    pub matching: usize,
    /// Up to 20 mismatches: key, expected, stored.
    pub mismatches: Vec<(Key, String, String)>,
}

impl Comparison {
    pub fn all_match(&self) -> bool {
        self.keys == self.matching
    }
}

/// Compares `current_token_balances` with `expected`, skipping `skip`.
/// A key missing on one side counts as a zero balance there.
pub fn compare(client: &mut Client, expected: &Expected, skip: &HashSet<Key>) -> Comparison {
    compare_with(
        client,
        expected,
        skip,
        "SELECT chain_id, contract_address, holder_address, current_balance::text
           FROM balance_queue.current_token_balances",
    )
}

/// Compares the confirmed balances (`confirmed_token_balances`) with `expected`.
pub fn compare_confirmed(client: &mut Client, expected: &Expected) -> Comparison {
    compare_with(
        client,
        expected,
        &HashSet::new(),
        "SELECT chain_id, contract_address, holder_address, confirmed_balance::text
           FROM balance_queue.confirmed_token_balances",
    )
}

/// Compares the (chain, contract, holder, balance text) rows of `stored_sql`
/// with `expected`, skipping `skip`.
pub fn compare_with(
    client: &mut Client,
    expected: &Expected,
    skip: &HashSet<Key>,
    stored_sql: &str,
) -> Comparison {
    let stored: BTreeMap<Key, BigInt> = client
        .query(stored_sql, &[])
        .expect("read current_token_balances")
        .into_iter()
        .map(|r| {
            (
                (r.get(0), r.get(1), r.get(2)),
                r.get::<_, String>(3).parse::<BigInt>().expect("integer"),
            )
        })
        .collect();
    let keys: HashSet<&Key> = stored
        .keys()
        .chain(expected.balances.keys())
        .filter(|k| !skip.contains(*k))
        .collect();
    let zero = BigInt::zero();
    let mut comparison = Comparison {
        keys: keys.len(),
        ..Default::default()
    };
    for key in keys {
        let want = expected.balances.get(key).unwrap_or(&zero);
        let have = stored.get(key).unwrap_or(&zero);
        if want == have {
            comparison.matching += 1;
        } else if comparison.mismatches.len() < 20 {
            comparison
                .mismatches
                .push((key.clone(), want.to_string(), have.to_string()));
        }
    }
    comparison
}
