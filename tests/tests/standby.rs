//! A streaming standby: it serves the reading functions with the
//! primary's balances, runs no worker, and every writing function refuses
//! with 25006 (read_only_sql_transaction) instead of an internal error.

mod common;

use balance_queue_harness::cluster::Cluster;
use balance_queue_harness::rindexer;
use balance_queue_harness::workload;
use common::{TABLE, pending, scalar_i64, wait_until};
use std::time::Duration;

#[test]
fn a_standby_serves_balances_runs_no_worker_and_refuses_writes() {
    let primary = Cluster::start(
        "standby-primary",
        &[
            "shared_preload_libraries = 'balance_queue'",
            "balance_queue.database = 'test'",
        ],
    );
    let mut p = primary.database_with_extension("test");
    common::attach_rindexer_table(&mut p);
    let rows = workload::generate(&workload::Shape {
        transfers: 5_000,
        tokens: 5,
        holders: 500,
        ..Default::default()
    });
    rindexer::write_all(&mut p, TABLE, &rows, 1000).unwrap();
    wait_until(
        "the primary's worker to drain",
        Duration::from_secs(60),
        || pending(&mut p) == 0,
    );
    let balances = "SELECT count(*) FROM balance_queue.current_token_balances";
    let on_primary = scalar_i64(&mut p, balances);
    assert!(on_primary > 0);

    let standby = primary.standby("standby-replica");
    let mut s = standby.connect("test");
    wait_until("the standby to replay", Duration::from_secs(60), || {
        scalar_i64(&mut s, balances) == on_primary
    });
    assert!(
        scalar_i64(
            &mut s,
            "SELECT count(*)::bigint FROM pg_catalog.pg_stat_activity WHERE backend_type = 'balance_queue worker'"
        ) == 0,
        "no worker runs on a standby"
    );
    let key = p
        .query_one(
            "SELECT contract_address, holder_address, current_balance::text
               FROM balance_queue.current_token_balances ORDER BY current_balance DESC LIMIT 1",
            &[],
        )
        .unwrap();
    let (token, holder, balance): (String, String, String) = (key.get(0), key.get(1), key.get(2));
    let read: String = s
        .query_one(
            "SELECT balance::text FROM balance_queue.get_current_balance(1, $1, $2)",
            &[&token, &holder],
        )
        .unwrap()
        .get(0);
    assert_eq!(read, balance);
    for call in [
        "SELECT balance_queue.process_balance_update_queue(10)",
        "SELECT balance_queue.start_worker()",
        "SELECT * FROM balance_queue.handle_reorg(1, 0)",
        "SELECT * FROM balance_queue.recalculate_address_balance(1, '0x0000000000000000000000000000000000000001', '0x0000000000000000000000000000000000000002')",
        "SELECT balance_queue.collect_queue_health_metrics()",
    ] {
        assert_eq!(common::sqlstate(&mut s, call), "25006", "{call}");
    }
}
