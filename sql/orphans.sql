-- ---------------------------------------------------------------------------
-- Orphaned rows (issue 14, first part: finding and reporting them). rindexer
-- does not always leave the canonical chain in its tables: its reorg
-- rollback does not wait for batches already handed to its writer, a reorg
-- deeper than its window (reorg_handling.window_size, 40 blocks by default)
-- is only partly rolled back, and a project without reorg_handling deletes
-- nothing. Every rindexer row carries its block_hash, and rindexer records
-- the canonical hash of its recent blocks in
-- rindexer_internal.reorg_block_hashes (network, block_number, block_hash,
-- parent_hash). This report lists, per attached table with a block_hash
-- column, the rows whose hash differs from rindexer's canonical one
-- ('orphaned'), and, for blocks with no canonical hash recorded, the rows of
-- a block whose rows carry more than one hash ('conflict'). Such rows are
-- still counted today; the report says which to look at and which of
-- rindexer's settings to check.
-- ---------------------------------------------------------------------------
CREATE FUNCTION balance_queue.find_orphaned_rows(p_chain_id integer DEFAULT NULL)
RETURNS TABLE (source_table regclass, row_id bigint, chain_id integer, block_number numeric,
               block_hash text, canonical_hash text, tx_hash text, log_index text, reason text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s balance_queue.attached_sources;
    canonical boolean := pg_catalog.to_regclass('rindexer_internal.reorg_block_hashes') IS NOT NULL;
    chain_sql text;
    network_sql text;
    canon_sql text;
BEGIN
    FOR s IN SELECT * FROM balance_queue.attached_sources a ORDER BY a.source_table::text LOOP
        CONTINUE WHEN NOT EXISTS (
            SELECT 1 FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = s.source_table AND a.attname = 'block_hash' AND a.attnum > 0
               AND NOT a.attisdropped);
        IF s.chain_id IS NOT NULL THEN
            chain_sql := s.chain_id::text;
            network_sql := format('(SELECT network_name FROM balance_queue.chain_registry WHERE chain_id = %s)',
                                  s.chain_id);
        ELSE
            chain_sql := format('(SELECT r.chain_id FROM balance_queue.chain_registry r WHERE r.network_name = t.%I)',
                                s.network_column);
            network_sql := format('t.%I::text', s.network_column);
        END IF;
        canon_sql := CASE WHEN canonical
            THEN 'SELECT h.block_hash::text FROM rindexer_internal.reorg_block_hashes h
                   WHERE h.network = rows.network AND h.block_number = rows.block_number'
            ELSE 'SELECT NULL::text' END;
        RETURN QUERY EXECUTE format(
            'WITH rows AS (
                 SELECT %s AS row_id, %s AS chain_id, %s AS network,
                        t.%I::numeric AS block_number, t.block_hash::text AS block_hash,
                        t.%I::text AS tx_hash, t.%I::text AS log_index
                   FROM %s t
             ), hashes AS (
                 SELECT rows.chain_id, rows.block_number, count(DISTINCT rows.block_hash) AS hashes
                   FROM rows GROUP BY 1, 2
             ), judged AS (
                 SELECT rows.*, (%s) AS canonical_hash, hashes.hashes
                   FROM rows
                   JOIN hashes ON hashes.chain_id IS NOT DISTINCT FROM rows.chain_id
                              AND hashes.block_number = rows.block_number
                  WHERE $1 IS NULL OR rows.chain_id = $1
             )
             SELECT %L::regclass, j.row_id, j.chain_id, j.block_number, j.block_hash, j.canonical_hash,
                    j.tx_hash, j.log_index,
                    CASE WHEN j.canonical_hash IS NOT NULL
                         THEN format(''orphaned: rindexer_internal.reorg_block_hashes records %%s for block %%s; check rindexer''''s reorg_handling (enabled, window_size at least the chain''''s confirmation depth)'',
                                     j.canonical_hash, j.block_number)
                         ELSE format(''conflict: the rows of block %%s carry %%s different hashes and no canonical hash is recorded'',
                                     j.block_number, j.hashes) END
               FROM judged j
              WHERE (j.canonical_hash IS NOT NULL AND j.canonical_hash IS DISTINCT FROM j.block_hash)
                 OR (j.canonical_hash IS NULL AND j.hashes > 1)
              ORDER BY j.chain_id, j.block_number, j.block_hash, j.tx_hash, j.log_index',
            CASE WHEN s.row_id_column IS NULL THEN 'NULL::bigint' ELSE format('t.%I::bigint', s.row_id_column) END,
            chain_sql, network_sql, s.block_number_column, s.tx_hash_column, s.log_index_column,
            s.source_table, canon_sql, s.source_table::text)
        USING p_chain_id;
    END LOOP;
END
$$;
COMMENT ON FUNCTION balance_queue.find_orphaned_rows(integer) IS
    'Rows of attached tables (those with a block_hash column, as rindexer writes) left off the canonical chain: orphaned (another hash than rindexer_internal.reorg_block_hashes records for the block) or, where no canonical hash is recorded, in conflict (the block''s rows carry several hashes). Columns: source_table, row_id, chain_id, block_number, block_hash, canonical_hash, tx_hash, log_index, reason. Reads every row of the attached tables: a check to run, like verify_balances.';
