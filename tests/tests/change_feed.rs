//! The change feed, with real listeners and concurrent drainers: one NOTIFY
//! per committed batch that changed balances, none for a batch rolled
//! back, payloads under NOTIFY's 8,000-byte limit, and a cursor that finds
//! every changed key whatever order the drains commit in; a statement of
//! more than a million keys recorded in parts and announced whole.

mod common;

use balance_queue_harness::recompute::{self, Source};
use balance_queue_harness::{data, rindexer};
use postgres::{Client, fallible_iterator::FallibleIterator};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

/// What one drainer's transaction did.
struct Batch {
    txid: String,
    /// Balance rows this transaction wrote (their xmin is its xid), counted
    /// before commit: the keys its notification must announce.
    changed: i64,
    committed: bool,
}

/// Drains until the queue is empty, rolling back every third batch that
/// took something (its items return to the queue for another drainer).
fn drainer(conn: String, seed: usize) -> Vec<Batch> {
    let mut client = Client::connect(&conn, postgres::NoTls).unwrap();
    let mut batches = Vec::new();
    for round in 0.. {
        let mut tx = client.transaction().unwrap();
        let processed: i32 = tx
            .query_one(
                "SELECT processed_count FROM balance_queue.process_balance_update_queue(400)",
                &[],
            )
            .unwrap()
            .get(0);
        let row = tx
            .query_one(
                "SELECT pg_current_xact_id_if_assigned()::text,
                        (SELECT count(*) FROM balance_queue.current_token_balances
                          WHERE xmin = pg_current_xact_id_if_assigned()::xid)",
                &[],
            )
            .unwrap();
        let (txid, changed): (Option<String>, i64) = (row.get(0), row.get(1));
        let roll_back = processed > 0 && (round + seed).is_multiple_of(3);
        if roll_back {
            tx.rollback().unwrap();
        } else {
            tx.commit().unwrap();
        }
        if let Some(txid) = txid {
            batches.push(Batch {
                txid,
                changed,
                committed: !roll_back,
            });
        }
        if processed == 0 && common::pending(&mut client) == 0 {
            break;
        }
    }
    batches
}

/// A session listening on the default channel, and the feed's cursor
/// taken after it started listening: what a consumer holds before it follows
/// the changes.
fn listen_from_now(client: &mut Client, conn: &str) -> (Client, String) {
    let mut listener = Client::connect(conn, postgres::NoTls).unwrap();
    listener
        .batch_execute("LISTEN balance_queue_changes")
        .unwrap();
    let cursor = client
        .query_one("SELECT balance_queue.balance_changes_cursor()", &[])
        .unwrap()
        .get(0);
    (listener, cursor)
}

#[test]
fn four_drainers_announce_each_committed_batch_once_and_the_cursor_sees_every_key() {
    let mut f = common::attached_rindexer_table("change_feed");
    let conn = f.cluster.conn_string("test");
    let (mut listener, cursor) = listen_from_now(&mut f.client, &conn);

    // The indexer's COPY announces nothing: only drains do. Statements of
    // 500 rows (binary COPY, as rindexer writes) make about 64 items.
    let rows = data::read_rindexer_csv(&data::reth_csv_path());
    rindexer::write_all(&mut f.client, &f.table, &rows, 500).expect("COPY");
    assert_eq!(
        listener
            .notifications()
            .timeout_iter(Duration::from_millis(300))
            .count()
            .unwrap(),
        0
    );

    let batches: Vec<Batch> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|seed| {
                let conn = conn.clone();
                s.spawn(move || drainer(conn, seed))
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    common::assert_matches_sources(&mut f.client, &[&f.table]);

    let mut notified: BTreeMap<String, Value> = BTreeMap::new();
    let mut notifications = listener.notifications();
    let mut iter = notifications.timeout_iter(Duration::from_secs(2));
    while let Some(n) = iter.next().unwrap() {
        assert_eq!(n.channel(), "balance_queue_changes");
        assert!(n.payload().len() < 8000, "{} bytes", n.payload().len());
        let payload: Value = serde_json::from_str(n.payload()).unwrap();
        assert_eq!(payload["v"], 1);
        let txid = payload["txid"].as_str().unwrap().to_string();
        assert!(
            notified.insert(txid.clone(), payload).is_none(),
            "transaction {txid} announced twice"
        );
    }
    let committed_with_changes: BTreeMap<String, i64> = batches
        .iter()
        .filter(|b| b.committed && b.changed > 0)
        .map(|b| (b.txid.clone(), b.changed))
        .collect();
    let rolled_back: BTreeSet<&String> = batches
        .iter()
        .filter(|b| !b.committed)
        .map(|b| &b.txid)
        .collect();
    assert!(!rolled_back.is_empty(), "some batches were rolled back");
    assert!(
        committed_with_changes.len() > 4,
        "{} committed batches changed balances",
        committed_with_changes.len()
    );
    assert_eq!(
        notified.keys().collect::<BTreeSet<_>>(),
        committed_with_changes.keys().collect::<BTreeSet<_>>(),
        "one notification per committed batch that changed balances, none for the {} rolled back",
        rolled_back.len()
    );
    for (txid, payload) in &notified {
        assert_eq!(payload["keys"], committed_with_changes[txid], "{payload}");
        assert_eq!(payload["chains"], serde_json::json!([1]));
        // Small batches name their keys; each key is a [chain, token, holder].
        if payload["keys"].as_i64().unwrap() <= 30 {
            assert_eq!(
                payload["changes"].as_array().unwrap().len() as i64,
                payload["keys"].as_i64().unwrap()
            );
        } else {
            assert!(payload["changes"].is_null());
        }
    }

    // The cursor from before the load: every key the export touched, once,
    // with its current balance.
    let since = f
        .client
        .query(
            "SELECT chain_id, contract_address, holder_address, current_balance::text, next_cursor
               FROM balance_queue.balance_changes_since($1)",
            &[&cursor],
        )
        .unwrap();
    let expected = recompute::recompute(&mut f.client, &[Source::rindexer(&f.table)]);
    let keys: HashSet<recompute::Key> = since
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(keys.len(), since.len(), "each key once");
    assert_eq!(
        keys,
        expected.balances.keys().cloned().collect::<HashSet<_>>()
    );
    for r in &since {
        let key: recompute::Key = (r.get(0), r.get(1), r.get(2));
        assert_eq!(r.get::<_, String>(3), expected.balances[&key].to_string());
    }
    let next: String = since[0].get(4);
    assert!(since.iter().all(|r| r.get::<_, String>(4) == next));

    // Nothing since the next cursor; then exactly the key a new mint moves.
    assert_eq!(
        common::count(
            &mut f.client,
            &format!("SELECT * FROM balance_queue.balance_changes_since('{next}')")
        ),
        0
    );
    let mut mint = rows[0].clone();
    mint.tx_hash = format!("0x{}", "c1".repeat(32));
    mint.from = Some("0x0000000000000000000000000000000000000000".into());
    mint.to = Some("0x00000000000000000000000000000000000000c2".into());
    mint.value = Some("5".into());
    rindexer::write_all(&mut f.client, &f.table, &[mint.clone()], 10).unwrap();
    balance_queue_harness::drain(&mut f.client, 100);
    let after: Vec<(String, String)> = f
        .client
        .query(
            "SELECT holder_address, current_balance::text FROM balance_queue.balance_changes_since($1)",
            &[&next],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(after, vec![(mint.to.clone().unwrap(), "5".to_string())]);

    // Cursors that cannot be answered exactly are refused.
    let foreign = format!("1:00000000-0000-0000-0000-000000000000:{}", &next[39..]);
    for (cursor, code) in [("not a cursor", "22023"), (foreign.as_str(), "55000")] {
        assert_eq!(
            common::sqlstate(
                &mut f.client,
                &format!("SELECT * FROM balance_queue.balance_changes_since('{cursor}')")
            ),
            code,
            "{cursor}"
        );
    }
    f.client
        .batch_execute("TRUNCATE balance_queue.current_token_balances")
        .unwrap();
    assert_eq!(
        common::sqlstate(
            &mut f.client,
            &format!("SELECT * FROM balance_queue.balance_changes_since('{next}')")
        ),
        "55000",
        "a TRUNCATE names no keys: older cursors must reload"
    );
}

/// The worker's batches announce too, and the worker deletes changes older
/// than the retention, after which an older cursor is refused.
#[test]
fn the_worker_announces_and_expires_cursors_after_the_retention() {
    let (cluster, mut client) = common::preloaded(
        "change_feed_worker",
        &[
            "balance_queue.change_retention = 2",
            "balance_queue.naptime = 10",
        ],
    );
    let mut listener = cluster.connect("test");
    listener
        .batch_execute("LISTEN balance_queue_changes")
        .unwrap();
    let cursor: String = client
        .query_one("SELECT balance_queue.balance_changes_cursor()", &[])
        .unwrap()
        .get(0);
    let rows = data::read_rindexer_csv(&data::reth_csv_path());
    rindexer::write_all(&mut client, common::TABLE, &rows[..400], 400).unwrap();
    common::wait_until("the worker to drain", Duration::from_secs(30), || {
        common::pending(&mut client) == 0
    });
    let announced = listener
        .notifications()
        .timeout_iter(Duration::from_secs(2))
        .count()
        .unwrap();
    assert!(announced > 0, "the worker's batches announce");
    assert!(
        common::count(
            &mut client,
            &format!("SELECT * FROM balance_queue.balance_changes_since('{cursor}')")
        ) > 0
    );
    common::wait_until("the changes to expire", Duration::from_secs(30), || {
        common::sqlstate(
            &mut client,
            &format!("SELECT * FROM balance_queue.balance_changes_since('{cursor}')"),
        ) == "55000"
    });
    assert_eq!(
        common::count(&mut client, "SELECT 1 FROM balance_queue.balance_changes"),
        0
    );
    // A fresh cursor works, and the feed can be turned off.
    let before_gap: String = client
        .query_one("SELECT balance_queue.balance_changes_cursor()", &[])
        .unwrap()
        .get(0);
    common::alter_system(&mut client, &["balance_queue.change_feed = off"]);
    common::wait_until("the feed to turn off", Duration::from_secs(10), || {
        let mut c = cluster.connect("test");
        common::sqlstate(&mut c, "SELECT balance_queue.balance_changes_cursor()") == "55000"
    });
    // Balances that change while it is off leave a gap: once it is on
    // again, a cursor from before the gap is refused, not answered short.
    rindexer::write_all(&mut client, common::TABLE, &rows[400..600], 200).unwrap();
    common::wait_until("the worker to drain", Duration::from_secs(30), || {
        common::pending(&mut client) == 0
    });
    common::alter_system(&mut client, &["balance_queue.change_feed = on"]);
    common::wait_until(
        "the feed to refuse the cursor from before the gap",
        Duration::from_secs(10),
        || {
            let mut c = cluster.connect("test");
            common::sqlstate(
                &mut c,
                &format!("SELECT * FROM balance_queue.balance_changes_since('{before_gap}')"),
            ) == "55000"
        },
    );
}

#[test]
fn a_statement_writing_more_than_a_million_keys_is_recorded_in_parts_and_announced_whole() {
    // One row's arrays of about 19,000,000 keys passed Postgres's 1 GB
    // limit and failed the statement ("tuple is too big"): a bulk load of
    // a large chain failed every time. 1,000,001 keys make two parts.
    let mut f = common::attached_rindexer_table("change_feed_parts");
    let conn = f.cluster.conn_string("test");
    let (mut listener, cursor) = listen_from_now(&mut f.client, &conn);
    let token = format!("0x{:040x}", 1);
    let mut tx = f.client.transaction().unwrap();
    tx.execute(
        "INSERT INTO balance_queue.current_token_balances
                (chain_id, contract_address, holder_address, current_balance, last_updated_block)
         SELECT 1, $1, '0x' || lpad(to_hex(g), 40, '0'), g, 1
           FROM generate_series(1, 1000001) g",
        &[&token],
    )
    .unwrap();
    // A drain call in the same transaction announces what it recorded.
    tx.execute(
        "SELECT * FROM balance_queue.process_balance_update_queue(1)",
        &[],
    )
    .unwrap();
    tx.commit().unwrap();

    let parts: Vec<(i32, i32)> = f
        .client
        .query(
            "SELECT part, cardinality(holder_addresses) FROM balance_queue.balance_changes
              WHERE NOT unrecorded ORDER BY part",
            &[],
        )
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(parts, vec![(0, 1_000_000), (1, 1)]);

    let mut notifications = listener.notifications();
    let mut iter = notifications.timeout_iter(Duration::from_secs(5));
    let n = iter.next().unwrap().expect("the transaction is announced");
    let payload: Value = serde_json::from_str(n.payload()).unwrap();
    assert_eq!(payload["keys"], 1_000_001, "{payload}");
    assert_eq!(payload["token_count"], 1, "{payload}");
    assert!(payload["changes"].is_null(), "{payload}");
    assert!(iter.next().unwrap().is_none(), "announced once");

    let (keys, distinct, highest): (i64, i64, String) = {
        let r = f
            .client
            .query_one(
                "SELECT count(*), count(DISTINCT holder_address), max(current_balance)::text
                   FROM balance_queue.balance_changes_since($1)",
                &[&cursor],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(
        (keys, distinct, highest.as_str()),
        (1_000_001, 1_000_001, "1000001")
    );
}
