#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests talk to, then
# runs every test of the workspace.
#
#   scripts/test.sh            # everything
#   scripts/test.sh -p intraport-token    # extra arguments go to `cargo test`
#
# Installs (idempotent, skipped when already present):
#   Debian  curl openssl iproute2 iptables nftables ufw tcpdump tshark slapd ldap-utils
#           rsyslog rsyslog-gnutls chromium redis-server mount e2fsprogs tomcat10 (real
#           peers, firewalls and ufw's own rule files, captures, a directory, a syslog
#           collector, a browser, shared gateway state, disks that fail: loop devices and
#           small filesystems, a servlet container behind the gateway; network namespaces
#           and mounts need root)
#   npm     oidc-provider into tests/idp (a real OpenID Certified provider), express into
#           tests/express (a real upstream whose routing ignores case)
#   PyPI    msal (Microsoft's client library), mitmproxy, pydantic-ocsf (the OCSF
#           schema's models, which check the audit log's OCSF events), pyjwt (an outside
#           JWT library minting the hostile tokens of crates/token/tests) and aiosmtpd (an
#           SMTP server with STARTTLS, for the capture tests) into .venv
set -euo pipefail
cd "$(dirname "$0")/.."

debs=(curl openssl iproute2 iptables nftables ufw tcpdump tshark slapd ldap-utils rsyslog rsyslog-gnutls chromium redis-server mount e2fsprogs tomcat10)
missing=()
for p in "${debs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "test.sh: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -d tests/idp/node_modules/oidc-provider ]]; then
  echo "test.sh: installing oidc-provider (npm) into tests/idp"
  npm ci --prefix tests/idp --no-audit --no-fund --loglevel=error
fi
if [[ ! -d tests/express/node_modules/express ]]; then
  echo "test.sh: installing express (npm) into tests/express"
  npm ci --prefix tests/express --no-audit --no-fund --loglevel=error
fi

# Each PyPI requirement with the module that shows it is installed.
py_reqs=(msal mitmproxy pydantic-ocsf==3.0.0 pyjwt aiosmtpd)
py_mods=msal,mitmproxy,ocsf.v1_7_0,jwt,aiosmtpd
if [[ ! -x .venv/bin/python ]] || ! .venv/bin/python -c "import $py_mods" 2>/dev/null; then
  echo "test.sh: creating .venv with ${py_reqs[*]}"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check "${py_reqs[@]}"
fi
export INTRAPORT_TEST_PYTHON="$PWD/.venv/bin/python"
export INTRAPORT_TEST_VENV="$PWD/.venv"

cargo test --workspace "$@"
