#!/usr/bin/env bash
# Make sure a local PostgreSQL server runs, with a `proctor` role that may create
# databases (the tests make one per test). Prints the URL to use. Idempotent.
set -euo pipefail
# Only the URL goes to stdout, which callers capture: everything else goes to stderr.
exec 3>&1 1>&2

say() { echo "proctor: $*" >&2; }
role=proctor
password=proctor
database=proctor
port="${PROCTOR_PG_PORT:-5432}"

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    say "installing PostgreSQL (Debian package postgresql)"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
fi
cluster=$(pg_lsclusters --no-header | awk 'NR==1 {print $1" "$2}')
if [ -z "$cluster" ]; then
    version=$(ls /usr/lib/postgresql | sort -n | tail -n1)
    say "creating PostgreSQL cluster $version main"
    pg_createcluster "$version" main --port "$port" >/dev/null
    cluster="$version main"
fi
psql_admin() { su postgres -c "psql -v ON_ERROR_STOP=1 -qtAX -p $port $*"; }
ready=""
for _ in $(seq 1 60); do
    if psql_admin "-c 'select 1'" >/dev/null 2>&1; then
        ready=1
        break
    fi
    # shellcheck disable=SC2086
    if ! pg_ctlcluster $cluster status >/dev/null 2>&1; then
        say "starting PostgreSQL $cluster"
        # shellcheck disable=SC2086
        pg_ctlcluster $cluster start 3>&- || true  # the server must not hold our stdout open
    fi
    sleep 0.5
done
if [ -z "$ready" ]; then
    say "PostgreSQL $cluster does not accept connections; see /var/log/postgresql/"
    exit 1
fi
if [ "$(psql_admin "-c \"select 1 from pg_roles where rolname = '$role'\"")" != 1 ]; then
    psql_admin "-c \"create role $role login createdb password '$password'\""
fi
# The tests drop their databases WITH (FORCE), which must also end an autovacuum worker
# busy in them; PostgreSQL asks for pg_signal_backend to do that.
if [ "$(psql_admin "-c \"select 1 from pg_auth_members m join pg_roles r on r.oid = m.member where r.rolname = '$role' and m.roleid = 'pg_signal_backend'::regrole\"")" != 1 ]; then
    psql_admin "-c \"grant pg_signal_backend to $role\""
fi
if [ "$(psql_admin "-c \"select 1 from pg_database where datname = '$database'\"")" != 1 ]; then
    psql_admin "-c \"create database $database owner $role\""
fi
echo "postgresql+psycopg://$role:$password@127.0.0.1:$port/$database" >&3
