//! The top-holder boards (sql/leaderboard.sql) stay exact through drains,
//! reorg rollbacks, deletes of copies, handle_reorg, an operator's direct
//! writes, cutoff raises and resets, and TRUNCATE: every board holds
//! exactly its token's keys at or above the cutoff, with their balances,
//! and get_top_holders equals the top N read from all balances.

mod common;

use balance_queue_harness::rindexer::{self, TransferRow};
use balance_queue_harness::{drain, workload};
use postgres::Client;
use std::time::Duration;

/// Small boards (p_target 40), so raises and resets happen with a small
/// workload.
const TARGET: i32 = 40;

/// Keys on a board that should not be there, or missing from it, or with a
/// balance other than the key's: all three must be empty.
fn board_errors(c: &mut Client) -> Vec<String> {
    c.query(
        "SELECT format('extra %s %s %s', t.chain_id, t.contract_address, t.holder_address)
           FROM balance_queue.token_leaderboard t
           LEFT JOIN balance_queue.leaderboard_cutoffs k USING (chain_id, contract_address)
           LEFT JOIN balance_queue.current_token_balances b USING (chain_id, contract_address, holder_address)
          WHERE k.min_balance IS NULL OR b.current_balance IS NULL OR b.current_balance < k.min_balance
             OR b.current_balance <> t.balance
         UNION ALL
         SELECT format('missing %s %s %s', b.chain_id, b.contract_address, b.holder_address)
           FROM balance_queue.current_token_balances b
           JOIN balance_queue.leaderboard_cutoffs k USING (chain_id, contract_address)
          WHERE b.current_balance >= k.min_balance
            AND NOT EXISTS (SELECT 1 FROM balance_queue.token_leaderboard t
                             WHERE (t.chain_id, t.contract_address, t.holder_address)
                                 = (b.chain_id, b.contract_address, b.holder_address))",
        &[],
    )
    .unwrap()
    .into_iter()
    .map(|r| r.get(0))
    .collect()
}

/// For every token, get_top_holders(n) against the top n of all its
/// balances; returns the tokens where they differ.
fn top_holder_errors(c: &mut Client, n: i32) -> Vec<String> {
    c.query(
        "SELECT format('%s %s', k.chain_id, k.contract_address)
           FROM (SELECT DISTINCT chain_id, contract_address FROM balance_queue.current_token_balances) k
          WHERE ARRAY(SELECT holder_address || '=' || current_balance
                        FROM balance_queue.get_top_holders(k.chain_id, k.contract_address, $1)
                       ORDER BY rank)
             IS DISTINCT FROM
                ARRAY(SELECT holder_address || '=' || current_balance
                        FROM balance_queue.current_token_balances b
                       WHERE b.chain_id = k.chain_id AND b.contract_address = k.contract_address
                       ORDER BY current_balance DESC, holder_address
                       LIMIT $1)",
        &[&n],
    )
    .unwrap()
    .into_iter()
    .map(|r| r.get(0))
    .collect()
}

fn assert_exact(c: &mut Client, when: &str) {
    assert_eq!(board_errors(c), Vec::<String>::new(), "boards {when}");
    for n in [1, 10, TARGET / 2, TARGET * 3] {
        assert_eq!(
            top_holder_errors(c, n),
            Vec::<String>::new(),
            "get_top_holders(…, {n}) {when}"
        );
    }
    common::assert_matches_sources(c, &[common::TABLE]);
}

fn refresh(c: &mut Client) -> i32 {
    c.query_one("SELECT balance_queue.refresh_leaderboards($1)", &[&TARGET])
        .unwrap()
        .get(0)
}

fn boards(c: &mut Client) -> i64 {
    common::count(c, "SELECT 1 FROM balance_queue.leaderboard_cutoffs")
}

#[test]
fn boards_stay_exact_through_drains_reorgs_deletes_and_direct_writes() {
    let mut f = common::attached_rindexer_table("leaderboard");
    let rows: Vec<TransferRow> = workload::generate(&workload::Shape {
        transfers: 40_000,
        tokens: 4,
        holders: 3_000,
        ..Default::default()
    });
    let (first, rest) = rows.split_at(25_000);
    rindexer::write_all(&mut f.client, &f.table, first, 5000).unwrap();
    drain(&mut f.client, 5000);
    // The sample finds every token (each has far more than 5 × 40 holders).
    while boards(&mut f.client) < 4 {
        refresh(&mut f.client);
    }
    assert_exact(&mut f.client, "after the first refresh");

    // More transfers move keys onto, along and off the boards; a raise or a
    // reset follows when a board leaves [TARGET / 2, 2 × TARGET].
    rindexer::write_all(&mut f.client, &f.table, rest, 5000).unwrap();
    drain(&mut f.client, 2000);
    assert_exact(&mut f.client, "after draining more");
    refresh(&mut f.client);
    assert_exact(&mut f.client, "after a refresh");

    // A reorg rollback of a block range, then canonical rows that send the
    // largest holders' tokens elsewhere.
    let cut = rest[rest.len() / 2].block_number;
    f.client
        .execute(
            &format!("DELETE FROM {} WHERE block_number::bigint >= $1", f.table),
            &[&(cut as i64)],
        )
        .unwrap();
    drain(&mut f.client, 5000);
    assert_exact(&mut f.client, "after a reorg rollback");

    // handle_reorg takes back and re-queues every side from a block on.
    f.client
        .query_one(
            "SELECT * FROM balance_queue.handle_reorg(1, $1)",
            &[&(first[first.len() / 2].block_number as i64)],
        )
        .unwrap();
    drain(&mut f.client, 5000);
    assert_exact(&mut f.client, "after handle_reorg");

    // An operator's direct writes: one key pushed to the top, one deleted.
    f.client
        .batch_execute(
            "UPDATE balance_queue.current_token_balances SET current_balance = current_balance * 1000
              WHERE (chain_id, contract_address, holder_address) =
                    (SELECT chain_id, contract_address, holder_address FROM balance_queue.current_token_balances
                      WHERE current_balance > 0 ORDER BY current_balance LIMIT 1);
             DELETE FROM balance_queue.current_token_balances
              WHERE (chain_id, contract_address, holder_address) =
                    (SELECT chain_id, contract_address, holder_address FROM balance_queue.token_leaderboard
                      ORDER BY balance DESC LIMIT 1);",
        )
        .unwrap();
    assert_eq!(
        board_errors(&mut f.client),
        Vec::<String>::new(),
        "after direct writes"
    );
    for n in [1, 10, TARGET * 3] {
        assert_eq!(top_holder_errors(&mut f.client, n), Vec::<String>::new());
    }

    // TRUNCATE forgets the boards with the balances.
    f.client
        .batch_execute("TRUNCATE balance_queue.current_token_balances")
        .unwrap();
    assert_eq!(boards(&mut f.client), 0);
    assert_eq!(
        common::count(
            &mut f.client,
            "SELECT 1 FROM balance_queue.token_leaderboard"
        ),
        0
    );
}

#[test]
fn refresh_rejects_a_target_below_one() {
    let mut f = common::attached_rindexer_table("leaderboard-args");
    assert_eq!(
        common::sqlstate(
            &mut f.client,
            "SELECT balance_queue.refresh_leaderboards(0)"
        ),
        "22023"
    );
}

#[test]
fn a_refresh_under_a_lock_timeout_leaves_a_busy_token_for_later() {
    let mut f = common::attached_rindexer_table("leaderboard-busy");
    let rows = workload::generate(&workload::Shape {
        transfers: 25_000,
        tokens: 4,
        holders: 3_000,
        ..Default::default()
    });
    rindexer::write_all(&mut f.client, &f.table, &rows, 5000).unwrap();
    drain(&mut f.client, 5000);

    // Another session writes balances in an open transaction: the SHARE
    // lock a board change takes is not free.
    let mut writer = f.cluster.connect("test");
    writer
        .batch_execute(
            "BEGIN; LOCK TABLE balance_queue.current_token_balances IN ROW EXCLUSIVE MODE",
        )
        .unwrap();
    f.client
        .batch_execute("SET lock_timeout = '100ms'")
        .unwrap();
    assert_eq!(refresh(&mut f.client), 0, "no board changed while busy");
    assert_eq!(boards(&mut f.client), 0);

    // Once the writer commits, the boards are made, exact.
    writer.batch_execute("COMMIT").unwrap();
    while boards(&mut f.client) < 4 {
        refresh(&mut f.client);
    }
    assert_exact(&mut f.client, "after the busy balances were freed");
}

#[test]
fn the_worker_gives_a_large_token_a_board_once_the_balances_are_free() {
    let (cluster, mut c) =
        common::preloaded("leaderboard-worker", &["balance_queue.health_interval = 1"]);
    // One token with far more than 5 × 1,000 holders (the worker's boards
    // keep 1,000).
    let rows = workload::generate(&workload::Shape {
        transfers: 60_000,
        tokens: 1,
        holders: 20_000,
        ..Default::default()
    });
    let mut writer = cluster.connect("test");
    writer
        .batch_execute(
            "BEGIN; LOCK TABLE balance_queue.current_token_balances IN ROW EXCLUSIVE MODE",
        )
        .unwrap();
    rindexer::write_all(&mut c, common::TABLE, &rows, 5000).unwrap();
    common::wait_until("the workers to drain", Duration::from_secs(60), || {
        common::pending(&mut c) == 0
    });
    // Several health intervals pass: each time the worker finds the token
    // due a board, waits 100 ms for the lock, and leaves it.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        boards(&mut c),
        0,
        "left for later while the balances are busy"
    );

    writer.batch_execute("COMMIT").unwrap();
    common::wait_until(
        "the worker to make the board",
        Duration::from_secs(30),
        || boards(&mut c) == 1,
    );
    assert_exact(&mut c, "after the worker made the board");
}
