//! Token statistics (holders, negative balances, supply) kept by the
//! balances' statement triggers, checked against a recomputation from
//! `current_token_balances` after replays, reorg deletes, concurrent
//! drainers, folds in between, a rebuild and a TRUNCATE.

mod common;

use balance_queue_harness::{data, drain, rindexer, workload};
use num_bigint::BigInt;
use postgres::Client;
use std::str::FromStr;

const RETH: &str = "0xae78736cd615f374d3085123a210448e74fc6393";
const ZERO: &str = "0x0000000000000000000000000000000000000000";

/// Drains with `process_balance_update_queue` until the queue is empty.
fn drainer(conn: String) {
    let mut client = Client::connect(&conn, postgres::NoTls).unwrap();
    loop {
        let processed: i32 = client
            .query_one(
                "SELECT processed_count FROM balance_queue.process_balance_update_queue(300)",
                &[],
            )
            .unwrap()
            .get(0);
        if processed == 0 && common::pending(&mut client) == 0 {
            return;
        }
    }
}

#[test]
fn statistics_follow_every_writer_through_replays_reorgs_and_four_drainers() {
    let mut f = common::attached_rindexer_table("token_stats");
    let conn = f.cluster.conn_string("test");
    // The rETH export and a generated workload of 10 tokens, in statements
    // of 500 rows, the head of each replayed (rindexer after a crash).
    let mut rows = data::read_rindexer_csv(&data::reth_csv_path());
    rows.extend(workload::generate(&workload::Shape {
        transfers: 20_000,
        tokens: 10,
        holders: 2_000,
        ..Default::default()
    }));
    for chunk in rows.chunks(500) {
        rindexer::write_batch(&mut f.client, &f.table, chunk).unwrap();
        rindexer::write_batch(&mut f.client, &f.table, &chunk[..5]).unwrap();
    }
    // Four drainers, and folds while they run.
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let conn = conn.clone();
                s.spawn(move || drainer(conn))
            })
            .collect();
        let mut folder = Client::connect(&conn, postgres::NoTls).unwrap();
        while !handles.iter().all(|h| h.is_finished()) {
            folder
                .batch_execute("SELECT balance_queue.fold_token_stats()")
                .unwrap();
        }
    });
    assert!(common::assert_token_stats_match(&mut f.client) >= 11);
    common::assert_matches_sources(&mut f.client, &[&f.table]);

    // A reorg rollback (rindexer deletes the block range, then writes the
    // new fork's rows), drained without a fold: readers add the deltas.
    let (from, to) = (rows[2_000].block_number, rows[4_000].block_number);
    let deleted = common::delete_blocks(&mut f.client, &f.table, from, to);
    assert!(deleted > 0);
    drain(&mut f.client, 1000);
    common::assert_token_stats_match(&mut f.client);
    let reinserted: Vec<_> = rows
        .iter()
        .filter(|r| r.block_number >= from && r.block_number <= to)
        .cloned()
        .collect();
    rindexer::write_all(&mut f.client, &f.table, &reinserted, 500).unwrap();
    drain(&mut f.client, 1000);
    assert!(
        f.client
            .query_one("SELECT balance_queue.fold_token_stats()", &[])
            .unwrap()
            .get::<_, i64>(0)
            > 0
    );
    common::assert_token_stats_match(&mut f.client);
    common::assert_matches_sources(&mut f.client, &[&f.table]);

    // Supply: rETH's range starts mid-history, so its supply is a net
    // change, never complete; a generated token minted from the zero
    // address is complete once its genesis is recorded.
    let stats = |c: &mut Client, token: &str| {
        let r = c
            .query_one(
                "SELECT holder_count, negative_balance_count, supply_wei::text, supply_complete
                   FROM balance_queue.get_token_stats(1, $1)",
                &[&token],
            )
            .unwrap();
        (
            r.get::<_, i64>(0),
            r.get::<_, i64>(1),
            r.get::<_, String>(2),
            r.get::<_, bool>(3),
        )
    };
    f.client
        .batch_execute(&format!(
            "SELECT balance_queue.set_token_genesis(1, '{RETH}', 13325304)"
        ))
        .unwrap();
    let reth = stats(&mut f.client, RETH);
    assert!(
        reth.1 > 0 && !reth.3,
        "rETH: negative balances, so incomplete: {reth:?}"
    );
    let token = rows.last().unwrap().contract_address.clone();
    assert!(!stats(&mut f.client, &token).3, "no genesis recorded");
    f.client
        .query_one(
            "SELECT balance_queue.set_token_genesis(1, $1, 0)",
            &[&token],
        )
        .unwrap();
    let minted: BigInt = rows
        .iter()
        .filter(|r| r.contract_address == token)
        .map(|r| {
            let v = BigInt::from_str(r.value.as_deref().unwrap()).unwrap();
            match (r.from.as_deref(), r.to.as_deref()) {
                (Some(ZERO), Some(ZERO)) => BigInt::from(0),
                (Some(ZERO), _) => v,
                (_, Some(ZERO)) => -v,
                _ => BigInt::from(0),
            }
        })
        .sum();
    let generated = stats(&mut f.client, &token);
    assert_eq!(
        (generated.1, generated.2.clone(), generated.3),
        (0, minted.to_string(), true),
        "supply = mints - burns of the generated token"
    );

    // A rebuild deletes and re-inserts every balance of the chain.
    f.client
        .batch_execute("SELECT * FROM balance_queue.handle_reorg(1, 0)")
        .unwrap();
    common::assert_token_stats_match(&mut f.client);
    drain(&mut f.client, 50_000);
    common::assert_token_stats_match(&mut f.client);
    assert_eq!(stats(&mut f.client, &token), generated);

    // TRUNCATE empties every token and keeps the genesis blocks.
    f.client
        .batch_execute("TRUNCATE balance_queue.current_token_balances")
        .unwrap();
    common::assert_token_stats_match(&mut f.client);
    assert_eq!(
        common::scalar_i64(
            &mut f.client,
            "SELECT count(*) FROM balance_queue.token_stats WHERE genesis_block IS NOT NULL"
        ),
        2
    );

    for (sql, code) in [
        (
            "SELECT * FROM balance_queue.get_token_stats(1, '0x12')",
            "22P02",
        ),
        (
            "SELECT balance_queue.set_token_genesis(1, '0xae78736cd615f374d3085123a210448e74fc6393', -1)",
            "22023",
        ),
    ] {
        assert_eq!(common::sqlstate(&mut f.client, sql), code, "{sql}");
    }
}
