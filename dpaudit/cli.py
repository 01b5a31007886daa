"""The `dpaudit` command line (click). Each command is a thin shell over the Python API."""

from __future__ import annotations

import json
from pathlib import Path

import click

from dpaudit import __version__
from dpaudit.errors import DpauditError


class UserError(click.ClickException):
    """A user's mistake: printed as one `Error: ...` line, exit code 2."""

    exit_code = 2


class _Group(click.Group):
    """A click group that turns DpauditError into one line and exit code 2, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DpauditError as e:
            raise UserError(str(e)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dpaudit")
def cli():
    """Audit synthetic image data for privacy and usefulness."""


data_root_option = click.option(
    "--data-root",
    type=click.Path(file_okay=False),
    help="Folder holding mnist/, fashion-mnist/ ... (default: $DPAUDIT_DATA, then the user cache).",
)
download_option = click.option(
    "--download", is_flag=True, help="Download a missing dataset through torchvision (needs internet)."
)


@cli.command()
@data_root_option
def datasets(data_root):
    """List the built-in datasets and where each was found."""
    from dpaudit.datasets import available

    rows = available(data_root)
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        where = r["where"] if r["found"] else "not found (set DPAUDIT_DATA or use --download)"
        click.echo(f"{r['name']:<{width}}  {r['description']}\n{'':<{width}}  {where}")


@cli.command()
@click.argument("dataset")
@click.option("--split", "role", type=click.Choice(["members", "holdout", "test"]), required=True)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder to write.")
@click.option("--format", "fmt", type=click.Choice(["png", "npz"]), default="png", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the member/holdout split.")
@data_root_option
@download_option
def export(dataset, role, out, fmt, seed, data_root, download):
    """Write one part of a built-in dataset's split, e.g. the members a generator may train on.

    Beside the images, split.json records the split id and the indices into the official
    training split, so that anyone can check they trained on exactly the members.
    """
    from dpaudit.datasets import load_split
    from dpaudit.images import save_images

    reference = load_split(dataset, seed, data_root=data_root, download=download)
    images = getattr(reference, role)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise DpauditError(f"{out}: the folder is not empty; choose a new --out.")
    written = save_images(images, out, fmt)
    (out / "split.json").write_text(
        json.dumps(
            {"dataset": dataset, "split": role, "seed": seed, "split_id": reference.split_id, "count": len(images)},
            indent=2,
        )
        + "\n"
    )
    click.echo(f"wrote {len(images)} {dataset} {role} images to {written} (split {reference.split_id})")


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="dpaudit")

