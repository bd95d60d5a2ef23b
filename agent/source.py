"""Open a Dentrix source (ODBC for a real server, SQLite for a synthetic practice) and probe its version.

Both paths answer the same SQL: the agent only ever runs `SELECT * FROM admin.<view>` and one
version probe on `admin.options`. SQLite gets the `admin` schema through `ATTACH ... AS admin`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from shared.dentrix.tables import Table
from shared.errors import ConfigurationError

TDriver = Literal["odbc", "sqlite"]

LEGACY_VIEWS: dict[str, tuple[tuple[int, int], str]] = {
    # Before G6.2 prescriptions live in RxDef + RxPatient (dentrix.md §3.10); the view name the agent
    # reads there is its own assumption [U] and is only used when the version probe says < 16.2.
    "prescription": ((16, 2), "admin.v_rxpatient"),
}


@dataclass
class SourceInfo:
    driver: TDriver
    product: Literal["dentrix_g", "dentrix_enterprise", "synthetic"]
    version: str | None
    database: str | None
    time_zone: str | None
    """A time zone the source itself records (the synthetic practice does; a real G does not)."""


class Source:
    """A read-only connection to a Dentrix database."""

    def __init__(self, conn: Any, driver: TDriver, database: str | None) -> None:
        self.conn = conn
        self.driver: TDriver = driver
        self.database = database
        self.info = self._probe()

    def _scalar(self, sql: str) -> Any:
        cursor = self.conn.cursor()
        try:
            cursor.execute(sql)
            row = cursor.fetchone()
            return None if row is None else row[0]
        except Exception:  # noqa: BLE001 - a missing table/option means "not this product / version"
            return None
        finally:
            cursor.close()

    def _probe(self) -> SourceInfo:
        version = self._scalar("SELECT optionvalue FROM admin.options WHERE optionkey = 'Data_Version'")
        zone = self._scalar("SELECT optionvalue FROM admin.options WHERE optionkey = 'PracticeTimeZone'")
        if version is None and self._scalar("SELECT COUNT(*) FROM dbo.DDB_PAT_BASE") is not None:
            raise ConfigurationError(
                "source is Dentrix Enterprise (dbo.DDB_* tables): its adapter is not built yet; "
                "only Dentrix G (admin.v_* views) is supported", code="enterprise_not_supported")
        if version is None:
            raise ConfigurationError(
                "source does not look like Dentrix G: admin.options has no Data_Version "
                "(check the ODBC DSN / database name)", code="not_dentrix")
        product = "synthetic" if zone is not None and self.driver == "sqlite" else "dentrix_g"
        return SourceInfo(self.driver, product, str(version).strip(), self.database,
                          str(zone).strip() if zone else None)

    @property
    def version_tuple(self) -> tuple[int, int]:
        parts = (self.info.version or "0").split(".")
        try:
            return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
        except ValueError:
            return (0, 0)

    def view_for(self, table: Table) -> str:
        legacy = LEGACY_VIEWS.get(table.name)
        if legacy and self.version_tuple < legacy[0]:
            return legacy[1]
        return table.source_view

    def select_all(self, view: str, batch: int = 2000) -> tuple[list[str], Iterator[Sequence[Any]]]:
        """Column names (lower case) and a streaming iterator over every row of `view`."""
        cursor = self.conn.cursor()
        cursor.execute(f"SELECT * FROM {view}")
        names = [d[0].lower() for d in cursor.description]

        def rows() -> Iterator[Sequence[Any]]:
            try:
                while True:
                    chunk = cursor.fetchmany(batch)
                    if not chunk:
                        return
                    yield from chunk
            finally:
                try:
                    cursor.close()
                except Exception:  # noqa: BLE001 - the connection may already be closed after an error
                    pass

        return names, rows()

    def close(self) -> None:
        self.conn.close()


def is_sqlite_path(source: str) -> bool:
    return "=" not in source and (Path(source).suffix.lower() in (".db", ".sqlite", ".sqlite3") or Path(source).is_file())


def open_source(source: str, text_encoding: str = "cp1252") -> Source:
    """Open SOURCE: a path to a SQLite practice, or an ODBC connection string for Dentrix G.

    Raises ConfigurationError when the path does not exist, pyodbc / the driver is missing, or the
    database is not Dentrix G. The connection string is never echoed (it carries a password).
    """
    if is_sqlite_path(source):
        path = Path(source)
        if not path.is_file():
            raise ConfigurationError("SQLite practice not found at the given path", code="source_missing")
        conn = sqlite3.connect("file::memory:", uri=True, check_same_thread=False)
        conn.execute("ATTACH DATABASE ? AS admin", (f"file:{path.resolve().as_posix()}?mode=ro",))
        return Source(conn, "sqlite", path.name)
    try:
        import pyodbc
    except ImportError as exc:  # pragma: no cover - pinned in agent/requirements.txt
        raise ConfigurationError("pyodbc is not installed: pip install -r agent/requirements.txt") from exc
    try:
        conn = pyodbc.connect(source, autocommit=True, readonly=True, timeout=30)
    except pyodbc.Error as exc:
        state = exc.args[0] if exc.args else "?"
        raise ConfigurationError(f"ODBC connection failed (SQLSTATE {state}); check the DSN, driver "
                                 "(64-bit c-treeACE ODBC for a 64-bit Python) and DDP credentials",
                                 code="odbc_connect_failed") from None
    # c-treeACE returns Windows-1252 text (dentrix.md §4.8): decode it here, once.
    conn.setdecoding(pyodbc.SQL_CHAR, encoding=text_encoding)
    conn.setdecoding(pyodbc.SQL_WCHAR, encoding="utf-16le")
    database = None
    for part in source.split(";"):
        if part.strip().lower().startswith("database="):
            database = part.split("=", 1)[1].strip()
    return Source(conn, "odbc", database)
