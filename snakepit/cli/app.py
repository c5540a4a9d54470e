"""The click wiring of the ``snakepit`` command: options, error reporting, the entry point."""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, Sequence

from .demo import cmd_demo
from .inspect import cmd_profile_inspector
from .output import CLIError, emit_json
from .pools import cmd_pools, cmd_recycle_worker
from .scaling import cmd_diagnose_scaling

_CLI: Any = None


def get_cli() -> Any:
    """The click group (built on first use; ``click.testing.CliRunner().invoke(get_cli(), [...])``)."""
    global _CLI
    if _CLI is not None:
        return _CLI
    import click  # noqa: PLC0415

    from ..errors import SnakepitError  # noqa: PLC0415

    def run(fn: Callable[..., None], fmt: str, *args: Any) -> None:
        """Call a command; report CLIError/SnakepitError once, as text or JSON, exit 1."""
        try:
            fn(*args)
        except (CLIError, SnakepitError, OSError) as exc:
            message = str(exc)
            if fmt == "json":
                emit_json({"error": message})
                raise SystemExit(1) from None
            raise _Failure(message) from None

    class _Failure(click.ClickException):
        """Exit 1 with the seed's ``❌ Error: ...`` line on stderr."""

        def show(self, file: Any = None) -> None:
            click.echo(f"❌ Error: {self.format_message()}", err=True)

    fmt_option = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
                              show_default=True, help="Output format.")
    def check_target(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is None or value.isdigit() or os.sep in value or value.endswith(".json"):
            return value
        raise click.BadParameter("give a pid or the path of a discovery file (see `snakepit pools`)")

    target_option = click.option("--target", metavar="PID|FILE", default=None, callback=check_target,
                                 help="The pool manager to attach to: its pid or its discovery file.")

    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(package_name="snakepit", prog_name="snakepit")
    @click.option("--runtime-dir", type=click.Path(file_okay=False), default=None, envvar="SNAKEPIT_RUNTIME_DIR",
                  help="The runtime directory where pool managers publish their discovery files "
                       "(default: $SNAKEPIT_RUNTIME_DIR, $XDG_RUNTIME_DIR/snakepit or /tmp/snakepit-UID).")
    @click.pass_context
    def cli(ctx: click.Context, runtime_dir: str | None) -> None:
        """snakepit: inspect live worker pools, measure scaling, run the demo.

        \b
        snakepit demo
        snakepit pools
        snakepit profile-inspector --detailed --recommendations
        snakepit profile-inspector --format json | jq '.default.utilization_percent'
        """
        if runtime_dir:
            os.environ["SNAKEPIT_RUNTIME_DIR"] = runtime_dir
        ctx.obj = {"runtime_dir": runtime_dir}

    @cli.command("profile-inspector")
    @click.option("--pool", default=None, metavar="NAME", help="Inspect only this pool.")
    @click.option("--detailed", is_flag=True, help="Add the per-worker table.")
    @fmt_option
    @click.option("--recommendations", is_flag=True, help="Add each pool's recommendations.")
    @target_option
    def profile_inspector(pool: str | None, detailed: bool, fmt: str, recommendations: bool,
                          target: str | None) -> None:
        """Inspect the pools of the live pool managers (kernels, scripts).

        \b
        snakepit profile-inspector --detailed --recommendations
        snakepit profile-inspector --format json | jq '.default.utilization_percent'
        """
        run(cmd_profile_inspector, fmt, pool, detailed, fmt, recommendations, target)

    @cli.command("pools")
    @fmt_option
    def pools(fmt: str) -> None:
        """List the live pool managers: pid, pools, workers, uptime."""
        run(cmd_pools, fmt, fmt)

    @cli.command("diagnose-scaling")
    @click.option("--max-workers", type=click.IntRange(1, 1024), default=16, show_default=True,
                  help="Largest pool to start when measuring (sizes 1, 2, 4, ... up to it).")
    @click.option("--threads-per-worker", type=click.IntRange(1, 1024), default=10, show_default=True,
                  help="threads_per_worker of the measured thread-profile pools.")
    @click.option("--no-measure", is_flag=True, help="Skip starting measurement pools.")
    @fmt_option
    def diagnose_scaling(max_workers: int, threads_per_worker: int, no_measure: bool, fmt: str) -> None:
        """Profile analysis of live pools, OS limits, measured start time and memory, recommendation."""
        run(cmd_diagnose_scaling, fmt, max_workers, threads_per_worker, fmt, not no_measure)

    @cli.command("demo")
    @click.option("--tasks", type=click.IntRange(8, 10000), default=48, show_default=True,
                  help="Number of tasks in the mixed workload.")
    def demo(tasks: int) -> None:
        """Start a process pool and a thread pool, run a mixed workload, show the inspector."""
        run(cmd_demo, "text", tasks)

    @cli.command("recycle-worker")
    @click.argument("pool")
    @click.argument("worker_id")
    @target_option
    def recycle_worker(pool: str, worker_id: str, target: str | None) -> None:
        """Recycle one worker of a live pool (a replacement starts first)."""
        run(cmd_recycle_worker, "text", pool, worker_id, target)

    _CLI = cli
    return cli


def main(argv: Sequence[str] | None = None) -> Any:
    """Entry point of the ``snakepit`` console script."""
    try:
        import click  # noqa: F401, PLC0415
        import rich  # noqa: F401, PLC0415
    except ImportError as exc:  # pragma: no cover - both are dependencies of snakepit
        sys.stderr.write(f"snakepit: the command line needs click and rich ({exc}); "
                         "install them with: pip install 'snakepit' click rich\n")
        return 1
    return get_cli().main(args=list(argv) if argv is not None else None, prog_name="snakepit")
