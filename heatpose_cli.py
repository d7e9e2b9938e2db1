"""The `heatpose` console script: one front door that dispatches to subcommands lazily."""
def main() -> None:
    pass
