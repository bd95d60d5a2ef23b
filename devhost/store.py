"""Where the local host keeps its task hub: Table Storage rows, with large values in Blob Storage.

Tables (named after the task hub, like the Azure Storage provider's):
    <hub>Instances  one row per instance: status, input/output, custom status, replay bookkeeping
    <hub>History    one row per history event of the current generation, in order
    <hub>Messages   pending events for instances (completions, timers, raised events, starts), and
                    activities scheduled but not completed (`w-` rows, re-run after a crash: at-least-once).
                    Both share the instance's partition, so an activity's completion and the removal
                    of its work item are one transaction: a completed activity never runs again.
Values over ~30,000 characters go to the blob container `<hub>-largemessages`, as the real provider
moves payloads over 45 KB, because a Table property holds at most 64 KiB.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables.aio import TableServiceClient
from azure.storage.blob.aio import BlobServiceClient

_LARGE = 30_000
_BATCH = 100  # Table transactions hold at most 100 operations


class HubStore:
    """Async persistence of one task hub in one storage account."""

    def __init__(self, connection_string: str, hub: str) -> None:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{2,44}", hub):
            raise ValueError(f"task hub name {hub!r} must be 3-45 letters and digits, starting with a letter")
        self.hub = hub
        self._tables = TableServiceClient.from_connection_string(connection_string)
        self._blobs = BlobServiceClient.from_connection_string(connection_string)
        self.instances = self._tables.get_table_client(f"{hub}Instances")
        self.history = self._tables.get_table_client(f"{hub}History")
        self.messages = self._tables.get_table_client(f"{hub}Messages")
        self.large = self._blobs.get_container_client(f"{hub.lower()}-largemessages")

    async def open(self) -> None:
        for table in (self.instances, self.history, self.messages):
            try:
                await table.create_table()
            except ResourceExistsError:
                pass
        try:
            await self.large.create_container()
        except ResourceExistsError:
            pass

    async def close(self) -> None:
        for client in (self.instances, self.history, self.messages):
            await client.close()
        await self._tables.close()
        await self._blobs.close()

    # Large values -------------------------------------------------------------------------------

    async def _pack(self, entity: dict[str, Any], large_fields: Iterable[str]) -> dict[str, Any]:
        packed = dict(entity)
        for name in large_fields:
            value = packed.get(name)
            if isinstance(value, str) and len(value) > _LARGE:
                blob_name = f"{entity['PartitionKey']}/{entity['RowKey'] or '_'}/{name}"
                await self.large.upload_blob(blob_name, value.encode(), overwrite=True)
                packed[name] = None
                packed[f"{name}Blob"] = blob_name
            else:
                packed[f"{name}Blob"] = None
        return packed

    async def _unpack(self, entity: dict[str, Any], large_fields: Iterable[str]) -> dict[str, Any]:
        unpacked = dict(entity)
        for name in large_fields:
            blob_name = unpacked.pop(f"{name}Blob", None)
            if blob_name:
                data = await (await self.large.download_blob(blob_name)).readall()
                unpacked[name] = data.decode()
        return unpacked

    # Instances ----------------------------------------------------------------------------------

    INSTANCE_LARGE = ("Input", "Output", "CustomStatus", "State")

    async def put_instance(self, entity: dict[str, Any]) -> None:
        await self.instances.upsert_entity(await self._pack(entity, self.INSTANCE_LARGE))

    async def get_instance(self, instance_id: str) -> dict[str, Any] | None:
        try:
            entity = await self.instances.get_entity(instance_id, "")
        except ResourceNotFoundError:
            return None
        return await self._unpack(dict(entity), self.INSTANCE_LARGE)

    async def list_instances(self) -> list[dict[str, Any]]:
        rows = [dict(entity) async for entity in self.instances.list_entities()]
        return [await self._unpack(row, self.INSTANCE_LARGE) for row in rows]

    async def delete_instance(self, instance_id: str) -> None:
        await self.instances.delete_entity(instance_id, "")
        await self.delete_partition(self.history, instance_id)
        await self.delete_partition(self.messages, instance_id)
        async for blob in self.large.list_blobs(name_starts_with=f"{instance_id}/"):
            await self.large.delete_blob(blob.name)

    # History ------------------------------------------------------------------------------------

    @staticmethod
    def _history_key(generation: int, index: int) -> str:
        return f"{generation:06d}-{index:08d}"

    async def append_history(self, instance_id: str, generation: int, start: int, events: list[dict]) -> None:
        """Write events at positions start, start+1, ... of a generation (idempotent upserts)."""
        operations = []
        for offset, event in enumerate(events):
            entity = {
                "PartitionKey": instance_id,
                "RowKey": self._history_key(generation, start + offset),
                "Event": json.dumps(event),
            }
            operations.append(("upsert", await self._pack(entity, ("Event",))))
        for begin in range(0, len(operations), _BATCH):
            await self.history.submit_transaction(operations[begin : begin + _BATCH])

    async def load_history(self, instance_id: str, generation: int) -> list[dict]:
        low, high = self._history_key(generation, 0), self._history_key(generation + 1, 0)
        query = "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high"
        rows = [
            dict(entity)
            async for entity in self.history.query_entities(
                query, parameters={"pk": instance_id, "low": low, "high": high}
            )
        ]
        rows.sort(key=lambda row: row["RowKey"])
        return [json.loads((await self._unpack(row, ("Event",)))["Event"]) for row in rows]

    async def delete_history_before(self, instance_id: str, generation: int) -> None:
        query = "PartitionKey eq @pk and RowKey lt @high"
        keys = [
            entity["RowKey"]
            async for entity in self.history.query_entities(
                query, parameters={"pk": instance_id, "high": self._history_key(generation, 0)}, select=["RowKey"]
            )
        ]
        await self._delete_rows(self.history, instance_id, keys)

    # Messages and work items --------------------------------------------------------------------

    async def put_row(self, table_name: str, entity: dict[str, Any]) -> None:
        table = getattr(self, table_name)
        await table.upsert_entity(await self._pack(entity, ("Payload",)))

    async def replace_row(self, table_name: str, partition: str, old_row: str, entity: dict[str, Any]) -> None:
        """Write `entity` and delete `old_row` of the same partition in one transaction."""
        table = getattr(self, table_name)
        packed = await self._pack(entity, ("Payload",))
        try:
            await table.submit_transaction([("upsert", packed), ("delete", {"PartitionKey": partition, "RowKey": old_row})])
        except Exception:
            # The old row is already gone (a repeated completion): writing the new one is enough.
            await table.upsert_entity(packed)

    async def delete_row(self, table_name: str, partition: str, row: str) -> None:
        table = getattr(self, table_name)
        try:
            await table.delete_entity(partition, row)
        except ResourceNotFoundError:
            pass

    async def list_rows(self, table_name: str) -> list[dict[str, Any]]:
        table = getattr(self, table_name)
        rows = [dict(entity) async for entity in table.list_entities()]
        return [await self._unpack(row, ("Payload",)) for row in rows]

    async def delete_partition(self, table: Any, partition: str) -> None:
        keys = [
            entity["RowKey"]
            async for entity in table.query_entities(
                "PartitionKey eq @pk", parameters={"pk": partition}, select=["RowKey"]
            )
        ]
        await self._delete_rows(table, partition, keys)

    async def _delete_rows(self, table: Any, partition: str, keys: list[str]) -> None:
        operations = [("delete", {"PartitionKey": partition, "RowKey": key}) for key in keys]
        for begin in range(0, len(operations), _BATCH):
            await table.submit_transaction(operations[begin : begin + _BATCH])
