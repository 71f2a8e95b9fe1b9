"""The campaign store: one ASE database holding every structure once, with labels per level of theory.

Schema (read by ``forcefit.data.campaign.read_campaign``; keep in step):

- metadata: ``forcefit_campaign: True``, ``schema: 1``, ``levels: {name: settings}``
  (the method settings that define each level: method, functional, basis, ...).
- one row per structure (deduplicated by a hash of numbers, positions, cell,
  pbc, charge and spin), key-value pairs ``config_type`` (the structure's
  tag), ``structure_hash``, sampler details, and per level ``L``:
  ``has_L = 1`` once labelled, ``cost_L`` (CPU seconds of the label),
  ``failed_L`` (failed attempts: 1 = retry pending, 2 = given up),
  ``sel_L = 1`` when chosen for a ``--select`` subset.
- ``row.data["label.L"]``: energy (eV), forces (eV/Å), optional charges (e)
  and dipole (e·Å), cpu_seconds, wall_seconds, attempt, safer, host;
  ``row.data["failures.L"]``: one record per failed attempt with its error text.

Durability: a labelling session keeps one connection open and commits the
results it receives as soon as it has written them (results arriving within
20 ms of each other share one commit), so a killed run loses at most the
labels still being computed or just received. SQLite runs in
WAL mode with ``synchronous=NORMAL``: a commit survives a killed process
(not necessarily a power cut). Each batch takes the write lock before it
reads, so two coordinators labelling different levels of one campaign do
not overwrite each other. A PostgreSQL URL (``postgresql://user:pw@host/db``)
goes through ``ase.db.connect`` the same way (the SQLite-only speed-ups are
skipped there). Only the coordinating process writes.
"""
from __future__ import annotations

import hashlib
import re
import socket
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..data.errors import DataError

SCHEMA = 1
MAX_ATTEMPTS = 2  # the first try and one retry with safer settings
_LEVEL = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")
_VERSION_KEYS = {"versions"}


def check_level_name(level: str) -> str:
    """Level names become database keys: letters, digits and underscores, starting with a letter."""
    if not isinstance(level, str) or not _LEVEL.match(level):
        raise DataError(f"level name '{level}' must start with a letter and contain only letters, digits and '_'", field="level")
    return level


def structure_hash(atoms) -> str:
    """Identity of a structure for deduplication (positions to 1e-5 Å)."""
    h = hashlib.sha1()
    h.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    for arr in (atoms.positions, atoms.cell[:]):
        h.update((np.round(np.asarray(arr, dtype=float), 5) + 0.0).tobytes())
    h.update(np.asarray(atoms.pbc, dtype=bool).tobytes())
    h.update(np.asarray([atoms.get_initial_charges().sum(), atoms.get_initial_magnetic_moments().sum()]).round(3).tobytes())
    return h.hexdigest()


def _is_url(path: str) -> bool:
    return "://" in path


def _checked_str(value, field: str) -> str:
    from ase.db.core import convert_str_to_int_float_bool_or_str

    value = str(value)
    if not isinstance(convert_str_to_int_float_bool_or_str(value), str) or not value:
        raise DataError(f"'{value}' is not usable as a tag: it must be a non-empty word that does not read as a number", field=field)
    return value


class Campaign:
    """A labelling campaign in an ASE database (SQLite file or PostgreSQL URL).

    ``Campaign(path)`` opens or creates it; ``create=False`` insists that it
    exists. Structures are added with :meth:`add`; the runner
    (``forcefit.labeling.label``) labels them; :meth:`frames` reads a level
    back as training frames.
    """

    def __init__(self, path: str | Path, create: bool = True):
        from ase.db import connect

        self.path = str(path)
        local = not _is_url(self.path)
        if local:
            p = Path(self.path)
            if p.suffix.lower() != ".db":
                raise DataError("a campaign is an ASE database file ending in .db (or a postgresql:// URL)", file=self.path)
            if not p.exists() and not create:
                raise DataError("no such campaign", file=self.path)
            new = not p.exists() or p.stat().st_size == 0
        try:
            self.db = connect(self.path, type="db" if local else "postgresql", use_lock_file=False)
            meta = self.db.metadata
            n_rows = self.db.count()
        except Exception as exc:
            raise DataError(f"cannot open as an ASE database ({type(exc).__name__}: {exc})", file=self.path) from exc
        if not meta.get("forcefit_campaign"):
            if n_rows:
                raise DataError("is an ASE database but not a forcefit campaign; label it into a new one with --out", file=self.path)
            if not create:
                raise DataError("is not a forcefit campaign", file=self.path)
            if local and new:
                self._enable_wal()
            self.db.metadata = {"forcefit_campaign": True, "schema": SCHEMA, "levels": {}}
        elif meta.get("schema", SCHEMA) > SCHEMA:
            raise DataError(f"campaign schema {meta['schema']} is newer than this forcefit understands ({SCHEMA})", file=self.path)
        self._session = False
        from ase.db.sqlite import SQLite3Database

        self._sqlite = local and type(self.db) is SQLite3Database
        if self._sqlite:
            self._index_row_ids()

    # ------------------------------------------------------------ connection handling
    def _enable_wal(self):
        import sqlite3

        try:
            with sqlite3.connect(self.path) as con:
                con.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error:  # e.g. a network filesystem: keep the default journal
            pass

    def _index_row_ids(self):
        """Index the row id of ase.db's key tables: updating a row deletes its keys by id, which
        without an index scans every key of the campaign (O(N) per label)."""
        import sqlite3

        try:
            with sqlite3.connect(self.path, timeout=20) as con:
                for table in ("keys", "text_key_values", "number_key_values", "species"):
                    con.execute(f"CREATE INDEX IF NOT EXISTS forcefit_{table}_id ON {table}(id)")
        except sqlite3.Error:  # read-only file: labelling will fail later with a clear message
            pass

    @contextmanager
    def session(self):
        """Keep one connection open; every write inside commits immediately (see module docstring)."""
        if self._session:
            yield self
            return
        with self.db:
            con = self.db.connection
            if not _is_url(self.path):
                con.execute("PRAGMA synchronous=NORMAL")
            self._session = True
            try:
                yield self
            finally:
                self._session = False

    @contextmanager
    def _transaction(self, commit: bool = True):
        if self._session:
            yield
            if commit:
                self.db.connection.commit()
        else:
            with self.db:
                yield

    @contextmanager
    def _reading(self):
        """One connection for a burst of reads (ase.db otherwise opens one per row it converts)."""
        if self._session:
            yield
        else:
            with self.db:
                yield

    def _kvps(self) -> list[tuple[int, dict]]:
        """(row id, key-value pairs) of every structure, in id order; the cheap read behind work lists."""
        if self._sqlite:
            import sqlite3

            con = self.db.connection if self._session else sqlite3.connect(self.path, timeout=20)
            try:
                rows = con.execute("SELECT id, key_value_pairs FROM systems ORDER BY id").fetchall()
            finally:
                if not self._session:
                    con.close()
            return [(i, self.db.decode(kv) if kv else {}) for i, kv in rows]
        with self._reading():
            return [(row.id, dict(row.key_value_pairs)) for row in self.db.select(columns=["id", "key_value_pairs"])]

    def commit(self) -> None:
        """Commit writes made with ``commit=False`` inside a session."""
        if self._session:
            self.db.connection.commit()

    def _modify(self, row_id: int, kvp: dict, data: dict) -> None:
        """Add key-value pairs and top-level data entries to a row (ase.db's update, minus its full row read).

        In a SQLite session only the two columns that change are read back;
        elsewhere ``db.update`` does the same read-modify-write.
        """
        from ase.db.core import check

        check(kvp)
        if not (self._sqlite and self._session):
            self.db.update(int(row_id), data=data, **kvp)
            return
        con = self.db.connection
        if not con.in_transaction:  # take the write lock before reading: no lost update from another writer
            con.execute("BEGIN IMMEDIATE")
        old_kvp, old_data = con.execute(
            "SELECT key_value_pairs, data FROM systems WHERE id=?", (int(row_id),)).fetchone()
        new_kvp = self.db.decode(old_kvp) if old_kvp else {}
        new_kvp.update(kvp)
        new_data = self.db.decode(old_data) if old_data not in (None, "null", b"null") else {}
        new_data = dict(new_data or {})
        new_data.update(data)
        self.db._update(int(row_id), new_kvp, new_data)

    # ------------------------------------------------------------ structures
    def __len__(self) -> int:
        return self.db.count()

    @property
    def levels(self) -> dict:
        """Level name -> settings of the method that labels it."""
        return dict(self._read_metadata().get("levels", {}))

    def _read_metadata(self) -> dict:
        """The campaign's metadata as stored now (ase.db caches it for the life of a connection object)."""
        if not self._sqlite:
            return self.db.metadata
        import json
        import sqlite3

        con = self.db.connection if self._session else sqlite3.connect(self.path, timeout=20)
        try:
            row = con.execute("SELECT value FROM information WHERE name='metadata'").fetchone()
        finally:
            if not self._session:
                con.close()
        return json.loads(row[0]) if row else {}

    def _update_metadata(self, change) -> None:
        """Read-modify-write the metadata under the write lock (``change(meta)`` edits it in place)."""
        if not self._sqlite:
            meta = self.db.metadata
            change(meta)
            with self._transaction():
                self.db.metadata = meta
            return
        import json
        import sqlite3

        con = sqlite3.connect(self.path, timeout=20, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")
            row = con.execute("SELECT value FROM information WHERE name='metadata'").fetchone()
            meta = json.loads(row[0]) if row else {}
            change(meta)
            if row:
                con.execute("UPDATE information SET value=? WHERE name='metadata'", [json.dumps(meta)])
            else:
                con.execute("INSERT INTO information VALUES (?, ?)", ("metadata", json.dumps(meta)))
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        finally:
            con.close()
        self.db._metadata = None  # let ase.db read it afresh

    def add(self, structures, config_type: str | None = None, source: str | None = None) -> list[int]:
        """Add structures not already present (by hash), all in one transaction; return the new row ids.

        The tag is ``config_type`` if given, else the structure's
        ``info["config_type"]``, else "default".
        """
        known = {kv.get("structure_hash") for _, kv in self._kvps()}
        new_ids = []
        with self._transaction():
            for atoms in structures:
                key = structure_hash(atoms)
                if key in known:
                    continue
                known.add(key)
                info = atoms.info
                kvp = {
                    "config_type": _checked_str(config_type or info.get("config_type", "default"), "config_type"),
                    "structure_hash": key,
                }
                if info.get("equilibrium"):
                    kvp["equilibrium"] = 1
                if "weight" in info:
                    kvp["weight"] = float(info["weight"])
                for name in ("temperature", "step", "stdev"):
                    if name in info:
                        kvp[name] = float(info[name])
                data = {k: str(info[k]) for k in ("sampler", "smiles") if k in info}
                if source:
                    data["source"] = str(source)
                clean = atoms.copy()
                clean.calc = None
                new_ids.append(self.db.write(clean, key_value_pairs=kvp, data=data))
        return new_ids

    def structures(self, ids=None) -> list:
        """(row id, Atoms) for all structures, or for the given ids, in id order."""
        wanted = None if ids is None else {int(i) for i in ids}
        out = []
        with self._reading():
            for row in self.db.select():
                if wanted is not None and row.id not in wanted:
                    continue
                atoms = row.toatoms()
                atoms.info["config_type"] = row.get("config_type", "default")
                out.append((row.id, atoms))
        return sorted(out, key=lambda t: t[0])

    def task_structures(self, ids) -> dict:
        """Row id -> ``Structure`` (what a worker needs), read in one pass."""
        from .calculators import Structure

        wanted = {int(i) for i in ids}
        if not self._sqlite:
            return {i: Structure.from_atoms(a) for i, a in self.structures(wanted)}
        import sqlite3

        db = self.db
        con = db.connection if self._session else sqlite3.connect(self.path, timeout=20)
        try:
            rows = con.execute("SELECT id, numbers, positions, cell, pbc, initial_magmoms, initial_charges "
                               "FROM systems ORDER BY id").fetchall()
        finally:
            if not self._session:
                con.close()
        out = {}
        for i, numbers, positions, cell, pbc, magmoms, charges in rows:
            if i not in wanted:
                continue
            out[i] = Structure(
                numbers=db.deblob(numbers, np.int32).astype(np.int64),
                positions=db.deblob(positions, shape=(-1, 3)).copy(),
                cell=db.deblob(cell, shape=(3, 3)).copy(),
                pbc=(pbc & np.array([1, 2, 4])).astype(bool),
                initial_charges=db.deblob(charges).copy() if charges is not None else None,
                initial_magmoms=db.deblob(magmoms).copy() if magmoms is not None else None,
            )
        return out

    # ------------------------------------------------------------ levels
    def register_level(self, level: str, settings: dict) -> None:
        """Record the method behind ``level``; refuse different settings under an existing name."""
        check_level_name(level)

        def change(meta):
            levels = meta.setdefault("levels", {})
            old = levels.get(level)
            if old is None:
                levels[level] = settings
                return
            a = {k: v for k, v in old.items() if k not in _VERSION_KEYS}
            b = {k: v for k, v in settings.items() if k not in _VERSION_KEYS}
            if a != b:
                diff = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
                raise DataError(f"level '{level}' was labelled with other settings ({diff}); use another --level name", file=self.path, field="level")

        self._update_metadata(change)

    # ------------------------------------------------------------ work lists
    def status(self, level: str) -> list[dict]:
        """Per structure: id, labelled, failed attempts, selected (cheap: key-value pairs only)."""
        out = []
        for row_id, kv in self._kvps():
            out.append({"id": row_id, "labelled": bool(kv.get(f"has_{level}")), "failed": int(kv.get(f"failed_{level}", 0)),
                        "selected": bool(kv.get(f"sel_{level}")), "cost": kv.get(f"cost_{level}")})
        return out

    def pending(self, level: str, retry_failed: bool = False, selected_only: bool = False) -> list[tuple[int, int]]:
        """(row id, failed attempts so far) of structures still to label at ``level``.

        ``selected_only``: only structures chosen for this level by a
        ``select`` (see ``label``). Given-up structures come back only with
        ``retry_failed``.
        """
        rows = self.status(level)
        if selected_only:
            rows = [r for r in rows if r["selected"]]
        return [(r["id"], r["failed"]) for r in rows
                if not r["labelled"] and (retry_failed or r["failed"] < MAX_ATTEMPTS)]

    def mark_selected(self, level: str, ids) -> None:
        """Record a selection before labelling starts, so a resumed run labels the same subset."""
        with self._transaction():
            for i in ids:
                self.db.update(int(i), **{f"sel_{level}": 1})

    # ------------------------------------------------------------ results
    def write_label(self, row_id: int, level: str, label: dict, cpu_seconds: float, wall_seconds: float,
                    attempt: int, safer: bool, host: str | None = None, commit: bool = True) -> None:
        """Store one finished label and commit it (``commit=False``: the caller commits a batch)."""
        record = {k: np.asarray(v) if k != "energy" else float(v) for k, v in label.items()}
        record.update(cpu_seconds=float(cpu_seconds), wall_seconds=float(wall_seconds), attempt=int(attempt),
                      safer=bool(safer), host=host or socket.gethostname(), time=time.time())
        with self._transaction(commit):
            self._modify(row_id, {f"has_{level}": 1, f"cost_{level}": float(cpu_seconds)}, {f"label.{level}": record})

    def write_failure(self, row_id: int, level: str, error: str, attempt: int, final: bool,
                      cpu_seconds: float = 0.0, safer: bool = False, host: str | None = None, commit: bool = True) -> int:
        """Record a failed attempt (with its error text) and commit; returns the new failed-attempt count."""
        row = self.db.get(id=int(row_id))
        failures = list(row.data.get(f"failures.{level}", []))
        failures.append({"attempt": int(attempt), "error": str(error), "safer": bool(safer), "final": bool(final),
                         "cpu_seconds": float(cpu_seconds), "host": host or socket.gethostname(), "time": time.time()})
        count = MAX_ATTEMPTS if final else int(row.get(f"failed_{level}", 0)) + 1
        count = max(count, int(row.get(f"failed_{level}", 0)) + 1)
        with self._transaction(commit):
            self._modify(row_id, {f"failed_{level}": count}, {f"failures.{level}": failures})
        return count

    def failures(self, level: str) -> list[tuple[int, list[dict]]]:
        """(row id, failure records) of structures with failed attempts at ``level``."""
        ids = {i for i, kv in self._kvps() if kv.get(f"failed_{level}", 0) > 0}
        out = []
        with self._reading():
            for i in sorted(ids):
                out.append((i, list(self.db.get(id=i).data.get(f"failures.{level}", []))))
        return out

    # ------------------------------------------------------------ reading back
    def frames(self, level: str | None = None):
        """Labelled frames of a level (``forcefit.data.Frame``), as the data layer reads them."""
        from ..data.campaign import read_campaign

        return read_campaign(self.path, level)

    def info(self) -> dict:
        """Counts per level and config_type, CPU cost per level (for ``campaign-info``)."""
        kvs = [kv for _, kv in self._kvps()]
        rows = kvs
        tags: dict[str, int] = {}
        for kv in kvs:
            tag = kv.get("config_type", "default")
            tags[tag] = tags.get(tag, 0) + 1
        levels = {}
        for level, settings in self.levels.items():
            costs = [float(kv[f"cost_{level}"]) for kv in kvs if kv.get(f"has_{level}") and f"cost_{level}" in kv]
            labelled = sum(1 for kv in kvs if kv.get(f"has_{level}"))
            failed = sum(1 for kv in kvs if not kv.get(f"has_{level}") and kv.get(f"failed_{level}", 0) >= MAX_ATTEMPTS)
            selected = sum(1 for kv in kvs if kv.get(f"sel_{level}"))
            pool = selected if selected else len(rows)
            retried = sum(1 for kv in kvs if kv.get(f"has_{level}") and kv.get(f"failed_{level}", 0))
            levels[level] = {
                "settings": settings, "labelled": labelled, "failed": failed, "retried": retried,
                "selected": selected, "pending": max(0, pool - labelled - failed) if selected else
                sum(1 for kv in kvs if not kv.get(f"has_{level}") and kv.get(f"failed_{level}", 0) < MAX_ATTEMPTS),
                "cpu_total": float(sum(costs)), "cpu_mean": float(np.mean(costs)) if costs else None,
            }
        return {"path": self.path, "structures": len(rows), "config_types": tags, "levels": levels}
