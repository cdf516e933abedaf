"""The solvers: one numerical method per file."""
