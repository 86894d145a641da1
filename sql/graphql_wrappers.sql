-- The functions expose_graphql() creates inside a rindexer contract schema so
-- that rindexer's GraphQL server (PostGraphile 4, which leaves out objects
-- that are members of an extension) shows balance_queue's reads as Query
-- fields. Not part of the install script: src/graphql.rs substitutes
--   @schema@  the target schema, quoted;
--   @prefix@  the name prefix ('' or e.g. 'reth_'), inside quoted names;
-- and runs the text as one SPI call.
--
-- Why each choice:
-- * STABLE: PostGraphile makes STABLE functions Query fields (VOLATILE ones
--   would be mutations).
-- * OUT / RETURNS TABLE columns, no composite types: nothing is left behind
--   when the functions go, and PostGraphile names the record types itself
--   (CurrentBalanceRecord, TopHoldersRecord, ...).
-- * Bodies in quotes, not BEGIN ATOMIC: no hard dependency that would make a
--   plain DROP EXTENSION fail. Instead each function is marked DEPENDS ON
--   EXTENSION balance_queue, so DROP EXTENSION drops them too and
--   none is left calling a missing function. That mark is not membership
--   (pg_depend deptype 'x', not 'e'), so PostGraphile still shows them.
-- * SECURITY INVOKER (the default): a GraphQL request reads with the rights
--   of the role rindexer connects as; grant it balance_queue_reader.
-- * numeric results: PostGraphile maps numeric to BigFloat, a string, so a
--   balance of 2^256-1 arrives exact.
CREATE FUNCTION @schema@."@prefix@current_balance"(
    chain_id integer, contract text, holder text,
    OUT balance numeric, OUT balance_formatted text, OUT balance_usd numeric,
    OUT token_symbol text, OUT last_updated_block bigint,
    OUT last_updated_time timestamptz, OUT token_decimals integer,
    OUT confirmed_balance numeric, OUT pending_delta numeric)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM balance_queue.get_current_balance($1, $2, $3) $$;
ALTER FUNCTION @schema@."@prefix@current_balance"(integer, text, text) DEPENDS ON EXTENSION balance_queue;
COMMENT ON FUNCTION @schema@."@prefix@current_balance"(integer, text, text) IS
    'balance_queue: the current balance (wei) of holder for token contract on chain chain_id, with its confirmed part and pending delta. Made by balance_queue.expose_graphql().';
CREATE FUNCTION @schema@."@prefix@address_portfolio"(holder text, min_usd numeric DEFAULT 1.00)
RETURNS TABLE (chain_id integer, chain_name text, contract_address text, token_symbol text,
               balance numeric, balance_formatted text, balance_usd numeric,
               last_updated_time timestamptz, last_updated_block bigint)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM balance_queue.get_address_portfolio($1, $2) $$;
ALTER FUNCTION @schema@."@prefix@address_portfolio"(text, numeric) DEPENDS ON EXTENSION balance_queue;
COMMENT ON FUNCTION @schema@."@prefix@address_portfolio"(text, numeric) IS
    'balance_queue: every token holder holds on every chain worth at least min_usd USD (0 or less: every non-zero balance). Made by balance_queue.expose_graphql().';
CREATE FUNCTION @schema@."@prefix@top_holders"(chain_id integer, contract text, "limit" integer DEFAULT 100)
RETURNS TABLE (rank bigint, holder_address text, current_balance numeric, balance_formatted text,
               balance_usd numeric, last_updated_block bigint)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM balance_queue.get_top_holders($1, $2, $3) $$;
ALTER FUNCTION @schema@."@prefix@top_holders"(integer, text, integer) DEPENDS ON EXTENSION balance_queue;
COMMENT ON FUNCTION @schema@."@prefix@top_holders"(integer, text, integer) IS
    'balance_queue: the limit largest holders of token contract on chain chain_id, largest first (page them with first/offset). Made by balance_queue.expose_graphql().';
CREATE FUNCTION @schema@."@prefix@queue_health"()
RETURNS TABLE (chain_id integer, chain_name text, pending_count bigint, processing_count bigint,
               completed_count_last_hour bigint, error_count_last_hour bigint,
               avg_processing_time_ms numeric, oldest_pending_age_minutes integer,
               health_status text, recorded_at timestamptz)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT s.chain_id, s.chain_name, s.pending_count, s.processing_count,
             s.completed_count_last_hour, s.error_count_last_hour, s.avg_processing_time_ms,
             s.oldest_pending_age_minutes, s.health_status, s.recorded_at
        FROM balance_queue.queue_health_summary s ORDER BY s.chain_id $$;
ALTER FUNCTION @schema@."@prefix@queue_health"() DEPENDS ON EXTENSION balance_queue;
COMMENT ON FUNCTION @schema@."@prefix@queue_health"() IS
    'balance_queue: the latest queue health per chain (HEALTHY, HIGH_LOAD, DELAYED or ERRORS). Made by balance_queue.expose_graphql().';
