#!/bin/sh
# Writes mosquitto's password file from the passwords in .env (docker-compose passes
# them), then starts mosquitto. Nothing secret is stored in the repository.
#   jt1078-gateway  the gateway itself (JT1078_MQTT_PASSWORD)
#   backend         a fleet backend (BACKEND_MQTT_PASSWORD)
#   viewer          browser pages (VIEWER_MQTT_PASSWORD, optional)
#   admin           an operator, reads and writes everything (ADMIN_MQTT_PASSWORD, optional)
# plus /mosquitto/config/devices.passwd if present: one `device_id:password` a line
# (docs/mqtt.md, "Authentication", shows how to make it from mqtt.device_secret).
set -eu
: "${JT1078_MQTT_PASSWORD:?set JT1078_MQTT_PASSWORD in .env (see docs/security.md)}"
: "${BACKEND_MQTT_PASSWORD:?set BACKEND_MQTT_PASSWORD in .env (see docs/security.md)}"
umask 077
passwd=/mosquitto/data/passwd
: > "$passwd.new"
printf 'jt1078-gateway:%s\n' "$JT1078_MQTT_PASSWORD" >> "$passwd.new"
printf 'backend:%s\n' "$BACKEND_MQTT_PASSWORD" >> "$passwd.new"
if [ -n "${VIEWER_MQTT_PASSWORD:-}" ]; then
  printf 'viewer:%s\n' "$VIEWER_MQTT_PASSWORD" >> "$passwd.new"
fi
if [ -n "${ADMIN_MQTT_PASSWORD:-}" ]; then
  printf 'admin:%s\n' "$ADMIN_MQTT_PASSWORD" >> "$passwd.new"
fi
if [ -f /mosquitto/config/devices.passwd ]; then
  grep -v '^[[:space:]]*$' /mosquitto/config/devices.passwd >> "$passwd.new"
fi
mosquitto_passwd -U "$passwd.new"
chown mosquitto:mosquitto "$passwd.new" 2>/dev/null || true
mv "$passwd.new" "$passwd"
# the data volume is created by root; mosquitto writes its database there as itself
chown mosquitto:mosquitto /mosquitto/data 2>/dev/null || true
exec mosquitto -c /mosquitto/config/mosquitto.conf
