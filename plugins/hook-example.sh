#!/bin/sh
# Sample ldae event hook: append each event (one JSON object on stdin) to a log file, and for
# `series_ready` print a line to syslog. Configure in ldae.toml:  [hooks] commands = ["plugins/hook-example.sh"]
# Exit non-zero to have ldae retry the event later.
set -eu
LOG="${LDAE_HOOK_LOG:-/tmp/ldae-events.jsonl}"
event="$(cat)"
printf '%s\n' "$event" >> "$LOG"
case "$event" in
  *'"event":"series_ready"'*)
    command -v logger >/dev/null 2>&1 && logger -t ldae-hook "series ready: $event" || true ;;
esac
exit 0
