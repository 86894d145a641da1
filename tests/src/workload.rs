//! A generated, realistic ERC20 workload in rindexer's row shape: many
//! tokens, holders drawn from a skewed (power-law) distribution, mints,
//! burns, self-transfers, zero-value transfers, several logs per
//! transaction, and one token whose supply is 2^256-1, so values near the
//! top of uint256 flow through every path. Senders never overdraw, as in a
//! real ERC20. Deterministic for a given seed.

use crate::recompute::max_uint256;
use crate::rindexer::TransferRow;
use num_bigint::BigUint;
use num_traits::Zero;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

const ZERO: &str = "0x0000000000000000000000000000000000000000";

/// Shape of a generated workload.
#[derive(Debug, Clone)]
pub struct Shape {
    pub transfers: usize,
    pub tokens: usize,
    pub holders: usize,
    pub network: String,
    pub seed: u64,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            transfers: 100_000,
            tokens: 50,
            holders: 20_000,
            network: "ethereum".into(),
            seed: 42,
        }
    }
}

fn hex_of(rng: &mut StdRng, bytes: usize) -> String {
    let mut s = String::with_capacity(2 + bytes * 2);
    s.push_str("0x");
    for _ in 0..bytes {
        s.push_str(&format!("{:02x}", rng.random::<u8>()));
    }
    s
}

/// A random amount in 0..=limit (uniform enough for a workload).
fn amount_up_to(rng: &mut StdRng, limit: &BigUint) -> BigUint {
    (limit * BigUint::from(rng.random::<u64>())) >> 64u32
}

/// Generates the workload in block order.
pub fn generate(shape: &Shape) -> Vec<TransferRow> {
    let mut rng = StdRng::seed_from_u64(shape.seed);
    let tokens: Vec<String> = (0..shape.tokens).map(|_| hex_of(&mut rng, 20)).collect();
    let holders: Vec<String> = (0..shape.holders).map(|_| hex_of(&mut rng, 20)).collect();
    // balances[token][holder]
    let mut balances: Vec<HashMap<usize, BigUint>> = vec![HashMap::new(); shape.tokens];
    let mut rows = Vec::with_capacity(shape.transfers);
    let mut block = 19_000_000u64;
    let mut log_index = 0u64;
    let mut tx_index = 0u64;
    let mut tx_hash = hex_of(&mut rng, 32);
    let mut block_hash = hex_of(&mut rng, 32);
    let max = max_uint256();
    // Token 0 starts with its whole uint256 supply at holder 0.
    let mut pending_max_mint = true;
    while rows.len() < shape.transfers {
        // 1 to 3 logs per transaction, about 40 logs per block; a
        // transaction lives in one block, so (tx_hash, log_index) is unique.
        if rng.random_range(0..40) == 0 {
            block += 1;
            log_index = 0;
            tx_index = 0;
            block_hash = hex_of(&mut rng, 32);
            tx_hash = hex_of(&mut rng, 32);
        } else if rng.random_range(0..3) == 0 {
            tx_hash = hex_of(&mut rng, 32);
            tx_index += 1;
        }
        // Skewed: token 0..n with a power law, holders likewise.
        let token = if pending_max_mint {
            0
        } else {
            (shape.tokens as f64 * rng.random::<f64>().powi(2)) as usize
        };
        let pick_holder =
            |rng: &mut StdRng| (shape.holders as f64 * rng.random::<f64>().powi(3)) as usize;
        let roll = rng.random_range(0..100);
        let (from, to, value) = if pending_max_mint {
            pending_max_mint = false;
            (None, 0, max.clone())
        } else {
            let sender = pick_holder(&mut rng);
            let balance = balances[token].get(&sender).cloned().unwrap_or_default();
            if roll < 10 || balance.is_zero() {
                // mint; token 0's supply is already the whole uint256 range
                if token == 0 {
                    continue;
                }
                let amount =
                    BigUint::from(rng.random_range(1u64..1_000_000)) * BigUint::from(10u64).pow(18);
                (None, pick_holder(&mut rng), amount)
            } else if roll < 15 {
                (Some(sender), usize::MAX, amount_up_to(&mut rng, &balance)) // burn
            } else if roll < 18 {
                (Some(sender), sender, amount_up_to(&mut rng, &balance)) // self-transfer
            } else if roll < 20 {
                (Some(sender), pick_holder(&mut rng), BigUint::zero()) // zero-value
            } else {
                (
                    Some(sender),
                    pick_holder(&mut rng),
                    amount_up_to(&mut rng, &balance),
                )
            }
        };
        if let Some(sender) = from {
            let b = balances[token].entry(sender).or_default();
            *b -= &value;
        }
        if to != usize::MAX {
            *balances[token].entry(to).or_default() += &value;
        }
        rows.push(TransferRow {
            contract_address: tokens[token].clone(),
            from: Some(
                from.map(|h| holders[h].clone())
                    .unwrap_or_else(|| ZERO.into()),
            ),
            to: Some(if to == usize::MAX {
                ZERO.into()
            } else {
                holders[to].clone()
            }),
            value: Some(value.to_string()),
            tx_hash: tx_hash.clone(),
            block_number: block,
            block_hash: block_hash.clone(),
            network: shape.network.clone(),
            tx_index,
            log_index: log_index.to_string(),
        });
        log_index += 1;
    }
    rows
}
