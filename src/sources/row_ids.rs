//! Inserted rows queued by id. For a table whose primary key is one integer
//! column (rindexer's `rindexer_id SERIAL PRIMARY KEY`), an INSERT or COPY
//! queues one `source_rows` item per statement and chain holding the ids it
//! wrote, and the apply path reads those rows back by primary key
//! (`apply::read_back`). Ingest then costs one small write per statement
//! instead of two queue rows per transfer (docs/design-notes.md: the
//! latter cost about 12× the indexer's own COPY, even set-based).
//!
//! Rows are read when their item is applied, not when they were inserted,
//! so a row deleted or updated before then was never counted and must not
//! be taken back: DELETE and UPDATE first cut their rows' ids out of the
//! pending items (waiting for a drain that holds one; once it commits those
//! rows count as applied) and queue the removal of the other rows only.
//! TRUNCATE and detaching supersede every waiting item of the table and
//! take back only the other rows.
//!
//! With several holder partitions a row has one item per partition, and
//! each counts only its partition's sides: a row can be counted on one side
//! and still waiting on the other. What was cut (and what is still waiting)
//! is therefore known per (holder_partitions, holder_partition), and
//! [`counted_rows`] gives each row the partitions whose sides count, which
//! the read-back's partition columns carry to `SourceMapping`'s fragments.
//!
//! An item "waits" until it is completed: pending, or failed (the worker
//! could neither apply nor split it; `retry_failed_updates` puts it back).
//! Its rows count nowhere until then.
//!
//! A drain reads source tables while holding queue items, and TRUNCATE or
//! DROP lock the table before they supersede items: to keep that order from
//! deadlocking, every reader takes ACCESS SHARE on the id-keyed sources
//! before it claims any item; the drain only where it need not wait
//! ([`try_lock_row_sources`]), skipping the items of the other tables.

use crate::errors::spi_ok;
use crate::sources::mapping::SourceMapping;
use pgrx::prelude::*;
use pgrx::spi::{SpiClient, quote_identifier, quote_literal};

/// The table's primary key column when it is a single integer column
/// (smallint, integer or bigint), else `None`.
pub fn integer_primary_key(client: &SpiClient<'_>, relid: pg_sys::Oid) -> Option<String> {
    spi_ok(client.select(
        "SELECT a.attname::text
           FROM pg_catalog.pg_index i
           JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
          WHERE i.indrelid = $1 AND i.indisprimary AND i.indnkeyatts = 1
            AND a.atttypid IN ('pg_catalog.int2'::pg_catalog.regtype, 'pg_catalog.int4'::pg_catalog.regtype,
                               'pg_catalog.int8'::pg_catalog.regtype)",
        Some(1),
        &[relid.into()],
    ))
    .first()
    .get_one::<String>()
    .ok()
    .flatten()
}

/// The row id column of `alias`, as bigint for range functions.
fn row_id(mapping: &SourceMapping, alias: &str) -> String {
    format!("{}::bigint", row_id_column(mapping, alias))
}

/// The row id column of `alias` as stored: compared uncast, so the primary
/// key index serves the comparison (integer and bigint share an operator family).
pub(crate) fn row_id_column(mapping: &SourceMapping, alias: &str) -> String {
    let column = mapping
        .row_id_column
        .as_deref()
        .expect("only tables queued by id have a row id column");
    format!("{alias}.{}", quote_identifier(column))
}

/// Queues the rows of `relation` (the table itself, or a transition table)
/// by id: one `source_rows` item per chain and block of
/// [`ROWS_PER_ITEM`] ids (rows of an unknown network share items without a
/// chain; they are recorded as bad rows when read back), so no item, not
/// even a backfill's, outgrows a batch. Returns the number of rows queued.
pub fn queue_rows(client: &mut SpiClient<'_>, mapping: &SourceMapping, relation: &str) -> i64 {
    spi_ok(
        spi_ok(client.update(
            &format!(
                "WITH queued AS ({}) SELECT coalesce(sum(row_count), 0)::bigint FROM queued",
                queue_rows_sql(mapping, relation)
            ),
            Some(1),
            &[],
        ))
        .first()
        .get_one::<i64>(),
    )
    .unwrap_or(0)
}

/// Queues again the rows of the table of `mapping` that belong to chain
/// `chain_id` and were counted, as a rebuild of the chain needs them: by id
/// the rows no item still waits for, and as transfer-side items the counted
/// sides of rows still waiting in another partition's item (see
/// [`counted_relation`]). Returns the number of rows queued.
pub fn queue_rows_of_chain(
    client: &mut SpiClient<'_>,
    mapping: &SourceMapping,
    chain_id: i32,
) -> i64 {
    let relation = counted_relation(mapping);
    let of_chain = match (mapping.chain_id, &mapping.network_column) {
        (Some(chain), _) if chain == chain_id => relation,
        (None, Some(_)) => {
            let (chain, join) = mapping.chain_of_row("r");
            format!("(SELECT r.* FROM {relation} r{join} WHERE {chain} = {chain_id})")
        }
        _ => return 0,
    };
    let whole = format!("(SELECT r.* FROM {of_chain} r WHERE r.{PARTITIONS_COLUMN} IS NULL)");
    let partly = format!("(SELECT r.* FROM {of_chain} r WHERE r.{PARTITIONS_COLUMN} IS NOT NULL)");
    let sides = mapping.enqueue_item_rows(
        &partly,
        1,
        mapping.relid,
        &crate::sources::mapping::RowFilter {
            valid: Some(true),
            ..Default::default()
        },
    );
    queue_rows(client, mapping, &whole) + crate::sources::attach::run_counted(client, &sides)
}

/// Ids per `source_rows` item at most: rindexer's largest batch, and the
/// worker's default batch size.
pub const ROWS_PER_ITEM: i64 = 5000;

/// An item's share of `rows` (an integer expression) as its `row_count`:
/// all of them for an item of every partition, else the part of partition
/// `holder_partition` of `holder_partitions`, so the shares of one
/// statement's items add up to its rows exactly.
const ROW_SHARE: &str = "CASE WHEN holder_partitions IS NULL THEN {rows}
          ELSE ({rows}) * (holder_partition + 1) / holder_partitions
               - ({rows}) * holder_partition / holder_partitions END";

fn row_share(rows: &str) -> String {
    ROW_SHARE.replace("{rows}", rows)
}

/// The partitions new items are written for: `holder_partition` and
/// `holder_partitions` of each (one row of NULLs with a single worker).
fn partitions_sql() -> String {
    match crate::gucs::holder_partitions() {
        1 => "(VALUES (NULL::smallint, NULL::smallint)) p(holder_partition, holder_partitions)"
            .into(),
        n => format!(
            "(SELECT k::smallint, {n}::smallint FROM generate_series(0, {n} - 1) k) p(holder_partition, holder_partitions)"
        ),
    }
}

fn queue_rows_sql(mapping: &SourceMapping, relation: &str) -> String {
    let (chain, join) = mapping.chain_of_row("r");
    format!(
        "INSERT INTO balance_queue.balance_update_queue
             (chain_id, update_type, source_table, source_row_ids, row_count,
              holder_partition, holder_partitions)
         SELECT g.chain_id, 'source_rows', {relid}::oid::regclass, g.ids, {share},
                p.holder_partition, p.holder_partitions
           FROM (SELECT {chain} AS chain_id, range_agg(int8range({id}, {id}, '[]')) AS ids,
                        count(*)::integer AS rows
                   FROM {relation} r{join}
                  GROUP BY 1, {id} / {ROWS_PER_ITEM}) g
          CROSS JOIN {partitions}
          ORDER BY lower(g.ids), p.holder_partition
         RETURNING row_count",
        relid = mapping.relid,
        id = row_id(mapping, "r"),
        share = row_share("g.rows"),
        partitions = partitions_sql(),
    )
}

/// Rows of a table that `source_rows` items wait for (or that were cut out
/// of them), per holder partition: a SQL relation of (holder_partitions
/// smallint, holder_partition smallint, ids int8multirange), both partition
/// columns NULL for an item of every partition.
pub struct PendingRows(String);

impl PendingRows {
    /// From rows (holder_partitions, holder_partition, ids as int8multirange
    /// text) of a query: `None` when there are none.
    fn collect(rows: pgrx::spi::SpiTupleTable<'_>) -> Option<Self> {
        let values: Vec<String> = rows
            .filter_map(|row| {
                let ids = spi_ok(row.get::<String>(3))?;
                let part = |i| {
                    spi_ok(row.get::<i16>(i))
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| "NULL".into())
                };
                Some(format!(
                    "({}::smallint, {}::smallint, {}::int8multirange)",
                    part(1),
                    part(2),
                    quote_literal(&ids)
                ))
            })
            .collect();
        (!values.is_empty()).then(|| {
            PendingRows(format!(
                "(VALUES {}) AS pending(holder_partitions, holder_partition, ids)",
                values.join(", ")
            ))
        })
    }
}

/// Cuts the ids of `old_rows` (a transition table of deleted or updated
/// rows) out of the table's pending `source_rows` items, waiting for a
/// drain that holds one. Returns what was cut, per partition (rows whose
/// sides of those partitions were never counted), or `None` when nothing was.
pub fn cut_pending_rows(
    client: &mut SpiClient<'_>,
    mapping: &SourceMapping,
    old_rows: &str,
) -> Option<PendingRows> {
    let gone = spi_ok(
        spi_ok(client.select(
            &format!(
                "SELECT range_agg(int8range({id}, {id}, '[]'))::text FROM {old_rows} r",
                id = row_id(mapping, "r")
            ),
            Some(1),
            &[],
        ))
        .first()
        .get_one::<String>(),
    )?;
    PendingRows::collect(spi_ok(client.update(
        &format!(
            "WITH hit AS (
                 SELECT q.id, q.source_row_ids * $1::int8multirange AS cut,
                        q.source_row_ids - $1::int8multirange AS rest
                   FROM balance_queue.balance_update_queue q
                  WHERE q.status <> 'completed' AND q.source_table = $2::oid::regclass
                    AND q.source_row_ids IS NOT NULL AND q.source_row_ids && $1::int8multirange
                  ORDER BY q.id
                    FOR UPDATE
             ), cut AS (
                 UPDATE balance_queue.balance_update_queue q
                    SET source_row_ids = hit.rest,
                        row_count = {rest_share},
                        status = CASE WHEN isempty(hit.rest) THEN 'completed' ELSE q.status END,
                        processed_at = CASE WHEN isempty(hit.rest) THEN clock_timestamp() END,
                        error_message = CASE WHEN isempty(hit.rest)
                                             THEN 'superseded: every row was deleted or updated before it was applied' END
                   FROM hit
                  WHERE q.id = hit.id
                 RETURNING q.holder_partitions, q.holder_partition, hit.cut
             )
             {PER_PARTITION}",
            rest_share = row_share(
                "(SELECT coalesce(sum(upper(r) - lower(r)), 0) FROM unnest(hit.rest) r)::integer"
            ),
            PER_PARTITION = per_partition("cut", "cut"),
        ),
        None,
        &[gone.as_str().into(), pg_sys::Oid::from(mapping.relid).into()],
    )))
}

/// A SELECT of (holder_partitions, holder_partition, ids as text) over
/// `relation`, whose column `ids` is an int8multirange: the ids per partition.
fn per_partition(relation: &str, ids: &str) -> String {
    format!(
        "SELECT x.holder_partitions, x.holder_partition, range_agg(i)::text
           FROM {relation} x, unnest(x.{ids}) i
          GROUP BY 1, 2"
    )
}

/// The column [`counted_rows`] adds for the holder partitions the row's
/// items were written for (NULL: every side of the row counts).
const PARTITIONS_COLUMN: &str = "_bq_item_holder_partitions";

/// `relation` (rows of the table of `mapping`) with the sides each row has
/// counted: rows that `pending` (a [`PendingRows`] relation; `None`: none)
/// waits for on every side are left out; the others get the columns
/// `_bq_item_holder_partitions` and `_bq_item_holder_partition_set` that
/// `SourceMapping::validated_item_rows` reads, NULL when every side
/// counted, else the row's partitions and those of them not waiting. The
/// one definition of which sides of a row count.
pub fn counted_rows(mapping: &SourceMapping, relation: &str, pending: Option<&str>) -> String {
    let Some(pending) = pending else {
        return format!(
            "(SELECT r.*, NULL::smallint AS {PARTITIONS_COLUMN}, NULL::smallint[] AS _bq_item_holder_partition_set
                FROM {relation} r)"
        );
    };
    format!(
        "(WITH pending AS MATERIALIZED (SELECT * FROM {pending})
          SELECT r.*, w.holder_partitions AS {PARTITIONS_COLUMN},
                 CASE WHEN w.holder_partitions IS NOT NULL
                      THEN ARRAY(SELECT k::smallint FROM generate_series(0, w.holder_partitions - 1) k
                                  WHERE k <> ALL (w.waiting)) END AS _bq_item_holder_partition_set
            FROM {relation} r
           CROSS JOIN LATERAL (SELECT max(p.holder_partitions) AS holder_partitions,
                                      array_agg(p.holder_partition) AS waiting,
                                      coalesce(bool_or(p.holder_partitions IS NULL), false) AS every_side
                                 FROM pending p WHERE {id} <@ p.ids) w
           WHERE NOT w.every_side
             AND (w.holder_partitions IS NULL OR cardinality(w.waiting) < w.holder_partitions))",
        id = row_id(mapping, "r"),
    )
}

/// `relation` (rows deleted or updated) annotated by [`counted_rows`] with
/// `cut` (from [`cut_pending_rows`]): the sides to take back.
pub fn without_cut_rows(
    mapping: &SourceMapping,
    relation: &str,
    cut: Option<&PendingRows>,
) -> String {
    counted_rows(mapping, relation, cut.map(|c| c.0.as_str()))
}

/// Marks every waiting `source_rows` item of the table completed with
/// `reason` (its rows were never counted and are about to go), waiting for
/// a drain that holds one. Returns the ids they held per partition (for
/// [`without_cut_rows`]), or `None` when there were none.
pub fn supersede_pending_rows(
    client: &mut SpiClient<'_>,
    relid: u32,
    reason: &str,
) -> Option<PendingRows> {
    PendingRows::collect(spi_ok(client.update(
        &format!(
            "WITH superseded AS (
                 UPDATE balance_queue.balance_update_queue q
                    SET status = 'completed', processed_at = clock_timestamp(), error_message = $2
                  WHERE q.id IN (SELECT id FROM balance_queue.balance_update_queue
                                  WHERE status <> 'completed' AND source_table = $1::oid::regclass
                                    AND source_row_ids IS NOT NULL
                                  ORDER BY id FOR UPDATE)
                 RETURNING q.holder_partitions, q.holder_partition, q.source_row_ids
             )
             {}",
            per_partition("superseded", "source_row_ids")
        ),
        None,
        &[pg_sys::Oid::from(relid).into(), reason.into()],
    )))
}

fn row_source_relids(client: &SpiClient<'_>) -> Vec<pg_sys::Oid> {
    spi_ok(client.select(
        "SELECT source_table::oid FROM balance_queue.attached_sources
          WHERE row_id_column IS NOT NULL ORDER BY 1",
        None,
        &[],
    ))
    .filter_map(|row| spi_ok(row.get::<pg_sys::Oid>(1)))
    .collect()
}

/// Takes ACCESS SHARE on every attached table queued by id, in oid order,
/// until the end of the transaction, waiting if needed. For explicit calls
/// (recalculation, handle_reorg). It conflicts only with ACCESS EXCLUSIVE,
/// never with the indexer's INSERT, COPY or DELETE.
pub fn lock_row_sources(client: &SpiClient<'_>) {
    for relid in row_source_relids(client) {
        // A table dropped meanwhile leaves a lock on a free oid: harmless.
        unsafe { pg_sys::LockRelationOid(relid, pg_sys::AccessShareLock as pg_sys::LOCKMODE) };
    }
}

/// [`lock_row_sources`] without waiting, for the drain: returns the tables
/// locked. A table under TRUNCATE, DROP or DROP EXTENSION (ACCESS
/// EXCLUSIVE held or requested) is skipped, and so are its items in this
/// batch; so the drain never waits on a source table while holding items or
/// extension tables that such a statement may be waiting for.
pub fn try_lock_row_sources(client: &SpiClient<'_>) -> Vec<u32> {
    row_source_relids(client)
        .into_iter()
        .filter(|&relid| unsafe {
            pg_sys::ConditionalLockRelationOid(relid, pg_sys::AccessShareLock as pg_sys::LOCKMODE)
        })
        .map(|relid| relid.to_u32())
        .collect()
}

/// Locks the waiting `source_rows` items that can hold rows of `chain_id`,
/// in id order, waiting for drains that hold some: once they commit, their
/// rows count, and no other drain can apply these items until this
/// transaction ends.
pub fn lock_waiting_rows_of_chain(client: &mut SpiClient<'_>, chain_id: i32) {
    spi_ok(client.update(
        "SELECT 1 FROM balance_queue.balance_update_queue
          WHERE status <> 'completed' AND source_row_ids IS NOT NULL
            AND (chain_id = $1 OR chain_id IS NULL)
          ORDER BY id FOR UPDATE",
        None,
        &[chain_id.into()],
    ));
}

/// The table's rows that the apply path has counted or will count through
/// a transfer-side item, annotated by [`counted_rows`]: a row's sides
/// still waiting in a `source_rows` item are left to it (recalculation and
/// handle_reorg must not count them twice), its other sides count.
pub fn counted_relation(mapping: &SourceMapping) -> String {
    if mapping.row_id_column.is_none() {
        return counted_rows(mapping, &mapping.label, None);
    }
    let waiting = format!(
        "(SELECT q.holder_partitions, q.holder_partition, range_agg(ids) AS ids
            FROM balance_queue.balance_update_queue q, unnest(q.source_row_ids) ids
           WHERE q.status <> 'completed' AND q.source_row_ids IS NOT NULL
             AND q.source_table = {relid}::oid::regclass
           GROUP BY 1, 2) AS waiting",
        relid = mapping.relid,
    );
    counted_rows(mapping, &mapping.label, Some(&waiting))
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// The shares of a statement's items over every holder partition add
    /// up to its rows, each between rows / n rounded down and up.
    #[pg_test]
    fn row_shares_add_up_to_the_rows() {
        for partitions in 1..=5i64 {
            for rows in [0i64, 1, 2, 3, 7, 4999, 5000] {
                let sql = format!(
                    "SELECT sum(s)::bigint, min(s)::bigint, max(s)::bigint
                       FROM (SELECT {share} AS s
                               FROM (SELECT k::smallint AS holder_partition, {partitions}::smallint AS holder_partitions
                                       FROM generate_series(0, {partitions} - 1) k) p) shares",
                    share = super::row_share(&format!("{rows}::integer")),
                );
                let (sum, min, max) = Spi::get_three::<i64, i64, i64>(&sql).expect("SPI");
                assert_eq!(sum, Some(rows), "{rows} rows over {partitions}");
                assert_eq!(
                    min,
                    Some(rows / partitions),
                    "{rows} rows over {partitions}"
                );
                assert_eq!(
                    max,
                    Some(rows / partitions + i64::from(rows % partitions != 0)),
                    "{rows} rows over {partitions}"
                );
            }
        }
    }
}
