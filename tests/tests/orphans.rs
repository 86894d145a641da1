//! Rows rindexer leaves off the canonical chain, reproduced the way it
//! leaves them, and balances that still equal the canonical chain's:
//! orphans next to canonical rows (same amount, another amount), written
//! by a writer racing the rollback (counted before it, then rechecked) or
//! after it; rindexer's hash table present, absent (the operator supplies
//! the hashes), and rewritten by a later rollback; and a reorg deeper than
//! rindexer's window. In each, the stored balances equal an independent
//! recomputation of a second, unattached table holding exactly the
//! canonical chain, and every orphaned row is reported.

mod common;

use balance_queue_harness::drain;
use balance_queue_harness::recompute::{self, Source};
use balance_queue_harness::rindexer::{self, TransferRow};
use postgres::Client;
use std::collections::{BTreeSet, HashSet};

/// The canonical chain, written beside the attached table and never attached.
const CANONICAL: &str = "canonical_chain.transfer";
const TOKENS: [&str; 2] = [
    "0xae78736cd615f374d3085123a210448e74fc6393",
    "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2",
];

/// A block's hash on fork `fork` (0: the chain every fork shares).
fn hash(block: u64, fork: u64) -> String {
    format!("0x{:060x}{fork:04x}", block)
}

fn holder(n: u64) -> String {
    format!("0x{:040x}", 0xa000 + n % 23)
}

/// Five transfers in block `block` on fork `fork`. The logs of forks 1 and
/// 2 share tx hashes and log indexes; fork 2 moves every third one with
/// another amount (the same log, another outcome), so some orphans are the
/// canonical rows but for their hash and others differ.
fn block_rows(block: u64, fork: u64) -> Vec<TransferRow> {
    (0..5u64)
        .map(|i| {
            let n = block * 5 + i;
            let changed = fork == 2 && i % 3 == 0;
            TransferRow {
                contract_address: TOKENS[(n % 2) as usize].into(),
                from: Some(holder(n)),
                to: Some(holder(n * 7 + 3)),
                value: Some(
                    ((n % 97 + 1) * 1_000_000_000_000 + u64::from(changed) * 17).to_string(),
                ),
                tx_hash: format!("0x{:064x}", block * 100 + i),
                block_number: block,
                block_hash: hash(block, fork),
                network: "ethereum".into(),
                tx_index: i,
                log_index: i.to_string(),
            }
        })
        .collect()
}

fn rows(blocks: std::ops::RangeInclusive<u64>, fork: u64) -> Vec<TransferRow> {
    blocks.flat_map(|b| block_rows(b, fork)).collect()
}

/// rindexer's own DDL for its hash table (rindexer 0.41,
/// `rindexer_internal.reorg_block_hashes`).
fn create_rindexer_hash_table(c: &mut Client) {
    c.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS rindexer_internal;
         CREATE TABLE IF NOT EXISTS rindexer_internal.reorg_block_hashes (
             network VARCHAR(50) NOT NULL, block_number BIGINT NOT NULL,
             block_hash CHAR(66) NOT NULL, parent_hash CHAR(66) NOT NULL,
             PRIMARY KEY (network, block_number));",
    )
    .unwrap();
}

/// Records the hashes of `blocks` of fork `fork`, which leaves the shared
/// chain at block `fork_start`, as rindexer does: one INSERT per block,
/// with its parent's hash.
fn record(
    c: &mut impl postgres::GenericClient,
    blocks: std::ops::RangeInclusive<u64>,
    fork: u64,
    fork_start: u64,
) {
    for block in blocks {
        let parent_fork = if block > fork_start { fork } else { 0 };
        c.execute(
            "INSERT INTO rindexer_internal.reorg_block_hashes VALUES ('ethereum', $1, $2, $3)",
            &[
                &(block as i64),
                &hash(block, fork),
                &hash(block - 1, parent_fork),
            ],
        )
        .unwrap();
    }
}

struct Chain {
    f: common::Fixture,
}

impl Chain {
    fn new(name: &str) -> Chain {
        let mut f = common::attached_rindexer_table(name);
        rindexer::create_transfer_table(&mut f.client, "canonical_chain");
        Chain { f }
    }

    /// [`Chain::new`] on a preloaded cluster (the worker runs) with `conf`.
    fn preloaded(name: &str, conf: &[&str]) -> Chain {
        let (cluster, mut client) = common::preloaded(name, conf);
        rindexer::create_transfer_table(&mut client, "canonical_chain");
        Chain {
            f: common::Fixture {
                cluster,
                client,
                table: common::TABLE.into(),
            },
        }
    }

    fn c(&mut self) -> &mut Client {
        &mut self.f.client
    }

    /// Writes rows to the attached table, and to the canonical chain's
    /// table when they are canonical.
    fn write(&mut self, rows: &[TransferRow], canonical: bool) {
        rindexer::write_batch(self.c(), common::TABLE, rows).unwrap();
        if canonical {
            rindexer::write_batch(self.c(), CANONICAL, rows).unwrap();
        }
    }

    /// Drains, and rechecks changed blocks, until neither finds work.
    fn settle(&mut self) {
        loop {
            drain(self.c(), 5_000);
            let rechecked = common::count(
                self.c(),
                "SELECT * FROM balance_queue.recheck_block_hashes()",
            );
            if rechecked == 0 && common::pending(self.c()) == 0 {
                return;
            }
        }
    }

    /// Stored balances equal the canonical chain's, and verify_balances
    /// (which reads the attached table under the same rule) agrees.
    fn assert_canonical(&mut self, what: &str) {
        let expected = recompute::recompute(self.c(), &[Source::rindexer(CANONICAL)]);
        let comparison = recompute::compare(self.c(), &expected, &HashSet::new());
        assert!(
            comparison.all_match(),
            "{what}: mismatches {:?}",
            comparison.mismatches
        );
        assert_eq!(
            common::count(self.c(), "SELECT * FROM balance_queue.verify_balances()"),
            0,
            "{what}: verify_balances"
        );
    }

    /// (block, tx hash, log index, block hash) of the rows recorded in
    /// `orphaned_transfer_rows`, and of those `find_orphaned_rows` reports
    /// as orphaned and uncounted: they must agree.
    fn orphans(&mut self) -> BTreeSet<(u64, String, String, String)> {
        let recorded: BTreeSet<_> = self
            .c()
            .query(
                "SELECT block_number, tx_hash, log_index::text, block_hash
                   FROM balance_queue.orphaned_transfer_rows",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get(1), r.get(2), r.get(3)))
            .collect();
        let reported: BTreeSet<_> = self
            .c()
            .query(
                "SELECT block_number::bigint, tx_hash, log_index, block_hash
                   FROM balance_queue.find_orphaned_rows()
                  WHERE reason LIKE 'orphaned:%' AND NOT counted",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get(1), r.get(2), r.get(3)))
            .collect();
        assert_eq!(recorded, reported, "the record and the report agree");
        recorded
    }

    fn alerts(&mut self) -> Vec<(String, String)> {
        self.c()
            .query(
                "SELECT alert_type, message FROM balance_queue.queue_alerts
                  WHERE alert_type IN ('ORPHANED_ROWS', 'BLOCK_HASH_CONFLICT', 'REORG_BEYOND_WINDOW')
                  ORDER BY 1",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }
}

fn keys(rows: &[TransferRow]) -> BTreeSet<(u64, String, String, String)> {
    rows.iter()
        .map(|r| {
            (
                r.block_number,
                r.tx_hash.clone(),
                r.log_index.clone(),
                r.block_hash.clone(),
            )
        })
        .collect()
}

/// rindexer's reorg rollback of blocks `from..=to` (one transaction: DELETE
/// the rows, DELETE the hashes, INSERT the corrected hashes one by one),
/// then its re-indexing of the canonical fork `fork`.
/// The fork left the shared chain at `fork_start`.
fn rollback(chain: &mut Chain, from: u64, to: u64, fork: u64, fork_start: u64) {
    let mut tx = chain.c().transaction().unwrap();
    tx.batch_execute(&format!(
        "DELETE FROM {} WHERE network = 'ethereum' AND block_number BETWEEN {from} AND {to};
         DELETE FROM rindexer_internal.reorg_block_hashes
          WHERE network = 'ethereum' AND block_number BETWEEN {from} AND {to};",
        common::TABLE
    ))
    .unwrap();
    record(&mut tx, from..=to, fork, fork_start);
    tx.commit().unwrap();
}

#[test]
fn orphans_of_a_raced_rollback_do_not_count_whether_written_before_or_after_it() {
    let mut chain = Chain::new("orphans-raced");
    create_rindexer_hash_table(chain.c());
    assert_eq!(
        chain
            .c()
            .query_one("SELECT balance_queue.follow_rindexer_block_hashes()", &[])
            .unwrap()
            .get::<_, i32>(0),
        0,
        "nothing recorded yet"
    );
    // Blocks 1000..1029 shared; fork 1 mined 1030..1039 and was indexed.
    chain.write(&rows(1000..=1029, 0), true);
    record(chain.c(), 1000..=1029, 0, 0);
    chain.write(&rows(1030..=1039, 1), false);
    record(chain.c(), 1030..=1039, 1, 1030);
    chain.settle();

    // The reorg to fork 2 from block 1030. rindexer's rollback starts (its
    // DELETE is done) while its writer, which it did not wait for, commits
    // a batch of fork 1 for blocks 1036..1039 that the DELETE cannot see;
    // a drain counts it against fork 1's hashes, still the recorded ones.
    let raced = rows(1036..=1039, 1);
    let mut rollback_tx = {
        let conn = chain.f.cluster.conn_string("test");
        Client::connect(&conn, postgres::NoTls).unwrap()
    };
    let mut tx = rollback_tx.transaction().unwrap();
    tx.execute(
        &format!(
            "DELETE FROM {} WHERE network = 'ethereum' AND block_number BETWEEN 1030 AND 1039",
            common::TABLE
        ),
        &[],
    )
    .unwrap();
    tx.execute(
        "DELETE FROM rindexer_internal.reorg_block_hashes
          WHERE network = 'ethereum' AND block_number BETWEEN 1030 AND 1039",
        &[],
    )
    .unwrap();
    chain.write(&raced, false);
    drain(chain.c(), 5_000);
    assert!(
        common::count(
            chain.c(),
            "SELECT 1 FROM balance_queue.orphaned_transfer_rows"
        ) == 0,
        "counted while fork 1's hashes are the recorded ones"
    );
    record(&mut tx, 1030..=1039, 2, 1030);
    tx.commit().unwrap();
    // rindexer indexes fork 2; then a batch of fork 1 handed to its writer
    // before the rollback lands after it (the same logs as fork 2's but for
    // their hash, and some with other amounts).
    let canonical = rows(1030..=1039, 2);
    chain.write(&canonical, true);
    let late = rows(1030..=1033, 1);
    chain.write(&late, false);
    chain.settle();

    chain.assert_canonical("after the raced rollback");
    let expected: BTreeSet<_> = keys(&raced).union(&keys(&late)).cloned().collect();
    assert_eq!(chain.orphans(), expected, "every orphaned row is reported");
    let alerts = chain.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].0, "ORPHANED_ROWS");
    assert!(
        alerts[0].1.contains(&format!("{} rows", expected.len()))
            && alerts[0].1.contains("reorg_handling"),
        "names the rows and rindexer's settings: {}",
        alerts[0].1
    );

    // Deleting orphans (an operator's cleanup) takes back nothing.
    chain
        .c()
        .execute(
            &format!("DELETE FROM {} WHERE block_hash = $1", common::TABLE),
            &[&hash(1031, 1)],
        )
        .unwrap();
    chain.settle();
    chain.assert_canonical("after deleting orphans");
    assert_eq!(
        chain.orphans().len(),
        expected.len() - 5,
        "the deleted orphans leave the record"
    );

    // A later rollback rewrites block 1032's hash back to fork 1's
    // (rindexer's UPDATE of its record) while both forks' rows of the block
    // are there: fork 1's late rows count again, fork 2's stop.
    chain
        .c()
        .execute(
            "UPDATE rindexer_internal.reorg_block_hashes SET block_hash = $1 WHERE block_number = 1032",
            &[&hash(1032, 1)],
        )
        .unwrap();
    chain
        .c()
        .batch_execute(&format!(
            "DELETE FROM {CANONICAL} WHERE block_number = 1032"
        ))
        .unwrap();
    rindexer::write_batch(chain.c(), CANONICAL, &rows(1032..=1032, 1)).unwrap();
    chain.settle();
    chain.assert_canonical("after the canonical record changed back");
    let expected_now: BTreeSet<_> = keys(&raced)
        .into_iter()
        .chain(
            keys(&late)
                .into_iter()
                .filter(|k| k.0 != 1031 && k.0 != 1032),
        )
        .chain(keys(&rows(1032..=1032, 2)))
        .collect();
    assert_eq!(chain.orphans(), expected_now);

    // A rebuild queues every row again by id; meanwhile the worker prunes
    // rindexer's hashes below the confirmation window (2 blocks here) but
    // for blocks whose orphans are recorded: the records must survive until
    // the rows are read back, or the orphans would count again.
    chain
        .c()
        .batch_execute(
            "SELECT balance_queue.add_chain(1, 'ethereum', NULL, 2);
             SELECT * FROM balance_queue.handle_reorg(1, 0);
             SELECT balance_queue._prune_block_hashes();",
        )
        .unwrap();
    chain.settle();
    chain.assert_canonical("after a rebuild and a prune");
    assert_eq!(chain.orphans(), expected_now);
}

#[test]
fn without_rindexers_hashes_conflicts_are_reported_and_an_operators_hashes_settle_them() {
    let mut chain = Chain::new("orphans-no-hashes");
    chain.write(&rows(2000..=2009, 0), true);
    // A project without reorg_handling: fork 1 indexed, then fork 2 on top
    // of it for blocks 2010..2019, nothing deleted.
    chain.write(&rows(2010..=2019, 1), false);
    chain.write(&rows(2010..=2019, 2), true);
    chain.settle();
    let conflicts: Vec<(String, bool)> = chain
        .c()
        .query(
            "SELECT split_part(reason, ':', 1), counted FROM balance_queue.find_orphaned_rows()",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(conflicts.len(), 100, "both forks' rows of 10 blocks");
    assert!(
        conflicts
            .iter()
            .all(|(reason, counted)| reason == "conflict" && *counted)
    );
    let alerts = chain.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].0, "BLOCK_HASH_CONFLICT");
    assert!(alerts[0].1.contains("10 blocks") && alerts[0].1.contains("set_canonical_block_hash"));
    // Both forks count: no balance equals the canonical chain's yet.
    let expected = recompute::recompute(chain.c(), &[Source::rindexer(CANONICAL)]);
    assert!(!recompute::compare(chain.c(), &expected, &HashSet::new()).all_match());

    // The operator supplies the canonical hashes.
    for block in 2010..=2019u64 {
        let queued: i32 = chain
            .c()
            .query_one(
                "SELECT balance_queue.set_canonical_block_hash(1, $1, $2)",
                &[&(block as i64), &hash(block, 2)],
            )
            .unwrap()
            .get(0);
        assert_eq!(queued, 1, "block {block} is rechecked");
    }
    chain.settle();
    chain.assert_canonical("after the operator's hashes");
    assert_eq!(chain.orphans(), keys(&rows(2010..=2019, 1)));
    assert_eq!(
        chain.alerts().len(),
        1,
        "ORPHANED_ROWS replaces the conflict"
    );
    assert_eq!(chain.alerts()[0].0, "ORPHANED_ROWS");

    // Judging turned off for the table: everything counts again.
    chain
        .c()
        .execute(
            "SELECT balance_queue.set_canonical_hash_source($1::text::regclass, 'none')",
            &[&common::TABLE],
        )
        .unwrap();
    chain.settle();
    assert!(chain.orphans().is_empty());
    let expected = recompute::recompute(chain.c(), &[Source::rindexer(CANONICAL)]);
    assert!(!recompute::compare(chain.c(), &expected, &HashSet::new()).all_match());
    assert_eq!(
        common::count(chain.c(), "SELECT * FROM balance_queue.verify_balances()"),
        0,
        "every row counts, as verify_balances counts them"
    );
    for (sql, state) in [
        (
            format!(
                "SELECT balance_queue.set_canonical_hash_source('{}', 'rindexer')",
                common::TABLE
            ),
            "22023",
        ),
        (
            "SELECT balance_queue.set_canonical_hash_source('canonical_chain.transfer', 'none')"
                .into(),
            "42704",
        ),
        (
            "SELECT balance_queue.set_canonical_block_hash(1, -1, NULL)".into(),
            "22023",
        ),
        (
            "SELECT balance_queue.set_canonical_block_hash(1, 5, '0x12')".into(),
            "22023",
        ),
        (
            "SELECT balance_queue.set_canonical_block_hash(424242, 5, NULL)".into(),
            "22023",
        ),
    ] {
        assert_eq!(common::sqlstate(chain.c(), &sql), state, "{sql}");
    }
}

#[test]
fn a_reorg_deeper_than_rindexers_window_is_reported_and_settled_by_the_operator() {
    let mut chain = Chain::new("orphans-deep");
    create_rindexer_hash_table(chain.c());
    chain
        .c()
        .query_one("SELECT balance_queue.follow_rindexer_block_hashes()", &[])
        .unwrap();
    chain.write(&rows(3000..=3009, 0), true);
    record(chain.c(), 3000..=3009, 0, 0);
    chain.write(&rows(3010..=3024, 1), false);
    record(chain.c(), 3010..=3024, 1, 3010);
    chain.settle();
    // Fork 2 from block 3010, 15 blocks deep; rindexer's window is 10: it
    // rolls back 3015..3024 only, and re-indexes them. Fork 1's rows of
    // 3010..3014 stay, with fork 1's hashes recorded.
    rollback(&mut chain, 3015, 3024, 2, 3010);
    chain.write(&rows(3015..=3024, 2), true);
    chain.settle();
    let alerts = chain.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].0, "REORG_BEYOND_WINDOW");
    assert!(
        alerts[0].1.contains("block 3014") && alerts[0].1.contains("window_size"),
        "{}",
        alerts[0].1
    );
    // The operator sets fork 2's hashes of 3010..3014 (from a node): fork
    // 1's rows there stop counting; fork 2's rows, indexed later, count.
    common::set_canonical_hashes(chain.c(), (3010..=3014).map(|b| (b, hash(b, 2))));
    chain.settle();
    assert_eq!(chain.orphans(), keys(&rows(3010..=3014, 1)));
    chain.write(&rows(3010..=3014, 2), true);
    chain.settle();
    chain.assert_canonical("after the operator's hashes and the re-index");

    // The triggers on rindexer's table go with the extension.
    chain
        .c()
        .batch_execute(&format!(
            "SELECT balance_queue.detach_transfer_table('{}'); DROP EXTENSION balance_queue",
            common::TABLE
        ))
        .unwrap();
    assert_eq!(
        common::count(
            chain.c(),
            "SELECT 1 FROM pg_trigger WHERE tgrelid = 'rindexer_internal.reorg_block_hashes'::regclass"
        ),
        0
    );
}

#[test]
fn the_worker_follows_rindexers_hashes_and_rechecks_by_itself() {
    let mut chain = Chain::preloaded("orphans-worker", &["balance_queue.health_interval = 1"]);
    create_rindexer_hash_table(chain.c());
    chain.write(&rows(4000..=4009, 0), true);
    record(chain.c(), 4000..=4009, 0, 0);
    chain.write(&rows(4010..=4014, 1), false);
    record(chain.c(), 4010..=4014, 1, 4010);
    common::wait_until(
        "the worker to follow rindexer's hashes",
        std::time::Duration::from_secs(20),
        || {
            common::count(
                chain.c(),
                "SELECT 1 FROM balance_queue.canonical_block_hashes",
            ) == 15
        },
    );
    // Fork 1's rows of 4012..4014 were written late (after the rollback).
    rollback(&mut chain, 4010, 4014, 2, 4010);
    chain.write(&rows(4010..=4014, 2), true);
    let late = rows(4012..=4014, 1);
    chain.write(&late, false);
    common::wait_until(
        "the worker to settle",
        std::time::Duration::from_secs(30),
        || {
            common::pending(chain.c()) == 0
                && common::count(chain.c(), "SELECT 1 FROM balance_queue.block_hash_rechecks") == 0
                && common::count(
                    chain.c(),
                    "SELECT 1 FROM balance_queue.orphaned_transfer_rows",
                ) == 15
        },
    );
    chain.assert_canonical("the worker's own");
    assert_eq!(chain.orphans(), keys(&late));
}

#[test]
fn rows_counted_before_rindexers_table_is_followed_are_judged_once_it_is() {
    let mut chain = Chain::new("orphans-late-follow");
    create_rindexer_hash_table(chain.c());
    chain.write(&rows(5000..=5009, 0), true);
    chain.write(&rows(5010..=5014, 1), false);
    chain.write(&rows(5010..=5014, 2), true);
    record(chain.c(), 5000..=5009, 0, 0);
    record(chain.c(), 5010..=5014, 2, 5010);
    // Not followed yet (an attach before rindexer made its table, or an
    // upgrade from 0.1.0): both forks count.
    chain.settle();
    let expected = recompute::recompute(chain.c(), &[Source::rindexer(CANONICAL)]);
    assert!(!recompute::compare(chain.c(), &expected, &HashSet::new()).all_match());
    let copied: i32 = chain
        .c()
        .query_one("SELECT balance_queue.follow_rindexer_block_hashes()", &[])
        .unwrap()
        .get(0);
    assert_eq!(copied, 15);
    chain.settle();
    chain.assert_canonical("once followed");
    assert_eq!(chain.orphans(), keys(&rows(5010..=5014, 1)));
}

#[test]
fn a_row_counted_on_one_partition_before_its_block_had_a_hash_is_rechecked() {
    // Two holder partitions, the worker paused: a second session holds
    // partition 0's items while the drain applies partition 1's sides of
    // fork 1's rows (no canonical hash yet); then the operator records
    // fork 2's hash for the blocks.
    let mut chain = Chain::preloaded(
        "orphans-partitions",
        &["balance_queue.workers = 2", "balance_queue.enabled = off"],
    );
    chain.write(&rows(6000..=6009, 0), true);
    chain.write(&rows(6010..=6014, 1), false);
    let common::Fixture {
        cluster, client, ..
    } = &mut chain.f;
    assert!(common::drain_all_but_partition(cluster, client, 0, 100_000) > 0);
    common::set_canonical_hashes(chain.c(), (6010..=6014).map(|b| (b, hash(b, 2))));
    chain.write(&rows(6010..=6014, 2), true);
    chain.settle();
    chain.assert_canonical("a half-counted row rechecked");
    assert_eq!(chain.orphans(), keys(&rows(6010..=6014, 1)));
}

#[test]
fn a_block_hash_column_of_a_user_defined_type_is_never_read() {
    let mut chain = Chain::new("orphans-udt");
    chain.write(&rows(7000..=7001, 0), true);
    chain.settle();
    // The table's owner changes block_hash to a type of their own: the
    // drain, which reads rows with the extension owner's rights, leaves
    // the table's new rows unread (failed items) rather than cast it.
    chain
        .c()
        .batch_execute(&format!(
            "CREATE DOMAIN public.own_hash AS text;
             ALTER TABLE {} ALTER COLUMN block_hash TYPE public.own_hash",
            common::TABLE
        ))
        .unwrap();
    chain
        .c()
        .batch_execute(&format!(
            "INSERT INTO {t} (contract_address, \"from\", \"to\", value, tx_hash, block_number, block_hash,
                              network, tx_index, log_index)
             SELECT contract_address, \"from\", \"to\", value, '0x' || repeat('e', 64), 7002, block_hash,
                    network, tx_index, log_index
               FROM {t} LIMIT 1",
            t = common::TABLE
        ))
        .unwrap();
    drain(chain.c(), 5_000);
    let failed: String = chain
        .c()
        .query_one(
            "SELECT error_message FROM balance_queue.balance_update_queue WHERE status = 'failed' LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(failed.contains("user-defined type"), "{failed}");
    // handle_reorg does not queue its rows again either (it warns).
    let requeued: i64 = chain
        .c()
        .query_one(
            "SELECT items_requeued FROM balance_queue.handle_reorg(1, 7000)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(requeued, 0);
    // While a block waits for its recheck, recalculation refuses.
    chain
        .c()
        .batch_execute("INSERT INTO balance_queue.block_hash_rechecks VALUES (1, 7000)")
        .unwrap();
    assert_eq!(
        common::sqlstate(
            chain.c(),
            &format!(
                "SELECT balance_queue.recalculate_address_balance(1, '{}', '{}')",
                TOKENS[0],
                holder(1)
            )
        ),
        "55000"
    );
}
