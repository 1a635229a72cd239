"""docker-compose.yml cannot start here (no Docker engine), so check it as data."""

from __future__ import annotations

from pathlib import Path

import yaml

from agentledger.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
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
    # each project service waits for exactly what it talks to
    needs = {"sink": {"kafka", "clickhouse"}, "streams": {"kafka"}, "api": {"clickhouse"}}
    for name, upstream in needs.items():
        deps = SERVICES[name]["depends_on"]
        assert set(deps) >= upstream, name
        for dep in upstream:
            assert deps[dep]["condition"] == "service_healthy", (name, dep)


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


def test_grafana_mounts_the_generated_dashboards_where_the_provider_reads():
    mounts = {v.split(":")[1]: v.split(":")[0] for v in SERVICES["grafana"]["volumes"]}
    provider = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards/agentledger.yaml")
                              .read_text())["providers"][0]["options"]["path"]
    assert provider in mounts
    boards = sorted((ROOT / mounts[provider].removeprefix("./")).glob("*.json"))
    assert len(boards) == 4
    assert "grafana-clickhouse-datasource" in SERVICES["grafana"]["environment"][
        "GF_INSTALL_PLUGINS"]


def test_api_is_its_own_stateless_service_with_a_keys_file():
    api = SERVICES["api"]
    assert api["command"] == ["agentledger", "api"]
    assert "kafka" not in api["depends_on"]  # it reads ClickHouse only
    keys_file = api["environment"]["AGENTLEDGER_API_KEYS_FILE"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in api["volumes"]}
    assert keys_file in mounts
    from agentledger.auth import load_entries

    source = ROOT / mounts[keys_file]
    assert load_entries(Settings(api_keys_file=source)) == []  # valid, and no key committed


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


def test_grafana_provisions_the_generated_alert_rules():
    mounts = {v.split(":")[1]: v.split(":")[0] for v in SERVICES["grafana"]["volumes"]}
    source = ROOT / mounts["/etc/grafana/provisioning/alerting"].removeprefix("./")
    rules = yaml.safe_load((source / "agentledger.yaml").read_text())
    assert rules["apiVersion"] == 1
    datasource = yaml.safe_load(
        (ROOT / "dashboards/provisioning/datasources/clickhouse.yaml").read_text())
    uid = datasource["datasources"][0]["uid"]
    for rule in rules["groups"][0]["rules"]:
        assert rule["data"][0]["datasourceUid"] == uid, rule["uid"]
        assert rule["annotations"]["runbook_url"].startswith("${AGENTLEDGER_RUNBOOK_URL}#")
    assert "AGENTLEDGER_RUNBOOK_URL" in SERVICES["grafana"]["environment"]


def test_collector_routes_otlp_to_the_intake_topic_and_compose_runs_the_intake():
    from agentledger.intake.kafka_loop import OTLP_TOPIC

    config = yaml.safe_load((ROOT / "deploy/otel-collector.yaml").read_text())
    kafka = config["exporters"]["kafka"]
    assert kafka["topic"] == OTLP_TOPIC and kafka["brokers"] == ["kafka:9092"]
    assert kafka["encoding"] in ("otlp_proto", "otlp_json")  # what the intake decodes
    assert kafka["producer"]["required_acks"] == -1
    traces = config["service"]["pipelines"]["traces"]
    assert "otlp" in traces["receivers"] and "kafka" in traces["exporters"]
    assert SERVICES["otel-collector"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    intake = SERVICES["intake"]
    assert intake["command"][:2] == ["agentledger", "intake"] and intake["build"] == "."
    assert intake["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert intake["environment"]["AGENTLEDGER_KAFKA_BOOTSTRAP"] == "kafka:9092"
    # the Collector holds the OTLP ports here, so the intake's own HTTP endpoint is off,
    # with a flag the command really has
    assert "--no-http" in intake["command"]
    from typer.main import get_command

    from agentledger.cli.app import app

    options = {opt for param in get_command(app).commands["intake"].params  # type: ignore[attr-defined]
               for opt in param.opts + param.secondary_opts}
    assert "--no-http" in options


def test_sql_runs_as_a_read_only_clickhouse_user_with_exactly_its_grants():
    """Issue 21, finding 1: against the server, POST /v1/sql meets a user that can only read."""
    import xml.etree.ElementTree as ET

    from agentledger.queries.sql import SYSTEM_TABLES

    users_xml = "deploy/clickhouse/users.d/agentledger-readonly.xml"
    mounts = {v.split(":")[0].removeprefix("./"): v.split(":")[1]
              for v in SERVICES["clickhouse"]["volumes"]}
    assert mounts[users_xml].startswith("/etc/clickhouse-server/users.d/")
    config_xml = "deploy/clickhouse/config.d/agentledger-system-grants.xml"
    assert mounts[config_xml].startswith("/etc/clickhouse-server/config.d/")
    server = ET.parse(ROOT / config_xml).getroot()
    assert server.findtext("select_from_system_db_requires_grant") == "true"

    root = ET.parse(ROOT / users_xml).getroot()
    user = root.find("users/agentledger_reader")
    assert user is not None
    profile = root.find(f"profiles/{user.findtext('profile')}")
    assert profile is not None
    assert profile.findtext("readonly") in ("1", "2")
    assert profile.findtext("allow_ddl") == "0"
    limits = profile.find("constraints")
    assert limits is not None
    for const in ("readonly", "allow_ddl", "result_overflow_mode"):
        assert limits.find(f"{const}/const") is not None, const
    assert int(limits.findtext("max_result_rows/min") or 0) >= 1  # 0 would lift the cap
    assert limits.findtext("max_execution_time/max") is not None
    assert user.findtext("access_management") == "0"
    password = user.find("password")
    assert password is not None and password.get("from_env")
    grants = [q.text or "" for q in user.findall("grants/query")]
    database = SERVICES["api"]["environment"]["AGENTLEDGER_CLICKHOUSE_DATABASE"]
    allowed = {f"GRANT SELECT ON {database}.*", "GRANT SELECT ON system.settings"} | {
        f"GRANT SELECT ON system.{t}" for t in SYSTEM_TABLES}
    assert set(grants) <= allowed, set(grants) - allowed
    assert f"GRANT SELECT ON {database}.*" in grants
    for grant in grants:  # nothing but SELECT: no INSERT, CREATE TEMPORARY TABLE, FILE, URL…
        assert grant.startswith("GRANT SELECT ON "), grant

    env = SERVICES["api"]["environment"]
    settings = Settings(clickhouse_dsn=env["AGENTLEDGER_CLICKHOUSE_DSN"],
                        clickhouse_readonly_dsn=env["AGENTLEDGER_CLICKHOUSE_READONLY_DSN"])
    readonly = settings.clickhouse_readonly_dsn
    assert readonly is not None
    assert readonly.get_secret_value().startswith("http://agentledger_reader:")
    assert readonly.get_secret_value().endswith(f"@clickhouse:8123/{database}")
    assert SERVICES["clickhouse"]["environment"]["AGENTLEDGER_READER_PASSWORD"] in (
        readonly.get_secret_value())
    for name in ("sink", "streams"):  # only the API's SQL route reads as this user
        assert "AGENTLEDGER_CLICKHOUSE_READONLY_DSN" not in SERVICES[name]["environment"]


def _acls() -> set[tuple[str, str, str, str, str]]:
    """(user, operation, resource type, name, pattern) of every `acl` line of acls.sh."""
    import shlex

    script = (ROOT / "deploy/kafka/acls.sh").read_text()
    grants = set()
    for line in script.splitlines():
        if not line.strip().startswith("acl "):
            continue
        words = shlex.split(line.strip())
        if len(words) in (5, 6):
            grants.add((*words[1:5], words[5] if len(words) == 6 else "literal"))
    loop = {("$user", "Create", "topic", "$topic", "literal")}
    if loop <= grants:  # the Create-for-ensure_topics loop, expanded
        grants -= loop
        for user in ("agent", "api", "streams", "sink", "intake"):
            for topic in ("agent.events", "agent.events.dlq", "agent.control",
                          "agent.metrics", "agent.approvals"):
                grants.add((user, "Create", "topic", topic, "literal"))
    return grants


def _writers(topic: str) -> set[str]:
    """Users an ACL lets write ``topic`` (Write or All, literal or by prefix)."""
    return {user for user, op, kind, name, pattern in _acls()
            if kind == "topic" and op in ("Write", "All")
            and (name == topic if pattern == "literal" else topic.startswith(name))}


def test_kafka_has_sasl_users_per_role_and_denies_what_no_acl_allows():
    import re

    env = SERVICES["kafka"]["environment"]
    assert set(env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].replace(",", ":").split(":")[1::2]) \
        == {"SASL_PLAINTEXT"}, "no listener without authentication"
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert env["KAFKA_SUPER_USERS"] == "User:admin"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in SERVICES["kafka"]["volumes"]}
    jaas = (ROOT / mounts[env["KAFKA_OPTS"].split("=", 1)[1]]).read_text()
    users = dict(re.findall(r'user_(\w+)="([^"]+)"', jaas))
    assert set(users) == {"admin", "agent", "api", "streams", "sink", "intake", "collector"}

    # each project service logs in as its own role, with that role's password
    for name, user in (("sink", "sink"), ("streams", "streams"), ("intake", "intake"),
                       ("api", "api")):
        service = SERVICES[name]
        security = Settings(kafka_security=service["environment"][
            "AGENTLEDGER_KAFKA_SECURITY"]).kafka_security
        assert security["security.protocol"] == "SASL_PLAINTEXT", name
        assert (security["sasl.username"], security["sasl.password"]) == (user, users[user])
        if name != "api":  # the API reads ClickHouse first; Kafka only for votes
            assert service["depends_on"]["kafka-acls"]["condition"] == \
                "service_completed_successfully", name
    collector = yaml.safe_load((ROOT / "deploy/otel-collector.yaml").read_text())
    sasl = collector["exporters"]["kafka"]["auth"]["sasl"]
    assert (sasl["username"], sasl["password"]) == ("collector", users["collector"])

    acls = SERVICES["kafka-acls"]
    assert acls["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert acls["command"][-1] in {v.split(":")[1] for v in acls["volumes"]}


def test_kafka_acls_let_each_role_write_only_its_own_topics():
    from agentledger.schemas import topics
    from agentledger.schemas.approvals import APPROVALS_TOPIC

    assert _writers(topics.EVENTS) == {"agent", "api", "intake"}
    assert _writers(APPROVALS_TOPIC) == {"api"}, "only the API writes approval states"
    assert _writers(topics.CONTROL) == {"streams"}, "only stream workers write control"
    assert _writers(topics.METRICS) == {"streams"}
    agent_writes = {name for user, op, kind, name, _ in _acls()
                    if user == "agent" and kind == "topic" and op in ("Write", "All")}
    assert agent_writes == {topics.EVENTS}, "agents produce only to agent.events"
    for user, op, _kind, name, pattern in _acls():
        assert name not in ("*", "") and not (pattern == "prefixed" and
                                              "agent.".startswith(name)), (user, op, name)
        if op == "All":
            assert pattern == "prefixed" and name == "agentledger-streams", (user, name)
    # agents may read what steers them (and nothing else)
    agent_reads = {name for user, op, kind, name, _ in _acls()
                   if user == "agent" and kind == "topic" and op == "Read"}
    assert agent_reads == {topics.CONTROL, APPROVALS_TOPIC}


def test_the_image_copies_every_layer_and_installs_the_server_extra():
    """The image builds the wheel from its copy of the tree: every folder linked into
    agentledger/ must be copied beside it, or the image's package lacks that layer."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    links = sorted(p.name for p in (ROOT / "agentledger").iterdir() if p.is_symlink())
    assert links, "the layer folders are linked into agentledger/"
    missing = [name for name in links if f"COPY {name} {name}" not in dockerfile]
    assert not missing, f"Dockerfile does not copy {missing}"
    assert '".[server]"' in dockerfile, "the services need the server extra"


def test_the_api_service_serves_the_console():
    """The console is part of the API app (``/console``): the api service runs
    ``agentledger api`` on the published port 8080, and its image installs the server
    extra, which brings Jinja2."""
    from agentledger.api.app import create_app
    from agentledger.auth import KeyRing

    assert SERVICES["api"]["command"] == ["agentledger", "api"]
    assert "8080" in {p.split(":")[-1] for p in SERVICES["api"]["ports"]}
    assert '".[server]"' in (ROOT / "Dockerfile").read_text()
    paths = {getattr(r, "path", "") for r in create_app(None, KeyRing()).routes}  # type: ignore[arg-type]
    assert {"/console/signin", "/console/inbox", "/console/runs/{ref}",
            "/console/search", "/console/static"} <= paths
