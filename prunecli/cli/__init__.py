"""The command-line layer: thin Typer commands over the library (DESIGN §7)."""
