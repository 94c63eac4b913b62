"""``diffusers-smd publish``: upload a trained pipeline folder to the Hub with a model card (:mod:`diffusers_smd.hub`)."""

from __future__ import annotations

import argparse
import sys

#: The first release's kebab-case spellings, still accepted (hidden from --help) for one more release.
_OLD_SPELLINGS = (
    ("--repo-id", "repo_id", "store"),
    ("--commit-message", "commit_message", "store"),
    ("--dry-run", "dry_run_dir", "store"),
    ("--ignore-pattern", "ignore_pattern", "append"),
    ("--overwrite-card", "overwrite_card", "store_true"),
)


def add_parser(commands) -> None:
    from ..hub import DEFAULT_IGNORE_PATTERNS

    parser = commands.add_parser(
        "publish",
        help="Upload a trained pipeline folder to the Hugging Face Hub with a model card.",
        description=(
            "Upload a saved SMD / E-TSDM pipeline folder to the Hugging Face Hub, with a model card written "
            "from the run's summary and the loading shims that make "
            "DiffusionPipeline.from_pretrained(repo, trust_remote_code=True) work. Log in first with "
            "`hf auth login` or set HF_TOKEN."
        ),
    )
    parser.add_argument(
        "folder", help="The saved pipeline folder (written by train_smd.py or save_pretrained)."
    )
    parser.add_argument(
        "--repo_id",
        help="Required: the target Hub repo as NAMESPACE/NAME, e.g. your-username/smd-digits. Created if it does not exist.",
    )
    parser.add_argument(
        "--private",
        action="store_true",
        help="Create the repo as private. Only applies when the repo is created; an existing repo keeps its "
        "visibility.",
    )
    parser.add_argument(
        "--commit_message",
        default=None,
        help="Message of the Hub commit (default: 'Upload <pipeline class> with diffusers-smd').",
    )
    parser.add_argument(
        "--dry_run_dir",
        metavar="DIR",
        default=None,
        help="Upload nothing; write the exact folder that would be uploaded (files, README.md card, shims) "
        "to DIR for inspection. DIR must not exist or be empty.",
    )
    parser.add_argument(
        "--ignore_pattern",
        action="append",
        default=[],
        metavar="PATTERN",
        help="Extra fnmatch pattern of folder-relative paths to leave out (repeatable), added to the defaults: "
        + ", ".join(DEFAULT_IGNORE_PATTERNS),
    )
    parser.add_argument(
        "--license",
        default="apache-2.0",
        help="License identifier written in the card metadata. Choose one your data allows.",
    )
    parser.add_argument(
        "--overwrite_card",
        action="store_true",
        help="Replace a README.md already present in the folder with the generated model card "
        "(by default a README.md you wrote yourself is uploaded as is).",
    )
    parser.add_argument(
        "--token",
        default=None,
        help="Hugging Face access token with write access. Discouraged: it can end up in your shell history. "
        "Prefer `hf auth login` or the HF_TOKEN environment variable, which are used when this is omitted.",
    )
    for spelling, dest, action in _OLD_SPELLINGS:
        parser.add_argument(spelling, dest=dest, action=action, help=argparse.SUPPRESS)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..hub import DEFAULT_IGNORE_PATTERNS, PublishError, publish
    from .common import CLIError

    if args.repo_id is None:
        raise CLIError("--repo_id is required: the Hub repo as NAMESPACE/NAME, e.g. your-username/smd-digits")

    try:
        result = publish(
            args.folder,
            args.repo_id,
            private=args.private,
            commit_message=args.commit_message,
            token=args.token,
            dry_run_dir=args.dry_run_dir,
            ignore_patterns=(*DEFAULT_IGNORE_PATTERNS, *(args.ignore_pattern or [])),
            license=args.license,
            overwrite_card=args.overwrite_card,
        )
    except PublishError as error:
        print(f"diffusers-smd publish: error: {error}", file=sys.stderr)
        return 1
    if result.dry_run_dir is not None:
        print(
            f"Dry run: nothing uploaded. The {len(result.files)} files that would be uploaded are in "
            f"{result.dry_run_dir}:"
        )
    else:
        print(f"Published {len(result.files)} files to {result.repo_url} ({result.commit_url}):")
    for name in result.files:
        print(f"  {name}")
    return 0
