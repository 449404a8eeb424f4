#!/usr/bin/env bash
# Wait until every named compose service of a project has a running, healthy container.
#
#   docker/wait-healthy.sh TIMEOUT_S SERVICE...
#
# Finds containers by the labels compose puts on them (project from
# $COMPOSE_PROJECT_NAME, as the Makefile exports it), so it works the same with
# `docker compose` v2 and `docker-compose` v1, which has no `up --wait`.
# Exit 0 once all are healthy. On timeout, or as soon as one is unhealthy (it failed
# its retries after the start period): name each service that is not healthy, print
# its state, its recent healthcheck output and its last log lines, and exit 1.
# TIMEOUT_S 0 checks once (for when `compose up` itself failed).
set -euo pipefail

timeout_s="${1:?usage: $0 TIMEOUT_S SERVICE...}"
shift
project="${COMPOSE_PROJECT_NAME:?COMPOSE_PROJECT_NAME must name the compose project}"
# Pause between polls: each poll is one `docker inspect` per service, cheap.
poll_s=1
# Log lines shown for a service that did not become healthy.
log_lines=40

container_of() {
  docker ps -aq --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=$1" | head -n 1
}

state_of() {  # "<status> <health>", e.g. "running healthy"; "missing -" if no container
  local id
  id="$(container_of "$1")"
  if [[ -z "$id" ]]; then echo "missing -"; return; fi
  docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}no-healthcheck{{end}}' "$id" 2>/dev/null ||
    echo "missing -"
}

start=$SECONDS
deadline=$((SECONDS + timeout_s))
while :; do
  pending=()
  unhealthy=0
  for service in "$@"; do
    current="$(state_of "$service")"
    [[ "$current" == "running healthy" ]] || pending+=("$service")
    # Failed its retries after the start period: waiting longer will not help.
    [[ "$current" == *" unhealthy" ]] && unhealthy=1
  done
  if ((${#pending[@]} == 0)); then
    echo "healthy after $((SECONDS - start)) s: $*"
    exit 0
  fi
  ((SECONDS < deadline && !unhealthy)) || break
  sleep "$poll_s"
done

echo "ERROR: not healthy after $((SECONDS - start)) s: ${pending[*]}" >&2
for service in "${pending[@]}"; do
  id="$(container_of "$service")"
  echo "---- $service: $(state_of "$service")" >&2
  [[ -n "$id" ]] || continue
  docker inspect -f '{{.Name}}: exit code {{.State.ExitCode}}, {{.RestartCount}} restarts' "$id" >&2 || true
  echo "---- recent healthchecks of $service (exit code: output):" >&2
  docker inspect -f '{{if .State.Health}}{{range .State.Health.Log}}{{.ExitCode}}: {{if .Output}}{{.Output}}{{else}}(no output){{end}}{{println}}{{end}}{{end}}' \
    "$id" 2>/dev/null | sed -e '/^$/d' -e 's/^/    /' >&2 || true
  echo "---- last $log_lines log lines of $service:" >&2
  docker logs --tail "$log_lines" "$id" 2>&1 | sed 's/^/    /' >&2 || true
done
exit 1
