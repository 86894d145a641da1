//! The SQL API against a real server: custom column mappings (WETH), the
//! seed's row trigger, reading functions, recalculation, hand-queued
//! updates, detaching, and SQLSTATEs for bad arguments.

mod common;

use balance_queue_harness::cluster::Cluster;
use balance_queue_harness::drain;
use postgres::Client;

const WETH: &str = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2";
const USDC: &str = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48";
const ALICE: &str = "0x1111111111111111111111111111111111111111";
const BOB: &str = "0x2222222222222222222222222222222222222222";
const ZERO: &str = "0x0000000000000000000000000000000000000000";

fn text(client: &mut Client, sql: &str) -> String {
    client
        .query_one(sql, &[])
        .unwrap_or_else(|e| {
            panic!(
                "{sql}: {}",
                e.as_db_error().map_or(e.to_string(), |d| d.to_string())
            )
        })
        .get(0)
}

fn tx(n: u32) -> String {
    format!("0x{n:064x}")
}

#[test]
fn weth_mapping_with_numeric_values_and_fixed_chain() {
    let cluster = Cluster::start("weth", &[]);
    let mut c = cluster.database_with_extension("test");
    // WETH's ABI names the Transfer parameters src, dst, wad; here wad is NUMERIC.
    c.batch_execute(
        "CREATE SCHEMA weth; CREATE TABLE weth.transfer (
           rindexer_id SERIAL PRIMARY KEY, contract_address CHAR(42) NOT NULL, src CHAR(42), dst CHAR(42),
           wad NUMERIC, tx_hash CHAR(66) NOT NULL, block_number NUMERIC NOT NULL, log_index VARCHAR(78) NOT NULL);",
    )
    .unwrap();
    c.execute(
        "INSERT INTO weth.transfer (contract_address, src, dst, wad, tx_hash, block_number, log_index)
         VALUES ($1, $2, $3, 5000000000000000000, $4, 100, '0'),
                ($1, $3, $6, 1500000000000000000, $5, 101, '1')",
        &[&WETH, &ZERO, &ALICE.to_uppercase().replace("0X", "0x"), &tx(1), &tx(2), &BOB],
    )
    .unwrap();
    let backfilled: i64 = c
        .query_one(
            "SELECT balance_queue.attach_transfer_table('weth.transfer', chain_id => 1,
                 from_column => 'src', to_column => 'dst', value_column => 'wad', network_column => NULL)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(backfilled, 2, "two rows, queued by their rindexer_id");
    c.execute(
        "INSERT INTO weth.transfer (contract_address, src, dst, wad, tx_hash, block_number, log_index)
         VALUES ($1, $2, $3, 1000000000000000000, $4, 102, '0')",
        // Checksummed (mixed-case) input must land on the same lowercase key.
        &[&"0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2", &ALICE, &BOB, &tx(3)],
    )
    .unwrap();
    drain(&mut c, 100);
    c.execute(
        "INSERT INTO balance_queue.token_metadata (chain_id, contract_address, symbol, name, decimals)
         VALUES (1, $1, 'WETH', 'Wrapped Ether', 18)",
        &[&WETH],
    )
    .unwrap();
    let alice = c
        .query_one(
            "SELECT balance::text, balance_formatted, token_symbol, last_updated_block
               FROM balance_queue.get_current_balance(1, upper($1), $2)",
            &[&WETH, &ALICE],
        )
        .unwrap();
    assert_eq!(alice.get::<_, String>(0), "2500000000000000000");
    assert_eq!(
        alice.get::<_, String>(1),
        "2.5",
        "metadata added after the balances still formats them"
    );
    assert_eq!(alice.get::<_, Option<String>>(2).as_deref(), Some("WETH"));
    assert_eq!(alice.get::<_, Option<i64>>(3), Some(102));

    let top: Vec<(i64, String, String)> = c
        .query("SELECT rank, holder_address, balance_formatted FROM balance_queue.get_top_holders(1, $1, 10)", &[&WETH])
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        top,
        vec![
            (1, ALICE.to_string(), "2.5".to_string()),
            (2, BOB.to_string(), "2.5".to_string())
        ]
    );
    assert_eq!(
        text(
            &mut c,
            &format!(
                "SELECT count(*)::text FROM balance_queue.current_token_balances WHERE holder_address = '{ZERO}'"
            )
        ),
        "0",
        "the zero address is never a holder"
    );
}

#[test]
fn seed_row_trigger_portfolio_recalculation_and_detach() {
    let mut f = common::attached_rindexer_table("api");
    // The seed plan's table and row trigger, wired by hand.
    f.client
        .batch_execute(
            "CREATE TABLE public.token_transfers (id bigserial PRIMARY KEY, token_address text, from_address text,
                 to_address text, value numeric, transaction_hash text, log_index integer, block_number bigint);
             CREATE TRIGGER queue_balance AFTER INSERT OR UPDATE OR DELETE ON public.token_transfers
                 FOR EACH ROW EXECUTE FUNCTION balance_queue.trigger_queue_balance_update('1');",
        )
        .unwrap();
    for (i, (from, to, value)) in [
        (ZERO, ALICE, "10000000"),
        (ALICE, BOB, "2500000"),
        (ALICE, ALICE, "7"),
    ]
    .iter()
    .enumerate()
    {
        f.client
            .execute(
                "INSERT INTO public.token_transfers (token_address, from_address, to_address, value, transaction_hash, log_index, block_number)
                 VALUES ($1, $2, $3, $4::text::numeric, $5, $6, 200 + $6)",
                &[&USDC, from, to, value, &tx(100 + i as u32), &(i as i32)],
            )
            .unwrap();
    }
    drain(&mut f.client, 100);
    let portfolio: Vec<(i32, String, String, String)> = f
        .client
        .query(
            "SELECT chain_id, coalesce(chain_name, ''), coalesce(token_symbol, ''), balance_usd::text
               FROM balance_queue.get_address_portfolio($1)",
            &[&ALICE],
        )
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        portfolio,
        vec![(1, "ethereum".into(), "USDC".into(), "7.500000".into())]
    );
    // A later batch updates the balance; its USD value is read from it.
    f.client
        .execute(
            "INSERT INTO public.token_transfers (token_address, from_address, to_address, value, transaction_hash, log_index, block_number)
             VALUES ($1, $2, $3, 1000000, $4, 0, 210)",
            &[&USDC, &BOB, &ALICE, &tx(110)],
        )
        .unwrap();
    drain(&mut f.client, 100);
    let usd: String = f
        .client
        .query_one(
            "SELECT balance_usd::text FROM balance_queue.get_current_balance(1, $1, $2)",
            &[&USDC, &ALICE],
        )
        .unwrap()
        .get(0);
    assert_eq!(usd, "8.500000", "balance_usd follows the updated balance");
    f.client
        .execute(
            "DELETE FROM public.token_transfers WHERE transaction_hash = $1",
            &[&tx(110)],
        )
        .unwrap();
    drain(&mut f.client, 100);
    // A balance under the USD threshold is left out unless the threshold is 0.
    f.client
        .execute("UPDATE balance_queue.token_metadata SET price_usd = 0.1 WHERE chain_id = 1 AND contract_address = $1", &[&USDC])
        .unwrap();
    assert_eq!(
        common::count(
            &mut f.client,
            &format!("SELECT * FROM balance_queue.get_address_portfolio('{ALICE}')")
        ),
        0
    );
    assert_eq!(
        common::count(
            &mut f.client,
            &format!("SELECT * FROM balance_queue.get_address_portfolio('{ALICE}', 0)")
        ),
        1
    );

    // The row trigger takes a deleted row back.
    f.client
        .execute(
            "DELETE FROM public.token_transfers WHERE log_index = 1",
            &[],
        )
        .unwrap();
    drain(&mut f.client, 100);
    assert_eq!(
        text(
            &mut f.client,
            &format!(
                "SELECT balance::text FROM balance_queue.get_current_balance(1, '{USDC}', '{ALICE}')"
            )
        ),
        "10000000"
    );
    assert_eq!(
        text(
            &mut f.client,
            &format!(
                "SELECT balance::text FROM balance_queue.get_current_balance(1, '{USDC}', '{BOB}')"
            )
        ),
        "0"
    );

    // A corrupted balance is repaired by recalculation from the sources,
    // the seed-wired table among them.
    f.client
        .execute("UPDATE balance_queue.current_token_balances SET current_balance = 1 WHERE holder_address = $1", &[&ALICE])
        .unwrap();
    assert_eq!(
        text(
            &mut f.client,
            &format!(
                "SELECT balance_queue.recalculate_address_balance(1, '{USDC}', '{ALICE}')::text"
            )
        ),
        "10000000"
    );

    // Now through an attached rindexer table: recalculation reads its rows.
    f.client
        .execute(
            &format!(
                "INSERT INTO {} (contract_address, \"from\", \"to\", \"value\", tx_hash, block_number, block_hash, network, tx_index, log_index)
                 VALUES ($1, $2, $3, '42', $4, 300, $5, 'ethereum', 0, '0'), ($1, $2, $3, '42', $4, 300, $5, 'ethereum', 0, '0')",
                f.table
            ),
            &[&WETH, &ZERO, &BOB, &tx(300), &tx(301)],
        )
        .unwrap();
    // Not drained yet: recalculation applies the key's pending items first.
    assert_eq!(
        text(
            &mut f.client,
            &format!(
                "SELECT balance_queue.recalculate_address_balance(1, '{WETH}', '{BOB}')::text"
            )
        ),
        "42"
    );
    assert_eq!(
        common::count(
            &mut f.client,
            "SELECT 1 FROM balance_queue.balance_update_queue WHERE status = 'pending'"
        ),
        0
    );
    drain(&mut f.client, 100);
    assert_eq!(
        text(
            &mut f.client,
            &format!(
                "SELECT balance::text FROM balance_queue.get_current_balance(1, '{WETH}', '{BOB}')"
            )
        ),
        "42"
    );

    // A hand-queued update recomputes the key when drained.
    f.client
        .execute("UPDATE balance_queue.current_token_balances SET current_balance = 0 WHERE contract_address = $1 AND holder_address = $2", &[&WETH, &BOB])
        .unwrap();
    let id: i64 = f
        .client
        .query_one(
            "SELECT balance_queue.queue_balance_update(1, $1, $2, 'recalculate', p_priority => 1)",
            &[&WETH.to_uppercase().replace("0X", "0x"), &BOB],
        )
        .unwrap()
        .get(0);
    assert!(id > 0);
    drain(&mut f.client, 100);
    assert_eq!(
        text(
            &mut f.client,
            &format!(
                "SELECT balance::text FROM balance_queue.get_current_balance(1, '{WETH}', '{BOB}')"
            )
        ),
        "42"
    );

    // Detaching removes the triggers and takes the table's rows back out.
    let queued: i64 = f
        .client
        .query_one(
            &format!("SELECT balance_queue.detach_transfer_table('{}')", f.table),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(queued, 2, "two copies of one mint, one side each");
    drain(&mut f.client, 100);
    assert_eq!(
        text(
            &mut f.client,
            &format!(
                "SELECT balance::text FROM balance_queue.get_current_balance(1, '{WETH}', '{BOB}')"
            )
        ),
        "0"
    );
    assert_eq!(
        common::count(
            &mut f.client,
            &format!(
                "SELECT 1 FROM pg_trigger WHERE tgrelid = '{}'::regclass AND NOT tgisinternal",
                f.table
            )
        ),
        0
    );
}

#[test]
fn bad_arguments_raise_clear_sqlstates() {
    let mut f = common::attached_rindexer_table("errors");
    let cases = [
        (format!("SELECT balance_queue.attach_transfer_table('{}')", f.table), "42710"),
        ("CREATE TABLE t (x int); SELECT balance_queue.attach_transfer_table('t', chain_id => 1)".to_string(), "42703"),
        ("CREATE TABLE t2 (LIKE rindexer_test_erc_20.transfer); SELECT balance_queue.attach_transfer_table('t2', chain_id => 777)".to_string(), "22023"),
        ("SELECT balance_queue.detach_transfer_table('pg_class')".to_string(), "42704"),
        (format!("SELECT * FROM balance_queue.get_current_balance(1, '0x123', '{ALICE}')"), "22P02"),
        (format!("SELECT * FROM balance_queue.get_top_holders(1, '{USDC}', 0)"), "22023"),
        ("SELECT * FROM balance_queue.process_balance_update_queue(0)".to_string(), "22023"),
        (format!("SELECT balance_queue.queue_balance_update(1, '{USDC}', '{ALICE}', 'teleport')"), "22023"),
        (format!("SELECT balance_queue.recalculate_address_balance(1, '{USDC}', '{ZERO}')"), "22023"),
        ("SELECT balance_queue.format_token_balance(1, 78)".to_string(), "22023"),
        ("SELECT balance_queue.add_chain(-1, 'x')".to_string(), "22023"),
    ];
    for (sql, want) in cases {
        assert_eq!(common::sqlstate(&mut f.client, &sql), want, "{sql}");
    }
}
