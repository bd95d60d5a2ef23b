// Why one journal partition per map made a load quadratic on Azurite: its table store (LokiJS, with
// indices on PartitionKey and RowKey, as Azurite creates them) finds an entity through the PartitionKey
// index and then scans that partition for the RowKey. Times findOne + insert of 5,000 entities into one
// partition as it grows. Run: `node bench/azurite_partition_scan.js` (lokijs comes with Azurite's npm install).
const Loki = require('lokijs');

const collection = new Loki('scan').addCollection('journal', { indices: ['PartitionKey', 'RowKey'] });
for (let round = 0; round < 6; round++) {
  const started = process.hrtime.bigint();
  for (let i = 0; i < 5000; i++) {
    const key = String(Math.floor(Math.random() * 1e9)).padStart(10, '0');
    collection.findOne({ PartitionKey: 'p', RowKey: key });  // what an upsert does first
    collection.insert({ PartitionKey: 'p', RowKey: key });
  }
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  console.log(`partition at ${collection.count() - 5000}-${collection.count()} entities: ${ms.toFixed(0)} ms per 5,000`);
}
