"""The example's Auth Service over gRPC: `auth.proto`, protoc's code for it, and its server.

`auth_pb2.py`, `auth_pb2_grpc.py` and `auth_pb2.pyi` are generated and committed; regenerate
them with `python -m example_app.grpc_auth.codegen` after changing `auth.proto`.
"""
