//! rindexer's Transfer table and write pattern, as its source has them
//! (see `../shared/notes/rindexer.md`): the exact DDL; batches over 100 rows
//! sent as `COPY ... FROM STDIN WITH (FORMAT binary)`, smaller ones as one
//! multi-row INSERT; each batch one autocommit statement.

use bytes::{BufMut, BytesMut};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, GenericClient};
use std::error::Error;

/// One row of a rindexer Transfer table. Text fields are written as given,
/// so tests can send malformed values exactly as a broken source would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRow {
    pub contract_address: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub value: Option<String>,
    pub tx_hash: String,
    pub block_number: u64,
    pub block_hash: String,
    pub network: String,
    pub tx_index: u64,
    pub log_index: String,
}

/// rindexer's DDL for an ERC20 Transfer table, verbatim but for the name.
pub fn create_transfer_table(client: &mut Client, schema: &str) {
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {schema}.transfer (
               rindexer_id SERIAL PRIMARY KEY NOT NULL, contract_address CHAR(42) NOT NULL,
               \"from\" CHAR(42), \"to\" CHAR(42), \"value\" VARCHAR(78),
               tx_hash CHAR(66) NOT NULL, block_number NUMERIC NOT NULL, block_timestamp TIMESTAMPTZ,
               block_hash CHAR(66) NOT NULL, network VARCHAR(50) NOT NULL,
               tx_index NUMERIC NOT NULL, log_index VARCHAR(78) NOT NULL);"
        ))
        .expect("create rindexer transfer table");
}

/// A u64 sent as a Postgres NUMERIC in binary (rindexer's block_number and
/// tx_index): base-10000 digits, most significant first.
#[derive(Debug)]
struct Numeric(u64);

impl ToSql for Numeric {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        let mut digits = Vec::new();
        let mut rest = self.0;
        while rest > 0 {
            digits.push((rest % 10_000) as i16);
            rest /= 10_000;
        }
        digits.reverse();
        out.put_i16(digits.len() as i16); // ndigits
        out.put_i16(digits.len().saturating_sub(1) as i16); // weight
        out.put_u16(0); // sign: positive
        out.put_u16(0); // dscale
        for d in digits {
            out.put_i16(d);
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }

    to_sql_checked!();
}

const COLUMNS: &str = "contract_address, \"from\", \"to\", \"value\", tx_hash, block_number, block_hash, network, tx_index, log_index";

/// Writes one batch as rindexer does: binary COPY above 100 rows, else one
/// multi-row INSERT; on a client (autocommit) or inside a transaction (a
/// reorg's re-insert). Returns an error instead of panicking so tests can
/// assert that ingestion never fails.
pub fn write_batch(
    client: &mut impl GenericClient,
    table: &str,
    rows: &[TransferRow],
) -> Result<(), postgres::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    if rows.len() > 100 {
        let sink = client.copy_in(&format!(
            "COPY {table} ({COLUMNS}) FROM STDIN WITH (FORMAT binary)"
        ))?;
        let types = [
            Type::BPCHAR,
            Type::BPCHAR,
            Type::BPCHAR,
            Type::VARCHAR,
            Type::BPCHAR,
            Type::NUMERIC,
            Type::BPCHAR,
            Type::VARCHAR,
            Type::NUMERIC,
            Type::VARCHAR,
        ];
        let mut writer = BinaryCopyInWriter::new(sink, &types);
        for r in rows {
            writer.write(&[
                &r.contract_address,
                &r.from,
                &r.to,
                &r.value,
                &r.tx_hash,
                &Numeric(r.block_number),
                &r.block_hash,
                &r.network,
                &Numeric(r.tx_index),
                &r.log_index,
            ])?;
        }
        writer.finish()?;
        return Ok(());
    }
    let mut sql = format!("INSERT INTO {table} ({COLUMNS}) VALUES ");
    let mut params: Vec<Box<dyn ToSql + Sync>> = Vec::with_capacity(rows.len() * 10);
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            sql.push(',');
        }
        let base = i * 10;
        let placeholders: Vec<String> = (1..=10).map(|k| format!("${}", base + k)).collect();
        sql.push_str(&format!("({})", placeholders.join(",")));
        params.push(Box::new(r.contract_address.clone()));
        params.push(Box::new(r.from.clone()));
        params.push(Box::new(r.to.clone()));
        params.push(Box::new(r.value.clone()));
        params.push(Box::new(r.tx_hash.clone()));
        params.push(Box::new(Numeric(r.block_number)));
        params.push(Box::new(r.block_hash.clone()));
        params.push(Box::new(r.network.clone()));
        params.push(Box::new(Numeric(r.tx_index)));
        params.push(Box::new(r.log_index.clone()));
    }
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref()).collect();
    client.execute(sql.as_str(), &refs)?;
    Ok(())
}

/// Writes `rows` in rindexer-sized batches (its maximum is about 5,000).
pub fn write_all(
    client: &mut impl GenericClient,
    table: &str,
    rows: &[TransferRow],
    batch: usize,
) -> Result<(), postgres::Error> {
    for chunk in rows.chunks(batch.max(1)) {
        write_batch(client, table, chunk)?;
    }
    Ok(())
}
