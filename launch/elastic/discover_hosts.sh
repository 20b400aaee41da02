#!/usr/bin/env bash
# Host discovery for elastic Horovod: prints the hosts that may run workers now, one HOST:SLOTS a line,
# read from a hosts file that you, a test or a cluster hook edit while training runs.
#
#   horovodrun -np 2 --min-np 1 --max-np 4 --host-discovery-script launch/elastic/discover_hosts.sh ...
#   bash launch/elastic/discover_hosts.sh [--file FILE] [--help]
#
#   --file  the hosts file (default: $MELON_ELASTIC_HOSTS; horovodrun runs the script without arguments,
#           so export MELON_ELASTIC_HOSTS=FILE before starting it)
#
# The hosts file: one entry a line, `HOST:SLOTS`, `HOST slots=SLOTS`, or a bare number N for `localhost:N`;
# blank lines and `#` comments are skipped, and so are hosts with 0 slots. Horovod runs the script about
# once a second: adding a host or raising its slots lets workers join, removing or lowering makes them
# leave at the trainers' next commit. Replace the file by your own script (e.g. from the scheduler's node
# list) on a cluster; horovodrun only needs the HOST:SLOTS lines. Bad input prints an error and exits 2.
set -euo pipefail

usage() { awk 'NR == 1 && /^#!/ { next } !/^#/ { exit } { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; }
die() { printf 'discover_hosts.sh: %s\n' "$*" >&2; exit 2; }

file=${MELON_ELASTIC_HOSTS:-}
while (($#)); do
    case $1 in
        --file) (($# >= 2)) || die "--file needs a value"; file=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[[ -n $file ]] || die "no hosts file: give --file FILE or set MELON_ELASTIC_HOSTS"
[[ -r $file ]] || die "cannot read hosts file $file"

n=0
found=()  # printed only once the whole file has been read: bad input prints nothing on stdout
while IFS= read -r line || [[ -n $line ]]; do
    n=$((n + 1))
    raw=$line
    line=${line%%#*}
    line=$(tr -d '[:space:]' <<<"${line/slots=/:}")
    [[ -n $line ]] || continue
    if [[ $line =~ ^[0-9]+$ ]]; then
        host=localhost slots=$line
    elif [[ $line =~ ^([A-Za-z0-9._-]+):([0-9]+)$ ]]; then
        host=${BASH_REMATCH[1]} slots=${BASH_REMATCH[2]}
    else
        die "$file: line $n: expected HOST:SLOTS, 'HOST slots=SLOTS' or a number, got '$raw'"
    fi
    if ((10#$slots > 0)); then found+=("$host:$((10#$slots))"); fi
done <"$file"
((${#found[@]} == 0)) || printf '%s\n' "${found[@]}"
