//! Repairs on top of the apply path: reorgs, confirmations and proofs
//! (`reorg`), rechecking blocks whose canonical hash changed (`recheck`),
//! and recalculating one balance from the sources (`recalc`).

pub mod recalc;
pub mod recheck;
pub mod reorg;
