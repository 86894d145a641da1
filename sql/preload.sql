-- Chains preloaded into the registry, each with its balance partition.
-- Confirmation depths in blocks, from common practice (see README):
-- Ethereum 64 (two epochs, the Casper FFG finality horizon); Polygon PoS 256
-- (reorgs of 157 blocks are on record); OP-stack L2s (Optimism, Base,
-- Superseed, Worldchain, Ink) 30 and Arbitrum 24, near Ponder's and
-- rindexer's reorg-safe distances; Sonic 10 (BFT finality in about a second).
SELECT balance_queue.add_chain(1,     'ethereum',   'Ethereum',   64);
SELECT balance_queue.add_chain(42161, 'arbitrum',   'Arbitrum',   24);
SELECT balance_queue.add_chain(8453,  'base',       'Base',       30);
SELECT balance_queue.add_chain(137,   'polygon',    'Polygon',    256);
SELECT balance_queue.add_chain(10,    'optimism',   'Optimism',   30);
SELECT balance_queue.add_chain(146,   'sonic',      'Sonic',      10);
SELECT balance_queue.add_chain(5330,  'superseed',  'Superseed',  30);
SELECT balance_queue.add_chain(480,   'worldchain', 'Worldchain', 30);
SELECT balance_queue.add_chain(57073, 'ink',        'Ink',        30);
