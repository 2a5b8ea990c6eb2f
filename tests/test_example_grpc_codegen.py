"""The example's committed gRPC code is what protoc makes of auth.proto today."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest

from example_app.grpc_auth import auth_pb2
from example_app.grpc_auth.codegen import GENERATED, PACKAGE_DIR, ROOT, generate


def test_the_committed_code_was_made_by_the_installed_grpcio_tools() -> None:
    # protoc's output names the grpcio-tools that made it, so another version makes other
    # files: this says so before the comparisons below fail.
    committed = (ROOT / PACKAGE_DIR / "auth_pb2_grpc.py").read_text()
    made_by = re.search(r"^GRPC_GENERATED_VERSION = '([^']+)'$", committed, re.MULTILINE)

    assert made_by is not None
    assert made_by[1] == importlib.metadata.version("grpcio-tools")


@pytest.mark.parametrize("name", GENERATED)
def test_committed_code_is_current(tmp_path: Path, name: str) -> None:
    generated = {path.name: path for path in generate(tmp_path)}

    committed = (ROOT / PACKAGE_DIR / name).read_text()
    assert generated[name].read_text() == committed, (
        f"{PACKAGE_DIR / name} is stale: run `python -m example_app.grpc_auth.codegen`"
    )


def test_generate_writes_exactly_the_three_files(tmp_path: Path) -> None:
    paths = generate(tmp_path)

    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        p.relative_to(tmp_path) for p in paths
    )
    assert [p.name for p in paths] == ["auth_pb2.py", "auth_pb2_grpc.py", "auth_pb2.pyi"]


def test_the_proto_declares_auth_service_verify() -> None:
    service = auth_pb2.DESCRIPTOR.services_by_name["AuthService"]

    assert service.full_name == "auth.AuthService"
    verify = service.methods_by_name["Verify"]
    assert verify.input_type.full_name == "auth.VerifyRequest"
    assert verify.output_type.full_name == "auth.VerifyReply"
    assert auth_pb2.VerifyReply(user="alice").user == "alice"
