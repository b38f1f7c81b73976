"""The command-line layer: thin Typer commands over the jobs, and how results look (DESIGN §7); imports anything."""
