-- ---------------------------------------------------------------------------
-- Bulk applies, as operators watch them. A bulk apply is the set-based
-- path the worker takes when a chain has no counted state yet and a large
-- backlog (a first attach of a table with history, a rebuild by
-- handle_reorg(chain, 0)): one transaction that writes the ledger and the
-- balances with plain inserts. Its row is written before it starts and
-- committed, so 'running' shows while it runs; it ends 'done' (in the bulk
-- transaction), 'skipped' (the chain had state by the time it held the
-- chain), 'failed' (an error: the worker then drains the chain batch by
-- batch) or 'interrupted' (the server or the worker stopped under it:
-- nothing of it counted, and the worker starts over).
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
    message            text
);
-- One bulk load runs per chain: a second worker that finds the same chain
-- due leaves it to the first.
CREATE UNIQUE INDEX bulk_loads_running_idx ON balance_queue.bulk_loads (chain_id) WHERE status = 'running';
COMMENT ON TABLE balance_queue.bulk_loads IS
    'Bulk applies of a chain''s backlog (first attach, handle_reorg(chain, 0)): running, done, skipped, failed or interrupted, with transfers and balances written.';
SELECT pg_catalog.pg_extension_config_dump('balance_queue.bulk_loads', '');
SELECT pg_catalog.pg_extension_config_dump(
    pg_catalog.pg_get_serial_sequence('balance_queue.bulk_loads', 'id')::regclass, '');
