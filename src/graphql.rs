//! Balances in rindexer's GraphQL API: wrapper functions made inside a
//! contract schema that rindexer's PostGraphile server exposes.
//!
//! PostGraphile 4 (rindexer 0.41 runs 4.14.1 from `graphql/index.js` of
//! joshstevens19/rindexer) introspects only the `{indexer}_{contract}`
//! schemas and leaves out every object that is a member of an extension
//! (`pg_depend.deptype = 'e'`), so balance_queue's own functions never show.
//! `expose_graphql` creates plain STABLE SQL functions in such a schema
//! (sql/graphql_wrappers.sql) that call them, marked `DEPENDS ON EXTENSION`
//! (`deptype = 'x'`): DROP EXTENSION drops them with it, and PostGraphile still
//! shows them. The catalog is the one record of which wrappers exist (the
//! functions depending on the extension that way); `graphql_exposures`
//! records what was asked, so the worker can make them again after rindexer
//! recreates a schema (`drop_each_run`), as the schema's owner.

use crate::errors::{invalid_parameter, raise, spi_ok};
use pgrx::prelude::*;
use pgrx::spi::{SpiClient, quote_identifier};

/// The wrappers' DDL with `@schema@` and `@prefix@` placeholders.
const WRAPPERS_SQL: &str = include_str!("../sql/graphql_wrappers.sql");

/// The names the wrappers get, before the prefix; GraphQL fields are their
/// camelCase (`currentBalance`, `addressPortfolio`, `topHolders`,
/// `queueHealth`). A pg_test checks that WRAPPERS_SQL creates exactly these.
const WRAPPER_NAMES: [&str; 4] = [
    "current_balance",
    "address_portfolio",
    "top_holders",
    "queue_health",
];

/// The wrappers in schema `$1`: functions depending on the extension
/// automatically (`DEPENDS ON EXTENSION`), which nothing but expose_graphql
/// makes in a schema that is not the extension's own.
const WRAPPERS_IN_SCHEMA_SQL: &str = "
    SELECT p.oid::regprocedure::text
      FROM pg_catalog.pg_depend d
      JOIN pg_catalog.pg_proc p ON p.oid = d.objid
      JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
     WHERE d.classid = 'pg_catalog.pg_proc'::regclass
       AND d.refclassid = 'pg_catalog.pg_extension'::regclass
       AND d.refobjid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'balance_queue')
       AND d.deptype = 'x'
       AND n.nspname = $1
     ORDER BY 1";

/// Makes balance_queue's reads visible in rindexer's GraphQL API: creates
/// `current_balance`, `address_portfolio`, `top_holders` and `queue_health`
/// (each name prefixed with `p_prefix`) in schema `p_schema`, normally the
/// `{indexer}_{contract}` schema rindexer made for a contract, and records
/// the exposure in `balance_queue.graphql_exposures`. GraphQL shows them as
/// `currentBalance(chainId, contract, holder)`, `addressPortfolio(holder,
/// minUsd)`, `topHolders(chainId, contract, limit)` and `queueHealth`;
/// amounts are wei as BigFloat strings, exact to 78 digits.
///
/// Exposing a schema again replaces its wrappers (with the new prefix).
/// The caller needs CREATE on the schema; the functions run with the rights
/// of the role the GraphQL server connects as, which needs
/// `balance_queue_reader`. Returns the functions created, as
/// `regprocedure` text.
///
/// Errors: 3F000 (invalid_schema_name) when the schema does not exist, or is
/// `balance_queue` or a system schema; 22023 (invalid_parameter_value) for a prefix that is not
/// lowercase letters, digits and underscores (starting with a letter or
/// underscore, at most 40 characters); 42723 (duplicate_function) when a
/// function of one of those names already exists in the schema, or in
/// another schema exposed with the same prefix (PostGraphile refuses to
/// build a schema in which two exposed schemas share a function name).
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
pub fn expose_graphql(p_schema: &str, p_prefix: default!(&str, "''")) -> Vec<String> {
    crate::errors::refuse_on_standby("expose_graphql");
    check_prefix(p_prefix);
    Spi::connect_mut(|client| {
        check_schema(client, p_schema);
        drop_wrappers(client, p_schema);
        refuse_clashes(client, p_schema, p_prefix);
        create_wrappers(client, p_schema, p_prefix);
        spi_ok(client.update(
            "INSERT INTO balance_queue.graphql_exposures AS e (schema_name, name_prefix)
             VALUES ($1, $2)
             ON CONFLICT (schema_name) DO UPDATE
                SET name_prefix = EXCLUDED.name_prefix, exposed_by = EXCLUDED.exposed_by,
                    exposed_at = EXCLUDED.exposed_at",
            None,
            &[p_schema.into(), p_prefix.into()],
        ));
        wrappers_in(client, p_schema)
    })
}

/// Removes what `expose_graphql` made in `p_schema` and forgets the
/// exposure. Returns the number of functions dropped (0 when rindexer had
/// already dropped the schema).
///
/// Errors: 42704 (undefined_object) when the schema was never exposed and
/// holds no wrappers.
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
pub fn unexpose_graphql(p_schema: &str) -> i32 {
    crate::errors::refuse_on_standby("unexpose_graphql");
    Spi::connect_mut(|client| {
        let dropped = drop_wrappers(client, p_schema);
        let forgotten = spi_ok(client.update(
            "DELETE FROM balance_queue.graphql_exposures WHERE schema_name = $1",
            None,
            &[p_schema.into()],
        ))
        .len();
        if dropped == 0 && forgotten == 0 {
            raise(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!("schema {p_schema} is not exposed to GraphQL by balance_queue"),
                Some(
                    "SELECT schema_name FROM balance_queue.graphql_exposures lists the exposed schemas.",
                ),
            );
        }
        dropped
    })
}

/// The recorded exposures whose schema exists without their wrappers
/// (rindexer's `drop_each_run` drops and recreates contract schemas), as
/// (schema, prefix, the schema's owner). The worker passes each to
/// `restore_exposure` in its own transaction. The owner, not the role
/// recorded: whoever may write the table must not choose whose rights the
/// worker's DDL runs with.
pub fn missing_exposures() -> Vec<(String, String, String)> {
    Spi::connect(|client| {
        spi_ok(client.select(
            "SELECT e.schema_name::text, e.name_prefix, pg_catalog.pg_get_userbyid(n.nspowner)::text
               FROM balance_queue.graphql_exposures e
               JOIN pg_catalog.pg_namespace n ON n.nspname = e.schema_name
              WHERE (SELECT count(*) FROM pg_catalog.pg_proc p
                      WHERE p.pronamespace = n.oid
                        AND p.proname = ANY (SELECT e.name_prefix || w FROM unnest($1::text[]) w)) < $2
              ORDER BY 1",
            None,
            &[
                WRAPPER_NAMES.map(String::from).to_vec().into(),
                (WRAPPER_NAMES.len() as i64).into(),
            ],
        ))
        .map(|row| {
            let text = |i| row.get::<String>(i).ok().flatten().unwrap_or_default();
            (text(1), text(2), text(3))
        })
        .collect()
    })
}

/// Makes the wrappers of one recorded exposure again, with the rights of
/// the schema's owner `role` (`SET LOCAL ROLE`), never the worker's. An
/// error (a name now clashes, a system schema) aborts the caller's
/// transaction; the exposure stays recorded.
pub fn restore_exposure(schema: &str, prefix: &str, role: &str) {
    check_prefix(prefix);
    Spi::connect_mut(|client| {
        check_schema(client, schema);
        // Checks and clean-up with the worker's rights (the owner need not
        // read balance_queue's tables); only the DDL runs as the owner,
        // without validating the bodies against balance_queue, which the
        // owner may not be allowed to read.
        drop_wrappers(client, schema);
        refuse_clashes(client, schema, prefix);
        spi_ok(client.update(
            &format!(
                "SET LOCAL ROLE {}; SET LOCAL check_function_bodies = off",
                quote_identifier(role)
            ),
            None,
            &[],
        ));
        create_wrappers(client, schema, prefix);
        spi_ok(client.update("RESET ROLE", None, &[]));
    })
}

/// Whether `name` is empty or `[a-z_][a-z0-9_]*` of at most `max` bytes:
/// what rindexer names its schemas (snake case) and a prefix may be. The
/// CHECKs of `graphql_exposures` in sql/graphql.sql are the same rule.
fn is_plain_name(name: &str, max: usize) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_none_or(|c| c.is_ascii_lowercase() || c == '_');
    first_ok
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= max
}

/// 22023 unless the prefix makes plain lowercase SQL and GraphQL names.
fn check_prefix(prefix: &str) {
    if !is_plain_name(prefix, 40) {
        invalid_parameter(format!(
            "p_prefix {prefix:?} must be lowercase letters, digits and underscores, start with a letter or underscore, and be at most 40 characters"
        ));
    }
}

/// 3F000 unless the schema exists and is neither the extension's own nor a
/// system schema.
fn check_schema(client: &SpiClient<'_>, schema: &str) {
    let exists = !spi_ok(client.select(
        "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1",
        None,
        &[schema.into()],
    ))
    .is_empty();
    let system =
        schema == "balance_queue" || schema == "information_schema" || schema.starts_with("pg_");
    if !exists || system || !is_plain_name(schema, 63) {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_SCHEMA_NAME,
            format!(
                "schema {schema:?} does not exist, is balance_queue's own or a system schema, or is not a plain lowercase name"
            ),
            Some(
                "Pass the {indexer}_{contract} schema rindexer made for a contract (snake case, e.g. r_eth_indexer_rocket_pool_eth).",
            ),
        );
    }
}

/// 42723 when a wrapper's name is taken: in the schema itself (a function
/// that is not one of ours), or in another exposed schema (PostGraphile
/// fails to build its schema when two exposed schemas share a function
/// name).
fn refuse_clashes(client: &SpiClient<'_>, schema: &str, prefix: &str) {
    let names: Vec<String> = WRAPPER_NAMES
        .iter()
        .map(|n| format!("{prefix}{n}"))
        .collect();
    let clash = spi_ok(client.select(
        "SELECT n.nspname::text, p.proname::text
           FROM pg_catalog.pg_proc p
           JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
          WHERE p.proname = ANY ($2)
            AND (n.nspname = $1
                 OR n.nspname IN (SELECT schema_name FROM balance_queue.graphql_exposures))
          ORDER BY n.nspname = $1 DESC, 1, 2
          LIMIT 1",
        None,
        &[schema.into(), names.into()],
    ))
    .first()
    .get_two::<String, String>()
    .ok()
    .and_then(|(s, f)| Some((s?, f?)));
    if let Some((other, function)) = clash {
        let where_ = if other == schema {
            format!(
                "schema {schema} already has a function {function} that balance_queue did not make"
            )
        } else {
            format!("schema {other} is exposed with function {function} already")
        };
        raise(
            PgSqlErrorCode::ERRCODE_DUPLICATE_FUNCTION,
            format!("cannot expose schema {schema} to GraphQL: {where_}"),
            Some(
                "Pass another p_prefix, e.g. expose_graphql('my_schema', 'reth_'): rindexer's GraphQL server fails to start when two of its schemas define a function of the same name.",
            ),
        );
    }
}

/// Runs WRAPPERS_SQL (the functions, each marked DEPENDS ON EXTENSION
/// balance_queue) for the schema and prefix.
fn create_wrappers(client: &mut SpiClient<'_>, schema: &str, prefix: &str) {
    // Comment lines go first: a placeholder inside one would put a
    // newline-carrying name where a comment ends. The names themselves are
    // plain too (check_schema, check_prefix, and the table's CHECKs).
    let template: String = WRAPPERS_SQL
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    let ddl = template
        .replace("@schema@", &quote_identifier(schema))
        .replace("@prefix@", prefix);
    spi_ok(client.update(&ddl, None, &[]));
}

/// Drops the wrappers in `schema`; returns how many.
fn drop_wrappers(client: &mut SpiClient<'_>, schema: &str) -> i32 {
    let wrappers = wrappers_in(client, schema);
    for signature in &wrappers {
        spi_ok(client.update(&format!("DROP FUNCTION {signature}"), None, &[]));
    }
    wrappers.len() as i32
}

/// The wrappers in `schema`, as regprocedure text.
fn wrappers_in(client: &SpiClient<'_>, schema: &str) -> Vec<String> {
    spi_ok(client.select(WRAPPERS_IN_SCHEMA_SQL, None, &[schema.into()]))
        .filter_map(|row| row.get::<String>(1).ok().flatten())
        .collect()
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// WRAPPERS_SQL creates exactly WRAPPER_NAMES, each a STABLE function
    /// that depends on the extension without being a member of it.
    #[pg_test]
    fn exposes_exactly_the_named_wrappers() {
        Spi::run("CREATE SCHEMA gql_probe").unwrap();
        let made = super::expose_graphql("gql_probe", "x_");
        assert_eq!(made.len(), super::WRAPPER_NAMES.len());
        let names: Vec<String> = Spi::connect(|c| {
            c.select(
                "SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                  WHERE n.nspname = 'gql_probe' AND p.provolatile = 's'
                    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
                  ORDER BY 1",
                None,
                &[],
            )
            .unwrap()
            .map(|r| r.get::<String>(1).unwrap().unwrap())
            .collect()
        });
        let mut expected: Vec<String> = super::WRAPPER_NAMES
            .iter()
            .map(|n| format!("x_{n}"))
            .collect();
        expected.sort();
        assert_eq!(names, expected);
        assert_eq!(super::unexpose_graphql("gql_probe"), 4);
    }
}
