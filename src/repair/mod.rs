//! Repairs on top of the apply path: reorgs, confirmations and proofs
//! (`reorg`), and recalculating one balance from the sources (`recalc`).

pub mod recalc;
pub mod reorg;
