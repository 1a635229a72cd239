#!/bin/sh
# Topic ACLs of the compose Kafka, applied once by the `kafka-acls` init container.
# The broker denies what no ACL allows (allow.everyone.if.no.acl.found=false), so each
# role can do exactly what is listed here (docs/security.md, "Kafka ACLs"):
#   agents produce only to agent.events (they read agent.control and agent.approvals);
#   only the API writes agent.approvals; only stream workers write agent.control
#   (manual overrides, `agentledger safe-mode`, are run in the streams container).
# Every `acl` line is also read by tests/test_compose.py: keep one grant per line.
set -eu

BOOTSTRAP="${BOOTSTRAP:-kafka:9092}"
CONFIG="${CONFIG:-/etc/kafka/admin.properties}"

acl() {  # acl USER OPERATION RESOURCE-TYPE NAME [prefixed]
    pattern=literal
    [ "${5:-}" = prefixed ] && pattern=prefixed
    /opt/kafka/bin/kafka-acls.sh --bootstrap-server "$BOOTSTRAP" --command-config "$CONFIG" \
        --add --allow-principal "User:$1" --operation "$2" "--$3" "$4" \
        --resource-pattern-type "$pattern" >/dev/null
    echo "granted $1 $2 $3 $4 $pattern"
}

# Creating a topic that exists is a no-op, but Kafka checks the right first: every role
# whose code ensures the project's topics at start may create (never write) them.
for user in agent api streams sink intake; do
    for topic in agent.events agent.events.dlq agent.control agent.metrics agent.approvals \
            agentledger.checkpoints; do
        acl "$user" Create topic "$topic"
    done
done

# agents (the SDK): events out; control and approvals in
acl agent Write topic agent.events
acl agent Read topic agent.control
acl agent Read topic agent.approvals
acl agent Read group agentledger-guard- prefixed
acl agent Read group agentledger-approvals- prefixed

# the API: approval states out (signed); control stream and approvals in; OTLP/HTTP events
acl api Write topic agent.approvals
acl api Read topic agent.approvals
acl api Read topic agent.control
acl api Write topic agent.events
acl api Write topic agent.events.dlq
acl api Read group agentledger-guard- prefixed
acl api Read group agentledger-approvals- prefixed

# stream workers: events in; control signals (signed) and metrics out; faust's own topics
acl streams Read topic agent.events
acl streams Write topic agent.control
acl streams Read topic agent.control
acl streams Write topic agent.metrics
acl streams All topic agentledger-streams prefixed
acl streams Read group agentledger-streams prefixed

# the sink: everything in, rejects to the DLQ
acl sink Read topic agent.events
acl sink Read topic agent.control
acl sink Read topic agent.metrics
acl sink Write topic agent.events.dlq
acl sink Read group agentledger-sink prefixed
# ...and signs checkpoints of what it landed (docs/integrity.md); a witness reads them
acl sink Write topic agentledger.checkpoints
acl witness Read topic agentledger.checkpoints
acl witness Read group agentledger-witness prefixed

# the OTLP intake: spans in, events and rejects out
acl intake Create topic otlp_spans
acl intake Read topic otlp_spans
acl intake Write topic agent.events
acl intake Write topic agent.events.dlq
acl intake Read group agentledger-intake prefixed

# the OpenTelemetry Collector: spans out
acl collector Write topic otlp_spans

touch /tmp/acls-applied
