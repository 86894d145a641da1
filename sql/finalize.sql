-- Chains preloaded into the registry, each with its balance partition.
-- Confirmation depths in blocks, from common practice (see README):
-- Ethereum 64 (two epochs, the Casper FFG finality horizon); Polygon PoS 256
-- (reorgs of 157 blocks are on record); OP-stack L2s (Optimism, Base,
-- Superseed, Worldchain, Ink) 30 and Arbitrum 24, near Ponder's and
-- rindexer's reorg-safe distances; Sonic 10 (BFT finality in about a second).
SELECT balance_queue.add_chain(1,     'ethereum',   'Ethereum',   64);
SELECT balance_queue.add_chain(42161, 'arbitrum',   'Arbitrum',   24);
SELECT balance_queue.add_chain(8453,  'base',       'Base',       30);
SELECT balance_queue.add_chain(137,   'polygon',    'Polygon',    256);
SELECT balance_queue.add_chain(10,    'optimism',   'Optimism',   30);
SELECT balance_queue.add_chain(146,   'sonic',      'Sonic',      10);
SELECT balance_queue.add_chain(5330,  'superseed',  'Superseed',  30);
SELECT balance_queue.add_chain(480,   'worldchain', 'Worldchain', 30);
SELECT balance_queue.add_chain(57073, 'ink',        'Ink',        30);

-- ---------------------------------------------------------------------------
-- Security. Everything is closed to PUBLIC; two roles open what each job
-- needs. Functions run with their caller's rights (SECURITY INVOKER) and a
-- fixed search_path, except the two trigger functions: they run as the
-- extension's owner, so an indexer role holding only INSERT and DELETE on
-- its own tables can queue changes it could never write directly.
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

REVOKE ALL ON SCHEMA balance_queue FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA balance_queue FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA balance_queue FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA balance_queue FROM PUBLIC;
GRANT USAGE ON SCHEMA balance_queue TO balance_queue_reader, balance_queue_admin;

-- Reader: balances, metadata, health, snapshots and the functions over them.
GRANT SELECT ON balance_queue.current_token_balances, balance_queue.confirmed_token_balances,
                balance_queue.token_metadata, balance_queue.chain_registry,
                balance_queue.pending_transfer_sides, balance_queue.daily_balance_snapshots,
                balance_queue.queue_health_metrics, balance_queue.queue_health_summary,
                balance_queue.queue_alerts, balance_queue.balance_update_queue,
                balance_queue.queue_processing_config
   TO balance_queue_reader;
GRANT EXECUTE ON FUNCTION
    balance_queue.format_token_balance(numeric, integer),
    balance_queue.get_current_balance(integer, text, text),
    balance_queue.get_address_portfolio(text, numeric),
    balance_queue.get_top_holders(integer, text, integer),
    balance_queue.get_balance_at_date(integer, text, text, date),
    balance_queue.get_queue_config(integer)
   TO balance_queue_reader;

-- Admin: everything the extension does, with the table rights it needs.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA balance_queue TO balance_queue_admin;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA balance_queue TO balance_queue_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA balance_queue TO balance_queue_admin;
