#!/bin/sh
# Install Debian's prometheus (with promtool) and prometheus-alertmanager when they are missing.
# The tests that run them (tests/alerting/receivers/test_alertmanager.py, tests/service/test_prometheus.py,
# tests/examples/test_prometheus_rules.py) skip, naming this script, without them.
set -eu
if [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ] && [ -x /usr/bin/prometheus-alertmanager ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends prometheus prometheus-alertmanager
/usr/bin/prometheus --version | head -n 1
/usr/bin/prometheus-alertmanager --version | head -n 1
