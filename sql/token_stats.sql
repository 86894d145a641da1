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
