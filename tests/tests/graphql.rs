//! balance_queue in rindexer's GraphQL API, through a real client: the
//! server rindexer 0.41 runs (PostGraphile 4.14.1 with rindexer's options
//! and plugins, tests/graphql/server.js, versions pinned by its lockfile)
//! against a cluster holding rindexer's exact Transfer table with the rETH
//! export loaded and drained. Every field the four queries return over HTTP
//! is compared, as JSON, with the SQL function's own row.

mod common;

use balance_queue_harness::cluster::Cluster;
use balance_queue_harness::{data, drain, rindexer};
use postgres::Client;
use serde_json::{Value, json};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// rindexer names a contract's schema `{indexer}_{contract}`, each in snake
/// case: project rETHIndexer, contract RocketPoolETH.
const SCHEMA: &str = "r_eth_indexer_rocket_pool_eth";
/// A second contract of the same project, exposed while the server runs.
const OTHER_SCHEMA: &str = "r_eth_indexer_weth";
const RETH: &str = "0xae78736cd615f374d3085123a210448e74fc6393";
/// A token whose one holder holds 2^256-1 wei.
const BIG_TOKEN: &str = "0x00000000000000000000000000000000000000b1";
const BIG_HOLDER: &str = "0x00000000000000000000000000000000000000b2";
const MAX_U256: &str =
    "115792089237316195423570985008687907853269984665640564039457584007913129639935";

/// The GraphQL server, stopped on drop.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts tests/graphql/server.js on a free port of 127.0.0.1 for `schemas`
/// (comma-separated, as rindexer passes its contract schemas) and waits
/// until it answers.
fn start_server(cluster: &Cluster, schemas: &str) -> Server {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("graphql");
    assert!(
        dir.join("node_modules/postgraphile").exists(),
        "tests/graphql has no node_modules: run scripts/setup.sh (npm ci)"
    );
    let child = Command::new("node")
        .arg(dir.join("server.js"))
        .arg(cluster.conn_url("test"))
        .arg(schemas)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs (scripts/setup.sh installs it)");
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}/graphql"),
    };
    common::wait_until("the GraphQL server", Duration::from_secs(60), || {
        post(&server, "{ __typename }")["data"]["__typename"] == "Query"
    });
    server
}

/// POSTs a query; returns the response body (errors included), or Null
/// when the server does not answer.
fn post(server: &Server, query: &str) -> Value {
    match ureq::post(&server.url).send_json(json!({ "query": query })) {
        Ok(response) => response.into_json().unwrap_or(Value::Null),
        Err(ureq::Error::Status(_, response)) => response.into_json().unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// The `data` of a query that must succeed.
fn query(server: &Server, query: &str) -> Value {
    let body = post(server, query);
    assert!(
        body.get("errors").is_none() && !body["data"].is_null(),
        "{query}\n -> {body}"
    );
    body["data"].clone()
}

/// One SQL row as JSON the way PostGraphile renders it: numeric and bigint
/// as strings (BigFloat, BigInt), timestamps through to_json.
fn sql_json(client: &mut Client, sql: &str) -> Value {
    let text: String = client
        .query_one(
            &format!("SELECT coalesce(json_agg(q), '[]')::text FROM ({sql}) q"),
            &[],
        )
        .expect(sql)
        .get(0);
    serde_json::from_str(&text).expect("json")
}

/// rindexer's Transfer table for the rETH contract with the export loaded,
/// one transfer of 2^256-1 minted on another token, attached and drained,
/// and the schema exposed.
fn loaded(cluster: &Cluster) -> Client {
    let mut client = cluster.database_with_extension("test");
    rindexer::create_transfer_table(&mut client, SCHEMA);
    let table = format!("{SCHEMA}.transfer");
    client
        .execute(
            "SELECT balance_queue.attach_transfer_table($1::text::regclass)",
            &[&table],
        )
        .expect("attach");
    let mut rows = data::read_rindexer_csv(&data::reth_csv_path());
    let mut big = rows[0].clone();
    big.contract_address = BIG_TOKEN.into();
    big.from = Some("0x0000000000000000000000000000000000000000".into());
    big.to = Some(BIG_HOLDER.into());
    big.value = Some(MAX_U256.into());
    big.tx_hash = format!("0x{}", "b1".repeat(32));
    rows.push(big);
    rindexer::write_all(&mut client, &table, &rows, 5000).expect("COPY");
    let (_, failed) = drain(&mut client, 5000);
    assert_eq!(failed, 0);
    client
        .batch_execute("SELECT balance_queue.collect_queue_health_metrics()")
        .unwrap();
    client
        .query_one("SELECT balance_queue.expose_graphql($1)", &[&SCHEMA])
        .expect("expose_graphql");
    client
}

#[test]
fn rindexers_graphql_server_serves_the_four_queries_exactly() {
    let cluster = Cluster::start("graphql", &[]);
    let mut client = loaded(&cluster);
    client
        .batch_execute(&format!("CREATE SCHEMA {OTHER_SCHEMA}"))
        .unwrap();
    let server = start_server(&cluster, &format!("{SCHEMA},{OTHER_SCHEMA}"));

    // currentBalance: the largest and smallest holders, a holder never
    // seen, and the holder of 2^256-1, every field.
    let fields = "balance balanceFormatted balanceUsd tokenSymbol lastUpdatedBlock \
                  lastUpdatedTime tokenDecimals confirmedBalance pendingDelta";
    let sql_fields = "balance::text AS \"balance\", balance_formatted AS \"balanceFormatted\",
                      balance_usd::text AS \"balanceUsd\", token_symbol AS \"tokenSymbol\",
                      last_updated_block::text AS \"lastUpdatedBlock\",
                      last_updated_time AS \"lastUpdatedTime\", token_decimals AS \"tokenDecimals\",
                      confirmed_balance::text AS \"confirmedBalance\",
                      pending_delta::text AS \"pendingDelta\"";
    let mut keys: Vec<(String, String)> = client
        .query(
            "(SELECT contract_address, holder_address FROM balance_queue.current_token_balances
               WHERE contract_address = $1 ORDER BY current_balance DESC LIMIT 3)
             UNION ALL
             (SELECT contract_address, holder_address FROM balance_queue.current_token_balances
               WHERE contract_address = $1 ORDER BY current_balance LIMIT 3)",
            &[&RETH],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    keys.push((
        RETH.into(),
        "0x00000000000000000000000000000000000000ff".into(),
    ));
    keys.push((BIG_TOKEN.into(), BIG_HOLDER.into()));
    for (contract, holder) in &keys {
        let got = query(
            &server,
            &format!(
                "{{ currentBalance(chainId: 1, contract: \"{contract}\", holder: \"{holder}\") {{ {fields} }} }}"
            ),
        );
        let want = sql_json(
            &mut client,
            &format!(
                "SELECT {sql_fields} FROM balance_queue.get_current_balance(1, '{contract}', '{holder}')"
            ),
        );
        assert_eq!(got["currentBalance"], want[0], "{contract} {holder}");
    }
    let big = query(
        &server,
        &format!(
            "{{ currentBalance(chainId: 1, contract: \"{BIG_TOKEN}\", holder: \"{BIG_HOLDER}\") {{ balance }} }}"
        ),
    );
    assert_eq!(big["currentBalance"]["balance"], MAX_U256, "2^256-1, exact");

    // topHolders: 100 rows; and a page of them (rows 21..40).
    let holder_fields =
        "rank holderAddress currentBalance balanceFormatted balanceUsd lastUpdatedBlock";
    let holder_sql = "rank::text AS \"rank\", holder_address AS \"holderAddress\",
                      current_balance::text AS \"currentBalance\", balance_formatted AS \"balanceFormatted\",
                      balance_usd::text AS \"balanceUsd\", last_updated_block::text AS \"lastUpdatedBlock\"";
    let top = query(
        &server,
        &format!(
            "{{ topHolders(chainId: 1, contract: \"{RETH}\", limit: 100) {{ totalCount nodes {{ {holder_fields} }} }} }}"
        ),
    );
    let want = sql_json(
        &mut client,
        &format!("SELECT {holder_sql} FROM balance_queue.get_top_holders(1, '{RETH}', 100)"),
    );
    assert_eq!(want.as_array().unwrap().len(), 100);
    assert_eq!(top["topHolders"]["nodes"], want);
    assert_eq!(top["topHolders"]["totalCount"], 100);
    let page = query(
        &server,
        &format!(
            "{{ topHolders(chainId: 1, contract: \"{RETH}\", limit: 100, first: 20, offset: 20) {{ nodes {{ {holder_fields} }} }} }}"
        ),
    );
    assert_eq!(
        page["topHolders"]["nodes"],
        Value::Array(want.as_array().unwrap()[20..40].to_vec())
    );

    // addressPortfolio: every non-zero balance of the top holder (minUsd 0:
    // rETH has no price here), and of a holder with none.
    let top_holder = keys[0].1.clone();
    let portfolio_fields = "chainId chainName contractAddress tokenSymbol balance balanceFormatted \
                            balanceUsd lastUpdatedTime lastUpdatedBlock";
    let portfolio_sql = "chain_id AS \"chainId\", chain_name AS \"chainName\",
                         contract_address AS \"contractAddress\", token_symbol AS \"tokenSymbol\",
                         balance::text AS \"balance\", balance_formatted AS \"balanceFormatted\",
                         balance_usd::text AS \"balanceUsd\", last_updated_time AS \"lastUpdatedTime\",
                         last_updated_block::text AS \"lastUpdatedBlock\"";
    for holder in [
        top_holder.as_str(),
        BIG_HOLDER,
        "0x00000000000000000000000000000000000000ff",
    ] {
        let got = query(
            &server,
            &format!(
                "{{ addressPortfolio(holder: \"{holder}\", minUsd: \"0\") {{ nodes {{ {portfolio_fields} }} }} }}"
            ),
        );
        let want = sql_json(
            &mut client,
            &format!(
                "SELECT {portfolio_sql} FROM balance_queue.get_address_portfolio('{holder}', 0)"
            ),
        );
        assert_eq!(got["addressPortfolio"]["nodes"], want, "{holder}");
    }
    let big_portfolio = query(
        &server,
        &format!(
            "{{ addressPortfolio(holder: \"{BIG_HOLDER}\", minUsd: \"0\") {{ nodes {{ balance }} }} }}"
        ),
    );
    assert_eq!(
        big_portfolio["addressPortfolio"]["nodes"][0]["balance"],
        MAX_U256
    );

    // queueHealth: one row per chain, as the summary view has it.
    let health = query(
        &server,
        "{ queueHealth { nodes { chainId chainName pendingCount processingCount completedCountLastHour \
           errorCountLastHour avgProcessingTimeMs oldestPendingAgeMinutes healthStatus recordedAt } } }",
    );
    let want = sql_json(
        &mut client,
        "SELECT chain_id AS \"chainId\", chain_name AS \"chainName\", pending_count::text AS \"pendingCount\",
                processing_count::text AS \"processingCount\",
                completed_count_last_hour::text AS \"completedCountLastHour\",
                error_count_last_hour::text AS \"errorCountLastHour\",
                avg_processing_time_ms::text AS \"avgProcessingTimeMs\",
                oldest_pending_age_minutes AS \"oldestPendingAgeMinutes\", health_status AS \"healthStatus\",
                recorded_at AS \"recordedAt\"
           FROM balance_queue.queue_health_summary ORDER BY chain_id",
    );
    assert!(!want.as_array().unwrap().is_empty());
    assert_eq!(health["queueHealth"]["nodes"], want);

    // Read only: no mutation at all (the wrappers are STABLE, and rindexer
    // disables the default mutations).
    let schema = query(&server, "{ __schema { mutationType { name } } }");
    assert!(schema["__schema"]["mutationType"].is_null(), "{schema}");

    // A page over 1000 is refused the way rindexer refuses it.
    let refused = post(
        &server,
        &format!(
            "{{ topHolders(chainId: 1, contract: \"{RETH}\", limit: 2000, first: 1001) {{ nodes {{ rank }} }} }}"
        ),
    );
    assert_eq!(
        refused["errors"][0]["message"],
        "Pagination limit exceeded. Maximum allowed is 1000."
    );

    // An exposure made while the server runs appears without a restart
    // (watchPg); the same names in a second schema are refused, a prefix
    // makes them distinct.
    assert_eq!(
        common::sqlstate(
            &mut client,
            &format!("SELECT balance_queue.expose_graphql('{OTHER_SCHEMA}')")
        ),
        "42723"
    );
    client
        .query_one(
            "SELECT balance_queue.expose_graphql($1, 'weth_')",
            &[&OTHER_SCHEMA],
        )
        .unwrap();
    let other = format!(
        "{{ wethCurrentBalance(chainId: 1, contract: \"{BIG_TOKEN}\", holder: \"{BIG_HOLDER}\") {{ balance }} }}"
    );
    common::wait_until(
        "the new exposure in GraphQL",
        Duration::from_secs(60),
        || post(&server, &other)["data"]["wethCurrentBalance"]["balance"] == MAX_U256,
    );
    // And an unexposed schema's fields go away.
    client
        .query_one(
            "SELECT balance_queue.unexpose_graphql($1)",
            &[&OTHER_SCHEMA],
        )
        .unwrap();
    common::wait_until(
        "the exposure to leave GraphQL",
        Duration::from_secs(60),
        || {
            post(&server, &other)["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("wethCurrentBalance"))
        },
    );
    // The first schema's fields stayed.
    let still = query(
        &server,
        &format!(
            "{{ currentBalance(chainId: 1, contract: \"{BIG_TOKEN}\", holder: \"{BIG_HOLDER}\") {{ balance }} }}"
        ),
    );
    assert_eq!(still["currentBalance"]["balance"], MAX_U256);
}

/// What expose_graphql refuses, and how exposures live with the extension
/// and with rindexer's drop_each_run.
#[test]
fn exposures_are_checked_dropped_with_the_extension_and_restored_after_drop_each_run() {
    let (_cluster, mut client) =
        common::preloaded("graphql_life", &["balance_queue.health_interval = 1"]);
    client
        .batch_execute(&format!("CREATE SCHEMA {SCHEMA}"))
        .unwrap();
    for (sql, code) in [
        (
            "SELECT balance_queue.expose_graphql('no_such_schema')",
            "3F000",
        ),
        (
            "SELECT balance_queue.expose_graphql('balance_queue')",
            "3F000",
        ),
        (
            &*format!("SELECT balance_queue.expose_graphql('{SCHEMA}', 'Bad-Prefix')"),
            "22023",
        ),
        ("SELECT balance_queue.unexpose_graphql('public')", "42704"),
        ("SELECT balance_queue.expose_graphql('pg_catalog')", "3F000"),
        // The worker splices the recorded prefix into DDL: the table
        // refuses anything but a plain prefix, whoever writes it.
        (
            "INSERT INTO balance_queue.graphql_exposures (schema_name, name_prefix)
             VALUES ('public', 'x\"() RETURNS int LANGUAGE sql AS ''SELECT 1''; --')",
            "23514",
        ),
    ] {
        assert_eq!(common::sqlstate(&mut client, sql), code, "{sql}");
    }
    // A function of the same name that is not ours is never replaced.
    client
        .batch_execute(&format!(
            "CREATE FUNCTION {SCHEMA}.queue_health() RETURNS int LANGUAGE sql AS 'SELECT 1'"
        ))
        .unwrap();
    assert_eq!(
        common::sqlstate(
            &mut client,
            &format!("SELECT balance_queue.expose_graphql('{SCHEMA}')")
        ),
        "42723"
    );
    client
        .batch_execute(&format!("DROP FUNCTION {SCHEMA}.queue_health()"))
        .unwrap();

    let wrappers = |client: &mut Client| {
        common::count(
            client,
            &format!(
                "SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                  WHERE n.nspname = '{SCHEMA}'"
            ),
        )
    };
    client
        .query_one("SELECT balance_queue.expose_graphql($1)", &[&SCHEMA])
        .unwrap();
    assert_eq!(wrappers(&mut client), 4);

    // rindexer's drop_each_run: the schema goes and comes back; the worker
    // makes the wrappers again, as the role that exposed it.
    client
        .batch_execute(&format!(
            "DROP SCHEMA {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}"
        ))
        .unwrap();
    assert_eq!(wrappers(&mut client), 0);
    common::wait_until(
        "the worker to expose the schema again",
        Duration::from_secs(30),
        || wrappers(&mut client) == 4,
    );

    // DROP EXTENSION takes the wrappers with it (no wrapper left calling a
    // missing function); CREATE EXTENSION starts with no exposure.
    client
        .batch_execute(&format!(
            "SELECT balance_queue.detach_transfer_table('{}'); DROP EXTENSION balance_queue",
            common::TABLE
        ))
        .unwrap();
    assert_eq!(wrappers(&mut client), 0);
    client
        .batch_execute("CREATE EXTENSION balance_queue")
        .unwrap();
    assert_eq!(wrappers(&mut client), 0);
    assert_eq!(
        common::count(&mut client, "SELECT 1 FROM balance_queue.graphql_exposures"),
        0
    );
    client
        .query_one("SELECT balance_queue.expose_graphql($1)", &[&SCHEMA])
        .unwrap();
    assert_eq!(wrappers(&mut client), 4);
}
