//! Attaching transfer tables: triggers, registration and backfill.

use crate::errors::{invalid_parameter, raise, spi_ok};
use crate::sources::mapping::{BUILTIN_TYPED_COLUMN, load_mapping};
use pgrx::PgRelation;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

/// Transition table names used by the statement triggers.
pub const NEW_ROWS: &str = "bq_new_rows";
pub const OLD_ROWS: &str = "bq_old_rows";

const TRIGGERS: [&str; 4] = [
    "balance_queue_after_insert",
    "balance_queue_after_delete",
    "balance_queue_after_update",
    "balance_queue_before_truncate",
];

/// Runs an enqueue INSERT and returns how many queue items it wrote.
pub fn run_counted(client: &mut SpiClient<'_>, insert: &str) -> i64 {
    let counted = format!("WITH queued AS ({insert} RETURNING 1) SELECT count(*) FROM queued");
    spi_ok(
        spi_ok(client.update(&counted, Some(1), &[]))
            .first()
            .get_one::<i64>(),
    )
    .unwrap_or(0)
}

/// Attaches balance_queue to a table of ERC20 Transfer events.
///
/// * `source`: the transfer table, e.g. `myindexer_usdc.transfer`.
/// * `chain_id`: the EIP-155 chain id of every row; NULL (the default)
///   takes each row's chain from its `network` column through
///   `chain_registry` (rindexer writes network names, not chain ids).
/// * `*_column`: column names; the defaults are rindexer's for an ERC20
///   whose ABI names the parameters `from`, `to`, `value`. WETH's tables
///   use `src`, `dst`, `wad`. Any column type works: values are read as
///   text (`value` as decimal digits in wei, `log_index` and
///   `block_number` as non-negative integers).
/// * `backfill`: queue the rows already in the table (default true).
///
/// Installs AFTER INSERT, AFTER DELETE and AFTER UPDATE statement-level
/// triggers with transition tables, so a COPY of 5,000 rows queues its
/// changes in one set-based statement, and a BEFORE TRUNCATE trigger that
/// queues the removal of every row. When the table's primary key is one
/// integer column (rindexer's `rindexer_id`), inserted rows are queued as
/// id ranges, one item per statement and chain, and read back when applied;
/// otherwise each row's holder sides are queued. Returns what the backfill
/// queued: the number of rows for a table queued by id, else the number of
/// holder-side items (0 without backfill).
///
/// Errors: 42710 (duplicate_object) when the table is already attached;
/// 42703 (undefined_column) for a column the table lacks; 22023
/// (invalid_parameter_value) for a chain id missing from `chain_registry`,
/// for no chain id and no network column, or for a column of a
/// user-defined type (the triggers read columns with the owner's rights).
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::too_many_arguments)]
pub fn attach_transfer_table(
    source: PgRelation,
    chain_id: default!(Option<i32>, "NULL"),
    from_column: default!(&str, "'from'"),
    to_column: default!(&str, "'to'"),
    value_column: default!(&str, "'value'"),
    contract_column: default!(&str, "'contract_address'"),
    tx_hash_column: default!(&str, "'tx_hash'"),
    log_index_column: default!(&str, "'log_index'"),
    block_number_column: default!(&str, "'block_number'"),
    network_column: default!(Option<&str>, "'network'"),
    backfill: default!(bool, true),
) -> i64 {
    crate::errors::refuse_on_standby("attach_transfer_table");
    let relid = source.oid();
    Spi::connect_mut(|client| {
        if load_mapping(client, relid).is_some() {
            raise(
                PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
                format!("{} is already attached to balance_queue", source.name()),
                Some("Call balance_queue.detach_transfer_table() first to change its mapping."),
            );
        }
        let mut columns = vec![
            from_column,
            to_column,
            value_column,
            contract_column,
            tx_hash_column,
            log_index_column,
            block_number_column,
        ];
        match (chain_id, network_column) {
            (Some(id), _) => {
                let known = spi_ok(client.select(
                    "SELECT 1 FROM balance_queue.chain_registry WHERE chain_id = $1",
                    Some(1),
                    &[id.into()],
                ));
                if known.is_empty() {
                    invalid_parameter(format!(
                        "chain_id {id} is not in balance_queue.chain_registry: register it with balance_queue.add_chain()"
                    ));
                }
            }
            (None, Some(network)) => columns.push(network),
            (None, None) => invalid_parameter(
                "either chain_id or network_column must be given: the chain of each row must be known",
            ),
        }
        for column in columns {
            let present = spi_ok(client.select(
                "SELECT 1 FROM pg_catalog.pg_attribute
                  WHERE attrelid = $1::oid AND attname = $2 AND attnum > 0 AND NOT attisdropped",
                Some(1),
                &[relid.into(), column.into()],
            ));
            let builtin = spi_ok(client.select(
                &format!(
                    "SELECT 1 FROM pg_catalog.pg_attribute
                      WHERE attrelid = $1::oid AND attname = $2 AND {BUILTIN_TYPED_COLUMN}"
                ),
                Some(1),
                &[relid.into(), column.into()],
            ));
            if !present.is_empty() && builtin.is_empty() {
                // The triggers run as the extension's owner and read every
                // column as text: a user-defined type could bring its own
                // cast function along, to be run with those rights.
                raise(
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                    format!(
                        "column {column:?} of {} has a user-defined type",
                        source.name()
                    ),
                    Some(
                        "Attach columns of built-in types (text, char, varchar, numeric, integer types).",
                    ),
                );
            }
            if present.is_empty() {
                raise(
                    PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
                    format!("column {column:?} does not exist in {}", source.name()),
                    Some(
                        "Name the table's columns with the *_column arguments (WETH: from_column => 'src', to_column => 'dst', value_column => 'wad').",
                    ),
                );
            }
        }
        let row_id_column = crate::sources::row_ids::integer_primary_key(client, relid);
        spi_ok(
            client.update(
                "INSERT INTO balance_queue.attached_sources
                 (source_table, chain_id, from_column, to_column, value_column, contract_column,
                  tx_hash_column, log_index_column, block_number_column, network_column, row_id_column)
             VALUES ($1::oid::regclass, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                None,
                &[
                    relid.into(),
                    chain_id.into(),
                    from_column.into(),
                    to_column.into(),
                    value_column.into(),
                    contract_column.into(),
                    tx_hash_column.into(),
                    log_index_column.into(),
                    block_number_column.into(),
                    (if chain_id.is_some() {
                        None
                    } else {
                        network_column
                    })
                    .into(),
                    row_id_column.into(),
                ],
            ),
        );
        // rindexer's rows carry their block's hash: judge them against the
        // canonical hashes by default (set_canonical_hash_source() changes it).
        spi_ok(client.update(
            &format!(
                "UPDATE balance_queue.attached_sources SET block_hash_column = 'block_hash'
                  WHERE source_table = $1::oid
                    AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                                 WHERE attrelid = $1::oid AND attname = 'block_hash' AND attnum > 0
                                   AND NOT attisdropped AND {BUILTIN_TYPED_COLUMN})"
            ),
            None,
            &[relid.into()],
        ));
        let mapping = load_mapping(client, relid).expect("registered just above");
        let table = &mapping.label;
        let function = "balance_queue._enqueue_transfer_rows()";
        for ddl in [
            format!(
                "CREATE TRIGGER {} AFTER INSERT ON {table} REFERENCING NEW TABLE AS {NEW_ROWS}
                 FOR EACH STATEMENT EXECUTE FUNCTION {function}",
                TRIGGERS[0]
            ),
            format!(
                "CREATE TRIGGER {} AFTER DELETE ON {table} REFERENCING OLD TABLE AS {OLD_ROWS}
                 FOR EACH STATEMENT EXECUTE FUNCTION {function}",
                TRIGGERS[1]
            ),
            format!(
                "CREATE TRIGGER {} AFTER UPDATE ON {table}
                 REFERENCING OLD TABLE AS {OLD_ROWS} NEW TABLE AS {NEW_ROWS}
                 FOR EACH STATEMENT EXECUTE FUNCTION {function}",
                TRIGGERS[2]
            ),
            // TRUNCATE fires no row events: queue the removal of every row
            // while they are still there.
            format!(
                "CREATE TRIGGER {} BEFORE TRUNCATE ON {table}
                 FOR EACH STATEMENT EXECUTE FUNCTION {function}",
                TRIGGERS[3]
            ),
        ] {
            spi_ok(client.update(&ddl, None, &[]));
        }
        match (backfill, &mapping.row_id_column) {
            (false, _) => 0,
            (true, Some(_)) => crate::sources::row_ids::queue_rows(client, &mapping, table),
            (true, None) => run_counted(client, &mapping.enqueue(table, 1, relid.to_u32())),
        }
    })
}

/// Detaches a transfer table: drops its triggers, forgets its mapping, and
/// queues the removal of its rows (one `source_change = -1` item per valid
/// holder side), so once the queue drains, balances hold only what the
/// remaining sources hold. Returns the number of items queued.
///
/// Errors: 42704 (undefined_object) when the table is not attached.
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
pub fn detach_transfer_table(source: PgRelation) -> i64 {
    crate::errors::refuse_on_standby("detach_transfer_table");
    let relid = source.oid();
    Spi::connect_mut(|client| {
        let Some(mapping) = load_mapping(client, relid) else {
            raise(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!("{} is not attached to balance_queue", source.name()),
                None,
            );
        };
        for trigger in TRIGGERS {
            spi_ok(client.update(
                &format!("DROP TRIGGER IF EXISTS {trigger} ON {}", mapping.label),
                None,
                &[],
            ));
        }
        // Rows still waiting in an id-range item were never counted.
        let never_counted = crate::sources::row_ids::supersede_pending_rows(
            client,
            relid.to_u32(),
            "superseded: the table was detached before these rows were applied",
        );
        let counted = crate::sources::row_ids::without_cut_rows(
            &mapping,
            &mapping.label,
            never_counted.as_ref(),
        );
        let take_back =
            mapping.enqueue_item_rows(&counted, -1, relid.to_u32(), &Default::default());
        let queued = run_counted(client, &take_back);
        crate::sources::orphans::forget_table(client, relid.to_u32());
        spi_ok(client.update(
            "DELETE FROM balance_queue.attached_sources WHERE source_table = $1::oid",
            None,
            &[relid.into()],
        ));
        queued
    })
}
