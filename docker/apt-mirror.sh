#!/usr/bin/env bash
# Print the Debian mirror URI that the host's apt uses for a suite, so the air-gapped
# base image is bootstrapped from the same archive the host already reaches.
#
#   docker/apt-mirror.sh [SUITE]          # SUITE defaults to bookworm
#
# Reads /etc/apt/sources.list, /etc/apt/sources.list.d/*.list (one-line format) and
# /etc/apt/sources.list.d/*.sources (deb822 format); no mirror is hard-coded. Only
# enabled "deb" entries whose suites include SUITE exactly count (so bookworm-security
# or bookworm-updates never stand in for bookworm); the first one wins. Prints nothing
# and exits 1, with a hint on stderr, when no entry matches. $APT_SOURCES_DIR (default
# /etc/apt) exists for tests.
set -euo pipefail

suite="${1:-bookworm}"
root="${APT_SOURCES_DIR:-/etc/apt}"

files=()
[[ -f "$root/sources.list" ]] && files+=("$root/sources.list")
shopt -s nullglob
for f in "$root"/sources.list.d/*.list "$root"/sources.list.d/*.sources; do files+=("$f"); done

uri=""
if ((${#files[@]})); then
  uri="$(awk -v suite="$suite" '
    function has_suite(list,   n, i, parts) {
      n = split(list, parts, /[ \t]+/)
      for (i = 1; i <= n; i++) if (parts[i] == suite) return 1
      return 0
    }
    function flush() {   # end of a deb822 paragraph
      if (done) return
      if (types ~ /(^|[ \t])deb([ \t]|$)/ && enabled != "no" && has_suite(suites) && uris != "") {
        split(uris, u, /[ \t]+/); print u[1]; done = 1; exit
      }
      types = ""; uris = ""; suites = ""; enabled = ""
    }
    FNR == 1 { flush(); deb822 = (FILENAME ~ /\.sources$/) }
    /^[ \t]*#/ { next }
    !deb822 {
      line = $0
      sub(/\[[^]]*\]/, "", line)           # drop [ options ]
      n = split(line, f, /[ \t]+/)
      j = 0; for (i = 1; i <= n; i++) if (f[i] != "") g[++j] = f[i]
      if (j >= 3 && g[1] == "deb" && g[3] == suite) { print g[2]; done = 1; exit }
      next
    }
    /^[ \t]*$/ { flush(); next }
    {
      key = tolower($0); sub(/:.*/, "", key)
      val = $0; sub(/^[^:]*:[ \t]*/, "", val)
      if (key == "types") types = val
      else if (key == "uris") uris = val
      else if (key == "suites") suites = val
      else if (key == "enabled") enabled = tolower(val)
    }
    END { flush() }
  ' "${files[@]}")"
fi

if [[ -z "$uri" ]]; then
  echo "apt-mirror: no enabled 'deb' source for suite '$suite' in $root/sources.list{,.d/}; set MIRROR=<debian mirror URI>" >&2
  exit 1
fi
echo "${uri%/}"
