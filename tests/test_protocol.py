"""The checked-in generated gRPC code must match the .proto files."""
from __future__ import annotations

import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _load_generator():
    spec = importlib.util.spec_from_file_location("generate_protocol", ROOT / "scripts" / "generate_protocol.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["generate_protocol"] = module
    spec.loader.exec_module(module)
    return module


def test_generated_code_matches_proto(tmp_path):
    generator = _load_generator()
    written = generator.generate(tmp_path)
    assert written, "the generator produced nothing"
    for fresh in written:
        checked_in = ROOT / "snakepit" / "protocol" / fresh.name
        assert checked_in.exists(), f"{checked_in} is missing: run python scripts/generate_protocol.py"
        assert checked_in.read_text() == fresh.read_text(), (
            f"{checked_in.name} is stale: run python scripts/generate_protocol.py"
        )


def test_stale_code_is_detected(tmp_path):
    """The comparison above can fail: a changed proto gives different code."""
    generator = _load_generator()
    proto = ROOT / "snakepit" / "protocol" / "worker.proto"
    original = proto.read_text()
    fake_root = tmp_path / "root"
    (fake_root / "snakepit" / "protocol").mkdir(parents=True)
    (fake_root / "snakepit" / "protocol" / "worker.proto").write_text(
        original.replace("string command = 2;", "string command = 2;\n  string extra_field = 99;")
    )
    old_root = generator.ROOT
    generator.ROOT = fake_root
    try:
        written = generator.generate(tmp_path / "out")
    finally:
        generator.ROOT = old_root
    fresh = next(p for p in written if p.name == "worker_pb2.py")
    assert fresh.read_text() != (ROOT / "snakepit" / "protocol" / "worker_pb2.py").read_text()
