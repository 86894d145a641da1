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
