"""Examples of fastapi_breaker. Today only the engine demo: `python -m example_app.engine_demo`."""
