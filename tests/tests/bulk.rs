//! The bulk path against real servers: a chain with no counted state and a
//! backlog above `balance_queue.bulk_threshold` is applied in one bulk
//! load, exactly (replays and rindexer's reorg deletes included), redone
//! exactly after a crash in its middle, not repeated by another worker after
//! it failed (nor holding its chain when its failure could not be recorded),
//! and used by `handle_reorg(chain, 0)`.

mod common;

use balance_queue_harness::rindexer;
use balance_queue_harness::workload;
use common::{TABLE, alter_system, pending, preloaded, scalar_i64, wait_until};
use postgres::Client;
use std::time::Duration;

/// A statement trigger refusing a ledger insert of more than 10,000 rows:
/// a bulk load (one insert of every side) fails, batches of 2,000
/// transfers pass.
const REFUSE_LARGE_LEDGER_INSERTS: &str =
    "CREATE FUNCTION public.refuse_large_ledger_inserts() RETURNS trigger
         LANGUAGE plpgsql AS $$
         BEGIN
             IF (SELECT count(*) FROM new_rows) > 10000 THEN
                 RAISE EXCEPTION 'refused: more than 10,000 ledger rows in one statement';
             END IF;
             RETURN NULL;
         END $$;
         CREATE TRIGGER refuse_large_ledger_inserts
             AFTER INSERT ON balance_queue.applied_transfers
             REFERENCING NEW TABLE AS new_rows
             FOR EACH STATEMENT EXECUTE FUNCTION public.refuse_large_ledger_inserts();";

/// Bulk loads by status, e.g. `[("done", 1)]`.
fn bulk_loads(client: &mut Client) -> Vec<(String, i64)> {
    client
        .query(
            "SELECT status, count(*) FROM balance_queue.bulk_loads GROUP BY status ORDER BY status",
            &[],
        )
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// The indexes and constraints of the ledger and the balances (and of each
/// chain's partition of them), as their definitions: a bulk load into empty
/// tables drops and builds them again.
fn index_definitions(client: &mut Client) -> Vec<String> {
    client
        .query(
            "SELECT pg_get_indexdef(i.indexrelid)
                    || coalesce(' constraint ' || c.conname || ' ' || pg_get_constraintdef(c.oid), '')
                    || ' valid ' || i.indisvalid || ' ready ' || i.indisready
               FROM pg_index i
               LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid
              WHERE i.indrelid IN ('balance_queue.applied_transfers'::regclass,
                                   'balance_queue.current_token_balances'::regclass)
                 OR i.indrelid IN (SELECT inhrelid FROM pg_inherits
                                    WHERE inhparent = 'balance_queue.current_token_balances'::regclass)
              ORDER BY 1",
            &[],
        )
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect()
}

/// Whether the done bulk loads built the indexes after their rows, oldest first.
fn indexes_rebuilt(client: &mut Client) -> Vec<bool> {
    client
        .query(
            "SELECT indexes_rebuilt FROM balance_queue.bulk_loads WHERE status = 'done' ORDER BY id",
            &[],
        )
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect()
}

/// Writes `transfers` generated transfers the rindexer way with the worker
/// paused (the cluster starts with it paused: see [`PAUSED`]), replays the first 1% of every batch (rindexer's crash replay),
/// and deletes the newest blocks as rindexer's reorg rollback does. Returns
/// the number of rows left in the table.
fn paused_backlog(client: &mut Client, transfers: usize) -> i64 {
    alter_system(client, &["balance_queue.enabled = off"]);
    let rows = workload::generate(&workload::Shape {
        transfers,
        tokens: 20,
        holders: 5_000,
        ..Default::default()
    });
    for chunk in rows.chunks(5000) {
        rindexer::write_batch(client, TABLE, chunk).unwrap();
        rindexer::write_batch(client, TABLE, &chunk[..chunk.len() / 100]).unwrap();
    }
    client
        .batch_execute(&format!(
            "DELETE FROM {TABLE} WHERE block_number >= (SELECT max(block_number) - 20 FROM {TABLE})"
        ))
        .unwrap();
    scalar_i64(client, &format!("SELECT count(*) FROM {TABLE}"))
}

/// Set at server start, so no worker can drain before the backlog is
/// whole: a pause set by reload reaches the worker asynchronously, and the
/// suite once saw a worker drain the first statements before it read it.
const PAUSED: &str = "balance_queue.enabled = off";

#[test]
fn a_large_backlog_is_applied_in_one_exact_bulk_load() {
    let (_cluster, mut c) = preloaded("bulk", &["balance_queue.bulk_threshold = 20000", PAUSED]);
    let rows = paused_backlog(&mut c, 60_000);
    assert!(rows > 59_000, "{rows} rows left");
    let indexes = index_definitions(&mut c);
    // The ledger's two, the balances' three, and three per partition (one
    // per chain and the default one).
    let partitions = scalar_i64(
        &mut c,
        "SELECT count(*) FROM pg_inherits
          WHERE inhparent = 'balance_queue.current_token_balances'::regclass",
    );
    assert!(partitions > 1);
    assert_eq!(indexes.len() as i64, 2 + 3 + 3 * partitions, "{indexes:#?}");
    alter_system(&mut c, &["balance_queue.enabled = on"]);
    wait_until("the backlog to drain", Duration::from_secs(120), || {
        pending(&mut c) == 0
    });
    assert_eq!(bulk_loads(&mut c), vec![("done".to_string(), 1)]);
    // Both tables were empty: the load built their indexes after the rows,
    // and they are back as they were (the batches below rely on the keys).
    assert_eq!(indexes_rebuilt(&mut c), vec![true]);
    assert_eq!(index_definitions(&mut c), indexes);
    let (queued, applied, balances): (i64, i64, i64) = {
        let r = c
            .query_one(
                "SELECT transfers_queued, transfers_applied, balances_written FROM balance_queue.bulk_loads",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert!(
        queued >= 20_000 && applied >= queued,
        "{queued} queued, {applied} applied"
    );
    assert_eq!(
        balances,
        scalar_i64(
            &mut c,
            "SELECT count(*) FROM balance_queue.current_token_balances"
        )
    );
    common::assert_matches_sources(&mut c, &[TABLE]);
    let unverified = scalar_i64(
        &mut c,
        "SELECT count(*) FROM balance_queue.verify_balances()",
    );
    assert_eq!(unverified, 0, "verify_balances after the bulk load");

    // The chain now has counted state: what follows goes batch by batch,
    // on top of the bulk's ledger (a replay of old rows counts nothing).
    let replay: Vec<_> = workload::generate(&workload::Shape {
        transfers: 30_000,
        tokens: 20,
        holders: 5_000,
        ..Default::default()
    })
    .into_iter()
    .take(3000)
    .collect();
    rindexer::write_batch(&mut c, TABLE, &replay).unwrap();
    wait_until("the replay to drain", Duration::from_secs(60), || {
        pending(&mut c) == 0
    });
    assert_eq!(bulk_loads(&mut c), vec![("done".to_string(), 1)]);
    common::assert_matches_sources(&mut c, &[TABLE]);
}

#[test]
fn a_crash_in_the_middle_of_a_bulk_load_is_redone_exactly() {
    let (cluster, mut c) = preloaded(
        "bulk-crash",
        &[
            "balance_queue.bulk_threshold = 20000",
            "balance_queue.workers = 1",
            PAUSED,
        ],
    );
    paused_backlog(&mut c, 250_000);
    let indexes = index_definitions(&mut c);
    alter_system(&mut c, &["balance_queue.enabled = on"]);
    wait_until("a bulk load to start", Duration::from_secs(60), || {
        scalar_i64(
            &mut c,
            "SELECT count(*) FROM balance_queue.bulk_loads WHERE status = 'running'",
        ) > 0
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        scalar_i64(
            &mut c,
            "SELECT count(*) FROM balance_queue.source_progress
              WHERE bulk_load_since IS NOT NULL AND rows_waiting > 0"
        ),
        1,
        "source_progress says a bulk load is applying the waiting rows"
    );
    // The tables were empty, so the load holds them exclusively (their
    // indexes dropped until it ends): nothing of it is visible, and a
    // reader waits for it.
    assert_eq!(
        scalar_i64(
            &mut c,
            "SELECT count(*) FROM pg_locks l JOIN balance_queue.bulk_loads b ON b.backend_pid = l.pid
              WHERE b.status = 'running' AND l.granted AND l.mode = 'AccessExclusiveLock'
                AND l.relation IN ('balance_queue.applied_transfers'::regclass,
                                   'balance_queue.current_token_balances'::regclass)"
        ),
        2,
        "the running load holds the ledger and the balances"
    );
    c.batch_execute("SET lock_timeout = '200ms'").unwrap();
    let read = c.query_one(
        "SELECT count(*) FROM balance_queue.current_token_balances",
        &[],
    );
    assert_eq!(
        read.unwrap_err().code(),
        Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE),
        "a reader waits for the load"
    );
    drop(c);
    cluster.stop("immediate");
    cluster.start_again();
    let mut c = cluster.connect("test");
    wait_until(
        "the bulk load to be redone",
        Duration::from_secs(300),
        || pending(&mut c) == 0,
    );
    assert_eq!(
        bulk_loads(&mut c),
        vec![("done".to_string(), 1), ("interrupted".to_string(), 1)],
        "the crashed load is reported interrupted, its redo done"
    );
    // The crashed load's drops rolled back with it; the redo dropped and
    // built them again.
    assert_eq!(indexes_rebuilt(&mut c), vec![true]);
    assert_eq!(index_definitions(&mut c), indexes);
    common::assert_matches_sources(&mut c, &[TABLE]);
}

/// Two workers (the default) drain a backlog of 60,000 transfers whose bulk
/// load fails (see [`REFUSE_LARGE_LEDGER_INSERTS`]) while batches of 2,000
/// pass, after `setup` (SQL) runs: exactly one bulk load, `failed`, and
/// every balance exact. Returns the load's message.
fn drain_past_a_failed_bulk_load(name: &str, setup: &str) -> String {
    let (_cluster, mut c) = preloaded(
        name,
        &[
            "balance_queue.bulk_threshold = 20000",
            "balance_queue.batch_size = 2000",
            PAUSED,
        ],
    );
    c.batch_execute(REFUSE_LARGE_LEDGER_INSERTS).unwrap();
    c.batch_execute(setup).unwrap();
    paused_backlog(&mut c, 60_000);
    alter_system(&mut c, &["balance_queue.enabled = on"]);
    wait_until("the backlog to drain", Duration::from_secs(180), || {
        pending(&mut c) == 0
    });
    assert_eq!(bulk_loads(&mut c), vec![("failed".to_string(), 1)]);
    common::assert_matches_sources(&mut c, &[TABLE]);
    c.query_one("SELECT message FROM balance_queue.bulk_loads", &[])
        .unwrap()
        .get(0)
}

#[test]
fn a_failed_bulk_load_is_not_repeated_by_the_other_worker() {
    // The failure is recorded in bulk_loads, which every worker reads
    // before a bulk load: the other worker, idle while the first held the
    // chain, used to start the same load again as soon as the first gave up.
    let message = drain_past_a_failed_bulk_load("bulk-failed", "");
    assert!(
        message.contains("more than 10,000 ledger rows"),
        "{message}"
    );
}

#[test]
fn a_bulk_load_whose_failure_cannot_be_recorded_does_not_hold_its_chain() {
    // A trigger on bulk_loads refuses the update that records the load's
    // error, so its row stays 'running' under a live worker. Batches used
    // to leave the chain alone until the worker restarted; the worker now
    // settles its own row before its next pass.
    let message = drain_past_a_failed_bulk_load(
        "bulk-unrecorded",
        "CREATE FUNCTION public.refuse_recording_the_refusal() RETURNS trigger
         LANGUAGE plpgsql AS $$
         BEGIN
             RAISE EXCEPTION 'refused: the failure is not recorded';
         END $$;
         CREATE TRIGGER refuse_recording_the_refusal
             BEFORE UPDATE ON balance_queue.bulk_loads
             FOR EACH ROW WHEN (NEW.message LIKE 'refused%')
             EXECUTE FUNCTION public.refuse_recording_the_refusal();",
    );
    assert!(message.contains("so did recording its error"), "{message}");
}

#[test]
fn handle_reorg_from_block_zero_rebuilds_through_the_bulk_path() {
    let (_cluster, mut c) = preloaded(
        "bulk-rebuild",
        &["balance_queue.bulk_threshold = 20000", PAUSED],
    );
    paused_backlog(&mut c, 40_000);
    // Drain batch by batch first: the rebuild, not the first drain, is
    // what this test watches.
    alter_system(
        &mut c,
        &[
            "balance_queue.bulk_threshold = 0",
            "balance_queue.enabled = on",
        ],
    );
    wait_until("the first drain", Duration::from_secs(120), || {
        pending(&mut c) == 0
    });
    assert!(bulk_loads(&mut c).is_empty());
    // A counted balance the sources no longer justify: the rebuild forgets it.
    c.batch_execute(
        "UPDATE balance_queue.current_token_balances SET current_balance = current_balance + 1
          WHERE (chain_id, contract_address, holder_address) =
                (SELECT chain_id, contract_address, holder_address
                   FROM balance_queue.current_token_balances LIMIT 1)",
    )
    .unwrap();
    // Readers must not wait for this rebuild: the indexes stay.
    alter_system(
        &mut c,
        &[
            "balance_queue.bulk_threshold = 20000",
            "balance_queue.bulk_rebuilds_indexes = off",
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let progress = |c: &mut Client| -> (i64, i64, i64) {
        let r = c
            .query_one(
                "SELECT rows_queued, rows_applied, rows_waiting FROM balance_queue.source_progress",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    let (queued_before, applied_before, _) = progress(&mut c);
    let requeued = scalar_i64(
        &mut c,
        "SELECT items_requeued FROM balance_queue.handle_reorg(1, 0)",
    );
    assert!(requeued > 0);
    // The rows queued again are taken off rows_applied: the table's rows
    // are queued once, not twice.
    assert_eq!(
        progress(&mut c),
        (queued_before, applied_before - requeued, requeued),
        "source_progress right after the rebuild call"
    );
    wait_until("the rebuild to drain", Duration::from_secs(120), || {
        pending(&mut c) == 0
    });
    assert_eq!(bulk_loads(&mut c), vec![("done".to_string(), 1)]);
    // The rebuild emptied the only chain's ledger and balances, but the
    // setting kept the indexes.
    assert_eq!(indexes_rebuilt(&mut c), vec![false]);
    assert_eq!(progress(&mut c), (queued_before, queued_before, 0));
    common::assert_matches_sources(&mut c, &[TABLE]);
}

#[test]
fn a_bulk_load_keeps_the_indexes_while_a_reader_holds_the_balances() {
    let (cluster, mut c) = preloaded(
        "bulk-reader",
        &["balance_queue.bulk_threshold = 20000", PAUSED],
    );
    paused_backlog(&mut c, 40_000);
    let indexes = index_definitions(&mut c);
    // A long report on the balances: dropping their indexes would wait for
    // it, and every reader after it would wait behind that.
    let mut reader = cluster.connect("test");
    let mut report = reader.transaction().unwrap();
    report
        .batch_execute("SELECT count(*) FROM balance_queue.current_token_balances")
        .unwrap();
    alter_system(&mut c, &["balance_queue.enabled = on"]);
    wait_until(
        "the backlog to drain beside the report",
        Duration::from_secs(120),
        || pending(&mut c) == 0,
    );
    assert_eq!(bulk_loads(&mut c), vec![("done".to_string(), 1)]);
    assert_eq!(
        indexes_rebuilt(&mut c),
        vec![false],
        "the load inserted through the indexes rather than wait"
    );
    report.commit().unwrap();
    assert_eq!(index_definitions(&mut c), indexes);
    common::assert_matches_sources(&mut c, &[TABLE]);
}
