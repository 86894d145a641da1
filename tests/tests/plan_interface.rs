//! The plan's SQL interface against the installed catalog.
//!
//! `tests/fixtures/plan_interface.txt` lists, by hand from
//! `shared/plan/000-queue-based-balance-plan.md`, the tables, the view and
//! the functions users port from, with their columns, arguments and
//! results. This test creates the extension in a throwaway cluster, reads
//! `pg_proc`, `pg_class` and `pg_attribute` in schema `balance_queue`, and
//! fails with every difference at once, so a rename away from the plan's
//! names fails the suite.
//!
//! What is checked:
//! - function: exists; the same number of input arguments as the plan,
//!   with the plan's names in order and types of the same family; every
//!   argument the plan gives a DEFAULT has one (extra defaults are fine);
//!   a scalar result has the plan's type family; a `table(...)` result
//!   starts with the plan's columns, in the plan's order, same names and
//!   type families (extra columns may follow). With several overloads, one
//!   that matches is enough; otherwise the closest one is reported.
//! - table: exists as a table, has every plan column with a type of the
//!   same family; extra columns anywhere, column order free.
//! - view: exists as a view, has every plan column (same rule).
//!
//! Type families (typmods such as varchar(42) or numeric(78,0) ignored;
//! a domain is compared by its base type):
//! - text, varchar / character varying, char / character / bpchar: one family;
//! - timestamp and timestamptz (with or without time zone): one family;
//! - numeric with any typmod: one family;
//! - integer, bigint, smallint, boolean, date: each exact;
//! - `serial` means integer; for a column named `id`, bigint is accepted too;
//! - any other type (trigger, void, ...) must be the same type.

use balance_queue_harness::cluster::Cluster;
use postgres::Client;
use std::path::PathBuf;

const SCHEMA: &str = "balance_queue";

// ---------------------------------------------------------------------------
// The fixture
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
struct Column {
    name: String,
    ty: String,
}

#[derive(Debug, Clone, PartialEq)]
struct Arg {
    name: String,
    ty: String,
    default: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Returns {
    Scalar(String),
    Table(Vec<Column>),
}

#[derive(Debug, Clone, PartialEq)]
enum Fact {
    Table {
        name: String,
        columns: Vec<Column>,
    },
    View {
        name: String,
        columns: Vec<Column>,
    },
    Function {
        name: String,
        args: Vec<Arg>,
        returns: Returns,
    },
}

impl Fact {
    fn label(&self) -> String {
        match self {
            Fact::Table { name, .. } => format!("table {name}"),
            Fact::View { name, .. } => format!("view {name}"),
            Fact::Function { name, .. } => format!("function {name}"),
        }
    }
}

/// Types the fixture may use (lowercase, no typmods).
const FIXTURE_TYPES: &[&str] = &[
    "integer",
    "bigint",
    "smallint",
    "boolean",
    "date",
    "text",
    "varchar",
    "char",
    "numeric",
    "timestamp",
    "timestamptz",
    "serial",
    "trigger",
    "void",
];

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn check_type(ty: &str) -> Result<String, String> {
    if FIXTURE_TYPES.contains(&ty) {
        Ok(ty.to_string())
    } else {
        Err(format!(
            "unknown type `{ty}` (expected one of {})",
            FIXTURE_TYPES.join(", ")
        ))
    }
}

/// Splits `name(inner)rest` into (name, inner, rest); no nested parentheses.
fn split_parens(s: &str) -> Result<(&str, &str, &str), String> {
    let open = s.find('(').ok_or("missing `(`")?;
    let close = s[open..].find(')').ok_or("missing `)`")? + open;
    let inner = &s[open + 1..close];
    if inner.contains('(') {
        return Err("nested `(`: write types without typmods".into());
    }
    Ok((s[..open].trim(), inner, s[close + 1..].trim()))
}

fn split_list(inner: &str) -> Vec<&str> {
    if inner.trim().is_empty() {
        Vec::new()
    } else {
        inner.split(',').map(str::trim).collect()
    }
}

fn parse_columns(inner: &str) -> Result<Vec<Column>, String> {
    split_list(inner)
        .into_iter()
        .map(|item| {
            let words: Vec<&str> = item.split_whitespace().collect();
            match words.as_slice() {
                [name, ty] if is_identifier(name) => Ok(Column {
                    name: name.to_string(),
                    ty: check_type(ty)?,
                }),
                _ => Err(format!("bad column `{item}`: want `name type`")),
            }
        })
        .collect()
}

fn parse_args(inner: &str) -> Result<Vec<Arg>, String> {
    let mut seen_default = false;
    split_list(inner)
        .into_iter()
        .map(|item| {
            let words: Vec<&str> = item.split_whitespace().collect();
            let (name, ty, default) = match words.as_slice() {
                [name, ty] => (*name, *ty, false),
                [name, ty, "default"] => (*name, *ty, true),
                _ => {
                    return Err(format!(
                        "bad argument `{item}`: want `name type` or `name type default`"
                    ));
                }
            };
            if !is_identifier(name) {
                return Err(format!("bad argument name `{name}`"));
            }
            if seen_default && !default {
                return Err(format!(
                    "argument `{name}` without a default follows one with a default"
                ));
            }
            seen_default |= default;
            Ok(Arg {
                name: name.to_string(),
                ty: check_type(ty)?,
                default,
            })
        })
        .collect()
}

/// Parses one fixture line: `Ok(None)` for blanks and comments.
fn parse_line(line: &str) -> Result<Option<Fact>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (kind, rest) = line
        .split_once(' ')
        .ok_or("want `table ...`, `view ...` or `function ...`")?;
    let (name, inner, tail) = split_parens(rest)?;
    if !is_identifier(name) {
        return Err(format!("bad name `{name}`"));
    }
    let name = name.to_string();
    match kind {
        "table" | "view" => {
            if !tail.is_empty() {
                return Err(format!("unexpected `{tail}` after the column list"));
            }
            let columns = parse_columns(inner)?;
            if columns.is_empty() {
                return Err(format!("{kind} {name} has no columns"));
            }
            Ok(Some(if kind == "table" {
                Fact::Table { name, columns }
            } else {
                Fact::View { name, columns }
            }))
        }
        "function" => {
            let args = parse_args(inner)?;
            let result = tail
                .strip_prefix("->")
                .ok_or("want `-> type` or `-> table(...)` after the arguments")?
                .trim();
            let returns = if result.starts_with("table(") {
                let (_, cols, after) = split_parens(result)?;
                if !after.is_empty() {
                    return Err(format!("unexpected `{after}` after the result columns"));
                }
                let columns = parse_columns(cols)?;
                if columns.is_empty() {
                    return Err("empty table(...) result".into());
                }
                Returns::Table(columns)
            } else if result.split_whitespace().count() == 1 {
                Returns::Scalar(check_type(result)?)
            } else {
                return Err(format!("bad result `{result}`"));
            };
            Ok(Some(Fact::Function {
                name,
                args,
                returns,
            }))
        }
        other => Err(format!(
            "unknown kind `{other}`: want table, view or function"
        )),
    }
}

fn parse_fixture(text: &str) -> Result<Vec<Fact>, String> {
    let mut facts = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match parse_line(line) {
            Ok(Some(fact)) => {
                if facts.iter().any(|f: &Fact| f.label() == fact.label()) {
                    errors.push(format!("line {}: {} listed twice", i + 1, fact.label()));
                }
                facts.push(fact);
            }
            Ok(None) => {}
            Err(e) => errors.push(format!("line {}: {e}: {}", i + 1, line.trim())),
        }
    }
    if errors.is_empty() {
        Ok(facts)
    } else {
        Err(errors.join("\n"))
    }
}

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/plan_interface.txt")
}

fn load_fixture() -> Vec<Fact> {
    let path = fixture_path();
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    parse_fixture(&text).unwrap_or_else(|e| panic!("{}:\n{e}", path.display()))
}

// ---------------------------------------------------------------------------
// Type families
// ---------------------------------------------------------------------------

/// The family of a fixture type or of a `format_type` result.
fn family(ty: &str) -> String {
    // Drop typmods wherever format_type puts them: "numeric(78,0)",
    // "timestamp(3) without time zone", "character varying(42)".
    let mut plain = String::new();
    let mut depth = 0;
    for c in ty.to_lowercase().chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    let plain = plain.split_whitespace().collect::<Vec<_>>().join(" ");
    let family = match plain.as_str() {
        "text" | "varchar" | "character varying" | "char" | "character" | "bpchar" => "text",
        "timestamp"
        | "timestamptz"
        | "timestamp without time zone"
        | "timestamp with time zone" => "timestamp",
        "numeric" | "decimal" => "numeric",
        "integer" | "int" | "int4" | "serial" => "integer",
        "bigint" | "int8" | "bigserial" => "bigint",
        "smallint" | "int2" => "smallint",
        "boolean" | "bool" => "boolean",
        other => other,
    };
    family.to_string()
}

/// A type as the catalog has it: `format_type`, and the base type's when
/// it is a domain.
#[derive(Debug, Clone)]
struct CatalogType {
    shown: String,
    base: Option<String>,
}

impl CatalogType {
    fn effective(&self) -> &str {
        self.base.as_deref().unwrap_or(&self.shown)
    }

    fn describe(&self) -> String {
        match &self.base {
            Some(base) => format!("{} (domain over {base})", self.shown),
            None => self.shown.clone(),
        }
    }
}

/// Whether `actual` satisfies the plan's `expected` type for `name`.
fn type_matches(expected: &str, actual: &CatalogType, name: &str) -> bool {
    let got = family(actual.effective());
    got == family(expected) || (expected == "serial" && name == "id" && got == "bigint")
}

// ---------------------------------------------------------------------------
// The catalog
// ---------------------------------------------------------------------------

struct CatalogColumn {
    name: String,
    ty: CatalogType,
}

fn catalog_type(shown: String, base: Option<String>) -> CatalogType {
    CatalogType { shown, base }
}

/// (relkind, columns) of `schema.name`, or None.
fn relation(client: &mut Client, name: &str) -> Option<(String, Vec<CatalogColumn>)> {
    let row = client
        .query_opt(
            "SELECT c.oid, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relname = $2",
            &[&SCHEMA, &name],
        )
        .expect("read pg_class")?;
    let oid: u32 = row.get(0);
    let relkind: String = row.get(1);
    Some((relkind, relation_columns(client, oid)))
}

fn relation_columns(client: &mut Client, oid: u32) -> Vec<CatalogColumn> {
    client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod),
                    CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END
               FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
              WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum",
            &[&oid],
        )
        .expect("read pg_attribute")
        .into_iter()
        .map(|r| CatalogColumn {
            name: r.get(0),
            ty: catalog_type(r.get(1), r.get(2)),
        })
        .collect()
}

struct CatalogArg {
    name: String,
    mode: String,
    ty: CatalogType,
}

struct CatalogFunction {
    signature: String,
    nargdefaults: usize,
    /// Input arguments (modes i, b, v), in order.
    inputs: Vec<CatalogArg>,
    /// Output columns (modes o, b, t), in order; for a function returning
    /// SETOF a table's row type without OUT arguments, that table's columns.
    outputs: Vec<CatalogArg>,
    returns: CatalogType,
}

fn functions(client: &mut Client, name: &str) -> Vec<CatalogFunction> {
    let procs = client
        .query(
            "SELECT p.oid, p.oid::regprocedure::text, p.pronargdefaults::int4,
                    format_type(p.prorettype, NULL),
                    CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END,
                    t.typrelid
               FROM pg_proc p
               JOIN pg_namespace n ON n.oid = p.pronamespace
               JOIN pg_type t ON t.oid = p.prorettype
              WHERE n.nspname = $1 AND p.proname = $2
              ORDER BY p.oid",
            &[&SCHEMA, &name],
        )
        .expect("read pg_proc");
    procs
        .into_iter()
        .map(|p| {
            let oid: u32 = p.get(0);
            let args: Vec<CatalogArg> = client
                .query(
                    "SELECT coalesce(p.proargnames[a.ord], ''), coalesce(p.proargmodes[a.ord]::text, 'i'),
                            format_type(a.typ, NULL),
                            CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END
                       FROM pg_proc p
                       CROSS JOIN LATERAL unnest(coalesce(p.proallargtypes, p.proargtypes::oid[]))
                            WITH ORDINALITY AS a(typ, ord)
                       JOIN pg_type t ON t.oid = a.typ
                      WHERE p.oid = $1
                      ORDER BY a.ord",
                    &[&oid],
                )
                .expect("read pg_proc arguments")
                .into_iter()
                .map(|r| CatalogArg {
                    name: r.get(0),
                    mode: r.get(1),
                    ty: catalog_type(r.get(2), r.get(3)),
                })
                .collect();
            let (inputs, mut outputs): (Vec<_>, Vec<_>) = (
                args.iter()
                    .filter(|a| matches!(a.mode.as_str(), "i" | "b" | "v"))
                    .map(clone_arg)
                    .collect(),
                args.iter()
                    .filter(|a| matches!(a.mode.as_str(), "o" | "b" | "t"))
                    .map(clone_arg)
                    .collect(),
            );
            let typrelid: u32 = p.get(5);
            if outputs.is_empty() && typrelid != 0 {
                outputs = relation_columns(client, typrelid)
                    .into_iter()
                    .map(|c| CatalogArg {
                        name: c.name,
                        mode: "t".into(),
                        ty: c.ty,
                    })
                    .collect();
            }
            CatalogFunction {
                signature: p.get(1),
                nargdefaults: p.get::<_, i32>(2) as usize,
                inputs,
                outputs,
                returns: catalog_type(p.get(3), p.get(4)),
            }
        })
        .collect()
}

impl CatalogFunction {
    /// The result as `type` or `table(name type, ...)`.
    fn result(&self) -> String {
        if self.outputs.is_empty() {
            self.returns.describe()
        } else {
            format!(
                "table({})",
                self.outputs
                    .iter()
                    .map(|o| format!("{} {}", o.name, o.ty.describe()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }
}

fn clone_arg(a: &CatalogArg) -> CatalogArg {
    CatalogArg {
        name: a.name.clone(),
        mode: a.mode.clone(),
        ty: a.ty.clone(),
    }
}

// ---------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------

fn plan_columns(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| format!("{} {}", c.name, c.ty))
        .collect::<Vec<_>>()
        .join(", ")
}

fn catalog_columns(columns: &[CatalogColumn]) -> String {
    columns
        .iter()
        .map(|c| format!("{} {}", c.name, c.ty.describe()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Differences of one plan function from one catalog function.
fn function_diffs(args: &[Arg], returns: &Returns, f: &CatalogFunction) -> Vec<String> {
    let mut diffs = Vec::new();
    if f.inputs.len() != args.len() {
        diffs.push(format!(
            "takes {} arguments, plan {} ({})",
            f.inputs.len(),
            args.len(),
            args.iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let first_default = f.inputs.len().saturating_sub(f.nargdefaults);
    for (i, plan) in args.iter().enumerate() {
        let Some(actual) = f.inputs.get(i) else {
            diffs.push(format!(
                "argument {} `{} {}` missing",
                i + 1,
                plan.name,
                plan.ty
            ));
            continue;
        };
        if actual.name != plan.name {
            diffs.push(format!(
                "argument {} is named `{}`, plan `{}`",
                i + 1,
                if actual.name.is_empty() {
                    "(unnamed)"
                } else {
                    &actual.name
                },
                plan.name
            ));
        }
        if !type_matches(&plan.ty, &actual.ty, &plan.name) {
            diffs.push(format!(
                "argument {} `{}` is {}, plan {}",
                i + 1,
                plan.name,
                actual.ty.describe(),
                plan.ty
            ));
        }
        if plan.default && i < first_default {
            diffs.push(format!(
                "argument {} `{}` has no default, plan has one",
                i + 1,
                plan.name
            ));
        }
    }
    match returns {
        Returns::Scalar(ty) => {
            if !f.outputs.is_empty() {
                diffs.push(format!("returns {}, plan {ty}", f.result()));
            } else if !type_matches(ty, &f.returns, "") {
                diffs.push(format!("returns {}, plan {ty}", f.returns.describe()));
            }
        }
        Returns::Table(columns) => {
            if f.outputs.is_empty() {
                diffs.push(format!(
                    "returns {}, plan table({})",
                    f.returns.describe(),
                    plan_columns(columns)
                ));
            } else {
                for (i, plan) in columns.iter().enumerate() {
                    match f.outputs.get(i) {
                        None => diffs.push(format!(
                            "result column {} `{} {}` missing (result has {} columns)",
                            i + 1,
                            plan.name,
                            plan.ty,
                            f.outputs.len()
                        )),
                        Some(actual)
                            if actual.name != plan.name
                                || !type_matches(&plan.ty, &actual.ty, &plan.name) =>
                        {
                            diffs.push(format!(
                                "result column {} is `{} {}`, plan `{} {}`",
                                i + 1,
                                actual.name,
                                actual.ty.describe(),
                                plan.name,
                                plan.ty
                            ))
                        }
                        Some(_) => {}
                    }
                }
            }
        }
    }
    diffs
}

fn relation_diffs(client: &mut Client, kind: &str, name: &str, columns: &[Column]) -> Vec<String> {
    let label = format!("{kind} {name}");
    let Some((relkind, actual)) = relation(client, name) else {
        return vec![format!("{label}: missing from schema {SCHEMA}")];
    };
    let mut diffs = Vec::new();
    let wanted: &[&str] = if kind == "table" {
        &["r", "p"]
    } else {
        &["v", "m"]
    };
    if !wanted.contains(&relkind.as_str()) {
        diffs.push(format!("{label}: is relkind '{relkind}', plan a {kind}"));
    }
    let mut column_diffs = 0;
    for plan in columns {
        match actual.iter().find(|c| c.name == plan.name) {
            None => {
                diffs.push(format!(
                    "{label}: missing column `{} {}`",
                    plan.name, plan.ty
                ));
                column_diffs += 1;
            }
            Some(c) if !type_matches(&plan.ty, &c.ty, &plan.name) => {
                diffs.push(format!(
                    "{label}: column `{}` is {}, plan {}",
                    plan.name,
                    c.ty.describe(),
                    plan.ty
                ));
                column_diffs += 1;
            }
            Some(_) => {}
        }
    }
    if column_diffs > 0 {
        let last = diffs.last_mut().expect("a column difference");
        last.push_str(&format!(
            "\n      installed columns: {}",
            catalog_columns(&actual)
        ));
    }
    diffs
}

fn differences(client: &mut Client, facts: &[Fact]) -> Vec<String> {
    let mut all = Vec::new();
    for fact in facts {
        match fact {
            Fact::Table { name, columns } => {
                all.extend(relation_diffs(client, "table", name, columns))
            }
            Fact::View { name, columns } => {
                all.extend(relation_diffs(client, "view", name, columns))
            }
            Fact::Function {
                name,
                args,
                returns,
            } => {
                let label = fact.label();
                let candidates = functions(client, name);
                if candidates.is_empty() {
                    all.push(format!("{label}: missing from schema {SCHEMA}"));
                    continue;
                }
                let mut scored: Vec<(Vec<String>, &CatalogFunction)> = candidates
                    .iter()
                    .map(|f| (function_diffs(args, returns, f), f))
                    .collect();
                scored.sort_by_key(|(d, _)| d.len());
                let (diffs, closest) = &scored[0];
                if diffs.is_empty() {
                    continue;
                }
                let overloads = if candidates.len() > 1 {
                    format!(" (closest of {} overloads)", candidates.len())
                } else {
                    String::new()
                };
                all.extend(diffs.iter().map(|d| format!("{label}: {d}")));
                let last = all.last_mut().expect("a function difference");
                last.push_str(&format!(
                    "\n      installed: {} returns {}{overloads}",
                    closest.signature,
                    closest.result()
                ));
            }
        }
    }
    all
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn installed_extension_matches_the_plan_interface() {
    let facts = load_fixture();
    let cluster = Cluster::start("plan-interface", &[]);
    let mut client = cluster.database_with_extension("test");
    let version: String = client
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'balance_queue'",
            &[],
        )
        .expect("read pg_extension")
        .get(0);
    let diffs = differences(&mut client, &facts);
    assert!(
        diffs.is_empty(),
        "balance_queue {version} differs from the plan's SQL interface \
         ({}) in {} places:\n{}\n",
        fixture_path().display(),
        diffs.len(),
        diffs
            .iter()
            .map(|d| format!("  - {d}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The checker itself, on a hand-made schema `balance_queue` in a database
/// without the extension: what matches is silent, each kind of drift is
/// reported, and nothing stops at the first difference.
#[test]
fn checker_reports_every_kind_of_drift() {
    let facts = parse_fixture(
        "table t_ok(id serial, chain_id integer, name varchar, at timestamp, amount numeric)
         table t_bad(chain_id integer, symbol varchar, n integer)
         table t_missing(a integer)
         view v_ok(a text, b integer)
         function f_ok(p_a integer, p_b varchar default) -> table(x numeric, y text)
         function f_renamed_arg(p_a integer) -> numeric
         function f_no_default(p_a integer default) -> void
         function f_cols(p_a integer) -> table(x numeric, y text)
         function f_scalar(p_a integer) -> bigint
         function f_missing() -> void",
    )
    .expect("parse");
    let cluster = Cluster::start("plan-interface-checker", &[]);
    let mut admin = cluster.connect("postgres");
    admin.batch_execute("CREATE DATABASE selftest").unwrap();
    let mut client = cluster.connect("selftest");
    client
        .batch_execute(
            "CREATE SCHEMA balance_queue;
             CREATE DOMAIN balance_queue.address AS varchar(42);
             CREATE TABLE balance_queue.t_ok (extra text, id bigint, chain_id integer,
                 name balance_queue.address, at timestamptz, amount numeric(78,0));
             CREATE TABLE balance_queue.t_bad (chain_id integer, token_symbol text, n bigint);
             CREATE VIEW balance_queue.v_ok AS SELECT 0 AS z, 'x'::varchar(3) AS a, 1 AS b;
             CREATE FUNCTION balance_queue.f_ok(p_z bigint) RETURNS integer
                 LANGUAGE sql AS 'SELECT 1';
             CREATE FUNCTION balance_queue.f_ok(p_a integer, p_b text DEFAULT 'x')
                 RETURNS TABLE(x numeric(78,0), y varchar, z integer)
                 LANGUAGE sql AS 'SELECT 1::numeric, ''a''::varchar, 1';
             CREATE FUNCTION balance_queue.f_renamed_arg(chain_id integer) RETURNS numeric
                 LANGUAGE sql AS 'SELECT 1::numeric';
             CREATE FUNCTION balance_queue.f_no_default(p_a integer) RETURNS void
                 LANGUAGE plpgsql AS 'BEGIN END';
             CREATE FUNCTION balance_queue.f_cols(p_a integer) RETURNS TABLE(y text, x numeric)
                 LANGUAGE sql AS 'SELECT ''a''::text, 1::numeric';
             CREATE FUNCTION balance_queue.f_scalar(p_a integer, p_b integer) RETURNS integer
                 LANGUAGE sql AS 'SELECT 1';",
        )
        .unwrap();
    let diffs = differences(&mut client, &facts);
    let report = diffs.join("\n");
    let expected = [
        "table t_bad: missing column `symbol varchar`",
        "table t_bad: column `n` is bigint, plan integer",
        "table t_missing: missing from schema balance_queue",
        "function f_renamed_arg: argument 1 is named `chain_id`, plan `p_a`",
        "function f_no_default: argument 1 `p_a` has no default, plan has one",
        "function f_cols: result column 1 is `y text`, plan `x numeric`",
        "function f_cols: result column 2 is `x numeric`, plan `y text`",
        "function f_scalar: takes 2 arguments, plan 1 (p_a)",
        "function f_scalar: returns integer, plan bigint",
        "function f_missing: missing from schema balance_queue",
    ];
    for e in expected {
        assert!(report.contains(e), "no `{e}` in:\n{report}");
    }
    assert_eq!(
        diffs.len(),
        expected.len(),
        "unexpected differences:\n{report}"
    );
    assert!(
        report.contains("installed columns: chain_id integer, token_symbol text, n bigint"),
        "{report}"
    );
    for quiet in ["t_ok", "v_ok", "f_ok"] {
        assert!(!report.contains(quiet), "{quiet} reported:\n{report}");
    }
}

#[test]
fn fixture_lists_every_plan_object() {
    let facts = load_fixture();
    let labels: Vec<String> = facts.iter().map(Fact::label).collect();
    let expected = [
        "table current_token_balances",
        "table balance_update_queue",
        "table daily_balance_snapshots",
        "table token_metadata",
        "table queue_processing_config",
        "table queue_health_metrics",
        "view queue_health_summary",
        "function recalculate_address_balance",
        "function queue_balance_update",
        "function process_balance_update_queue",
        "function trigger_queue_balance_update",
        "function get_queue_config",
        "function collect_queue_health_metrics",
        "function get_current_balance",
        "function get_address_portfolio",
        "function format_token_balance",
    ];
    let missing: Vec<&&str> = expected
        .iter()
        .filter(|e| !labels.iter().any(|l| l == *e))
        .collect();
    assert!(missing.is_empty(), "fixture lacks {missing:?}");
    assert_eq!(labels.len(), expected.len(), "fixture lists {labels:?}");
    // The waived SERIAL keys stay out; the others are kept.
    for fact in &facts {
        if let Fact::Table { name, columns } = fact {
            let has_id = columns.iter().any(|c| c.name == "id");
            let waived = matches!(
                name.as_str(),
                "current_token_balances" | "daily_balance_snapshots" | "token_metadata"
            );
            assert_eq!(has_id, !waived, "id column of {name}");
        }
    }
}

#[test]
fn fixture_parser_reads_a_line_and_rejects_malformed_ones() {
    assert_eq!(parse_line("  # a comment").unwrap(), None);
    assert_eq!(parse_line("").unwrap(), None);
    assert_eq!(
        parse_line("function f(p_a integer, p_b varchar default) -> table(x numeric, y timestamp)")
            .unwrap(),
        Some(Fact::Function {
            name: "f".into(),
            args: vec![
                Arg {
                    name: "p_a".into(),
                    ty: "integer".into(),
                    default: false
                },
                Arg {
                    name: "p_b".into(),
                    ty: "varchar".into(),
                    default: true
                },
            ],
            returns: Returns::Table(vec![
                Column {
                    name: "x".into(),
                    ty: "numeric".into()
                },
                Column {
                    name: "y".into(),
                    ty: "timestamp".into()
                },
            ]),
        })
    );
    assert_eq!(
        parse_line("function g() -> void").unwrap(),
        Some(Fact::Function {
            name: "g".into(),
            args: vec![],
            returns: Returns::Scalar("void".into()),
        })
    );
    assert_eq!(
        parse_line("view v(a text, b bigint)").unwrap(),
        Some(Fact::View {
            name: "v".into(),
            columns: vec![
                Column {
                    name: "a".into(),
                    ty: "text".into()
                },
                Column {
                    name: "b".into(),
                    ty: "bigint".into()
                },
            ],
        })
    );
    for bad in [
        "table t(a integer, b)",                             // column without a type
        "table t(a numeric(78, 0))",                         // typmod
        "table t(a integr)",                                 // unknown type
        "table t(a integer) extra",                          // trailing text
        "table T(a integer)",                                // not a lowercase identifier
        "tabel t(a integer)",                                // unknown kind
        "function f(p_a integer)",                           // no result
        "function f(p_a integer default, p_b text) -> void", // default then none
        "function f(p_a integer) -> table()",                // empty result
        "view v a text",                                     // no parentheses
    ] {
        assert!(parse_line(bad).is_err(), "accepted malformed `{bad}`");
    }
    let err = parse_fixture("table t(a integer)\ntable t(b integer)\nview v(x)\n").unwrap_err();
    assert!(
        err.contains("line 2") && err.contains("line 3"),
        "reports every bad line: {err}"
    );
}

#[test]
fn type_families() {
    let t = |shown: &str| CatalogType {
        shown: shown.into(),
        base: None,
    };
    assert!(type_matches("varchar", &t("text"), "x"));
    assert!(type_matches("varchar", &t("character varying(42)"), "x"));
    assert!(type_matches("text", &t("character(42)"), "x"));
    assert!(type_matches(
        "timestamp",
        &t("timestamp with time zone"),
        "x"
    ));
    assert!(type_matches(
        "timestamptz",
        &t("timestamp(3) without time zone"),
        "x"
    ));
    assert!(type_matches("numeric", &t("numeric(78,0)"), "x"));
    assert!(type_matches("serial", &t("integer"), "id"));
    assert!(type_matches("serial", &t("bigint"), "id"));
    assert!(!type_matches("serial", &t("bigint"), "other"));
    assert!(!type_matches("integer", &t("bigint"), "x"));
    assert!(!type_matches("integer", &t("numeric"), "x"));
    assert!(!type_matches(
        "date",
        &t("timestamp without time zone"),
        "x"
    ));
    assert!(type_matches("trigger", &t("trigger"), ""));
    assert!(!type_matches("void", &t("integer"), ""));
    let domain = CatalogType {
        shown: "balance_queue.address".into(),
        base: Some("text".into()),
    };
    assert!(type_matches("varchar", &domain, "x"));
}
