//! The preloaded reference data against the pinned chain list, no database
//! needed: every chain of `@eco-foundation/chains` 2.0.4
//! (`fixtures/eco-chains-2.0.4.json`) is in the `chain_registry` INSERT of
//! `sql/reference_data.sql` with its testnet flag, and every stable token of
//! the package is in its `token_metadata` INSERT with its lowercase address
//! and decimals. Guards against hand edits of the generated SQL and against
//! the fixture and the SQL drifting apart (both come from
//! `scripts/chains/generate.mjs`).

use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::Path;

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The VALUES rows of `INSERT INTO balance_queue.<table>`: one field list per
/// row, string literals unquoted, NULL as `NULL`, comments dropped.
fn insert_rows(sql: &str, table: &str) -> Vec<Vec<String>> {
    let start = sql
        .find(&format!("INSERT INTO balance_queue.{table}"))
        .unwrap_or_else(|| panic!("no INSERT INTO balance_queue.{table}"));
    let statement = &sql[start..];
    let values =
        &statement[statement.find("VALUES").unwrap()..statement.find("ON CONFLICT").unwrap()];
    values
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with('('))
        .map(fields)
        .collect()
}

fn fields(row: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut chars = row[1..].chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' if quoted && chars.peek() == Some(&'\'') => {
                chars.next();
                out.last_mut().unwrap().push('\'');
            }
            '\'' => quoted = !quoted,
            ',' if !quoted => out.push(String::new()),
            ')' if !quoted => break,
            c if quoted || !c.is_whitespace() => out.last_mut().unwrap().push(c),
            _ => {}
        }
    }
    out
}

#[test]
fn every_pinned_chain_and_stable_is_preloaded() {
    let sql = read("../sql/reference_data.sql");
    let fixture: Value = serde_json::from_str(&read("fixtures/eco-chains-2.0.4.json")).unwrap();
    let chains = fixture.as_array().expect("the fixture is a list of chains");

    // chain_id -> is_testnet (columns: chain_id, network_name, display_name, is_testnet, ...)
    let registry: HashMap<i64, bool> = insert_rows(&sql, "chain_registry")
        .iter()
        .map(|r| (r[0].parse().unwrap(), r[3].parse().unwrap()))
        .collect();
    // (chain_id, contract_address, decimals)
    let tokens: HashSet<(i64, String, i64)> = insert_rows(&sql, "token_metadata")
        .iter()
        .map(|r| (r[0].parse().unwrap(), r[1].clone(), r[4].parse().unwrap()))
        .collect();

    let mut stables = 0;
    for chain in chains {
        let id = chain["chain_id"].as_i64().unwrap();
        let testnet = chain["testnet"].as_bool().unwrap();
        assert_eq!(
            registry.get(&id),
            Some(&testnet),
            "chain {id} and its testnet flag"
        );
        for stable in chain["stables"].as_array().unwrap() {
            let address = stable["address"].as_str().unwrap();
            assert!(
                address.len() == 42
                    && address.starts_with("0x")
                    && address[2..]
                        .chars()
                        .all(|c| matches!(c, '0'..='9' | 'a'..='f')),
                "chain {id}: {address} is not lowercase 0x hex"
            );
            let decimals = stable["decimals"].as_i64().unwrap();
            assert!(
                tokens.contains(&(id, address.to_string(), decimals)),
                "chain {id}: {} {address} with {decimals} decimals is not preloaded",
                stable["symbol"]
            );
            stables += 1;
        }
    }
    // What the package 2.0.4 holds: 24 mainnets, 10 testnets, 54 stables.
    let testnets = chains.iter().filter(|c| c["testnet"] == true).count();
    assert_eq!((chains.len(), testnets, stables), (34, 10, 54));
    assert_eq!(
        registry.len(),
        chains.len(),
        "a chain preloaded that the package lacks"
    );
}

/// The upgrade script carries the reference data and the leaderboard's
/// objects verbatim (an upgraded database must get what a fresh install
/// gets, from one definition).
#[test]
fn the_upgrade_script_carries_its_shared_sql_files_verbatim() {
    let sql = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql");
    let upgrade = std::fs::read_to_string(sql.join("balance_queue--0.1.0--0.2.0.sql")).unwrap();
    for file in [
        "reference_data.sql",
        "leaderboard.sql",
        "bulk_loads.sql",
        "graphql.sql",
        "change_feed.sql",
        "token_stats.sql",
        "prices.sql",
        "collateral.sql",
        "history.sql",
        "orphans.sql",
    ] {
        let shared = std::fs::read_to_string(sql.join(file)).unwrap();
        let begin = format!("-- BEGIN sql/{file}\n");
        let start = upgrade.find(&begin).expect("BEGIN marker") + begin.len();
        let end = upgrade
            .find(&format!("-- END sql/{file}"))
            .expect("END marker");
        assert_eq!(
            upgrade[start..end].trim_end(),
            shared.trim_end(),
            "copy sql/{file} between the markers of the upgrade script"
        );
    }
}
