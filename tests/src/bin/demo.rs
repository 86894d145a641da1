//! The balance_queue demo: a throwaway Postgres cluster, a rindexer-shaped
//! Transfer table, the extension attached, transfers loaded the way
//! rindexer writes them, the queue drained, top holders printed, and every
//! balance checked against an independent recomputation from the raw rows.
//! Then the chain is rebuilt with `handle_reorg(1, 0)` and the background
//! worker re-applies it through the bulk path, its progress printed from
//! `source_progress` and `bulk_loads`, and every balance is checked again.
//!
//! Usage: demo [--csv PATH] [--transfers N] [--batch N] [--drain-batch N] [--replay-percent P]
//!   --csv PATH          load a rindexer CSV export instead of the generated workload
//!   --transfers N       generated transfers (default 100000)
//!   --batch N           rows per rindexer batch (default 5000; >100 uses binary COPY)
//!   --drain-batch N     transfers per process_balance_update_queue call (default 5000)
//!   --replay-percent P  re-send the first P% of each batch, as rindexer does after a crash (default 2)

use balance_queue_harness::cluster::Cluster;
use balance_queue_harness::recompute::{self, Source};
use balance_queue_harness::rindexer::{self, TransferRow};
use balance_queue_harness::{data, drain, workload};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

struct Args {
    csv: Option<PathBuf>,
    transfers: usize,
    batch: usize,
    drain_batch: i32,
    replay_percent: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        csv: None,
        transfers: 100_000,
        batch: 5000,
        drain_batch: 5000,
        replay_percent: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--csv" => args.csv = Some(PathBuf::from(value())),
            "--transfers" => args.transfers = value().parse().expect("--transfers N"),
            "--batch" => args.batch = value().parse().expect("--batch N"),
            "--drain-batch" => args.drain_batch = value().parse().expect("--drain-batch N"),
            "--replay-percent" => {
                args.replay_percent = value().parse().expect("--replay-percent P")
            }
            "-h" | "--help" => {
                println!(
                    "{}",
                    include_str!("demo.rs")
                        .lines()
                        .skip(6)
                        .take(7)
                        .map(|l| l.trim_start_matches("//! "))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}; see --help"),
        }
    }
    args
}

fn rate(count: usize, seconds: f64) -> String {
    format!("{:.0}/s", count as f64 / seconds.max(1e-9))
}

fn main() {
    let args = parse_args();
    println!("== balance_queue demo ==");
    // The worker is preloaded but paused: the first drain is the manual
    // one, the rebuild at the end is the worker's.
    let cluster = Cluster::start(
        "demo",
        &[
            "shared_preload_libraries = 'balance_queue'",
            "balance_queue.database = 'demo'",
            "balance_queue.enabled = off",
            "balance_queue.bulk_threshold = 1000",
        ],
    );
    let mut client = cluster.database_with_extension("demo");
    let version: String = client.query_one("SHOW server_version", &[]).unwrap().get(0);
    println!("cluster      throwaway Postgres {version}, extension balance_queue created");

    let (schema, rows, description) = match &args.csv {
        Some(path) => {
            let rows = data::read_rindexer_csv(path);
            (
                "rindexer_playground_rocket_pool_eth".to_string(),
                rows,
                format!("rindexer CSV export {}", path.display()),
            )
        }
        None => {
            let shape = workload::Shape {
                transfers: args.transfers,
                ..Default::default()
            };
            let rows = workload::generate(&shape);
            let text = format!(
                "generated: {} transfers, {} tokens, {} skewed holders, mints, burns, self-transfers, values up to 2^256-1",
                shape.transfers, shape.tokens, shape.holders
            );
            ("rindexer_demo_erc_20".to_string(), rows, text)
        }
    };
    let table = format!("{schema}.transfer");
    rindexer::create_transfer_table(&mut client, &schema);
    client
        .query_one(
            "SELECT balance_queue.attach_transfer_table($1::text::regclass)",
            &[&table],
        )
        .expect("attach_transfer_table");
    println!("source       {table} (rindexer DDL), attached with statement triggers");
    println!("workload     {description}");
    register_tokens(&mut client, &rows);

    // Ingest: rindexer-sized batches; the head of each batch is sent again,
    // as rindexer does after a crash between its insert and its checkpoint.
    let started = Instant::now();
    let mut sent = 0usize;
    let mut replayed = 0usize;
    for chunk in rows.chunks(args.batch.max(1)) {
        rindexer::write_batch(&mut client, &table, chunk).expect("ingest batch");
        sent += chunk.len();
        let replay = &chunk[..chunk.len() * args.replay_percent.min(100) / 100];
        rindexer::write_batch(&mut client, &table, replay).expect("replayed batch");
        replayed += replay.len();
    }
    let ingest = started.elapsed().as_secs_f64();
    let queued: i64 = client
        .query_one(
            "SELECT count(*) FROM balance_queue.balance_update_queue",
            &[],
        )
        .unwrap()
        .get(0);
    println!(
        "ingest       {} rows + {} replayed duplicates in batches of {} (binary COPY; replays by INSERT): {:.2} s ({}), {} queue items",
        sent,
        replayed,
        args.batch,
        ingest,
        rate(sent + replayed, ingest),
        queued
    );

    let started = Instant::now();
    let (processed, failed) = drain(&mut client, args.drain_batch);
    let drain_secs = started.elapsed().as_secs_f64();
    println!(
        "drain        {processed} items ({failed} failed) standing for {} rows, in batches of {} transfers: {:.2} s ({})",
        sent + replayed,
        args.drain_batch,
        drain_secs,
        rate(sent + replayed, drain_secs)
    );
    println!(
        "end to end   {:.2} s from first row to current balances",
        ingest + drain_secs
    );

    print_queue_counts(&mut client);
    print_top_holders(&mut client);

    check(&mut client, &table, "check");
    rebuild(&mut client);
    check(&mut client, &table, "re-check");
}

/// Rebuilds chain 1 with `handle_reorg(1, 0)` and lets the background
/// worker re-apply it (the bulk path: the chain is empty and the backlog
/// above the demo's `bulk_threshold`), printing its progress.
fn rebuild(client: &mut postgres::Client) {
    let started = Instant::now();
    let requeued: i64 = client
        .query_one(
            "SELECT items_requeued FROM balance_queue.handle_reorg(1, 0)",
            &[],
        )
        .unwrap()
        .get(0);
    println!(
        "rebuild      handle_reorg(1, 0): chain 1 forgotten, {requeued} rows queued again; worker enabled"
    );
    set_worker_enabled(client, true);
    let mut last_print = Instant::now() - Duration::from_secs(1);
    loop {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM balance_queue.balance_update_queue WHERE status = 'pending'",
                &[],
            )
            .unwrap()
            .get(0);
        if waiting == 0 || last_print.elapsed() >= Duration::from_millis(500) {
            print_progress(client);
            last_print = Instant::now();
        }
        if waiting == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for r in client
        .query(
            "SELECT id, status, transfers_queued, coalesce(transfers_applied, 0), coalesce(balances_written, 0),
                    round(extract(epoch FROM finished_at - started_at)::numeric, 2)::text,
                    CASE WHEN indexes_rebuilt THEN ', indexes built after the rows' ELSE '' END
               FROM balance_queue.bulk_loads ORDER BY id",
            &[],
        )
        .unwrap()
    {
        println!(
            "bulk load    #{} {}: {} transfers queued, {} applied, {} balances written in {} s{}",
            r.get::<_, i64>(0),
            r.get::<_, String>(1),
            r.get::<_, i64>(2),
            r.get::<_, i64>(3),
            r.get::<_, i64>(4),
            r.get::<_, Option<String>>(5).unwrap_or_default(),
            r.get::<_, String>(6)
        );
    }
    println!(
        "rebuilt      in {:.2} s from the handle_reorg call to current balances",
        started.elapsed().as_secs_f64()
    );
    set_worker_enabled(client, false);
}

/// Sets `balance_queue.enabled` server-wide (ALTER SYSTEM cannot share a
/// statement with the reload: it refuses a transaction block).
fn set_worker_enabled(client: &mut postgres::Client, enabled: bool) {
    client
        .batch_execute(&format!(
            "ALTER SYSTEM SET balance_queue.enabled = {enabled}"
        ))
        .unwrap();
    client.batch_execute("SELECT pg_reload_conf()").unwrap();
}

/// One line per attached table from `source_progress`.
fn print_progress(client: &mut postgres::Client) {
    for r in client
        .query(
            "SELECT source_table::text, rows_queued, rows_applied, rows_waiting, rows_per_second::text,
                    coalesce(time_left::text, '?'),
                    coalesce(', a bulk load running for ' || date_trunc('second', now() - bulk_load_since)::text
                             || ' applies the waiting rows at once', '')
               FROM balance_queue.source_progress ORDER BY 1",
            &[],
        )
        .unwrap()
    {
        println!(
            "progress     {}: {} rows queued, {} applied, {} waiting, {} rows/s over the last minute, time left {}{}",
            r.get::<_, String>(0),
            r.get::<_, i64>(1),
            r.get::<_, i64>(2),
            r.get::<_, i64>(3),
            r.get::<_, String>(4),
            r.get::<_, String>(5),
            r.get::<_, String>(6)
        );
    }
}

/// Compares every balance with an independent recomputation from the raw
/// rows of `table`; exits non-zero on any difference.
fn check(client: &mut postgres::Client, table: &str, label: &str) {
    let expected = recompute::recompute(client, &[Source::rindexer(table)]);
    let out_of_range = recompute::out_of_range_keys(&expected);
    let comparison = recompute::compare(client, &expected, &out_of_range);
    let negative = expected
        .balances
        .values()
        .filter(|b| b.sign() == num_bigint::Sign::Minus)
        .count();
    println!(
        "{label:<12} {} of {} balances match an independent recomputation from the raw rows \
         ({} distinct transfers, {} duplicate rows counted once, {} negative balances kept as is{})",
        comparison.matching,
        comparison.keys,
        expected.distinct_transfers,
        expected.duplicate_rows,
        negative,
        if out_of_range.is_empty() {
            String::new()
        } else {
            format!(", {} keys out of uint256 range", out_of_range.len())
        }
    );
    for (key, want, have) in &comparison.mismatches {
        println!("  MISMATCH {key:?}: expected {want}, stored {have}");
    }
    if !comparison.all_match() {
        std::process::exit(1);
    }
}

/// Registers token metadata for the tokens in the workload, as a user
/// would, so balances print in whole tokens.
fn register_tokens(client: &mut postgres::Client, rows: &[TransferRow]) {
    // Sorted, so a token gets the same demo symbol on every run.
    let tokens: BTreeSet<&str> = rows.iter().map(|r| r.contract_address.as_str()).collect();
    for (i, token) in tokens.into_iter().enumerate() {
        let (symbol, name) = if token == "0xae78736cd615f374d3085123a210448e74fc6393" {
            ("rETH".to_string(), "Rocket Pool ETH".to_string())
        } else {
            (format!("TKN{i}"), format!("Demo token {i}"))
        };
        client
            .execute(
                "INSERT INTO balance_queue.token_metadata (chain_id, contract_address, symbol, name, decimals)
                 VALUES (1, lower($1), $2, $3, 18) ON CONFLICT DO NOTHING",
                &[&token, &symbol, &name],
            )
            .expect("register token");
    }
}

fn print_queue_counts(client: &mut postgres::Client) {
    let counts: Vec<String> = client
        .query(
            "SELECT status, count(*) FROM balance_queue.balance_update_queue GROUP BY 1 ORDER BY 1",
            &[],
        )
        .unwrap()
        .into_iter()
        .map(|r| format!("{} {}", r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect();
    println!("queue        {}", counts.join(", "));
}

fn print_top_holders(client: &mut postgres::Client) {
    let tokens = client
        .query(
            "SELECT contract_address, coalesce(max(token_symbol), '?') FROM balance_queue.current_token_balances
              GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 3",
            &[],
        )
        .unwrap();
    for token in tokens {
        let (contract, symbol): (String, String) = (token.get(0), token.get(1));
        println!("top holders  {symbol} {contract}");
        for r in client
            .query(
                "SELECT rank, holder_address, balance_formatted FROM balance_queue.get_top_holders(1, $1, 5)",
                &[&contract],
            )
            .unwrap()
        {
            println!("  {:>2}. {}  {:>40} {symbol}", r.get::<_, i64>(0), r.get::<_, String>(1), r.get::<_, String>(2));
        }
    }
}
