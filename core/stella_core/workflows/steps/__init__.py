"""Step types: declarations (typed inputs and outputs) and their executors."""
