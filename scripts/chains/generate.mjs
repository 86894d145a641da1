// Generates the preloaded chains and stable tokens of balance_queue from the
// pinned @eco-foundation/chains (see package.json / package-lock.json):
//
//   sql/reference_data.sql               run inside CREATE EXTENSION and copied
//                                        verbatim into upgrade scripts
//   tests/fixtures/eco-chains-2.0.4.json the pinned list, as the package gives it
//   docs/chains.md                       the same, as tables
//
// Maintainers only:
//   cd scripts/chains && npm ci --ignore-scripts && node generate.mjs
// (--ignore-scripts: the published package has a `preinstall: npx only-allow
// pnpm` hook that makes a plain `npm ci` fail; nothing here needs a script.)
//
// Upgrading the package: bump the exact version in package.json, `npm install
// --ignore-scripts`, set PACKAGE_VERSION below, and classify every new chain in
// CHAINS (the run stops on a chain it does not know).

import { readFileSync, writeFileSync, mkdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { EcoRoutesChains } from '@eco-foundation/chains'

const PACKAGE = '@eco-foundation/chains'
const PACKAGE_VERSION = '2.0.4'
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..')

const installed = JSON.parse(
  readFileSync(new URL(`./node_modules/${PACKAGE}/package.json`, import.meta.url), 'utf8'),
).version
if (installed !== PACKAGE_VERSION) {
  throw new Error(`${PACKAGE} ${installed} is installed, expected ${PACKAGE_VERSION}: run npm ci --ignore-scripts`)
}

// ---------------------------------------------------------------------------
// Confirmation depth: one rule per chain family, and each chain's family.
// ---------------------------------------------------------------------------
const FAMILIES = {
  ethereum: {
    title: 'Ethereum proof of stake',
    depth: 64,
    rule: 'two epochs of 32 slots: Casper FFG finalizes a checkpoint once the next one is justified (about 12.8 min)',
    source: 'Ethereum consensus specs (Gasper); ethereum.org, proof-of-stake finality',
  },
  polygon: {
    title: 'Polygon PoS',
    depth: 256,
    rule: 'Bor reorgs of 157 blocks are on record',
    source: 'balance_queue README (existing rule)',
  },
  opstack: {
    title: 'OP Stack rollups and L3s',
    depth: 30,
    rule: "sequencer blocks stay 'unsafe' until their batch lands on the parent chain; 30 blocks is near rindexer's and Ponder's reorg-safe distances",
    source: 'balance_queue README (existing rule); OP Stack docs, unsafe/safe/finalized heads',
  },
  arbitrum: {
    title: 'Arbitrum One and Arbitrum Orbit chains',
    depth: 24,
    rule: "the sequencer feed is soft-final; blocks reorg only if the sequencer's batch differs from its feed",
    source: 'balance_queue README (existing rule); Arbitrum docs, sequencer soft finality',
  },
  bft: {
    title: 'BFT chains with deterministic finality',
    depth: 10,
    rule: 'a block is final when committed (about 1 s); 10 blocks is margin for lagging RPC nodes',
    source: 'balance_queue README (Sonic, existing rule); Plasma docs (PlasmaBFT, a pipelined Fast HotStuff)',
  },
}

// chain id -> [family, how the chain's stack is known]. Testnets follow their
// mainnet's family. Network names already preloaded (and written by rindexer
// into existing rows) are kept.
const CHAINS = {
  1: ['ethereum', 'Ethereum mainnet'],
  10: ['opstack', 'OP Mainnet, OP Stack L2'],
  130: ['opstack', 'OP Stack L2 (Superchain)'],
  137: ['polygon', 'Polygon PoS'],
  146: ['bft', 'Sonic, BFT finality ~1 s'],
  169: ['opstack', 'OP Stack L2, Celestia DA (l2beat)'],
  360: ['arbitrum', 'Orbit L3 on Arbitrum One (l2beat)'],
  466: ['arbitrum', 'Orbit L2, AnyTrust DAC (l2beat)'],
  478: ['opstack', 'OP Stack L2, Celestia DA (Form docs)'],
  480: ['opstack', 'OP Stack L2 (Superchain)'],
  1992: ['arbitrum', 'Sanko testnet, Orbit on Arbitrum Sepolia'],
  1996: ['arbitrum', 'Orbit L3 on Arbitrum One (Caldera)'],
  2525: ['arbitrum', 'Orbit rollup by Caldera (Injective inEVM)'],
  5000: ['opstack', 'OP Stack Bedrock L2 (Mantle v2 docs)'],
  5330: ['opstack', 'OP Stack L2 (Superchain)'],
  8333: ['opstack', 'OP Stack L3 on Base, Celestia DA (l2beat)'],
  8453: ['opstack', 'OP Stack L2 (Superchain)'],
  9745: ['bft', 'PlasmaBFT (Fast HotStuff)'],
  9746: ['bft', 'Plasma testnet, PlasmaBFT'],
  33111: ['arbitrum', 'ApeChain testnet, Orbit on Arbitrum Sepolia'],
  33139: ['arbitrum', 'Orbit L3 on Arbitrum One (Caldera)'],
  42161: ['arbitrum', 'Arbitrum One (Nitro)'],
  42220: ['opstack', 'OP Stack L2 since 2025-03-26 (Celo L2 launch)'],
  57073: ['opstack', 'OP Stack L2 (Superchain)'],
  84532: ['opstack', 'Base testnet, OP Stack'],
  132902: ['opstack', 'Form testnet, OP Stack'],
  471923: ['opstack', 'OP Stack L3 on Base Sepolia (package: OptimismPortal)'],
  3441006: ['opstack', 'Manta Pacific testnet, OP Stack'],
  6524490: ['opstack', 'Towns testnet, OP Stack by Caldera (unconfirmed)'],
  8921733: ['opstack', 'OP Stack L3 on Base (package: OptimismPortal)'],
  10241024: ['arbitrum', 'Orbit L2, AnyTrust DAC (l2beat)'],
  11155111: ['ethereum', 'Ethereum testnet'],
  11155420: ['opstack', 'OP testnet, OP Stack'],
  1380012617: ['arbitrum', 'Orbit L3 on Arbitrum One (l2beat)'],
}

const KEPT_NETWORK_NAMES = {
  1: 'ethereum', 42161: 'arbitrum', 8453: 'base', 137: 'polygon', 10: 'optimism',
  146: 'sonic', 5330: 'superseed', 480: 'worldchain', 57073: 'ink',
}

// ---------------------------------------------------------------------------
// Stables the package lacks, and what the plan says about the ones it has.
// ---------------------------------------------------------------------------
// /work/shared/plan/000-queue-based-balance-plan.md, Phase 3.1 token_metadata.
const PLAN_ROWS = [
  [1, '0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48', 'USDC', 'USD Coin', 6, 'usd-coin'],
  [1, '0xdac17f958d2ee523a2206206994597c13d831ec7', 'USDT', 'Tether USD', 6, 'tether'],
  [1, '0x6b175474e89094c44da98b954eedeac495271d0f', 'DAI', 'Dai Stablecoin', 18, 'dai'],
  [1, '0x1217bfe6c773eec6cc4a38b5dc45b92292b6e189', 'oUSDT', 'Origin USDT', 18, null],
  [42161, '0xaf88d065e77c8cc2239327c5edb3a432268e5831', 'USDC', 'USD Coin', 6, 'usd-coin'],
  [42161, '0xff970a61a04b1ca14834a43f5de4533ebddb5cc8', 'USDCe', 'Bridged USDC', 6, 'usd-coin'],
  [8453, '0x833589fcd6edb6e08f4c7c32d4f71b54bda02913', 'USDC', 'USD Coin', 6, 'usd-coin'],
  [8453, '0xd9aaec86b65d86f6a7b5b1b0c42ffa531710b6ca', 'USDbC', 'USD Base Coin', 6, null],
  [137, '0x3c499c542cef5e3811e1192ce70d8cc03d5c3359', 'USDC', 'USD Coin', 6, 'usd-coin'],
  [137, '0x2791bca1f2de4661ed88a30c99a7a9449aa84174', 'USDCe', 'Bridged USDC', 6, 'usd-coin'],
  [137, '0xc2132d05d31c914a87c6611c10748aeb04b58e8f', 'USDT', 'Tether USD', 6, 'tether'],
  [10, '0x0b2c639c533813f4aa9d7837caf62653d097ff85', 'USDC', 'USD Coin', 6, 'usd-coin'],
  [10, '0x7f5c764cbc14f9669b88837ca1490cca17c31607', 'USDCe', 'Bridged USDC', 6, 'usd-coin'],
  [10, '0x94b008aa00579c1307b0ef2c499ad98a8ce58e58', 'USDT', 'Tether USD', 6, 'tether'],
]
// Stables preloaded by sql/schema.sql before this file existed.
const PREVIOUS_ROWS = [
  [1, '0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48', 'USDC', 'USD Coin', 6, 'usd-coin'],
  [1, '0xdac17f958d2ee523a2206206994597c13d831ec7', 'USDT', 'Tether USD', 6, 'tether'],
  [1, '0x6b175474e89094c44da98b954eedeac495271d0f', 'DAI', 'Dai Stablecoin', 18, 'dai'],
  [42161, '0xaf88d065e77c8cc2239327c5edb3a432268e5831', 'USDC', 'USD Coin', 6, 'usd-coin'],
  [42161, '0xfd086bc7cd5c481dcc9c85ebe478a1c0b69fcbb9', 'USDT', 'Tether USD', 6, 'tether'],
  [42161, '0xda10009cbd5d07dd0cecc66161fc93d7c9000da1', 'DAI', 'Dai Stablecoin', 18, 'dai'],
  [8453, '0x833589fcd6edb6e08f4c7c32d4f71b54bda02913', 'USDC', 'USD Coin', 6, 'usd-coin'],
  [8453, '0x50c5725949a6f0c72e6c4a641f24049a917db0cb', 'DAI', 'Dai Stablecoin', 18, 'dai'],
  [137, '0x3c499c542cef5e3811e1192ce70d8cc03d5c3359', 'USDC', 'USD Coin', 6, 'usd-coin'],
  [137, '0xc2132d05d31c914a87c6611c10748aeb04b58e8f', 'USDT', 'Tether USD', 6, 'tether'],
  [137, '0x8f3cf7ad23cd3cadbd9735aff958023239c6a063', 'DAI', 'Dai Stablecoin', 18, 'dai'],
  [10, '0x0b2c639c533813f4aa9d7837caf62653d097ff85', 'USDC', 'USD Coin', 6, 'usd-coin'],
  [10, '0x94b008aa00579c1307b0ef2c499ad98a8ce58e58', 'USDT', 'Tether USD', 6, 'tether'],
  [10, '0xda10009cbd5d07dd0cecc66161fc93d7c9000da1', 'DAI', 'Dai Stablecoin', 18, 'dai'],
]

// Name and CoinGecko id known from the symbol alone; anything else is NULL.
const BY_SYMBOL = {
  USDC: ['USD Coin', 'usd-coin'],
  USDT: ['Tether USD', 'tether'],
  DAI: ['Dai Stablecoin', 'dai'],
  USDCe: ['Bridged USDC', 'usd-coin'], // as the plan has it
  USDbC: ['USD Base Coin', null], // as the plan has it
  USDT0: ['USDT0', null],
}

// ---------------------------------------------------------------------------
// Read the package.
// ---------------------------------------------------------------------------
const ADDRESS = /^0x[0-9a-f]{40}$/
const chains = EcoRoutesChains.map((c) => {
  const stables = Object.entries(c.stables ?? {}).map(([symbol, s]) => {
    const address = String(s.address).toLowerCase()
    if (!ADDRESS.test(address)) throw new Error(`chain ${c.id} ${symbol}: bad address ${s.address}`)
    if (!Number.isInteger(s.decimals)) throw new Error(`chain ${c.id} ${symbol}: bad decimals ${s.decimals}`)
    return { symbol, address, decimals: s.decimals }
  })
  return {
    chain_id: c.id,
    name: c.name,
    testnet: c.testnet === true, // the package leaves it undefined on most mainnets
    native_currency: c.nativeCurrency.symbol,
    stables,
  }
})

const ids = new Set(chains.map((c) => c.chain_id))
if (ids.size !== chains.length) throw new Error('duplicate chain id in the package')
for (const c of chains) {
  if (!CHAINS[c.chain_id]) throw new Error(`chain ${c.chain_id} (${c.name}) is new: classify it in CHAINS`)
}
for (const id of Object.keys(CHAINS)) {
  if (!ids.has(Number(id))) throw new Error(`CHAINS lists ${id}, which the package no longer has`)
}

const networkName = (c) =>
  KEPT_NETWORK_NAMES[c.chain_id] ??
  c.name.replace(/\s+mainnet$/i, '').toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '')

const registry = [...chains]
  .sort((a, b) => a.chain_id - b.chain_id)
  .map((c) => {
    const [family, basis] = CHAINS[c.chain_id]
    return { ...c, network_name: networkName(c), family, basis, depth: FAMILIES[family].depth }
  })
const names = new Set(registry.map((c) => c.network_name))
if (names.size !== registry.length) throw new Error('network names are not unique')
const byId = new Map(registry.map((c) => [c.chain_id, c]))

// Token rows: every package stable, then plan / previous rows it lacks.
const key = (chainId, address) => `${chainId}:${address}`
const tokens = new Map()
for (const c of chains) {
  for (const s of c.stables) {
    const k = key(c.chain_id, s.address)
    if (tokens.has(k)) throw new Error(`chain ${c.chain_id}: ${s.address} listed twice`)
    const [name, coingecko] = BY_SYMBOL[s.symbol] ?? [null, null]
    tokens.set(k, { chain_id: c.chain_id, address: s.address, symbol: s.symbol, name, decimals: s.decimals, coingecko, from: 'package' })
  }
}
const packageStableCount = tokens.size
const decimalsDisagreements = []
const symbolDifferences = []
for (const [rows, from] of [[PLAN_ROWS, 'plan'], [PREVIOUS_ROWS, 'previous']]) {
  for (const [chainId, address, symbol, name, decimals, coingecko] of rows) {
    const t = tokens.get(key(chainId, address))
    if (!t) {
      tokens.set(key(chainId, address), { chain_id: chainId, address, symbol, name, decimals, coingecko, from: [from] })
    } else if (t.from === 'package') {
      if (t.decimals !== decimals) decimalsDisagreements.push({ from, chainId, address, symbol, theirs: decimals, package: t.decimals })
      if (t.symbol !== symbol) symbolDifferences.push({ from, chainId, address, theirs: symbol, package: t.symbol })
    } else {
      if (t.decimals !== decimals) throw new Error(`plan and previous preload disagree on ${chainId} ${address}`)
      t.from.push(from)
    }
  }
}
const tokenRows = [...tokens.values()].sort(
  (a, b) => a.chain_id - b.chain_id || a.symbol.localeCompare(b.symbol) || a.address.localeCompare(b.address),
)
for (const t of tokenRows) {
  if (!byId.has(t.chain_id)) throw new Error(`token on unknown chain ${t.chain_id}`)
}

// ---------------------------------------------------------------------------
// sql/reference_data.sql
// ---------------------------------------------------------------------------
const lit = (v) => (v === null || v === undefined ? 'NULL' : typeof v === 'string' ? `'${v.replaceAll("'", "''")}'` : String(v))

// One aligned VALUES list; comments trail a row when the line stays short,
// else they go on the line above it.
function valuesList(rows, comment) {
  const cells = rows.map((r) => r.map(lit))
  const widths = cells[0].map((_, i) => Math.max(...cells.map((r) => r[i].length)))
  const lines = cells.map((r, n) => {
    const body = r.map((v, i) => (i < r.length - 1 ? (v + ',').padEnd(widths[i] + 1) : v)).join(' ')
    return `    (${body})${n < cells.length - 1 ? ',' : ' '}`
  })
  const width = Math.max(...lines.map((l) => l.length))
  return lines
    .map((l, n) => {
      const c = comment(n)
      if (!c) return l.trimEnd()
      const trailing = `${l.padEnd(width)}  -- ${c}`
      return trailing.length <= 120 ? trailing : `    -- ${c}\n${l.trimEnd()}`
    })
    .join('\n')
}

const familyOrder = ['ethereum', 'polygon', 'opstack', 'arbitrum', 'bft']
const familyBlock = familyOrder
  .map((f) => {
    const F = FAMILIES[f]
    const members = registry.filter((c) => c.family === f).map((c) => `${c.network_name} (${c.chain_id})`)
    return [
      `-- ${F.title}: ${F.depth} blocks.`,
      ...wrap(`Rule: ${F.rule}.`, '--   '),
      ...wrap(`Source: ${F.source}.`, '--   '),
      ...wrap(`Chains: ${members.join(', ')}.`, '--   '),
    ].join('\n')
  })
  .join('\n')

function wrap(text, prefix, width = 78, next = prefix) {
  const out = []
  let line = ''
  for (const word of text.split(' ')) {
    if (line && (out.length ? next : prefix).length + line.length + 1 + word.length > width) {
      out.push((out.length ? next : prefix) + line)
      line = word
    } else line = line ? `${line} ${word}` : word
  }
  if (line) out.push((out.length ? next : prefix) + line)
  return out
}

const disagreementLines = decimalsDisagreements.length
  ? decimalsDisagreements.flatMap((d) =>
      wrap(`- chain ${d.chainId} ${d.symbol} ${d.address}: ${d.from === 'plan' ? 'the plan' : 'the previous preload'} says ${d.theirs}, the package ${d.package}; ${d.package} is used.`, '--   ', 78, '--     '),
    )
  : ['--   none.']
const symbolLines = symbolDifferences.flatMap((d) =>
  wrap(`- chain ${d.chainId} ${d.address}: ${d.from === 'plan' ? 'the plan' : 'the previous preload'} calls it ${d.theirs}, the package ${d.package}; ${d.package} is used (an existing row keeps its symbol).`, '--   ', 78, '--     '),
)

const chainSql = valuesList(
  registry.map((c) => [c.chain_id, c.network_name, c.name, c.testnet, c.native_currency, c.depth]),
  (n) => registry[n].basis,
)
const tokenSql = valuesList(
  tokenRows.map((t) => [t.chain_id, t.address, t.symbol, t.name, t.decimals, true, t.coingecko, 1]),
  (n) => {
    const t = tokenRows[n]
    if (t.from === 'package') {
      const d = decimalsDisagreements.find((x) => x.chainId === t.chain_id && x.address === t.address)
      return d ? `${d.from === 'plan' ? 'plan' : 'previous preload'}: ${d.theirs} decimals; package wins` : null
    }
    return `not in the package: ${t.from.map((f) => (f === 'plan' ? 'the plan' : 'previous preload')).join(', ')}`
  },
)

const mainnets = registry.filter((c) => !c.testnet).length
const testnets = registry.length - mainnets
const extras = tokenRows.filter((t) => t.from !== 'package')

const sql = `-- Preloaded chains and stable tokens.
--
-- Generated by scripts/chains/generate.mjs from ${PACKAGE} ${PACKAGE_VERSION}
-- (export EcoRoutesChains: ${registry.length} chains, ${mainnets} mainnets and ${testnets} testnets; ${packageStableCount} stable
-- tokens). Do not edit by hand: change the generator and run it again.
--
-- Runs inside CREATE EXTENSION and is copied verbatim into upgrade scripts,
-- so it is idempotent and never overwrites a user's edits: chain rows update
-- only is_testnet and native_currency_symbol (new columns an upgrade fills
-- in), token rows already present are left alone.
--
-- Confirmation depth per chain family (testnets follow their mainnet):
${familyBlock}
-- Each chain's stack: l2beat.com project pages, the chains' own docs, and the
-- package's contract lists; the comment on each row names it.

INSERT INTO balance_queue.chain_registry
    (chain_id, network_name, display_name, is_testnet, native_currency_symbol, confirmation_depth)
VALUES
${chainSql}
ON CONFLICT (chain_id) DO UPDATE
   SET is_testnet = EXCLUDED.is_testnet,
       native_currency_symbol = EXCLUDED.native_currency_symbol;

-- Stable tokens: all ${packageStableCount} of the package (price_usd 1; name and CoinGecko id
-- only where the symbol settles them), plus ${extras.length} the package lacks: DAI, from
-- the project plan (000-queue-based-balance-plan.md, Phase 3.1) and from the
-- previous preload of sql/schema.sql, kept so no preloaded stable disappears.
-- Decimals where the plan or the previous preload disagree with the package
-- (the package wins):
${disagreementLines.join('\n')}
${symbolLines.length ? `-- Symbols that differ:\n${symbolLines.join('\n')}\n` : ''}INSERT INTO balance_queue.token_metadata
    (chain_id, contract_address, symbol, name, decimals, is_stable_token, coingecko_id, price_usd)
VALUES
${tokenSql}
ON CONFLICT (chain_id, contract_address) DO NOTHING;
`

// ---------------------------------------------------------------------------
// tests/fixtures/eco-chains-2.0.4.json
// ---------------------------------------------------------------------------
const fixture =
  '[\n' +
  chains
    .map(
      (c) =>
        `  {"chain_id": ${c.chain_id}, "name": ${JSON.stringify(c.name)}, "testnet": ${c.testnet}, ` +
        `"native_currency": ${JSON.stringify(c.native_currency)}, "stables": [` +
        c.stables.map((s) => `\n    {"symbol": ${JSON.stringify(s.symbol)}, "address": "${s.address}", "decimals": ${s.decimals}}`).join(',') +
        (c.stables.length ? '\n  ' : '') +
        ']}',
    )
    .join(',\n') +
  '\n]\n'
JSON.parse(fixture) // stays valid JSON

// ---------------------------------------------------------------------------
// docs/chains.md
// ---------------------------------------------------------------------------
const md = (v) => String(v).replaceAll('|', '\\|')
const chainTable = [
  '| Chain id | Network name | Display name | Testnet | Native currency | Confirmation depth | Rule and source of the depth |',
  '|---:|---|---|---|---|---:|---|',
  ...registry.map(
    (c) => `| ${c.chain_id} | \`${c.network_name}\` | ${md(c.name)} | ${c.testnet ? 'yes' : 'no'} | ${md(c.native_currency)} | ${c.depth} | ${FAMILIES[c.family].title}: ${md(c.basis)} |`,
  ),
].join('\n')
const tokenTable = [
  '| Chain | Symbol | Address | Decimals | From |',
  '|---|---|---|---:|---|',
  ...tokenRows.map(
    (t) => `| ${byId.get(t.chain_id).network_name} (${t.chain_id}) | ${md(t.symbol)} | \`${t.address}\` | ${t.decimals} | ${t.from === 'package' ? 'package' : t.from.join(', ')} |`,
  ),
].join('\n')
const familyTable = [
  '| Family | Depth (blocks) | Rule | Source |',
  '|---|---:|---|---|',
  ...familyOrder.map((f) => `| ${FAMILIES[f].title} | ${FAMILIES[f].depth} | ${md(FAMILIES[f].rule)} | ${md(FAMILIES[f].source)} |`),
].join('\n')

const doc = `# Preloaded chains and stable tokens

Generated by \`scripts/chains/generate.mjs\` from \`${PACKAGE}\` ${PACKAGE_VERSION}
(export \`EcoRoutesChains\`); do not edit by hand. The same data is in
\`sql/reference_data.sql\` (run by \`CREATE EXTENSION\` and by upgrades) and, as
the package gives it, in \`tests/fixtures/eco-chains-${PACKAGE_VERSION}.json\`.

${registry.length} chains (${mainnets} mainnets, ${testnets} testnets), ${packageStableCount} stable tokens from the package and
${extras.length} more the package lacks (${tokenRows.length} rows). The package leaves \`testnet\` undefined on
most mainnets; undefined counts as a mainnet (so does *Helix Test*, 8921733,
which the package does not mark as a testnet).

Network names are the names rindexer writes into rows (its yaml
\`networks[].name\`): the nine chains preloaded before keep theirs
(\`ethereum\`, \`arbitrum\`, \`base\`, \`polygon\`, \`optimism\`, \`sonic\`,
\`superseed\`, \`worldchain\`, \`ink\`); the others are the package's name in
kebab case, without a trailing "Mainnet". Change a row, or call
\`balance_queue.add_chain\`, if your rindexer yaml names a network otherwise.

## Confirmation depth

${familyTable}

Testnets follow their mainnet's rule. Each chain's stack comes from its
l2beat.com project page, its own docs, or the package's contract list (an
\`OptimismPortal\` and \`L2OutputOracle\` for Eco Test and Helix Test).
Towns Sepolia is taken as OP Stack (a Caldera chain) without a source that
confirms it.

## Chains

${chainTable}

## Stable tokens

All \`is_stable_token\`, \`price_usd\` 1. Names and CoinGecko ids are set only
where the symbol settles them (USDC, USDT, DAI, USDCe, USDbC, USDT0 name).

${tokenTable}

## Where the plan and the package disagree

The plan is \`/work/shared/plan/000-queue-based-balance-plan.md\`, Phase 3.1;
"previous preload" is the token list \`sql/schema.sql\` held before.

Decimals (the package wins):

${decimalsDisagreements.length ? decimalsDisagreements.map((d) => `- ${byId.get(d.chainId).network_name} ${d.symbol} \`${d.address}\`: ${d.from === 'plan' ? 'the plan' : 'the previous preload'} says ${d.theirs}, the package ${d.package}.`).join('\n') : '- none.'}

Symbols (the package's is used; an existing row keeps its own):

${symbolDifferences.length ? symbolDifferences.map((d) => `- ${byId.get(d.chainId).network_name} \`${d.address}\`: ${d.from === 'plan' ? 'the plan' : 'the previous preload'} says ${d.theirs}, the package ${d.package}.`).join('\n') : '- none.'}

## Regenerating

\`\`\`sh
cd scripts/chains
npm ci --ignore-scripts   # the package's preinstall hook insists on pnpm
node generate.mjs
\`\`\`

To move to another version of the package: pin it exactly in
\`package.json\` (\`npm install --save-exact --ignore-scripts ${PACKAGE}@X\`), set
\`PACKAGE_VERSION\` in \`generate.mjs\`, classify any new chain in its \`CHAINS\`
table (the run stops on an unknown chain), rename the fixture the test reads,
and ship the new \`sql/reference_data.sql\` in an upgrade script.
`

// ---------------------------------------------------------------------------
const write = (rel, text) => {
  const path = join(ROOT, rel)
  mkdirSync(dirname(path), { recursive: true })
  writeFileSync(path, text)
  console.log(`wrote ${rel}`)
}
write('sql/reference_data.sql', sql)
write(`tests/fixtures/eco-chains-${PACKAGE_VERSION}.json`, fixture)
write('docs/chains.md', doc)
console.log(
  `${registry.length} chains (${mainnets} mainnets, ${testnets} testnets), ${packageStableCount} package stables, ` +
    `${extras.length} extra stables, ${tokenRows.length} token rows; ${decimalsDisagreements.length} decimals disagreement(s)`,
)
