"""The syscall layer: one module per family, one table (table.py) from number to handler."""
