//! The chain registry and the per-chain partitions of `current_token_balances`.

use crate::errors::{invalid_parameter, spi_ok};
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;

/// Registers an EVM chain, or updates its network name, display name and
/// confirmation depth, and makes sure `current_token_balances` has a
/// partition for it.
///
/// * `p_chain_id`: the EIP-155 chain id (1 for Ethereum mainnet), > 0.
/// * `p_network_name`: the network name rindexer writes into the `network`
///   column (the `networks[].name` of its yaml), e.g. `ethereum`.
/// * `p_display_name`: a human name; defaults to the network name.
/// * `p_confirmation_depth`: blocks below the chain's head after which a
///   transfer is final, >= 0.
///
/// Returns the partition's name (`balance_queue.current_token_balances_<chain_id>`).
/// Balances of this chain already held by the default partition move into it.
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
) -> String {
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
        spi_ok(client.update(
            "INSERT INTO balance_queue.chain_registry
                 (chain_id, network_name, display_name, confirmation_depth)
             VALUES ($1, $2, coalesce($3, $2), $4)
             ON CONFLICT (chain_id) DO UPDATE
                SET network_name = EXCLUDED.network_name,
                    display_name = coalesce($3, balance_queue.chain_registry.display_name),
                    confirmation_depth = EXCLUDED.confirmation_depth",
            None,
            &[
                p_chain_id.into(),
                p_network_name.into(),
                p_display_name.into(),
                p_confirmation_depth.into(),
            ],
        ));
        let absent = spi_ok(client.select(
            "SELECT 1 FROM pg_catalog.pg_inherits i
               JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'balance_queue.current_token_balances'::regclass
                AND c.relname = $1",
            None,
            &[partition.as_str().into()],
        ))
        .is_empty();
        if !absent {
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
        // Inside CREATE EXTENSION the partition is an extension member: mark
        // its rows as user data so pg_dump keeps them.
        if unsafe { pg_sys::creating_extension } {
            spi_ok(client.update(
                &format!("SELECT pg_catalog.pg_extension_config_dump('{qualified}', '')"),
                None,
                &[],
            ));
        }
    });
    qualified
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn preloaded_chains_have_partitions() {
        let chains = Spi::get_one::<i64>(
            "SELECT count(*) FROM balance_queue.chain_registry
              WHERE chain_id IN (1, 42161, 8453, 137, 10, 146, 5330, 480, 57073)",
        );
        assert_eq!(chains, Ok(Some(9)));
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
    fn add_chain_moves_rows_out_of_the_default_partition() {
        Spi::run(
            "INSERT INTO balance_queue.current_token_balances
                 (chain_id, contract_address, holder_address, current_balance)
             VALUES (999, '0x1111111111111111111111111111111111111111',
                          '0x2222222222222222222222222222222222222222', 42)",
        )
        .unwrap();
        let name = Spi::get_one::<String>("SELECT balance_queue.add_chain(999, 'testnet')");
        assert_eq!(
            name,
            Ok(Some("balance_queue.current_token_balances_999".into()))
        );
        let in_partition = Spi::get_one::<i64>(
            "SELECT count(*) FROM balance_queue.current_token_balances_999 WHERE current_balance = 42",
        );
        assert_eq!(in_partition, Ok(Some(1)));
        let in_default = Spi::get_one::<i64>(
            "SELECT count(*) FROM balance_queue.current_token_balances_default WHERE chain_id = 999",
        );
        assert_eq!(in_default, Ok(Some(0)));
    }

    #[pg_test(error = "p_chain_id 0 must be a positive EIP-155 chain id")]
    fn add_chain_rejects_chain_zero() {
        Spi::run("SELECT balance_queue.add_chain(0, 'nothing')").unwrap();
    }
}
