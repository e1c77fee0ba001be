"""The ``monai-anon`` argument parsers: every sub-command's options, declared without importing the code
that runs them (``monai-anon --help`` and ``deid`` stay quick: no torch).

Each sub-command names its handler module (``handler``); :func:`monai_anon_app.cli.main` imports it only
when that command runs and calls its ``run(args)``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from monai_anon_app import __version__
from monai_anon_app.defaults import ANONYMIZE_MODE, CANDIDATES, COUNTERFACTUAL_MODE, MODE_HELP, MODES
from monai_anon_app.dicom.options import OPTIONS

__all__ = ["ANONYMIZE_DESCRIPTION", "add_deid_arguments", "add_scale_arguments", "build_parser"]

ANONYMIZE_DESCRIPTION = (
    "OUTPUT holds the same images in the same formats, named from new identifiers, never from the input path "
    "(DICOM by new Study/Series/SOP UIDs, other formats by a keyed pseudonym) unless --keep-names. Pixels go "
    "through the model; DICOM headers through the PS3.15 de-identifier, with markers that say what was done to "
    "the pixels. A file the model cannot take is refused with a reason (never passed through with its original "
    "pixels) unless --headers-only; files that are not images are skipped and never copied. The summary counts "
    "done / refused / failed / skipped; the exit code is 0 only when every image asked for was done.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="monai-anon", description="The monai-anon command: one sub-command per job.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_phantoms, _train, _evaluate, _anonymize, _deid, _serve):
        add(sub)
    return parser


def add_deid_arguments(parser: argparse.ArgumentParser) -> None:
    """The PS3.15 option flags (one per :data:`~monai_anon_app.dicom.options.OPTIONS` entry),
    ``--key``/``--key-file``, ``--mapping-file`` and ``--keep-names``."""
    group = parser.add_argument_group("de-identification options (DICOM PS3.15 Annex E)")
    for name, option in OPTIONS.items():
        group.add_argument(f"--{name.replace('_', '-')}", action="store_true", help=option.help)
    keys = group.add_mutually_exclusive_group()
    keys.add_argument("--key", metavar="TEXT",
                      help="secret for UIDs, pseudonyms and date offsets: same key, same output in every batch")
    keys.add_argument("--key-file", metavar="FILE", type=Path,
                      help="read the secret from FILE (created with a random key if missing); keep it private")
    group.add_argument("--mapping-file", metavar="CSV", type=Path,
                       help="append original→new identifiers and input→output paths to CSV (the only output "
                            "that links back; nothing is written without this)")
    group.add_argument("--keep-names", action="store_true",
                       help="name outputs as the inputs are named (default: DICOM by new Study/Series/SOP UIDs, "
                            "other formats by a keyed pseudonym); input names may carry identifiers")


def add_scale_arguments(parser: argparse.ArgumentParser) -> None:
    """``--workers N`` (an embedded local Dask cluster) or ``--scheduler ADDRESS`` (an existing one)."""
    group = parser.add_argument_group("scale-out on Dask (default: one process)")
    where = group.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, metavar="N",
                       help="run on N worker processes of a local Dask cluster (bound to 127.0.0.1); an interrupted "
                            "run started again with the same arguments, --key-file and --seed skips what is done")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run on an existing Dask cluster (tcp://HOST:PORT); its workers must see INPUT and "
                            "OUTPUT at the same paths")
    group.add_argument("--chunk-size", type=int, metavar="K",
                       help="files per Dask task (default: about four tasks per worker, at most 64 files each)")


def _phantoms(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("phantoms", help="write a phantom cohort (PNG, NIfTI or DICOM) with labels.csv",
                       description="Write a deterministic chest-radiograph-like phantom cohort and labels.csv "
                                   "(file,patient_id,finding,…).")
    p.add_argument("out", help="output folder")
    p.add_argument("--patients", type=int, default=20)
    p.add_argument("--images-per-patient", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="cohort seed; different seeds share no patients")
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--format", choices=("png", "nifti", "dicom"), default="png")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler="phantoms")


def _train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the disentanglement model and identity generator",
                       description="Train a model folder. Re-running with the same OUT resumes from its "
                                   "checkpoint. Options given here override the config file.")
    p.add_argument("out", help="model folder to write (e.g. models/my-model)")
    p.add_argument("--config", help="YAML training config (defaults apply to keys it omits)")
    p.add_argument("--data", help="folder with labels.csv (file,patient_id,finding); default: phantoms")
    p.add_argument("--steps", type=int, help="disentangler training steps")
    p.add_argument("--seed", type=int)
    p.add_argument("--image-size", type=int, help="model image side (power of two, 64 and up)")
    p.add_argument("--no-masks", action="store_true",
                   help="ignore the data's finding masks (labels.csv column `mask`; phantoms have them): train on "
                        "sparsity and classification only, as for images without masks")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="train on N processes with torch DDP (torchrun; one GPU each with NCCL when CUDA is "
                        "available, else gloo on the CPU): each step's patients are split between them, the "
                        "batch stays the config's; resume with the same N (docs/scaling.md)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler="train")


def _evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="judge a model with independent attackers and a utility judge",
                       description="Evaluate a model folder on a held-out phantom cohort with judges trained on "
                                   "original images only; writes metrics.json, report.md and examples.png.")
    p.add_argument("model", help="model folder or name under models/")
    p.add_argument("out", help="output folder (judges are cached in OUT/judges)")
    p.add_argument("--config", help="YAML evaluation config (cohort sizes, judge steps)")
    p.add_argument("--copy-metrics", action="store_true", help="also copy metrics.json into the model folder")
    p.add_argument("--update-card", action="store_true",
                   help="copy metrics.json into the model folder and regenerate the model card's metrics table")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler="evaluate")


def _mode_help(default: str) -> str:
    return "; ".join(f"{m}: {MODE_HELP[m]}" + (" (default)" if m == default else "") for m in MODES)


def _anonymize(sub: argparse._SubParsersAction) -> None:
    for name in ("anonymize", "counterfactual"):
        anonymize = name == "anonymize"
        p = sub.add_parser(
            name, help="anonymize images (identity replaced)" if anonymize else "make counterfactual images",
            description=ANONYMIZE_DESCRIPTION)
        p.add_argument("paths", nargs="+", metavar="INPUT OUTPUT",
                       help="input file or folder, then output file or folder"
                            + (" (with --sample: only OUTPUT)" if anonymize else ""))
        p.add_argument("--model", help="model folder or name under models/ (default: the shipped model)")
        if anonymize:
            p.add_argument("--seed", type=int, help="seed of the synthetic identities (default: random, printed)")
            p.add_argument("--candidates", type=int, default=CANDIDATES, help="synthetic identities drawn per image")
            p.add_argument("--mode", choices=MODES, default=ANONYMIZE_MODE, help=_mode_help(ANONYMIZE_MODE))
            p.add_argument("--headers-only", action="store_true",
                           help="DICOM: de-identify headers and keep the pixels (never claimed clean)")
            p.add_argument("--sample", action="store_true", help="use the bundled sample study as INPUT")
        else:
            p.add_argument("--target", required=True, help="class of the counterfactual (e.g. nodule)")
            p.add_argument("--mode", choices=MODES, default=COUNTERFACTUAL_MODE,
                           help=_mode_help(COUNTERFACTUAL_MODE))
        p.add_argument("--no-progress", action="store_true")
        add_deid_arguments(p)
        add_scale_arguments(p)
        p.set_defaults(handler="anonymize")


def _deid(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "deid", help="de-identify DICOM headers (PS3.15 Basic Profile), file or folder",
        description="De-identify the headers of any DICOM object (images, SR, RT, SEG ...) with the PS3.15 "
                    "Basic Application Level Confidentiality Profile. Pixels are kept as they are and never "
                    "claimed clean. Outputs are named <StudyUID>/<SeriesUID>/<SOPUID>.dcm by their new UIDs, "
                    "never from the input path (unless --keep-names); files that are not DICOM are skipped and "
                    "never copied. Without --key or --key-file a random key is used, so UIDs and pseudonyms are "
                    "consistent within this run only. Exit code 0 only when every DICOM file was de-identified.")
    p.add_argument("input", type=Path, help="DICOM file or folder")
    p.add_argument("output", type=Path, help="output file or folder")
    add_deid_arguments(p)
    add_scale_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.set_defaults(handler="deid")


def _serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="start the MONAI Label server (REST API for 3D Slicer and other clients)",
        description="Serve anonymization, counterfactuals, case explanations, DICOM export and training over "
                    "MONAI Label's REST API. Binds to 127.0.0.1 unless told otherwise; any other address needs "
                    "--auth-realm (OpenID token auth) or --behind-auth-proxy.")
    p.add_argument("--studies", help="study folder (DICOM/NIfTI/PNG images, optional labels.csv) or a DICOMweb "
                                     "URL; default: a copy of the bundled sample study")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model", help="model folder or name under models/ (default: the shipped default model)")
    p.add_argument("--workdir", type=Path, help="working folder for logs, sessions, published weights and the "
                                                "sample study (default $MONAI_ANON_HOME or "
                                                "~/.local/share/monai-anon/serve)")
    p.add_argument("--workers", type=int, help="inference worker processes (default: min(2, CPUs))")
    p.add_argument("--threads", type=int, help="torch threads per inference worker (default: CPUs / workers)")
    auth = p.add_argument_group("hosting for an institution")
    auth.add_argument("--auth-realm", metavar="URL",
                      help="enable token auth against this OpenID realm/issuer (e.g. a Keycloak realm URL)")
    auth.add_argument("--auth-client-id", default="monailabel-app", help="OpenID client id (default monailabel-app)")
    auth.add_argument("--behind-auth-proxy", action="store_true",
                      help="an authenticating reverse proxy stands in front: allow a non-loopback bind without "
                           "token auth")
    auth.add_argument("--root-path", default="", help="URL prefix under which a reverse proxy exposes the server")
    auth.add_argument("--ssl-certfile", type=Path, help="TLS certificate (PEM); serve HTTPS")
    auth.add_argument("--ssl-keyfile", type=Path, help="TLS private key (PEM)")
    auth.add_argument("--ssl-ca-certs", type=Path, help="CA bundle for client certificates")
    p.add_argument("--conf", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                   help="extra app setting (see monai_anon_app/server/settings.py), repeatable")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument("--dry-run", action="store_true", help="prepare the working folder, print the command, exit")
    p.set_defaults(handler="serve")
