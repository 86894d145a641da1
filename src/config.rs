//! Per-chain processing configuration: the effective settings of a chain,
//! from its `queue_processing_config` row, the NULL-chain row and the GUCs.
//! Read by the apply path (retry limits), the worker and `get_queue_config`.

use crate::errors::spi_ok;
use crate::gucs;

/// The effective processing configuration of one chain.
#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    /// Queue items per batch (the plan's unit); every batch also stops at
    /// `balance_queue.batch_size` transfers.
    pub batch_size: i32,
    /// Seconds before a chain that had nothing to drain is polled again (0: naptime).
    pub processing_interval_seconds: i32,
    pub max_retry_attempts: i32,
    pub enabled: bool,
    /// Pending items older than this many hours are boosted (0: never).
    pub priority_boost_threshold_hours: i32,
}

/// Effective settings for `chain_id` (None: the default for chains without
/// a row): each NULL setting falls back to the NULL-chain row, then to the
/// GUC (`balance_queue.batch_size`, `balance_queue.max_retries`), else to
/// no interval and no boost.
pub fn effective_config(client: &pgrx::spi::SpiClient<'_>, chain_id: Option<i32>) -> QueueConfig {
    let rows = spi_ok(client.select(
        "SELECT coalesce(c.batch_size, d.batch_size, $2),
                coalesce(c.processing_interval_seconds, d.processing_interval_seconds, 0),
                coalesce(c.max_retry_attempts, d.max_retry_attempts, $3),
                coalesce(c.enabled, d.enabled, true),
                coalesce(c.priority_boost_threshold_hours, d.priority_boost_threshold_hours, 0)
           FROM (SELECT 1) one
           LEFT JOIN balance_queue.queue_processing_config d ON d.chain_id IS NULL
           LEFT JOIN balance_queue.queue_processing_config c ON c.chain_id = $1",
        Some(1),
        &[
            chain_id.into(),
            gucs::BATCH_SIZE.get().into(),
            gucs::MAX_RETRIES.get().into(),
        ],
    ));
    let row = rows.first();
    QueueConfig {
        batch_size: spi_ok(row.get::<i32>(1)).unwrap_or(gucs::BATCH_SIZE.get()),
        processing_interval_seconds: spi_ok(row.get::<i32>(2)).unwrap_or(0),
        max_retry_attempts: spi_ok(row.get::<i32>(3)).unwrap_or(gucs::MAX_RETRIES.get()),
        enabled: spi_ok(row.get::<bool>(4)).unwrap_or(true),
        priority_boost_threshold_hours: spi_ok(row.get::<i32>(5)).unwrap_or(0),
    }
}
