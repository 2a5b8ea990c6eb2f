"""Benchmarks of fastapi_breaker against its Python peers; run them with `make bench`."""
