-- balance_queue schema: tables, indexes and preloaded reference data.
--
-- Every object is schema-qualified: the extension is not relocatable and
-- never depends on the caller's search_path.
--
-- Addresses and hashes are lowercase 0x hex, so they are stored COLLATE "C":
-- byte order is their natural order, and every btree insert and sort on them
-- compares bytes instead of calling the locale's strcoll (the drain of a
-- 100,000-transfer demo rose about 15% with it on this machine; at a million
-- balances cache misses dominate and the gain is within the noise).

-- ---------------------------------------------------------------------------
-- Chain registry: rindexer writes the yaml network name (`ethereum`, `base`,
-- ...) into each row, never a chain id, so the extension keeps its own map.
-- ---------------------------------------------------------------------------
CREATE TABLE balance_queue.chain_registry (
    chain_id            integer PRIMARY KEY CHECK (chain_id > 0),
    network_name        text    NOT NULL UNIQUE,
    display_name        text    NOT NULL,
    -- Blocks below the head after which a transfer is treated as final.
    confirmation_depth  integer NOT NULL DEFAULT 64 CHECK (confirmation_depth >= 0),
    -- Highest block applied for this chain (the apply path raises it):
    -- not the chain's own head, which the extension never asks a node for.
    -- Confirmations count from it (confirmed_through()); NULL until a
    -- transfer of the chain is applied. The name is the plan's.
    head_block          bigint,
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- Added in 0.2.0, so last: an upgraded table keeps the columns' order.
    is_testnet          boolean NOT NULL DEFAULT false,
    -- The symbol of the chain's gas token (ETH, POL, S, ...).
    native_currency_symbol text
);
COMMENT ON TABLE balance_queue.chain_registry IS
    'EVM chains known to balance_queue: chain id, rindexer network name, confirmation depth in blocks. Add rows with balance_queue.add_chain().';

-- ---------------------------------------------------------------------------
-- Token metadata: symbol, decimals, and a USD price for stable tokens.
-- ---------------------------------------------------------------------------
CREATE TABLE balance_queue.token_metadata (
    chain_id          integer NOT NULL,
    contract_address  text COLLATE "C"    NOT NULL CHECK (contract_address ~ '^0x[0-9a-f]{40}$'),
    symbol            text,
    name              text,
    decimals          integer CHECK (decimals BETWEEN 0 AND 77),
    is_stable_token   boolean NOT NULL DEFAULT false,
    coingecko_id      text,
    -- USD per whole token; USD values are computed from it when read.
    -- NULL: unknown. Set by set_token_price or a feed (sql/prices.sql).
    price_usd         numeric,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- Added in 0.2.0, so last. Where price_usd came from: 'manual', 'feed',
    -- or NULL (the preloaded stable price, or a price set by UPDATE).
    price_source      text CHECK (price_source IN ('manual', 'feed')),
    -- When the price was observed (a feed round's updatedAt), and how old a
    -- feed price may be before it is stale; a pinned price no feed replaces.
    price_observed_at timestamptz,
    price_max_age     interval,
    price_pinned      boolean NOT NULL DEFAULT false,
    PRIMARY KEY (chain_id, contract_address)
);
COMMENT ON TABLE balance_queue.token_metadata IS
    'ERC20 token metadata per (chain_id, contract_address); addresses lowercase 0x hex. price_usd is USD per whole token.';

-- ---------------------------------------------------------------------------
-- Current balances: one row per (chain id, token contract, holder), in wei.
-- Signed on purpose: an indexer that starts at a recent block sees holders go
-- negative, and the extension keeps that value rather than clamping it.
-- LIST-partitioned by chain; add_chain() creates each chain's partition.
-- ---------------------------------------------------------------------------
CREATE TABLE balance_queue.current_token_balances (
    chain_id            integer       NOT NULL,
    contract_address    text COLLATE "C"          NOT NULL,
    holder_address      text COLLATE "C"          NOT NULL,
    current_balance     numeric(78,0) NOT NULL DEFAULT 0,
    last_updated_block  bigint,
    last_updated_time   timestamptz   NOT NULL DEFAULT now(),
    token_symbol        text,
    token_decimals      integer,
    -- No balance_usd: USD values are computed when read from the token's
    -- price (sql/prices.sql), so a price change writes one row, not one per
    -- holder.
    PRIMARY KEY (chain_id, contract_address, holder_address)
) PARTITION BY LIST (chain_id);
CREATE TABLE balance_queue.current_token_balances_default
    PARTITION OF balance_queue.current_token_balances DEFAULT;
-- A holder's portfolio across chains and tokens.
CREATE INDEX current_token_balances_holder_idx
    ON balance_queue.current_token_balances (holder_address);
-- No index on current_balance: top holders come from token_leaderboard
-- (sql/leaderboard.sql), so a balance update writes no index and can be HOT.
-- Balances by symbol: partial, so the many balances of tokens without
-- metadata cost the apply path no index writes here.
CREATE INDEX current_token_balances_symbol_idx
    ON balance_queue.current_token_balances (token_symbol) WHERE token_symbol IS NOT NULL;
COMMENT ON TABLE balance_queue.current_token_balances IS
    'Current ERC20 balance per (chain_id, contract_address, holder_address) in wei, maintained incrementally from the queue. Signed: never clamped.';

-- ---------------------------------------------------------------------------
-- The queue: one item per side of each transfer row event (the sender's
-- transfer_out, the receiver's transfer_in), written set-based by statement
-- triggers. Bad rows land here as 'failed' items naming the row.
-- ---------------------------------------------------------------------------
CREATE TABLE balance_queue.balance_update_queue (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chain_id                integer,
    contract_address        text COLLATE "C",
    holder_address          text COLLATE "C",
    update_type             text NOT NULL
        CHECK (update_type IN ('transfer_in', 'transfer_out', 'recalculate', 'source_rows')),
    -- Signed change to the holder's balance in wei (+value in, -value out).
    -- NULL: recompute the balance from the attached sources instead.
    delta_wei               numeric(78,0),
    -- +1: a copy of the source row was inserted; -1: a copy was deleted.
    source_change           smallint NOT NULL DEFAULT 1 CHECK (source_change IN (-1, 1)),
    -- The transfer's tx hash, log index and block (the ledger's tx_hash,
    -- log_index, block_number) under the plan's names.
    triggered_by_tx         text COLLATE "C",
    triggered_by_log_index  bigint,
    triggered_by_block      bigint,
    source_table            regclass,
    priority                integer NOT NULL DEFAULT 5,
    created_at              timestamptz NOT NULL DEFAULT now(),
    processed_at            timestamptz,
    -- 'processing' is the plan's and never set: an item being applied is
    -- row-locked by its drain (FOR UPDATE SKIP LOCKED) and stays 'pending'
    -- until the drain commits it 'completed', so a crash leaves no item
    -- stuck in between.
    status                  text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    retry_count             integer NOT NULL DEFAULT 0,
    error_message           text,
    processing_duration_ms  numeric,
    -- A failed attempt waits until then before it is claimed again (backoff).
    next_attempt_at         timestamptz,
    -- false for bad source rows: nothing to retry until the row is fixed.
    retryable               boolean NOT NULL DEFAULT true,
    -- update_type 'source_rows': the ids (source_table's integer primary
    -- key) of rows one INSERT or COPY statement wrote. The rows are read
    -- back when the item is applied, so ingest writes one item per
    -- statement and chain instead of one per transfer side.
    source_row_ids          int8multirange,
    -- Transfers the item stands for: 1, or the rows in source_row_ids.
    -- A batch takes items until their row_count reaches the batch size.
    row_count               integer NOT NULL DEFAULT 1,
    -- Workers split the queue by holder (see holder_partition()): a
    -- source_rows item stands for the sides of its rows whose holder is in
    -- partition holder_partition of holder_partitions, one item per
    -- partition, and its row_count is that partition's share of the rows.
    -- NULL: every side (one worker, or a transfer-side item).
    holder_partition        smallint,
    holder_partitions       smallint,
    CONSTRAINT balance_update_queue_holder_partition_check
        CHECK ((holder_partition IS NULL) = (holder_partitions IS NULL)
               AND holder_partition >= 0 AND holder_partition < holder_partitions)
);
-- The drain's claim order; partial, so finished items leave it.
CREATE INDEX balance_update_queue_pending_idx
    ON balance_queue.balance_update_queue (priority, id) WHERE status = 'pending';
-- A DELETE, UPDATE or TRUNCATE on a source finds the waiting row-id items
-- it must cut (their rows were never applied). One entry per statement.
CREATE INDEX balance_update_queue_waiting_rows_idx
    ON balance_queue.balance_update_queue (source_table, id)
    WHERE status <> 'completed' AND source_row_ids IS NOT NULL;
-- No index on the pending items of one key: recalculation is rare, and
-- every index here is written for each item the indexer's COPY queues.
CREATE INDEX balance_update_queue_failed_idx
    ON balance_queue.balance_update_queue (chain_id, id) WHERE status = 'failed';
COMMENT ON TABLE balance_queue.balance_update_queue IS
    'Pending balance changes: the row ids of one INSERT or COPY statement (source_rows), or one transfer side; drained by process_balance_update_queue() and the worker. Failed items keep their error_message.';

-- ---------------------------------------------------------------------------
-- Applied-transfer ledger: the apply side's exactly-once state. One row per
-- side of each transfer (chain_id, tx_hash, log_index) and content, keyed by
-- the chain, the block and the md5 of both (side_id): the block first, so an
-- indexer's next blocks land at the right edge of the key (LEDGER_KEY in
-- src/apply/balances.rs). Each row holds the number of source row copies
-- currently present. A side counts in the balance while copies > 0, so
-- duplicates count once and deletes take back exactly what was added,
-- whatever order inserts and deletes are applied in.
-- ---------------------------------------------------------------------------
CREATE TABLE balance_queue.applied_transfers (
    chain_id          integer       NOT NULL,
    tx_hash           text COLLATE "C"          NOT NULL,
    log_index         bigint        NOT NULL,
    is_inbound        boolean       NOT NULL,
    contract_address  text COLLATE "C"          NOT NULL,
    holder_address    text COLLATE "C"          NOT NULL,
    -- The signed change this side makes while counted, in wei.
    delta_wei         numeric(78,0) NOT NULL,
    block_number      bigint        NOT NULL,
    copies            integer       NOT NULL,
    -- Change applied by the last batch; copies - last_change is the count before it.
    last_change       integer       NOT NULL,
    -- Added in 0.2.0, so last. md5 of (tx_hash, log_index, is_inbound,
    -- token, holder, signed amount, block): a log re-included by a reorg
    -- with another amount or block is another side. 28 bytes of key with
    -- the chain and block, where the five columns it replaced took three
    -- times the index (src/apply/balances.rs, side_id).
    side_id           uuid          NOT NULL,
    PRIMARY KEY (chain_id, block_number, side_id)
);
COMMENT ON TABLE balance_queue.applied_transfers IS
    'Exactly-once ledger: per transfer side, how many copies of its source row exist. Counted in balances while copies > 0.';

-- ---------------------------------------------------------------------------
-- Counted transfer sides still inside their chain's confirmation window
-- (block > head_block - confirmation_depth): the pending delta of each
-- balance (the plan's dual state: confirmed + pending). Kept by the apply
-- path, pruned as blocks confirm, so its size follows the unconfirmed
-- window, never history.
-- ---------------------------------------------------------------------------
CREATE TABLE balance_queue.unconfirmed_transfer_sides (
    chain_id          integer       NOT NULL,
    tx_hash           text COLLATE "C"          NOT NULL,
    log_index         bigint        NOT NULL,
    is_inbound        boolean       NOT NULL,
    contract_address  text COLLATE "C"          NOT NULL,
    holder_address    text COLLATE "C"          NOT NULL,
    delta_wei         numeric(78,0) NOT NULL,
    block_number      bigint        NOT NULL,
    -- Added in 0.2.0, so last: the ledger's side_id.
    side_id           uuid          NOT NULL,
    -- Pruning and reorgs by block range use its prefix.
    PRIMARY KEY (chain_id, block_number, side_id)
);
CREATE INDEX unconfirmed_transfer_sides_key_idx
    ON balance_queue.unconfirmed_transfer_sides (chain_id, contract_address, holder_address);
COMMENT ON TABLE balance_queue.unconfirmed_transfer_sides IS
    'Counted transfer sides within the confirmation window of their chain (unconfirmed): the pending delta of current balances.';

-- ---------------------------------------------------------------------------
-- Attached source tables and their column mapping.
-- ---------------------------------------------------------------------------
CREATE TABLE balance_queue.attached_sources (
    source_table          regclass PRIMARY KEY,
    -- Fixed chain for every row; NULL: from each row's network column.
    chain_id              integer REFERENCES balance_queue.chain_registry (chain_id),
    from_column           text NOT NULL,
    to_column             text NOT NULL,
    value_column          text NOT NULL,
    contract_column       text NOT NULL,
    tx_hash_column        text NOT NULL,
    log_index_column      text NOT NULL,
    block_number_column   text NOT NULL,
    network_column        text,
    -- The table's single-column integer primary key (rindexer_id): inserted
    -- rows are queued as id ranges and read back when applied. NULL: each
    -- inserted row's sides are queued.
    row_id_column         text,
    attached_at           timestamptz NOT NULL DEFAULT now(),
    -- Added in 0.2.0, so last. Transfers (rows read back, or transfer-side
    -- items) the drains applied from this table, and when last: raised
    -- once per batch, as the batch's last statement, so concurrent workers
    -- hold this row's lock only while they commit.
    rows_applied          bigint NOT NULL DEFAULT 0,
    last_applied_at       timestamptz
);
COMMENT ON TABLE balance_queue.attached_sources IS
    'Transfer tables attached with attach_transfer_table(): their column mapping and chain.';

-- ---------------------------------------------------------------------------
-- Per-chain processing configuration (the NULL-chain row is the default).
-- ---------------------------------------------------------------------------
-- A NULL setting falls back to the NULL-chain row, then to the GUC
-- (balance_queue.batch_size, .max_retries; no interval): see get_queue_config().
CREATE TABLE balance_queue.queue_processing_config (
    id                      integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chain_id                integer,
    -- Queue items per batch, as in the plan; a batch (one transaction) also
    -- stops at balance_queue.batch_size transfers.
    batch_size              integer CHECK (batch_size > 0),
    -- An idle chain is polled this often: after a poll that found nothing
    -- for it, the worker looks again only after this many seconds; a chain
    -- with work is drained without pause. 0 or NULL: every naptime.
    processing_interval_seconds integer CHECK (processing_interval_seconds >= 0),
    max_retry_attempts      integer CHECK (max_retry_attempts >= 0),
    enabled                 boolean NOT NULL DEFAULT true,
    updated_at              timestamptz NOT NULL DEFAULT now(),
    -- Added in 0.2.0, so last: an upgraded table keeps the columns' order.
    -- Pending items older than this many hours are drained ahead of newer
    -- ones (their priority is raised to 0). NULL or 0: no boost.
    priority_boost_threshold_hours integer CHECK (priority_boost_threshold_hours >= 0),
    created_at              timestamptz NOT NULL DEFAULT now()
);
-- One row per chain, and one default row (chain_id NULL); 0 is no chain id.
CREATE UNIQUE INDEX queue_processing_config_chain_idx
    ON balance_queue.queue_processing_config ((coalesce(chain_id, 0)));
-- The default row, and the plan's rows for its nine chains
-- (see docs/design-notes.md, "The plan").
INSERT INTO balance_queue.queue_processing_config
    (chain_id, batch_size, processing_interval_seconds, priority_boost_threshold_hours)
VALUES (NULL,  NULL, NULL, 1),
       (1,     200,  3,    NULL),  -- Ethereum
       (42161, 150,  3,    NULL),  -- Arbitrum
       (8453,  150,  3,    NULL),  -- Base
       (137,   200,  3,    NULL),  -- Polygon
       (10,    150,  3,    NULL),  -- Optimism
       (146,   100,  5,    NULL),  -- Sonic
       (5330,  100,  5,    NULL),  -- Superseed
       (480,   100,  5,    NULL),  -- World Chain
       (57073, 100,  5,    NULL);  -- Ink

-- ---------------------------------------------------------------------------
-- Daily snapshots and queue health history (filled by the worker).
-- ---------------------------------------------------------------------------
CREATE TABLE balance_queue.daily_balance_snapshots (
    snapshot_date     date          NOT NULL,
    chain_id          integer       NOT NULL,
    contract_address  text COLLATE "C"          NOT NULL,
    holder_address    text COLLATE "C"          NOT NULL,
    balance           numeric(78,0) NOT NULL,
    balance_usd       numeric,
    -- The block the balance was last changed at.
    block_number      bigint,
    created_at        timestamptz   NOT NULL DEFAULT now(),
    -- Added in 0.2.0, so last. The chain's head block (highest applied)
    -- when the snapshot was taken: the balance is as of that block.
    snapshot_block    bigint,
    token_symbol      text,
    PRIMARY KEY (chain_id, contract_address, holder_address, snapshot_date)
);
CREATE INDEX daily_balance_snapshots_date_idx
    ON balance_queue.daily_balance_snapshots (snapshot_date);

CREATE TABLE balance_queue.queue_health_metrics (
    id                          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recorded_at                 timestamptz NOT NULL DEFAULT now(),
    chain_id                    integer,
    -- Counts of work: the rows of an id-range item, 1 for any other item.
    pending_count               bigint  NOT NULL DEFAULT 0,
    processing_count            bigint  NOT NULL DEFAULT 0,
    -- Items completed since the previous collection for this chain.
    completed_count             bigint  NOT NULL DEFAULT 0,
    completed_count_last_hour   bigint  NOT NULL DEFAULT 0,
    -- Items that ended failed in the last hour.
    error_count_last_hour       bigint  NOT NULL DEFAULT 0,
    avg_processing_time_ms      numeric,
    oldest_pending_age_seconds  numeric,
    -- Added in 0.2.0, so last: the plan's unit, derived from the seconds.
    oldest_pending_age_minutes  integer GENERATED ALWAYS AS (floor(oldest_pending_age_seconds / 60)::integer) STORED
);
CREATE INDEX queue_health_metrics_recorded_idx
    ON balance_queue.queue_health_metrics (chain_id, recorded_at);

-- Completed queue items kept when balance_queue.archive_completed is on.
CREATE TABLE balance_queue.balance_update_queue_archive
    (LIKE balance_queue.balance_update_queue);
CREATE INDEX balance_update_queue_archive_processed_idx
    ON balance_queue.balance_update_queue_archive (processed_at);

-- ---------------------------------------------------------------------------
-- Keep the denormalised token columns of current balances in step with
-- token_metadata when metadata arrives after the balances. Only a change of
-- symbol or decimals rewrites the token's balances; a price change does not
-- (USD values are computed when read).
-- ---------------------------------------------------------------------------
CREATE FUNCTION balance_queue._refresh_balances_from_metadata()
RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.symbol IS NOT DISTINCT FROM NEW.symbol
       AND OLD.decimals IS NOT DISTINCT FROM NEW.decimals THEN
        RETURN NULL;
    END IF;
    UPDATE balance_queue.current_token_balances b
       SET token_symbol = NEW.symbol,
           token_decimals = NEW.decimals
     WHERE b.chain_id = NEW.chain_id AND b.contract_address = NEW.contract_address
       AND (b.token_symbol, b.token_decimals) IS DISTINCT FROM (NEW.symbol, NEW.decimals);
    RETURN NULL;
END
$$;
CREATE TRIGGER token_metadata_refresh_balances
    AFTER INSERT OR UPDATE OF symbol, decimals ON balance_queue.token_metadata
    FOR EACH ROW EXECUTE FUNCTION balance_queue._refresh_balances_from_metadata();

-- ---------------------------------------------------------------------------
-- pg_dump keeps user data: the rows users add or the extension computes.
-- The preloaded reference rows are dumped too (they may have been edited);
-- on restore they are laid over the preloaded ones (see
-- _upsert_reference_row in finalize.sql).
-- ---------------------------------------------------------------------------
SELECT pg_catalog.pg_extension_config_dump('balance_queue.chain_registry', '');
SELECT pg_catalog.pg_extension_config_dump('balance_queue.token_metadata', '');
SELECT pg_catalog.pg_extension_config_dump('balance_queue.current_token_balances_default', '');
SELECT pg_catalog.pg_extension_config_dump('balance_queue.balance_update_queue', '');
SELECT pg_catalog.pg_extension_config_dump('balance_queue.applied_transfers', '');
SELECT pg_catalog.pg_extension_config_dump('balance_queue.unconfirmed_transfer_sides', '');
SELECT pg_catalog.pg_extension_config_dump('balance_queue.attached_sources', '');
SELECT pg_catalog.pg_extension_config_dump('balance_queue.queue_processing_config', '');
SELECT pg_catalog.pg_extension_config_dump('balance_queue.daily_balance_snapshots', '');
SELECT pg_catalog.pg_extension_config_dump('balance_queue.queue_health_metrics', '');
SELECT pg_catalog.pg_extension_config_dump('balance_queue.balance_update_queue_archive', '');
-- Identity sequences too, one statement each (each call updates pg_extension).
SELECT pg_catalog.pg_extension_config_dump(
    pg_catalog.pg_get_serial_sequence('balance_queue.balance_update_queue', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(
    pg_catalog.pg_get_serial_sequence('balance_queue.queue_processing_config', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(
    pg_catalog.pg_get_serial_sequence('balance_queue.queue_health_metrics', 'id')::regclass, '');

-- ---------------------------------------------------------------------------
-- Queue health, as operators read it: the latest collection per chain, with
-- the plan's columns and status rules (docs/design-notes.md, "The plan";
-- Phase 4), tested in this order: HIGH_LOAD (over 1,000 pending), DELAYED
-- (oldest pending over 60 minutes), ERRORS (over 50 failed in the last
-- hour), else HEALTHY. chain_name is the rindexer network name, as in the
-- plan ('ethereum', 'arbitrum', ...).
-- ---------------------------------------------------------------------------
CREATE VIEW balance_queue.queue_health_summary AS
SELECT m.chain_id,
       coalesce(c.network_name, 'chain ' || m.chain_id) AS chain_name,
       m.pending_count,
       m.processing_count,
       m.completed_count_last_hour,
       m.error_count_last_hour,
       round(m.avg_processing_time_ms, 2) AS avg_processing_time_ms,
       m.oldest_pending_age_minutes,
       CASE
           WHEN m.pending_count > 1000 THEN 'HIGH_LOAD'
           WHEN m.oldest_pending_age_minutes > 60 THEN 'DELAYED'
           WHEN m.error_count_last_hour > 50 THEN 'ERRORS'
           ELSE 'HEALTHY'
       END AS health_status,
       m.recorded_at,
       c.display_name,
       m.oldest_pending_age_seconds
  FROM (SELECT DISTINCT ON (chain_id) *
          FROM balance_queue.queue_health_metrics
         ORDER BY chain_id, recorded_at DESC, id DESC) m
  LEFT JOIN balance_queue.chain_registry c USING (chain_id);
COMMENT ON VIEW balance_queue.queue_health_summary IS
    'Latest queue health per chain (collect_queue_health_metrics(), run by the worker every balance_queue.health_interval) with the plan''s health_status: HIGH_LOAD, DELAYED, ERRORS or HEALTHY.';

-- The plan's alert queries (view queue_alerts) are in sql/orphans.sql, with
-- the alerts about the canonical chain they include.

-- The progress per attached table (view source_progress) is in
-- sql/bulk_loads.sql, beside the bulk loads it reports.
-- ---------------------------------------------------------------------------
-- Finality by confirmations: the one definition every statement uses. A
-- chain's blocks at or below confirmed_through(head_block,
-- confirmation_depth) are final; those above are unconfirmed, the only part
-- a reorg shallower than the depth can move. Without a head block yet
-- (NULL: nothing applied) every block is unconfirmed. SQL-standard bodies,
-- inlined by the planner.
-- ---------------------------------------------------------------------------
CREATE FUNCTION balance_queue.confirmed_through(p_head_block bigint, p_confirmation_depth integer)
RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN p_head_block - p_confirmation_depth;
COMMENT ON FUNCTION balance_queue.confirmed_through(bigint, integer) IS
    'The highest final block of a chain whose highest applied block is p_head_block: p_head_block - p_confirmation_depth (blocks); NULL without a head block.';
CREATE FUNCTION balance_queue.is_unconfirmed(p_block bigint, p_confirmed_through bigint)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN p_block > coalesce(p_confirmed_through, -1);
COMMENT ON FUNCTION balance_queue.is_unconfirmed(bigint, bigint) IS
    'Whether block p_block is above p_confirmed_through (see confirmed_through), so a reorg may still move it; every block is when it is NULL.';

-- ---------------------------------------------------------------------------
-- Workers split by holder: worker k of n applies the sides whose holder is
-- in partition k, so no two workers ever write the same balance, ledger,
-- confirmation-window or leaderboard row, and they never wait on each
-- other. The one definition of the partition of a holder.
-- ---------------------------------------------------------------------------
CREATE FUNCTION balance_queue.holder_partition(p_holder_address text, p_partitions integer)
RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (pg_catalog.hashtext(p_holder_address) & 2147483647) % p_partitions;
COMMENT ON FUNCTION balance_queue.holder_partition(text, integer) IS
    'The partition (0 .. p_partitions - 1) of holder p_holder_address among p_partitions: which worker applies its sides.';

-- ---------------------------------------------------------------------------
-- Confirmed state (the seed's dual-state design): per key, the balance from
-- transfers at least confirmation_depth blocks below the chain's head, and
-- the pending delta of the blocks above it, the only part a reorg shallower
-- than the depth can move. Cost: one pass over the pending window.
-- ---------------------------------------------------------------------------
CREATE VIEW balance_queue.confirmed_token_balances AS
SELECT b.chain_id, b.contract_address, b.holder_address,
       b.current_balance - coalesce(p.pending_delta, 0) AS confirmed_balance,
       coalesce(p.pending_delta, 0) AS pending_delta,
       b.current_balance,
       balance_queue.confirmed_through(r.head_block, r.confirmation_depth) AS confirmed_through_block,
       b.token_symbol, b.token_decimals, b.last_updated_block
  FROM balance_queue.current_token_balances b
  LEFT JOIN balance_queue.chain_registry r USING (chain_id)
  LEFT JOIN (SELECT s.chain_id, s.contract_address, s.holder_address, sum(s.delta_wei) AS pending_delta
               FROM balance_queue.unconfirmed_transfer_sides s
               JOIN balance_queue.chain_registry rr USING (chain_id)
              WHERE balance_queue.is_unconfirmed(s.block_number,
                                                 balance_queue.confirmed_through(rr.head_block, rr.confirmation_depth))
              GROUP BY 1, 2, 3) p USING (chain_id, contract_address, holder_address);
COMMENT ON VIEW balance_queue.confirmed_token_balances IS
    'Per key: confirmed_balance (transfers at or below head_block - confirmation_depth), pending_delta (above it) and current_balance, in wei.';

-- ---------------------------------------------------------------------------
-- A dropped source table (rindexer's drop_each_run drops its schema with
-- CASCADE) is forgotten, so recalculation and verification never name a
-- relation that is gone. Its transfers stay counted until the operator
-- rebuilds the chain: handle_reorg(chain_id, 0) re-derives every balance of
-- the chain from the sources that remain.
-- ---------------------------------------------------------------------------
CREATE FUNCTION balance_queue._forget_dropped_sources()
RETURNS event_trigger LANGUAGE plpgsql
-- Runs for every DROP by any role: it needs the owner's rights.
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    forgotten record;
BEGIN
    FOR forgotten IN
        DELETE FROM balance_queue.attached_sources s
         USING pg_catalog.pg_event_trigger_dropped_objects() d
         WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = s.source_table::oid
        RETURNING d.object_identity, s.chain_id, s.source_table
    LOOP
        -- Rows queued by id and not yet applied are gone with the table.
        UPDATE balance_queue.balance_update_queue q
           SET status = 'completed', processed_at = clock_timestamp(),
               error_message = 'superseded: the source table was dropped before these rows were applied'
         WHERE q.id IN (SELECT id FROM balance_queue.balance_update_queue
                         WHERE status <> 'completed' AND source_table = forgotten.source_table
                           AND source_row_ids IS NOT NULL
                         ORDER BY id FOR UPDATE);
        RAISE WARNING 'balance_queue: attached transfer table % was dropped and is detached', forgotten.object_identity
            USING HINT = 'Its transfers are still counted. To re-derive balances from the remaining sources, run '
                         'SELECT * FROM balance_queue.handle_reorg(<chain_id>, 0) for each chain it fed'
                         || coalesce(' (chain ' || forgotten.chain_id || ')', '') || '.';
    END LOOP;
END
$$;
CREATE EVENT TRIGGER balance_queue_forget_dropped_sources ON sql_drop
    EXECUTE FUNCTION balance_queue._forget_dropped_sources();

