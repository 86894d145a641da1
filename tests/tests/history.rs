//! Balance at any block, from the ledger: 50 random (holder, block) pairs
//! over both real exports, ingested in shuffled order with replays and a
//! reorg delete and re-insert, compared with a running sum computed here.

mod common;

use balance_queue_harness::recompute::{self, Key, Source};
use balance_queue_harness::rindexer::{self, TransferRow};
use balance_queue_harness::{data, drain};
use num_bigint::BigInt;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;

const ZERO: &str = "0x0000000000000000000000000000000000000000";

fn address(a: &Option<String>) -> Option<String> {
    let a = a.as_deref()?.trim().to_lowercase();
    (a.len() == 42 && a.starts_with("0x") && a[2..].chars().all(|c| c.is_ascii_hexdigit()))
        .then_some(a)
}

/// Each key's changes by block, from the distinct transfers of `rows`.
fn changes_by_block(rows: &[TransferRow]) -> HashMap<Key, BTreeMap<u64, BigInt>> {
    let mut seen = HashSet::new();
    let mut changes: HashMap<Key, BTreeMap<u64, BigInt>> = HashMap::new();
    for r in rows {
        let (Some(from), Some(to), Some(value)) = (
            address(&r.from),
            address(&r.to),
            r.value
                .as_deref()
                .and_then(|v| BigInt::from_str(v.trim()).ok()),
        ) else {
            continue;
        };
        let token = r.contract_address.to_lowercase();
        if !seen.insert((
            r.tx_hash.clone(),
            r.log_index.clone(),
            token.clone(),
            from.clone(),
            to.clone(),
            value.clone(),
            r.block_number,
        )) {
            continue; // a replayed copy
        }
        for (holder, delta) in [(from, -value.clone()), (to, value)] {
            if holder != ZERO {
                *changes
                    .entry((1, token.clone(), holder))
                    .or_default()
                    .entry(r.block_number)
                    .or_default() += delta;
            }
        }
    }
    changes
}

#[test]
fn balances_at_random_blocks_equal_a_running_sum() {
    let mut f = common::attached_rindexer_table("history");
    let mut rows = data::read_rindexer_csv(&data::reth_csv_path());
    rows.extend(data::read_etl_csv(&data::etl_csv_path()));
    let mut rng = StdRng::seed_from_u64(7);
    let mut shuffled = rows.clone();
    shuffled.shuffle(&mut rng);
    // Shuffled ingest, the head of each statement replayed.
    for chunk in shuffled.chunks(700) {
        rindexer::write_batch(&mut f.client, &f.table, chunk).unwrap();
        rindexer::write_batch(&mut f.client, &f.table, &chunk[..7]).unwrap();
    }
    f.client
        .batch_execute("SET balance_queue.retry_backoff = 0")
        .unwrap();
    drain(&mut f.client, 100_000);
    // rindexer's reorg rollback of a block range, then the same rows again.
    let (from, to) = (18_950_000u64, 18_960_000u64);
    assert!(common::delete_blocks(&mut f.client, &f.table, from, to) > 0);
    drain(&mut f.client, 100_000);
    let again: Vec<TransferRow> = rows
        .iter()
        .filter(|r| r.block_number >= from && r.block_number <= to)
        .cloned()
        .collect();
    assert!(!again.is_empty());
    rindexer::write_all(&mut f.client, &f.table, &again, 500).unwrap();
    drain(&mut f.client, 100_000);

    let expected = recompute::recompute(&mut f.client, &[Source::rindexer(&f.table)]);
    let out_of_range = recompute::out_of_range_keys(&expected);
    let changes = changes_by_block(&rows);
    let mut keys: Vec<&Key> = changes
        .keys()
        .filter(|k| !out_of_range.contains(*k) && expected.balances.contains_key(*k))
        .collect();
    keys.sort();
    let head: i64 = common::scalar_i64(
        &mut f.client,
        "SELECT head_block FROM balance_queue.chain_registry WHERE chain_id = 1",
    );
    for _ in 0..50 {
        let key = keys[rng.random_range(0..keys.len())];
        let blocks: Vec<u64> = changes[key].keys().copied().collect();
        // A block with a change, one just before it, before the first or after the last.
        let at = blocks[rng.random_range(0..blocks.len())];
        let block = match rng.random_range(0..4) {
            0 => at,
            1 => at - 1,
            2 => blocks[0] - 1,
            _ => *blocks.last().unwrap() + 10,
        };
        let want: BigInt = changes[key].range(..=block).map(|(_, d)| d).sum();
        // The running sum ends where the independent recomputation does.
        let total: BigInt = changes[key].values().sum();
        assert_eq!(&total, &expected.balances[key], "{key:?}");
        let row = f
            .client
            .query_one(
                "SELECT balance::text, is_final FROM balance_queue.get_balance_at_block($1, $2, $3, $4)",
                &[&key.0, &key.1, &key.2, &(block as i64)],
            )
            .unwrap();
        assert_eq!(
            row.get::<_, String>(0),
            want.to_string(),
            "{key:?} at block {block}"
        );
        assert_eq!(
            row.get::<_, bool>(1),
            (block as i64) <= head - 64,
            "finality of {block}"
        );
    }
    for (sql, code) in [
        (
            "SELECT * FROM balance_queue.get_balance_at_block(1, '0x12', '0x12', 1)",
            "22P02",
        ),
        (
            "SELECT * FROM balance_queue.get_balance_at_block(1, '0xae78736cd615f374d3085123a210448e74fc6393', '0xae78736cd615f374d3085123a210448e74fc6393', -1)",
            "22023",
        ),
    ] {
        assert_eq!(common::sqlstate(&mut f.client, sql), code, "{sql}");
    }
}
