//! Trigger functions on attached transfer tables. Both only queue: they
//! never touch balances, so the indexer's INSERT or COPY never waits on the
//! apply path, and a bad row becomes a failed queue item, never an error.

use crate::errors::{invalid_parameter, spi_ok};
use crate::sources::mapping::{BUILTIN_TYPED_COLUMN, SourceMapping, load_mapping};
use crate::sources::row_ids;
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;
use std::ffi::{CStr, CString};

/// Statement-level trigger installed by `attach_transfer_table`. NEW rows
/// of a table with an integer primary key are queued as id ranges (one
/// item per chain, read back when applied); otherwise each row's sides are
/// queued (+1). OLD rows are taken back (-1), except those still waiting
/// in a pending id-range item, which are cut out of it. Before a TRUNCATE,
/// every row is taken back. Each step is one set-based statement over the
/// transition table. Not meant to be called directly.
#[pg_trigger]
fn _enqueue_transfer_rows<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgTriggerError> {
    let relid = trigger.relid()?;
    let op = trigger.op()?;
    let old_rows = trigger.old_transition_table_name()?;
    let new_rows = trigger.new_transition_table_name()?;
    Spi::connect_mut(|client| {
        // Make the transition tables visible by name to this SPI connection.
        let trigger_data = trigger.trigger_data() as *const pg_sys::TriggerData;
        unsafe { pg_sys::SPI_register_trigger_data(trigger_data.cast_mut()) };
        // A table detached earlier in this transaction queues nothing.
        let Some(mapping) = load_mapping(client, relid) else {
            return;
        };
        let relid = relid.to_u32();
        if matches!(op, PgTriggerOperation::Truncate) {
            // BEFORE TRUNCATE: the rows are still there to be taken back;
            // those still waiting in a source_rows item were never counted.
            let never_counted = row_ids::supersede_pending_rows(
                client,
                relid,
                "superseded: the table was truncated before these rows were applied",
            );
            let counted =
                row_ids::without_cut_rows(&mapping, &mapping.label, never_counted.as_ref());
            let take_back = mapping.enqueue_item_rows(&counted, -1, relid, &Default::default());
            spi_ok(client.update(&take_back, None, &[]));
            crate::sources::orphans::forget_table(client, relid);
            return;
        }
        if let Some(old_rows) = old_rows {
            let old_rows = quote_identifier(old_rows);
            let cut = match mapping.row_id_column {
                Some(_) => row_ids::cut_pending_rows(client, &mapping, &old_rows),
                None => None,
            };
            let removed = row_ids::without_cut_rows(&mapping, &old_rows, cut.as_ref());
            let take_back = mapping.enqueue_item_rows(&removed, -1, relid, &Default::default());
            spi_ok(client.update(&take_back, None, &[]));
            crate::sources::orphans::forget_rows(client, &mapping, &old_rows);
        }
        if let Some(new_rows) = new_rows {
            let new_rows = quote_identifier(new_rows);
            match mapping.row_id_column {
                Some(_) => {
                    row_ids::queue_rows(client, &mapping, &new_rows);
                }
                None => {
                    spi_ok(client.update(&mapping.enqueue(&new_rows, 1, relid), None, &[]));
                }
            }
        }
    });
    Ok(None)
}

/// Column names the seed's row trigger looks for, first match wins:
/// rindexer's names, the seed plan's, WETH's and ethereum-etl's.
pub(crate) const ROW_COLUMNS: [(&str, &[&str]); 8] = [
    ("from", &["from", "from_address", "src"]),
    ("to", &["to", "to_address", "dst"]),
    ("value", &["value", "wad", "amount"]),
    ("contract_address", &["contract_address", "token_address"]),
    ("tx_hash", &["tx_hash", "transaction_hash"]),
    ("log_index", &["log_index"]),
    ("block_number", &["block_number"]),
    ("network", &["network"]),
];

/// Reads one row's transfer columns as text (each type's output function),
/// in `ROW_COLUMNS` order; a missing column or SQL NULL gives `None`.
unsafe fn row_as_text(
    tupdesc: pg_sys::TupleDesc,
    tuple: *mut pg_sys::HeapTupleData,
) -> Vec<Option<String>> {
    ROW_COLUMNS
        .iter()
        .map(|(_, candidates)| {
            candidates.iter().find_map(|name| {
                let cname = CString::new(*name).expect("static names have no NUL");
                let fnumber = unsafe { pg_sys::SPI_fnumber(tupdesc, cname.as_ptr()) };
                if fnumber <= 0 {
                    return None;
                }
                let text = unsafe { pg_sys::SPI_getvalue(tuple, tupdesc, fnumber) };
                Some(if text.is_null() {
                    String::new()
                } else {
                    unsafe { CStr::from_ptr(text) }
                        .to_string_lossy()
                        .into_owned()
                })
            })
        })
        .map(|found| found.filter(|text| !text.is_empty()))
        .collect()
}

/// The seed plan's row-level trigger, kept for tables wired by hand:
///
/// ```sql
/// CREATE TRIGGER queue_balance AFTER INSERT OR UPDATE OR DELETE ON transfers
///   FOR EACH ROW EXECUTE FUNCTION balance_queue.trigger_queue_balance_update('1');
/// ```
///
/// TG_ARGV[0] is the EIP-155 chain id; without it the chain comes from the
/// row's `network` column through `chain_registry`. Columns are found by
/// name: `from`/`from_address`/`src`, `to`/`to_address`/`dst`,
/// `value`/`wad`/`amount` (wei), `contract_address`/`token_address`,
/// `tx_hash`/`transaction_hash`, `log_index`, `block_number`, `network`.
/// INSERT queues the row (+1), DELETE takes it back (-1), UPDATE does both.
/// Queues the same items as `attach_transfer_table`'s statement triggers,
/// row by row, so prefer those for bulk loads. Returns the row unchanged.
///
/// Errors: 22023 (invalid_parameter_value) when TG_ARGV[0] is not an integer.
#[pg_trigger]
fn trigger_queue_balance_update<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgTriggerError> {
    let chain_id = trigger.extra_args()?.first().map(|arg| {
        arg.trim().parse::<i32>().unwrap_or_else(|_| {
            invalid_parameter(format!("trigger argument {arg:?} is not a chain id"))
        })
    });
    let relid = trigger.relid()?;
    let data = trigger.trigger_data();
    let tupdesc = unsafe { (*data.tg_relation).rd_att };
    let op = trigger.op()?;
    let mut rows: Vec<(*mut pg_sys::HeapTupleData, i16)> = Vec::with_capacity(2);
    match op {
        PgTriggerOperation::Insert => rows.push((data.tg_trigtuple, 1)),
        PgTriggerOperation::Delete => rows.push((data.tg_trigtuple, -1)),
        PgTriggerOperation::Update => {
            rows.push((data.tg_trigtuple, -1));
            rows.push((data.tg_newtuple, 1));
        }
        PgTriggerOperation::Truncate => {}
    }
    let params: String = ROW_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, (alias, _))| format!("${}::text AS {}", i + 1, quote_identifier(alias)))
        .collect::<Vec<_>>()
        .join(", ");
    let label = Spi::get_one_with_args::<String>("SELECT $1::oid::regclass::text", &[relid.into()])
        .ok()
        .flatten()
        .unwrap_or_default();
    let mapping = SourceMapping {
        network_column: Some("network".into()),
        relid: relid.to_u32(),
        ..SourceMapping::rindexer_named(label, chain_id)
    };
    Spi::connect_mut(|client| {
        for (tuple, change) in rows {
            if tuple.is_null() {
                continue;
            }
            let values = unsafe { row_as_text(tupdesc, tuple) };
            let insert = mapping.enqueue(&format!("(SELECT {params})"), change, relid.to_u32());
            let args: Vec<_> = values.iter().map(|v| v.as_deref().into()).collect();
            spi_ok(client.update(&insert, None, &args));
        }
    });
    Ok(match op {
        PgTriggerOperation::Delete => trigger.old(),
        _ => trigger.new(),
    })
}

/// Mappings for the tables wired by hand with `trigger_queue_balance_update`
/// whose rows can belong to `chain_id` (its TG_ARGV[0] chain, or a
/// `network` column), so recalculation reads them like attached tables.
/// A table lacking a needed column is skipped: its rows never counted.
pub fn row_trigger_mappings(
    client: &pgrx::spi::SpiClient<'_>,
    chain_id: i32,
) -> Vec<SourceMapping> {
    let tables = spi_ok(client.select(
        "SELECT t.tgrelid::regclass::text, t.tgrelid,
                CASE WHEN t.tgnargs > 0 THEN split_part(encode(t.tgargs, 'escape'), '\\000', 1) END
           FROM pg_catalog.pg_trigger t
          WHERE t.tgfoid = 'balance_queue.trigger_queue_balance_update()'::regprocedure
          ORDER BY 2",
        None,
        &[],
    ));
    let mut mappings = Vec::new();
    for table in tables {
        let label = spi_ok(table.get::<String>(1)).unwrap_or_default();
        let relid = spi_ok(table.get::<pg_sys::Oid>(2)).expect("tgrelid");
        let fixed_chain =
            spi_ok(table.get::<String>(3)).and_then(|arg| arg.trim().parse::<i32>().ok());
        if fixed_chain.is_some_and(|c| c != chain_id) {
            continue;
        }
        let columns: Vec<String> = spi_ok(client.select(
            // Built-in types only: recalculation may run as the worker's
            // superuser and reads every column through a cast to text.
            &format!(
                "SELECT attname::text FROM pg_catalog.pg_attribute
                  WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND {BUILTIN_TYPED_COLUMN}"
            ),
            None,
            &[relid.into()],
        ))
        .filter_map(|row| spi_ok(row.get::<String>(1)))
        .collect();
        let found: Vec<Option<String>> = ROW_COLUMNS
            .iter()
            .map(|(_, candidates)| {
                candidates
                    .iter()
                    .find(|c| columns.iter().any(|have| have == *c))
                    .map(|c| c.to_string())
            })
            .collect();
        let [
            from,
            to,
            value,
            contract,
            tx_hash,
            log_index,
            block,
            network,
        ] = found.try_into().expect("8 columns");
        let (
            Some(from),
            Some(to),
            Some(value),
            Some(contract),
            Some(tx_hash),
            Some(log_index),
            Some(block),
        ) = (from, to, value, contract, tx_hash, log_index, block)
        else {
            continue;
        };
        if fixed_chain.is_none() && network.is_none() {
            continue;
        }
        mappings.push(SourceMapping {
            label,
            chain_id: fixed_chain,
            from_column: from,
            to_column: to,
            value_column: value,
            contract_column: contract,
            tx_hash_column: tx_hash,
            log_index_column: log_index,
            block_number_column: block,
            network_column: if fixed_chain.is_some() { None } else { network },
            row_id_column: None,
            relid: relid.to_u32(),
            // Tables wired with the seed's row trigger are not judged.
            block_hash_column: None,
            judge_block_hashes: false,
        });
    }
    mappings
}
