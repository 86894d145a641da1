-- balance_queue 0.1.0 -> 0.2.0: the plan's SQL names, its per-chain
-- configuration, all 34 chains and their stable tokens, pg_dump/pg_restore.
--
-- Every schema change of 0.2.0 is here as well as in the install script
-- (sql/schema.sql, sql/reference_data.sql, sql/finalize.sql and the Rust
-- functions): tests/tests/upgrade.rs checks that an upgraded database has
-- the same catalog as a fresh install. New columns go last in both, so the
-- column order of an upgraded table is that of a fresh one.
\echo Use "ALTER EXTENSION balance_queue UPDATE" to load this file. \quit

-- ---------------------------------------------------------------------------
-- One name per thing: the counted sides inside the confirmation window are
-- "unconfirmed" (0.1.0 called them pending, the queue's word for a waiting
-- item). Views and functions with SQL-standard bodies follow the rename.
-- ---------------------------------------------------------------------------
ALTER TABLE balance_queue.pending_transfer_sides RENAME TO unconfirmed_transfer_sides;
ALTER INDEX balance_queue.pending_transfer_sides_pkey RENAME TO unconfirmed_transfer_sides_pkey;
ALTER INDEX balance_queue.pending_transfer_sides_key_idx RENAME TO unconfirmed_transfer_sides_key_idx;
-- Its block index is the new primary key's prefix (below).
DROP INDEX balance_queue.pending_transfer_sides_block_idx;
COMMENT ON TABLE balance_queue.unconfirmed_transfer_sides IS
    'Counted transfer sides within the confirmation window of their chain (unconfirmed): the pending delta of current balances.';

-- ---------------------------------------------------------------------------
-- The ledger's narrow key: (chain_id, block_number, side_id), the block
-- first so new blocks land at the right edge, side_id the md5 of the
-- side's tx_hash, log_index, is_inbound, token, holder, signed amount and
-- block (src/apply/balances.rs, side_id: the apply path computes the same
-- expression for every side it counts, so a copy of a transfer counted
-- before the upgrade meets its ledger row). It replaces the five-column key
-- and its content_id, in the ledger and in the confirmation window.
-- ---------------------------------------------------------------------------
DO $$
DECLARE
    ledger text;
BEGIN
    FOREACH ledger IN ARRAY ARRAY['applied_transfers', 'unconfirmed_transfer_sides'] LOOP
        EXECUTE format('ALTER TABLE balance_queue.%I ADD COLUMN side_id uuid', ledger);
        EXECUTE format('UPDATE balance_queue.%I SET side_id = md5(concat_ws(''|'', tx_hash, log_index, is_inbound, contract_address, holder_address, delta_wei, block_number))::uuid', ledger);
        EXECUTE format('ALTER TABLE balance_queue.%I DROP CONSTRAINT %I, DROP COLUMN content_id,
                            ALTER COLUMN side_id SET NOT NULL, ADD PRIMARY KEY (chain_id, block_number, side_id)',
                       ledger, ledger || '_pkey');
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------
-- Tables: the plan's columns.
-- ---------------------------------------------------------------------------
ALTER TABLE balance_queue.chain_registry
    ADD COLUMN is_testnet boolean NOT NULL DEFAULT false,
    ADD COLUMN native_currency_symbol text;

ALTER TABLE balance_queue.token_metadata
    ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();

-- The interval was in milliseconds; the plan's column is in whole seconds.
ALTER TABLE balance_queue.queue_processing_config
    RENAME COLUMN processing_interval_ms TO processing_interval_seconds;
ALTER TABLE balance_queue.queue_processing_config
    DROP CONSTRAINT queue_processing_config_processing_interval_ms_check;
UPDATE balance_queue.queue_processing_config
   SET processing_interval_seconds = ceil(processing_interval_seconds / 1000.0)
 WHERE processing_interval_seconds IS NOT NULL;
ALTER TABLE balance_queue.queue_processing_config
    ADD CONSTRAINT queue_processing_config_processing_interval_seconds_check
        CHECK (processing_interval_seconds >= 0),
    ADD COLUMN priority_boost_threshold_hours integer CHECK (priority_boost_threshold_hours >= 0),
    ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();
-- The plan's default boost (1 hour) and its rows for its nine chains; rows
-- an operator already has are kept.
UPDATE balance_queue.queue_processing_config
   SET priority_boost_threshold_hours = 1
 WHERE chain_id IS NULL AND priority_boost_threshold_hours IS NULL;
INSERT INTO balance_queue.queue_processing_config
    (chain_id, batch_size, processing_interval_seconds, priority_boost_threshold_hours)
VALUES (1,     200,  3,    NULL),  -- Ethereum
       (42161, 150,  3,    NULL),  -- Arbitrum
       (8453,  150,  3,    NULL),  -- Base
       (137,   200,  3,    NULL),  -- Polygon
       (10,    150,  3,    NULL),  -- Optimism
       (146,   100,  5,    NULL),  -- Sonic
       (5330,  100,  5,    NULL),  -- Superseed
       (480,   100,  5,    NULL),  -- World Chain
       (57073, 100,  5,    NULL)   -- Ink
ON CONFLICT ((coalesce(chain_id, 0))) DO NOTHING;

ALTER TABLE balance_queue.daily_balance_snapshots
    ADD COLUMN snapshot_block bigint,
    ADD COLUMN token_symbol text;

DROP VIEW balance_queue.queue_alerts;
DROP VIEW balance_queue.queue_health_summary;
ALTER TABLE balance_queue.queue_health_metrics RENAME COLUMN collected_at TO recorded_at;
ALTER TABLE balance_queue.queue_health_metrics RENAME COLUMN completed_last_hour TO completed_count_last_hour;
ALTER TABLE balance_queue.queue_health_metrics RENAME COLUMN failed_last_hour TO error_count_last_hour;
ALTER TABLE balance_queue.queue_health_metrics
    ADD COLUMN oldest_pending_age_minutes integer
        GENERATED ALWAYS AS (floor(oldest_pending_age_seconds / 60)::integer) STORED;
ALTER INDEX balance_queue.queue_health_metrics_collected_idx RENAME TO queue_health_metrics_recorded_idx;

-- ---------------------------------------------------------------------------
-- Queue health, as operators read it: the latest collection per chain, with
-- the plan's columns and status rules (000-queue-based-balance-plan.md,
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

-- queue_alerts comes back with sql/orphans.sql below.

-- Progress per attached table (issue: drain at the machine's limit).
ALTER TABLE balance_queue.attached_sources
    ADD COLUMN rows_applied bigint NOT NULL DEFAULT 0,
    ADD COLUMN last_applied_at timestamptz;

-- source_progress comes with sql/bulk_loads.sql below.
-- Top holders from boards instead of a btree on balances.
DROP INDEX balance_queue.current_token_balances_top_holders_idx;
-- BEGIN sql/leaderboard.sql
-- ---------------------------------------------------------------------------
-- Top holders without a btree on balances.
--
-- An index on (chain_id, contract_address, current_balance) makes every
-- balance update write it (the value changed), and keeps updates from being
-- HOT: half the apply path's time went there. Instead each large token has
-- a cutoff, and `token_leaderboard` holds exactly the token's keys whose
-- balance is at or above it: about the top `target` (1,000) holders, kept
-- between half and twice that by refresh_leaderboards(). Top N of a token
-- come from the board when it holds at least N keys (then every key of the
-- top N is at or above the cutoff, so on the board); a small token, or one
-- without a cutoff yet, is read from its balances.
--
-- Invariant (for a token with a cutoff c): token_leaderboard holds the
-- token's keys with balance >= c, each with its current balance, and no
-- other. A statement trigger on current_token_balances keeps it for every
-- writer (the apply path, recalculation, handle_reorg, an operator's UPDATE);
-- refresh_leaderboards() changes cutoffs only under a SHARE lock on the
-- balances, so no writer runs with an older cutoff.
-- ---------------------------------------------------------------------------
CREATE TABLE balance_queue.leaderboard_cutoffs (
    chain_id          integer          NOT NULL,
    contract_address  text COLLATE "C" NOT NULL,
    -- wei; > 0, so negative and zero balances are never on a board
    min_balance       numeric(78,0)    NOT NULL CHECK (min_balance > 0),
    updated_at        timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (chain_id, contract_address)
);
COMMENT ON TABLE balance_queue.leaderboard_cutoffs IS
    'Per large token: the balance (wei) at or above which its holders are on token_leaderboard. Kept by refresh_leaderboards().';

CREATE TABLE balance_queue.token_leaderboard (
    chain_id          integer          NOT NULL,
    contract_address  text COLLATE "C" NOT NULL,
    holder_address    text COLLATE "C" NOT NULL,
    balance           numeric(78,0)    NOT NULL,
    PRIMARY KEY (chain_id, contract_address, holder_address)
);
CREATE INDEX token_leaderboard_rank_idx
    ON balance_queue.token_leaderboard (chain_id, contract_address, balance DESC, holder_address);
COMMENT ON TABLE balance_queue.token_leaderboard IS
    'The holders of each token in leaderboard_cutoffs whose balance (wei) is at or above its cutoff: serves get_top_holders.';

-- Keeps the boards after each statement that writes balances: keys of
-- tokens with a cutoff join the board, move on it or leave it. Only the
-- keys at or above a cutoff (before or after) are touched, so a batch of
-- 50,000 transfers costs a hash probe per changed key and a few board
-- writes.
--
-- Both statements are planned at each run (EXECUTE): a plan cached in the
-- session (the worker's lives for days) is made for the transition table's
-- size at its first run, often a single row, and for the boards as they
-- were then, often empty; reused for a batch of 50,000 keys on full boards
-- it joins by nested loops and a statement takes minutes (measured: lock
-- waits of 124 s between two workers). Planning costs a millisecond.
CREATE FUNCTION balance_queue._follow_leaderboards()
RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        -- keys that were on a board and are not any more
        EXECUTE 'DELETE FROM balance_queue.token_leaderboard t
                  USING old_rows o
                   JOIN balance_queue.leaderboard_cutoffs k USING (chain_id, contract_address)
                  WHERE o.current_balance >= k.min_balance
                    AND t.chain_id = o.chain_id AND t.contract_address = o.contract_address
                    AND t.holder_address = o.holder_address';
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        EXECUTE 'INSERT INTO balance_queue.token_leaderboard AS t
                     (chain_id, contract_address, holder_address, balance)
                 SELECT n.chain_id, n.contract_address, n.holder_address, n.current_balance
                   FROM new_rows n
                   JOIN balance_queue.leaderboard_cutoffs k USING (chain_id, contract_address)
                  WHERE n.current_balance >= k.min_balance
                  ORDER BY 1, 2, 3
                 ON CONFLICT (chain_id, contract_address, holder_address) DO UPDATE
                    SET balance = EXCLUDED.balance';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER current_token_balances_leaderboard_insert
    AFTER INSERT ON balance_queue.current_token_balances
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balance_queue._follow_leaderboards();
CREATE TRIGGER current_token_balances_leaderboard_update
    AFTER UPDATE ON balance_queue.current_token_balances
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balance_queue._follow_leaderboards();
CREATE TRIGGER current_token_balances_leaderboard_delete
    AFTER DELETE ON balance_queue.current_token_balances
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balance_queue._follow_leaderboards();

CREATE FUNCTION balance_queue._forget_leaderboards()
RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    TRUNCATE balance_queue.token_leaderboard, balance_queue.leaderboard_cutoffs;
    RETURN NULL;
END
$$;
CREATE TRIGGER current_token_balances_leaderboard_truncate
    AFTER TRUNCATE ON balance_queue.current_token_balances
    FOR EACH STATEMENT EXECUTE FUNCTION balance_queue._forget_leaderboards();

-- Sets (or drops) one token's cutoff from its balances: the `p_target`-th
-- largest positive balance, and rebuilds its board. A token with fewer
-- positive holders than that has no cutoff: its top holders are read from
-- its balances. Reads every balance of the token (a 1,000,000-holder token:
-- about half a second); called by refresh_leaderboards() under its lock.
CREATE FUNCTION balance_queue._reset_leaderboard(p_chain_id integer, p_contract_address text, p_target integer)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cutoff numeric;
BEGIN
    SELECT b.current_balance INTO cutoff
      FROM balance_queue.current_token_balances b
     WHERE b.chain_id = p_chain_id AND b.contract_address = p_contract_address AND b.current_balance > 0
     ORDER BY b.current_balance DESC
    OFFSET p_target - 1 LIMIT 1;
    DELETE FROM balance_queue.token_leaderboard
     WHERE chain_id = p_chain_id AND contract_address = p_contract_address;
    IF cutoff IS NULL THEN
        DELETE FROM balance_queue.leaderboard_cutoffs
         WHERE chain_id = p_chain_id AND contract_address = p_contract_address;
        RETURN;
    END IF;
    INSERT INTO balance_queue.leaderboard_cutoffs AS k (chain_id, contract_address, min_balance)
    VALUES (p_chain_id, p_contract_address, cutoff)
    ON CONFLICT (chain_id, contract_address) DO UPDATE
       SET min_balance = EXCLUDED.min_balance, updated_at = now();
    INSERT INTO balance_queue.token_leaderboard (chain_id, contract_address, holder_address, balance)
    SELECT chain_id, contract_address, holder_address, current_balance
      FROM balance_queue.current_token_balances
     WHERE chain_id = p_chain_id AND contract_address = p_contract_address
       AND current_balance >= cutoff;
END
$$;

-- The tokens whose board refresh_leaderboards() would change: boards
-- holding more than twice or fewer than half `p_target` keys (`on_board`
-- their count), and tokens grown to 5 × `p_target` holders without a board
-- (`on_board` NULL; estimated from a 1% sample of the balances' pages; a
-- smaller token's top holders are read from its balances, a few thousand
-- rows at most). Reads only: takes no lock the drains wait for.
CREATE FUNCTION balance_queue._leaderboards_due(p_target integer)
RETURNS TABLE (chain_id integer, contract_address text, on_board bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT k.chain_id, k.contract_address, count(t.holder_address)
      FROM balance_queue.leaderboard_cutoffs k
      LEFT JOIN balance_queue.token_leaderboard t USING (chain_id, contract_address)
     GROUP BY k.chain_id, k.contract_address
    HAVING count(t.holder_address) > 2 * p_target OR count(t.holder_address) < p_target / 2
     UNION ALL
    (SELECT s.chain_id, s.contract_address, NULL::bigint
       FROM balance_queue.current_token_balances s TABLESAMPLE SYSTEM (1)
      GROUP BY s.chain_id, s.contract_address
     HAVING count(*) * 100 >= 5 * p_target
     EXCEPT
     SELECT k.chain_id, k.contract_address, NULL::bigint FROM balance_queue.leaderboard_cutoffs k)
$$;

-- Changes one token's board, as _leaderboards_due found it: `p_on_board`
-- keys on it (NULL: no board yet). Takes a SHARE lock on
-- current_token_balances until the transaction ends: drains wait for it (a
-- board raise takes milliseconds; a reset reads the token's balances).
-- Returns false, changing nothing, when the session's lock_timeout passed
-- before the lock was free (SQLSTATE 55P03 caught).
CREATE FUNCTION balance_queue._refresh_leaderboard(p_chain_id integer, p_contract_address text,
                                                   p_on_board bigint, p_target integer)
RETURNS boolean LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cutoff numeric;
BEGIN
    BEGIN
        LOCK TABLE balance_queue.current_token_balances IN SHARE MODE;
    EXCEPTION WHEN lock_not_available THEN
        RETURN false;
    END;
    IF p_on_board > 2 * p_target THEN
        -- too many on the board: raise the cutoff to its p_target-th
        SELECT t.balance INTO cutoff FROM balance_queue.token_leaderboard t
         WHERE t.chain_id = p_chain_id AND t.contract_address = p_contract_address
         ORDER BY t.balance DESC OFFSET p_target - 1 LIMIT 1;
        UPDATE balance_queue.leaderboard_cutoffs SET min_balance = cutoff, updated_at = now()
         WHERE chain_id = p_chain_id AND contract_address = p_contract_address;
        DELETE FROM balance_queue.token_leaderboard
         WHERE chain_id = p_chain_id AND contract_address = p_contract_address
           AND balance < cutoff;
    ELSE
        -- too few, or a large token without a board: from its balances
        PERFORM balance_queue._reset_leaderboard(p_chain_id, p_contract_address, p_target);
    END IF;
    RETURN true;
END
$$;

-- Keeps every board between half and twice `p_target` keys, and gives a
-- board to each token that has grown to 5 × `p_target` holders
-- (_leaderboards_due), all in the calling transaction: the SHARE lock on
-- current_token_balances is held from the first token changed to the end.
-- Under a session lock_timeout, a token whose lock was not free in time is
-- left as it is. The worker instead finds the due tokens every
-- balance_queue.health_interval and changes one per second, each in its own
-- transaction, trying a token again later when the lock is not free within
-- a moment (src/worker/maintenance.rs).
-- Returns the number of tokens whose board changed.
CREATE FUNCTION balance_queue.refresh_leaderboards(p_target integer DEFAULT 1000)
RETURNS integer LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    token record;
    changed integer := 0;
BEGIN
    IF p_target IS NULL OR p_target < 1 THEN
        RAISE EXCEPTION 'p_target % must be at least 1 holder', p_target USING ERRCODE = '22023';
    END IF;
    FOR token IN SELECT * FROM balance_queue._leaderboards_due(p_target) LOOP
        IF balance_queue._refresh_leaderboard(token.chain_id, token.contract_address,
                                              token.on_board, p_target) THEN
            changed := changed + 1;
        END IF;
    END LOOP;
    RETURN changed;
END
$$;
COMMENT ON FUNCTION balance_queue.refresh_leaderboards(integer) IS
    'Keeps the top-holder boards between half and twice p_target keys and gives large tokens a board; returns the tokens changed. 22023 for p_target < 1.';

-- Data for pg_dump: the boards are derived, but restoring them with the
-- balances is cheaper than rebuilding every large token's.
SELECT pg_catalog.pg_extension_config_dump('balance_queue.leaderboard_cutoffs', '');
SELECT pg_catalog.pg_extension_config_dump('balance_queue.token_leaderboard', '');
-- END sql/leaderboard.sql

-- Bulk applies, as operators watch them.
-- BEGIN sql/bulk_loads.sql
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
-- END sql/bulk_loads.sql

-- Schemas exposed to rindexer's GraphQL API.
-- BEGIN sql/graphql.sql
-- ---------------------------------------------------------------------------
-- Schemas exposed to rindexer's GraphQL API (src/graphql.rs): which schema,
-- with which name prefix, asked by which role. The wrappers themselves are
-- in the schema, made by expose_graphql() and dropped with the extension;
-- this record lets the worker make them again when rindexer recreates the
-- schema (drop_each_run), as the schema's owner. The schema and the prefix
-- are spliced into the wrappers' DDL, so the table itself holds them to
-- expose_graphql's rule (src/graphql.rs, is_plain_name): a row written by
-- hand cannot carry SQL into the worker's DDL.
-- ---------------------------------------------------------------------------
CREATE TABLE balance_queue.graphql_exposures (
    schema_name  name        PRIMARY KEY CHECK (schema_name ~ '^[a-z_][a-z0-9_]{0,62}$'),
    name_prefix  text        NOT NULL DEFAULT '' CHECK (name_prefix ~ '^([a-z_][a-z0-9_]{0,39})?$'),
    exposed_by   name        NOT NULL DEFAULT current_user,
    exposed_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE balance_queue.graphql_exposures IS
    'Schemas exposed to rindexer''s GraphQL API by expose_graphql(): prefix of the wrapper names, the role that asked and when.';
SELECT pg_catalog.pg_extension_config_dump('balance_queue.graphql_exposures', '');
-- END sql/graphql.sql

-- JIT costs a drain batch more than it saves (see sql/finalize.sql).
ALTER FUNCTION balance_queue.process_balance_update_queue(integer, integer) SET jit = off;

-- ---------------------------------------------------------------------------
-- Functions whose signature or result changed, and one new one.
-- ---------------------------------------------------------------------------
DROP FUNCTION balance_queue.add_chain(integer, text, text, integer);
DROP FUNCTION balance_queue.get_current_balance(integer, text, text);
DROP FUNCTION balance_queue.get_address_portfolio(text, numeric);
DROP FUNCTION balance_queue.get_queue_config(integer);

CREATE FUNCTION balance_queue."add_chain"(
	"p_chain_id" INT, /* i32 */
	"p_network_name" TEXT, /* & str */
	"p_display_name" TEXT DEFAULT NULL, /* Option < & str > */
	"p_confirmation_depth" INT DEFAULT 64, /* i32 */
	"p_is_testnet" bool DEFAULT NULL, /* Option < bool > */
	"p_native_currency_symbol" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS TEXT /* String */
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'add_chain_wrapper';

CREATE FUNCTION balance_queue."get_current_balance"(
	"p_chain_id" INT, /* i32 */
	"p_contract_address" TEXT, /* & str */
	"p_holder_address" TEXT /* & str */
) RETURNS TABLE (
	"balance" NUMERIC,  /* AnyNumeric */
	"balance_formatted" TEXT,  /* String */
	"balance_usd" NUMERIC,  /* Option < AnyNumeric > */
	"token_symbol" TEXT,  /* Option < String > */
	"last_updated_block" bigint,  /* Option < i64 > */
	"last_updated_time" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"token_decimals" INT,  /* Option < i32 > */
	"confirmed_balance" NUMERIC,  /* AnyNumeric */
	"pending_delta" NUMERIC  /* AnyNumeric */
)
STRICT STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'get_current_balance_wrapper';

CREATE FUNCTION balance_queue."get_address_portfolio"(
	"p_holder_address" TEXT, /* & str */
	"p_min_balance_usd" NUMERIC DEFAULT 1.00 /* AnyNumeric */
) RETURNS TABLE (
	"chain_id" INT,  /* i32 */
	"chain_name" TEXT,  /* Option < String > */
	"contract_address" TEXT,  /* String */
	"token_symbol" TEXT,  /* Option < String > */
	"balance" NUMERIC,  /* AnyNumeric */
	"balance_formatted" TEXT,  /* String */
	"balance_usd" NUMERIC,  /* Option < AnyNumeric > */
	"last_updated_time" timestamp with time zone,  /* TimestampWithTimeZone */
	"last_updated_block" bigint  /* Option < i64 > */
)
STRICT STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'get_address_portfolio_wrapper';

CREATE FUNCTION balance_queue."get_queue_config"(
	"p_chain_id" INT /* Option < i32 > */
) RETURNS TABLE (
	"batch_size" INT,  /* i32 */
	"processing_interval_seconds" INT,  /* i32 */
	"max_retry_attempts" INT,  /* i32 */
	"enabled" bool,  /* bool */
	"chain_id" INT,  /* Option < i32 > */
	"priority_boost_threshold_hours" INT  /* i32 */
)
STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'get_queue_config_wrapper';

CREATE FUNCTION balance_queue."_running_extension_script"() RETURNS bool /* bool */
STRICT STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_running_extension_script_wrapper';


-- ---------------------------------------------------------------------------
-- Chain partitions: 0.1.0's add_chain made a partition for a chain added
-- after CREATE EXTENSION, which pg_restore cannot restore; its rows move to
-- the default partition, where 0.2.0 keeps chains added later.
-- ---------------------------------------------------------------------------
DO $move$
DECLARE
    partition regclass;
BEGIN
    FOR partition IN
        SELECT i.inhrelid::regclass
          FROM pg_catalog.pg_inherits i
         WHERE i.inhparent = 'balance_queue.current_token_balances'::regclass
           AND i.inhrelid <> 'balance_queue.current_token_balances_default'::regclass
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                            WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = i.inhrelid
                              AND d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e')
    LOOP
        EXECUTE format('ALTER TABLE balance_queue.current_token_balances DETACH PARTITION %s', partition);
        EXECUTE format('INSERT INTO balance_queue.current_token_balances SELECT * FROM %s', partition);
        EXECUTE format('DROP TABLE %s', partition);
    END LOOP;
END
$move$;

-- ---------------------------------------------------------------------------
-- Reference data, verbatim from sql/reference_data.sql (a test checks it).
-- ---------------------------------------------------------------------------
-- BEGIN sql/reference_data.sql
-- Preloaded chains and stable tokens.
--
-- Generated by scripts/chains/generate.mjs from @eco-foundation/chains 2.0.4
-- (export EcoRoutesChains: 34 chains, 24 mainnets and 10 testnets; 54 stable
-- tokens). Do not edit by hand: change the generator and run it again.
--
-- Runs inside CREATE EXTENSION and is copied verbatim into upgrade scripts,
-- so it is idempotent and never overwrites a user's edits: chain rows update
-- only is_testnet and native_currency_symbol (new columns an upgrade fills
-- in), token rows already present are left alone.
--
-- Confirmation depth per chain family (testnets follow their mainnet):
-- Ethereum proof of stake: 64 blocks.
--   Rule: two epochs of 32 slots: Casper FFG finalizes a checkpoint once the
--   next one is justified (about 12.8 min).
--   Source: Ethereum consensus specs (Gasper); ethereum.org, proof-of-stake
--   finality.
--   Chains: ethereum (1), sepolia (11155111).
-- Polygon PoS: 256 blocks.
--   Rule: Bor reorgs of 157 blocks are on record.
--   Source: balance_queue README (existing rule).
--   Chains: polygon (137).
-- OP Stack rollups and L3s: 30 blocks.
--   Rule: sequencer blocks stay 'unsafe' until their batch lands on the
--   parent chain; 30 blocks is near rindexer's and Ponder's reorg-safe
--   distances.
--   Source: balance_queue README (existing rule); OP Stack docs,
--   unsafe/safe/finalized heads.
--   Chains: optimism (10), unichain (130), manta-pacific (169), form-network
--   (478), worldchain (480), mantle (5000), superseed (5330), b3 (8333), base
--   (8453), celo (42220), ink (57073), base-sepolia (84532), form-testnet
--   (132902), eco-test (471923), manta-pacific-sepolia-testnet (3441006),
--   towns-sepolia (6524490), helix-test (8921733), op-sepolia (11155420).
-- Arbitrum One and Arbitrum Orbit chains: 24 blocks.
--   Rule: the sequencer feed is soft-final; blocks reorg only if the
--   sequencer's batch differs from its feed.
--   Source: balance_queue README (existing rule); Arbitrum docs, sequencer
--   soft finality.
--   Chains: molten (360), appchain (466), sanko-sepolia (1992), sanko (1996),
--   inevm (2525), curtis (33111), apechain (33139), arbitrum (42161), alienx
--   (10241024), rari (1380012617).
-- BFT chains with deterministic finality: 10 blocks.
--   Rule: a block is final when committed (about 1 s); 10 blocks is margin
--   for lagging RPC nodes.
--   Source: balance_queue README (Sonic, existing rule); Plasma docs
--   (PlasmaBFT, a pipelined Fast HotStuff).
--   Chains: sonic (146), plasma (9745), plasma-testnet (9746).
-- Each chain's stack: l2beat.com project pages, the chains' own docs, and the
-- package's contract lists; the comment on each row names it.

INSERT INTO balance_queue.chain_registry
    (chain_id, network_name, display_name, is_testnet, native_currency_symbol, confirmation_depth)
VALUES
    -- Ethereum mainnet
    (1,          'ethereum',                      'Ethereum',                      false, 'ETH',    64),
    -- OP Mainnet, OP Stack L2
    (10,         'optimism',                      'OP Mainnet',                    false, 'ETH',    30),
    -- OP Stack L2 (Superchain)
    (130,        'unichain',                      'Unichain',                      false, 'ETH',    30),
    -- Polygon PoS
    (137,        'polygon',                       'Polygon',                       false, 'POL',    256),
    -- Sonic, BFT finality ~1 s
    (146,        'sonic',                         'Sonic',                         false, 'S',      10),
    -- OP Stack L2, Celestia DA (l2beat)
    (169,        'manta-pacific',                 'Manta Pacific Mainnet',         false, 'ETH',    30),
    -- Orbit L3 on Arbitrum One (l2beat)
    (360,        'molten',                        'Molten',                        false, 'MOLTEN', 24),
    -- Orbit L2, AnyTrust DAC (l2beat)
    (466,        'appchain',                      'Appchain',                      false, 'ETH',    24),
    -- OP Stack L2, Celestia DA (Form docs)
    (478,        'form-network',                  'Form Network',                  false, 'ETH',    30),
    -- OP Stack L2 (Superchain)
    (480,        'worldchain',                    'World Chain',                   false, 'ETH',    30),
    -- Sanko testnet, Orbit on Arbitrum Sepolia
    (1992,       'sanko-sepolia',                 'Sanko Sepolia',                 true,  'tDMT',   24),
    -- Orbit L3 on Arbitrum One (Caldera)
    (1996,       'sanko',                         'Sanko',                         false, 'DMT',    24),
    -- Orbit rollup by Caldera (Injective inEVM)
    (2525,       'inevm',                         'inEVM Mainnet',                 false, 'INJ',    24),
    -- OP Stack Bedrock L2 (Mantle v2 docs)
    (5000,       'mantle',                        'Mantle',                        false, 'MNT',    30),
    -- OP Stack L2 (Superchain)
    (5330,       'superseed',                     'Superseed',                     false, 'ETH',    30),
    -- OP Stack L3 on Base, Celestia DA (l2beat)
    (8333,       'b3',                            'B3',                            false, 'ETH',    30),
    -- OP Stack L2 (Superchain)
    (8453,       'base',                          'Base',                          false, 'ETH',    30),
    -- PlasmaBFT (Fast HotStuff)
    (9745,       'plasma',                        'Plasma',                        false, 'XPL',    10),
    -- Plasma testnet, PlasmaBFT
    (9746,       'plasma-testnet',                'Plasma Testnet',                true,  'XPL',    10),
    -- ApeChain testnet, Orbit on Arbitrum Sepolia
    (33111,      'curtis',                        'Curtis',                        true,  'APE',    24),
    -- Orbit L3 on Arbitrum One (Caldera)
    (33139,      'apechain',                      'ApeChain',                      false, 'APE',    24),
    -- Arbitrum One (Nitro)
    (42161,      'arbitrum',                      'Arbitrum One',                  false, 'ETH',    24),
    -- OP Stack L2 since 2025-03-26 (Celo L2 launch)
    (42220,      'celo',                          'Celo',                          false, 'CELO',   30),
    -- OP Stack L2 (Superchain)
    (57073,      'ink',                           'Ink',                           false, 'ETH',    30),
    -- Base testnet, OP Stack
    (84532,      'base-sepolia',                  'Base Sepolia',                  true,  'ETH',    30),
    -- Form testnet, OP Stack
    (132902,     'form-testnet',                  'Form Testnet',                  true,  'ETH',    30),
    -- OP Stack L3 on Base Sepolia (package: OptimismPortal)
    (471923,     'eco-test',                      'Eco Test',                      true,  'ETH',    30),
    -- Manta Pacific testnet, OP Stack
    (3441006,    'manta-pacific-sepolia-testnet', 'Manta Pacific Sepolia Testnet', true,  'ETH',    30),
    -- Towns testnet, OP Stack by Caldera (unconfirmed)
    (6524490,    'towns-sepolia',                 'Towns Sepolia',                 true,  'ETH',    30),
    -- OP Stack L3 on Base (package: OptimismPortal)
    (8921733,    'helix-test',                    'Helix Test',                    false, 'ETH',    30),
    -- Orbit L2, AnyTrust DAC (l2beat)
    (10241024,   'alienx',                        'AlienX Mainnet',                false, 'ETH',    24),
    -- Ethereum testnet
    (11155111,   'sepolia',                       'Sepolia',                       true,  'ETH',    64),
    -- OP testnet, OP Stack
    (11155420,   'op-sepolia',                    'OP Sepolia',                    true,  'ETH',    30),
    -- Orbit L3 on Arbitrum One (l2beat)
    (1380012617, 'rari',                          'Rari',                          false, 'ETH',    24)
ON CONFLICT (chain_id) DO UPDATE
   SET is_testnet = EXCLUDED.is_testnet,
       native_currency_symbol = EXCLUDED.native_currency_symbol;

-- Stable tokens: all 54 of the package (price_usd 1; name and CoinGecko id
-- only where the symbol settles them), plus 5 the package lacks: DAI, from
-- the project plan (000-queue-based-balance-plan.md, Phase 3.1) and from the
-- previous preload of sql/schema.sql, kept so no preloaded stable disappears.
-- Decimals where the plan or the previous preload disagree with the package
-- (the package wins):
--   - chain 1 oUSDT 0x1217bfe6c773eec6cc4a38b5dc45b92292b6e189: the plan says
--     18, the package 6; 6 is used.
-- Symbols that differ:
--   - chain 42161 0xfd086bc7cd5c481dcc9c85ebe478a1c0b69fcbb9: the previous
--     preload calls it USDT, the package USDT0; USDT0 is used (an existing
--     row keeps its symbol).
INSERT INTO balance_queue.token_metadata
    (chain_id, contract_address, symbol, name, decimals, is_stable_token, coingecko_id, price_usd)
VALUES
    -- not in the package: the plan, previous preload
    (1,          '0x6b175474e89094c44da98b954eedeac495271d0f', 'DAI',    'Dai Stablecoin', 18, true, 'dai',      1),
    -- plan: 18 decimals; package wins
    (1,          '0x1217bfe6c773eec6cc4a38b5dc45b92292b6e189', 'oUSDT',  NULL,             6,  true, NULL,       1),
    (1,          '0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48', 'USDC',   'USD Coin',       6,  true, 'usd-coin', 1),
    (1,          '0xdac17f958d2ee523a2206206994597c13d831ec7', 'USDT',   'Tether USD',     6,  true, 'tether',   1),
    -- not in the package: previous preload
    (10,         '0xda10009cbd5d07dd0cecc66161fc93d7c9000da1', 'DAI',    'Dai Stablecoin', 18, true, 'dai',      1),
    (10,         '0x1217bfe6c773eec6cc4a38b5dc45b92292b6e189', 'oUSDT',  NULL,             6,  true, NULL,       1),
    (10,         '0x0b2c639c533813f4aa9d7837caf62653d097ff85', 'USDC',   'USD Coin',       6,  true, 'usd-coin', 1),
    (10,         '0x7f5c764cbc14f9669b88837ca1490cca17c31607', 'USDCe',  'Bridged USDC',   6,  true, 'usd-coin', 1),
    (10,         '0x94b008aa00579c1307b0ef2c499ad98a8ce58e58', 'USDT',   'Tether USD',     6,  true, 'tether',   1),
    (130,        '0x078d782b760474a361dda0af3839290b0ef57ad6', 'USDC',   'USD Coin',       6,  true, 'usd-coin', 1),
    (130,        '0x9151434b16b9763660705744891fa906f660ecc5', 'USDT0',  'USDT0',          6,  true, NULL,       1),
    -- not in the package: previous preload
    (137,        '0x8f3cf7ad23cd3cadbd9735aff958023239c6a063', 'DAI',    'Dai Stablecoin', 18, true, 'dai',      1),
    (137,        '0x3c499c542cef5e3811e1192ce70d8cc03d5c3359', 'USDC',   'USD Coin',       6,  true, 'usd-coin', 1),
    (137,        '0x2791bca1f2de4661ed88a30c99a7a9449aa84174', 'USDCe',  'Bridged USDC',   6,  true, 'usd-coin', 1),
    (137,        '0xc2132d05d31c914a87c6611c10748aeb04b58e8f', 'USDT',   'Tether USD',     6,  true, 'tether',   1),
    (146,        '0x29219dd400f2bf60e5a23d13be72b486d4038894', 'USDC',   'USD Coin',       6,  true, 'usd-coin', 1),
    (169,        '0xb73603c5d87fa094b7314c74ace2e64d165016fb', 'USDC',   'USD Coin',       6,  true, 'usd-coin', 1),
    (169,        '0xf417f5a458ec102b90352f697d6e2ac3a3d2851f', 'USDT',   'Tether USD',     6,  true, 'tether',   1),
    (360,        '0xdf0195c990a94006869959a9c77add160164207e', 'USDC',   'USD Coin',       6,  true, 'usd-coin', 1),
    (466,        '0x675c3ce7f43b00045a4dab954af36160fb57cb45', 'USDC',   'USD Coin',       6,  true, 'usd-coin', 1),
    (478,        '0xfbf489bb4783d4b1b2e7d07ba39873fb8068507d', 'USDC',   'USD Coin',       6,  true, 'usd-coin', 1),
    (478,        '0xfa3198ecf05303a6d96e57a45e6c815055d255b1', 'USDT',   'Tether USD',     6,  true, 'tether',   1),
    (480,        '0x79a02482a880bce3f13e09da970dc34db4cd24d1', 'USDC',   'USD Coin',       6,  true, 'usd-coin', 1),
    (1992,       '0xc38944d590a3b6e796de242680259cb1decba077', 'USDC',   'USD Coin',       6,  true, 'usd-coin', 1),
    (1992,       '0xa7ace557347f8b7fc72250e6bc0abc47dc7902e5', 'USDT',   'Tether USD',     6,  true, 'tether',   1),
    (1996,       '0x13d675bc5e659b11cfa331594cf35a20815dcf02', 'USDC',   'USD Coin',       6,  true, 'usd-coin', 1),
    (2525,       '0x8358d8291e3bedb04804975eea0fe9fe0fafb147', 'USDC',   'USD Coin',       6,  true, 'usd-coin', 1),
    (2525,       '0x97423a68bae94b5de52d767a17abcc54c157c0e5', 'USDT',   'Tether USD',     6,  true, 'tether',   1),
    (5000,       '0x09bc4e0d864854c6afb6eb9a9cdf58ac190d0df9', 'USDC',   'USD Coin',       6,  true, 'usd-coin', 1),
    (5000,       '0x201eba5cc46d216ce6dc03f6a759e8e766e956ae', 'USDT',   'Tether USD',     6,  true, 'tether',   1),
    (5330,       '0x1217bfe6c773eec6cc4a38b5dc45b92292b6e189', 'oUSDT',  NULL,             6,  true, NULL,       1),
    (5330,       '0xc316c8252b5f2176d0135ebb0999e99296998f2e', 'USDC',   'USD Coin',       6,  true, 'usd-coin', 1),
    (8333,       '0x2af198a85f9aa11cd6042a0596fbf23978514da3', 'USDC',   'USD Coin',       6,  true, 'usd-coin', 1),
    -- not in the package: previous preload
    (8453,       '0x50c5725949a6f0c72e6c4a641f24049a917db0cb', 'DAI',    'Dai Stablecoin', 18, true, 'dai',      1),
    (8453,       '0x1217bfe6c773eec6cc4a38b5dc45b92292b6e189', 'oUSDT',  NULL,             6,  true, NULL,       1),
    (8453,       '0xd9aaec86b65d86f6a7b5b1b0c42ffa531710b6ca', 'USDbC',  'USD Base Coin',  6,  true, NULL,       1),
    (8453,       '0x833589fcd6edb6e08f4c7c32d4f71b54bda02913', 'USDC',   'USD Coin',       6,  true, 'usd-coin', 1),
    (9745,       '0xb8ce59fc3717ada4c02eadf9682a9e934f625ebb', 'USDT0',  'USDT0',          6,  true, NULL,       1),
    (9746,       '0x26788aff6241236b39d9a6fd0f2280da68046409', 'eUSDC',  NULL,             6,  true, NULL,       1),
    (33111,      '0xe0356b8ad7811dc3e4d61cfd6ac7653e0d31b096', 'USDC',   'USD Coin',       6,  true, 'usd-coin', 1),
    (33139,      '0xa2235d059f80e176d931ef76b6c51953eb3fbef4', 'ApeUSD', NULL,             18, true, NULL,       1),
    (33139,      '0xf1815bd50389c46847f0bda824ec8da914045d14', 'USDCe',  'Bridged USDC',   6,  true, 'usd-coin', 1),
    -- not in the package: previous preload
    (42161,      '0xda10009cbd5d07dd0cecc66161fc93d7c9000da1', 'DAI',    'Dai Stablecoin', 18, true, 'dai',      1),
    (42161,      '0xaf88d065e77c8cc2239327c5edb3a432268e5831', 'USDC',   'USD Coin',       6,  true, 'usd-coin', 1),
    (42161,      '0xff970a61a04b1ca14834a43f5de4533ebddb5cc8', 'USDCe',  'Bridged USDC',   6,  true, 'usd-coin', 1),
    (42161,      '0xfd086bc7cd5c481dcc9c85ebe478a1c0b69fcbb9', 'USDT0',  'USDT0',          6,  true, NULL,       1),
    (42220,      '0xceba9300f2b948710d2653dd7b07f33a8b32118c', 'USDC',   'USD Coin',       6,  true, 'usd-coin', 1),
    (42220,      '0x48065fbbe25f71c9282ddf5e1cd6d6a887483d5e', 'USDT',   'Tether USD',     6,  true, 'tether',   1),
    (57073,      '0xf1815bd50389c46847f0bda824ec8da914045d14', 'USDCe',  'Bridged USDC',   6,  true, 'usd-coin', 1),
    (57073,      '0x0200c29006150606b650577bbe7b6248f58470c1', 'USDT0',  'USDT0',          6,  true, NULL,       1),
    (3441006,    '0x0652aec2dee0fee9d05e614c95ce8a01a7336cd8', 'USDC',   'USD Coin',       6,  true, 'usd-coin', 1),
    (3441006,    '0xc040bb09fff7ebb7fdf38831b7c582afddb2ccfe', 'USDT',   'Tether USD',     6,  true, 'tether',   1),
    (6524490,    '0x9030b1b203d7f7ae07aa32a2efbf5dee7112fe30', 'USDC',   'USD Coin',       6,  true, 'usd-coin', 1),
    (6524490,    '0x8b4e19adb6f4e92d92dd19e8990d7d076404f3a8', 'USDT',   'Tether USD',     6,  true, 'tether',   1),
    (10241024,   '0x14b90e36ca85d8b563430c0940e80d3a040285cc', 'USDC',   'USD Coin',       6,  true, 'usd-coin', 1),
    (10241024,   '0x486bee264e0f6eb9a1d5947f5fcb097c5378c8e3', 'USDT',   'Tether USD',     6,  true, 'tether',   1),
    (1380012617, '0x46b991acbd9290967a3a9e02f14895c2f9fe809a', 'USDC',   'USD Coin',       6,  true, 'usd-coin', 1),
    (1380012617, '0xfbda5f676cb37624f28265a144a48b0d6e87d3b6', 'USDCe',  'Bridged USDC',   6,  true, 'usd-coin', 1),
    (1380012617, '0x362fae9a75b27bbc550aac28a7c1f96c8d483120', 'USDT',   'Tether USD',     6,  true, 'tether',   1)
ON CONFLICT (chain_id, contract_address) DO NOTHING;
-- END sql/reference_data.sql

SELECT balance_queue.add_chain(chain_id, network_name, display_name, confirmation_depth)
  FROM balance_queue.chain_registry ORDER BY chain_id;

-- ---------------------------------------------------------------------------
-- pg_dump and pg_restore. CREATE EXTENSION preloads reference rows (chains,
-- stable tokens, the plan's processing configuration), and pg_dump keeps
-- these tables' rows as user data, since users change them (head blocks,
-- depths, prices, added chains). A restore runs CREATE EXTENSION first, so
-- the preloaded rows are back before the dumped ones arrive: an INSERT
-- whose key is present already updates that row instead (every column but
-- identity and generated ones), so the dumped, possibly edited row wins and
-- `pg_restore --exit-on-error` succeeds. Inside an extension script it
-- stands aside: there the reference data's ON CONFLICT rules keep users'
-- edits. TG_ARGV[0] is the key condition between the present row `t` and
-- the new one `$1`.
-- ---------------------------------------------------------------------------
CREATE FUNCTION balance_queue._upsert_reference_row()
RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    columns text;
    updated bigint;
BEGIN
    IF balance_queue._running_extension_script() THEN
        RETURN NEW;
    END IF;
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO columns
      FROM pg_catalog.pg_attribute
     WHERE attrelid = TG_RELID AND attnum > 0 AND NOT attisdropped
       AND attidentity = '' AND attgenerated = '';
    EXECUTE format('UPDATE %I.%I AS t SET (%s) = (SELECT %s FROM (SELECT ($1).*) AS n) WHERE %s',
                   TG_TABLE_SCHEMA, TG_TABLE_NAME, columns, columns, TG_ARGV[0])
      USING NEW;
    GET DIAGNOSTICS updated = ROW_COUNT;
    IF updated > 0 THEN
        RETURN NULL; -- updated in place: skip the insert
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER chain_registry_upsert BEFORE INSERT ON balance_queue.chain_registry
    FOR EACH ROW EXECUTE FUNCTION balance_queue._upsert_reference_row('t.chain_id = ($1).chain_id');
CREATE TRIGGER token_metadata_upsert BEFORE INSERT ON balance_queue.token_metadata
    FOR EACH ROW EXECUTE FUNCTION balance_queue._upsert_reference_row(
        't.chain_id = ($1).chain_id AND t.contract_address = ($1).contract_address');
CREATE TRIGGER queue_processing_config_upsert BEFORE INSERT ON balance_queue.queue_processing_config
    FOR EACH ROW EXECUTE FUNCTION balance_queue._upsert_reference_row(
        'coalesce(t.chain_id, 0) = coalesce(($1).chain_id, 0)');

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

CREATE OR REPLACE VIEW balance_queue.confirmed_token_balances AS
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

-- ---------------------------------------------------------------------------
-- Workers split by holder (see sql/schema.sql).
-- ---------------------------------------------------------------------------
CREATE FUNCTION balance_queue.holder_partition(p_holder_address text, p_partitions integer)
RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (pg_catalog.hashtext(p_holder_address) & 2147483647) % p_partitions;
COMMENT ON FUNCTION balance_queue.holder_partition(text, integer) IS
    'The partition (0 .. p_partitions - 1) of holder p_holder_address among p_partitions: which worker applies its sides.';
ALTER TABLE balance_queue.balance_update_queue
    ADD COLUMN holder_partition smallint,
    ADD COLUMN holder_partitions smallint,
    ADD CONSTRAINT balance_update_queue_holder_partition_check
        CHECK ((holder_partition IS NULL) = (holder_partitions IS NULL)
               AND holder_partition >= 0 AND holder_partition < holder_partitions);
ALTER TABLE balance_queue.balance_update_queue_archive
    ADD COLUMN holder_partition smallint,
    ADD COLUMN holder_partitions smallint;

-- ---------------------------------------------------------------------------
-- The change feed (see sql/change_feed.sql) and the GraphQL exposure
-- functions (src/change_feed.rs, src/graphql.rs).
-- ---------------------------------------------------------------------------
-- BEGIN sql/change_feed.sql
-- ---------------------------------------------------------------------------
-- The change feed (src/change_feed.rs, src/apply/announce.rs): which
-- balances each transaction changed, for caches in front of the balances.
--
-- Statement triggers on current_token_balances record, per statement, the
-- keys it wrote as three parallel arrays in one row, stamped with the
-- writing transaction's id: every writer is recorded (drain batches, bulk
-- loads, recalculation, handle_reorg, an operator's UPDATE), at the cost of
-- one row per statement rather than one per key. A reader holding a cursor
-- (a snapshot, as PgQ reads its batches) gets the keys of exactly the
-- transactions that committed after it, whatever order concurrent drains
-- commit in. The worker deletes rows older than
-- balance_queue.change_retention; cursors older than what it deleted are
-- expired and their consumer reloads everything. While the feed is off a
-- statement records only that it wrote unrecorded keys, so a cursor from
-- before such a gap is refused rather than answered short.
-- ---------------------------------------------------------------------------
CREATE TABLE balance_queue.balance_changes (
    txid                xid8        NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
    recorded_at         timestamptz NOT NULL DEFAULT now(),
    chain_ids           integer[]   NOT NULL,
    contract_addresses  text[]      NOT NULL,
    holder_addresses    text[]      NOT NULL,
    -- The statement wrote balances while balance_queue.change_feed was off:
    -- its keys are not in the arrays.
    unrecorded          boolean     NOT NULL DEFAULT false,
    -- Which part of its statement's keys the row holds, from 0: a statement
    -- writing more than 1,000,000 keys (a bulk load or a rebuild of a large
    -- chain) records them in rows of at most that many, as one row's
    -- arrays of about 19,000,000 keys passed Postgres's 1 GB limit ("tuple
    -- is too big") and failed the statement. So each statement has exactly
    -- one row with part 0.
    part                integer     NOT NULL DEFAULT 0
);
CREATE INDEX balance_changes_txid_idx ON balance_queue.balance_changes (txid);
-- Out of line but not compressed: a batch's row holds every key it wrote,
-- and compressing it with pglz took about 2% of a batch's CPU (perf).
ALTER TABLE balance_queue.balance_changes
    ALTER COLUMN chain_ids SET STORAGE EXTERNAL,
    ALTER COLUMN contract_addresses SET STORAGE EXTERNAL,
    ALTER COLUMN holder_addresses SET STORAGE EXTERNAL;
COMMENT ON TABLE balance_queue.balance_changes IS
    'Change feed: the balance keys (chain_ids[i], contract_addresses[i], holder_addresses[i]) each statement of transaction txid wrote, in parts (part) of at most 1,000,000 keys; read with balance_changes_since(), kept for balance_queue.change_retention.';

-- One row: the feed's identity (cursors of another feed, from before a
-- DROP EXTENSION or from another cluster restored from a dump, are
-- expired: transaction ids do not carry over); pruned_below: every
-- transaction whose changes were deleted is below it, and it is at most the
-- xmin of any snapshot taken after the deletion (the worker deletes only
-- changes of transactions older than every running one), so a cursor is
-- whole iff its xmin is at least pruned_below; truncated_by: the latest
-- TRUNCATE of the balances, which names no keys, so a cursor that did not
-- see it is expired.
CREATE TABLE balance_queue.change_feed_state (
    feed_id         uuid NOT NULL DEFAULT gen_random_uuid(),
    pruned_below    xid8 NOT NULL DEFAULT '0'::xid8,
    truncated_by    xid8 NOT NULL DEFAULT '0'::xid8,
    single_row      boolean PRIMARY KEY DEFAULT true CHECK (single_row)
);
INSERT INTO balance_queue.change_feed_state DEFAULT VALUES;
COMMENT ON TABLE balance_queue.change_feed_state IS
    'Change feed identity (feed_id, part of every cursor), pruned_below (every transaction whose recorded changes were deleted is below it) and truncated_by (the latest TRUNCATE of the balances).';

CREATE FUNCTION balance_queue._record_balance_changes()
RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- balance_queue.change_feed is a reload-only setting; a session that
    -- never loaded the library does not know it and records (the default).
    -- Off: one marker row, no keys.
    IF coalesce(current_setting('balance_queue.change_feed', true), 'on') = 'off' THEN
        INSERT INTO balance_queue.balance_changes (chain_ids, contract_addresses, holder_addresses, unrecorded)
        VALUES ('{}', '{}', '{}', true);
        RETURN NULL;
    END IF;
    -- The keys of the rows the statement deleted, or wrote: in rows of at
    -- most 1,000,000 keys (see part), none when it wrote no key. EXECUTE,
    -- so that one statement serves both transition tables.
    EXECUTE format(
        'INSERT INTO balance_queue.balance_changes (part, chain_ids, contract_addresses, holder_addresses)
         SELECT part, array_agg(chain_id), array_agg(contract_address), array_agg(holder_address)
           FROM (SELECT r.chain_id, r.contract_address, r.holder_address,
                        (row_number() OVER () - 1) / 1000000 AS part
                   FROM %I r) k
          GROUP BY part',
        CASE WHEN TG_OP = 'DELETE' THEN 'old_rows' ELSE 'new_rows' END);
    RETURN NULL;
END
$$;
CREATE TRIGGER current_token_balances_change_feed_insert
    AFTER INSERT ON balance_queue.current_token_balances
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balance_queue._record_balance_changes();
CREATE TRIGGER current_token_balances_change_feed_update
    AFTER UPDATE ON balance_queue.current_token_balances
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balance_queue._record_balance_changes();
CREATE TRIGGER current_token_balances_change_feed_delete
    AFTER DELETE ON balance_queue.current_token_balances
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balance_queue._record_balance_changes();

-- TRUNCATE names no keys: every cursor from before it is expired.
CREATE FUNCTION balance_queue._expire_change_cursors()
RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE balance_queue.change_feed_state
       SET truncated_by = greatest(truncated_by, pg_current_xact_id());
    RETURN NULL;
END
$$;
CREATE TRIGGER current_token_balances_change_feed_truncate
    AFTER TRUNCATE ON balance_queue.current_token_balances
    FOR EACH STATEMENT EXECUTE FUNCTION balance_queue._expire_change_cursors();
-- END sql/change_feed.sql

CREATE FUNCTION balance_queue."balance_changes_cursor"() RETURNS TEXT /* String */
STRICT STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'balance_changes_cursor_wrapper';

CREATE FUNCTION balance_queue."balance_changes_since"(
	"p_cursor" TEXT /* & str */
) RETURNS TABLE (
	"chain_id" INT,  /* i32 */
	"contract_address" TEXT,  /* String */
	"holder_address" TEXT,  /* String */
	"current_balance" NUMERIC,  /* AnyNumeric */
	"next_cursor" TEXT  /* String */
)
STRICT STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'balance_changes_since_wrapper';

CREATE FUNCTION balance_queue."expose_graphql"(
	"p_schema" TEXT, /* & str */
	"p_prefix" TEXT DEFAULT '' /* & str */
) RETURNS TEXT[] /* Vec < String > */
STRICT
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'expose_graphql_wrapper';

CREATE FUNCTION balance_queue."unexpose_graphql"(
	"p_schema" TEXT /* & str */
) RETURNS INT /* i32 */
STRICT
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'unexpose_graphql_wrapper';

-- ---------------------------------------------------------------------------
-- Token statistics (see sql/token_stats.sql, src/token_stats.rs). Writers of
-- the balances wait while the triggers are made and the counts of the
-- balances already there are taken, so none is missed or counted twice.
-- ---------------------------------------------------------------------------
LOCK TABLE balance_queue.current_token_balances IN SHARE ROW EXCLUSIVE MODE;
-- BEGIN sql/token_stats.sql
-- ---------------------------------------------------------------------------
-- Token statistics (src/token_stats.rs): per token, holders (non-zero
-- balances), negative balances and supply (the sum of balances: the zero
-- address is never a holder, so transfers cancel and only mints and burns
-- move it).
--
-- Kept from each balance's zero crossings by statement triggers on
-- current_token_balances, so every writer counts (drain batches, bulk loads,
-- recalculation, handle_reorg, an operator's UPDATE). A trigger never
-- updates a shared row: it appends one delta row per token it touched to
-- token_stats_deltas, so concurrent drains never wait on each other here.
-- The worker folds the deltas into token_stats every second
-- (fold_token_stats); readers add what is not folded yet.
-- ---------------------------------------------------------------------------
CREATE TABLE balance_queue.token_stats (
    chain_id                integer NOT NULL,
    contract_address        text COLLATE "C" NOT NULL,
    holder_count            bigint  NOT NULL DEFAULT 0,
    negative_balance_count  bigint  NOT NULL DEFAULT 0,
    -- Sum of the token's balances, in wei (a sum of uint256 values can
    -- exceed uint256, so no typmod).
    supply_wei              numeric NOT NULL DEFAULT 0,
    -- The token's deployment block, when the sources hold its history from
    -- there (set_token_genesis): only then is supply_wei the total supply.
    genesis_block           bigint,
    folded_at               timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain_id, contract_address)
);
COMMENT ON TABLE balance_queue.token_stats IS
    'Per token: holders (non-zero balances), negative balances and supply (sum of balances, wei) folded from token_stats_deltas, and the genesis block set_token_genesis recorded. Read with get_token_stats().';

CREATE TABLE balance_queue.token_stats_deltas (
    chain_id                integer NOT NULL,
    contract_address        text COLLATE "C" NOT NULL,
    holder_count            bigint  NOT NULL,
    negative_balance_count  bigint  NOT NULL,
    supply_wei              numeric NOT NULL
);
COMMENT ON TABLE balance_queue.token_stats_deltas IS
    'Insert-only changes of token_stats, one row per token per statement that wrote its balances; folded into token_stats by the worker.';

CREATE FUNCTION balance_queue._record_token_stats()
RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- One row per token: +1 holder for a balance that became non-zero, -1
    -- for one that became zero; the same for negative balances; the
    -- balances' change for the supply. An UPDATE adds the new rows and
    -- subtracts the old ones (keys do not change).
    IF TG_OP = 'INSERT' THEN
        EXECUTE 'INSERT INTO balance_queue.token_stats_deltas
                 SELECT chain_id, contract_address, count(*) FILTER (WHERE current_balance <> 0),
                        count(*) FILTER (WHERE current_balance < 0), sum(current_balance)
                   FROM new_rows GROUP BY 1, 2';
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE 'INSERT INTO balance_queue.token_stats_deltas
                 SELECT chain_id, contract_address, -count(*) FILTER (WHERE current_balance <> 0),
                        -count(*) FILTER (WHERE current_balance < 0), -sum(current_balance)
                   FROM old_rows GROUP BY 1, 2';
    ELSE
        EXECUTE 'INSERT INTO balance_queue.token_stats_deltas
                 SELECT chain_id, contract_address, sum(h), sum(n), sum(s)
                   FROM (SELECT chain_id, contract_address, (current_balance <> 0)::int AS h,
                                (current_balance < 0)::int AS n, current_balance AS s FROM new_rows
                         UNION ALL
                         SELECT chain_id, contract_address, -(current_balance <> 0)::int,
                                -(current_balance < 0)::int, -current_balance FROM old_rows) d
                  GROUP BY 1, 2
                 HAVING sum(h) <> 0 OR sum(n) <> 0 OR sum(s) <> 0';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER current_token_balances_token_stats_insert
    AFTER INSERT ON balance_queue.current_token_balances
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balance_queue._record_token_stats();
CREATE TRIGGER current_token_balances_token_stats_update
    AFTER UPDATE ON balance_queue.current_token_balances
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balance_queue._record_token_stats();
CREATE TRIGGER current_token_balances_token_stats_delete
    AFTER DELETE ON balance_queue.current_token_balances
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balance_queue._record_token_stats();

-- TRUNCATE of the balances empties every token: counts go to zero, the
-- recorded genesis blocks stay.
CREATE FUNCTION balance_queue._reset_token_stats()
RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM balance_queue.token_stats_deltas;
    UPDATE balance_queue.token_stats
       SET holder_count = 0, negative_balance_count = 0, supply_wei = 0, folded_at = now();
    RETURN NULL;
END
$$;
CREATE TRIGGER current_token_balances_token_stats_truncate
    AFTER TRUNCATE ON balance_queue.current_token_balances
    FOR EACH STATEMENT EXECUTE FUNCTION balance_queue._reset_token_stats();

-- pg_dump keeps the statistics with the balances: a restore COPYs the
-- balances into their partitions, where the parent's statement triggers do
-- not fire, so the dumped counts are restored as they were.
SELECT pg_catalog.pg_extension_config_dump('balance_queue.token_stats', '');
SELECT pg_catalog.pg_extension_config_dump('balance_queue.token_stats_deltas', '');
-- END sql/token_stats.sql
INSERT INTO balance_queue.token_stats (chain_id, contract_address, holder_count, negative_balance_count, supply_wei)
SELECT chain_id, contract_address, count(*) FILTER (WHERE current_balance <> 0),
       count(*) FILTER (WHERE current_balance < 0), sum(current_balance)
  FROM balance_queue.current_token_balances
 GROUP BY 1, 2;

CREATE FUNCTION balance_queue."get_token_stats"(
	"p_chain_id" INT, /* i32 */
	"p_contract_address" TEXT /* & str */
) RETURNS TABLE (
	"holder_count" bigint,  /* i64 */
	"negative_balance_count" bigint,  /* i64 */
	"supply_wei" NUMERIC,  /* AnyNumeric */
	"supply_formatted" TEXT,  /* String */
	"supply_complete" bool,  /* bool */
	"genesis_block" bigint,  /* Option < i64 > */
	"token_symbol" TEXT,  /* Option < String > */
	"token_decimals" INT  /* Option < i32 > */
)
STRICT STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'get_token_stats_wrapper';

CREATE FUNCTION balance_queue."set_token_genesis"(
	"p_chain_id" INT, /* i32 */
	"p_contract_address" TEXT, /* & str */
	"p_genesis_block" bigint /* Option < i64 > */
) RETURNS bigint /* Option < i64 > */
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'set_token_genesis_wrapper';

CREATE FUNCTION balance_queue."fold_token_stats"() RETURNS bigint /* i64 */
STRICT
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'fold_token_stats_wrapper';

-- ---------------------------------------------------------------------------
-- Prices and collateral (sql/prices.sql, sql/collateral.sql): USD values are
-- computed when read, so the balances lose their stored balance_usd and a
-- price change no longer rewrites a token's balances.
-- ---------------------------------------------------------------------------
ALTER TABLE balance_queue.token_metadata
    ADD COLUMN price_source text CHECK (price_source IN ('manual', 'feed')),
    ADD COLUMN price_observed_at timestamptz,
    ADD COLUMN price_max_age interval,
    ADD COLUMN price_pinned boolean NOT NULL DEFAULT false;
DROP INDEX balance_queue.current_token_balances_usd_idx;
ALTER TABLE balance_queue.current_token_balances DROP COLUMN balance_usd;
CREATE OR REPLACE FUNCTION balance_queue._refresh_balances_from_metadata()
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
DROP TRIGGER token_metadata_refresh_balances ON balance_queue.token_metadata;
CREATE TRIGGER token_metadata_refresh_balances
    AFTER INSERT OR UPDATE OF symbol, decimals ON balance_queue.token_metadata
    FOR EACH ROW EXECUTE FUNCTION balance_queue._refresh_balances_from_metadata();
-- Address arguments of the SQL-language functions below (src/address.rs).
CREATE FUNCTION balance_queue."_address_arg"(
	"p_address" TEXT, /* & str */
	"p_argument" TEXT /* & str */
) RETURNS TEXT /* String */
IMMUTABLE STRICT PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_address_arg_wrapper';
-- BEGIN sql/prices.sql
-- ---------------------------------------------------------------------------
-- Prices (docs/prices.md). A token's USD price lives in one row of
-- token_metadata; USD values are computed when read (balance / 10^decimals
-- * price), so a price change writes that one row, whatever the number of
-- holders. A price comes from, in order of precedence:
--   a pinned manual price (set_token_price(..., pin => true)),
--   the latest surviving round of a Chainlink aggregator table rindexer
--     indexes (attach_price_feed), or an unpinned manual price, whichever
--     was set last,
--   1 for the preloaded stable tokens.
-- ---------------------------------------------------------------------------
CREATE TABLE balance_queue.price_feeds (
    chain_id          integer NOT NULL,
    contract_address  text COLLATE "C" NOT NULL CHECK (contract_address ~ '^0x[0-9a-f]{40}$'),
    -- regclass, so pg_dump writes it by name and a restore finds the table
    -- again (an oid would point at nothing, or at another table).
    source_table      regclass NOT NULL,
    feed_address      text COLLATE "C" NOT NULL CHECK (feed_address ~ '^0x[0-9a-f]{40}$'),
    -- Chainlink USD feeds answer with 8 decimals.
    feed_decimals     integer NOT NULL CHECK (feed_decimals BETWEEN 0 AND 77),
    -- A feed price older than this is stale (Chainlink's heartbeat is 1 h to
    -- 24 h by feed; the default 25 hours allows the longest heartbeat).
    max_age           interval NOT NULL,
    attached_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain_id, contract_address)
);
CREATE INDEX price_feeds_source_idx ON balance_queue.price_feeds (source_table);
COMMENT ON TABLE balance_queue.price_feeds IS
    'Chainlink aggregator tables (rindexer AnswerUpdated) followed for a token''s USD price: feed address, decimals, maximum age.';
SELECT pg_catalog.pg_extension_config_dump('balance_queue.price_feeds', '');

-- The price of one token from its feed: the newest surviving positive
-- answer by (block_number, log_index), or, with none left (a reorg deleted
-- them), no feed price. Malformed values are skipped, never cast: a bad row
-- must not fail the indexer's insert (updatedAt is taken up to 12 digits,
-- which to_timestamp accepts). It runs as the extension's owner from the
-- feed table's trigger, so it reads only columns of built-in types (as the
-- transfer path does, src/sources/mapping.rs): a cast or operator of a
-- user's type would run with the owner's rights. A feed whose table is gone
-- (dropped, or recreated by rindexer's drop_each_run) gives no price.
-- Forgets a token's feed price (not a manual or pinned one): the stable
-- default, or no price.
CREATE FUNCTION balance_queue._forget_feed_price(p_chain_id integer, p_contract_address text)
RETURNS void LANGUAGE sql
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    UPDATE balance_queue.token_metadata
       SET price_usd = CASE WHEN is_stable_token THEN 1 END, price_source = NULL,
           price_observed_at = NULL, price_max_age = NULL, updated_at = now()
     WHERE chain_id = p_chain_id AND contract_address = p_contract_address
       AND price_source = 'feed' AND NOT price_pinned;
END;

-- Why a feed table cannot be read, or NULL: it is gone, or lacks a column
-- the feed reads, or one of them is not of a built-in type.
CREATE FUNCTION balance_queue._price_feed_table_problem(p_source oid)
RETURNS text LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT CASE
        WHEN NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = p_source) THEN 'the table is gone'
        ELSE (SELECT string_agg(format('column %s %s', c,
                                       CASE WHEN a.attname IS NULL THEN 'is missing'
                                            ELSE 'is not of a built-in type' END), ', ')
                FROM unnest(ARRAY['contract_address', 'current', 'updated_at', 'block_number', 'log_index']) AS c
                LEFT JOIN pg_attribute a
                  ON a.attrelid = p_source AND a.attname = c AND a.attnum > 0 AND NOT a.attisdropped
               WHERE a.attname IS NULL OR a.atttypid >= 16384)
    END;
END;

CREATE FUNCTION balance_queue._refresh_feed_price(p_chain_id integer, p_contract_address text)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f balance_queue.price_feeds;
    answer numeric;
    updated numeric;
    feed_price numeric;
    observed timestamptz;
BEGIN
    SELECT * INTO f FROM balance_queue.price_feeds
     WHERE chain_id = p_chain_id AND contract_address = p_contract_address;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF balance_queue._price_feed_table_problem(f.source_table) IS NOT NULL THEN
        PERFORM balance_queue._forget_feed_price(p_chain_id, p_contract_address);
        RETURN;
    END IF;
    EXECUTE format(
        'SELECT CASE WHEN s."current" ~ ''^[0-9]{1,78}$'' THEN s."current"::numeric END,
                CASE WHEN s.updated_at ~ ''^[0-9]{1,12}$'' THEN s.updated_at::numeric END
           FROM %s s
          WHERE lower(s.contract_address) = $1
            AND CASE WHEN s."current" ~ ''^[0-9]{1,78}$'' THEN s."current"::numeric > 0 ELSE false END
          ORDER BY s.block_number DESC,
                   CASE WHEN s.log_index ~ ''^[0-9]{1,20}$'' THEN s.log_index::numeric END DESC NULLS LAST
          LIMIT 1', f.source_table::regclass)
      INTO answer, updated
     USING f.feed_address;
    IF answer IS NULL THEN
        PERFORM balance_queue._forget_feed_price(p_chain_id, p_contract_address);
        RETURN;
    END IF;
    feed_price := pg_catalog.trim_scale(answer * (1::numeric / (10::numeric ^ f.feed_decimals)));
    observed := to_timestamp(updated::double precision);
    -- UPDATE, then INSERT when the token has no row: an INSERT on a present
    -- key would be turned into a whole-row update by the restore trigger
    -- (sql/finalize.sql) and clear the token's symbol and decimals.
    UPDATE balance_queue.token_metadata m
       SET price_usd = feed_price, price_source = 'feed',
           price_observed_at = observed, price_max_age = f.max_age,
           updated_at = now()
     WHERE m.chain_id = p_chain_id AND m.contract_address = p_contract_address AND NOT m.price_pinned
       -- whichever was set last: a manual price stays until a newer round
       AND (m.price_source IS DISTINCT FROM 'manual' OR observed > m.price_observed_at)
       AND (m.price_usd, m.price_source, m.price_observed_at, m.price_max_age)
           IS DISTINCT FROM (feed_price, 'feed', observed, f.max_age);
    IF NOT EXISTS (SELECT 1 FROM balance_queue.token_metadata m
                    WHERE m.chain_id = p_chain_id AND m.contract_address = p_contract_address) THEN
        INSERT INTO balance_queue.token_metadata
            (chain_id, contract_address, price_usd, price_source, price_observed_at, price_max_age)
        VALUES (p_chain_id, p_contract_address, feed_price, 'feed', observed, f.max_age);
    END IF;
END
$$;

-- Statement trigger of an attached feed table: every write (rindexer's
-- INSERT/COPY, its reorg DELETE, a TRUNCATE) refreshes the prices the
-- table feeds. Runs as the extension's owner, like the transfer triggers,
-- so an indexer role needs no rights on token_metadata.
CREATE FUNCTION balance_queue._follow_price_feed()
RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f record;
BEGIN
    FOR f IN SELECT chain_id, contract_address FROM balance_queue.price_feeds
              WHERE source_table = TG_RELID ORDER BY 1, 2 LOOP
        PERFORM balance_queue._refresh_feed_price(f.chain_id, f.contract_address);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE FUNCTION balance_queue.attach_price_feed(
    p_source regclass,
    p_feed_address text,
    p_chain_id integer,
    p_contract_address text,
    p_feed_decimals integer DEFAULT 8,
    p_max_age interval DEFAULT '25 hours')
RETURNS numeric LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    feed text := balance_queue._address_arg(p_feed_address, 'p_feed_address');
    token text := balance_queue._address_arg(p_contract_address, 'p_contract_address');
    missing text;
    price numeric;
BEGIN
    IF p_source IS NULL OR p_chain_id IS NULL OR p_feed_decimals IS NULL OR p_max_age IS NULL
       OR p_feed_decimals NOT BETWEEN 0 AND 77 OR p_max_age <= interval '0' THEN
        RAISE EXCEPTION 'p_source and p_chain_id must be given, p_feed_decimals (%) 0..77 and p_max_age (%) positive',
              p_feed_decimals, p_max_age USING ERRCODE = 'invalid_parameter_value';
    END IF;
    missing := balance_queue._price_feed_table_problem(p_source);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION '% cannot be a price feed: %', p_source, missing
              USING ERRCODE = 'undefined_column',
                    HINT = 'Attach the table rindexer writes for a Chainlink aggregator''s AnswerUpdated(int256 current, uint256 roundId, uint256 updatedAt) event.';
    END IF;
    IF EXISTS (SELECT 1 FROM balance_queue.price_feeds WHERE chain_id = p_chain_id AND contract_address = token) THEN
        RAISE EXCEPTION 'token % on chain % already has a price feed', token, p_chain_id
              USING ERRCODE = 'duplicate_object', HINT = 'detach_price_feed() it first.';
    END IF;
    INSERT INTO balance_queue.price_feeds
        (chain_id, contract_address, source_table, feed_address, feed_decimals, max_age)
    VALUES (p_chain_id, token, p_source, feed, p_feed_decimals, p_max_age);
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = p_source AND tgname = 'balance_queue_price_feed') THEN
        EXECUTE format('CREATE TRIGGER balance_queue_price_feed
                          AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s
                          FOR EACH STATEMENT EXECUTE FUNCTION balance_queue._follow_price_feed()', p_source);
    END IF;
    PERFORM balance_queue._refresh_feed_price(p_chain_id, token);
    SELECT m.price_usd INTO price FROM balance_queue.token_metadata m
     WHERE m.chain_id = p_chain_id AND m.contract_address = token;
    RETURN price;
END
$$;
COMMENT ON FUNCTION balance_queue.attach_price_feed(regclass, text, integer, text, integer, interval) IS
    'Follows the rindexer table of a Chainlink aggregator''s AnswerUpdated events (columns current, updated_at as VARCHAR(78), block_number, log_index) for the USD price of token p_contract_address on chain p_chain_id: the newest surviving positive answer by (block, log index), divided by 10^p_feed_decimals; older than p_max_age is stale. Returns the price now (NULL before any answer). 22P02 malformed address, 22023 bad decimals or age, 42703 a column missing or not of a built-in type, 42710 the token has a feed.';

CREATE FUNCTION balance_queue.detach_price_feed(p_chain_id integer, p_contract_address text)
RETURNS boolean LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    token text := balance_queue._address_arg(p_contract_address, 'p_contract_address');
    source regclass;
BEGIN
    DELETE FROM balance_queue.price_feeds WHERE chain_id = p_chain_id AND contract_address = token
    RETURNING source_table INTO source;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM balance_queue._forget_feed_price(p_chain_id, token);
    IF NOT EXISTS (SELECT 1 FROM balance_queue.price_feeds WHERE source_table = source)
       AND EXISTS (SELECT 1 FROM pg_class WHERE oid = source) THEN
        EXECUTE format('DROP TRIGGER IF EXISTS balance_queue_price_feed ON %s', source::regclass);
    END IF;
    RETURN true;
END
$$;
COMMENT ON FUNCTION balance_queue.detach_price_feed(integer, text) IS
    'Stops following the token''s price feed and forgets the feed''s price (stable tokens go back to 1); the table''s trigger goes with its last feed. Returns whether a feed was attached.';

CREATE FUNCTION balance_queue.set_token_price(
    p_chain_id integer, p_contract_address text, p_price_usd numeric, p_pin boolean DEFAULT false)
RETURNS numeric LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    token text := balance_queue._address_arg(p_contract_address, 'p_contract_address');
BEGIN
    IF p_chain_id IS NULL OR p_price_usd < 0 OR p_price_usd IN ('NaN', 'Infinity') THEN
        RAISE EXCEPTION 'p_chain_id must be given and p_price_usd (%) a finite number >= 0', p_price_usd
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_price_usd IS NULL THEN
        -- Forget the manual price: the feed (if any) or the stable default again.
        UPDATE balance_queue.token_metadata
           SET price_usd = CASE WHEN is_stable_token THEN 1 END, price_source = NULL, price_pinned = false,
               price_observed_at = NULL, price_max_age = NULL, updated_at = now()
         WHERE chain_id = p_chain_id AND contract_address = token AND price_source = 'manual';
        PERFORM balance_queue._refresh_feed_price(p_chain_id, token);
    ELSE
        -- UPDATE first, then INSERT (see _refresh_feed_price).
        UPDATE balance_queue.token_metadata
           SET price_usd = p_price_usd, price_source = 'manual', price_observed_at = now(),
               price_pinned = p_pin, price_max_age = NULL, updated_at = now()
         WHERE chain_id = p_chain_id AND contract_address = token;
        IF NOT FOUND THEN
            INSERT INTO balance_queue.token_metadata
                (chain_id, contract_address, price_usd, price_source, price_observed_at, price_pinned)
            VALUES (p_chain_id, token, p_price_usd, 'manual', now(), p_pin);
        END IF;
    END IF;
    RETURN (SELECT price_usd FROM balance_queue.token_metadata WHERE chain_id = p_chain_id AND contract_address = token);
END
$$;
COMMENT ON FUNCTION balance_queue.set_token_price(integer, text, numeric, boolean) IS
    'Sets token p_contract_address''s USD price on chain p_chain_id by hand (USD per whole token); p_pin: a feed does not replace it. NULL forgets the manual price (the feed, or 1 for a stable token, again). Returns the price now. 22P02 malformed address, 22023 negative price.';

CREATE FUNCTION balance_queue.get_token_price(p_chain_id integer, p_contract_address text)
RETURNS TABLE (price_usd numeric, source text, observed_at timestamptz, stale boolean, pinned boolean,
               feed_address text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT m.price_usd,
           CASE WHEN m.price_usd IS NULL THEN NULL
                WHEN m.price_pinned THEN 'pinned'
                ELSE coalesce(m.price_source, CASE WHEN m.is_stable_token THEN 'stable' ELSE 'manual' END) END,
           m.price_observed_at,
           balance_queue.price_is_stale(m.price_observed_at, m.price_max_age, m.price_pinned),
           coalesce(m.price_pinned, false),
           f.feed_address::text
      FROM (SELECT balance_queue._address_arg(p_contract_address, 'p_contract_address') AS token) a
      LEFT JOIN balance_queue.token_metadata m ON m.chain_id = p_chain_id AND m.contract_address = a.token
      LEFT JOIN balance_queue.price_feeds f ON f.chain_id = p_chain_id AND f.contract_address = a.token
$$;
COMMENT ON FUNCTION balance_queue.get_token_price(integer, text) IS
    'The USD price of a token (USD per whole token, NULL when unknown), its source (pinned, manual, feed, stable), when it was observed (the feed round''s updatedAt), whether it is stale (a feed price older than the feed''s max_age) and the feed address. 22P02 malformed address.';

-- The one rule of staleness: a feed price older than its feed's max_age.
-- Manual and stable prices carry no max_age and are never stale.
CREATE FUNCTION balance_queue.price_is_stale(p_observed_at timestamptz, p_max_age interval, p_pinned boolean)
RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE
RETURN coalesce(NOT p_pinned AND p_observed_at < now() - p_max_age, false);
COMMENT ON FUNCTION balance_queue.price_is_stale(timestamptz, interval, boolean) IS
    'Whether a price observed at p_observed_at is stale: older than p_max_age (a feed''s), unless pinned. NULL age: never.';

-- The one definition of a USD value: p_balance wei of a token with
-- p_decimals decimals at p_price_usd USD per whole token, exact (a product
-- of exact decimals: 1 / 10^decimals is exact, dividing the balance by
-- 10^decimals is not). NULL when the price or the decimals are unknown.
-- Inlinable SQL, immutable.
CREATE FUNCTION balance_queue.token_value_usd(p_balance numeric, p_decimals integer, p_price_usd numeric)
RETURNS numeric LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.trim_scale(p_balance * p_price_usd * (1::numeric / (10::numeric ^ p_decimals)));
COMMENT ON FUNCTION balance_queue.token_value_usd(numeric, integer, numeric) IS
    'USD value of p_balance wei of a token with p_decimals decimals at p_price_usd USD per whole token, exact; NULL when the price or decimals are unknown.';
-- END sql/prices.sql
-- BEGIN sql/collateral.sql
-- ---------------------------------------------------------------------------
-- Collateral value (the plan's dual-state document): per holder,
-- SUM(balance x price x collateral factor), with factors in basis points as
-- Aave v3 stores them (ltv, liquidation threshold; 10000 = 100%). A
-- profile names one protocol's factors, so one database can hold several.
-- Exact decimal arithmetic (balance_queue.token_value_usd, then x bps /
-- 10000, both exact); docs/prices.md.
-- ---------------------------------------------------------------------------
CREATE TABLE balance_queue.collateral_factors (
    profile                    text    NOT NULL DEFAULT 'default',
    chain_id                   integer NOT NULL,
    contract_address           text COLLATE "C" NOT NULL CHECK (contract_address ~ '^0x[0-9a-f]{40}$'),
    ltv_bps                    integer NOT NULL CHECK (ltv_bps BETWEEN 0 AND 10000),
    liquidation_threshold_bps  integer NOT NULL CHECK (liquidation_threshold_bps BETWEEN 0 AND 10000),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (profile, chain_id, contract_address),
    CHECK (ltv_bps <= liquidation_threshold_bps)
);
COMMENT ON TABLE balance_queue.collateral_factors IS
    'Collateral factors per profile and token, in basis points as Aave v3 stores them: ltv_bps (borrowing power) <= liquidation_threshold_bps.';
SELECT pg_catalog.pg_extension_config_dump('balance_queue.collateral_factors', '');

CREATE FUNCTION balance_queue.set_collateral_factor(
    p_profile text, p_chain_id integer, p_contract_address text,
    p_ltv_bps integer, p_liquidation_threshold_bps integer)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    token text := balance_queue._address_arg(p_contract_address, 'p_contract_address');
BEGIN
    IF p_ltv_bps IS NULL AND p_liquidation_threshold_bps IS NULL THEN
        DELETE FROM balance_queue.collateral_factors
         WHERE profile = p_profile AND chain_id = p_chain_id AND contract_address = token;
        RETURN;
    END IF;
    IF p_ltv_bps IS NULL OR p_liquidation_threshold_bps IS NULL OR p_profile IS NULL OR p_chain_id IS NULL
       OR p_ltv_bps NOT BETWEEN 0 AND 10000 OR p_liquidation_threshold_bps NOT BETWEEN 0 AND 10000
       OR p_ltv_bps > p_liquidation_threshold_bps THEN
        RAISE EXCEPTION 'ltv % and liquidation threshold % (basis points) must satisfy 0 <= ltv <= threshold <= 10000',
              p_ltv_bps, p_liquidation_threshold_bps USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO balance_queue.collateral_factors AS f
        (profile, chain_id, contract_address, ltv_bps, liquidation_threshold_bps)
    VALUES (p_profile, p_chain_id, token, p_ltv_bps, p_liquidation_threshold_bps)
    ON CONFLICT (profile, chain_id, contract_address) DO UPDATE
       SET ltv_bps = EXCLUDED.ltv_bps, liquidation_threshold_bps = EXCLUDED.liquidation_threshold_bps,
           updated_at = now();
END
$$;
COMMENT ON FUNCTION balance_queue.set_collateral_factor(text, integer, text, integer, integer) IS
    'Sets (or, with both factors NULL, removes) the collateral factors of a token in a profile, in basis points (Aave v3: ltv <= liquidation threshold <= 10000). 22P02 malformed address, 22023 factors out of range.';

CREATE FUNCTION balance_queue.get_collateral_value(
    p_holder_address text, p_profile text DEFAULT 'default', p_include_pending boolean DEFAULT false)
RETURNS TABLE (chain_id integer, contract_address text, token_symbol text, balance numeric,
               price_usd numeric, value_usd numeric, ltv_bps integer, liquidation_threshold_bps integer,
               collateral_value_usd numeric, liquidation_value_usd numeric, price_stale boolean)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    holder text := balance_queue._address_arg(p_holder_address, 'p_holder_address');
BEGIN
    RETURN QUERY
    WITH held AS (
        -- The confirmed balance (the view confirmed_token_balances: current
        -- minus the pending delta of blocks a reorg may still move), or the
        -- current one when asked; below zero counts zero.
        SELECT f.chain_id, f.contract_address, f.ltv_bps, f.liquidation_threshold_bps,
               greatest(CASE WHEN p_include_pending THEN b.current_balance ELSE b.confirmed_balance END,
                        0) AS balance
          FROM balance_queue.collateral_factors f
          JOIN balance_queue.confirmed_token_balances b
            ON b.chain_id = f.chain_id AND b.contract_address = f.contract_address AND b.holder_address = holder
         WHERE f.profile = p_profile
    ), valued AS (
        SELECT h.*, m.symbol, m.price_usd AS price,
               balance_queue.token_value_usd(h.balance, m.decimals, m.price_usd) AS value,
               balance_queue.price_is_stale(m.price_observed_at, m.price_max_age, m.price_pinned) AS stale
          FROM held h
          LEFT JOIN balance_queue.token_metadata m
            ON m.chain_id = h.chain_id AND m.contract_address = h.contract_address
    )
    SELECT v.chain_id, v.contract_address::text, v.symbol, v.balance, v.price, v.value,
           v.ltv_bps, v.liquidation_threshold_bps,
           -- a stale or unknown price gives no collateral
           CASE WHEN v.stale OR v.value IS NULL THEN 0
                ELSE pg_catalog.trim_scale(v.value * v.ltv_bps * 0.0001) END,
           CASE WHEN v.stale OR v.value IS NULL THEN 0
                ELSE pg_catalog.trim_scale(v.value * v.liquidation_threshold_bps * 0.0001) END,
           v.stale
      FROM valued v
     WHERE v.balance > 0
     ORDER BY v.chain_id, v.contract_address;
END
$$;
COMMENT ON FUNCTION balance_queue.get_collateral_value(text, text, boolean) IS
    'Per token of profile p_profile the holder holds: balance (wei; confirmed unless p_include_pending; negative counts 0), price (USD per whole token), value_usd, the factors (bps), collateral_value_usd = value x ltv, liquidation_value_usd = value x liquidation threshold (0 when the price is stale or unknown), and price_stale. Exact. 22P02 malformed address.';

CREATE FUNCTION balance_queue.get_collateral_summary(
    p_holder_address text, p_profile text DEFAULT 'default', p_include_pending boolean DEFAULT false)
RETURNS TABLE (tokens integer, value_usd numeric, collateral_value_usd numeric,
               liquidation_value_usd numeric, stale_prices integer, unpriced integer)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT count(*)::integer, coalesce(sum(v.value_usd), 0), coalesce(sum(v.collateral_value_usd), 0),
           coalesce(sum(v.liquidation_value_usd), 0),
           (count(*) FILTER (WHERE v.price_stale))::integer, (count(*) FILTER (WHERE v.value_usd IS NULL))::integer
      FROM balance_queue.get_collateral_value(p_holder_address, p_profile, p_include_pending) v
$$;
COMMENT ON FUNCTION balance_queue.get_collateral_summary(text, text, boolean) IS
    'Totals of get_collateral_value for a holder: tokens, value_usd, collateral_value_usd (borrowing power), liquidation_value_usd, and how many tokens had a stale or no price (they count zero collateral).';
-- END sql/collateral.sql

-- Balance at any block (see sql/history.sql).
-- BEGIN sql/history.sql
-- ---------------------------------------------------------------------------
-- Balance at any block (docs/prices.md, "Balance at a block"). The ledger
-- already records every counted transfer side with its block; this index
-- lets one key's sides be read in block order, from either end. It indexes
-- an 8-byte hash of (token, holder) rather than the two addresses: 50 MB
-- instead of 178 MB per 1,000,000 sides, and inserting 1,000,000 ledger
-- rows costs 3.5 s more instead of 8.6 s (measured beside the primary key
-- alone, 3.5 s). The query rechecks the addresses.
-- ---------------------------------------------------------------------------
CREATE INDEX applied_transfers_history_idx
    ON balance_queue.applied_transfers
       (chain_id, pg_catalog.hashtextextended(contract_address || holder_address, 0), block_number)
    WHERE copies > 0;

CREATE FUNCTION balance_queue.get_balance_at_block(
    p_chain_id integer, p_contract_address text, p_holder_address text, p_block bigint)
RETURNS TABLE (balance numeric, is_final boolean, confirmed_through bigint, sides_read bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    token text := balance_queue._address_arg(p_contract_address, 'p_contract_address');
    holder text := balance_queue._address_arg(p_holder_address, 'p_holder_address');
    current numeric;
    latest bigint;
    first_block bigint;
    head bigint;
    depth integer;
    key_hash bigint := pg_catalog.hashtextextended(token || holder, 0);
BEGIN
    IF p_block < 0 THEN
        RAISE EXCEPTION 'p_block % must be >= 0', p_block USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT r.head_block, r.confirmation_depth INTO head, depth
      FROM balance_queue.chain_registry r WHERE r.chain_id = p_chain_id;
    confirmed_through := balance_queue.confirmed_through(head, depth);
    is_final := NOT balance_queue.is_unconfirmed(p_block, confirmed_through);
    SELECT b.current_balance, b.last_updated_block INTO current, latest
      FROM balance_queue.current_token_balances b
     WHERE b.chain_id = p_chain_id AND b.contract_address = token AND b.holder_address = holder;
    SELECT min(t.block_number) INTO first_block
      FROM balance_queue.applied_transfers t
     WHERE t.chain_id = p_chain_id AND pg_catalog.hashtextextended(t.contract_address || t.holder_address, 0) = key_hash
       AND t.contract_address = token AND t.holder_address = holder AND t.copies > 0;
    IF first_block IS NULL OR p_block < first_block THEN
        balance := 0;
        sides_read := 0;
    ELSIF current IS NOT NULL AND p_block >= first_block + (coalesce(latest, p_block) - first_block) / 2 THEN
        -- Nearer the present: the current balance minus what came after.
        SELECT current - coalesce(sum(t.delta_wei), 0), count(*) INTO balance, sides_read
          FROM balance_queue.applied_transfers t
         WHERE t.chain_id = p_chain_id AND pg_catalog.hashtextextended(t.contract_address || t.holder_address, 0) = key_hash
           AND t.contract_address = token AND t.holder_address = holder
           AND t.copies > 0 AND t.block_number > p_block;
    ELSE
        -- Nearer the start: the sum up to the block.
        SELECT coalesce(sum(t.delta_wei), 0), count(*) INTO balance, sides_read
          FROM balance_queue.applied_transfers t
         WHERE t.chain_id = p_chain_id AND pg_catalog.hashtextextended(t.contract_address || t.holder_address, 0) = key_hash
           AND t.contract_address = token AND t.holder_address = holder
           AND t.copies > 0 AND t.block_number <= p_block;
    END IF;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION balance_queue.get_balance_at_block(integer, text, text, bigint) IS
    'The balance (wei) of holder for token on chain after block p_block, from the counted transfer sides of the exactly-once ledger (through applied_transfers_history_idx on a hash of the key, from whichever end is nearer: the current balance minus later sides, or the sum up to the block); is_final: p_block is at or below confirmed_through (head block minus confirmation depth); sides_read: ledger rows summed. 22P02 malformed address, 22023 negative block.';
-- END sql/history.sql

-- Orphaned rows, found and reported (see sql/orphans.sql).
-- BEGIN sql/orphans.sql
-- ---------------------------------------------------------------------------
-- Orphaned rows (docs/orphans.md). rindexer does not always leave the
-- canonical chain in its tables: its reorg rollback does not wait for
-- batches already handed to its writer, a reorg deeper than its window
-- (reorg_handling.window_size, 40 blocks by default) is only partly rolled
-- back, and a project without reorg_handling deletes nothing. Every rindexer
-- row carries its block_hash, and rindexer records the canonical hash of
-- its recent blocks in rindexer_internal.reorg_block_hashes (network,
-- block_number, block_hash, parent_hash).
--
-- canonical_block_hashes keeps the canonical hash of recent blocks per
-- chain: followed from rindexer's table by statement triggers (installed by
-- follow_rindexer_block_hashes(), which the worker calls), or set by an
-- operator (set_canonical_block_hash). A row of a judged table whose block
-- has a canonical hash other than its own is orphaned: it does not count
-- (the rule is ORPHANED in src/sources/mapping.rs, applied wherever rows are
-- read) and is listed in orphaned_transfer_rows. When a block's canonical
-- hash changes, the block is queued in block_hash_rechecks and the worker
-- counts its chain again from there (recheck_block_hashes()).
-- ---------------------------------------------------------------------------

-- Per attached table: the column of each row's block hash (set at attach
-- when the table has rindexer's block_hash), and whether rows are judged
-- against canonical_block_hashes ('recorded') or only reported ('none').
ALTER TABLE balance_queue.attached_sources
    ADD COLUMN block_hash_column text,
    ADD COLUMN canonical_hash_source text NOT NULL DEFAULT 'recorded'
        CONSTRAINT attached_sources_canonical_hash_source_check
        CHECK (canonical_hash_source IN ('recorded', 'none'));
-- Tables attached before 0.2.0 that carry rindexer's block_hash.
UPDATE balance_queue.attached_sources s SET block_hash_column = 'block_hash'
 WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                WHERE a.attrelid = s.source_table AND a.attname = 'block_hash' AND a.attnum > 0
                  AND NOT a.attisdropped AND a.atttypid < 16384);

CREATE TABLE balance_queue.canonical_block_hashes (
    chain_id      integer NOT NULL,
    block_number  bigint  NOT NULL,
    -- lowercase 0x + 64 hex
    block_hash    text    NOT NULL,
    parent_hash   text,
    recorded_by   text    NOT NULL CHECK (recorded_by IN ('rindexer', 'operator')),
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain_id, block_number)
);
COMMENT ON TABLE balance_queue.canonical_block_hashes IS
    'Canonical hash of recent blocks per chain, followed from rindexer_internal.reorg_block_hashes or set with set_canonical_block_hash(): rows of judged tables with another hash in such a block do not count. rindexer''s are pruned below the confirmation window, except blocks with orphaned rows; an operator''s stay.';

CREATE TABLE balance_queue.orphaned_transfer_rows (
    source_table    regclass NOT NULL,
    row_id          bigint   NOT NULL,
    chain_id        integer  NOT NULL,
    block_number    bigint   NOT NULL,
    block_hash      text     NOT NULL,
    canonical_hash  text     NOT NULL,
    tx_hash         text     NOT NULL,
    log_index       bigint   NOT NULL,
    noticed_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_table, row_id)
);
CREATE INDEX orphaned_transfer_rows_block_idx
    ON balance_queue.orphaned_transfer_rows (chain_id, block_number);
COMMENT ON TABLE balance_queue.orphaned_transfer_rows IS
    'Rows of attached tables left uncounted because their block hash is not the canonical one (canonical_block_hashes): recorded when the drain reads them, forgotten when the row is deleted or its block rechecked.';

-- Hashes of rows counted while their block had no canonical hash, for blocks
-- inside the confirmation window: a canonical hash recorded later for the
-- block rechecks it if it differs, and two hashes in one block are a
-- conflict (queue_alerts). Appended by each drain statement (one row per
-- block and hash it read), with no unique key: concurrent drains never wait
-- on each other here. Pruned below the window.
CREATE TABLE balance_queue.unjudged_block_hashes (
    chain_id      integer NOT NULL,
    block_number  bigint  NOT NULL,
    block_hash    text COLLATE "C" NOT NULL
);
CREATE INDEX unjudged_block_hashes_block_idx
    ON balance_queue.unjudged_block_hashes (chain_id, block_number);
COMMENT ON TABLE balance_queue.unjudged_block_hashes IS
    'Block hashes of rows counted while their block (inside the confirmation window) had no canonical hash. Two hashes for one block: a conflict.';

CREATE TABLE balance_queue.block_hash_rechecks (
    chain_id      integer NOT NULL,
    block_number  bigint  NOT NULL,
    queued_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain_id, block_number)
);
COMMENT ON TABLE balance_queue.block_hash_rechecks IS
    'Blocks whose canonical hash changed, waiting for recheck_block_hashes() (the worker runs it every second).';

SELECT pg_catalog.pg_extension_config_dump('balance_queue.canonical_block_hashes', '');
SELECT pg_catalog.pg_extension_config_dump('balance_queue.orphaned_transfer_rows', '');
SELECT pg_catalog.pg_extension_config_dump('balance_queue.unjudged_block_hashes', '');
SELECT pg_catalog.pg_extension_config_dump('balance_queue.block_hash_rechecks', '');

-- Records canonical hashes (arrays of one length: chain, block, hash,
-- parent) and queues a recheck of each block whose hash changed, or whose
-- rows were counted with another hash before it had one. rindexer's hashes
-- do not replace an operator's. Returns the number of blocks queued.
CREATE FUNCTION balance_queue._record_canonical_hashes(
    p_recorded_by text, p_chain_ids integer[], p_blocks bigint[], p_hashes text[], p_parents text[])
RETURNS integer LANGUAGE sql
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    WITH incoming AS (
        SELECT DISTINCT ON (i.chain_id, i.block_number) i.chain_id, i.block_number,
               lower(btrim(i.block_hash)) AS block_hash, lower(btrim(i.parent_hash)) AS parent_hash
          FROM unnest(p_chain_ids, p_blocks, p_hashes, p_parents) AS i(chain_id, block_number, block_hash, parent_hash)
         WHERE i.chain_id IS NOT NULL AND i.block_number IS NOT NULL AND i.block_hash IS NOT NULL
         ORDER BY i.chain_id, i.block_number
    ), previous AS (
        SELECT c.chain_id, c.block_number, c.block_hash
          FROM balance_queue.canonical_block_hashes c
          JOIN incoming i ON i.chain_id = c.chain_id AND i.block_number = c.block_number
    ), upserted AS (
        INSERT INTO balance_queue.canonical_block_hashes AS c
            (chain_id, block_number, block_hash, parent_hash, recorded_by)
        SELECT i.chain_id, i.block_number, i.block_hash, i.parent_hash, p_recorded_by FROM incoming i
        ON CONFLICT (chain_id, block_number) DO UPDATE
           SET block_hash = EXCLUDED.block_hash, parent_hash = EXCLUDED.parent_hash,
               recorded_by = EXCLUDED.recorded_by, recorded_at = now()
         WHERE (c.block_hash, c.parent_hash) IS DISTINCT FROM (EXCLUDED.block_hash, EXCLUDED.parent_hash)
           -- an operator's hash stands until the operator changes or forgets it
           AND (c.recorded_by = 'rindexer' OR EXCLUDED.recorded_by = 'operator')
        RETURNING c.chain_id, c.block_number, c.block_hash
    ), judged AS (
        DELETE FROM balance_queue.unjudged_block_hashes j
         USING upserted u
         WHERE j.chain_id = u.chain_id AND j.block_number = u.block_number
        RETURNING j.chain_id, j.block_number, j.block_hash
    ), queued AS (
        INSERT INTO balance_queue.block_hash_rechecks (chain_id, block_number)
        SELECT u.chain_id, u.block_number
          FROM upserted u
          LEFT JOIN previous p ON p.chain_id = u.chain_id AND p.block_number = u.block_number
         WHERE p.block_hash IS DISTINCT FROM u.block_hash
           AND (p.block_hash IS NOT NULL
                OR EXISTS (SELECT 1 FROM judged j
                            WHERE j.chain_id = u.chain_id AND j.block_number = u.block_number
                              AND j.block_hash <> u.block_hash))
        ON CONFLICT DO NOTHING
        RETURNING 1
    )
    SELECT count(*)::integer FROM queued;
END;

-- Whether table p_table has rindexer's hash columns (network, block_number,
-- block_hash, parent_hash), each of a built-in type (oid below
-- FirstNormalObjectId): only those are read as text with the owner's rights.
CREATE FUNCTION balance_queue._rindexer_hash_columns_builtin(p_table oid)
RETURNS boolean LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
RETURN (SELECT count(*) FROM pg_catalog.pg_attribute
         WHERE attrelid = p_table AND attnum > 0 AND NOT attisdropped AND atttypid < 16384
           AND attname IN ('network', 'block_number', 'block_hash', 'parent_hash')) = 4;

-- Statement trigger (INSERT and UPDATE) on rindexer_internal.reorg_block_hashes:
-- copies what rindexer records into canonical_block_hashes. Runs as the
-- extension's owner in rindexer's transaction, and never fails it: a
-- problem is logged as a WARNING and the worker copies the table again.
-- rindexer's DELETEs (its rollback, before it inserts the corrected
-- hashes; pruning) are not followed: a hash stays canonical until another
-- replaces it.
CREATE FUNCTION balance_queue._follow_rindexer_block_hashes()
RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Only on rindexer's table, and only while its columns are of built-in
    -- types: this reads them as text with the extension owner's rights.
    IF TG_RELID IS DISTINCT FROM to_regclass('rindexer_internal.reorg_block_hashes')
       OR NOT balance_queue._rindexer_hash_columns_builtin(TG_RELID) THEN
        RAISE WARNING 'balance_queue does not follow %: not rindexer''s reorg_block_hashes with built-in column types',
              TG_RELID::regclass;
        RETURN NULL;
    END IF;
    PERFORM balance_queue._record_canonical_hashes(
                'rindexer', array_agg(c.chain_id), array_agg(n.block_number::bigint),
                array_agg(n.block_hash::text), array_agg(n.parent_hash::text))
       FROM balance_queue_new_block_hashes n
       JOIN balance_queue.chain_registry c ON c.network_name = n.network::text;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'balance_queue could not follow rindexer_internal.reorg_block_hashes: %', SQLERRM
          USING HINT = 'The worker copies the table again within balance_queue.health_interval (follow_rindexer_block_hashes()).';
    RETURN NULL;
END
$$;

-- Installs the triggers that follow rindexer_internal.reorg_block_hashes
-- when the table exists and is not followed yet (rindexer creates it when
-- reorg_handling is on; drop_each_run recreates it), and queues a recheck
-- of each chain from the oldest block it holds; copies what it holds on
-- every call. Returns the number of hashes copied when it installed the
-- triggers (0 otherwise). The worker calls it every balance_queue.health_interval.
CREATE FUNCTION balance_queue.follow_rindexer_block_hashes()
RETURNS integer LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    hashes regclass := to_regclass('rindexer_internal.reorg_block_hashes');
    followed boolean;
    copied integer;
BEGIN
    IF hashes IS NULL THEN
        RETURN 0;
    END IF;
    IF NOT balance_queue._rindexer_hash_columns_builtin(hashes) THEN
        RAISE EXCEPTION '% does not have rindexer''s columns (network, block_number, block_hash, parent_hash) of built-in types', hashes
              USING ERRCODE = 'undefined_column';
    END IF;
    followed := EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = hashes AND tgname = 'balance_queue_follow_inserts');
    IF NOT followed THEN
        EXECUTE format('CREATE TRIGGER balance_queue_follow_inserts AFTER INSERT ON %s
                          REFERENCING NEW TABLE AS balance_queue_new_block_hashes
                          FOR EACH STATEMENT EXECUTE FUNCTION balance_queue._follow_rindexer_block_hashes()', hashes);
        EXECUTE format('CREATE TRIGGER balance_queue_follow_updates AFTER UPDATE ON %s
                          REFERENCING NEW TABLE AS balance_queue_new_block_hashes
                          FOR EACH STATEMENT EXECUTE FUNCTION balance_queue._follow_rindexer_block_hashes()', hashes);
        -- DROP EXTENSION drops them too, rather than refusing to.
        EXECUTE format('ALTER TRIGGER balance_queue_follow_inserts ON %s DEPENDS ON EXTENSION balance_queue', hashes);
        EXECUTE format('ALTER TRIGGER balance_queue_follow_updates ON %s DEPENDS ON EXTENSION balance_queue', hashes);
    END IF;
    -- Copy what the table holds: all of it the first time, and then on
    -- every call its hashes of blocks not yet final (or still kept), so a
    -- hash the trigger failed to copy (it only warns) is not lost;
    -- unchanged hashes are not written.
    -- Not again the hashes of final blocks the prune dropped.
    EXECUTE 'SELECT count(*)::integer,
                    balance_queue._record_canonical_hashes(''rindexer'', array_agg(c.chain_id),
                        array_agg(h.block_number::bigint), array_agg(h.block_hash::text), array_agg(h.parent_hash::text))
               FROM rindexer_internal.reorg_block_hashes h
               JOIN balance_queue.chain_registry c ON c.network_name = h.network::text
              WHERE NOT $1
                 OR balance_queue.is_unconfirmed(h.block_number,
                                                 balance_queue.confirmed_through(c.head_block, c.confirmation_depth))
                 OR EXISTS (SELECT 1 FROM balance_queue.canonical_block_hashes k
                             WHERE k.chain_id = c.chain_id AND k.block_number = h.block_number)'
       INTO copied USING followed;
    IF followed THEN
        RETURN 0;
    END IF;
    -- Rows counted before the table was followed (an attach before rindexer
    -- made it, an upgrade from 0.1.0, drop_each_run) were not judged: count
    -- each chain again from the oldest block rindexer holds a hash for.
    INSERT INTO balance_queue.block_hash_rechecks (chain_id, block_number)
    SELECT c.chain_id, min(h.block_number)
      FROM rindexer_internal.reorg_block_hashes h
      JOIN balance_queue.chain_registry c ON c.network_name = h.network::text
     GROUP BY 1
    ON CONFLICT DO NOTHING;
    RETURN copied;
END
$$;
COMMENT ON FUNCTION balance_queue.follow_rindexer_block_hashes() IS
    'Follows rindexer_internal.reorg_block_hashes (when it exists): installs, if missing, INSERT and UPDATE statement triggers that copy its hashes into canonical_block_hashes and queues a recheck of each chain from the oldest block it holds (rows counted before were not judged); copies what it holds on every call (a hash the trigger failed to copy is not lost). Returns the hashes copied when it installed the triggers (0 otherwise). The worker calls it every balance_queue.health_interval. 42703 when the table lacks rindexer''s columns of built-in types; needs the rights to create triggers on it.';

CREATE FUNCTION balance_queue.set_canonical_block_hash(
    p_chain_id integer, p_block_number bigint, p_block_hash text)
RETURNS integer LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM balance_queue.chain_registry WHERE chain_id = p_chain_id)
       OR p_block_number IS NULL OR p_block_number < 0
       OR (p_block_hash IS NOT NULL AND p_block_hash !~ '^0[xX][0-9a-fA-F]{64}$') THEN
        RAISE EXCEPTION 'chain % must be registered, block % >= 0 and hash % 0x + 64 hex digits (or NULL)',
              p_chain_id, p_block_number, p_block_hash USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_block_hash IS NULL THEN
        WITH gone AS (
            DELETE FROM balance_queue.canonical_block_hashes
             WHERE chain_id = p_chain_id AND block_number = p_block_number RETURNING 1
        )
        INSERT INTO balance_queue.block_hash_rechecks (chain_id, block_number)
        SELECT p_chain_id, p_block_number FROM gone
        ON CONFLICT DO NOTHING;
        RETURN (SELECT count(*)::integer FROM balance_queue.block_hash_rechecks
                 WHERE chain_id = p_chain_id AND block_number = p_block_number);
    END IF;
    RETURN balance_queue._record_canonical_hashes(
               'operator', ARRAY[p_chain_id], ARRAY[p_block_number], ARRAY[p_block_hash], ARRAY[NULL::text]);
END
$$;
COMMENT ON FUNCTION balance_queue.set_canonical_block_hash(integer, bigint, text) IS
    'Sets the canonical hash (0x + 64 hex) of block p_block_number of chain p_chain_id, for chains whose indexer records none (or to correct one): rows of judged tables with another hash in that block stop counting once the worker rechecks the block (within a second). NULL forgets the block''s canonical hash. Returns the blocks queued for a recheck (0 or 1). 22023 for an unknown chain, a negative block or a malformed hash.';

CREATE FUNCTION balance_queue.set_canonical_hash_source(p_source regclass, p_hash_source text)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s balance_queue.attached_sources;
BEGIN
    IF p_hash_source IS NULL OR p_hash_source NOT IN ('recorded', 'none') THEN
        RAISE EXCEPTION 'p_hash_source must be ''recorded'' or ''none'', not %', p_hash_source
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE balance_queue.attached_sources SET canonical_hash_source = p_hash_source
     WHERE source_table = p_source
    RETURNING * INTO s;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% is not attached to balance_queue', p_source USING ERRCODE = 'undefined_object';
    END IF;
    IF p_hash_source = 'none' THEN
        DELETE FROM balance_queue.orphaned_transfer_rows WHERE source_table = p_source;
    END IF;
    -- Count the table's recent rows again under the new rule.
    INSERT INTO balance_queue.block_hash_rechecks (chain_id, block_number)
    SELECT c.chain_id, min(c.block_number) FROM balance_queue.canonical_block_hashes c
     WHERE s.chain_id IS NULL OR c.chain_id = s.chain_id
     GROUP BY 1
    ON CONFLICT DO NOTHING;
END
$$;
COMMENT ON FUNCTION balance_queue.set_canonical_hash_source(regclass, text) IS
    'Whether the rows of attached table p_source are judged against canonical_block_hashes (''recorded'', the default for tables with a block_hash column) or never (''none'': rows off the canonical chain count, and conflicts are only reported). Queues a recheck of the recorded blocks. 22023 for another value, 42704 for a table not attached.';

-- Drops rindexer's canonical hashes and the unjudged hashes of blocks below
-- each chain's confirmation window (final: a reorg no longer reaches them),
-- keeping the canonical hash of blocks whose orphaned rows are still
-- recorded, so those rows stay uncounted however they are read. An
-- operator's hashes stay until the operator forgets them. Then queues a
-- recheck of blocks whose unjudged hashes a canonical hash now contradicts.
-- The worker runs it every second.
CREATE FUNCTION balance_queue._prune_block_hashes()
RETURNS void LANGUAGE sql
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    DELETE FROM balance_queue.canonical_block_hashes c
     USING balance_queue.chain_registry r
     WHERE c.chain_id = r.chain_id AND c.recorded_by = 'rindexer'
       AND NOT balance_queue.is_unconfirmed(c.block_number,
                                            balance_queue.confirmed_through(r.head_block, r.confirmation_depth))
       AND NOT EXISTS (SELECT 1 FROM balance_queue.orphaned_transfer_rows o
                        WHERE o.chain_id = c.chain_id AND o.block_number = c.block_number);
    DELETE FROM balance_queue.unjudged_block_hashes j
     USING balance_queue.chain_registry r
     WHERE j.chain_id = r.chain_id
       AND NOT balance_queue.is_unconfirmed(j.block_number,
                                            balance_queue.confirmed_through(r.head_block, r.confirmation_depth));
    -- Hashes counted by a drain that committed after its block's canonical
    -- hash was recorded (the recording did not see them): recheck.
    WITH judged AS (
        DELETE FROM balance_queue.unjudged_block_hashes j
         USING balance_queue.canonical_block_hashes c
         WHERE c.chain_id = j.chain_id AND c.block_number = j.block_number
        RETURNING j.chain_id, j.block_number, j.block_hash, c.block_hash AS canonical_hash
    )
    INSERT INTO balance_queue.block_hash_rechecks (chain_id, block_number)
    SELECT DISTINCT chain_id, block_number FROM judged WHERE block_hash <> canonical_hash
    ON CONFLICT DO NOTHING;
END;

-- The report: every row of an attached table with a block hash column left
-- off the canonical chain. 'orphaned': its block has another canonical hash
-- (not counted, if the table is judged); 'conflict': no canonical hash is
-- known and the block's rows carry several hashes (all counted).
CREATE FUNCTION balance_queue.find_orphaned_rows(p_chain_id integer DEFAULT NULL)
RETURNS TABLE (source_table regclass, row_id bigint, chain_id integer, block_number numeric,
               block_hash text, canonical_hash text, tx_hash text, log_index text, counted boolean,
               reason text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s balance_queue.attached_sources;
    chain_sql text;
BEGIN
    FOR s IN SELECT * FROM balance_queue.attached_sources a
              WHERE a.block_hash_column IS NOT NULL ORDER BY a.source_table::text LOOP
        IF s.chain_id IS NOT NULL THEN
            chain_sql := s.chain_id::text;
        ELSE
            chain_sql := format('(SELECT r.chain_id FROM balance_queue.chain_registry r WHERE r.network_name = t.%I::text)',
                                s.network_column);
        END IF;
        RETURN QUERY EXECUTE format(
            'WITH rows AS (
                 SELECT %s AS row_id, %s AS chain_id, t.%I::numeric AS block_number,
                        lower(t.%I::text) AS block_hash, t.%I::text AS tx_hash, t.%I::text AS log_index
                   FROM %s t
             ), hashes AS (
                 SELECT rows.chain_id, rows.block_number, count(DISTINCT rows.block_hash) AS hashes
                   FROM rows GROUP BY 1, 2
             ), judged AS (
                 SELECT rows.*, c.block_hash AS canonical_hash, hashes.hashes
                   FROM rows
                   JOIN hashes ON hashes.chain_id IS NOT DISTINCT FROM rows.chain_id
                              AND hashes.block_number = rows.block_number
                   LEFT JOIN balance_queue.canonical_block_hashes c
                          ON c.chain_id = rows.chain_id AND c.block_number = rows.block_number
                  WHERE $1 IS NULL OR rows.chain_id = $1
             )
             SELECT %L::regclass, j.row_id, j.chain_id, j.block_number, j.block_hash, j.canonical_hash,
                    j.tx_hash, j.log_index, j.canonical_hash IS NULL OR NOT %L,
                    CASE WHEN j.canonical_hash IS NOT NULL
                         THEN format(''orphaned: the canonical hash of block %%s is %%s (canonical_block_hashes); check rindexer''''s reorg_handling (enabled, window_size at least the chain''''s confirmation depth)'',
                                     j.block_number, j.canonical_hash)
                         ELSE format(''conflict: the rows of block %%s carry %%s different hashes and no canonical hash is recorded; turn on rindexer''''s reorg_handling, or set the hash with set_canonical_block_hash()'',
                                     j.block_number, j.hashes) END
               FROM judged j
              WHERE (j.canonical_hash IS NOT NULL AND j.canonical_hash IS DISTINCT FROM j.block_hash)
                 OR (j.canonical_hash IS NULL AND j.hashes > 1)
              ORDER BY j.chain_id, j.block_number, j.block_hash, j.tx_hash, j.log_index',
            CASE WHEN s.row_id_column IS NULL THEN 'NULL::bigint' ELSE format('t.%I::bigint', s.row_id_column) END,
            chain_sql, s.block_number_column, s.block_hash_column, s.tx_hash_column, s.log_index_column,
            s.source_table, s.source_table::text,
            s.canonical_hash_source = 'recorded' AND s.row_id_column IS NOT NULL)
        USING p_chain_id;
    END LOOP;
END
$$;
COMMENT ON FUNCTION balance_queue.find_orphaned_rows(integer) IS
    'Rows of attached tables with a block hash column left off the canonical chain: orphaned (their block''s canonical hash in canonical_block_hashes is another; counted is false when the table is judged) or, where no canonical hash is known, in conflict (the block''s rows carry several hashes; counted). Columns: source_table, row_id, chain_id, block_number, block_hash, canonical_hash, tx_hash, log_index, counted, reason. Reads every row of the attached tables: a check to run, like verify_balances; orphaned_transfer_rows and queue_alerts report the same cheaply.';

-- Alerts about the canonical chain, per chain, in queue_alerts' shape.
CREATE VIEW balance_queue.block_hash_alerts AS
SELECT o.chain_id, coalesce(r.network_name, 'chain ' || o.chain_id) AS chain_name,
       'ORPHANED_ROWS'::text AS alert_type, 'critical'::text AS severity,
       format('%s rows of %s are off the canonical chain and not counted (balance_queue.orphaned_transfer_rows, blocks %s..%s): rindexer left them after a reorg; check its reorg_handling (enabled, window_size at least the confirmation depth)',
              count(*), coalesce(r.network_name, 'chain ' || o.chain_id), min(o.block_number), max(o.block_number)) AS message,
       count(*)::numeric AS observed, 0::numeric AS threshold, max(o.noticed_at) AS recorded_at
  FROM balance_queue.orphaned_transfer_rows o
  LEFT JOIN balance_queue.chain_registry r USING (chain_id)
 GROUP BY o.chain_id, r.network_name
UNION ALL
SELECT j.chain_id, coalesce(r.network_name, 'chain ' || j.chain_id),
       'BLOCK_HASH_CONFLICT', 'critical',
       format('%s blocks of %s (from %s) hold rows with different hashes and no canonical hash is recorded: rows of an abandoned fork are counted; turn on rindexer''s reorg_handling, or set the hashes with set_canonical_block_hash()',
              count(*), coalesce(r.network_name, 'chain ' || j.chain_id), min(j.block_number)),
       count(*)::numeric, 0::numeric, now()
  FROM (SELECT chain_id, block_number FROM balance_queue.unjudged_block_hashes
         GROUP BY 1, 2 HAVING count(DISTINCT block_hash) > 1) j
  LEFT JOIN balance_queue.chain_registry r USING (chain_id)
 GROUP BY j.chain_id, r.network_name
UNION ALL
SELECT c.chain_id, coalesce(r.network_name, 'chain ' || c.chain_id),
       'REORG_BEYOND_WINDOW', 'critical',
       format('the canonical hash of block %s of %s is not the parent of block %s: a reorg went deeper than rindexer rolled back; raise reorg_handling.window_size, restart rindexer (it validates its stored hashes), or set the hashes with set_canonical_block_hash()',
              max(c.block_number), coalesce(r.network_name, 'chain ' || c.chain_id), max(c.block_number) + 1),
       count(*)::numeric, 0::numeric, now()
  FROM balance_queue.canonical_block_hashes c
  JOIN balance_queue.canonical_block_hashes n
    ON n.chain_id = c.chain_id AND n.block_number = c.block_number + 1 AND n.parent_hash <> c.block_hash
  LEFT JOIN balance_queue.chain_registry r ON r.chain_id = c.chain_id
 GROUP BY c.chain_id, r.network_name;
COMMENT ON VIEW balance_queue.block_hash_alerts IS
    'Alerts about the canonical chain per chain (also in queue_alerts): ORPHANED_ROWS (rows left uncounted), BLOCK_HASH_CONFLICT (blocks whose counted rows carry several hashes, no canonical one known), REORG_BEYOND_WINDOW (a canonical hash that is not the parent of the next block''s).';

-- The plan's alert queries, one row per firing alert, and those above.
CREATE VIEW balance_queue.queue_alerts AS
SELECT s.chain_id, s.chain_name, a.alert_type, a.severity, a.message, a.observed, a.threshold, s.recorded_at
  FROM balance_queue.queue_health_summary s
 CROSS JOIN LATERAL (VALUES
     ('HIGH_PENDING', 'warning',
      format('%s changes pending on %s', s.pending_count, s.chain_name),
      s.pending_count::numeric, 1000::numeric),
     ('STALE_QUEUE', 'critical',
      format('oldest pending item on %s is %s minutes old', s.chain_name, s.oldest_pending_age_minutes),
      s.oldest_pending_age_minutes::numeric, 60::numeric),
     ('HIGH_FAILURE_RATE', 'critical',
      format('%s items failed on %s in the last hour', s.error_count_last_hour, s.chain_name),
      s.error_count_last_hour::numeric, 50::numeric),
     ('SLOW_PROCESSING', 'warning',
      format('items on %s take %s ms on average', s.chain_name, s.avg_processing_time_ms),
      s.avg_processing_time_ms, 1000::numeric)
 ) AS a(alert_type, severity, message, observed, threshold)
 WHERE a.observed > a.threshold
UNION ALL
SELECT chain_id, chain_name, alert_type, severity, message, observed, threshold, recorded_at
  FROM balance_queue.block_hash_alerts;
COMMENT ON VIEW balance_queue.queue_alerts IS
    'Firing alerts per chain: HIGH_PENDING (> 1000 pending), STALE_QUEUE (oldest pending > 60 min), HIGH_FAILURE_RATE (> 50 failed in 1 h), SLOW_PROCESSING (> 1000 ms per item), and those of block_hash_alerts (ORPHANED_ROWS, BLOCK_HASH_CONFLICT, REORG_BEYOND_WINDOW).';
-- END sql/orphans.sql
-- Rechecking blocks whose canonical hash changed (src/repair/recheck.rs).
CREATE FUNCTION balance_queue."recheck_block_hashes"() RETURNS TABLE (
	"chain_id" INT,  /* i32 */
	"from_block" bigint,  /* i64 */
	"sides_taken_back" bigint,  /* i64 */
	"items_requeued" bigint  /* i64 */
)
STRICT
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'recheck_block_hashes_wrapper';

-- ---------------------------------------------------------------------------
-- Rights of the new and re-created objects, as sql/finalize.sql grants them.
-- ---------------------------------------------------------------------------
REVOKE ALL ON ALL TABLES IN SCHEMA balance_queue FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA balance_queue FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA balance_queue FROM PUBLIC;
-- A fresh install grants the reader before the admin; an ACL lists its
-- grants in that order, so the admin's grant on a table the reader gains
-- here is made again after it.
REVOKE ALL ON balance_queue.applied_transfers FROM balance_queue_admin;
GRANT SELECT ON balance_queue.queue_health_summary, balance_queue.queue_alerts, balance_queue.source_progress,
                balance_queue.token_leaderboard, balance_queue.leaderboard_cutoffs, balance_queue.bulk_loads,
                balance_queue.balance_changes, balance_queue.change_feed_state, balance_queue.graphql_exposures,
                balance_queue.token_stats, balance_queue.token_stats_deltas,
                balance_queue.price_feeds, balance_queue.collateral_factors,
                balance_queue.applied_transfers, balance_queue.canonical_block_hashes,
                balance_queue.orphaned_transfer_rows, balance_queue.block_hash_alerts
   TO balance_queue_reader;
GRANT EXECUTE ON FUNCTION
    balance_queue.get_current_balance(integer, text, text),
    balance_queue.get_address_portfolio(text, numeric),
    balance_queue.get_queue_config(integer),
    balance_queue.confirmed_through(bigint, integer),
    balance_queue.is_unconfirmed(bigint, bigint),
    balance_queue.balance_changes_cursor(),
    balance_queue.balance_changes_since(text),
    balance_queue.get_token_stats(integer, text),
    balance_queue.token_value_usd(numeric, integer, numeric),
    balance_queue.price_is_stale(timestamptz, interval, boolean),
    balance_queue.get_token_price(integer, text),
    balance_queue.get_collateral_value(text, text, boolean),
    balance_queue.get_collateral_summary(text, text, boolean),
    balance_queue.get_balance_at_block(integer, text, text, bigint),
    -- the address check the SQL-language reads above call
    balance_queue._address_arg(text, text)
   TO balance_queue_reader;
-- (the new chain partitions and the re-created views, as a fresh install)
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA balance_queue TO balance_queue_admin;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA balance_queue TO balance_queue_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA balance_queue TO balance_queue_admin;
