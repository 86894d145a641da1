-- ---------------------------------------------------------------------------
-- Balance at any block (docs/prices.md, "Balance at a block"). The ledger
-- already records every counted transfer side with its block; this index
-- lets one key's sides be read in block order, from either end. It indexes
-- an 8-byte hash of (token, holder) rather than the two addresses: 50 MB
-- instead of 178 MB per 1,000,000 sides, and inserting 1,000,000 ledger
-- rows costs 3.5 s more instead of 8.6 s (measured beside the primary key
-- alone, 3.5 s). The query rechecks the addresses.
-- ---------------------------------------------------------------------------
CREATE INDEX applied_transfers_history_idx
    ON balance_queue.applied_transfers
       (chain_id, pg_catalog.hashtextextended(contract_address || holder_address, 0), block_number)
    WHERE copies > 0;

CREATE FUNCTION balance_queue.get_balance_at_block(
    p_chain_id integer, p_contract_address text, p_holder_address text, p_block bigint)
RETURNS TABLE (balance numeric, is_final boolean, confirmed_through bigint, sides_read bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    token text := balance_queue._address_arg(p_contract_address, 'p_contract_address');
    holder text := balance_queue._address_arg(p_holder_address, 'p_holder_address');
    current numeric;
    latest bigint;
    first_block bigint;
    head bigint;
    depth integer;
    key_hash bigint := pg_catalog.hashtextextended(token || holder, 0);
BEGIN
    IF p_block < 0 THEN
        RAISE EXCEPTION 'p_block % must be >= 0', p_block USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT r.head_block, r.confirmation_depth INTO head, depth
      FROM balance_queue.chain_registry r WHERE r.chain_id = p_chain_id;
    confirmed_through := balance_queue.confirmed_through(head, depth);
    is_final := NOT balance_queue.is_unconfirmed(p_block, confirmed_through);
    SELECT b.current_balance, b.last_updated_block INTO current, latest
      FROM balance_queue.current_token_balances b
     WHERE b.chain_id = p_chain_id AND b.contract_address = token AND b.holder_address = holder;
    SELECT min(t.block_number) INTO first_block
      FROM balance_queue.applied_transfers t
     WHERE t.chain_id = p_chain_id AND pg_catalog.hashtextextended(t.contract_address || t.holder_address, 0) = key_hash
       AND t.contract_address = token AND t.holder_address = holder AND t.copies > 0;
    IF first_block IS NULL OR p_block < first_block THEN
        balance := 0;
        sides_read := 0;
    ELSIF current IS NOT NULL AND p_block >= first_block + (coalesce(latest, p_block) - first_block) / 2 THEN
        -- Nearer the present: the current balance minus what came after.
        SELECT current - coalesce(sum(t.delta_wei), 0), count(*) INTO balance, sides_read
          FROM balance_queue.applied_transfers t
         WHERE t.chain_id = p_chain_id AND pg_catalog.hashtextextended(t.contract_address || t.holder_address, 0) = key_hash
           AND t.contract_address = token AND t.holder_address = holder
           AND t.copies > 0 AND t.block_number > p_block;
    ELSE
        -- Nearer the start: the sum up to the block.
        SELECT coalesce(sum(t.delta_wei), 0), count(*) INTO balance, sides_read
          FROM balance_queue.applied_transfers t
         WHERE t.chain_id = p_chain_id AND pg_catalog.hashtextextended(t.contract_address || t.holder_address, 0) = key_hash
           AND t.contract_address = token AND t.holder_address = holder
           AND t.copies > 0 AND t.block_number <= p_block;
    END IF;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION balance_queue.get_balance_at_block(integer, text, text, bigint) IS
    'The balance (wei) of holder for token on chain after block p_block, from the counted transfer sides of the exactly-once ledger (through applied_transfers_history_idx on a hash of the key, from whichever end is nearer: the current balance minus later sides, or the sum up to the block); is_final: p_block is at or below confirmed_through (head block minus confirmation depth); sides_read: ledger rows summed. 22P02 malformed address, 22023 negative block.';
