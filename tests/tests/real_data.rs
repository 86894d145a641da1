//! Both real exports in `../shared/data/`, loaded through rindexer's own
//! write path (binary COPY batches), drained, and compared with an
//! independent recomputation from the raw rows.

mod common;

use balance_queue_harness::recompute::{self, Source};
use balance_queue_harness::{data, drain, rindexer};
use std::collections::HashSet;

#[test]
fn reth_export_matches_recomputation_and_counts_duplicates_once() {
    let mut f = common::attached_rindexer_table("reth");
    let rows = data::read_rindexer_csv(&data::reth_csv_path());
    assert_eq!(rows.len(), 15_818, "the export holds 15,818 rows");
    rindexer::write_all(&mut f.client, &f.table, &rows, 5000).expect("COPY never fails");

    let (processed, failed) = drain(&mut f.client, 1000);
    assert!(processed > 0);
    assert_eq!(failed, 0, "the rETH export has no bad rows");

    let expected = recompute::recompute(&mut f.client, &[Source::rindexer(&f.table)]);
    assert_eq!(expected.distinct_transfers, 7_909);
    assert_eq!(
        expected.duplicate_rows, 7_909,
        "every transfer is in the export twice"
    );
    let comparison = recompute::compare(&mut f.client, &expected, &HashSet::new());
    assert!(
        comparison.all_match(),
        "mismatches: {:?}",
        comparison.mismatches
    );
    assert_eq!(comparison.keys, 2_727);

    // Each transfer side is counted once, with two copies seen.
    let ledger_sides = common::count(
        &mut f.client,
        "SELECT 1 FROM balance_queue.applied_transfers",
    );
    let two_copies = common::count(
        &mut f.client,
        "SELECT 1 FROM balance_queue.applied_transfers WHERE copies = 2",
    );
    assert_eq!(ledger_sides, two_copies);
    let transfers = common::count(
        &mut f.client,
        "SELECT DISTINCT tx_hash, log_index FROM balance_queue.applied_transfers",
    );
    assert_eq!(transfers, 7_909);

    // The range starts mid-history: negative balances are kept, not clamped.
    let negative_expected = expected
        .balances
        .values()
        .filter(|b| b.sign() == num_bigint::Sign::Minus)
        .count() as i64;
    let negative_stored = common::count(
        &mut f.client,
        "SELECT 1 FROM balance_queue.current_token_balances WHERE current_balance < 0",
    );
    assert!(negative_expected > 0);
    assert_eq!(negative_stored, negative_expected);
}

#[test]
fn etl_export_fails_only_the_out_of_range_keys() {
    let mut f = common::attached_rindexer_table("etl");
    let rows = data::read_etl_csv(&data::etl_csv_path());
    assert_eq!(rows.len(), 14_323);
    rindexer::write_all(&mut f.client, &f.table, &rows, 5000).expect("COPY never fails");

    // One batch holds the whole queue, so each key's sum is checked whole.
    // An out-of-range key is retried after the backoff (here none) before
    // its items stay failed.
    f.client
        .batch_execute("SET balance_queue.retry_backoff = 0")
        .unwrap();
    let (processed, failed) = drain(&mut f.client, 100_000);
    assert!(processed > 0 && failed > 0);

    let expected = recompute::recompute(&mut f.client, &[Source::rindexer(&f.table)]);
    let out_of_range = recompute::out_of_range_keys(&expected);
    assert_eq!(
        out_of_range.len(),
        7,
        "the ethereum-etl file has 7 keys summing past 2^256-1"
    );

    let failed_keys: HashSet<recompute::Key> = f
        .client
        .query(
            "SELECT DISTINCT chain_id, contract_address, holder_address
               FROM balance_queue.balance_update_queue WHERE status = 'failed'",
            &[],
        )
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(failed_keys, out_of_range);

    for row in f
        .client
        .query(
            "SELECT triggered_by_tx, triggered_by_log_index, error_message
               FROM balance_queue.balance_update_queue WHERE status = 'failed'",
            &[],
        )
        .unwrap()
    {
        let (tx, log_index, message): (String, i64, String) = (row.get(0), row.get(1), row.get(2));
        assert!(message.contains(&format!("tx_hash {tx}")), "{message}");
        assert!(
            message.contains(&format!("log_index {log_index}")),
            "{message}"
        );
        assert!(message.contains("2^256"), "{message}");
        assert!(message.contains("after 3 attempt(s)"), "{message}");
    }
    let stored_out_of_range = out_of_range
        .iter()
        .filter(|(chain, contract, holder)| {
            common::count(
                &mut f.client,
                &format!(
                    "SELECT 1 FROM balance_queue.current_token_balances
                      WHERE chain_id = {chain} AND contract_address = '{contract}'
                        AND holder_address = '{holder}' AND current_balance <> 0"
                ),
            ) > 0
        })
        .count();
    assert_eq!(
        stored_out_of_range, 0,
        "an out-of-range sum is never stored"
    );

    let comparison = recompute::compare(&mut f.client, &expected, &out_of_range);
    assert!(
        comparison.all_match(),
        "mismatches: {:?}",
        comparison.mismatches
    );
    assert!(comparison.keys > 10_000);
}
