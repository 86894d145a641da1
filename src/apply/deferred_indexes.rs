//! Index builds after a bulk load into empty tables. A bulk load that finds
//! the ledger and the balances empty for every chain (a first attach on a
//! fresh install, a rebuild of the only chain) drops their indexes, inserts
//! its rows into bare heaps, and builds the indexes again at the end: one
//! sort per index instead of a btree descent per row (docs/benchmarks.md,
//! "Indexes built after a bulk load", has what it saves).
//!
//! It needs both tables exclusively, which readers of the balances feel:
//! they wait until the load commits (`bulk_loads.indexes_rebuilt` tells).
//! So it is taken only when, within about a second, no session holds a lock
//! on either table, their partitions or indexes (a long report on the
//! balances is not waited for: the load then keeps the indexes and inserts
//! through them). On a hot standby the lock is replayed, and readers there
//! wait too. All of it is in
//! the load's transaction: a crash or an error leaves the indexes as they
//! were, with the load's rows gone.

use crate::errors::spi_ok;
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use pgrx::spi::SpiClient;

/// The tables a bulk load fills in bulk: the ledger and the balances.
const FILLED_TABLES: [&str; 2] = [
    "balance_queue.applied_transfers",
    "balance_queue.current_token_balances",
];

/// Per index of the tables `$1` (oid[]): the statement that drops it and the
/// one that builds it again; an index of a constraint (the primary keys)
/// through the constraint's definition, so it comes back as one. The
/// balances are partitioned by chain: an index of theirs reads back as
/// defined `ON ONLY` the parent; it is built again on the parent, so every
/// partition gets its own, named as before (the names derive from the
/// partition's and the columns'); dropping it drops the partitions'.
const INDEX_DEFINITIONS_SQL: &str = "SELECT CASE WHEN c.oid IS NULL
                     THEN format('DROP INDEX %s', i.indexrelid::regclass)
                     ELSE format('ALTER TABLE %s DROP CONSTRAINT %I', i.indrelid::regclass, c.conname) END,
                CASE WHEN c.oid IS NULL
                     THEN pg_catalog.regexp_replace(pg_catalog.pg_get_indexdef(i.indexrelid),
                                                    ' ON ONLY ', ' ON ')
                     ELSE format('ALTER TABLE %s ADD CONSTRAINT %I %s', i.indrelid::regclass, c.conname,
                                 pg_catalog.pg_get_constraintdef(c.oid)) END
           FROM pg_catalog.pg_index i
           LEFT JOIN pg_catalog.pg_constraint c
             ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid AND c.contype IN ('p', 'u', 'x')
          WHERE i.indrelid = ANY($1)
          ORDER BY i.indrelid, c.oid IS NULL, i.indexrelid";

/// The indexes a bulk load dropped: the statements that build them again.
pub(super) struct DeferredIndexes {
    builds: Vec<String>,
}

/// When the ledger and the balances are empty (no chain has counted state:
/// the caller holds its own chain exclusively and found it empty, so only
/// other chains could hold rows), no session holds a lock on either, no
/// other object depends on their indexes, the current role owns them, and
/// `balance_queue.bulk_rebuilds_indexes` is on:
/// locks both exclusively until the transaction ends, drops their indexes
/// and returns how to build them again with [`DeferredIndexes::build`].
/// Otherwise None, holding no new lock.
pub(super) fn defer_indexes(client: &mut SpiClient<'_>) -> Option<DeferredIndexes> {
    if !crate::gucs::BULK_REBUILDS_INDEXES.get() {
        return None;
    }
    let tables: Vec<pg_sys::Oid> = FILLED_TABLES
        .iter()
        .filter_map(|table| {
            spi_ok(client.select("SELECT $1::regclass::oid", Some(1), &[(*table).into()]))
                .first()
                .get_one::<pg_sys::Oid>()
                .ok()
                .flatten()
        })
        .collect();
    if tables.len() != FILLED_TABLES.len()
        || !ask(client, DROPPABLE_SQL, &[tables.clone().into()])
        || !ask(client, EMPTY_SQL, &[])
    {
        return None;
    }
    // The drops, builds and ANALYZE reach every partition and index: all
    // are locked here, or none, so none of them waits on another session.
    let relations: Vec<pg_sys::Oid> =
        spi_ok(client.select(RELATIONS_SQL, None, &[tables.clone().into()]))
            .filter_map(|row| spi_ok(row.get::<pg_sys::Oid>(1)))
            .collect();
    if !lock_without_waiting(client, &relations) {
        return None;
    }
    // Asked again under the locks: a batch of another chain may have
    // committed its first rows in between.
    if !ask(client, EMPTY_SQL, &[]) {
        unlock(&relations);
        return None;
    }
    let mut builds = Vec::new();
    let mut drops = Vec::new();
    for row in spi_ok(client.select(INDEX_DEFINITIONS_SQL, None, &[tables.into()])) {
        if let (Some(drop), Some(build)) =
            (spi_ok(row.get::<String>(1)), spi_ok(row.get::<String>(2)))
        {
            drops.push(drop);
            builds.push(build);
        }
    }
    for drop in &drops {
        spi_ok(client.update(drop, None, &[]));
    }
    Some(DeferredIndexes { builds })
}

/// Whether the ledger and the balances hold no row. A table emptied by a
/// rebuild still has its dead rows to step over: one sequential pass at most.
const EMPTY_SQL: &str = "SELECT NOT EXISTS (SELECT 1 FROM balance_queue.applied_transfers)
            AND NOT EXISTS (SELECT 1 FROM balance_queue.current_token_balances)";

/// A statement over `t`: the tables `$1` (oid[]) and their partitions (the
/// one definition of that set for [`RELATIONS_SQL`] and [`DROPPABLE_SQL`]),
/// followed by the rest of the statement.
macro_rules! concat_tables {
    ($rest:literal) => {
        concat!(
            "WITH t AS (SELECT unnest($1::oid[]) AS oid
                    UNION ALL
                    SELECT inhrelid FROM pg_catalog.pg_inherits WHERE inhparent = ANY($1))",
            $rest
        )
    };
}

/// The tables `$1` (oid[]), their partitions, then the indexes of all of
/// them: what dropping and building the indexes locks, tables first (the
/// order Postgres itself takes them in).
const RELATIONS_SQL: &str = concat_tables!("
         SELECT oid FROM (SELECT oid, 0 AS kind FROM t
                          UNION ALL
                          SELECT i.indexrelid, 1 FROM pg_catalog.pg_index i WHERE i.indrelid IN (SELECT oid FROM t)) r
          ORDER BY kind, oid");

/// Whether the current role owns (or is a member of the owner of) each of
/// the tables `$1` (oid[]), as dropping their indexes needs, and nothing
/// outside them depends on their indexes or their partitions' (a user's
/// foreign key referencing the balances would make the drop fail), and no
/// such index carries what a rebuild would not bring back (REPLICA
/// IDENTITY USING INDEX, a CLUSTER mark).
const DROPPABLE_SQL: &str = concat_tables!(
    ",
              i AS (SELECT * FROM pg_catalog.pg_index WHERE indrelid IN (SELECT oid FROM t))
         SELECT (SELECT bool_and(pg_catalog.pg_has_role(relowner, 'USAGE'))
                   FROM pg_catalog.pg_class WHERE oid = ANY($1))
                AND NOT EXISTS (SELECT 1 FROM i WHERE i.indisreplident OR i.indisclustered)
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                                 WHERE d.refclassid = 'pg_catalog.pg_class'::regclass
                                   AND d.deptype = 'n'
                                   AND d.refobjid IN (SELECT indexrelid FROM i))"
);

/// The boolean `sql` answers with the arguments `args`, in a fresh snapshot
/// (a read-write SPI call takes one per statement, which the check under
/// the locks needs); false for none.
fn ask(client: &mut SpiClient<'_>, sql: &str, args: &[DatumWithOid<'_>]) -> bool {
    spi_ok(
        spi_ok(client.update(sql, Some(1), args))
            .first()
            .get_one::<bool>(),
    )
    .unwrap_or(false)
}

impl DeferredIndexes {
    /// Builds the dropped indexes again, in the order they were read
    /// (primary keys first), and refreshes the tables' statistics: the
    /// planner's estimates for the next batches come from them, and the
    /// tables were empty when last analysed.
    pub(super) fn build(self, client: &mut SpiClient<'_>) {
        for build in &self.builds {
            spi_ok(client.update(build, None, &[]));
        }
        for table in FILLED_TABLES {
            spi_ok(client.update(&format!("ANALYZE {table}"), None, &[]));
        }
    }
}

/// How long [`lock_without_waiting`] keeps trying: a worker's maintenance
/// or a reader holds the balances for milliseconds; a report for longer,
/// and is not waited for.
const LOCK_ATTEMPTS: u32 = 40;
const LOCK_RETRY_US: std::ffi::c_long = 25_000;

/// Whether each session other than this one holding a lock on relation `$1`
/// (oid) is an autovacuum worker that Postgres cancels for a lock request
/// waiting on it (one preventing wraparound is not cancelled). A rebuild
/// leaves millions of dead rows, so autovacuum is on the emptied tables
/// just when the load would drop their indexes.
const ONLY_AUTOVACUUM_SQL: &str = "SELECT coalesce(bool_and(a.backend_type = 'autovacuum worker'
                                     AND a.query NOT LIKE '%to prevent wraparound%'), false)
           FROM pg_catalog.pg_locks l
           JOIN pg_catalog.pg_stat_activity a USING (pid)
          WHERE l.locktype = 'relation' AND l.relation = $1 AND l.granted
            AND l.database = (SELECT oid FROM pg_catalog.pg_database
                               WHERE datname = pg_catalog.current_database())
            AND l.pid <> pg_catalog.pg_backend_pid()";

/// Locks each of the relations `tables` in ACCESS EXCLUSIVE mode without
/// queuing behind (and so in front of) other sessions' locks: tries for
/// about a second, each time all or none. A relation held by autovacuum
/// alone is waited for, as any DDL does: Postgres cancels the vacuum after
/// `deadlock_timeout`. False when another session held one throughout.
fn lock_without_waiting(client: &mut SpiClient<'_>, tables: &[pg_sys::Oid]) -> bool {
    let mode = pg_sys::AccessExclusiveLock as pg_sys::LOCKMODE;
    for _ in 0..LOCK_ATTEMPTS {
        let mut taken = 0;
        while taken < tables.len() {
            let table = tables[taken];
            // SAFETY: lock-manager calls on an existing relation, inside a
            // transaction.
            if unsafe { pg_sys::ConditionalLockRelationOid(table, mode) } {
                taken += 1;
            } else if ask(client, ONLY_AUTOVACUUM_SQL, &[table.into()]) {
                unsafe { pg_sys::LockRelationOid(table, mode) };
                taken += 1;
            } else {
                break;
            }
        }
        if taken == tables.len() {
            return true;
        }
        unlock(&tables[..taken]);
        // SAFETY: a plain sleep; interrupts are served right after.
        unsafe { pg_sys::pg_usleep(LOCK_RETRY_US) };
        pgrx::check_for_interrupts!();
    }
    false
}

/// Releases the ACCESS EXCLUSIVE locks [`lock_without_waiting`] took on
/// the relations `tables`, which were read under them, never written.
fn unlock(tables: &[pg_sys::Oid]) {
    let mode = pg_sys::AccessExclusiveLock as pg_sys::LOCKMODE;
    for &table in tables {
        // SAFETY: releases one count of a lock this transaction took.
        unsafe { pg_sys::UnlockRelationOid(table, mode) };
    }
}
