-- ---------------------------------------------------------------------------
-- Schemas exposed to rindexer's GraphQL API (src/graphql.rs): which schema,
-- with which name prefix, asked by which role. The wrappers themselves are
-- in the schema, made by expose_graphql() and dropped with the extension;
-- this record lets the worker make them again when rindexer recreates the
-- schema (drop_each_run), as the schema's owner. The schema and the prefix
-- are spliced into the wrappers' DDL, so the table itself holds them to
-- expose_graphql's rule (src/graphql.rs, is_plain_name): a row written by
-- hand cannot carry SQL into the worker's DDL.
-- ---------------------------------------------------------------------------
CREATE TABLE balance_queue.graphql_exposures (
    schema_name  name        PRIMARY KEY CHECK (schema_name ~ '^[a-z_][a-z0-9_]{0,62}$'),
    name_prefix  text        NOT NULL DEFAULT '' CHECK (name_prefix ~ '^([a-z_][a-z0-9_]{0,39})?$'),
    exposed_by   name        NOT NULL DEFAULT current_user,
    exposed_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE balance_queue.graphql_exposures IS
    'Schemas exposed to rindexer''s GraphQL API by expose_graphql(): prefix of the wrapper names, the role that asked and when.';
SELECT pg_catalog.pg_extension_config_dump('balance_queue.graphql_exposures', '');
