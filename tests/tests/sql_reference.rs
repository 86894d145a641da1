//! docs/sql-reference.md against the installed catalog: every function
//! (but the `_`-prefixed internal ones), table and view of schema
//! `balance_queue` is named there, so the reference cannot silently fall
//! behind the extension.

use balance_queue_harness::cluster::Cluster;

#[test]
fn the_sql_reference_names_every_function_table_and_view() {
    let cluster = Cluster::start("sql-reference", &[]);
    let mut client = cluster.database_with_extension("test");
    let reference = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/sql-reference.md"),
    )
    .expect("docs/sql-reference.md");
    let objects: Vec<(String, String)> = client
        .query(
            "SELECT 'function', p.proname::text FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'balance_queue'::regnamespace AND p.proname !~ '^_'
             UNION
             SELECT CASE c.relkind WHEN 'v' THEN 'view' ELSE 'table' END, c.relname::text
               FROM pg_catalog.pg_class c
              WHERE c.relnamespace = 'balance_queue'::regnamespace
                AND c.relkind IN ('r', 'p', 'v') AND NOT c.relispartition
             ORDER BY 1, 2",
            &[],
        )
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(objects.len() > 30, "{objects:?}");
    let missing: Vec<String> = objects
        .iter()
        .filter(|(_, name)| !reference.contains(&format!("`{name}")))
        .map(|(kind, name)| format!("{kind} {name}"))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/sql-reference.md does not name: {missing:?}"
    );
}
