//! `pg_dump -Fc` then `pg_restore --exit-on-error --single-transaction` of a
//! database using the extension: the restore succeeds although CREATE
//! EXTENSION preloads the reference rows again, every user change to
//! reference data survives, and the restored queue, ledger and balances go
//! on exactly: waiting items apply once, new rows, replays and a reorg
//! rollback all land exact.

mod common;

use balance_queue_harness::rindexer::{self, TransferRow};
use balance_queue_harness::{data, drain};
use postgres::Client;
use std::process::Command;

/// The user's changes to reference data, as one comparable text per table.
fn user_changes(client: &mut Client) -> Vec<String> {
    [
        "SELECT string_agg(format('%s %s %s %s %s', chain_id, network_name, display_name,
                                  confirmation_depth, head_block), '; ' ORDER BY chain_id)
           FROM balance_queue.chain_registry WHERE chain_id IN (1, 8453, 999999)",
        "SELECT string_agg(format('%s %s %s %s', chain_id, contract_address, symbol, price_usd), '; '
                           ORDER BY chain_id, contract_address)
           FROM balance_queue.token_metadata
          WHERE price_usd IS DISTINCT FROM 1 OR symbol = 'rETH'",
        "SELECT string_agg(format('%s %s %s', chain_id, batch_size, processing_interval_seconds), '; '
                           ORDER BY chain_id NULLS FIRST)
           FROM balance_queue.queue_processing_config",
        "SELECT count(*)::text FROM pg_inherits
          WHERE inhparent = 'balance_queue.current_token_balances'::regclass",
    ]
    .iter()
    .map(|sql| {
        client
            .query_one(*sql, &[])
            .unwrap()
            .get::<_, Option<String>>(0)
            .unwrap_or_default()
    })
    .collect()
}

/// Every balance, in key order.
fn balances(client: &mut Client) -> Vec<(i32, String, String, String)> {
    client
        .query(
            "SELECT chain_id, contract_address, holder_address, current_balance::text
               FROM balance_queue.current_token_balances ORDER BY 1, 2, 3",
            &[],
        )
        .unwrap()
        .into_iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect()
}

/// Queue, ledger and balances, summed up.
fn state(client: &mut Client) -> Vec<i64> {
    [
        "SELECT count(*) FROM balance_queue.balance_update_queue WHERE status = 'pending'",
        "SELECT coalesce(sum(row_count), 0) FROM balance_queue.balance_update_queue WHERE status = 'pending'",
        "SELECT count(*) FROM balance_queue.applied_transfers",
        "SELECT count(*) FROM balance_queue.current_token_balances",
        "SELECT count(*) FROM balance_queue.attached_sources",
    ]
    .iter()
    .map(|sql| client.query_one(*sql, &[]).unwrap().get::<_, i64>(0))
    .collect()
}

#[test]
fn dump_and_restore_keep_user_changes_and_the_queue_goes_on_exactly() {
    let mut f = common::attached_rindexer_table("dump");
    let rows: Vec<TransferRow> = data::read_rindexer_csv(&data::reth_csv_path());
    let (applied, rest) = rows.split_at(rows.len() * 6 / 10);
    let (waiting, later) = rest.split_at(rest.len() / 2);

    // Ingest and drain, then leave a statement's items waiting.
    rindexer::write_all(&mut f.client, &f.table, applied, 5000).unwrap();
    drain(&mut f.client, 5000);
    rindexer::write_all(&mut f.client, &f.table, waiting, 5000).unwrap();

    // The user's changes to reference data.
    f.client
        .batch_execute(
            "SELECT balance_queue.add_chain(999999, 'devnet', 'Dev Net', 5, true, 'DEV');
             UPDATE balance_queue.chain_registry SET confirmation_depth = 12 WHERE chain_id = 8453;
             UPDATE balance_queue.token_metadata SET price_usd = 0.9995
              WHERE chain_id = 1 AND contract_address = '0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48';
             INSERT INTO balance_queue.token_metadata (chain_id, contract_address, symbol, decimals, price_usd)
             VALUES (1, '0xae78736cd615f374d3085123a210448e74fc6393', 'rETH', 18, 2500);
             UPDATE balance_queue.queue_processing_config SET batch_size = 321 WHERE chain_id = 1;
             INSERT INTO balance_queue.queue_processing_config (chain_id, batch_size) VALUES (999999, 7);",
        )
        .unwrap();
    // An exposure to rindexer's GraphQL API and a change-feed cursor.
    f.client
        .batch_execute("SELECT balance_queue.expose_graphql('rindexer_test_erc_20')")
        .unwrap();
    let cursor: String = f
        .client
        .query_one("SELECT balance_queue.balance_changes_cursor()", &[])
        .unwrap()
        .get(0);
    let changes = user_changes(&mut f.client);
    let before = state(&mut f.client);
    assert!(before[0] > 0, "items are waiting when the dump is taken");
    assert!(
        changes[0].contains("8453 base Base 12") && changes[0].contains("999999 devnet Dev Net 5"),
        "{changes:?}"
    );

    let dump =
        std::env::temp_dir().join(format!("balance_queue-dump-{}.pgdump", std::process::id()));
    f.cluster
        .pg_dump("test", &["-Fc", "-f", dump.to_str().unwrap()]);
    let mut admin = f.cluster.connect("postgres");
    admin.batch_execute("CREATE DATABASE restored").unwrap();
    let restore = Command::new(f.cluster.bindir().join("pg_restore"))
        .args(["--exit-on-error", "--single-transaction", "-d"])
        .arg(f.cluster.conn_string("restored"))
        .arg(&dump)
        .output()
        .expect("run pg_restore");
    let _ = std::fs::remove_file(&dump);
    assert!(
        restore.status.success(),
        "pg_restore --exit-on-error --single-transaction failed: {}",
        String::from_utf8_lossy(&restore.stderr)
    );

    let mut r = f.cluster.connect("restored");
    assert_eq!(user_changes(&mut r), changes, "every user change survives");
    assert_eq!(
        state(&mut r),
        before,
        "queue, ledger and balances restored as they were"
    );
    assert_eq!(
        balances(&mut r),
        balances(&mut f.client),
        "balances restored to the wei"
    );

    // Token statistics come back with the balances, not counted twice.
    common::assert_token_stats_match(&mut r);

    // The GraphQL wrappers come back still dropped with the extension; the
    // change feed starts afresh, so a cursor of the dumped database is
    // refused rather than answered with another cluster's transaction ids.
    assert_eq!(
        common::count(
            &mut r,
            "SELECT 1 FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
              JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE d.deptype = 'x' AND n.nspname = 'rindexer_test_erc_20'"
        ),
        4
    );
    assert_eq!(
        common::count(&mut r, "SELECT 1 FROM balance_queue.graphql_exposures"),
        1
    );
    assert_eq!(
        common::sqlstate(
            &mut r,
            &format!("SELECT * FROM balance_queue.balance_changes_since('{cursor}')")
        ),
        "55000"
    );

    // The waiting items apply once; then new rows, replays of applied rows
    // (rindexer after a crash) and a reorg rollback of a block range.
    drain(&mut r, 5000);
    rindexer::write_all(&mut r, &f.table, later, 5000).unwrap();
    rindexer::write_batch(&mut r, &f.table, &applied[..80]).unwrap();
    let (from, to) = (applied[100].block_number, applied[400].block_number);
    assert!(common::delete_blocks(&mut r, &f.table, from, to) > 0);
    drain(&mut r, 5000);
    common::assert_matches_sources(&mut r, &[&f.table]);
    common::assert_token_stats_match(&mut r);
    assert_eq!(
        common::count(
            &mut r,
            "SELECT 1 FROM balance_queue.balance_update_queue WHERE status <> 'completed'"
        ),
        0,
        "nothing left waiting or failed"
    );
}
