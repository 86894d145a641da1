//! Rows rindexer leaves off the canonical chain, found and reported:
//! conflicts between rows of one block without a recorded canonical hash,
//! and rows whose hash differs from the one rindexer records in
//! `rindexer_internal.reorg_block_hashes`, also after a later rollback
//! rewrites it.

mod common;

use balance_queue_harness::rindexer::{self, TransferRow};
use postgres::Client;

const TOKEN: &str = "0xae78736cd615f374d3085123a210448e74fc6393";
const A: &str = "0x00000000000000000000000000000000000000a1";
const B: &str = "0x00000000000000000000000000000000000000b1";

fn hash(c: char) -> String {
    format!("0x{}", c.to_string().repeat(64))
}

fn row(block: u64, block_hash: &str, log: u32, value: &str) -> TransferRow {
    TransferRow {
        contract_address: TOKEN.into(),
        from: Some(A.into()),
        to: Some(B.into()),
        value: Some(value.into()),
        tx_hash: format!("0x{block:064x}"),
        block_number: block,
        block_hash: block_hash.into(),
        network: "ethereum".into(),
        tx_index: 0,
        log_index: log.to_string(),
    }
}

/// (block, block hash, canonical hash or "", reason's first word) of every reported row.
fn reported(c: &mut Client, chain: Option<i32>) -> Vec<(String, String, String, String)> {
    c.query(
        "SELECT block_number::text, block_hash, coalesce(canonical_hash, ''), split_part(reason, ':', 1)
           FROM balance_queue.find_orphaned_rows($1)",
        &[&chain],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

#[test]
fn orphaned_and_conflicting_rows_are_reported_with_or_without_rindexers_hashes() {
    let mut f = common::attached_rindexer_table("orphans");
    let c = &mut f.client;
    // Block 100: one hash. Block 200: the canonical row (hash c), an orphan
    // with the same amount and one with another amount (hash d), as
    // rindexer leaves them when its rollback races its writer.
    rindexer::write_batch(c, &f.table, &[row(100, &hash('a'), 0, "5")]).unwrap();
    rindexer::write_batch(c, &f.table, &[row(200, &hash('c'), 0, "7")]).unwrap();
    rindexer::write_batch(
        c,
        &f.table,
        &[row(200, &hash('d'), 0, "7"), row(200, &hash('d'), 1, "9")],
    )
    .unwrap();

    // Without rindexer's hash table: a conflict, every row of the block.
    let conflict = reported(c, None);
    assert_eq!(conflict.len(), 3, "{conflict:?}");
    assert!(
        conflict
            .iter()
            .all(|r| r.0 == "200" && r.2.is_empty() && r.3 == "conflict")
    );

    // rindexer's table (its exact DDL) records block 200's canonical hash.
    c.batch_execute(&format!(
        "CREATE SCHEMA rindexer_internal;
         CREATE TABLE rindexer_internal.reorg_block_hashes (
             network TEXT NOT NULL, block_number BIGINT NOT NULL, block_hash CHAR(66) NOT NULL,
             parent_hash CHAR(66) NOT NULL, PRIMARY KEY (network, block_number));
         INSERT INTO rindexer_internal.reorg_block_hashes VALUES
             ('ethereum', 100, '{a}', '{z}'), ('ethereum', 200, '{c}', '{a}');",
        a = hash('a'),
        c = hash('c'),
        z = hash('0')
    ))
    .unwrap();
    let orphaned = reported(c, None);
    assert_eq!(
        orphaned,
        vec![
            ("200".into(), hash('d'), hash('c'), "orphaned".into()),
            ("200".into(), hash('d'), hash('c'), "orphaned".into()),
        ]
    );
    let reason: String = c
        .query_one(
            "SELECT reason FROM balance_queue.find_orphaned_rows() LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        reason.contains("reorg_handling"),
        "names rindexer's settings: {reason}"
    );

    // A later rollback rewrites the block's hash: now the other row is off.
    c.batch_execute(&format!(
        "UPDATE rindexer_internal.reorg_block_hashes SET block_hash = '{}' WHERE block_number = 200",
        hash('d')
    ))
    .unwrap();
    assert_eq!(
        reported(c, None),
        vec![("200".into(), hash('c'), hash('d'), "orphaned".into())]
    );
    // Another chain has none.
    assert!(reported(c, Some(10)).is_empty());
}
