"""overmem's command line (Typer) and terminal UI (Textual)."""
