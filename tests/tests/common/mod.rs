//! Shared set-up for the integration tests: each test starts its own
//! throwaway cluster, so tests are isolated and can run in parallel.

#![allow(dead_code)]

use balance_queue_harness::cluster::Cluster;
use balance_queue_harness::recompute::{self, Source};
use balance_queue_harness::rindexer;
use postgres::Client;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// The rindexer-shaped table every fixture attaches.
pub const TABLE: &str = "rindexer_test_erc_20.transfer";

/// A cluster with one database, the extension created, and a rindexer
/// Transfer table `<schema>.transfer` attached with the default mapping.
pub struct Fixture {
    pub cluster: Cluster,
    pub client: Client,
    pub table: String,
}

pub fn attached_rindexer_table(name: &str) -> Fixture {
    attached_rindexer_table_with(name, &[])
}

/// [`attached_rindexer_table`] on a cluster with extra postgresql.conf lines.
pub fn attached_rindexer_table_with(name: &str, conf: &[&str]) -> Fixture {
    let cluster = Cluster::start(name, conf);
    let mut client = cluster.database_with_extension("test");
    let table = attach_rindexer_table(&mut client);
    Fixture {
        cluster,
        client,
        table,
    }
}

/// Creates the rindexer Transfer table [`TABLE`] in a database that has the
/// extension, attaches it with the default mapping, and returns its name.
pub fn attach_rindexer_table(client: &mut Client) -> String {
    rindexer::create_transfer_table(client, "rindexer_test_erc_20");
    let table = TABLE.to_string();
    client
        .execute(
            "SELECT balance_queue.attach_transfer_table($1::text::regclass)",
            &[&table],
        )
        .expect("attach");
    table
}

/// The SQLSTATE a statement fails with, or "ok".
pub fn sqlstate(client: &mut Client, sql: &str) -> String {
    match client.batch_execute(sql) {
        Ok(()) => "ok".into(),
        Err(e) => e
            .code()
            .map(|c| c.code().to_string())
            .unwrap_or_else(|| format!("no sqlstate: {e}")),
    }
}

/// count(*) of a query.
pub fn count(client: &mut Client, sql: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM ({sql}) q"), &[])
        .expect(sql)
        .get(0)
}

/// Asserts that every stored balance equals the independent recomputation
/// from the raw rows of `tables` (rindexer column names).
pub fn assert_matches_sources(client: &mut Client, tables: &[&str]) {
    let sources: Vec<Source> = tables.iter().map(|t| Source::rindexer(t)).collect();
    let expected = recompute::recompute(client, &sources);
    let comparison = recompute::compare(client, &expected, &HashSet::new());
    assert!(
        comparison.all_match(),
        "mismatches: {:?}",
        comparison.mismatches
    );
}

// The background worker's helpers, shared by the worker and bulk tests.

/// A preloaded cluster whose worker drains database `test`.
pub fn preloaded(name: &str, extra: &[&str]) -> (Cluster, Client) {
    let mut conf = vec![
        "shared_preload_libraries = 'balance_queue'",
        "balance_queue.database = 'test'",
    ];
    conf.extend_from_slice(extra);
    let Fixture {
        cluster,
        mut client,
        ..
    } = attached_rindexer_table_with(name, &conf);
    // The worker starts with the server, before database `test` exists; the
    // postmaster restarts it until it can connect.
    wait_until("the worker to connect", Duration::from_secs(30), || {
        worker_pid(&mut client).is_some()
    });
    (cluster, client)
}

/// ALTER SYSTEM (one statement per call: it cannot run in a transaction
/// block) for each setting, then a configuration reload.
pub fn alter_system(client: &mut Client, settings: &[&str]) {
    for setting in settings {
        client
            .batch_execute(&format!("ALTER SYSTEM SET {setting}"))
            .unwrap();
    }
    client.batch_execute("SELECT pg_reload_conf()").unwrap();
}

/// The pids of the running workers.
pub fn worker_pids(client: &mut Client) -> Vec<i32> {
    client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'balance_queue worker' ORDER BY pid",
            &[],
        )
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect()
}

/// The pid of one running worker, if any runs.
pub fn worker_pid(client: &mut Client) -> Option<i32> {
    worker_pids(client).first().copied()
}

pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn scalar_i64(client: &mut Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// The transfers the pending items stand for (their `row_count`s: an
/// id-range item is written once per holder partition, each with its share).
pub fn pending_transfers(client: &mut Client) -> i64 {
    scalar_i64(
        client,
        "SELECT coalesce(sum(row_count), 0)::bigint FROM balance_queue.balance_update_queue WHERE status = 'pending'",
    )
}

pub fn pending(client: &mut Client) -> i64 {
    scalar_i64(
        client,
        "SELECT count(*) FROM balance_queue.balance_update_queue WHERE status = 'pending'",
    )
}

/// Asserts that `get_token_stats` of every token (with balances, or with
/// statistics left) equals a recomputation from `current_token_balances`.
/// Returns the number of tokens compared.
pub fn assert_token_stats_match(client: &mut Client) -> usize {
    let rows = client
        .query(
            "WITH r AS (
                 SELECT chain_id, contract_address,
                        count(*) FILTER (WHERE current_balance <> 0) AS holders,
                        count(*) FILTER (WHERE current_balance < 0) AS negatives,
                        sum(current_balance) AS supply
                   FROM balance_queue.current_token_balances GROUP BY 1, 2
             ), tokens AS (
                 SELECT chain_id, contract_address FROM r
                 UNION SELECT chain_id, contract_address FROM balance_queue.token_stats
                 UNION SELECT chain_id, contract_address FROM balance_queue.token_stats_deltas
             )
             SELECT t.chain_id, t.contract_address,
                    s.holder_count, s.negative_balance_count, s.supply_wei::text,
                    coalesce(r.holders, 0), coalesce(r.negatives, 0), coalesce(r.supply, 0)::text
               FROM tokens t
               LEFT JOIN r USING (chain_id, contract_address)
              CROSS JOIN LATERAL balance_queue.get_token_stats(t.chain_id, t.contract_address) s",
            &[],
        )
        .expect("token statistics");
    let mismatches: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            let stored = (
                r.get::<_, i64>(2),
                r.get::<_, i64>(3),
                r.get::<_, String>(4),
            );
            let computed = (
                r.get::<_, i64>(5),
                r.get::<_, i64>(6),
                r.get::<_, String>(7),
            );
            (stored != computed).then(|| {
                format!(
                    "chain {} token {}: stats {stored:?}, balances {computed:?}",
                    r.get::<_, i32>(0),
                    r.get::<_, String>(1)
                )
            })
        })
        .collect();
    assert!(
        mismatches.is_empty(),
        "token statistics differ: {mismatches:?}"
    );
    rows.len()
}

/// rindexer's reorg rollback: deletes the rows of Ethereum blocks
/// `from..=to` from `table` in one statement. Returns the rows deleted.
pub fn delete_blocks(client: &mut Client, table: &str, from: u64, to: u64) -> u64 {
    client
        .execute(
            &format!(
                "DELETE FROM {table} WHERE network = 'ethereum'
                   AND block_number BETWEEN $1::text::numeric AND $2::text::numeric"
            ),
            &[&from.to_string(), &to.to_string()],
        )
        .expect("reorg delete")
}

/// Drains (`batch` transfers per call) while another session holds the
/// pending items of holder partition `held`, so only the other partitions'
/// sides are applied: the state of two workers of which one is behind.
/// Returns the number of items held.
pub fn drain_all_but_partition(
    cluster: &Cluster,
    client: &mut Client,
    held: i16,
    batch: i32,
) -> usize {
    let mut holder = Client::connect(&cluster.conn_string("test"), postgres::NoTls).unwrap();
    let mut tx = holder.transaction().unwrap();
    let items = tx
        .query(
            "SELECT id FROM balance_queue.balance_update_queue
              WHERE status = 'pending' AND holder_partition = $1 FOR UPDATE",
            &[&held],
        )
        .unwrap()
        .len();
    balance_queue_harness::drain(client, batch);
    tx.commit().unwrap();
    items
}

/// Sets the canonical hash of each (block, hash) of chain 1, as an operator does.
pub fn set_canonical_hashes(client: &mut Client, blocks: impl IntoIterator<Item = (u64, String)>) {
    for (block, hash) in blocks {
        client
            .execute(
                "SELECT balance_queue.set_canonical_block_hash(1, $1, $2)",
                &[&(block as i64), &hash],
            )
            .unwrap();
    }
}
