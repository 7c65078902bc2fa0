# Helpers shared by the launch scripts; each script sets SCRIPT_NAME, then sources this file.

# Usage errors exit 2 with the script's name, so wrappers can tell them from job failures.
die_usage() {
  echo "$SCRIPT_NAME: error: $*" >&2
  echo "Run launch/$SCRIPT_NAME --help for usage." >&2
  exit 2
}

dry_run=0
# Prints the command as `+ arg arg ...` (shell-quoted); executes it unless --dry-run.
run() {
  local line='+'
  local arg
  for arg in "$@"; do line+=" $(printf '%q' "$arg")"; done
  if (( dry_run )); then
    echo "$line"
  else
    echo "$line" >&2
    "$@"
  fi
}

# Shell-quotes each argument, for command strings run remotely or written into job scripts.
quote_all() {
  local out=''
  local arg
  for arg in "$@"; do out+=" $(printf '%q' "$arg")"; done
  echo "${out# }"
}
