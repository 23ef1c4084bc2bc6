#!/bin/sh
# Health check of the sample release, run by the lab agent during probation (see ../agent.yaml).
# It checks the configuration of the release it ships with; a non-zero exit fails the update, and the
# agent puts the device back on its previous release by itself.
conf="$(dirname "$0")/sensor.conf"
workers=$(sed -n 's/^workers=//p' "$conf" 2>/dev/null)
case "$workers" in
  '' | *[!0-9]* | 0)
    echo "sensor would not start: invalid workers '$workers' in $conf"
    exit 1
    ;;
esac
echo "sensor healthy with $workers workers"
