#!/usr/bin/env bash
# Installs the built extension into the server's directories (root, or sudo when available).
set -euo pipefail
if [ "$(id -u)" -eq 0 ]; then
	make --no-print-directory install >/dev/null
elif command -v sudo >/dev/null 2>&1; then
	sudo make --no-print-directory install PG_CONFIG="${PG_CONFIG:-pg_config}" >/dev/null
else
	echo "make install needs root: run 'make test' as root, or install sudo" >&2
	exit 1
fi
