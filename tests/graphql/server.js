// The GraphQL server rindexer 0.41 starts for a project, rebuilt for tests:
// PostGraphile 4.14.1 with the options, plugins and page-size guard that
// rindexer's graphql/index.js (joshstevens19/rindexer, tag v0.41.0) passes,
// and the arguments core/src/api/graphql.rs gives it (page limit 1000,
// statement timeout 10000 ms). Versions are pinned in package.json and
// package-lock.json to the ones in rindexer's own lockfile.
//
//   node server.js <connection string> <schemas, comma-separated> <port>
//
// Listens on 127.0.0.1 and prints "ready <port>" once the schema is built.
'use strict';

const express = require('express');
const cors = require('cors');
const { postgraphile } = require('postgraphile');
const { makeWrapResolversPlugin } = require('graphile-utils');
const PgSimplifyInflectorPlugin = require('@graphile-contrib/pg-simplify-inflector');
const ConnectionFilterPlugin = require('postgraphile-plugin-connection-filter');

const [connectionString, schemaList, portText] = process.argv.slice(2);
if (!connectionString || !schemaList || !portText) {
  console.error('usage: node server.js <connection string> <schemas> <port>');
  process.exit(2);
}
const PAGE_LIMIT = 1000; // rindexer's graphql_limit
const STATEMENT_TIMEOUT_MS = 10000; // rindexer's graphql_timeout

// rindexer wraps every resolver: `first`/`last` above the page limit is an
// error, and a missing `first` (without `last`) becomes the page limit.
const pageGuard = makeWrapResolversPlugin(
  (context) => context,
  () => async (resolve, source, args) => {
    if (typeof args === 'object') {
      const first = args.first ? parseInt(args.first, 10) : 0;
      const last = args.last ? parseInt(args.last, 10) : 0;
      if (first > PAGE_LIMIT || last > PAGE_LIMIT) {
        throw new Error(`Pagination limit exceeded. Maximum allowed is ${PAGE_LIMIT}.`);
      }
    }
    if (args.last === undefined) {
      args.first = args.first ? args.first : PAGE_LIMIT;
    }
    let result = await resolve();
    if (result && typeof result === 'string' && result.startsWith('\\x')) {
      result = result.replace('\\x', '0x');
    }
    return result;
  },
);

const options = {
  watchPg: true,
  disableDefaultMutations: true,
  dynamicJson: true,
  cors: true,
  retryOnInitFail: true,
  enableQueryBatching: true,
  sortExport: true,
  // rindexer's default: filter_only_on_indexed_columns false
  ignoreIndexes: true,
  enhanceGraphiql: false,
  graphiql: false,
  disableQueryLog: true,
  pgSettings: { statement_timeout: STATEMENT_TIMEOUT_MS },
  simpleCollections: 'omit',
  appendPlugins: [pageGuard, PgSimplifyInflectorPlugin, ConnectionFilterPlugin],
  graphileBuildOptions: {
    pgOmitListSuffix: false,
    pgSimplifyAllRows: false,
    pgShortPk: false,
    connectionFilterAllowedOperators: [
      'isNull', 'equalTo', 'notEqualTo', 'distinctFrom', 'notDistinctFrom', 'lessThan',
      'lessThanOrEqualTo', 'greaterThan', 'greaterThanOrEqualTo', 'in', 'notIn',
    ],
  },
};

const app = express();
app.use(cors());
app.use(express.json());
app.use(postgraphile(connectionString, schemaList.split(','), options));
const port = parseInt(portText, 10);
app.listen(port, '127.0.0.1', () => console.log(`ready ${port}`));
