"""The `dpaudit` command line (click). Each command is a thin shell over the Python API."""

from __future__ import annotations

import json
from pathlib import Path

import click

from dpaudit import __version__
from dpaudit.errors import DpauditError, one_line
from dpaudit.memory import keep_freed_memory
from dpaudit.privacy import DEFAULT_DELTA
from dpaudit.threads import configure as configure_threads


# Seeds, checked where they enter: the audit passes seed + small offsets to numpy, torch and
# scikit-learn (whose random_state must stay below 2**32); the generators derive per-step seeds
# as seed * 1,000,003 + step within torch's 64 bits (the secret seed of `generate` has 40 bits).
SEED = click.IntRange(0, 2**31 - 1)
GENERATOR_SEED = click.IntRange(0, 2**40 - 1)


class UserError(click.ClickException):
    """A user's mistake: printed as one `Error: ...` line, exit code 2."""

    exit_code = 2


class _Group(click.Group):
    """A click group that turns DpauditError into one line and exit code 2, never a traceback;
    no message (click's own included) can carry a control character from a file name."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DpauditError as e:
            raise UserError(one_line(str(e))) from None
        except click.ClickException as e:
            e.message = one_line(e.message)
            raise


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dpaudit")
@click.option("--threads", type=click.IntRange(min=1), metavar="N",
              help="Threads of torch's kernels (default: $DPAUDIT_THREADS, $OMP_NUM_THREADS, else the CPUs this "
              "process may use; idle threads sleep rather than spin).")
def cli(threads):
    """Audit synthetic image data for privacy and usefulness."""
    keep_freed_memory()
    configure_threads(threads)


def _checked_device(ctx, param, value: str) -> str:
    """--device, refused before any work where it names a device this machine lacks."""
    from dpaudit.nets import resolve_device

    resolve_device(value)
    return value


device_option = click.option(
    "--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True, callback=_checked_device,
    help="Where the networks run: cpu, cuda, or auto (CUDA when present). Statistics on features stay on the CPU.",
)
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
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the member/holdout split.")
@data_root_option
@download_option
def export(dataset, role, out, fmt, seed, data_root, download):
    """Write one part of a built-in dataset's split, e.g. the members a generator may train on.

    Beside the images, split.json records the split id and the indices into the official
    training split, so that anyone can check they trained on exactly the members.
    """
    from dpaudit.datasets import load_split
    from dpaudit.images import ensure_empty_folder, save_images

    reference = load_split(dataset, seed, data_root=data_root, download=download)
    images = getattr(reference, role)
    out = Path(out)
    ensure_empty_folder(out)
    written = save_images(images, out, fmt)
    (out / "split.json").write_text(
        json.dumps(
            {"dataset": dataset, "split": role, "seed": seed, "split_id": reference.split_id, "count": len(images)},
            indent=2,
        )
        + "\n"
    )
    click.echo(f"wrote {len(images)} {dataset} {role} images to {written} (split {reference.split_id})")


def load_reference(dataset, members, holdout, test, split_seed, manifest, data_root, download, manifest_of=None):
    """The reference of `evaluate`/`compare`: a built-in dataset's split (by default the one the
    manifest names, else seed 0) or the user's own members/holdout/test. `manifest_of` names the
    synthetic set whose manifest it is, for messages."""
    from dpaudit.datasets import load_split, load_split_by_id, reference_from_folders

    own = (members, holdout, test)
    if dataset and any(own):
        raise DpauditError("give either --dataset or --members/--holdout/--test, not both.")
    if not dataset:
        if not all(own):
            raise DpauditError("give --dataset NAME, or all three of --members, --holdout and --test.")
        return reference_from_folders(members, holdout, test)
    claimed = manifest.split_id if manifest else None
    if split_seed is None and claimed and claimed.split(":")[0] == dataset:
        try:
            return load_split_by_id(claimed, data_root, download)
        except DpauditError as e:
            raise DpauditError(f"the manifest.json of {manifest_of}: {e}") from None
    return load_split(dataset, split_seed or 0, data_root=data_root, download=download)


def reference_options(command):
    """The options that name the real data an audit compares against."""
    options = [
        click.option("--dataset", help="Built-in dataset the synthetic set imitates (see `dpaudit datasets`)."),
        click.option("--members", type=click.Path(exists=True), help="Your own member images (what the generator trained on)."),
        click.option("--holdout", type=click.Path(exists=True), help="Your own holdout images (never seen by the generator)."),
        click.option("--test", type=click.Path(exists=True), help="Your own test images (for utility only)."),
        click.option("--split-seed", type=SEED, help="Seed of the built-in split (default: the manifest's split, else 0)."),
        data_root_option,
        download_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


class ProfileName(click.ParamType):
    """The name of a built-in profile (dpaudit/audit/profiles.py), checked when given: the profiles
    import torch, which `dpaudit --help` must not pay for."""

    name = "profile"

    def convert(self, value, param, ctx):
        from dpaudit.audit.profiles import get_profile

        try:
            return get_profile(value).name
        except DpauditError as e:
            self.fail(str(e), param, ctx)


def audit_options(command):
    """The options shared by every command that runs an audit."""
    options = [
        click.option("--profile", type=ProfileName(), default="quick", show_default=True,
                     help="Budgets: quick (CI-sized), standard, paper (published protocols)."),
        click.option("--checks", help="Comma-separated checks to run (default: all)."),
        click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of every random choice of the audit."),
        device_option,
        click.option("--nn-index", "nn_index", type=click.Choice(["auto", "exact", "ivf", "hnsw"]), default="auto",
                     show_default=True,
                     help="Nearest-neighbour index: exact, or approximate faiss IVF/HNSW (needs dpaudit[scale]; recall measured "
                          "and written to result.json); auto is exact below 10^10 query-reference pairs."),
        click.option("--features", "features", help="Feature extractor: default LeNet; inception (the FID space of papers: needs dpaudit[inception], downloads its weights once) or inception:PATH_TO_WEIGHTS offline."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def read_audit_inputs(synthetic_path, reference_args):
    """A synthetic set, its manifest and the reference it is audited against, read and checked."""
    from dpaudit.images import load_images
    from dpaudit.manifest import read_manifest

    manifest = read_manifest(synthetic_path)
    reference = load_reference(**reference_args, manifest=manifest, manifest_of=synthetic_path)
    synthetic = load_images(synthetic_path, name=Path(synthetic_path).name, num_classes=reference.members.num_classes)
    return synthetic, manifest, reference


def run_audit(inputs, profile, checks, seed, device, features, nn_index="auto"):
    """Evaluate the inputs of `read_audit_inputs`."""
    from dpaudit.audit.pipeline import evaluate

    synthetic, manifest, reference = inputs
    check_list = [c.strip() for c in checks.split(",") if c.strip()] if checks else None
    return evaluate(
        synthetic, reference, profile=profile, checks=check_list, seed=seed, device=device,
        manifest=manifest, extractor=features, nn_index=nn_index,
    )


@cli.command()
@click.option("--synthetic", type=click.Path(exists=True), required=True, help="Folder (or .npz) of synthetic images.")
@reference_options
@audit_options
@click.option("--out", type=click.Path(file_okay=False), default="dpaudit-out", show_default=True,
              help="Folder for result.json and report.html.")
@click.option("--no-report", is_flag=True, help="Write result.json only.")
def evaluate(synthetic, dataset, members, holdout, test, split_seed, data_root, download,
             profile, checks, seed, device, nn_index, features, out, no_report):
    """Score a synthetic set for fidelity, utility and leakage against the real data."""
    from dpaudit.files import check_writable_folder
    from dpaudit.reports.folder import write_audit

    reference_args = dict(dataset=dataset, members=members, holdout=holdout, test=test,
                          split_seed=split_seed, data_root=data_root, download=download)
    check_writable_folder(out)  # before the audit, not after it
    result = run_audit(read_audit_inputs(synthetic, reference_args), profile, checks, seed, device, features, nn_index)
    for path in write_audit(result, out, report=not no_report):
        click.echo(f"wrote {path}")
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    echo_scorecard(result)


def echo_scorecard(result) -> None:
    """The result's scorecard, last on the terminal: what a reader wants first."""
    from dpaudit.audit.scorecard import format_scorecard, scorecard

    click.echo("\n" + format_scorecard(scorecard(result)))


@cli.command()
@click.argument("result_json", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), help="HTML file to write (default: RESULT_JSON with .html).")
@click.option("--policy", type=click.Path(dir_okay=False), help="Gate policy (TOML) whose verdict heads the report.")
def report(result_json, out, policy):
    """Render the HTML report of a result.json again, from the JSON alone."""
    from dpaudit.audit.gate import apply_policy, load_policy
    from dpaudit.audit.result import load_result
    from dpaudit.reports.html import write_report

    result = load_result(result_json)
    verdict = apply_policy(result, load_policy(policy)) if policy else None
    click.echo(f"wrote {write_report(result, out or Path(result_json).with_suffix('.html'), verdict=verdict)}")


@cli.command()
@click.argument("result_json", type=click.Path(dir_okay=False))
@click.option("--policy", type=click.Path(dir_okay=False), required=True, help="Policy file (TOML) of [[rule]] thresholds.")
@click.option("--junit", type=click.Path(dir_okay=False), help="Also write the verdict as JUnit XML, one testcase per rule.")
@click.pass_context
def gate(ctx, result_json, policy, junit):
    """Hold a result.json to a policy: exit 0 if every rule holds, 1 if one breaks, 2 on bad input.

    See the README for the policy format (metric paths such as membership.auc, min/max bounds,
    max_from = "manifest.epsilon" for "empirical epsilon within the claim").
    """
    from dpaudit.audit.gate import apply_policy, format_table, load_policy, write_junit
    from dpaudit.audit.result import load_result
    from dpaudit.audit.scorecard import scorecard

    result = load_result(result_json)
    verdict = apply_policy(result, load_policy(policy))
    card = scorecard(result, verdict)
    # JUnit first: a file that cannot be written is an error (2), never a verdict printed as PASS.
    written = write_junit(verdict, junit, result_name=str(result_json), card=card) if junit else None
    click.echo(format_table(verdict))
    click.echo(f"scorecard: {card.title}")
    if written:
        click.echo(f"wrote {written}")
    ctx.exit(verdict.exit_code)


@cli.command()
@click.argument("results", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--synthetic", "synthetic_sets", multiple=True, type=click.Path(exists=True),
              help="A synthetic set to audit first (repeat it; all against the one reference given).")
@reference_options
@audit_options
@click.option("--out", type=click.Path(dir_okay=False), default="compare.html", show_default=True, help="HTML file to write.")
def compare(results, synthetic_sets, dataset, members, holdout, test, split_seed, data_root, download,
            profile, checks, seed, device, nn_index, features, out):
    """Compare generators in one HTML page: results (RESULT.json ...) and/or synthetic sets (--synthetic DIR ...).

    The results must share the reference data, split and feature extractor.
    """
    from dpaudit.audit.result import load_result
    from dpaudit.reports.html import write_comparison

    if not synthetic_sets and (dataset or members or holdout or test):
        raise DpauditError("--dataset, --members, --holdout and --test name the reference of --synthetic sets; give --synthetic DIR too.")
    from dpaudit.files import check_writable_folder

    if len(results) + len(synthetic_sets) < 2:
        raise DpauditError("compare needs at least two results (RESULT.json files and/or --synthetic DIR).")
    check_writable_folder(Path(out).parent)
    loaded = [load_result(path) for path in results]
    sources = [str(path) for path in results]
    reference_args = dict(dataset=dataset, members=members, holdout=holdout, test=test,
                          split_seed=split_seed, data_root=data_root, download=download)
    # Every set is read and checked before the first audit starts.
    inputs = [read_audit_inputs(path, reference_args) for path in synthetic_sets]
    for path, audit_inputs in zip(synthetic_sets, inputs):
        loaded.append(run_audit(audit_inputs, profile, checks, seed, device, features, nn_index))
        sources.append(str(path))
    if len(loaded) < 2:
        raise DpauditError("compare needs at least two results (RESULT.json files and/or --synthetic DIR).")
    click.echo(f"wrote {write_comparison(loaded, out, sources=sources)}")


@cli.command()
@click.argument("method")
@click.option("--dataset", help="Built-in dataset whose members to train on (see `dpaudit datasets`).")
@click.option("--members", type=click.Path(exists=True), help="Your own labelled member images to train on.")
@click.option("--split-seed", type=SEED, default=0, show_default=True, help="Seed of the built-in member split.")
@click.option("--epsilon", type=float, required=True, help="Privacy budget epsilon (inf: no privacy).")
@click.option("--delta", type=float, default=DEFAULT_DELTA, show_default=True, help="Privacy budget delta.")
@click.option("--num", "-n", type=click.IntRange(min=1), required=True, help="Number of images to generate (-n under torchrun, whose parser takes --num for its --numa-binding).")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder to write.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Change a hyper-parameter (repeatable).")
@click.option("--labels", type=click.Choice(["balanced", "proportional"]), default="balanced", show_default=True,
              help="Class labels of the samples: balanced, or proportional to the DP-released class counts.")
@click.option("--format", "fmt", type=click.Choice(["png", "npz"]), default="png", show_default=True)
@click.option("--seed", type=GENERATOR_SEED, help="Seed of the generator's randomness, DP noise included (default: a secret "
              "random seed; a private run's manifest never records it).")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False), help="Where to keep checkpoints (default: OUT/.checkpoint).")
@click.option("--save-generator", "save_path", type=click.Path(dir_okay=False),
              help="Also save the fitted generator to this new file, to sample again with `dpaudit sample`.")
@device_option
@data_root_option
@download_option
def generate(method, dataset, members, split_seed, epsilon, delta, num, out, overrides, labels, fmt, seed,
             checkpoint_dir, save_path, device, data_root, download):
    """Train the reference DP generator METHOD on private images and write NUM samples with
    manifest.json (the accountant's epsilon, sigma, sampling rate, steps, time). An interrupted
    run resumes from its checkpoint when started again with the same options."""
    from dpaudit import distributed
    from dpaudit.datasets import load_split
    from dpaudit.files import check_writable_folder
    from dpaudit.generators import (GENERATORS, TrainingRun, fit_with_checkpoints, get_generator, save_generator,
                                    secret_seed, write_samples)
    from dpaudit.images import ensure_empty_folder, load_images
    from dpaudit.privacy import PrivacyBudget

    cls = get_generator(method)
    if bool(dataset) == bool(members):
        raise DpauditError("give exactly one of --dataset NAME and --members DIR.")
    if save_path is not None:
        save_path = Path(save_path)
        if save_path.exists():
            raise DpauditError(f"{save_path}: already exists; choose another --save-generator file or delete it.")
        if distributed.is_main():
            check_writable_folder(save_path.parent)  # before the training, not after
    processes = distributed.init_from_environment(device)
    if processes > 1 and not cls.data_parallel:
        data_parallel = ", ".join(name for name, c in GENERATORS.items() if c.data_parallel)
        raise DpauditError(f"{method} does not train data-parallel; under torchrun use one of {data_parallel}.")
    out = Path(out)
    ensure_empty_folder(out, ignore={".checkpoint"})
    budget = PrivacyBudget(epsilon, delta)
    if dataset:
        private = load_split(dataset, split_seed, data_root=data_root, download=download)
        train_set, split = private.members, private.split_id
    else:
        train_set, split = load_images(members, name="members"), None
    checkpoint_dir = Path(checkpoint_dir or out / ".checkpoint")
    out_existed = out.exists()
    if seed is None:  # drawn by rank 0 alone under torchrun: every process must train with it
        seed = distributed.from_main(secret_seed(checkpoint_dir) if distributed.is_main() else None)
    try:
        generator = fit_with_checkpoints(cls, train_set, budget, seed, overrides=overrides,
                                         checkpoint_dir=checkpoint_dir, device=device, progress=distributed.is_main())
    except DpauditError:
        if not out_existed and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a refused run leaves no folder behind
        raise
    if not distributed.is_main():
        return  # rank 0 writes the samples and the manifest
    run = TrainingRun(budget, dataset or str(members), split, train_set.fingerprint(), seed)
    written = write_samples(generator, run, out, num=num, labels=labels, seed=seed, fmt=fmt)
    click.echo(f"wrote {num} {method} images to {written}; "
               f"epsilon {generator.privacy_report()['epsilon']:.4g} at delta {delta:g}")
    if save_path is not None:
        click.echo(f"saved the fitted generator to {save_generator(generator, run, save_path)}")


@cli.command()
@click.argument("saved", type=click.Path(dir_okay=False))
@click.option("--num", "-n", type=click.IntRange(min=1), required=True, help="Number of images to generate.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder to write.")
@click.option("--labels", type=click.Choice(["balanced", "proportional"]), default="balanced", show_default=True,
              help="Class labels of the samples: balanced, or proportional to the DP-released class counts.")
@click.option("--format", "fmt", type=click.Choice(["png", "npz"]), default="png", show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True,
              help="Seed of the sampling (not of the training; recorded in the manifest).")
@device_option
def sample(saved, num, out, labels, fmt, seed, device):
    """Write NUM new samples of a generator saved by `dpaudit generate --save-generator SAVED`,
    with a manifest.json stating the privacy report of the run that trained it. No training: the
    samples are post-processing of that run's release and spend no further privacy."""
    from dpaudit.generators import load_generator, write_samples
    from dpaudit.images import ensure_empty_folder

    generator, run = load_generator(saved, device=device)
    out = Path(out)
    ensure_empty_folder(out)
    written = write_samples(generator, run, out, num=num, labels=labels, seed=seed, fmt=fmt, sampling_seed=seed,
                            saved_generator=str(saved))
    click.echo(f"wrote {num} {generator.name} images to {written}; "
               f"epsilon {generator.privacy_report()['epsilon']:.4g} at delta {run.budget.delta:g}")


@cli.command("audit-training")
@click.option("--generator", "generator_name", help="Train dpaudit's reference generator NAME (see `dpaudit generate`).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="A hyper-parameter of --generator (repeatable).")
@click.option("--command", "command_template", metavar="'TEMPLATE'",
              help="Train with your own script, e.g. 'python train.py --data {members} --out {out} --epsilon {epsilon} "
              "--delta {delta} --seed {seed} --num {num}'; it writes PNGs or one .npz (and manifest.json) to {out}.")
@click.option("--data-format", type=click.Choice(["png", "npz"]), default="png", show_default=True,
              help="How --command gets its training data: PNGs with labels.csv, or one .npz (x, y).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=3600, show_default=True,
              help="Seconds one run of --command may take.")
@reference_options
@click.option("--epsilon", type=click.FloatRange(min=0, min_open=True), required=True, help="The claimed epsilon under test.")
@click.option("--delta", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=DEFAULT_DELTA,
              show_default=True, help="The claimed delta.")
@click.option("--profile", type=ProfileName(), default="quick", show_default=True,
              help="Canaries per run: quick 200, standard 1000, paper 2000.")
@click.option("--canaries", type=click.IntRange(min=2), help="Canaries per run (default: the profile's).")
@click.option("--kind", type=click.Choice(["mislabeled", "stamped", "ood", "clean"]), help="Canary kind (default: the profile's, mislabeled).")
@click.option("--train-members", type=click.IntRange(min=1), help="Members trained beside the canaries (default: all).")
@click.option("--samples", type=click.IntRange(min=1), help="Images released per run (default: as many as it trained on).")
@click.option("--runs", type=click.IntRange(min=1), default=1, show_default=True, help="Independent training runs pooled into one bound.")
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Run the runs one after another, or as Ray tasks (pip install 'dpaudit[ray]').")
@click.option("--ray-address", help="An existing Ray cluster (default: start a local one for the job).")
@click.option("--cpus-per-run", type=click.FloatRange(min=0, min_open=True), default=1, show_default=True,
              help="CPUs each Ray task asks for.")
@click.option("--seed", type=SEED, help="Seed of the canaries, coins and training runs (default: a secret random one, "
              "recorded in the result afterwards).")
@click.option("--no-features", is_flag=True, help="Score in pixel space only (no LeNet feature rule).")
@device_option
@click.option("--out", type=click.Path(file_okay=False), default="dpaudit-training-audit", show_default=True,
              help="Folder for result.json, report.html and the runs' logs.")
@click.option("--no-report", is_flag=True, help="Write result.json only.")
def audit_training_command(generator_name, overrides, command_template, data_format, timeout_s, dataset, members,
                           holdout, test, split_seed, data_root, download, epsilon, delta, profile, canaries, kind,
                           train_members, samples, runs, backend, ray_address, cpus_per_run, seed, no_features, device,
                           out, no_report):
    """Test a privacy claim: train with canaries included by coin flips, score the release per canary,
    and prove (or fail to prove) that the claimed epsilon is false.

    The verdict is refuted (a lower bound above the claim), consistent, or inconclusive (too few
    canaries for any attack to refute the claim; it says how many would do).
    """
    import dataclasses
    import secrets

    from dpaudit.audit.features import load_extractor
    from dpaudit.audit.profiles import get_profile
    from dpaudit.audit.trainers import CommandTrainer, GeneratorTrainer
    from dpaudit.audit.training_audit import audit_training
    from dpaudit.files import check_writable_folder
    from dpaudit.privacy import PrivacyBudget
    from dpaudit.reports.folder import write_audit

    if bool(generator_name) == bool(command_template):
        raise DpauditError("give exactly one of --generator NAME and --command 'TEMPLATE'.")
    if overrides and not generator_name:
        raise DpauditError("--set changes a hyper-parameter of --generator; --command takes its options in the template.")
    trainer = (GeneratorTrainer(generator_name, tuple(overrides), device) if generator_name
               else CommandTrainer(command_template, data_format, timeout_s))
    trainer.check()
    chosen = get_profile(profile)
    changes = {k: v for k, v in dict(canaries=canaries, kind=kind, members=train_members, samples=samples,
                                      features=False if no_features else None).items() if v is not None}
    config = dataclasses.replace(chosen.training_audit, **changes)
    out = Path(out)
    check_writable_folder(out)
    reference = load_reference(dataset, members, holdout, test, split_seed, None, data_root, download)
    seed = secrets.randbits(31) if seed is None else seed
    embed = load_extractor(reference, None, device) if config.features else None
    result = audit_training(
        trainer, reference, PrivacyBudget(epsilon, delta), config=config, runs=runs, seed=seed, backend=backend,
        ray_address=ray_address, cpus_per_run=cpus_per_run, embed=embed, profile=chosen.name,
        settings=dataclasses.asdict(config), dataset=dataset, log_dir=out / "runs",
    )
    for path in write_audit(result, out, report=not no_report):
        click.echo(f"wrote {path}")
    check = result.checks["training_audit"]
    click.echo(f"verdict: {check.details['verdict']} (epsilon >= {check.metrics['epsilon_lower_bound'].value:.3g} proven, "
               f"ceiling {check.metrics['ceiling'].value:.3g}, claim {epsilon:g}, {check.metrics['ceiling'].n['canaries']} canaries)")
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)


@cli.command()
@click.option("--out", type=click.Path(file_okay=False), default="dpaudit-demo", show_default=True,
              help="Folder for the synthetic set, result.json and report.html.")
@click.option("--method", default="dp-merf", show_default=True, help="The generator to train (see `dpaudit generate`).")
@click.option("--epsilon", type=float, default=10.0, show_default=True)
@click.option("--delta", type=float, default=DEFAULT_DELTA, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
def demo(out, method, epsilon, delta, seed):
    """The whole job on the embedded digits set: train a DP generator on the digits members,
    audit its samples against digits (quick profile), and write the HTML report."""
    from dpaudit.audit.pipeline import evaluate
    from dpaudit.datasets import load_split
    from dpaudit.generators import TrainingRun, get_generator, write_samples
    from dpaudit.images import ensure_empty_folder, load_images
    from dpaudit.manifest import read_manifest
    from dpaudit.privacy import PrivacyBudget
    from dpaudit.reports.folder import write_audit

    out = Path(out)
    ensure_empty_folder(out)
    reference = load_split("digits", seed)
    budget = PrivacyBudget(epsilon, delta)
    click.echo(f"1/3 training {method} on {len(reference.members)} digits members at epsilon {epsilon:g}")
    generator = get_generator(method).from_options(progress=True).fit(reference.members, budget, seed)
    synthetic_dir = out / "synthetic"
    run = TrainingRun(budget, "digits", reference.split_id, reference.members.fingerprint(), seed)
    write_samples(generator, run, synthetic_dir, num=len(reference.members), seed=seed)
    click.echo(f"2/3 auditing {len(reference.members)} samples in {synthetic_dir}")
    synthetic = load_images(synthetic_dir, name=f"{method}-digits", num_classes=reference.members.num_classes)
    result = evaluate(synthetic, reference, profile="quick", seed=seed, manifest=read_manifest(synthetic_dir))
    _, report = write_audit(result, out)
    click.echo(f"3/3 wrote {report}")
    echo_scorecard(result)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="dpaudit")

