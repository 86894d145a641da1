//! Shared set-up for the integration tests: each test starts its own
//! throwaway cluster, so tests are isolated and can run in parallel.

#![allow(dead_code)]

use balance_queue_harness::cluster::Cluster;
use balance_queue_harness::rindexer;
use postgres::Client;

/// A cluster with one database, the extension created, and a rindexer
/// Transfer table `<schema>.transfer` attached with the default mapping.
pub struct Fixture {
    pub cluster: Cluster,
    pub client: Client,
    pub table: String,
}

pub fn attached_rindexer_table(name: &str) -> Fixture {
    let cluster = Cluster::start(name, &[]);
    let mut client = cluster.database_with_extension("test");
    let schema = "rindexer_test_erc_20";
    rindexer::create_transfer_table(&mut client, schema);
    let table = format!("{schema}.transfer");
    client
        .execute(
            "SELECT balance_queue.attach_transfer_table($1::text::regclass)",
            &[&table],
        )
        .expect("attach");
    Fixture {
        cluster,
        client,
        table,
    }
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
