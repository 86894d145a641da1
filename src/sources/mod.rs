//! Attached transfer tables: what a valid transfer row is and how a table's
//! columns map to it (`mapping`, `row_check`), attaching and detaching
//! (`attach`), the statement triggers that queue every change without
//! blocking the indexer (`triggers`), and the rows queued by id that the
//! apply path reads back (`row_ids`), and the records of rows left
//! uncounted off the canonical chain (`orphans`).

pub mod attach;
pub mod mapping;
pub mod orphans;
pub mod row_check;
pub mod row_ids;
pub mod triggers;
