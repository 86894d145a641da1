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
