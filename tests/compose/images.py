"""The images the Compose files of tests/compose name, built offline from busybox-static and
pushed to the loopback registry of tests/registry.py: each plays the part of its public
namesake with busybox applets (httpd for nginx and the apps, `nc -ll` for postgres and redis)
and ships the tools their health checks call (`pg_isready`, `redis-cli`)."""

from __future__ import annotations

from pathlib import Path

from tests.image_builder import BuiltImage, Layer, build, push
from tests.registry import Registry
from tests.sandbox import Sandbox

CGI_HEADER = "#!/bin/sh\necho 'Content-Type: text/plain'\necho\n"

POSTGRES_ENTRYPOINT = """\
#!/bin/sh
# As postgres' image: no password, no start; initialise PGDATA (a second, as initdb takes
# one), then answer on 5432.
if [ -z "$POSTGRES_PASSWORD" ]; then
  echo "Error: Database is uninitialized and superuser password is not specified." >&2
  exit 1
fi
PGDATA=${PGDATA:-/var/lib/postgresql/data}
mkdir -p "$PGDATA"
sleep 1
echo 16 > "$PGDATA/PG_VERSION"
exec nc -ll -p 5432 -e echo "postgres ${POSTGRES_DB:-${POSTGRES_USER:-postgres}} ready"
"""

PG_ISREADY = """\
#!/bin/sh
if nc -w 1 127.0.0.1 5432 </dev/null >/dev/null 2>&1; then
  echo "127.0.0.1:5432 - accepting connections"
else
  echo "127.0.0.1:5432 - no response"
  exit 2
fi
"""

REDIS_CLI = """\
#!/bin/sh
host=127.0.0.1 port=6379
while [ $# -gt 0 ]; do
  case $1 in -h) host=$2; shift 2;; -p) port=$2; shift 2;; *) shift;; esac
done
reply=$(nc -w 1 "$host" "$port" </dev/null) || exit 1
echo "${reply#+}"
"""

APP_START = """\
#!/bin/sh
# Records what its backends answered when it started (the proof of depends_on gates), then
# serves /app/www on $PORT.
{
  echo "started $(date +%s)"
  if [ -n "$DB_HOST" ]; then echo "db: $(nc -w 1 "$DB_HOST" "${DB_PORT:-5432}" </dev/null 2>&1)"; fi
  if [ -n "$REDIS_HOST" ]; then echo "cache: $(nc -w 1 "$REDIS_HOST" "${REDIS_PORT:-6379}" </dev/null 2>&1)"; fi
  for file in $STARTUP_FILES; do echo "$file: $(cat "$file" 2>&1)"; done
} > /tmp/startup.log
exec httpd -f -p "${PORT:-8000}" -h /app/www
"""

APP_CGI = {
    "hello": 'echo "hello from ${APP_NAME:-app}${GREETING:+: $GREETING}"\n',
    "env": "env | grep -v -e '^HTTP_' -e '^SERVER_' -e '^REMOTE_' -e '^REQUEST_' -e '^SCRIPT_' | sort\n",
    "startup": "cat /tmp/startup.log\n",
    "db": 'nc -w 1 "$DB_HOST" "${DB_PORT:-5432}" </dev/null 2>&1\n',
}

IMAGES: dict[str, tuple[Layer, dict]] = {
    "nginx:1.25-alpine": (
        Layer(files={"/usr/share/nginx/html/index.html": "Welcome to nginx!\n"}),
        {"cmd": ["httpd", "-f", "-p", "80", "-h", "/usr/share/nginx/html"], "exposed_ports": [80]}),
    "postgres:16-alpine": (
        Layer(files={"/usr/local/bin/docker-entrypoint.sh": POSTGRES_ENTRYPOINT,
                     "/usr/local/bin/pg_isready": PG_ISREADY},
              modes={"/usr/local/bin/docker-entrypoint.sh": 0o755, "/usr/local/bin/pg_isready": 0o755}),
        {"entrypoint": ["docker-entrypoint.sh"], "cmd": ["postgres"], "exposed_ports": [5432]}),
    "redis:7-alpine": (
        Layer(files={"/usr/local/bin/redis-server": "#!/bin/sh\nexec nc -ll -p 6379 -e echo +PONG\n",
                     "/usr/local/bin/redis-cli": REDIS_CLI},
              modes={"/usr/local/bin/redis-server": 0o755, "/usr/local/bin/redis-cli": 0o755}),
        {"cmd": ["redis-server"], "exposed_ports": [6379]}),
    "acme/app:1.0": (
        Layer(files={"/app/start.sh": APP_START, "/app/www/index.html": "app\n",
                     **{f"/app/www/cgi-bin/{name}": CGI_HEADER + body for name, body in APP_CGI.items()}},
              modes={"/app/start.sh": 0o755, **{f"/app/www/cgi-bin/{name}": 0o755 for name in APP_CGI}}),
        {"entrypoint": ["/app/start.sh"], "exposed_ports": [8000]}),
}
"""Repository:tag in the registry -> (the layer over busybox, the image config)."""

PATH = "/usr/local/bin:/bin"


def build_all(layout: Path) -> dict[str, BuiltImage]:
    """Every image into one OCI layout (the busybox layer is shared), tagged by its index."""
    return {name: build(layout, [Layer.busybox(), layer], env={"PATH": PATH}, tag=f"t{index}", **config)
            for index, (name, (layer, config)) in enumerate(IMAGES.items())}


def push_all(built: dict[str, BuiltImage], registry: Registry, sandbox: Sandbox) -> None:
    for name, image in built.items():
        push(image, registry.address, name, sandbox)
