//! Upgrade from the previous release with real data in flight.
//!
//! A private copy of the Postgres installation (`PgTree`) gets the previous
//! release's build (`BQ_UPGRADE_BASE`, made by `scripts/upgrade-base.sh`);
//! a preloaded cluster runs it: the extension is created, a rindexer table
//! attached, part of the real rETH export ingested and drained by the
//! worker, then more rows ingested with the worker paused, so items wait.
//! The server stops, the installed build (`pg_config --pkglibdir` and
//! `--sharedir`: what `scripts/setup.sh` installed) replaces the old one in
//! the private tree, the server starts and `ALTER EXTENSION balance_queue
//! UPDATE` runs. Then:
//! - the upgraded extension's catalog equals a fresh install of the new
//!   version in another database of the same cluster: its members
//!   (`pg_describe_object` of every `pg_depend` 'e' row), its pg_extension
//!   row, `pg_dump -s -e balance_queue -n balance_queue`, the binary-upgrade dump of every
//!   member, and the triggers on the attached table;
//! - the balances are those before the upgrade, and those the drained rows
//!   imply;
//! - the waiting items and rows ingested after the upgrade drain, and every
//!   balance equals the independent recomputation from the raw rows.
//!
//! The statements run before the upgrade use the previous release's names,
//! spelled out here (`V0_*`): that release never changes. Everything after
//! the upgrade goes through the harness (`recompute`, `drain`, `common`),
//! which follows the current names.
//!
//! `BQ_UPGRADE_SELF_CHECK=1` upgrades instead to a copy of the base release
//! under another version with an empty upgrade script: a check of this
//! harness itself, independent of the installed build. Any other value is
//! used as that upgrade script's body, e.g. `ALTER TABLE
//! balance_queue.chain_registry ADD COLUMN x int` must fail the test.

mod common;

use balance_queue_harness::cluster::{self, Cluster};
use balance_queue_harness::pgtree::{PgTree, pg_config_value};
use balance_queue_harness::recompute::{self, Expected, Key, Source};
use balance_queue_harness::{data, drain, rindexer};
use num_bigint::BigInt;
use postgres::Client;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{TABLE, alter_system, scalar_i64, wait_until};

const EXTENSION: &str = "balance_queue";

/// The previous release's SQL, used before the upgrade.
const V0_ATTACH: &str = "SELECT balance_queue.attach_transfer_table($1::text::regclass)";
const V0_BALANCES: &str = "SELECT chain_id, contract_address, holder_address, current_balance::text
                             FROM balance_queue.current_token_balances";
const V0_WAITING: &str = "SELECT count(*) FROM balance_queue.balance_update_queue
                           WHERE status IN ('pending', 'processing')";
const V0_FAILED: &str =
    "SELECT count(*) FROM balance_queue.balance_update_queue WHERE status = 'failed'";
/// The worker's switch (a GUC of the library, before and after).
const WORKER_SWITCH: &str = "balance_queue.enabled";

/// One build of the extension: its library, control file and SQL scripts.
struct Release {
    version: String,
    library: PathBuf,
    /// The control file and every `balance_queue--*.sql` beside it.
    files: Vec<PathBuf>,
}

fn default_version(control: &Path) -> String {
    let text = std::fs::read_to_string(control)
        .unwrap_or_else(|e| panic!("read {}: {e}", control.display()));
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("default_version"))
        .map(|rest| {
            rest.trim_start_matches([' ', '='])
                .trim()
                .trim_matches('\'')
                .to_string()
        })
        .next()
        .unwrap_or_else(|| panic!("no default_version in {}", control.display()))
}

fn release_in(libdir: &Path, extdir: &Path, what: &str) -> Release {
    let library = libdir.join(format!("{EXTENSION}.so"));
    let control = extdir.join(format!("{EXTENSION}.control"));
    assert!(
        library.is_file() && control.is_file(),
        "{what}: no {} or no {}",
        library.display(),
        control.display()
    );
    let mut files = vec![control.clone()];
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(extdir)
        .unwrap_or_else(|e| panic!("read {}: {e}", extdir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(&format!("{EXTENSION}--")) && name.ends_with(".sql")
        })
        .collect();
    scripts.sort();
    files.extend(scripts);
    Release {
        version: default_version(&control),
        library,
        files,
    }
}

/// The build to upgrade from: `BQ_UPGRADE_BASE` (the directory
/// `scripts/upgrade-base.sh` prints).
fn base_release() -> Release {
    let Some(dir) = std::env::var_os("BQ_UPGRADE_BASE") else {
        panic!(
            "BQ_UPGRADE_BASE is not set: it names the build of the previous release to upgrade from. \
             Build it once (a few minutes; reused afterwards) and pass it:\n  \
             cd tests && BQ_UPGRADE_BASE=$(../scripts/upgrade-base.sh) cargo test --release --test upgrade\n\
             (scripts/test.sh sets it.)"
        );
    };
    let dir = PathBuf::from(dir);
    let release = release_in(
        &dir.join("lib"),
        &dir.join("extension"),
        &format!(
            "BQ_UPGRADE_BASE={} (run scripts/upgrade-base.sh)",
            dir.display()
        ),
    );
    let install = format!("{EXTENSION}--{}.sql", release.version);
    assert!(
        release.files.iter().any(|f| f.ends_with(&install)),
        "BQ_UPGRADE_BASE={}: no {install} (run scripts/upgrade-base.sh)",
        dir.display()
    );
    release
}

/// The build installed in the system Postgres (what the other tests run).
fn installed_release() -> Release {
    let pg_config = cluster::pg_config();
    release_in(
        &pg_config_value(&pg_config, "pkglibdir"),
        &pg_config_value(&pg_config, "sharedir").join("extension"),
        "the installed build (run scripts/setup.sh)",
    )
}

/// The base release under another version, with an upgrade script of
/// `update_sql` (empty: `1`), written to `dir` (`BQ_UPGRADE_SELF_CHECK`).
fn self_check_release(base: &Release, dir: &Path, update_sql: &str) -> Release {
    let version = format!("{}-selfcheck", base.version);
    std::fs::create_dir_all(dir).unwrap();
    let control = dir.join(format!("{EXTENSION}.control"));
    let text = std::fs::read_to_string(&base.files[0]).unwrap();
    std::fs::write(
        &control,
        text.replace(
            &format!("default_version = '{}'", base.version),
            &format!("default_version = '{version}'"),
        ),
    )
    .unwrap();
    let base_install = base
        .files
        .iter()
        .find(|f| f.ends_with(format!("{EXTENSION}--{}.sql", base.version)))
        .unwrap();
    let install = dir.join(format!("{EXTENSION}--{version}.sql"));
    std::fs::copy(base_install, &install).unwrap();
    let update = dir.join(format!("{EXTENSION}--{}--{version}.sql", base.version));
    let body = if update_sql == "1" { "" } else { update_sql };
    std::fs::write(&update, format!("-- self-check\n{body}\n")).unwrap();
    Release {
        version,
        library: base.library.clone(),
        files: vec![control, install, update],
    }
}

fn extversion(client: &mut Client) -> String {
    client
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = $1",
            &[&EXTENSION],
        )
        .expect("the extension exists")
        .get(0)
}

/// Every member of the extension, described, sorted.
fn members(client: &mut Client) -> Vec<String> {
    let mut members: Vec<String> = client
        .query(
            "SELECT pg_describe_object(d.classid, d.objid, d.objsubid)
               FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
              WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
                AND e.extname = $1",
            &[&EXTENSION],
        )
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    members.sort();
    members
}

/// The pg_extension row, with OIDs as names: version, relocatable, schema,
/// and the configuration tables (pg_extension_config_dump) with their
/// conditions, sorted by table.
fn extension_row(client: &mut Client) -> Vec<String> {
    let row = client
        .query_one(
            "SELECT e.extversion, e.extrelocatable::text, n.nspname::text,
                    coalesce((SELECT string_agg(c.t || ' ' || quote_literal(c.cond), ', ' ORDER BY c.t)
                                FROM unnest(e.extconfig::regclass[]::text[], e.extcondition) AS c(t, cond)), '')
               FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
              WHERE e.extname = $1",
            &[&EXTENSION],
        )
        .unwrap();
    (0..4).map(|i| row.get::<_, String>(i)).collect()
}

/// A dump, with what legitimately differs between two databases masked:
/// - the header comments (`-- Dumped from database version ...`);
/// - the random key of `\restrict` / `\unrestrict` (pg_dump 15.14+);
/// - in binary-upgrade dumps: the OIDs pg_upgrade would preserve
///   (`binary_upgrade_set_next_*('16468'::pg_catalog.oid)`, the
///   configuration-table OID array of `binary_upgrade_create_empty_extension`,
///   compared by name in [`extension_row`] instead, the toast table's
///   `WHERE oid = '16459'`), the relfrozenxid and relminmxid of each
///   table, the LSNs of `binary_upgrade_set_next_attribute_versions`
///   (pg_dump 15.20 here emits them), the position of the sequences registered with
///   pg_extension_config_dump (`setval`: data), the fast-default values a
///   column added with a DEFAULT keeps (`binary_upgrade_set_missing_value`:
///   storage, not schema), and dropped columns (a column an upgrade drops
///   stays as a `........pg.dropped.N........` attribute).
fn normalise_dump(dump: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut statement: Option<Vec<String>> = None;
    for line in dump.lines() {
        // A multi-line UPDATE of pg_attribute recreating a dropped column.
        if let Some(lines) = statement.as_mut() {
            lines.push(line.to_string());
            if line.trim_end().ends_with(';') {
                let lines = statement.take().unwrap();
                if !lines.iter().any(|l| l.contains("pg.dropped.")) {
                    out.extend(lines);
                }
            }
            continue;
        }
        if line.starts_with("UPDATE pg_catalog.pg_attribute") {
            statement = Some(vec![line.to_string()]);
            continue;
        }
        let header = line == "--"
            || line.starts_with("-- PostgreSQL database dump")
            || line.starts_with("-- Dumped from database version")
            || line.starts_with("-- Dumped by pg_dump version")
            || line == "-- For binary upgrade, recreate dropped column."
            || line == "-- set missing value.";
        if header
            || line.trim().is_empty()
            || line.contains("pg.dropped.")
            || line.contains("binary_upgrade_set_missing_value")
        {
            continue;
        }
        if line.starts_with("\\restrict ") || line.starts_with("\\unrestrict ") {
            out.push(format!("{} <key>", line.split(' ').next().unwrap()));
            continue;
        }
        let mut line = line.to_string();
        if line.contains("binary_upgrade_create_empty_extension(") {
            // The configuration tables' OIDs: the first '{...}' argument.
            if let Some(start) = line.find("'{")
                && let Some(len) = line[start + 2..].find("}'")
            {
                line.replace_range(start + 1..start + 2 + len + 1, "<oids>");
            }
        }
        line = mask_literals(&line, "'::pg_catalog.oid", "<oid>");
        line = mask_literals(&line, "'::pg_catalog.pg_lsn", "<lsn>");
        line = mask_after(&line, "relfrozenxid = '", "<xid>");
        line = mask_after(&line, "relminmxid = '", "<mxid>");
        line = mask_after(&line, "WHERE oid = '", "<oid>");
        if line.starts_with("SELECT pg_catalog.setval(") {
            // A configuration sequence's position: data, not schema.
            if let Some(comma) = line.find("', ") {
                line = format!("{}', <value>);", &line[..comma]);
            }
        }
        out.push(line);
    }
    // A dropped last column leaves a comma before the closing parenthesis.
    for i in 1..out.len() {
        if out[i].trim_start().starts_with(')') && out[i - 1].ends_with(',') {
            out[i - 1].pop();
        }
    }
    out.join("\n")
}

/// Replaces the contents of every quoted literal that ends right before
/// `suffix` (its closing quote included in `suffix`) with `mask`.
fn mask_literals(line: &str, suffix: &str, mask: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(end) = rest.find(suffix) {
        let start = rest[..end].rfind('\'').map(|s| s + 1).unwrap_or(end);
        out.push_str(&rest[..start]);
        out.push_str(mask);
        out.push_str(suffix);
        rest = &rest[end + suffix.len()..];
    }
    out.push_str(rest);
    out
}

/// Replaces the quoted literal that `prefix` (its opening quote included)
/// starts with `mask`.
fn mask_after(line: &str, prefix: &str, mask: &str) -> String {
    match line.find(prefix) {
        Some(at) => {
            let start = at + prefix.len();
            match line[start..].find('\'') {
                Some(len) => format!("{}{mask}{}", &line[..start], &line[start + len..]),
                None => line.to_string(),
            }
        }
        None => line.to_string(),
    }
}

/// Compares two texts; on a difference writes both to temp files, prints
/// the lines only one side has and returns that report. The test goes on
/// to the data checks and fails at the end, so one run shows everything.
fn compare_catalog(what: &str, upgraded: &str, fresh: &str) -> Option<String> {
    if upgraded == fresh {
        return None;
    }
    let base = std::env::temp_dir().join(format!(
        "balance_queue-upgrade-{}-{}",
        std::process::id(),
        what.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    ));
    let (a, b) = (
        base.with_extension("upgraded.sql"),
        base.with_extension("fresh.sql"),
    );
    std::fs::write(&a, upgraded).unwrap();
    std::fs::write(&b, fresh).unwrap();
    let fresh_lines: HashSet<&str> = fresh.lines().collect();
    let upgraded_lines: HashSet<&str> = upgraded.lines().collect();
    let only_upgraded: Vec<&str> = upgraded
        .lines()
        .filter(|l| !fresh_lines.contains(l))
        .take(40)
        .collect();
    let only_fresh: Vec<&str> = fresh
        .lines()
        .filter(|l| !upgraded_lines.contains(l))
        .take(40)
        .collect();
    let report = format!(
        "{what}: the upgraded database differs from a fresh install (diff {} {})\n\
         only after the upgrade:\n  {}\nonly in the fresh install:\n  {}",
        a.display(),
        b.display(),
        if only_upgraded.is_empty() {
            "(none: the order differs)".to_string()
        } else {
            only_upgraded.join("\n  ")
        },
        if only_fresh.is_empty() {
            "(none: the order differs)".to_string()
        } else {
            only_fresh.join("\n  ")
        },
    );
    eprintln!("{report}");
    Some(report)
}

fn stored_balances_v0(client: &mut Client) -> HashMap<Key, BigInt> {
    client
        .query(V0_BALANCES, &[])
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                (r.get(0), r.get(1), r.get(2)),
                r.get::<_, String>(3).parse::<BigInt>().unwrap(),
            )
        })
        .collect()
}

#[test]
fn upgrade_from_the_previous_release_keeps_balances_and_matches_a_fresh_install() {
    let base = base_release();
    let tree = PgTree::copy_of_system("upgrade");
    let target = if let Ok(update_sql) = std::env::var("BQ_UPGRADE_SELF_CHECK") {
        self_check_release(&base, &tree.root().join("self-check"), &update_sql)
    } else {
        installed_release()
    };
    assert_ne!(
        target.version, base.version,
        "the installed build is version {}, the release this test upgrades from: \
         install the new build (scripts/setup.sh) after bumping the version",
        base.version
    );
    tree.remove_extension(EXTENSION);
    tree.install(&base.library, &base.files);

    // --- the previous release, with its worker, on real data ---------------
    let cluster = Cluster::start_with_bindir(
        "upgrade",
        &[
            "shared_preload_libraries = 'balance_queue'",
            "balance_queue.database = 'test'",
        ],
        tree.bindir(),
    );
    let mut admin = cluster.connect("postgres");
    admin.batch_execute("CREATE DATABASE test").unwrap();
    let mut c = cluster.connect("test");
    c.batch_execute("CREATE EXTENSION balance_queue")
        .expect("CREATE EXTENSION of the previous release");
    assert_eq!(extversion(&mut c), base.version);
    rindexer::create_transfer_table(&mut c, "rindexer_test_erc_20");
    c.execute(V0_ATTACH, &[&TABLE]).expect("attach");
    wait_until("the worker to connect", Duration::from_secs(30), || {
        scalar_i64(
            &mut c,
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'balance_queue worker'",
        ) > 0
    });

    // The export is two passes over the same 7,909 transfers, each in block
    // order. Drained before the upgrade: the first pass up to a block
    // boundary. Waiting at the upgrade: the rest of the first pass and the
    // start of the second (copies of drained transfers). After the upgrade:
    // the rest of the second pass, copies of transfers applied before the
    // upgrade and of transfers that were waiting.
    let rows = data::read_rindexer_csv(&data::reth_csv_path());
    assert_eq!(rows.len(), 15_818, "the export holds 15,818 rows");
    let drained = (6_000..rows.len())
        .find(|&i| rows[i].block_number != rows[i - 1].block_number)
        .unwrap();
    let drained_last_block = rows[drained - 1].block_number;
    let waiting = 11_000;
    assert!(drained < 7_909 && waiting > 7_909);

    rindexer::write_all(&mut c, TABLE, &rows[..drained], 1000).expect("COPY never fails");
    wait_until(
        "the worker to drain the first rows",
        Duration::from_secs(120),
        || scalar_i64(&mut c, V0_WAITING) == 0,
    );
    assert_eq!(scalar_i64(&mut c, V0_FAILED), 0);

    alter_system(&mut c, &[&format!("{WORKER_SWITCH} = off")]);
    std::thread::sleep(Duration::from_millis(500));
    rindexer::write_all(&mut c, TABLE, &rows[drained..waiting], 1000).expect("COPY never fails");
    let waiting_items = scalar_i64(&mut c, V0_WAITING);
    assert!(waiting_items > 0);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        scalar_i64(&mut c, V0_WAITING),
        waiting_items,
        "the paused worker leaves the items waiting"
    );
    let before = stored_balances_v0(&mut c);
    assert!(before.len() > 1000);

    // --- the new build ------------------------------------------------------
    drop(c);
    drop(admin);
    cluster.stop("fast");
    tree.install(&target.library, &target.files);
    let log_offset = std::fs::metadata(cluster.log_path())
        .map(|m| m.len())
        .unwrap_or(0);
    cluster.start_again();
    let mut admin = cluster.connect("postgres");
    let mut c = cluster.connect("test");
    let path: Option<String> = c
        .query_one(
            "SELECT path FROM pg_extension_update_paths($1) WHERE source = $2 AND target = $3",
            &[&EXTENSION, &base.version, &target.version],
        )
        .map(|r| r.get(0))
        .unwrap_or(None);
    assert!(
        path.is_some(),
        "no update path from {} to {}: the installed files are {:?}",
        base.version,
        target.version,
        target.files
    );
    // The new library's worker, switched on before the update, waits while
    // the installed SQL objects are the old version's, and says why.
    alter_system(&mut c, &[&format!("{WORKER_SWITCH} = on")]);
    let waits = format!(
        "the extension is installed at version {} but the library is {}",
        base.version, target.version
    );
    wait_until(
        "the worker to log that it waits",
        Duration::from_secs(10),
        || {
            let log = std::fs::read(cluster.log_path()).unwrap_or_default();
            String::from_utf8_lossy(&log[log_offset as usize..]).contains(&waits)
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        scalar_i64(&mut c, V0_WAITING),
        waiting_items,
        "nothing drains before ALTER EXTENSION UPDATE"
    );
    alter_system(&mut c, &[&format!("{WORKER_SWITCH} = off")]);
    std::thread::sleep(Duration::from_millis(300)); // the worker reloads
    c.batch_execute("ALTER EXTENSION balance_queue UPDATE")
        .unwrap_or_else(|e| panic!("ALTER EXTENSION balance_queue UPDATE ({path:?}): {e:?}"));
    assert_eq!(extversion(&mut c), target.version);

    // --- the catalog equals a fresh install of the new version -------------
    admin.batch_execute("CREATE DATABASE fresh").unwrap();
    let mut fresh = cluster.connect("fresh");
    fresh
        .batch_execute("CREATE EXTENSION balance_queue")
        .expect("CREATE EXTENSION of the new version");
    assert_eq!(extversion(&mut fresh), target.version);
    common::attach_rindexer_table(&mut fresh);

    let mut differences = Vec::new();
    differences.extend(compare_catalog(
        "extension members",
        &members(&mut c).join("\n"),
        &members(&mut fresh).join("\n"),
    ));
    differences.extend(compare_catalog(
        "pg_extension row",
        &extension_row(&mut c).join("\n"),
        &extension_row(&mut fresh).join("\n"),
    ));
    // `pg_dump -n balance_queue` alone crashes pg_dump 15.20 (SIGSEGV, in
    // any mode): the extension is not selected but its configuration tables
    // are (their schema is), and some are partitions. With `-e
    // balance_queue` the extension is selected too and pg_dump works.
    let dumps: [(&str, &[&str]); 3] = [
        (
            "pg_dump -s -e balance_queue -n balance_queue",
            &["-s", "-e", "balance_queue", "-n", "balance_queue"],
        ),
        // Extension members appear in a dump only in binary-upgrade mode,
        // one statement each.
        (
            "pg_dump -s --binary-upgrade -e balance_queue -n balance_queue",
            &[
                "-s",
                "--binary-upgrade",
                "-e",
                "balance_queue",
                "-n",
                "balance_queue",
            ],
        ),
        // The triggers attach_transfer_table put on the source table.
        (
            "pg_dump -s -n rindexer_test_erc_20",
            &["-s", "-n", "rindexer_test_erc_20"],
        ),
    ];
    for (what, args) in dumps {
        let upgraded = normalise_dump(&cluster.pg_dump("test", args));
        let fresh_dump = normalise_dump(&cluster.pg_dump("fresh", args));
        differences.extend(compare_catalog(what, &upgraded, &fresh_dump));
    }

    // --- balances unchanged, and those the drained rows imply --------------
    let source = [Source::rindexer(TABLE)];
    let unchanged = |c: &mut Client| {
        let snapshot = Expected {
            balances: before.clone(),
            ..Default::default()
        };
        let comparison = recompute::compare(c, &snapshot, &HashSet::new());
        assert!(
            comparison.all_match(),
            "balances changed by the upgrade: {:?}",
            comparison.mismatches
        );
    };
    unchanged(&mut c);
    let drained_only =
        recompute::recompute_where(&mut c, &source, |_, block| block <= drained_last_block);
    assert_eq!(drained_only.distinct_transfers, drained);
    let comparison = recompute::compare(&mut c, &drained_only, &HashSet::new());
    assert!(
        comparison.all_match(),
        "before the upgrade the balances were not those of the drained rows: {:?}",
        comparison.mismatches
    );

    // --- waiting items and new rows drain exactly ---------------------------
    rindexer::write_all(&mut c, TABLE, &rows[waiting..], 1000).expect("COPY never fails");
    unchanged(&mut c);
    alter_system(&mut c, &[&format!("{WORKER_SWITCH} = on")]);
    let expected = recompute::recompute(&mut c, &source);
    assert_eq!(expected.distinct_transfers, 7_909);
    assert_eq!(expected.duplicate_rows, 7_909);
    let mut last = None;
    wait_until(
        "the worker to drain the waiting items and the new rows",
        Duration::from_secs(120),
        || {
            let comparison = recompute::compare(&mut c, &expected, &HashSet::new());
            let done = comparison.all_match();
            last = Some(comparison);
            done
        },
    );
    let comparison = last.unwrap();
    assert_eq!(comparison.keys, 2_727);
    assert_eq!(drain(&mut c, 1000), (0, 0), "nothing is left to drain");
    // The statistics of the balances the upgrade found, plus what came after.
    assert!(common::assert_token_stats_match(&mut c) >= 1);

    let log = std::fs::read(cluster.log_path()).unwrap_or_default();
    let since_restart = String::from_utf8_lossy(&log[log_offset as usize..]);
    let warnings: Vec<&str> = since_restart
        .lines()
        .filter(|l| l.contains("balance_queue") && (l.contains("WARNING") || l.contains("ERROR")))
        .collect();
    assert!(
        warnings.is_empty(),
        "the server logged after the restart:\n{}",
        warnings.join("\n")
    );
    assert!(
        differences.is_empty(),
        "the upgraded catalog differs from a fresh install (the data checks passed):\n{}",
        differences.join("\n")
    );
    println!(
        "upgraded {} -> {} with {waiting_items} items waiting; {} members, {} balances",
        base.version,
        target.version,
        members(&mut c).len(),
        comparison.keys
    );
    drop(c);
    drop(fresh);
    drop(admin);
    drop(cluster);
    drop(tree);
}
