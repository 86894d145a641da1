//! The chain registry and the per-chain partitions of `current_token_balances`.

use crate::errors::{invalid_parameter, spi_ok};
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;

/// Registers an EVM chain, or updates its network name, display name,
/// confirmation depth, testnet flag and native currency.
///
/// * `p_chain_id`: the EIP-155 chain id (1 for Ethereum mainnet), > 0.
/// * `p_network_name`: the network name rindexer writes into the `network`
///   column (the `networks[].name` of its yaml), e.g. `ethereum`.
/// * `p_display_name`: a human name; defaults to the network name.
/// * `p_confirmation_depth`: blocks below the chain's head after which a
///   transfer is final, >= 0.
/// * `p_is_testnet`, `p_native_currency_symbol` (the gas token, e.g. `ETH`):
///   NULL keeps what the chain has (false and NULL for a new chain).
///
/// Returns the partition of `current_token_balances` that holds the chain's
/// balances. The chains the extension preloads each have their own
/// (`balance_queue.current_token_balances_<chain_id>`, created by the
/// extension's scripts, which call this function); a chain added later
/// shares `balance_queue.current_token_balances_default`. A partition
/// created outside the extension's scripts would break `pg_restore`: the
/// dump would create its primary key, which attaching it to the restored
/// parent had created already.
///
/// Errors: 22023 (invalid_parameter_value) for a chain id <= 0, an empty
/// network name or a negative depth; 23505 (unique_violation) when the
/// network name belongs to another chain id.
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
pub fn add_chain(
    p_chain_id: i32,
    p_network_name: &str,
    p_display_name: default!(Option<&str>, "NULL"),
    p_confirmation_depth: default!(i32, 64),
    p_is_testnet: default!(Option<bool>, "NULL"),
    p_native_currency_symbol: default!(Option<&str>, "NULL"),
) -> String {
    crate::errors::refuse_on_standby("add_chain");
    if p_chain_id <= 0 {
        invalid_parameter(format!(
            "p_chain_id {p_chain_id} must be a positive EIP-155 chain id"
        ));
    }
    if p_network_name.trim().is_empty() {
        invalid_parameter("p_network_name must not be empty");
    }
    if p_confirmation_depth < 0 {
        invalid_parameter(format!(
            "p_confirmation_depth {p_confirmation_depth} must be >= 0 blocks"
        ));
    }
    let partition = format!("current_token_balances_{p_chain_id}");
    let qualified = format!("balance_queue.{}", quote_identifier(&partition));
    Spi::connect_mut(|client| {
        let args = [
            p_chain_id.into(),
            p_network_name.into(),
            p_display_name.into(),
            p_confirmation_depth.into(),
            p_is_testnet.into(),
            p_native_currency_symbol.into(),
        ];
        // Update, else insert: an INSERT of a chain id already present would
        // be turned into a whole-row update by the registry's restore trigger
        // (_upsert_reference_row), which would reset its head block.
        let updated = spi_ok(client.update(
            "UPDATE balance_queue.chain_registry
                SET network_name = $2,
                    display_name = coalesce($3, display_name),
                    confirmation_depth = $4,
                    is_testnet = coalesce($5, is_testnet),
                    native_currency_symbol = coalesce($6, native_currency_symbol)
              WHERE chain_id = $1
             RETURNING 1",
            None,
            &args,
        ))
        .len();
        if updated == 0 {
            spi_ok(client.update(
                "INSERT INTO balance_queue.chain_registry
                     (chain_id, network_name, display_name, confirmation_depth, is_testnet,
                      native_currency_symbol)
                 VALUES ($1, $2, coalesce($3, $2), $4, coalesce($5, false), $6)",
                None,
                &args,
            ));
        }
        if !unsafe { pg_sys::creating_extension } {
            return;
        }
        if own_partition(client, p_chain_id).is_some() {
            return;
        }
        // Build the partition beside the parent, move this chain's rows out of
        // the default partition, then attach: attaching checks that the
        // default partition no longer holds rows for this chain.
        let statements = [
            format!(
                "CREATE TABLE {qualified} (LIKE balance_queue.current_token_balances
                   INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
            ),
            // One statement, so no drain's update falls between copy and delete.
            format!(
                "WITH moved AS (DELETE FROM balance_queue.current_token_balances_default
                                 WHERE chain_id = {p_chain_id} RETURNING *)
                 INSERT INTO {qualified} SELECT * FROM moved"
            ),
            format!(
                "ALTER TABLE balance_queue.current_token_balances
                   ATTACH PARTITION {qualified} FOR VALUES IN ({p_chain_id})"
            ),
        ];
        for statement in &statements {
            spi_ok(client.update(statement, None, &[]));
        }
        // The partition is an extension member: mark its rows as user data
        // so pg_dump keeps them.
        spi_ok(client.update(
            &format!("SELECT pg_catalog.pg_extension_config_dump('{qualified}', '')"),
            None,
            &[],
        ));
    });
    Spi::connect(|client| own_partition(client, p_chain_id))
        .unwrap_or_else(|| "balance_queue.current_token_balances_default".into())
}

/// The chain's own partition of `current_token_balances`, if it has one
/// (else its rows are in the default partition).
fn own_partition(client: &pgrx::spi::SpiClient<'_>, chain_id: i32) -> Option<String> {
    spi_ok(client.select(
        "SELECT c.oid::regclass::text
           FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = 'balance_queue.current_token_balances'::regclass
            AND c.relname = 'current_token_balances_' || $1",
        Some(1),
        &[chain_id.into()],
    ))
    .first()
    .get_one::<String>()
    .ok()
    .flatten()
}

/// Whether this session is running an extension script (`CREATE
/// EXTENSION`, or `ALTER EXTENSION ... UPDATE`). The reference tables'
/// restore trigger (`_upsert_reference_row`) stands aside then, so the
/// reference data's own `ON CONFLICT` rules decide, and an upgrade never
/// overwrites a user's edits.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
pub fn _running_extension_script() -> bool {
    unsafe { pg_sys::creating_extension }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn preloaded_chains_have_partitions() {
        let chains = Spi::get_one::<i64>("SELECT count(*) FROM balance_queue.chain_registry");
        assert_eq!(
            chains,
            Ok(Some(34)),
            "the 34 chains of @eco-foundation/chains 2.0.4"
        );
        let partitions = Spi::get_one::<i64>(
            "SELECT count(*) FROM pg_inherits
              WHERE inhparent = 'balance_queue.current_token_balances'::regclass",
        );
        // one per registered chain plus the default partition
        let registered = Spi::get_one::<i64>("SELECT count(*) FROM balance_queue.chain_registry");
        assert_eq!(
            partitions.unwrap().unwrap(),
            registered.unwrap().unwrap() + 1
        );
    }

    #[pg_test]
    fn a_chain_added_later_shares_the_default_partition() {
        let name = Spi::get_one::<String>("SELECT balance_queue.add_chain(999, 'devnet')");
        assert_eq!(
            name,
            Ok(Some("balance_queue.current_token_balances_default".into()))
        );
        Spi::run(
            "INSERT INTO balance_queue.current_token_balances
                 (chain_id, contract_address, holder_address, current_balance)
             VALUES (999, '0x1111111111111111111111111111111111111111',
                          '0x2222222222222222222222222222222222222222', 42)",
        )
        .unwrap();
        let in_default = Spi::get_one::<i64>(
            "SELECT count(*) FROM balance_queue.current_token_balances_default WHERE chain_id = 999",
        );
        assert_eq!(in_default, Ok(Some(1)));
        // A preloaded chain has its own.
        let ethereum = Spi::get_one::<String>("SELECT balance_queue.add_chain(1, 'ethereum')");
        assert_eq!(
            ethereum,
            Ok(Some("balance_queue.current_token_balances_1".into()))
        );
    }

    #[pg_test]
    fn add_chain_keeps_what_it_is_not_given() {
        Spi::run("UPDATE balance_queue.chain_registry SET head_block = 77 WHERE chain_id = 10")
            .unwrap();
        Spi::run("SELECT balance_queue.add_chain(10, 'optimism', NULL, 40)").unwrap();
        let row = Spi::get_three::<String, i32, i64>(
            "SELECT display_name || '/' || native_currency_symbol || '/' || is_testnet, confirmation_depth, head_block
               FROM balance_queue.chain_registry WHERE chain_id = 10",
        );
        assert_eq!(
            row,
            Ok((Some("OP Mainnet/ETH/false".into()), Some(40), Some(77)))
        );
    }

    #[pg_test(error = "p_chain_id 0 must be a positive EIP-155 chain id")]
    fn add_chain_rejects_chain_zero() {
        Spi::run("SELECT balance_queue.add_chain(0, 'nothing')").unwrap();
    }
}
