"""The campaign store: one ASE database holding every structure once, with labels per level of theory.

The layout (metadata, one row per structure, per-level keys and label data)
is ``forcefit.data.campaign_schema``; the data layer reads it back with
``forcefit.data.campaign.read_campaign``.

Durability: a labelling session keeps one connection open and writes the
results it has received in batches, each one transaction (one
``Campaign.write_results`` call), committed once 256 results wait or 0.5 s
after the previous commit, whichever comes first (``runner.COMMIT_LABELS``,
``runner.COMMIT_SECONDS``), and when the run ends or is interrupted. A
killed run therefore loses at most the results of its last uncommitted
batch (at most 256, or about 0.5 s of labelling) plus those still being
computed; a batch is stored whole or not at all, and a resumed run labels
exactly the structures without a committed label. SQLite runs in WAL mode
with ``synchronous=NORMAL``: a commit survives a killed process (not
necessarily a power cut). Each batch takes the write lock before it reads
the rows it changes, so two coordinators labelling different levels of one
campaign do not overwrite each other. A batch writes the same columns and
key index tables as ase.db's ``db.update`` (and byte-identical data blobs;
``sqlite_writer``), so every ase.db reader sees an ordinary database. A
PostgreSQL URL (``postgresql://user:pw@host/db``) goes through
``ase.db.connect`` the same way (row by row through ``db.update``; the
SQLite-only speed-ups are skipped there). Only the coordinating process
writes.
"""
from __future__ import annotations

import hashlib
import json
import socket
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..data.campaign_schema import LEVELS, MAX_ATTEMPTS, SCHEMA, check_level_name, is_campaign, level_keys, new_metadata
from ..data.errors import DataError
from .results import Result, apply_result
from .sqlite_writer import decode_kvp, read_rows, write_rows

__all__ = ["Campaign", "MAX_ATTEMPTS", "Result", "check_level_name", "structure_hash"]

_VERSION_KEYS = {"versions"}


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
        if not is_campaign(meta):
            if n_rows:
                raise DataError("is an ASE database but not a forcefit campaign; label it into a new one with --out", file=self.path)
            if not create:
                raise DataError("is not a forcefit campaign", file=self.path)
            if local and new:
                self._enable_wal()
            self.db.metadata = new_metadata()
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
        """Keep one connection open for a burst of reads and writes; each write commits as it says
        (``write_results`` commits its batch unless ``commit=False``; see the module docstring)."""
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
        """Writes inside are one transaction: committed together at the end, or rolled back on an error."""
        if self._session:
            try:
                yield
            except BaseException:
                if commit:
                    self.db.connection.rollback()
                raise
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
            return [(i, decode_kvp(self.db, kv)) for i, kv in rows]
        with self._reading():
            return [(row.id, dict(row.key_value_pairs)) for row in self.db.select(columns=["id", "key_value_pairs"])]

    def commit(self) -> None:
        """Commit writes made with ``commit=False`` inside a session."""
        if self._session:
            self.db.connection.commit()

    # ------------------------------------------------------------ structures
    def __len__(self) -> int:
        return self.db.count()

    @property
    def levels(self) -> dict:
        """Level name -> settings of the method that labels it."""
        return dict(self._read_metadata().get(LEVELS, {}))

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
        import sqlite3

        own = not self._session
        con = sqlite3.connect(self.path, timeout=20) if own else self.db.connection
        try:
            if not con.in_transaction:
                con.execute("BEGIN IMMEDIATE")
            row = con.execute("SELECT value FROM information WHERE name='metadata'").fetchone()
            meta = json.loads(row[0]) if row else {}
            change(meta)
            if row:
                con.execute("UPDATE information SET value=? WHERE name='metadata'", [json.dumps(meta)])
            else:
                con.execute("INSERT INTO information VALUES (?, ?)", ("metadata", json.dumps(meta)))
            con.commit()
        except BaseException:
            con.rollback()
            raise
        finally:
            if own:
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
        from .method import Structure

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
        bits = np.array([1, 2, 4])
        deblob = db.deblob
        for i, numbers, positions, cell, pbc, magmoms, charges in rows:
            if i not in wanted:
                continue
            # read-only views of the rows' bytes (workers only read them; to_atoms copies)
            out[i] = Structure(
                numbers=deblob(numbers, np.int32).astype(np.int64),
                positions=deblob(positions, shape=(-1, 3)),
                cell=deblob(cell, shape=(3, 3)),
                pbc=(pbc & bits).astype(bool),
                initial_charges=deblob(charges) if charges is not None else None,
                initial_magmoms=deblob(magmoms) if magmoms is not None else None,
            )
        return out

    # ------------------------------------------------------------ levels
    def register_level(self, level: str, settings: dict) -> None:
        """Record the method behind ``level``; refuse different settings under an existing name."""
        check_level_name(level)

        def change(meta):
            levels = meta.setdefault(LEVELS, {})
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
        k = level_keys(level)
        out = []
        for row_id, kv in self._kvps():
            out.append({"id": row_id, "labelled": bool(kv.get(k.has)), "failed": int(kv.get(k.failed, 0)),
                        "selected": bool(kv.get(k.selected)), "cost": kv.get(k.cost)})
        return out

    def pending(self, level: str, retry_failed: bool = False, selected_only: bool = False) -> list[tuple[int, int]]:
        """(row id, failed attempts so far) of structures still to label at ``level``.

        ``selected_only``: only structures chosen for this level by a
        ``select`` (see ``label``). Given-up structures come back only with
        ``retry_failed``.
        """
        out = []
        for row_id, has, failed, sel in self._level_flags(level):
            if has or (selected_only and not sel):
                continue
            f = int(failed or 0)
            if retry_failed or f < MAX_ATTEMPTS:
                out.append((row_id, f))
        return out

    def _level_flags(self, level: str) -> list[tuple]:
        """(row id, has_L, failed_L, sel_L) of every structure, in id order (None where a key is absent).

        On SQLite, SQL's JSON functions pick the three keys out of each
        row's key-value pairs without decoding them in Python (~5x faster);
        where those functions are missing, or some row's pairs are not
        strict JSON (a NaN value), every row is decoded here instead.
        """
        k = level_keys(level)
        keys = (k.has, k.failed, k.selected)
        if self._sqlite:
            import sqlite3

            con = self.db.connection if self._session else sqlite3.connect(self.path, timeout=20)
            try:
                return con.execute(
                    "SELECT id, json_extract(key_value_pairs, ?), json_extract(key_value_pairs, ?), "
                    "json_extract(key_value_pairs, ?) FROM systems ORDER BY id", [f"$.{k}" for k in keys]).fetchall()
            except sqlite3.OperationalError:
                pass
            finally:
                if not self._session:
                    con.close()
        return [(row_id, kv.get(keys[0]), kv.get(keys[1]), kv.get(keys[2])) for row_id, kv in self._kvps()]

    def mark_selected(self, level: str, ids) -> None:
        """Record a selection before labelling starts, so a resumed run labels the same subset."""
        with self._transaction():
            for i in ids:
                self.db.update(int(i), **{level_keys(level).selected: 1})

    # ------------------------------------------------------------ results
    def write_label(self, row_id: int, level: str, label: dict, cpu_seconds: float, wall_seconds: float,
                    attempt: int, safer: bool, host: str | None = None, commit: bool = True) -> None:
        """Store one finished label and commit it (``commit=False``: the caller commits; see ``write_results``)."""
        self.write_results(level, [Result(int(row_id), label, None, int(attempt), bool(safer), False,
                                          float(cpu_seconds), float(wall_seconds), host)], commit=commit)

    def write_failure(self, row_id: int, level: str, error: str, attempt: int, final: bool,
                      cpu_seconds: float = 0.0, safer: bool = False, host: str | None = None, commit: bool = True) -> int:
        """Record a failed attempt (with its error text) and commit; returns the new failed-attempt count."""
        self.write_results(level, [Result(int(row_id), None, str(error), int(attempt), bool(safer), bool(final),
                                          float(cpu_seconds), 0.0, host)], commit=commit)
        return int(self._kvp(int(row_id)).get(level_keys(level).failed, 0))

    def write_results(self, level: str, results, commit: bool = True) -> None:
        """Store a batch of labels and failed attempts at ``level`` in one transaction, then commit.

        ``results``: ``Result`` records (or anything with the same
        attributes, such as the runner's outcomes) in the order they
        happened; one structure may appear more than once (a failed attempt,
        then its retry). The batch is stored whole or not at all. On SQLite
        the rows are read back in one query under the write lock and written
        with one statement per table (the same columns ``db.update`` writes:
        key-value pairs, data, mtime and the key index tables); elsewhere
        row by row through ``db.update``. ``commit=False`` inside a
        ``session``: the caller commits (``commit``).
        """
        results = list(results)
        if not results:
            return
        from ase.db.core import check

        keys = level_keys(level)
        check({k: 1 for k in (keys.has, keys.cost, keys.failed)})
        host = socket.gethostname()
        with self._transaction(commit):
            rows = self._rows_for_update([r.row_id for r in results])
            changed: dict[int, set] = {}
            for r in results:
                i = int(r.row_id)
                kvp, data, _ = rows[i]
                touched = apply_result(keys, r, kvp, data, host)
                if i in changed:
                    changed[i].update(touched)
                else:
                    changed[i] = set(touched)
            self._store_rows(rows, changed)

    def _kvp(self, row_id: int) -> dict:
        with self._reading():
            return dict(self.db.get(id=row_id).key_value_pairs)

    def _rows_for_update(self, ids) -> dict:
        """Row id -> [key-value pairs, data, keys it had] as stored now, read under the write lock."""
        ids = list(dict.fromkeys(int(i) for i in ids))
        out = {}
        if self._sqlite:
            out = read_rows(self.db, ids)
        else:
            for i in ids:
                row = self.db.get(id=i)
                out[i] = [dict(row.key_value_pairs), dict(row.get("data") or {}), set(row.key_value_pairs)]
        missing = [i for i in ids if i not in out]
        if missing:
            raise DataError(f"no structure with row id {missing[0]} in this campaign", file=self.path)
        return out

    def _store_rows(self, rows: dict, changed: dict) -> None:
        """Write back the key-value pairs and data of ``rows``; ``changed``: row id -> keys that changed."""
        db = self.db
        if not self._sqlite:
            for i, keys in changed.items():
                kvp, data, _ = rows[i]
                db.update(i, data=data, **{k: kvp[k] for k in keys})
            return
        write_rows(db, rows, changed)

    def failures(self, level: str) -> list[tuple[int, list[dict]]]:
        """(row id, failure records) of structures with failed attempts at ``level``."""
        k = level_keys(level)
        ids = {i for i, kv in self._kvps() if kv.get(k.failed, 0) > 0}
        out = []
        with self._reading():
            for i in sorted(ids):
                out.append((i, list(self.db.get(id=i).data.get(k.failures, []))))
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
            k = level_keys(level)
            costs = [float(kv[k.cost]) for kv in kvs if kv.get(k.has) and k.cost in kv]
            labelled = sum(1 for kv in kvs if kv.get(k.has))
            failed = sum(1 for kv in kvs if not kv.get(k.has) and kv.get(k.failed, 0) >= MAX_ATTEMPTS)
            selected = sum(1 for kv in kvs if kv.get(k.selected))
            pool = selected if selected else len(rows)
            retried = sum(1 for kv in kvs if kv.get(k.has) and kv.get(k.failed, 0))
            levels[level] = {
                "settings": settings, "labelled": labelled, "failed": failed, "retried": retried,
                "selected": selected, "pending": max(0, pool - labelled - failed) if selected else
                sum(1 for kv in kvs if not kv.get(k.has) and kv.get(k.failed, 0) < MAX_ATTEMPTS),
                "cpu_total": float(sum(costs)), "cpu_mean": float(np.mean(costs)) if costs else None,
            }
        return {"path": self.path, "structures": len(rows), "config_types": tags, "levels": levels}
