#!/usr/bin/env bash
# Spark needs Java 17+: install OpenJDK 17 (Debian/Ubuntu, apt) when no suitable java is found.
set -euo pipefail

version() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1; }
if command -v java >/dev/null 2>&1 && [ "$(version)" -ge 17 ] 2>/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "Java 17+ is required and apt-get is not available: install a JDK/JRE 17+ and put java on PATH" >&2
  exit 1
fi
echo "java 17+ not found: installing openjdk-17-jre-headless" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
  openjdk-17-jre-headless
java -version
