"""The configuration contract: one frozen pydantic tree, validated before anything connects.

Destinations are a union discriminated by ``type``: each connector in the registry gets
a model whose ``settings`` is that connector's own Settings model, so an editor using
the generated JSON Schema (``event-router schema``) completes and checks every field.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from destinations.base import Connector
from destinations.registry import REGISTRY
from router import configfile
from router.config_errors import describe
from router.configfile import ConfigError
from router.stages.fql import FQLSyntaxError, compile_fql
from router.stages.transforms import TransformStep


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaConfig(Frozen):
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers.")
    topics: list[str] = Field(["events"], min_length=1, description="Topics to consume.")
    group_id: str = Field("event-router", description="Consumer group shared by replicas.")
    dead_letter_topic: str = Field("events.dlq", description="Where undeliverable events go.")
    retry_topic_prefix: str = Field(
        "events.retry", description="Each destination parks events in `<prefix>.<name>`.")
    max_in_flight_events: int = Field(
        20000, ge=1, description="Above this many unsettled events the consumer pauses.")
    max_event_bytes: int = Field(32 * 1024, ge=256, description="Larger events are dead-lettered.")
    commit_interval_ms: int = Field(1000, ge=50, description="How often settled offsets commit.")
    fetch_max_records: int = Field(2000, ge=1, description="Records per fetch (getmany).")
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="Where a new consumer group starts.")
    client_id: str = Field("event-router", description="Kafka client id.")
    create_topics: bool = Field(
        True, description="Create the input, dead-letter and retry topics when missing.")
    created_topic_partitions: int = Field(6, ge=1, description="Partitions of created topics.")
    created_topic_replication: int = Field(
        1, ge=1, description="Replication factor of created topics (use 3 in production).")
    drain_grace_s: float = Field(20, gt=0, description="SIGTERM: time to finish in-flight work.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="As in aiokafka.")
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="With SASL_PLAINTEXT or SASL_SSL (required there).")
    sasl_plain_username: str | None = Field(None, description="SASL user name.")
    sasl_plain_password: SecretStr | None = Field(None, description="SASL password.")
    ssl_cafile: str | None = Field(None, description="CA bundle for SSL (SSL, SASL_SSL).")
    ssl_certfile: str | None = Field(None, description="Client certificate for SSL.")
    ssl_keyfile: str | None = Field(None, description="Client key for SSL.")

    @model_validator(mode="after")
    def _security_settings_match_the_protocol(self) -> KafkaConfig:
        """A SASL or SSL setting the protocol would ignore is a mistake, not a no-op (the
        operator believes authentication or TLS is on); SASL needs all three settings."""
        protocol = self.security_protocol
        sasl = {"sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.sasl_plain_username,
                "sasl_plain_password": self.sasl_plain_password}
        if protocol.startswith("SASL_"):
            for name, value in sasl.items():
                if not value:
                    raise field_error(name, f"required with security_protocol {protocol}")
        else:
            for name, value in sasl.items():
                if value:
                    raise field_error(name, f"only used with SASL_PLAINTEXT or SASL_SSL; "
                                      f"security_protocol is {protocol}")
        if not protocol.endswith("SSL"):
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                if getattr(self, name):
                    raise field_error(name, f"only used with SSL or SASL_SSL; "
                                      f"security_protocol is {protocol}")
        return self


def field_error(field: str, message: str) -> PydanticCustomError:
    """A model validator's error reported at one of its fields (``config_errors.describe``)."""
    return PydanticCustomError("field_error", "{message}", {"field": field, "message": message})


class ServerConfig(Frozen):
    listen: str = Field("127.0.0.1:8080", description="host:port for /metrics /healthz "
                        "/readyz /api /ui; empty to disable the server.")
    admin_token: SecretStr | None = Field(
        None, description="Bearer token for mutating /api calls; unset disables them.")

    @field_validator("admin_token", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value in ("", None) else value


class DedupeConfig(Frozen):
    window_s: float = Field(86400, gt=0, description="Drop a messageId seen within this "
                            "window (ids are kept in eighths of it: up to an eighth longer).")
    max_entries: int = Field(1_000_000, ge=1, description="Memory bound (a table of about 19 "
                             "bytes per id, taken as ids arrive); past it the oldest ids "
                             "are evicted.")


class TrackingPlanConfig(Frozen):
    path: str = Field(description="YAML file mapping event names to JSON Schemas.")
    unplanned: Literal["allow", "block"] = Field("allow", description="Events not in the plan.")
    violations: Literal["allow", "tag", "block"] = Field(
        "allow", description="Events that break their schema: pass, tag context.violations, "
        "or dead-letter with reason tracking_plan.")

    @model_validator(mode="after")
    def _readable(self) -> TrackingPlanConfig:
        """The plan is read and its schemas checked now, so that ``validate`` catches a
        missing file or a bad schema rather than the router's start."""
        from router.stages.tracking_plan import TrackingPlan

        try:
            TrackingPlan.from_file(self.path, self.unplanned, self.violations)
        except ValueError as exc:
            raise field_error("path", str(exc)) from exc
        return self


class PipelineConfig(Frozen):
    dedupe: DedupeConfig | None = Field(DedupeConfig(), description="null disables dedupe.")
    suppressed_users: str | None = Field(
        None, description="File of userIds (one per line) never forwarded anywhere.")
    tracking_plan: TrackingPlanConfig | None = Field(None, description="Optional tracking plan.")

    @field_validator("tracking_plan", mode="before")
    @classmethod
    def _path_shorthand(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    @field_validator("suppressed_users")
    @classmethod
    def _suppression_readable(cls, value: str | None) -> str | None:
        """A missing list would forward the users it suppresses: refused at ``validate``."""
        if value is not None:
            from router.stages.suppression import Suppression

            Suppression(value)  # ValueError: cannot read the suppressed-users file ...
        return value


class BatchConfig(Frozen):
    max_events: int | None = Field(None, ge=1, description="Default: the connector's limit, "
                                   "or its default where it has one (DuckDB: 5,000).")
    max_bytes: int | None = Field(None, ge=1024, description="Default: the connector's limit.")
    max_wait_ms: int | None = Field(None, ge=0, description="Default: the connector's.")


class DeliveryConfig(Frozen):
    concurrency: int = Field(4, ge=1, le=256, description="Requests in flight at once.")
    timeout_s: float = Field(10, gt=0, description="Per-request timeout.")
    rate_limit_per_s: float | None = Field(
        None, ge=0, description="Requests per second; 0 = none; default: the connector's.")
    inline_retries: int = Field(2, ge=0, le=20, description="Retries before parking.")
    max_retry_age_s: float = Field(14400, gt=0, description="Then the event is dead-lettered.")
    backoff_base_s: float = Field(0.5, gt=0, description="First backoff; doubles per attempt.")
    backoff_max_s: float = Field(600, gt=0, description="Cap on one backoff.")
    park_backoff_s: float = Field(
        30, gt=0, description="First wait in the retry topic; doubles each time an event "
        "is re-parked, up to backoff_max_s.")
    circuit_failures: int = Field(5, ge=1, description="Consecutive failed batches that open "
                                  "the circuit (new events are parked directly).")
    circuit_open_s: float = Field(30, gt=0, description="Open time before a half-open probe.")
    ordering: Literal["none", "per_user"] = Field(
        "none", description="per_user: one user's events arrive in Kafka order.")
    spill_after_s: float = Field(
        10, gt=0, description="Holding half of max_in_flight_events that would take longer "
        "than this to deliver at its measured speed, the destination parks new batches in its "
        "retry topic (re-driven when it catches up) instead of stalling the others.")
    stall_s: float = Field(
        1.0, gt=0, description="A send still running after this long, and after 3x the "
        "destination's usual send time, is a stall: holding half of max_in_flight_events, "
        "the destination then parks new batches too (a warehouse checkpoint, a hung vendor).")


class DestinationBase(Frozen):
    connector: ClassVar[Connector]
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
                      description="Unique; used in metrics, topics and the integrations object.")
    enabled: bool = Field(True, description="A disabled destination receives nothing.")
    consent_categories: list[str] = Field(
        [], description="All must be true in context.consent.categoryPreferences.")
    where: str | None = Field(None, description="FQL filter; the event is sent when true.")
    transforms: list[TransformStep] = Field([], description="Ordered transform steps.")
    batch: BatchConfig = Field(BatchConfig(), description="Batching.")
    delivery: DeliveryConfig = Field(DeliveryConfig(), description="Delivery.")

    @field_validator("where")
    @classmethod
    def _compile_where(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                compile_fql(value)
            except FQLSyntaxError as exc:
                raise ValueError(f"FQL syntax error: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _within_limits(self) -> DestinationBase:
        limits = self.connector.limits
        for field, hard in (("max_events", limits.max_events), ("max_bytes", limits.max_bytes)):
            value = getattr(self.batch, field)
            if value is not None and value > hard:
                raise ValueError(f"batch.{field} {value} is above the {self.connector.name} "
                                 f"limit of {hard}; config may lower it, never raise it")
        return self

    @property
    def max_events(self) -> int:
        limits = self.connector.limits
        return self.batch.max_events or limits.default_events or limits.max_events

    @property
    def max_bytes(self) -> int:
        return self.batch.max_bytes or self.connector.limits.max_bytes

    @property
    def max_wait_ms(self) -> int:
        wait = self.batch.max_wait_ms
        return self.connector.limits.max_wait_ms if wait is None else wait

    @property
    def rate_limit_per_s(self) -> float:
        rate = self.delivery.rate_limit_per_s
        return self.connector.rate_limit_per_s if rate is None else rate


@cache
def destination_models() -> dict[str, type[DestinationBase]]:
    models: dict[str, type[DestinationBase]] = {}
    for name, connector in REGISTRY.items():
        model = create_model(  # type: ignore[call-overload]
            f"{name.title().replace('_', '')}Destination",
            __base__=DestinationBase,
            type=(Literal[name], Field(description="The connector.")),
            settings=(connector.settings, Field(description=f"{connector.display_name} settings.")),
        )
        model.connector = connector
        models[name] = model
    return models


def _type_of(value: Any) -> str | None:
    return value.get("type") if isinstance(value, dict) else getattr(value, "type", None)


def _destination_type() -> Any:
    tagged = tuple(Annotated[m, Tag(n)] for n, m in destination_models().items())
    return Annotated[
        Union[tagged],  # noqa: UP007 - built at run time from the registry
        Discriminator(_type_of, custom_error_type="unknown_destination_type",
                      custom_error_message=f"unknown connector; one of {sorted(REGISTRY)}"),
    ]


class Config(Frozen):
    kafka: KafkaConfig = Field(KafkaConfig(), description="Kafka connection and topics.")
    server: ServerConfig = Field(ServerConfig(), description="Operator HTTP server.")
    pipeline: PipelineConfig = Field(PipelineConfig(), description="Global stages.")
    destinations: list[_destination_type()] = Field(  # type: ignore[valid-type]
        [], description="Where events go.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Logs.")

    @field_validator("destinations")
    @classmethod
    def _unique_names(cls, destinations: list[DestinationBase]) -> list[DestinationBase]:
        seen: dict[str, int] = {}
        for i, dest in enumerate(destinations):
            if dest.name in seen:  # reported at the second one's name (``config_errors.describe``)
                raise PydanticCustomError(
                    "duplicate_destination_name",
                    "destination name '{name}' is already used by destinations[{first}]",
                    {"name": dest.name, "index": i, "first": seen[dest.name]})
            seen[dest.name] = i
        return destinations


def load(path: str | Path, env: dict[str, str] | None = None) -> Config:
    """Read, interpolate and validate a config file; raise ConfigError naming each
    problem's file, line and key path. Relative paths are relative to the working
    directory."""
    data, lines = configfile.read(path, env)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([describe(err, data, lines, Config) for err in exc.errors()]
                          ) from exc
    return config


def json_schema() -> dict[str, Any]:
    return Config.model_json_schema()


__all__ = ["Config", "ConfigError", "load"]
