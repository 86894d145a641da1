//! The background worker against real servers: freshness without manual
//! calls, crashes, termination, reloads, per-chain configuration, retries,
//! the dead-letter path, health metrics, cleanup and snapshots.

mod common;

use balance_queue_harness::rindexer::{self, TransferRow};
use balance_queue_harness::workload;
use postgres::Client;
use std::time::{Duration, Instant};

const TOKEN: &str = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48";
use common::{
    TABLE, alter_system, pending, pending_transfers, preloaded, scalar_i64, wait_until, worker_pid,
    worker_pids,
};

fn transfer(from: &str, to: &str, value: u64, n: u64, network: &str) -> TransferRow {
    TransferRow {
        contract_address: TOKEN.into(),
        from: Some(from.into()),
        to: Some(to.into()),
        value: Some(value.to_string()),
        tx_hash: format!("0x{n:064x}"),
        block_number: 19_000_000 + n,
        block_hash: format!("0x{:064x}", n + 1),
        network: network.into(),
        tx_index: 0,
        log_index: "0".into(),
    }
}

fn holder(n: u64) -> String {
    format!("0x{n:040x}")
}

const MINTER: &str = "0x0000000000000000000000000000000000000000";

fn balance(client: &mut Client, chain: i32, who: &str) -> String {
    client
        .query_one(
            "SELECT balance::text FROM balance_queue.get_current_balance($1, $2, $3)",
            &[&chain, &TOKEN, &who],
        )
        .unwrap()
        .get(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[test]
fn committed_transfers_reach_balances_without_manual_calls() {
    let (_cluster, mut c) = preloaded("fresh", &[]);
    // A worker sets its application_name once connected, a moment after
    // it shows in pg_stat_activity.
    wait_until(
        "the workers to name themselves",
        Duration::from_secs(10),
        || {
            scalar_i64(
                &mut c,
                "SELECT count(*) FROM pg_stat_activity
                  WHERE backend_type = 'balance_queue worker' AND application_name = 'balance_queue worker'",
            ) >= 1
        },
    );

    // Commit-to-balance latency: one small rindexer INSERT at a time, on
    // Ethereum with the plan's preloaded 3 s interval (an idle database is
    // probed every naptime, so it does not delay a lone transfer).
    let mut latencies = Vec::new();
    for n in 0..100u64 {
        let to = holder(n + 1);
        let started = Instant::now();
        rindexer::write_batch(
            &mut c,
            TABLE,
            &[transfer(MINTER, &to, 1000 + n, n, "ethereum")],
        )
        .unwrap();
        let committed = Instant::now();
        wait_until(
            "the transfer to be applied",
            Duration::from_secs(10),
            || balance(&mut c, 1, &to) == (1000 + n).to_string(),
        );
        latencies.push(committed.elapsed().as_secs_f64() * 1000.0);
        let _ = started;
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "commit-to-balance latency over {} transfers: median {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap()
    );

    // Drain rate: queue a large load while paused, then time the worker.
    alter_system(&mut c, &["balance_queue.enabled = off"]);
    std::thread::sleep(Duration::from_millis(300));
    let rows = workload::generate(&workload::Shape {
        transfers: 100_000,
        ..Default::default()
    });
    rindexer::write_all(&mut c, TABLE, &rows, 5000).unwrap();
    let items = pending(&mut c);
    let progress = |c: &mut Client| -> (i64, i64, i64) {
        let r = c
            .query_one(
                "SELECT rows_queued, rows_applied, rows_waiting FROM balance_queue.source_progress
                  WHERE source_table = $1::text::regclass",
                &[&TABLE],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(
        progress(&mut c),
        (100 + rows.len() as i64, 100, rows.len() as i64),
        "source_progress while paused: the 100 single transfers applied, the load waiting"
    );
    let started = Instant::now();
    alter_system(&mut c, &["balance_queue.enabled = on"]);
    wait_until(
        "the worker to drain the load",
        Duration::from_secs(300),
        || pending(&mut c) == 0,
    );
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(
        progress(&mut c),
        (100 + rows.len() as i64, 100 + rows.len() as i64, 0),
        "source_progress once drained"
    );
    let rate: f64 = c
        .query_one(
            "SELECT rows_per_second::float8 FROM balance_queue.source_progress",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(rate > 0.0, "a rate over the last minute");
    println!(
        "worker drain: {items} queue items ({} transfers) in {seconds:.2} s = {:.0} items/s, {:.0} transfers/s",
        rows.len(),
        items as f64 / seconds,
        rows.len() as f64 / seconds
    );
    common::assert_matches_sources(&mut c, &[TABLE]);
}

#[test]
fn immediate_shutdowns_mid_drain_leave_every_balance_exact() {
    let (cluster, mut c) = preloaded("crash", &["balance_queue.batch_size = 2000"]);
    let rows = workload::generate(&workload::Shape {
        transfers: 60_000,
        tokens: 20,
        holders: 5_000,
        ..Default::default()
    });
    for (round, chunk) in rows.chunks(15_000).enumerate() {
        rindexer::write_all(&mut c, TABLE, chunk, 5000).unwrap();
        // Let the worker get into the middle of draining, then crash.
        wait_until(
            "the worker to start draining",
            Duration::from_secs(30),
            || {
                scalar_i64(
                    &mut c,
                    "SELECT count(*) FROM balance_queue.balance_update_queue WHERE status = 'completed'",
                ) > 0
            },
        );
        std::thread::sleep(Duration::from_millis(150 + 100 * round as u64));
        let left = pending(&mut c);
        drop(c);
        cluster.stop("immediate");
        cluster.start_again();
        c = cluster.connect("test");
        println!(
            "crash {}: killed the server with {left} items pending",
            round + 1
        );
    }
    wait_until(
        "the worker to drain after the crashes",
        Duration::from_secs(300),
        || pending(&mut c) == 0,
    );
    assert_eq!(
        scalar_i64(
            &mut c,
            "SELECT count(*) FROM balance_queue.balance_update_queue WHERE status = 'failed'"
        ),
        0
    );
    common::assert_matches_sources(&mut c, &[TABLE]);
}

#[test]
fn terminated_worker_comes_back_and_drains() {
    let (_cluster, mut c) = preloaded("terminate", &[]);
    let first = worker_pid(&mut c).expect("worker running");
    let terminated: bool = c
        .query_one("SELECT pg_terminate_backend($1)", &[&first])
        .unwrap()
        .get(0);
    assert!(terminated);
    wait_until("the worker to be replaced", Duration::from_secs(20), || {
        let pids = worker_pids(&mut c);
        pids.len() == 2 && !pids.contains(&first)
    });
    rindexer::write_batch(
        &mut c,
        TABLE,
        &[transfer(MINTER, &holder(9), 77, 1, "ethereum")],
    )
    .unwrap();
    wait_until("the queue to drain", Duration::from_secs(20), || {
        balance(&mut c, 1, &holder(9)) == "77"
    });
}

#[test]
fn reload_changes_the_batch_size_the_worker_uses() {
    // Paused from the server's start: a pause set by reload reaches the
    // workers asynchronously, and under the suite's load one once drained
    // half the rows with the default batch size before it read it.
    let (_cluster, mut c) = preloaded("reload", &["balance_queue.enabled = off"]);
    let rows: Vec<TransferRow> = (0..60)
        .map(|n| transfer(MINTER, &holder(n + 1), 5, n, "ethereum"))
        .collect();
    // One statement per transfer: one id-range item of one row each.
    for row in &rows {
        rindexer::write_batch(&mut c, TABLE, std::slice::from_ref(row)).unwrap();
    }
    alter_system(
        &mut c,
        &["balance_queue.batch_size = 7", "balance_queue.enabled = on"],
    );
    wait_until("the queue to drain", Duration::from_secs(30), || {
        pending(&mut c) == 0
    });
    // Items completed by one batch share the batch transaction's xmin.
    let largest_batch = scalar_i64(
        &mut c,
        "SELECT max(n) FROM (SELECT sum(row_count) AS n FROM balance_queue.balance_update_queue
                              WHERE status = 'completed' GROUP BY xmin::text) b",
    );
    assert_eq!(
        largest_batch, 7,
        "the worker took batches of balance_queue.batch_size after the reload"
    );
}

#[test]
fn a_disabled_chain_waits_while_other_chains_flow() {
    let (_cluster, mut c) = preloaded("per-chain", &[]);
    c.batch_execute(
        // Polygon's row is preloaded (the plan's 200 transfers every 3 s).
        "UPDATE balance_queue.queue_processing_config SET enabled = false, batch_size = 50 WHERE chain_id = 137",
    )
    .unwrap();
    let config = c
        .query_one("SELECT batch_size, max_retry_attempts, enabled FROM balance_queue.get_queue_config(137)", &[])
        .unwrap();
    assert_eq!(
        (
            config.get::<_, i32>(0),
            config.get::<_, i32>(1),
            config.get::<_, bool>(2)
        ),
        (50, 3, false)
    );
    let default = c
        .query_one(
            "SELECT batch_size FROM balance_queue.get_queue_config(NULL)",
            &[],
        )
        .unwrap();
    assert_eq!(
        default.get::<_, i32>(0),
        50_000,
        "the NULL-chain row is all NULL: the GUC's batch size"
    );

    rindexer::write_batch(
        &mut c,
        TABLE,
        &[
            transfer(MINTER, &holder(1), 10, 1, "polygon"),
            transfer(MINTER, &holder(2), 20, 2, "ethereum"),
        ],
    )
    .unwrap();
    wait_until("ethereum to flow", Duration::from_secs(10), || {
        balance(&mut c, 1, &holder(2)) == "20"
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        balance(&mut c, 137, &holder(1)),
        "0",
        "polygon is disabled: its item waits"
    );
    assert_eq!(
        scalar_i64(
            &mut c,
            "SELECT sum(row_count)::bigint FROM balance_queue.balance_update_queue WHERE chain_id = 137 AND status = 'pending'"
        ),
        1,
        "one transfer waits (in one item per worker's holder partition)"
    );
    c.batch_execute(
        "UPDATE balance_queue.queue_processing_config SET enabled = true WHERE chain_id = 137",
    )
    .unwrap();
    wait_until(
        "polygon to flow once enabled",
        Duration::from_secs(10),
        || balance(&mut c, 137, &holder(1)) == "10",
    );
}

#[test]
fn failing_items_back_off_then_fail_without_blocking_and_can_be_retried() {
    let (_cluster, mut c) = preloaded(
        "retries",
        &[
            "balance_queue.max_retries = 3",
            "balance_queue.retry_backoff = 50",
        ],
    );
    let doomed = holder(0xdead);
    // An operator's constraint that rejects one holder makes applying its
    // items raise an error: a poison item.
    c.batch_execute(&format!(
        "ALTER TABLE balance_queue.current_token_balances ADD CONSTRAINT no_dead_holder CHECK (holder_address <> '{doomed}')"
    ))
    .unwrap();
    let mut rows: Vec<TransferRow> = (0..20)
        .map(|n| transfer(MINTER, &holder(n + 1), 100, n, "ethereum"))
        .collect();
    rows.push(transfer(MINTER, &doomed, 555, 99, "ethereum"));
    rindexer::write_batch(&mut c, TABLE, &rows).unwrap();
    wait_until(
        "the poison item to fail for good",
        Duration::from_secs(30),
        || {
            scalar_i64(
                &mut c,
                "SELECT count(*) FROM balance_queue.balance_update_queue WHERE status = 'failed'",
            ) == 1
        },
    );
    let failed = c
        .query_one(
            "SELECT holder_address, retry_count, error_message FROM balance_queue.balance_update_queue WHERE status = 'failed'",
            &[],
        )
        .unwrap();
    assert_eq!(failed.get::<_, String>(0), doomed);
    assert_eq!(failed.get::<_, i32>(1), 3, "three attempts, then failed");
    assert!(
        failed.get::<_, String>(2).contains("no_dead_holder"),
        "{}",
        failed.get::<_, String>(2)
    );
    for n in 0..20 {
        assert_eq!(
            balance(&mut c, 1, &holder(n + 1)),
            "100",
            "the other items were not blocked"
        );
    }

    c.batch_execute(
        "ALTER TABLE balance_queue.current_token_balances DROP CONSTRAINT no_dead_holder",
    )
    .unwrap();
    let retried = scalar_i64(&mut c, "SELECT balance_queue.retry_failed_updates(1)");
    assert_eq!(retried, 1);
    wait_until("the retried item to apply", Duration::from_secs(10), || {
        balance(&mut c, 1, &doomed) == "555"
    });
    common::assert_matches_sources(&mut c, &[TABLE]);
}

#[test]
fn health_metrics_summary_alerts_and_cleanup() {
    // No preload: these are the functions the worker calls every minute.
    let mut f = common::attached_rindexer_table("health");
    let rows: Vec<TransferRow> = (0..1200)
        .map(|n| transfer(MINTER, &holder(n + 1), 1, n, "ethereum"))
        .collect();
    rindexer::write_all(&mut f.client, &f.table, &rows, 5000).unwrap();
    assert_eq!(
        scalar_i64(
            &mut f.client,
            "SELECT balance_queue.collect_queue_health_metrics()"
        ),
        1
    );
    let status = |c: &mut Client| -> String {
        c.query_one(
            "SELECT health_status FROM balance_queue.queue_health_summary WHERE chain_id = 1",
            &[],
        )
        .unwrap()
        .get(0)
    };
    assert_eq!(status(&mut f.client), "HIGH_LOAD", "1,200 pending");
    let chain_name: String = f
        .client
        .query_one(
            "SELECT chain_name FROM balance_queue.queue_health_summary WHERE chain_id = 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(chain_name, "ethereum", "the network name, as in the plan");
    assert!(
        scalar_i64(
            &mut f.client,
            "SELECT count(*) FROM balance_queue.queue_alerts WHERE alert_type = 'HIGH_PENDING'"
        ) == 1
    );

    f.client
        .execute(
            "UPDATE balance_queue.balance_update_queue SET created_at = now() - interval '2 hours'",
            &[],
        )
        .unwrap();
    f.client
        .query_one("SELECT balance_queue.collect_queue_health_metrics()", &[])
        .unwrap();
    assert_eq!(
        status(&mut f.client),
        "HIGH_LOAD",
        "the plan tests HIGH_LOAD before DELAYED"
    );
    // Fewer than 1,000 pending, two hours old: DELAYED.
    balance_queue_harness::drain(&mut f.client, 5000);
    let late: Vec<TransferRow> = (0..10)
        .map(|n| transfer(MINTER, &holder(n + 1), 1, n + 3000, "ethereum"))
        .collect();
    rindexer::write_batch(&mut f.client, &f.table, &late).unwrap();
    f.client
        .execute(
            "UPDATE balance_queue.balance_update_queue SET created_at = now() - interval '2 hours'
              WHERE status = 'pending'",
            &[],
        )
        .unwrap();
    f.client
        .query_one("SELECT balance_queue.collect_queue_health_metrics()", &[])
        .unwrap();
    assert_eq!(
        status(&mut f.client),
        "DELAYED",
        "oldest pending is two hours old"
    );
    assert_eq!(
        scalar_i64(
            &mut f.client,
            "SELECT oldest_pending_age_minutes::bigint FROM balance_queue.queue_health_summary WHERE chain_id = 1"
        ),
        120
    );

    // 51 bad rows (log_index 'abc') become 51 failed items when drained.
    let bad: Vec<TransferRow> = (0..51)
        .map(|n| {
            let mut row = transfer(MINTER, &holder(n + 5000), 1, n, "ethereum");
            row.log_index = "abc".into();
            row
        })
        .collect();
    rindexer::write_batch(&mut f.client, &f.table, &bad).unwrap();
    balance_queue_harness::drain(&mut f.client, 5000);
    f.client
        .query_one("SELECT balance_queue.collect_queue_health_metrics()", &[])
        .unwrap();
    assert_eq!(
        status(&mut f.client),
        "ERRORS",
        "51 failed in the last hour"
    );
    let row = f
        .client
        .query_one(
            "SELECT pending_count, completed_count_last_hour, error_count_last_hour FROM balance_queue.queue_health_summary WHERE chain_id = 1",
            &[],
        )
        .unwrap();
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2)
        ),
        (0, 1200 + 10 + 51, 51),
        "completed counts every row read back, the bad ones too"
    );

    // Cleanup removes completed items once counted and past retention.
    f.client
        .batch_execute("SET balance_queue.completed_retention = 0")
        .unwrap();
    let removed = scalar_i64(
        &mut f.client,
        "SELECT balance_queue.cleanup_completed_updates()",
    );
    let partitions = scalar_i64(
        &mut f.client,
        "SELECT current_setting('balance_queue.workers')::bigint",
    );
    assert_eq!(
        removed,
        3 * partitions,
        "the three statements' id-range items, one per holder partition"
    );
    assert_eq!(
        scalar_i64(
            &mut f.client,
            "SELECT count(*) FROM balance_queue.balance_update_queue"
        ),
        51
    );
    // With archiving on, removed items move to the archive.
    rindexer::write_batch(
        &mut f.client,
        &f.table,
        &[transfer(MINTER, &holder(7777), 1, 7777, "ethereum")],
    )
    .unwrap();
    balance_queue_harness::drain(&mut f.client, 100);
    f.client
        .query_one("SELECT balance_queue.collect_queue_health_metrics()", &[])
        .unwrap();
    f.client
        .batch_execute("SET balance_queue.archive_completed = on")
        .unwrap();
    assert_eq!(
        scalar_i64(
            &mut f.client,
            "SELECT balance_queue.cleanup_completed_updates()"
        ),
        partitions,
        "the statement's item of each holder partition"
    );
    assert_eq!(
        scalar_i64(
            &mut f.client,
            "SELECT count(*) FROM balance_queue.balance_update_queue_archive"
        ),
        partitions
    );
}

#[test]
fn daily_snapshots_answer_past_balances() {
    let mut f = common::attached_rindexer_table("snapshots");
    let (a, b) = (holder(1), holder(2));
    rindexer::write_batch(
        &mut f.client,
        &f.table,
        &[transfer(MINTER, &a, 500, 1, "ethereum")],
    )
    .unwrap();
    balance_queue_harness::drain(&mut f.client, 100);
    assert_eq!(
        scalar_i64(
            &mut f.client,
            "SELECT balance_queue.create_daily_balance_snapshot('2026-01-01')"
        ),
        1
    );
    rindexer::write_batch(
        &mut f.client,
        &f.table,
        &[transfer(&a, &b, 500, 2, "ethereum")],
    )
    .unwrap();
    balance_queue_harness::drain(&mut f.client, 100);
    assert_eq!(
        scalar_i64(
            &mut f.client,
            "SELECT balance_queue.create_daily_balance_snapshot('2026-01-02')"
        ),
        1
    );
    let at = |c: &mut Client, who: &str, day: &str| -> Option<String> {
        c.query_one(
            "SELECT balance_queue.get_balance_at_date(1, $1, $2, $3::text::date)::text",
            &[&TOKEN, &who, &day],
        )
        .unwrap()
        .get(0)
    };
    assert_eq!(at(&mut f.client, &a, "2026-01-01").as_deref(), Some("500"));
    assert_eq!(
        at(&mut f.client, &a, "2026-01-02").as_deref(),
        Some("0"),
        "a zero balance is absent from the snapshot"
    );
    assert_eq!(
        at(&mut f.client, &b, "2026-01-05").as_deref(),
        Some("500"),
        "latest snapshot on or before the day"
    );
    assert_eq!(
        at(&mut f.client, &b, "2025-12-31"),
        None,
        "no snapshot that early"
    );
    // One indexed lookup per question.
    let plan: Vec<String> = f
        .client
        .query(
            "EXPLAIN SELECT balance FROM balance_queue.daily_balance_snapshots
              WHERE chain_id = 1 AND contract_address = $1 AND holder_address = $2 AND snapshot_date = '2026-01-01'",
            &[&TOKEN, &a],
        )
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    assert!(plan.iter().any(|l| l.contains("Index")), "{plan:?}");
}

#[test]
fn dynamic_worker_starts_and_stops_and_survives_drop_extension() {
    let mut f = common::attached_rindexer_table("dynamic");
    let started: String = f
        .client
        .query_one("SELECT balance_queue.start_worker()", &[])
        .unwrap()
        .get(0);
    assert!(
        started.starts_with("started balance_queue worker"),
        "{started}"
    );
    let again: String = f
        .client
        .query_one("SELECT balance_queue.start_worker()", &[])
        .unwrap()
        .get(0);
    assert!(again.contains("already drains"), "{again}");
    assert_eq!(
        scalar_i64(
            &mut f.client,
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'balance_queue worker'"
        ),
        2,
        "balance_queue.workers (default 2) dynamic workers"
    );
    rindexer::write_batch(
        &mut f.client,
        &f.table,
        &[transfer(MINTER, &holder(1), 42, 1, "ethereum")],
    )
    .unwrap();
    wait_until(
        "the dynamic worker to drain",
        Duration::from_secs(10),
        || balance(&mut f.client, 1, &holder(1)) == "42",
    );

    // DROP EXTENSION under the running worker, then create it again.
    f.client
        .batch_execute("DROP EXTENSION balance_queue CASCADE")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    f.client
        .batch_execute("CREATE EXTENSION balance_queue")
        .unwrap();
    f.client
        .execute(
            "SELECT balance_queue.attach_transfer_table($1::text::regclass)",
            &[&f.table],
        )
        .unwrap();
    wait_until("the worker to drain again", Duration::from_secs(10), || {
        balance(&mut f.client, 1, &holder(1)) == "42"
    });

    let stopped: String = f
        .client
        .query_one("SELECT balance_queue.stop_worker()", &[])
        .unwrap()
        .get(0);
    assert!(
        stopped.starts_with("stopped balance_queue worker"),
        "{stopped}"
    );
    wait_until("the worker to exit", Duration::from_secs(10), || {
        scalar_i64(
            &mut f.client,
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'balance_queue worker'",
        ) == 0
    });
    rindexer::write_batch(
        &mut f.client,
        &f.table,
        &[transfer(MINTER, &holder(2), 1, 2, "ethereum")],
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        pending_transfers(&mut f.client),
        1,
        "nothing drains once stopped"
    );
}

#[test]
fn a_quiet_chain_waits_its_interval_only_while_other_chains_keep_the_worker_busy() {
    let (_cluster, mut c) = preloaded("interval", &[]);
    // Polygon keeps the workers busy: a backlog of one-row statements
    // drained one queue item per batch. Ethereum polls every 2 s.
    c.batch_execute(
        "UPDATE balance_queue.queue_processing_config
            SET batch_size = 1, processing_interval_seconds = 0 WHERE chain_id = 137;
         UPDATE balance_queue.queue_processing_config SET processing_interval_seconds = 2 WHERE chain_id = 1",
    )
    .unwrap();
    let mut tx = c.transaction().unwrap();
    for n in 0..1500u64 {
        rindexer::write_batch(
            &mut tx,
            TABLE,
            &[transfer(MINTER, &holder(5000 + n % 10), 1, n, "polygon")],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    let polygon_pending = |c: &mut Client| {
        scalar_i64(
            c,
            "SELECT count(*) FROM balance_queue.balance_update_queue WHERE chain_id = 137 AND status = 'pending'",
        )
    };
    let latency = |c: &mut Client, n: u64| {
        std::thread::sleep(Duration::from_millis(700));
        let to = holder(n + 1);
        rindexer::write_batch(c, TABLE, &[transfer(MINTER, &to, 10, n, "ethereum")]).unwrap();
        let committed = Instant::now();
        wait_until("the transfer to apply", Duration::from_secs(10), || {
            balance(c, 1, &to) == "10"
        });
        committed.elapsed()
    };
    let busy: Vec<Duration> = (0..4).map(|n| latency(&mut c, n)).collect();
    let left = polygon_pending(&mut c);
    assert!(left > 0, "Polygon kept the workers busy throughout");

    // Once Polygon is drained the workers are idle: Ethereum's transfers
    // are applied within the naptime, its interval notwithstanding.
    wait_until("Polygon to drain", Duration::from_secs(120), || {
        polygon_pending(&mut c) == 0
    });
    let idle: Vec<Duration> = (4..8).map(|n| latency(&mut c, n)).collect();
    println!("quiet chain, interval 2 s: busy {busy:?} ({left} Polygon items left); idle {idle:?}");
    assert!(
        busy.iter().all(|d| *d < Duration::from_millis(2600)),
        "never longer than the interval: {busy:?}"
    );
    assert!(
        busy.iter().sum::<Duration>() > Duration::from_millis(1200),
        "a quiet chain waits for its next poll while others keep the worker busy: {busy:?}"
    );
    assert!(
        idle.iter().all(|d| *d < Duration::from_millis(500)),
        "an idle worker applies a quiet chain's transfer within the naptime: {idle:?}"
    );
}

#[test]
fn old_pending_items_are_boosted_ahead_of_newer_ones() {
    // One worker: the claim order is then the order items are applied in.
    let (_cluster, mut c) = preloaded("boost", &["balance_queue.workers = 1"]);
    alter_system(&mut c, &["balance_queue.enabled = off"]);
    std::thread::sleep(Duration::from_millis(300));
    // One queue item per batch, so the claim order shows in processed_at.
    c.batch_execute(
        "UPDATE balance_queue.queue_processing_config
            SET batch_size = 1, processing_interval_seconds = 0 WHERE chain_id = 1",
    )
    .unwrap();
    for n in 0..3u64 {
        rindexer::write_batch(
            &mut c,
            TABLE,
            &[transfer(MINTER, &holder(n + 1), 1, n, "ethereum")],
        )
        .unwrap();
    }
    // The last item is two hours old and has the lowest priority (9); the
    // default row boosts items older than one hour.
    c.batch_execute(
        "UPDATE balance_queue.balance_update_queue SET priority = 1 WHERE id < (SELECT max(id) FROM balance_queue.balance_update_queue);
         UPDATE balance_queue.balance_update_queue SET priority = 9, created_at = now() - interval '2 hours'
          WHERE id = (SELECT max(id) FROM balance_queue.balance_update_queue)",
    )
    .unwrap();
    alter_system(&mut c, &["balance_queue.enabled = on"]);
    wait_until("the queue to drain", Duration::from_secs(10), || {
        pending(&mut c) == 0
    });
    let order: Vec<(i32, i64)> = c
        .query(
            "SELECT priority, id FROM balance_queue.balance_update_queue ORDER BY processed_at, id",
            &[],
        )
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(order.len(), 3);
    assert_eq!(
        order[0].0, 0,
        "the old item was boosted to priority 0 and drained first: {order:?}"
    );
    assert!(order[0].1 > order[1].1, "it is the newest id: {order:?}");
}

#[test]
fn two_workers_drain_one_backlog_together_exactly() {
    let (_cluster, mut c) = preloaded(
        "two-workers",
        &[
            "balance_queue.batch_size = 2000",
            "balance_queue.bulk_threshold = 0",
        ],
    );
    alter_system(&mut c, &["balance_queue.enabled = off"]);
    let rows = workload::generate(&workload::Shape {
        transfers: 80_000,
        tokens: 20,
        holders: 5_000,
        ..Default::default()
    });
    for chunk in rows.chunks(5000) {
        rindexer::write_batch(&mut c, TABLE, chunk).unwrap();
        rindexer::write_batch(&mut c, TABLE, &chunk[..chunk.len() / 50]).unwrap();
    }
    let workers = worker_pids(&mut c);
    assert_eq!(workers.len(), 2, "the default is two workers per database");
    alter_system(&mut c, &["balance_queue.enabled = on"]);
    // Both workers are seen applying a batch at the same moment.
    let mut together = false;
    while pending(&mut c) > 0 {
        let busy = scalar_i64(
            &mut c,
            "SELECT count(*) FROM pg_stat_activity
              WHERE backend_type = 'balance_queue worker' AND state = 'active'
                AND query LIKE 'balance_queue: applying a batch%'",
        );
        together |= busy == 2;
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(together, "both workers applied batches at the same time");
    common::assert_matches_sources(&mut c, &[TABLE]);
}

/// An attached table drained by worker #0 of two holder partitions whose
/// worker #1 is gone (a dynamic worker is not restarted), items of
/// another partition waiting `takeover_after_ms` before worker #0 takes
/// them over.
fn lone_worker_of_two_partitions(name: &str, takeover_after_ms: u32) -> common::Fixture {
    let mut f = common::attached_rindexer_table(name);
    alter_system(
        &mut f.client,
        &[
            "balance_queue.workers = 2",
            &format!("balance_queue.takeover_after = {takeover_after_ms}"),
        ],
    );
    f.client
        .query_one("SELECT balance_queue.start_worker()", &[])
        .unwrap();
    let second = worker_pids(&mut f.client)
        .into_iter()
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|title| title.contains("#1"))
        })
        .expect("worker #1 runs (its process title names it)");
    f.client
        .execute("SELECT pg_terminate_backend($1)", &[&second])
        .unwrap();
    wait_until("worker #1 to exit", Duration::from_secs(10), || {
        worker_pids(&mut f.client).len() == 1
    });
    f
}

/// Forty holders each minted 7 in one rindexer batch, split by holder
/// partition (0, 1) of two.
fn mint_to_forty_holders(f: &mut common::Fixture) -> (Vec<String>, Vec<String>) {
    let holders: Vec<String> = (1..=40).map(holder).collect();
    let rows: Vec<TransferRow> = holders
        .iter()
        .enumerate()
        .map(|(n, h)| transfer(MINTER, h, 7, n as u64 + 1, "ethereum"))
        .collect();
    rindexer::write_batch(&mut f.client, &f.table, &rows).unwrap();
    let (own, other): (Vec<String>, Vec<String>) = holders.into_iter().partition(|h| {
        f.client
            .query_one("SELECT balance_queue.holder_partition($1, 2)", &[h])
            .unwrap()
            .get::<_, i32>(0)
            == 0
    });
    assert!(
        !own.is_empty() && !other.is_empty(),
        "both partitions hold holders"
    );
    (own, other)
}

#[test]
fn workers_split_the_queue_by_holder_and_a_lone_worker_takes_over_the_rest() {
    let mut f = lone_worker_of_two_partitions("partitions", 5000);
    let written = std::time::Instant::now();
    let (own, other) = mint_to_forty_holders(&mut f);

    // One item per partition, whose shares add up to the statement's rows.
    let shares: Vec<(i16, i32)> = f
        .client
        .query(
            "SELECT holder_partition, row_count FROM balance_queue.balance_update_queue
              WHERE update_type = 'source_rows' ORDER BY holder_partition",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(shares, vec![(0, 20), (1, 20)]);

    wait_until(
        "worker #0 to apply its partition",
        Duration::from_secs(4),
        || own.iter().all(|h| balance(&mut f.client, 1, h) == "7"),
    );
    assert!(written.elapsed() < Duration::from_secs(5));
    assert!(
        other.iter().all(|h| balance(&mut f.client, 1, h) == "0"),
        "partition 1 belongs to the missing worker: worker #0 leaves it for takeover_after (5 s)"
    );
    wait_until(
        "worker #0 to take over partition 1 once it waited",
        Duration::from_secs(20),
        || other.iter().all(|h| balance(&mut f.client, 1, h) == "7"),
    );
    assert_eq!(pending_transfers(&mut f.client), 0);
    common::assert_matches_sources(&mut f.client, &[&f.table]);
}

#[test]
fn a_holder_partition_is_applied_by_one_batch_at_a_time() {
    // This session stands for batches applying partitions 0 and 1: it holds
    // their partition locks ("bqhp", see src/apply/partition_lock.rs).
    const PARTITION_LOCK_CLASS: i32 = 0x6271_6870;
    let mut f = lone_worker_of_two_partitions("partition_locks", 500);
    let mut locker = f.cluster.connect("test");
    for partition in [0, 1] {
        locker
            .execute(
                "SELECT pg_advisory_lock($1, $2)",
                &[&PARTITION_LOCK_CLASS, &partition],
            )
            .unwrap();
    }
    let (own, other) = mint_to_forty_holders(&mut f);
    let applied = |c: &mut Client, holders: &[String]| {
        holders.iter().filter(|h| balance(c, 1, h) == "7").count()
    };

    // Well past takeover_after, worker #0 has taken neither partition: each
    // is being applied by another batch.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(applied(&mut f.client, &own), 0, "its own partition waits");
    assert_eq!(applied(&mut f.client, &other), 0, "partition 1 waits");

    // Its own partition once no other batch holds it; partition 1 still not.
    locker
        .execute("SELECT pg_advisory_unlock($1, 0)", &[&PARTITION_LOCK_CLASS])
        .unwrap();
    wait_until(
        "worker #0 to apply its partition",
        Duration::from_secs(10),
        || applied(&mut f.client, &own) == own.len(),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        applied(&mut f.client, &other),
        0,
        "partition 1 is not taken over while a batch holds it"
    );

    // Taken over once released.
    locker
        .execute("SELECT pg_advisory_unlock($1, 1)", &[&PARTITION_LOCK_CLASS])
        .unwrap();
    wait_until(
        "worker #0 to take over partition 1",
        Duration::from_secs(10),
        || applied(&mut f.client, &other) == other.len(),
    );
    assert_eq!(pending_transfers(&mut f.client), 0);
    common::assert_matches_sources(&mut f.client, &[&f.table]);
}

#[test]
fn the_workers_writes_reach_the_statistics_autovacuum_reads() {
    // Autovacuum decides from pg_stat_user_tables; a background worker's
    // row counts reach it only if the worker reports them.
    let (_cluster, mut c) = preloaded("table_stats", &[]);
    let rows: Vec<TransferRow> = (1..=500u64)
        .map(|n| transfer(MINTER, &holder(n), 1, n, "ethereum"))
        .collect();
    rindexer::write_batch(&mut c, TABLE, &rows).unwrap();
    wait_until("the workers to drain", Duration::from_secs(30), || {
        pending(&mut c) == 0
    });
    wait_until(
        "the ledger's and the balances' inserts to show in pg_stat_user_tables",
        Duration::from_secs(15),
        || {
            scalar_i64(
                &mut c,
                "SELECT coalesce(sum(n_tup_ins), 0)::bigint FROM pg_stat_user_tables
                  WHERE schemaname = 'balance_queue'
                    AND relname IN ('applied_transfers', 'current_token_balances_1')",
            ) >= 1000
        },
    );
}
