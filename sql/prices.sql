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
