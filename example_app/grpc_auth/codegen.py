"""Regenerate the committed gRPC code from auth.proto: `python -m example_app.grpc_auth.codegen`.

protoc runs from the project root with `-I .`, so the generated `auth_pb2_grpc.py` imports
`example_app.grpc_auth.auth_pb2` (with `-I example_app/grpc_auth` it would import a top-level
`auth_pb2` that only exists on sys.path by accident). The output depends on grpcio-tools'
version, which it names inside: regenerate with the version the project installs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["GENERATED", "PACKAGE_DIR", "PROTO", "ROOT", "generate", "main"]

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = Path("example_app", "grpc_auth")
PROTO = PACKAGE_DIR / "auth.proto"
GENERATED = ("auth_pb2.py", "auth_pb2_grpc.py", "auth_pb2.pyi")


def generate(out_dir: Path) -> list[Path]:
    """Run `python -m grpc_tools.protoc` on auth.proto into `out_dir`; return the files made.

    They land in `out_dir/example_app/grpc_auth/`, as protoc mirrors the proto's path.
    """
    out = str(out_dir)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            ".",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--pyi_out={out}",
            str(PROTO),
        ],
        cwd=ROOT,
        check=True,
    )
    return [out_dir / PACKAGE_DIR / name for name in GENERATED]


def main() -> int:
    for path in generate(ROOT):
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
