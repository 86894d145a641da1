//! SQL over attached transfer tables: one definition of "a valid transfer
//! row" shared by the ingest triggers, the backfill, the seed's row trigger
//! and recalculation, so they can never disagree about what counts.
//!
//! Also the one place that reads a mapping from `attached_sources`.
//!
//! Identifiers come from `attached_sources` (checked against the catalog at
//! attach time) and are always quoted with `quote_identifier`.

use crate::errors::spi_ok;
use pgrx::pg_sys;
use pgrx::spi::{SpiClient, quote_identifier, quote_literal};

/// A `pg_attribute` row whose column has a built-in type: one created by
/// initdb, with an oid below `FirstNormalObjectId` (16384, Postgres's
/// src/include/access/transam.h). The extension reads source columns only
/// through casts to text, possibly as a superuser (the worker,
/// recalculation), so only built-in output functions ever run. The one
/// definition of that check.
pub const BUILTIN_TYPED_COLUMN: &str = "atttypid < 16384";

/// Where a source's transfer facts live: column names, and the chain (fixed,
/// or looked up from each row's network name in the chain registry).
#[derive(Debug, Clone)]
pub struct SourceMapping {
    /// The source relation as SQL text (a qualified table name or a transition table).
    pub label: String,
    pub chain_id: Option<i32>,
    pub from_column: String,
    pub to_column: String,
    pub value_column: String,
    pub contract_column: String,
    pub tx_hash_column: String,
    pub log_index_column: String,
    pub block_number_column: String,
    pub network_column: Option<String>,
    /// The table's single-column integer primary key when inserted rows
    /// are queued by id (see `row_ids`); `None`: queued by content.
    pub row_id_column: Option<String>,
    /// The source table's oid (0 for a transition table or a literal row).
    pub relid: u32,
    /// The column holding each row's block hash (rindexer's `block_hash`),
    /// or `None`: rows are never judged against canonical hashes.
    pub block_hash_column: Option<String>,
    /// Whether rows are judged against `canonical_block_hashes` (the
    /// table's `canonical_hash_source` is `recorded` and it is queued by id,
    /// so each orphan is recorded by row id, which keeps its block's hash
    /// from being pruned): a row whose block has a canonical hash other than
    /// its own is orphaned and does not count.
    pub judge_block_hashes: bool,
}

/// The `attached_sources` columns a mapping is read from, in [`mapping_from_row`]'s order.
const MAPPING_COLUMNS: &str = "source_table::text, chain_id, from_column, to_column, value_column, \
     contract_column, tx_hash_column, log_index_column, block_number_column, network_column, \
     row_id_column, source_table::oid AS relid, block_hash_column, \
     block_hash_column IS NOT NULL AND canonical_hash_source = 'recorded' AND row_id_column IS NOT NULL";

fn mapping_from_row(row: &pgrx::spi::SpiHeapTupleData) -> SourceMapping {
    let text = |i: usize| spi_ok(row.get::<String>(i)).unwrap_or_default();
    SourceMapping {
        label: text(1),
        chain_id: spi_ok(row.get::<i32>(2)),
        from_column: text(3),
        to_column: text(4),
        value_column: text(5),
        contract_column: text(6),
        tx_hash_column: text(7),
        log_index_column: text(8),
        block_number_column: text(9),
        network_column: spi_ok(row.get::<String>(10)),
        row_id_column: spi_ok(row.get::<String>(11)),
        relid: spi_ok(row.get::<pg_sys::Oid>(12))
            .map(|oid| oid.to_u32())
            .unwrap_or_default(),
        block_hash_column: spi_ok(row.get::<String>(13)),
        judge_block_hashes: spi_ok(row.get::<bool>(14)).unwrap_or(false),
    }
}

/// The mapping of one attached table, or `None` when it is not attached.
pub fn load_mapping(client: &SpiClient<'_>, relid: pg_sys::Oid) -> Option<SourceMapping> {
    let rows = spi_ok(client.select(
        &format!("SELECT {MAPPING_COLUMNS} FROM balance_queue.attached_sources WHERE source_table = $1::oid"),
        Some(1),
        &[relid.into()],
    ));
    rows.into_iter().next().map(|row| mapping_from_row(&row))
}

/// Every attached table that can hold transfers of `chain_id`: those fixed
/// to it and those that take the chain from each row's network.
pub fn mappings_for_chain(client: &SpiClient<'_>, chain_id: i32) -> Vec<SourceMapping> {
    let rows = spi_ok(client.select(
        &format!(
            "SELECT {MAPPING_COLUMNS} FROM balance_queue.attached_sources
              WHERE chain_id = $1 OR chain_id IS NULL ORDER BY source_table"
        ),
        None,
        &[chain_id.into()],
    ));
    rows.into_iter().map(|row| mapping_from_row(&row)).collect()
}

/// Column `name` of the row aliased `alias`, as text.
pub(crate) fn text_column(alias: &str, name: &str) -> String {
    format!("{alias}.{}::text", quote_identifier(name))
}

impl SourceMapping {
    /// A mapping whose columns carry rindexer's Transfer names (`from`,
    /// `to`, `value`, `contract_address`, `tx_hash`, `log_index`,
    /// `block_number`), of no table (relid 0) and without a network or row
    /// id column; callers set those they have.
    pub fn rindexer_named(label: String, chain_id: Option<i32>) -> Self {
        SourceMapping {
            label,
            chain_id,
            from_column: "from".into(),
            to_column: "to".into(),
            value_column: "value".into(),
            contract_column: "contract_address".into(),
            tx_hash_column: "tx_hash".into(),
            log_index_column: "log_index".into(),
            block_number_column: "block_number".into(),
            network_column: None,
            row_id_column: None,
            relid: 0,
            block_hash_column: None,
            judge_block_hashes: false,
        }
    }

    /// How the chain of a source row aliased `row` is found: the chain id
    /// expression and the join it needs. A fixed chain is a literal; a
    /// network column joins the chain registry (aliased `c`) by network
    /// name (a row whose network is unknown gets NULL, and fails its
    /// check); neither gives NULL. The one network → chain join.
    pub fn chain_of_row(&self, row: &str) -> (String, String) {
        match (self.chain_id, &self.network_column) {
            (Some(chain_id), _) => (chain_id.to_string(), String::new()),
            (None, Some(network)) => (
                "c.chain_id".to_string(),
                format!(
                    " LEFT JOIN balance_queue.chain_registry c ON c.network_name = {}",
                    text_column(row, network)
                ),
            ),
            (None, None) => ("NULL::integer".to_string(), String::new()),
        }
    }

    /// A SELECT over `relation` returning, per source row: chain_id,
    /// network, `error` (NULL for a valid row, else the reason, from
    /// `_transfer_row_error`), log_index_raw, value_raw, the lowercased
    /// contract_address, from_address, to_address and tx_hash, and for
    /// valid rows only value_wei (numeric), log_index and block_number;
    /// then holder_partitions and holder_partition_set, NULL (every side
    /// counts; see [`Self::validated_item_rows`]); then row_id (the row id
    /// column, NULL without one), the lowercased block_hash (NULL without a
    /// block hash column), canonical_hash (of the row's block in
    /// `canonical_block_hashes`, for a valid row of a table judged against
    /// them; else NULL) and `orphaned` (a canonical hash is known and is
    /// not the row's: the row does not count; see [`ORPHANED`]).
    pub fn validated_rows(&self, relation: &str) -> String {
        self.validated_rows_with(relation, false)
    }

    /// [`Self::validated_rows`] of `relation`, rows read back for queue
    /// items, with the `holder_partitions` of their items and the set of
    /// their items' `holder_partition`s (see `balance_update_queue`) in
    /// columns `_bq_item_holder_partitions` (smallint) and
    /// `_bq_item_holder_partition_set` (smallint[]): the fragments below
    /// then keep only the sides of those partitions, and record bad rows
    /// only with the first partition, as the statement's other items read
    /// the same rows.
    pub fn validated_item_rows(&self, relation: &str) -> String {
        self.validated_rows_with(relation, true)
    }

    fn validated_rows_with(&self, relation: &str, item_rows: bool) -> String {
        let (partitions, partition_set) = if item_rows {
            (
                "r._bq_item_holder_partitions",
                "r._bq_item_holder_partition_set",
            )
        } else {
            ("NULL::smallint", "NULL::smallint[]")
        };
        let (chain_expr, join) = self.chain_of_row("r");
        let network_expr = match (self.chain_id, &self.network_column) {
            (None, Some(network)) => text_column("r", network),
            _ => "NULL::text".to_string(),
        };
        let block_hash = self
            .block_hash_column
            .as_ref()
            .map(|c| text_column("r", c))
            .unwrap_or_else(|| "NULL::text".into());
        let row_id = self
            .row_id_column
            .as_ref()
            .map(|c| format!("r.{}::bigint", quote_identifier(c)))
            .unwrap_or_else(|| "NULL::bigint".into());
        // Only blocks at or above the oldest canonical hash recorded are
        // looked up: one comparison per row for history, one index probe
        // per row for the recent blocks a reorg can touch.
        let canonical = if self.judge_block_hashes {
            "CASE WHEN e.error IS NULL AND e.block_raw::bigint >= (SELECT min(block_number)
                                                                   FROM balance_queue.canonical_block_hashes)
                  THEN (SELECT c.block_hash FROM balance_queue.canonical_block_hashes c
                         WHERE c.chain_id = e.chain_id AND c.block_number = e.block_raw::bigint) END"
        } else {
            "NULL::text"
        };
        // OFFSET 0 fences keep the subqueries from being flattened, so each
        // row is checked once rather than once per reference to `error`.
        // lower() of a "C"-collated argument takes Postgres's ASCII path; of
        // the database's collation (C.UTF-8, en_US.UTF-8) it converts every
        // character to a wide one and back (towlower: 2% of a batch, perf).
        // Hex is ASCII either way.
        format!(
            "SELECT w.chain_id, w.network, w.error, w.log_index_raw, w.value_raw,
                    lower(w.contract_raw COLLATE \"C\") AS contract_address,
                    lower(w.from_raw COLLATE \"C\") AS from_address,
                    lower(w.to_raw COLLATE \"C\") AS to_address,
                    lower(w.tx_hash_raw COLLATE \"C\") AS tx_hash,
                    CASE WHEN w.error IS NULL THEN w.value_raw::numeric END AS value_wei,
                    CASE WHEN w.error IS NULL THEN w.log_index_raw::bigint END AS log_index,
                    CASE WHEN w.error IS NULL THEN w.block_raw::bigint END AS block_number,
                    w.holder_partitions, w.holder_partition_set,
                    w.row_id, lower(w.block_hash_raw COLLATE \"C\") AS block_hash, w.canonical_hash,
                    {ORPHANED} AS orphaned
               FROM (SELECT e.*, {canonical} AS canonical_hash
                       FROM (SELECT raw.*, balance_queue._transfer_row_error(raw.chain_id, raw.network,
                                    raw.tx_hash_raw, raw.log_index_raw, raw.contract_raw, raw.from_raw,
                                    raw.to_raw, raw.value_raw, raw.block_raw) AS error
                               FROM (SELECT {chain_expr} AS chain_id, {network_expr} AS network,
                                            {contract} AS contract_raw, {from} AS from_raw, {to} AS to_raw,
                                            {value} AS value_raw, {tx_hash} AS tx_hash_raw,
                                            {log_index} AS log_index_raw, {block} AS block_raw,
                                            {partitions} AS holder_partitions, {partition_set} AS holder_partition_set,
                                            {row_id} AS row_id, {block_hash} AS block_hash_raw
                                       FROM {relation} r{join} OFFSET 0) raw
                             OFFSET 0) e
                     OFFSET 0) w",
            value = text_column("r", &self.value_column),
            log_index = text_column("r", &self.log_index_column),
            block = text_column("r", &self.block_number_column),
            contract = text_column("r", &self.contract_column),
            from = text_column("r", &self.from_column),
            to = text_column("r", &self.to_column),
            tx_hash = text_column("r", &self.tx_hash_column),
        )
    }

    /// An INSERT that queues one item per holder side of every row of
    /// `relation` (`source_change` +1 for inserted rows, -1 for deleted
    /// ones). A bad inserted row becomes one `failed` item whose
    /// error_message names the row; a bad deleted row was never counted and
    /// queues nothing. The zero address is never a holder (mint, burn).
    pub fn enqueue(&self, relation: &str, source_change: i16, source_oid: u32) -> String {
        self.enqueue_validated(
            &format!("({})", self.validated_rows(relation)),
            source_change,
            source_oid,
            &RowFilter::default(),
        )
    }

    /// [`Self::enqueue`] of the rows and sides `filter` keeps, over
    /// `validated`, a relation already shaped
    /// like [`Self::validated_rows`] (a CTE name or a subquery).
    pub fn enqueue_validated(
        &self,
        validated: &str,
        source_change: i16,
        source_oid: u32,
        filter: &RowFilter<'_>,
    ) -> String {
        let only_valid = if source_change < 0 {
            "AND v.error IS NULL"
        } else {
            ""
        };
        format!(
            "INSERT INTO balance_queue.balance_update_queue
                 (chain_id, contract_address, holder_address, update_type, delta_wei, source_change,
                  triggered_by_tx, triggered_by_log_index, triggered_by_block, source_table,
                  status, processed_at, error_message, retryable)
             SELECT v.chain_id, v.contract_address, s.holder_address, s.update_type,
                    CASE WHEN v.error IS NULL THEN s.delta_wei END, {source_change},
                    v.tx_hash, v.log_index, v.block_number, {source_oid}::oid::regclass,
                    CASE WHEN v.error IS NULL THEN 'pending' ELSE 'failed' END,
                    CASE WHEN v.error IS NOT NULL THEN clock_timestamp() END,
                    CASE WHEN v.error IS NOT NULL THEN
                         format('row of %s (tx_hash %s, log_index %s) not counted: %s',
                                {label}, coalesce(v.tx_hash, 'NULL'), coalesce(v.log_index_raw, 'NULL'), v.error) END,
                    v.error IS NULL
               FROM {validated} v
              CROSS JOIN LATERAL (VALUES ('transfer_out', v.from_address, -v.value_wei),
                                         ('transfer_in', v.to_address, v.value_wei))
                         AS s(update_type, holder_address, delta_wei)
              WHERE CASE WHEN v.error IS NULL
                         THEN NOT v.orphaned AND s.holder_address <> '{zero}' AND {in_partition}
                         ELSE s.update_type = 'transfer_in' AND {records_bad_rows} END {only_valid}{filter}",
            label = quote_literal(&self.label),
            in_partition = IN_ITEM_PARTITION,
            records_bad_rows = RECORDS_BAD_ROWS,
            zero = crate::address::ZERO_ADDRESS,
            filter = filter.terms(),
        )
    }

    /// Three statements recording what judging the rows of `validated`
    /// (shaped like [`Self::validated_rows`]) against canonical hashes
    /// found, or `None` for a table not judged: its
    /// orphaned rows in `orphaned_transfer_rows` (with the canonical hash of
    /// now, once per row, as bad rows are), the records of its rows that are
    /// no longer orphaned forgotten, and the hashes of valid rows whose block
    /// has no canonical hash yet and is inside the confirmation window in
    /// `unjudged_block_hashes` (appended, by every partition's item, since
    /// each counts its own sides; so a canonical hash recorded later
    /// rechecks the block, and two hashes in one block show as a conflict).
    /// `confirmed_through` is an expression for the `confirmed_through` of
    /// the chain of row `v` (a scalar subquery per row, not a join: with a
    /// join the planner, which cannot count a statement's rows, sorted a
    /// bulk load's million rows by chain to merge them with one head, 1.1 s
    /// of its statement under `auto_explain`).
    pub fn record_judgements(
        &self,
        validated: &str,
        confirmed_through: &str,
    ) -> Option<[String; 3]> {
        // Rows of a table not judged are neither orphaned nor unjudged: a
        // hash of theirs must not queue a recheck, which would not change them.
        if !self.judge_block_hashes {
            return None;
        }
        let relid = self.relid;
        Some([
            format!(
                "INSERT INTO balance_queue.orphaned_transfer_rows AS o
                     (source_table, row_id, chain_id, block_number, block_hash, canonical_hash, tx_hash, log_index)
                 SELECT {relid}::oid::regclass, v.row_id, v.chain_id, v.block_number, v.block_hash,
                        v.canonical_hash, v.tx_hash, v.log_index
                   FROM {validated} v
                  WHERE v.orphaned AND v.row_id IS NOT NULL AND {RECORDS_BAD_ROWS}
                 ON CONFLICT (source_table, row_id) DO UPDATE
                    SET canonical_hash = EXCLUDED.canonical_hash
                  WHERE o.canonical_hash IS DISTINCT FROM EXCLUDED.canonical_hash"
            ),
            format!(
                "DELETE FROM balance_queue.orphaned_transfer_rows o
                  USING {validated} v
                  WHERE o.source_table = {relid}::oid::regclass AND o.row_id = v.row_id
                    AND NOT v.orphaned AND {RECORDS_BAD_ROWS}"
            ),
            format!(
                "INSERT INTO balance_queue.unjudged_block_hashes (chain_id, block_number, block_hash)
                 SELECT DISTINCT v.chain_id, v.block_number, v.block_hash
                   FROM {validated} v
                  WHERE v.error IS NULL AND v.canonical_hash IS NULL AND v.block_hash IS NOT NULL
                    AND balance_queue.is_unconfirmed(v.block_number, {confirmed_through})"
            ),
        ])
    }

    /// [`Self::enqueue`] of the rows and sides `filter` keeps, over
    /// `relation` annotated with the sides
    /// each row counts (`sources::row_ids::counted_rows`): only those
    /// sides are queued.
    pub fn enqueue_item_rows(
        &self,
        relation: &str,
        source_change: i16,
        source_oid: u32,
        filter: &RowFilter<'_>,
    ) -> String {
        self.enqueue_validated(
            &format!("({})", self.validated_item_rows(relation)),
            source_change,
            source_oid,
            filter,
        )
    }

    /// [`Self::sides`] over `relation` annotated with the sides each row
    /// counts (`sources::row_ids::counted_rows`): only those sides.
    pub fn item_sides(&self, relation: &str, filter: &RowFilter<'_>) -> String {
        sides_of_validated(&format!("({})", self.validated_item_rows(relation)), filter)
    }

    /// A SELECT of every valid, counted side in `relation` that `filter`
    /// keeps: chain_id, contract_address, holder_address, tx_hash,
    /// log_index, is_inbound, delta_wei (signed, wei), block_number. The
    /// zero address is never a holder.
    pub fn sides(&self, relation: &str, filter: &RowFilter<'_>) -> String {
        sides_of_validated(&format!("({})", self.validated_rows(relation)), filter)
    }
}

/// Which rows, and which holder sides of them, a fragment of this module
/// keeps. Each value is SQL text, a bind parameter (`$3`) or a literal,
/// that the fragment compares with its own columns: callers name values,
/// never the fragment's aliases, and bind their own parameters.
#[derive(Debug, Clone, Copy, Default)]
pub struct RowFilter<'a> {
    /// Only valid rows (`Some(true)`), or only bad ones (`Some(false)`).
    pub valid: Option<bool>,
    /// The row's chain id (integer).
    pub chain_id: Option<&'a str>,
    /// The row's lowercase token contract (text).
    pub contract_address: Option<&'a str>,
    /// The side's lowercase holder (text).
    pub holder_address: Option<&'a str>,
    /// Blocks at or above this one (bigint).
    pub from_block: Option<&'a str>,
}

impl RowFilter<'_> {
    /// The filter as ` AND ...` terms on the validated row `v` and the side
    /// `s` of the fragments above (empty when it keeps everything).
    fn terms(&self) -> String {
        let valid = self.valid.map(|valid| {
            if valid {
                "v.error IS NULL".to_string()
            } else {
                "v.error IS NOT NULL".to_string()
            }
        });
        [
            valid,
            self.chain_id.map(|x| format!("v.chain_id = {x}")),
            self.contract_address
                .map(|x| format!("v.contract_address = {x}")),
            self.holder_address
                .map(|x| format!("s.holder_address = {x}")),
            self.from_block.map(|x| format!("v.block_number >= {x}")),
        ]
        .into_iter()
        .flatten()
        .map(|term| format!(" AND {term}"))
        .collect()
    }
}

/// Whether side `s` of validated row `v` belongs to the partition of the
/// queue item `v` was read back for (every side does outside a read-back,
/// or for an item of all partitions): the one test of that, over
/// `balance_queue.holder_partition()`.
const IN_ITEM_PARTITION: &str = "(v.holder_partitions IS NULL \
     OR balance_queue.holder_partition(s.holder_address, v.holder_partitions) = ANY(v.holder_partition_set))";

/// The `confirmed_through` of row `v`'s chain from its registered head:
/// the `confirmed_through` of [`SourceMapping::record_judgements`] outside
/// a batch, which has its own heads.
pub const REGISTRY_CONFIRMED_THROUGH: &str =
    "(SELECT balance_queue.confirmed_through(r.head_block, r.confirmation_depth)
        FROM balance_queue.chain_registry r WHERE r.chain_id = v.chain_id)";

/// Whether validated row `w` is orphaned: its block has a canonical hash
/// (`canonical_block_hashes`, kept from rindexer's
/// `rindexer_internal.reorg_block_hashes` or set by an operator) and the
/// row carries another. An orphaned row is not bad: it is left uncounted,
/// and counts again if the canonical hash changes to its own. The one
/// definition of that rule.
const ORPHANED: &str = "coalesce(w.canonical_hash <> lower(w.block_hash_raw COLLATE \"C\"), false)";

/// Whether a bad row `v` is recorded here: by the item of the first
/// partition only, as the statement's other items read the same row.
const RECORDS_BAD_ROWS: &str = "(v.holder_partitions IS NULL OR 0 = ANY(v.holder_partition_set))";

/// [`SourceMapping::sides`] over `validated`, a relation already shaped
/// like [`SourceMapping::validated_rows`] (a CTE name or a subquery).
pub fn sides_of_validated(validated: &str, filter: &RowFilter<'_>) -> String {
    format!(
        "SELECT v.chain_id, v.contract_address, s.holder_address, v.tx_hash, v.log_index,
                s.is_inbound, s.delta_wei, v.block_number
           FROM {validated} v
          CROSS JOIN LATERAL (VALUES (false, v.from_address, -v.value_wei),
                                     (true, v.to_address, v.value_wei))
                     AS s(is_inbound, holder_address, delta_wei)
          WHERE v.error IS NULL AND NOT v.orphaned AND s.holder_address <> '{zero}' AND {IN_ITEM_PARTITION}{filter}",
        zero = crate::address::ZERO_ADDRESS,
        filter = filter.terms(),
    )
}

#[cfg(test)]
mod builtin_type_tests {
    use super::BUILTIN_TYPED_COLUMN;

    #[test]
    fn built_in_types_are_those_below_first_normal_object_id() {
        // FirstNormalObjectId in src/include/access/transam.h.
        assert_eq!(BUILTIN_TYPED_COLUMN, "atttypid < 16384");
    }
}

// pg_tests: the builders quote identifiers with Postgres's own functions.
#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use super::*;
    use pgrx::pg_test;

    fn mapping() -> SourceMapping {
        SourceMapping::rindexer_named("t".into(), Some(1))
    }

    #[pg_test]
    fn only_rows_read_back_for_items_carry_their_holder_partitions() {
        let m = mapping();
        let item_rows = m.validated_item_rows("r0");
        assert!(item_rows.contains("r._bq_item_holder_partitions AS holder_partitions"));
        assert!(item_rows.contains("r._bq_item_holder_partition_set AS holder_partition_set"));
        let rows = m.validated_rows("r0");
        assert!(!rows.contains("_bq_item_"));
        assert!(rows.contains("NULL::smallint AS holder_partitions"));
    }

    #[pg_test]
    fn sides_and_queued_items_keep_to_the_item_partition() {
        let m = mapping();
        assert!(
            m.sides("r0", &RowFilter::default())
                .contains(IN_ITEM_PARTITION)
        );
        let enqueue = m.enqueue("r0", 1, 0);
        assert!(enqueue.contains(IN_ITEM_PARTITION));
        assert!(enqueue.contains(RECORDS_BAD_ROWS));
        assert!(IN_ITEM_PARTITION.contains("balance_queue.holder_partition("));
    }
}
