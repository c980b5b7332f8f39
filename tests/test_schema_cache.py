"""The compiled-validator cache: what it loads validates exactly like a fresh compile, and it only
runs code from a directory nobody else can write (stations/schema_cache.py)."""

import os

import fastjsonschema
import pytest
from django.core.management import call_command

from stations import validation
from stations.schema_cache import SchemaCache

BOOT = validation._lean(validation._schema("1.6", "BootNotification", "call"))
OPTIONS = {"use_default": False}
GOOD = {"chargePointVendor": "V", "chargePointModel": "M"}
BAD = {"chargePointVendor": "V" * 21, "chargePointModel": "M"}


def _error(fn, payload) -> str:
    with pytest.raises(fastjsonschema.JsonSchemaValueException) as exc:
        fn(payload)
    return f"{exc.value.message} {exc.value.rule} {exc.value.name}"


def test_a_validator_loaded_back_validates_like_a_fresh_compile(tmp_path, monkeypatch):
    fresh = fastjsonschema.compile(BOOT, handlers=validation._NoFetch(), **OPTIONS)
    first = SchemaCache(str(tmp_path)).validator(BOOT, validation._NoFetch(), **OPTIONS)
    assert len(os.listdir(tmp_path)) == 1

    def no_compiling(*args, **kwargs):
        raise AssertionError("compiled again instead of loaded from the cache")

    monkeypatch.setattr(fastjsonschema, "compile_to_code", no_compiling)
    loaded = SchemaCache(str(tmp_path)).validator(BOOT, validation._NoFetch(), **OPTIONS)
    for fn in (first, loaded):
        assert fn(dict(GOOD)) == GOOD
        assert _error(fn, BAD) == _error(fresh, BAD)
        assert "chargePointVendor" in _error(fn, BAD)


def test_other_options_or_schemas_are_other_entries(tmp_path):
    cache = SchemaCache(str(tmp_path))
    cache.validator(BOOT, validation._NoFetch(), use_default=False)
    cache.validator(BOOT, validation._NoFetch(), use_default=True)
    heartbeat = validation._lean(validation._schema("1.6", "Heartbeat", "call"))
    cache.validator(heartbeat, validation._NoFetch(), use_default=False)
    assert len(os.listdir(tmp_path)) == 3


def test_a_damaged_entry_is_compiled_again_and_replaced(tmp_path):
    SchemaCache(str(tmp_path)).validator(BOOT, validation._NoFetch(), **OPTIONS)
    (entry,) = tmp_path.iterdir()
    entry.write_bytes(b"not marshal data")
    fn = SchemaCache(str(tmp_path)).validator(BOOT, validation._NoFetch(), **OPTIONS)
    assert fn(dict(GOOD)) == GOOD
    assert entry.read_bytes() != b"not marshal data"


def test_a_directory_others_can_write_is_never_used(tmp_path, caplog):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    planted = SchemaCache(str(tmp_path / "elsewhere"))
    planted.validator(BOOT, validation._NoFetch(), **OPTIONS)
    # an entry planted under the right name is not run: the directory is not trusted at all
    (name,) = os.listdir(tmp_path / "elsewhere")
    (shared / name).write_bytes((tmp_path / "elsewhere" / name).read_bytes())
    cache = SchemaCache(str(shared))
    fn = cache.validator(BOOT, validation._NoFetch(), **OPTIONS)
    assert fn(dict(GOOD)) == GOOD
    assert "writable by others: not used" in caplog.text
    assert os.listdir(shared) == [name]  # nothing written there either
    assert cache._load(name) is None


def test_compileschemas_fills_the_configured_cache(tmp_path, settings, capsys):
    settings.OCPPGW_SCHEMA_CACHE = str(tmp_path / "schemas")
    kept = validation._cache, dict(validation._compiled)
    validation.use_cache(SchemaCache(settings.OCPPGW_SCHEMA_CACHE))
    validation._compiled.clear()
    try:
        call_command("compileschemas")
    finally:
        validation._cache = kept[0]
        validation._compiled.clear()
        validation._compiled.update(kept[1])
    out = capsys.readouterr().out
    assert out.startswith(f"{len(validation._schema_index())} OCPP schemas compiled into ")
    # a SEND checked like its CALL shares the CALL's entry: fewer files than schemas
    assert 100 < len(os.listdir(tmp_path / "schemas")) < len(validation._schema_index())
