//! Reading back the rows that claimed `source_rows` items stand for: which
//! source tables may be read (the others' items fail), and the CTEs that
//! read the rows by primary key and validate them once per statement.

use crate::errors::spi_ok;
use crate::sources::mapping::{BUILTIN_TYPED_COLUMN, RowFilter, SourceMapping, sides_of_validated};
use crate::sources::row_ids::row_id_column;
use once_cell::sync::Lazy;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use std::collections::BTreeSet;

/// A row when table `$1` (oid) has the extension's insert trigger.
const TRIGGERED_SQL: &str = "SELECT 1 FROM pg_catalog.pg_trigger
              WHERE tgrelid = $1 AND NOT tgisinternal
                AND tgfoid = 'balance_queue._enqueue_transfer_rows()'::pg_catalog.regprocedure";

/// A row when a column of table `$1` (oid) among `$2` (text[]) has a
/// user-defined type.
static USER_TYPED_COLUMN_SQL: Lazy<String> = Lazy::new(|| {
    format!(
        "SELECT 1 FROM pg_catalog.pg_attribute
          WHERE attrelid = $1 AND attname = ANY($2) AND NOT ({BUILTIN_TYPED_COLUMN})"
    )
});

/// Marks the `source_rows` items `$1` (bigint[]) failed: their table can no
/// longer be read back.
const FAIL_ORPHANS_SQL: &str = "UPDATE balance_queue.balance_update_queue
                SET status = 'failed', processed_at = clock_timestamp(), retryable = false,
                    error_message = format('rows %s of %s not counted: the table is no longer attached '
                                           '(or was never attached with attach_transfer_table, or now has a '
                                           'column of a user-defined type)',
                                           source_row_ids, source_table)
              WHERE id = ANY($1)";

/// Loads the mapping of each source table with claimed `source_rows`
/// items. Items of a table no longer attached (detached or dropped while
/// they waited; both normally supersede them first) are marked failed:
/// their rows were never counted. So are items of a table without the
/// extension's insert trigger, or with a column of a user-defined type: the
/// drain reads rows back with the extension owner's rights, so it reads only
/// tables whose owner let the trigger be created (a row in
/// `attached_sources` alone is not enough), and only built-in types' casts.
pub(super) fn row_sources(
    client: &mut SpiClient<'_>,
    items: &[(i64, u32)],
) -> (Vec<SourceMapping>, Vec<i64>) {
    let relids: BTreeSet<u32> = items.iter().map(|(_, relid)| *relid).collect();
    let mut sources = Vec::new();
    let mut orphans = Vec::new();
    for relid in relids {
        let ids = items.iter().filter(|(_, r)| *r == relid).map(|(id, _)| *id);
        let oid = pg_sys::Oid::from(relid);
        let triggered = !spi_ok(client.select(TRIGGERED_SQL, Some(1), &[oid.into()])).is_empty();
        match crate::sources::mapping::load_mapping(client, oid) {
            Some(mapping)
                if triggered
                    && mapping.row_id_column.is_some()
                    && builtin_columns(client, oid, &mapping) =>
            {
                sources.push(mapping)
            }
            _ => orphans.extend(ids),
        }
    }
    if !orphans.is_empty() {
        spi_ok(client.update(FAIL_ORPHANS_SQL, None, &[orphans.clone().into()]));
    }
    let ids = items
        .iter()
        .filter(|(id, _)| !orphans.contains(id))
        .map(|(id, _)| *id)
        .collect();
    (sources, ids)
}

/// Whether every column the mapping reads is of a built-in type. Checked
/// on every read, not only at attach: the table's owner may since have
/// changed a column to a type whose cast to text is its own code.
pub fn builtin_columns(
    client: &SpiClient<'_>,
    relid: pg_sys::Oid,
    mapping: &SourceMapping,
) -> bool {
    let columns: Vec<String> = [
        Some(&mapping.from_column),
        Some(&mapping.to_column),
        Some(&mapping.value_column),
        Some(&mapping.contract_column),
        Some(&mapping.tx_hash_column),
        Some(&mapping.log_index_column),
        Some(&mapping.block_number_column),
        mapping.network_column.as_ref(),
        mapping.row_id_column.as_ref(),
        mapping.block_hash_column.as_ref(),
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect();
    spi_ok(client.select(
        USER_TYPED_COLUMN_SQL.as_str(),
        Some(1),
        &[relid.into(), columns.into()],
    ))
    .is_empty()
}

/// The rows of `sources` that one statement's `source_rows` items stand
/// for. The items' ids are the statement's bigint[] parameter `items` (for
/// example `"$2"`), which the caller binds; the CTE names are this type's
/// own, so fragments from one `ReadBack` fit together and nothing else
/// depends on them.
pub(super) struct ReadBack<'a> {
    sources: &'a [SourceMapping],
    items: &'a str,
}

impl<'a> ReadBack<'a> {
    pub(super) fn new(sources: &'a [SourceMapping], items: &'a str) -> Self {
        Self { sources, items }
    }

    /// No source to read back from: the other fragments are empty.
    pub(super) fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The CTE holding the rows of source `i`, validated.
    fn rows(i: usize) -> String {
        format!("read_back_{i}")
    }

    /// The CTE recording the bad rows of source `i`.
    fn failed(i: usize) -> String {
        format!("read_back_failed_{i}")
    }

    /// The rows read back by primary key and validated once per statement,
    /// as comma-separated CTEs (one per source, in order; see
    /// [`SourceMapping::validated_rows`]).
    pub(super) fn ctes(&self) -> String {
        self.sources
            .iter()
            .enumerate()
            .map(|(i, m)| {
                // LATERAL with an OFFSET 0 fence: one primary-key range scan
                // per id range. Flattened, the planner joins against a scan of
                // the whole source table, whose cost grows with history. The
                // items of one statement's holder partitions share their ids:
                // claimed together (a bulk load, the SQL drain) the rows are
                // read once, for the sides of every partition among them.
                let rows = format!(
                    "(SELECT t.*, a.holder_partitions AS _bq_item_holder_partitions,
                            a.holder_partition_set AS _bq_item_holder_partition_set
                       FROM (SELECT unnest(g.source_row_ids) AS ids, g.holder_partitions, g.holder_partition_set
                               FROM (SELECT q.source_row_ids, q.holder_partitions,
                                            array_agg(q.holder_partition) AS holder_partition_set
                                       FROM balance_queue.balance_update_queue q
                                      WHERE q.id = ANY({items}) AND q.source_table = {relid}::oid::regclass
                                      GROUP BY q.source_row_ids, q.holder_partitions) g) a
                   CROSS JOIN LATERAL (SELECT * FROM {label} s
                                        WHERE {id} >= lower(a.ids) AND {id} < upper(a.ids)
                                       OFFSET 0) t)",
                    items = self.items,
                    relid = m.relid,
                    label = m.label,
                    id = row_id_column(m, "s"),
                );
                format!(
                    "{} AS MATERIALIZED ({})",
                    Self::rows(i),
                    m.validated_item_rows(&rows)
                )
            })
            .collect::<Vec<_>>()
            .join(",\n")
    }

    /// An INSERT queuing one transfer-side item per holder side of every
    /// row read back from source `i` (a bad row as one `failed` item naming
    /// it), for a statement with [`Self::ctes`].
    pub(super) fn enqueue_rows(&self, i: usize) -> String {
        self.enqueue(i, &RowFilter::default())
    }

    fn enqueue(&self, i: usize, filter: &RowFilter<'_>) -> String {
        let m = &self.sources[i];
        m.enqueue_validated(&Self::rows(i), 1, m.relid, filter)
    }

    /// Comma-separated CTEs recording each bad row read back as a `failed`
    /// item naming it, for a statement with [`Self::ctes`].
    pub(super) fn failures(&self) -> String {
        let bad = RowFilter {
            valid: Some(false),
            ..RowFilter::default()
        };
        (0..self.sources.len())
            .map(|i| {
                format!(
                    "{} AS ({} RETURNING 1)",
                    Self::failed(i),
                    self.enqueue(i, &bad)
                )
            })
            .collect::<Vec<_>>()
            .join(",\n")
    }

    /// CTEs recording the orphaned rows read back, forgetting the records
    /// of rows no longer orphaned, and the hashes of rows whose block has no
    /// canonical hash yet (see `SourceMapping::record_judgements`), each
    /// preceded by ",", to follow the last CTE of a statement with
    /// [`Self::ctes`]; `confirmed_through` is the `confirmed_through` of
    /// the chain of row `v`, as an expression. Empty when no source is
    /// judged.
    pub(super) fn judgements(&self, confirmed_through: &str) -> String {
        self.sources
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let [orphaned, unorphaned, unjudged] = m.record_judgements(&Self::rows(i), confirmed_through)?;
                Some(format!(
                    ",\n read_back_orphaned_{i} AS ({orphaned}),\n read_back_unorphaned_{i} AS ({unorphaned}),\n \
                     read_back_unjudged_{i} AS ({unjudged})"
                ))
            })
            .collect()
    }

    /// The number of bad rows [`Self::failures`] recorded, as an
    /// expression (0 with no source).
    pub(super) fn bad_row_count(&self) -> String {
        (0..self.sources.len())
            .map(|i| format!("(SELECT count(*) FROM {})", Self::failed(i)))
            .chain(std::iter::once("0".to_string()))
            .collect::<Vec<_>>()
            .join(" + ")
    }

    /// The valid transfer sides read back that `filter` keeps (columns of
    /// [`SourceMapping::sides`]), with each one's `source_oid`, as one
    /// UNION ALL, for a statement with [`Self::ctes`].
    pub(super) fn sides(&self, filter: &RowFilter<'_>) -> String {
        self.sources
            .iter()
            .enumerate()
            .map(|(i, m)| {
                format!(
                    "SELECT x.*, {}::oid AS source_oid FROM ({}) x",
                    m.relid,
                    sides_of_validated(&Self::rows(i), filter)
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ")
    }
}
