# PostgreSQL 15 with the wal2json output plugin, for docker/compose.yaml. The official image carries the PGDG apt
# repository, whose postgresql-15-wal2json matches its server. Build context: docker/ (nothing is copied).
FROM postgres:15
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends "postgresql-${PG_MAJOR}-wal2json"; \
    rm -rf /var/lib/apt/lists/*; \
    test -f "/usr/lib/postgresql/${PG_MAJOR}/lib/wal2json.so"
