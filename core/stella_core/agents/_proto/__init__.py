"""Generated gRPC stubs of the agent protocol (scripts/gen_protos.py; not linted or type-checked)."""
