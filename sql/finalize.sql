-- Every chain of the reference data (sql/reference_data.sql) gets its
-- balance partition; add_chain keeps the row as it is.
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
-- Security. Everything is closed to PUBLIC; two roles open what each job
-- needs. Functions run with their caller's rights (SECURITY INVOKER) and a
-- fixed search_path, except the trigger functions on the indexer's tables
-- (the two transfer triggers here, and _follow_price_feed of sql/prices.sql):
-- they run as the extension's owner, so an indexer role holding only INSERT
-- and DELETE on its own tables can queue changes, or move a price, it could
-- never write directly.
-- ---------------------------------------------------------------------------
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'balance_queue_reader') THEN
        CREATE ROLE balance_queue_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'balance_queue_admin') THEN
        CREATE ROLE balance_queue_admin NOLOGIN;
    END IF;
END
$roles$;
COMMENT ON ROLE balance_queue_reader IS 'balance_queue: read balances, queue health and snapshots';
COMMENT ON ROLE balance_queue_admin IS 'balance_queue: attach tables, drain, recalculate, handle reorgs, configure';
GRANT balance_queue_reader TO balance_queue_admin;

ALTER FUNCTION balance_queue._enqueue_transfer_rows() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION balance_queue.trigger_queue_balance_update() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
-- A batch statement's estimated cost passes jit_above_cost, and compiling it
-- costs more than running it (about 1.5 s of a 4 s batch of 50,000): the
-- worker turns JIT off for its session, and the drain's SQL entry point for
-- its calls.
ALTER FUNCTION balance_queue.process_balance_update_queue(integer, integer) SET jit = off;

REVOKE ALL ON SCHEMA balance_queue FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA balance_queue FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA balance_queue FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA balance_queue FROM PUBLIC;
GRANT USAGE ON SCHEMA balance_queue TO balance_queue_reader, balance_queue_admin;

-- Reader: balances, metadata, health, snapshots and the functions over them.
GRANT SELECT ON balance_queue.current_token_balances, balance_queue.confirmed_token_balances,
                balance_queue.token_metadata, balance_queue.chain_registry,
                balance_queue.unconfirmed_transfer_sides, balance_queue.daily_balance_snapshots,
                balance_queue.queue_health_metrics, balance_queue.queue_health_summary,
                balance_queue.queue_alerts, balance_queue.balance_update_queue,
                balance_queue.source_progress, balance_queue.token_leaderboard,
                balance_queue.leaderboard_cutoffs, balance_queue.bulk_loads,
                balance_queue.queue_processing_config, balance_queue.balance_changes,
                balance_queue.change_feed_state, balance_queue.graphql_exposures,
                balance_queue.token_stats, balance_queue.token_stats_deltas,
                balance_queue.price_feeds, balance_queue.collateral_factors,
                balance_queue.applied_transfers, balance_queue.canonical_block_hashes,
                balance_queue.orphaned_transfer_rows, balance_queue.block_hash_alerts
   TO balance_queue_reader;
GRANT EXECUTE ON FUNCTION
    balance_queue.format_token_balance(numeric, integer),
    balance_queue.get_current_balance(integer, text, text),
    balance_queue.get_address_portfolio(text, numeric),
    balance_queue.get_top_holders(integer, text, integer),
    balance_queue.get_balance_at_date(integer, text, text, date),
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

-- Admin: everything the extension does, with the table rights it needs.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA balance_queue TO balance_queue_admin;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA balance_queue TO balance_queue_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA balance_queue TO balance_queue_admin;
