// Why the final stage's read of the journal grows with the square of its rows on Azurite, and why reading a
// table's buckets in several key ranges would not help. Azurite (3.35) answers each page of a query with
// LokiJS `.where(filter)` over every entity of the table (the filter is interpreted, no index), then sorts
// what matched past the continuation, then takes 1,001. Builds one journal shard as the load writes it
// (13 maps, 64 buckets each) and reads one map page by page, as `Journal._table_entries` does, in 1, 4 and 16
// key ranges; then times the filter alone. Run: `node bench/azurite_query_pages.js [entities] [maps]`.
const path = require('path');
const persistence = path.join(path.dirname(require.resolve('azurite/package.json')), 'dist/src/table/persistence');
const QueryGenerator = require(path.join(persistence, 'LokiTableStoreQueryGenerator')).default;
const Loki = require('lokijs');

const ENTITIES = Number(process.argv[2]) || 250000;
const MAPS = Number(process.argv[3]) || 13;
const bucket = (n) => String(n).padStart(3, '0');
const shard = new Loki('shard').addCollection('journal00', { indices: ['PartitionKey', 'RowKey'] });
for (let i = 0; i < ENTITIES; i++) {
  const map = i % MAPS, id = Math.floor(i / MAPS);
  shard.insert({ PartitionKey: `m-0~map${map}~${bucket((id * 4) % 256)}`, RowKey: String(id).padStart(9, '0'),
                 properties: { origin: 'created', action: 'created' } });
}
const filter = (text) => QueryGenerator.generateQueryForPersistenceLayer({ filter: text }, {});
const byKeys = (a, b) => (a.PartitionKey === b.PartitionKey
  ? (a.RowKey > b.RowKey) - (a.RowKey < b.RowKey) : (a.PartitionKey > b.PartitionKey) - (a.PartitionKey < b.PartitionKey));

// One page as LokiTableMetadataStore.queryTableEntities builds it.
function page(where, nextPartition, nextRow) {
  return shard.chain().where(where).where((entity) => nextPartition === undefined
    || entity.PartitionKey > nextPartition || (entity.PartitionKey === nextPartition && entity.RowKey >= nextRow))
    .sort(byKeys).limit(1001).data();
}

for (const ranges of [1, 4, 16]) {
  const started = process.hrtime.bigint();
  let pages = 0, rows = 0;
  for (let r = 0; r < ranges; r++) {
    const high = r === ranges - 1 ? ':' : bucket(Math.floor((256 * (r + 1)) / ranges));
    const where = filter(`PartitionKey ge 'm-0~map0~${bucket(Math.floor((256 * r) / ranges))}' and PartitionKey lt 'm-0~map0~${high}'`);
    let next;
    for (;;) {
      const found = page(where, next?.PartitionKey, next?.RowKey);
      pages += 1;
      rows += Math.min(found.length, 1000);
      if (found.length <= 1000) break;
      next = found[1000];
    }
  }
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  console.log(`shard of ${ENTITIES} entities, one map's ${rows} rows in ${ranges} key range(s): ${pages} pages, ` +
              `${ms.toFixed(0)} ms, ${(ms / pages).toFixed(1)} ms per page`);
}
const where = filter("PartitionKey ge 'm-0~map0~0' and PartitionKey lt 'm-0~map0~:'");
const started = process.hrtime.bigint();
for (let i = 0; i < 5; i++) shard.chain().where(where).data();
console.log(`the filter alone over the shard: ${(Number(process.hrtime.bigint() - started) / 5e6).toFixed(1)} ms per page`);
