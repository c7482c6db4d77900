"""event-router run | validate | dry-run | replay | produce | schema | docs"""

from __future__ import annotations

import asyncio
import errno
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

CONFIG_OPTION = click.option("-c", "--config", "config_path", default="config/router.yaml",
                             show_default=True, type=click.Path(dir_okay=False),
                             help="The router's YAML config.")


def _load(config_path: str) -> Any:
    # here, not at the top: a child process (DuckDB's loader) imports this module as its
    # __main__, and the config would bring in every connector
    from router.config import ConfigError, load

    if not Path(config_path).exists():  # most often: the default, run from another directory
        click.echo(f"{config_path}: no such config file (give one with -c FILE; a relative "
                   f"path starts from {Path.cwd()})", err=True)
        sys.exit(1)
    try:
        return load(config_path)
    except ConfigError as exc:
        click.echo(f"{config_path} is invalid:", err=True)
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(1)


T = TypeVar("T")


def _with_kafka(command: str, config: Any, main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, where a Kafka error (no broker, refused credentials) ends
    the command with one line and exit code 1 rather than a traceback."""
    from aiokafka.errors import KafkaConnectionError, KafkaError

    from router import topics
    from router.app import kafka_options

    try:
        return asyncio.run(main)
    except KafkaError as exc:
        error: Exception = exc
        if isinstance(exc, KafkaConnectionError):  # aiokafka's word for a refused login too
            try:
                asyncio.run(topics.raise_refusal(kafka_options(config)))
            except topics.REFUSALS as refusal:
                error = refusal
        click.echo(f"{command}: Kafka: {error!r}", err=True)
        sys.exit(1)


def _loop_policy() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - optional
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@click.group()
def main() -> None:
    """Route analytics events from Kafka to every destination, losing none."""


BIND_ERRORS = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)

POSITIONAL_CONFIG = click.argument("config_file", required=False,
                                   type=click.Path(dir_okay=False))


@main.command()
@CONFIG_OPTION
@POSITIONAL_CONFIG
def run(config_path: str, config_file: str | None) -> None:
    """Run the router until SIGTERM/SIGINT (drains, commits, exits 0); SIGHUP reloads.

    The config is -c FILE or a positional FILE."""
    config_path = config_file or config_path
    from aiokafka.errors import KafkaError

    from router.app import Router
    from router.telemetry import configure_logging

    config = _load(config_path)
    configure_logging(config.log_level)
    _loop_policy()
    try:
        asyncio.run(Router(config, config_path).run())
    except KafkaError as exc:  # e.g. refused credentials: the message, not a traceback
        click.echo(f"event-router: Kafka refused to start the router: {exc!r}", err=True)
        sys.exit(1)
    except OSError as exc:
        # the operator's server could not bind server.listen (8080 is often taken)
        if exc.errno not in BIND_ERRORS or "bind" not in str(exc):
            raise
        click.echo(f"event-router: cannot serve on server.listen {config.server.listen!r}: "
                   f"{os.strerror(exc.errno or 0)}; set it to a free host:port "
                   "(ROUTER_LISTEN in the shipped configs), or to '' for no server", err=True)
        sys.exit(1)


@main.command()
@CONFIG_OPTION
@POSITIONAL_CONFIG
def validate(config_path: str, config_file: str | None) -> None:
    """Check a config file; exit 0 when valid, 1 with each problem's file, line and key."""
    config_path = config_file or config_path
    config = _load(config_path)
    names = ", ".join(f"{d.name} ({d.type})" for d in config.destinations) or "none"
    click.echo(f"{config_path} is valid: {len(config.destinations)} destinations: {names}")


@main.command("dry-run")
@CONFIG_OPTION
@click.argument("events", default="-", type=click.File("rb"))
def dry_run(config_path: str, events: Any) -> None:
    """Show, per event and destination, the decision and the exact native payload.

    EVENTS is a JSON or NDJSON file (or - for stdin). No network, no Kafka."""
    from router.dryrun import render

    if Path(events.name).suffix.lower() in (".yaml", ".yml"):
        # `dry-run router.yaml`, as with `run` and `validate`, would read the config as events
        raise click.UsageError(f"EVENTS is a JSON or NDJSON file of events, not a config: "
                               f"give the config with -c ({events.name})")
    config = _load(config_path)
    click.echo(render(config, events.read()))


@main.command()
@CONFIG_OPTION
@click.option("--destination", "-d", help="Only the events this destination dead-lettered "
              "(default: all; each goes back to the destination that dead-lettered it).")
@click.option("--since", help="Only events dead-lettered at or after this ISO time.")
@click.option("--limit", type=int, help="At most this many events.")
@click.option("--dry-run", is_flag=True, help="Count what would be re-driven; change nothing.")
def replay(config_path: str, destination: str | None, since: str | None, limit: int | None,
           dry_run: bool) -> None:
    """Re-drive dead-lettered events through a destination's retry topic.

    The dead-letter topic is left as it is; a running router delivers the events."""
    from router.replay import replay as do_replay

    config = _load(config_path)
    try:
        counts = _with_kafka("replay", config, do_replay(
            config, destination=destination, since=since, limit=limit, dry_run=dry_run))
    except ValueError as exc:
        click.echo(f"replay: {exc}", err=True)
        sys.exit(2)
    click.echo(orjson.dumps(counts, option=orjson.OPT_INDENT_2).decode())


@main.command()
@CONFIG_OPTION
@click.option("--topic", help="Default: the config's first topic.")
@click.option("--demo", type=int, default=0, help="Publish this many generated demo events.")
@click.argument("events", required=False, type=click.File("rb"))
def produce(config_path: str, topic: str | None, demo: int, events: Any) -> None:
    """Publish events (an NDJSON file, or generated demo events) to the input topic."""
    from router.demo import produce as do_produce

    if events is None and demo <= 0:
        raise click.UsageError("nothing to publish: give an NDJSON file (- for stdin) or "
                               "--demo N")
    config = _load(config_path)
    lines = events.read().splitlines() if events else []
    sent = _with_kafka("produce", config,
                       do_produce(config, topic or config.kafka.topics[0], lines, demo))
    click.echo(f"published {sent} events to {topic or config.kafka.topics[0]}")


@main.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to a file.")
def schema(output: str | None) -> None:
    """Print the JSON Schema of the config (for editors)."""
    from router.config import json_schema

    text = orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2).decode()
    if output:
        Path(output).write_text(text + "\n")
    else:
        click.echo(text)


@main.command()
@click.option("-o", "--output", default="docs/reference.md", show_default=True)
@click.option("--check", is_flag=True, help="Exit 1 if the file is not current.")
def docs(output: str, check: bool) -> None:
    """Generate the configuration reference from the models."""
    from router.reference import render as render_reference

    text = render_reference()
    path = Path(output)
    if check:
        if not path.exists() or path.read_text() != text:
            click.echo(f"{output} is out of date: run `event-router docs`", err=True)
            sys.exit(1)
        click.echo(f"{output} is current")
        return
    path.write_text(text)
    click.echo(f"wrote {output}")


if __name__ == "__main__":
    main()
