#!/usr/bin/env bash
# Finds the third-party servers the tests run, in one place, and prints one
# `export VAR=path` line for each so the caller can `eval` them:
#
#   env_lines="$(scripts/tools.sh srs mosquitto)" && eval "$env_lines"
#
# For each tool, in this order:
#   1. its environment variable (SRS_BIN, GARAGE_BIN, MOSQUITTO_BIN, REDIS_SERVER_BIN,
#      TURNSERVER_BIN, NGINX_BIN), when set to an executable file;
#   2. the PATH;
#   3. a local tool cache: target/tools/ (where this script builds into), then each folder
#      of JT1078_TOOL_CACHE (colon-separated), then ../shared/tools/ beside the clone (our
#      machines keep prebuilt SRS and Garage there; a cache, never a requirement);
#   4. else obtained: Debian packages where they exist (apt-get); SRS 6.0 built from its
#      source release (needs a network to fetch it); Garage 2.5.0 with `cargo install`.
# A tool that cannot be had stops the script with a message naming what to install;
# nothing is skipped silently. Messages go to stderr, the export lines to stdout.
#
# Tools: srs garage mosquitto redis-server turnserver nginx (nginx with the RTMP module).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
built="$root/target/tools"

say() { echo "tools.sh: $*" >&2; }
fail() {
  say "$*"
  exit 1
}

# The first executable among the arguments.
first_executable() {
  local candidate
  for candidate in "$@"; do
    if [ -n "$candidate" ] && [ -f "$candidate" ] && [ -x "$candidate" ]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

# Cached copies of tool $1 (a folder named after it holding a binary of the same name).
cache_candidates() {
  local name="$1" dir
  echo "$built/$name/$name"
  local IFS=:
  for dir in ${JT1078_TOOL_CACHE:-}; do
    echo "$dir/$name/$name"
  done
  echo "$(dirname "$root")/shared/tools/$name/$name"
}

apt_install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  command -v apt-get >/dev/null 2>&1 || return 1
  say "installing Debian packages: $*"
  { $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive \
    $sudo apt-get install -y -q --no-install-recommends "$@"; } >&2
}

# SRS 6.0 from its source release, configured as the tests need it (RTC on, SRT and
# GB28181 off, the system's OpenSSL), into target/tools/srs/srs.
build_srs() {
  apt_install git ca-certificates g++ make patch unzip automake libtool tcl pkg-config \
    libssl-dev perl cmake || return 1
  local src="$built/srs-src"
  rm -rf "$src"
  say "building SRS 6.0 from source (about 10 minutes on 2 cores)"
  git clone --quiet --depth 1 --branch 6.0release https://github.com/ossrs/srs.git "$src" >&2 \
    || return 1
  (cd "$src/trunk" \
    && ./configure --sys-ssl=on --rtc=on --srt=off --gb28181=off --sanitizer=off \
    && make -j"$(nproc)") >&2 || return 1
  mkdir -p "$built/srs"
  cp "$src/trunk/objs/srs" "$built/srs/srs"
  cp "$src/LICENSE" "$built/srs/LICENSE" 2>/dev/null || true
}

build_garage() {
  say "building Garage 2.5.0 with cargo install (about 15 minutes on 2 cores)"
  cargo install garage --version 2.5.0 --locked --no-default-features \
    --features bundled-libs,lmdb,sqlite --root "$built/garage-install" >&2 || return 1
  mkdir -p "$built/garage"
  cp "$built/garage-install/bin/garage" "$built/garage/garage"
}

# resolve NAME VAR COMMAND [how to obtain...]: prints the path of the tool.
resolve() {
  local name="$1" var="$2" command="$3"
  local from_env="${!var:-}"
  if [ -n "$from_env" ]; then
    first_executable "$from_env"
    return
  fi
  command -v "$command" 2>/dev/null && return 0
  # shellcheck disable=SC2046
  first_executable $(cache_candidates "$name") && return 0
  return 1
}

# The RTMP module of Debian's nginx, which the nginx-rtmp tests load.
nginx_rtmp_module() {
  [ -e /usr/lib/nginx/modules/ngx_rtmp_module.so ] || apt_install libnginx-mod-rtmp \
    || fail "nginx's RTMP module is needed: apt-get install libnginx-mod-rtmp"
}

find_tool() {
  local name="$1" var path
  case "$name" in
    srs) var=SRS_BIN ;;
    garage) var=GARAGE_BIN ;;
    mosquitto) var=MOSQUITTO_BIN ;;
    redis-server) var=REDIS_SERVER_BIN ;;
    turnserver) var=TURNSERVER_BIN ;;
    nginx) var=NGINX_BIN ;;
    *) fail "unknown tool '$name' (known: srs garage mosquitto redis-server turnserver nginx)" ;;
  esac
  if [ -n "${!var:-}" ] && ! first_executable "${!var}" >/dev/null; then
    fail "$var=${!var} is not an executable file"
  fi
  if ! path="$(resolve "$name" "$var" "$name")"; then
    case "$name" in
      srs) build_srs || fail "SRS 6 could not be built from source (no network?): install it" \
        "and set SRS_BIN=/path/to/srs, or put a prebuilt one in target/tools/srs/srs" ;;
      garage) build_garage || fail "Garage could not be built: cargo install garage" \
        "--version 2.5.0 --locked --no-default-features --features bundled-libs,lmdb,sqlite," \
        "then set GARAGE_BIN" ;;
      mosquitto) apt_install mosquitto || fail "mosquitto is needed: apt-get install mosquitto" ;;
      redis-server) apt_install redis-server \
        || fail "redis-server is needed: apt-get install redis-server" ;;
      turnserver) apt_install coturn || fail "coturn's turnserver is needed: apt-get install coturn" ;;
      nginx) apt_install nginx libnginx-mod-rtmp \
        || fail "nginx with the RTMP module is needed: apt-get install nginx libnginx-mod-rtmp" ;;
    esac
    path="$(resolve "$name" "$var" "$name")" || fail "$name still not found after installing it"
  fi
  [ "$name" != nginx ] || nginx_rtmp_module
  say "$name: $path"
  printf 'export %s=%q\n' "$var" "$path"
}

[ $# -gt 0 ] || fail "usage: scripts/tools.sh TOOL... (srs garage mosquitto redis-server turnserver nginx)"
for tool in "$@"; do
  find_tool "$tool"
done
