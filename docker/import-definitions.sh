#!/bin/sh
# Imports Botline's RabbitMQ topology (broker-config/definitions.json) through the management
# HTTP API, as the UI's "Overview → Import definitions" does. compose.yml runs it once, in
# the rabbitmq:3-management image (which ships rabbitmqadmin), after the broker is healthy;
# the orchestrator and the bots start after it has succeeded.
#
# Why not `load_definitions` at boot: a blank node that imports definitions at boot does not
# create its default user (RABBITMQ_DEFAULT_USER), and this file has no users, since
# passwords do not belong in the repository, so nobody could log in.
#
# Importing is idempotent: what exists already is left as it is.
#
# Usage: import-definitions.sh [FILE]   (default /botline/definitions.json)
# Environment: RABBITMQ_USER, RABBITMQ_PASSWORD (required); RABBITMQ_HOST [rabbitmq],
# RABBITMQ_MANAGEMENT_PORT [15672], IMPORT_ATTEMPTS [10], IMPORT_RETRY_SECONDS [3].
set -eu

file=${1:-/botline/definitions.json}
host=${RABBITMQ_HOST:-rabbitmq}
port=${RABBITMQ_MANAGEMENT_PORT:-15672}
attempts=${IMPORT_ATTEMPTS:-10}
pause=${IMPORT_RETRY_SECONDS:-3}
: "${RABBITMQ_USER:?set RABBITMQ_USER}"
: "${RABBITMQ_PASSWORD:?set RABBITMQ_PASSWORD}"

if [ ! -r "$file" ]; then
    echo "import-definitions: cannot read $file" >&2
    exit 1
fi

# The broker's health check passes once its ports accept connections; the management API
# may still be starting its listener then, so a few retries absorb that.
attempt=1
until rabbitmqadmin --host="$host" --port="$port" \
    --username="$RABBITMQ_USER" --password="$RABBITMQ_PASSWORD" import "$file"; do
    if [ "$attempt" -ge "$attempts" ]; then
        echo "import-definitions: $file not imported into $host:$port after $attempts attempts" >&2
        exit 1
    fi
    attempt=$((attempt + 1))
    sleep "$pause"
done
echo "import-definitions: Botline's topology is defined on $host"
