"""``python -m forcefit.labeling ...``: the labelling commands without the rest of the CLI."""
import typer

from .cli import register

app = typer.Typer(help="forcefit labelling engine: sample, label, export-data, campaign-info.", no_args_is_help=True)
register(app)

if __name__ == "__main__":
    app()
