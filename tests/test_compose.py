"""docker-compose.yml cannot start here (no Docker engine), so check it as data."""

from __future__ import annotations

from pathlib import Path

import yaml

from agentledger.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_services_and_images():
    assert set(SERVICES) >= {"kafka", "clickhouse", "grafana", "otel-collector", "sink", "streams",
                             "api"}
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft
    assert SERVICES["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    assert SERVICES["grafana"]["image"].startswith("grafana/grafana:")
    assert "grafana-clickhouse-datasource" in SERVICES["grafana"]["environment"][
        "GF_INSTALL_PLUGINS"]
    assert SERVICES["otel-collector"]["image"].startswith("otel/opentelemetry-collector")
    for name in ("sink", "streams", "api"):
        assert SERVICES[name]["build"] == "."
    assert (ROOT / "Dockerfile").is_file()


def test_every_service_has_a_healthcheck_and_ordered_dependencies():
    for name, service in SERVICES.items():
        assert "test" in service.get("healthcheck", {}), name
    for name in ("sink", "streams", "api"):
        deps = SERVICES[name]["depends_on"]
        assert deps["kafka"]["condition"] == "service_healthy"
        if name != "streams":  # the control loop reads and writes Kafka only
            assert deps["clickhouse"]["condition"] == "service_healthy"


def test_ports():
    def published(name: str) -> set[str]:
        return {p.split(":")[-1] for p in SERVICES[name].get("ports", [])}

    assert "9094" in published("kafka")
    assert "8123" in published("clickhouse")
    assert "3000" in published("grafana")
    assert {"4317", "4318"} <= published("otel-collector")
    assert "8080" in published("api")


def test_mounted_files_exist_and_named_volumes_are_declared():
    declared = set(COMPOSE.get("volumes", {}))
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
    for data in ("kafka", "clickhouse", "grafana"):
        assert any(v.split(":")[0].endswith("-data") for v in SERVICES[data]["volumes"])


def test_project_services_get_valid_settings():
    for name in ("sink", "streams", "api"):
        env = SERVICES[name]["environment"]
        assert env["AGENTLEDGER_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert env["AGENTLEDGER_CLICKHOUSE_DSN"].startswith("http://")
        assert "@clickhouse:8123/" in env["AGENTLEDGER_CLICKHOUSE_DSN"]
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
        known = {f"AGENTLEDGER_{f.upper()}" for f in Settings.model_fields}
        for key in env:
            if key.startswith("AGENTLEDGER_"):
                assert key in known, f"{name}: {key} is not a setting"
        settings = Settings(**{k.removeprefix("AGENTLEDGER_").lower(): v for k, v in env.items()
                               if k.startswith("AGENTLEDGER_")})
        assert not settings.embedded_store
        assert ":***@" in settings.dsn_for_display


def test_grafana_provisioning_points_at_clickhouse():
    ds = yaml.safe_load(
        (ROOT / "dashboards/provisioning/datasources/clickhouse.yaml").read_text())
    source = ds["datasources"][0]
    assert source["type"] == "grafana-clickhouse-datasource"
    assert source["jsonData"]["host"] == "clickhouse"
    providers = yaml.safe_load(
        (ROOT / "dashboards/provisioning/dashboards/agentledger.yaml").read_text())
    path = providers["providers"][0]["options"]["path"]
    mounts = {v.split(":")[1] for v in SERVICES["grafana"]["volumes"]}
    assert path in mounts
