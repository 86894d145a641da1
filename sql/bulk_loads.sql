-- ---------------------------------------------------------------------------
-- Bulk applies, as operators watch them. A bulk apply is the set-based
-- path the worker takes when a chain has no counted state yet and a large
-- backlog (a first attach of a table with history, a rebuild by
-- handle_reorg(chain, 0)): one transaction that writes the ledger and the
-- balances with plain inserts. Its row is written before it starts and
-- committed, so 'running' shows while it runs; it ends 'done' (in the bulk
-- transaction), 'skipped' (the chain had state by the time it held the
-- chain), 'failed' (an error: the chain then drains batch by batch, and no
-- worker tries it in bulk again for 10 minutes) or 'interrupted' (the
-- server or the worker stopped under it: nothing of it counted, and the
-- worker starts over).
-- ---------------------------------------------------------------------------
CREATE TABLE balance_queue.bulk_loads (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chain_id           integer     NOT NULL,
    -- Transfers waiting in the chain's queue when it started.
    transfers_queued   bigint      NOT NULL,
    status             text        NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'done', 'skipped', 'failed', 'interrupted')),
    backend_pid        integer     NOT NULL DEFAULT pg_catalog.pg_backend_pid(),
    started_at         timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    finished_at        timestamptz,
    -- Transfers the bulk applied and balance rows it wrote ('done').
    transfers_applied  bigint,
    balances_written   bigint,
    message            text,
    -- The ledger and the balances were empty of every chain: their indexes
    -- were dropped and built again after the rows, and readers of the
    -- balances waited for the load to commit ('done').
    indexes_rebuilt    boolean     NOT NULL DEFAULT false
);
-- One bulk load runs per chain: a second worker that finds the same chain
-- due leaves it to the first.
CREATE UNIQUE INDEX bulk_loads_running_idx ON balance_queue.bulk_loads (chain_id) WHERE status = 'running';
COMMENT ON TABLE balance_queue.bulk_loads IS
    'Bulk applies of a chain''s backlog (first attach, handle_reorg(chain, 0)): running, done, skipped, failed or interrupted, with transfers and balances written.';
SELECT pg_catalog.pg_extension_config_dump('balance_queue.bulk_loads', '');
SELECT pg_catalog.pg_extension_config_dump(
    pg_catalog.pg_get_serial_sequence('balance_queue.bulk_loads', 'id')::regclass, '');

-- ---------------------------------------------------------------------------
-- Progress per attached table, for an operator watching a backfill or a
-- backlog: rows applied so far, rows waiting, the rate over the last
-- minute (from the completed items the queue keeps for
-- balance_queue.completed_retention) and the time left at that rate.
-- ---------------------------------------------------------------------------
CREATE VIEW balance_queue.source_progress AS
SELECT s.source_table,
       s.chain_id,
       s.rows_applied + coalesce(w.rows_waiting, 0) AS rows_queued,
       s.rows_applied,
       coalesce(w.rows_waiting, 0) AS rows_waiting,
       round(coalesce(r.rows_last_minute, 0) / 60.0, 1) AS rows_per_second,
       CASE WHEN coalesce(w.rows_waiting, 0) = 0 THEN interval '0'
            WHEN r.rows_last_minute > 0
            THEN make_interval(secs => round(w.rows_waiting / (r.rows_last_minute / 60.0)))
       END AS time_left,
       w.oldest_waiting_since,
       s.last_applied_at,
       b.bulk_load_since
  FROM balance_queue.attached_sources s
  LEFT JOIN (SELECT source_table, sum(row_count) AS rows_waiting, min(created_at) AS oldest_waiting_since
               FROM balance_queue.balance_update_queue
              WHERE status = 'pending'
              GROUP BY source_table) w USING (source_table)
  LEFT JOIN (SELECT source_table, sum(row_count) AS rows_last_minute
               FROM balance_queue.balance_update_queue
              WHERE status = 'completed' AND processed_at > now() - interval '1 minute'
              GROUP BY source_table) r USING (source_table)
  -- A bulk load applies the rows waiting all at once, in one transaction:
  -- until it commits the counts do not move, and this says why.
  LEFT JOIN LATERAL (SELECT min(l.started_at) AS bulk_load_since
                       FROM balance_queue.bulk_loads l
                      WHERE l.status = 'running' AND (s.chain_id IS NULL OR l.chain_id = s.chain_id)) b ON true;
COMMENT ON VIEW balance_queue.source_progress IS
    'Per attached table: rows queued, applied and waiting, rows per second over the last minute, the time left at that rate, and since when a bulk load of its chain runs (it applies the waiting rows at once, when it commits). handle_reorg and rechecks take the rows they queue again off rows_applied.';
