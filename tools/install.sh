#!/usr/bin/env bash
# Install mipnode and what it needs on a Debian-like machine, as root.
#   tools/install.sh          runtime: iproute2, nftables, ping, ethtool, unshare, sysctl, iperf3,
#                             etcd (the lab's home-agent clusters) + .venv with mipnode[cluster]
#   tools/install.sh --test   also the test tools: tshark, systemd-analyze, chromium (renders
#                             the lab's HTML report headless), pytest, scapy, ...
set -euo pipefail
cd "$(dirname "$0")/.."

want_tests=0
[ "${1:-}" = "--test" ] && want_tests=1

# etcd: the home-agent cluster's store; the lab's cluster scenarios and the tests run it as
# three local members.
packages=(iproute2 nftables iputils-ping ethtool util-linux procps iperf3 etcd-server
  python3-venv python3-pip)
[ "$want_tests" = 1 ] && packages+=(tshark systemd conntrack chromium)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root to install: ${missing[*]}" >&2
    exit 2
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
"$python" - <<'PY' || { echo "install.sh: mipnode needs Python >= 3.11" >&2; exit 2; }
import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "$want_tests" = 1 ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
else
  .venv/bin/python -m pip install -q -e '.[cluster]'
fi
