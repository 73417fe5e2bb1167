"""usetl's library for functions in the process backend (only `usetl.etl`)."""
