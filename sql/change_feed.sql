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
