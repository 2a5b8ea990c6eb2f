"""Examples of fastapi_breaker: the engine demo, the services demos (HTTP and gRPC) and the fleet
demo; example_app/README.md says how to run each."""
