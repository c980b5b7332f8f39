"""A disk cache of the validators fastjsonschema generates, shared by every start of the gateway.

Generating and byte-compiling the ~580 validators of the three OCPP versions costs ~2.6 CPU-s a
process on an idle core (7 s on a busy 2-core machine, docs/performance.md): every restart, every
`--processes` child and every node of a deploy paid it while its stations reconnected. Loaded
back as marshalled code objects they take ~0.1 s. An entry is named by the hash of everything
its code depends on (the schema as compiled, fastjsonschema's version and options, the
interpreter's bytecode magic), so any change compiles afresh and nothing is invalidated by hand.

Entries are code this process runs: a directory that others can write is not used. Entries are
written atomically; a directory this process cannot write (a read-only image, built warm by
`manage.py compileschemas`) is only read.
"""

import hashlib
import importlib.util
import json
import logging
import marshal
import os
import re
import stat
import tempfile
from collections.abc import Callable

import fastjsonschema

log = logging.getLogger(__name__)

FORMAT = b"1"  # what an entry holds: marshal of (root function name, module code)
_FIRST_DEF = re.compile(r"^def (\w+)\(", re.M)  # compile_to_code writes the root function first


class SchemaCache:
    def __init__(self, directory: str):
        self.dir = directory
        self._usable: bool | None = None  # checked on first use: no I/O at import
        self._writable = True

    def validator(self, definition: dict, handlers, **options) -> Callable:
        """The validator fastjsonschema would compile for `definition`, from the cache if there."""
        key = self._key(definition, options)
        entry = self._load(key)
        if entry is None:
            source = fastjsonschema.compile_to_code(definition, handlers=handlers, **options)
            entry = _FIRST_DEF.search(source).group(1), compile(source, "<ocpp schema>", "exec")
            self._store(key, entry)
        name, code = entry
        namespace: dict = {}
        exec(code, namespace)
        return namespace[name]

    @staticmethod
    def _key(definition: dict, options: dict) -> str:
        digest = hashlib.sha256(FORMAT)
        digest.update(importlib.util.MAGIC_NUMBER)
        digest.update(fastjsonschema.VERSION.encode())
        digest.update(repr(sorted(options.items())).encode())
        digest.update(json.dumps(definition, sort_keys=True, separators=(",", ":")).encode())
        return digest.hexdigest()

    def _ready(self) -> bool:
        if self._usable is None:
            self._usable = False
            try:
                os.makedirs(self.dir, mode=0o700, exist_ok=True)
                mode = os.stat(self.dir).st_mode
            except OSError as exc:
                log.info(
                    "schema cache %s not usable (%s): compiling in this process", self.dir, exc
                )
                return False
            if mode & (stat.S_IWGRP | stat.S_IWOTH):
                log.warning("schema cache %s is writable by others: not used (it holds code)",
                            self.dir)  # fmt: skip
                return False
            self._usable = True
        return self._usable

    def _load(self, key: str):
        if not self._ready():
            return None
        try:
            with open(os.path.join(self.dir, key), "rb") as f:
                name, code = marshal.loads(f.read())
        except (OSError, EOFError, ValueError, TypeError):
            return None  # absent, or written by something else: compiled again
        return name, code

    def _store(self, key: str, entry) -> None:
        if not self._writable or not self._ready():
            return
        try:
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(marshal.dumps(entry))
            os.replace(tmp, os.path.join(self.dir, key))  # readers never see half an entry
        except OSError as exc:
            self._writable = False
            log.info("schema cache %s is read-only here (%s)", self.dir, exc)
