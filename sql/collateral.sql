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
