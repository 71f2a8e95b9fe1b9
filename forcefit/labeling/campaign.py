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
key index tables as ase.db's ``db.update`` (and byte-identical data blobs),
so every ase.db reader sees an ordinary database. A PostgreSQL URL
(``postgresql://user:pw@host/db``) goes through ``ase.db.connect`` the same
way (row by row through ``db.update``; the SQLite-only speed-ups are
skipped there). Only the coordinating process writes.
"""
from __future__ import annotations

import hashlib
import json
import re
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
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


@dataclass
class Result:
    """One result to store at a level: a label, or a failed attempt (``label`` None, ``error`` its text).

    ``final``: the failed attempt gives the structure up (no retry left).
    The runner passes its own outcomes, which carry the same attributes.
    """

    row_id: int
    label: dict | None
    error: str | None = None
    attempt: int = 1
    safer: bool = False
    final: bool = False
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    host: str | None = None


def _decode_kvp(db, text) -> dict:
    """A row's key-value pairs: plain JSON of words -> numbers/strings (json.loads is ~5x faster than ase's decode)."""
    if not text:
        return {}
    if isinstance(text, str):
        return json.loads(text)
    return dict(db.decode(text))


class _NotPlain(Exception):
    pass


_DTYPE_NAMES: dict = {}


_SCALARS = frozenset((int, float, bool, str, type(None)))
_EMPTY_DATA = (None, "null", b"null", "{}", b"\x08" + bytes(7) + b"{}")  # stored forms of no data (the last: {} in binary)
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))  # what json.dumps(..., separators=...) builds on every call


def _data_to_bytes(obj) -> bytes:
    """ase.db's binary encoding of a row's data (``ase.db.core.object_to_bytes``), byte for byte, ~3x faster.

    The layout: an int64 offset of the JSON part, then the raw bytes of
    every array in the order met, then compact JSON in which each array is
    ``{"__ndarray__": [shape, dtype name, byte offset]}``. Anything beyond
    plain scalars, strings, lists, dicts and numeric arrays (or a big-endian
    machine) goes through ase's own encoder.
    """
    from ase.db.core import object_to_bytes

    if not np.little_endian:
        return object_to_bytes(obj)
    parts = [b""]
    size = 8

    def array(o):
        nonlocal size
        if o.dtype == object:
            raise _NotPlain
        name = _DTYPE_NAMES.get(o.dtype)
        if name is None:
            name = _DTYPE_NAMES[o.dtype] = o.dtype.name
        raw = o.tobytes()
        ref = {"__ndarray__": [o.shape, name, size]}
        parts.append(raw)
        size += len(raw)
        return ref

    def plain(o):
        t = type(o)
        if t in _SCALARS:
            return o
        if t is dict:  # the usual shape: {name: {name: scalar or array}}, walked without recursion
            out = {}
            for k, v in o.items():
                tv = type(v)
                out[k] = v if tv in _SCALARS else array(v) if tv is np.ndarray else plain(v)
            return out
        if isinstance(o, (int, float, bool, str)):
            return o
        if isinstance(o, dict):
            return {k: plain(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [plain(v) for v in o]
        if isinstance(o, np.ndarray):
            return array(o)
        raise _NotPlain

    try:
        tree = plain(obj)
    except _NotPlain:
        return object_to_bytes(obj)
    parts[0] = np.array(size, np.int64).tobytes()
    parts.append(_COMPACT_JSON.encode(tree).encode())
    return b"".join(parts)


def _apply_result(names: tuple, r, kvp: dict, data: dict, host: str) -> tuple:
    """Apply one label or failed attempt to a row's key-value pairs and data (in place); return the keys changed.

    ``names``: the level's keys ``(has_L, cost_L, failed_L, label.L, failures.L)``.
    """
    has, cost, failed, label_key, failures_key = names
    if r.label is not None:
        record = {k: np.asarray(v) if k != "energy" else float(v) for k, v in r.label.items()}
        record.update(cpu_seconds=float(r.cpu_seconds), wall_seconds=float(r.wall_seconds), attempt=int(r.attempt),
                      safer=bool(r.safer), host=r.host or host, time=time.time())
        kvp[has] = 1
        kvp[cost] = float(r.cpu_seconds)
        data[label_key] = record
        return (has, cost)
    failures = list(data.get(failures_key, []))
    failures.append({"attempt": int(r.attempt), "error": str(r.error), "safer": bool(r.safer), "final": bool(r.final),
                     "cpu_seconds": float(r.cpu_seconds), "host": r.host or host, "time": time.time()})
    old = int(kvp.get(failed, 0))
    kvp[failed] = max(MAX_ATTEMPTS if r.final else old + 1, old + 1)
    data[failures_key] = failures
    return (failed,)


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
            return [(i, _decode_kvp(self.db, kv)) for i, kv in rows]
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
        keys = (f"has_{level}", f"failed_{level}", f"sel_{level}")
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
                self.db.update(int(i), **{f"sel_{level}": 1})

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
        return int(self._kvp(int(row_id)).get(f"failed_{level}", 0))

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

        names = (f"has_{level}", f"cost_{level}", f"failed_{level}", f"label.{level}", f"failures.{level}")
        check({k: 1 for k in names[:3]})
        host = socket.gethostname()
        with self._transaction(commit):
            rows = self._rows_for_update([r.row_id for r in results])
            changed: dict[int, set] = {}
            for r in results:
                i = int(r.row_id)
                kvp, data, _ = rows[i]
                keys = _apply_result(names, r, kvp, data, host)
                if i in changed:
                    changed[i].update(keys)
                else:
                    changed[i] = set(keys)
            self._store_rows(rows, changed)

    def _kvp(self, row_id: int) -> dict:
        with self._reading():
            return dict(self.db.get(id=row_id).key_value_pairs)

    def _rows_for_update(self, ids) -> dict:
        """Row id -> [key-value pairs, data, keys it had] as stored now, read under the write lock."""
        ids = list(dict.fromkeys(int(i) for i in ids))
        out = {}
        if self._sqlite:
            con = self.db.connection
            if not con.in_transaction:  # take the write lock before reading: no lost update from another writer
                con.execute("BEGIN IMMEDIATE")
            db = self.db
            for k in range(0, len(ids), 500):  # SQLite allows 999 parameters per statement (older builds)
                part = ids[k:k + 500]
                for i, kv, data in con.execute(
                        f"SELECT id, key_value_pairs, data FROM systems WHERE id IN ({','.join('?' * len(part))})", part):
                    kvp = _decode_kvp(db, kv)
                    out[i] = [kvp, {} if data in _EMPTY_DATA else dict(db.decode(data) or {}), set(kvp)]
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
        import numbers

        from ase.db.core import now

        mtime, binary = now(), db.version >= 9
        systems, drop, new_keys, texts, nums = [], [], [], [], []
        for i, keys in changed.items():
            kvp, data, existed = rows[i]
            systems.append((mtime, db.encode(kvp), _data_to_bytes(data) if binary else db.encode(data), i))
            for key in keys:
                if key in existed:  # a key new to the row has no index entries to replace
                    drop.append((i, key))
                new_keys.append((key, i))
                value = kvp[key]
                if type(value) in (int, float, bool) or isinstance(value, (numbers.Real, np.bool_)):  # as db.update sorts them
                    nums.append((key, float(value), i))
                else:
                    texts.append((key, value, i))
        cur = db.connection.cursor()
        cur.executemany("UPDATE systems SET mtime=?, key_value_pairs=?, data=? WHERE id=?", systems)
        if drop:
            for table in ("keys", "text_key_values", "number_key_values"):
                cur.executemany(f"DELETE FROM {table} WHERE id=? AND key=?", drop)
        cur.executemany("INSERT INTO text_key_values VALUES (?, ?, ?)", texts)
        cur.executemany("INSERT INTO number_key_values VALUES (?, ?, ?)", nums)
        cur.executemany("INSERT INTO keys VALUES (?, ?)", new_keys)

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
