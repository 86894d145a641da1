//! Privileges, search_path hijacking and hostile identifiers.

mod common;

use balance_queue_harness::rindexer::{self, TransferRow};
use balance_queue_harness::{drain, workload};
use postgres::Client;

fn connect_as(f: &common::Fixture, role: &str) -> Client {
    let conn = f
        .cluster
        .conn_string("test")
        .replace("user=postgres", &format!("user={role}"));
    Client::connect(&conn, postgres::NoTls).unwrap_or_else(|e| panic!("connect as {role}: {e}"))
}

fn rows(n: usize, seed: u64) -> Vec<TransferRow> {
    workload::generate(&workload::Shape {
        transfers: n,
        tokens: 3,
        holders: 200,
        seed,
        ..Default::default()
    })
}

#[test]
fn an_ingest_role_with_only_insert_and_delete_queues_but_cannot_touch_balances() {
    let mut f = common::attached_rindexer_table("ingest-role");
    f.client
        .batch_execute(&format!(
            "CREATE ROLE ingest LOGIN;
             GRANT USAGE ON SCHEMA rindexer_test_erc_20 TO ingest;
             GRANT INSERT, DELETE ON {t} TO ingest;
             GRANT USAGE ON SEQUENCE rindexer_test_erc_20.transfer_rindexer_id_seq TO ingest;",
            t = f.table
        ))
        .unwrap();
    let mut ingest = connect_as(&f, "ingest");
    rindexer::write_all(&mut ingest, &f.table, &rows(2_000, 1), 500)
        .expect("binary COPY as ingest");
    rindexer::write_batch(&mut ingest, &f.table, &rows(30, 2)).expect("small INSERT as ingest");
    drain(&mut f.client, 5000);
    common::assert_matches_sources(&mut f.client, &[&f.table]);
    // DELETE without a WHERE needs no SELECT right (with one, Postgres asks for SELECT too).
    ingest
        .execute(&format!("DELETE FROM {}", f.table), &[])
        .expect("DELETE as ingest");
    drain(&mut f.client, 5000);
    common::assert_matches_sources(&mut f.client, &[&f.table]);

    // Any role's DROP passes the extension's sql_drop event trigger.
    assert_eq!(
        common::sqlstate(
            &mut ingest,
            "CREATE TEMP TABLE scratch (i int); DROP TABLE scratch"
        ),
        "ok"
    );
    for sql in [
        "INSERT INTO balance_queue.current_token_balances (chain_id, contract_address, holder_address, current_balance) VALUES (1, 'x', 'y', 1)",
        "UPDATE balance_queue.current_token_balances SET current_balance = 0",
        "INSERT INTO balance_queue.balance_update_queue (update_type) VALUES ('recalculate')",
        "UPDATE balance_queue.chain_registry SET confirmation_depth = 0",
        "DELETE FROM balance_queue.applied_transfers",
        "SELECT * FROM balance_queue.process_balance_update_queue()",
        "SELECT balance_queue.handle_reorg(1, 0)",
        "SELECT count(*) FROM balance_queue.current_token_balances",
    ] {
        assert_eq!(
            common::sqlstate(&mut ingest, sql),
            "42501",
            "ingest must not run: {sql}"
        );
    }
}

#[test]
fn reader_and_admin_roles_open_exactly_their_jobs() {
    let mut f = common::attached_rindexer_table("roles");
    f.client
        .batch_execute(
            "CREATE ROLE alice LOGIN IN ROLE balance_queue_reader;
             CREATE ROLE bob LOGIN IN ROLE balance_queue_admin;
             CREATE SCHEMA bobs AUTHORIZATION bob;
             GRANT CREATE ON DATABASE test TO bob;
             -- functions run with the caller's rights: recomputing reads the sources
             GRANT USAGE ON SCHEMA rindexer_test_erc_20 TO bob;
             GRANT SELECT ON rindexer_test_erc_20.transfer TO bob;",
        )
        .unwrap();
    rindexer::write_all(&mut f.client, &f.table, &rows(500, 3), 500).unwrap();

    let mut bob = connect_as(&f, "bob");
    rindexer::create_transfer_table(&mut bob, "bobs");
    bob.execute(
        "SELECT balance_queue.attach_transfer_table('bobs.transfer')",
        &[],
    )
    .expect("admin attaches its table");
    rindexer::write_all(&mut bob, "bobs.transfer", &rows(300, 4), 300).unwrap();
    drain(&mut bob, 5000);
    for sql in [
        "SELECT * FROM balance_queue.verify_balances(1)",
        "SELECT * FROM balance_queue.handle_reorg(1, 99999999)",
        "SELECT balance_queue.retry_failed_updates()",
        "UPDATE balance_queue.queue_processing_config SET batch_size = 10 WHERE chain_id IS NULL",
        "SELECT balance_queue.collect_queue_health_metrics()",
    ] {
        assert_eq!(
            common::sqlstate(&mut bob, sql),
            "ok",
            "admin may run: {sql}"
        );
    }
    drain(&mut bob, 5000);
    common::assert_matches_sources(&mut f.client, &[&f.table, "bobs.transfer"]);

    // The drain reads rows back with the owner's rights. An admin who
    // forges an attachment of a table it may not read (a row in
    // attached_sources and a queue item naming the table by oid, but no
    // trigger on it) gets nothing read.
    rindexer::create_transfer_table(&mut f.client, "secret");
    rindexer::write_all(&mut f.client, "secret.transfer", &rows(50, 9), 50).unwrap();
    assert_eq!(
        common::sqlstate(&mut bob, "SELECT 1 FROM secret.transfer"),
        "42501"
    );
    bob.batch_execute(
        "INSERT INTO balance_queue.attached_sources (source_table, from_column, to_column, value_column,
             contract_column, tx_hash_column, log_index_column, block_number_column, network_column, row_id_column)
         SELECT c.oid::regclass, 'from', 'to', 'value', 'contract_address', 'tx_hash',
                'log_index', 'block_number', 'network', 'rindexer_id'
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'secret' AND c.relname = 'transfer';
         INSERT INTO balance_queue.balance_update_queue (chain_id, update_type, source_table, source_row_ids, row_count)
         SELECT 1, 'source_rows', source_table, '{[1,1000)}', 999
           FROM balance_queue.attached_sources WHERE source_table::text = 'secret.transfer';",
    )
    .unwrap();
    drain(&mut bob, 5000);
    let message: String = f
        .client
        .query_one(
            "SELECT error_message FROM balance_queue.balance_update_queue
              WHERE source_table::text = 'secret.transfer' AND status = 'failed'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(message.contains("not counted"), "{message}");
    common::assert_matches_sources(&mut f.client, &[&f.table, "bobs.transfer"]);

    let mut alice = connect_as(&f, "alice");
    let holder: String = f
        .client
        .query_one(
            "SELECT holder_address FROM balance_queue.current_token_balances LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    for sql in [
        format!("SELECT * FROM balance_queue.get_address_portfolio('{holder}', 0)"),
        "SELECT count(*) FROM balance_queue.current_token_balances".to_string(),
        "SELECT * FROM balance_queue.confirmed_token_balances LIMIT 1".to_string(),
        "SELECT * FROM balance_queue.queue_health_summary".to_string(),
        "SELECT count(*) FROM balance_queue.daily_balance_snapshots".to_string(),
        "SELECT balance_queue.format_token_balance(1, 18)".to_string(),
        format!("SELECT * FROM balance_queue.get_balance_at_block(1, '0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48', '{holder}', 100)"),
        "SELECT * FROM balance_queue.get_token_stats(1, '0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48')".to_string(),
        "SELECT * FROM balance_queue.get_token_price(1, '0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48')".to_string(),
        format!("SELECT * FROM balance_queue.get_collateral_summary('{holder}')"),
        "SELECT * FROM balance_queue.balance_changes_since(balance_queue.balance_changes_cursor())".to_string(),
    ] {
        assert_eq!(
            common::sqlstate(&mut alice, &sql),
            "ok",
            "reader may run: {sql}"
        );
    }
    for sql in [
        "SELECT * FROM balance_queue.process_balance_update_queue()",
        "SELECT balance_queue.attach_transfer_table('bobs.transfer')",
        "SELECT balance_queue.recalculate_address_balance(1, '0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48', '0x1111111111111111111111111111111111111111')",
        "UPDATE balance_queue.current_token_balances SET current_balance = 0",
        "SELECT balance_queue.add_chain(999, 'testnet')",
        "SELECT balance_queue.set_token_price(1, '0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48', 2)",
        "SELECT balance_queue.set_collateral_factor('p', 1, '0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48', 1, 2)",
        "SELECT balance_queue.expose_graphql('public')",
        "SELECT balance_queue.fold_token_stats()",
    ] {
        assert_eq!(
            common::sqlstate(&mut alice, sql),
            "42501",
            "reader must not run: {sql}"
        );
    }
}

/// Look-alike functions and operators that raise when called.
const TRAPS: &str = "
    CREATE FUNCTION {s}.trap() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
    CREATE FUNCTION {s}.lower(text) RETURNS text LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'hijacked: {s}.lower'; END $$;
    CREATE FUNCTION {s}.md5(text) RETURNS text LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'hijacked: {s}.md5'; END $$;
    CREATE FUNCTION {s}.abs(numeric) RETURNS numeric LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'hijacked: {s}.abs'; END $$;
    CREATE FUNCTION {s}.quote_literal(text) RETURNS text LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'hijacked: {s}.quote_literal'; END $$;
    CREATE FUNCTION {s}.now() RETURNS timestamptz LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'hijacked: {s}.now'; END $$;
    CREATE FUNCTION {s}.text_eq(text, text) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'hijacked: {s}.='; END $$;
    CREATE OPERATOR {s}.= (LEFTARG = text, RIGHTARG = text, FUNCTION = {s}.text_eq);
    CREATE FUNCTION {s}.text_ne(text, text) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'hijacked: {s}.<>'; END $$;
    CREATE OPERATOR {s}.<> (LEFTARG = text, RIGHTARG = text, FUNCTION = {s}.text_ne);
    CREATE FUNCTION {s}.num_add(numeric, numeric) RETURNS numeric LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'hijacked: {s}.+'; END $$;
    CREATE OPERATOR {s}.+ (LEFTARG = numeric, RIGHTARG = numeric, FUNCTION = {s}.num_add);
    CREATE FUNCTION {s}.int_eq(integer, integer) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'hijacked: {s}.= int'; END $$;
    CREATE OPERATOR {s}.= (LEFTARG = integer, RIGHTARG = integer, FUNCTION = {s}.int_eq);
    GRANT USAGE ON SCHEMA {s} TO PUBLIC;";

#[test]
fn look_alike_functions_and_operators_on_the_search_path_are_never_called() {
    let mut f = common::attached_rindexer_table("hijack");
    f.client.batch_execute("CREATE SCHEMA evil").unwrap();
    for schema in ["evil", "public"] {
        f.client
            .batch_execute(&TRAPS.replace("{s}", schema))
            .unwrap();
    }
    f.client
        .batch_execute(&format!(
            "CREATE ROLE ingest LOGIN; CREATE ROLE bob LOGIN IN ROLE balance_queue_admin;
             GRANT USAGE ON SCHEMA rindexer_test_erc_20 TO ingest, bob;
             GRANT INSERT, DELETE ON {t} TO ingest; GRANT SELECT ON {t} TO bob;
             GRANT USAGE ON SEQUENCE rindexer_test_erc_20.transfer_rindexer_id_seq TO ingest;
             ALTER ROLE ingest SET search_path = evil, public, pg_catalog;
             ALTER ROLE bob SET search_path = evil, public, pg_catalog;",
            t = f.table
        ))
        .unwrap();
    // The traps work: a query in such a session does call them.
    let mut bob = connect_as(&f, "bob");
    assert_eq!(common::sqlstate(&mut bob, "SELECT lower('A')"), "P0001");

    let mut ingest = connect_as(&f, "ingest");
    let data = rows(1_500, 9);
    rindexer::write_all(&mut ingest, &f.table, &data, 500)
        .expect("ingest under a hostile search_path");
    ingest
        .execute(&format!("DELETE FROM {}", f.table), &[])
        .expect("delete under a hostile search_path");
    rindexer::write_all(&mut ingest, &f.table, &data, 500).unwrap();

    let holder = data[5].to.clone().unwrap();
    let contract = data[5].contract_address.clone();
    for sql in [
        "SELECT * FROM balance_queue.process_balance_update_queue(100000)".to_string(),
        format!("SELECT * FROM balance_queue.get_current_balance(1, '{contract}', '{holder}')"),
        format!("SELECT * FROM balance_queue.get_top_holders(1, '{contract}', 5)"),
        format!("SELECT * FROM balance_queue.get_address_portfolio('{holder}', 0)"),
        format!("SELECT balance_queue.recalculate_address_balance(1, '{contract}', '{holder}')"),
        format!(
            "SELECT balance_queue.queue_balance_update(1, '{contract}', '{holder}', 'recalculate')"
        ),
        "SELECT * FROM balance_queue.process_balance_update_queue(100000)".to_string(),
        "SELECT * FROM balance_queue.verify_balances()".to_string(),
        "SELECT * FROM balance_queue.handle_reorg(1, 99999999)".to_string(),
        "SELECT balance_queue.collect_queue_health_metrics()".to_string(),
        "SELECT balance_queue.create_daily_balance_snapshot()".to_string(),
        "SELECT * FROM balance_queue.confirmed_token_balances".to_string(),
    ] {
        assert_eq!(common::sqlstate(&mut bob, &sql), "ok", "{sql}");
    }
    common::assert_matches_sources(&mut f.client, &[&f.table]);
}

#[test]
fn hostile_identifiers_are_quoted_never_spliced() {
    let mut f = common::attached_rindexer_table("identifiers");
    f.client
        .batch_execute("CREATE TABLE public.victim (x int)")
        .unwrap();
    let sqlstate = common::sqlstate(
        &mut f.client,
        "CREATE TABLE t AS SELECT * FROM rindexer_test_erc_20.transfer;
         SELECT balance_queue.attach_transfer_table('t', chain_id => 1,
                from_column => 'from\"; DROP TABLE public.victim; --')",
    );
    assert_eq!(sqlstate, "42703", "an unknown column, not an injection");
    assert_eq!(
        common::count(
            &mut f.client,
            "SELECT 1 FROM pg_class WHERE relname = 'victim'"
        ),
        1
    );

    // A column of a user-defined type is refused: the triggers read columns
    // as text with the extension owner's rights, and a type can bring a cast.
    let sqlstate = common::sqlstate(
        &mut f.client,
        "CREATE TYPE wrapped AS (v numeric);
         CREATE TABLE typed (LIKE rindexer_test_erc_20.transfer);
         ALTER TABLE typed DROP COLUMN value, ADD COLUMN value wrapped;
         SELECT balance_queue.attach_transfer_table('typed')",
    );
    assert_eq!(sqlstate, "22023", "a user-defined column type is refused");

    // A table whose schema and name need quoting works end to end.
    let schema = "\"s p\"";
    let table = format!("{schema}.\"we\"\"ird; DROP TABLE public.victim; --\"");
    f.client
        .batch_execute(&format!("CREATE SCHEMA {schema}; CREATE TABLE {table} (LIKE rindexer_test_erc_20.transfer INCLUDING ALL)"))
        .unwrap();
    f.client
        .execute(
            "SELECT balance_queue.attach_transfer_table($1::text::regclass)",
            &[&table],
        )
        .unwrap();
    rindexer::write_all(&mut f.client, &table, &rows(800, 12), 400).unwrap();
    f.client
        .execute(
            &format!("DELETE FROM {table} WHERE rindexer_id % 3 = 0"),
            &[],
        )
        .unwrap();
    drain(&mut f.client, 5000);
    common::assert_matches_sources(&mut f.client, &[&f.table, &table]);
    f.client
        .execute(
            "SELECT balance_queue.detach_transfer_table($1::text::regclass)",
            &[&table],
        )
        .unwrap();
    drain(&mut f.client, 5000);
    assert_eq!(
        common::count(
            &mut f.client,
            "SELECT 1 FROM pg_class WHERE relname = 'victim'"
        ),
        1
    );
    assert_eq!(
        common::count(
            &mut f.client,
            "SELECT 1 FROM balance_queue.current_token_balances WHERE current_balance <> 0"
        ),
        0,
        "after detaching, nothing of the table counts"
    );
}
