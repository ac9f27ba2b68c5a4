"""ADBC's Flight SQL driver, pandas and polars read runql over Arrow Flight SQL.

Run by shell/tests/it/flight.rs with RUNQL_FLIGHT_URI and RUNQL_FLIGHT_TOKEN set to a
`runql serve --flight-port` it started; prints one JSON object of what the clients read.
"""

import json
import os

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import polars as pl
from adbc_driver_flightsql import DatabaseOptions

uri = os.environ["RUNQL_FLIGHT_URI"]
token = os.environ["RUNQL_FLIGHT_TOKEN"]
out = {}


def connect(**kwargs):
    return flight_sql.connect(uri, **kwargs)


# The token as a bearer header.
with connect(
    db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"}, autocommit=True
) as conn:
    with conn.cursor() as cur:
        cur.execute("SELECT project, count(*) AS n FROM runs GROUP BY project ORDER BY project")
        table = cur.fetch_arrow_table()
        out["arrow"] = table.to_pylist()
        out["arrow_schema"] = [f"{f.name}:{f.type}" for f in table.schema]
        cur.execute("SELECT count(*) AS n FROM runs")
        out["pandas"] = cur.fetch_df().to_dict(orient="list")
        # A prepared statement with a bound parameter.
        cur.execute("SELECT count(*) AS n FROM runs WHERE project = ?", parameters=("mnist-cnn",))
        out["param"] = cur.fetchone()[0]
        # Every point of every run, as Arrow.
        cur.execute("SELECT run_id, key, step, value FROM metrics")
        out["points"] = cur.fetch_arrow_table().num_rows
        # A write: refused.
        try:
            cur.execute("CREATE TABLE x (a int)")
            cur.fetchall()
            out["write"] = "accepted"
        except adbc_driver_manager.Error as e:
            out["write"] = str(e)
    # Metadata calls: catalogs, schemas, tables (with their columns), table types.
    objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
    out["catalogs"] = [c["catalog_name"] for c in objects]
    out["tables"] = sorted(
        t["table_name"]
        for c in objects
        for s in c["catalog_db_schemas"]
        for t in s["db_schema_tables"]
        if s["db_schema_name"] == "public"
    )
    out["table_types"] = sorted(conn.adbc_get_table_types())
    out["runs_columns"] = [f.name for f in conn.adbc_get_table_schema("runs", db_schema_filter="public")]
    out["info"] = {k: str(v) for k, v in conn.adbc_get_info().items() if "vendor" in k}
    # polars' read_database takes the ADBC connection.
    frame = pl.read_database("SELECT project FROM runs ORDER BY project LIMIT 3", conn)
    out["polars"] = frame["project"].to_list()

# Basic auth (any user, the token as password): the handshake answers a bearer header.
with connect(db_kwargs={"username": "reader", "password": token}, autocommit=True) as conn:
    with conn.cursor() as cur:
        cur.execute("SELECT 41 + 1 AS answer")
        out["basic"] = cur.fetchone()[0]

# No token: refused.
try:
    with connect(autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchall()
    out["anonymous"] = "accepted"
except adbc_driver_manager.Error as e:
    out["anonymous"] = str(e)

print(json.dumps(out, default=str))
