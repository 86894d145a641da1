//! Reorgs the rindexer way (delete the orphaned range, insert the canonical
//! logs, one transaction), duplicates and out-of-order batches on several
//! chains; confirmed and pending state; handle_reorg; verify_balances.

mod common;

use balance_queue_harness::recompute::{self, Source};
use balance_queue_harness::rindexer::{self, TransferRow};
use balance_queue_harness::{drain, workload};
use num_bigint::BigUint;
use postgres::Client;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::TABLE;
const CHAINS: [(&str, u64); 3] = [("ethereum", 1), ("polygon", 2), ("base", 3)];

fn chain_rows(network: &str, seed: u64, transfers: usize) -> Vec<TransferRow> {
    workload::generate(&workload::Shape {
        transfers,
        tokens: 6,
        holders: 1_500,
        network: network.into(),
        seed,
    })
}

/// The canonical logs replacing an orphaned range: two in three of the old
/// logs survive, and every fifth survivor carries a different amount (the
/// same log index, another outcome on the new fork).
fn canonical(orphaned: &[TransferRow]) -> Vec<TransferRow> {
    orphaned
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .map(|(i, r)| {
            let mut r = r.clone();
            if i % 5 == 0 {
                let half = r.value.as_deref().unwrap().parse::<BigUint>().unwrap() / 2u32;
                r.value = Some(half.to_string());
            }
            r
        })
        .collect()
}

/// A reorg as rindexer rolls it back. Returns (rows deleted, rows inserted, time).
fn reorg(
    client: &mut Client,
    rows: &[TransferRow],
    network: &str,
    fork: u64,
    depth: u64,
) -> (u64, usize, Duration) {
    let last = fork + depth - 1;
    let orphaned: Vec<TransferRow> = rows
        .iter()
        .filter(|r| r.block_number >= fork && r.block_number <= last)
        .cloned()
        .collect();
    let replacement = canonical(&orphaned);
    let started = Instant::now();
    let mut tx = client.transaction().unwrap();
    let deleted = tx
        .execute(
            &format!(
                "DELETE FROM {TABLE} WHERE network = $1 AND block_number BETWEEN $2::text::numeric AND $3::text::numeric"
            ),
            &[&network, &fork.to_string(), &last.to_string()],
        )
        .unwrap();
    rindexer::write_all(&mut tx, TABLE, &replacement, 5000).unwrap();
    tx.commit().unwrap();
    (deleted, replacement.len(), started.elapsed())
}

/// Loads three chains with duplicates and out-of-order batches, then rolls
/// back reorgs of depth 1 to 200. `between` runs after each step (a drain,
/// or nothing when other sessions drain). Returns (depth, rows deleted, time).
fn load_with_reorgs(
    client: &mut Client,
    mut between: impl FnMut(&mut Client),
) -> Vec<(u64, u64, Duration)> {
    let per_chain: Vec<(&str, Vec<TransferRow>)> = CHAINS
        .iter()
        .map(|(network, seed)| (*network, chain_rows(network, *seed, 12_000)))
        .collect();
    // Out of order: each chain's batches newest first, chains interleaved;
    // the head of every batch is sent twice (rindexer's crash replay).
    let batches: Vec<Vec<&[TransferRow]>> = per_chain
        .iter()
        .map(|(_, rows)| rows.chunks(1500).rev().collect())
        .collect();
    for i in 0..batches.iter().map(Vec::len).max().unwrap() {
        for chain in &batches {
            if let Some(batch) = chain.get(i) {
                rindexer::write_batch(client, TABLE, batch).unwrap();
                rindexer::write_batch(client, TABLE, &batch[..batch.len() / 20]).unwrap();
            }
        }
        between(client);
    }
    let mut timings = Vec::new();
    for (round, depth) in [1u64, 5, 20, 64, 150, 200].into_iter().enumerate() {
        let (network, rows) = &per_chain[round % per_chain.len()];
        let head = rows.last().unwrap().block_number;
        let fork = head + 1 - depth.min(head - rows[0].block_number);
        let (deleted, _, took) = reorg(client, rows, network, fork, depth);
        timings.push((depth, deleted, took));
        between(client);
    }
    timings
}

fn assert_exact_and_confirmed(client: &mut Client) {
    let expected = recompute::recompute(client, &[Source::rindexer(TABLE)]);
    assert!(expected.duplicate_rows > 0);
    let comparison = recompute::compare(client, &expected, &HashSet::new());
    assert!(
        comparison.all_match(),
        "mismatches: {:?}",
        comparison.mismatches
    );

    let confirmed_through: HashMap<i32, i64> = client
        .query("SELECT chain_id, head_block - confirmation_depth FROM balance_queue.chain_registry WHERE head_block IS NOT NULL", &[])
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(confirmed_through.len(), 3, "three chains have a head");
    let confirmed =
        recompute::recompute_where(client, &[Source::rindexer(TABLE)], |chain, block| {
            confirmed_through
                .get(&chain)
                .is_some_and(|&through| block as i64 <= through)
        });
    let comparison = recompute::compare_confirmed(client, &confirmed);
    assert!(
        comparison.all_match(),
        "confirmed mismatches: {:?}",
        comparison.mismatches
    );
}

#[test]
fn multi_chain_reorgs_duplicates_and_disorder_stay_exact() {
    let mut f = common::attached_rindexer_table("reorgs");
    let mut drains = Vec::new();
    let timings = load_with_reorgs(&mut f.client, |c| {
        let started = Instant::now();
        drain(c, 2000);
        drains.push(started.elapsed());
    });
    // The last drains are the ones after each reorg.
    let reorg_drains = &drains[drains.len() - timings.len()..];
    for ((depth, deleted, took), drained) in timings.iter().zip(reorg_drains) {
        println!(
            "reorg depth {depth:>3}: {deleted:>5} rows deleted + canonical re-inserted in {:.1} ms, drained in {:.1} ms",
            took.as_secs_f64() * 1e3,
            drained.as_secs_f64() * 1e3
        );
    }
    assert_exact_and_confirmed(&mut f.client);
    let verify = common::count(
        &mut f.client,
        "SELECT * FROM balance_queue.verify_balances()",
    );
    assert_eq!(verify, 0, "verify_balances finds no difference");
}

#[test]
fn four_drainers_and_the_worker_under_reorgs_give_identical_results() {
    let common::Fixture {
        cluster,
        mut client,
        ..
    } = common::attached_rindexer_table_with(
        "reorgs-concurrent",
        &[
            "shared_preload_libraries = 'balance_queue'",
            "balance_queue.database = 'test'",
            "balance_queue.batch_size = 700",
        ],
    );
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let drainers: Vec<_> = (0..4)
        .map(|i| {
            let (conn, done) = (cluster.conn_string("test"), done.clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(&conn, postgres::NoTls).unwrap();
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    drain(&mut c, 300 + 100 * i);
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    load_with_reorgs(&mut client, |_| {});
    let started = Instant::now();
    while common::count(
        &mut client,
        "SELECT 1 FROM balance_queue.balance_update_queue WHERE status = 'pending'",
    ) > 0
    {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "queue did not drain"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    for d in drainers {
        d.join().expect("a drainer failed: deadlock or error");
    }
    assert_exact_and_confirmed(&mut client);
    let log = std::fs::read_to_string(cluster.log_path()).unwrap_or_default();
    assert_eq!(
        log.matches("deadlock detected").count(),
        0,
        "deadlocks in the server log"
    );
}

#[test]
fn the_confirmed_part_never_moves_under_a_reorg_shallower_than_the_depth() {
    let mut f = common::attached_rindexer_table("confirmed");
    let rows = chain_rows("ethereum", 7, 8_000);
    rindexer::write_all(&mut f.client, TABLE, &rows, 2000).unwrap();
    drain(&mut f.client, 5000);
    let snapshot = |c: &mut Client| -> HashMap<(String, String), String> {
        c.query("SELECT contract_address, holder_address, confirmed_balance::text FROM balance_queue.confirmed_token_balances", &[])
            .unwrap()
            .into_iter()
            .map(|r| ((r.get(0), r.get(1)), r.get(2)))
            .collect()
    };
    let before = snapshot(&mut f.client);
    let pending_keys = common::count(
        &mut f.client,
        "SELECT 1 FROM balance_queue.confirmed_token_balances WHERE pending_delta <> 0",
    );
    assert!(pending_keys > 0, "the newest 64 blocks are pending");
    let head = rows.last().unwrap().block_number;
    reorg(&mut f.client, &rows, "ethereum", head - 29, 30);
    drain(&mut f.client, 5000);
    assert_eq!(
        snapshot(&mut f.client),
        before,
        "a 30-block reorg leaves Ethereum's confirmed balances (depth 64) alone"
    );
    // Every key: confirmed + pending = current.
    let inconsistent = common::count(
        &mut f.client,
        "SELECT 1 FROM balance_queue.confirmed_token_balances WHERE confirmed_balance + pending_delta <> current_balance",
    );
    assert_eq!(inconsistent, 0);
    let (holder, contract) = (
        rows.last().unwrap().to.clone().unwrap(),
        rows.last().unwrap().contract_address.clone(),
    );
    let row = f
        .client
        .query_one(
            "SELECT balance = confirmed_balance + pending_delta FROM balance_queue.get_current_balance(1, $1, $2)",
            &[&contract, &holder],
        )
        .unwrap();
    assert!(
        row.get::<_, bool>(0),
        "get_current_balance: confirmed + pending = current"
    );
}

#[test]
fn handle_reorg_rolls_back_for_indexers_that_cannot_delete() {
    let mut f = common::attached_rindexer_table("handle-reorg");
    let rows = chain_rows("ethereum", 11, 6_000);
    rindexer::write_all(&mut f.client, TABLE, &rows, 2000).unwrap();
    drain(&mut f.client, 5000);
    let head = rows.last().unwrap().block_number;
    let fork = head - 40;
    // An indexer that cannot delete rewrites the range behind the triggers'
    // back (replication role: triggers do not fire), then asks for a rollback.
    let orphaned: Vec<TransferRow> = rows
        .iter()
        .filter(|r| r.block_number >= fork)
        .cloned()
        .collect();
    let mut tx = f.client.transaction().unwrap();
    tx.batch_execute("SET LOCAL session_replication_role = replica")
        .unwrap();
    tx.execute(
        &format!("DELETE FROM {TABLE} WHERE block_number >= $1::text::numeric"),
        &[&fork.to_string()],
    )
    .unwrap();
    rindexer::write_all(&mut tx, TABLE, &canonical(&orphaned), 5000).unwrap();
    tx.commit().unwrap();
    // Pending items at and above the fork are superseded too.
    rindexer::write_batch(&mut f.client, TABLE, &canonical(&orphaned)[..3]).unwrap();
    assert!(
        common::count(
            &mut f.client,
            "SELECT * FROM balance_queue.verify_balances(1)"
        ) > 0,
        "stale before"
    );
    let result = f
        .client
        .query_one(
            "SELECT sides_taken_back, items_requeued FROM balance_queue.handle_reorg(1, $1)",
            &[&(fork as i64)],
        )
        .unwrap();
    assert!(result.get::<_, i64>(0) > 0 && result.get::<_, i64>(1) > 0);
    drain(&mut f.client, 5000);
    common::assert_matches_sources(&mut f.client, &[TABLE]);
    assert_eq!(
        common::count(
            &mut f.client,
            "SELECT * FROM balance_queue.verify_balances(1)"
        ),
        0
    );
}

#[test]
fn verify_balances_finds_every_difference_and_recalculation_repairs_it() {
    let mut f = common::attached_rindexer_table("verify");
    let rows = chain_rows("ethereum", 5, 3_000);
    rindexer::write_all(&mut f.client, TABLE, &rows, 1000).unwrap();
    drain(&mut f.client, 5000);
    assert_eq!(
        common::count(
            &mut f.client,
            "SELECT * FROM balance_queue.verify_balances()"
        ),
        0
    );
    let victims: Vec<(String, String)> = f
        .client
        .query(
            "SELECT contract_address, holder_address FROM balance_queue.current_token_balances ORDER BY 1, 2 LIMIT 2",
            &[],
        )
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (contract, holder) in &victims {
        f.client
            .execute(
                "UPDATE balance_queue.current_token_balances SET current_balance = current_balance + 1
                  WHERE chain_id = 1 AND contract_address = $1 AND holder_address = $2",
                &[contract, holder],
            )
            .unwrap();
    }
    let found: Vec<(String, String, String)> = f
        .client
        .query("SELECT contract_address, holder_address, difference::text FROM balance_queue.verify_balances(1)", &[])
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut want: Vec<(String, String, String)> = victims
        .iter()
        .map(|(c, h)| (c.clone(), h.clone(), "1".into()))
        .collect();
    want.sort();
    assert_eq!(found, want);
    let (contract, holder) = &victims[0];
    assert_eq!(
        common::count(
            &mut f.client,
            &format!(
                "SELECT * FROM balance_queue.verify_balances(1, '{}')",
                contract.to_uppercase().replace("0X", "0x")
            )
        ),
        victims.iter().filter(|(c, _)| c == contract).count() as i64
    );
    f.client
        .execute(
            "SELECT balance_queue.recalculate_address_balance(1, $1, $2)",
            &[contract, holder],
        )
        .unwrap();
    assert_eq!(
        common::count(
            &mut f.client,
            "SELECT * FROM balance_queue.verify_balances()"
        ),
        1
    );
}

#[test]
fn out_of_order_batches_record_the_highest_block_per_key() {
    let mut f = common::attached_rindexer_table("disorder");
    let rows = chain_rows("ethereum", 3, 4_000);
    for chunk in rows.chunks(500).rev() {
        rindexer::write_batch(&mut f.client, TABLE, chunk).unwrap();
        drain(&mut f.client, 5000);
    }
    common::assert_matches_sources(&mut f.client, &[TABLE]);
    let mut highest: HashMap<(String, String), u64> = HashMap::new();
    for r in &rows {
        for party in [r.from.as_ref().unwrap(), r.to.as_ref().unwrap()] {
            if party != "0x0000000000000000000000000000000000000000" {
                let e = highest
                    .entry((r.contract_address.clone(), party.clone()))
                    .or_default();
                *e = (*e).max(r.block_number);
            }
        }
    }
    let stored: HashMap<(String, String), i64> = f
        .client
        .query("SELECT contract_address, holder_address, last_updated_block FROM balance_queue.current_token_balances", &[])
        .unwrap()
        .into_iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    assert_eq!(stored.len(), highest.len());
    for (key, block) in &highest {
        assert_eq!(stored[key], *block as i64, "last_updated_block of {key:?}");
    }
}

#[test]
fn a_dropped_source_is_forgotten_and_handle_reorg_rebuilds_the_chain() {
    let mut f = common::attached_rindexer_table("dropped-source");
    rindexer::create_transfer_table(&mut f.client, "other_indexer");
    f.client
        .execute(
            "SELECT balance_queue.attach_transfer_table('other_indexer.transfer')",
            &[],
        )
        .unwrap();
    rindexer::write_all(
        &mut f.client,
        TABLE,
        &chain_rows("ethereum", 21, 2_000),
        1000,
    )
    .unwrap();
    rindexer::write_all(
        &mut f.client,
        "other_indexer.transfer",
        &chain_rows("ethereum", 22, 2_000),
        1000,
    )
    .unwrap();
    drain(&mut f.client, 5000);
    // rindexer's drop_each_run: the schema goes with CASCADE.
    f.client
        .batch_execute("DROP SCHEMA other_indexer CASCADE")
        .unwrap();
    assert_eq!(
        common::count(
            &mut f.client,
            "SELECT 1 FROM balance_queue.attached_sources"
        ),
        1
    );
    assert!(
        common::count(
            &mut f.client,
            "SELECT * FROM balance_queue.verify_balances(1)"
        ) > 0,
        "the dropped table's transfers still count, and verify says so"
    );
    f.client
        .query_one("SELECT * FROM balance_queue.handle_reorg(1, 0)", &[])
        .unwrap();
    drain(&mut f.client, 5000);
    common::assert_matches_sources(&mut f.client, &[TABLE]);
    assert_eq!(
        common::count(
            &mut f.client,
            "SELECT * FROM balance_queue.verify_balances()"
        ),
        0
    );
}
