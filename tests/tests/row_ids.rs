//! Rows queued by id: an INSERT or COPY into a table with an integer primary
//! key (rindexer_id) queues one item per statement, and the drain reads the
//! rows back. Whatever happens to the rows in between (UPDATE, DELETE,
//! handle_reorg, a drain holding the item) every balance ends equal to the
//! rows that remain.

mod common;

use balance_queue_harness::{drain, rindexer, workload};
use std::time::Duration;

/// The statements waiting (their items of the first holder partition: a
/// statement is queued once per partition) and the rows they stand for
/// (the items' shares add up to the rows).
fn pending_items(client: &mut postgres::Client) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE coalesce(holder_partition, 0) = 0),
                    coalesce(sum(row_count), 0)::bigint FROM balance_queue.balance_update_queue
              WHERE status = 'pending' AND source_row_ids IS NOT NULL",
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

#[test]
fn changes_before_and_after_the_drain_follow_the_rows() {
    let mut f = common::attached_rindexer_table("row-ids");
    let rows = workload::generate(&workload::Shape {
        transfers: 3_000,
        tokens: 4,
        holders: 400,
        ..Default::default()
    });
    rindexer::write_all(&mut f.client, &f.table, &rows, 1000).unwrap();
    assert_eq!(
        pending_items(&mut f.client),
        (3, 3000),
        "one item per statement, standing for its 1,000 rows"
    );

    // Before the drain: change some rows, delete others, delete one whole
    // statement's rows.
    let t = &f.table;
    f.client
        .batch_execute(&format!(
            "UPDATE {t} SET value = '7' WHERE rindexer_id % 5 = 0;
             DELETE FROM {t} WHERE rindexer_id % 7 = 0;
             DELETE FROM {t} WHERE rindexer_id BETWEEN 1001 AND 2000;"
        ))
        .unwrap();
    assert_eq!(
        common::count(
            &mut f.client,
            "SELECT 1 FROM balance_queue.balance_update_queue
              WHERE status = 'pending' AND source_row_ids @> 7::bigint"
        ),
        0,
        "a deleted row's id is cut out of its pending item"
    );
    assert_eq!(
        common::count(
            &mut f.client,
            "SELECT 1 FROM balance_queue.balance_update_queue
              WHERE status = 'completed' AND error_message LIKE 'superseded: every row was deleted%'
                AND coalesce(holder_partition, 0) = 0"
        ),
        1,
        "the statement whose rows all went is superseded"
    );
    // No transfer-side item was queued for rows that never counted.
    assert_eq!(
        common::count(
            &mut f.client,
            "SELECT 1 FROM balance_queue.balance_update_queue WHERE source_change = -1"
        ),
        0
    );
    drain(&mut f.client, 700);
    common::assert_matches_sources(&mut f.client, &[t]);

    // After the drain: the same changes take counted rows back.
    f.client
        .batch_execute(&format!(
            "UPDATE {t} SET value = '11' WHERE rindexer_id % 11 = 0;
             DELETE FROM {t} WHERE rindexer_id % 13 = 0;"
        ))
        .unwrap();
    drain(&mut f.client, 700);
    common::assert_matches_sources(&mut f.client, &[t]);

    // handle_reorg with rows still waiting in an item: it re-queues only
    // the rows already counted, the item brings the rest exactly once.
    let more = workload::generate(&workload::Shape {
        transfers: 800,
        tokens: 4,
        holders: 400,
        seed: 7,
        ..Default::default()
    });
    rindexer::write_all(&mut f.client, t, &more, 400).unwrap();
    let fork = rows[rows.len() / 2].block_number as i64;
    f.client
        .query_one("SELECT * FROM balance_queue.handle_reorg(1, $1)", &[&fork])
        .unwrap();
    drain(&mut f.client, 500);
    common::assert_matches_sources(&mut f.client, &[t]);
}

#[test]
fn a_delete_waits_for_the_drain_holding_its_rows() {
    let f = common::attached_rindexer_table("row-ids-wait");
    let mut writer = f.cluster.connect("test");
    let rows = workload::generate(&workload::Shape {
        transfers: 1_000,
        tokens: 3,
        holders: 200,
        ..Default::default()
    });
    rindexer::write_all(&mut writer, &f.table, &rows, 5000).unwrap();

    // A drain applies the item but has not committed yet.
    let mut drainer = f.cluster.connect("test");
    let mut tx = drainer.transaction().unwrap();
    tx.query_one(
        "SELECT * FROM balance_queue.process_balance_update_queue(5000)",
        &[],
    )
    .unwrap();

    // rindexer's reorg rollback of half the rows meanwhile.
    let table = f.table.clone();
    let conn = f.cluster.conn_string("test");
    let delete = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
        c.execute(
            &format!("DELETE FROM {table} WHERE rindexer_id % 2 = 0"),
            &[],
        )
        .unwrap()
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !delete.is_finished(),
        "the DELETE waits for the drain holding its rows' item"
    );
    tx.commit().unwrap();
    assert_eq!(delete.join().unwrap(), 500);

    // Those rows were applied, so the DELETE took them back.
    drain(&mut writer, 1000);
    common::assert_matches_sources(&mut writer, &[&f.table]);
}

#[test]
fn truncate_and_detach_take_back_only_the_rows_counted() {
    let mut f = common::attached_rindexer_table("row-ids-truncate");
    let t = f.table.clone();
    let rows = workload::generate(&workload::Shape {
        transfers: 2_000,
        tokens: 3,
        holders: 300,
        ..Default::default()
    });
    let negative_copies = "SELECT 1 FROM balance_queue.applied_transfers WHERE copies < 0";

    // Two statements; only the first one's rows are applied, then TRUNCATE.
    rindexer::write_all(&mut f.client, &t, &rows, 1000).unwrap();
    f.client
        .query_one(
            "SELECT * FROM balance_queue.process_balance_update_queue(1000)",
            &[],
        )
        .unwrap();
    assert_eq!(pending_items(&mut f.client), (1, 1000));
    f.client.batch_execute(&format!("TRUNCATE {t}")).unwrap();
    drain(&mut f.client, 5000);
    common::assert_matches_sources(&mut f.client, &[&t]);
    assert_eq!(
        common::count(&mut f.client, negative_copies),
        0,
        "the rows never applied were not taken back"
    );
    // rindexer re-indexes the same logs: every one counts again.
    rindexer::write_all(&mut f.client, &t, &rows, 1000).unwrap();
    drain(&mut f.client, 5000);
    common::assert_matches_sources(&mut f.client, &[&t]);

    // The same through detach and a re-attach with backfill.
    let more = workload::generate(&workload::Shape {
        transfers: 1_000,
        tokens: 3,
        holders: 300,
        seed: 11,
        ..Default::default()
    });
    rindexer::write_all(&mut f.client, &t, &more, 1000).unwrap();
    f.client
        .query_one(
            "SELECT balance_queue.detach_transfer_table($1::text::regclass)",
            &[&t],
        )
        .unwrap();
    drain(&mut f.client, 5000);
    assert_eq!(common::count(&mut f.client, negative_copies), 0);
    assert_eq!(
        common::count(
            &mut f.client,
            "SELECT 1 FROM balance_queue.current_token_balances WHERE current_balance <> 0"
        ),
        0,
        "a detached table's rows leave the balances"
    );
    f.client
        .query_one(
            "SELECT balance_queue.attach_transfer_table($1::text::regclass)",
            &[&t],
        )
        .unwrap();
    drain(&mut f.client, 5000);
    common::assert_matches_sources(&mut f.client, &[&t]);
}
