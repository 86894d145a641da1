//! Shared set-up for the integration tests: each test starts its own
//! throwaway cluster, so tests are isolated and can run in parallel.

#![allow(dead_code)]

use balance_queue_harness::cluster::Cluster;
use balance_queue_harness::recompute::{self, Source};
use balance_queue_harness::rindexer;
use postgres::Client;
use std::collections::HashSet;

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
