//! The balance_queue benchmark: what users would otherwise run, on one
//! server, on the same generated rindexer-shaped workload.
//!
//! Usage: bench [--mode compare|drain|growth|queries|sustained|all] [options]
//!   --transfers N        compare, drain: workload size (default 1000000)
//!   --seed-cap S         compare: seconds the seed plan's drain may run before its rate is extrapolated (default 60)
//!   --history LIST       growth: history sizes, comma-separated (default 100000,1000000,10000000)
//!   --rate R             sustained: transfers per second (default 10000)
//!   --minutes M          sustained: duration (default 3)
//!   --workers N          balance_queue.workers per database (default: the extension's, 2)
//!   --batch N            balance_queue.batch_size, transfers per batch (default: the extension's)
//!   --set LINE           a postgresql.conf line for the bench server, e.g. 'work_mem = 1GB' (repeatable)
//!   --judge-every-block  drain: record a canonical hash for every block first, so every row is judged
//!   --out DIR            where results and the growth chart go (default bench-results)
//!
//! It measures and prints; it asserts nothing about timings. Every variant's
//! balances are checked against the independent recomputation, and a fast
//! wrong answer is reported as wrong.

use balance_queue_harness::cluster::Cluster;
use balance_queue_harness::recompute::{self, Expected, Source};
use balance_queue_harness::rindexer::{self, TransferRow};
use balance_queue_harness::workload;
use postgres::Client;
use postgres::error::SqlState;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

struct Args {
    mode: String,
    transfers: usize,
    seed_cap: u64,
    history: Vec<usize>,
    rate: usize,
    minutes: u64,
    /// postgresql.conf lines from --workers, --batch and --set.
    conf: Vec<String>,
    out: PathBuf,
    /// drain: every block has a canonical hash (the worst case of the
    /// orphan check: one lookup per row).
    judge_every_block: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        mode: "compare".into(),
        transfers: 1_000_000,
        seed_cap: 60,
        history: vec![100_000, 1_000_000, 10_000_000],
        rate: 10_000,
        minutes: 3,
        conf: Vec::new(),
        out: PathBuf::from("bench-results"),
        judge_every_block: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--mode" => a.mode = value(),
            "--transfers" => a.transfers = value().parse().expect("--transfers N"),
            "--seed-cap" => a.seed_cap = value().parse().expect("--seed-cap S"),
            "--history" => {
                a.history = value()
                    .split(',')
                    .map(|s| s.trim().parse().expect("--history N,N"))
                    .collect()
            }
            "--rate" => a.rate = value().parse().expect("--rate R"),
            "--minutes" => a.minutes = value().parse().expect("--minutes M"),
            "--out" => a.out = PathBuf::from(value()),
            "--set" => a.conf.push(value()),
            "--judge-every-block" => a.judge_every_block = true,
            "--workers" => a.conf.push(format!("balance_queue.workers = {}", value())),
            "--batch" => a
                .conf
                .push(format!("balance_queue.batch_size = {}", value())),
            "-h" | "--help" => {
                for line in include_str!("bench.rs").lines().skip(3).take(10) {
                    println!(
                        "{}",
                        line.trim_start_matches("//! ").trim_start_matches("//!")
                    );
                }
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}; see --help"),
        }
    }
    a
}

const ZERO: &str = "0x0000000000000000000000000000000000000000";
const BATCH: usize = 5000;

/// One server for every variant: the worker drains database `bench`.
/// A server for one mode: `conf` adds postgresql.conf lines (--workers, --batch).
fn start_cluster(name: &str, conf: &[String]) -> (Cluster, Client) {
    let mut lines = vec![
        "shared_preload_libraries = 'balance_queue'",
        "balance_queue.database = 'bench'",
        "shared_buffers = '2GB'",
        "max_wal_size = '8GB'",
        "checkpoint_timeout = '30min'",
        "work_mem = '64MB'",
        "maintenance_work_mem = '512MB'",
    ];
    lines.extend(conf.iter().map(String::as_str));
    let cluster = Cluster::start(name, &lines);
    let client = cluster.database_with_extension("bench");
    (cluster, client)
}

/// Writes `rows` the rindexer way, re-sending the first 1% of each batch
/// (its crash replay). Returns the seconds taken.
fn ingest(client: &mut Client, table: &str, rows: &[TransferRow]) -> f64 {
    let started = Instant::now();
    for chunk in rows.chunks(BATCH) {
        rindexer::write_batch(client, table, chunk).expect("ingest");
        rindexer::write_batch(client, table, &chunk[..chunk.len() / 100]).expect("replay");
    }
    started.elapsed().as_secs_f64()
}

fn scalar(client: &mut Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

fn wait_for_worker(client: &mut Client) -> f64 {
    let started = Instant::now();
    while scalar(
        client,
        "SELECT count(*) FROM balance_queue.balance_update_queue WHERE status = 'pending'",
    ) > 0
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    started.elapsed().as_secs_f64()
}

struct Outcome {
    name: &'static str,
    ingest_s: f64,
    current_s: Option<f64>,
    note: String,
    correctness: String,
}

fn check(client: &mut Client, expected: &Expected, stored_sql: &str) -> String {
    let c = recompute::compare_with(client, expected, &HashSet::new(), stored_sql);
    if c.all_match() {
        format!("{} of {} exact", c.matching, c.keys)
    } else {
        format!("WRONG: {} of {} keys differ", c.keys - c.matching, c.keys)
    }
}

/// [`check`] of balance_queue's balances.
fn check_balances(client: &mut Client, expected: &Expected) -> String {
    check(
        client,
        expected,
        "SELECT chain_id, contract_address, holder_address, current_balance::text FROM balance_queue.current_token_balances",
    )
}

fn table_for(client: &mut Client, schema: &str) -> String {
    rindexer::create_transfer_table(client, schema);
    format!("{schema}.transfer")
}

fn bare_copy(client: &mut Client, rows: &[TransferRow]) -> Outcome {
    let table = table_for(client, "bench_bare");
    let s = ingest(client, &table, rows);
    Outcome {
        name: "bare COPY (floor)",
        ingest_s: s,
        current_s: Some(0.0),
        note: String::new(),
        correctness: "n/a".into(),
    }
}

/// The seed plan in PL/pgSQL: a row trigger queues both parties; the drain
/// recalculates each queued balance from the whole history (indexed).
fn seed_plan(
    client: &mut Client,
    rows: &[TransferRow],
    expected: &Expected,
    cap: Duration,
) -> Outcome {
    let table = table_for(client, "bench_seed");
    client
        .batch_execute(&format!(
            "CREATE INDEX ON {table} (contract_address, \"from\");
             CREATE INDEX ON {table} (contract_address, \"to\");
             CREATE TABLE bench_seed.queue (id bigserial PRIMARY KEY, contract_address char(42), holder_address char(42),
                                            status text NOT NULL DEFAULT 'pending', created_at timestamptz DEFAULT now());
             CREATE INDEX ON bench_seed.queue (id) WHERE status = 'pending';
             CREATE TABLE bench_seed.balances (contract_address char(42), holder_address char(42), balance numeric,
                                               PRIMARY KEY (contract_address, holder_address));
             CREATE FUNCTION bench_seed.queue_both() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF NEW.\"from\" <> '{ZERO}' THEN
                 INSERT INTO bench_seed.queue (contract_address, holder_address) VALUES (NEW.contract_address, NEW.\"from\");
               END IF;
               IF NEW.\"to\" <> '{ZERO}' THEN
                 INSERT INTO bench_seed.queue (contract_address, holder_address) VALUES (NEW.contract_address, NEW.\"to\");
               END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER queue_both AFTER INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION bench_seed.queue_both();
             CREATE FUNCTION bench_seed.process(p_batch integer) RETURNS integer LANGUAGE plpgsql AS $$
             DECLARE r record; n integer := 0;
             BEGIN
               FOR r IN SELECT id, contract_address, holder_address FROM bench_seed.queue
                         WHERE status = 'pending' ORDER BY id LIMIT p_batch FOR UPDATE SKIP LOCKED LOOP
                 INSERT INTO bench_seed.balances AS b
                 SELECT r.contract_address, r.holder_address,
                        coalesce((SELECT sum(value::numeric) FROM {table}
                                   WHERE contract_address = r.contract_address AND \"to\" = r.holder_address), 0)
                      - coalesce((SELECT sum(value::numeric) FROM {table}
                                   WHERE contract_address = r.contract_address AND \"from\" = r.holder_address), 0)
                 ON CONFLICT (contract_address, holder_address) DO UPDATE SET balance = EXCLUDED.balance;
                 UPDATE bench_seed.queue SET status = 'completed' WHERE id = r.id;
                 n := n + 1;
               END LOOP;
               RETURN n;
             END $$;"
        ))
        .expect("seed plan DDL");
    let ingest_s = ingest(client, &table, rows);
    let items = scalar(client, "SELECT count(*) FROM bench_seed.queue");
    let started = Instant::now();
    let mut done = 0i64;
    while started.elapsed() < cap {
        let n: i32 = client
            .query_one("SELECT bench_seed.process(100)", &[])
            .unwrap()
            .get(0);
        if n == 0 {
            break;
        }
        done += i64::from(n);
    }
    let spent = started.elapsed().as_secs_f64();
    let finished = done >= items;
    let (current_s, note, correctness) = if finished {
        (
            Some(spent),
            String::new(),
            check(
                client,
                expected,
                "SELECT 1, contract_address::text, holder_address::text, balance::text FROM bench_seed.balances",
            ),
        )
    } else {
        let rate = done as f64 / spent;
        (
            Some(items as f64 / rate.max(1e-9)),
            format!(
                "drain capped at {spent:.0} s: {done} of {items} items at {rate:.0} items/s, extrapolated"
            ),
            "not checked (capped); recounts duplicated rows".into(),
        )
    };
    Outcome {
        name: "seed plan (PL/pgSQL, recalc from history)",
        ingest_s,
        current_s,
        note,
        correctness,
    }
}

/// A row trigger upserting +value/-value (rindexer `tables:`, most tutorials).
fn row_upsert(client: &mut Client, rows: &[TransferRow], expected: &Expected) -> Outcome {
    let table = table_for(client, "bench_upsert");
    client
        .batch_execute(&format!(
            "CREATE TABLE bench_upsert.balances (contract_address text, holder_address text, balance numeric,
                                                 PRIMARY KEY (contract_address, holder_address));
             CREATE FUNCTION bench_upsert.apply() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF NEW.\"from\" <> '{ZERO}' THEN
                 INSERT INTO bench_upsert.balances AS b VALUES (NEW.contract_address, NEW.\"from\", -NEW.value::numeric)
                 ON CONFLICT (contract_address, holder_address) DO UPDATE SET balance = b.balance + EXCLUDED.balance;
               END IF;
               IF NEW.\"to\" <> '{ZERO}' THEN
                 INSERT INTO bench_upsert.balances AS b VALUES (NEW.contract_address, NEW.\"to\", NEW.value::numeric)
                 ON CONFLICT (contract_address, holder_address) DO UPDATE SET balance = b.balance + EXCLUDED.balance;
               END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER apply AFTER INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION bench_upsert.apply();"
        ))
        .expect("upsert DDL");
    let ingest_s = ingest(client, &table, rows);
    let correctness = check(
        client,
        expected,
        "SELECT 1, contract_address, holder_address, balance::text FROM bench_upsert.balances",
    );
    Outcome {
        name: "row trigger upsert (+value/-value)",
        ingest_s,
        current_s: Some(0.0),
        note: String::new(),
        correctness,
    }
}

fn mv_sql(table: &str, schema: &str) -> String {
    format!(
        "CREATE MATERIALIZED VIEW {schema}.balances AS
         SELECT contract_address::text AS contract_address, holder::text AS holder_address, sum(delta) AS balance
           FROM (SELECT contract_address, \"to\" AS holder, value::numeric AS delta FROM {table}
                 UNION ALL
                 SELECT contract_address, \"from\", -value::numeric FROM {table}) s
          WHERE holder <> '{ZERO}'
          GROUP BY 1, 2
         WITH NO DATA"
    )
}

/// A materialized view of SUM(delta) GROUP BY holder, refreshed after the load.
fn materialized_view(client: &mut Client, rows: &[TransferRow], expected: &Expected) -> Outcome {
    let table = table_for(client, "bench_mv");
    client
        .batch_execute(&mv_sql(&table, "bench_mv"))
        .expect("mv DDL");
    let ingest_s = ingest(client, &table, rows);
    let started = Instant::now();
    client
        .batch_execute("REFRESH MATERIALIZED VIEW bench_mv.balances")
        .unwrap();
    let refresh = started.elapsed().as_secs_f64();
    let correctness = check(
        client,
        expected,
        "SELECT 1, contract_address, holder_address, balance::text FROM bench_mv.balances",
    );
    Outcome {
        name: "materialized view, refreshed",
        ingest_s,
        current_s: Some(refresh),
        note: String::new(),
        correctness,
    }
}

/// balance_queue attached, the background worker draining.
fn balance_queue(client: &mut Client, rows: &[TransferRow], expected: &Expected) -> Outcome {
    let table = table_for(client, "bench_bq");
    client
        .execute(
            "SELECT balance_queue.attach_transfer_table($1::text::regclass)",
            &[&table],
        )
        .unwrap();
    let ingest_s = ingest(client, &table, rows);
    let after = wait_for_worker(client);
    let correctness = check_balances(client, expected);
    Outcome {
        name: "balance_queue (statement triggers + worker)",
        ingest_s,
        current_s: Some(after),
        note: "worker drains during ingest; 'until current' counts from the end of ingest".into(),
        correctness,
    }
}

/// Sets balance_queue.enabled server-wide and waits for the reload.
fn set_worker_enabled(client: &mut Client, enabled: bool) {
    client
        .batch_execute(&format!(
            "ALTER SYSTEM SET balance_queue.enabled = {enabled}"
        ))
        .unwrap();
    client.batch_execute("SELECT pg_reload_conf()").unwrap();
    std::thread::sleep(Duration::from_millis(500));
}

/// Forgets every balance, ledger row and queue item, so the next variant
/// starts from the same empty state as the first.
fn reset_balance_queue(client: &mut Client) {
    // TRUNCATE locks its tables one after another; the worker's maintenance
    // (the leaderboard refresh, health metrics) reading two of them in the
    // other order can make Postgres cancel it as a deadlock (40P01). The
    // victim's transaction is rolled back whole, so it is tried again.
    for attempt in 1.. {
        match client.batch_execute(
            "TRUNCATE balance_queue.current_token_balances, balance_queue.applied_transfers,
                      balance_queue.unconfirmed_transfer_sides, balance_queue.balance_update_queue;
             UPDATE balance_queue.chain_registry SET head_block = NULL;",
        ) {
            Ok(()) => break,
            Err(e) if attempt < 5 && e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED) => {}
            Err(e) => panic!("resetting balance_queue: {e}"),
        }
    }
    client.batch_execute("VACUUM ANALYZE").unwrap();
}

/// balance_queue with the worker paused during ingest: the triggers' own
/// cost on the indexer's COPY, then one worker draining the whole backlog.
fn balance_queue_backlog(
    client: &mut Client,
    rows: &[TransferRow],
    expected: &Expected,
) -> Outcome {
    reset_balance_queue(client);
    let table = table_for(client, "bench_bq_backlog");
    client
        .execute(
            "SELECT balance_queue.attach_transfer_table($1::text::regclass)",
            &[&table],
        )
        .unwrap();
    set_worker_enabled(client, false);
    let ingest_s = ingest(client, &table, rows);
    let started = Instant::now();
    set_worker_enabled(client, true);
    wait_for_worker(client);
    let drain_s = started.elapsed().as_secs_f64();
    let correctness = check_balances(client, expected);
    Outcome {
        name: "balance_queue, worker paused during ingest",
        ingest_s,
        current_s: Some(drain_s),
        note: format!(
            "ingest = the triggers' cost alone; then one worker drains the backlog at {:.0} transfers/s",
            rows.len() as f64 / drain_s
        ),
        correctness,
    }
}

/// Sets `balance_queue.bulk_threshold` server-wide (0 = never bulk).
fn set_bulk_threshold(client: &mut Client, threshold: i64) {
    client
        .batch_execute(&format!(
            "ALTER SYSTEM SET balance_queue.bulk_threshold = {threshold}"
        ))
        .unwrap();
    client.batch_execute("SELECT pg_reload_conf()").unwrap();
    std::thread::sleep(Duration::from_millis(500));
}

/// The status and duration of the newest bulk load, for the report.
fn last_bulk_load(client: &mut Client) -> String {
    client
        .query_opt(
            "SELECT concat_ws(', ', status, transfers_applied || ' transfers',
                              round(extract(epoch FROM finished_at - started_at)::numeric, 2) || ' s',
                              CASE WHEN indexes_rebuilt THEN 'indexes built after' END, message)
               FROM balance_queue.bulk_loads ORDER BY id DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .and_then(|r| r.get::<_, Option<String>>(0))
        .unwrap_or_else(|| "no bulk load".into())
}

/// The drain alone, on the same workload: bare COPY (the floor and the
/// recomputation); a first attach of that table, already holding every
/// row (backfill); then the triggers' ingest with the worker paused and
/// the worker(s) draining the backlog, once with the bulk path and once
/// batch by batch (`bulk_threshold = 0`).
fn drain(args: &Args) -> String {
    let (_cluster, mut client) = start_cluster("bench-drain", &args.conf);
    let shape = workload::Shape {
        transfers: args.transfers,
        tokens: 200,
        holders: 100_000,
        ..Default::default()
    };
    let rows = workload::generate(&shape);
    let workers = scalar(
        &mut client,
        "SELECT current_setting('balance_queue.workers')::bigint",
    );
    let bare = bare_copy(&mut client, &rows);
    let expected = recompute::recompute(&mut client, &[Source::rindexer("bench_bare.transfer")]);
    let floor = bare.ingest_s;
    let judged = if args.judge_every_block {
        // An operator's hashes are kept however old (rindexer's follow its
        // window): every row of every run looks its block up.
        let blocks = client
            .execute(
                "INSERT INTO balance_queue.canonical_block_hashes (chain_id, block_number, block_hash, recorded_by)
                 SELECT DISTINCT 1, block_number::bigint, lower(block_hash::text), 'operator'
                   FROM bench_bare.transfer",
                &[],
            )
            .unwrap();
        format!(
            " Every one of the {blocks} blocks has a canonical hash recorded: each row is judged."
        )
    } else {
        String::new()
    };
    let mut md = String::new();
    writeln!(
        md,
        "{} transfers, {} worker(s); bare COPY {:.2} s (the floor).{judged}\n\n\
         | run | ingest (s) | until current (s) | transfers/s drained | end to end × bare COPY | target | balances | bulk load |\n\
         |---|---:|---:|---:|---:|---|---|---|",
        rows.len(),
        workers,
        floor
    )
    .unwrap();

    // First attach of a table that already holds the history.
    reset_balance_queue(&mut client);
    let started = Instant::now();
    client
        .execute(
            "SELECT balance_queue.attach_transfer_table('bench_bare.transfer'::regclass)",
            &[],
        )
        .unwrap();
    let attach_s = started.elapsed().as_secs_f64();
    let current_s = wait_for_worker(&mut client);
    let correctness = check_balances(&mut client, &expected);
    writeln!(
        md,
        "| first attach (backfill) of the COPYed table | {attach_s:.2} (attach) | {current_s:.2} | {:.0} | {:.2} | ≤ 3× | {correctness} | {} |",
        rows.len() as f64 / current_s,
        (floor + attach_s + current_s) / floor,
        last_bulk_load(&mut client)
    )
    .unwrap();
    client
        .execute(
            "SELECT balance_queue.detach_transfer_table('bench_bare.transfer'::regclass)",
            &[],
        )
        .unwrap();

    let mut runs = vec![("backlog, bulk path (default threshold)", None)];
    runs.push(("backlog, batch by batch (bulk_threshold = 0)", Some(0)));
    for (i, (name, threshold)) in runs.into_iter().enumerate() {
        if let Some(t) = threshold {
            set_bulk_threshold(&mut client, t);
        }
        let schema = format!("bench_backlog_{i}");
        let table = table_for(&mut client, &schema);
        reset_balance_queue(&mut client);
        client
            .execute(
                "SELECT balance_queue.attach_transfer_table($1::text::regclass)",
                &[&table],
            )
            .unwrap();
        set_worker_enabled(&mut client, false);
        let ingest_s = ingest(&mut client, &table, &rows);
        let started = Instant::now();
        set_worker_enabled(&mut client, true);
        wait_for_worker(&mut client);
        let drain_s = started.elapsed().as_secs_f64();
        let correctness = check_balances(&mut client, &expected);
        let target = if threshold.is_some() {
            if workers == 1 {
                "≥ 50,000/s"
            } else {
                "≥ 75,000/s"
            }
        } else {
            "≤ 5×"
        };
        writeln!(
            md,
            "| {name} | {ingest_s:.2} | {drain_s:.2} | {:.0} | {:.2} | {target} | {correctness} | {} |",
            rows.len() as f64 / drain_s,
            (ingest_s + drain_s) / floor,
            if threshold.is_some() { "-".to_string() } else { last_bulk_load(&mut client) }
        )
        .unwrap();
        client
            .execute(
                "SELECT balance_queue.detach_transfer_table($1::text::regclass)",
                &[&table],
            )
            .unwrap();
    }
    writeln!(
        md,
        "\nIngest with the triggers (worker paused) is the triggers' cost alone (target ≤ 1.5× bare COPY); \
         'until current' counts from the end of ingest (backlog) or of the attach call (backfill)."
    )
    .unwrap();
    md
}

fn compare(args: &Args) -> String {
    let (_cluster, mut client) = start_cluster("bench-compare", &args.conf);
    let version: String = client.query_one("SHOW server_version", &[]).unwrap().get(0);
    let shape = workload::Shape {
        transfers: args.transfers,
        tokens: 200,
        holders: 100_000,
        ..Default::default()
    };
    let rows = workload::generate(&shape);
    println!(
        "workload: {} transfers, {} tokens, {} holders, batches of {BATCH} (binary COPY) + 1% replayed",
        rows.len(),
        shape.tokens,
        shape.holders
    );
    let mut outcomes = vec![bare_copy(&mut client, &rows)];
    let expected = recompute::recompute(&mut client, &[Source::rindexer("bench_bare.transfer")]);
    println!(
        "{:<48} ingest {:>7.2} s",
        outcomes[0].name, outcomes[0].ingest_s
    );
    type Variant = fn(&mut Client, &[TransferRow], &Expected) -> Outcome;
    let variants: [Variant; 4] = [
        balance_queue,
        balance_queue_backlog,
        row_upsert,
        materialized_view,
    ];
    for variant in variants {
        let o = variant(&mut client, &rows, &expected);
        println!(
            "{:<48} ingest {:>7.2} s, current after {:>8.2} s  {}",
            o.name,
            o.ingest_s,
            o.current_s.unwrap_or(f64::NAN),
            o.correctness
        );
        if !o.note.is_empty() {
            println!("{:<48} {}", "", o.note);
        }
        outcomes.push(o);
    }
    let o = seed_plan(
        &mut client,
        &rows,
        &expected,
        Duration::from_secs(args.seed_cap),
    );
    println!(
        "{:<48} ingest {:>7.2} s, current after {:>8.2} s  {} {}",
        o.name,
        o.ingest_s,
        o.current_s.unwrap_or(f64::NAN),
        o.correctness,
        o.note
    );
    outcomes.push(o);

    let floor = outcomes[0].ingest_s;
    let bq_end_to_end = outcomes[1].ingest_s + outcomes[1].current_s.unwrap_or(0.0);
    let mut md = String::new();
    writeln!(
        md,
        "Postgres {version}; {} transfers ({} rows with replays); one server, one run.\n",
        rows.len(),
        rows.len() + rows.chunks(BATCH).map(|c| c.len() / 100).sum::<usize>()
    )
    .unwrap();
    writeln!(md, "| variant | ingest (s) | until current (s) | end to end (s) | transfers/s end to end | × bare COPY | balances |").unwrap();
    writeln!(md, "|---|---:|---:|---:|---:|---:|---|").unwrap();
    for o in &outcomes {
        let total = o.ingest_s + o.current_s.unwrap_or(0.0);
        writeln!(
            md,
            "| {} | {:.2} | {:.2} | {:.2} | {:.0} | {:.1} | {}{} |",
            o.name,
            o.ingest_s,
            o.current_s.unwrap_or(f64::NAN),
            total,
            rows.len() as f64 / total,
            total / floor,
            o.correctness,
            if o.note.is_empty() {
                String::new()
            } else {
                format!("; {}", o.note)
            }
        )
        .unwrap();
    }
    let seed_total = outcomes[5].ingest_s + outcomes[5].current_s.unwrap_or(0.0);
    let backlog = &outcomes[2];
    writeln!(md, "\nbalance_queue: ingest {:.2}× bare COPY with the worker draining alongside on the same 2 cores, {:.2}× with it paused; \
                  the worker(s) drain a {}-transfer backlog at {:.0} transfers/s; end to end {:.2}× bare COPY, {:.1}× faster than the seed plan end to end. \
                  Targets: ingest ≤ 1.5× bare COPY; end to end ≤ 5× with the worker(s) draining during ingest.",
        outcomes[1].ingest_s / floor, backlog.ingest_s / floor, rows.len(),
        rows.len() as f64 / backlog.current_s.unwrap_or(f64::NAN), bq_end_to_end / floor, seed_total / bq_end_to_end).unwrap();
    md
}

/// The cost of applying the next 10,000 transfers on top of growing
/// history, for balance_queue and for a materialized view refresh.
fn growth(args: &Args) -> String {
    let (_cluster, mut client) = start_cluster("bench-growth", &args.conf);
    let max = *args.history.iter().max().unwrap();
    let step = 10_000;
    let rows = workload::generate(&workload::Shape {
        transfers: max + step * args.history.len(),
        tokens: 500,
        holders: 500_000,
        ..Default::default()
    });
    let bq = table_for(&mut client, "growth_bq");
    client
        .execute(
            "SELECT balance_queue.attach_transfer_table($1::text::regclass)",
            &[&bq],
        )
        .unwrap();
    let mv = table_for(&mut client, "growth_mv");
    client.batch_execute(&mv_sql(&mv, "growth_mv")).unwrap();
    let mut points = Vec::new();
    let mut loaded = 0usize;
    let mut sizes = args.history.clone();
    sizes.sort();
    for history in sizes {
        // Load history up to the size (both tables), let the worker catch up.
        let part = &rows[loaded..history.max(loaded)];
        for chunk in part.chunks(BATCH) {
            rindexer::write_batch(&mut client, &bq, chunk).unwrap();
            rindexer::write_batch(&mut client, &mv, chunk).unwrap();
        }
        loaded = loaded.max(history);
        wait_for_worker(&mut client);
        client.batch_execute("VACUUM ANALYZE").unwrap();
        let next = &rows[loaded..loaded + step];
        let started = Instant::now();
        rindexer::write_all(&mut client, &bq, next, BATCH).unwrap();
        wait_for_worker(&mut client);
        let bq_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        rindexer::write_all(&mut client, &mv, next, BATCH).unwrap();
        client
            .batch_execute("REFRESH MATERIALIZED VIEW growth_mv.balances")
            .unwrap();
        let mv_s = started.elapsed().as_secs_f64();
        loaded += step;
        println!(
            "history {history:>9}: next {step} transfers: balance_queue {:.3} s, materialized view {:.3} s",
            bq_s, mv_s
        );
        points.push((history, bq_s, mv_s));
    }
    std::fs::create_dir_all(&args.out).unwrap();
    let chart = args.out.join("growth.png");
    draw_growth(&chart, &points);
    let mut md = String::from(
        "| history (transfers) | balance_queue: next 10,000 (s) | × at the smallest history (target ≤ 1.2×) | materialized view refresh (s) | view ÷ balance_queue (target ≥ 100× at 10M) |\n|---:|---:|---:|---:|---:|\n",
    );
    let first = points.first().map_or(f64::NAN, |p| p.1);
    for (h, b, m) in &points {
        writeln!(
            md,
            "| {h} | {b:.3} | {:.2}× | {m:.3} | {:.0}× |",
            b / first,
            m / b
        )
        .unwrap();
    }
    writeln!(md, "\nChart: {}", chart.display()).unwrap();

    // A rebuild of the whole chain from the history now in the table.
    let transfers = scalar(&mut client, &format!("SELECT count(*) FROM {bq}"));
    let started = Instant::now();
    let requeued = scalar(
        &mut client,
        "SELECT items_requeued FROM balance_queue.handle_reorg(1, 0)",
    );
    let call_s = started.elapsed().as_secs_f64();
    wait_for_worker(&mut client);
    let rebuild_s = started.elapsed().as_secs_f64();
    let expected = recompute::recompute(&mut client, &[Source::rindexer(&bq)]);
    let correctness = check_balances(&mut client, &expected);
    writeln!(
        md,
        "\nRebuild: `handle_reorg(1, 0)` of the chain's {transfers} rows ({requeued} rows queued again): \
         {call_s:.1} s in the call, {rebuild_s:.1} s until every balance is current ({:.0} rows/s); balances {correctness}; \
         bulk load: {}.",
        transfers as f64 / rebuild_s,
        last_bulk_load(&mut client)
    )
    .unwrap();
    md
}

fn draw_growth(path: &PathBuf, points: &[(usize, f64, f64)]) {
    use plotters::prelude::*;
    let font = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
        .expect("fonts-dejavu-core (scripts/setup.sh installs it)");
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .ok();
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let x_max = points.iter().map(|p| p.0).max().unwrap_or(1) as f64 * 1.2;
    let y_max = points.iter().map(|p| p.2.max(p.1)).fold(0.0, f64::max) * 1.5;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Cost of applying the next 10,000 transfers",
            ("sans-serif", 24),
        )
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (50_000f64..x_max).log_scale(),
            (0.001f64..y_max.max(0.01)).log_scale(),
        )
        .unwrap();
    chart
        .configure_mesh()
        .x_desc("transfers of history")
        .y_desc("seconds")
        .x_label_formatter(&|x| format!("{:.0e}", x))
        .draw()
        .unwrap();
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p.0 as f64, p.1)),
            BLUE.stroke_width(3),
        ))
        .unwrap()
        .label("balance_queue (ingest + worker)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(3)));
    chart
        .draw_series(
            points
                .iter()
                .map(|p| Circle::new((p.0 as f64, p.1), 5, BLUE.filled())),
        )
        .unwrap();
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p.0 as f64, p.2)),
            RED.stroke_width(3),
        ))
        .unwrap()
        .label("materialized view REFRESH")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(3)));
    chart
        .draw_series(
            points
                .iter()
                .map(|p| Circle::new((p.0 as f64, p.2), 5, RED.filled())),
        )
        .unwrap();
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .unwrap();
    root.present().unwrap();
}

/// Server-side latency percentiles of the reading functions.
fn queries(args: &Args) -> String {
    let (_cluster, mut client) = start_cluster("bench-queries", &args.conf);
    let big_token = "0x1000000000000000000000000000000000000001";
    let whale = "0x2000000000000000000000000000000000000002";
    client
        .batch_execute(&format!(
            "INSERT INTO balance_queue.token_metadata (chain_id, contract_address, symbol, decimals, price_usd)
             VALUES (1, '{big_token}', 'BIG', 18, 2);
             -- one token with 1,000,000 holders
             INSERT INTO balance_queue.current_token_balances
                 (chain_id, contract_address, holder_address, current_balance, last_updated_block, token_symbol, token_decimals)
             SELECT 1, '{big_token}', '0x' || lpad(to_hex(g), 40, '0'), (g::numeric * 1000003) % 1000000000000000000000,
                    19000000, 'BIG', 18
               FROM generate_series(1, 1000000) g;
             -- one holder of 100 priced tokens
             INSERT INTO balance_queue.token_metadata (chain_id, contract_address, decimals, price_usd)
             SELECT 1, '0x3' || lpad(to_hex(g), 39, '0'), 18, 1 FROM generate_series(1, 100) g;
             INSERT INTO balance_queue.current_token_balances
                 (chain_id, contract_address, holder_address, current_balance, last_updated_block, token_decimals)
             SELECT 1, '0x3' || lpad(to_hex(g), 39, '0'), '{whale}', g * 1000000000000000000::numeric, 19000000, 18
               FROM generate_series(1, 100) g;
             CREATE FUNCTION pg_temp.latency(q text, n integer) RETURNS double precision[] LANGUAGE plpgsql AS $$
             DECLARE t timestamptz; out double precision[] := '{{}}';
             BEGIN
               FOR i IN 1..n LOOP
                 t := clock_timestamp();
                 EXECUTE q;
                 out := out || extract(epoch FROM clock_timestamp() - t) * 1000;
               END LOOP;
               RETURN out;
             END $$;"
        ))
        .unwrap();
    client
        .batch_execute("VACUUM ANALYZE balance_queue.current_token_balances")
        .unwrap();
    // What the worker does every health_interval: the big token gets its
    // top-holder board (the 1% page sample finds it).
    while client
        .query_one(
            "SELECT count(*) FROM balance_queue.leaderboard_cutoffs",
            &[],
        )
        .unwrap()
        .get::<_, i64>(0)
        == 0
    {
        client
            .execute("SELECT balance_queue.refresh_leaderboards()", &[])
            .unwrap();
    }
    let holder = "0x00000000000000000000000000000000000f4240";
    let cases = [
        (
            "get_current_balance",
            format!(
                "SELECT * FROM balance_queue.get_current_balance(1, '{big_token}', '{holder}')"
            ),
            1.0,
        ),
        (
            "get_address_portfolio (100 tokens)",
            format!("SELECT * FROM balance_queue.get_address_portfolio('{whale}', 0)"),
            5.0,
        ),
        (
            "get_top_holders(…, 100), 1,000,000 holders",
            format!("SELECT * FROM balance_queue.get_top_holders(1, '{big_token}', 100)"),
            1.0,
        ),
    ];
    let mut md =
        String::from("| query | p50 (ms) | p99 (ms) | target p99 (ms) |\n|---|---:|---:|---:|\n");
    for (name, sql, target) in cases {
        let mut samples: Vec<f64> = client
            .query_one("SELECT pg_temp.latency($1, 2000)", &[&sql])
            .unwrap()
            .get::<_, Vec<f64>>(0);
        samples.drain(..200); // warm-up
        samples.sort_by(f64::total_cmp);
        let p = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
        println!("{name:<45} p50 {:.3} ms  p99 {:.3} ms", p(0.5), p(0.99));
        writeln!(md, "| {name} | {:.3} | {:.3} | {target} |", p(0.5), p(0.99)).unwrap();
    }
    md.push_str(&price_change_cost(&mut client, big_token));
    md
}

/// What a price change of the 1,000,000-holder token costs: one row now
/// (USD values are computed when read), against rewriting every balance row
/// of the token, which 0.1.0's metadata trigger did to keep a stored
/// balance_usd (measured here by the same rewrite of those rows).
fn price_change_cost(client: &mut Client, token: &str) -> String {
    let mut measure = |sql: &str| -> (f64, i64) {
        client.batch_execute("CHECKPOINT").unwrap();
        let lsn: String = client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .unwrap()
            .get(0);
        let started = Instant::now();
        client.batch_execute(sql).unwrap();
        let seconds = started.elapsed().as_secs_f64();
        let wal: i64 = client
            .query_one(
                "SELECT (pg_current_wal_lsn() - $1::text::pg_lsn)::bigint",
                &[&lsn],
            )
            .unwrap()
            .get(0);
        (seconds * 1000.0, wal)
    };
    let now = measure(&format!(
        "SELECT balance_queue.set_token_price(1, '{token}', 3)"
    ));
    let before = measure(&format!(
        "UPDATE balance_queue.current_token_balances SET last_updated_time = last_updated_time
          WHERE chain_id = 1 AND contract_address = '{token}'"
    ));
    println!(
        "price change of a 1,000,000-holder token: {:.1} ms, {} bytes of WAL (a rewrite of its balances: {:.0} ms, {} bytes)",
        now.0, now.1, before.0, before.1
    );
    format!(
        "\nA price change of the 1,000,000-holder token (`set_token_price`): {:.1} ms and {} bytes of WAL. \
         Rewriting the token's balance rows, as 0.1.0 did to keep a stored `balance_usd`: {:.0} ms and {} bytes \
         (measured as an UPDATE of those rows).\n",
        now.0, now.1, before.0, before.1
    )
}

/// rindexer-like batches at a fixed rate while the worker drains.
fn sustained(args: &Args) -> String {
    let (cluster, mut client) = start_cluster("bench-sustained", &args.conf);
    let table = table_for(&mut client, "sustained");
    client
        .execute(
            "SELECT balance_queue.attach_transfer_table($1::text::regclass)",
            &[&table],
        )
        .unwrap();
    let total = args.rate * args.minutes as usize * 60;
    let rows = workload::generate(&workload::Shape {
        transfers: total,
        tokens: 200,
        holders: 100_000,
        ..Default::default()
    });
    let conn = cluster.conn_string("bench");
    let rate = args.rate;
    let writer = std::thread::spawn(move || {
        let mut c = Client::connect(&conn, postgres::NoTls).unwrap();
        let started = Instant::now();
        let mut sent = 0usize;
        let mut size = 1usize;
        while sent < rows.len() {
            // Batches of 1 to 5,000 rows, paced to the rate.
            size = (size * 7 + 13) % 5000 + 1;
            let end = (sent + size).min(rows.len());
            rindexer::write_batch(&mut c, "sustained.transfer", &rows[sent..end]).unwrap();
            sent = end;
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        started.elapsed().as_secs_f64()
    });
    let mut md = String::from(
        // Worker memory is its private resident memory (RssAnon): VmRSS also
        // counts every shared buffer the worker has touched.
        "| t (s) | pending transfers | queue table (MB) | workers' private memory, RssAnon summed (MB) | lag p50 (ms) | lag p99 (ms) | lag max (ms) |\n|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let started = Instant::now();
    let mut lags: Vec<f64> = Vec::new();
    let mut since_print: Vec<f64> = Vec::new();
    let mut last_sample = 0.0f64;
    let mut last_print = Instant::now();
    let worker_pids: Vec<i32> = client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'balance_queue worker'",
            &[],
        )
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    loop {
        std::thread::sleep(Duration::from_millis(1000));
        let now = started.elapsed().as_secs_f64();
        // One lag per transfer: an id-range item stands for its rows.
        let window: Vec<f64> = client
            .query(
                "SELECT (extract(epoch FROM processed_at - created_at) * 1000)::float8, row_count
                   FROM balance_queue.balance_update_queue
                  WHERE status = 'completed' AND processed_at > now() - make_interval(secs => $1)",
                &[&(now - last_sample + 0.001)],
            )
            .unwrap()
            .into_iter()
            .flat_map(|r| {
                std::iter::repeat_n(r.get::<_, f64>(0), r.get::<_, i32>(1).max(1) as usize)
            })
            .collect();
        last_sample = now;
        lags.extend(&window);
        let pending = scalar(
            &mut client,
            "SELECT coalesce(sum(row_count), 0)::bigint FROM balance_queue.balance_update_queue WHERE status = 'pending'",
        );
        let mb = scalar(
            &mut client,
            "SELECT pg_total_relation_size('balance_queue.balance_update_queue')",
        ) as f64
            / 1e6;
        // Every worker's, summed.
        let rss: f64 = worker_pids
            .iter()
            .map(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .ok()
                    .and_then(|s| {
                        s.lines().find(|l| l.starts_with("RssAnon")).map(|l| {
                            l.split_whitespace()
                                .nth(1)
                                .unwrap_or("0")
                                .parse::<f64>()
                                .unwrap_or(0.0)
                                / 1024.0
                        })
                    })
                    .unwrap_or(f64::NAN)
            })
            .sum();
        // The window printed is every lag since the last line (15 s), not
        // only the last second's.
        since_print.extend(&window);
        let pct = |v: &[f64], q: f64| {
            if v.is_empty() {
                f64::NAN
            } else {
                v[((v.len() - 1) as f64 * q) as usize]
            }
        };
        if last_print.elapsed() >= Duration::from_secs(15) || writer.is_finished() {
            last_print = Instant::now();
            let mut w = std::mem::take(&mut since_print);
            w.sort_by(f64::total_cmp);
            println!(
                "t={now:>5.0}s pending {pending:>7} queue {mb:>7.1} MB worker RssAnon {rss:>6.1} MB lag p50 {:>7.1} ms p99 {:>7.1} ms max {:>7.1} ms",
                pct(&w, 0.5),
                pct(&w, 0.99),
                pct(&w, 1.0)
            );
            writeln!(
                md,
                "| {now:.0} | {pending} | {mb:.1} | {rss:.1} | {:.1} | {:.1} | {:.1} |",
                pct(&w, 0.5),
                pct(&w, 0.99),
                pct(&w, 1.0)
            )
            .unwrap();
        }
        if writer.is_finished() && pending == 0 {
            break;
        }
    }
    let sent_s = writer.join().unwrap();
    lags.sort_by(f64::total_cmp);
    let pct = |q: f64| lags[((lags.len() - 1) as f64 * q) as usize];
    writeln!(md, "\n{total} transfers at {} transfers/s over {sent_s:.0} s; queue lag over the run: p50 {:.1} ms, p99 {:.1} ms (target: p99 < 500 ms at 10,000 transfers/s for 5 minutes, queue and memory flat).", args.rate, pct(0.5), pct(0.99)).unwrap();
    md
}

fn main() {
    let args = parse_args();
    std::fs::create_dir_all(&args.out).unwrap();
    let modes: Vec<&str> = if args.mode == "all" {
        vec!["compare", "growth", "queries", "sustained"]
    } else {
        vec![args.mode.as_str()]
    };
    for mode in modes {
        println!("== {mode} ==");
        let md = match mode {
            "compare" => compare(&args),
            "drain" => drain(&args),
            "growth" => growth(&args),
            "queries" => queries(&args),
            "sustained" => sustained(&args),
            other => panic!("unknown mode {other}"),
        };
        println!("{md}");
        std::fs::write(args.out.join(format!("{mode}.md")), &md).unwrap();
    }
}
