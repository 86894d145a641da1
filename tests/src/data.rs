//! The real Ethereum mainnet exports in `../shared/data/` (see its README),
//! read in place, never copied into the project.

use crate::rindexer::TransferRow;
use std::path::PathBuf;

/// `../shared/data` beside the project checkout, or `BQ_SHARED_DATA`.
pub fn shared_data_dir() -> PathBuf {
    match std::env::var_os("BQ_SHARED_DATA") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"),
    }
}

/// rindexer's CSV export of rETH transfers (every transfer twice).
pub fn reth_csv_path() -> PathBuf {
    shared_data_dir().join("rindexer-reth/rocketpooleth-transfer_18900000-19000000.csv")
}

/// The ethereum-etl token_transfers export (ERC20 and ERC721 logs).
pub fn etl_csv_path() -> PathBuf {
    shared_data_dir().join("ethereum-etl-mainnet/token_transfers.csv")
}

fn reader(path: &PathBuf) -> csv::Reader<std::fs::File> {
    csv::Reader::from_path(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Reads a rindexer CSV export: `contract_address,from,to,value,tx_hash,
/// block_number,block_hash,network,tx_index,log_index`.
pub fn read_rindexer_csv(path: &PathBuf) -> Vec<TransferRow> {
    reader(path)
        .records()
        .map(|record| {
            let r = record.expect("csv record");
            let opt = |i: usize| Some(r[i].to_string()).filter(|s| !s.is_empty());
            TransferRow {
                contract_address: r[0].to_string(),
                from: opt(1),
                to: opt(2),
                value: opt(3),
                tx_hash: r[4].to_string(),
                block_number: r[5].parse().expect("block_number"),
                // The export shortens block_hash ("0xfc48…cd02"); the column is CHAR(66).
                block_hash: r[6].chars().take(66).collect(),
                network: r[7].to_string(),
                tx_index: r[8].parse().expect("tx_index"),
                log_index: r[9].to_string(),
            }
        })
        .collect()
}

/// Reads the ethereum-etl export (`token_address,from_address,to_address,
/// value,transaction_hash,log_index,block_number`) as rindexer rows on
/// the `ethereum` network.
pub fn read_etl_csv(path: &PathBuf) -> Vec<TransferRow> {
    reader(path)
        .records()
        .map(|record| {
            let r = record.expect("csv record");
            TransferRow {
                contract_address: r[0].to_string(),
                from: Some(r[1].to_string()),
                to: Some(r[2].to_string()),
                value: Some(r[3].to_string()),
                tx_hash: r[4].to_string(),
                block_number: r[6].parse().expect("block_number"),
                block_hash: format!("0x{}", "0".repeat(64)),
                network: "ethereum".into(),
                tx_index: 0,
                log_index: r[5].to_string(),
            }
        })
        .collect()
}
