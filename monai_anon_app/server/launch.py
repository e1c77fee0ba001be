"""Starting the MONAI Label server with this app (see ``docs/serving.md``).

It prepares the per-user working folder (:mod:`monai_anon_app.server.workspace`), checks the hosting
set-up — a non-loopback address needs token auth (``--auth-realm``) or an explicit
``--behind-auth-proxy`` — and then replaces itself with
``python -m monailabel.main start_server --app <workdir>/app --studies … --uvicorn_app
monai_anon_app.server.rest:app --conf …``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from monai_anon_app.network import is_loopback
from monai_anon_app.server.workspace import default_workdir, prepare_app_dir, prepare_sample_study

__all__ = ["ASGI_APP", "URL_VARIABLE", "build_command", "is_loopback", "launch"]

ASGI_APP = "monai_anon_app.server.rest:app"
URL_VARIABLE = "MONAI_ANON_URL"  # tells the app the address it serves, for its "ready" log line


def check_hosting(args: argparse.Namespace) -> None:
    """Refuse set-ups that would expose the server without authentication (one-sentence reasons;
    ``ValueError``, which the command line reports as one line with exit code 2)."""
    if not is_loopback(args.host) and not args.auth_realm and not args.behind_auth_proxy:
        raise ValueError(f"refusing to listen on {args.host} without authentication: pass --auth-realm URL "
                           "(token auth) or --behind-auth-proxy (an authenticating reverse proxy stands in front), "
                           "or listen on 127.0.0.1")
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise ValueError("TLS needs both --ssl-certfile and --ssl-keyfile")
    for f in (args.ssl_certfile, args.ssl_keyfile, args.ssl_ca_certs):
        if f is not None and not f.is_file():
            raise ValueError(f"{f} does not exist")
    if args.auth_realm and not args.auth_realm.startswith(("http://", "https://")):
        raise ValueError("--auth-realm must be an http(s) URL of the OpenID realm")


def url(args: argparse.Namespace) -> str:
    """The address the server will answer at."""
    host = f"[{args.host}]" if ":" in args.host else args.host
    return f"{'https' if args.ssl_certfile else 'http'}://{host}:{args.port}{args.root_path}"


def build_command(args: argparse.Namespace, app_dir: Path, studies: str, workdir: Path) -> tuple[list[str], dict]:
    """The server command line and the environment variables it needs."""
    conf = dict(args.conf)
    if args.model:
        conf["model"] = str(Path(args.model).resolve()) if Path(args.model).exists() else args.model
    if args.workers is not None:
        conf["infer_workers"] = str(args.workers)
    if args.threads is not None:
        conf["infer_threads"] = str(args.threads)
    conf.setdefault("tmp_dir", str(workdir / "tmp"))
    conf.setdefault("use_pretrained_model", "false")
    cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app_dir), "--studies", studies,
           "--host", args.host, "--port", str(args.port), "--uvicorn_app", ASGI_APP, "--log_level", args.log_level]
    if args.root_path:
        cmd += ["--root_path", args.root_path]
    for flag, value in (("--ssl_certfile", args.ssl_certfile), ("--ssl_keyfile", args.ssl_keyfile),
                        ("--ssl_ca_certs", args.ssl_ca_certs)):
        if value is not None:
            cmd += [flag, str(Path(value).resolve())]
    for key, value in conf.items():
        cmd += ["--conf", key, value]
    env = {
        "MONAI_LABEL_SESSION_PATH": str(workdir / "sessions"),
        "MONAI_LABEL_DATASTORE_CACHE_PATH": str(workdir / "dicomweb-cache"),
        "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",
        "MONAI_LABEL_AUTH_ENABLE": "true" if args.auth_realm else "false",
        URL_VARIABLE: url(args),
    }
    if args.auth_realm:
        env["MONAI_LABEL_AUTH_REALM_URI"] = args.auth_realm.rstrip("/")
        env["MONAI_LABEL_AUTH_CLIENT_ID"] = args.auth_client_id
    return cmd, env


def launch(args: argparse.Namespace) -> int:
    """Prepare the working folder and replace this process with the server (``monai-anon serve``'s
    arguments; ``--dry-run`` prints the command instead)."""
    check_hosting(args)
    workdir = (args.workdir or default_workdir()).expanduser().resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    app_dir = prepare_app_dir(workdir)
    if args.studies:
        studies = args.studies.rstrip("/") if args.studies.startswith(("http://", "https://")) else \
            str(Path(args.studies).expanduser().resolve())
        if not studies.startswith("http") and not Path(studies).is_dir():
            raise ValueError(f"--studies {args.studies} is not a folder or an http(s) DICOMweb URL")
    else:
        studies = str(prepare_sample_study(workdir))
    cmd, env = build_command(args, app_dir, studies, workdir)
    print(f"monai-anon serve: {url(args)} (studies: {studies}; working folder: {workdir}); loading the model, "
          "then the log says when it is ready", flush=True)
    if args.dry_run:
        print(" ".join(f"{k}={v}" for k, v in env.items()), " ".join(cmd))
        return 0
    os.chdir(workdir)  # MONAI Label reads a .env file from the current folder: never a stranger's
    os.execve(sys.executable, cmd, {**os.environ, **env})
    return 0  # not reached
