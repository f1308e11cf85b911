"""The `imgedit` command line: parse options, call one module, map errors to exit codes.

Exit codes (the contract): 0 all done, 1 some tasks failed, 2 bad manifest,
config or usage (nothing sent), 3 aborted (bad key, no quota, no such model),
75 another run holds the lock, 130/143 interrupted.

Start-up is part of the interface (`imgedit --help` in well under 0.25 s): this
module imports only click and the error classes at the top. Adding a command:
declare it here with `@main.command()` and its click options (cheap), and import
the module that does the work inside the command's function, as every command
below does — never at the top of this file, or every command (and `--help`) pays
for that module's imports (aiohttp, Pillow, rich, the simulator...).
`tests/test_cli_startup.py` fails when a heavy module is imported by `--help`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
from click.core import ParameterSource

from pipeline.errors import ImgeditError, InputError

MANIFEST = click.Path(exists=False, dir_okay=False, path_type=Path)
# The shipped config/defaults.yaml, said in --help (tests/test_cli.py keeps them equal).
SHIPPED = {"concurrency": 4, "rate": "30/min", "retries": 5, "timeout": 300, "grace": 30}


def _config_option(f: Any) -> Any:
    return click.option("--config", envvar="IMGEDIT_CONFIG", metavar="PATH",
                        help="Folder (or providers.yaml inside it) with your own providers, "
                             "models and defaults. [env: IMGEDIT_CONFIG]")(f)


def _ledger_option(f: Any) -> Any:
    return click.option("--ledger", type=click.Path(dir_okay=False, path_type=Path),
                        metavar="PATH", help="The ledger file. [default: <manifest stem>"
                        ".ledger.sqlite beside the manifest]")(f)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True,
                               "max_content_width": 100})
@click.version_option(package_name="imgedit")
def main() -> None:
    """Batch image edits through an OpenAI-compatible gateway, keeping every result.

    Write a manifest (see jobs/demo.yaml), check it with `imgedit validate`,
    run it with `imgedit run`; run again to pick up only what changed or failed.
    """


def _where_options(f: Any) -> Any:
    """--provider and --base-url: where requests go (run and validate)."""
    f = click.option("--base-url", metavar="URL",
                     help="Send here, whatever the provider says. Beats IMGEDIT_BASE_URL.")(f)
    return click.option("--provider", metavar="NAME", help="A provider from providers.yaml. "
                        "[default: the manifest's provider, else wenwen]")(f)


@main.command(short_help="Run what is new, changed or failed.")
@click.argument("manifest", type=MANIFEST)
@_config_option
@click.option("--concurrency", type=click.IntRange(1, 512),
              help=f"Requests in flight at most. [default: {SHIPPED['concurrency']}]")
@click.option("--rate", metavar="R", help="Requests per time, like 30/min or 2/s; `unlimited` "
              f"for none. [default: {SHIPPED['rate']}]")
@click.option("--retries", type=click.IntRange(0, 100),
              help=f"Further attempts per task. [default: {SHIPPED['retries']}]")
@click.option("--timeout", type=click.FloatRange(min=0.1), metavar="SECONDS",
              help=f"Per request: edits can take minutes. [default: {SHIPPED['timeout']}]")
@_where_options
@_ledger_option
@click.option("--limit", type=click.IntRange(min=0), metavar="N",
              help="Send only the first N runnable tasks.")
@click.option("--only", multiple=True, metavar="ID", help="Only this task id (repeatable).")
@click.option("--retry-failed", is_flag=True, help="Also re-attempt terminal failures.")
@click.option("--only-failed", is_flag=True,
              help="Only tasks whose last outcome was a failure (or unknown).")
@click.option("--redo-rejected", is_flag=True,
              help="Only tasks whose result a reviewer rejected (`imgedit review`); the "
                   "rejected files are kept beside as NAME.rejected-N.EXT.")
@click.option("--prompt-suffix", metavar="TEXT",
              help="With --redo-rejected: words added to the prompt for that send.")
@click.option("--force", is_flag=True, help="Send even tasks that are done.")
@click.option("--batch", is_flag=True, default=None,
              help="Send through the provider's Batch API at half price; answers come later.")
@click.option("--wait", is_flag=True, help="Poll until every provider batch has ended.")
@click.option("--dry-run", is_flag=True, help="Validate and print the plan; send nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("--max-cost", type=click.FloatRange(min=0), metavar="AMOUNT",
              help="Refuse to start above this estimate; stop launching once spent.")
@click.option("--no-retry-unknown", is_flag=True,
              help="Hold tasks whose request may have been billed, instead of re-sending.")
@click.option("--grace", type=click.FloatRange(min=0), metavar="SECONDS",
              help="After Ctrl-C/SIGTERM, how long in-flight requests may finish. "
                   f"[default: {SHIPPED['grace']}]")
@click.option("--quiet", "-q", is_flag=True,
              help="Print nothing when every task succeeded or was done; else the summary, "
                   "on stderr.")
@click.option("-v", "--verbose", count=True, help="Log each task (-v) or everything (-vv).")
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also log to this file (info and up).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="json: one object per line, for log collectors.")
def run(manifest: Path, config: str | None, provider: str | None, base_url: str | None,
        ledger: Path | None, limit: int | None, only: tuple[str, ...], retry_failed: bool,
        only_failed: bool, redo_rejected: bool, prompt_suffix: str | None, force: bool,
        wait: bool, dry_run: bool, as_json: bool,
        no_retry_unknown: bool, quiet: bool, verbose: int, log_file: Path | None,
        log_format: str, **flags: Any) -> None:
    """Run every task of MANIFEST that has not yet succeeded for its current inputs.

    Exit codes: 0 all done, 1 some failed, 2 bad input (nothing sent), 3 aborted
    (bad key, no quota), 75 another run holds the lock, 130/143 interrupted.
    """
    if prompt_suffix is not None and not redo_rejected:
        raise click.UsageError("--prompt-suffix goes with --redo-rejected")
    from pipeline.ledger.plan import Selection
    from pipeline.run import runner
    from pipeline.views import logs

    logs.configure(verbose=verbose, log_file=log_file, fmt=log_format, secrets=_secrets())
    selection = Selection(only=frozenset(only), only_failed=only_failed,
                          retry_failed=retry_failed or only_failed, force=force,
                          retry_unknown=not no_retry_unknown, limit=limit,
                          redo_rejected=redo_rejected)
    if no_retry_unknown:
        flags["retry_unknown"] = False
    options = runner.RunOptions(manifest=manifest, config=config, provider=provider,
                                base_url=base_url, ledger=ledger, flags=flags,
                                selection=selection, dry_run=dry_run, json=as_json, quiet=quiet,
                                prompt_suffix=prompt_suffix, wait=wait)
    sys.exit(_guard(lambda: runner.run(options, click.echo), as_json))


@main.command(short_help="Check a manifest and print the plan; send nothing.")
@click.argument("manifest", type=MANIFEST)
@_config_option
@_where_options
@_ledger_option
@click.option("--json", "as_json", is_flag=True,
              help="Print the plan, or every problem, as JSON on stdout.")
def validate(manifest: Path, config: str | None, provider: str | None, base_url: str | None,
             ledger: Path | None, as_json: bool) -> None:
    """Check MANIFEST (schema, files, model limits, outputs) and print the plan and its
    estimated cost. Sends nothing, writes nothing. Exit 0 when it would run, 2 when not."""
    from pipeline.run import runner

    options = runner.RunOptions(manifest=manifest, config=config, provider=provider,
                                base_url=base_url, ledger=ledger, dry_run=True, json=as_json)
    sys.exit(_guard(lambda: runner.run(options, click.echo), as_json))


@main.command(short_help="Counts by state, and every failure with its reason.")
@click.argument("manifest", type=MANIFEST)
@_config_option
@_ledger_option
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option("--base-url", metavar="URL", help="The gateway its batches are collected from.")
def status(manifest: Path, config: str | None, ledger: Path | None, as_json: bool,
           base_url: str | None) -> None:
    """Counts by state (tasks never run count as pending), batches in flight, money spent (or
    simulated), and each failed task with its reason and attempts."""
    from pipeline.run.runner import RunOptions
    from pipeline.run.statusbatches import collect_batches
    from pipeline.views import status as ledger_status

    def show() -> int:
        collect_batches(RunOptions(manifest=manifest, config=config, ledger=ledger,
                                   base_url=base_url, quiet=as_json))
        report = ledger_status.status(manifest, ledger, config)
        click.echo(json.dumps(report, ensure_ascii=False, indent=2) if as_json
                   else ledger_status.status_text(report))
        return 0

    sys.exit(_guard(show))


@main.command(short_help="Serve the local gateway simulator.")
@_config_option
@click.option("--port", type=click.IntRange(0, 65535), default=8787, help="0: any free port.")
@click.option("--fault", "faults", multiple=True, metavar="NAME=RATE",
              help="Inject a fault at a rate, e.g. 502=0.1, drop=0.05, 429=0.2 (repeatable).")
@click.option("--latency", metavar="SPEC", help="Seconds, or uniform:A,B or normal:MEAN,SD.")
@click.option("--rate-limit", metavar="R",
              help="Answer 429 above this rate, like 30/min: a sliding window, as the relay.")
@click.option("--rate-limit-retry-after", is_flag=True,
              help="Those 429s say when to retry (the relay's are bare: no body, no header).")
@click.option("--seed", type=int, default=0, help="Repeat a scenario exactly.")
@click.option("--response", type=click.Choice(["auto", "b64", "url", "data-url"]),
              default="auto", help="How images come back.")
@click.option("--fault-by-prompt", "by_prompt", multiple=True, metavar="TEXT=NAME",
              help="Every request whose prompt holds TEXT gets fault NAME (repeatable).")
def simulate(config: str | None, port: int, faults: tuple[str, ...], latency: str | None,
             rate_limit: str | None, rate_limit_retry_after: bool, seed: int,
             response: str, by_prompt: tuple[str, ...]) -> None:
    """Serve the local gateway simulator: free rehearsals of a manifest. With --config, the
    `simulator:` options of that config's simulator provider apply first; flags win.

    It accepts the token in IMGEDIT_API_KEY (else sk-simulator), compared as the relay does.
    """
    from pipeline.config.settings import config_dir, config_file, read_yaml
    from pipeline.simulator.app import SimulatorOptions, serve

    try:
        entry = read_yaml(config_file(config_dir(config), "providers.yaml")).get("simulator")
    except ImgeditError as exc:
        raise click.UsageError(str(exc)) from exc
    base = dict((entry or {}).get("simulator") or {}) if config else {}
    parsed: dict[str, float] = dict(base.pop("faults", None) or {})
    for item in faults:
        name, _, rate = item.partition("=")
        try:
            parsed[name] = float(rate)
        except ValueError:
            raise click.BadParameter(f"{item!r} is not NAME=RATE", param_hint="--fault") from None
    options: dict[str, Any] = {**base, "port": port, "faults": parsed}
    here = click.get_current_context()
    for name, value in (("seed", seed), ("response", response),
                        ("rate_limit_retry_after", rate_limit_retry_after)):
        if name not in base or here.get_parameter_source(name) is not ParameterSource.DEFAULT:
            options[name] = value
    for item in by_prompt:
        text, _, name = item.rpartition("=")
        if not text or not name:
            raise click.BadParameter(f"{item!r} is not TEXT=NAME", param_hint="--fault-by-prompt")
        options.setdefault("fault_by_prompt", {})[text] = name
    if os.environ.get("IMGEDIT_API_KEY"):
        options["api_key"] = os.environ["IMGEDIT_API_KEY"]
    if latency:
        options["latency"] = latency
    if rate_limit:
        options["rate_limit"] = rate_limit
    try:
        sim_options = SimulatorOptions.from_mapping(options)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    serve(sim_options)


def _secrets() -> list[str]:
    """Every value that could be a key, so the log filter can mask it wherever it shows."""
    words = ("KEY", "TOKEN", "SECRET", "PASSWORD")
    return [v for k, v in os.environ.items() if any(w in k.upper() for w in words)]


def _guard(action: Any, as_json: bool = False) -> int:
    """Our errors become a message and their exit code; bugs keep their traceback.
    With --json, bad input is also printed as JSON on stdout: every problem, uncapped."""
    try:
        return int(action())
    except ImgeditError as exc:
        click.echo(f"error: {exc}", err=True)
        problems = getattr(exc, "problems", None)
        if as_json and problems is not None:
            click.echo(json.dumps({"problems": [
                {"file": str(p.where.file), "line": p.where.line, "column": p.where.column,
                 "field": p.field, "message": p.message} for p in problems]},
                ensure_ascii=False, indent=2))
        return int(getattr(exc, "exit_code", InputError.exit_code))
    except Exception as exc:
        # A damaged ledger page met while reading (status, export, report, review) is a
        # message with what to do. sqlite3 is in sys.modules once a ledger was opened, so
        # start-up imports nothing for this; "locked" and the like keep their traceback.
        sqlite3 = sys.modules.get("sqlite3")
        if (sqlite3 is None or not isinstance(exc, sqlite3.DatabaseError)
                or isinstance(exc, sqlite3.OperationalError)):
            raise
        from pipeline.ledger.store import corrupt_message
        click.echo(f"error: {corrupt_message(None, exc)}", err=True)
        return InputError.exit_code


@main.command(short_help="Write the ledger's task table (CSV or JSON lines).")
@click.argument("manifest", type=MANIFEST)
@_config_option
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here instead of stdout.")
@_ledger_option
def export(manifest: Path, config: str | None, fmt: str, output: Path | None,
           ledger: Path | None) -> None:
    """Write the task table as CSV or JSON lines: the ledger's rows, then the manifest's
    tasks never run (as pending). A closed pipe (`| head`) ends it quietly, exit 0."""
    from pipeline.views import status as ledger_status

    def write() -> int:
        if output is None:
            try:
                ledger_status.export(manifest, fmt, sys.stdout, ledger, config)
                sys.stdout.flush()
            except BrokenPipeError:
                # The reader has what it wanted; stdout goes nowhere from here on.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        with output.open("w", encoding="utf-8", newline="") as fh:
            rows = ledger_status.export(manifest, fmt, fh, ledger, config)
        click.echo(f"wrote {rows} tasks to {output}", err=True)
        return 0

    sys.exit(_guard(write))


@main.command(short_help="Write an HTML contact sheet of the results.")
@click.argument("manifest", type=MANIFEST)
@_config_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="HTML file to write. [default: <manifest stem>.report.html beside it]")
@_ledger_option
def report(manifest: Path, config: str | None, output: Path | None, ledger: Path | None) -> None:
    """Write an HTML contact sheet: inputs beside outputs, failures with reasons."""
    from pipeline.views import report as report_mod

    def write() -> int:
        path = report_mod.write_report(manifest, output, ledger, config=config)
        click.echo(f"report: {path}")
        return 0

    sys.exit(_guard(write))


@main.command(short_help="Approve or reject each result, by keyboard.")
@click.argument("manifest", type=MANIFEST)
@_config_option
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port on 127.0.0.1; 0 picks a free one.")
@click.option("--ledger", type=click.Path(dir_okay=False, path_type=Path),
              help="Ledger file (default: <manifest>.ledger.sqlite beside the manifest).")
@click.option("--no-browser", is_flag=True, help="Print the URL only; do not open a browser.")
def review(manifest: Path, config: str | None, port: int, ledger: Path | None,
           no_browser: bool) -> None:
    """Serve a page (127.0.0.1 only) to approve or reject each result by keyboard.

    Keys: ←/→ or j/k move, a approve, r reject with a note, u undo. Decisions are
    saved at once; `imgedit run MANIFEST --redo-rejected` sends the rejected again.
    """
    from pipeline.views import review as review_mod

    def serve() -> int:
        session = review_mod.open_review(manifest, ledger, config)
        return review_mod.serve(session, port, browser=not no_browser,
                                out=lambda line: click.echo(line))

    sys.exit(_guard(serve))


@main.command(short_help="Write a starter manifest for the images in a folder.")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path), default=".")
@_config_option
@click.option("--force", is_flag=True, help="Overwrite an imgedit.yaml already there.")
def init(folder: Path, config: str | None, force: bool) -> None:
    """Write FOLDER/imgedit.yaml: a commented manifest with one task per image in FOLDER
    (PNG, JPEG, WebP, in any sub-folder), ready for `imgedit validate`."""
    from pipeline.manifest import starter

    def write() -> int:
        if not folder.is_dir():
            raise InputError(f"{folder} is not a folder")
        path = folder / starter.NAME
        try:
            with path.open("w" if force else "x", encoding="utf-8") as fh:
                fh.write(starter.text(folder.resolve(), config))
        except FileExistsError:
            raise InputError(f"{path} exists: edit it, or pass --force to start over") from None
        click.echo(f"wrote {path}; next: imgedit validate {path}")
        return 0

    sys.exit(_guard(write))


def entry() -> NoReturn:
    """The `imgedit` program: `main`, then leave without the interpreter's teardown.

    Once a command returned, the ledger is closed and every file written and renamed;
    the teardown only frees every object one by one (0.09-0.20 s after a 1,000-task run,
    a gc pass over its ~96k objects 88 ms of it). So flush what was said, and leave with
    the exit code. An exit message, or a thread still at work, takes the usual way out;
    library callers keep their interpreter (only this entry point does it)."""
    code: int | str | None = 0
    try:
        main()
    except SystemExit as done:
        code = done.code
    threading = sys.modules.get("threading")
    if (code is not None and not isinstance(code, int)) or (threading and any(
            thread.is_alive() and not thread.daemon and thread is not threading.main_thread()
            for thread in threading.enumerate())):
        raise SystemExit(code)  # a message to print, or a thread still at work: the usual way
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader that went away
            stream.flush()
    if (logging := sys.modules.get("logging")) is not None:
        logging.shutdown()  # flushes and closes --log-file
    os._exit(code or 0)
