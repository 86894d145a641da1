//! Bad input never blocks ingestion and is never lost: the source row lands,
//! a failed queue item names it and says why, and good rows still apply.

mod common;

use balance_queue_harness::recompute::{self, Source};
use balance_queue_harness::rindexer::TransferRow;
use balance_queue_harness::{drain, rindexer, workload};
use std::collections::HashSet;

/// Rows a broken source could send, each with the reason it must name.
fn bad_rows(base: &TransferRow) -> Vec<(TransferRow, &'static str)> {
    let with = |f: &dyn Fn(&mut TransferRow), log_index: u32| {
        let mut r = base.clone();
        r.tx_hash = format!("0x{:064x}", 0xbad000 + log_index);
        r.log_index = log_index.to_string();
        f(&mut r);
        r
    };
    let two_pow_256 =
        "115792089237316195423570985008687907853269984665640564039457584007913129639936";
    vec![
        (
            with(&|r| r.from = Some("0x12345".into()), 1),
            "malformed sender address",
        ),
        (
            with(
                &|r| r.to = Some("0xzz22222222222222222222222222222222222222".into()),
                2,
            ),
            "malformed receiver address",
        ),
        (with(&|r| r.from = None, 3), "NULL sender"),
        (with(&|r| r.to = None, 4), "NULL receiver"),
        (
            with(&|r| r.value = Some("-5".into()), 5),
            "not a non-negative integer below 2^256",
        ),
        (
            with(&|r| r.value = Some("1.5".into()), 6),
            "not a non-negative integer below 2^256",
        ),
        (
            with(&|r| r.value = Some(two_pow_256.into()), 7),
            "not a non-negative integer below 2^256",
        ),
        (
            with(&|r| r.value = None, 8),
            "not a non-negative integer below 2^256",
        ),
        (
            with(&|r| r.network = "mars".into(), 9),
            "unknown network 'mars'",
        ),
        (with(&|r| r.log_index = "abc".into(), 10), "log_index 'abc'"),
    ]
}

fn check_bad_rows_path(name: &str, good_rows: usize) {
    let mut f = common::attached_rindexer_table(name);
    let good = workload::generate(&workload::Shape {
        transfers: good_rows,
        tokens: 3,
        holders: 100,
        ..Default::default()
    });
    let bad = bad_rows(&good[1]);
    let mut batch: Vec<TransferRow> = good.clone();
    // Bad rows in the middle of the batch, as a single statement.
    for (i, (row, _)) in bad.iter().enumerate() {
        batch.insert((i * 7) % batch.len(), row.clone());
    }
    rindexer::write_batch(&mut f.client, &f.table, &batch)
        .expect("bad rows never fail the indexer's write");
    assert_eq!(
        common::count(&mut f.client, &format!("SELECT 1 FROM {}", f.table)),
        batch.len() as i64,
        "every row lands"
    );

    // Rows queued by rindexer_id are checked when the drain reads them back.
    let (_, drain_failed) = drain(&mut f.client, 1000);
    assert_eq!(
        drain_failed,
        bad.len() as i64,
        "the drain reports each bad row"
    );
    let failed = f
        .client
        .query(
            "SELECT coalesce(triggered_by_tx, ''), error_message FROM balance_queue.balance_update_queue
              WHERE status = 'failed' ORDER BY id",
            &[],
        )
        .unwrap();
    assert_eq!(failed.len(), bad.len(), "one failed item per bad row");
    for (row, reason) in &bad {
        let message = failed
            .iter()
            .map(|r| r.get::<_, String>(1))
            .find(|m| m.contains(&row.tx_hash))
            .unwrap_or_else(|| panic!("no failed item names tx {}", row.tx_hash));
        assert!(
            message.contains(&format!("log_index {}", row.log_index)),
            "{message}"
        );
        assert!(message.contains(reason), "{message} should say {reason}");
        assert!(
            message.contains(&f.table),
            "{message} should name the table"
        );
    }

    let expected = recompute::recompute(&mut f.client, &[Source::rindexer(&f.table)]);
    assert_eq!(expected.invalid_rows, bad.len());
    let comparison = recompute::compare(&mut f.client, &expected, &HashSet::new());
    assert!(
        comparison.all_match(),
        "mismatches: {:?}",
        comparison.mismatches
    );

    // Deleting the bad rows takes nothing back: they never counted.
    f.client
        .execute(
            &format!("DELETE FROM {} WHERE tx_hash LIKE '0x0000%bad%'", f.table),
            &[],
        )
        .unwrap();
    drain(&mut f.client, 1000);
    let comparison = recompute::compare(&mut f.client, &expected, &HashSet::new());
    assert!(
        comparison.all_match(),
        "mismatches after deleting bad rows: {:?}",
        comparison.mismatches
    );
}

#[test]
fn bad_rows_in_a_binary_copy_are_recorded_and_do_not_block() {
    check_bad_rows_path("bad-copy", 500);
}

#[test]
fn bad_rows_in_a_small_insert_are_recorded_and_do_not_block() {
    check_bad_rows_path("bad-insert", 40);
}
