//! Prices and collateral against a real server: USD values computed when
//! read (a price change writes one row), a Chainlink aggregator table as
//! rindexer writes it followed through new rounds, bad answers, a reorg
//! delete and staleness, manual and pinned prices, and collateral values
//! compared with an independent exact decimal computation.

mod common;

use balance_queue_harness::drain;
use balance_queue_harness::rindexer::{self, TransferRow};
use num_bigint::BigInt;
use postgres::Client;
use std::str::FromStr;

const TOKEN: &str = "0x00000000000000000000000000000000000000a1"; // 18 decimals
const OTHER: &str = "0x00000000000000000000000000000000000000a2"; // 6 decimals
const FEED: &str = "0x5f4ec3df9cbd43714fe2740f5e3616155c5b8419"; // ETH / USD on Ethereum
const HOLDER: &str = "0x00000000000000000000000000000000000000c1";
const ZERO: &str = "0x0000000000000000000000000000000000000000";

fn transfer(token: &str, from: &str, to: &str, value: &str, block: u64, n: u32) -> TransferRow {
    TransferRow {
        contract_address: token.into(),
        from: Some(from.into()),
        to: Some(to.into()),
        value: Some(value.into()),
        tx_hash: format!("0x{n:064x}"),
        block_number: block,
        block_hash: format!("0x{block:064x}"),
        network: "ethereum".into(),
        tx_index: 0,
        log_index: n.to_string(),
    }
}

/// rindexer's table for a Chainlink aggregator's
/// `AnswerUpdated(int256 indexed current, uint256 indexed roundId, uint256 updatedAt)`:
/// int256/uint256 as VARCHAR(78), the standard columns after.
fn create_feed_table(client: &mut Client) {
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS prices_indexer_eth_usd_aggregator;
             CREATE TABLE prices_indexer_eth_usd_aggregator.answer_updated (
               rindexer_id SERIAL PRIMARY KEY NOT NULL, contract_address CHAR(42) NOT NULL,
               \"current\" VARCHAR(78), round_id VARCHAR(78), updated_at VARCHAR(78),
               tx_hash CHAR(66) NOT NULL, block_number NUMERIC NOT NULL, block_timestamp TIMESTAMPTZ,
               block_hash CHAR(66) NOT NULL, network VARCHAR(50) NOT NULL,
               tx_index NUMERIC NOT NULL, log_index VARCHAR(78) NOT NULL);",
        )
        .unwrap();
}

/// Inserts one round as rindexer would (one INSERT statement).
fn round(client: &mut Client, answer: &str, round: u32, updated_at: i64, block: u64, log: u32) {
    client
        .execute(
            "INSERT INTO prices_indexer_eth_usd_aggregator.answer_updated
                 (contract_address, \"current\", round_id, updated_at, tx_hash, block_number, block_hash,
                  network, tx_index, log_index)
             VALUES ($1, $2, $3, $4, $5, $6::text::numeric, $7, 'ethereum', 0, $8)",
            &[
                &FEED,
                &answer,
                &round.to_string(),
                &updated_at.to_string(),
                &format!("0x{round:064x}"),
                &block.to_string(),
                &format!("0x{block:064x}"),
                &log.to_string(),
            ],
        )
        .unwrap();
}

fn price(client: &mut Client, token: &str) -> (Option<String>, Option<String>, bool, bool) {
    let r = client
        .query_one(
            "SELECT price_usd::text, source, stale, pinned FROM balance_queue.get_token_price(1, $1)",
            &[&token],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

fn now_unix(client: &mut Client) -> i64 {
    client
        .query_one("SELECT extract(epoch FROM now())::bigint", &[])
        .unwrap()
        .get(0)
}

/// An exact decimal `value / 10^scale` as Postgres prints it after
/// trim_scale: no trailing zeros, no point for an integer.
fn decimal(value: &BigInt, scale: u32) -> String {
    let negative = value.sign() == num_bigint::Sign::Minus;
    let digits = value.magnitude().to_string();
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    let frac = frac.trim_end_matches('0');
    let sign = if negative { "-" } else { "" };
    if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

#[test]
fn a_feed_followed_through_rounds_reorgs_and_staleness_and_manual_prices() {
    let mut f = common::attached_rindexer_table("prices");
    let c = &mut f.client;
    c.batch_execute(&format!(
        "INSERT INTO balance_queue.token_metadata (chain_id, contract_address, symbol, decimals)
         VALUES (1, '{TOKEN}', 'TKN', 18)"
    ))
    .unwrap();
    // 1,000 holders of TOKEN.
    let rows: Vec<TransferRow> = (0..1000u32)
        .map(|i| {
            let holder = format!("0x{:040x}", 0x1000 + i);
            transfer(
                TOKEN,
                ZERO,
                &holder,
                &format!("{}", (i as u128 + 1) * 10u128.pow(18)),
                100,
                i,
            )
        })
        .collect();
    rindexer::write_all(c, &f.table, &rows, 500).unwrap();
    drain(c, 5000);

    // A manual price writes one row, and no balance row.
    c.batch_execute("BEGIN").unwrap();
    c.batch_execute(&format!(
        "SELECT balance_queue.set_token_price(1, '{TOKEN}', 2.5)"
    ))
    .unwrap();
    let rewritten = common::scalar_i64(
        c,
        "SELECT count(*) FROM balance_queue.current_token_balances WHERE xmin = pg_current_xact_id()::xid",
    );
    c.batch_execute("COMMIT").unwrap();
    assert_eq!(rewritten, 0, "a price change rewrites no balance");
    let holder = format!("0x{:040x}", 0x1000 + 9); // 10 tokens
    let usd = |c: &mut Client| -> Option<String> {
        c.query_one(
            "SELECT balance_usd::text FROM balance_queue.get_current_balance(1, $1, $2)",
            &[&TOKEN, &holder],
        )
        .unwrap()
        .get(0)
    };
    assert_eq!(usd(c).as_deref(), Some("25.000000"));
    assert_eq!(
        price(c, TOKEN),
        (Some("2.5".into()), Some("manual".into()), false, false)
    );

    // The feed: rounds in block order; the newest surviving positive one wins.
    create_feed_table(c);
    let now = now_unix(c);
    round(c, "250000000000", 1, now - 600, 1_000, 3);
    let attached: Option<String> = c
        .query_one(
            "SELECT balance_queue.attach_price_feed('prices_indexer_eth_usd_aggregator.answer_updated'::regclass,
                                                    $1, 1, $2)::text",
            &[&FEED, &TOKEN],
        )
        .unwrap()
        .get(0);
    // Whichever was set last: the manual price is newer than the round.
    assert_eq!(
        attached.as_deref(),
        Some("2.5"),
        "a manual price newer than the latest round stays"
    );
    c.batch_execute(&format!(
        "SELECT balance_queue.set_token_price(1, '{TOKEN}', NULL)"
    ))
    .unwrap();
    assert_eq!(
        price(c, TOKEN),
        (Some("2500".into()), Some("feed".into()), false, false)
    );
    round(c, "260012345678", 2, now - 300, 1_001, 0);
    assert_eq!(price(c, TOKEN).0.as_deref(), Some("2600.12345678"));
    assert_eq!(usd(c).as_deref(), Some("26001.234568"));
    // Within a block, the higher log index is the later round.
    round(c, "261000000000", 4, now - 200, 1_002, 7);
    round(c, "260500000000", 3, now - 250, 1_002, 2);
    assert_eq!(price(c, TOKEN).0.as_deref(), Some("2610"));
    // Answers <= 0 and malformed values land in the table and are ignored.
    round(c, "0", 5, now - 100, 1_003, 0);
    round(c, "-5", 6, now - 90, 1_004, 0);
    round(c, "not a number", 7, now - 80, 1_005, 0);
    assert_eq!(price(c, TOKEN).0.as_deref(), Some("2610"));
    assert_eq!(
        common::scalar_i64(
            c,
            "SELECT count(*) FROM prices_indexer_eth_usd_aggregator.answer_updated"
        ),
        7
    );
    // rindexer's reorg rollback deletes the newest blocks: the price moves back.
    c.batch_execute(
        "DELETE FROM prices_indexer_eth_usd_aggregator.answer_updated WHERE block_number >= 1002",
    )
    .unwrap();
    assert_eq!(
        price(c, TOKEN),
        (
            Some("2600.12345678".into()),
            Some("feed".into()),
            false,
            false
        )
    );

    // A pinned manual price wins over new rounds; unpinned, the feed again.
    c.batch_execute(&format!(
        "SELECT balance_queue.set_token_price(1, '{TOKEN}', 3000, true)"
    ))
    .unwrap();
    round(c, "270000000000", 8, now - 60, 1_010, 0);
    assert_eq!(
        price(c, TOKEN),
        (Some("3000".into()), Some("pinned".into()), false, true)
    );
    c.batch_execute(&format!(
        "SELECT balance_queue.set_token_price(1, '{TOKEN}', NULL)"
    ))
    .unwrap();
    assert_eq!(
        price(c, TOKEN),
        (Some("2700".into()), Some("feed".into()), false, false)
    );

    // An unpinned manual price stays until a newer round: another write to
    // the feed table (here a round of another feed) does not bring the old
    // round back.
    c.batch_execute(&format!(
        "SELECT balance_queue.set_token_price(1, '{TOKEN}', 2750)"
    ))
    .unwrap();
    c.execute(
        "INSERT INTO prices_indexer_eth_usd_aggregator.answer_updated
             (contract_address, \"current\", round_id, updated_at, tx_hash, block_number, block_hash,
              network, tx_index, log_index)
         VALUES ('0x0000000000000000000000000000000000000bad', '1', '1', '1', $1, 1012, $1, 'ethereum', 0, '0')",
        &[&format!("0x{:064x}", 99)],
    )
    .unwrap();
    assert_eq!(
        price(c, TOKEN),
        (Some("2750".into()), Some("manual".into()), false, false)
    );
    c.batch_execute(&format!(
        "SELECT balance_queue.set_token_price(1, '{TOKEN}', NULL)"
    ))
    .unwrap();
    assert_eq!(price(c, TOKEN).0.as_deref(), Some("2700"));

    // A round older than the feed's max age is stale.
    round(c, "280000000000", 9, now - 26 * 3600, 1_011, 0);
    assert_eq!(
        price(c, TOKEN),
        (Some("2800".into()), Some("feed".into()), true, false)
    );

    // A stable token keeps 1; TRUNCATE of the feed table forgets the feed price.
    let usdc = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48";
    assert_eq!(
        price(c, usdc),
        (Some("1".into()), Some("stable".into()), false, false)
    );
    c.batch_execute("TRUNCATE prices_indexer_eth_usd_aggregator.answer_updated")
        .unwrap();
    assert_eq!(price(c, TOKEN), (None, None, false, false));
    assert_eq!(usd(c), None);

    for (sql, code) in [
        (
            format!(
                "SELECT balance_queue.attach_price_feed('prices_indexer_eth_usd_aggregator.answer_updated', '{FEED}', 1, '{TOKEN}')"
            ),
            "42710",
        ),
        (
            format!(
                "SELECT balance_queue.attach_price_feed('{}', '{FEED}', 1, '{OTHER}')",
                f.table
            ),
            "42703",
        ),
        (
            format!(
                "SELECT balance_queue.attach_price_feed('{}', '0x12', 1, '{OTHER}')",
                f.table
            ),
            "22P02",
        ),
        (
            format!("SELECT balance_queue.set_token_price(1, '{TOKEN}', -1)"),
            "22023",
        ),
        (
            format!("SELECT balance_queue.set_token_price(1, '{TOKEN}', 'NaN')"),
            "22023",
        ),
    ] {
        assert_eq!(common::sqlstate(c, &sql), code, "{sql}");
    }
    assert!(
        c.query_one("SELECT balance_queue.detach_price_feed(1, $1)", &[&TOKEN])
            .unwrap()
            .get::<_, bool>(0)
    );
    assert_eq!(
        common::scalar_i64(
            c,
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'balance_queue_price_feed'"
        ),
        0,
        "the trigger goes with the table's last feed"
    );
}

#[test]
fn collateral_values_match_an_exact_decimal_computation() {
    let mut f = common::attached_rindexer_table("collateral");
    let c = &mut f.client;
    c.batch_execute(&format!(
        "INSERT INTO balance_queue.token_metadata (chain_id, contract_address, symbol, decimals)
         VALUES (1, '{TOKEN}', 'TKN', 18), (1, '{OTHER}', 'OTH', 6);
         SELECT balance_queue.set_token_price(1, '{TOKEN}', 2613.87654321);
         SELECT balance_queue.set_token_price(1, '{OTHER}', 0.99987);
         SELECT balance_queue.set_collateral_factor('aave', 1, '{TOKEN}', 8050, 8300);
         SELECT balance_queue.set_collateral_factor('aave', 1, '{OTHER}', 7700, 8000);"
    ))
    .unwrap();
    // TOKEN: 12.345678901234567891 confirmed at block 100, and 1.5 more at the
    // head (block 1000: inside Ethereum's 64-block window, so pending).
    // OTHER: 5,000.123456 received, then 7,000 sent: negative, counts zero.
    let confirmed = "12345678901234567891";
    let rows = vec![
        transfer(TOKEN, ZERO, HOLDER, confirmed, 100, 1),
        transfer(TOKEN, ZERO, HOLDER, "1500000000000000000", 1000, 2),
        transfer(OTHER, ZERO, HOLDER, "5000123456", 100, 3),
        transfer(OTHER, HOLDER, ZERO, "7000000000", 200, 4),
    ];
    rindexer::write_all(c, &f.table, &rows, 10).unwrap();
    drain(c, 100);

    let got = |c: &mut Client, pending: bool| -> Vec<(String, String, String, String, bool)> {
        c.query(
            "SELECT contract_address, balance::text, value_usd::text, collateral_value_usd::text, price_stale
               FROM balance_queue.get_collateral_value($1, 'aave', $2)",
            &[&HOLDER.to_uppercase().replace("0X", "0x"), &pending],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
    };
    // Independent: value = wei x price / 10^18, collateral = value x bps / 10^4.
    let price = BigInt::from_str("261387654321").unwrap(); // scale 8
    let expect = |wei: &str| {
        let value = BigInt::from_str(wei).unwrap() * &price; // scale 18 + 8
        let collateral = &value * BigInt::from(8050); // scale 30
        (decimal(&value, 26), decimal(&collateral, 30))
    };
    let (value, collateral) = expect(confirmed);
    assert_eq!(
        got(c, false),
        vec![(
            TOKEN.to_string(),
            confirmed.to_string(),
            value.clone(),
            collateral.clone(),
            false
        )],
        "confirmed balance only; the negative OTHER balance counts zero and is left out"
    );
    let with_pending = "13845678901234567891";
    let (value_p, collateral_p) = expect(with_pending);
    assert_eq!(
        got(c, true),
        vec![(
            TOKEN.to_string(),
            with_pending.to_string(),
            value_p,
            collateral_p,
            false
        )]
    );
    let summary = c
        .query_one(
            "SELECT tokens, value_usd::text, collateral_value_usd::text, liquidation_value_usd::text, stale_prices
               FROM balance_queue.get_collateral_summary($1, 'aave')",
            &[&HOLDER],
        )
        .unwrap();
    let liquidation = decimal(
        &(BigInt::from_str(confirmed).unwrap() * &price * BigInt::from(8300)),
        30,
    );
    assert_eq!(
        (
            summary.get::<_, i32>(0),
            summary.get::<_, String>(1),
            summary.get::<_, String>(2),
            summary.get::<_, String>(3),
            summary.get::<_, i32>(4)
        ),
        (1, value, collateral, liquidation, 0)
    );

    // A stale price gives zero collateral, and says so.
    c.batch_execute(&format!(
        "UPDATE balance_queue.token_metadata
            SET price_source = 'feed', price_observed_at = now() - interval '2 days', price_max_age = interval '25 hours'
          WHERE chain_id = 1 AND contract_address = '{TOKEN}'"
    ))
    .unwrap();
    let stale = got(c, false);
    assert_eq!((stale[0].3.as_str(), stale[0].4), ("0", true));

    for (sql, code) in [
        (
            format!("SELECT balance_queue.set_collateral_factor('aave', 1, '{TOKEN}', 9000, 8000)"),
            "22023",
        ),
        (
            "SELECT * FROM balance_queue.get_collateral_value('0x12')".to_string(),
            "22P02",
        ),
    ] {
        assert_eq!(common::sqlstate(c, &sql), code, "{sql}");
    }
}
